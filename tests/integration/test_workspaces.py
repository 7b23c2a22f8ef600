"""Workspaces on the real control plane: PSA-admitted hardened pods, real GPU scheduling, access control,
stop and start, expiry, idle culling, clean deletion, no duplicates across operator restarts, and the
audit trail of all of it."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.data import get_testdata_file

from cleanroom.api import CREATED_BY_ANNOTATION
from cleanroom.audit import key_fingerprint
from tests.integration.conftest import (
    AUDIT_DIR,
    CACHE,
    ISOLATED_GPU_LABEL,
    ISOLATED_GPU_TYPE,
    KUBECTL,
    STATE,
    VERSIONS,
    Kubectl,
    OperatorProcess,
    audit_signing_key,
)
from tests.integration.test_dataset_ingest import (
    dataset_manifest,
    make_secrets,
    ready,
    upload,
)

OWNED_KINDS = "pods,jobs,pvc,services,networkpolicies,secrets"


@pytest.fixture(scope="module")
def dataset(
    operator: OperatorProcess, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    name = f"wsds-{uuid.uuid4().hex[:8]}"
    secrets_ns = f"sec-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", secrets_ns)
    raw = tmp_path_factory.mktemp("raw")
    (raw / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    upload(raw, "raw-imaging", f"{name}/")
    make_secrets(kubectl, secrets_ns, b"k" * 32)
    body = dataset_manifest(name, secrets_ns, "raw-imaging", f"{name}/")
    body["spec"]["access"] = {
        # The suite creates the Workspaces, so it is a user: the operator builds only what a listed user
        # created and started (tenancy); tests/integration/test_admission.py narrows the namespaces.
        "users": ["alice@hospital.example", requester()],
        "groups": ["prostate-ai"],
        "namespaces": {"selector": EVERY_NAMESPACE},
    }
    kubectl.apply(body)
    kubectl.wait_for(lambda d: ready(d).get("status") == "True", "dataset", name, timeout=120)
    yield name
    kubectl.run("delete", "dataset", name, "--wait=false", check=False)
    kubectl.run("delete", "namespace", secrets_ns, "--wait=false", check=False)


# A Dataset's namespace selector that admits every namespace, said explicitly (an empty one is refused).
EVERY_NAMESPACE = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}


@functools.cache
def requester() -> str:
    """The suite's user name as the API server authenticates it: what its Workspaces name as their creator
    (the chart's admission policy, where installed, admits no other)."""
    kubeconfig = os.environ.get("KUBECONFIG", str(STATE / "kubeconfig"))
    review = subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return str(json.loads(review)["status"]["userInfo"]["username"])


def workspace(name: str, dataset: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "annotations": {CREATED_BY_ANNOTATION: requester()}},
        "spec": {
            "dataset": {"name": dataset},
            "users": ["alice@hospital.example"],
            "purpose": "Train a lesion segmentation model for the test suite",
            "image": "registry.example.org/cleanroom/notebook-cuda:2026.11",
            "resources": {"gpu": 0, "cpu": "1", "memory": "1Gi", "homeStorage": "1Gi"},
        },
    }
    body["spec"].update(spec)
    return body


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in body.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_ready(kubectl: Kubectl, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    return kubectl.wait_for(
        lambda w: condition(w, "Ready").get("status") == "True",
        "workspace",
        name,
        "-n",
        namespace,
        timeout=timeout,
    )


def wait_reason(kubectl: Kubectl, namespace: str, name: str, reason: str) -> dict[str, Any]:
    """Wait until the Workspace's Ready condition has ``reason``; return the Workspace."""
    return kubectl.wait_for(
        lambda w: condition(w, "Ready").get("reason") == reason, "workspace", name, "-n", namespace
    )


def owned(kubectl: Kubectl, namespace: str, name: str) -> list[str]:
    items = kubectl.get(OWNED_KINDS, "-n", namespace, "-l", f"cleanroom.dev/workspace={name}")["items"]
    return sorted(f"{i['kind']}/{i['metadata']['name']}" for i in items)


def test_workspace_becomes_ready_with_a_pod_admitted_under_psa_restricted(
    dataset: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(workspace("seg", dataset), "-n", namespace)
    kubectl.run("wait", "--for=condition=Ready", "workspace/seg", "-n", namespace, "--timeout=90s")
    body = kubectl.get("workspace", "seg", "-n", namespace)
    assert body["status"]["phase"] == "Running"
    assert condition(body, "DatasetMounted")["reason"] == "SnapshotVerified"
    assert condition(body, "Scheduled")["status"] == "True"
    egress = condition(body, "EgressRestricted")
    assert (egress["status"], egress["reason"]) == ("Unknown", "ProbeUnavailable")
    assert body["status"]["snapshot"]["digest"].startswith("sha256:")
    labels = kubectl.get("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # Enforcement is live: the same API server refuses a privileged pod in this namespace.
    rogue = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rogue", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
    }
    refused = kubectl.apply(rogue, check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
    pod = kubectl.get("pod", "ws-seg", "-n", namespace)
    assert pod["spec"]["automountServiceAccountToken"] is False
    # The materializer's Secret never holds a key, only a read grant for the pinned snapshot, and once the copy
    # is verified not even that: the grant is emptied (a namespace reader gets nothing to replay).
    secret = kubectl.get("secret", "ws-seg-reader", "-n", namespace)
    assert set(secret.get("data") or {}) <= {"grantUrl"}
    assert base64.b64decode((secret.get("data") or {}).get("grantUrl", "")).decode() == ""


GPU = {"gpuType": "nvidia-a100-80gb", "cpu": "1", "memory": "1Gi", "homeStorage": "1Gi"}
ISOLATED = {"gpuType": ISOLATED_GPU_TYPE, "cpu": "1", "memory": "1Gi", "homeStorage": "1Gi"}


@pytest.fixture
def isolated_gpu_node(kubectl: Kubectl) -> Iterator[str]:
    """A GPU node of its own (2 GPUs) that only this test's gpuType selects, so no other pod competes."""
    name = f"gpu-test-{uuid.uuid4().hex[:6]}"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                    ISOLATED_GPU_LABEL: "isolated",
                    "nvidia.com/gpu.present": "true",
                },
            },
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "2"},
                "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "2"},
            },
        }
    )
    kubectl.wait_for(
        lambda n: any(
            c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", [])
        ),
        "node",
        name,
    )
    yield name
    kubectl.run("delete", "node", name, "--wait=false", check=False)


