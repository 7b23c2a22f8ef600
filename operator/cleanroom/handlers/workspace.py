"""Thin kopf handlers for Workspaces: read the Workspace, its Dataset and what runs, ask the pure lifecycle
core for a plan, and carry it out (apply objects, stop pods, write status, emit Events)."""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import kopf

from cleanroom.api import (
    CREATED_BY_ANNOTATION,
    DATASETS,
    GROUP,
    VERSION,
    WORKSPACE_NAMESPACE_LABEL,
    WORKSPACES,
)
from cleanroom.api.contract import (
    DATASET_LABEL,
    MANAGED_BY,
    READY,
    SNAPSHOT_LABEL,
    WORKSPACE_APP,
    WORKSPACE_LABEL,
    label_value,
    object_name,
)
from cleanroom.handlers import _audit, _kube, _metrics, _snapshot_volumes
from cleanroom.handlers._clock import Clock
from cleanroom.handlers._engine import Again, WorkQueue, seconds_until
from cleanroom.handlers._grants import GrantCache, GrantKeys, grant_keys
from cleanroom.handlers._tracking import AppliedObjects, LastSeen, NamespaceGuards
from cleanroom.snapshots import SnapshotError, SnapshotNotFound
from cleanroom.snapshots.grant import Grant, issue_grant
from cleanroom.workspaces import (
    PSA_LABELS,
    Observed,
    Plan,
    WorkspaceSettings,
    build_namespace_guards,
    job_failed,
    load_settings,
    plan_workspace,
    ready_events,
    refused,
    snapshot_not_found,
    trail,
    with_grant,
)
from cleanroom.workspaces.snapshot_volumes import SNAPSHOT_API_VERSION, Collection, SharedCopy, block_storage
from cleanroom.workspaces.tenancy import Accounts

OPERATOR_NAMESPACE = os.environ.get("CLEANROOM_NAMESPACE", "cleanroom-system")
# The longest a Workspace goes without being judged again when nothing happens to it (seconds); expiry and
# idle culling happen at their own moments regardless. Tests shorten it.
CLOCK_SECONDS = float(os.environ.get("CLEANROOM_WORKSPACE_CLOCK_SECONDS", "300"))
CLOCK = Clock()
USER_GROUPS_CONFIGMAP = "cleanroom-user-groups"
REFUSAL_RETRY_SECONDS = 30
# A pass that failed (the API server unreachable, a conflict lost too often) is tried again this soon.
FAILED_PASS_RETRY_SECONDS = 5.0
NAMESPACE_TERMINATING = "because it is being terminated"


@functools.cache
def settings() -> WorkspaceSettings:
    return load_settings()


def _grant_keys() -> GrantKeys:
    return grant_keys(settings().snapshot_endpoint)


# The read grant each workspace's materializer holds now, by workspace.
GRANTS: GrantCache[tuple[str, str]] = GrantCache()


def shared_mode() -> bool:
    return settings().snapshot_volume_mode == "shared"


def collect_copies() -> Collection:
    """Delete the one-copy objects no Workspace pins (snapshot_volumes.collect); what went."""
    current = settings()
    cloning = bool(current.snapshot_volume_snapshot_class)
    if cloning and not volume_snapshots_served():
        # Nothing is collected: a copy's claim would go without its VolumeSnapshot, left for good should the
        # API be there after all (its discovery failing for a moment reads as not served).
        return Collection()
    return _snapshot_volumes.collect(current.snapshot_volume_namespace, snapshots=cloning)


def volume_snapshots_served() -> bool:
    """Whether the cluster serves VolumeSnapshots (their CRDs installed), which cloning needs."""
    return _kube.serves(SNAPSHOT_API_VERSION, "VolumeSnapshot")


def _signer_ca() -> str:
    """The grant signer's CA as mounted now (a ConfigMap changes in place; "" where none is configured)."""
    path = settings().grant_signer_ca_file
    return Path(path).read_text() if path else ""


