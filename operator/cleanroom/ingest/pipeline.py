"""The ingest pipeline: read every source file, de-identify it in worker processes (both cores), store what
is clean, report what is quarantined, and publish one manifest last.

Every entry of the source ends in exactly one place: kept (in the snapshot), quarantined (a property of the
file, with its reason), skipped (not a file: a FIFO, a dangling link, an empty directory) or failed (the
run's problem, not the file's). A failed entry fails the run, and nothing is published: objects may be
stored, but without a manifest no reader sees them, and the next run skips what is already stored.

Faults end the run rather than hang it or thin the snapshot:
- the source or the store failing once stops the run at once (a circuit breaker): the other workers finish
  the file in hand and take no more, so an outage surfaces in seconds, not after every file has timed out;
- a worker killed by a signal (the out-of-memory killer) breaks the pool: the files it could have held are
  tried once more in a fresh pool, and fail the run if a worker dies again;
- memory is bounded: a worker holds one file at a time, no file over ``Limits.max_file_bytes`` is read,
  and no deflated file inflating past ``Limits.max_inflated_bytes`` is parsed (both are quarantined).
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cleanroom.deid import CleanFile, DeidConfig, deidentify_bytes
from cleanroom.ingest.reasons import (
    NOT_ATTEMPTED,
    OUTAGES,
    SOURCE_UNREACHABLE,
    STORAGE_UNAVAILABLE,
    WORKER_DIED,
)
from cleanroom.snapshots import FileEntry, S3Location, SnapshotStore, build_manifest
from cleanroom.sources import DEFAULT_MAX_FILE_BYTES, Skipped, SourceReader, TooLarge


class Sink(Protocol):
    def put(self, clean: CleanFile) -> FileEntry: ...


class DuplicateInstance(Exception):
    """Another input already gave this output (the same SOP Instance UID): it is kept, not overwritten."""


@dataclass(frozen=True)
class StoreSink:
    location: S3Location

    def put(self, clean: CleanFile) -> FileEntry:
        digest = _store(self.location).put_object(clean.data)
        return file_entry(clean, digest)


@dataclass(frozen=True)
class DirectorySink:
    path: str

    def put(self, clean: CleanFile) -> FileEntry:
        """Write the file under its instance path, never over another file, and never leave a half-written
        one behind a process that dies: written as an unnamed file in its directory (O_TMPFILE), then linked
        into place, which fails when the name exists (nothing is synced: a power cut may still leave one).
        Where the filesystem has no unnamed files, written aside under a hidden name and linked. A directory
        has no content addresses, so no digest is computed (hashing each file cost a fifth of the time it
        takes)."""
        target = os.path.join(self.path, clean.path)
        parent = os.path.dirname(target)
        try:
            try:
                _write_new(clean.parts, parent, target)
            except FileNotFoundError:
                # The series' first file (its siblings find the directory there).
                os.makedirs(parent, exist_ok=True)
                _write_new(clean.parts, parent, target)
        except FileExistsError as error:
            # The same bytes are this file written before (a batch tried again after a worker died), or an
            # identical copy of its input, which the run tells from its own record; other bytes are another
            # input with the same SOP Instance UID.
            if Path(target).read_bytes() != clean.data:
                raise DuplicateInstance(clean.path) from error
        return file_entry(clean, "")


# Whether unnamed files can be linked into place here: O_TMPFILE (Linux) and /proc to name them by.
_UNNAMED = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


def _write_new(parts: Sequence[bytes | memoryview], parent: str, target: str) -> None:
    """Write ``parts`` as ``target`` in ``parent``, whole or not at all (FileExistsError when taken)."""
    descriptor = _open_unnamed(parent)
    if descriptor is None:
        _write_aside(parts, parent, target)
        return
    try:
        _write_all(descriptor, parts)
        # linkat(AT_SYMLINK_FOLLOW) through /proc names the open file (open(2), O_TMPFILE); os.link passes
        # that flag only when given a dir_fd, which an absolute path ignores.
        os.link(f"/proc/self/fd/{descriptor}", target, src_dir_fd=descriptor)
    finally:
        os.close(descriptor)


def _open_unnamed(directory: str) -> int | None:
    """An unnamed file in ``directory``, open for writing; None where the filesystem makes none."""
    if not _UNNAMED:
        return None
    try:
        return os.open(directory, os.O_WRONLY | os.O_TMPFILE, 0o666)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _write_aside(parts: Sequence[bytes | memoryview], parent: str, target: str) -> None:
    """Write under a hidden name beside ``target`` and link it into place (FileExistsError when taken)."""
    aside = f"{parent}/.{os.path.basename(target)}.{os.getpid()}.{threading.get_ident()}.part"
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        try:
            _write_all(descriptor, parts)
        finally:
            os.close(descriptor)
        os.link(aside, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)


def _write_all(descriptor: int, parts: Sequence[bytes | memoryview]) -> None:
    """Every byte of ``parts``, in order (writev may write fewer than asked)."""
    pending = [memoryview(part) for part in parts if len(part)]
    while pending:
        written = os.writev(descriptor, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]


def file_entry(clean: CleanFile, digest: str) -> FileEntry:
    return FileEntry(
        path=clean.path,
        digest=digest,
        size=clean.size,
        patient=clean.patient,
        study=clean.study,
        series=clean.series,
        modality=clean.modality,
        body_part=clean.body_part,
        cleaned=tuple((c.attribute, c.identifier) for c in clean.cleaned),
    )


@dataclass(frozen=True)
class QuarantineEntry:
    """An entry that is not in the snapshot, and why (a quarantined file, or a failed one)."""

    item: str
    reason: str
    detail: str
    attribute: str = ""

    def to_json(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason, "detail": self.detail, "attribute": self.attribute}


DUPLICATE = "DuplicateInstance"


@dataclass(frozen=True)
class Limits:
    """What one worker may hold: one file of at most ``max_file_bytes`` as read, whose deflated data set (if
    any) inflates to at most ``max_inflated_bytes``. A worker's memory is a few times the larger of the two."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_inflated_bytes: int = DEFAULT_MAX_FILE_BYTES


