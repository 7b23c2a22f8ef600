"""The Workspace lifecycle as one pure decision: from the Workspace, its Dataset and what runs now, to the
objects that should exist, the conditions to report and the Events to tell people.

Level-triggered: the same inputs always give the same plan, so running it twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cleanroom.api import (
    Access,
    Condition,
    DatasetSpec,
    PinnedSnapshot,
    SnapshotVolumeMode,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
    decode,
    overlay,
    with_conditions,
)
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
from cleanroom.workspaces import manifests, snapshot_volumes
from cleanroom.workspaces._readiness import WorkspaceAssessment, assess_dataset
from cleanroom.workspaces.egress import build_probe_pod, judge_probe, widened_condition, widening_policies
from cleanroom.workspaces.settings import WorkspaceSettings
from cleanroom.workspaces.tenancy import ACCESS_DENIED, WAITING_FOR_START, Accounts, Tenancy, judge_tenancy


@dataclass(frozen=True)
class Observed:
    """What the handler read from the cluster for one Workspace."""

    now: datetime
    dataset: Mapping[str, Any] | None
    pod: Mapping[str, Any] | None = None
    job: Mapping[str, Any] | None = None
    # Why the materializer's copy failed, from its pod's termination message ("" when it did not fail).
    job_failure: str = ""
    # In the shared mode (``job`` is then the snapshot's one materializer): the verified copy's
    # PersistentVolume once its Job succeeded. The Workspace's data claim as it exists: in the shared mode
    # always, in the copy mode while no Job of its own exists (a claim the shared mode left is replaced).
    source_volume: Mapping[str, Any] | None = None
    data_claim: Mapping[str, Any] | None = None
    # In the shared mode: the provisioner of the snapshot StorageClass ("" when it could not be told);
    # block storage is served a copy per Workspace (snapshot_volumes.block_storage), or a clone of the one
    # verified copy where the site named a VolumeSnapshotClass.
    snapshot_provisioner: str = ""
    # In the clone (block storage with a VolumeSnapshotClass), once the copy verified: the VolumeSnapshot of
    # the verified copy's claim and the VolumeSnapshotContent it is bound to (None until they exist).
    source_snapshot: Mapping[str, Any] | None = None
    source_snapshot_content: Mapping[str, Any] | None = None
    # Cloned: the Workspace's own VolumeSnapshot (ws-<name>-data, beside its claim) as it exists.
    workspace_snapshot: Mapping[str, Any] | None = None
    # Whether the cluster serves VolumeSnapshots (False: a VolumeSnapshotClass is named on a cluster without
    # the snapshot CRDs, and nothing of the clone was read).
    volume_snapshots_served: bool = True
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
    phase: WorkspacePhase
    conditions: tuple[Condition, ...]
    apply: tuple[dict[str, Any], ...] = ()
    delete_pod: bool = False
    # Other objects to delete: (apiVersion, kind, name) in the workspace's namespace.
    delete: tuple[tuple[str, str, str], ...] = ()
    stop_requested: bool = False
    delete_workspace: bool = False
    # The status fields this plan knows (phase and conditions are the fields above); None: kept as it is.
    status: WorkspaceStatus = field(default_factory=WorkspaceStatus)
    events: tuple[Event, ...] = ()
    # When the clock alone could change this plan (expiry, the end of the grace period, the idle deadline).
    recheck_at: datetime | None = None
    # The namespace holds an admitted Workspace not started yet: guard it now (labels, default deny, quota),
    # so that what a start writes first (the hub's session Secret) lands in a namespace already guarded.
    guard_namespace: bool = False
    # The snapshot whose read grant the reader Secret in ``apply`` is to carry ("" for none): the materializer
    # Job is to exist and has not copied it yet. An intent rather than a URL, because a grant is written to
    # the store: the handler issues one (or reuses the one it holds) and puts its URL in with ``with_grant``,
    # so a pass plans once.
    grant: str = ""
    # Whose grant it is, as (namespace, name): the snapshot's one shared copy's; None: the Workspace's own.
    grant_key: tuple[str, str] | None = None

    @property
    def pinned(self) -> str:
        """The digest of the snapshot the plan pins ("" before the Workspace has one)."""
        return (self.status.snapshot.digest if self.status.snapshot else None) or ""

    def applied_to(self, workspace: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The whole status to write over ``workspace``'s current one: its fields kept, the plan's set, the
        conditions merged for the Workspace's generation."""
        generation = int(workspace["metadata"].get("generation", 0))
        current = workspace.get("status") or {}
        status = dataclasses.replace(self.status, phase=self.phase)
        return overlay(
            current, with_conditions(status, current, self.conditions, generation=generation, now=now)
        )


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


