"""The operator against the real API server: a Workspace whose Dataset is missing says so, and recovers."""

from __future__ import annotations

import urllib.request
from typing import Any

from tests.integration.conftest import Kubectl, OperatorProcess
from tests.integration.test_crd_validation import VALID_DATASET, VALID_WORKSPACE, edited


def ready_condition(body: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})


def test_health_endpoint_answers(operator: OperatorProcess) -> None:
    with urllib.request.urlopen(operator.health_url, timeout=5) as response:
        assert response.status == 200


def test_workspace_without_dataset_reports_it_and_recovers_when_the_dataset_appears(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, unique_name: str
) -> None:
    workspace = edited(VALID_WORKSPACE, "spec.dataset.name", unique_name)
    kubectl.apply(workspace, "-n", namespace)

    body = kubectl.wait_for(
        lambda w: ready_condition(w).get("reason") == "DatasetNotFound", "workspace", "seg", "-n", namespace
    )
    ready = ready_condition(body)
    assert ready["status"] == "False"
    assert unique_name in ready["message"]
    assert ready["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["phase"] == "Pending"

    events = kubectl.wait_for(
        lambda e: any(i["reason"] == "DatasetNotFound" for i in e["items"]),
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=seg",
    )
    event = next(i for i in events["items"] if i["reason"] == "DatasetNotFound")
    assert event["type"] == "Warning" and unique_name in event["message"]

    # kubectl wait works on the condition, as the brief promises admins.
    kubectl.run("wait", "--for=condition=Ready=false", "workspace/seg", "-n", namespace, "--timeout=10s")

    kubectl.apply(edited(VALID_DATASET, "metadata.name", unique_name))
    try:
        body = kubectl.wait_for(
            lambda w: ready_condition(w).get("reason") == "DatasetNotReady",
            "workspace",
            "seg",
            "-n",
            namespace,
        )
        assert unique_name in ready_condition(body)["message"]
    finally:
        kubectl.run("delete", "dataset", unique_name, "--wait=false")
    kubectl.wait_for(
        lambda w: ready_condition(w).get("reason") == "DatasetNotFound", "workspace", "seg", "-n", namespace
    )


def test_observed_generation_follows_spec_changes(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, unique_name: str
) -> None:
    kubectl.apply(edited(VALID_WORKSPACE, "spec.dataset.name", unique_name), "-n", namespace)
    first = kubectl.wait_for(
        lambda w: "observedGeneration" in w.get("status", {}), "workspace", "seg", "-n", namespace
    )
    changed = edited(VALID_WORKSPACE, "spec.dataset.name", unique_name)
    changed["spec"]["purpose"] = "Validate the segmentation model on held-out cases"
    kubectl.apply(changed, "-n", namespace)
    generation = first["metadata"]["generation"] + 1
    body = kubectl.wait_for(
        lambda w: w.get("status", {}).get("observedGeneration") == generation,
        "workspace",
        "seg",
        "-n",
        namespace,
    )
    assert ready_condition(body)["observedGeneration"] == generation