def grant_url(key: tuple[str, str], dataset: str, plan: Plan, now: datetime) -> str:
    """The URL the plan's reader Secret is to hold: a grant for the snapshot the plan asks for, issued while
    the snapshot is still being copied and the current one is missing, for another snapshot, or past half
    its life; once the copy is done nothing is renewed, and after an operator restart the Secret is
    emptied (the plan asks for no grant then)."""

    def issue() -> Grant:
        keys = _grant_keys()
        if not keys.store.has_snapshot(dataset, plan.grant):
            raise SnapshotNotFound(f"no snapshot {plan.grant} for dataset {dataset!r}")
        return issue_grant(
            keys.store,
            keys.presign,
            seal_key=keys.seal_key,
            signer_url=settings().grant_signer_url,
            namespace=key[0],
            workspace=key[1],
            dataset=dataset,
            snapshot=plan.grant,
            lifetime=timedelta(seconds=settings().snapshot_grant_seconds),
            now=now,
            signer_ca=_signer_ca(),
        )

    return GRANTS.url(key, plan.grant, now, issue)


@kopf.index(GROUP, VERSION, DATASETS)
def datasets_by_name(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {name: {"spec": dict(body.spec), "status": dict(body.status)}}


@kopf.index(GROUP, VERSION, WORKSPACES)
def workspaces_by_key(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    return {f"{namespace}/{name}": dict(spec)}


@kopf.index(GROUP, VERSION, WORKSPACES)
def workspaces_by_dataset(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, str]]:
    return {str(spec.get("dataset", {}).get("name", "")): (namespace, name)}


NOTEBOOK_PODS = {"app.kubernetes.io/name": WORKSPACE_APP, "app.kubernetes.io/component": "notebook"}


# Every NetworkPolicy in every namespace, ours and anyone else's: policies add up, so another one that
# selects a notebook widens what the workspace's own allow (lifecycle stops the notebook then).
@kopf.index("networking.k8s.io", "v1", "networkpolicies")
def policies_by_namespace(
    namespace: str, name: str, labels: Mapping[str, str], spec: kopf.Spec, **_: Any
) -> dict[str, dict[str, Any]]:
    return {
        namespace: {"metadata": {"name": name, "labels": dict(labels)}, "spec": copy.deepcopy(dict(spec))}
    }


WORKSPACE_OBJECTS = {"app.kubernetes.io/name": WORKSPACE_APP}


# Pods and Jobs as the watch last saw them: a pass reads these instead of asking the API server, which at a
# few hundred workspaces is most of the operator's load. A pass triggered by an object's change runs after
# the index holds that change; an object the pass itself just created may not be here yet, and its ADDED
# event triggers the next pass.
@kopf.index("v1", "pods", labels=NOTEBOOK_PODS)
def pods_by_name(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): _observed_body(body)}


@kopf.index("batch/v1", "jobs", labels=WORKSPACE_OBJECTS)
def jobs_by_name(
    namespace: str, name: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): _observed_body(body)}


def _observed_body(body: kopf.Body) -> dict[str, Any]:
    return {
        "metadata": {
            "name": body.metadata.name,
            "namespace": body.metadata.namespace,
            "annotations": dict(body.metadata.annotations),
        },
        "spec": {"nodeName": body.spec.get("nodeName")},
        "status": copy.deepcopy(dict(body.status)),
    }


