"""One verified copy per snapshot (workspaces.snapshot_volumes, the shared mode): the copy made once for all
Workspaces, each Workspace's volume pre-bound to its own claim and read-only, the lifecycle in that mode,
and the collector's decision."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cleanroom.api.contract import snapshot_object_name, snapshot_volume_name
from cleanroom.workspaces import WorkspaceRef, WorkspaceSettings, load_settings, plan_workspace
from cleanroom.workspaces.snapshot_volumes import (
    Pin,
    build_shared_objects,
    build_workspace_claim,
    build_workspace_volume,
    collect,
    copy_objects,
    shared_copy,
    unshareable,
    workspace_pin,
)
from tests.unit.test_workspace_lifecycle import DIGEST, observed, reasons, workspace

SHARED = WorkspaceSettings(snapshot_volume_mode="shared", snapshot_storage_class="real-node")
HOST_PV = {
    "metadata": {"name": "pvc-123"},
    "spec": {
        "hostPath": {"path": "/var/local-path/pvc-123", "type": "DirectoryOrCreate"},
        "capacity": {"storage": "2Gi"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": []}]}},
        "accessModes": ["ReadWriteOnce"],
        "claimRef": {"namespace": "cleanroom-snapshots", "name": "snap-x"},
        "persistentVolumeReclaimPolicy": "Delete",
        "storageClassName": "real-node",
    },
}


def ref(namespace: str = "team-a", name: str = "seg") -> WorkspaceRef:
    return WorkspaceRef(name=name, namespace=namespace, uid="u1", snapshot=DIGEST, dataset="prostate")


def test_two_workspaces_in_two_namespaces_make_the_same_one_copy() -> None:
    first = build_shared_objects(shared_copy(ref("team-a"), SHARED), SHARED, "")
    second = build_shared_objects(shared_copy(ref("team-b", "other"), SHARED), SHARED, "")
    assert first == second
    assert {m["metadata"]["namespace"] for m in first} == {"cleanroom-snapshots"}
    job = next(m for m in first if m["kind"] == "Job")
    # Owned by no Workspace: deleting one of them must not delete the copy the others mount.
    assert all("ownerReferences" not in m["metadata"] for m in first)
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes == [
        {"name": "data", "persistentVolumeClaim": {"claimName": snapshot_object_name("prostate", DIGEST)}}
    ]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "materializer"


def test_another_dataset_with_the_same_digest_gets_a_copy_of_its_own() -> None:
    other = dataclasses.replace(ref(), dataset="breast")
    assert shared_copy(other, SHARED).name() != shared_copy(ref(), SHARED).name()


def test_a_workspace_volume_is_read_only_retained_and_pre_bound_to_its_own_claim() -> None:
    volume = build_workspace_volume(ref("team-a"), HOST_PV)
    spec = volume["spec"]
    assert spec["accessModes"] == ["ReadOnlyMany"]
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["storageClassName"] == ""
    assert spec["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "ws-seg-data",
    }
    assert spec["hostPath"] == HOST_PV["spec"]["hostPath"]
    assert spec["nodeAffinity"] == HOST_PV["spec"]["nodeAffinity"]
    assert volume["metadata"]["name"] == snapshot_volume_name("team-a", "seg", "prostate", DIGEST)
    claim = build_workspace_claim(ref("team-a"), HOST_PV)
    assert claim["metadata"]["namespace"] == "team-a" and claim["metadata"]["name"] == "ws-seg-data"
    assert claim["spec"]["volumeName"] == volume["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"] and claim["spec"]["storageClassName"] == ""


def test_volumes_of_two_namespaces_are_two_volumes_over_one_storage() -> None:
    a, b = build_workspace_volume(ref("team-a"), HOST_PV), build_workspace_volume(ref("team-b"), HOST_PV)
    assert a["metadata"]["name"] != b["metadata"]["name"]
    assert a["spec"]["hostPath"] == b["spec"]["hostPath"]
    assert a["spec"]["claimRef"]["namespace"] == "team-a" and b["spec"]["claimRef"]["namespace"] == "team-b"


def test_network_and_csi_sources_are_mounted_read_only_by_the_kubelet() -> None:
    nfs = {"spec": {"nfs": {"server": "10.0.0.2", "path": "/exports/x"}, "capacity": {"storage": "1Gi"}}}
    csi = {"spec": {"csi": {"driver": "efs.csi.aws.com", "volumeHandle": "fs-1::fsap-2"}}}
    assert build_workspace_volume(ref(), nfs)["spec"]["nfs"] == {
        "server": "10.0.0.2",
        "path": "/exports/x",
        "readOnly": True,
    }
    assert build_workspace_volume(ref(), csi)["spec"]["csi"]["readOnly"] is True
    assert build_workspace_volume(ref(), csi)["spec"]["csi"]["volumeHandle"] == "fs-1::fsap-2"


def test_block_storage_is_not_shareable_and_says_to_use_copy() -> None:
    ebs = {"spec": {"awsElasticBlockStore": {"volumeID": "vol-1"}, "capacity": {"storage": "1Gi"}}}
    why = unshareable(ebs)
    assert "awsElasticBlockStore" in why and "mode copy" in why
    assert unshareable(HOST_PV) == ""
    assert unshareable(None)


def test_the_collector_keeps_what_is_pinned_and_deletes_the_rest() -> None:
    pins = [Pin("team-a", "seg", "prostate", DIGEST)]
    kept_copy = {"metadata": {"name": snapshot_object_name("prostate", DIGEST)}}
    old = "sha256:" + "cd" * 32
    gone_copy = {"metadata": {"name": snapshot_object_name("prostate", old)}}
    kept_volume = {"metadata": {"name": snapshot_volume_name("team-a", "seg", "prostate", DIGEST)}}
    # A deleted Workspace's volume, and one made for an earlier pin of a Workspace that is still there.
    deleted = {"metadata": {"name": snapshot_volume_name("team-b", "gone", "prostate", DIGEST)}}
    repinned = {"metadata": {"name": snapshot_volume_name("team-a", "seg", "prostate", old)}}
    decision = collect(pins, [kept_copy, gone_copy], [kept_volume, deleted, repinned])
    assert decision.copies == (gone_copy["metadata"]["name"],)
    assert set(decision.volumes) == {deleted["metadata"]["name"], repinned["metadata"]["name"]}
    # The claim, which holds the data, goes last.
    assert copy_objects("snap-1")[-1] == ("v1", "PersistentVolumeClaim", "snap-1")


def test_a_copy_pinned_by_any_workspace_anywhere_stays() -> None:
    name = snapshot_object_name("prostate", DIGEST)
    pins = [Pin("team-b", "other", "prostate", DIGEST)]
    assert collect(pins, [{"metadata": {"name": name}}], []).copies == ()
    assert collect([], [{"metadata": {"name": name}}], []).copies == (name,)


def test_a_workspace_pins_from_spec_or_status() -> None:
    body = workspace()
    assert workspace_pin(body) is None
    body["status"] = {"snapshot": {"digest": DIGEST}}
    assert workspace_pin(body) == Pin("team", "seg", "prostate", DIGEST)


# -- the lifecycle in the shared mode ----------------------------------------------------------------------


def test_first_workspace_materializes_the_shared_copy_not_one_of_its_own() -> None:
    plan = plan_workspace(workspace(), observed(job=None), SHARED)
    jobs = [m for m in plan.apply if m["kind"] == "Job"]
    assert [j["metadata"]["namespace"] for j in jobs] == ["cleanroom-snapshots"]
    assert not any(
        m["kind"] == "PersistentVolumeClaim" and m["metadata"]["name"] == "ws-seg-data" for m in plan.apply
    )
    assert reasons(plan)["Ready"] == "MaterializingSnapshot"
    # The grant is the shared copy's, keyed by it: every Workspace over the snapshot holds the same one.
    assert plan.grant == DIGEST
    assert plan.grant_key == ("cleanroom-snapshots", snapshot_object_name("prostate", DIGEST))
    assert plan.status.snapshot_volume == "shared"


def test_once_verified_the_workspace_binds_its_own_read_only_volume_and_starts() -> None:
    plan = plan_workspace(workspace(), observed(source_volume=HOST_PV), SHARED)
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in plan.apply}
    pv = by_kind[("PersistentVolume", snapshot_volume_name("team", "seg", "prostate", DIGEST))]
    assert pv["spec"]["claimRef"]["name"] == "ws-seg-data"
    assert ("PersistentVolumeClaim", "ws-seg-data") in by_kind
    pod = by_kind[("Pod", "ws-seg")]
    data = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "ws-seg-data", "readOnly": True}
    assert plan.grant == "" and plan.grant_key is None
    assert reasons(plan)["DatasetMounted"] == "SnapshotVerified"
    assert plan.status.snapshot_volume == "shared"


def test_a_verified_copy_on_block_storage_fails_and_says_why() -> None:
    ebs = {"spec": {"awsElasticBlockStore": {"volumeID": "vol-1"}}}
    plan = plan_workspace(workspace(), observed(source_volume=ebs), SHARED)
    assert reasons(plan)["Ready"] == "VolumeNotShareable" and "Pod" not in [m["kind"] for m in plan.apply]


def test_a_verified_copy_whose_volume_is_not_seen_yet_waits() -> None:
    plan = plan_workspace(workspace(), observed(source_volume=None), SHARED)
    assert reasons(plan)["Ready"] == "SharedVolumePending" and plan.phase == "Starting"


@pytest.mark.parametrize("bound", ["", "sha256:" + "cd" * 32])
def test_a_claim_of_the_copy_mode_or_of_another_snapshot_is_replaced(bound: str) -> None:
    claim = {
        "metadata": {"name": "ws-seg-data", "annotations": {"cleanroom.dev/snapshot": bound} if bound else {}}
    }
    plan = plan_workspace(workspace(), observed(source_volume=HOST_PV, data_claim=claim), SHARED)
    assert reasons(plan)["Ready"] == "SnapshotChanged"
    assert ("v1", "PersistentVolumeClaim", "ws-seg-data") in plan.delete and plan.delete_pod


def test_the_copy_mode_says_so_in_status() -> None:
    plan = plan_workspace(workspace(), observed(), WorkspaceSettings())
    assert plan.status.snapshot_volume == "copy"
    assert any(m["kind"] == "Job" and m["metadata"]["namespace"] == "team" for m in plan.apply)


def test_an_unknown_mode_is_refused_when_settings_load(tmp_path: Any) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("snapshotVolumeMode: volumeSnapshot\n")
    with pytest.raises(ValueError, match="snapshotVolumeMode"):
        load_settings(str(path))


def test_back_in_the_copy_mode_a_claim_bound_to_a_shared_copy_is_replaced_before_any_copy_job() -> None:
    # A copy Job of the Workspace's own, mounting this claim read-write, would write into the shared copy.
    claim = {"metadata": {"name": "ws-seg-data", "annotations": {"cleanroom.dev/snapshot": DIGEST}}}
    plan = plan_workspace(workspace(), observed(job=None, data_claim=claim), WorkspaceSettings())
    assert reasons(plan)["Ready"] == "SnapshotChanged"
    assert ("v1", "PersistentVolumeClaim", "ws-seg-data") in plan.delete
    assert not any(m["kind"] == "Job" for m in plan.apply)
    # Its own claim (no annotation) is copied into as before.
    plan = plan_workspace(
        workspace(), observed(job=None, data_claim={"metadata": {"name": "ws-seg-data"}}), WorkspaceSettings()
    )
    assert reasons(plan)["Ready"] == "MaterializingSnapshot"


# -- block storage in the shared mode ----------------------------------------------------------------------


def test_on_block_storage_the_shared_mode_serves_a_copy_of_its_own_and_says_why() -> None:
    """EBS attaches a disk to one node: a second PersistentVolume over the shared copy's disk would leave
    every notebook elsewhere on a Multi-Attach error. The Workspace gets its own verified copy instead."""
    plan = plan_workspace(workspace(), observed(job=None, snapshot_provisioner="ebs.csi.aws.com"), SHARED)
    jobs = [m for m in plan.apply if m["kind"] == "Job"]
    assert [j["metadata"]["namespace"] for j in jobs] == ["team"]  # its own materializer, no shared copy
    assert not [m for m in plan.apply if m["metadata"].get("namespace") == "cleanroom-snapshots"]
    assert plan.status.snapshot_volume == "copy"
    assert plan.grant_key is None  # the grant is its own, not the shared copy's
    mounting = next(c for c in plan.conditions if c.type == "DatasetMounted")
    assert "ebs.csi.aws.com" in mounting.message and "copy of its own" in mounting.message


def test_a_site_names_its_own_block_storage() -> None:
    site = dataclasses.replace(SHARED, snapshot_block_provisioners=("san.example.org/iscsi",))
    plan = plan_workspace(workspace(), observed(job=None, snapshot_provisioner="san.example.org/iscsi"), site)
    assert plan.status.snapshot_volume == "copy"
    # Storage nobody named is shared; an unknown provisioner ("" when the class cannot be read) too, and the
    # verified copy's own volume is judged before any Workspace binds it.
    for provisioner in ("cleanroom.dev/real-node", "efs.csi.aws.com", ""):
        plan = plan_workspace(workspace(), observed(job=None, snapshot_provisioner=provisioner), site)
        assert plan.status.snapshot_volume == "shared", provisioner


def test_a_verified_copy_on_a_block_csi_driver_is_not_bound_a_second_time() -> None:
    """The storage class said nothing (or changed), the copy landed on EBS through CSI: the volume's own
    driver decides, before any Workspace's PersistentVolume points at the disk."""
    ebs = {"spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}}
    assert "ebs.csi.aws.com" in unshareable(ebs)
    plan = plan_workspace(workspace(), observed(source_volume=ebs), SHARED)
    assert reasons(plan)["Ready"] == "VolumeNotShareable"
    assert "PersistentVolume" not in [m["kind"] for m in plan.apply]
