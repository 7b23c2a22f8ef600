"""Thin kopf handlers for ExportRequests (the airlock): read the request, its Workspace, Dataset, copy and
check Jobs and the checker's result, ask the pure plan (`airlock.plan`) what comes next, and carry it out:
the copy Job, the quarantine, the check Job (the operator parses no file a modeller wrote: the checks run
in that Job), the release to the outbox, the deletion of the copies, the audit trail and the status.

Only watch events (no kopf.on.create/update): those would write kopf's bookkeeping annotations on the
request, and the admission policy allows the operator no write of an ExportRequest but its status.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import kubernetes

from cleanroom.airlock.check_result import MAX_RESULT_BYTES
from cleanroom.airlock.manifests import (
    CHECK_DEADLINE_SECONDS,
    EXPORT_JOB_NAME,
    ExportRef,
    build_check_job,
    build_check_network_policy,
    build_check_secret,
    build_copy_job,
    build_copy_network_policy,
    build_upload_secret,
    check_objects,
    copy_objects,
    export_object_name,
)
from cleanroom.airlock.plan import (
    AuditStep,
    ExportPlan,
    Observed,
    Phase,
    event_id,
    failed_promotion,
    plan_export,
    quarantined,
    with_outbox,
)
from cleanroom.airlock.store import CheckInputs, ExportStore, ExportStoreError, RequestKey
from cleanroom.api import (
    EXPORT_REQUESTS,
    GROUP,
    VERSION,
    DatasetSpec,
    ExportRequestSpec,
    decode,
)
from cleanroom.config import snapshot_location
from cleanroom.handlers import _audit, _export_proofs, _kube
from cleanroom.handlers._clock import Clock
from cleanroom.handlers.workspace import settings
from cleanroom.snapshots import SnapshotStore, content_digest

CLOCK = Clock(threads=2)
# Passes one request may make in a row (a copy verified, then its checks recorded, is judged again at once).
_PASSES = 4
# The check grant outlives the check Job's deadline (counted from the Job's start) by this much.
CHECK_GRANT_MARGIN = timedelta(minutes=5)
FAILED_PASS_RETRY_SECONDS = 10.0


@functools.cache
def _stores() -> tuple[ExportStore, SnapshotStore]:
    """The airlock's store (released files in CLEANROOM_EXPORT_OUTBOX_BUCKET when set: the bucket the hub's
    download key reads) and the snapshot store the checks compare against."""
    location = snapshot_location()
    outbox = os.environ.get("CLEANROOM_EXPORT_OUTBOX_BUCKET", "")
    return ExportStore(location, settings().snapshot_endpoint, outbox), SnapshotStore(location)


_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(key: tuple[str, str]) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _get(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = _kube.custom_objects().get_namespaced_custom_object(
            GROUP, VERSION, namespace, EXPORT_REQUESTS, name
        )
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)


def _patch_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    _kube.custom_objects().patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, EXPORT_REQUESTS, name, {"status": dict(status)}
    )


def _refs(request: Mapping[str, Any], dataset: str) -> tuple[RequestKey, ExportRef]:
    meta = request["metadata"]
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
    return RequestKey(namespace, name, uid), ExportRef(
        name, namespace, uid, str(request["spec"]["workspace"]), dataset
    )


def observe(request: Mapping[str, Any]) -> Observed:
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    status = request.get("status") or {}
    workspace = _kube.get_workspace(namespace, str(request["spec"]["workspace"]))
    dataset_name = str(((workspace or {}).get("spec") or {}).get("dataset", {}).get("name", ""))
    dataset = _kube.get_dataset(dataset_name) if dataset_name else None
    job = _kube.read("batch/v1", "Job", namespace, export_object_name(name, "copy"))
    key, _ = _refs(request, dataset_name)
    store, _snapshots = _stores()
    checking = "quarantine" in status and "checks" not in status
    check_name = export_object_name(name, "check")
    check_job = _kube.read("batch/v1", "Job", namespace, check_name) if "quarantine" in status else None
    proof_policy, proof_keys = _export_proofs.policy_and_keys(request)
    return Observed(
        now=datetime.now(UTC),
        workspace=workspace,
        dataset=dataset,
        job=job,
        copy_failure=_kube.job_failure_message(namespace, export_object_name(name, "copy"))
        if _failed(job)
        else "",
        staged="quarantine" not in status and "checks" not in status and store.exists(key.staging_manifest),
        check_job=check_job,
        check_terminations=_kube.job_terminations(namespace, check_name) if _failed(check_job) else (),
        check_result=store.check_result(key, MAX_RESULT_BYTES) if checking else None,
        proof_policy=proof_policy,
        proof_keys=proof_keys,
    )


def _failed(job: Mapping[str, Any] | None) -> bool:
    return any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in ((job or {}).get("status") or {}).get("conditions") or ()
    )


def _record(request: Mapping[str, Any], steps: tuple[AuditStep, ...] | list[AuditStep], dataset: str) -> None:
    meta, status = request["metadata"], request.get("status") or {}
    resources = {
        "export": str(meta["name"]),
        "namespace": str(meta["namespace"]),
        "workspace": str(request["spec"]["workspace"]),
        **({"dataset": dataset} if dataset else {}),
        **({"snapshot": str(status["snapshot"])} if status.get("snapshot") else {}),
    }
    for step in steps:
        _audit.record(
            step.action,
            resources,
            outcome=step.outcome,
            reason=step.reason,
            purpose=str(request["spec"].get("justification", "")),
            event_id=step.id,
        )


def _write(request: Mapping[str, Any], plan: ExportPlan) -> dict[str, Any]:
    meta = request["metadata"]
    current = dict(request.get("status") or {})
    desired = plan.applied_to(request, datetime.now(UTC))
    if desired != current:
        _patch_status(meta["namespace"], meta["name"], desired)
    return desired


def _promote(request: Mapping[str, Any], observed: Observed, plan: ExportPlan) -> None:
    """Verify the copy into quarantine and record it; the checks come next, in their own Job."""
    spec = decode(ExportRequestSpec, request["spec"])
    dataset = plan.status.dataset or ""
    key, ref = _refs(request, dataset)
    store, _snapshots = _stores()
    try:
        entries = store.promote(key, spec.files)
    except ExportStoreError as error:
        failed = failed_promotion(key.uid, f"the copy did not verify: {error}", plan.status)
        store.purge(key)
        _record(request, failed.audit, dataset)
        _write(request, failed)
        return
    step = AuditStep(
        "export.copied",
        "success",
        f"{len(entries)} files verified into quarantine",
        event_id(key.uid, "copied"),
    )
    _record(request, [step], dataset)
    _remove_jobs(key, ref, observed)
    _write(request, quarantined(plan, entries, key.quarantine_manifest))


def _remove_jobs(key: RequestKey, ref: ExportRef, observed: Observed) -> None:
    """The copy or the check is done or no longer wanted: its Job goes and its Secret's grant is emptied
    (the operator may write Secrets but not delete them, as with the materializer's), and so does the check
    grant in the store; the Secrets and the NetworkPolicies, which select no pod once the Jobs are gone, go
    with the request (owner references)."""
    if observed.job is not None:
        job = copy_objects(ref)[0]
        _kube.delete(job[0], job[1], ref.namespace, job[2])
        _kube.apply(build_upload_secret(ref, ""))
    if observed.check_job is not None:
        job = check_objects(ref)[0]
        _kube.delete(job[0], job[1], ref.namespace, job[2])
        _kube.apply(build_check_secret(ref, ""))
        _stores()[0].end_check(key)


def _start_check(request: Mapping[str, Any], observed: Observed) -> None:
    """Issue the check grant (the quarantined files, the snapshot's fingerprints, built here from the
    operator's own snapshot if need be, and the Dataset's export policy) and start the check Job."""
    assert observed.dataset is not None
    status = request.get("status") or {}
    dataset, snapshot = str(status.get("dataset") or ""), str(status.get("snapshot") or "")
    key, ref = _refs(request, dataset)
    store, snapshots = _stores()
    inputs = CheckInputs(
        entries=status["quarantine"]["files"],
        dataset=dataset,
        snapshot=snapshot,
        fingerprints_digest=content_digest(store.fingerprints_document(snapshots, dataset, snapshot)),
        policy=observed.dataset["spec"].get("export") or {},
    )
    lifetime = timedelta(seconds=CHECK_DEADLINE_SECONDS) + CHECK_GRANT_MARGIN
    _kube.apply(build_check_secret(ref, store.issue_check_grant(key, inputs, lifetime, observed.now)))
    _kube.apply(build_check_network_policy(ref, settings()))
    _kube.apply(build_check_job(ref, settings()))


def _start_copy(request: Mapping[str, Any], observed: Observed, plan: ExportPlan) -> None:
    assert observed.workspace is not None and observed.dataset is not None
    spec = decode(ExportRequestSpec, request["spec"])
    key, ref = _refs(request, plan.status.dataset or "")
    policy = decode(DatasetSpec, observed.dataset["spec"]).export
    grant = _stores()[0].issue_upload_grant(
        key,
        spec.files,
        policy.max_bytes,
        timedelta(seconds=settings().export_copy_grant_seconds),
        observed.now,
    )
    workspace_status = observed.workspace.get("status") or {}
    node = str(workspace_status.get("node") or "") if observed.workspace["spec"].get("running", True) else ""
    _kube.apply(build_upload_secret(ref, grant))
    _kube.apply(build_copy_network_policy(ref, settings()))
    _kube.apply(build_copy_job(ref, settings(), node))


def _carry_out(request: Mapping[str, Any], observed: Observed, plan: ExportPlan) -> bool:
    """Do what the plan says, effects outside the cluster first; True when the request should be judged
    again at once."""
    dataset = plan.status.dataset or str((request.get("status") or {}).get("dataset") or "")
    key, ref = _refs(request, dataset)
    store, _snapshots = _stores()
    if plan.promote:
        _promote(request, observed, plan)
        return True
    if plan.copy:
        _start_copy(request, observed, plan)
    if plan.check:
        _start_check(request, observed)
    if plan.release:
        entries = ((request.get("status") or {}).get("quarantine") or {}).get("files") or []
        plan = with_outbox(plan, store.release(key, entries))
    if plan.purge:
        store.purge(key)
    if plan.remove_jobs:
        _remove_jobs(key, ref, observed)
    _record(request, plan.audit, dataset)
    before = str((request.get("status") or {}).get("phase") or "")
    _write(request, plan)
    ended = (Phase.RELEASED, Phase.REJECTED, Phase.EXPIRED, Phase.FAILED)
    if plan.phase is not None and plan.phase != before and plan.phase in ended:
        message = next((c.message for c in plan.conditions if c.status == "True"), plan.phase)
        kopf.event(
            dict(request),
            type="Warning" if plan.phase in (Phase.REJECTED, Phase.FAILED) else "Normal",
            reason=f"Export{plan.phase}",
            message=message[:1024],
        )
    if plan.recheck_at is not None:
        seconds = max(0.5, (plan.recheck_at - observed.now).total_seconds() + 0.5)
        namespace, name = ref.namespace, ref.name
        CLOCK.schedule(
            (namespace, name), time.monotonic() + seconds, lambda: reconcile_export(namespace, name)
        )
    return plan.again


def reconcile_export(namespace: str, name: str) -> None:
    """Judge one request now (one pass at a time per request); a pass that fails is tried again soon, since
    watch events are not redelivered."""
    key = (namespace, name)
    with _lock(key):
        try:
            for _ in range(_PASSES):
                request = _get(namespace, name)
                if request is None or request["metadata"].get("deletionTimestamp"):
                    CLOCK.cancel(key)
                    return
                observed = observe(request)
                plan = plan_export(request, observed, settings())
                if not _carry_out(request, observed, plan):
                    return
        except Exception:
            CLOCK.schedule(key, time.monotonic() + FAILED_PASS_RETRY_SECONDS, lambda: reconcile_export(*key))
            raise


@kopf.on.event(GROUP, VERSION, EXPORT_REQUESTS)
def export_request_event(type: str | None, namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        CLOCK.cancel((namespace, name))
        _forget(body)
        return
    reconcile_export(namespace, name)


def _forget(body: kopf.Body) -> None:
    """A deleted request leaves nothing in the store (its Job, Secret and policy go by owner reference)."""
    request = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    dataset = str(request["status"].get("dataset") or "")
    key, _ = _refs(request, dataset)
    removed = _stores()[0].purge(key)
    if removed:
        step = AuditStep(
            "export.deleted",
            "success",
            f"the request was deleted; {removed} objects removed",
            event_id(key.uid, "deleted"),
        )
        _record(request, [step], dataset)


def _job_settled(type: str | None, status: Mapping[str, Any], **_: Any) -> bool:
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return type == "DELETED" or bool(status.get("succeeded")) or failed


@kopf.on.event("batch/v1", "jobs", labels={"app.kubernetes.io/name": EXPORT_JOB_NAME}, when=_job_settled)
def export_job_settled(namespace: str, body: kopf.Body, **_: Any) -> None:
    """A copy or check Job ended: judge its request now rather than at the next poll."""
    for owner in body.metadata.get("ownerReferences") or []:
        if owner.get("kind") == "ExportRequest":
            reconcile_export(namespace, str(owner["name"]))
