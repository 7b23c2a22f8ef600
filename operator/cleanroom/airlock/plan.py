"""An ExportRequest's lifecycle as one pure decision: from the request (its status so far), its Workspace,
its Dataset, its copy and check Jobs and the checker's result, to the next step, the conditions and the
audit trail's events.

    Copying ─► (copy done) promote ─► Checking ─► (result judged) ─► AwaitingApproval ─► Released ─► Expired
       │                                 │                 │                │            (download time over)
       └─► Failed (copy failed)          │                 │                └─► Rejected (an approver) /
                                         │                 └─► Rejected (a check failed)   Expired (no
                                         └─► Rejected (the checker stopped: crashed, out of     decision in
                                             memory or time, or no result; its result not valid) time)

Every way out of the airlock but release deletes the copies (``purge``), and so does the end of the
download time. Level-triggered: the same inputs give the same plan; steps with effects outside the cluster
(promote, release, purge) are idempotent, and the handler carries them out before it writes the status
that says they happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import jwt

from cleanroom.airlock.approval import JudgedDecision, Proven, judge_decisions
from cleanroom.airlock.check_result import Subject, checker_stopped, judge_result
from cleanroom.airlock.proofs import ExportRef, ProofPolicy, check_proof
from cleanroom.api import (
    REQUESTED_BY_ANNOTATION,
    Condition,
    DatasetSpec,
    DisclosureCheck,
    ExportQuarantine,
    ExportRequestPhase,
    ExportRequestSpec,
    ExportRequestStatus,
    QuarantinedFile,
    WorkspaceSpec,
    decode,
    is_true,
    overlay,
    rfc3339,
    with_conditions,
)
from cleanroom.api import JudgedDecision as RecordedDecision
from cleanroom.api.contract import APPROVED, CHECKED, EXPIRED, QUARANTINED, REJECTED, RELEASED
from cleanroom.workspaces.settings import WorkspaceSettings

CONDITIONS = (QUARANTINED, CHECKED, APPROVED, RELEASED, REJECTED, EXPIRED)
Phase = ExportRequestPhase
TERMINAL_PHASES = (Phase.REJECTED, Phase.EXPIRED, Phase.FAILED)


@dataclass(frozen=True)
class Observed:
    now: datetime
    workspace: Mapping[str, Any] | None
    dataset: Mapping[str, Any] | None
    job: Mapping[str, Any] | None = None
    # Why the copy failed, from its pod's termination message ("" while none failed).
    copy_failure: str = ""
    # Whether the copy's manifest is in the store: the Job writes it last, so the copy is whole.
    staged: bool = False
    # The check Job, the ends of its pods' containers (reason, exitCode, message; newest first) once it
    # failed, and the result it wrote (at most check_result.MAX_RESULT_BYTES + 1 bytes; None while none).
    check_job: Mapping[str, Any] | None = None
    check_terminations: tuple[Mapping[str, Any], ...] = ()
    check_result: bytes | None = None
    # Who signs decisions made on the officers' page, and the provider's keys (None: no page decision counts).
    proof_policy: ProofPolicy | None = None
    proof_keys: Mapping[str, jwt.PyJWK] = field(default_factory=dict)


# How often a copy (or a check) in progress is looked for in the store (no event says an upload finished),
# and how long a Job that ended may take to show its upload there before it counts as failed.
COPY_POLL = timedelta(seconds=5)
COPY_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class AuditStep:
    action: str
    outcome: str
    reason: str
    id: str


@dataclass(frozen=True)
class ExportPlan:
    phase: ExportRequestPhase | None  # None: the request is over, and its phase stays as it is
    conditions: tuple[Condition, ...] = ()
    # The status fields this step sets (phase and conditions are the fields above); None: kept as it is.
    status: ExportRequestStatus = field(default_factory=ExportRequestStatus)
    copy: bool = False  # create the copy Job, its upload Secret and NetworkPolicy
    check: bool = False  # issue the check grant; create the check Job, its Secret and NetworkPolicy
    remove_jobs: bool = False  # delete the Jobs and empty their Secrets (done or no longer wanted)
    promote: bool = False  # verify the copy into quarantine (then plan again)
    again: bool = False  # plan again at once once this is carried out
    release: bool = False  # copy the quarantined files to the outbox
    purge: bool = False  # delete every object of the request from the store
    audit: tuple[AuditStep, ...] = ()
    recheck_at: datetime | None = None

    def applied_to(self, request: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """The whole status to write over ``request``'s current one: its fields kept, this step's set, the
        conditions merged for the request's generation."""
        generation = int(request["metadata"].get("generation", 0))
        current = request.get("status") or {}
        status = replace(self.status, phase=self.phase)
        return overlay(
            current, with_conditions(status, current, self.conditions, generation=generation, now=now)
        )


