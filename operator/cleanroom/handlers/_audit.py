"""The operator's audit events, recorded as its service account, and read back at start-up."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cleanroom.audit import Actor
from cleanroom.audit.client import OUTBOX, AuditClient
from cleanroom.audit.spool import RECORDS
from cleanroom.audit.writer import record as _record
from cleanroom.audit.writer import sink

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
    event_id: str = "",
    request_id: str = "",
) -> None:
    _record(
        ACTOR,
        action,
        resources,
        outcome=outcome,
        reason=reason,
        purpose=purpose,
        event_id=event_id,
        request_id=request_id,
    )


def recorded(marker: bytes) -> Iterator[dict[str, Any]]:
    """The events this operator recorded whose line holds ``marker`` (a cheap filter before parsing), read
    a line at a time: from the client's outbox (deployed: what this operator sent, as long as its outbox
    volume lives), or the local log (development)."""
    chosen = sink()
    if isinstance(chosen, AuditClient):
        path, nested = chosen.directory / OUTBOX, False
    elif chosen is not None and hasattr(chosen, "log"):
        path, nested = Path(chosen.log.directory) / RECORDS, True
    else:
        return
    if not path.exists():
        return
    with path.open("rb") as lines:
        for line in lines:
            if marker in line and line.endswith(b"\n"):
                document = json.loads(line)
                event = document.get("event") if nested else document
                if isinstance(event, dict) and event.get("actor", {}).get("name") == ACTOR.name:
                    yield event