def _stopped(phase: WorkspacePhase, reason: str, message: str, *extra: Condition, **kwargs: Any) -> Plan:
    return Plan(
        phase=phase,
        conditions=(Condition(READY, "False", reason, message), *extra),
        delete_pod=True,
        **kwargs,
    )


def _unmounted(reason: str, message: str) -> tuple[Condition, Condition]:
    """Not Ready because the snapshot is not mounted, for one reason."""
    return Condition(READY, "False", reason, message), Condition(DATASET_MOUNTED, "False", reason, message)


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
    materializing = any(m["kind"] == "Job" for m in plan.apply) and not job_succeeded(observed.job)
    grant = plan.pinned if materializing else ""
    grant_key = None
    if grant and serves_one_copy(observed, settings):
        grant_key = (
            settings.snapshot_volume_namespace,
            snapshot_volumes.SharedCopy(
                str(workspace["spec"]["dataset"]["name"]), grant, settings.snapshot_volume_namespace
            ).name(),
        )
    # A gate that waits on what no watch reports (a VolumeSnapshot, a claim being restored) names its own
    # moment to look again; the clock's deadlines otherwise.
    moments = [m for m in (plan.recheck_at, next_deadline(workspace, observed, settings)) if m is not None]
    return dataclasses.replace(plan, recheck_at=min(moments, default=None), grant=grant, grant_key=grant_key)


def serves_shared(observed: Observed, settings: WorkspaceSettings) -> bool:
    """Whether the Workspace is served the snapshot's one shared copy: the shared mode, on storage that can
    be shared (block storage gets a clone or a copy of its own)."""
    return settings.snapshot_volume_mode == SnapshotVolumeMode.SHARED and not _block_storage(
        observed, settings
    )


def serves_clone(observed: Observed, settings: WorkspaceSettings) -> bool:
    """Whether the Workspace is served a clone of the snapshot's one verified copy: the shared mode, on block
    storage, with a VolumeSnapshotClass named."""
    return (
        settings.snapshot_volume_mode == SnapshotVolumeMode.SHARED
        and bool(settings.snapshot_volume_snapshot_class)
        and bool(_block_storage(observed, settings))
    )


def serves_one_copy(observed: Observed, settings: WorkspaceSettings) -> bool:
    """Whether the snapshot's one verified copy (in the snapshot namespace) serves the Workspace, shared or
    cloned: its materializer Job and read grant are the copy's, not the Workspace's."""
    return serves_shared(observed, settings) or serves_clone(observed, settings)


def _block_storage(observed: Observed, settings: WorkspaceSettings) -> str:
    if settings.snapshot_volume_mode != SnapshotVolumeMode.SHARED:
        return ""
    return snapshot_volumes.block_storage(observed.snapshot_provisioner, settings)


def shared_refused(observed: Observed, settings: WorkspaceSettings) -> str:
    """In the shared mode, why this Workspace is served a copy of its own ("" when it is not): block storage
    and no VolumeSnapshotClass to clone the one verified copy with."""
    if serves_clone(observed, settings):
        return ""
    why = _block_storage(observed, settings)
    return (
        f"{why}; name a VolumeSnapshotClass (workspaces.snapshotVolumes.volumeSnapshotClass) to clone one verified copy instead"
        if why
        else ""
    )


def with_grant(plan: Plan, url: str) -> Plan:
    """The plan with ``url`` (the presigned URL of the read grant for ``plan.grant``) in its reader Secret;
    the plan as it is when it holds no grant intent."""
    if not plan.grant:
        return plan
    return dataclasses.replace(
        plan,
        apply=tuple(
            manifests.with_grant_url(m, url) if manifests.is_reader_secret(m) else m for m in plan.apply
        ),
    )


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
    """The first gate that decides, in order; a Workspace that passes them all runs its notebook."""
    case = _Case(workspace, observed, settings)
    for gate in _GATES:
        decision = gate(case)
        if decision is not None:
            return decision
    return _notebook(case)