def event_id(uid: str, *parts: str) -> str:
    """The same id for the same step of the same request: recording it again adds nothing."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "cleanroom.dev/export/" + "/".join((uid, *parts))))


def _parse(moment: str) -> datetime | None:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")) if moment else None


def _ended(
    phase: ExportRequestPhase,
    kind: str,
    reason: str,
    message: str,
    uid: str,
    action: str,
    *,
    purge: bool = True,
    status: ExportRequestStatus | None = None,
) -> ExportPlan:
    """A way out of the airlock that is not a release: ``kind`` (Rejected or Expired) True, Released False
    (Approved stays as it was once the download time is over), the copies deleted."""
    conditions = [Condition(kind, "True", reason, message), Condition(RELEASED, "False", reason, message)]
    conditions += [
        Condition(other, "False", reason, message) for other in (REJECTED, EXPIRED) if other != kind
    ]
    if reason != "DownloadTimeOver":
        conditions.append(Condition(APPROVED, "False", reason, message))
    outcome = "denied" if kind == REJECTED else "success"
    steps = [AuditStep(action, outcome, message, event_id(uid, action))]
    if purge:
        steps.append(
            AuditStep("export.deleted", "success", f"copies deleted: {reason}", event_id(uid, "deleted"))
        )
    return ExportPlan(
        phase,
        tuple(conditions),
        status or ExportRequestStatus(),
        remove_jobs=True,
        purge=purge,
        audit=tuple(steps),
    )


def _failed(uid: str, message: str, facts: ExportRequestStatus) -> ExportPlan:
    """The copy failed: nothing reached quarantine; what was staged is deleted."""
    conditions = [Condition(QUARANTINED, "False", "CopyFailed", message)]
    conditions += [
        Condition(kind, "False", "CopyFailed", message) for kind in (APPROVED, RELEASED, REJECTED, EXPIRED)
    ]
    steps = (
        AuditStep("export.copied", "failure", message, event_id(uid, "export.copied")),
        AuditStep("export.deleted", "success", "copies deleted: CopyFailed", event_id(uid, "deleted")),
    )
    return ExportPlan(Phase.FAILED, tuple(conditions), facts, remove_jobs=True, purge=True, audit=steps)


@dataclass(frozen=True)
class _Request:
    """What every step reads of the request: who asked, its spec, its status so far, its deadline."""

    uid: str
    ref: ExportRef
    spec: ExportRequestSpec
    requester: str
    status: Mapping[str, Any]
    # The export.requested step, on the first pass only (no status written yet).
    first: tuple[AuditStep, ...]
    # When the request expires if it is not copied, checked and approved by then.
    deadline: datetime


def plan_export(request: Mapping[str, Any], observed: Observed, settings: WorkspaceSettings) -> ExportPlan:
    """The next step, as ordered gates: over (nothing more to do), refused, released (until the download
    time is over), copying, checks failed, then the approvers' decisions."""
    status: Mapping[str, Any] = request.get("status") or {}
    phase = str(status.get("phase") or "")
    if phase in TERMINAL_PHASES or is_true(status.get("conditions"), EXPIRED):
        return ExportPlan(None)
    this = _request(request, observed, settings)
    refusal = _refusal(this.spec, this.requester, observed)
    if refusal is not None:
        reason, message = refusal
        plan = _ended(
            Phase.REJECTED,
            REJECTED,
            reason,
            message,
            this.uid,
            "export.rejected",
            purge=bool(status),
            status=ExportRequestStatus(requested_by=this.requester),
        )
        return _with_first(plan, this.first)
    assert observed.workspace is not None and observed.dataset is not None
    if is_true(status.get("conditions"), RELEASED):
        return _released(this, observed)
    if "checks" not in status:
        if observed.now >= this.deadline:
            message = f"not copied and checked by {rfc3339(this.deadline)}"
            return _ended(Phase.EXPIRED, EXPIRED, "NotCopiedInTime", message, this.uid, "export.expired")
        if "quarantine" in status:
            return _checking(this, observed)
        return _with_first(_copying(this.uid, status, observed, _facts(this, observed.workspace)), this.first)
    return _checks_failed(this) or _decide(this, observed, settings)


