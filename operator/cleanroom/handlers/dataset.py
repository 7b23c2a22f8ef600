"""Thin kopf handlers for Datasets: read the world, ask the plan (``cleanroom.datasets``), carry out what it
says.

The decisions (which source and credentials, how to de-identify, when a run fails, what status, Events and
audit records each step writes) are the plan's; this module reads Secrets, the snapshot store and the
source, runs the ingest in worker processes (spawned: kopf's threads make fork unsafe) and writes the plan's
effects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from cleanroom import config, datasets
from cleanroom.api import DATASETS, GROUP, VERSION, DatasetSpec, decode
from cleanroom.datasets import IngestFailure, backoff, run_failure, sharding
from cleanroom.deid import DeidConfig
from cleanroom.handlers import _audit, _ingest_job, _kube, _metrics
from cleanroom.handlers._clock import Clock
from cleanroom.ingest import (
    IngestResult,
    Limits,
    QuarantineEntry,
    SnapshotReader,
    StoreSink,
    publish,
    run,
    sharded,
)
from cleanroom.snapshots import SnapshotStore, summary
from cleanroom.sources import DicomWebReader, DirectoryReader, S3Reader, Skipped, SourceError, SourceReader
from cleanroom.workspaces import load_settings

__all__ = ["IngestFailure", "backoff", "dataset_changed", "reconcile_dataset", "run_failure"]


def _carry_out(body: Mapping[str, Any], effects: datasets.Effects) -> None:
    """Write the status over the Dataset as it is now, then post the Events, then record the audit."""
    name = body["metadata"]["name"]
    if effects.status is not None:
        current = _kube.get_dataset(name) or dict(body)
        _kube.patch_dataset_status(name, effects.status.applied_to(current, datetime.now(UTC)))
    for event in effects.events:
        kopf.event(dict(body), type=event.type, reason=event.reason, message=event.message)
    for entry in effects.audit:
        _audit.record(entry.action, entry.resources, outcome=entry.outcome, reason=entry.reason)


def _reader(source: datasets.Input) -> SourceReader:
    match source:
        case datasets.DirectoryInput():
            return DirectoryReader(source.path)
        case datasets.S3Input():
            return S3Reader(
                source.endpoint,
                source.bucket,
                source.prefix,
                source.region,
                source.access_key,
                source.secret_key,
            )
        case datasets.DicomWebInput():
            return DicomWebReader(
                source.url, source.study_instance_uids, source.username, source.password, source.token
            )
        case datasets.SnapshotInput():
            return SnapshotReader(config.snapshot_location(), source.dataset, source.snapshot)


def _open_store() -> SnapshotStore:
    try:
        store = SnapshotStore(config.snapshot_location())
        store.ensure_bucket()
    except Exception as error:
        raise datasets.store_unreachable(error) from error
    return store


def _run(
    body: Mapping[str, Any],
    reader: SourceReader,
    items: list[str],
    skipped: Sequence[Skipped],
    deid_config: DeidConfig,
    store: SnapshotStore,
) -> IngestResult:
    name = body["metadata"]["name"]

    def progress(done: int, total: int) -> None:
        _kube.patch_dataset_status(name, datasets.progress_patch(done, total))

    def outage(entry: QuarantineEntry) -> None:
        _carry_out(body, datasets.Effects(status=datasets.outage_stops_run(entry)))

    cap = config.ingest_max_file_bytes()
    started = time.monotonic()
    result = run(
        reader,
        items,
        deid_config,
        StoreSink(store.location),
        workers=config.ingest_workers(),
        progress=progress,
        limits=Limits(cap, cap),
        skipped=skipped,
        outage=outage,
    )
    _metrics.ingested(name, result, time.monotonic() - started)
    return result


def _ingest_as_job(ingest: _ingest_job.JobIngest, logger: Any) -> tuple[str, Mapping[str, Any]]:
    """Plan the run (once), wait for its shard pods, join their results and publish; (digest, manifest).
    ``ShardsRunning`` while shards run."""
    body, store, reader = ingest.body, ingest.store, ingest.reader
    name = body["metadata"]["name"]

    def started(files: int, shards: int) -> None:
        location = f"{reader.describe()['location']} in {shards} shards"
        _carry_out(body, datasets.ingest_started(name, files, location))

    plan = sharded.planned(store, ingest.prefix) or _ingest_job.plan_run(ingest, started)
    _ingest_job.wait_for_shards(ingest, plan)
    joined = _ingest_job.publish_shards(ingest, plan, run_failure)
    digest, manifest = joined.digest, joined.manifest
    logger.info(f"published {digest} from {len(plan['shards'])} shards: {joined.kept} files")
    _carry_out(body, datasets.ingest_finished(name, digest, joined.kept, joined.result.quarantined))
    _ingest_job.clean_up(ingest)
    return digest, manifest


def _ingest(
    body: Mapping[str, Any], spec: DatasetSpec, store: SnapshotStore, logger: Any
) -> tuple[str, Mapping[str, Any]]:
    """Read the source, de-identify it into the store and publish the snapshot; (digest, manifest)."""
    name = body["metadata"]["name"]
    parent = _kube.get_dataset(spec.source.dataset.name) if spec.source.dataset is not None else None
    source = datasets.resolve_input(name, spec, _kube.secret_value, parent)
    reader = _reader(source)
    deid_config = datasets.deid_config(spec, _kube.secret_value)
    site = load_settings()
    simulated = site.ingest_mode == sharding.JOB_MODE and _kube.simulated_nodes()[0]
    if sharding.where_ingest_runs(site.ingest_mode, source, simulated).as_job:
        ingest = _ingest_job.JobIngest(body, spec, source, reader, deid_config, store, site)
        return _ingest_as_job(ingest, logger)
    try:
        items, skipped = reader.items(), reader.skipped()
    except SourceError as error:
        raise datasets.source_unreachable(error) from error
    _carry_out(body, datasets.ingest_started(name, len(items), reader.describe()["location"]))
    started = time.monotonic()
    result = _run(body, reader, items, skipped, deid_config, store)
    failure = run_failure(result)
    if failure is not None:
        raise failure
    digest, manifest = publish(
        store,
        dataset=name,
        result=result,
        reader=reader,
        config=deid_config,
        origin=datasets.snapshot_origin(body),
    )
    logger.info(
        f"published {digest}: {len(result.files)} files, {len(result.quarantined)} quarantined, "
        f"{time.monotonic() - started:.1f}s"
    )
    _carry_out(body, datasets.ingest_finished(name, digest, len(result.files), result.quarantined))
    return digest, manifest


def _make_ready(
    body: Mapping[str, Any], spec: DatasetSpec, store: SnapshotStore, digest: str, manifest: Mapping[str, Any]
) -> None:
    """Status Ready with the snapshot, then retention: older snapshots no Workspace pins are pruned."""
    name = body["metadata"]["name"]
    snapshot = summary(manifest, digest)
    _metrics.snapshot_published(name, int(snapshot["bytes"]))
    fingerprint = datasets.ingest_fingerprint(body["spec"])
    _carry_out(body, datasets.snapshot_ready(snapshot, manifest["quarantine"], fingerprint))
    keep = datasets.kept_by_retention(digest, _kube.workspaces_using(name))
    pruned = store.prune(name, spec.retention.keep_snapshots, keep)
    _carry_out(body, datasets.snapshots_pruned(name, pruned))


@_metrics.timed("Dataset")
def reconcile_dataset(body: Mapping[str, Any], logger: Any) -> float | None:
    """Ingest and publish the snapshot for the Dataset's source and de-identification, or adopt the one
    already published for them. Seconds until the pass should look again while an ingest Job's shards run
    (not an error: the pass did its part), None when done."""
    spec = decode(DatasetSpec, body["spec"])
    store = _open_store()
    published = datasets.adoptable(store.snapshots(body["metadata"]["name"]), datasets.snapshot_origin(body))
    if published is not None:
        # Published by a pass that stopped before cleaning up after its run.
        _ingest_job.remove_runs(store, body["metadata"]["name"])
    else:
        try:
            published = _ingest(body, spec, store, logger)
        except _ingest_job.ShardsRunning as running:
            logger.info(f"ingest running as a Job: {running}")
            return running.delay
    _make_ready(body, spec, store, *published)
    return None


# While a Dataset's shard pods run, its pass is judged again on this clock rather than by kopf's retry
# (which would log each look as an error and post it as a Warning Event). One pass per Dataset at a time,
# whichever started it (kopf's event or the clock): a run is published once.
CLOCK = Clock(threads=1)
_PASSES: dict[str, threading.Lock] = defaultdict(threading.Lock)
_FAILED_PASSES: dict[str, int] = {}
log = logging.getLogger(__name__)


def _look_again(name: str, seconds: float) -> None:
    CLOCK.schedule(("dataset", name), time.monotonic() + seconds, lambda: _timed_pass(name))


def _timed_pass(name: str) -> None:
    """The clock's pass over the Dataset as it is now: looked at again while its shards run, and after a
    failure with backoff; nothing more once it is Ready or gone."""
    body = _kube.get_dataset(name)
    if body is None or datasets.up_to_date(body):
        _FAILED_PASSES.pop(name, None)
        return
    try:
        with _PASSES[name]:
            again = reconcile_dataset(body, log)
    except Exception as error:
        # What kopf would retry (an API or store error) is retried here too, with the same backoff.
        if isinstance(error, IngestFailure):
            _carry_out(body, datasets.failed(name, error))
        else:
            log.warning(f"Dataset {name}: the pass failed ({type(error).__name__}: {error}); trying again")
        _FAILED_PASSES[name] = _FAILED_PASSES.get(name, 0) + 1
        _look_again(name, backoff(_FAILED_PASSES[name]))
        return
    _FAILED_PASSES.pop(name, None)
    if again is not None:
        _look_again(name, again)


@kopf.on.resume(GROUP, VERSION, DATASETS)
@kopf.on.create(GROUP, VERSION, DATASETS)
@kopf.on.update(GROUP, VERSION, DATASETS)
def dataset_changed(body: kopf.Body, retry: int, logger: Any, **_: Any) -> None:
    if datasets.up_to_date(body):
        return
    name = body["metadata"]["name"]
    try:
        with _PASSES[name]:
            again = reconcile_dataset(body, logger)
    except IngestFailure as failure:
        _carry_out(body, datasets.failed(name, failure))
        raise kopf.TemporaryError(f"{failure.reason}: {failure}", delay=backoff(retry)) from failure
    if again is not None:
        _look_again(name, again)


# Shard pods still stopping when their Dataset went (their Job goes by its owner reference, in the background)
# may upload once more after the first sweep: the store is swept again this much later.
SWEPT_AGAIN_SECONDS = 90.0


# The watch's DELETED event rather than kopf.on.delete, as for Workspaces: a finalizer would make deleting a
# Dataset hang while the operator is down. The run's Job, Secret and NetworkPolicy go by their owner
# references; its objects in the store go here, or at the next start-up (collect_ingest_runs).
@kopf.on.event(GROUP, VERSION, DATASETS, when=lambda type, **_: type == "DELETED")
def dataset_deleted(name: str, logger: Any, **_: Any) -> None:
    sweep_runs(name, logger)
    CLOCK.schedule(
        ("dataset-runs", name), time.monotonic() + SWEPT_AGAIN_SECONDS, lambda: sweep_runs(name, log)
    )


def sweep_runs(name: str, logger: Any) -> None:
    """Remove a deleted Dataset's ingest runs from the store (not when a Dataset of that name is back: its
    runs are its own)."""
    try:
        if _kube.get_dataset(name) is not None:
            return
        removed = _ingest_job.remove_runs(SnapshotStore(config.snapshot_location()), name)
    except Exception as error:
        logger.warning(
            f"Dataset {name}'s ingest runs were not removed from the store (at start-up, then): {error}"
        )
        return
    if removed:
        logger.info(f"removed {removed} objects of Dataset {name}'s ingest runs from the store")


@kopf.on.startup()
def collect_ingest_runs(logger: Any, **_: Any) -> None:
    """The ingest runs in the store of Datasets deleted while no operator watched."""

    def live() -> list[str]:
        listing = cast(
            dict[str, Any], _kube.custom_objects().list_cluster_custom_object(GROUP, VERSION, DATASETS)
        )
        return [str(item["metadata"]["name"]) for item in listing.get("items", [])]

    try:
        gone = _ingest_job.remove_orphaned_runs(SnapshotStore(config.snapshot_location()), live)
    except Exception as error:
        # Not a reason to stay down: the next start-up looks again.
        logger.warning(f"ingest runs of deleted Datasets were not looked for in the store: {error}")
        return
    if gone:
        logger.info(f"removed the ingest runs of deleted Datasets: {', '.join(gone)}")
