"""Block storage with a VolumeSnapshotClass (workspaces.snapshot_volumes, the clone): the one verified copy is
snapshotted once and each Workspace's claim restored from it, through a VolumeSnapshotContent made for that
Workspace's VolumeSnapshot alone; the lifecycle waits for the snapshot and the restore, and the collector
takes the contents no Workspace uses."""

from __future__ import annotations

import dataclasses
from typing import Any

from cleanroom.api.contract import snapshot_object_name, snapshot_volume_name
from cleanroom.workspaces import WorkspaceSettings, plan_workspace
from cleanroom.workspaces.snapshot_volumes import (
    Pin,
    build_workspace_clone,
    clone_pending,
    collect,
    copy_objects,
)
from tests.unit.test_snapshot_volumes import ref
from tests.unit.test_workspace_lifecycle import DIGEST, observed, reasons, workspace

CLONED = WorkspaceSettings(
    snapshot_volume_mode="shared",
    snapshot_storage_class="gp3",
    snapshot_volume_snapshot_class="ebs-snapshots",
)
EBS = "ebs.csi.aws.com"
COPY_NAME = snapshot_object_name("prostate", DIGEST)
SOURCE_SNAPSHOT = {
    "metadata": {"name": COPY_NAME, "namespace": "cleanroom-snapshots"},
    "status": {"readyToUse": True, "boundVolumeSnapshotContentName": "snapcontent-1"},
}
SOURCE_CONTENT = {
    "metadata": {"name": "snapcontent-1"},
    "spec": {"driver": EBS, "deletionPolicy": "Delete"},
    "status": {"snapshotHandle": "snap-0123456789", "restoreSize": 5 * 1024**3, "readyToUse": True},
}
RESTORED = {
    "metadata": {"name": "ws-seg-data", "annotations": {"cleanroom.dev/snapshot": DIGEST}},
    "spec": {
        "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "ws-seg-data"}
    },
    "status": {"phase": "Bound"},
}


def cloned(**kwargs: Any) -> Any:
    base: dict[str, Any] = {
        "snapshot_provisioner": EBS,
        "source_snapshot": SOURCE_SNAPSHOT,
        "source_snapshot_content": SOURCE_CONTENT,
    }
    base.update(kwargs)
    return observed(**base)


def by_kind(plan: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in plan.apply}


def test_the_first_workspace_materializes_the_one_copy_on_block_storage() -> None:
    plan = plan_workspace(workspace(), cloned(job=None), CLONED)
    jobs = [m for m in plan.apply if m["kind"] == "Job"]
    assert [j["metadata"]["namespace"] for j in jobs] == ["cleanroom-snapshots"]
    assert plan.grant_key == ("cleanroom-snapshots", COPY_NAME)
    assert plan.status.snapshot_volume == "clone"
    assert "VolumeSnapshot" not in [m["kind"] for m in plan.apply]  # nothing to snapshot before it verified


def test_once_verified_the_copy_is_snapshotted_and_the_workspace_waits_for_it() -> None:
    plan = plan_workspace(workspace(), cloned(source_snapshot=None, source_snapshot_content=None), CLONED)
    snapshot = by_kind(plan)[("VolumeSnapshot", COPY_NAME)]
    assert snapshot["metadata"]["namespace"] == "cleanroom-snapshots"
    assert snapshot["spec"] == {
        "volumeSnapshotClassName": "ebs-snapshots",
        "source": {"persistentVolumeClaimName": COPY_NAME},
    }
    assert "ownerReferences" not in snapshot["metadata"]  # every Workspace over it restores from it
    assert reasons(plan)["Ready"] == "SnapshotPending" and plan.phase == "Starting"
    # Nothing the operator watches says when the snapshot is ready: it looks again within seconds.
    assert plan.recheck_at is not None and (plan.recheck_at - observed().now).total_seconds() <= 5
    assert ("PersistentVolumeClaim", "ws-seg-data") not in by_kind(plan) and "Pod" not in [
        m["kind"] for m in plan.apply
    ]


def test_a_snapshot_the_storage_refused_says_so() -> None:
    failing = {**SOURCE_SNAPSHOT, "status": {"error": {"message": "quota of snapshots exceeded"}}}
    plan = plan_workspace(workspace(), cloned(source_snapshot=failing, source_snapshot_content=None), CLONED)
    mounted = next(c for c in plan.conditions if c.type == "DatasetMounted")
    assert "quota of snapshots exceeded" in mounted.message
    assert clone_pending({**SOURCE_SNAPSHOT, "status": {"readyToUse": False}}, None)
    assert clone_pending(SOURCE_SNAPSHOT, SOURCE_CONTENT) == ""