def _request(request: Mapping[str, Any], observed: Observed, settings: WorkspaceSettings) -> _Request:
    metadata = request["metadata"]
    uid = str(metadata.get("uid", ""))
    status: Mapping[str, Any] = request.get("status") or {}
    spec = decode(ExportRequestSpec, request["spec"])
    requester = str((metadata.get("annotations") or {}).get(REQUESTED_BY_ANNOTATION, ""))
    first = (
        ()
        if status
        else (
            AuditStep("export.requested", "success", _summary(spec, requester), event_id(uid, "requested")),
        )
    )
    created = _parse(str(metadata.get("creationTimestamp", ""))) or observed.now
    ref = ExportRef(str(metadata.get("namespace", "")), str(metadata.get("name", "")), uid)
    return _Request(
        uid, ref, spec, requester, status, first, created + timedelta(seconds=settings.export_pending_seconds)
    )


def _facts(this: _Request, workspace: Mapping[str, Any]) -> ExportRequestStatus:
    """Who asked, and the Dataset and snapshot the files are checked against (as the status records them)."""
    dataset_name = str(workspace["spec"]["dataset"]["name"])
    snapshot = str(((workspace.get("status") or {}).get("snapshot") or {}).get("digest") or "")
    return ExportRequestStatus(requested_by=this.requester, dataset=dataset_name, snapshot=snapshot)


def _released(this: _Request, observed: Observed) -> ExportPlan:
    """Downloadable until ``expiresAt``; then the released files go."""
    expires = _parse(str(this.status.get("expiresAt", ""))) or observed.now
    if observed.now >= expires:
        message = f"the download time ended at {rfc3339(expires)}; the released files were deleted"
        return _ended(Phase.EXPIRED, EXPIRED, "DownloadTimeOver", message, this.uid, "export.expired")
    return ExportPlan(Phase.RELEASED, recheck_at=expires)


def _checks_failed(this: _Request) -> ExportPlan | None:
    """Rejected, with every finding of every failed check, when any check failed."""
    failed = [c for c in this.status.get("checks") or [] if not c.get("passed")]
    if not failed:
        return None
    message = "; ".join(
        f"{c['name']}: "
        + ", ".join(f"{f.get('file') or 'all files'}: {f.get('detail')}" for f in c.get("findings") or [])
        for c in failed
    )[:4000]
    return _ended(Phase.REJECTED, REJECTED, "ChecksFailed", message, this.uid, "export.rejected")


