"""The Dataset reconcile's decisions, pure: from what the handler observed at each step of a pass to the
status, Events and audit records it writes.

A pass: the Dataset is up to date, or its snapshot for this source and de-identification is already
published (adopt it), or an ingest runs (started, perhaps stopped by an outage, judged, published), and then
the snapshot is Ready and retention prunes older ones. Every failure is an ``IngestFailure`` that ends the
pass with ``failed``. The handler reads the world between the steps (the store, the source, the run) and
carries out each step's ``Effects`` in order: status, then Events, then audit records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from cleanroom.api import (
    Condition,
    DatasetPhase,
    DatasetQuarantine,
    DatasetStatus,
    IngestProgress,
    PublishedSnapshot,
    decode,
    overlay,
    with_conditions,
)
from cleanroom.api.contract import READY
from cleanroom.datasets.failure import IngestFailure
from cleanroom.ingest.reasons import NOT_ATTEMPTED, SOURCE_UNREACHABLE, STORAGE_UNAVAILABLE, WORKER_DIED

# status.phase, a summary of the Ready condition.
INGESTING = DatasetPhase.INGESTING
FAILED = DatasetPhase.FAILED
READY_PHASE = DatasetPhase.READY

# The Ready condition's reason for each way a run can fail, where it is not the run's own reason.
FAILURE_REASONS = {WORKER_DIED: "IngestWorkerDied"}


class Entry(Protocol):
    """An entry of the source that is not in the snapshot (``ingest.QuarantineEntry``)."""

    @property
    def item(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...


class RunResult(Protocol):
    """What an ingest run did (``ingest.IngestResult``)."""

    @property
    def files(self) -> Sequence[object]: ...
    @property
    def quarantined(self) -> Sequence[Entry]: ...
    @property
    def failed(self) -> Sequence[Entry]: ...
    @property
    def outage(self) -> Entry | None: ...


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class AuditRecord:
    action: str
    resources: Mapping[str, str]
    outcome: str = "success"
    reason: str = ""


@dataclass(frozen=True)
class StatusChange:
    phase: DatasetPhase
    condition: Condition
    fields: DatasetStatus = field(default_factory=DatasetStatus)  # what else this step sets; None: kept

    def applied_to(self, dataset: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The whole status to write over ``dataset``'s current one (read just before, so nothing another
        step wrote is lost): its fields kept, this change's set, the condition merged for this generation."""
        generation = int(dataset["metadata"].get("generation", 0))
        current = dict(dataset.get("status") or {})
        status = dataclasses.replace(self.fields, phase=self.phase)
        return overlay(
            current, with_conditions(status, current, [self.condition], generation=generation, now=now)
        )


@dataclass(frozen=True)
class Effects:
    status: StatusChange | None = None
    events: tuple[Event, ...] = ()
    audit: tuple[AuditRecord, ...] = ()


def up_to_date(dataset: Mapping[str, Any]) -> bool:
    """Whether this generation's snapshot is Ready already (a resumed or repeated event has nothing to do)."""
    status = dataset.get("status") or {}
    return bool(
        status.get("observedGeneration") == dataset["metadata"].get("generation")
        and status.get("phase") == READY_PHASE
    )


def ingest_fingerprint(spec: Mapping[str, Any]) -> str:
    """What a snapshot depends on: the source and the de-identification, not access or retention."""
    relevant = {"source": spec.get("source"), "deidentification": spec.get("deidentification")}
    return "sha256:" + hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def snapshot_origin(dataset: Mapping[str, Any]) -> dict[str, str]:
    """What the manifest records of the Dataset it was made for: its uid and the spec's fingerprint."""
    return {"uid": str(dataset["metadata"]["uid"]), "specHash": ingest_fingerprint(dataset["spec"])}


def adoptable(
    published: Iterable[tuple[str, Mapping[str, Any]]], origin: Mapping[str, Any]
) -> tuple[str, Mapping[str, Any]] | None:
    """The snapshot already published for this origin (the operator stopped before writing status, or the
    spec came back to a source and de-identification ingested before): adopted, not ingested again."""
    for digest, manifest in published:
        if manifest.get("origin") == dict(origin):
            return digest, manifest
    return None


def store_unreachable(error: Exception) -> IngestFailure:
    return IngestFailure(STORAGE_UNAVAILABLE, f"the snapshot store cannot be reached: {error}")


def source_unreachable(error: Exception) -> IngestFailure:
    """The source could not be listed: the run does not start (a read failing later stops it as an outage)."""
    return IngestFailure(SOURCE_UNREACHABLE, str(error))


def ingest_started(name: str, files: int, location: str) -> Effects:
    """The run begins over ``files`` files read from ``location``; a source without files fails instead."""
    if not files:
        raise IngestFailure("SourceEmpty", f"the source {location} holds no files; check the path or prefix")
    return Effects(
        status=StatusChange(
            INGESTING,
            Condition(READY, "False", "Ingesting", f"de-identifying {files} files"),
            DatasetStatus(progress=progress(0, files)),
        ),
        events=(Event("Normal", "IngestStarted", f"de-identifying {files} files"),),
        audit=(
            AuditRecord("dataset.ingest.started", {"dataset": name}, reason=f"{files} files from {location}"),
        ),
    )


