"""The real kube-apiserver's audit webhook (started by make cluster-up with hack/audit-policy.yaml) delivers
exec, port-forward and Dataset/Workspace writes to the audit service, which records them in the trail."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from cleanroom.audit import read_records
from tests.integration.conftest import KUBECTL, STATE, Kubectl

TRAIL = STATE / "audit"


def recorded(action: str, **resources: str) -> list[dict[str, Any]]:
    return [
        r["event"]
        for r in read_records(TRAIL)
        if r["event"]["action"] == action
        and all(r["event"]["resources"].get(k) == v for k, v in resources.items())
    ]


def wait_recorded(action: str, **resources: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = recorded(action, **resources)
        if found:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no {action} {resources} in {TRAIL}")


def test_exec_port_forward_and_workspace_changes_reach_the_audit_trail(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("run", "side-channel", "-n", namespace, "--image=registry.example.org/x:1", "--restart=Never")
    kubectl.wait_for(
        lambda p: p.get("status", {}).get("phase") == "Running", "pod", "side-channel", "-n", namespace
    )
    # kwok's pods do not execute, so the exec itself fails; the API server audits the attempt all the same.
    kubectl.run("exec", "side-channel", "-n", namespace, "--", "cat", "/data/x.dcm", check=False)
    forward = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            kubectl.kubeconfig,
            "port-forward",
            "-n",
            namespace,
            "pod/side-channel",
            "0:8888",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    forward.terminate()
    forward.wait(timeout=10)
    execd = wait_recorded("k8s.exec", namespace=namespace, pod="side-channel")
    assert execd["actor"]["name"] and "cat" in execd["reason"]
    wait_recorded("k8s.portforward", namespace=namespace, pod="side-channel")

    kubectl.apply(
        {
            "apiVersion": "cleanroom.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "audited-change"},
            "spec": {
                "dataset": {"name": "no-such-dataset"},
                "users": ["alice@hospital.example"],
                "purpose": "Check that kubectl writes to Workspaces are audited",
                "image": "registry.example.org/cleanroom/notebook-cuda:2026.11",
                "resources": {"gpu": 0, "cpu": "1", "memory": "1Gi", "homeStorage": "1Gi"},
                "running": False,
            },
        },
        "-n",
        namespace,
    )
    change = wait_recorded("k8s.change", namespace=namespace, workspace="audited-change")
    assert change["outcome"] == "success"
    kubectl.run("delete", "workspace", "audited-change", "-n", namespace, "--wait=false")
