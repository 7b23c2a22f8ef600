"""The I/O of one verified copy per snapshot (workspaces.snapshot_volumes, the shared mode): what a pass
observes of a snapshot's shared copy, and the collector that deletes copies no Workspace pins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kubernetes

from cleanroom.api import GROUP, VERSION, WORKSPACES
from cleanroom.api.contract import MANAGED_BY, object_name
from cleanroom.handlers import _kube
from cleanroom.workspaces import job_succeeded, latest_snapshot, snapshot_volumes

# What the shared copies and the Workspaces' volumes over them carry (snapshot_volumes.SharedCopy.labels).
_SHARED = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=snapshot-volume"


@dataclass(frozen=True)
class SharedObserved:
    job: dict[str, Any] | None
    job_failure: str
    source_volume: dict[str, Any] | None
    data_claim: dict[str, Any] | None
    # Cloned (block storage with a VolumeSnapshotClass): the verified copy's VolumeSnapshot and its content.
    source_snapshot: dict[str, Any] | None = None
    source_snapshot_content: dict[str, Any] | None = None
    workspace_snapshot: dict[str, Any] | None = None


def pinned(workspace: Mapping[str, Any], dataset: Mapping[str, Any] | None) -> str:
    """The snapshot the pass will pin (lifecycle's _Case.pinned, before the plan): spec, status, latest."""
    spec, status = workspace.get("spec") or {}, workspace.get("status") or {}
    return str(
        (spec.get("dataset") or {}).get("snapshot")
        or (status.get("snapshot") or {}).get("digest")
        or (latest_snapshot(dataset) if dataset is not None else "")
    )


def observe(
    workspace: Mapping[str, Any],
    dataset: Mapping[str, Any] | None,
    namespace: str,
    job: dict[str, Any] | None,
    cloned: bool = False,
) -> SharedObserved:
    """The shared copy's Job (``job``, from the watch), why it failed, once it verified its volume (shared)
    or its VolumeSnapshot and that snapshot's content (``cloned``), and the Workspace's own data claim."""
    metadata = workspace["metadata"]
    copy = snapshot_volumes.SharedCopy(
        str(workspace["spec"]["dataset"]["name"]), pinned(workspace, dataset), namespace
    )
    failure = ""
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in ((job or {}).get("status") or {}).get("conditions") or ()
    )
    if failed:
        failure = _kube.job_failure_message(namespace, copy.name("materialize"))
    source = snapshot = content = None
    if job_succeeded(job) and cloned:
        snapshot = _kube.read(snapshot_volumes.SNAPSHOT_API_VERSION, "VolumeSnapshot", namespace, copy.name())
        bound = str(((snapshot or {}).get("status") or {}).get("boundVolumeSnapshotContentName") or "")
        if bound:
            content = _kube.read(snapshot_volumes.SNAPSHOT_API_VERSION, "VolumeSnapshotContent", "", bound)
    elif job_succeeded(job):
        claim = _kube.read("v1", "PersistentVolumeClaim", namespace, copy.name()) or {}
        volume = str((claim.get("spec") or {}).get("volumeName") or "")
        source = _kube.read("v1", "PersistentVolume", "", volume) if volume else None
    data_claim = workspace_data_claim(metadata["namespace"], metadata["name"], cached=False)
    own = None
    if cloned:  # its own VolumeSnapshot, beside its claim: judged before anything is mounted from it
        own = _kube.read(
            snapshot_volumes.SNAPSHOT_API_VERSION,
            "VolumeSnapshot",
            metadata["namespace"],
            object_name(metadata["name"], "data"),
        )
    return SharedObserved(job, failure, source, data_claim, snapshot, content, own)


def workspace_data_claim(namespace: str, workspace: str, cached: bool) -> dict[str, Any] | None:
    """The Workspace's data claim as it exists; None also where the operator may not read claims (a namespace
    no Dataset admits, where the plan builds nothing and says why)."""
    try:
        return _kube.read(
            "v1", "PersistentVolumeClaim", namespace, object_name(workspace, "data"), cached=cached
        )
    except kubernetes.dynamic.exceptions.ForbiddenError:
        return None


def collect(namespace: str, snapshots: bool = False) -> snapshot_volumes.Collection:
    """Delete the shared copies no Workspace pins and the Workspace volumes (and, where the site clones:
    ``snapshots``, the Workspace snapshot contents) no Workspace uses; what went."""
    listing = cast(
        dict[str, Any], _kube.custom_objects().list_cluster_custom_object(GROUP, VERSION, WORKSPACES)
    )
    pins = [p for p in map(snapshot_volumes.workspace_pin, listing.get("items", [])) if p is not None]
    copies = _kube.list_objects("v1", "PersistentVolumeClaim", namespace, _SHARED)
    volumes = _kube.list_objects("v1", "PersistentVolume", "", _SHARED)
    contents = (
        _kube.list_objects(snapshot_volumes.SNAPSHOT_API_VERSION, "VolumeSnapshotContent", "", _SHARED)
        if snapshots
        else []
    )
    decision = snapshot_volumes.collect(pins, copies, volumes, contents)
    for name in decision.volumes:
        _kube.delete("v1", "PersistentVolume", "", name)
    for name in decision.contents:
        _kube.delete(snapshot_volumes.SNAPSHOT_API_VERSION, "VolumeSnapshotContent", "", name)
    for name in decision.copies:
        for api_version, kind, object_ in snapshot_volumes.copy_objects(name, snapshots):
            _kube.delete(api_version, kind, namespace, object_)
    return decision