@dataclass(frozen=True)
class _Case:
    """One Workspace as the gates read it. Each fact is worked out the first time a gate asks for it, so a
    gate that decides early never reads what only later gates need (the user groups, which the handler reads
    from the cluster on first use; the Dataset's spec, which exists only once the Dataset is ready)."""

    workspace: Mapping[str, Any]
    observed: Observed
    settings: WorkspaceSettings

    @cached_property
    def metadata(self) -> Mapping[str, Any]:
        return self.workspace["metadata"]  # type: ignore[no-any-return]

    @cached_property
    def spec(self) -> WorkspaceSpec:
        return decode(WorkspaceSpec, self.workspace["spec"])

    @cached_property
    def status(self) -> Mapping[str, Any]:
        return self.workspace.get("status") or {}

    @cached_property
    def expires_at(self) -> datetime:
        created = _parse_time(self.metadata.get("creationTimestamp")) or self.observed.now
        return created + parse_duration(self.spec.lifetime.expires_after)

    @cached_property
    def expires(self) -> str:
        return self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")

    @cached_property
    def expiry(self) -> WorkspaceStatus:
        return WorkspaceStatus(expires_at=self.expires)

    @cached_property
    def not_expired(self) -> Condition:
        return Condition(EXPIRED, "False", "WithinLifetime", f"expires at {self.expires}")

    @cached_property
    def assessment(self) -> WorkspaceAssessment:
        return assess_dataset(self.spec, self.observed.dataset)

    @cached_property
    def dataset_spec(self) -> DatasetSpec:
        assert self.observed.dataset is not None  # asked for only past the readiness gate
        return decode(DatasetSpec, self.observed.dataset["spec"])

    @cached_property
    def tenancy(self) -> Tenancy:
        observed = self.observed
        return judge_tenancy(
            self.workspace,
            self.dataset_spec.access,
            observed.namespace_labels,
            observed.user_groups,
            observed.accounts,
        )

    @cached_property
    def timing(self) -> WorkspaceStatus:
        """The expiry and who is answerable (past the tenancy gate)."""
        return dataclasses.replace(
            self.expiry, created_by=self.tenancy.created_by, started_by=self.tenancy.started_by
        )

    @cached_property
    def pinned(self) -> str:
        return (
            self.spec.dataset.snapshot
            or str((self.status.get("snapshot") or {}).get("digest") or "")
            or self.assessment.snapshot
        )

    @cached_property
    def pinned_status(self) -> WorkspaceStatus:
        snapshot = PinnedSnapshot(digest=self.pinned, short_digest=short_digest(self.pinned))
        mode = (
            SnapshotVolumeMode.CLONE
            if self.cloned
            else SnapshotVolumeMode.SHARED
            if self.shared
            else SnapshotVolumeMode.COPY
        )
        return dataclasses.replace(self.timing, snapshot=snapshot, snapshot_volume=mode)

    @cached_property
    def shared(self) -> bool:
        return serves_shared(self.observed, self.settings)

    @cached_property
    def cloned(self) -> bool:
        return serves_clone(self.observed, self.settings)

    @cached_property
    def one_copy(self) -> bool:
        """Served from the snapshot's one verified copy, shared or cloned."""
        return self.shared or self.cloned

    @cached_property
    def volume_note(self) -> str:
        """How the snapshot volume is served, for the DatasetMounted condition's message."""
        if self.shared:
            return " (its one shared copy)"
        if self.cloned:
            return (
                f" (a clone of its one verified copy: storage class "
                f"{self.settings.snapshot_storage_class or '(the cluster default)'} is block storage "
                f"({self.observed.snapshot_provisioner}), restored from a snapshot of VolumeSnapshotClass "
                f"{self.settings.snapshot_volume_snapshot_class})"
            )
        refused = shared_refused(self.observed, self.settings)
        return f" (a copy of its own: {refused})" if refused else ""

    @cached_property
    def ref(self) -> manifests.WorkspaceRef:
        assert self.observed.dataset is not None
        latest = (self.observed.dataset.get("status") or {}).get("snapshot") or {}
        return manifests.WorkspaceRef(
            name=self.metadata["name"],
            namespace=self.metadata["namespace"],
            uid=self.metadata.get("uid", ""),
            snapshot=self.pinned,
            dataset=self.spec.dataset.name,
            snapshot_bytes=int(latest.get("bytes") or 0) if latest.get("digest") == self.pinned else 0,
        )

    @cached_property
    def storage(self) -> tuple[dict[str, Any], ...]:
        """What the materializer needs and the notebook's volumes, policy and Service."""
        ref, settings = self.ref, self.settings
        # The grant is spent once the copy is verified: the Secret is emptied, so the URL (valid for its
        # whole lifetime, from anywhere that reaches the store) does not outlive its use.
        grant_url = "" if job_succeeded(self.observed.job) else self.observed.grant_url
        if self.one_copy:
            return (
                *snapshot_volumes.build_shared_objects(
                    snapshot_volumes.shared_copy(ref, settings), settings, grant_url
                ),
                *self.workspace_volume,
                manifests.build_home_pvc(ref, self.spec, settings),
                manifests.build_notebook_network_policy(ref, settings),
                manifests.build_service(ref, settings),
            )
        return (
            manifests.build_reader_secret(ref, grant_url),
            manifests.build_data_pvc(ref, settings),
            manifests.build_materializer_network_policy(ref, settings),
            manifests.build_materializer_job(ref, settings),
            manifests.build_home_pvc(ref, self.spec, settings),
            manifests.build_notebook_network_policy(ref, settings),
            manifests.build_service(ref, settings),
        )

    @cached_property
    def workspace_volume(self) -> tuple[dict[str, Any], ...]:
        """Once the one copy verified: shared, this Workspace's PersistentVolume over it and its claim; cloned,
        the copy's VolumeSnapshot and, once it is ready, what restores this Workspace's claim from it."""
        if self.cloned:
            return self.workspace_clone
        source = self.observed.source_volume
        if (
            not job_succeeded(self.observed.job)
            or source is None
            or snapshot_volumes.unshareable(source, self.settings)
        ):
            return ()
        return (
            snapshot_volumes.build_workspace_volume(self.ref, source),
            snapshot_volumes.build_workspace_claim(self.ref, source),
        )

    @cached_property
    def clone_pending(self) -> str:
        """Why the Workspace's clone cannot be restored yet ("" once it can)."""
        observed = self.observed
        return snapshot_volumes.clone_pending(observed.source_snapshot, observed.source_snapshot_content)

    @cached_property
    def workspace_clone(self) -> tuple[dict[str, Any], ...]:
        observed = self.observed
        if not job_succeeded(observed.job):
            return ()
        source = (
            snapshot_volumes.build_source_snapshot(
                snapshot_volumes.shared_copy(self.ref, self.settings), self.settings
            ),
        )
        if self.clone_pending or observed.source_snapshot_content is None:
            return source
        return (
            *source,
            *snapshot_volumes.build_workspace_clone(
                self.ref, observed.source_snapshot_content, self.settings
            ),
        )

    @cached_property
    def probe_runs(self) -> bool:
        return not self.observed.nodes_simulated and self.settings.egress_probe != "off"

    @cached_property
    def probe_pod(self) -> tuple[dict[str, Any], ...]:
        return (build_probe_pod(self.ref, self.settings),) if self.probe_runs else ()

    @cached_property
    def egress(self) -> Condition:
        if self.probe_runs:
            return judge_probe(self.observed.probe)
        return Condition(
            EGRESS_RESTRICTED,
            "Unknown",
            "ProbeUnavailable",
            "pods do not execute on this cluster's nodes (simulated) or the probe is off, so the egress probe "
            "cannot run; the NetworkPolicy denying all egress is in place",
        )


