"""The operator's audit events, recorded as its service account."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cleanroom.audit import Actor
from cleanroom.audit.writer import record as _record

ACTOR = Actor(
    "service",
    os.environ.get("CLEANROOM_SERVICE_ACCOUNT", "system:serviceaccount:cleanroom-system:cleanroom-operator"),
)


def record(
    action: str,
    resources: Mapping[str, str],
    *,
    outcome: str = "success",
    reason: str = "",
    purpose: str = "",
) -> None:
    _record(ACTOR, action, resources, outcome=outcome, reason=reason, purpose=purpose)
