"""The operator's Kubernetes API client: one lazily built client, from the cluster or a kubeconfig."""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from typing import Any, cast

import kubernetes

from cleanroom.api import GROUP, VERSION


@functools.cache
def _api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def custom_objects() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(_api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(_api_client())


def get_workspace(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = custom_objects().get_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)


def patch_workspace_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    custom_objects().patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "workspaces", name, {"status": dict(status)}
    )


def patch_dataset_status(name: str, status: Mapping[str, Any]) -> None:
    custom_objects().patch_cluster_custom_object_status(
        GROUP, VERSION, "datasets", name, {"status": dict(status)}
    )


def get_dataset(name: str) -> dict[str, Any] | None:
    try:
        body = custom_objects().get_cluster_custom_object(GROUP, VERSION, "datasets", name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)


class SecretMissing(LookupError):
    """A referenced Secret or one of its keys does not exist; the message names it."""


def secret_value(namespace: str, name: str, key: str) -> bytes:
    """One data key of a Secret, decoded."""
    try:
        secret = core().read_namespaced_secret(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            raise SecretMissing(f"Secret {namespace}/{name} does not exist") from error
        raise
    data = secret.data or {}
    if key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise SecretMissing(f"Secret {namespace}/{name} has no key {key!r} (it has: {keys})")
    return base64.b64decode(data[key])


def workspaces_using(dataset: str) -> set[str]:
    """Snapshot digests pinned by any Workspace over ``dataset`` (they must not be pruned)."""
    listing = cast(dict[str, Any], custom_objects().list_cluster_custom_object(GROUP, VERSION, "workspaces"))
    return {
        str(item.get("status", {}).get("snapshot", {}).get("digest"))
        for item in listing.get("items", [])
        if item.get("spec", {}).get("dataset", {}).get("name") == dataset
        and item.get("status", {}).get("snapshot", {}).get("digest")
    }
