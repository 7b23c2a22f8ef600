"""The audit chain detects every kind of tampering and names the first bad record; writers share one order."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import (
    Actor,
    AuditEvent,
    AuditLog,
    InvalidEvent,
    export,
    matching,
    read_checkpoints,
    read_records,
    record_hash,
    verify,
    write_signing_key,
)
from cleanroom.audit.chain import canonical, fingerprint, key_id, verify_lines

OPERATOR = Actor("service", "system:serviceaccount:cleanroom-system:cleanroom-operator")


def event(index: int, action: str = "workspace.started", **resources: str) -> AuditEvent:
    return AuditEvent(action, OPERATOR, resources={"workspace": f"w{index}", **resources}, purpose="testing")


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit", SIGNER, checkpoint_every=10)
    audit.append([event(i) for i in range(25)])
    audit.checkpoint()
    return audit


SIGNER = Ed25519PrivateKey.generate()
TRUSTED = {key_id(SIGNER.public_key()): SIGNER.public_key()}  # the verifier's own configuration


def check(directory: Path, keys: Any = TRUSTED) -> Any:
    """Both verifiers, the parsing one and the byte-level one the CLI and the page use, must agree."""
    checkpoints = read_checkpoints(directory)
    parsed = verify(read_records(directory), checkpoints, keys)
    lines = (directory / "records.jsonl").read_bytes().splitlines(keepends=True)
    assert verify_lines(lines, checkpoints, keys) == parsed
    return parsed


def rewrite(directory: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite the chain the way the spool writes it (canonical JSON), as a careful forger would."""
    (directory / "records.jsonl").write_bytes(b"".join(canonical(r) + b"\n" for r in records))


def exported(log: AuditLog, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    assert export(log.directory, target) == 25
    return target


def test_an_untouched_chain_and_its_export_verify(log: AuditLog, tmp_path: Path) -> None:
    assert check(log.directory) is None
    assert check(exported(log, tmp_path)) is None
    assert len(read_checkpoints(log.directory)) == 3  # at 10, 20 (every 10th record) and 25 (explicit)


def test_a_changed_record_is_named(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    records = read_records(target)
    records[11]["event"]["purpose"] = "something else"
    rewrite(target, records)
    problem = check(target)
    assert problem is not None and (problem.seq, problem.kind) == (12, "changed")


def test_a_changed_and_rehashed_chain_is_caught_by_the_signed_checkpoint(
    log: AuditLog, tmp_path: Path
) -> None:
    target = exported(log, tmp_path)
    records = read_records(target)
    records[4]["event"]["outcome"] = "denied"
    prev = records[3]["hash"]
    for record in records[4:]:
        record["prev"] = prev
        record["hash"] = prev = record_hash(
            record["seq"], record["prev"], record["event"], record["received"]
        )
    rewrite(target, records)
    problem = check(target)
    assert problem is not None and problem.kind == "changed" and problem.seq == 10


def test_a_removed_record_is_named(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    records = read_records(target)
    del records[7]
    rewrite(target, records)
    problem = check(target)
    assert problem is not None and (problem.seq, problem.kind) == (8, "removed")


def test_an_inserted_record_is_named(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    records = read_records(target)
    records.insert(6, dict(records[5]))
    rewrite(target, records)
    problem = check(target)
    assert problem is not None and (problem.seq, problem.kind) == (7, "inserted")


def test_reordered_records_are_named(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    records = read_records(target)
    records[3], records[4] = records[4], records[3]
    rewrite(target, records)
    problem = check(target)
    assert problem is not None and problem.seq == 4 and problem.kind in ("removed", "reordered")


def test_truncation_after_a_checkpoint_is_caught(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    rewrite(target, read_records(target)[:22])
    problem = check(target)
    assert problem is not None and (problem.seq, problem.kind) == (23, "truncated")


def test_a_forged_checkpoint_signature_is_caught(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    tokens = read_checkpoints(target)
    header, payload, signature = tokens[0].split(".")
    tokens[0] = ".".join(
        [header, payload, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")]
    )
    (target / "checkpoints.jsonl").write_text("\n".join(tokens) + "\n")
    problem = check(target)
    assert problem is not None and problem.kind == "bad-signature"


def test_a_checkpoint_signed_by_another_key_is_caught(log: AuditLog, tmp_path: Path) -> None:
    target = exported(log, tmp_path)
    impostor = AuditLog(tmp_path / "impostor", Ed25519PrivateKey.generate(), checkpoint_every=10)
    impostor.append([event(i) for i in range(12)])
    (target / "checkpoints.jsonl").write_text(read_checkpoints(impostor.directory)[0] + "\n")
    problem = check(target)
    assert problem is not None and problem.kind == "untrusted-key"
    assert fingerprint(SIGNER.public_key()) != fingerprint(impostor.signing_key.public_key())


def test_a_retried_event_is_stored_once(log: AuditLog) -> None:
    retry = event(99)
    first = log.append([retry])
    again = log.append([retry])
    assert first == [26] and again == [-1]
    assert [r["event"]["id"] for r in read_records(log.directory)].count(retry.id) == 1


def _writer(directory: str, key_path: str, writer: int) -> None:
    from cleanroom.audit import load_signing_key

    audit = AuditLog(directory, load_signing_key(key_path), checkpoint_every=50)
    for batch in range(20):
        audit.append([event(writer * 1000 + batch * 5 + i) for i in range(5)])


def test_concurrent_writers_share_one_valid_order(tmp_path: Path) -> None:
    public = write_signing_key(tmp_path / "signing.pem").public_key()
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_writer, args=(str(tmp_path / "audit"), str(tmp_path / "signing.pem"), w))
        for w in range(3)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    records = read_records(tmp_path / "audit")
    assert [r["seq"] for r in records] == list(range(1, 301))
    assert len({r["event"]["id"] for r in records}) == 300
    assert check(tmp_path / "audit", {key_id(public): public}) is None


def test_query_filters(log: AuditLog) -> None:
    log.append([event(1, "access.denied", dataset="prostate")])
    records = read_records(log.directory)
    assert [r["event"]["action"] for r in matching(records, dataset="prostate")] == ["access.denied"]
    assert len(list(matching(records, action="workspace."))) == 25
    assert len(list(matching(records, workspace="w1"))) == 2


def test_events_are_validated() -> None:
    with pytest.raises(InvalidEvent, match="action"):
        AuditEvent("dataset.stolen", OPERATOR)
    with pytest.raises(InvalidEvent, match="resources"):
        AuditEvent("workspace.started", OPERATOR, resources={"bucket": "x"})


def test_a_reformatted_line_is_reported_by_the_byte_level_verifier(log: AuditLog, tmp_path: Path) -> None:
    """Same content, other bytes: the parsing verifier accepts it, the byte-level one (which the CLI and the
    page use) reports the record, because stored bytes are what was hashed."""
    target = exported(log, tmp_path)
    records = read_records(target)
    lines = [canonical(r) + b"\n" for r in records]
    lines[4] = json.dumps(records[4], sort_keys=True).encode() + b"\n"
    (target / "records.jsonl").write_bytes(b"".join(lines))
    assert verify(read_records(target), read_checkpoints(target), TRUSTED) is None
    problem = verify_lines(lines, read_checkpoints(target), TRUSTED)
    assert problem is not None and (problem.seq, problem.kind) == (5, "changed")
