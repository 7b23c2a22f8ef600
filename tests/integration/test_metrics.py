"""Prometheus scrapes the real processes: the operator (as its Deployment runs it, with --metrics-port), the
audit service (TLS, as the chart serves it) and the hub (JupyterHub's /hub/metrics with Prometheus's own
read:metrics token), and finds the named series after real work: a Dataset ingested, a Workspace judged,
events written, a sign-in and a refusal."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.audit_service_process import AuditService, audit_service, event
from tests.integration.conftest import Kubectl, OperatorProcess
from tests.integration.hub_process import Hub, run_hub
from tests.integration.test_workspaces import dataset, wait_ready, workspace

__all__ = ["audit_service", "dataset"]  # fixtures

METRICS_TOKEN = secrets.token_hex(24)


def series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in found.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


def test_the_operator_serves_reconciles_workspaces_by_phase_ingest_and_snapshot_bytes(
    operator: OperatorProcess, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    name = f"metrics-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, dataset, running=True), "-n", namespace)
    wait_ready(kubectl, namespace, name)
    with urllib.request.urlopen(operator.metrics_url, timeout=10) as response:
        assert response.status == 200
        found = series(response.read().decode())
    assert total(found, "cleanroom_reconciles_total", kind="Workspace") >= 1
    assert total(found, "cleanroom_reconciles_total", kind="Dataset") >= 1
    assert total(found, "cleanroom_reconcile_duration_seconds_count", kind="Workspace") >= 1
    assert total(found, "cleanroom_workspaces", phase="Running") >= 1
    assert {labels["phase"] for labels, _ in found["cleanroom_workspaces"]} >= {"Pending", "Failed"}
    assert total(found, "cleanroom_ingest_files_total", outcome="kept") >= 1
    assert total(found, "cleanroom_ingest_files_per_second", dataset=dataset) > 0
    snapshot = kubectl.get("dataset", dataset)["status"]["snapshot"]
    assert total(found, "cleanroom_snapshot_bytes", dataset=dataset) == snapshot["bytes"]


def test_the_audit_service_serves_events_chain_length_checkpoint_age_and_verification_failures(
    audit_service: AuditService,
) -> None:
    body = json.dumps({"events": [event(), event()]}).encode()
    request = urllib.request.Request(
        f"{audit_service.url}/api/v1/events",
        data=body,
        headers={
            "Authorization": f"Bearer {audit_service.writer_token()}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10, context=audit_service.tls()) as response:
        assert response.status == 201
    time.sleep(1.1)  # the checkpoint's age is in seconds
    with urllib.request.urlopen(
        f"{audit_service.url}/metrics", timeout=10, context=audit_service.tls()
    ) as response:
        found = series(response.read().decode())
    assert total(found, "cleanroom_audit_events_received_total", intake="writers") >= 2
    assert total(found, "cleanroom_audit_chain_length") >= 2
    assert "cleanroom_audit_verification_failures_total" in found
    assert "cleanroom_audit_checkpoint_failures_total" in found
    if "cleanroom_audit_last_checkpoint_age_seconds" in found:  # the service seals once a minute
        assert total(found, "cleanroom_audit_last_checkpoint_age_seconds") >= 0


@pytest.fixture(scope="module")
def metered_hub(kubeconfig: str, operator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from run_hub(kubeconfig, tmp_path_factory, {"CLEANROOM_HUB_METRICS_TOKEN": METRICS_TOKEN})


def test_the_hub_serves_sign_ins_and_refusals_to_prometheuss_token_only(metered_hub: Hub) -> None:
    metered_hub.session("alice@hospital.example")
    expired = metered_hub.token("alice@hospital.example", lifetime_seconds=-120)
    refused = requests.get(f"{metered_hub.url}/hub/login", headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401
    url = f"{metered_hub.url}/hub/metrics"
    assert requests.get(url, allow_redirects=False).status_code in (302, 403)
    scrape = requests.get(url, headers={"Authorization": f"token {METRICS_TOKEN}"})
    assert scrape.status_code == 200, scrape.text[-500:]
    found = series(scrape.text)
    assert total(found, "cleanroom_hub_sign_ins_total") >= 1
    assert total(found, "cleanroom_hub_sign_in_refusals_total", status="401", kind="expired") >= 1
    # JupyterHub's own series, beside ours.
    assert "jupyterhub_total_users" in found
