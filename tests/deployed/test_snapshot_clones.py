"""Block storage cloned per namespace, on the real node (workspaces.snapshotVolumes.mode shared with a
volumeSnapshotClass): the stack's CSI driver with snapshots (hack/csi_hostpath.py under the real
snapshot-controller and csi-snapshotter) stands for EBS or Ceph RBD. Two Workspaces of alice in two team
namespaces over one snapshot: one materializer Job copies and verifies it once, one VolumeSnapshot of that
verified volume is taken, and each Workspace's claim is restored from it into a volume of its own, which its
notebook cannot write (EROFS from the kernel's user). A tenant of one namespace cannot restore the content made
for the other (and can, as a control, restore one pre-bound to her own VolumeSnapshot); nor can she make a
Workspace's VolumeSnapshot or claim before the operator does (one of another Workspace's data would be mounted
as the verified snapshot). Everything is collected once no Workspace pins the snapshot.

The module upgrades the install for its tests, then back, and has the sample Workspace started afresh
(hack/deployed-sample.sh), as test_shared_snapshot_volume.py does.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cleanroom.api.contract import object_name, snapshot_object_name, snapshot_volume_name
from tests.deployed.conftest import ALICE, ROOT, Deployed, PortForward, exec_python, notebook_pod, wait_for
from tests.deployed.teams import start_workspaces, team_namespace
from tests.deployed.test_notebook_confinement import WRITE_DATA
from tests.deployed.test_shared_snapshot_volume import READ_DATA, _deployed_or_fail, _settings, _volume_of
from tests.integration.conftest import Kubectl

LABEL = "cleanroom.dev/test-clone"
DATASET = "deployed-clone"
DRIVER = "hostpath.csi.cleanroom.dev"
BLOCK_CLASS = "real-node-block"
SNAPSHOTS = "snapshot.storage.k8s.io"


@pytest.fixture(scope="module")
def snapshots_namespace(kubectl: Kubectl, deployed: Deployed) -> Iterator[str]:
    if kubectl.run("get", "volumesnapshotclass", BLOCK_CLASS, check=False).returncode != 0:
        pytest.fail(
            f"the stack has no VolumeSnapshotClass {BLOCK_CLASS}: hack/csi-snapshots-up.sh did not run"
        )
    _deployed_or_fail(
        {
            "workspaces": {
                "snapshotStorageClass": BLOCK_CLASS,
                "snapshotVolumes": {
                    "mode": "shared",
                    "blockProvisioners": [DRIVER],
                    "volumeSnapshotClass": BLOCK_CLASS,
                },
            }
        }
    )
    settings = _settings(kubectl, deployed)
    assert settings.get("snapshotVolumeSnapshotClass") == BLOCK_CLASS, settings
    try:
        yield str(settings["snapshotVolumeNamespace"])
    finally:
        _deployed_or_fail()
        kubectl.run("delete", "pv", "-l", "app.kubernetes.io/component=snapshot-volume", "--wait=false")
        kubectl.run(
            "delete",
            "volumesnapshotcontents",
            "-l",
            "app.kubernetes.io/component=snapshot-volume",
            "--wait=false",
        )
        sample = subprocess.run(
            [str(ROOT / "hack/deployed-sample.sh")], capture_output=True, text=True, timeout=900
        )
        assert sample.returncode == 0, sample.stderr[-4000:]


@pytest.fixture(scope="module")
def teams(kubectl: Kubectl, snapshots_namespace: str) -> Iterator[list[str]]:
    """Two team namespaces where alice manages Workspaces and, for the attack, claims and VolumeSnapshots."""
    resources = f"persistentvolumeclaims,volumesnapshots.{SNAPSHOTS}"
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                team_namespace(kubectl, f"clone-{team}", LABEL, DATASET, "Deployed suite: clones", resources)
            )
            for team in ("a", "b")
        ]


@pytest.fixture(scope="module")
def running(
    kubectl: Kubectl, deployed: Deployed, proxy: PortForward, teams: list[str]
) -> list[tuple[str, str]]:
    pairs = [(ns, f"seg-{ns.split('-')[1]}") for ns in teams]
    return start_workspaces(kubectl, deployed, proxy, pairs, LABEL, DATASET)


def _digest(kubectl: Kubectl) -> str:
    return str(kubectl.get("dataset", DATASET)["status"]["snapshot"]["digest"])


def test_two_namespaces_restore_one_verified_copy_into_volumes_neither_can_write(
    kubectl: Kubectl, snapshots_namespace: str, running: list[tuple[str, str]]
) -> None:
    digest = _digest(kubectl)
    copy = snapshot_object_name(DATASET, digest)
    pods = kubectl.get("pods", "-n", snapshots_namespace, "-l", f"job-name={copy}-materialize")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]  # copied from the store once
    source = kubectl.get(f"volumesnapshot.{SNAPSHOTS}", "-n", snapshots_namespace, copy)
    assert source["status"]["readyToUse"] is True, source["status"]
    source_volume = _volume_of(kubectl, snapshots_namespace, copy)
    handles, contents = {source_volume["spec"]["csi"]["volumeHandle"]}, []
    for ns, name in running:
        status = kubectl.get("workspace", "-n", ns, name)["status"]
        assert status["snapshotVolume"] == "clone", status
        assert (
            kubectl.run("get", "job", "-n", ns, object_name(name, "materialize"), check=False).returncode != 0
        )
        claim = kubectl.get("pvc", "-n", ns, object_name(name, "data"))
        assert claim["spec"]["dataSource"] == {
            "apiGroup": SNAPSHOTS,
            "kind": "VolumeSnapshot",
            "name": object_name(name, "data"),
        }, claim["spec"]
        own = kubectl.get(f"volumesnapshot.{SNAPSHOTS}", "-n", ns, object_name(name, "data"))
        assert own["status"]["boundVolumeSnapshotContentName"] == snapshot_volume_name(
            ns, name, DATASET, digest
        )
        volume = _volume_of(kubectl, ns, object_name(name, "data"))
        # A disk of its own, restored by the storage: neither the copy's nor the other Workspace's.
        assert volume["spec"]["csi"]["driver"] == DRIVER
        handles.add(volume["spec"]["csi"]["volumeHandle"])
        content = kubectl.get(
            f"volumesnapshotcontent.{SNAPSHOTS}", snapshot_volume_name(ns, name, DATASET, digest)
        )
        assert content["spec"]["volumeSnapshotRef"]["namespace"] == ns
        assert content["spec"]["deletionPolicy"] == "Retain"
        pod = notebook_pod(kubectl, ns, name)["metadata"]["name"]
        attempt = exec_python(kubectl, ns, pod, WRITE_DATA)
        assert attempt == {"create": "EROFS", "delete": "EROFS", "append": "EROFS"}, attempt
        contents.append(exec_python(kubectl, ns, pod, READ_DATA))
    assert len(handles) == 3
    assert contents[0] and contents[0] == contents[1]


def _snapshot(namespace: str, name: str, content: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{SNAPSHOTS}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"volumeSnapshotContentName": content}},
    }


def _restore(namespace: str, name: str, snapshot: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": BLOCK_CLASS,
            "resources": {"requests": {"storage": "2Gi"}},
            "dataSource": {"apiGroup": SNAPSHOTS, "kind": "VolumeSnapshot", "name": snapshot},
        },
    }


def _consumer(namespace: str, claim: str, image: str) -> dict[str, Any]:
    """A pod on the real node mounting ``claim`` (the class binds a claim for its first consumer), made by the
    test as administrator: tenants have no pod rights, but one with them must get no further."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"mount-{claim}", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [{"key": "cleanroom.dev/real-node", "operator": "Exists"}],
            "nodeSelector": {"kubernetes.io/hostname": "real-0"},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "mount",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["true"],
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }


def test_a_tenant_of_another_namespace_cannot_restore_the_content_made_for_the_first(
    kubectl: Kubectl, deployed: Deployed, running: list[tuple[str, str]]
) -> None:
    (ns_a, name_a), (ns_b, _) = running
    content = snapshot_volume_name(ns_a, name_a, DATASET, _digest(kubectl))
    # Alice holds VolumeSnapshots and claims in team b: she names team a's content.
    kubectl.apply(_snapshot(ns_b, "steal", content), "--as", ALICE)
    kubectl.apply(_restore(ns_b, "steal", "steal"), "--as", ALICE)
    kubectl.apply(_consumer(ns_b, "steal", deployed.notebook_image))
    time.sleep(20)
    stolen = kubectl.get(f"volumesnapshot.{SNAPSHOTS}", "-n", ns_b, "steal")
    assert not (stolen.get("status") or {}).get("readyToUse"), stolen.get("status")
    assert kubectl.get("pvc", "-n", ns_b, "steal")["status"]["phase"] == "Pending"
    assert (
        kubectl.get(f"volumesnapshotcontent.{SNAPSHOTS}", content)["spec"]["volumeSnapshotRef"]["namespace"]
        == ns_a
    )
    # Nor may she make a content of her own over the handle: contents are cluster-scoped.
    can = kubectl.run(
        "auth", "can-i", "create", f"volumesnapshotcontents.{SNAPSHOTS}", "--as", ALICE, check=False
    )
    assert can.stdout.strip() == "no", can.stdout
    kubectl.run("delete", "pod", "-n", ns_b, "mount-steal", "--wait=false")
    kubectl.run("delete", "pvc,volumesnapshot", "-n", ns_b, "steal", "--wait=false")
    # The control: a content over the same handle, pre-bound to her snapshot, is restored at once.
    handle = kubectl.get(f"volumesnapshotcontent.{SNAPSHOTS}", content)["spec"]["source"]["snapshotHandle"]
    control = {
        "apiVersion": f"{SNAPSHOTS}/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": f"clone-attack-control-{ns_b}"},
        "spec": {
            "deletionPolicy": "Retain",
            "driver": DRIVER,
            "source": {"snapshotHandle": handle},
            "volumeSnapshotRef": {"namespace": ns_b, "name": "steal-control"},
        },
    }
    kubectl.apply(control)
    try:
        kubectl.apply(_snapshot(ns_b, "steal-control", control["metadata"]["name"]), "--as", ALICE)
        kubectl.apply(_restore(ns_b, "steal-control", "steal-control"), "--as", ALICE)
        kubectl.apply(_consumer(ns_b, "steal-control", deployed.notebook_image))
        kubectl.wait_for(
            lambda c: c["status"].get("phase") == "Bound", "pvc", "-n", ns_b, "steal-control", timeout=90
        )
    finally:
        kubectl.run("delete", "pod", "-n", ns_b, "mount-steal-control", "--wait=false", check=False)
        kubectl.run("delete", "pvc,volumesnapshot", "-n", ns_b, "steal-control", "--wait=false", check=False)
        kubectl.run(
            "delete", "volumesnapshotcontent", control["metadata"]["name"], "--wait=false", check=False
        )