@dataclass(frozen=True)
class Cluster:
    """What the watches know: Datasets, and the pods and Jobs of workspaces."""

    datasets: kopf.Index[str, Any]
    pods: kopf.Index[tuple[str, str], Any]
    jobs: kopf.Index[tuple[str, str], Any]
    policies: kopf.Index[str, Any]

    def dataset_for(self, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        return _only(self.datasets.get(str(spec.get("dataset", {}).get("name", ""))))

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _only(self.pods.get((namespace, name)))

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return _only(self.jobs.get((namespace, name)))


def _only(store: Any) -> dict[str, Any] | None:
    values = list(store) if store is not None else []
    return values[0] if values else None


class UserGroups(Mapping[str, tuple[str, ...]]):
    """Group membership, read from the cluster the first time a pass needs it (most passes never do: their
    users are named in the Dataset's access list) and then fixed for that pass."""

    def __init__(self) -> None:
        self._groups: dict[str, tuple[str, ...]] | None = None

    def _loaded(self) -> dict[str, tuple[str, ...]]:
        if self._groups is None:
            self._groups = user_groups()
        return self._groups

    def __getitem__(self, user: str) -> tuple[str, ...]:
        return self._loaded()[user]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def user_groups() -> dict[str, tuple[str, ...]]:
    """Group membership as the hub records it from verified sign-ins: key groups.json, {user: [group, ...]}
    (ConfigMap keys cannot hold an e-mail address, so the map is one JSON document)."""
    raw = _kube.config_map_data(OPERATOR_NAMESPACE, USER_GROUPS_CONFIGMAP).get("groups.json", "{}")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return {
        str(user): tuple(str(g) for g in groups)
        for user, groups in document.items()
        if isinstance(groups, list)
    }


@functools.cache
def accounts() -> Accounts:
    """The operator's own account, as the API server names it."""
    return Accounts(operator=frozenset({_kube.whoami()}))


def observe(workspace: Mapping[str, Any], dataset: Mapping[str, Any] | None, cluster: Cluster) -> Observed:
    namespace, name = workspace["metadata"]["namespace"], workspace["metadata"]["name"]
    every_node_simulated, simulated_names = _kube.simulated_nodes()
    pod = cluster.pod(namespace, object_name(name))
    probe_pod = cluster.pod(namespace, object_name(name, "egress-probe"))
    # Where the notebook (or its probe) landed on a simulated node, nothing there ever runs: no probe.
    landed = ((pod or probe_pod or {}).get("spec") or {}).get("nodeName")
    simulated = every_node_simulated or (bool(landed) and landed in simulated_names)
    probe_runs = not simulated and settings().egress_probe != "off"
    job = cluster.job(namespace, object_name(name, "materialize"))
    job_failure = (
        _kube.job_failure_message(namespace, object_name(name, "materialize")) if job_failed(job) else ""
    )
    shared, data_claim = None, None
    # Block storage cannot be shared: such a Workspace is served a clone of the one verified copy where the
    # site named a VolumeSnapshotClass, else a copy of its own (lifecycle.serves_shared, serves_clone).
    provisioner = _kube.storage_provisioner(settings().snapshot_storage_class) if shared_mode() else ""
    block = bool(block_storage(provisioner, settings()))
    clones = shared_mode() and block and bool(settings().snapshot_volume_snapshot_class)
    # Without the VolumeSnapshot API nothing of the clone can be read or made: the plan says so and waits.
    snapshots_served = not clones or volume_snapshots_served()
    if (
        shared_mode()
        and dataset is not None
        and (not block or settings().snapshot_volume_snapshot_class)
        and snapshots_served
    ):
        # The snapshot's one materializer, in the snapshot namespace, stands for the Workspace's own.
        snapshots = settings().snapshot_volume_namespace
        copy = SharedCopy(
            str(workspace["spec"]["dataset"]["name"]), _snapshot_volumes.pinned(workspace, dataset), snapshots
        )
        shared = _snapshot_volumes.observe(
            workspace, dataset, snapshots, cluster.job(snapshots, copy.name("materialize")), cloned=block
        )
        job, job_failure = shared.job, shared.job_failure
    elif job is None and dataset is not None:
        # Before the copy Job exists: a claim the shared mode bound must not receive a copy (lifecycle).
        data_claim = _snapshot_volumes.workspace_data_claim(namespace, name, cached=True)
    return Observed(
        now=datetime.now(UTC),
        dataset=dataset,
        pod=pod,
        job=job,
        job_failure=job_failure,
        source_volume=shared.source_volume if shared else None,
        source_snapshot=shared.source_snapshot if shared else None,
        source_snapshot_content=shared.source_snapshot_content if shared else None,
        workspace_snapshot=shared.workspace_snapshot if shared else None,
        data_claim=shared.data_claim if shared else data_claim,
        snapshot_provisioner=provisioner,
        volume_snapshots_served=snapshots_served,
        user_groups=UserGroups(),
        nodes_simulated=simulated,
        probe=probe_pod if probe_runs else None,
        # Only once the notebook itself landed: before that, the probe's own node is all there is to tell
        # where pods of this Workspace go, and deleting it would only bring it back.
        stray_probe=probe_pod is not None and pod is not None and not probe_runs,
        namespace_labels=_kube.namespace_labels(namespace) if dataset is not None else {},
        accounts=accounts(),
        policies=tuple(cluster.policies.get(namespace, ())),
    )


# What was last applied of each object of each workspace. A missing pod or Job is recreated at once: their
# deletions are watched.
REAPPLY_SECONDS = 300.0
APPLIED: AppliedObjects[tuple[str, str]] = AppliedObjects(REAPPLY_SECONDS)
# Namespaces whose Pod Security labels and guards (default-deny, quota, limits) were applied, and when.
GUARDED = NamespaceGuards(REAPPLY_SECONDS)


def _needs_apply(key: tuple[str, str], manifest: Mapping[str, Any], observed: Observed | None) -> bool:
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    if observed is None:
        return True
    # A pod's spec and a Job's template cannot change once created: they are created when missing and
    # otherwise left (a changed notebook pod takes effect at the next start; a new snapshot replaces the Job).
    if kind == "Pod" and name == object_name(key[1]):
        return observed.pod is None
    # The probe pod too: deleting it is how an admin asks for a new verdict, so a missing one comes back at
    # once rather than when the apply cache next expires.
    if kind == "Pod" and name == object_name(key[1], "egress-probe"):
        return observed.probe is None
    if kind == "Job":
        return observed.job is None
    return APPLIED.due(key, manifest)


def guard_namespace(namespace: str) -> None:
    """Pod Security labels, default-deny policy, quota and limits on a Workspace namespace, once per
    REAPPLY_SECONDS and one pass at a time (GUARDED)."""

    def guard() -> None:
        _kube.label_namespace(namespace, {**PSA_LABELS, WORKSPACE_NAMESPACE_LABEL: "true"})
        for manifest in build_namespace_guards(namespace, settings()):
            _kube.apply(manifest)

    GUARDED.ensure(namespace, guard)


class _NamespaceTerminating(Exception):
    """The namespace is going, and every Workspace in it with it: nothing to build or report."""


def carry_out(workspace: Mapping[str, Any], plan: Plan, observed: Observed | None = None) -> None:
    """Apply the plan's objects and delete what it deletes, record its transitions in the audit trail,
    write the status and post the Events. An object the API server refuses is reported in the status and
    the pass is retried (kopf.TemporaryError)."""
    metadata = workspace["metadata"]
    key = (metadata["namespace"], metadata["name"])
    try:
        refusal = _apply_objects(key, plan, observed)
    except _NamespaceTerminating:
        return
    if refusal is not None:
        plan = refused(plan, refusal.kind, refusal.message)
    _delete_objects(key, plan, observed)
    if plan.stop_requested:
        _kube.patch_workspace_spec(*key, {"running": False})
    current = dict(workspace.get("status") or {})
    # Recorded before the status that implies them: a crash in between records them again (with the same
    # ids, so once), where recording after would lose them.
    _record_transitions(workspace, plan)
    _report(workspace, plan, current)
    if plan.delete_workspace:
        _kube.delete_workspace(*key)
    if refusal is not None:
        # A quota created moments ago refuses pods until its usage is computed: that clears in a second or two.
        fresh_quota = "status unknown for quota" in refusal.message
        raise kopf.TemporaryError(str(refusal), delay=2 if fresh_quota else REFUSAL_RETRY_SECONDS)


def _apply_objects(key: tuple[str, str], plan: Plan, observed: Observed | None) -> _kube.ApplyRefused | None:
    """Apply what the plan wants that the cluster may lack, in the plan's order; the first object the API
    server refuses ends it, and is returned."""
    pending = [m for m in plan.apply if _needs_apply(key, m, observed)]
    if pending or plan.guard_namespace:
        guard_namespace(key[0])
    for manifest in pending:
        try:
            _apply_object(manifest)
        except _kube.ApplyRefused as error:
            if NAMESPACE_TERMINATING in error.message:
                raise _NamespaceTerminating from error
            return error
        APPLIED.record(key, manifest)
    return None


def _apply_object(manifest: dict[str, Any]) -> None:
    if manifest["kind"] in (
        "PersistentVolumeClaim",
        "PersistentVolume",
        "VolumeSnapshot",
        "VolumeSnapshotContent",
    ):
        # A bound claim's size may only grow and its class never change, and a snapshot's source never
        # changes: created once, then left.
        found = _kube.ensure_created(manifest)
        if found.get("metadata", {}).get("deletionTimestamp"):
            name = manifest["metadata"]["name"]
            raise kopf.TemporaryError(f"waiting for the old volume {name} to go", delay=3)
    else:
        _kube.apply(manifest)


def _delete_objects(key: tuple[str, str], plan: Plan, observed: Observed | None) -> None:
    namespace, name = key
    for api_version, kind, object_name_ in plan.delete:
        APPLIED.forget_object(key, kind, object_name_)
        _kube.delete(api_version, kind, namespace, object_name_)
    if plan.delete_pod and (observed is None or observed.pod is not None):
        # A pod this pass cannot see yet (created a moment ago) is deleted by the pass its ADDED event starts.
        APPLIED.forget_object(key, "Pod", object_name(name))
        _kube.delete("v1", "Pod", namespace, object_name(name))


def _record_transitions(workspace: Mapping[str, Any], plan: Plan) -> None:
    """The audit events of the plan's transitions (trail.transitions), each with its fixed id."""
    metadata, spec = workspace["metadata"], workspace["spec"]
    resources = {
        "workspace": metadata["name"],
        "namespace": metadata["namespace"],
        "dataset": str(spec["dataset"]["name"]),
        "snapshot": plan.pinned,
    }
    created_by = metadata.get("annotations", {}).get(CREATED_BY_ANNOTATION)
    created_reason = f"users: {', '.join(spec.get('users', []))}; created by " + (
        created_by or "an unknown requester (no annotation)"
    )
    for transition in trail.transitions(workspace, plan, created_reason):
        _audit.record(
            transition.action,
            resources
            if transition.action != trail.CREATED
            else {k: v for k, v in resources.items() if k != "snapshot"},
            outcome=transition.outcome,
            reason=transition.reason,
            purpose=str(spec.get("purpose", "")),
            event_id=transition.id,
            request_id=transition.root,
        )


def _report(workspace: Mapping[str, Any], plan: Plan, current: Mapping[str, Any]) -> None:
    """The status (written when it changed), the phase metric and the Events of the plan."""
    metadata = workspace["metadata"]
    key = (metadata["namespace"], metadata["name"])
    desired = plan.applied_to(workspace, datetime.now(UTC))
    if desired != current:
        _kube.patch_workspace_status(*key, desired)
    _metrics.WORKSPACES.set(key, plan.phase)
    before = {c["type"]: c.get("reason") for c in current.get("conditions") or ()}
    for event in (*ready_events(before.get(READY), plan), *plan.events):
        kopf.event(dict(workspace), type=event.type, reason=event.reason, message=event.message)


@dataclass(frozen=True)
class Request:
    """What a pass is asked with: the newest Dataset seen for the Workspace (None: there is none) and the
    watches' indexes."""

    dataset: Mapping[str, Any] | None
    cluster: Cluster


@_metrics.timed("Workspace")
def _reconcile_once(key: tuple[str, str], request: Request) -> Again[Request] | None:
    """One pass: read the Workspace, observe, plan once, carry the plan out; judged again when the plan's
    deadline comes (None: the Workspace is gone)."""
    fresh = _kube.get_workspace(*key)
    if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
        _forget(key)
        return None
    observed = observe(fresh, request.dataset, request.cluster)
    plan = plan_workspace(fresh, observed, settings())
    dataset_name, cluster = str(fresh["spec"]["dataset"]["name"]), request.cluster
    again = Again(
        seconds_until(plan.recheck_at, observed.now, CLOCK_SECONDS),
        lambda: Request(cluster.dataset_for({"dataset": {"name": dataset_name}}), cluster),
    )
    try:
        plan = with_grant(plan, grant_url(plan.grant_key or key, dataset_name, plan, observed.now))
    except SnapshotNotFound:
        # Pinned to a snapshot that is not there (mistyped, or pruned): say so, and what there is.
        available = [(d, str(m.get("createdAt", ""))) for d, m in _grant_keys().store.snapshots(dataset_name)]
        plan = snapshot_not_found(plan, dataset_name, plan.grant, available)
    except SnapshotError as error:
        raise kopf.TemporaryError(f"no read grant for the materializer: {error}", delay=10) from error
    carry_out(fresh, plan, observed)
    if shared_mode() and any(kind == "PersistentVolumeClaim" for _, kind, _ in plan.delete):
        # The Workspace let go of a snapshot (pinned another): its copy goes when nobody else pins it.
        collect_copies()
    return again


def _forget(key: tuple[str, str]) -> None:
    """The Workspace is gone: nothing of it is kept (its timed pass is the queue's to drop)."""
    _metrics.WORKSPACES.forget(key)
    APPLIED.forget(key)
    GRANTS.forget(key)


# Handlers for one Workspace run on several threads (its own events, its pod's and job's, the clock, its
# Dataset's): the queue runs one pass at a time per Workspace, so each sees what the previous one wrote, and
# a pass that fails (the API server unreachable, a conflict lost too often) is tried again soon: a pod or
# Job event is not redelivered when its handler fails.
QUEUE: WorkQueue[tuple[str, str], Request] = WorkQueue(
    _reconcile_once, CLOCK, retry_seconds=FAILED_PASS_RETRY_SECONDS
)


def enqueue(namespace: str, name: str, dataset: Mapping[str, Any] | None, cluster: Cluster) -> None:
    """Have the Workspace judged now, or right after the pass already running for it."""
    QUEUE.add((namespace, name), Request(dataset, cluster))


def enqueue_each(keys: Iterable[str], index: kopf.Index[str, Any], cluster: Cluster) -> None:
    """Have each Workspace of ``keys`` ("namespace/name" in ``index``) judged at once, each pass on the clock's
    threads. For an event that concerns many Workspaces (a shared copy verified, a policy over a namespace):
    judged one after another on the watch's thread, the first pass that failed (a pod refused by the quota, a
    conflict) ended the loop, and the Workspaces after it waited for the clock's next tick (five minutes) to
    mount their snapshot, or to have a notebook that a new NetworkPolicy opens stopped."""
    for key in keys:
        spec = _only(index.get(key))
        if spec is not None:
            namespace, name = key.split("/", 1)
            judge_soon(namespace, name, cluster.dataset_for(spec), cluster)


def judge_soon(namespace: str, name: str, dataset: Mapping[str, Any] | None, cluster: Cluster) -> None:
    """Have the Workspace judged at once on the clock's threads (a failure there is logged and retried)."""
    QUEUE.add_after((namespace, name), 0.0, lambda: Request(dataset, cluster))


@kopf.on.resume(GROUP, VERSION, WORKSPACES)
@kopf.on.create(GROUP, VERSION, WORKSPACES)
@kopf.on.update(GROUP, VERSION, WORKSPACES)
def workspace_changed(
    namespace: str, name: str, spec: kopf.Spec, reason: kopf.Reason, retry: int, **kwargs: Any
) -> None:
    cluster = _cluster(kwargs)
    enqueue(namespace, name, cluster.dataset_for(spec), cluster)


def _cluster(kwargs: Mapping[str, Any]) -> Cluster:
    return Cluster(
        kwargs["datasets_by_name"],
        kwargs["pods_by_name"],
        kwargs["jobs_by_name"],
        kwargs["policies_by_namespace"],
    )


@kopf.on.event(
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    when=lambda type, **_: type == "DELETED",
    labels={"app.kubernetes.io/managed-by": MANAGED_BY},
)
def policy_deleted(namespace: str, name: str, labels: Mapping[str, str], **kwargs: Any) -> None:
    """A NetworkPolicy of ours was deleted (by hand, or with its namespace): put it back at once, since
    until then the pods it covered may reach more than they should."""
    GUARDED.forget(namespace)
    workspace = labels.get(WORKSPACE_LABEL, "")
    APPLIED.forget_object((namespace, workspace), "NetworkPolicy", name)
    if not workspace:
        # The namespace's default-deny: a pass guards the namespace only when its plan asks to (a Workspace
        # not started yet, or stopped), so with only running Workspaces it came back at the next reapply,
        # up to five minutes later. Put it back here.
        guard_namespace(namespace)
    cluster = _cluster(kwargs)
    index = kwargs["workspaces_by_key"]
    # The namespace's own policy (no workspace label): every Workspace the watch knows there.
    keys = (
        [f"{namespace}/{workspace}"]
        if workspace
        else [k for k in list(index) if k.startswith(f"{namespace}/")]
    )
    enqueue_each(keys, index, cluster)


@kopf.on.event(
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    when=lambda labels, **_: labels.get("app.kubernetes.io/managed-by") != MANAGED_BY,
)
def foreign_policy_changed(namespace: str, workspaces_by_key: kopf.Index[str, Any], **kwargs: Any) -> None:
    """Someone else's NetworkPolicy appeared, changed or went: re-judge the namespace's Workspaces at once (one
    that selects a notebook stops it; its removal lets the notebook start again)."""
    keys = [k for k in list(workspaces_by_key) if k.startswith(f"{namespace}/")]
    enqueue_each(keys, workspaces_by_key, _cluster(kwargs))


def _job_settled(type: str | None, status: Mapping[str, Any], **_: Any) -> bool:
    """Only a Job's end or disappearance changes a plan; its other status updates (a pod started, counted,
    tracked) do not."""
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return type == "DELETED" or bool(status.get("succeeded")) or failed


# What of a notebook or probe pod a plan reads, by pod, as last seen.
POD_FACTS: LastSeen[tuple[str, str], tuple[Any, ...]] = LastSeen()


def _pod_changed(type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any) -> bool:
    """Whether a pod event changes anything a plan reads (phase, node, scheduling, readiness, image)."""
    if type == "DELETED":
        POD_FACTS.forget((namespace, name))
        return True
    status = body.status
    conditions = {c.get("type"): (c.get("status"), c.get("reason")) for c in status.get("conditions") or ()}
    facts = (
        status.get("phase"),
        status.get("startTime"),
        body.spec.get("nodeName"),
        conditions.get("PodScheduled"),
        conditions.get("Ready"),
        tuple(str(c.get("imageID") or "") for c in status.get("containerStatuses") or ()),
        tuple(str(c.get("state")) for c in status.get("containerStatuses") or ()),
        body.metadata.get("deletionTimestamp"),
    )
    return POD_FACTS.changed((namespace, name), facts)


@kopf.on.event("v1", "pods", labels=NOTEBOOK_PODS, when=_pod_changed)
@kopf.on.event("batch/v1", "jobs", labels=WORKSPACE_OBJECTS, when=_job_settled)
def owned_object_changed(
    namespace: str, labels: Mapping[str, str], workspaces_by_key: kopf.Index[str, Any], **kwargs: Any
) -> None:
    """A notebook pod was scheduled, became ready or went; a materializer finished: re-judge its Workspace
    (every Workspace over the Dataset, for a snapshot's one shared materializer)."""
    name = labels.get(WORKSPACE_LABEL, "")
    if not name and SNAPSHOT_LABEL in labels:
        over_dataset = [
            key
            for key in list(workspaces_by_key)
            if label_value(str((_only(workspaces_by_key.get(key)) or {}).get("dataset", {}).get("name", "")))
            == labels.get(DATASET_LABEL)
        ]
        enqueue_each(over_dataset, workspaces_by_key, _cluster(kwargs))
        return
    spec = _only(workspaces_by_key.get(f"{namespace}/{name}"))
    if spec is not None:
        cluster = _cluster(kwargs)
        enqueue(namespace, name, cluster.dataset_for(spec), cluster)


@kopf.on.event(GROUP, VERSION, DATASETS)
def dataset_event(
    name: str,
    type: str | None,
    body: kopf.Body,
    workspaces_by_dataset: kopf.Index[str, Any],
    logger: Any,
    **kwargs: Any,
) -> None:
    """A Dataset appeared, changed or went (access withdrawn, new snapshot): re-judge every Workspace on it."""
    dataset = None if type == "DELETED" else {"spec": dict(body.spec), "status": dict(body.status)}
    cluster = _cluster(kwargs)
    for namespace, workspace_name in list(workspaces_by_dataset.get(name, ())):
        judge_soon(namespace, workspace_name, dataset, cluster)


# The watch's DELETED event rather than kopf.on.delete: a deletion handler needs a finalizer on every
# Workspace, and a finalizer makes deleting one hang while the operator is down. What owned objects there
# are go by owner references; the API server's own audit log records the deletion too. A deletion while no
# operator watched is found at start-up (reconcile_trail).
@kopf.on.event(GROUP, VERSION, WORKSPACES, when=lambda type, **_: type == "DELETED")
def workspace_deleted(
    namespace: str, name: str, spec: kopf.Spec, body: kopf.Body, logger: Any, **_: Any
) -> None:
    QUEUE.forget((namespace, name))
    _forget((namespace, name))
    status = body.get("status") or {}
    resources = {
        "workspace": name,
        "namespace": namespace,
        "dataset": str(spec.get("dataset", {}).get("name", "")),
        "snapshot": str((status.get("snapshot") or {}).get("digest") or ""),
    }
    for transition in trail.deletion(body):
        _audit.record(
            transition.action,
            resources,
            reason=transition.reason,
            purpose=str(spec.get("purpose", "")),
            event_id=transition.id,
            request_id=transition.root,
        )
    if shared_mode():
        collected = collect_copies()
        if collected.copies:
            logger.info(
                f"deleted the shared copies no Workspace pins any more: {', '.join(collected.copies)}"
            )


# Before the watches start: a Workspace deleted while no operator ran was never seen going.
@kopf.on.startup()
def reconcile_trail(logger: Any, **_: Any) -> None:
    """Record ``workspace.deleted`` for every Workspace this operator recorded as created that the cluster no
    longer has, after the stop of any run of it that has none (the ids make a second start-up add nothing)."""
    try:
        listing = cast(
            dict[str, Any], _kube.custom_objects().list_cluster_custom_object(GROUP, VERSION, WORKSPACES)
        )
        live = [str(item["metadata"]["uid"]) for item in listing.get("items", [])]
        gone = trail.vanished(_audit.recorded(b'"workspace.'), live)
    except Exception as error:
        # Not a reason to stay down: the next start-up looks again.
        logger.warning(f"the audit trail was not reconciled with the cluster: {error}")
        return
    for workspace in gone:
        for transition, resources in workspace.events:
            _audit.record(
                transition.action,
                resources,
                reason=transition.reason,
                purpose=workspace.purpose,
                event_id=transition.id,
                request_id=transition.root,
            )
    if gone:
        logger.info(f"recorded {len(gone)} Workspace deletions that happened while the operator was away")
    if shared_mode():
        # Workspaces deleted while no operator ran left their snapshots' shared copies pinned by nobody.
        try:
            collect_copies()
        except Exception as error:
            logger.warning(f"shared snapshot copies were not collected: {error}")
