"""An ExportRequest's lifecycle, step by step, as the pure plan decides it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom.airlock.plan import Observed, plan_export, quarantined_status
from cleanroom.api import to_json
from cleanroom.workspaces.settings import WorkspaceSettings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SETTINGS = WorkspaceSettings(
    export_officer_group="officers", export_pending_seconds=86400, export_download_seconds=3600
)
ALICE, BOB, OLGA = "alice@hospital.example", "bob@hospital.example", "olga@hospital.example"
SNAPSHOT = "sha256:" + "ab" * 32


def request(
    status: dict[str, Any] | None = None, decisions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "paper",
            "namespace": "prostate-ai",
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": "2026-11-20T11:00:00Z",
            "annotations": {"cleanroom.dev/requested-by": ALICE},
        },
        "spec": {
            "workspace": "seg",
            "files": ["results/metrics.csv"],
            "justification": "Aggregate Dice per fold for table 2",
            "decisions": decisions or [],
        },
        "status": status or {},
    }


WORKSPACE = {
    "spec": {"dataset": {"name": "prostate"}, "users": [ALICE], "purpose": "segmentation", "image": "x"},
    "status": {"snapshot": {"digest": SNAPSHOT}, "node": "real-0"},
}
DATASET = {
    "spec": {
        "source": {"directory": {"path": "/d"}},
        "deidentification": {"method": "Anonymize"},
        "export": {"stewardGroup": "stewards"},
    }
}


def observed(**changes: Any) -> Observed:
    return Observed(**{"now": NOW, "workspace": WORKSPACE, "dataset": DATASET, **changes})


CHECKED_OK = [{"name": "NoDicom", "passed": True, "lookedAt": ["x"], "findings": []}]


def checked(results: list[dict[str, Any]] = CHECKED_OK, **extra: Any) -> dict[str, Any]:
    status, _ = quarantined_status([{"path": "results/metrics.csv", "digest": "sha256:00", "size": 3}], "k")
    return {
        "phase": "AwaitingApproval",
        "dataset": "prostate",
        "snapshot": SNAPSHOT,
        **to_json(status),
        "checks": results,
        **extra,
    }


def steward(by: str = BOB, verdict: str = "Approve") -> dict[str, Any]:
    return {
        "by": by,
        "role": "DataSteward",
        "verdict": verdict,
        "reason": "aggregate",
        "groups": ["stewards"],
    }


def officer(by: str = OLGA) -> dict[str, Any]:
    return {
        "by": by,
        "role": "SecurityOfficer",
        "verdict": "Approve",
        "reason": "fine",
        "groups": ["officers"],
    }


def test_a_new_request_starts_the_copy_and_is_audited() -> None:
    plan = plan_export(request(), observed(), SETTINGS)
    assert plan.copy and plan.phase == "Copying"
    assert [s.action for s in plan.audit] == ["export.requested"]
    assert plan.status.requested_by == ALICE and plan.status.snapshot == SNAPSHOT


def test_a_requester_who_is_not_a_user_of_the_workspace_is_rejected_and_nothing_is_copied() -> None:
    other = request()
    other["metadata"]["annotations"]["cleanroom.dev/requested-by"] = "mallory@elsewhere.example"
    plan = plan_export(other, observed(), SETTINGS)
    assert plan.phase == "Rejected" and not plan.copy
    assert "is not a user of Workspace seg" in plan.conditions[0].message


def test_the_copy_is_promoted_once_its_manifest_is_in_the_store() -> None:
    job = {"status": {"active": 1}}
    assert plan_export(request({"phase": "Copying"}), observed(job=job), SETTINGS).phase == "Copying"
    plan = plan_export(request({"phase": "Copying"}), observed(job=job, staged=True), SETTINGS)
    assert plan.promote


def test_a_copy_job_that_ended_without_uploading_fails_the_request() -> None:
    job = {"status": {"succeeded": 1, "completionTime": "2026-11-20T11:58:00Z"}}
    plan = plan_export(request({"phase": "Copying"}), observed(job=job), SETTINGS)
    assert plan.phase == "Failed" and plan.purge


def test_a_failed_check_rejects_and_deletes_the_copies() -> None:
    failed = [
        {
            "name": "NoDicom",
            "passed": False,
            "lookedAt": [],
            "findings": [{"file": "x.npy", "detail": "DICOM"}],
        }
    ]
    plan = plan_export(request(checked(failed)), observed(), SETTINGS)
    assert plan.phase == "Rejected" and plan.purge
    assert "NoDicom: x.npy: DICOM" in plan.conditions[0].message
    assert [s.action for s in plan.audit] == ["export.rejected", "export.deleted"]


def test_one_approval_does_not_release() -> None:
    plan = plan_export(request(checked(), [steward()]), observed(), SETTINGS)
    assert plan.phase == "AwaitingApproval" and not plan.release
    assert [s.action for s in plan.audit] == ["export.decided"]


def test_the_requester_cannot_approve_her_own_export() -> None:
    own = {**officer(ALICE), "groups": ["officers", "stewards"]}
    plan = plan_export(request(checked(), [own, steward()]), observed(), SETTINGS)
    assert plan.phase == "AwaitingApproval"
    assert plan.status.decisions and plan.status.decisions[0].counted is False
    assert plan.audit[0].outcome == "denied"


def test_two_approvals_release_until_the_download_time_ends() -> None:
    plan = plan_export(request(checked(), [steward(), officer()]), observed(), SETTINGS)
    assert plan.release and plan.phase == "Released"
    assert plan.status.expires_at == "2026-11-20T13:00:00Z"
    assert [s.action for s in plan.audit] == ["export.decided", "export.decided", "export.released"]
    released = checked(
        phase="Released", expiresAt="2026-11-20T13:00:00Z",
        conditions=[{"type": "Released", "status": "True", "reason": "Released", "message": ""}],
    )  # fmt: skip
    later = plan_export(
        request(released, [steward(), officer()]), observed(now=NOW + timedelta(hours=2)), SETTINGS
    )
    assert later.phase == "Expired" and later.purge


def test_a_rejection_reaches_the_requester_and_deletes_the_copies() -> None:
    plan = plan_export(request(checked(), [steward(verdict="Reject")]), observed(), SETTINGS)
    assert plan.phase == "Rejected" and plan.purge
    assert "rejected by bob@hospital.example (DataSteward): aggregate" in plan.conditions[0].message


def test_no_decision_in_time_expires() -> None:
    plan = plan_export(request(checked(), [steward()]), observed(now=NOW + timedelta(days=2)), SETTINGS)
    assert plan.phase == "Expired" and plan.purge


def test_a_decision_is_audited_once() -> None:
    seen = checked(decisions=[{"by": BOB, "at": "2026-11-20T11:30:00Z"}])
    plan = plan_export(request(seen, [steward()]), observed(), SETTINGS)
    assert plan.audit == ()
    assert plan.status.decisions and plan.status.decisions[0].at == "2026-11-20T11:30:00Z"


def test_a_finished_request_is_left_alone() -> None:
    assert plan_export(request({"phase": "Rejected"}), observed(), SETTINGS).audit == ()