def _image_not_allowed(case: _Case) -> Plan | None:
    if case.settings.image_allowed(case.spec.image):
        return None
    allowed = ", ".join(case.settings.allowed_image_prefixes)
    return _stopped(
        WorkspacePhase.FAILED,
        "ImageNotAllowed",
        f"image {case.spec.image} is not from an allowed registry ({allowed}); use an approved notebook image",
        status=case.expiry,
    )


def _dataset_not_ready(case: _Case) -> Plan | None:
    assessment = case.assessment
    if assessment.snapshot:
        return None
    return Plan(phase=assessment.phase, conditions=assessment.conditions, delete_pod=True, status=case.expiry)


def _tenancy_denied(case: _Case) -> Plan | None:
    denial = case.tenancy.denial
    if not denial:
        return None
    events = (Event("Warning", "AccessRevoked" if case.observed.pod else ACCESS_DENIED, denial),)
    return _stopped(WorkspacePhase.FAILED, ACCESS_DENIED, denial, status=case.timing, events=events)


def _users_denied(case: _Case) -> Plan | None:
    denied = denied_users(case.spec, case.dataset_spec.access, case.observed.user_groups)
    if not denied:
        return None
    message = (
        f"{', '.join(denied)} may not use Dataset {case.spec.dataset.name}: not in its spec.access users or "
        "groups. Ask the data steward to grant access, or remove them from spec.users."
    )
    events = (Event("Warning", "AccessRevoked" if case.observed.pod else ACCESS_DENIED, message),)
    return _stopped(WorkspacePhase.FAILED, ACCESS_DENIED, message, status=case.timing, events=events)


def _gpu_type_unknown(case: _Case) -> Plan | None:
    settings = case.settings
    if settings.node_labels_for(case.spec.resources.gpu_type) is not None:
        return None
    return _stopped(
        WorkspacePhase.FAILED,
        "GPUTypeUnknown",
        f"gpuType {case.spec.resources.gpu_type} is not known on platform {settings.gpu_platform}; "
        f"known: {', '.join(sorted(settings.gpu_types))}",
        status=case.timing,
    )


