"""Pure builders: a Workspace (and its Dataset's snapshot) in, the Kubernetes objects that serve it out.

What a workspace is made of, and why:
- a materializer Job copies the pinned snapshot into a per-workspace volume and verifies every digest;
  it is the only pod with storage credentials and the only one allowed to reach the snapshot store;
- the notebook Pod mounts that volume read-only at /data, a home volume at /home/jovyan and a scratch
  /tmp, runs hardened (PSA restricted) and reaches only the hub's API (where the single-user server checks
  sign-ins): its NetworkPolicy denies every other egress, DNS included, and admits ingress only from the
  hub's proxy;
- the byte meter, its own container in that pod under another user: the single-user server listens on
  localhost only, and every byte to the browser passes the meter, which counts it against the site's
  budget and refuses what does not fit (`notebook.meter`);
- a Service for the proxy to reach the notebook (through the meter).
Every object carries an owner reference to the Workspace, so deleting it removes them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cleanroom.api import API_VERSION, WorkspaceSpec
from cleanroom.api.contract import (
    DATASET_LABEL,
    GRANT_URL_KEY,
    GRANT_URL_VARIABLE,
    MANAGED_BY,
    PURPOSE_ANNOTATION,
    SNAPSHOT_ANNOTATION,
    WORKSPACE_APP,
    WORKSPACE_LABEL,
    hub_env_secret_name,
    label_value,
    object_name,
    server_name,
)
from cleanroom.workspaces.jupyter_paths import (
    IMAGE_CONFIG_DIR,
    IMAGE_DATA_DIR,
    RUNTIME_DIR,
    jupyter_environment,
    server_options,
)
from cleanroom.workspaces.settings import WorkspaceSettings

PSA_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/audit": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}
DATA_PATH = "/data"
HOME_PATH = "/home/jovyan"
NAMESPACE_DEFAULT_DENY = "cleanroom-default-deny"


@dataclass(frozen=True)
class WorkspaceRef:
    name: str
    namespace: str
    uid: str
    snapshot: str
    dataset: str
    snapshot_bytes: int = 0


def labels(ref: WorkspaceRef, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": WORKSPACE_APP,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": role,
        WORKSPACE_LABEL: label_value(ref.name),
        DATASET_LABEL: label_value(ref.dataset),
    }


def owner_reference(ref: WorkspaceRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Workspace",
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ref: WorkspaceRef, name: str, role: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref, role),
        "ownerReferences": [owner_reference(ref)],
        **extra,
    }


def hardened_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security(settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_group,
        "fsGroup": settings.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def no_host_access() -> dict[str, Any]:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
    }


def placement(
    settings: WorkspaceSettings,
    node_labels: Mapping[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """nodeSelector and tolerations of a Workspace's pod: the site's workspace pool, plus what it needs."""
    selector = {**settings.pod_node_selector, **(node_labels or {})}
    tolerate = [dict(t) for t in settings.pod_tolerations] + list(tolerations or [])
    out: dict[str, Any] = {}
    if selector:
        out["nodeSelector"] = selector
    if tolerate:
        out["tolerations"] = tolerate
    return out


def server_port(settings: WorkspaceSettings) -> int:
    """The single-user server's port, on the pod's localhost: only the meter (same pod) reaches it."""
    return settings.notebook_port + 1


# The meter's state (what its window has spent, written before the bytes go out), on a volume that only the
# meter's container mounts: it outlives a killed meter container, and the user's code cannot reach it.
METER_STATE_PATH = "/var/lib/cleanroom-meter"


def _meter_container(ref: WorkspaceRef, spec: WorkspaceSpec, settings: WorkspaceSettings) -> dict[str, Any]:
    """The byte meter, from the notebook image (`cleanroom notebook-meter`), in a container of its own:
    the user's code runs in the notebook container as another user and can neither change nor stop it."""
    return {
        "name": "meter",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "cleanroom",
            "notebook-meter",
            f"--listen=0.0.0.0:{settings.notebook_port}",
            f"--upstream=http://127.0.0.1:{server_port(settings)}",
            f"--budget-bytes={settings.browser_bytes_per_window}",
            f"--window-seconds={settings.browser_window_seconds}",
        ],
        "ports": [{"name": "notebook", "containerPort": settings.notebook_port, "protocol": "TCP"}],
        # The hub's session settings: its API address and the server's token, for the audit intake.
        "envFrom": [{"secretRef": {"name": hub_env_secret_name(ref.name), "optional": True}}],
        "env": [{"name": "CLEANROOM_METER_STATE", "value": f"{METER_STATE_PATH}/ledger.json"}],
        "volumeMounts": [{"name": "meter-state", "mountPath": METER_STATE_PATH}],
        "resources": {
            # Counting bytes on their way is light: a small reservation, room to burst.
            "requests": {"cpu": "20m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "securityContext": {**hardened_container_security(), "runAsUser": settings.meter_run_as_user},
        # Ready once the meter and the server behind it both take connections. This probe runs here, never
        # in the notebook container: a probe's process starts with its container's environment, the
        # session's hub token included, and a kernel (same user, same PID namespace) could read it from
        # /proc/<pid>/environ while it runs. The meter's container is another user's and another PID
        # namespace; the pod's network namespace is shared, so the server's localhost port answers here.
        "readinessProbe": {
            "exec": {
                "command": [
                    "python",
                    "-c",
                    "import socket\n"
                    f"for port in ({settings.notebook_port}, {server_port(settings)}):\n"
                    "    socket.create_connection(('127.0.0.1', port), 2).close()",
                ]
            },
            "periodSeconds": 5,
        },
    }


def build_notebook_pod(
    ref: WorkspaceRef,
    spec: WorkspaceSpec,
    settings: WorkspaceSettings,
    node_labels: Mapping[str, str],
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        **no_host_access(),
        "securityContext": pod_security(settings),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "containers": [_notebook_container(ref, spec, settings), _meter_container(ref, spec, settings)],
        "volumes": [
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": object_name(ref.name, "data"), "readOnly": True},
            },
            {"name": "home", "persistentVolumeClaim": {"claimName": object_name(ref.name, "home")}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "meter-state", "emptyDir": {"sizeLimit": "1Mi"}},
        ],
    }
    gpu_toleration = {"key": settings.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
    pod_spec.update(placement(settings, node_labels, [gpu_toleration] if spec.resources.gpu else []))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            ref,
            object_name(ref.name),
            "notebook",
            annotations={
                SNAPSHOT_ANNOTATION: ref.snapshot,
                PURPOSE_ANNOTATION: spec.purpose[:1024],
            },
        ),
        "spec": pod_spec,
    }


