"""The egress self-check: the probe's report decides EgressRestricted, and only an all-blocked report is True.

Every route the tests try is on 127.0.0.1: nothing here sends traffic off this machine.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from cleanroom.egress_probe import probe
from cleanroom.workspaces import Observed, WorkspaceSettings, plan_workspace
from cleanroom.workspaces.egress import PROBE_LABEL, build_probe_pod, judge_probe
from cleanroom.workspaces.manifests import WorkspaceRef
from tests.unit.test_workspace_lifecycle import observed, workspace


def finished(report: dict[str, Any] | str) -> dict[str, Any]:
    message = report if isinstance(report, str) else json.dumps(report)
    return {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": message}}}]}}


def test_all_routes_blocked_is_restricted() -> None:
    condition = judge_probe(finished({"reached": [], "blocked": ["internet", "dns"]}))
    assert (condition.status, condition.reason) == ("True", "AllRoutesBlocked")


def test_any_route_reached_is_not_restricted_and_named() -> None:
    condition = judge_probe(finished({"reached": ["cloud-metadata"], "blocked": ["internet"]}))
    assert (condition.status, condition.reason) == ("False", "EgressReachable")
    assert "cloud-metadata" in condition.message


def test_missing_running_or_garbled_probe_is_unknown() -> None:
    assert judge_probe(None).reason == "ProbePending"
    assert (
        judge_probe({"status": {"containerStatuses": [{"state": {"running": {}}}]}}).reason == "ProbeRunning"
    )
    assert judge_probe(finished("not json")).reason == "ProbeFailed"


def test_probe_pod_carries_the_notebook_labels_so_its_policies_apply() -> None:
    ref = WorkspaceRef("seg", "team", "u1", "sha256:" + "a" * 64, "prostate")
    pod = build_probe_pod(ref, WorkspaceSettings())
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "notebook" and labels[PROBE_LABEL] == "true"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False


def test_on_nodes_that_run_pods_the_probe_is_started_and_judged() -> None:
    plan = plan_workspace(
        workspace(), Observed(**{**observed().__dict__, "nodes_simulated": False}), WorkspaceSettings()
    )
    assert any(PROBE_LABEL in m["metadata"].get("labels", {}) for m in plan.apply)
    egress = next(c for c in plan.conditions if c.type == "EgressRestricted")
    assert egress.reason == "ProbePending"
    reached = finished({"reached": ["internet"], "blocked": []})
    plan = plan_workspace(
        workspace(),
        Observed(**{**observed().__dict__, "nodes_simulated": False, "probe": reached}),
        WorkspaceSettings(),
    )
    assert next(c for c in plan.conditions if c.type == "EgressRestricted").status == "False"


def test_the_probe_reports_what_it_reached_and_what_it_did_not() -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))
        open_port, closed_port = listening.getsockname()[1], closed.getsockname()[1]
        report = probe((("open", "127.0.0.1", open_port), ("closed", "127.0.0.1", closed_port)), timeout=1)
    assert report == {"reached": ["open"], "blocked": ["closed"]}


def test_a_route_counts_as_reached_only_if_it_still_answers_once_the_plugin_had_time() -> None:
    """A network plugin programs a new pod's policies a moment after it starts: the probe tries again until
    every route is blocked (saying how long that took) or the settle time is over (then reached)."""
    from cleanroom import egress_probe

    now = [0.0]
    answers = iter([True, True, False])

    def sleep(seconds: float) -> None:
        now[0] += seconds

    original = egress_probe.try_route
    egress_probe.try_route = lambda *_args, **_kw: next(answers)  # type: ignore[assignment]
    try:
        late = egress_probe.settled_probe((("internet", "192.0.2.1", 80),), clock=lambda: now[0], sleep=sleep)
        assert late == {"reached": [], "blocked": ["internet"], "settledAfter": 4.0}
        egress_probe.try_route = lambda *_args, **_kw: True  # type: ignore[assignment]
        never = egress_probe.settled_probe(
            (("internet", "192.0.2.1", 80),), settle=10, clock=lambda: now[0], sleep=sleep
        )
        assert never == {"reached": ["internet"], "blocked": [], "settledAfter": None}
    finally:
        egress_probe.try_route = original  # type: ignore[assignment]
    condition = judge_probe(finished(late))
    assert (condition.status, condition.reason) == ("True", "AllRoutesBlocked")
    assert "held after 4.0 s" in condition.message
    assert judge_probe(finished(never)).reason == "EgressReachable"


def _policy(name: str, selector: dict, **spec: object) -> dict:
    return {"metadata": {"name": name}, "spec": {"podSelector": selector, **spec}}


def test_another_policy_that_selects_the_notebook_and_allows_egress_widens_it() -> None:
    from cleanroom.workspaces.egress import widening_policies

    labels = {"app.kubernetes.io/component": "notebook", "cleanroom.dev/workspace": "seg"}
    own = ("cleanroom-default-deny", "ws-seg")
    policies = [
        # Ours, by name: never counted.
        _policy("cleanroom-default-deny", {}, policyTypes=["Ingress", "Egress"], egress=[], ingress=[]),
        _policy(
            "ws-seg", {"matchLabels": labels}, policyTypes=["Egress"], egress=[{"to": [{"ipBlock": {}}]}]
        ),
        # Opens egress to everything for every pod of the namespace: widens.
        _policy("allow-all-egress", {}, policyTypes=["Egress"], egress=[{}]),
        # policyTypes left out: Egress is implied by an egress section.
        _policy(
            "implied",
            {"matchExpressions": [{"key": "cleanroom.dev/workspace", "operator": "In", "values": ["seg"]}]},
            egress=[{}],
        ),
        # Ingress from anywhere: a server in the kernel could hand data to whoever connects.
        _policy("ingress-open", {"matchLabels": {"cleanroom.dev/workspace": "seg"}}, ingress=[{}]),
        # Deny-only and policies for other pods do not widen.
        _policy("deny-only", {}, policyTypes=["Egress"], egress=[]),
        _policy("other-pods", {"matchLabels": {"app": "web"}}, policyTypes=["Egress"], egress=[{}]),
        _policy(
            "not-seg",
            {
                "matchExpressions": [
                    {"key": "cleanroom.dev/workspace", "operator": "NotIn", "values": ["seg"]}
                ]
            },
            egress=[{}],
        ),
    ]
    assert widening_policies(policies, labels, own) == ("allow-all-egress", "implied", "ingress-open")
    assert widening_policies(policies[:2] + policies[5:], labels, own) == ()
