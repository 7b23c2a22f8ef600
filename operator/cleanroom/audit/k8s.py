"""The kube-apiserver's audit events (audit.k8s.io/v1 EventList from its webhook backend) as cleanroom events.

Kept: `exec`, `attach` and `portforward` on pods (the side channels a notebook UI never sees) and every
write to Datasets and Workspaces made through the API (kubectl apply, patch, delete). The policy in
hack/audit-policy.yaml (and the chart's) already limits what the API server sends; this is the second
filter. Pure: the id of a cleanroom event is derived from the API server's auditID, so a webhook retry is
stored once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from cleanroom.audit.events import Actor, AuditEvent

_STREAMS = {"exec": "k8s.exec", "attach": "k8s.attach", "portforward": "k8s.portforward"}
_WRITES = {"create", "update", "patch", "delete", "deletecollection"}
_NAMESPACE = uuid.UUID("6f1d6a4e-8f0b-4c7e-9b44-3c7e0c1e2a10")


def translate(event: Mapping[str, Any]) -> AuditEvent | None:
    ref = event.get("objectRef") or {}
    resource, subresource, group = (
        ref.get("resource", ""),
        ref.get("subresource", ""),
        ref.get("apiGroup", ""),
    )
    verb = event.get("verb", "")
    stage = event.get("stage", "")
    if resource == "pods" and subresource in _STREAMS:
        # A stream's request is audited when it starts; its completion may come hours later or never.
        if stage not in ("ResponseStarted", "ResponseComplete", "Panic"):
            return None
        action = _STREAMS[subresource]
        resources = {"namespace": ref.get("namespace", ""), "pod": ref.get("name", "")}
    elif group == "cleanroom.dev" and resource in ("datasets", "workspaces") and verb in _WRITES:
        if stage not in ("ResponseComplete", "Panic"):
            return None
        action = "k8s.change"
        key = "dataset" if resource == "datasets" else "workspace"
        resources = {key: ref.get("name", "")}
        if ref.get("namespace"):
            resources["namespace"] = ref["namespace"]
    else:
        return None
    username = (event.get("user") or {}).get("username", "") or "unknown"
    code = int((event.get("responseStatus") or {}).get("code") or 0)
    outcome = (
        "success"
        if 0 < code < 400 or (code == 0 and stage == "ResponseStarted")
        else ("denied" if code in (401, 403) else "failure")
    )
    return AuditEvent(
        action,
        Actor("service" if username.startswith("system:") else "user", username),
        outcome=outcome,
        resources={k: v for k, v in resources.items() if v},
        reason=f"{verb} {event.get('requestURI', '')} -> {code or stage}"[:2000],
        request_id=str(event.get("auditID", "")),
        id=str(uuid.uuid5(_NAMESPACE, f"{event.get('auditID', '')}/{action}")),
        time=_time(event.get("stageTimestamp") or event.get("requestReceivedTimestamp") or ""),
    )


def _time(stamp: str) -> str:
    """RFC 3339 with microseconds, as every cleanroom event has it."""
    if not stamp:
        from datetime import UTC, datetime

        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    head = stamp.rstrip("Z")
    if "." in head:
        whole, fraction = head.split(".", 1)
        return f"{whole}.{fraction[:6].ljust(6, '0')}Z"
    return f"{head}.000000Z"


def translate_list(document: Mapping[str, Any]) -> list[AuditEvent]:
    if document.get("kind") != "EventList":
        raise ValueError("expected an audit.k8s.io EventList")
    events = [translate(item) for item in document.get("items") or []]
    return [event for event in events if event is not None]
