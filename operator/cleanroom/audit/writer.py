"""The process's audit writer: one AuditLog from CLEANROOM_AUDIT_DIR and CLEANROOM_AUDIT_SIGNING_KEY.

Without them the process still runs and says, once, that it is not auditing (a laptop without `make dev`'s
key); every deployed component sets both."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

from cleanroom.audit.events import Actor, AuditEvent
from cleanroom.audit.spool import AuditLog, load_signing_key

LOGGER = logging.getLogger("cleanroom.audit")


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
