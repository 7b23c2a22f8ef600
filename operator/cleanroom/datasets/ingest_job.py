"""Pure builders of a Dataset's ingest run as Kubernetes objects: the Indexed Job of shard pods, the Secret
they read, and the NetworkPolicy that lets them reach the store and DNS only.

Built like the Workspace's materializer (`workspaces.manifests`) and hardened the same way: the operator's
own image, Pod Security restricted, no service-account token, no host access, no volume but scratch space.
A pod holds no storage key: its Secret gives it one presigned URL (the run's grant: presigned reads of its
shard's source files and an upload policy that admits only the run's ``out/`` prefix) and the
de-identification key of the run (which the pod needs to pseudonymize). Each completion index is one shard,
retried alone (backoffLimitPerIndex). Owned by the Dataset (cluster-scoped), so deleting it removes them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api import API_VERSION
from cleanroom.api.contract import (
    DATASET_LABEL,
    GRANT_URL_KEY,
    INGEST_GRANT_VARIABLE,
    INGEST_KEY_KEY,
    INGEST_KEY_VARIABLE,
    INGEST_RUN_LABEL,
    INGEST_TABLE_KEY,
    INGEST_TABLE_VARIABLE,
    MANAGED_BY,
    ingest_object_name,
    label_value,
)
from cleanroom.datasets.sharding import PodShape, worker_processes
from cleanroom.workspaces.manifests import (
    hardened_container_security,
    no_host_access,
    placement,
    pod_security,
    store_and_dns_egress,
)
from cleanroom.workspaces.settings import WorkspaceSettings

INGEST_ROLE = "ingest-shard"
SCRATCH_PATH = "/tmp"


@dataclass(frozen=True)
class IngestRun:
    """One planned run: the Dataset (name and uid), the run's name, and how many shards it has."""

    dataset: str
    uid: str
    run: str
    shards: int


def job_name(run: IngestRun) -> str:
    return ingest_object_name(run.dataset, run.run[:10])


def secret_name(run: IngestRun) -> str:
    return ingest_object_name(run.dataset, "ingest")


def policy_name(run: IngestRun) -> str:
    return ingest_object_name(run.dataset, "ingest")


def shard_labels(run: IngestRun) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "cleanroom-ingest",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": INGEST_ROLE,
        DATASET_LABEL: label_value(run.dataset),
        INGEST_RUN_LABEL: run.run,
    }


def _metadata(run: IngestRun, name: str, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": settings.ingest_namespace,
        "labels": shard_labels(run),
        "ownerReferences": [
            {"apiVersion": API_VERSION, "kind": "Dataset", "name": run.dataset, "uid": run.uid}
        ],
    }


def build_ingest_secret(
    run: IngestRun,
    settings: WorkspaceSettings,
    grant_url: str,
    key: bytes,
    table: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The run's Secret: the grant URL and the de-identification key (a random one for Anonymize, made for
    this run and deleted with it), and the site's pseudonym table (as JSON) when the Dataset names one."""
    data = {GRANT_URL_KEY: grant_url, INGEST_KEY_KEY: base64.b64encode(key).decode()}
    if table is not None:
        data[INGEST_TABLE_KEY] = json.dumps(dict(table), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(run, secret_name(run), settings),
        "type": "Opaque",
        "stringData": data,
    }


def _env(run: IngestRun, with_table: bool) -> list[dict[str, Any]]:
    secret = secret_name(run)
    pairs = [(INGEST_GRANT_VARIABLE, GRANT_URL_KEY), (INGEST_KEY_VARIABLE, INGEST_KEY_KEY)]
    if with_table:
        pairs.append((INGEST_TABLE_VARIABLE, INGEST_TABLE_KEY))
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for name, key in pairs
    ]


def build_ingest_job(
    run: IngestRun, shape: PodShape, settings: WorkspaceSettings, *, with_table: bool = False
) -> dict[str, Any]:
    """The Indexed Job: one completion per shard, ``shape.parallelism`` at once, each index retried alone
    up to the site's backoffLimitPerIndex; a pod's CPU and memory are its request and its limit."""
    resources = {"cpu": shape.cpu, "memory": shape.memory}
    container = {
        "name": "ingest",
        "image": settings.ingest_image,
        "args": ["ingest-shard", "--workers", str(worker_processes(shape.cpu))],
        # Why a shard failed shows in `kubectl describe pod` and in the Dataset's condition.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": _env(run, with_table),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": hardened_container_security(),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_PATH}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(run, job_name(run), settings),
        "spec": {
            "completionMode": "Indexed",
            "completions": run.shards,
            "parallelism": max(1, min(shape.parallelism, run.shards)),
            "backoffLimitPerIndex": settings.ingest_backoff_limit_per_index,
            "template": {
                "metadata": {"labels": shard_labels(run)},
                "spec": {
                    **no_host_access(),
                    **placement(settings),
                    "securityContext": pod_security(settings),
                    # Never: a failed pod stays with its termination message; the index is retried by a
                    # new pod (backoffLimitPerIndex needs it).
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def build_ingest_network_policy(run: IngestRun, settings: WorkspaceSettings) -> dict[str, Any]:
    """Shard pods reach the snapshot store, DNS and where the site says its S3 sources are (each source
    file is read by presigned URL), nothing else; nothing reaches them."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(run, policy_name(run), settings),
        "spec": {
            "podSelector": {
                "matchLabels": {INGEST_RUN_LABEL: run.run, DATASET_LABEL: label_value(run.dataset)}
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                *store_and_dns_egress(settings),
                *(dict(rule) for rule in settings.ingest_source_egress),
            ],
        },
    }
