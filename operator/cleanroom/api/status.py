"""Typed views of the status the operator writes on Datasets, Workspaces and ExportRequests.

Like the specs in ``api.types``, these types are the CRDs' status schemas (``make crds-gen`` writes them
out). A reconcile builds the part of the status it knows as one of them and patches ``overlay(current,
status)``; readers ``decode`` what the API server returns. Every field is optional: None leaves a field as
it is, since a status is written in parts as a reconcile learns them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from cleanroom.api._decode import decode
from cleanroom.api._schema import doc, to_json
from cleanroom.api.conditions import Condition, ConditionStatus, merge_conditions


class DatasetPhase(StrEnum):
    PENDING = "Pending"
    INGESTING = "Ingesting"
    READY = "Ready"
    FAILED = "Failed"


class WorkspacePhase(StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPED = "Stopped"
    EXPIRED = "Expired"
    FAILED = "Failed"


class SnapshotVolumeMode(StrEnum):
    """How a Workspace's read-only snapshot volume was served (the chart's workspaces.snapshotVolumes.mode)."""

    # The workspace's own copy: a materializer Job copies and verifies the snapshot into a volume of its own.
    COPY = "copy"
    # One verified copy per snapshot, in the operator's snapshot namespace; each Workspace binds a read-only
    # PersistentVolume over the same storage, pre-bound to its own claim.
    SHARED = "shared"
    # On block storage: the snapshot's one verified copy, snapshotted once (a VolumeSnapshot) and restored by
    # the storage into a volume of this Workspace's own; nothing is copied from the store after the first copy.
    CLONE = "clone"


class ExportRequestPhase(StrEnum):
    PENDING = "Pending"
    COPYING = "Copying"
    CHECKING = "Checking"
    AWAITING_APPROVAL = "AwaitingApproval"
    RELEASED = "Released"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    FAILED = "Failed"


@dataclass(frozen=True)
class StatusCondition:
    """A condition as written in status (metav1.Condition), so that ``kubectl wait --for=condition=X`` works.
    ``api.merge_conditions`` makes them from ``Condition`` updates."""

    type: str = field(metadata=doc("Condition type, e.g. Ready.", max_length=316))
    status: ConditionStatus = field(metadata=doc("True, False or Unknown."))
    reason: str | None = field(
        default=None,
        metadata=doc("CamelCase machine-readable reason, e.g. DatasetNotFound.", max_length=1024),
    )
    message: str | None = field(
        default=None, metadata=doc("What happened and what to do, for people.", max_length=32768)
    )
    observed_generation: int | None = field(
        default=None, metadata=doc("The metadata.generation the condition was set for.", format="int64")
    )
    last_transition_time: str | None = field(
        default=None, metadata=doc("When status last changed.", format="date-time")
    )


@dataclass(frozen=True)
class ExportRequestCondition(StatusCondition):
    """An ExportRequest's condition: the same fields, documented with its own examples."""

    type: str = field(metadata=doc("Condition type, e.g. Released.", max_length=316))
    reason: str | None = field(
        default=None, metadata=doc("CamelCase machine-readable reason, e.g. ChecksFailed.", max_length=1024)
    )


@dataclass(frozen=True)
class IngestProgress:
    files_done: int | None = field(default=None, metadata=doc("Files processed so far."))
    files_total: int | None = field(default=None, metadata=doc("Files found in the source."))
    shards_done: int | None = field(
        default=None,
        metadata=doc(
            "Shards whose pod has de-identified them and written their shard manifest (Job ingest)."
        ),
    )
    shards_total: int | None = field(
        default=None, metadata=doc("Shards the source was split into, one per completion index (Job ingest).")
    )
    job: str | None = field(
        default=None,
        metadata=doc("The Indexed Job running the shards (namespace/name), while the ingest runs as one."),
    )


