"""Pure builders and decisions for one verified copy per snapshot (settings.snapshot_volume_mode "shared").

A snapshot is copied and verified once, by one materializer Job, into a claim of the snapshot namespace
(settings.snapshot_volume_namespace, where no tenant has any right). Each Workspace over it then gets a
PersistentVolume made for its claim alone: the verified volume's own storage (the same hostPath, local path,
NFS export or CSI volume handle), ReadOnlyMany, read-only where the volume source has such a switch,
reclaimPolicy Retain (deleting it never deletes the data), and a claimRef naming the Workspace's claim, so
the PV controller binds it to that claim and to no other: a claim elsewhere naming it in volumeName stays
Pending. The notebook mounts the claim read-only, as in the copy mode.

On block storage (a disk attaches to one node at a time, so a second PersistentVolume over it cannot serve
another node) with settings.snapshot_volume_snapshot_class set, the verified copy is snapshotted once (a
VolumeSnapshot of its claim, in the snapshot namespace) and each Workspace's claim is restored from that
snapshot: a VolumeSnapshotContent made for the Workspace alone (pre-provisioned over the same snapshot
handle, its volumeSnapshotRef naming the Workspace's VolumeSnapshot, so the snapshot controller binds no
other), that VolumeSnapshot, and a claim whose dataSource it is. Nothing is copied from the store after the
first copy; the storage clones the verified disk.

Nothing here is owned by a Workspace but its claim (and its VolumeSnapshot): a volume is shared, and a
cluster-scoped PersistentVolume or VolumeSnapshotContent cannot be owned by a namespaced object. ``collect``
decides what goes once no Workspace pins a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api.contract import (
    CLAIM_NAMESPACE_LABEL,
    DATASET_LABEL,
    GRANT_URL_KEY,
    MANAGED_BY,
    SNAPSHOT_ANNOTATION,
    SNAPSHOT_LABEL,
    WORKSPACE_APP,
    label_value,
    object_name,
    snapshot_object_name,
    snapshot_volume_name,
)
from cleanroom.workspaces import manifests
from cleanroom.workspaces.settings import WorkspaceSettings

# Volume sources a second PersistentVolume can point at, and whether the source has a read-only switch of
# its own (the kubelet then mounts it read-only whatever the pod asks). hostPath and local have none: the
# pod's readOnly mount is what holds there (a read-only bind mount; tests/deployed show EROFS).
SHAREABLE_SOURCES: Mapping[str, bool] = {
    "hostPath": False,
    "local": False,
    "nfs": True,
    "csi": True,
    "cephfs": True,
}
# Provisioners (and CSI drivers: a CSI provisioner is named after its driver) of block storage: a disk that
# attaches to one node at a time. A second PersistentVolume over it would leave every notebook on another
# node waiting on a Multi-Attach error, so in the shared mode a Workspace over such storage gets a verified
# copy of its own instead (status.snapshotVolume says "copy" and DatasetMounted says why). Sites name more in
# the chart's workspaces.snapshotVolumes.blockProvisioners. A Persistent Disk can attach read-only to many
# nodes, but only a disk no node holds read-write: counted as block storage, the safe side. A VolumeSnapshot
# clone per namespace serves block storage without a copy from the store where the site names a
# VolumeSnapshotClass (settings.snapshot_volume_snapshot_class).
BLOCK_PROVISIONERS: tuple[str, ...] = (
    "ebs.csi.aws.com",
    "kubernetes.io/aws-ebs",
    "disk.csi.azure.com",
    "kubernetes.io/azure-disk",
    "pd.csi.storage.gke.io",
    "kubernetes.io/gce-pd",
    "cinder.csi.openstack.org",
    "kubernetes.io/cinder",
    "rbd.csi.ceph.com",
    "kubernetes.io/rbd",
    "dobs.csi.digitalocean.com",
    "csi.hetzner.cloud",
    "blockvolume.csi.oraclecloud.com",
    "diskplugin.csi.alibabacloud.com",
)
SNAPSHOT_API_VERSION = "snapshot.storage.k8s.io/v1"
# What a PersistentVolume's spec holds besides its volume source, copied over as it is.
_CARRIED = ("capacity", "nodeAffinity", "volumeMode", "mountOptions")


@dataclass(frozen=True)
class SharedCopy:
    """The one verified copy of a Dataset's snapshot."""

    dataset: str
    digest: str
    namespace: str
    snapshot_bytes: int = 0

    def name(self, suffix: str = "") -> str:
        return snapshot_object_name(self.dataset, self.digest, suffix)

    def labels(self, role: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": WORKSPACE_APP,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/component": role,
            DATASET_LABEL: label_value(self.dataset),
            SNAPSHOT_LABEL: snapshot_label(self.digest),
        }

    def metadata(self, name: str, role: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": self.labels(role), **extra}


def snapshot_label(digest: str) -> str:
    """A snapshot's digest as a label value: its hex, cut to 63 characters."""
    return digest.removeprefix("sha256:")[:63]


def shared_copy(ref: manifests.WorkspaceRef, settings: WorkspaceSettings) -> SharedCopy:
    return SharedCopy(ref.dataset, ref.snapshot, settings.snapshot_volume_namespace, ref.snapshot_bytes)


def build_shared_claim(copy: SharedCopy, settings: WorkspaceSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": manifests.snapshot_volume_size(copy.snapshot_bytes)}},
    }
    if settings.snapshot_storage_class:
        spec["storageClassName"] = settings.snapshot_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": copy.metadata(
            copy.name(), "snapshot-volume", annotations={SNAPSHOT_ANNOTATION: copy.digest}
        ),
        "spec": spec,
    }


