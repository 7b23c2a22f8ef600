"""Pure builders of an export's two Jobs, each with the Secret holding its grant URL and the NetworkPolicy
that lets it reach the store only: the copy, which reads the requested files from the Workspace's home
volume into quarantine, and the check, which runs the disclosure checks on the quarantined files and
writes their result (`airlock.checker`).

Built like the Workspace's materializer (`workspaces.manifests`) and hardened the same way: the operator's
own image, Pod Security restricted, no service-account token, no host access, no storage key (one
presigned URL to its grant), the home volume mounted read-only (the copy) or none at all (the check).
Owned by the ExportRequest, so deleting the request removes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cleanroom.api import API_VERSION
from cleanroom.api.contract import MANAGED_BY, WORKSPACE_LABEL, label_value, object_name
from cleanroom.workspaces.manifests import (
    HOME_PATH,
    hardened_container_security,
    no_host_access,
    placement,
    pod_security,
    store_and_dns_egress,
)
from cleanroom.workspaces.settings import WorkspaceSettings

UPLOAD_GRANT_VARIABLE = "CLEANROOM_EXPORT_GRANT_URL"
CHECK_GRANT_VARIABLE = "CLEANROOM_EXPORT_CHECK_GRANT_URL"
# app.kubernetes.io/name of an export's objects; the component tells the copy's from the check's.
EXPORT_JOB_NAME = "cleanroom-export"
COPY_ROLE = "export-copy"
CHECK_ROLE = "export-check"
# How long a copy may run before Kubernetes stops it (a copy of at most the export policy's bytes).
COPY_DEADLINE_SECONDS = 900
# The checker's time bound: a file that needs longer than this to judge is rejected (the checks of the
# default 100 MiB export policy's files take well under half of it, and of the default memory limit,
# settings.export_check_memory), and tried once more only when the store could not be reached
# (`checker.UNREACHABLE_EXIT`).
CHECK_DEADLINE_SECONDS = 600
CHECK_UNREACHABLE_EXIT = 75


@dataclass(frozen=True)
class ExportRef:
    name: str
    namespace: str
    uid: str
    workspace: str
    dataset: str


def export_object_name(export: str, suffix: str) -> str:
    """``xr-<export>-<suffix>`` as a DNS-1035 label of at most 63 characters; long names get a hash."""
    base = f"xr-{export}-{suffix}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"xr-{export}"[: 63 - len(suffix) - 10].rstrip("-") + f"-{digest}-{suffix}"


def _labels(ref: ExportRef, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": EXPORT_JOB_NAME,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": role,
        "cleanroom.dev/export": label_value(ref.name),
        WORKSPACE_LABEL: label_value(ref.workspace),
    }


def copy_labels(ref: ExportRef) -> dict[str, str]:
    return _labels(ref, COPY_ROLE)


def check_labels(ref: ExportRef) -> dict[str, str]:
    return _labels(ref, CHECK_ROLE)


def _metadata(ref: ExportRef, name: str, role: str = COPY_ROLE) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": _labels(ref, role),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "ExportRequest",
                "name": ref.name,
                "uid": ref.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def build_upload_secret(ref: ExportRef, grant_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ref, export_object_name(ref.name, "upload")),
        "type": "Opaque",
        "stringData": {"grantUrl": grant_url},
    }


def build_copy_job(ref: ExportRef, settings: WorkspaceSettings, node: str = "") -> dict[str, Any]:
    """The copy Job. ``node``: where the notebook runs now, whose home volume (ReadWriteOnce) only pods on
    that node can mount while it does."""
    pod_placement = placement(settings)
    if node:
        pod_placement["nodeSelector"] = {
            **pod_placement.get("nodeSelector", {}),
            "kubernetes.io/hostname": node,
        }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(ref, export_object_name(ref.name, "copy")),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": COPY_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": copy_labels(ref)},
                "spec": {
                    **no_host_access(),
                    **pod_placement,
                    "securityContext": pod_security(settings),
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "copy",
                            "image": settings.materializer_image,
                            "args": ["airlock-copy", HOME_PATH],
                            # Which file could not be copied, and why, shows in the pod's termination
                            # message; the operator reports it on the ExportRequest.
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "env": [
                                {
                                    "name": UPLOAD_GRANT_VARIABLE,
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": export_object_name(ref.name, "upload"),
                                            "key": "grantUrl",
                                        }
                                    },
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"cpu": "1", "memory": "1Gi"},
                            },
                            "securityContext": hardened_container_security(),
                            "volumeMounts": [{"name": "home", "mountPath": HOME_PATH, "readOnly": True}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "home",
                            "persistentVolumeClaim": {
                                "claimName": object_name(ref.workspace, "home"),
                                "readOnly": True,
                            },
                        }
                    ],
                },
            },
        },
    }


def build_copy_network_policy(ref: ExportRef, settings: WorkspaceSettings) -> dict[str, Any]:
    """The copy reaches the store (and DNS to find it), nothing else; nothing reaches it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ref, export_object_name(ref.name, "copy")),
        "spec": {
            "podSelector": {"matchLabels": copy_labels(ref)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": store_and_dns_egress(settings),
        },
    }