def _notebook_container(
    ref: WorkspaceRef, spec: WorkspaceSpec, settings: WorkspaceSettings
) -> dict[str, Any]:
    """The single-user server: listening on localhost only (the meter beside it is the pod's only door)."""
    resources = spec.resources
    limits: dict[str, str] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu:
        limits["nvidia.com/gpu"] = str(resources.gpu)
    return {
        "name": "notebook",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "jupyterhub-singleuser",
            f"--port={server_port(settings)}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={HOME_PATH}",
            *server_options(RUNTIME_DIR),
        ],
        # `env` wins over `envFrom`: no session setting can turn user configuration back on.
        "env": [
            {"name": "HOME", "value": HOME_PATH},
            {"name": "CLEANROOM_DATA", "value": DATA_PATH},
            {"name": "CLEANROOM_SNAPSHOT", "value": ref.snapshot},
            {"name": "CLEANROOM_WORKSPACE", "value": f"{ref.namespace}/{ref.name}"},
            *(
                {"name": name, "value": value}
                for name, value in jupyter_environment(
                    IMAGE_CONFIG_DIR, IMAGE_DATA_DIR, RUNTIME_DIR, HOME_PATH
                ).items()
            ),
        ],
        # The hub writes the session's JUPYTERHUB_* settings (its API token among them) when a user starts
        # the workspace; the operator never sees or stores them.
        "envFrom": [{"secretRef": {"name": hub_env_secret_name(ref.name), "optional": True}}],
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "securityContext": hardened_container_security(),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_PATH, "readOnly": True},
            {"name": "home", "mountPath": HOME_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # No probe and no hook here: see the meter's readiness probe, which checks this server.
    }


