"""The ingest pipeline: read every source file, de-identify it in worker processes (both cores), store what
is clean, report what is quarantined, and publish one manifest last.

Every input file ends either in the snapshot or in the quarantine report with a reason. Nothing is
published when the run fails part-way: objects may be stored, but without a manifest no reader sees them.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cleanroom.deid import CleanFile, DeidConfig, deidentify_bytes
from cleanroom.snapshots import FileEntry, S3Location, SnapshotStore, build_manifest, content_digest
from cleanroom.sources import SourceReader


class Sink(Protocol):
    def put(self, clean: CleanFile) -> FileEntry: ...


@dataclass(frozen=True)
class StoreSink:
    location: S3Location

    def put(self, clean: CleanFile) -> FileEntry:
        digest = _store(self.location).put_object(clean.data)
        return _entry(clean, digest)


@dataclass(frozen=True)
class DirectorySink:
    path: str

    def put(self, clean: CleanFile) -> FileEntry:
        target = Path(self.path) / clean.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(clean.data)
        return _entry(clean, content_digest(clean.data))


def _entry(clean: CleanFile, digest: str) -> FileEntry:
    return FileEntry(
        path=clean.path,
        digest=digest,
        size=len(clean.data),
        patient=clean.patient,
        study=clean.study,
        series=clean.series,
        modality=clean.modality,
        body_part=clean.body_part,
    )


@dataclass(frozen=True)
class QuarantineEntry:
    item: str
    reason: str
    detail: str
    attribute: str = ""


@dataclass
class IngestResult:
    files: list[FileEntry] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    failed: list[QuarantineEntry] = field(default_factory=list)

    def quarantine_report(self) -> dict[str, Any]:
        return {
            "files": len(self.quarantined),
            "items": [
                {"item": q.item, "reason": q.reason, "detail": q.detail, "attribute": q.attribute}
                for q in sorted(self.quarantined, key=lambda q: q.item)
            ],
        }


# Worker-process state, set once per process by _init so each task carries only an item name.
_WORKER: dict[str, Any] = {}
_STORES: dict[S3Location, SnapshotStore] = {}


def _store(location: S3Location) -> SnapshotStore:
    if location not in _STORES:
        _STORES[location] = SnapshotStore(location)
    return _STORES[location]


def _init(reader: SourceReader, config: DeidConfig, sink: Sink) -> None:
    _WORKER.update(reader=reader, config=config, sink=sink)


def process_item(item: str) -> FileEntry | QuarantineEntry:
    """Read, de-identify and store one file; any failure becomes a quarantine entry with its reason."""
    reader: SourceReader = _WORKER["reader"]
    try:
        data = reader.read(item)
    except Exception as error:
        return QuarantineEntry(item, "ReadFailed", f"{type(error).__name__}: {error}")
    try:
        outcome = deidentify_bytes(data, _WORKER["config"])
    except Exception as error:
        return QuarantineEntry(item, "DeidentificationFailed", f"{type(error).__name__}: {error}")
    if isinstance(outcome, CleanFile):
        try:
            entry: FileEntry = _WORKER["sink"].put(outcome)
        except Exception as error:
            return QuarantineEntry(item, "StoreFailed", f"{type(error).__name__}: {error}")
        return entry
    return QuarantineEntry(item, outcome.reason, outcome.detail, outcome.attribute)


Progress = Callable[[int, int], None]
# Forking a worker costs about what 50-100 files take on the encoded-bytes path.
SMALL_BATCH_PER_WORKER = 64


def run(
    reader: SourceReader,
    items: list[str],
    config: DeidConfig,
    sink: Sink,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    progress_every: float = 2.0,
) -> IngestResult:
    """De-identify ``items`` from ``reader`` into ``sink`` using ``workers`` processes (default: every core)."""
    workers = workers or os.cpu_count() or 1
    result = IngestResult()
    total = len(items)
    last = 0.0

    def record(outcome: FileEntry | QuarantineEntry) -> None:
        nonlocal last
        if isinstance(outcome, FileEntry):
            result.files.append(outcome)
        elif outcome.reason in ("StoreFailed",):
            result.failed.append(outcome)
        else:
            result.quarantined.append(outcome)
        done = len(result.files) + len(result.quarantined) + len(result.failed)
        if progress and (time.monotonic() - last > progress_every or done == total):
            last = time.monotonic()
            progress(done, total)

    # Starting workers costs more than a few dozen files take in one process.
    if workers == 1 or total < workers * SMALL_BATCH_PER_WORKER:
        _init(reader, config, sink)
        for item in items:
            record(process_item(item))
        return result
    # fork starts workers at once but copies only the calling thread, so it is safe only in a single-threaded
    # process (the CLI); the operator runs kopf's threads and gets spawn.
    context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    with context.Pool(workers, initializer=_init, initargs=(reader, config, sink)) as pool:
        for outcome in pool.imap_unordered(
            process_item, items, chunksize=max(1, min(16, total // (workers * 8) or 1))
        ):
            record(outcome)
    return result


def publish(
    store: SnapshotStore,
    *,
    dataset: str,
    result: IngestResult,
    reader: SourceReader,
    config: DeidConfig,
    origin: dict[str, Any],
    now: datetime | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write the quarantine report, then the manifest (last); return (snapshot digest, manifest)."""
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report_key = f"quarantine/{dataset}/{created.replace(':', '')}.json"
    report_url = store.put_report(
        report_key, {"dataset": dataset, "createdAt": created, **result.quarantine_report()}
    )
    manifest = build_manifest(
        dataset=dataset,
        files=result.files,
        source=reader.describe(),
        method=config.method.value,
        options=[o.value for o in config.options],
        key_id=config.keyring.key_id if config.method.value == "Pseudonymize" else "discarded",
        quarantine={"files": len(result.quarantined), "report": report_url},
        created_at=created,
    )
    manifest["origin"] = origin
    return store.publish(dataset, manifest), manifest
