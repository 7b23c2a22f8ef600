"""A Dataset's ingest as an Indexed Job, the operator's last step: join the shards' results into one snapshot
and publish it, in memory that does not grow with the snapshot's files.

The shards' results are read one at a time (each bounded by ``spec.ingest.filesPerShard``): each is checked,
its kept files sorted by path and written to a run file on disk, and its objects brought into the store's
content-addressed objects, each read through and checked against its digest and size
(``SnapshotStore.promote``). The run files are then merged in path order, a few hundred at a time, and the
manifest is written as a stream between its canonical head and tail (``snapshots.manifest_frame``) to a file
that is hashed and uploaded last (``SnapshotStore.publish_file``). The manifest's bytes, and so the snapshot's
digest, are those the in-process ingest publishes for the same files (``pipeline.publish``); every reader of a
snapshot reads it as before. What stays in memory: one shard's result at a time, one line per run file while
merging, the quarantined entries, and the distinct patients, studies and series the manifest counts.

Two inputs in different shards giving the same output path (the same SOP Instance UID) keep the first, in
listing order, and quarantine the other, as the in-process ingest does (``pipeline.DUPLICATE``).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from cleanroom.deid import DeidConfig
from cleanroom.ingest.pipeline import (
    DUPLICATE,
    IngestResult,
    QuarantineEntry,
    created_at,
    describe_snapshot,
    write_quarantine_report,
)
from cleanroom.ingest.sharded import (
    entry_from_json,
    entry_to_json,
    quarantine_from_json,
    result_key,
    staged_key,
)
from cleanroom.snapshots import SnapshotError, SnapshotStore, canonical_json
from cleanroom.snapshots.manifest import Tally, manifest_frame
from cleanroom.sources import SourceReader

# Objects promoted at once (within the store client's pool of 10 connections).
PROMOTIONS = 8
# Run files merged at once; more are merged in rounds (an Indexed Job may have 100,000 shards).
MERGE_FAN_IN = 256

# A kept file on its way to the manifest: (path, shard, position in the shard's result, the entry as the
# shard recorded it, the source item it came from). Ordered by path, then by listing order.
Record = tuple[str, int, int, dict[str, Any], str]


@dataclass
class Joined:
    """What a published run kept and held back (its kept files are in the manifest, not here)."""

    digest: str
    manifest: dict[str, Any]
    kept: int
    result: IngestResult = field(default_factory=IngestResult)


def _records(index: int, shard: dict[str, Any]) -> list[Record]:
    """Shard ``index``'s kept files in path order; SnapshotError when its result is not one."""
    try:
        origins: dict[str, str] = shard["origins"]
        records = []
        for at, raw in enumerate(shard["files"]):
            entry = entry_from_json(raw)
            if not isinstance(entry.path, str) or not isinstance(entry.digest, str):
                raise TypeError(f"entry {at}: path and digest must be strings")
            records.append((entry.path, index, at, entry_to_json(entry), str(origins[entry.path])))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SnapshotError(
            f"shard {index}'s result is malformed ({type(error).__name__}: {error})"
        ) from error
    return sorted(records, key=lambda record: record[:3])


def _promote(store: SnapshotStore, prefix: str, records: Iterable[Record]) -> None:
    """Every object of one shard into the store's objects, each checked against its digest and size."""
    wanted = sorted({(record[3]["digest"], int(record[3]["size"])) for record in records})
    with ThreadPoolExecutor(PROMOTIONS) as pool:
        list(pool.map(lambda pair: store.promote(staged_key(prefix, pair[0]), *pair), wanted))


def _write_run(directory: str, name: str, records: Iterable[Record]) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as run:
        for record in records:
            run.write(json.dumps(record) + "\n")
    return path


def _read_run(run: IO[str]) -> Iterator[Record]:
    for line in run:
        path, index, at, entry, item = json.loads(line)
        yield path, index, at, entry, item


