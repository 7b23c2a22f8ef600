"""The Workspace lifecycle as one pure decision: from the Workspace, its Dataset and what runs now, to the
objects that should exist, the conditions to report and the Events to tell people.

Level-triggered: the same inputs always give the same plan, so running it twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cleanroom.api import Access, Condition, DatasetSpec, WorkspaceSpec, decode
from cleanroom.api.contract import (
    DATASET_MOUNTED,
    EGRESS_RESTRICTED,
    EXPIRED,
    LAST_ACTIVITY_ANNOTATION,
    READY,
    SCHEDULED,
    SNAPSHOT_ANNOTATION,
    object_name,
)
from cleanroom.workspaces import manifests
from cleanroom.workspaces._readiness import assess_dataset
from cleanroom.workspaces.egress import build_probe_pod, judge_probe, widened_condition, widening_policies
from cleanroom.workspaces.settings import WorkspaceSettings
from cleanroom.workspaces.tenancy import ACCESS_DENIED, WAITING_FOR_START, Accounts, judge_tenancy


@dataclass(frozen=True)
class Observed:
    """What the handler read from the cluster for one Workspace."""

    now: datetime
    dataset: Mapping[str, Any] | None
    pod: Mapping[str, Any] | None = None
    job: Mapping[str, Any] | None = None
    # Why the materializer's copy failed, from its pod's termination message ("" when it did not fail).
    job_failure: str = ""
    user_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    nodes_simulated: bool = True
    # The presigned URL of the materializer's read grant for the pinned snapshot ("" when none is held).
    grant_url: str = ""
    probe: Mapping[str, Any] | None = None
    # The labels of the Workspace's namespace (the Dataset's spec.access.namespaces may select by them).
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    accounts: Accounts = field(default_factory=Accounts)
    # The NetworkPolicies of the Workspace's namespace (all of them: another's may select the notebook).
    policies: tuple[Mapping[str, Any], ...] = ()
    # A probe pod exists though no probe can run (it landed on a simulated node, or probing was turned off):
    # it never finishes, and it carries the notebook's labels, so it goes.
    stray_probe: bool = False


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    phase: str
    conditions: tuple[Condition, ...]
    apply: tuple[dict[str, Any], ...] = ()
    delete_pod: bool = False
    # Other objects to delete: (apiVersion, kind, name) in the workspace's namespace.
    delete: tuple[tuple[str, str, str], ...] = ()
    stop_requested: bool = False
    delete_workspace: bool = False
    status: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    # When the clock alone could change this plan (expiry, the end of the grace period, the idle deadline).
    recheck_at: datetime | None = None
    # The namespace holds an admitted Workspace not started yet: guard it now (labels, default deny, quota),
    # so that what a start writes first (the hub's session Secret) lands in a namespace already guarded.
    guard_namespace: bool = False


def short_digest(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def parse_duration(text: str) -> timedelta:
    """A Kubernetes-style duration with units h, m, s (the CRD admits only these), e.g. 1h30m."""
    total = 0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return timedelta(seconds=total)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def denied_users(
    spec: WorkspaceSpec, access: Access, user_groups: Mapping[str, tuple[str, ...]]
) -> list[str]:
    """Workspace users the Dataset's access list does not allow, directly or through a group. Group
    membership is looked up only for users the list does not name and only when it names groups, so a
    lazily read ``user_groups`` is read only when it can matter."""
    return [
        user
        for user in spec.users
        if not access.allows(user)
        and not (access.groups and access.allows(user, tuple(user_groups.get(user, ()))))
    ]


def _stopped(phase: str, reason: str, message: str, *extra: Condition, **kwargs: Any) -> Plan:
    return Plan(
        phase=phase,
        conditions=(Condition(READY, "False", reason, message), *extra),
        delete_pod=True,
        **kwargs,
    )


def _pod_condition(pod: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    for condition in (pod or {}).get("status", {}).get("conditions") or ():
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def job_succeeded(job: Mapping[str, Any] | None) -> bool:
    return bool(job and (job.get("status") or {}).get("succeeded"))


def job_failed(job: Mapping[str, Any] | None) -> str:
    """The Job's Failed condition as a sentence ("" while it has not failed)."""
    for condition in (job or {}).get("status", {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("message") or condition.get("reason") or "the materializer failed")
    return ""


def plan_workspace(workspace: Mapping[str, Any], observed: Observed, settings: WorkspaceSettings) -> Plan:
    """Decide everything about one Workspace, and when to look again if nothing else changes."""
    plan = _plan(workspace, observed, settings)
    if observed.stray_probe:
        stray = ("v1", "Pod", object_name(str(workspace["metadata"]["name"]), "egress-probe"))
        plan = dataclasses.replace(plan, delete=(*plan.delete, stray))
    return dataclasses.replace(plan, recheck_at=next_deadline(workspace, observed, settings))


def next_deadline(
    workspace: Mapping[str, Any], observed: Observed, settings: WorkspaceSettings
) -> datetime | None:
    """The next moment after ``observed.now`` at which the clock alone changes what a plan says: the
    expiry, the end of the grace period after it, and (while the notebook runs) the idle deadline."""
    spec = decode(WorkspaceSpec, workspace["spec"])
    metadata, status = workspace["metadata"], workspace.get("status") or {}
    created = _parse_time(metadata.get("creationTimestamp")) or observed.now
    expires_at = created + parse_duration(spec.lifetime.expires_after)
    moments = [expires_at, expires_at + timedelta(seconds=settings.expiry_grace_seconds)]
    idle = idle_deadline(metadata, status, spec.lifetime.idle_timeout)
    if spec.running and observed.pod and idle:
        moments.append(idle)
    return min((m for m in moments if m > observed.now), default=None)


def idle_deadline(
    metadata: Mapping[str, Any], status: Mapping[str, Any], idle_timeout: str
) -> datetime | None:
    """When the clock stops a running notebook that reports no activity before then: the last activity
    (else the notebook's start) plus lifetime.idleTimeout; None before the notebook has started."""
    last_activity = _last_activity(metadata, status)
    return last_activity + parse_duration(idle_timeout) if last_activity else None


def _last_activity(metadata: Mapping[str, Any], status: Mapping[str, Any]) -> datetime | None:
    return _parse_time(
        metadata.get("annotations", {}).get(LAST_ACTIVITY_ANNOTATION)
        or status.get("lastActivity")
        or status.get("startedAt")
    )


def _plan(workspace: Mapping[str, Any], observed: Observed, settings: WorkspaceSettings) -> Plan:
    metadata = workspace["metadata"]
    spec = decode(WorkspaceSpec, workspace["spec"])
    status = workspace.get("status") or {}
    created = _parse_time(metadata.get("creationTimestamp")) or observed.now
    expires_at = created + parse_duration(spec.lifetime.expires_after)
    timing = {"expiresAt": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    not_expired = Condition(EXPIRED, "False", "WithinLifetime", f"expires at {timing['expiresAt']}")

    if not settings.image_allowed(spec.image):
        allowed = ", ".join(settings.allowed_image_prefixes)
        return _stopped(
            "Failed",
            "ImageNotAllowed",
            f"image {spec.image} is not from an allowed registry ({allowed}); use an approved notebook image",
            status=timing,
        )

    assessment = assess_dataset(spec, observed.dataset)
    if not assessment.snapshot:
        return Plan(phase=assessment.phase, conditions=assessment.conditions, delete_pod=True, status=timing)
    assert observed.dataset is not None
    dataset_spec = decode(DatasetSpec, observed.dataset["spec"])
    tenancy = judge_tenancy(
        workspace, dataset_spec.access, observed.namespace_labels, observed.user_groups, observed.accounts
    )
    timing = {**timing, "createdBy": tenancy.created_by, "startedBy": tenancy.started_by}
    if tenancy.denial:
        events = (Event("Warning", "AccessRevoked" if observed.pod else ACCESS_DENIED, tenancy.denial),)
        return _stopped("Failed", ACCESS_DENIED, tenancy.denial, status=timing, events=events)
    denied = denied_users(spec, dataset_spec.access, observed.user_groups)
    if denied:
        running_before = bool(observed.pod)
        message = (
            f"{', '.join(denied)} may not use Dataset {spec.dataset.name}: not in its spec.access users or groups. "
            "Ask the data steward to grant access, or remove them from spec.users."
        )
        events = (Event("Warning", "AccessRevoked" if running_before else "AccessDenied", message),)
        return _stopped("Failed", "AccessDenied", message, status=timing, events=events)

    node_labels = settings.node_labels_for(spec.resources.gpu_type)
    if node_labels is None:
        return _stopped(
            "Failed",
            "GPUTypeUnknown",
            f"gpuType {spec.resources.gpu_type} is not known on platform {settings.gpu_platform}; "
            f"known: {', '.join(sorted(settings.gpu_types))}",
            status=timing,
        )

    pinned = (
        spec.dataset.snapshot
        or str((status.get("snapshot") or {}).get("digest") or "")
        or assessment.snapshot
    )
    snapshot_status = {"snapshot": {"digest": pinned, "shortDigest": short_digest(pinned)}}
    latest = (observed.dataset.get("status") or {}).get("snapshot") or {}
    ref = manifests.WorkspaceRef(
        name=metadata["name"],
        namespace=metadata["namespace"],
        uid=metadata.get("uid", ""),
        snapshot=pinned,
        dataset=spec.dataset.name,
        snapshot_bytes=int(latest.get("bytes") or 0) if latest.get("digest") == pinned else 0,
    )

    own_policies = (
        manifests.NAMESPACE_DEFAULT_DENY,
        manifests.build_notebook_network_policy(ref, settings)["metadata"]["name"],
        manifests.build_materializer_network_policy(ref, settings)["metadata"]["name"],
    )
    widening = widening_policies(observed.policies, manifests.labels(ref, "notebook"), own_policies)
    if widening:
        egress_open = widened_condition(widening)
        return _stopped(
            "Failed",
            "EgressWidened",
            egress_open.message,
            egress_open,
            status={**timing, **snapshot_status},
            events=(Event("Warning", "EgressWidened", egress_open.message),),
        )

    if observed.now >= expires_at:
        grace_over = observed.now >= expires_at + timedelta(seconds=settings.expiry_grace_seconds)
        return _stopped(
            "Expired",
            "Expired",
            f"the workspace expired at {timing['expiresAt']} (lifetime.expiresAfter {spec.lifetime.expires_after}); "
            f"it is deleted with its home volume after the grace period",
            Condition(EXPIRED, "True", "LifetimeEnded", f"expired at {timing['expiresAt']}"),
            status={**timing, **snapshot_status},
            delete_workspace=grace_over,
            events=(Event("Normal", "Expired", f"expired at {timing['expiresAt']}"),),
        )

    last_activity = _last_activity(metadata, status)
    idle_limit = parse_duration(spec.lifetime.idle_timeout)
    if spec.running and observed.pod and last_activity and observed.now - last_activity >= idle_limit:
        message = f"no activity since {last_activity:%Y-%m-%dT%H:%M:%SZ} (idleTimeout {spec.lifetime.idle_timeout}); stopped, home volume kept"
        return _stopped(
            "Stopped",
            "IdleTimeout",
            message,
            not_expired,
            status={**timing, **snapshot_status},
            stop_requested=True,
            events=(Event("Normal", "IdleTimeout", message),),
        )

    # The grant is spent once the copy is verified: the Secret is emptied, so the URL (valid for its whole
    # lifetime, from anywhere that reaches the store) does not outlive its use.
    grant_url = "" if job_succeeded(observed.job) else observed.grant_url
    storage = (
        manifests.build_reader_secret(ref, grant_url),
        manifests.build_data_pvc(ref, settings),
        manifests.build_materializer_network_policy(ref, settings),
        manifests.build_materializer_job(ref, settings),
        manifests.build_home_pvc(ref, spec, settings),
        manifests.build_notebook_network_policy(ref, settings),
        manifests.build_service(ref, settings),
    )
    copied = str(
        ((observed.job or {}).get("metadata") or {}).get("annotations", {}).get(SNAPSHOT_ANNOTATION, "")
    )
    if copied and copied != pinned:
        # The volume holds another snapshot: it and the Job that filled it go, and the next passes copy anew.
        message = (
            f"the pinned snapshot changed from {short_digest(copied)} to {short_digest(pinned)}: "
            "the read-only volume is copied again"
        )
        return Plan(
            phase="Starting",
            conditions=(
                Condition(READY, "False", "SnapshotChanged", message),
                Condition(DATASET_MOUNTED, "False", "SnapshotChanged", message),
                not_expired,
            ),
            delete_pod=True,
            delete=(
                ("batch/v1", "Job", object_name(ref.name, "materialize")),
                ("v1", "PersistentVolumeClaim", object_name(ref.name, "data")),
            ),
            status={**timing, **snapshot_status},
            events=(Event("Normal", "SnapshotChanged", message),),
        )
    if not spec.running:
        # Nothing is made for a Workspace no listed user has started; what an earlier start made stays.
        return _stopped(
            "Stopped",
            "Stopped",
            "spec.running is false: the notebook is stopped and the home volume kept; set it to true to start",
            not_expired,
            status={**timing, **snapshot_status},
            guard_namespace=True,
        )
    if tenancy.waiting:
        return _stopped(
            "Pending", WAITING_FOR_START, tenancy.waiting, not_expired, status=timing, guard_namespace=True
        )

    probe_runs = not observed.nodes_simulated and settings.egress_probe != "off"
    egress = (
        judge_probe(observed.probe)
        if probe_runs
        else Condition(
            EGRESS_RESTRICTED,
            "Unknown",
            "ProbeUnavailable",
            "pods do not execute on this cluster's nodes (simulated) or the probe is off, so the egress probe "
            "cannot run; the NetworkPolicy denying all egress is in place",
        )
    )
    probe_pod = (build_probe_pod(ref, settings),) if probe_runs else ()
    if egress.status == "False":
        # A route out was reached under the notebook's own policies: nothing runs over the data until the
        # network enforces them. The probe pod stays; deleting it probes again.
        message = (
            f"{egress.message}. The notebook is stopped; once fixed, delete pod "
            f"{object_name(ref.name, 'egress-probe')} to probe again"
        )
        return _stopped(
            "Failed",
            egress.reason,
            message,
            egress,
            not_expired,
            apply=(*storage, *probe_pod),
            status={**timing, **snapshot_status},
            events=(Event("Warning", egress.reason, message),),
        )
    failure = job_failed(observed.job)
    if failure and observed.job_failure:
        failure = f"{observed.job_failure} ({failure})"
    if failure:
        return Plan(
            phase="Failed",
            conditions=(
                Condition(
                    READY,
                    "False",
                    "SnapshotVerificationFailed",
                    f"materializing snapshot {ref.snapshot} failed: {failure}",
                ),
                Condition(DATASET_MOUNTED, "False", "MaterializeFailed", failure),
                not_expired,
                egress,
            ),
            apply=storage,
            delete_pod=True,
            status={**timing, **snapshot_status},
        )
    if not job_succeeded(observed.job):
        return Plan(
            phase="Starting",
            conditions=(
                Condition(
                    READY,
                    "False",
                    "MaterializingSnapshot",
                    f"copying and verifying snapshot {short_digest(pinned)} into the read-only volume",
                ),
                Condition(DATASET_MOUNTED, "False", "Materializing", "the materializer Job is running"),
                not_expired,
                egress,
            ),
            apply=storage,
            status={**timing, **snapshot_status},
        )

    user = spec.users[0]
    pod = manifests.build_notebook_pod(ref, spec, settings, node_labels)
    storage = (*storage, *probe_pod)
    mounted = Condition(
        DATASET_MOUNTED,
        "True",
        "SnapshotVerified",
        f"snapshot {short_digest(pinned)} verified and mounted read-only at /data",
    )
    scheduled = _pod_condition(observed.pod, "PodScheduled")
    ready = _pod_condition(observed.pod, "Ready")
    pod_status = (observed.pod or {}).get("status") or {}
    extra: dict[str, Any] = {
        **timing,
        **snapshot_status,
        "url": manifests.workspace_url(settings, user, ref),
    }
    if pod_status.get("startTime"):
        extra["startedAt"] = pod_status["startTime"]
    image_ids = [str(c.get("imageID") or "") for c in pod_status.get("containerStatuses") or ()]
    digests = [i.split("@", 1)[1] for i in image_ids if "@sha256:" in i]
    if digests:
        extra["imageDigest"] = digests[0]
    if (observed.pod or {}).get("spec", {}).get("nodeName"):
        extra["node"] = observed.pod["spec"]["nodeName"]  # type: ignore[index]
        extra["gpus"] = spec.resources.gpu
    if scheduled.get("status") == "False":
        message = str(scheduled.get("message") or "the scheduler has not found a node")
        conditions = (
            Condition(READY, "False", "Unschedulable", message),
            Condition(SCHEDULED, "False", str(scheduled.get("reason") or "Unschedulable"), message),
            mounted,
            not_expired,
            egress,
        )
        return Plan("Pending", conditions, apply=(*storage, pod), status=extra)
    if scheduled.get("status") != "True":
        conditions = (
            Condition(READY, "False", "Scheduling", "waiting for the scheduler"),
            Condition(SCHEDULED, "Unknown", "Pending", "waiting for the scheduler"),
            mounted,
            not_expired,
            egress,
        )
        return Plan("Starting", conditions, apply=(*storage, pod), status=extra)
    node = extra.get("node", "")
    scheduled_ok = Condition(SCHEDULED, "True", "Scheduled", f"on node {node}")
    if ready.get("status") == "True":
        return Plan(
            "Running",
            (
                Condition(READY, "True", "Running", f"open it at {extra['url']}"),
                scheduled_ok,
                mounted,
                not_expired,
                egress,
            ),
            apply=(*storage, pod),
            status=extra,
        )
    return Plan(
        "Starting",
        (
            Condition(READY, "False", "Starting", "the notebook server is starting"),
            scheduled_ok,
            mounted,
            not_expired,
            egress,
        ),
        apply=(*storage, pod),
        status=extra,
    )


# Steps of a normal start that follow each other within seconds: the Ready condition shows them, and an
# Event for each would only crowd `kubectl describe` (and the API server, at a few hundred workspaces).
QUIET_READY_REASONS = frozenset({"Scheduling", "Starting"})
# Ready=False that is not a problem: progress or a requested state.
NORMAL_READY_REASONS = frozenset({"MaterializingSnapshot", "Stopped", "SnapshotChanged", WAITING_FOR_START})


def ready_events(previous_reason: str | None, plan: Plan) -> tuple[Event, ...]:
    """The Event for a change of the Ready condition's reason: Normal for progress and success, Warning for a
    problem; none for quiet steps or where the plan tells the same story in an Event of its own."""
    ready = next((c for c in plan.conditions if c.type == READY), None)
    if ready is None or ready.reason == previous_reason or ready.reason in QUIET_READY_REASONS:
        return ()
    if any(event.reason == ready.reason for event in plan.events):
        return ()
    normal = ready.status == "True" or ready.reason in NORMAL_READY_REASONS
    return (Event("Normal" if normal else "Warning", ready.reason, ready.message),)


def refused(plan: Plan, kind: str, message: str) -> Plan:
    """The plan as reported when the API server refused one of its objects (a quota, an admission rule):
    the workspace waits, and its Ready condition carries the server's own words."""
    reason = "QuotaExceeded" if "exceeded quota" in message else "Refused"
    ready = Condition(READY, "False", reason, f"the API server refused the {kind}: {message}")
    others = tuple(c for c in plan.conditions if c.type != READY)
    return dataclasses.replace(plan, phase="Pending", conditions=(ready, *others), delete_workspace=False)


_PEOPLE = (("createdBy", "created by"), ("startedBy", "started by"))


def snapshot_not_found(plan: Plan, dataset: str, pinned: str, available: list[tuple[str, str]]) -> Plan:
    """The plan as reported when the pinned snapshot does not exist in the store (a mistyped digest, or one
    pruned by retention): nothing is built, and Ready names the snapshots there are, newest first, as
    (digest, createdAt)."""
    listed = "; ".join(f"{short_digest(d)} ({created})" for d, created in available[:10])
    there = f"it has: {listed}" if listed else "it has no published snapshot yet"
    message = (
        f'snapshot {short_digest(pinned)} of Dataset "{dataset}" does not exist (never published, or pruned by '
        f"its retention.keepSnapshots); {there}. Set spec.dataset.snapshot to one of these (sha256:<digest>), "
        'or to "" for the latest.'
    )
    others = tuple(c for c in plan.conditions if c.type not in (READY, DATASET_MOUNTED))
    return dataclasses.replace(
        plan,
        phase="Pending",
        conditions=(
            Condition(READY, "False", "SnapshotNotFound", message),
            Condition(DATASET_MOUNTED, "False", "SnapshotNotFound", message),
            *others,
        ),
        apply=(),
        delete=(),
        events=(),
        delete_workspace=False,
    )


def audit_transitions(previous_phase: str | None, plan: Plan) -> list[tuple[str, str, str]]:
    """Audit actions (action, outcome, reason) for the change from ``previous_phase`` to the plan's."""
    ready = next((c for c in plan.conditions if c.type == READY), None)
    reason = f"{ready.reason}: {ready.message}" if ready else ""
    # Who is answerable, as the API server authenticated them (tenancy.judge_tenancy).
    people = [f"{label} {plan.status[key]}" for key, label in _PEOPLE if plan.status.get(key)]
    if people:
        reason = f"{reason} ({', '.join(people)})"
    actions: list[tuple[str, str, str]] = []
    if any(e.reason == "AccessRevoked" for e in plan.events):
        actions.append(("workspace.revoked", "denied", reason))
    if any(e.reason == "AccessDenied" for e in plan.events):
        actions.append(("access.denied", "denied", reason))
    if (
        any(e.reason in ("EgressWidened", "EgressReachable") for e in plan.events)
        and plan.phase != previous_phase
    ):
        actions.append(("workspace.egress.widened", "denied", reason))
    if plan.phase == previous_phase:
        return actions
    if plan.phase == "Running":
        actions.append(("workspace.started", "success", reason))
    elif plan.phase == "Stopped" and previous_phase in ("Running", "Starting", "Pending"):
        actions.append(("workspace.stopped", "success", reason))
    elif plan.phase == "Expired":
        actions.append(("workspace.expired", "success", reason))
    return actions