def build_shared_reader_secret(copy: SharedCopy, grant_url: str) -> dict[str, Any]:
    """The shared materializer's only access to the store: a read grant's URL, emptied once it verified."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": copy.metadata(copy.name("reader"), "materializer"),
        "type": "Opaque",
        "stringData": {GRANT_URL_KEY: grant_url},
    }


def build_shared_materializer_policy(copy: SharedCopy, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": copy.metadata(copy.name("materialize"), "materializer"),
        "spec": manifests.materializer_policy_spec(copy.labels("materializer"), settings),
    }


def build_shared_materializer_job(copy: SharedCopy, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": copy.metadata(
            copy.name("materialize"), "materializer", annotations={SNAPSHOT_ANNOTATION: copy.digest}
        ),
        "spec": manifests.materializer_job_spec(
            copy.labels("materializer"), copy.name(), copy.name("reader"), settings
        ),
    }


def build_shared_objects(
    copy: SharedCopy, settings: WorkspaceSettings, grant_url: str
) -> tuple[dict[str, Any], ...]:
    """What makes the one verified copy: its reader Secret, claim, policy and materializer Job."""
    return (
        build_shared_reader_secret(copy, grant_url),
        build_shared_claim(copy, settings),
        build_shared_materializer_policy(copy, settings),
        build_shared_materializer_job(copy, settings),
    )


def block_storage(provisioner: str, settings: WorkspaceSettings) -> str:
    """Why a snapshot copy made by ``provisioner`` (the snapshot StorageClass's; "" when unknown) cannot be
    shared between Workspaces ("" when nothing says it cannot): the mode shared then serves a copy each."""
    if provisioner and provisioner in (*BLOCK_PROVISIONERS, *settings.snapshot_block_provisioners):
        return (
            f"storage class {settings.snapshot_storage_class or '(the cluster default)'} is block storage "
            f"({provisioner}), which attaches a volume to one node at a time, so each Workspace gets a "
            "verified copy of its own"
        )
    return ""


def unshareable(source: Mapping[str, Any] | None, settings: WorkspaceSettings | None = None) -> str:
    """Why ``source`` (the verified copy's PersistentVolume) cannot be bound a second time ("" when it can)."""
    if not source:
        return "the verified copy's volume is not bound yet"
    spec = source.get("spec") or {}
    kinds = [key for key in spec if key in SHAREABLE_SOURCES]
    driver = str((spec.get("csi") or {}).get("driver") or "")
    if "csi" in kinds and block_storage(driver, settings or WorkspaceSettings()):
        return (
            f"its CSI driver {driver} is block storage, which attaches a volume to one node at a time. "
            "Use workspaces.snapshotVolumes.mode copy for this storage, or a storage class of a file system"
        )
    if kinds:
        return ""
    known = {"accessModes", "capacity", "claimRef", "storageClassName", "persistentVolumeReclaimPolicy"}
    found = sorted(key for key in spec if key not in known and key not in _CARRIED) or ["none"]
    return (
        f"its volume source ({', '.join(found)}) cannot be shared through a second PersistentVolume; "
        f"shareable: {', '.join(SHAREABLE_SOURCES)}. Use workspaces.snapshotVolumes.mode copy for this storage"
    )


def build_workspace_volume(ref: manifests.WorkspaceRef, source: Mapping[str, Any]) -> dict[str, Any]:
    """The PersistentVolume for ``ref``'s claim alone over the verified copy's storage (``source``, its PV)."""
    spec = source["spec"]
    kind = next(key for key in spec if key in SHAREABLE_SOURCES)
    volume_source = dict(spec[kind])
    if SHAREABLE_SOURCES[kind]:
        volume_source["readOnly"] = True
    pv_spec: dict[str, Any] = {key: spec[key] for key in _CARRIED if key in spec}
    pv_spec.update(
        {
            kind: volume_source,
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            # Not a class any provisioner serves: only this claim, by name, binds it.
            "storageClassName": "",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": ref.namespace,
                "name": object_name(ref.name, "data"),
            },
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": snapshot_volume_name(ref.namespace, ref.name, ref.dataset, ref.snapshot),
            "labels": {
                **manifests.labels(ref, "snapshot-volume"),
                SNAPSHOT_LABEL: snapshot_label(ref.snapshot),
                CLAIM_NAMESPACE_LABEL: ref.namespace,
            },
            "annotations": {SNAPSHOT_ANNOTATION: ref.snapshot},
        },
        "spec": pv_spec,
    }


def _data_claim_metadata(ref: manifests.WorkspaceRef) -> dict[str, Any]:
    """The Workspace's data claim's metadata, shared or cloned: owned by it, naming the snapshot it holds."""
    return {
        "name": object_name(ref.name, "data"),
        "namespace": ref.namespace,
        "labels": manifests.labels(ref, "data"),
        "ownerReferences": [manifests.owner_reference(ref)],
        "annotations": {SNAPSHOT_ANNOTATION: ref.snapshot},
    }


def build_workspace_claim(ref: manifests.WorkspaceRef, source: Mapping[str, Any]) -> dict[str, Any]:
    """The Workspace's data claim, bound by name to the volume made for it (build_workspace_volume)."""
    capacity = (source.get("spec") or {}).get("capacity", {}).get("storage")
    size = capacity or manifests.snapshot_volume_size(ref.snapshot_bytes)
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _data_claim_metadata(ref),
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": snapshot_volume_name(ref.namespace, ref.name, ref.dataset, ref.snapshot),
            "resources": {"requests": {"storage": size}},
        },
    }


