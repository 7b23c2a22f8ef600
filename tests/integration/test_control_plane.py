"""The local stack is a real Kubernetes control plane with simulated GPU nodes, and a real S3 server."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import K8S_VERSION, STATE, Kubectl


def test_api_server_reports_the_pinned_kubernetes_version(kubectl: Kubectl) -> None:
    version = json.loads(kubectl.run("get", "--raw=/version").stdout)
    assert version["gitVersion"] == K8S_VERSION


def test_gpu_nodes_are_labelled_and_tainted_like_a_gpu_pool(kubectl: Kubectl) -> None:
    everything = kubectl.get("nodes")["items"]
    # The simulated pool; the real node (tests below) advertises GPUs too but carries a taint of its own.
    nodes = [
        n for n in everything if n["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"
    ]
    gpu_nodes = [n for n in nodes if n["status"]["allocatable"].get("nvidia.com/gpu")]
    cpu_nodes = [n for n in nodes if not n["status"]["allocatable"].get("nvidia.com/gpu")]
    assert len(gpu_nodes) >= 2 and len(cpu_nodes) >= 2
    for node in gpu_nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_the_real_node_runs_beside_the_simulated_ones_and_advertises_gpus(kubectl: Kubectl) -> None:
    unavailable = STATE / "real-node.unavailable"
    if unavailable.exists():
        pytest.skip(f"no real node on this machine: {unavailable.read_text().strip()}")
    node = kubectl.get("node", "real-0")
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert {"key": "cleanroom.dev/real-node", "value": "true", "effect": "NoSchedule"} in node["spec"][
        "taints"
    ]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_scheduler_binds_a_gpu_pod_to_a_gpu_node_and_kwok_runs_it(kubectl: Kubectl, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-probe", "namespace": namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "example.org/none:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    kubectl.apply(pod)
    running = kubectl.wait_for(
        lambda p: p["status"].get("phase") == "Running", "pod", "gpu-probe", "-n", namespace
    )
    assert running["spec"]["nodeName"].startswith("gpu-")


def test_a_gpu_pod_without_the_toleration_is_not_scheduled(kubectl: Kubectl, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "no-toleration", "namespace": namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "example.org/none:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]
        },
    }
    kubectl.apply(pod)

    def unschedulable(p: dict) -> bool:  # type: ignore[type-arg]
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in p["status"].get("conditions", [])
        )

    pending = kubectl.wait_for(unschedulable, "pod", "no-toleration", "-n", namespace)
    message = next(c["message"] for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "nvidia.com/gpu" in message


def test_s3_server_is_a_real_server_storing_objects(tmp_path: Path) -> None:
    from minio import Minio

    env = dict(line.split("=", 1) for line in (STATE / "s3.env").read_text().splitlines() if "=" in line)
    endpoint = env["S3_ENDPOINT"].removeprefix("http://")
    client = Minio(endpoint, access_key=env["S3_ACCESS_KEY"], secret_key=env["S3_SECRET_KEY"], secure=False)
    bucket = f"t-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    payload = os.urandom(4096)
    source = tmp_path / "blob"
    source.write_bytes(payload)
    client.fput_object(bucket, "a/blob", str(source))
    assert client.get_object(bucket, "a/blob").read() == payload
    wrong = Minio(endpoint, access_key=env["S3_ACCESS_KEY"], secret_key="not-the-secret", secure=False)
    try:
        wrong.get_object(bucket, "a/blob")
    except Exception as error:
        assert "SignatureDoesNotMatch" in str(error) or "AccessDenied" in str(error)
    else:
        raise AssertionError("the S3 server accepted a wrong secret key")
