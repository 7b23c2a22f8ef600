"""The process's audit sink, chosen once.

- Deployed (the Helm chart): CLEANROOM_AUDIT_URL names the audit service; events go through an `AuditClient`
  (a local fsync'd outbox in CLEANROOM_AUDIT_OUTBOX, delivered over TLS checked against
  CLEANROOM_AUDIT_CA_FILE with the service-account token in CLEANROOM_AUDIT_TOKEN_FILE).
- Local (`make dev`, tests): one `AuditLog` from CLEANROOM_AUDIT_DIR and CLEANROOM_AUDIT_SIGNING_KEY.
- Neither: on a laptop the process runs and says once that it records nothing; inside a cluster
  (KUBERNETES_SERVICE_HOST is set) it refuses to start, because an operator or hub that acts without
  leaving a trail is exactly what the trail exists to prevent.

The operator and the hub call `sink()` before they start serving, so a missing sink stops them at once
rather than at their first event."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Protocol

from cleanroom.audit.client import AuditClient
from cleanroom.audit.events import Actor, AuditEvent
from cleanroom.audit.spool import AuditLog, load_signing_key

LOGGER = logging.getLogger("cleanroom.audit")


class Sink(Protocol):
    def record(self, event: AuditEvent) -> None: ...


class NoAuditSink(RuntimeError):
    """This process would act without an audit trail; the message says what to set."""


class _LocalSink:
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def record(self, event: AuditEvent) -> None:
        self.log.append([event])


def sink_from_env(env: Mapping[str, str]) -> Sink | None:
    """The sink the environment asks for; None for none on a laptop. Raises NoAuditSink for a half-set local
    log, and for no sink at all inside a cluster."""
    url = env.get("CLEANROOM_AUDIT_URL")
    if url:
        client = AuditClient(
            url,
            env.get("CLEANROOM_AUDIT_TOKEN_FILE", "/var/run/secrets/cleanroom/audit/token"),
            env.get("CLEANROOM_AUDIT_OUTBOX", "/var/lib/cleanroom/audit-outbox"),
            ca_file=env.get("CLEANROOM_AUDIT_CA_FILE", ""),
        )
        client.start()
        return client
    directory, key = env.get("CLEANROOM_AUDIT_DIR"), env.get("CLEANROOM_AUDIT_SIGNING_KEY")
    if directory or key:
        if not directory or not key:
            missing = "CLEANROOM_AUDIT_SIGNING_KEY" if directory else "CLEANROOM_AUDIT_DIR"
            raise NoAuditSink(
                f"the local audit log needs both CLEANROOM_AUDIT_DIR and _SIGNING_KEY: set {missing}"
            )
        return _LocalSink(AuditLog(directory, load_signing_key(key)))
    if env.get("KUBERNETES_SERVICE_HOST"):
        raise NoAuditSink(
            "refusing to run in a cluster without an audit trail: set CLEANROOM_AUDIT_URL (the audit "
            "service, as the Helm chart does) or, for development only, CLEANROOM_AUDIT_DIR and "
            "CLEANROOM_AUDIT_SIGNING_KEY"
        )
    LOGGER.warning(
        "audit trail off (development only): set CLEANROOM_AUDIT_URL, or CLEANROOM_AUDIT_DIR and "
        "CLEANROOM_AUDIT_SIGNING_KEY"
    )
    return None


@functools.cache
def sink() -> Sink | None:
    """This process's one sink, from its environment at the first call."""
    return sink_from_env(os.environ)


def reset() -> None:
    """Forget the chosen sink (tests only: a process keeps its sink for life)."""
    sink.cache_clear()


def record(
    actor: Actor,
    action: str,
    resources: Mapping[str, str],
    *,
    outcome: str = "success",
    reason: str = "",
    purpose: str = "",
    event_id: str = "",
    request_id: str = "",
) -> AuditEvent | None:
    """Record one event durably (the outbox or the local log fsyncs before this returns); returns it, or None
    when auditing is off on a laptop. ``event_id``, when given, makes recording idempotent: the log stores an
    id once, so a writer that records a fact again after a crash (a lifecycle transition) adds nothing.
    ``request_id`` correlates events (the operator ties a Workspace's lifecycle events to its created id)."""
    chosen = sink()
    if chosen is None:
        return None
    event = AuditEvent(
        action,
        actor,
        outcome=outcome,
        resources=dict(resources),
        reason=reason[:2000],
        purpose=purpose[:1024],
        request_id=request_id,
        **({"id": event_id} if event_id else {}),
    )
    chosen.record(event)
    return event