@dataclass(frozen=True)
class PublishedSnapshot:
    digest: str | None = field(
        default=None, metadata=doc("sha256 digest of the snapshot manifest; the snapshot's id.")
    )
    short_digest: str | None = field(
        default=None, metadata=doc("First 12 hex digits of the digest, for display.")
    )
    files: int | None = field(default=None, metadata=doc("DICOM instances in the snapshot."))
    bytes: int | None = field(
        default=None, metadata=doc("Total size of the instances in bytes.", format="int64")
    )
    patients: int | None = field(default=None, metadata=doc("Distinct (pseudonymized) patients."))
    studies: int | None = field(default=None, metadata=doc("Distinct studies."))
    series: int | None = field(default=None, metadata=doc("Distinct series."))
    modalities: tuple[str, ...] | None = field(default=None, metadata=doc("Modalities present, e.g. MR, CT."))
    created_at: str | None = field(
        default=None, metadata=doc("When the snapshot was published.", format="date-time")
    )


@dataclass(frozen=True)
class DatasetQuarantine:
    files: int | None = field(default=None, metadata=doc("Number of quarantined files."))
    report: str | None = field(
        default=None, metadata=doc("Object-storage URL of the quarantine report (each file with its reason).")
    )


@dataclass(frozen=True)
class DatasetStatus:
    observed_generation: int | None = field(
        default=None, metadata=doc("The metadata.generation this status describes.", format="int64")
    )
    phase: DatasetPhase | None = field(
        default=None, metadata=doc("One-word summary of the conditions; use the conditions for decisions.")
    )
    ingested_spec: str | None = field(
        default=None,
        metadata=doc(
            "sha256 of spec.source and spec.deidentification as the published snapshot was made from "
            "them; changing other fields (access, retention, description) does not re-ingest."
        ),
    )
    progress: IngestProgress | None = field(default=None, metadata=doc("Progress of the ingest in flight."))
    snapshot: PublishedSnapshot | None = field(default=None, metadata=doc("The latest published snapshot."))
    quarantine: DatasetQuarantine | None = field(
        default=None, metadata=doc("Files held back because they could not be cleaned.")
    )
    conditions: tuple[StatusCondition, ...] | None = field(
        default=None,
        metadata=doc(
            "Ready tells whether a snapshot is published and current with the spec.",
            list_type="map",
            list_map_keys=("type",),
        ),
    )


@dataclass(frozen=True)
class PinnedSnapshot:
    digest: str | None = field(default=None, metadata=doc("sha256 digest of the snapshot manifest."))
    short_digest: str | None = field(
        default=None, metadata=doc("First 12 hex digits of the digest, for display.")
    )


@dataclass(frozen=True)
class WorkspaceStatus:
    observed_generation: int | None = field(
        default=None, metadata=doc("The metadata.generation this status describes.", format="int64")
    )
    phase: WorkspacePhase | None = field(
        default=None, metadata=doc("One-word summary of the conditions; use the conditions for decisions.")
    )
    snapshot: PinnedSnapshot | None = field(
        default=None, metadata=doc("The dataset snapshot pinned for this workspace.")
    )
    created_by: str | None = field(
        default=None,
        metadata=doc(
            "Who created the Workspace, as the API server authenticated them (the "
            "cleanroom.dev/created-by annotation, which the cleanroom admission policy holds to the "
            "request's user name)."
        ),
    )
    started_by: str | None = field(
        default=None,
        metadata=doc(
            "The listed user who started it (cleanroom.dev/started-by, written by that user or by the "
            "hub for the user it signed in); nothing is materialized until one has."
        ),
    )
    snapshot_volume: SnapshotVolumeMode | None = field(
        default=None,
        metadata=doc(
            "How the snapshot volume at /data is served: copy (a verified copy of its own), shared (the "
            "snapshot's one verified copy, bound read-only through a PersistentVolume made for this "
            "Workspace's claim alone) or clone (on block storage: a volume of its own restored from a "
            "VolumeSnapshot of the snapshot's one verified copy)."
        ),
    )
    node: str | None = field(default=None, metadata=doc("Node the notebook pod is scheduled on."))
    gpus: int | None = field(default=None, metadata=doc("GPUs allocated to the running notebook pod."))
    url: str | None = field(
        default=None, metadata=doc("Where the users open the workspace (through the hub).")
    )
    image_digest: str | None = field(
        default=None, metadata=doc("Resolved digest of spec.image, when the container runtime reports it.")
    )
    started_at: str | None = field(
        default=None, metadata=doc("When the notebook last started.", format="date-time")
    )
    last_activity: str | None = field(
        default=None,
        metadata=doc("Last user activity reported by the hub or the single-user server.", format="date-time"),
    )
    expires_at: str | None = field(
        default=None, metadata=doc("When lifetime.expiresAfter stops the workspace.", format="date-time")
    )
    conditions: tuple[StatusCondition, ...] | None = field(
        default=None,
        metadata=doc(
            "Ready, Scheduled, DatasetMounted, EgressRestricted and Expired; kubectl wait "
            "--for=condition=Ready works.",
            list_type="map",
            list_map_keys=("type",),
        ),
    )


