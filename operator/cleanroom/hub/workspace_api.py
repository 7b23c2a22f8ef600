"""The hub's Kubernetes calls: read Workspaces, set `spec.running`, hand the session's settings to the pod,
ask for exports for signed-in users and read them back.

The hub never writes a pod spec: it changes `spec.running` and one Secret (the JUPYTERHUB_* settings the
operator's pod takes with `envFrom`), and the operator does the rest. It reads one pod: a stopped session's
notebook pod, to know when it is gone. Synchronous; the spawner runs these in a thread."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import kubernetes

from cleanroom._clients.kube import core, custom_objects, get_workspace
from cleanroom.api import (
    API_VERSION,
    EXPORT_REQUESTS,
    GROUP,
    REQUESTED_BY_ANNOTATION,
    STARTED_BY_ANNOTATION,
    VERSION,
)
from cleanroom.api.contract import LAST_ACTIVITY_ANNOTATION, hub_env_secret_name, object_name

__all__ = [
    "annotate_activity",
    "create_export_request",
    "delete_session_settings",
    "get_export_request",
    "get_notebook_pod",
    "get_workspace",
    "list_export_requests",
    "list_workspaces",
    "reader_grant_url",
    "set_running",
    "write_session_settings",
]


def list_workspaces() -> list[dict[str, Any]]:
    body = cast(dict[str, Any], custom_objects().list_cluster_custom_object(GROUP, VERSION, "workspaces"))
    return cast(list[dict[str, Any]], body.get("items", []))


def set_running(namespace: str, name: str, running: bool, user: str) -> None:
    """Start or stop a Workspace for the signed-in ``user``. Only the hub's account may name another user
    in started-by (the admission policy), and the operator starts a Workspace only for a user it names."""
    annotations = {STARTED_BY_ANNOTATION: user} if running else {}
    patch = {"metadata": {"annotations": annotations}, "spec": {"running": running}}
    custom_objects().patch_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name, patch)


def annotate_activity(namespace: str, name: str, moment: datetime) -> None:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"metadata": {"annotations": {LAST_ACTIVITY_ANNOTATION: stamp}}}
    custom_objects().patch_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name, patch)


def get_notebook_pod(namespace: str, name: str) -> dict[str, Any] | None:
    """The Workspace's notebook pod as the API server has it (its metadata and status), None once gone."""
    try:
        pod = core().read_namespaced_pod(object_name(name), namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    body = kubernetes.client.ApiClient().sanitize_for_serialization(pod)
    return {"metadata": body.get("metadata", {}), "status": body.get("status", {})}


def write_session_settings(workspace: Mapping[str, Any], settings: Mapping[str, str]) -> None:
    meta = workspace["metadata"]
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": hub_env_secret_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {
                "app.kubernetes.io/managed-by": "cleanroom-hub",
                "cleanroom.dev/workspace": meta["name"],
            },
            # Deleted with its Workspace.
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Workspace",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "type": "Opaque",
        "stringData": dict(settings),
    }
    try:
        core().create_namespaced_secret(meta["namespace"], cast(Any, body))
    except kubernetes.client.ApiException as error:
        if error.status != 409:
            raise
        core().replace_namespaced_secret(body["metadata"]["name"], meta["namespace"], cast(Any, body))


def reader_grant_url(namespace: str, name: str) -> str:
    """The read grant the operator issued for this workspace's materializer ("" when it holds none). Only the
    local-process development mode reads it, to copy the snapshot the way the materializer Job would."""
    try:
        secret = core().read_namespaced_secret(object_name(name, "reader"), namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    value = (secret.data or {}).get("grantUrl", "")
    return base64.b64decode(value).decode() if value else ""


def delete_session_settings(namespace: str, name: str) -> None:
    try:
        core().delete_namespaced_secret(hub_env_secret_name(name), namespace)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise


def create_export_request(
    namespace: str, workspace: str, user: str, files: list[str], justification: str
) -> str:
    """Ask for an export for the signed-in ``user`` from their ``workspace`` (both from the hub's records of
    the session, never from the request); the admission policy lets only the hub name a user other than
    itself in requested-by. Returns the new request's name."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "ExportRequest",
        "metadata": {
            "generateName": f"{workspace[:50]}-",
            "namespace": namespace,
            "annotations": {REQUESTED_BY_ANNOTATION: user},
        },
        "spec": {"workspace": workspace, "files": files, "justification": justification},
    }
    created = cast(
        dict[str, Any],
        custom_objects().create_namespaced_custom_object(GROUP, VERSION, namespace, EXPORT_REQUESTS, body),
    )
    return str(created["metadata"]["name"])


def list_export_requests() -> list[dict[str, Any]]:
    body = cast(dict[str, Any], custom_objects().list_cluster_custom_object(GROUP, VERSION, EXPORT_REQUESTS))
    return cast(list[dict[str, Any]], body.get("items", []))


def get_export_request(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = custom_objects().get_namespaced_custom_object(GROUP, VERSION, namespace, EXPORT_REQUESTS, name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)