def test_gpu_workspace_waits_for_a_free_gpu_and_starts_when_one_frees_up(
    dataset: str, kubectl: Kubectl, namespace: str, isolated_gpu_node: str
) -> None:
    kubectl.apply(workspace("filler", dataset, resources={"gpu": 2, **ISOLATED}), "-n", namespace)
    filler = wait_ready(kubectl, namespace, "filler")
    assert filler["status"]["node"] == isolated_gpu_node
    kubectl.apply(workspace("waiting", dataset, resources={"gpu": 1, **ISOLATED}), "-n", namespace)
    body = kubectl.wait_for(
        lambda w: condition(w, "Scheduled").get("status") == "False", "workspace", "waiting", "-n", namespace
    )
    assert "Insufficient nvidia.com/gpu" in condition(body, "Scheduled")["message"]
    assert condition(body, "Ready")["status"] == "False" and body["status"]["phase"] == "Pending"
    kubectl.run("delete", "workspace", "filler", "-n", namespace)
    body = wait_ready(kubectl, namespace, "waiting", timeout=120)
    assert body["status"]["gpus"] == 1 and body["status"]["node"] == isolated_gpu_node


def test_gpu_workspaces_land_on_the_gpu_pool_of_their_type(
    dataset: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(workspace("a100", dataset, resources={"gpu": 1, **GPU}), "-n", namespace)
    body = wait_ready(kubectl, namespace, "a100")
    node = kubectl.get("node", body["status"]["node"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"


def test_a_workspace_over_its_namespace_quota_says_so(dataset: str, kubectl: Kubectl, namespace: str) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-gpus", "namespace": namespace},
        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
    }
    kubectl.apply(quota)
    kubectl.apply(workspace("greedy", dataset, resources={"gpu": 1, **GPU}), "-n", namespace)
    body = wait_reason(kubectl, namespace, "greedy", "QuotaExceeded")
    assert "exceeded quota" in condition(body, "Ready")["message"]
    assert body["status"]["phase"] == "Pending"


def test_user_without_access_gets_nothing_until_granted_and_loses_it_when_revoked(
    dataset: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("create", "namespace", "cleanroom-system", check=False)
    no_groups = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cleanroom-user-groups", "namespace": "cleanroom-system"},
        "data": {"groups.json": "{}"},
    }
    kubectl.apply(no_groups)
    kubectl.apply(workspace("bob", dataset, users=["bob@hospital.example"]), "-n", namespace)
    body = wait_reason(kubectl, namespace, "bob", "AccessDenied")
    assert "bob@hospital.example" in condition(body, "Ready")["message"]
    time.sleep(2)
    assert owned(kubectl, namespace, "bob") == []

    # Group membership as the hub records it from verified sign-ins grants access.
    groups = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cleanroom-user-groups", "namespace": "cleanroom-system"},
        "data": {"groups.json": json.dumps({"bob@hospital.example": ["prostate-ai"]})},
    }
    kubectl.apply(groups)
    kubectl.run("annotate", "workspace", "bob", "-n", namespace, f"test/nudge={time.time()}", "--overwrite")
    wait_ready(kubectl, namespace, "bob")

    # Runtime revocation: the group leaves the Dataset's access list; the running workspace is stopped.
    kubectl.run(
        "patch", "dataset", dataset, "--type=merge", "-p", json.dumps({"spec": {"access": {"groups": []}}})
    )
    body = wait_reason(kubectl, namespace, "bob", "AccessDenied")
    kubectl.wait_for(
        lambda p: not p["items"],
        "pods",
        "-n",
        namespace,
        "-l",
        "cleanroom.dev/workspace=bob,app.kubernetes.io/component=notebook",
    )
    kubectl.wait_for(
        lambda e: "AccessRevoked" in {i["reason"] for i in e["items"]},
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=bob",
    )
    kubectl.run(
        "patch",
        "dataset",
        dataset,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"access": {"groups": ["prostate-ai"]}}}),
    )


