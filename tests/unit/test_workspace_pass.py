"""One Workspace pass without a cluster: it plans once, the read grant's URL goes into the plan it carries
out, it asks to be judged again at the plan's deadline, and a Workspace that is gone is forgotten."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cleanroom.handlers import _kube
from cleanroom.handlers import workspace as handler
from cleanroom.workspaces import Plan, WorkspaceSettings
from tests.unit.test_workspace_lifecycle import DIGEST, observed, workspace

URL = "https://s3.example/grants/x.json?X-Amz-Signature=f00"


class Cluster:
    def dataset_for(self, spec: Any) -> None:
        return None


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The cluster as a pass sees it: a Workspace whose snapshot is still to be copied."""
    seen: dict[str, Any] = {"plans": 0, "carried": [], "grants": []}
    body = workspace()
    monkeypatch.setattr(_kube, "get_workspace", lambda namespace, name: seen.get("body", body))
    monkeypatch.setattr(handler, "settings", WorkspaceSettings)
    monkeypatch.setattr(handler, "observe", lambda fresh, dataset, cluster: observed(job=None))
    plan_workspace = handler.plan_workspace

    def counted(*args: Any) -> Plan:
        seen["plans"] += 1
        return plan_workspace(*args)

    def grant_url(key: Any, dataset: str, plan: Plan, now: Any) -> str:
        seen["grants"].append((key, dataset, plan.grant))
        return URL if plan.grant else ""

    monkeypatch.setattr(handler, "plan_workspace", counted)
    monkeypatch.setattr(handler, "grant_url", grant_url)
    monkeypatch.setattr(handler, "carry_out", lambda fresh, plan, obs: seen["carried"].append(plan))
    return seen


def test_a_pass_plans_once_and_carries_out_the_plan_with_the_grant_in_its_secret(
    world: dict[str, Any],
) -> None:
    again = handler._reconcile_once(("team", "seg"), handler.Request(None, Cluster()))  # type: ignore[arg-type]
    assert world["plans"] == 1
    assert world["grants"] == [(("team", "seg"), "prostate", DIGEST)]
    (plan,) = world["carried"]
    secret = next(m for m in plan.apply if m["kind"] == "Secret")
    assert secret["stringData"]["grantUrl"] == URL
    # Judged again by the clock alone at the plan's deadline, at most CLOCK_SECONDS away.
    assert again is not None and again.seconds == handler.CLOCK_SECONDS
    assert again.request().dataset is None


def test_a_workspace_that_is_gone_is_forgotten_and_not_judged_again(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    world["body"] = None
    handler.APPLIED.record(("team", "seg"), {"kind": "Service", "metadata": {"name": "ws-seg"}})
    again = handler._reconcile_once(("team", "seg"), handler.Request(None, Cluster()))  # type: ignore[arg-type]
    assert again is None and world["carried"] == []
    assert handler.APPLIED.due(("team", "seg"), {"kind": "Service", "metadata": {"name": "ws-seg"}})


def test_the_plans_deadline_sets_when_the_clock_judges_again(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler, "CLOCK_SECONDS", 86400.0)
    world["body"] = workspace(lifetime={"expiresAfter": "1h", "idleTimeout": "2h"})
    again = handler._reconcile_once(("team", "seg"), handler.Request(None, Cluster()))  # type: ignore[arg-type]
    # observed() is 5 minutes after creation: the expiry comes in 55 minutes (and half a second).
    assert again is not None and again.seconds == timedelta(minutes=55).total_seconds() + 0.5


def test_a_deleted_default_deny_is_put_back_at_once_even_with_only_running_workspaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, the handler only forgot the namespace's guard and enqueued its Workspaces; a running
    Workspace's plan does not ask for the guard, so the default-deny came back at the next reapply."""
    applied: list[str] = []
    monkeypatch.setattr(handler, "settings", WorkspaceSettings)
    monkeypatch.setattr(_kube, "label_namespace", lambda namespace, labels: None)
    monkeypatch.setattr(_kube, "apply", lambda manifest: applied.append(manifest["metadata"]["name"]))
    monkeypatch.setattr(handler, "enqueue", lambda *args: None)
    monkeypatch.setattr(handler, "_cluster", lambda kwargs: Cluster())
    handler.GUARDED.ensure("team", lambda: None)  # guarded a moment ago: not due for five minutes
    handler.policy_deleted(
        namespace="team",
        name="cleanroom-default-deny",
        labels={"app.kubernetes.io/managed-by": "cleanroom"},
        workspaces_by_key={},
    )
    assert "cleanroom-default-deny" in applied
