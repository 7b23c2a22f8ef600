"""The operator's settings for workspaces: registries, GPU label mapping, storage, quotas, the hub proxy.

Loaded from a YAML file (the Helm chart mounts it; path in CLEANROOM_WORKSPACE_CONFIG) over these defaults.
Every field is plain data so the builders that read it stay pure.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cleanroom.api import SnapshotVolumeMode
from cleanroom.api.contract import DEFAULT_SECURITY_OFFICER_GROUP

# gpuType -> node labels, per platform. GPU feature discovery's product label is the default; GKE, EKS and
# AKS label GPU nodes their own way, so a site picks the mapping that fits its cluster.
DEFAULT_GPU_TYPES: dict[str, dict[str, str]] = {
    "nvidia-a100-80gb": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "nvidia-a100-40gb": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
    "nvidia-h100-80gb": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "nvidia-l4": {"nvidia.com/gpu.product": "NVIDIA-L4"},
    "nvidia-t4": {"nvidia.com/gpu.product": "Tesla-T4"},
}
PLATFORM_GPU_LABELS: dict[str, dict[str, dict[str, str]]] = {
    "gke": {
        "nvidia-a100-80gb": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
        "nvidia-h100-80gb": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        "nvidia-l4": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "nvidia-t4": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
    },
    "eks": {
        "nvidia-a100-80gb": {"node.kubernetes.io/instance-type": "p4de.24xlarge"},
        "nvidia-h100-80gb": {"node.kubernetes.io/instance-type": "p5.48xlarge"},
        "nvidia-l4": {"node.kubernetes.io/instance-type": "g6.xlarge"},
        "nvidia-t4": {"node.kubernetes.io/instance-type": "g4dn.xlarge"},
    },
    "aks": {
        "nvidia-a100-80gb": {
            "kubernetes.azure.com/accelerator": "nvidia",
            "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4",
        },
        "nvidia-t4": {
            "kubernetes.azure.com/accelerator": "nvidia",
            "node.kubernetes.io/instance-type": "Standard_NC4as_T4_v3",
        },
    },
}


# The chart's values.schema.json lists the same.
# clone is not a mode of its own: it is how the mode shared serves block storage given a VolumeSnapshotClass.
SNAPSHOT_VOLUME_MODES = (SnapshotVolumeMode.COPY.value, SnapshotVolumeMode.SHARED.value)


@dataclass(frozen=True)
class WorkspaceSettings:
    allowed_image_prefixes: tuple[str, ...] = ("registry.example.org/cleanroom/",)
    gpu_platform: str = "gpu-feature-discovery"
    gpu_types: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: dict(DEFAULT_GPU_TYPES))
    gpu_toleration_key: str = "nvidia.com/gpu"
    home_storage_class: str = ""
    snapshot_storage_class: str = ""
    # How a Workspace's read-only snapshot volume is served (api.SnapshotVolumeMode): "copy", a verified
    # copy per Workspace; "shared", one verified copy per snapshot in snapshot_volume_namespace, bound to
    # each Workspace read-only through a PersistentVolume over the same storage made for its claim alone
    # (storage a second PersistentVolume can mount: hostPath, local, NFS, CSI file systems); docs/install.md
    # says which storage offers which.
    snapshot_volume_mode: str = "copy"
    snapshot_volume_namespace: str = "cleanroom-snapshots"
    # Provisioners of block storage besides snapshot_volumes.BLOCK_PROVISIONERS: in the shared mode, a
    # Workspace whose snapshot StorageClass is served by one gets a verified copy of its own.
    snapshot_block_provisioners: tuple[str, ...] = ()
    # In the shared mode, on block storage: the VolumeSnapshotClass (of the snapshot StorageClass's CSI driver)
    # with which the one verified copy is snapshotted, each Workspace's claim being restored from it (a clone
    # per namespace, status.snapshotVolume "clone"). Empty: block storage is served a verified copy each.
    snapshot_volume_snapshot_class: str = ""
    # The image that materializes a snapshot into the workspace's read-only volume (the operator image).
    materializer_image: str = "registry.example.org/cleanroom/operator:0.1.0"
    # The snapshot store as the materializer reaches it (grant URLs are signed for this address), and how
    # long a materializer's read grant lives (the operator renews it at half-life until the copy is done).
    snapshot_endpoint: str = "http://s3.cleanroom-system:7070"
    snapshot_bucket: str = "cleanroom-snapshots"
    snapshot_grant_seconds: int = 3600
    snapshot_egress_cidr: str = "0.0.0.0/0"
    snapshot_egress_port: int = 7070
    # The grant signer (snapshots.signer, a Deployment of its own): its address as materializers reach it,
    # put in every grant, and the pods, namespace and port their NetworkPolicy lets them reach.
    grant_signer_url: str = "http://cleanroom-grant-signer.cleanroom-system:8443"
    grant_signer_namespace: str = "cleanroom-system"
    grant_signer_labels: Mapping[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "cleanroom-grant-signer"}
    )
    grant_signer_port: int = 8443
    # The file of the CA (PEM) that issued the signer's certificate (the chart mounts it): each grant names
    # it, read afresh (a mounted ConfigMap changes in place), and materializers check the signer against it
    # alone. Empty: the signer is reached as grant_signer_url says (plain HTTP only on a development stack).
    grant_signer_ca_file: str = ""
    hub_namespace: str = "cleanroom-system"
    hub_proxy_labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "cleanroom-hub",
            "app.kubernetes.io/component": "proxy",
        }
    )
    hub_api_labels: Mapping[str, str] = field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "cleanroom-hub",
            "app.kubernetes.io/component": "hub",
        }
    )
    hub_api_port: int = 8081
    hub_url: str = "http://127.0.0.1:8000"
    notebook_port: int = 8888
    # The byte meter: bytes to the browser a workspace may send in any window (docs/threat-model.md gives
    # the figure), and the user it runs as (not the notebook's, so that the user's code cannot stop it).
    browser_bytes_per_window: int = 64 * 1024 * 1024
    browser_window_seconds: int = 3600
    meter_run_as_user: int = 1001
    run_as_user: int = 1000
    run_as_group: int = 100
    quota: Mapping[str, str] = field(
        default_factory=lambda: {
            "requests.nvidia.com/gpu": "8",
            "requests.cpu": "64",
            "requests.memory": "512Gi",
            "limits.cpu": "64",
            "limits.memory": "512Gi",
            "requests.storage": "2Ti",
            "persistentvolumeclaims": "50",
            "pods": "50",
        }
    )
    default_container_limits: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi"})
    expiry_grace_seconds: int = 86400
    egress_probe: str = "auto"
    egress_probe_image: str = "registry.example.org/cleanroom/operator:0.1.0"
    # Node labels and tolerations added to every pod made for a Workspace (notebook, materializer, egress
    # probe): a node pool set aside for workspaces. GPU labels and the GPU toleration are added besides.
    pod_node_selector: Mapping[str, str] = field(default_factory=dict)
    pod_tolerations: tuple[Mapping[str, Any], ...] = ()
    # The airlock (ExportRequest): the group whose members are security officers (as the API server
    # authenticates them), how long a request waits for its decisions, how long released files stay
    # downloadable, and how long the copy Job's upload grant lives.
    export_officer_group: str = DEFAULT_SECURITY_OFFICER_GROUP
    export_pending_seconds: int = 7 * 86400
    export_download_seconds: int = 86400
    export_copy_grant_seconds: int = 3600
    # The check Job's container limits (Kubernetes quantities; the chart's exports.check): a file whose
    # disclosure checks need more memory or CPU time than this is rejected, never released. The requests stay
    # 100m and 256Mi, so the limits must be at least those.
    export_check_cpu: str = "1"
    export_check_memory: str = "2048Mi"
    # A Dataset's ingest (cleanroom.datasets.sharding): "job" runs it as an Indexed Job of shard pods in
    # ingest_namespace (the operator's image, `cleanroom ingest-shard`); "in-process" in the operator's own
    # worker processes, which is also where a Job cannot run: every node simulated (kwok), or a directory
    # source (a path on the operator's file system). The Dataset's spec.ingest overrides the pod figures.
    ingest_mode: str = "in-process"
    ingest_namespace: str = "cleanroom-ingest"
    ingest_image: str = "registry.example.org/cleanroom/operator:0.1.0"
    ingest_parallelism: int = 2
    ingest_files_per_shard: int = 500
    ingest_cpu: str = "1"
    ingest_memory: str = "1Gi"
    ingest_backoff_limit_per_index: int = 2
    # How long a run's grant (its presigned reads and its upload policy) lives; a run that outlives it
    # fails its remaining shards and is planned again.
    ingest_grant_seconds: int = 6 * 3600
    # NetworkPolicy egress rules shard pods get besides the store and DNS: where S3 sources other than the
    # snapshot store live (shard pods read them by presigned URL).
    ingest_source_egress: tuple[Mapping[str, Any], ...] = ()

    def node_labels_for(self, gpu_type: str) -> Mapping[str, str] | None:
        """Node labels for a gpuType on this platform; None when the type is unknown here."""
        if not gpu_type:
            return {}
        table = PLATFORM_GPU_LABELS.get(self.gpu_platform, self.gpu_types)
        return table.get(gpu_type)

    def image_allowed(self, image: str) -> bool:
        return any(image.startswith(prefix) for prefix in self.allowed_image_prefixes)


def load_settings(path: str | None = None) -> WorkspaceSettings:
    """Settings from YAML (camelCase keys) over the defaults; unknown keys are an error naming them."""
    path = path if path is not None else os.environ.get("CLEANROOM_WORKSPACE_CONFIG", "")
    if not path:
        return WorkspaceSettings()
    raw: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
    names = {_camel(f.name): f.name for f in dataclasses.fields(WorkspaceSettings)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ValueError(
            f"{path}: unknown workspace settings {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = {
        names[key]: tuple(value) if isinstance(value, list) else value for key, value in raw.items()
    }
    mode = values.get("snapshot_volume_mode", "copy")
    if mode not in SNAPSHOT_VOLUME_MODES:
        raise ValueError(f"{path}: snapshotVolumeMode {mode!r}; known: {', '.join(SNAPSHOT_VOLUME_MODES)}")
    ca_file = values.get("grant_signer_ca_file", "")
    if ca_file and not Path(ca_file).is_file():
        raise ValueError(
            f"{path}: grantSignerCaFile {ca_file} is not a file (the chart mounts the signer's CA)"
        )
    return WorkspaceSettings(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