@dataclass(frozen=True)
class QuarantinedFile:
    path: str | None = field(default=None, metadata=doc("Path relative to the home folder."))
    digest: str | None = field(
        default=None,
        metadata=doc("sha256 of the file's bytes (sha256:<hex>); its object's key in the store."),
    )
    size: int | None = field(default=None, metadata=doc("Size in bytes.", format="int64"))


@dataclass(frozen=True)
class ExportQuarantine:
    manifest: str | None = field(
        default=None,
        metadata=doc("Object key of the quarantine manifest (each file's path, sha256 and size)."),
    )
    files: tuple[QuarantinedFile, ...] | None = field(
        default=None, metadata=doc("The files copied, each content-addressed by its digest.")
    )
    bytes: int | None = field(default=None, metadata=doc("Total size of the files.", format="int64"))


@dataclass(frozen=True)
class CheckFinding:
    file: str | None = field(default=None, metadata=doc("The exported file the finding is in."))
    detail: str | None = field(
        default=None,
        metadata=doc("What was found, e.g. \"array 'x' matches the pixels of snapshot object sha256:...\"."),
    )


@dataclass(frozen=True)
class DisclosureCheck:
    name: str | None = field(
        default=None,
        metadata=doc(
            "NoDicom (no DICOM by magic or parsing), NoSnapshotData (no file or array whose bytes, "
            "pixel hash or perceptual hash matches an object of the snapshot), NoIdentifiers (no "
            "pseudonym or UID of the snapshot in text), ExportPolicy (the Dataset's size and type "
            "limits)."
        ),
    )
    passed: bool | None = field(default=None, metadata=doc("Whether nothing was found."))
    looked_at: tuple[str, ...] | None = field(
        default=None,
        metadata=doc('What the check examined, e.g. "models/unet.safetensors as SafeTensors (3 tensors)".'),
    )
    findings: tuple[CheckFinding, ...] | None = field(
        default=None, metadata=doc("What it found, each naming the file.")
    )


@dataclass(frozen=True)
class JudgedDecision:
    by: str | None = field(default=None, metadata=doc("The approver's authenticated user name."))
    role: str | None = field(default=None, metadata=doc("The role claimed, DataSteward or SecurityOfficer."))
    verdict: str | None = field(default=None, metadata=doc("Approve or Reject."))
    reason: str | None = field(default=None, metadata=doc("The approver's reason."))
    at: str | None = field(
        default=None, metadata=doc("When the operator first saw the decision.", format="date-time")
    )
    counted: bool | None = field(default=None, metadata=doc("Whether it counts toward the two-person rule."))
    note: str | None = field(
        default=None,
        metadata=doc("Why it does not count, when it does not (not the role's group, the requester)."),
    )