def test_the_workspace_claim_is_restored_through_a_content_made_for_it_alone() -> None:
    plan = plan_workspace(workspace(), cloned(data_claim=None), CLONED)
    objects = by_kind(plan)
    content = objects[("VolumeSnapshotContent", snapshot_volume_name("team", "seg", "prostate", DIGEST))]
    assert content["spec"] == {
        "deletionPolicy": "Retain",  # deleting it never deletes the snapshot every Workspace restores from
        "driver": EBS,
        "volumeSnapshotClassName": "ebs-snapshots",
        "source": {"snapshotHandle": "snap-0123456789"},
        "volumeSnapshotRef": {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "namespace": "team",
            "name": "ws-seg-data",
        },
    }
    snapshot = objects[("VolumeSnapshot", "ws-seg-data")]
    assert snapshot["metadata"]["namespace"] == "team"
    assert snapshot["spec"] == {"source": {"volumeSnapshotContentName": content["metadata"]["name"]}}
    assert snapshot["metadata"]["ownerReferences"][0]["kind"] == "Workspace"
    claim = objects[("PersistentVolumeClaim", "ws-seg-data")]
    assert claim["spec"]["dataSource"] == {
        "apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot",
        "name": "ws-seg-data",
    }
    assert claim["spec"]["storageClassName"] == "gp3" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # The snapshot's restore size (5 GiB, the copy's volume): less is refused by the storage, more is waste.
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # Until the storage restored it, no notebook: it would wait on an unbound claim.
    assert reasons(plan)["Ready"] == "RestoringClone" and "Pod" not in [m["kind"] for m in plan.apply]


def test_the_notebook_is_made_before_the_restore_binds_for_a_first_consumer_class() -> None:
    """On a WaitForFirstConsumer class (EBS gp3, GKE standard-rwo) the restore waits for the pod using it."""
    pending = {**RESTORED, "status": {"phase": "Pending"}}
    plan = plan_workspace(workspace(), cloned(data_claim=pending), CLONED)
    assert ("Pod", "ws-seg") in by_kind(plan)


def test_a_volume_snapshot_made_first_by_someone_else_is_never_mounted() -> None:
    """Someone with rights in the namespace makes ws-seg-data first: a VolumeSnapshot of another Workspace's
    claim (its Dataset's data) or a claim restored from one. The operator deletes them and mounts nothing."""
    stolen = {
        "metadata": {"name": "ws-seg-data"},
        "spec": {"source": {"persistentVolumeClaimName": "ws-other-data"}},
    }
    plan = plan_workspace(workspace(), cloned(workspace_snapshot=stolen, data_claim=RESTORED), CLONED)
    assert reasons(plan)["Ready"] == "ForeignVolumeSnapshot" and plan.delete_pod
    assert ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "ws-seg-data") in plan.delete
    assert ("v1", "PersistentVolumeClaim", "ws-seg-data") in plan.delete
    assert "Pod" not in [m["kind"] for m in plan.apply]
    assert [e.type for e in plan.events] == ["Warning"]
    claim = {**RESTORED, "spec": {"dataSource": {**RESTORED["spec"]["dataSource"], "name": "ws-other-data"}}}
    plan = plan_workspace(workspace(), cloned(data_claim=claim), CLONED)
    assert reasons(plan)["Ready"] == "ForeignVolumeSnapshot"
    # Its own, as the operator makes them, pass.
    own = build_workspace_clone(ref("team", "seg"), SOURCE_CONTENT, CLONED)[1]
    plan = plan_workspace(workspace(), cloned(workspace_snapshot=own, data_claim=RESTORED), CLONED)
    assert reasons(plan)["DatasetMounted"] == "SnapshotVerified"


def test_a_class_named_on_a_cluster_without_volume_snapshots_says_what_to_fix() -> None:
    """The site named a VolumeSnapshotClass, but the cluster has no snapshot CRDs: every read and create of a
    VolumeSnapshot would fail with an API error in the operator's log. The Workspace says why and what to do,
    makes nothing, deletes no volume (a claim it cannot judge stays), stops the notebook as any Failed
    Workspace does (a notebook left running would escape spec.running false and the egress probe, whose
    gates come later), and looks again within a minute (the CRDs may be installed without restarting the
    operator)."""
    unserved = cloned(
        source_snapshot=None, source_snapshot_content=None, data_claim=RESTORED, volume_snapshots_served=False
    )
    plan = plan_workspace(workspace(), unserved, CLONED)
    assert plan.phase == "Failed"
    assert reasons(plan)["Ready"] == reasons(plan)["DatasetMounted"] == "VolumeSnapshotsUnavailable"
    ready = next(c for c in plan.conditions if c.type == "Ready")
    for what in ("ebs-snapshots", "snapshot.storage.k8s.io/v1", "external-snapshotter", "unset the class"):
        assert what in ready.message
    assert plan.apply == () and plan.delete == () and plan.delete_pod
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "VolumeSnapshotsUnavailable")]
    assert plan.recheck_at is not None and (plan.recheck_at - unserved.now).total_seconds() <= 60
    # Served again: the clone goes on where it was.
    plan = plan_workspace(workspace(), cloned(data_claim=RESTORED), CLONED)
    assert reasons(plan)["DatasetMounted"] == "SnapshotVerified"
    # Storage that is not block storage never needs the API.
    shared = plan_workspace(
        workspace(), observed(snapshot_provisioner="nfs.csi.k8s.io", volume_snapshots_served=False), CLONED
    )
    assert reasons(shared)["Ready"] != "VolumeSnapshotsUnavailable"


