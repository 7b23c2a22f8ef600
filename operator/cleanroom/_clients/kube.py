"""One lazily built Kubernetes API client (in-cluster, else the kubeconfig) and the reads every
component shares. Synchronous: async callers run these in a thread."""

from __future__ import annotations

import functools
from typing import Any, cast

import kubernetes

from cleanroom.api import GROUP, VERSION

CONNECTIONS = 32


@functools.cache
def api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    configuration = kubernetes.client.Configuration.get_default_copy()
    # The operator runs up to 32 handler threads against one client; urllib3's default pool of 10 would
    # open and discard a connection for every request beyond it.
    configuration.connection_pool_maxsize = CONNECTIONS
    return kubernetes.client.ApiClient(configuration)


def custom_objects() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


@functools.cache
def whoami() -> str:
    """This process's user name as the API server authenticates it (a SelfSubjectReview, which every
    authenticated user may make): what the cleanroom admission policy compares the *-by annotations with."""
    review = kubernetes.client.AuthenticationV1Api(api_client()).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview()
    )
    user = review.status.user_info if review.status else None
    if user is None or not user.username:
        raise RuntimeError("the API server's SelfSubjectReview named no user for this process")
    return str(user.username)


def get_workspace(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        body = custom_objects().get_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(dict[str, Any], body)