def _decide(this: _Request, observed: Observed, settings: WorkspaceSettings) -> ExportPlan:
    """The two-person rule over the decisions so far: rejected, released, expired or still waiting."""
    assert observed.dataset is not None
    policy = decode(DatasetSpec, observed.dataset["spec"]).export
    judgement = judge_decisions(
        this.spec.decisions,
        requester=this.requester,
        steward_group=policy.steward_group,
        officer_group=settings.export_officer_group,
        proven=_proven(this.ref, observed),
    )
    seen = {str(d.get("by")): str(d.get("at") or "") for d in this.status.get("decisions") or []}
    judged = _judged(judgement.decisions, seen, observed.now)
    decided = _decided(this.uid, judgement.decisions, seen)
    if judgement.state == "rejected":
        plan = _ended(Phase.REJECTED, REJECTED, "RejectedByApprover", judgement.message, this.uid,
                      "export.rejected", status=ExportRequestStatus(decisions=judged))  # fmt: skip
        return _with_first(plan, decided)
    if judgement.state == "approved":
        return _release(this.uid, judgement.message, judged, decided, observed.now, settings)
    if observed.now >= this.deadline:
        message = f"no two approvals by {rfc3339(this.deadline)} ({judgement.message})"
        plan = _ended(Phase.EXPIRED, EXPIRED, "NoDecisionInTime", message, this.uid, "export.expired",
                      status=ExportRequestStatus(decisions=judged))  # fmt: skip
        return _with_first(plan, decided)
    return ExportPlan(
        Phase.AWAITING_APPROVAL,
        (
            Condition(APPROVED, "False", "WaitingForApprovers", judgement.message),
            Condition(RELEASED, "False", "WaitingForApprovers", judgement.message),
        ),
        ExportRequestStatus(decisions=judged, expires_at=rfc3339(this.deadline)),
        audit=decided,
        recheck_at=this.deadline,
    )


def _proven(export: ExportRef, observed: Observed) -> Proven | None:
    policy, keys = observed.proof_policy, observed.proof_keys
    if policy is None:
        return None
    return lambda decision: check_proof(decision, export, keys, policy)


def _judged(
    judged: Sequence[JudgedDecision], seen: Mapping[str, str], now: datetime
) -> tuple[RecordedDecision, ...]:
    """The decisions as status.decisions records them: each with its time (when first seen) and whether it
    counted."""
    return tuple(
        RecordedDecision(
            by=j.decision.by,
            role=str(j.decision.role),
            verdict=str(j.decision.verdict),
            reason=j.decision.reason,
            at=seen.get(j.decision.by) or rfc3339(now),
            counted=j.counted,
            note=j.note or None,
        )
        for j in judged
    )


def _decided(uid: str, judged: Sequence[JudgedDecision], seen: Mapping[str, str]) -> tuple[AuditStep, ...]:
    """An export.decided step for each decision not seen before (denied when it does not count)."""
    return tuple(
        AuditStep(
            "export.decided",
            "success" if j.counted else "denied",
            f"{j.decision.by} as {j.decision.role}: {j.decision.verdict}: {j.decision.reason}"
            + (f" (not counted: {j.note})" if j.note else ""),
            event_id(uid, "decided", j.decision.by),
        )
        for j in judged
        if j.decision.by not in seen
    )


def _release(
    uid: str,
    approval: str,
    judged: tuple[RecordedDecision, ...],
    decided: tuple[AuditStep, ...],
    now: datetime,
    settings: WorkspaceSettings,
) -> ExportPlan:
    """Two approvals: the files go to the outbox, downloadable for ``export_download_seconds``."""
    expires = now + timedelta(seconds=settings.export_download_seconds)
    message = f"{approval}; downloadable from the hub until {rfc3339(expires)}"
    return ExportPlan(
        Phase.RELEASED,
        (
            Condition(APPROVED, "True", "TwoPersonRule", approval),
            Condition(RELEASED, "True", "Released", message),
            Condition(REJECTED, "False", "Released", message),
            Condition(EXPIRED, "False", "Released", message),
        ),
        ExportRequestStatus(decisions=judged, released_at=rfc3339(now), expires_at=rfc3339(expires)),
        release=True,
        audit=(*decided, AuditStep("export.released", "success", message, event_id(uid, "released"))),
        recheck_at=expires,
    )


