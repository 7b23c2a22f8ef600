"""The byte meter's ledger at the hub (`/hub/api/cleanroom/meter`, `hub.meter_ledger`): what the Workspace
has already sent to the browser in the current window, read when the meter starts and reported as it
counts, with the server's own hub token (which the kernel does not hold: `audit_client`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from cleanroom.notebook import audit_client

LOGGER = logging.getLogger("cleanroom.notebook.meter")

Slots = list[tuple[float, int]]


def configured() -> bool:
    """Whether this meter reports to a hub (a meter run without one, in a test, keeps its ledger alone)."""
    api, token = audit_client.hub_address()
    return bool(api and token)


def _request(method: str, body: dict[str, Any] | None = None) -> HTTPRequest:
    api, token = audit_client.hub_address()
    return HTTPRequest(
        f"{api.rstrip('/')}/cleanroom/meter",
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=None if body is None else json.dumps(body),
        request_timeout=10,
    )


def _slots(answer: bytes) -> Slots:
    body = json.loads(answer or b"{}")
    return [(float(start), int(size)) for start, size in body.get("slots", [])]


async def load() -> Slots | None:
    """The hub's ledger for this server's Workspace; None when the hub did not answer with one. A hub that
    does not hold this server (403: it stopped the session, or lost it) routes no browser to it: nothing is
    spent there, and the meter goes on with its own state file rather than refusing for ever."""
    try:
        response = await AsyncHTTPClient().fetch(_request("GET"))
        return _slots(response.body)
    except HTTPClientError as error:
        if error.code == 403:
            LOGGER.warning("the hub does not hold this server (403): no spent budget from the hub")
            return []
        LOGGER.warning("the Workspace's spent byte budget could not be read from the hub: %s", error)
        return None
    except Exception as error:
        LOGGER.warning("the Workspace's spent byte budget could not be read from the hub: %s", error)
        return None


async def save(window: float, slots: Slots) -> bool:
    """Report this meter's ledger; the hub keeps each slot's larger count."""
    body = {"window": window, "slots": [[start, size] for start, size in slots]}
    try:
        await AsyncHTTPClient().fetch(_request("POST", body))
        return True
    except Exception as error:
        LOGGER.error("the meter's ledger was not delivered to the hub: %s", error)
        return False