def build_source_snapshot(copy: SharedCopy, settings: WorkspaceSettings) -> dict[str, Any]:
    """The VolumeSnapshot of the verified copy's claim that every Workspace's clone is restored from."""
    return {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": copy.metadata(
            copy.name(), "snapshot-volume", annotations={SNAPSHOT_ANNOTATION: copy.digest}
        ),
        "spec": {
            "volumeSnapshotClassName": settings.snapshot_volume_snapshot_class,
            "source": {"persistentVolumeClaimName": copy.name()},
        },
    }


def clone_pending(snapshot: Mapping[str, Any] | None, content: Mapping[str, Any] | None) -> str:
    """Why the verified copy's VolumeSnapshot (``snapshot``, and ``content``, the VolumeSnapshotContent it is
    bound to) cannot be restored from yet ("" once it can): not made, not ready, or the storage's error."""
    if not snapshot:
        return "its VolumeSnapshot is being made"
    status = snapshot.get("status") or {}
    error = (status.get("error") or {}).get("message")
    if error:
        return f"the storage could not snapshot it: {error}"
    handle = ((content or {}).get("status") or {}).get("snapshotHandle")
    if not status.get("readyToUse") or not handle:
        return f"its VolumeSnapshot {snapshot['metadata']['name']} is not ready yet"
    return ""


def _clone_names(ref: manifests.WorkspaceRef) -> tuple[str, str]:
    """The Workspace's VolumeSnapshotContent (cluster-scoped) and VolumeSnapshot (beside its claim)."""
    return snapshot_volume_name(ref.namespace, ref.name, ref.dataset, ref.snapshot), object_name(
        ref.name, "data"
    )


def build_workspace_snapshot_content(
    ref: manifests.WorkspaceRef, content: Mapping[str, Any], settings: WorkspaceSettings
) -> dict[str, Any]:
    """A VolumeSnapshotContent over the verified copy's snapshot (``content``, bound to the source
    VolumeSnapshot) for ``ref``'s VolumeSnapshot alone. Retain: deleting it never deletes the snapshot, which
    goes with the source VolumeSnapshot once no Workspace pins it."""
    content_name, snapshot_name = _clone_names(ref)
    return {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshotContent",
        "metadata": {
            "name": content_name,
            "labels": {
                **manifests.labels(ref, "snapshot-volume"),
                SNAPSHOT_LABEL: snapshot_label(ref.snapshot),
                CLAIM_NAMESPACE_LABEL: ref.namespace,
            },
            "annotations": {SNAPSHOT_ANNOTATION: ref.snapshot},
        },
        "spec": {
            "deletionPolicy": "Retain",
            "driver": content["spec"]["driver"],
            "volumeSnapshotClassName": settings.snapshot_volume_snapshot_class,
            "source": {"snapshotHandle": content["status"]["snapshotHandle"]},
            "volumeSnapshotRef": {
                "apiVersion": SNAPSHOT_API_VERSION,
                "kind": "VolumeSnapshot",
                "namespace": ref.namespace,
                "name": snapshot_name,
            },
        },
    }


