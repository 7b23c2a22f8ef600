"""Trust anchored outside the trail: the attacks of issue 13, each performed on an export. On the code before
(keys taken from the trail's own keys.json, unchained checkpoints, no receipts, no age limit) every one of
them verified "OK"; each must now fail, naming why."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import (
    GENESIS,
    Actor,
    Anchors,
    AuditEvent,
    AuditLog,
    NoTrustAnchor,
    Report,
    export,
    fingerprint,
    key_id,
    read_checkpoints,
    read_records,
    record_hash,
    sign_checkpoint,
    sign_receipt,
    verify_directory,
    write_trusted_keys,
)
from cleanroom.audit.chain import canonical, token_digest
from cleanroom.audit.spool import read_lines
from cleanroom.audit.trust import configured
from cleanroom.audit.verification import verify_trail

OPERATOR = "system:serviceaccount:cleanroom-system:cleanroom-operator"


def events(count: int, start: int = 0) -> list[AuditEvent]:
    return [
        AuditEvent("workspace.started", Actor("service", OPERATOR), resources={"workspace": f"w{i}"})
        for i in range(start, start + count)
    ]


class Trail:
    """A service's trail (25 records, checkpoints at 10, 20 and 25) and the receipts its writer kept."""

    def __init__(self, tmp_path: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.log = AuditLog(tmp_path / "live", self.key, checkpoint_every=10)
        self.receipts: list[str] = []
        for batch in range(5):
            self.log.append(events(5, batch * 5))
            self.receipts.append(self.log.receipt(OPERATOR))
        self.log.checkpoint()
        self.anchors = Anchors(frozenset({fingerprint(self.key.public_key())}), "test")
        self.export = tmp_path / "export"
        export(self.log.directory, self.export)

    def verify(self, **options: Any) -> Report:
        return verify_directory(self.export, self.anchors, **options)


@pytest.fixture
def trail(tmp_path: Path) -> Trail:
    return Trail(tmp_path)


def write_records(directory: Path, records: list[dict[str, Any]]) -> None:
    (directory / "records.jsonl").write_bytes(b"".join(canonical(r) + b"\n" for r in records))


def rechain(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prev = GENESIS
    for seq, record in enumerate(records, 1):
        record["seq"], record["prev"] = seq, prev
        record["hash"] = prev = record_hash(seq, prev, record["event"], record.get("received"))
    return records


def resign(directory: Path, records: list[dict[str, Any]], key: Ed25519PrivateKey) -> None:
    """What a forger with write access to the trail does after changing it: fresh, chained checkpoints."""
    write_records(directory, records)
    kid, previous, tokens = key_id(key.public_key()), GENESIS, []
    for record in records:
        if record["seq"] % 10 == 0 or record is records[-1]:
            token = sign_checkpoint(record["seq"], record["hash"], now(), key, kid, previous)
            tokens.append(token)
            previous = token_digest(token)
    (directory / "checkpoints.jsonl").write_text("\n".join(tokens) + "\n")


def swap_keys_file(directory: Path, key: Ed25519PrivateKey) -> None:
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    (directory / "keys.json").write_text(json.dumps({key_id(key.public_key()): jwk}))


def now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_genuine_trail_verifies_with_its_receipts(trail: Trail) -> None:
    report = trail.verify(receipts=trail.receipts, max_age_seconds=300)
    assert report.problem is None
    assert (report.records, report.checkpoints, report.sealed, report.unsealed) == (25, 3, 25, 0)


def test_a_rewrite_resigned_with_a_fresh_key_and_a_swapped_keys_file_is_refused(trail: Trail) -> None:
    records = read_records(trail.export)
    records[4]["event"]["outcome"] = "denied"
    forger = Ed25519PrivateKey.generate()
    resign(trail.export, rechain(records), forger)
    swap_keys_file(trail.export, forger)
    problem = trail.verify().problem
    assert problem is not None and problem.kind == "untrusted-key" and problem.seq == 10


def test_a_dropped_record_rechained_and_resigned_with_a_fresh_key_is_refused(trail: Trail) -> None:
    records = read_records(trail.export)
    del records[6]
    forger = Ed25519PrivateKey.generate()
    resign(trail.export, rechain(records), forger)
    swap_keys_file(trail.export, forger)
    problem = trail.verify().problem
    assert problem is not None and problem.kind == "untrusted-key"


def test_a_dropped_record_resigned_with_the_services_own_key_is_caught_by_a_writers_receipt(
    trail: Trail,
) -> None:
    """Whoever holds the service (its volume and its signing key) re-signs a shortened chain: the checkpoints
    verify, but a receipt the operator kept names the head the service acknowledged."""
    records = read_records(trail.export)
    del records[6]
    resign(trail.export, rechain(records), trail.key)
    assert trail.verify().problem is None  # the key alone cannot tell
    problem = trail.verify(receipts=trail.receipts).problem
    assert problem is not None and problem.kind == "changed" and problem.seq == 10
    assert OPERATOR in problem.detail


def test_a_truncation_with_its_checkpoints_is_caught_by_a_receipt_and_by_the_age_limit(trail: Trail) -> None:
    write_records(trail.export, read_records(trail.export)[:20])
    tokens = read_checkpoints(trail.export)[:2]  # the checkpoints at 10 and 20 stay, 25 goes
    (trail.export / "checkpoints.jsonl").write_text("\n".join(tokens) + "\n")
    assert trail.verify().problem is None  # a consistent prefix, on its own
    problem = trail.verify(receipts=trail.receipts).problem
    assert problem is not None and (problem.kind, problem.seq) == ("truncated", 21)
    # Without receipts: checkpoints are signed every minute even when idle, so an old newest one is a cut.
    later = verify_trail(
        read_lines(trail.export),
        read_checkpoints(trail.export),
        json.loads((trail.export / "keys.json").read_text()),
        trail.anchors,
        max_age_seconds=300,
        now=datetime.now(UTC) + timedelta(minutes=10),
    ).problem
    assert later is not None and later.kind == "stale" and later.seq == 20


def test_a_checkpoint_removed_from_the_middle_is_named(trail: Trail) -> None:
    tokens = read_checkpoints(trail.export)
    (trail.export / "checkpoints.jsonl").write_text(tokens[0] + "\n" + tokens[2] + "\n")
    problem = trail.verify().problem
    assert problem is not None and (problem.kind, problem.seq) == ("checkpoint-removed", 25)


def test_a_forged_receipt_is_refused(trail: Trail) -> None:
    """A receipt the service did not sign (another key), or one whose claims were edited, is reported."""
    forger = Ed25519PrivateKey.generate()
    head = read_records(trail.export)[24]["hash"]
    forged = sign_receipt(25, head, now(), OPERATOR, forger, key_id(forger.public_key()))
    problem = trail.verify(receipts=[forged]).problem
    assert problem is not None and problem.kind == "bad-receipt"
    header, payload, signature = trail.receipts[-1].split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    edited = jwt.utils.base64url_encode(json.dumps({**claims, "seq": 24}).encode()).decode()
    problem = trail.verify(receipts=[f"{header}.{edited}.{signature}"]).problem
    assert problem is not None and problem.kind == "bad-receipt"
    # A checkpoint is not a receipt, even though the same key signs both.
    problem = trail.verify(receipts=[read_checkpoints(trail.export)[0]]).problem
    assert problem is not None and problem.kind == "bad-receipt"


def test_records_after_the_last_checkpoint_are_reported_unsealed(trail: Trail) -> None:
    trail.log.append(events(3, 100))
    shutil.rmtree(trail.export)
    export(trail.log.directory, trail.export)
    report = trail.verify()
    assert report.problem is None and (report.sealed, report.unsealed) == (25, 3)


def test_an_idle_service_still_signs_fresh_checkpoints(trail: Trail) -> None:
    before = len(read_checkpoints(trail.log.directory))
    trail.log.checkpoint()
    trail.log.checkpoint()
    shutil.rmtree(trail.export)
    export(trail.log.directory, trail.export)
    report = trail.verify(max_age_seconds=300)
    assert report.problem is None and report.checkpoints == before + 2 and report.sealed == 25


def test_a_rotation_signed_by_the_key_it_replaces_verifies_and_retires_it(
    trail: Trail, tmp_path: Path
) -> None:
    new = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="introduced by the key it replaces"):
        AuditLog(trail.log.directory, new)
    rotated = AuditLog(trail.log.directory, new, previous_key=trail.key, checkpoint_every=10)
    rotated.append(events(10, 200))
    rotated.checkpoint()
    receipt = rotated.receipt(OPERATOR)
    shutil.rmtree(trail.export)
    export(trail.log.directory, trail.export)
    # The verifier's configuration still names only the first key: the rotation carries trust on.
    report = trail.verify(receipts=[*trail.receipts, receipt])
    assert report.problem is None and report.sealed == 35
    # The replaced key may no longer sign: a checkpoint by it after the rotation is refused.
    tokens = read_checkpoints(trail.export)
    late = sign_checkpoint(
        35, report.heads[35], now(), trail.key, key_id(trail.key.public_key()), token_digest(tokens[-1])
    )
    (trail.export / "checkpoints.jsonl").write_text("\n".join([*tokens, late]) + "\n")
    problem = trail.verify().problem
    assert problem is not None and problem.kind == "untrusted-key" and "rotation" in problem.detail


def test_a_rotation_signed_by_the_new_key_itself_is_refused(trail: Trail) -> None:
    forger = Ed25519PrivateKey.generate()
    tokens = read_checkpoints(trail.export)
    head = read_records(trail.export)[-1]["hash"]
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(forger.public_key()))
    successor = {"fingerprint": fingerprint(forger.public_key()), "jwk": jwk}
    rotation = sign_checkpoint(
        25, head, now(), forger, key_id(forger.public_key()), token_digest(tokens[-1]), successor
    )
    (trail.export / "checkpoints.jsonl").write_text("\n".join([*tokens, rotation]) + "\n")
    problem = trail.verify().problem
    assert problem is not None and problem.kind == "untrusted-key"


