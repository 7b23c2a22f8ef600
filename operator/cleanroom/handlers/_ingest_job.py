"""A Dataset's ingest as an Indexed Job of shard pods: each pass plans the run once (``ingest.sharded``),
keeps its Secret, NetworkPolicy and Job in place, reads the Job's progress, and once every shard is done
joins their results, brings their objects in and publishes the snapshot. The decisions are ``datasets.sharding``'s and the objects
``datasets.ingest_job``'s; this module reads and writes.

A pass that finds shards still running ends with ``ShardsRunning`` (kopf looks again shortly). A Job with
shards failed past their retries fails the pass (an ``IngestFailure``, retried with backoff): the Job is
deleted, and the next pass makes a new one, whose pods find the results of the shards already done and
leave them be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cleanroom import config, datasets
from cleanroom.api import DatasetSpec
from cleanroom.datasets import ingest_job, sharding
from cleanroom.deid import DeidConfig
from cleanroom.handlers import _kube
from cleanroom.ingest import IngestResult, sharded, sharded_publish
from cleanroom.snapshots import S3Location, SnapshotError, SnapshotStore, object_key
from cleanroom.snapshots.store import presigner
from cleanroom.sources import ListingOutOfOrder, S3Reader, SourceError, SourceReader
from cleanroom.workspaces.settings import WorkspaceSettings

log = logging.getLogger(__name__)

# How soon a pass looks again at a Job whose shards are still running.
POLL_SECONDS = 5.0


class ShardsRunning(Exception):
    """The run's shard pods are still at work; the pass ends here and kopf looks again in ``delay``."""

    def __init__(self, message: str, delay: float = POLL_SECONDS) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class JobIngest:
    """One pass's view of a Dataset's run: what it reads, how it de-identifies, where the run lives."""

    body: Mapping[str, Any]
    spec: DatasetSpec
    source: datasets.Input
    reader: SourceReader
    deid: DeidConfig
    store: SnapshotStore
    settings: WorkspaceSettings

    @property
    def run(self) -> ingest_job.IngestRun:
        name = self.body["metadata"]["name"]
        run = sharding.run_name(datasets.snapshot_origin(self.body))
        return ingest_job.IngestRun(name, str(self.body["metadata"]["uid"]), run, 0)

    @property
    def prefix(self) -> str:
        return sharding.run_prefix(self.run.dataset, self.run.run)


def _source_url(ingest: JobIngest, lifetime: timedelta) -> Callable[[str], str]:
    """Presigned reads of one source file, as shard pods reach it (they hold no source key)."""
    source = ingest.source
    if isinstance(source, datasets.S3Input):
        location = S3Location(
            source.endpoint, source.bucket, source.access_key, source.secret_key, source.region
        )
        sign = presigner(location)
        return lambda item: sign(item, lifetime)
    store_sign = presigner(config.snapshot_location(), ingest.settings.snapshot_endpoint)
    # A snapshot source's item is "<digest> <path>" (ingest.SnapshotReader).
    return lambda item: store_sign(object_key(item.split(" ", 1)[0]), lifetime)


def _listing(reader: SourceReader) -> tuple[Callable[[], Iterable[str]], sharded.Listing]:
    """The source's sorted listing as a pass that can be made again, and its summary. An S3 source is listed
    page by page each time and held nowhere, so planning a run of millions of files takes the operator no more
    memory than one shard's; a store that lists out of order, and a snapshot source (whose manifest is read
    whole), are sorted and held."""
    if isinstance(reader, S3Reader):
        try:
            return reader.listing, sharded.summarize(reader.listing())
        except ListingOutOfOrder as error:
            log.warning(f"{error}: the listing is sorted in memory for this run")
    items = reader.items()
    return (lambda: items), sharded.summarize(items)


def plan_run(ingest: JobIngest, started: Callable[[int, int], None]) -> dict[str, Any]:
    """List the source, split it, write the plan and the run's Secret; the plan as written. ``started``
    is told the files and shards of the run."""
    settings, run = ingest.settings, ingest.run
    shape = sharding.pod_shape(ingest.spec.ingest, settings)
    try:
        items, listing = _listing(ingest.reader)
    except SourceError as error:
        raise datasets.source_unreachable(error) from error
    shards = sharding.split(listing.files, shape.files_per_shard)
    started(listing.files, len(shards))
    lifetime = timedelta(seconds=settings.ingest_grant_seconds)
    # A plan made again (its grant runs out, or the operator stopped while writing it) starts a new Job; the
    # shards' results stay when the listing is the one they were split from (the same shards).
    _kube.delete("batch/v1", "Job", settings.ingest_namespace, ingest_job.job_name(run))
    # Runs of an older spec of this Dataset: never to be published.
    for stale in sharding.leftover_runs(
        ingest.store.folders(sharding.dataset_prefix(run.dataset)), ingest.prefix
    ):
        ingest.store.remove_prefix(stale)
    before = ingest.store.document(sharded.plan_key(ingest.prefix)) or {}
    if before.get("listing") != listing.digest:
        ingest.store.remove_prefix(ingest.prefix)
    plan = sharded.RunPlan(
        run.dataset, run.run, ingest.prefix, ingest.deid, config.ingest_max_file_bytes(), lifetime
    )
    try:
        grant = sharded.write_plan(
            ingest.store,
            plan,
            items(),
            listing,
            shards,
            _source_url(ingest, lifetime),
            presigner(config.snapshot_location(), settings.snapshot_endpoint),
            settings.snapshot_endpoint,
        )
    except sharded.ListingChanged as error:
        raise sharding.source_changed(str(error)) from error
    except SourceError as error:
        raise datasets.source_unreachable(error) from error
    key, table = ingest.deid.keyring.key, ingest.deid.pseudonym_table
    _kube.apply(ingest_job.build_ingest_secret(run, settings, grant, key, table))
    found = sharded.planned(ingest.store, ingest.prefix)
    if found is None:
        raise SnapshotError(f"the plan of ingest run {run.run} was written but cannot be read back")
    return found


