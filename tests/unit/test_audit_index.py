"""The query index answers exactly what filtering the chain answers, and catches up incrementally."""

from __future__ import annotations

import itertools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import Actor, AuditEvent, AuditLog, matching, read_records
from cleanroom.audit.index import INDEX, AuditIndex, _scan, find

ACTIONS = [
    "workspace.started",
    "workspace.stopped",
    "data.file.opened",
    "download.refused",
    "snapshot.published",
]


def populate(log: AuditLog, start: int, count: int) -> None:
    log.append(
        [
            AuditEvent(
                ACTIONS[i % len(ACTIONS)],
                Actor("user", f"user{i % 3}@hospital.example"),
                resources={"dataset": f"d{i % 4}", "workspace": f"w{i % 5}"},
                time=f"2026-11-{1 + i % 28:02d}T10:00:00.000000Z",
            )
            for i in range(start, start + count)
        ]
    )


def test_the_index_matches_the_chain_for_every_filter_combination(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 300)
    index = AuditIndex(tmp_path)
    filters = {
        "actor": ["", "user1@hospital.example"],
        "action": ["", "workspace.", "download.refused", "workspace.started"],
        "dataset": ["", "d2"],
        "workspace": ["", "w3"],
        "since": ["", "2026-11-10T00:00:00Z"],
        "until": ["", "2026-11-20T00:00:00Z"],
    }
    records = read_records(tmp_path)
    for values in itertools.product(*filters.values()):
        chosen = dict(zip(filters, values, strict=True))
        expected = [r["seq"] for r in matching(records, **chosen)]
        assert [r["seq"] for r in index.query(chosen)] == expected, chosen
        assert index.count(chosen) == len(expected)


def test_the_index_reads_only_what_was_appended_since(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 50)
    index = AuditIndex(tmp_path)
    assert index.refresh() == 50
    assert index.refresh() == 0
    populate(log, 50, 7)
    assert index.refresh() == 7
    assert index.count() == 57
    # A rebuilt index (deleted file) says the same.
    (tmp_path / "index.sqlite").unlink()
    assert AuditIndex(tmp_path).count() == 57


def test_a_tampered_index_never_shows_what_the_chain_does_not_hold(tmp_path: Path) -> None:
    """Whoever can write the service's volume edits index.sqlite: a row pointed at another record, a row's
    columns changed so another user's event answers a filter. Queries read every answer back from the chain."""
    import sqlite3

    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 20)
    index = AuditIndex(tmp_path)
    index.refresh()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:
        # Record 3 claims to be user0's and points at record 4's bytes.
        at, length = db.execute("SELECT at, length FROM records WHERE seq = 4").fetchone()
        db.execute(
            "UPDATE records SET actor = 'user0@hospital.example', at = ?, length = ? WHERE seq = 3",
            (at, length),
        )
    expected = [r["seq"] for r in matching(read_records(tmp_path), actor="user0@hospital.example")]
    assert [r["seq"] for r in AuditIndex(tmp_path).query({"actor": "user0@hospital.example"})] == expected


def test_a_row_hidden_from_the_index_is_found_by_check(tmp_path: Path) -> None:
    import sqlite3

    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 20)
    AuditIndex(tmp_path).refresh()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:
        db.execute("UPDATE records SET dataset = 'elsewhere' WHERE seq = 7")
    index = AuditIndex(tmp_path)
    assert index.check() == 7
    assert index.check() is None  # rebuilt from the chain
    assert 7 in [r["seq"] for r in index.query({"dataset": "d2"})]


def test_an_index_of_a_rewritten_chain_is_rebuilt(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 20)
    AuditIndex(tmp_path).refresh()
    lines = (tmp_path / "records.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "records.jsonl").write_bytes(b"".join(lines[:10]))
    assert [r["seq"] for r in AuditIndex(tmp_path).query()] == list(range(1, 11))


def _seqs(found: list[dict]) -> list[int]:
    return [record["seq"] for record in found]


def test_find_answers_from_the_chain_when_the_index_cannot_be_opened(tmp_path: Path) -> None:
    """A failing disk or an unwritable index must not take the trail's search down: the chain answers."""
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 40)
    (tmp_path / INDEX).mkdir()  # SQLite cannot open a directory: "unable to open database file"
    expected = [r["seq"] for r in matching(read_records(tmp_path), action="workspace.")]
    found, total = find(tmp_path, {"action": "workspace."}, limit=5, newest_first=True)
    assert _seqs(found) == expected[::-1][:5]
    assert total == len(expected)
    found, total = find(tmp_path, {"action": "workspace."}, limit=5)
    assert _seqs(found) == expected[:5] and total == len(expected)
    assert (tmp_path / INDEX).is_dir()  # not ours to remove: the operator repairs what is not a damaged file


def test_a_damaged_index_file_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 30)
    (tmp_path / INDEX).write_bytes(b"this is not an SQLite database, it is what a bad disk left" * 100)
    found, total = find(tmp_path, {"dataset": "d1"})
    assert _seqs(found) == [r["seq"] for r in matching(read_records(tmp_path), dataset="d1")]
    assert total == len(found)
    assert (tmp_path / (INDEX + ".damaged")).exists()
    rebuilt = AuditIndex(tmp_path)
    assert rebuilt.count({}) == 30  # the next query found a working index again


def test_find_through_the_index_matches_the_scan(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, Ed25519PrivateKey.generate())
    populate(log, 0, 60)
    for filters in ({}, {"actor": "user2@hospital.example"}, {"action": "download.refused"}):
        through_index = find(tmp_path, filters, limit=7, newest_first=True)
        scanned = _scan(tmp_path, dict(filters), limit=7, newest_first=True)
        assert (_seqs(through_index[0]), through_index[1]) == (_seqs(scanned[0]), scanned[1])
