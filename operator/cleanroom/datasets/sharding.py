"""A Dataset's ingest as an Indexed Job, decided purely: whether it runs as one, how the source is split into
shards, what each shard pod gets, and what the Job's status says about the run.

The operator lists the source once and splits the sorted listing into contiguous shards of about
``files_per_shard`` files, one per completion index. The split is a function of the listing alone and the
plan is stored with the run (``ingest.sharded``), so a pod that is retried, a Job that is replaced and an
operator that restarts all see the same shard for the same index; a shard whose result is stored is not
done again. The run's name is a function of the Dataset's origin (its uid and the fingerprint of its source
and de-identification), so a pass that finds the run already planned picks it up instead of planning another.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cleanroom.api import DatasetStatus, IngestProgress, IngestResources, overlay
from cleanroom.datasets.failure import IngestFailure
from cleanroom.datasets.inputs import DicomWebInput, DirectoryInput, Input
from cleanroom.workspaces.settings import WorkspaceSettings

JOB_MODE = "job"
IN_PROCESS_MODE = "in-process"
# Kubernetes refuses an Indexed Job with backoffLimitPerIndex and more completions than this.
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class Where:
    """Where an ingest runs, and why there (said in the IngestStarted Event)."""

    as_job: bool
    why: str


def where_ingest_runs(mode: str, source: Input, every_node_simulated: bool) -> Where:
    """As an Indexed Job when the site asks for it and a pod can do the work; in the operator otherwise."""
    if mode != JOB_MODE:
        return Where(False, "in the operator (ingestMode in-process)")
    if isinstance(source, DirectoryInput):
        return Where(False, "in the operator: a directory source is a path on the operator's own file system")
    if isinstance(source, DicomWebInput):
        return Where(False, "in the operator: shard pods read S3 and snapshot sources only, by presigned URL")
    if every_node_simulated:
        return Where(False, "in the operator: every node is simulated (kwok) and would run no shard pod")
    return Where(True, "as an Indexed Job of shard pods")


@dataclass(frozen=True)
class PodShape:
    """What the run's Job gets: shards run at once, source files per shard, and each pod's CPU and memory."""

    parallelism: int
    files_per_shard: int
    cpu: str
    memory: str


def pod_shape(wanted: IngestResources, settings: WorkspaceSettings) -> PodShape:
    """The Dataset's spec.ingest over the site's defaults (a zero or empty field takes the default)."""
    return PodShape(
        parallelism=wanted.parallelism or settings.ingest_parallelism,
        files_per_shard=wanted.files_per_shard or settings.ingest_files_per_shard,
        cpu=wanted.cpu or settings.ingest_cpu,
        memory=wanted.memory or settings.ingest_memory,
    )


def worker_processes(cpu: str) -> int:
    """De-identification processes in a shard pod: one per whole core of its CPU limit, at least one."""
    if cpu.endswith("m"):
        return max(1, int(cpu[:-1]) // 1000)
    return max(1, int(float(cpu)))


def split(total: int, files_per_shard: int) -> list[tuple[int, int]]:
    """[start, end) ranges over a sorted listing of ``total`` files: as few shards as keep each at or under
    ``files_per_shard`` (more when that would exceed ``MAX_SHARDS``), sizes differing by one at most. The same
    arguments always give the same ranges."""
    if total <= 0:
        return []
    count = min(max(1, math.ceil(total / max(1, files_per_shard))), MAX_SHARDS, total)
    size, extra = divmod(total, count)
    ranges = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def run_name(origin: Mapping[str, Any]) -> str:
    """The run's name: 16 hex digits of the origin (the Dataset's uid and its spec's fingerprint)."""
    return hashlib.sha256(json.dumps(dict(origin), sort_keys=True).encode()).hexdigest()[:16]


INGEST_ROOT = "ingest/"


def dataset_prefix(dataset: str) -> str:
    """Every run of one Dataset in the store; nothing under it outlives the run that publishes, nor the
    Dataset."""
    return f"{INGEST_ROOT}{dataset}/"


def run_prefix(dataset: str, run: str) -> str:
    """Everything of one run in the store: the plan (``plan/``, the operator's) and what the shard pods
    write (``out/``, the only prefix their upload policy admits)."""
    return f"{dataset_prefix(dataset)}{run}/"


def leftover_runs(folders: Sequence[str], current: str) -> list[str]:
    """The run prefixes of a Dataset (``folders``, listed under ``dataset_prefix``) other than its current
    run's: runs of an older spec, which no pass will publish."""
    return sorted(folder for folder in folders if folder != current)


def orphaned_runs(folders: Sequence[str], live: Sequence[str]) -> list[str]:
    """The Datasets' prefixes (``folders``, listed under ``INGEST_ROOT``) whose Dataset is gone. List the
    folders before the Datasets: a Dataset's folder is made after the Dataset, so one created in between is
    not taken for gone."""
    names = set(live)
    return sorted(f for f in folders if f.removeprefix(INGEST_ROOT).rstrip("/") not in names)


def parse_indexes(text: str) -> set[int]:
    """A Job's completedIndexes or failedIndexes ("0-3,7,9-10") as a set."""
    found: set[int] = set()
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


@dataclass(frozen=True)
class JobState:
    """What an ingest Job's status says: shards done, shards failed for good, and whether it has ended."""

    done: int
    failed: tuple[int, ...]
    complete: bool
    ended: bool


def judge_job(status: Mapping[str, Any], shards: int) -> JobState:
    """The run's progress from its Job's status: complete when every index succeeded; ended (failed) only
    when the Job says Failed. An index out of retries does not end the run early: with backoffLimitPerIndex
    the other shards run on, and the Job fails once they are done, so the next Job redoes the failed alone."""
    done = parse_indexes(str(status.get("completedIndexes", "")))
    failed = parse_indexes(str(status.get("failedIndexes", "")))
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    complete = not failed and (
        len(done & set(range(shards))) == shards or conditions.get("Complete") == "True"
    )
    ended = conditions.get("Failed") == "True" or conditions.get("FailureTarget") == "True"
    return JobState(len(done), tuple(sorted(failed)), complete, ended and not complete)


def shards_progress(files: int, done: int, total: int, job: str) -> dict[str, Any]:
    """The status patch while shard pods run (no condition changes)."""
    progress = IngestProgress(files_total=files, shards_done=done, shards_total=total, job=job)
    return overlay({}, DatasetStatus(progress=progress))


def shards_failed(job: str, failed: Sequence[int], why: str) -> IngestFailure:
    """Shards that failed past their retries: the run is not published; the next pass replaces the Job and
    only the shards without a stored result run again."""
    shown = ", ".join(str(i) for i in failed[:10]) + (" ..." if len(failed) > 10 else "")
    return IngestFailure(
        "IngestShardFailed",
        f"{len(failed)} shards of {job} failed after their retries (indexes {shown}): {why}. Nothing was "
        "published; the Job is replaced with backoff and only shards without a stored result run again.",
    )


def source_changed(why: str) -> IngestFailure:
    """The source's listing changed while a run's plan was written: no Job is made for a half-written plan;
    the next pass (after a backoff) lists and plans again."""
    return IngestFailure("SourceChanged", f"{why}; the run is planned again shortly")


def shard_result_missing(index: int) -> IngestFailure:
    return IngestFailure(
        "IngestShardFailed", f"shard {index} was reported done but its shard manifest is not in the store"
    )