def test_a_tenant_cannot_make_a_workspaces_volume_snapshot_before_the_operator(
    kubectl: Kubectl, deployed: Deployed, running: list[tuple[str, str]]
) -> None:
    """Alice holds VolumeSnapshots and claims in team a: before starting a new Workspace there she makes its
    VolumeSnapshot herself, of the running Workspace's claim (or a claim restored from it). Mounted, it would
    pass for the new Workspace's verified snapshot; the workspace-volumes admission policy refuses both."""
    (ns, name), _ = running
    planted = {
        "apiVersion": f"{SNAPSHOTS}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": "ws-planted-data", "namespace": ns},
        "spec": {
            "volumeSnapshotClassName": BLOCK_CLASS,
            "source": {"persistentVolumeClaimName": object_name(name, "data")},
        },
    }
    refused = kubectl.run("apply", "-f", "-", "--as", ALICE, stdin=json.dumps(planted), check=False)
    assert refused.returncode != 0 and "only the operator makes a Workspace data volume" in refused.stderr
    claim = _restore(ns, "ws-planted-data", object_name(name, "data"))
    refused = kubectl.run("apply", "-f", "-", "--as", ALICE, stdin=json.dumps(claim), check=False)
    assert refused.returncode != 0 and "only the operator makes a Workspace data volume" in refused.stderr
    # The control: the same VolumeSnapshot under a name of her own is admitted (she holds the right).
    planted["metadata"]["name"] = "planted-control"
    kubectl.apply(planted, "--as", ALICE)
    kubectl.run("delete", f"volumesnapshot.{SNAPSHOTS}", "-n", ns, "planted-control", "--wait=false")


def test_the_copy_its_snapshot_and_the_contents_are_collected_when_no_workspace_pins_it(
    kubectl: Kubectl, snapshots_namespace: str, running: list[tuple[str, str]]
) -> None:
    digest = _digest(kubectl)
    copy = snapshot_object_name(DATASET, digest)
    contents = [snapshot_volume_name(ns, name, DATASET, digest) for ns, name in running]
    (ns_a, name_a), (ns_b, name_b) = running
    kubectl.run("delete", "workspace", "-n", ns_a, name_a, "--as", ALICE)
    time.sleep(10)
    assert (
        kubectl.run(
            "get", f"volumesnapshot.{SNAPSHOTS}", "-n", snapshots_namespace, copy, check=False
        ).returncode
        == 0
    )
    kubectl.run("delete", "workspace", "-n", ns_b, name_b, "--as", ALICE)

    def collected() -> bool:
        left = kubectl.run(
            "get", f"pvc,job,volumesnapshot.{SNAPSHOTS}", "-n", snapshots_namespace, "-o", "name", check=False
        ).stdout
        found = json.loads(kubectl.run("get", f"volumesnapshotcontents.{SNAPSHOTS}", "-o", "json").stdout)[
            "items"
        ]
        return copy not in left and not any(c["metadata"]["name"] in contents for c in found)

    wait_for(collected, 180, "the copy, its VolumeSnapshot and both contents to be collected", interval=2)
