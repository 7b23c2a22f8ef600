"""Workspaces under faults on the real control plane: a full quota after an operator restart, a pinned
snapshot that does not exist, and deletions while the operator is down, each ending in a true status and
an audit trail with every transition once."""

from __future__ import annotations

import time
from collections import Counter

from tests.integration.conftest import Kubectl, OperatorProcess
from tests.integration.test_workspaces import (
    condition,
    dataset,  # noqa: F401 (the module-scoped fixture)
    events,
    wait_ready,
    wait_reason,
    workspace,
)


def test_a_full_quota_does_not_fail_running_workspaces_after_a_restart(
    dataset: str,  # noqa: F811
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    kubectl.apply(workspace("full", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "full")
    claims = len(kubectl.get("pvc", "-n", namespace)["items"])
    # The namespace's quota now holds exactly the claims that exist: one more create would be refused,
    # and admission counts a create of an existing claim as one more.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "claims-full", "namespace": namespace},
            "spec": {"hard": {"persistentvolumeclaims": str(claims)}},
        }
    )
    kubectl.wait_for(
        lambda q: q.get("status", {}).get("used", {}).get("persistentvolumeclaims") == str(claims),
        "resourcequota",
        "claims-full",
        "-n",
        namespace,
    )
    operator.kill()
    operator.start()  # every claim is looked at again, with nothing remembered
    kubectl.run("annotate", "workspace", "full", "-n", namespace, f"test/nudge={time.time()}", "--overwrite")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body = kubectl.get("workspace", "full", "-n", namespace)
        assert condition(body, "Ready").get("reason") != "QuotaExceeded", condition(body, "Ready")
        time.sleep(1)
    assert condition(body, "Ready")["status"] == "True"


def test_a_workspace_pinned_to_a_missing_snapshot_says_what_exists(
    dataset: str,  # noqa: F811
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    published = kubectl.get("dataset", dataset)["status"]["snapshot"]["shortDigest"]
    missing = "sha256:" + "0" * 64
    body = workspace("pinned", dataset)
    body["spec"]["dataset"]["snapshot"] = missing
    kubectl.apply(body, "-n", namespace)
    body = wait_reason(kubectl, namespace, "pinned", "SnapshotNotFound")
    message = condition(body, "Ready")["message"]
    assert "000000000000" in message and published in message and "spec.dataset.snapshot" in message
    assert not kubectl.get("jobs", "-n", namespace)["items"]  # nothing is copied from nowhere
    warned = kubectl.get("events", "-n", namespace, "--field-selector", "involvedObject.name=pinned")
    assert "SnapshotNotFound" in {e["reason"] for e in warned["items"]}


def test_lifecycle_events_are_recorded_once_across_restarts_and_deletions_while_down(
    dataset: str,  # noqa: F811
    operator: OperatorProcess,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    kubectl.apply(workspace("churned", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "churned")
    operator.kill()
    operator.start()  # each start judges every Workspace again: nothing is recorded twice
    kubectl.run(
        "annotate", "workspace", "churned", "-n", namespace, f"test/nudge={time.time()}", "--overwrite"
    )
    time.sleep(3)
    operator.kill()
    kubectl.run("delete", "workspace", "churned", "-n", namespace)  # no operator sees this
    operator.start()

    def trail() -> Counter[str]:
        return Counter(
            e["action"] for e in events(workspace="churned") if e["resources"].get("namespace") == namespace
        )

    deadline = time.monotonic() + 60
    while trail()["workspace.deleted"] == 0 and time.monotonic() < deadline:
        time.sleep(1)
    operator.kill()
    operator.start()  # and the start-up reconciliation adds nothing the second time
    time.sleep(3)
    found = trail()
    assert found["workspace.created"] == 1, found
    assert found["workspace.started"] == 1, found
    assert found["workspace.deleted"] == 1, found
