"""Thin kopf handlers for Workspaces: read the Workspace, its Dataset and what runs, ask the pure lifecycle
core for a plan, and carry it out (apply objects, stop pods, write status, emit Events)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf

from cleanroom.api import (
    CREATED_BY_ANNOTATION,
    DATASETS,
    GROUP,
    VERSION,
    WORKSPACE_NAMESPACE_LABEL,
    WORKSPACES,
    merge_conditions,
)
from cleanroom.api.contract import MANAGED_BY, WORKSPACE_APP, WORKSPACE_LABEL, object_name
from cleanroom.config import snapshot_location
from cleanroom.handlers import _audit, _kube, _metrics
from cleanroom.handlers._clock import Clock
from cleanroom.snapshots import SnapshotError, SnapshotNotFound, SnapshotStore
from cleanroom.snapshots.grant import Grant, issue_grant
from cleanroom.snapshots.store import Presign, presigner
from cleanroom.workspaces import (
    PSA_LABELS,
    Observed,
    Plan,
    WorkspaceSettings,
    build_namespace_guards,
    job_failed,
    job_succeeded,
    load_settings,
    plan_workspace,
    ready_events,
    refused,
    snapshot_not_found,
    trail,
)
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


@functools.cache
def _grant_store() -> tuple[SnapshotStore, Presign]:
    """The store grants are written to, and their signer: the read-only key where one is configured (a URL
    it signs can never write), else the operator's own; signed for the address materializers use."""
    location = snapshot_location()
    env = os.environ
    signer = dataclasses.replace(
        location,
        access_key=env.get("CLEANROOM_SNAPSHOT_READER_ACCESS_KEY") or location.access_key,
        secret_key=env.get("CLEANROOM_SNAPSHOT_READER_SECRET_KEY") or location.secret_key,
    )
    return SnapshotStore(location), presigner(signer, settings().snapshot_endpoint)


@functools.lru_cache(maxsize=4)
def _manifest(dataset: str, snapshot: str) -> dict[str, Any]:
    """A snapshot's manifest; published snapshots never change, so many workspaces share one read."""
    return _grant_store()[0].manifest(dataset, snapshot)


# The read grant each workspace's materializer holds now, by workspace.
_GRANTS: dict[tuple[str, str], Grant] = {}


