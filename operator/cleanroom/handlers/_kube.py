"""The operator's Kubernetes API client: one lazily built client, from the cluster or a kubeconfig."""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

import kubernetes
import kubernetes.dynamic.exceptions
from kubernetes.dynamic import DynamicClient

from cleanroom._clients.kube import api_client, core, custom_objects, get_workspace, whoami
from cleanroom.api import GROUP, LAST_CHANGED_BY_ANNOTATION, VERSION

__all__ = ["core", "custom_objects", "get_workspace", "whoami"]
LOGGER = logging.getLogger("cleanroom.kube")


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


FIELD_MANAGER = "cleanroom"


@functools.cache
def _dynamic() -> DynamicClient:
    return DynamicClient(api_client())


@functools.cache
def _resource(api_version: str, kind: str) -> Any:
    return _dynamic().resources.get(api_version=api_version, kind=kind)


# Kinds found not served, and when: asked again after SERVES_TTL s (CRDs installed later are found then).
_UNSERVED: dict[tuple[str, str], float] = {}
SERVES_TTL = 30.0


def serves(api_version: str, kind: str) -> bool:
    """Whether the API server serves ``kind`` of ``api_version`` (its discovery lists it): a CRD's kind is not
    served on a cluster where the CRD was never installed. A kind found once stays found for the process
    (``_resource`` keeps it; CRDs removed under a running operator show as API errors until it restarts), and
    a group whose discovery fails reads as not served until it answers again."""
    key = (api_version, kind)
    since = _UNSERVED.get(key)
    if since is not None and time.monotonic() - since < SERVES_TTL:
        return False
    try:
        _resource(api_version, kind)
    except kubernetes.dynamic.exceptions.ResourceNotFoundError:
        _UNSERVED[key] = time.monotonic()
        return False
    _UNSERVED.pop(key, None)
    return True


class ApplyRefused(RuntimeError):
    """The API server refused an object (quota, admission); the message is the server's own."""

    def __init__(self, kind: str, name: str, message: str) -> None:
        super().__init__(f"{kind} {name}: {message}")
        self.kind = kind
        self.name = name
        self.message = message


