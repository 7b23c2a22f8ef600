"""The query index answers exactly what filtering the chain answers, and catches up incrementally."""

from __future__ import annotations

import itertools
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cleanroom.audit import Actor, AuditEvent, AuditLog, matching, read_records
from cleanroom.audit.index import AuditIndex

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