def _egress_widened(case: _Case) -> Plan | None:
    ref, settings = case.ref, case.settings
    own_policies = (
        manifests.NAMESPACE_DEFAULT_DENY,
        manifests.build_notebook_network_policy(ref, settings)["metadata"]["name"],
        manifests.build_materializer_network_policy(ref, settings)["metadata"]["name"],
    )
    widening = widening_policies(case.observed.policies, manifests.labels(ref, "notebook"), own_policies)
    if not widening:
        return None
    egress_open = widened_condition(widening)
    return _stopped(
        WorkspacePhase.FAILED,
        "EgressWidened",
        egress_open.message,
        egress_open,
        status=case.pinned_status,
        events=(Event("Warning", "EgressWidened", egress_open.message),),
    )


def _expired(case: _Case) -> Plan | None:
    now, expires_at, expired_at = case.observed.now, case.expires_at, case.expires
    if now < expires_at:
        return None
    return _stopped(
        WorkspacePhase.EXPIRED,
        "Expired",
        f"the workspace expired at {expired_at} (lifetime.expiresAfter {case.spec.lifetime.expires_after}); "
        f"it is deleted with its home volume after the grace period",
        Condition(EXPIRED, "True", "LifetimeEnded", f"expired at {expired_at}"),
        status=case.pinned_status,
        delete_workspace=now >= expires_at + timedelta(seconds=case.settings.expiry_grace_seconds),
        events=(Event("Normal", "Expired", f"expired at {expired_at}"),),
    )


def _idle(case: _Case) -> Plan | None:
    spec, observed = case.spec, case.observed
    last_activity = _last_activity(case.metadata, case.status)
    idle_limit = parse_duration(spec.lifetime.idle_timeout)
    if not (spec.running and observed.pod and last_activity and observed.now - last_activity >= idle_limit):
        return None
    message = f"no activity since {last_activity:%Y-%m-%dT%H:%M:%SZ} (idleTimeout {spec.lifetime.idle_timeout}); stopped, home volume kept"
    return _stopped(
        WorkspacePhase.STOPPED,
        "IdleTimeout",
        message,
        case.not_expired,
        status=case.pinned_status,
        stop_requested=True,
        events=(Event("Normal", "IdleTimeout", message),),
    )


def _snapshot_changed(case: _Case) -> Plan | None:
    if case.one_copy:
        return _shared_claim_changed(case)
    job_metadata = (case.observed.job or {}).get("metadata") or {}
    copied = str(job_metadata.get("annotations", {}).get(SNAPSHOT_ANNOTATION, ""))
    # A claim the shared mode bound (it alone carries the annotation) is never written: a copy Job of the
    # Workspace's own would write into the shared copy's storage through it.
    claim = ((case.observed.data_claim or {}).get("metadata") or {}).get("annotations") or {}
    if case.observed.job is None and SNAPSHOT_ANNOTATION in claim:
        copied = str(claim[SNAPSHOT_ANNOTATION]) + " (a shared copy)"
    if not copied or copied == case.pinned:
        return None
    # The volume holds another snapshot: it and the Job that filled it go, and the next passes copy anew.
    message = (
        f"the pinned snapshot changed from {short_digest(copied)} to {short_digest(case.pinned)}: "
        "the read-only volume is copied again"
    )
    return Plan(
        phase=WorkspacePhase.STARTING,
        conditions=(
            Condition(READY, "False", "SnapshotChanged", message),
            Condition(DATASET_MOUNTED, "False", "SnapshotChanged", message),
            case.not_expired,
        ),
        delete_pod=True,
        delete=(
            ("batch/v1", "Job", object_name(case.ref.name, "materialize")),
            ("v1", "PersistentVolumeClaim", object_name(case.ref.name, "data")),
        ),
        status=case.pinned_status,
        events=(Event("Normal", "SnapshotChanged", message),),
    )


def _shared_claim_changed(case: _Case) -> Plan | None:
    """Served from the one verified copy, a data claim of another snapshot, one the copy mode made (it holds
    a copy of its own), or one served the other way (a clone where the copy is shared now, or the reverse):
    it goes with the notebook, and the next pass binds or restores the one copy of the pinned snapshot."""
    claim = case.observed.data_claim or {}
    claim_metadata = claim.get("metadata") or {}
    if not claim_metadata:
        return None
    bound = str((claim_metadata.get("annotations") or {}).get(SNAPSHOT_ANNOTATION, ""))
    same_way = snapshot_volumes.restored_from_snapshot(claim) == case.cloned
    if bound == case.pinned and same_way:
        return None
    if not bound:
        was = "a copy of its own"
    elif bound != case.pinned:
        was = f"snapshot {short_digest(bound)}"
    else:
        was = "a shared copy" if case.cloned else "a clone"
    served = "a clone of the verified copy" if case.cloned else "the shared verified copy"
    message = f"the read-only volume holds {was}; it is replaced by {served} of snapshot {short_digest(case.pinned)}"
    return _data_volume_replaced(
        case,
        "SnapshotChanged",
        message,
        ("batch/v1", "Job", object_name(case.ref.name, "materialize")),
        *snapshot_volumes.workspace_volume_objects(case.ref),
    )