@dataclass(frozen=True)
class ExportRequestStatus:
    observed_generation: int | None = field(
        default=None, metadata=doc("The metadata.generation this status describes.", format="int64")
    )
    phase: ExportRequestPhase | None = field(
        default=None, metadata=doc("One-word summary of the conditions; use the conditions for decisions.")
    )
    requested_by: str | None = field(
        default=None,
        metadata=doc(
            "Who asked, as the API server authenticated them (the cleanroom.dev/requested-by "
            "annotation, which the cleanroom admission policy holds to the request's user name, or "
            "the user the hub signed in)."
        ),
    )
    dataset: str | None = field(
        default=None, metadata=doc("The Dataset of the Workspace, whose export policy and stewards apply.")
    )
    snapshot: str | None = field(
        default=None,
        metadata=doc("The snapshot digest the Workspace reads, against which the files are checked."),
    )
    quarantine: ExportQuarantine | None = field(
        default=None, metadata=doc("The copy of the files in the object store's quarantine area.")
    )
    checks: tuple[DisclosureCheck, ...] | None = field(
        default=None,
        metadata=doc(
            "The automated disclosure checks, machine-readable: each with what it looked at and what "
            "it found. A failed check rejects the request."
        ),
    )
    decisions: tuple[JudgedDecision, ...] | None = field(
        default=None, metadata=doc("The decisions as the operator judged them, with when it first saw each.")
    )
    released_at: str | None = field(
        default=None, metadata=doc("When the files were released to the outbox.", format="date-time")
    )
    expires_at: str | None = field(
        default=None,
        metadata=doc(
            "When the request (pending) or its released files (downloadable) expire and are deleted.",
            format="date-time",
        ),
    )
    outbox: str | None = field(
        default=None,
        metadata=doc("Object-key prefix of the released files, which the hub presigns short-lived links to."),
    )
    conditions: tuple[ExportRequestCondition, ...] | None = field(
        default=None,
        metadata=doc(
            "Quarantined, Checked, Approved, Released, Rejected and Expired; e.g. kubectl wait "
            "--for=condition=Released or --for=condition=Rejected.",
            list_type="map",
            list_map_keys=("type",),
        ),
    )


Status = DatasetStatus | WorkspaceStatus | ExportRequestStatus
S = TypeVar("S", DatasetStatus, WorkspaceStatus, ExportRequestStatus)
C = TypeVar("C", bound=StatusCondition)


def overlay(current: Mapping[str, Any] | None, status: Status) -> dict[str, Any]:
    """The status to write: ``current`` (as read from the object) with every field ``status`` sets replaced,
    as the JSON the CRD takes. Fields ``status`` leaves None stay as they are."""
    return {**(current or {}), **to_json(status)}


def typed_conditions(kind: type[C], conditions: Iterable[Mapping[str, Any]] | None) -> tuple[C, ...]:
    """Conditions as ``api.merge_conditions`` returns them (or as read from an object), typed as ``kind``
    (``StatusCondition``, or ``ExportRequestCondition`` for an ExportRequest)."""
    return tuple(decode(kind, condition) for condition in conditions or ())


def with_conditions(
    status: S,
    current: Mapping[str, Any] | None,
    updates: Iterable[Condition],
    *,
    generation: int,
    now: datetime,
) -> S:
    """``status`` as every reconcile ends it: for ``generation``, with ``updates`` merged into the conditions
    of ``current`` (the status read from the object; ``merge_conditions`` keeps a transition time that did
    not change)."""
    merged = merge_conditions((current or {}).get("conditions"), updates, generation=generation, now=now)
    kind = ExportRequestCondition if isinstance(status, ExportRequestStatus) else StatusCondition
    return dataclasses.replace(
        status, observed_generation=generation, conditions=typed_conditions(kind, merged)
    )