def apply(manifest: Mapping[str, Any], attempts: int = 5) -> None:
    """Server-side apply as the operator: creates or updates, and running it twice changes nothing.

    A 409 here is never a field conflict (conflicts are forced): it is the API server losing a race with
    another writer of the same object, such as the quota controller updating a ResourceQuota's status or
    a second Workspace's pass applying the same namespace guard. It is retried at once, a few times, rather
    than left to kopf's 60-second handler retry."""
    resource = _resource(manifest["apiVersion"], manifest["kind"])
    for attempt in range(attempts):
        try:
            _dynamic().server_side_apply(
                resource,
                body=dict(manifest),
                namespace=manifest["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
            return
        except kubernetes.dynamic.exceptions.DynamicApiError as error:
            if error.status == 409 and attempt < attempts - 1:
                time.sleep(0.1 * (attempt + 1))
                continue
            if error.status not in (403, 422):
                raise
            raise _refused(manifest, error) from error


def _refused(
    manifest: Mapping[str, Any], error: kubernetes.dynamic.exceptions.DynamicApiError
) -> ApplyRefused:
    """The API server's refusal of ``manifest`` (quota, admission), in its own words."""
    try:
        message = str(json.loads(error.body).get("message", error.body))
    except (TypeError, ValueError):
        message = str(error.body or error.reason)
    return ApplyRefused(manifest["kind"], manifest["metadata"]["name"], message)


def create_if_absent(manifest: Mapping[str, Any]) -> bool:
    """Create the object unless one of that name exists; True when this call created it. For objects that
    are made once and then left (volume claims: their size may only grow and their class never change)."""
    resource = _resource(manifest["apiVersion"], manifest["kind"])
    try:
        resource.create(
            body=dict(manifest), namespace=manifest["metadata"].get("namespace"), field_manager=FIELD_MANAGER
        )
    except kubernetes.dynamic.exceptions.ConflictError:
        return False
    except kubernetes.dynamic.exceptions.DynamicApiError as error:
        if error.status not in (403, 422):
            raise
        raise _refused(manifest, error) from error
    return True


def read(
    api_version: str, kind: str, namespace: str, name: str, cached: bool = False
) -> dict[str, Any] | None:
    """The object, or None. ``cached`` reads the API server's watch cache (resourceVersion 0): no etcd read,
    possibly a moment old."""
    try:
        found = _resource(api_version, kind).get(
            name=name, namespace=namespace, **({"resource_version": "0"} if cached else {})
        )
    except kubernetes.dynamic.exceptions.NotFoundError:
        return None
    return cast(dict[str, Any], found.to_dict())


def ensure_created(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The object of the manifest's name as it exists, created from the manifest only when it does not. For
    objects made once and then left (volume claims: their size may only grow and their class never change).

    Read first, from the watch cache: quota admission charges a create to the namespace's quota before
    storage finds the name taken, until the quota controller's next resync, and refuses it with 403 when the
    quota is full, so creating what exists would make running Workspaces look over quota. For the same
    reason a refusal of an object that does exist (the cache was behind) is not a failure."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    namespace, name = manifest["metadata"].get("namespace", ""), manifest["metadata"]["name"]
    found = read(api_version, kind, namespace, name, cached=True)
    if found is not None:
        return found
    try:
        if create_if_absent(manifest):
            return dict(manifest)
    except ApplyRefused:
        found = read(api_version, kind, namespace, name)
        if found is None:
            raise
        return found
    return read(api_version, kind, namespace, name) or dict(manifest)


def delete(api_version: str, kind: str, namespace: str, name: str) -> bool:
    """Delete if present, and what it owns in the background (a Job's pods); True when something was deleted."""
    try:
        _resource(api_version, kind).delete(
            name=name, namespace=namespace, body={"propagationPolicy": "Background"}
        )
    except kubernetes.dynamic.exceptions.NotFoundError:
        return False
    return True


def label_namespace(namespace: str, labels: Mapping[str, str]) -> None:
    found = core().read_namespace(namespace).metadata
    current = (found.labels if found else None) or {}
    if any(current.get(k) != v for k, v in labels.items()):
        core().patch_namespace(namespace, {"metadata": {"labels": dict(labels)}})


def config_map_data(namespace: str, name: str) -> dict[str, str]:
    try:
        found = core().read_namespaced_config_map(name, namespace)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return dict(found.data or {})


_NODES_CHECKED: dict[str, tuple[float, tuple[bool, frozenset[str]]]] = {}


def simulated_nodes(ttl: float = 60.0) -> tuple[bool, frozenset[str]]:
    """Whether every node is kwok-simulated (pods never execute there), and the names of those that are;
    cached for ``ttl`` s. A cluster may mix them (the local stack's real node beside kwok's)."""
    cached = _NODES_CHECKED.get("value")
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1]
    nodes = core().list_node().items
    names = frozenset(
        str(n.metadata.name)
        for n in nodes
        if n.metadata is not None and (n.metadata.annotations or {}).get("kwok.x-k8s.io/node")
    )
    result = (bool(nodes) and len(names) == len(nodes), names)
    _NODES_CHECKED["value"] = (time.monotonic(), result)
    return result


_PROVISIONERS: dict[str, tuple[float, str]] = {}
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


class StorageClassUnread(Exception):
    """The snapshot storage class could not be read, and was never read before: the pass is tried again."""


def storage_provisioner(storage_class: str, ttl: float = 60.0) -> str:
    """The provisioner of ``storage_class`` (the cluster's default class where it is "": the newest of those
    marked default, as the API server picks it), cached for ``ttl`` s; "" when there is no such class. When
    the class cannot be read the last answer stands: a passing API error must not move Workspaces between
    a shared copy and copies of their own. Never read: StorageClassUnread."""
    cached = _PROVISIONERS.get(storage_class)
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1]
    try:
        if storage_class:
            found = read("storage.k8s.io/v1", "StorageClass", "", storage_class, cached=True) or {}
        else:
            defaults = [
                c
                for c in list_objects("storage.k8s.io/v1", "StorageClass", "", "")
                if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
            ]
            found = max(defaults, key=lambda c: str(c["metadata"].get("creationTimestamp") or ""), default={})
        provisioner = str(found.get("provisioner") or "")
    except kubernetes.dynamic.exceptions.DynamicApiError as error:
        if cached:
            LOGGER.warning(
                "the snapshot storage class %r cannot be read (%s): as before", storage_class, error.reason
            )
            return cached[1]
        raise StorageClassUnread(
            f"the snapshot storage class {storage_class or '(the default)'} cannot be read: {error.reason}"
        ) from error
    _PROVISIONERS[storage_class] = (time.monotonic(), provisioner)
    return provisioner


def patch_workspace_spec(namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    """Change a Workspace's spec as this account: the admission policy admits a spec change only with
    cleanroom.dev/last-changed-by equal to the requester."""
    body = {"metadata": {"annotations": {LAST_CHANGED_BY_ANNOTATION: whoami()}}, "spec": dict(spec)}
    custom_objects().patch_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name, body)


_NAMESPACE_LABELS: dict[str, tuple[float, dict[str, str]]] = {}


def namespace_labels(namespace: str, ttl: float = 5.0) -> dict[str, str]:
    """A namespace's labels, cached for ``ttl`` s: the Workspaces of one namespace start together."""
    cached = _NAMESPACE_LABELS.get(namespace)
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1]
    found = core().read_namespace(namespace).metadata
    labels = dict((found.labels if found else None) or {})
    _NAMESPACE_LABELS[namespace] = (time.monotonic(), labels)
    return labels


def delete_workspace(namespace: str, name: str) -> None:
    try:
        custom_objects().delete_namespaced_custom_object(GROUP, VERSION, namespace, "workspaces", name)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise


def job_failure_message(namespace: str, job: str) -> str:
    """The termination message of a Job's newest pod that left one: which file its copy refused, and why
    (the Job's own Failed condition says only that the back-off limit was reached)."""
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    for pod in sorted(pods, key=lambda p: str(p.metadata.creation_timestamp), reverse=True):
        for container in (pod.status.container_statuses or []) if pod.status else []:
            terminated = container.state.terminated if container.state else None
            if terminated is not None and terminated.message:
                return str(terminated.message).strip()
    return ""


def job_terminations(namespace: str, job: str) -> tuple[dict[str, Any], ...]:
    """How each container of a Job's pods ended (reason, exitCode, message), newest pod first: the kubelet's
    reason (OOMKilled) beside what the container wrote as its termination message."""
    pods: list[Any] = core().list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    ends = []
    for pod in sorted(pods, key=lambda p: str(p.metadata.creation_timestamp), reverse=True):
        for container in (pod.status.container_statuses or []) if pod.status else []:
            terminated = container.state.terminated if container.state else None
            if terminated is not None:
                ends.append(
                    {
                        "reason": str(terminated.reason or ""),
                        "exitCode": terminated.exit_code,
                        "message": str(terminated.message or ""),
                    }
                )
    return tuple(ends)


def list_objects(api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """The objects of a kind (in ``namespace``; "" for cluster-scoped ones) that carry the labels."""
    found = _resource(api_version, kind).get(namespace=namespace or None, label_selector=label_selector)
    return [cast(dict[str, Any], item.to_dict()) for item in found.items]
