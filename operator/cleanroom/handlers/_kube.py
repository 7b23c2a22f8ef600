"""The operator's Kubernetes API client: one lazily built client, from the cluster or a kubeconfig."""

from __future__ import annotations

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
