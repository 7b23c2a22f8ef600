"""What the operator asks the API server's discovery, against the real one: whether a kind is served. A
VolumeSnapshotClass named on a cluster without the snapshot CRDs makes Workspaces say what to fix
(lifecycle: VolumeSnapshotsUnavailable); this is the answer that decides it, and CRDs installed after the
operator started are found without a restart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cleanroom.handlers import _kube
from cleanroom.workspaces.snapshot_volumes import SNAPSHOT_API_VERSION
from tests.integration.conftest import Kubectl


@pytest.fixture
def throwaway_group(kubectl: Kubectl) -> Iterator[str]:
    group = f"t{uuid.uuid4().hex[:8]}.discovery.cleanroom.dev"
    yield group
    kubectl.run("delete", "crd", f"probes.{group}", "--ignore-not-found", "--wait=false", check=False)


def crd(group: str) -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"probes.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }


def test_a_kind_is_served_once_its_crd_is_installed(
    kubectl: Kubectl, throwaway_group: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", kubectl.kubeconfig)
    # The local stack installs the snapshot CRDs (hack/csi-snapshots-up.sh).
    assert _kube.serves(SNAPSHOT_API_VERSION, "VolumeSnapshot")
    assert not _kube.serves(f"{throwaway_group}/v1", "Probe")
    kubectl.apply(crd(throwaway_group))
    kubectl.wait_for(
        lambda o: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in o.get("status", {}).get("conditions", [])
        ),
        "crd",
        f"probes.{throwaway_group}",
    )
    # Within the cache's time the answer stands; after it, the operator's discovery finds the new kind.
    assert not _kube.serves(f"{throwaway_group}/v1", "Probe")
    monkeypatch.setattr(_kube, "SERVES_TTL", 0.0)
    assert _kube.serves(f"{throwaway_group}/v1", "Probe")