def grant_for(key: tuple[str, str], dataset: str, plan: Plan, observed: Observed) -> str:
    """The grant URL the plan's reader Secret should hold. A new grant is issued while the snapshot is still
    being copied and the current one is missing, for another snapshot, or past half its life; once the
    copy is done nothing is renewed, and after an operator restart the Secret is emptied."""
    snapshot = str(plan.status.get("snapshot", {}).get("digest") or "")
    materializing = any(m["kind"] == "Job" for m in plan.apply) and not job_succeeded(observed.job)
    current = _GRANTS.get(key)
    if current is not None and current.snapshot != snapshot:
        current = None
    if materializing and snapshot and (current is None or current.renewal_due(observed.now)):
        store, presign = _grant_store()
        current = issue_grant(
            store,
            presign,
            namespace=key[0],
            workspace=key[1],
            dataset=dataset,
            snapshot=snapshot,
            lifetime=timedelta(seconds=settings().snapshot_grant_seconds),
            now=observed.now,
            manifest=_manifest(dataset, snapshot),
        )
        _GRANTS[key] = current
    return current.url if current is not None else ""


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
    return Observed(
        now=datetime.now(UTC),
        dataset=dataset,
        pod=pod,
        job=job,
        job_failure=_kube.job_failure_message(namespace, object_name(name, "materialize"))
        if job_failed(job)
        else "",
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


# What was last applied of each object of each workspace (a digest of its manifest) and when. An object
# whose manifest is the same is not written again; it is anyway every REAPPLY_SECONDS, so an object someone
# deleted by hand (a NetworkPolicy, say) comes back within that time. A missing pod or Job is recreated at
# once: their deletions are watched.
_APPLIED: dict[tuple[str, str], dict[tuple[str, str], tuple[str, float]]] = {}
REAPPLY_SECONDS = 300.0
# Namespaces whose Pod Security labels and guards (default-deny, quota, limits) were applied, and when.
_GUARDED: dict[str, float] = {}


def _digest(manifest: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode()).hexdigest()


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
    last = _APPLIED.get(key, {}).get((kind, name))
    return last is None or last[0] != _digest(manifest) or time.monotonic() - last[1] > REAPPLY_SECONDS


_NAMESPACE_LOCKS: dict[str, threading.Lock] = {}
_NAMESPACE_LOCKS_GUARD = threading.Lock()


def guard_namespace(namespace: str) -> None:
    """Pod Security labels, default-deny policy, quota and limits on a Workspace namespace, once per
    REAPPLY_SECONDS. Many Workspaces of one namespace start together: one pass applies, the others wait
    for it rather than all applying the same objects (and losing races on the quota's status)."""
    with _NAMESPACE_LOCKS_GUARD:
        lock = _NAMESPACE_LOCKS.setdefault(namespace, threading.Lock())
    with lock:
        guarded = _GUARDED.get(namespace)
        if guarded is not None and time.monotonic() - guarded <= REAPPLY_SECONDS:
            return
        _kube.label_namespace(namespace, {**PSA_LABELS, WORKSPACE_NAMESPACE_LABEL: "true"})
        for guard in build_namespace_guards(namespace, settings()):
            _kube.apply(guard)
        _GUARDED[namespace] = time.monotonic()


def carry_out(workspace: Mapping[str, Any], plan: Plan, observed: Observed | None = None) -> None:
    metadata = workspace["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    key = (namespace, name)
    refusal: _kube.ApplyRefused | None = None
    pending = [m for m in plan.apply if _needs_apply(key, m, observed)]
    if pending or plan.guard_namespace:
        guard_namespace(namespace)
    applied = _APPLIED.setdefault(key, {})
    for manifest in pending:
        object_key = (manifest["kind"], manifest["metadata"]["name"])
        try:
            if manifest["kind"] == "PersistentVolumeClaim":
                # A bound claim's size may only grow and its class never change: created once, then left.
                found = _kube.ensure_created(manifest)
                if found.get("metadata", {}).get("deletionTimestamp"):
                    raise kopf.TemporaryError(f"waiting for the old volume {object_key[1]} to go", delay=3)
            else:
                _kube.apply(manifest)
        except _kube.ApplyRefused as error:
            if NAMESPACE_TERMINATING in error.message:
                # The namespace is going, and every Workspace in it with it: nothing to build or report.
                return
            refusal = error
            plan = refused(plan, error.kind, error.message)
            break
        applied[object_key] = (_digest(manifest), time.monotonic())
    for api_version, kind, object_name_ in plan.delete:
        applied.pop((kind, object_name_), None)
        _kube.delete(api_version, kind, namespace, object_name_)
    if plan.delete_pod and (observed is None or observed.pod is not None):
        # A pod this pass cannot see yet (created a moment ago) is deleted by the pass its ADDED event starts.
        applied.pop(("Pod", object_name(name)), None)
        _kube.delete("v1", "Pod", namespace, object_name(name))
    if plan.stop_requested:
        _kube.patch_workspace_spec(namespace, name, {"running": False})
    current = dict(workspace.get("status") or {})
    # Recorded before the status that implies them: a crash in between records them again (with the same
    # ids, so once), where recording after would lose them.
    resources = {
        "workspace": name,
        "namespace": namespace,
        "dataset": str(workspace["spec"]["dataset"]["name"]),
        "snapshot": str(plan.status.get("snapshot", {}).get("digest", "")),
    }
    created_by = metadata.get("annotations", {}).get(CREATED_BY_ANNOTATION)
    created_reason = f"users: {', '.join(workspace['spec'].get('users', []))}; created by " + (
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
            purpose=str(workspace["spec"].get("purpose", "")),
            event_id=transition.id,
        )
    generation = int(metadata.get("generation", 0))
    desired = {
        **current,
        **plan.status,
        "phase": plan.phase,
        "observedGeneration": generation,
        "conditions": merge_conditions(
            current.get("conditions"), plan.conditions, generation=generation, now=datetime.now(UTC)
        ),
    }
    if desired != current:
        _kube.patch_workspace_status(namespace, name, desired)
    _metrics.WORKSPACES.set(key, plan.phase)
    before = {c["type"]: c.get("reason") for c in current.get("conditions") or ()}
    for event in (*ready_events(before.get("Ready"), plan), *plan.events):
        kopf.event(dict(workspace), type=event.type, reason=event.reason, message=event.message)
    if plan.delete_workspace:
        _kube.delete_workspace(namespace, name)
    if refusal is not None:
        # A quota created moments ago refuses pods until its usage is computed: that clears in a second or two.
        fresh_quota = "status unknown for quota" in refusal.message
        raise kopf.TemporaryError(str(refusal), delay=2 if fresh_quota else REFUSAL_RETRY_SECONDS)


# Handlers for one Workspace run on several threads (its own events, its pod's and job's, the clock, its
# Dataset's). One pass at a time per Workspace, so each sees what the previous one wrote; a request that
# arrives during a pass is not dropped and does not wait on a thread: it is left in _REQUESTS (with the
# newest Dataset seen) and the running pass goes round once more for it.
_RUNNING: set[tuple[str, str]] = set()
_REQUESTS: dict[tuple[str, str], Mapping[str, Any] | None] = {}
_GUARD = threading.Lock()
_MISSING = object()


def reconcile_workspace(
    namespace: str, name: str, dataset: Mapping[str, Any] | None, cluster: Cluster
) -> None:
    """Judge one Workspace now, or right after the pass already running for it."""
    key = (namespace, name)
    with _GUARD:
        _REQUESTS[key] = dataset
        if key in _RUNNING:
            return
        _RUNNING.add(key)
    try:
        while True:
            with _GUARD:
                latest = _REQUESTS.pop(key, _MISSING)
                if latest is _MISSING:
                    _RUNNING.discard(key)
                    return
            _reconcile_once(key, latest, cluster)
    except BaseException:
        with _GUARD:
            _RUNNING.discard(key)
        raise


@_metrics.timed("Workspace")
def _reconcile_once(key: tuple[str, str], dataset: Mapping[str, Any] | None, cluster: Cluster) -> None:
    fresh = _kube.get_workspace(*key)
    if fresh is None or fresh.get("metadata", {}).get("deletionTimestamp"):
        _metrics.WORKSPACES.forget(key)
        _APPLIED.pop(key, None)
        _GRANTS.pop(key, None)
        CLOCK.cancel(key)
        return
    observed = observe(fresh, dataset, cluster)
    plan = plan_workspace(fresh, observed, settings())
    dataset_name = str(fresh["spec"]["dataset"]["name"])
    # Scheduled before the plan is carried out: should the pass fail in a way not caught below, the tick
    # still comes.
    _judge_again(key, dataset_name, cluster, _seconds_until_stale(plan, observed))
    try:
        grant = grant_for(key, dataset_name, plan, observed)
    except SnapshotNotFound:
        # Pinned to a snapshot that is not there (mistyped, or pruned): say so, and what there is.
        pinned = str(plan.status.get("snapshot", {}).get("digest") or "")
        available = [(d, str(m.get("createdAt", ""))) for d, m in _grant_store()[0].snapshots(dataset_name)]
        carry_out(fresh, snapshot_not_found(plan, dataset_name, pinned, available), observed)
        return
    except SnapshotError as error:
        raise kopf.TemporaryError(f"no read grant for the materializer: {error}", delay=10) from error
    if grant != observed.grant_url:
        observed = dataclasses.replace(observed, grant_url=grant)
        plan = plan_workspace(fresh, observed, settings())
    try:
        carry_out(fresh, plan, observed)
    except Exception:
        # A pod or Job event is not redelivered when its handler fails: the clock tries again soon.
        _judge_again(key, dataset_name, cluster, FAILED_PASS_RETRY_SECONDS)
        raise


@kopf.on.resume(GROUP, VERSION, WORKSPACES)
@kopf.on.create(GROUP, VERSION, WORKSPACES)
@kopf.on.update(GROUP, VERSION, WORKSPACES)
def workspace_changed(
    namespace: str, name: str, spec: kopf.Spec, reason: kopf.Reason, retry: int, **kwargs: Any
) -> None:
    cluster = _cluster(kwargs)
    reconcile_workspace(namespace, name, cluster.dataset_for(spec), cluster)


def _seconds_until_stale(plan: Plan, observed: Observed) -> float:
    """Until the plan goes stale by the clock alone, and at most CLOCK_SECONDS."""
    if plan.recheck_at is None:
        return CLOCK_SECONDS
    return min(CLOCK_SECONDS, max(0.0, (plan.recheck_at - observed.now).total_seconds()) + 0.5)


def _judge_again(key: tuple[str, str], dataset: str, cluster: Cluster, seconds: float) -> None:
    """Have the clock judge the Workspace again in ``seconds`` (replacing what it had scheduled for it)."""

    def again() -> None:
        reconcile_workspace(*key, cluster.dataset_for({"dataset": {"name": dataset}}), cluster)

    CLOCK.schedule(key, time.monotonic() + seconds, again)


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
    _GUARDED.pop(namespace, None)
    workspace = labels.get(WORKSPACE_LABEL, "")
    _APPLIED.get((namespace, workspace), {}).pop(("NetworkPolicy", name), None)
    cluster = _cluster(kwargs)
    keys = [(namespace, workspace)] if workspace else [k for k in list(_APPLIED) if k[0] == namespace]
    for key in keys:
        spec = _only(kwargs["workspaces_by_key"].get(f"{key[0]}/{key[1]}"))
        if spec is not None:
            reconcile_workspace(*key, cluster.dataset_for(spec), cluster)


@kopf.on.event(
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    when=lambda labels, **_: labels.get("app.kubernetes.io/managed-by") != MANAGED_BY,
)
def foreign_policy_changed(namespace: str, workspaces_by_key: kopf.Index[str, Any], **kwargs: Any) -> None:
    """Someone else's NetworkPolicy appeared, changed or went: re-judge the namespace's Workspaces at once (one
    that selects a notebook stops it; its removal lets the notebook start again)."""
    cluster = _cluster(kwargs)
    for key in [k for k in list(workspaces_by_key) if k.startswith(f"{namespace}/")]:
        spec = _only(workspaces_by_key.get(key))
        if spec is not None:
            reconcile_workspace(namespace, key.split("/", 1)[1], cluster.dataset_for(spec), cluster)


def _job_settled(type: str | None, status: Mapping[str, Any], **_: Any) -> bool:
    """Only a Job's end or disappearance changes a plan; its other status updates (a pod started, counted,
    tracked) do not."""
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return type == "DELETED" or bool(status.get("succeeded")) or failed


# What of a notebook or probe pod a plan reads, by pod, as last seen: the kubelet (or kwok) updates a pod
# several times for each change a plan cares about.
_POD_FACTS: dict[tuple[str, str], tuple[Any, ...]] = {}


def _pod_changed(type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any) -> bool:
    """Whether a pod event changes anything a plan reads (phase, node, scheduling, readiness, image)."""
    if type == "DELETED":
        _POD_FACTS.pop((namespace, name), None)
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
    if _POD_FACTS.get((namespace, name)) == facts:
        return False
    _POD_FACTS[(namespace, name)] = facts
    return True


@kopf.on.event("v1", "pods", labels=NOTEBOOK_PODS, when=_pod_changed)
@kopf.on.event("batch/v1", "jobs", labels=WORKSPACE_OBJECTS, when=_job_settled)
def owned_object_changed(
    namespace: str, labels: Mapping[str, str], workspaces_by_key: kopf.Index[str, Any], **kwargs: Any
) -> None:
    """A notebook pod was scheduled, became ready or went; a materializer finished: re-judge its Workspace."""
    name = labels.get(WORKSPACE_LABEL, "")
    spec = _only(workspaces_by_key.get(f"{namespace}/{name}"))
    if spec is not None:
        cluster = _cluster(kwargs)
        reconcile_workspace(namespace, name, cluster.dataset_for(spec), cluster)


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
    for namespace, workspace_name in list(workspaces_by_dataset.get(name, ())):
        try:
            reconcile_workspace(namespace, workspace_name, dataset, _cluster(kwargs))
        except Exception as error:
            logger.warning(f"workspace {namespace}/{workspace_name} not re-judged: {error}")


# The watch's DELETED event rather than kopf.on.delete: a deletion handler needs a finalizer on every
# Workspace, and a finalizer makes deleting one hang while the operator is down. What owned objects there
# are go by owner references; the API server's own audit log records the deletion too. A deletion while no
# operator watched is found at start-up (reconcile_trail).
@kopf.on.event(GROUP, VERSION, WORKSPACES, when=lambda type, **_: type == "DELETED")
def workspace_deleted(namespace: str, name: str, spec: kopf.Spec, body: kopf.Body, **_: Any) -> None:
    key = (namespace, name)
    _metrics.WORKSPACES.forget(key)
    _APPLIED.pop(key, None)
    _GRANTS.pop(key, None)
    CLOCK.cancel(key)
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
        )


# Before the watches start: a Workspace deleted while no operator ran was never seen going.
@kopf.on.startup()
def reconcile_trail(logger: Any, **_: Any) -> None:
    """Record ``workspace.deleted`` for every Workspace this operator recorded as created that the cluster no
    longer has (the ids make a second start-up add nothing)."""
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
        _audit.record(
            trail.DELETED,
            workspace.resources,
            reason="deleted while no operator was running (found missing at start-up; the API server's "
            "audit log has the time)",
            purpose=workspace.purpose,
            event_id=trail.deleted_id(workspace.created),
        )
    if gone:
        logger.info(f"recorded {len(gone)} Workspace deletions that happened while the operator was away")
