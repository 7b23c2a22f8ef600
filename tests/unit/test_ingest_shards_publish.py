"""The operator's last step of a Job ingest (``ingest.sharded_publish``) over a store held in memory: the
shards' results joined in path order into the very bytes the in-process ingest's manifest has, a cross-shard
duplicate quarantined as the in-process ingest does, and nothing published from a result that is missing,
malformed or refused. The checks of each object against the store are test_ingest_shards_store.py's."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from cleanroom.api import DeidentificationMethod
from cleanroom.deid import DeidConfig, Keyring
from cleanroom.ingest import IngestResult, QuarantineEntry, sharded_publish
from cleanroom.ingest.pipeline import DUPLICATE, publish
from cleanroom.ingest.sharded import entry_to_json, result_key
from cleanroom.snapshots import FileEntry, SnapshotError, canonical_json, content_digest
from cleanroom.sources import Skipped

PREFIX = "ingest/ds/r1/"
NOW = datetime(2026, 12, 2, tzinfo=UTC)
ORIGIN = {"uid": "u-1", "specHash": "sha256:00"}
CONFIG = DeidConfig(DeidentificationMethod.PSEUDONYMIZE, Keyring(b"k" * 32))


class MemoryStore:
    """The store's surface the join uses, in memory; what was promoted and published is recorded."""

    def __init__(self, results: dict[int, Any]) -> None:
        self.documents = {result_key(PREFIX, i): r for i, r in results.items()}
        self.promoted: list[tuple[str, str, int]] = []
        self.published: dict[str, bytes] = {}
        self.reports: dict[str, dict[str, Any]] = {}

    def document(self, key: str) -> Any:
        return self.documents.get(key)

    def promote(self, staged: str, digest: str, size: int) -> bool:
        self.promoted.append((staged, digest, size))
        return True

    def put_report(self, key: str, report: dict[str, Any]) -> str:
        self.reports[key] = report
        return f"s3://snapshots/{key}"

    def publish_file(self, dataset: str, path: str) -> str:
        with open(path, "rb") as manifest:
            data = manifest.read()
        self.published[dataset] = data
        return content_digest(data)

    def publish(self, dataset: str, manifest: dict[str, Any]) -> str:
        data = canonical_json(manifest)
        self.published[dataset] = data
        return content_digest(data)


class Reader:
    def describe(self) -> dict[str, str]:
        return {"kind": "s3", "location": "s3://raw/site/"}

    def skipped(self) -> list[Skipped]:
        return [Skipped("site/fifo", "NotAFile", "a FIFO")]


def _entry(path: str, size: int = 10, cleaned: bool = False) -> FileEntry:
    patient, study, series, _ = path.split("/")
    return FileEntry(
        path,
        content_digest(path.encode()),
        size,
        patient,
        study,
        series,
        "CT" if size % 2 else "MR",
        "CHEST" if size % 3 else "",
        (("PatientName", "name"),) if cleaned else (),
    )


def _shard(entries: list[tuple[FileEntry, str]], quarantined: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "files": [entry_to_json(e) for e, _item in entries],
        "origins": {e.path: item for e, item in entries},
        "quarantined": [
            {"item": q, "reason": "BurnedInAnnotation", "detail": "d", "attribute": ""} for q in quarantined
        ],
        "failed": [],
    }


def _publish(store: MemoryStore, shards: int, **overrides: Any) -> sharded_publish.Joined:
    arguments: dict[str, Any] = {
        "dataset": "ds",
        "reader": Reader(),
        "config": CONFIG,
        "origin": ORIGIN,
        "missing": lambda i: LookupError(f"shard {i} has no result"),
        "refuse": lambda result: None,
        "now": NOW,
        **overrides,
    }
    return sharded_publish.publish_shards(store, PREFIX, shards, **arguments)  # type: ignore[arg-type]