def _data_volume_replaced(
    case: _Case, reason: str, message: str, *also: tuple[str, str, str], warning: bool = False
) -> Plan:
    """The Workspace's data volume goes (its claim and, cloned, its VolumeSnapshot and content; ``also``),
    with the notebook, for the next pass to serve the pinned snapshot's one copy anew."""
    return Plan(
        phase=WorkspacePhase.STARTING,
        conditions=(
            *_unmounted(reason, message),
            case.not_expired,
        ),
        delete_pod=True,
        delete=(
            *snapshot_volumes.clone_objects(case.ref, case.settings),
            ("v1", "PersistentVolumeClaim", object_name(case.ref.name, "data")),
            *also,
        ),
        status=case.pinned_status,
        events=(Event("Warning" if warning else "Normal", reason, message),),
        recheck_at=case.observed.now + CLONE_POLL if case.cloned else None,
    )


def _not_running(case: _Case) -> Plan | None:
    if case.spec.running:
        return None
    # Nothing is made for a Workspace no listed user has started; what an earlier start made stays.
    return _stopped(
        WorkspacePhase.STOPPED,
        "Stopped",
        "spec.running is false: the notebook is stopped and the home volume kept; set it to true to start",
        case.not_expired,
        status=case.pinned_status,
        guard_namespace=True,
    )


def _waiting_for_start(case: _Case) -> Plan | None:
    waiting = case.tenancy.waiting
    if not waiting:
        return None
    return _stopped(
        WorkspacePhase.PENDING,
        WAITING_FOR_START,
        waiting,
        case.not_expired,
        status=case.timing,
        guard_namespace=True,
    )


def _probe_reached_out(case: _Case) -> Plan | None:
    egress = case.egress
    if egress.status != "False":
        return None
    # A route out was reached under the notebook's own policies: nothing runs over the data until the
    # network enforces them. The probe pod stays; deleting it probes again.
    message = (
        f"{egress.message}. The notebook is stopped; once fixed, delete pod "
        f"{object_name(case.ref.name, 'egress-probe')} to probe again"
    )
    return _stopped(
        WorkspacePhase.FAILED,
        egress.reason,
        message,
        egress,
        case.not_expired,
        apply=(*case.storage, *case.probe_pod),
        status=case.pinned_status,
        events=(Event("Warning", egress.reason, message),),
    )


def _materializer_failed(case: _Case) -> Plan | None:
    failure = job_failed(case.observed.job)
    if not failure:
        return None
    if case.observed.job_failure:
        failure = f"{case.observed.job_failure} ({failure})"
    message = f"materializing snapshot {case.ref.snapshot} failed: {failure}"
    return Plan(
        phase=WorkspacePhase.FAILED,
        conditions=(
            Condition(READY, "False", "SnapshotVerificationFailed", message),
            Condition(DATASET_MOUNTED, "False", "MaterializeFailed", failure),
            case.not_expired,
            case.egress,
        ),
        apply=case.storage,
        delete_pod=True,
        status=case.pinned_status,
    )


def _materializing(case: _Case) -> Plan | None:
    if job_succeeded(case.observed.job):
        return None
    return Plan(
        phase=WorkspacePhase.STARTING,
        conditions=(
            Condition(
                READY,
                "False",
                "MaterializingSnapshot",
                f"copying and verifying snapshot {short_digest(case.pinned)} into the read-only volume",
            ),
            Condition(
                DATASET_MOUNTED,
                "False",
                "Materializing",
                "the materializer Job is running" + case.volume_note,
            ),
            case.not_expired,
            case.egress,
        ),
        apply=case.storage,
        status=case.pinned_status,
    )


def _shared_volume_unbound(case: _Case) -> Plan | None:
    """In the shared mode, the copy verified: wait for its volume to be seen, or say why it cannot be shared."""
    if not case.shared or case.workspace_volume:
        return None
    why = snapshot_volumes.unshareable(case.observed.source_volume, case.settings)
    waiting = case.observed.source_volume is None
    message = f"the verified copy of snapshot {short_digest(case.pinned)} cannot be mounted here: {why}"
    reason = "SharedVolumePending" if waiting else "VolumeNotShareable"
    return Plan(
        phase=WorkspacePhase.STARTING if waiting else WorkspacePhase.FAILED,
        conditions=(
            *_unmounted(reason, message),
            case.not_expired,
            case.egress,
        ),
        apply=case.storage,
        delete_pod=not waiting,
        status=case.pinned_status,
    )