def _summary(spec: ExportRequestSpec, requester: str) -> str:
    return f"{requester or 'nobody'} asks for {', '.join(spec.files)} from {spec.workspace}: {spec.justification}"[
        :2000
    ]


def _with_first(plan: ExportPlan, first: Sequence[AuditStep]) -> ExportPlan:
    return replace(plan, audit=(*first, *plan.audit))


def _refusal(spec: ExportRequestSpec, requester: str, observed: Observed) -> tuple[str, str] | None:
    """Why the request cannot go on at all (reason, message), or None."""
    if not requester:
        return "RequesterUnknown", f"no {REQUESTED_BY_ANNOTATION} annotation: who asked is unknown"
    if observed.workspace is None:
        return "WorkspaceNotFound", f"no Workspace {spec.workspace} in this namespace"
    workspace = decode(WorkspaceSpec, observed.workspace["spec"])
    if requester not in workspace.users:
        return "NotAUser", f"{requester} is not a user of Workspace {spec.workspace}"
    if observed.dataset is None:
        return "DatasetNotFound", f"the Workspace's Dataset {workspace.dataset.name} does not exist"
    snapshot = ((observed.workspace.get("status") or {}).get("snapshot") or {}).get("digest")
    if not snapshot:
        return "NoSnapshot", f"Workspace {spec.workspace} has no snapshot pinned yet (start it once first)"
    return None


def _copying(
    uid: str, status: Mapping[str, Any], observed: Observed, facts: ExportRequestStatus
) -> ExportPlan:
    job = observed.job
    job_status = (job or {}).get("status") or {}
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in job_status.get("conditions") or ()
    )
    if job is not None and failed and not observed.staged:
        return _failed(uid, f"the copy failed: {observed.copy_failure or 'see the copy Job'}"[:4000], facts)
    if observed.staged:
        return ExportPlan(
            Phase.CHECKING,
            (
                Condition(
                    QUARANTINED, "Unknown", "Verifying", "the copy is done; verifying it into quarantine"
                ),
            ),
            facts,
            promote=True,
        )
    finished = _parse(str(job_status.get("completionTime") or ""))
    if finished is not None and observed.now >= finished + COPY_GRACE:
        return _failed(uid, "the copy Job ended without uploading the files", facts)
    message = "copying the files from the home folder into quarantine"
    return ExportPlan(
        Phase.COPYING,
        (
            Condition(QUARANTINED, "False", "Copying", message),
            Condition(CHECKED, "Unknown", "WaitingForCopy", message),
            Condition(APPROVED, "False", "WaitingForChecks", message),
            Condition(RELEASED, "False", "WaitingForChecks", message),
            Condition(REJECTED, "False", "Copying", message),
            Condition(EXPIRED, "False", "Copying", message),
        ),
        facts,
        copy=job is None,
        recheck_at=observed.now + COPY_POLL,
    )


def failed_promotion(uid: str, message: str, facts: ExportRequestStatus) -> ExportPlan:
    """What the copy uploaded did not verify (a file missing or changed): the request fails."""
    return _failed(uid, message, facts)


def quarantined_status(
    entries: Sequence[Mapping[str, Any]], manifest_key: str
) -> tuple[ExportRequestStatus, tuple[Condition, ...]]:
    """Status fields and conditions once the copy is verified into quarantine: the checks come next."""
    files = len(entries)
    status = ExportRequestStatus(
        quarantine=ExportQuarantine(
            manifest=manifest_key,
            files=tuple(decode(QuarantinedFile, e) for e in entries),
            bytes=sum(int(e["size"]) for e in entries),
        )
    )
    message = "the disclosure checks run in their own Job"
    conditions = (
        Condition(QUARANTINED, "True", "Copied", f"{files} file{'s' if files != 1 else ''} in quarantine, verified"),
        Condition(CHECKED, "Unknown", "Checking", message),
    )  # fmt: skip
    return status, conditions