def _merged(paths: list[str], directory: str, stack: contextlib.ExitStack) -> Iterator[Record]:
    """The records of every run file in order, merging ``MERGE_FAN_IN`` files at a time."""
    round_ = 0
    while len(paths) > MERGE_FAN_IN:
        round_ += 1
        merged = []
        for start in range(0, len(paths), MERGE_FAN_IN):
            with contextlib.ExitStack() as group:
                runs = [_read_run(group.enter_context(open(p))) for p in paths[start : start + MERGE_FAN_IN]]
                name = f"merge-{round_}-{start}"
                merged.append(_write_run(directory, name, heapq.merge(*runs, key=lambda r: r[:3])))
            for done in paths[start : start + MERGE_FAN_IN]:
                os.remove(done)
        paths = merged
    # The caller's stack closes them once the manifest is written.
    runs = [_read_run(stack.enter_context(open(p))) for p in paths]  # noqa: SIM115
    return heapq.merge(*runs, key=lambda r: r[:3])


def _write_entries(
    records: Iterator[Record], out: IO[bytes], tally: Tally, held: list[QuarantineEntry]
) -> None:
    """The manifest's files list, streamed: each path once (the first), the others quarantined."""
    out.write(b"[")
    holder: tuple[str, str] | None = None
    for path, _index, _at, raw, item in records:
        if holder is not None and holder[0] == path:
            held.append(
                QuarantineEntry(
                    item,
                    DUPLICATE,
                    f"{holder[1]} has the same SOP Instance UID and is kept as {path}; this one was not written",
                )
            )
            continue
        entry = entry_from_json(raw)
        if holder is not None:
            out.write(b",")
        out.write(canonical_json(entry.to_json()))
        tally.add(entry)
        holder = (path, item)
    out.write(b"]")


def publish_shards(
    store: SnapshotStore,
    prefix: str,
    shards: int,
    *,
    dataset: str,
    reader: SourceReader,
    config: DeidConfig,
    origin: dict[str, Any],
    missing: Callable[[int], Exception],
    refuse: Callable[[IngestResult], Exception | None],
    now: datetime | None = None,
) -> Joined:
    """Join the run's shards and publish its snapshot: objects first, quarantine report, manifest last.
    ``missing(i)`` is raised for a shard without a result; ``refuse`` may stop the run (its failed entries)
    before anything is published; SnapshotError for a result or an object that is not what it says."""
    result = IngestResult()
    with tempfile.TemporaryDirectory(prefix="cleanroom-publish-") as directory:
        runs = []
        for index in range(shards):
            shard = store.document(result_key(prefix, index))
            if shard is None:
                raise missing(index)
            records = _records(index, shard)
            result.quarantined.extend(quarantine_from_json(q) for q in shard.get("quarantined", ()))
            result.failed.extend(quarantine_from_json(q) for q in shard.get("failed", ()))
            _promote(store, prefix, records)
            runs.append(_write_run(directory, f"shard-{index}", records))
            del shard, records
        failure = refuse(result)
        if failure is not None:
            raise failure
        result.skipped.extend(reader.skipped())
        tally = Tally()
        entries_path = os.path.join(directory, "files.json")
        with contextlib.ExitStack() as stack, open(entries_path, "wb") as entries:
            _write_entries(_merged(runs, directory, stack), entries, tally, result.quarantined)
        created = created_at(now)
        report = write_quarantine_report(store, dataset, result, created)
        description = describe_snapshot(dataset, reader, config, len(result.quarantined), report, created)
        before, after = manifest_frame(tally, {"origin": origin}, **description)
        manifest_path = os.path.join(directory, "manifest.json")
        with open(manifest_path, "wb") as manifest, open(entries_path, "rb") as files:
            manifest.write(before)
            while chunk := files.read(1 << 20):
                manifest.write(chunk)
            manifest.write(after)
        digest = store.publish_file(dataset, manifest_path)
        head = json.loads(before + b"[]" + after)
    return Joined(digest, head, tally.files, result)