def copy_objects(ref: ExportRef) -> tuple[tuple[str, str, str], ...]:
    """(apiVersion, kind, name) of what a copy is made of, for deleting it once done."""
    return (
        ("batch/v1", "Job", export_object_name(ref.name, "copy")),
        ("v1", "Secret", export_object_name(ref.name, "upload")),
        ("networking.k8s.io/v1", "NetworkPolicy", export_object_name(ref.name, "copy")),
    )


def build_check_secret(ref: ExportRef, grant_url: str) -> dict[str, Any]:
    """The check Job's only access to the store: the URL of its grant (emptied once the result is read)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ref, export_object_name(ref.name, "check"), CHECK_ROLE),
        "type": "Opaque",
        "stringData": {"grantUrl": grant_url},
    }


def build_check_job(ref: ExportRef, settings: WorkspaceSettings) -> dict[str, Any]:
    """The check Job: the operator's image running `cleanroom airlock-check`, with no volume, its memory,
    CPU and time bounded. A failure other than an unreachable store fails the Job at once (a file that
    kills the checker kills every retry), and the operator rejects the request."""
    name = export_object_name(ref.name, "check")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(ref, name, CHECK_ROLE),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": CHECK_DEADLINE_SECONDS,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "check",
                            "operator": "NotIn",
                            "values": [CHECK_UNREACHABLE_EXIT],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": check_labels(ref)},
                "spec": {
                    **no_host_access(),
                    **placement(settings),
                    "securityContext": pod_security(settings),
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "check",
                            "image": settings.materializer_image,
                            "args": ["airlock-check"],
                            # Why the checks could not finish shows in the pod's termination message; the
                            # operator quotes it (cleaned) on the ExportRequest.
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "env": [
                                {
                                    "name": CHECK_GRANT_VARIABLE,
                                    "valueFrom": {"secretKeyRef": {"name": name, "key": "grantUrl"}},
                                },
                                # One thread: the CPU limit is one core, and each thread reserves memory.
                                {"name": "OPENBLAS_NUM_THREADS", "value": "1"},
                                {"name": "OMP_NUM_THREADS", "value": "1"},
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "256Mi"},
                                "limits": {
                                    "cpu": settings.export_check_cpu,
                                    "memory": settings.export_check_memory,
                                },
                            },
                            "securityContext": hardened_container_security(),
                        }
                    ],
                },
            },
        },
    }


def build_check_network_policy(ref: ExportRef, settings: WorkspaceSettings) -> dict[str, Any]:
    """The checker reaches the store (and DNS to find it), nothing else; nothing reaches it."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ref, export_object_name(ref.name, "check"), CHECK_ROLE),
        "spec": {
            "podSelector": {"matchLabels": check_labels(ref)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": store_and_dns_egress(settings),
        },
    }


def check_objects(ref: ExportRef) -> tuple[tuple[str, str, str], ...]:
    """(apiVersion, kind, name) of what a check is made of."""
    name = export_object_name(ref.name, "check")
    return (
        ("batch/v1", "Job", name),
        ("v1", "Secret", name),
        ("networking.k8s.io/v1", "NetworkPolicy", name),
    )