def check_subject(uid: str, status: Mapping[str, Any]) -> Subject:
    """What the checker is asked to judge (and its result must name): the request, the snapshot the
    status records, and the quarantined files."""
    files = ((status.get("quarantine") or {}).get("files")) or []
    return Subject(
        uid, str(status.get("snapshot") or ""), tuple((str(f["path"]), str(f["digest"])) for f in files)
    )


def _checking(this: _Request, observed: Observed) -> ExportPlan:
    """The checks run in a Job of their own: start it, wait for its result, and take the result only when
    it is whole and of this request. A checker that stopped (crashed, killed for memory, past its deadline),
    ended without a result or wrote one that is not valid rejects the request: nothing passes unjudged."""
    stopped = checker_stopped(observed.check_job, observed.check_terminations)
    if stopped:
        return _not_checked(this.uid, "CheckerFailed", f"the disclosure checks did not finish: {stopped}")
    if observed.check_result is not None:
        judged = judge_result(observed.check_result, check_subject(this.uid, this.status))
        if judged.problem:
            return _not_checked(this.uid, "CheckResultInvalid", judged.problem)
        return _checked(this.uid, judged.checks)
    job = observed.check_job
    finished = _parse(str(((job or {}).get("status") or {}).get("completionTime") or ""))
    if finished is not None and observed.now >= finished + COPY_GRACE:
        return _not_checked(this.uid, "CheckerFailed", "the check Job ended without writing its result")
    message = "the disclosure checks run in their own Job"
    return ExportPlan(
        Phase.CHECKING,
        (Condition(CHECKED, "Unknown", "Checking", message),),
        check=job is None,
        recheck_at=observed.now + COPY_POLL,
    )


def _checked(uid: str, checks: Sequence[Mapping[str, Any]]) -> ExportPlan:
    """The checker's result counts: recorded, then judged again (rejected or on to the approvers)."""
    failed = [str(c["name"]) for c in checks if not c["passed"]]
    message = f"failed: {', '.join(failed)}" if failed else "every disclosure check passed"
    condition = Condition(
        CHECKED, "False" if failed else "True", "ChecksFailed" if failed else "ChecksPassed", message
    )
    step = AuditStep("export.checked", "failure" if failed else "success", message, event_id(uid, "checked"))
    return ExportPlan(
        Phase.CHECKING,
        (condition,),
        ExportRequestStatus(checks=tuple(decode(DisclosureCheck, c) for c in checks)),
        remove_jobs=True,
        audit=(step,),
        again=True,
    )


def _not_checked(uid: str, reason: str, message: str) -> ExportPlan:
    """Rejected without a result that counts: Checked False, the checks' failure and the rejection audited."""
    plan = _ended(Phase.REJECTED, REJECTED, reason, message[:4000], uid, "export.rejected")
    step = AuditStep("export.checked", "failure", message[:2000], event_id(uid, "checked"))
    return replace(
        plan,
        conditions=(Condition(CHECKED, "False", reason, message[:4000]), *plan.conditions),
        audit=(step, *plan.audit),
    )


def quarantined(checking: ExportPlan, entries: Sequence[Mapping[str, Any]], manifest_key: str) -> ExportPlan:
    """What ``checking`` (the plan that verifies the copy into quarantine) writes once it did: the
    quarantined files beside the facts it recorded; the checks come next."""
    status, conditions = quarantined_status(entries, manifest_key)
    return ExportPlan(Phase.CHECKING, conditions, replace(checking.status, quarantine=status.quarantine))


def with_outbox(plan: ExportPlan, outbox: str) -> ExportPlan:
    """``plan`` once its files are released: the status names the outbox prefix the hub presigns links to."""
    return replace(plan, status=replace(plan.status, outbox=outbox))