CLONE_POLL = timedelta(seconds=3)
# How soon a Workspace that waits for the VolumeSnapshot API looks again (the CRDs may be installed without
# the operator being restarted).
SNAPSHOT_API_POLL = timedelta(seconds=60)
VOLUME_SNAPSHOTS_UNSERVED = "VolumeSnapshotsUnavailable"


def _volume_snapshots_unserved(case: _Case) -> Plan | None:
    """Cloned, on a cluster that serves no VolumeSnapshots: the site's setting cannot work, so the Workspace
    says what to fix, nothing is made, and no volume is deleted or judged from what could not be read. The
    notebook stops, as on every Failed Workspace: this gate comes before the ones that stop a notebook
    (spec.running false, an egress probe that got out), and a notebook left running would escape them."""
    if not case.cloned or case.observed.volume_snapshots_served:
        return None
    named, api = case.settings.snapshot_volume_snapshot_class, snapshot_volumes.SNAPSHOT_API_VERSION
    message = (
        f"workspaces.snapshotVolumes.volumeSnapshotClass names {named!r} to clone block storage, but this "
        f"cluster serves no VolumeSnapshots ({api}): install the snapshot CRDs and the snapshot-controller "
        "(kubernetes-csi/external-snapshotter), or unset the class to serve each Workspace a copy of its own"
    )
    return Plan(
        phase=WorkspacePhase.FAILED,
        conditions=(
            *_unmounted(VOLUME_SNAPSHOTS_UNSERVED, message),
            case.not_expired,
        ),
        delete_pod=True,
        status=case.pinned_status,
        events=(Event("Warning", VOLUME_SNAPSHOTS_UNSERVED, message),),
        recheck_at=case.observed.now + SNAPSHOT_API_POLL,
    )


def _foreign_clone(case: _Case) -> Plan | None:
    """Cloned: a VolumeSnapshot or data claim of the Workspace's names that the operator did not make as it
    makes them (someone with rights in the namespace made them first): they go, with the notebook, before
    anything is mounted from them, and the next pass restores the Workspace's own."""
    if not case.cloned:
        return None
    why = snapshot_volumes.foreign_clone(case.ref, case.observed.workspace_snapshot, case.observed.data_claim)
    if not why:
        return None
    message = f"not mounted: {why}; it is deleted and the Workspace's own is restored from the verified copy"
    return _data_volume_replaced(case, "ForeignVolumeSnapshot", message, warning=True)


def _clone_restoring(case: _Case) -> Plan | None:
    """Cloned, the copy verified: wait for its VolumeSnapshot to be ready and the Workspace's claim to be
    made from it. The notebook is made then, before the claim is bound: on a WaitForFirstConsumer class (the
    usual one for block storage) the restore waits for the pod that uses the claim."""
    if not case.cloned:
        return None
    claim = case.observed.data_claim
    if claim is not None and snapshot_volumes.restored_from_snapshot(claim) and not case.clone_pending:
        return None
    digest = short_digest(case.pinned)
    if case.clone_pending:
        reason = "SnapshotPending"
        message = f"the verified copy of snapshot {digest} is snapshotted once for every Workspace: {case.clone_pending}"
    else:
        reason = "RestoringClone"
        message = f"this Workspace's volume is being restored from the VolumeSnapshot of snapshot {digest}'s verified copy"
    return Plan(
        phase=WorkspacePhase.STARTING,
        conditions=(
            Condition(READY, "False", reason, message),
            Condition(DATASET_MOUNTED, "False", reason, message + case.volume_note),
            case.not_expired,
            case.egress,
        ),
        apply=case.storage,
        status=case.pinned_status,
        # No watch reports a VolumeSnapshot's readiness or a restore: looked at again shortly.
        recheck_at=case.observed.now + CLONE_POLL,
    )


# In order: the first gate that decides, decides. What makes nothing comes before what builds, so a
# Workspace that may not run never has its objects made; expiry and idle culling before any start.
_GATES: tuple[Callable[[_Case], Plan | None], ...] = (
    _image_not_allowed,
    _dataset_not_ready,
    _tenancy_denied,
    _users_denied,
    _gpu_type_unknown,
    _egress_widened,
    _expired,
    _idle,
    _volume_snapshots_unserved,
    _snapshot_changed,
    _foreign_clone,
    _not_running,
    _waiting_for_start,
    _probe_reached_out,
    _materializer_failed,
    _materializing,
    _shared_volume_unbound,
    _clone_restoring,
)