def build_workspace_snapshot(ref: manifests.WorkspaceRef) -> dict[str, Any]:
    """The Workspace's VolumeSnapshot, bound by name to the content made for it; owned by the Workspace."""
    content_name, snapshot_name = _clone_names(ref)
    return {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name,
            "namespace": ref.namespace,
            "labels": manifests.labels(ref, "data"),
            "ownerReferences": [manifests.owner_reference(ref)],
            "annotations": {SNAPSHOT_ANNOTATION: ref.snapshot},
        },
        "spec": {"source": {"volumeSnapshotContentName": content_name}},
    }


def build_workspace_clone_claim(
    ref: manifests.WorkspaceRef, content: Mapping[str, Any], settings: WorkspaceSettings
) -> dict[str, Any]:
    """The Workspace's data claim, restored by the storage from its VolumeSnapshot: a disk of its own holding
    the verified copy, mounted read-only by the notebook as in every mode."""
    # restoreSize is the snapshotted volume's capacity (0 where the driver does not say): the room the copy
    # was given already, so it is asked for as it is; never less than a copy of the snapshot would get.
    restore_gib = -(-int(((content.get("status") or {}).get("restoreSize")) or 0) // 1024**3)
    size = f"{max(restore_gib, int(manifests.snapshot_volume_size(ref.snapshot_bytes).removesuffix('Gi')))}Gi"
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "dataSource": {
            "apiGroup": SNAPSHOT_API_VERSION.split("/")[0],
            "kind": "VolumeSnapshot",
            "name": _clone_names(ref)[1],
        },
    }
    if settings.snapshot_storage_class:
        spec["storageClassName"] = settings.snapshot_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _data_claim_metadata(ref),
        "spec": spec,
    }


def build_workspace_clone(
    ref: manifests.WorkspaceRef, content: Mapping[str, Any], settings: WorkspaceSettings
) -> tuple[dict[str, Any], ...]:
    """What restores ``ref``'s claim from the verified copy's snapshot: content, VolumeSnapshot, claim."""
    return (
        build_workspace_snapshot_content(ref, content, settings),
        build_workspace_snapshot(ref),
        build_workspace_clone_claim(ref, content, settings),
    )


def clone_objects(
    ref: manifests.WorkspaceRef, settings: WorkspaceSettings
) -> tuple[tuple[str, str, str], ...]:
    """The Workspace's VolumeSnapshot as (apiVersion, kind, name), where the site clones (it names a
    VolumeSnapshotClass; a cluster that serves no VolumeSnapshots stops at the lifecycle's
    VolumeSnapshotsUnavailable first): it goes with the claim restored from it."""
    if not settings.snapshot_volume_snapshot_class:
        return ()
    content, snapshot = _clone_names(ref)
    # The content goes too: once bound it names the VolumeSnapshot's uid, and a new VolumeSnapshot of the
    # same name would never bind to it (it is Retain: the shared snapshot stays).
    return (
        (SNAPSHOT_API_VERSION, "VolumeSnapshot", snapshot),
        (SNAPSHOT_API_VERSION, "VolumeSnapshotContent", content),
    )


def workspace_volume_objects(ref: manifests.WorkspaceRef) -> tuple[tuple[str, str, str], ...]:
    """The PersistentVolume made for ``ref``'s claim over the shared copy: it goes with the claim, since once
    Released it names the old claim's uid and would never bind the next (it is Retain: the copy stays)."""
    return (
        ("v1", "PersistentVolume", snapshot_volume_name(ref.namespace, ref.name, ref.dataset, ref.snapshot)),
    )


