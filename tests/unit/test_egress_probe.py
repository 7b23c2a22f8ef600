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
