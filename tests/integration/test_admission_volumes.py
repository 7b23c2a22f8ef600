"""The operator's new power in workspaces.snapshotVolumes.mode shared, attacked on the real API server:
creating cluster-scoped PersistentVolumes. A compromised operator account could otherwise make a volume over
any host path, writable, and bind it wherever it likes. The chart's `operator-volumes` policy admits only
what snapshot_volumes.build_workspace_volume makes; each attack is refused, then admitted once the policy's
binding is removed (so the refusal is the policy's), and the builder's own volume is admitted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cleanroom.workspaces import WorkspaceRef
from cleanroom.workspaces.snapshot_volumes import build_workspace_volume
from tests.integration.conftest import Kubectl
from tests.integration.test_admission import create_as, refused, render

SOURCE = {
    "spec": {
        "hostPath": {"path": "/var/lib/cleanroom-test/pvc-1", "type": "DirectoryOrCreate"},
        "capacity": {"storage": "1Gi"},
    }
}


@pytest.fixture(scope="module")
def operator(kubectl: Kubectl) -> Iterator[tuple[str, dict[str, Any]]]:
    """The chart's PersistentVolume rights and policy in the shared mode, under a release of this module's
    own: (the operator's account, the policy's binding)."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"vol{suffix}", f"vol-{suffix}"
    objects = [
        o
        for o in render(name, namespace, "--set", "workspaces.snapshotVolumes.mode=shared")
        if o["kind"]
        in (
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        )
        and "volumes" in o["metadata"]["name"]
    ]
    assert {o["kind"] for o in objects} == {
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }, [o["metadata"]["name"] for o in objects]
    kubectl.apply({"apiVersion": "v1", "kind": "List", "items": objects})
    account = f"system:serviceaccount:{namespace}:{name}-cleanroom-operator"
    binding = next(
        o
        for o in objects
        if o["kind"] == "ValidatingAdmissionPolicyBinding"
        and o["metadata"]["name"].endswith("-operator-volumes")
    )
    # Policies take effect a moment after they are created: wait until the first refusal is seen.
    for _ in range(60):
        result = create_as(kubectl, account, _volume(f"probe-{suffix}", accessModes=["ReadWriteMany"]))
        if result.returncode != 0 and "ValidatingAdmissionPolicy" in result.stderr:
            break
        kubectl.run("delete", "pv", f"probe-{suffix}", "--ignore-not-found", check=False)
        time.sleep(0.5)
    yield account, binding
    for item in objects:
        kubectl.run("delete", item["kind"], item["metadata"]["name"], "--ignore-not-found", check=False)


def _volume(name: str, **spec: Any) -> dict[str, Any]:
    """The builder's volume, renamed, with ``spec`` changed by the attacker."""
    ref = WorkspaceRef(name="seg", namespace="team-a", uid="u", snapshot="sha256:" + "ab" * 32, dataset="d")
    volume = build_workspace_volume(ref, SOURCE)
    volume["metadata"]["name"] = name
    volume["spec"].update(spec)
    return volume


ATTACKS = {
    "writable": {"accessModes": ["ReadWriteMany"]},
    "deleted-with-its-claim": {"persistentVolumeReclaimPolicy": "Delete"},
    "of-a-class-a-tenant-can-claim": {"storageClassName": "real-node"},
    "not-pre-bound": {"claimRef": None},
    "pre-bound-to-another-claim": {"claimRef": {"namespace": "team-a", "name": "anything"}},
    "nfs-writable": {"hostPath": None, "nfs": {"server": "10.0.0.1", "path": "/"}},
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_the_operator_is_refused_a_volume_that_is_not_the_builders(
    kubectl: Kubectl, operator: tuple[str, dict[str, Any]], attack: str
) -> None:
    account, binding = operator
    name = f"attack-{attack}-{uuid.uuid4().hex[:4]}"
    spec = {k: v for k, v in ATTACKS[attack].items() if v is not None}
    body = _volume(name, **spec)
    for key in (k for k, v in ATTACKS[attack].items() if v is None):
        body["spec"].pop(key)
    refused(create_as(kubectl, account, body), "read-only (ReadOnlyMany), retained")
    # The control: without the policy's binding the same volume is created.
    kubectl.run("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    try:
        for _ in range(60):
            result = create_as(kubectl, account, body)
            if result.returncode == 0:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stderr
    finally:
        kubectl.run("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)
        kubectl.apply(binding)
        # The API server's policy informer takes a moment to see the binding again.
        time.sleep(10)


def test_the_builders_volume_is_admitted_and_never_patched(
    kubectl: Kubectl, operator: tuple[str, dict[str, Any]]
) -> None:
    account, _ = operator
    name = f"shaped-{uuid.uuid4().hex[:4]}"
    try:
        result = create_as(kubectl, account, _volume(name))
        assert result.returncode == 0, result.stderr
        can = kubectl.run("auth", "can-i", "patch", "persistentvolumes", "--as", account, check=False)
        assert can.stdout.strip() == "no"
    finally:
        kubectl.run("delete", "pv", name, "--ignore-not-found", "--wait=false", check=False)