def foreign_clone(
    ref: manifests.WorkspaceRef, snapshot: Mapping[str, Any] | None, claim: Mapping[str, Any] | None
) -> str:
    """What of the Workspace's VolumeSnapshot and data claim the operator did not make as it makes them ("" when
    both are its own or absent): a VolumeSnapshot of another source (another claim of the namespace: another
    Workspace's data, or a home volume) or a claim restored from another VolumeSnapshot would be mounted as
    the verified snapshot."""
    content, name = _clone_names(ref)
    if snapshot is not None and (snapshot.get("spec") or {}).get("source") != {
        "volumeSnapshotContentName": content
    }:
        return f"VolumeSnapshot {name} has source {(snapshot.get('spec') or {}).get('source')}, not content {content}"
    source = ((claim or {}).get("spec") or {}).get("dataSource")
    if (
        claim is not None
        and source is not None
        and source
        != {
            "apiGroup": SNAPSHOT_API_VERSION.split("/")[0],
            "kind": "VolumeSnapshot",
            "name": name,
        }
    ):
        return f"claim {name} is restored from {source}, not from VolumeSnapshot {name}"
    return ""


def restored_from_snapshot(claim: Mapping[str, Any] | None) -> bool:
    """Whether ``claim`` (a Workspace's data claim) was restored from a VolumeSnapshot (the clone)."""
    source = ((claim or {}).get("spec") or {}).get("dataSource") or {}
    return source.get("kind") == "VolumeSnapshot"


@dataclass(frozen=True)
class Pin:
    """A Workspace and the snapshot it pins."""

    namespace: str
    workspace: str
    dataset: str
    digest: str


@dataclass(frozen=True)
class Collection:
    """What goes: shared copies (name in the snapshot namespace: claim, Job, Secret, policy and VolumeSnapshot
    share it), Workspace volumes (PersistentVolume names) and Workspace snapshot contents
    (VolumeSnapshotContent names)."""

    copies: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    contents: tuple[str, ...] = ()


def collect(
    pins: Iterable[Pin],
    copies: Iterable[Mapping[str, Any]],
    volumes: Iterable[Mapping[str, Any]],
    contents: Iterable[Mapping[str, Any]] = (),
) -> Collection:
    """Which shared copies (their claims, as listed in the snapshot namespace) no Workspace pins, and which
    Workspace volumes and snapshot contents (PersistentVolumes, VolumeSnapshotContents labelled as ours) serve
    no Workspace pinning their snapshot now. A copy is named by its claim's name; a Workspace's volume and
    content by the Workspace and snapshot they were made for."""
    pins = list(pins)
    pinned_copies = {snapshot_object_name(p.dataset, p.digest) for p in pins}
    wanted = {snapshot_volume_name(p.namespace, p.workspace, p.dataset, p.digest) for p in pins}

    def gone(objects: Iterable[Mapping[str, Any]], kept: set[str]) -> tuple[str, ...]:
        return tuple(sorted(n for n in (str(o["metadata"]["name"]) for o in objects) if n not in kept))

    return Collection(gone(copies, pinned_copies), gone(volumes, wanted), gone(contents, wanted))


def copy_objects(name: str, snapshots: bool = False) -> tuple[tuple[str, str, str], ...]:
    """The objects of the shared copy ``name`` (its claim's name), as (apiVersion, kind, name): the Job and
    its Secret and policy first, then its VolumeSnapshot (``snapshots``: the cluster serves them and the site
    named a class), the claim (and so the data) last."""
    snapshot = ((SNAPSHOT_API_VERSION, "VolumeSnapshot", name),) if snapshots else ()
    return (
        ("batch/v1", "Job", f"{name}-materialize"),
        ("networking.k8s.io/v1", "NetworkPolicy", f"{name}-materialize"),
        ("v1", "Secret", f"{name}-reader"),
        *snapshot,
        ("v1", "PersistentVolumeClaim", name),
    )


def workspace_pin(workspace: Mapping[str, Any]) -> Pin | None:
    """The snapshot ``workspace`` pins (spec, or else status), None before it has one."""
    metadata, spec = workspace["metadata"], workspace.get("spec") or {}
    dataset = spec.get("dataset") or {}
    digest = dataset.get("snapshot") or ((workspace.get("status") or {}).get("snapshot") or {}).get("digest")
    if not digest:
        return None
    return Pin(str(metadata["namespace"]), str(metadata["name"]), str(dataset.get("name", "")), str(digest))


__all__ = [
    "Collection",
    "Pin",
    "SharedCopy",
    "block_storage",
    "build_shared_objects",
    "build_source_snapshot",
    "build_workspace_claim",
    "build_workspace_clone",
    "build_workspace_volume",
    "clone_objects",
    "clone_pending",
    "collect",
    "copy_objects",
    "foreign_clone",
    "restored_from_snapshot",
    "shared_copy",
    "unshareable",
    "workspace_pin",
    "workspace_volume_objects",
]