def test_a_streamed_manifest_is_the_in_process_manifest_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many shards, merged in rounds of two, in random path order within and across shards."""
    monkeypatch.setattr(sharded_publish, "MERGE_FAN_IN", 2)
    rng = random.Random(7)
    entries = [
        (
            _entry(f"P{p}/{p}.1/{p}.1.{s}/{i}.dcm", rng.randrange(1, 5000), rng.random() < 0.3),
            f"raw/{p}-{s}-{i}",
        )
        for p in range(6)
        for s in range(3)
        for i in range(rng.randrange(1, 9))
    ]
    rng.shuffle(entries)
    shards = [entries[i::7] for i in range(7)]
    store = MemoryStore({i: _shard(s, [f"raw/q{i}"]) for i, s in enumerate(shards)})
    joined = _publish(store, len(shards))

    expected = IngestResult(
        files=[e for e, _ in entries],
        quarantined=[QuarantineEntry(f"raw/q{i}", "BurnedInAnnotation", "d", "") for i in range(7)],
        skipped=Reader().skipped(),
    )
    reference = MemoryStore({})
    digest, manifest = publish(
        reference,
        dataset="ds",
        result=expected,
        reader=Reader(),
        config=CONFIG,
        origin=ORIGIN,
        now=NOW,  # type: ignore[arg-type]
    )
    assert store.published["ds"] == reference.published["ds"]
    assert joined.digest == digest
    assert joined.manifest == {**manifest, "files": []}
    assert joined.kept == len(entries)
    assert store.reports == reference.reports
    assert sorted(d for _, d, _ in store.promoted) == sorted(e.digest for e, _ in entries)
    assert all(
        staged == f"{PREFIX}out/objects/{d.removeprefix('sha256:')}" for staged, d, _ in store.promoted
    )


def test_a_path_given_by_two_shards_keeps_the_first_in_listing_order() -> None:
    first = _entry("P1/1.1/1.1.1/a.dcm")
    store = MemoryStore(
        {
            0: _shard([(_entry("P2/2.1/2.1.1/b.dcm"), "raw/b")]),
            1: _shard([(first, "raw/x"), (_entry("P0/0.1/0.1.1/c.dcm"), "raw/c")]),
            2: _shard([(first, "raw/y")]),
        }
    )
    joined = _publish(store, 3)
    manifest = json.loads(store.published["ds"])
    assert [f["path"] for f in manifest["files"]] == [
        "P0/0.1/0.1.1/c.dcm",
        "P1/1.1/1.1.1/a.dcm",
        "P2/2.1/2.1.1/b.dcm",
    ]
    assert manifest["counts"]["files"] == joined.kept == 3
    duplicate = [q for q in joined.result.quarantined if q.reason == DUPLICATE]
    assert [(q.item, "raw/x" in q.detail) for q in duplicate] == [("raw/y", True)]
    assert manifest["quarantine"]["files"] == 1


def test_a_shard_without_a_result_publishes_nothing() -> None:
    store = MemoryStore({0: _shard([(_entry("P1/1.1/1.1.1/a.dcm"), "raw/a")])})
    with pytest.raises(LookupError, match="shard 1"):
        _publish(store, 2)
    assert store.published == {} and store.reports == {}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda shard: shard["files"][0].pop("digest"),
        lambda shard: shard["files"][0].update(size="many"),
        lambda shard: shard["files"][0].update(path=7),
        lambda shard: shard["origins"].clear(),
    ],
)
def test_a_malformed_shard_result_publishes_nothing(tamper: Any) -> None:
    shard = _shard([(_entry("P1/1.1/1.1.1/a.dcm"), "raw/a")])
    tamper(shard)
    store = MemoryStore({0: shard})
    with pytest.raises(SnapshotError, match="shard 0's result is malformed"):
        _publish(store, 1)
    assert store.published == {} and store.promoted == []


def test_a_refused_run_publishes_nothing() -> None:
    shard = _shard([(_entry("P1/1.1/1.1.1/a.dcm"), "raw/a")])
    shard["failed"] = [{"item": "raw/z", "reason": "SourceUnreachable", "detail": "timed out"}]
    store = MemoryStore({0: shard})
    seen: list[IngestResult] = []

    def refuse(result: IngestResult) -> Exception | None:
        seen.append(result)
        return RuntimeError("an outage") if result.failed else None

    with pytest.raises(RuntimeError, match="an outage"):
        _publish(store, 1, refuse=refuse)
    assert [f.item for f in seen[0].failed] == ["raw/z"]
    assert store.published == {} and store.reports == {}
