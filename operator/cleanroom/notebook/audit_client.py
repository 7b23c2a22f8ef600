"""Sends a session's audit events to the hub (`/hub/api/cleanroom/audit`), authenticated by this
server's own hub token; the hub decides the actor and the workspace. The hub's API is the one address
the notebook pod may reach. Fire-and-forget with a log line on failure, so a slow hub never blocks the
user; the refusal itself never depends on the event being delivered.

The token is read once, when the server (or the meter) starts, and kept here: the server then removes
it from its environment so that kernels and terminals do not inherit it (see `extension`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

LOGGER = logging.getLogger("cleanroom.notebook.audit")
TOKEN_VARIABLES = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")

_hub: dict[str, str] = {}


def configure(env: Mapping[str, str] | None = None, token: str = "") -> None:
    """Take the hub's address and this server's token (from the environment unless given)."""
    env = os.environ if env is None else env
    _hub["api"] = env.get("JUPYTERHUB_API_URL", "")
    _hub["token"] = token or env.get("JUPYTERHUB_API_TOKEN", "")


def hub_address() -> tuple[str, str]:
    """The hub's API URL and this server's token ("" for either when not configured)."""
    if not _hub:
        configure()
    return _hub.get("api", ""), _hub.get("token", "")


def _request(action: str, path: str, reason: str, outcome: str) -> HTTPRequest | None:
    if not _hub:
        configure()
    api, token = _hub.get("api"), _hub.get("token")
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
