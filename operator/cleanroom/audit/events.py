"""Audit events: a versioned record of who did what to which data, for what purpose, with what outcome."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA = "cleanroom.dev/audit/v1"
# Every action, and who emits it (docs/audit.md has the table).
ACTIONS = frozenset(
    {
        "dataset.ingest.started",
        "dataset.ingest.finished",
        "dataset.ingest.failed",
        "dataset.file.quarantined",
        "snapshot.published",
        "snapshot.pruned",
        "workspace.created",
        "workspace.started",
        "workspace.stopped",
        "workspace.expired",
        "workspace.revoked",
        "workspace.egress.widened",
        "workspace.deleted",
        "access.denied",
        "session.login",
        "officer.login",
        "session.start",
        "session.stop",
        "server.stopped",
        "kernel.started",
        "terminal.started",
        "download.refused",
        "route.refused",
        "meter.session",
        "meter.refused",
        "data.file.opened",
        "k8s.exec",
        "k8s.change",
        "k8s.portforward",
        "k8s.attach",
        "export.requested",
        "export.copied",
        "export.checked",
        "export.decided",
        "export.page_decision",
        "export.released",
        "export.rejected",
        "export.expired",
        "export.deleted",
        "export.downloaded",
    }
)
OUTCOMES = frozenset({"success", "failure", "denied"})
RESOURCE_KEYS = frozenset({"dataset", "snapshot", "workspace", "namespace", "pod", "path", "file", "export"})


class InvalidEvent(ValueError):
    """An event that does not follow the schema; the message names the field."""


@dataclass(frozen=True)
class Actor:
    kind: str  # "user" (from a verified JWT) or "service" (a service account)
    name: str


@dataclass(frozen=True)
class AuditEvent:
    action: str
    actor: Actor
    outcome: str = "success"
    resources: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    purpose: str = ""
    request_id: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InvalidEvent(f"action {self.action!r} is not one of the audit actions (see docs/audit.md)")
        if self.outcome not in OUTCOMES:
            raise InvalidEvent(f"outcome {self.outcome!r} must be one of {', '.join(sorted(OUTCOMES))}")
        unknown = set(self.resources) - RESOURCE_KEYS
        if unknown:
            raise InvalidEvent(
                f"resources has unknown keys {sorted(unknown)}; known: {sorted(RESOURCE_KEYS)}"
            )
        if self.actor.kind not in ("user", "service") or not self.actor.name:
            raise InvalidEvent("actor needs kind user or service and a name")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "time": self.time,
            "actor": {"kind": self.actor.kind, "name": self.actor.name},
            "action": self.action,
            "resources": dict(sorted(self.resources.items())),
            "outcome": self.outcome,
            "reason": self.reason,
            "purpose": self.purpose,
            "requestId": self.request_id,
        }


def event_from_json(document: Mapping[str, Any]) -> AuditEvent:
    if document.get("schema") != SCHEMA:
        raise InvalidEvent(f"schema must be {SCHEMA}")
    actor = document.get("actor") or {}
    return AuditEvent(
        action=str(document.get("action")),
        actor=Actor(str(actor.get("kind")), str(actor.get("name") or "")),
        outcome=str(document.get("outcome", "success")),
        resources={str(k): str(v) for k, v in (document.get("resources") or {}).items()},
        reason=str(document.get("reason", "")),
        purpose=str(document.get("purpose", "")),
        request_id=str(document.get("requestId", "")),
        id=str(document.get("id") or uuid.uuid4()),
        time=str(document.get("time")),
    )
