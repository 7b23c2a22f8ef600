"""Sends the session's audit events to the hub (`/hub/api/cleanroom/audit`), authenticated by this
server's own hub token; the hub decides the actor and the workspace. The hub's API is the one address
the notebook pod may reach. Fire-and-forget with a log line on failure, so a slow hub never blocks the
user; the refusal itself never depends on the event being delivered."""

from __future__ import annotations

import json
import logging
import os

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

LOGGER = logging.getLogger("cleanroom.notebook.audit")


def _request(action: str, path: str, reason: str, outcome: str) -> HTTPRequest | None:
    api, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not api or not token:
        return None
    body = {
        "action": action,
        "outcome": outcome,
        "reason": reason,
        "resources": {"path": path} if path else {},
    }
    return HTTPRequest(
        f"{api.rstrip('/')}/cleanroom/audit",
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=json.dumps(body),
        request_timeout=10,
    )


async def deliver(action: str, path: str = "", reason: str = "", outcome: str = "success") -> bool:
    request = _request(action, path, reason, outcome)
    if request is None:
        LOGGER.warning("audit event %s not sent: no JUPYTERHUB_API_URL/TOKEN", action)
        return False
    try:
        await AsyncHTTPClient().fetch(request)
    except Exception as error:
        LOGGER.error("audit event %s not delivered to the hub: %s", action, error)
        return False
    return True


def send(action: str, path: str = "", reason: str = "", outcome: str = "success") -> None:
    IOLoop.current().spawn_callback(deliver, action, path, reason, outcome)