def test_image_outside_the_allowed_registries_is_refused(
    dataset: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(workspace("miner", dataset, image="docker.io/someone/miner:latest"), "-n", namespace)
    body = wait_reason(kubectl, namespace, "miner", "ImageNotAllowed")
    assert "docker.io/someone/miner:latest" in condition(body, "Ready")["message"]
    assert owned(kubectl, namespace, "miner") == []


def test_stop_keeps_the_home_volume_and_start_brings_the_pod_back(
    dataset: str, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(workspace("pause", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "pause")
    kubectl.run(
        "patch", "workspace", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"running":false}}'
    )
    kubectl.wait_for(lambda w: w["status"].get("phase") == "Stopped", "workspace", "pause", "-n", namespace)
    kubectl.wait_for(
        lambda p: not p["items"],
        "pods",
        "-n",
        namespace,
        "-l",
        "cleanroom.dev/workspace=pause,app.kubernetes.io/component=notebook",
    )
    home = kubectl.get("pvc", "ws-pause-home", "-n", namespace)
    assert home["status"]["phase"] == "Bound"
    kubectl.run(
        "patch", "workspace", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"running":true}}'
    )
    wait_ready(kubectl, namespace, "pause")
    assert kubectl.get("pvc", "ws-pause-home", "-n", namespace)["metadata"]["uid"] == home["metadata"]["uid"]


def test_expired_workspace_is_stopped(dataset: str, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        workspace("brief", dataset, lifetime={"expiresAfter": "20s", "idleTimeout": "2h"}), "-n", namespace
    )
    body = kubectl.wait_for(
        lambda w: condition(w, "Expired").get("status") == "True",
        "workspace",
        "brief",
        "-n",
        namespace,
        timeout=90,
    )
    assert body["status"]["phase"] == "Expired"
    kubectl.wait_for(
        lambda p: not p["items"],
        "pods",
        "-n",
        namespace,
        "-l",
        "cleanroom.dev/workspace=brief,app.kubernetes.io/component=notebook",
    )


def test_idle_workspace_is_stopped_and_its_home_kept(dataset: str, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        workspace("idle", dataset, lifetime={"expiresAfter": "168h", "idleTimeout": "10s"}), "-n", namespace
    )
    wait_ready(kubectl, namespace, "idle")
    body = kubectl.wait_for(
        lambda w: (
            w["spec"]["running"] is False
            and condition(w, "Ready").get("reason") in ("IdleTimeout", "Stopped")
        ),
        "workspace",
        "idle",
        "-n",
        namespace,
        timeout=90,
    )
    assert body["status"]["phase"] == "Stopped"
    kubectl.wait_for(
        lambda e: "IdleTimeout" in {i["reason"] for i in e["items"]},
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=idle",
    )
    assert kubectl.get("pvc", "ws-idle-home", "-n", namespace)["status"]["phase"] == "Bound"