def test_restored_the_notebook_mounts_its_clone_read_only() -> None:
    plan = plan_workspace(workspace(), cloned(data_claim=RESTORED), CLONED)
    pod = by_kind(plan)[("Pod", "ws-seg")]
    data = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "ws-seg-data", "readOnly": True}
    assert reasons(plan)["DatasetMounted"] == "SnapshotVerified"
    mounted = next(c for c in plan.conditions if c.type == "DatasetMounted")
    assert "clone" in mounted.message and "ebs-snapshots" in mounted.message
    assert plan.status.snapshot_volume == "clone" and plan.grant == ""


def test_two_namespaces_restore_from_one_snapshot_through_two_contents() -> None:
    a = build_workspace_clone(ref("team-a"), SOURCE_CONTENT, CLONED)
    b = build_workspace_clone(ref("team-b"), SOURCE_CONTENT, CLONED)
    assert a[0]["metadata"]["name"] != b[0]["metadata"]["name"]
    assert a[0]["spec"]["source"] == b[0]["spec"]["source"]
    assert [
        a[0]["spec"]["volumeSnapshotRef"]["namespace"],
        b[0]["spec"]["volumeSnapshotRef"]["namespace"],
    ] == [
        "team-a",
        "team-b",
    ]


def test_a_shared_claim_is_replaced_by_a_clone_and_the_reverse() -> None:
    shared_claim = {"metadata": {"name": "ws-seg-data", "annotations": {"cleanroom.dev/snapshot": DIGEST}}}
    plan = plan_workspace(workspace(), cloned(data_claim=shared_claim), CLONED)
    assert reasons(plan)["Ready"] == "SnapshotChanged"
    assert ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "ws-seg-data") in plan.delete
    assert ("v1", "PersistentVolumeClaim", "ws-seg-data") in plan.delete
    # With them the content and the volume made for this Workspace: once bound they name the old objects'
    # uids, and the VolumeSnapshot or claim made next would never bind to them.
    made_for = snapshot_volume_name("team", "seg", "prostate", DIGEST)
    assert ("snapshot.storage.k8s.io/v1", "VolumeSnapshotContent", made_for) in plan.delete
    assert ("v1", "PersistentVolume", made_for) in plan.delete
    # The class no longer names block storage: the clone goes for a shared volume.
    shared = dataclasses.replace(CLONED, snapshot_storage_class="efs")
    plan = plan_workspace(
        workspace(), observed(data_claim=RESTORED, snapshot_provisioner="efs.csi.aws.com"), shared
    )
    assert reasons(plan)["Ready"] == "SnapshotChanged"


def test_without_a_class_block_storage_is_served_a_copy_and_told_how_to_clone() -> None:
    plan = plan_workspace(
        workspace(),
        observed(job=None, snapshot_provisioner=EBS),
        dataclasses.replace(CLONED, snapshot_volume_snapshot_class=""),
    )
    assert plan.status.snapshot_volume == "copy"
    mounted = next(c for c in plan.conditions if c.type == "DatasetMounted")
    assert "volumeSnapshotClass" in mounted.message


def test_storage_that_can_be_shared_is_shared_even_with_a_class() -> None:
    plan = plan_workspace(
        workspace(), observed(job=None, snapshot_provisioner="cleanroom.dev/real-node"), CLONED
    )
    assert plan.status.snapshot_volume == "shared"


def test_the_collector_takes_contents_no_workspace_uses_and_the_copy_snapshot_last_but_the_claim() -> None:
    pins = [Pin("team-a", "seg", "prostate", DIGEST)]
    kept = {"metadata": {"name": snapshot_volume_name("team-a", "seg", "prostate", DIGEST)}}
    gone = {"metadata": {"name": snapshot_volume_name("team-b", "old", "prostate", DIGEST)}}
    decision = collect(pins, [], [], [kept, gone])
    assert decision.contents == (gone["metadata"]["name"],)
    objects = copy_objects(COPY_NAME, snapshots=True)
    assert objects[-2:] == (
        ("snapshot.storage.k8s.io/v1", "VolumeSnapshot", COPY_NAME),
        ("v1", "PersistentVolumeClaim", COPY_NAME),
    )
    assert "VolumeSnapshot" not in [kind for _, kind, _ in copy_objects(COPY_NAME)]
