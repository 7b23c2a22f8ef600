"""The process's audit writer.

Deployed (the Helm chart): CLEANROOM_AUDIT_URL names the audit service, and events go through an
`AuditClient` (a local fsync'd outbox in CLEANROOM_AUDIT_OUTBOX, delivered with the service-account token in
CLEANROOM_AUDIT_TOKEN_FILE). Local (`make dev`, tests): one AuditLog from CLEANROOM_AUDIT_DIR and
CLEANROOM_AUDIT_SIGNING_KEY. With neither, the process still runs and says, once, that it is not auditing."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

from cleanroom.audit.client import AuditClient
from cleanroom.audit.events import Actor, AuditEvent
from cleanroom.audit.spool import AuditLog, load_signing_key

LOGGER = logging.getLogger("cleanroom.audit")


@functools.cache
def client_from_env() -> AuditClient | None:
    url = os.environ.get("CLEANROOM_AUDIT_URL")
    if not url:
        return None
    client = AuditClient(
        url,
        os.environ.get("CLEANROOM_AUDIT_TOKEN_FILE", "/var/run/secrets/cleanroom/audit/token"),
        os.environ.get("CLEANROOM_AUDIT_OUTBOX", "/var/lib/cleanroom/audit-outbox"),
    )
    client.start()
    return client


@functools.cache
def log_from_env() -> AuditLog | None:
    directory, key = os.environ.get("CLEANROOM_AUDIT_DIR"), os.environ.get("CLEANROOM_AUDIT_SIGNING_KEY")
    if not directory or not key:
        LOGGER.warning("audit trail off: set CLEANROOM_AUDIT_DIR and CLEANROOM_AUDIT_SIGNING_KEY")
        return None
    return AuditLog(directory, load_signing_key(key))


def record(
    actor: Actor,
    action: str,
    resources: Mapping[str, str],
    *,
    outcome: str = "success",
    reason: str = "",
    purpose: str = "",
) -> AuditEvent | None:
    """Append one event durably; returns it, or None when auditing is off."""
    log = log_from_env()
    if log is None:
        return None
    event = AuditEvent(
        action,
        actor,
        outcome=outcome,
        resources=dict(resources),
        reason=reason[:2000],
        purpose=purpose[:1024],
    )
    log.append([event])
    return event