def test_a_trail_in_the_old_format_is_refused_saying_why(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    directory = tmp_path / "old"
    directory.mkdir()
    records = rechain([{"event": e.to_json()} for e in events(3)])
    write_records(directory, records)
    old = jwt.encode(
        {"seq": 3, "hash": records[-1]["hash"], "time": now()},
        key,
        algorithm="EdDSA",
        headers={"kid": key_id(key.public_key())},
    )
    (directory / "checkpoints.jsonl").write_text(old + "\n")
    swap_keys_file(directory, key)
    anchors = Anchors(frozenset({fingerprint(key.public_key())}), "test")
    problem = verify_directory(directory, anchors).problem
    assert problem is not None and problem.kind == "old-format" and "format 1" in problem.detail


def test_the_verifier_never_takes_its_trusted_keys_from_the_trail(trail: Trail, tmp_path: Path) -> None:
    inside = trail.export / "trusted"
    write_trusted_keys(inside, [fingerprint(trail.key.public_key())])
    with pytest.raises(NoTrustAnchor, match="inside the trail"):
        configured(file=inside, trail=trail.export)
    with pytest.raises(NoTrustAnchor, match="inside the trail"):
        configured(env={"CLEANROOM_AUDIT_TRUSTED_KEYS": str(inside)}, trail=trail.export)
    with pytest.raises(NoTrustAnchor, match="not a key fingerprint"):
        configured(flags=["ed25519-1234"])
    outside = tmp_path / "trusted-keys"
    write_trusted_keys(outside, [fingerprint(trail.key.public_key())])
    assert configured(env={"CLEANROOM_AUDIT_TRUSTED_KEYS": str(outside)}, trail=trail.export) == Anchors(
        trail.anchors.fingerprints, f"CLEANROOM_AUDIT_TRUSTED_KEYS={outside}"
    )


def test_no_trusted_keys_configured_is_an_error_not_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .cluster/audit-trusted-keys here
    with pytest.raises(NoTrustAnchor, match="no trusted audit keys configured"):
        configured(env={})


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "CLEANROOM_AUDIT_TRUSTED_KEYS"}
    result = subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "audit", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_the_officers_plain_verify_uses_the_dev_stacks_trusted_keys_file(
    trail: Trail, tmp_path: Path
) -> None:
    """`make dev` writes .cluster/audit-trusted-keys beside the signing key: a plain `cleanroom audit verify
    DIR` then passes a genuine export and refuses a forged one; with no such file it refuses to guess."""
    workdir = tmp_path / "repo"
    (workdir / ".cluster").mkdir(parents=True)
    code, out = cli(workdir, "verify", str(trail.export))
    assert code == 2 and "no trusted audit keys configured" in out
    key_file = workdir / ".cluster" / "key.pem"
    from cryptography.hazmat.primitives import serialization

    key_file.write_bytes(
        trail.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    code, printed = cli(workdir, "fingerprint", str(key_file))
    assert code == 0 and printed.strip() == fingerprint(trail.key.public_key())
    write_trusted_keys(workdir / ".cluster" / "audit-trusted-keys", [printed.strip()])
    receipts = tmp_path / "receipts.jsonl"
    receipts.write_text("\n".join(trail.receipts) + "\n")
    code, out = cli(
        workdir, "verify", str(trail.export), "--receipts", str(receipts), "--max-checkpoint-age", "300"
    )
    assert code == 0 and out.startswith("OK: 25 records") and "5 writers' receipts agree" in out, out
    forger = Ed25519PrivateKey.generate()
    records = read_records(trail.export)
    del records[6]
    resign(trail.export, rechain(records), forger)
    swap_keys_file(trail.export, forger)
    code, out = cli(workdir, "verify", str(trail.export))
    assert code == 1 and "FAILED at record 10: untrusted-key" in out, out


def test_verification_keeps_only_the_heads_its_checkpoints_and_receipts_name(trail: Trail) -> None:
    """A trail is verified as it streams from disk: the report keeps the hashes of the records a checkpoint
    or a receipt signs (and the genesis), not one per record, so memory does not grow with the trail
    (issue 19: 276 MB for 200,000 records when every line and every hash was held)."""
    report = trail.verify(receipts=trail.receipts)
    assert report.problem is None
    signed = {int(jwt.decode(t, options={"verify_signature": False})["seq"]) for t in trail.receipts}
    signed |= {
        int(jwt.decode(t, options={"verify_signature": False})["seq"]) for t in read_checkpoints(trail.export)
    }
    assert set(report.heads) == {0} | signed
    assert len(report.heads) < report.records


def test_a_receipt_for_a_record_no_checkpoint_signs_is_still_checked_against_the_trail(trail: Trail) -> None:
    """Keeping fewer heads must not blind the receipts: a record changed between checkpoints that only a
    receipt covers is still caught (the record is re-hashed and re-chained up to the next checkpoint)."""
    records = read_records(trail.export)
    signed = int(jwt.decode(trail.receipts[0], options={"verify_signature": False})["seq"])
    assert signed not in {
        int(jwt.decode(t, options={"verify_signature": False})["seq"]) for t in read_checkpoints(trail.export)
    }
    records[signed - 1]["event"]["resources"]["workspace"] = "elsewhere"
    write_records(trail.export, rechain(records))
    report = trail.verify(receipts=trail.receipts)
    assert report.problem is not None