def test_restarts_create_no_duplicates_and_deletion_leaves_nothing(
    dataset: str, operator: OperatorProcess, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(workspace("solid", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "solid")
    before = owned(kubectl, namespace, "solid")
    operator.kill()
    operator.start()
    kubectl.run("annotate", "workspace", "solid", "-n", namespace, f"test/nudge={time.time()}", "--overwrite")
    time.sleep(5)
    after = [o for o in owned(kubectl, namespace, "solid") if not o.startswith("Pod/ws-solid-materialize")]
    assert after == [o for o in before if not o.startswith("Pod/ws-solid-materialize")]
    assert sum(1 for o in after if o.startswith("Pod/")) == 1
    kubectl.run("delete", "workspace", "solid", "-n", namespace)
    kubectl.wait_for(
        lambda items: not items["items"],
        OWNED_KINDS,
        "-n",
        namespace,
        "-l",
        "cleanroom.dev/workspace=solid",
        timeout=90,
    )


CYCLONUS = str(CACHE / "bin" / f"cyclonus-{VERSIONS['CYCLONUS_VERSION']}" / "cyclonus")


def _endpoint(ip: str, namespace: str = "", pod_labels: dict[str, str] | None = None) -> dict[str, Any]:
    if not namespace:
        return {"IP": ip}
    return {
        "IP": ip,
        "Internal": {
            "PodLabels": pod_labels or {},
            "NamespaceLabels": {"kubernetes.io/metadata.name": namespace},
            "Namespace": namespace,
        },
    }


def test_an_independent_evaluator_finds_egress_only_to_the_hub_api_and_ingress_only_from_the_proxy(
    dataset: str, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """cyclonus (not our code) evaluates the real NetworkPolicies against the real pod labels."""
    kubectl.apply(workspace("sealed", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "sealed")
    policies = tmp_path / "policies"
    policies.mkdir()
    for item in kubectl.get("networkpolicies", "-n", namespace)["items"]:
        clean = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": item["metadata"]["name"], "namespace": namespace},
            "spec": item["spec"],
        }
        (policies / f"{item['metadata']['name']}.yaml").write_text(yaml.safe_dump(clean))
    notebook = kubectl.get("pod", "ws-sealed", "-n", namespace)["metadata"]["labels"]
    materializer = {**notebook, "app.kubernetes.io/component": "materializer"}
    proxy = {"app.kubernetes.io/name": "cleanroom-hub", "app.kubernetes.io/component": "proxy"}
    hub = {"app.kubernetes.io/name": "cleanroom-hub", "app.kubernetes.io/component": "hub"}
    me = _endpoint("10.0.0.10", namespace, notebook)
    cases = [
        ("notebook to the internet", me, _endpoint("8.8.8.8"), "TCP", 443, False),
        ("notebook to cloud metadata", me, _endpoint("169.254.169.254"), "TCP", 80, False),
        (
            "notebook to DNS",
            me,
            _endpoint("10.0.0.53", "kube-system", {"k8s-app": "kube-dns"}),
            "UDP",
            53,
            False,
        ),
        ("notebook to the API server", me, _endpoint("10.96.0.1"), "TCP", 443, False),
        ("notebook to the snapshot store", me, _endpoint("10.0.5.5"), "TCP", 7070, False),
        (
            "notebook to its materializer",
            me,
            _endpoint("10.0.0.11", namespace, materializer),
            "TCP",
            7070,
            False,
        ),
        ("proxy to notebook", _endpoint("10.0.1.1", "cleanroom-system", proxy), me, "TCP", 8888, True),
        ("proxy to notebook ssh", _endpoint("10.0.1.1", "cleanroom-system", proxy), me, "TCP", 22, False),
        # The hub checks that a started server answers (JupyterHub polls its /api before routing to it).
        ("hub to notebook", _endpoint("10.0.1.2", "cleanroom-system", hub), me, "TCP", 8888, True),
        ("hub to notebook ssh", _endpoint("10.0.1.2", "cleanroom-system", hub), me, "TCP", 22, False),
        (
            "neighbour pod to notebook",
            _endpoint("10.0.0.11", namespace, materializer),
            me,
            "TCP",
            8888,
            False,
        ),
        ("internet to notebook", _endpoint("8.8.8.8"), me, "TCP", 8888, False),
        # The one way out: the hub's API, where the single-user server checks sign-ins.
        ("notebook to the hub API", me, _endpoint("10.0.1.2", "cleanroom-system", hub), "TCP", 8081, True),
        (
            "notebook to the hub, other port",
            me,
            _endpoint("10.0.1.2", "cleanroom-system", hub),
            "TCP",
            8000,
            False,
        ),
        ("notebook to the proxy", me, _endpoint("10.0.1.1", "cleanroom-system", proxy), "TCP", 8000, False),
        (
            "notebook to a look-alike hub in its own namespace",
            me,
            _endpoint("10.0.0.12", namespace, hub),
            "TCP",
            8081,
            False,
        ),
        # A positive control: the evaluator does see allow rules (the materializer may reach the store).
        (
            "materializer to the store",
            _endpoint("10.0.0.11", namespace, materializer),
            _endpoint("10.0.5.5"),
            "TCP",
            7070,
            True,
        ),
    ]
    traffic = [
        {"Source": src, "Destination": dst, "Protocol": proto, "ResolvedPort": port, "ResolvedPortName": ""}
        for _name, src, dst, proto, port, _allowed in cases
    ]
    (tmp_path / "traffic.json").write_text(json.dumps(traffic))
    result = subprocess.run(
        [
            CYCLONUS,
            "analyze",
            "--mode",
            "query-traffic",
            "--policy-path",
            str(policies),
            "--traffic-path",
            str(tmp_path / "traffic.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    verdicts = [v == "TRUE" for v in re.findall(r"IS ALLOWED\? \|\s+(TRUE|FALSE)", result.stdout)]
    assert len(verdicts) == len(cases), result.stdout
    wrong = [
        (name, allowed)
        for (name, *_rest, allowed), got in zip(cases, verdicts, strict=True)
        if got != allowed
    ]
    assert wrong == [], f"cyclonus disagrees on {wrong}:\n{result.stdout}"


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cleanroom.cli", "audit", *args], capture_output=True, text=True, timeout=60
    )


def events(**filters: str) -> list[dict[str, Any]]:
    args = [f"--{k}={v}" for k, v in filters.items()]
    result = audit("query", "--dir", str(AUDIT_DIR), "-o", "json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["event"] for line in result.stdout.splitlines() if line.strip()]


def test_ingest_and_workspace_lifecycle_are_audited_and_verify_offline(
    operator: OperatorProcess,
    dataset: str,
    kubectl: Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    ingest = [e["action"] for e in events(dataset=dataset)]
    assert {"dataset.ingest.started", "snapshot.published", "dataset.ingest.finished"} <= set(ingest)

    kubectl.apply(workspace("audited", dataset), "-n", namespace)
    wait_ready(kubectl, namespace, "audited")
    kubectl.run(
        "patch", "workspace", "audited", "-n", namespace, "--type=merge", "-p", '{"spec":{"running":false}}'
    )
    kubectl.wait_for(lambda w: w["status"].get("phase") == "Stopped", "workspace", "audited", "-n", namespace)
    kubectl.run("delete", "workspace", "audited", "-n", namespace)
    kubectl.wait_for(
        lambda _: any(
            e["action"] == "workspace.deleted" and e["resources"]["namespace"] == namespace
            for e in events(workspace="audited")
        ),
        "namespace",
        namespace,
    )
    trail = [e for e in events(workspace="audited") if e["resources"]["namespace"] == namespace]
    assert [e["action"] for e in trail] == [
        "workspace.created",
        "workspace.started",
        "workspace.stopped",
        "workspace.deleted",
    ]
    assert all(e["purpose"].startswith("Train a lesion") for e in trail)
    assert all(e["actor"]["kind"] == "service" for e in trail)

    table = audit("query", "--dir", str(AUDIT_DIR), "--workspace", "audited")
    assert table.returncode == 0 and "workspace.started" in table.stdout
    csv = audit("query", "--dir", str(AUDIT_DIR), "--action", "workspace.", "-o", "csv")
    assert csv.stdout.splitlines()[0] == "seq,time,actor,action,outcome,dataset,workspace,reason"

    exported = tmp_path / "export"
    assert audit("export", str(exported), "--dir", str(AUDIT_DIR)).returncode == 0
    # Trust anchored outside the trail: the fingerprint of the suite operator's signing key.
    trusted = ("--trusted-key", key_fingerprint(audit_signing_key()))
    verified = audit("verify", *trusted, str(exported))
    assert verified.returncode == 0 and verified.stdout.startswith("OK:")

    lines = (exported / "records.jsonl").read_text().splitlines()
    victim = json.loads(lines[1])
    victim["event"]["outcome"] = "denied"
    lines[1] = json.dumps(victim)
    (exported / "records.jsonl").write_text("\n".join(lines) + "\n")
    failed = audit("verify", *trusted, str(exported))
    assert failed.returncode == 1 and f"FAILED at record {victim['seq']}: changed" in failed.stdout
