"""Tenancy: only the namespaces a Dataset admits, and only people it names (as the API server knows them),
get anything made for a Workspace; nothing is materialized before a listed user starts it."""

from __future__ import annotations

from typing import Any

import pytest

from cleanroom.api import Access, LabelSelector, NamespaceSelection, decode
from cleanroom.workspaces import Observed, WorkspaceSettings, audit_transitions, plan_workspace
from cleanroom.workspaces.tenancy import Accounts, judge_tenancy
from tests.unit.test_workspace_lifecycle import (
    CREATED,
    JOB_DONE,
    dataset,
    kinds,
    observed,
    reasons,
    workspace,
)

ALICE, BOB, STEWARD = "alice@hospital.example", "bob@hospital.example", "steward@hospital.example"
OPERATOR = "system:serviceaccount:cleanroom-system:cleanroom-operator"
ACCOUNTS = Accounts(operator=frozenset({OPERATOR}))


def written(namespace: str = "team", **annotations: str) -> dict[str, Any]:
    body = workspace()
    body["metadata"]["namespace"] = namespace
    body["metadata"]["annotations"] = {
        f"cleanroom.dev/{k.replace('_', '-')}": v for k, v in annotations.items()
    }
    return body


def access(**fields: Any) -> Access:
    base: dict[str, Any] = {"users": [ALICE], "namespaces": {"names": ["team"]}}
    return decode(Access, {**base, **fields})


def judge(
    body: dict[str, Any], acc: Access | None = None, labels: dict[str, str] | None = None, **kw: Any
) -> Any:
    return judge_tenancy(body, acc or access(), labels or {}, kw.get("groups", {}), ACCOUNTS)


def test_another_teams_namespace_is_denied_whoever_created_it() -> None:
    verdict = judge(written("other-team", created_by=ALICE))
    assert "namespace other-team is not one that Dataset prostate admits" in verdict.denial


def test_namespaces_are_admitted_by_name_or_by_label_selector() -> None:
    by_labels = access(namespaces={"selector": {"matchLabels": {"cleanroom.dev/project": "prostate"}}})
    assert not judge(written("p1", created_by=ALICE), by_labels, {"cleanroom.dev/project": "prostate"}).denial
    assert judge(written("p1", created_by=ALICE), by_labels, {"cleanroom.dev/project": "lung"}).denial
    expression = access(
        namespaces={
            "selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["dev"]}]}
        }
    )
    assert not judge(written("p2", created_by=ALICE), expression, {"tier": "prod"}).denial
    assert judge(written("p2", created_by=ALICE), expression, {"tier": "dev"}).denial


def test_a_dataset_that_names_no_namespaces_admits_none() -> None:
    assert NamespaceSelection().admits("team", {}) is False
    assert LabelSelector(match_labels={"a": "b"}).matches({}) is False
    assert judge(written(created_by=ALICE), decode(Access, {"users": [ALICE]})).denial


def test_a_workspace_without_a_creator_from_admission_is_denied() -> None:
    assert "no cleanroom.dev/created-by annotation" in judge(written()).denial


def test_the_creator_not_spec_users_decides() -> None:
    # The attack: a stranger lists a user of the Dataset in spec.users; the creator is the stranger.
    verdict = judge(written(created_by="mallory@elsewhere.example"))
    assert "mallory@elsewhere.example created it but is not a user of Dataset prostate" in verdict.denial


def test_a_member_of_a_listed_group_or_of_the_admin_groups_may_create() -> None:
    groups = {BOB: ("prostate-ai",), STEWARD: ("stewards",)}
    acc = access(groups=["prostate-ai"], adminGroups=["stewards"])
    assert not judge(written(created_by=BOB), acc, groups=groups).denial
    assert not judge(written(created_by=STEWARD), acc, groups=groups).denial
    assert judge(written(created_by=STEWARD), access(groups=["prostate-ai"]), groups=groups).denial


def test_an_admin_creates_but_only_a_listed_user_starts() -> None:
    acc = access(adminGroups=["stewards"])
    groups = {STEWARD: ("stewards",)}
    waiting = judge(written(created_by=STEWARD), acc, groups=groups)
    assert not waiting.denial and waiting.started_by == "" and "waiting for a user" in waiting.waiting
    started = judge(written(created_by=STEWARD, started_by=ALICE), acc, groups=groups)
    assert started.started_by == ALICE and not started.waiting


def test_a_stranger_who_last_changed_it_is_denied() -> None:
    verdict = judge(written(created_by=ALICE, last_changed_by="mallory@elsewhere.example"))
    assert "mallory@elsewhere.example last changed it" in verdict.denial


def test_the_operator_may_change_it_and_a_start_by_the_hub_names_the_user() -> None:
    assert not judge(written(created_by=ALICE, last_changed_by=OPERATOR)).denial
    # The hub changes only spec.running; the admission policy lets it alone name another user here.
    verdict = judge(written(created_by=ALICE, started_by=ALICE))
    assert not verdict.denial and verdict.started_by == ALICE
    # An account is never a user: a start recorded for the operator starts nothing.
    assert judge(written(created_by=ALICE, started_by=OPERATOR)).waiting


def plan(body: dict[str, Any], **kw: Any) -> Any:
    return plan_workspace(body, observed(accounts=ACCOUNTS, **kw), WorkspaceSettings())


def test_another_teams_workspace_gets_nothing_and_the_audit_says_who() -> None:
    result = plan(written("other-team", created_by="mallory@elsewhere.example"))
    assert reasons(result)["Ready"] == "AccessDenied" and result.apply == () and result.delete_pod
    assert result.status.created_by == "mallory@elsewhere.example"
    [(action, outcome, reason)] = audit_transitions(None, result)
    assert (action, outcome) == ("access.denied", "denied")
    assert "created by mallory@elsewhere.example" in reason


def test_nothing_is_materialized_until_a_listed_user_starts_it() -> None:
    groups = {STEWARD: ("stewards",)}
    steward_made = written(created_by=STEWARD)
    steward_made["spec"]["dataset"] = {"name": "prostate", "snapshot": ""}
    ds = dataset()
    ds["spec"]["access"]["adminGroups"] = ["stewards"]
    waiting = plan(steward_made, dataset=ds, user_groups=groups, job=None)
    assert (
        reasons(waiting)["Ready"] == "WaitingForStart" and waiting.apply == () and waiting.phase == "Pending"
    )
    steward_made["metadata"]["annotations"]["cleanroom.dev/started-by"] = ALICE
    started = plan(steward_made, dataset=ds, user_groups=groups, job=None)
    assert "Job" in kinds(started) and started.status.started_by == ALICE


def grant_in(result: Any) -> str:
    secret = next(m for m in result.apply if m["kind"] == "Secret")
    return str(secret["stringData"]["grantUrl"])


@pytest.mark.parametrize(("job", "expected"), [(None, "https://s3/grant?sig=1"), (JOB_DONE, "")])
def test_the_grant_secret_is_emptied_once_the_copy_is_verified(job: Any, expected: str) -> None:
    observed_ = Observed(now=CREATED, dataset=dataset(), job=job, grant_url="https://s3/grant?sig=1")
    result = plan_workspace(written(created_by=ALICE), observed_, WorkspaceSettings())
    assert grant_in(result) == expected