def _job(ingest: JobIngest, shards: int) -> dict[str, Any]:
    """The run's Job (and its NetworkPolicy, first), as it is now."""
    settings = ingest.settings
    run = ingest_job.IngestRun(ingest.run.dataset, ingest.run.uid, ingest.run.run, shards)
    shape = sharding.pod_shape(ingest.spec.ingest, settings)
    _kube.apply(ingest_job.build_ingest_network_policy(run, settings))
    table = ingest.deid.pseudonym_table is not None
    return _kube.ensure_created(ingest_job.build_ingest_job(run, shape, settings, with_table=table))


def wait_for_shards(ingest: JobIngest, plan: Mapping[str, Any]) -> None:
    """Return when every shard is done; ``ShardsRunning`` with the progress while some run; an
    ``IngestFailure`` when some failed past their retries (their Job is deleted, for the next pass)."""
    shards = len(plan["shards"])
    job = _job(ingest, shards)
    where = f"{ingest.settings.ingest_namespace}/{job['metadata']['name']}"
    if job["metadata"].get("deletionTimestamp"):
        # The Job a failed pass deleted is still going away; its successor is made once it is gone.
        raise ShardsRunning(f"{where} is being deleted")
    state = sharding.judge_job(job.get("status") or {}, shards)
    name = ingest.run.dataset
    _kube.patch_dataset_status(name, sharding.shards_progress(int(plan["files"]), state.done, shards, where))
    if state.complete:
        return
    if state.ended:
        why = _kube.job_failure_message(ingest.settings.ingest_namespace, job["metadata"]["name"])
        _kube.delete("batch/v1", "Job", ingest.settings.ingest_namespace, job["metadata"]["name"])
        raise sharding.shards_failed(where, state.failed, why or "see the pods' termination messages")
    raise ShardsRunning(f"{state.done} of {shards} shards done ({where})")


def publish_shards(
    ingest: JobIngest, plan: Mapping[str, Any], refuse: Callable[[IngestResult], Exception | None]
) -> sharded_publish.Joined:
    """Join the run's shards and publish its snapshot, every kept object checked and brought into the
    store's objects first (``ingest.sharded_publish``: the operator's memory does not grow with the files)."""
    shards = len(plan["shards"])
    run = ingest_job.IngestRun(ingest.run.dataset, ingest.run.uid, ingest.run.run, shards)

    def missing(index: int) -> Exception:
        # A shard counted done left no result: the next Job runs it again (and only it).
        _kube.delete("batch/v1", "Job", ingest.settings.ingest_namespace, ingest_job.job_name(run))
        return sharding.shard_result_missing(index)

    try:
        return sharded_publish.publish_shards(
            ingest.store,
            ingest.prefix,
            shards,
            dataset=ingest.run.dataset,
            reader=ingest.reader,
            config=ingest.deid,
            origin=datasets.snapshot_origin(ingest.body),
            missing=missing,
            refuse=refuse,
        )
    except SnapshotError as error:
        raise datasets.IngestFailure("IngestShardRejected", str(error)) from error


def clean_up(ingest: JobIngest) -> None:
    """After publishing: the run's Job (and its pods), Secret and NetworkPolicy, and every run of the Dataset
    in the store (this one's plan, shard results and uploads; an older spec's)."""
    namespace, run = ingest.settings.ingest_namespace, ingest.run
    _kube.delete("batch/v1", "Job", namespace, ingest_job.job_name(run))
    _kube.delete("v1", "Secret", namespace, ingest_job.secret_name(run))
    _kube.delete("networking.k8s.io/v1", "NetworkPolicy", namespace, ingest_job.policy_name(run))
    remove_runs(ingest.store, run.dataset)


def remove_runs(store: SnapshotStore, dataset: str) -> int:
    """Every ingest run of ``dataset`` in the store (a published or adopted snapshot's, a deleted Dataset's):
    the plans with their presigned grants, the shard results and the staged uploads. Its Kubernetes objects
    go with the Dataset by their owner references."""
    return store.remove_prefix(sharding.dataset_prefix(dataset))


def remove_orphaned_runs(store: SnapshotStore, live: Callable[[], list[str]]) -> list[str]:
    """The runs of Datasets deleted while no operator watched (``live`` lists the Datasets there are)."""
    gone = sharding.orphaned_runs(store.folders(sharding.INGEST_ROOT), live())
    for prefix in gone:
        store.remove_prefix(prefix)
    return gone