def progress(done: int, total: int) -> IngestProgress:
    return IngestProgress(files_done=done, files_total=total)


def progress_patch(done: int, total: int) -> dict[str, Any]:
    """The status patch an ingest sends as files are done (no condition changes)."""
    return overlay({}, DatasetStatus(progress=progress(done, total)))


def outage_stops_run(entry: Entry) -> StatusChange:
    """Said the moment the first outage stops the run, before the workers have drained (each finishes the
    file in hand, which may take a few timeouts)."""
    return StatusChange(
        FAILED,
        Condition(
            READY,
            "False",
            FAILURE_REASONS.get(entry.reason, entry.reason),
            f"stopping the ingest: {entry.item}: {entry.detail}",
        ),
    )


def run_failure(result: RunResult) -> IngestFailure | None:
    """Why the run must not be published (a source or store outage, a dead worker), or None."""
    outage = result.outage
    if outage is None:
        return None
    untried = sum(1 for f in result.failed if f.reason == NOT_ATTEMPTED)
    failed = len(result.failed) - untried
    done = len(result.files) + len(result.quarantined)
    return IngestFailure(
        FAILURE_REASONS.get(outage.reason, outage.reason),
        f"{failed} files failed ({outage.reason}; first: {outage.item}: {outage.detail}); the run stopped "
        f"there with {done} files done and {untried} not tried, and nothing was published. It is tried again "
        "with backoff; files already stored are not stored again.",
    )


def ingest_finished(name: str, digest: str, kept: int, quarantined: Sequence[Entry]) -> Effects:
    """A run published as ``digest``: each quarantined file told (an Event, cut to the API's limit on
    messages) and audited, then the snapshot and the run's end."""
    events = tuple(
        Event("Warning", "FileQuarantined", f"{entry.item}: {entry.reason}: {entry.detail}"[:1000])
        for entry in quarantined
    )
    audit = tuple(
        AuditRecord(
            "dataset.file.quarantined",
            {"dataset": name, "file": entry.item},
            outcome="failure",
            reason=f"{entry.reason}: {entry.detail}",
        )
        for entry in quarantined
    )
    return Effects(
        events=events,
        audit=(
            *audit,
            AuditRecord("snapshot.published", {"dataset": name, "snapshot": digest}),
            AuditRecord(
                "dataset.ingest.finished",
                {"dataset": name, "snapshot": digest},
                reason=f"{kept} files kept, {len(quarantined)} quarantined",
            ),
        ),
    )


def snapshot_ready(snapshot: Mapping[str, Any], quarantine: Mapping[str, Any], fingerprint: str) -> Effects:
    """Ready with ``snapshot`` (the manifest's summary, ``snapshots.summary``) and its quarantine report's
    counts, for the spec whose fingerprint is ``fingerprint``."""
    message = (
        f"snapshot {snapshot['shortDigest']} published: {snapshot['files']} files, {snapshot['patients']} patients, "
        f"{quarantine['files']} quarantined"
    )
    files = int(snapshot["files"]) + int(quarantine["files"])
    return Effects(
        status=StatusChange(
            READY_PHASE,
            Condition(READY, "True", "SnapshotPublished", message),
            DatasetStatus(
                snapshot=decode(PublishedSnapshot, snapshot),
                ingested_spec=fingerprint,
                quarantine=decode(DatasetQuarantine, quarantine),
                progress=progress(files, files),
            ),
        ),
        events=(Event("Normal", "SnapshotPublished", message),),
    )


def kept_by_retention(current: str, pinned: Iterable[str]) -> set[str]:
    """Snapshots retention never prunes, however old: the one just made Ready and every one a Workspace
    has pinned (its copy may still be running, or run again at its next start)."""
    return {*pinned, current}


def snapshots_pruned(name: str, pruned: Iterable[str]) -> Effects:
    pruned = tuple(pruned)
    return Effects(
        events=tuple(
            Event("Normal", "SnapshotPruned", f"snapshot {old} pruned (retention.keepSnapshots)")
            for old in pruned
        ),
        audit=tuple(
            AuditRecord(
                "snapshot.pruned", {"dataset": name, "snapshot": old}, reason="retention.keepSnapshots"
            )
            for old in pruned
        ),
    )


def failed(name: str, failure: IngestFailure) -> Effects:
    """The pass ends on ``failure``: Failed with its reason, a Warning, and the audit record; the handler then
    asks kopf to try again after ``backoff``."""
    return Effects(
        status=StatusChange(FAILED, Condition(READY, "False", failure.reason, str(failure))),
        events=(Event("Warning", failure.reason, str(failure)),),
        audit=(
            AuditRecord(
                "dataset.ingest.failed",
                {"dataset": name},
                outcome="failure",
                reason=f"{failure.reason}: {failure}",
            ),
        ),
    )
