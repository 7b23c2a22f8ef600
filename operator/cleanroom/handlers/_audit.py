"""The operator's audit writer: one AuditLog for the process, from CLEANROOM_AUDIT_DIR and
CLEANROOM_AUDIT_SIGNING_KEY. Without them the operator still runs and says, once, that it is not auditing."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

from cleanroom.audit import Actor, AuditEvent, AuditLog, load_signing_key

LOGGER = logging.getLogger("cleanroom.audit")
ACTOR = Actor(
    "service",
    os.environ.get("CLEANROOM_SERVICE_ACCOUNT", "system:serviceaccount:cleanroom-system:cleanroom-operator"),
)


@functools.cache
def _log() -> AuditLog | None:
    directory, key = os.environ.get("CLEANROOM_AUDIT_DIR"), os.environ.get("CLEANROOM_AUDIT_SIGNING_KEY")
    if not directory or not key:
        LOGGER.warning("audit trail off: set CLEANROOM_AUDIT_DIR and CLEANROOM_AUDIT_SIGNING_KEY")
        return None
    return AuditLog(directory, load_signing_key(key))


def record(
    action: str,
    resources: Mapping[str, str],
    *,
    outcome: str = "success",
    reason: str = "",
    purpose: str = "",
) -> None:
    log = _log()
    if log is None:
        return
    event = AuditEvent(
        action, ACTOR, outcome=outcome, resources=dict(resources), reason=reason[:2000], purpose=purpose
    )
    log.append([event])