def _notebook_status(case: _Case) -> WorkspaceStatus:
    """The status of a Workspace whose snapshot is in place: its URL, and what the notebook pod reports."""
    pod = case.observed.pod or {}
    pod_status = pod.get("status") or {}
    image_ids = [str(c.get("imageID") or "") for c in pod_status.get("containerStatuses") or ()]
    digests = [i.split("@", 1)[1] for i in image_ids if "@sha256:" in i]
    node = pod.get("spec", {}).get("nodeName") or None
    return dataclasses.replace(
        case.pinned_status,
        url=manifests.workspace_url(case.settings, case.spec.users[0], case.ref),
        started_at=pod_status.get("startTime") or None,
        image_digest=digests[0] if digests else None,
        node=node,
        gpus=case.spec.resources.gpu if node else None,
    )


def _notebook(case: _Case) -> Plan:
    """The snapshot is verified: the notebook pod, and where the scheduler and the kubelet have got with it."""
    node_labels = case.settings.node_labels_for(case.spec.resources.gpu_type)
    assert node_labels is not None  # the GPU-type gate passed
    pod = manifests.build_notebook_pod(case.ref, case.spec, case.settings, node_labels)
    apply = (*case.storage, *case.probe_pod, pod)
    extra = _notebook_status(case)
    mounted = Condition(
        DATASET_MOUNTED,
        "True",
        "SnapshotVerified",
        f"snapshot {short_digest(case.pinned)} verified and mounted read-only at /data" + case.volume_note,
    )
    after = (mounted, case.not_expired, case.egress)
    scheduled = _pod_condition(case.observed.pod, "PodScheduled")
    if scheduled.get("status") == "False":
        message = str(scheduled.get("message") or "the scheduler has not found a node")
        unschedulable = str(scheduled.get("reason") or "Unschedulable")
        conditions = (
            Condition(READY, "False", "Unschedulable", message),
            Condition(SCHEDULED, "False", unschedulable, message),
            *after,
        )
        return Plan(WorkspacePhase.PENDING, conditions, apply=apply, status=extra)
    if scheduled.get("status") != "True":
        conditions = (
            Condition(READY, "False", "Scheduling", "waiting for the scheduler"),
            Condition(SCHEDULED, "Unknown", "Pending", "waiting for the scheduler"),
            *after,
        )
        return Plan(WorkspacePhase.STARTING, conditions, apply=apply, status=extra)
    scheduled_ok = Condition(SCHEDULED, "True", "Scheduled", f"on node {extra.node or ''}")
    if _pod_condition(case.observed.pod, "Ready").get("status") == "True":
        ready = Condition(READY, "True", "Running", f"open it at {extra.url}")
        return Plan(WorkspacePhase.RUNNING, (ready, scheduled_ok, *after), apply=apply, status=extra)
    starting = Condition(READY, "False", "Starting", "the notebook server is starting")
    return Plan(WorkspacePhase.STARTING, (starting, scheduled_ok, *after), apply=apply, status=extra)


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
    return dataclasses.replace(
        plan, phase=WorkspacePhase.PENDING, conditions=(ready, *others), delete_workspace=False
    )


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
        phase=WorkspacePhase.PENDING,
        conditions=(
            Condition(READY, "False", "SnapshotNotFound", message),
            Condition(DATASET_MOUNTED, "False", "SnapshotNotFound", message),
            *others,
        ),
        apply=(),
        delete=(),
        events=(),
        delete_workspace=False,
        grant="",
    )


def audit_transitions(previous_phase: str | None, plan: Plan) -> list[tuple[str, str, str]]:
    """Audit actions (action, outcome, reason) for the change from ``previous_phase`` to the plan's."""
    ready = next((c for c in plan.conditions if c.type == READY), None)
    reason = f"{ready.reason}: {ready.message}" if ready else ""
    # Who is answerable, as the API server authenticated them (tenancy.judge_tenancy).
    people = [
        f"{label} {who}"
        for who, label in ((plan.status.created_by, "created by"), (plan.status.started_by, "started by"))
        if who
    ]
    if people:
        reason = f"{reason} ({', '.join(people)})"
    actions: list[tuple[str, str, str]] = []
    if any(e.reason == "AccessRevoked" for e in plan.events):
        actions.append(("workspace.revoked", "denied", reason))
    if any(e.reason == ACCESS_DENIED for e in plan.events):
        actions.append(("access.denied", "denied", reason))
    if (
        any(e.reason in ("EgressWidened", "EgressReachable") for e in plan.events)
        and plan.phase != previous_phase
    ):
        actions.append(("workspace.egress.widened", "denied", reason))
    if plan.phase == previous_phase:
        return actions
    if plan.phase == WorkspacePhase.RUNNING:
        actions.append(("workspace.started", "success", reason))
    elif plan.phase == WorkspacePhase.STOPPED and previous_phase in ("Running", "Starting", "Pending"):
        actions.append(("workspace.stopped", "success", reason))
    elif plan.phase == WorkspacePhase.EXPIRED:
        actions.append(("workspace.expired", "success", reason))
    return actions
