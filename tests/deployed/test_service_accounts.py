"""The deployed release's own service accounts, as whoever holds their tokens (a flaw in parsing hostile DICOM
inside the operator, a compromised hub) would use them: the audit signing key cannot be read, and the
admission policies refuse what falls outside cleanroom's own shapes. Each refusal has a positive control."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from tests.deployed.conftest import SAMPLE_NS, SAMPLE_WS, Deployed
from tests.integration.conftest import Kubectl


def account(deployed: Deployed, name: str) -> str:
    return f"system:serviceaccount:{deployed.namespace}:cleanroom-{name}"


def as_account(
    kubectl: Kubectl, who: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return kubectl.run(*args, "--as", who, stdin=stdin, check=False)


@pytest.mark.parametrize("name", ["operator", "hub"])
def test_the_operator_and_the_hub_cannot_read_the_audit_signing_key(
    kubectl: Kubectl, deployed: Deployed, name: str
) -> None:
    secret = ["get", "secret", "cleanroom-audit-signing-key", "-n", deployed.namespace]
    # The key exists and an admin reads it (the positive control); the accounts are refused.
    assert kubectl.run(*secret, check=False).returncode == 0
    refused = as_account(kubectl, account(deployed, name), *secret)
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr


def _pod(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "cleanroom"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "c",
                    "image": "localhost/cleanroom/notebook-cpu:any",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
            **spec,
        },
    }


def test_the_operators_account_is_refused_a_hostpath_pod_and_another_service_account(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    operator = account(deployed, "operator")
    hostpath = _pod(
        f"attack-{uuid.uuid4().hex[:5]}",
        SAMPLE_NS,
        volumes=[{"name": "root", "hostPath": {"path": "/"}}],
    )
    refused = as_account(
        kubectl, operator, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(hostpath)
    )
    # Refused twice over: Pod Security (the guarded namespace is restricted) and the operator-pods policy.
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
    # A service account of the namespace (a team's CI, say, with its own rights): never the operator's to use.
    kubectl.run("create", "serviceaccount", "team-deployer", "-n", SAMPLE_NS, check=False)
    other_sa = _pod(f"attack-{uuid.uuid4().hex[:5]}", SAMPLE_NS, serviceAccountName="team-deployer")
    refused = as_account(
        kubectl, operator, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(other_sa)
    )
    assert refused.returncode != 0 and "cleanroom-operator-pods" in refused.stderr, refused.stderr
    # The positive control: a pod of cleanroom's shape in a guarded namespace is admitted for it.
    admitted = as_account(
        kubectl, operator, "create", "--dry-run=server", "-f", "-",
        stdin=json.dumps(_pod(f"ok-{uuid.uuid4().hex[:5]}", SAMPLE_NS)),
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr


def test_the_hubs_account_may_start_a_workspace_but_not_change_its_users(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    hub = account(deployed, "hub")
    patch = ["patch", "workspace", SAMPLE_WS, "-n", SAMPLE_NS, "--type=merge", "--dry-run=server", "-p"]
    users = as_account(kubectl, hub, *patch, json.dumps({"spec": {"users": ["mallory@elsewhere.example"]}}))
    assert users.returncode != 0 and "denied" in users.stderr.lower(), users.stderr
    running = as_account(kubectl, hub, *patch, json.dumps({"spec": {"running": True}}))
    assert running.returncode == 0, running.stderr


def test_the_hubs_account_reads_a_notebook_pod_by_name_and_nothing_more_of_pods(
    kubectl: Kubectl, deployed: Deployed, sample: dict[str, Any]
) -> None:
    """The hub waits for a stopped session's pod to go (its meter reports the last totals with the server's
    token): a get by name, and no list, watch, logs, exec or write."""
    hub = account(deployed, "hub")
    pod = f"ws-{SAMPLE_WS}"
    got = as_account(kubectl, hub, "get", "pod", pod, "-n", SAMPLE_NS, "-o", "name")
    assert got.returncode == 0 and got.stdout.strip() == f"pod/{pod}", got.stderr
    for refused_args in (
        ("get", "pods", "-n", SAMPLE_NS, "--as", hub),
        ("logs", pod, "-c", "notebook", "-n", SAMPLE_NS, "--as", hub),
        # --as before the command's "--": after it, it is the container's argument and the exec is the admin's.
        ("exec", pod, "-c", "notebook", "-n", SAMPLE_NS, "--as", hub, "--", "true"),
        ("delete", "pod", pod, "-n", SAMPLE_NS, "--dry-run=server", "--as", hub),
    ):
        refused = kubectl.run(*refused_args, check=False)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (
            refused_args,
            refused.stderr,
        )
