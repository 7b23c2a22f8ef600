"""A status built from the typed views in cleanroom.api writes exactly what the handlers write today from
dicts, so that each handler can move to them without a change on the cluster.

Each reference below is the handler's own expression (handlers/workspace.py, handlers/dataset.py `_status`,
handlers/export.py `_write`) applied to a status of the shape its plan returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanroom.api import (
    Condition,
    DatasetPhase,
    DatasetStatus,
    ExportRequestPhase,
    ExportRequestStatus,
    WorkspacePhase,
    WorkspaceStatus,
    decode,
    merge_conditions,
    overlay,
    with_conditions,
)

NOW = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def handler_today(
    current: Mapping[str, Any],
    partial: Mapping[str, Any],
    phase: str,
    conditions: list[Condition],
    generation: int,
) -> dict[str, Any]:
    return {
        **current,
        **partial,
        "phase": phase,
        "observedGeneration": generation,
        "conditions": merge_conditions(current.get("conditions"), conditions, generation=generation, now=NOW),
    }


def typed(
    cls: type[Any],
    current: Mapping[str, Any],
    partial: Mapping[str, Any],
    phase: Any,
    conditions: list[Condition],
) -> dict[str, Any]:
    status = replace(decode(cls, partial), phase=phase)
    return overlay(current, with_conditions(status, current, conditions, generation=4, now=NOW))


def test_workspace_status_typed_equals_todays_dict() -> None:
    current = {
        "phase": "Starting",
        "observedGeneration": 3,
        "startedBy": "alice@hospital.example",
        "lastActivity": "2026-12-02T14:00:00Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Starting",
                "message": "the notebook is starting",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-12-02T14:00:00Z",
            },
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "Scheduled",
                "message": "on node-1",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-12-02T14:01:00Z",
            },
        ],
    }
    # What workspaces.lifecycle puts in Plan.status for a running notebook.
    partial = {
        "expiresAt": "2026-12-09T14:00:00Z",
        "createdBy": "alice@hospital.example",
        "startedBy": "alice@hospital.example",
        "snapshot": {"digest": DIGEST, "shortDigest": "abababababab"},
        "url": "http://127.0.0.1:8000/user/alice/",
        "startedAt": "2026-12-02T14:02:00Z",
        "imageDigest": "sha256:" + "cd" * 32,
        "node": "node-1",
        "gpus": 1,
    }
    conditions = [
        Condition("Ready", "True", "Running", "JupyterLab answers"),
        Condition("Scheduled", "True", "Scheduled", "on node-1"),
    ]
    assert typed(WorkspaceStatus, current, partial, WorkspacePhase.RUNNING, conditions) == handler_today(
        current, partial, "Running", conditions, 4
    )


def test_dataset_status_typed_equals_todays_dict() -> None:
    current = {"phase": "Ingesting", "progress": {"filesDone": 2, "filesTotal": 9}}
    # datasets.plan.snapshot_ready's fields, with snapshots.manifest.summary as the snapshot.
    partial = {
        "snapshot": {
            "digest": DIGEST,
            "shortDigest": "abababababab",
            "files": 8,
            "bytes": 4_200_000,
            "patients": 3,
            "studies": 3,
            "series": 5,
            "modalities": ["CT", "MR"],
            "createdAt": "2026-12-02T14:29:00Z",
        },
        "ingestedSpec": "sha256:" + "ef" * 32,
        "quarantine": {"files": 1, "report": "s3://snapshots/sample-ct/quarantine.json"},
        "progress": {"filesDone": 9, "filesTotal": 9},
    }
    conditions = [Condition("Ready", "True", "SnapshotPublished", "snapshot abababababab published")]
    assert typed(DatasetStatus, current, partial, DatasetPhase.READY, conditions) == handler_today(
        current, partial, "Ready", conditions, 4
    )


def test_export_request_status_typed_equals_todays_dict() -> None:
    current = {"phase": "Checking", "requestedBy": "alice@hospital.example", "dataset": "sample-ct"}
    # airlock.plan's checked_status and judged decisions.
    partial = {
        "snapshot": DIGEST,
        "quarantine": {
            "manifest": "quarantine/ns/uid/manifest.json",
            "files": [{"path": "results/metrics.csv", "digest": "sha256:" + "12" * 32, "size": 120}],
            "bytes": 120,
        },
        "checks": [
            {"name": "NoDicom", "passed": True, "lookedAt": ["results/metrics.csv as CSV"], "findings": []},
            {
                "name": "NoIdentifiers",
                "passed": False,
                "lookedAt": ["results/metrics.csv as CSV"],
                "findings": [{"file": "results/metrics.csv", "detail": "pseudonym P-0001 in line 2"}],
            },
        ],
        "decisions": [
            {
                "by": "bob",
                "role": "DataSteward",
                "verdict": "Approve",
                "reason": "aggregates only",
                "at": "2026-12-02T14:20:00Z",
                "counted": False,
                "note": "not in the steward group",
            }
        ],
        "expiresAt": "2026-12-09T14:00:00Z",
    }
    conditions = [Condition("Checked", "False", "ChecksFailed", "failed: NoIdentifiers")]
    assert typed(
        ExportRequestStatus, current, partial, ExportRequestPhase.REJECTED, conditions
    ) == handler_today(current, partial, "Rejected", conditions, 4)


# -- every status the Workspace path writes ------------------------------------------------------------------
# Each case runs the real plan (workspaces.plan_workspace, then refused / snapshot_not_found where the handler
# applies them) and compares what the handler writes with today's expression over the dict the plan gave
# before the status was typed (the literals below, checked against that code).

ALICE = "alice@hospital.example"
EXPIRY = {"expiresAt": "2026-11-08T12:00:00Z"}
TIMING = {**EXPIRY, "createdBy": ALICE, "startedBy": ALICE}
# The snapshot pinned, and how its volume is served (the default: a copy of its own).
PINNED = {**TIMING, "snapshot": {"digest": DIGEST, "shortDigest": "abababababab"}, "snapshotVolume": "copy"}
NOTEBOOK = {**PINNED, "url": "http://127.0.0.1:8000/hub/spawn/alice@hospital.example/seg-44e6b1"}
ON_NODE = {
    **NOTEBOOK,
    "startedAt": "2026-11-01T12:01:00Z",
    "imageDigest": "sha256:" + "e" * 64,
    "node": "gpu-a100-0",
    "gpus": 1,
}
# What the Workspace's status held before the pass: the fields no plan sets must survive the write.
WORKSPACE_CURRENT = {
    "phase": "Starting",
    "observedGeneration": 0,
    "lastActivity": "2026-11-01T12:02:00Z",
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Starting",
            "message": "the notebook server is starting",
            "observedGeneration": 0,
            "lastTransitionTime": "2026-11-01T12:01:00Z",
        }
    ],
}


def _workspace_cases() -> list[tuple[str, Any, str, dict[str, Any]]]:
    """(the Ready reason, plan, phase, the status fields today's plan sets) for every gate and every way a
    pass ends."""
    from cleanroom.workspaces import plan_workspace, refused, snapshot_not_found
    from tests.unit.test_workspace_lifecycle import CREATED, SETTINGS, dataset, observed, workspace

    def plan(body: dict[str, Any] | None = None, **seen: Any) -> Any:
        return plan_workspace(body or workspace(), observed(**seen), SETTINGS)

    unready = dataset()
    unready["status"] = {"phase": "Ingesting"}
    anonymous = workspace()
    anonymous["metadata"]["annotations"] = {}
    idle = workspace(lifetime={"expiresAfter": "168h", "idleTimeout": "30m"})
    idle["metadata"]["annotations"]["cleanroom.dev/last-activity"] = "2026-11-01T12:00:00Z"
    steward = "steward@hospital.example"
    by_steward = workspace()
    by_steward["metadata"]["annotations"] = {"cleanroom.dev/created-by": steward}
    stewards = dataset()
    stewards["spec"]["access"]["adminGroups"] = ["stewards"]
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "mismatch"}]}}
    other_copy = {"metadata": {"annotations": {"cleanroom.dev/snapshot": "sha256:" + "b" * 64}}}
    reached = '{"reached": ["internet"], "blocked": []}'
    probe = {"status": {"containerStatuses": [{"state": {"terminated": {"message": reached}}}]}}
    opener = {"metadata": {"name": "allow-egress"}, "spec": {"podSelector": {}, "egress": [{}]}}
    unschedulable = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "message": "no"}]}}
    scheduled = {"type": "PodScheduled", "status": "True"}
    on_node = {
        "spec": {"nodeName": "gpu-a100-0"},
        "status": {
            "startTime": "2026-11-01T12:01:00Z",
            "conditions": [scheduled],
            "containerStatuses": [{"imageID": "registry.example.org/n@sha256:" + "e" * 64}],
        },
    }
    running = {
        **on_node,
        "status": {**on_node["status"], "conditions": [scheduled, {"type": "Ready", "status": "True"}]},
    }
    late = CREATED + timedelta(days=8)
    starting = plan(job=None)
    return [
        ("ImageNotAllowed", plan(workspace(image="docker.io/x:1")), "Failed", EXPIRY),
        ("DatasetNotFound", plan(dataset=None), "Pending", EXPIRY),
        ("DatasetNotReady", plan(dataset=unready), "Pending", EXPIRY),
        ("AccessDenied", plan(anonymous), "Failed", {**EXPIRY, "createdBy": "", "startedBy": ""}),
        ("AccessDenied", plan(workspace(users=["mallory@elsewhere.example"])), "Failed", TIMING),
        ("GPUTypeUnknown", plan(workspace(resources={"gpu": 1, "gpuType": "tpu-v9"})), "Failed", TIMING),
        ("EgressWidened", plan(pod=running, policies=(opener,)), "Failed", PINNED),
        ("Expired", plan(now=late), "Expired", PINNED),
        (
            "IdleTimeout",
            plan(idle, now=CREATED + timedelta(minutes=31), pod={"status": {}}),
            "Stopped",
            PINNED,
        ),
        ("SnapshotChanged", plan(job=other_copy), "Starting", PINNED),
        ("Stopped", plan(workspace(running=False)), "Stopped", PINNED),
        (
            "WaitingForStart",
            plan(by_steward, dataset=stewards, user_groups={steward: ("stewards",)}),
            "Pending",
            {**EXPIRY, "createdBy": steward, "startedBy": ""},
        ),
        ("EgressReachable", plan(probe=probe, nodes_simulated=False), "Failed", PINNED),
        ("SnapshotVerificationFailed", plan(job=failed_job), "Failed", PINNED),
        ("MaterializingSnapshot", starting, "Starting", PINNED),
        ("Unschedulable", plan(pod=unschedulable), "Pending", NOTEBOOK),
        ("Scheduling", plan(), "Starting", NOTEBOOK),
        ("Starting", plan(pod=on_node), "Starting", ON_NODE),
        ("Running", plan(pod=running), "Running", ON_NODE),
        ("QuotaExceeded", refused(plan(pod=running), "Pod", "exceeded quota: q"), "Pending", ON_NODE),
        ("SnapshotNotFound", snapshot_not_found(starting, "prostate", DIGEST, []), "Pending", PINNED),
    ]


def _workspace_written(plan: Any, current: Mapping[str, Any]) -> dict[str, Any]:
    """What handlers/workspace.py `_report` writes for ``plan`` over a Workspace whose status is ``current``."""
    return dict(plan.applied_to({"metadata": {"generation": 4}, "status": current}, NOW))


def test_every_workspace_status_typed_equals_todays_dict() -> None:
    cases = _workspace_cases()
    for reason, plan, phase, fields in cases:
        assert next(c.reason for c in plan.conditions if c.type == "Ready") == reason
        for current in ({}, WORKSPACE_CURRENT):
            expected = handler_today(current, fields, phase, list(plan.conditions), 4)
            assert _workspace_written(plan, current) == expected, reason
    # Every phase a Workspace can be in is among them.
    assert {phase for _, _, phase, _ in cases} == set(WorkspacePhase)


# -- every status the ExportRequest path writes --------------------------------------------------------------
# The same for airlock.plan.plan_export and what the handler adds: the promoted copy (handlers/export.py
# `_promote`; its checks then come from the check Job's result, judged by the plan) and the outbox of a
# release (`_carry_out`).

SNAPSHOT = DIGEST
FACTS = {"requestedBy": ALICE, "dataset": "prostate", "snapshot": SNAPSHOT}
ENTRIES = [{"path": "results/metrics.csv", "digest": "sha256:" + "12" * 32, "size": 3}]
CHECKS = [
    {"name": "NoDicom", "passed": True, "lookedAt": ["results/metrics.csv as CSV"], "findings": []},
    {
        "name": "NoIdentifiers",
        "passed": False,
        "lookedAt": ["results/metrics.csv as CSV"],
        "findings": [{"file": "results/metrics.csv", "detail": "pseudonym P-0001 in line 2"}],
    },
]
QUARANTINE = {"manifest": "quarantine/k.json", "files": ENTRIES, "bytes": 3}
BOB_SEEN = {
    "by": "bob@hospital.example",
    "role": "DataSteward",
    "verdict": "Approve",
    "reason": "aggregate",
    "at": "2026-11-20T12:00:00Z",
    "counted": True,
}
ALICE_SEEN = {
    "by": ALICE,
    "role": "SecurityOfficer",
    "verdict": "Approve",
    "reason": "fine",
    "at": "2026-11-20T12:00:00Z",
    "counted": False,
    "note": "the requester cannot decide on their own export",
}
OLGA_SEEN = {**BOB_SEEN, "by": "olga@hospital.example", "role": "SecurityOfficer", "reason": "fine"}
EXPORT_CURRENT = {
    **FACTS,
    "phase": "Checking",
    "observedGeneration": 0,
    "conditions": [
        {
            "type": "Quarantined",
            "status": "Unknown",
            "reason": "Verifying",
            "message": "the copy is done; verifying it into quarantine",
            "observedGeneration": 0,
            "lastTransitionTime": "2026-11-20T11:59:00Z",
        }
    ],
}


def _promoted(checking: Any) -> Any:
    """The plan handlers/export.py `_promote` writes once the copy is verified into quarantine."""
    from cleanroom.airlock.plan import quarantined

    return quarantined(checking, ENTRIES, "quarantine/k.json")


def _export_cases() -> list[tuple[str, Any, str, dict[str, Any]]]:
    """(the first condition's reason, plan, phase, the status fields today's plan and handler set) for every
    step of an ExportRequest."""
    from cleanroom.airlock.check_result import judge_result
    from cleanroom.airlock.plan import failed_promotion, plan_export
    from tests.unit.test_airlock_check_result import RUNNING, SUBJECT, raw, result
    from tests.unit.test_airlock_plan import (
        NOW,
        SETTINGS,
        checked,
        observed,
        officer,
        request,
        steward,
    )

    def plan(status: dict[str, Any] | None = None, decisions: Any = None, **seen: Any) -> Any:
        return plan_export(request(status, decisions), observed(**seen), SETTINGS)

    copying = {"phase": "Copying"}
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    ended = {"status": {"succeeded": 1, "completionTime": "2026-11-20T11:58:00Z"}}
    stranger = request()
    stranger["metadata"]["annotations"]["cleanroom.dev/requested-by"] = "mallory@elsewhere.example"
    checking = plan(copying, job={"status": {}}, staged=True)
    own = {**officer(ALICE), "groups": ["officers", "stewards"]}
    released = checked(
        phase="Released",
        expiresAt="2026-11-20T13:00:00Z",
        conditions=[{"type": "Released", "status": "True", "reason": "Released", "message": ""}],
    )
    later = NOW + timedelta(days=2)
    quarantined = {**FACTS, "quarantine": QUARANTINE}
    judged = judge_result(raw(result()), SUBJECT).checks
    return [
        ("Copying", plan(), "Copying", FACTS),
        ("CopyFailed", plan(copying, job=failed_job), "Failed", FACTS),
        ("CopyFailed", plan(copying, job=ended), "Failed", FACTS),
        ("Verifying", checking, "Checking", FACTS),
        ("CopyFailed", failed_promotion("u-1", "the copy did not verify", checking.status), "Failed", FACTS),
        (
            "NotAUser",
            plan_export(stranger, observed(), SETTINGS),
            "Rejected",
            {"requestedBy": "mallory@elsewhere.example"},
        ),
        ("NotCopiedInTime", plan(copying, now=later), "Expired", {}),
        ("Copied", _promoted(checking), "Checking", {**FACTS, "quarantine": QUARANTINE}),
        ("Checking", plan({**FACTS, "quarantine": QUARANTINE}), "Checking", {}),
        (
            "CheckerFailed",
            plan({**FACTS, "quarantine": QUARANTINE}, check_job=failed_job),
            "Rejected",
            {},
        ),
        (
            "ChecksPassed",
            plan(quarantined, check_job=RUNNING, check_result=raw(result())),
            "Checking",
            {"checks": list(judged)},
        ),
        (
            "CheckResultInvalid",
            plan(quarantined, check_job=RUNNING, check_result=b"{}"),
            "Rejected",
            {},
        ),
        ("ChecksFailed", plan(checked(CHECKS)), "Rejected", {}),
        (
            "WaitingForApprovers",
            plan(checked(), [own, steward()]),
            "AwaitingApproval",
            {"decisions": [ALICE_SEEN, BOB_SEEN], "expiresAt": "2026-11-21T11:00:00Z"},
        ),
        (
            "RejectedByApprover",
            plan(checked(), [steward(verdict="Reject")]),
            "Rejected",
            {"decisions": [{**BOB_SEEN, "verdict": "Reject"}]},
        ),
        (
            "NoDecisionInTime",
            plan(checked(), [steward()], now=later),
            "Expired",
            {"decisions": [{**BOB_SEEN, "at": "2026-11-22T12:00:00Z"}]},
        ),
        (
            "TwoPersonRule",
            plan(checked(), [steward(), officer()]),
            "Released",
            {
                "decisions": [BOB_SEEN, OLGA_SEEN],
                "releasedAt": "2026-11-20T12:00:00Z",
                "expiresAt": "2026-11-20T13:00:00Z",
            },
        ),
        ("", plan(released, [steward(), officer()]), "Released", {}),
        ("DownloadTimeOver", plan(released, [steward(), officer()], now=later), "Expired", {}),
        ("", plan({"phase": "Rejected"}), "Rejected", {}),
    ]


def _export_written(plan: Any, current: Mapping[str, Any], outbox: str = "") -> dict[str, Any]:
    """What handlers/export.py `_write` writes for ``plan`` (released to ``outbox``) over ``current``."""
    from cleanroom.airlock.plan import with_outbox

    plan = with_outbox(plan, outbox) if outbox else plan
    return dict(plan.applied_to({"metadata": {"generation": 4}, "status": current}, NOW))


def test_every_export_request_status_typed_equals_todays_dict() -> None:
    from cleanroom.airlock.plan import TERMINAL_PHASES

    cases = _export_cases()
    for reason, plan, phase, fields in cases:
        assert (plan.conditions[0].reason if plan.conditions else "") == reason
        released = plan.release
        outbox = "outbox/prostate-ai/u-1/" if released else ""
        fields = {**fields, "outbox": outbox} if released else fields
        for current in ({}, EXPORT_CURRENT):
            if not plan.conditions and phase in TERMINAL_PHASES:
                current = {**current, "phase": phase}  # a request that is over, as read
            expected = handler_today(current, fields, phase, list(plan.conditions), 4)
            assert _export_written(plan, current, outbox) == expected, reason
    # Every phase the operator writes (Pending is the CRD's word for a request it has not judged yet).
    assert {phase for _, _, phase, _ in cases} == set(ExportRequestPhase) - {ExportRequestPhase.PENDING}
