"""The plan as ordered gates, and the read grant as an intent the plan carries (so a pass plans once)."""

from __future__ import annotations

import dataclasses
from typing import Any

from cleanroom.workspaces import plan_workspace, snapshot_not_found, with_grant
from tests.unit.test_workspace_lifecycle import (
    DIGEST,
    JOB_DONE,
    SETTINGS,
    dataset,
    observed,
    reasons,
    workspace,
)

URL = "https://s3.example/grants/x.json?X-Amz-Signature=f00"


def secret_url(plan: Any) -> str:
    return str(next(m for m in plan.apply if m["kind"] == "Secret")["stringData"]["grantUrl"])


def test_a_plan_that_copies_the_snapshot_asks_for_its_grant_and_takes_the_url_without_planning_again() -> (
    None
):
    plan = plan_workspace(workspace(), observed(job=None), SETTINGS)
    assert plan.grant == DIGEST and secret_url(plan) == ""
    granted = with_grant(plan, URL)
    assert secret_url(granted) == URL
    # Nothing but the Secret's URL changes: the same plan, ready to carry out.
    others = [m for m in granted.apply if m["kind"] != "Secret"]
    assert others == [m for m in plan.apply if m["kind"] != "Secret"]
    assert dataclasses.replace(granted, apply=plan.apply) == plan


def test_a_failed_copy_still_holds_its_grant_for_the_next_try() -> None:
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "message": "hash mismatch"}]}}
    plan = plan_workspace(workspace(), observed(job=failed), SETTINGS)
    assert reasons(plan)["Ready"] == "SnapshotVerificationFailed" and plan.grant == DIGEST


def test_once_the_copy_is_verified_no_grant_is_asked_for_and_the_secret_stays_empty() -> None:
    plan = plan_workspace(workspace(), observed(job=JOB_DONE), SETTINGS)
    assert plan.grant == "" and secret_url(plan) == ""
    assert with_grant(plan, URL) == plan


def test_a_plan_that_makes_nothing_asks_for_no_grant() -> None:
    for plan in (
        plan_workspace(workspace(running=False), observed(job=None), SETTINGS),
        plan_workspace(workspace(users=["mallory@elsewhere.example"]), observed(job=None), SETTINGS),
        plan_workspace(workspace(), observed(job=None, dataset=None), SETTINGS),
    ):
        assert plan.apply == () and plan.grant == ""


def test_a_snapshot_that_is_not_there_drops_the_intent_with_the_objects() -> None:
    plan = plan_workspace(workspace(), observed(job=None), SETTINGS)
    missing = snapshot_not_found(plan, "prostate", DIGEST, [])
    assert missing.apply == () and missing.grant == ""


def test_the_first_gate_that_decides_decides() -> None:
    # An image from elsewhere is refused before the Dataset is looked at (there is none here) ...
    assert (
        reasons(plan_workspace(workspace(image="docker.io/x:1"), observed(dataset=None), SETTINGS))["Ready"]
        == "ImageNotAllowed"
    )
    # ... access before expiry (an expired Workspace of someone without access says why it may not run) ...
    late = observed(now=observed().now.replace(year=2027))
    assert reasons(plan_workspace(workspace(users=["m@x"]), late, SETTINGS))["Ready"] == "AccessDenied"
    # ... and expiry before a stopped Workspace's quiet state.
    assert reasons(plan_workspace(workspace(running=False), late, SETTINGS))["Ready"] == "Expired"
    assert reasons(plan_workspace(workspace(), observed(dataset=dataset(users=[])), SETTINGS))["Ready"] == (
        "AccessDenied"
    )