@dataclass
class IngestResult:
    files: list[FileEntry] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    failed: list[QuarantineEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # Which input each kept file came from: snapshot path -> item.
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def outage(self) -> QuarantineEntry | None:
        """The failure that ended the run (the first one that was not a consequence of another)."""
        return next((f for f in self.failed if f.reason != NOT_ATTEMPTED), None)

    def quarantine_report(self) -> dict[str, Any]:
        return {
            "files": len(self.quarantined),
            "items": [q.to_json() for q in sorted(self.quarantined, key=lambda q: q.item)],
            "skipped": [
                {"item": s.item, "reason": s.reason, "detail": s.detail}
                for s in sorted(self.skipped, key=lambda s: s.item)
            ],
        }

    def report(self) -> dict[str, Any]:
        """Every entry of the source, each in one place: kept (with its output path, and what was cleaned out
        of it), quarantined, skipped or failed."""
        entries = {f.path: f for f in self.files}
        return {
            **self.quarantine_report(),
            "kept": [_kept(item, entries.get(path), path) for path, item in sorted(self.origins.items())],
            "failed": [f.to_json() for f in sorted(self.failed, key=lambda f: f.item)],
        }


def _kept(item: str, entry: FileEntry | None, path: str) -> dict[str, Any]:
    kept: dict[str, Any] = {"item": item, "path": path}
    if entry is not None and entry.cleaned:
        kept["cleaned"] = entry.to_json()["cleaned"]
    return kept


# Worker-process state, set once per process by _init so each task carries only item names.
_WORKER: dict[str, Any] = {}
_STORES: dict[S3Location, SnapshotStore] = {}
# A forked worker makes its own store clients: one inherited from the parent (a run small enough to go
# without workers stores in the parent) would share its open connection with every sibling.
os.register_at_fork(after_in_child=_STORES.clear)


def _store(location: S3Location) -> SnapshotStore:
    if location not in _STORES:
        _STORES[location] = SnapshotStore(location)
    return _STORES[location]


class _Breaker(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...


def _init(reader: SourceReader, config: DeidConfig, sink: Sink, limits: Limits, breaker: _Breaker) -> None:
    _WORKER.update(reader=reader, config=config, sink=sink, limits=limits, breaker=breaker)


Outcome = tuple[str, FileEntry | QuarantineEntry]


def process_item(item: str) -> FileEntry | QuarantineEntry:
    """Read, de-identify and store one file. What is wrong with the file becomes a quarantine entry with its
    reason; a failure of the source or the store becomes a failed entry (the run's problem)."""
    reader: SourceReader = _WORKER["reader"]
    limits: Limits = _WORKER["limits"]
    try:
        data = reader.read(item, limits.max_file_bytes)
    except TooLarge as error:
        return QuarantineEntry(item, "TooLarge", str(error))
    except Exception as error:
        return QuarantineEntry(
            item, SOURCE_UNREACHABLE, f"reading it failed: {type(error).__name__}: {error}"
        )
    try:
        outcome = deidentify_bytes(data, _WORKER["config"], limits.max_inflated_bytes)
    except Exception as error:
        return QuarantineEntry(item, "DeidentificationFailed", f"{type(error).__name__}: {error}")
    del data
    if isinstance(outcome, CleanFile):
        try:
            entry: FileEntry = _WORKER["sink"].put(outcome)
        except DuplicateInstance as duplicate:
            # The detail is the path for now: the run knows which input holds it and says so (_Recorder).
            return QuarantineEntry(item, DUPLICATE, str(duplicate))
        except Exception as error:
            return QuarantineEntry(
                item, STORAGE_UNAVAILABLE, f"storing it failed: {type(error).__name__}: {error}"
            )
        return entry
    return QuarantineEntry(item, outcome.reason, outcome.detail, outcome.attribute)


def process_batch(items: Sequence[str]) -> list[Outcome]:
    """``process_item`` for each item, until the breaker trips (here or in another worker): the rest of the
    batch is not attempted."""
    breaker: _Breaker = _WORKER["breaker"]
    outcomes: list[Outcome] = []
    for item in items:
        if breaker.is_set():
            outcomes.append((item, _not_attempted(item)))
            continue
        outcome = process_item(item)
        if isinstance(outcome, QuarantineEntry) and outcome.reason in OUTAGES:
            breaker.set()
        outcomes.append((item, outcome))
    return outcomes


def _not_attempted(item: str) -> QuarantineEntry:
    return QuarantineEntry(item, NOT_ATTEMPTED, "not tried: the run stopped at the first outage")


Progress = Callable[[int, int], None]
Outage = Callable[[QuarantineEntry], None]
# Forking a worker costs about what 50-100 files take on the encoded-bytes path.
SMALL_BATCH_PER_WORKER = 64
# Workers get files in batches (fewer round trips); small enough that a broken pool loses little.
MAX_BATCH = 16


class _Recorder:
    """Sorts outcomes into the result as they arrive, reports progress, and trips the breaker."""

    def __init__(
        self,
        result: IngestResult,
        total: int,
        breaker: _Breaker,
        progress: Progress | None,
        progress_every: float,
        outage: Outage | None,
    ) -> None:
        self.result, self.total, self.breaker = result, total, breaker
        self.progress, self.progress_every, self.on_outage = progress, progress_every, outage
        self.last = 0.0
        self.done = 0
        self.told = False
        # Inputs refused by the sink as duplicates, with the path another input holds (named in finish()).
        self.duplicates: list[tuple[str, str]] = []

    def __call__(self, item: str, outcome: FileEntry | QuarantineEntry) -> None:
        result = self.result
        if isinstance(outcome, FileEntry):
            if outcome.path in result.origins:
                self.duplicates.append((item, outcome.path))
            else:
                result.files.append(outcome)
                result.origins[outcome.path] = item
        elif outcome.reason == DUPLICATE:
            self.duplicates.append((item, outcome.detail))
        elif outcome.reason in (*OUTAGES, WORKER_DIED, NOT_ATTEMPTED):
            result.failed.append(outcome)
            if outcome.reason != NOT_ATTEMPTED:
                self.breaker.set()
                if not self.told and self.on_outage:
                    self.on_outage(outcome)
                self.told = True
        else:
            result.quarantined.append(outcome)
        self.done += 1
        if self.progress and (time.monotonic() - self.last > self.progress_every or self.done == self.total):
            self.last = time.monotonic()
            self.progress(self.done, self.total)

    def finish(self) -> IngestResult:
        for item, path in self.duplicates:
            holder = self.result.origins.get(path, "another input")
            self.result.quarantined.append(
                QuarantineEntry(
                    item,
                    DUPLICATE,
                    f"{holder} has the same SOP Instance UID and is kept as {path}; this one was not written",
                )
            )
        return self.result


def run(
    reader: SourceReader,
    items: list[str],
    config: DeidConfig,
    sink: Sink,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    progress_every: float = 2.0,
    limits: Limits | None = None,
    skipped: Sequence[Skipped] = (),
    outage: Outage | None = None,
) -> IngestResult:
    """De-identify ``items`` from ``reader`` into ``sink`` using ``workers`` processes (default: every core).
    ``skipped`` (entries of the source that are not files) go into the result as they are; ``outage`` is told
    at once when the first outage stops the run."""
    workers = workers or os.cpu_count() or 1
    limits = limits or Limits()
    result = IngestResult(skipped=list(skipped))
    total = len(items)
    # Starting workers costs more than a few dozen files take in one process.
    if workers == 1 or total < workers * SMALL_BATCH_PER_WORKER:
        breaker: _Breaker = threading.Event()
        record = _Recorder(result, total, breaker, progress, progress_every, outage)
        _init(reader, config, sink, limits, breaker)
        for item, outcome in process_batch(items):
            record(item, outcome)
        return record.finish()
    # fork starts workers at once but copies only the calling thread, so it is safe only in a single-threaded
    # process (the CLI); the operator runs kopf's threads and gets spawn.
    context = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    breaker = context.Event()
    record = _Recorder(result, total, breaker, progress, progress_every, outage)
    size = max(1, min(MAX_BATCH, total // (workers * 8) or 1))
    lost = _run_pool(context, workers, (reader, config, sink, limits, breaker), _batches(items, size), record)
    if lost:
        # A worker died (killed by a signal, or by the out-of-memory killer) and took its batch, and the
        # pool, with it. What was not done is tried once more in a fresh pool, a file at a time.
        lost = _run_pool(context, workers, (reader, config, sink, limits, breaker), _batches(lost, 1), record)
    for item in lost:
        record(
            item,
            QuarantineEntry(
                item,
                WORKER_DIED,
                "a worker process died while this file was being de-identified or waited its turn (killed by "
                "a signal, such as the out-of-memory killer's), twice; lower CLEANROOM_INGEST_MAX_FILE_BYTES "
                "or give the operator more memory",
            ),
        )
    return record.finish()


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _run_pool(
    context: Any,
    workers: int,
    initargs: tuple[Any, ...],
    batches: Iterator[list[str]],
    record: _Recorder,
) -> list[str]:
    """Run the batches in a pool of ``workers`` processes, at most two batches per worker queued at a time;
    return the items of batches lost to a broken pool (nothing else is lost: a run always ends)."""
    breaker: _Breaker = initargs[-1]
    lost: list[str] = []
    running: dict[Future[list[Outcome]], list[str]] = {}
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=initargs)
    try:
        while True:
            if breaker.is_set():
                for batch in batches:
                    for item in batch:
                        record(item, _not_attempted(item))
            for batch in batches:
                try:
                    running[executor.submit(process_batch, batch)] = batch
                except BrokenProcessPool:
                    lost.extend(batch)
                    lost.extend(item for rest in batches for item in rest)
                    break
                if len(running) >= 2 * workers:
                    break
            if not running:
                return lost
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                batch = running.pop(future)
                try:
                    outcomes = future.result()
                except BrokenProcessPool:
                    lost.extend(batch)
                    continue
                for item, outcome in outcomes:
                    record(item, outcome)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


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
    created = created_at(now)
    report_url = write_quarantine_report(store, dataset, result, created)
    manifest = build_manifest(
        files=result.files,
        **describe_snapshot(dataset, reader, config, len(result.quarantined), report_url, created),
    )
    manifest["origin"] = origin
    return store.publish(dataset, manifest), manifest


def created_at(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_quarantine_report(store: SnapshotStore, dataset: str, result: IngestResult, created: str) -> str:
    """The run's quarantine report (what was held back, and why), written before its manifest; its URL."""
    report_key = f"quarantine/{dataset}/{created.replace(':', '')}.json"
    return store.put_report(
        report_key, {"dataset": dataset, "createdAt": created, **result.quarantine_report()}
    )


def describe_snapshot(
    dataset: str, reader: SourceReader, config: DeidConfig, quarantined: int, report_url: str, created: str
) -> dict[str, Any]:
    """A manifest's fields other than its files and their counts (``snapshots.build_manifest``'s description)."""
    return {
        "dataset": dataset,
        "source": reader.describe(),
        "method": config.method.value,
        "options": [o.value for o in config.options],
        "key_id": config.keyring.key_id if config.method.value == "Pseudonymize" else "discarded",
        "quarantine": {"files": quarantined, "report": report_url},
        "created_at": created,
    }