def build_service(ref: WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, object_name(ref.name), "notebook"),
        "spec": {
            "type": "ClusterIP",
            "selector": labels(ref, "notebook"),
            "ports": [{"name": "notebook", "port": settings.notebook_port, "targetPort": "notebook"}],
        },
    }


def build_home_pvc(ref: WorkspaceRef, spec: WorkspaceSpec, settings: WorkspaceSettings) -> dict[str, Any]:
    return _pvc(
        ref, object_name(ref.name, "home"), "home", spec.resources.home_storage, settings.home_storage_class
    )


def snapshot_volume_size(snapshot_bytes: int) -> str:
    """Room for the snapshot plus 10% and 1 GiB for file-system overhead, in whole GiB."""
    gib = 1024**3
    return f"{(int(snapshot_bytes * 1.1) + gib + gib - 1) // gib}Gi"


def build_data_pvc(ref: WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    return _pvc(
        ref,
        object_name(ref.name, "data"),
        "data",
        snapshot_volume_size(ref.snapshot_bytes),
        settings.snapshot_storage_class,
    )


def _pvc(ref: WorkspaceRef, name: str, role: str, size: str, storage_class: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(ref, name, role),
        "spec": spec,
    }


def build_materializer_job(ref: WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # A Job's template cannot change: which snapshot it copied is recorded, so a new pin replaces it.
        "metadata": _metadata(
            ref,
            object_name(ref.name, "materialize"),
            "materializer",
            annotations={SNAPSHOT_ANNOTATION: ref.snapshot},
        ),
        "spec": materializer_job_spec(
            labels(ref, "materializer"),
            object_name(ref.name, "data"),
            object_name(ref.name, "reader"),
            settings,
        ),
    }


def materializer_job_spec(
    pod_labels: Mapping[str, str], claim: str, secret: str, settings: WorkspaceSettings
) -> dict[str, Any]:
    """The spec of a Job that copies one snapshot into ``claim`` and verifies every digest, reading its
    grant URL from ``secret``: a Workspace's own copy, or a snapshot's one shared copy."""
    return {
        "backoffLimit": 3,
        "template": {
            "metadata": {"labels": dict(pod_labels)},
            "spec": {
                **no_host_access(),
                **placement(settings),
                "securityContext": pod_security(settings),
                # Never, not OnFailure: a failed pod stays, with the termination message naming the object
                # that did not verify. Under OnFailure the container restarted in place and the Job
                # controller deleted the pod at the back-off limit, so whether the Workspace could say which
                # object failed depended on whether a pass read the pod first.
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "materialize",
                        "image": settings.materializer_image,
                        # No storage credentials: one presigned URL for this snapshot's read grant.
                        "args": ["snapshot", "materialize-grant", DATA_PATH],
                        # Which file failed verification shows in `kubectl describe pod`.
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "env": [
                            {
                                "name": GRANT_URL_VARIABLE,
                                "valueFrom": {"secretKeyRef": {"name": secret, "key": GRANT_URL_KEY}},
                            }
                        ],
                        # A copy waits on the network and the disk: it reserves little and may burst.
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "128Mi"},
                            "limits": {"cpu": "1", "memory": "1Gi"},
                        },
                        "securityContext": hardened_container_security(),
                        "volumeMounts": [{"name": "data", "mountPath": DATA_PATH}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
        },
    }


def build_reader_secret(ref: WorkspaceRef, grant_url: str) -> dict[str, Any]:
    """This workspace's materializer's only access to the store: the presigned URL of a short-lived read
    grant for its pinned snapshot (snapshots.grant). Empty once the copy is done and the grant was spent."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ref, object_name(ref.name, "reader"), "materializer"),
        "type": "Opaque",
        "stringData": {GRANT_URL_KEY: grant_url},
    }


def is_reader_secret(manifest: Mapping[str, Any]) -> bool:
    """Whether ``manifest`` is a workspace's reader Secret (build_reader_secret)."""
    return manifest["kind"] == "Secret" and GRANT_URL_KEY in (manifest.get("stringData") or {})


def with_grant_url(secret: Mapping[str, Any], grant_url: str) -> dict[str, Any]:
    """The reader Secret holding ``grant_url`` instead."""
    return {**secret, "stringData": {GRANT_URL_KEY: grant_url}}


def build_notebook_network_policy(ref: WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    """Egress only to the hub's API (the single-user server checks sign-ins and reports activity there);
    nothing else, DNS included (it is an exfiltration channel). Ingress only from the hub's proxy."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ref, object_name(ref.name), "notebook"),
        "spec": {
            "podSelector": {"matchLabels": labels(ref, "notebook")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    # The proxy carries the browser's traffic; the hub checks that a started server answers
                    # (JupyterHub polls its /api before it routes the user there).
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": settings.hub_namespace}
                            },
                            "podSelector": {"matchLabels": dict(labels)},
                        }
                        for labels in (settings.hub_proxy_labels, settings.hub_api_labels)
                    ],
                    "ports": [{"protocol": "TCP", "port": settings.notebook_port}],
                }
            ],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": settings.hub_namespace}
                            },
                            "podSelector": {"matchLabels": dict(settings.hub_api_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": settings.hub_api_port}],
                }
            ],
        },
    }


def build_materializer_network_policy(ref: WorkspaceRef, settings: WorkspaceSettings) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ref, object_name(ref.name, "materialize"), "materializer"),
        "spec": materializer_policy_spec(labels(ref, "materializer"), settings),
    }


def materializer_policy_spec(pod_labels: Mapping[str, str], settings: WorkspaceSettings) -> dict[str, Any]:
    """A materializer reaches the snapshot store (and DNS to find it) and the grant signer's port, nothing
    else; nothing reaches it."""
    signer = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": settings.grant_signer_namespace}
                },
                "podSelector": {"matchLabels": dict(settings.grant_signer_labels)},
            }
        ],
        "ports": [{"protocol": "TCP", "port": settings.grant_signer_port}],
    }
    return {
        "podSelector": {"matchLabels": dict(pod_labels)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [*store_and_dns_egress(settings), signer],
    }


def build_namespace_guards(namespace: str, settings: WorkspaceSettings) -> list[dict[str, Any]]:
    """Namespace-wide: default-deny NetworkPolicy, ResourceQuota and LimitRange (shared by its workspaces)."""
    meta = {"namespace": namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": NAMESPACE_DEFAULT_DENY, **meta},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []},
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "cleanroom-workspaces", **meta},
            "spec": {"hard": dict(settings.quota)},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "cleanroom-workspaces", **meta},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": dict(settings.default_container_limits),
                        "defaultRequest": dict(settings.default_container_limits),
                    }
                ]
            },
        },
    ]


def workspace_url(settings: WorkspaceSettings, user: str, ref: WorkspaceRef) -> str:
    return f"{settings.hub_url.rstrip('/')}/hub/spawn/{user}/{server_name(ref.namespace, ref.name)}"


def store_and_dns_egress(settings: WorkspaceSettings) -> list[dict[str, Any]]:
    """Egress to the object store and to cluster DNS, nothing else: what a Job that copies to or from the
    store needs (the materializer, the airlock's copy)."""
    return [
        {
            "to": [{"ipBlock": {"cidr": settings.snapshot_egress_cidr}}],
            "ports": [{"protocol": "TCP", "port": settings.snapshot_egress_port}],
        },
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]
