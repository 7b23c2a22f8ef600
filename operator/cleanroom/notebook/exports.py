"""How `cleanroom export` in a notebook's terminal or kernel reaches the hub without the hub token.

Kernels and terminals never hold the server's hub token (`extension.hide_hub_token`), so the command leaves
its request in a spool folder of the home, and the single-user server (which holds the token) posts it to
the hub's `/hub/api/cleanroom/exports` and writes the hub's answer beside it. The hub takes the user and the
Workspace from its record of which server holds the token; the request only says which files and why.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SPOOL = ".cleanroom/exports"
REQUEST_SUFFIX = ".request.json"
ANSWER_SUFFIX = ".answer.json"
# A request is a list of paths and a justification: anything larger is not one.
MAX_REQUEST_BYTES = 64 * 1024


def spool(home: Path) -> Path:
    return home / SPOOL


def write_request(home: Path, files: list[str], justification: str) -> str:
    """Leave a request for the server to forward; its id names the answer to wait for."""
    folder = spool(home)
    folder.mkdir(parents=True, exist_ok=True)
    ident = secrets.token_hex(8)
    partial = folder / f".{ident}.tmp"
    partial.write_text(json.dumps({"files": files, "justification": justification}))
    # A rename: the server never sees half a request.
    partial.rename(folder / f"{ident}{REQUEST_SUFFIX}")
    return ident


def read_answer(home: Path, ident: str) -> dict[str, Any] | None:
    path = spool(home) / f"{ident}{ANSWER_SUFFIX}"
    if not path.exists():
        return None
    answer: dict[str, Any] = json.loads(path.read_text())
    path.unlink()
    return answer


def pending(home: Path) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each request waiting in the spool: (id, its body), or (id, why it is not a request). Read without
    following a symbolic link, and no more than a request can be."""
    folder = spool(home)
    if not folder.is_dir():
        return
    for entry in sorted(folder.glob(f"*{REQUEST_SUFFIX}")):
        ident = entry.name.removesuffix(REQUEST_SUFFIX)
        try:
            handle = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(handle, "rb") as file:
                raw = file.read(MAX_REQUEST_BYTES + 1)
            entry.unlink()
        except OSError as error:
            entry.unlink(missing_ok=True)
            yield ident, f"the request could not be read: {error.strerror}"
            continue
        try:
            body = json.loads(raw) if len(raw) <= MAX_REQUEST_BYTES else None
        except ValueError:
            body = None
        if isinstance(body, dict) and _well_formed(body):
            yield ident, body
        else:
            yield ident, "not a request written by `cleanroom export`"


def _well_formed(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("files"), list)
        and all(isinstance(f, str) for f in body["files"])
        and isinstance(body.get("justification"), str)
    )


def write_answer(home: Path, ident: str, answer: Mapping[str, Any]) -> None:
    folder = spool(home)
    partial = folder / f".{ident}.answer.tmp"
    partial.write_text(json.dumps(dict(answer)))
    partial.rename(folder / f"{ident}{ANSWER_SUFFIX}")


async def forward_pending(home: Path) -> int:
    """Post each waiting request to the hub as this server and write the hub's answer beside it; the count
    forwarded. Runs in the single-user server, the one process of the session that holds the hub token."""
    from cleanroom.notebook.audit_client import hub_address

    forwarded = 0
    for ident, body in pending(home):
        if isinstance(body, str):
            write_answer(home, ident, {"error": body})
            continue
        write_answer(home, ident, await _post(hub_address(), body))
        forwarded += 1
    return forwarded


async def _post(hub: tuple[str, str], body: Mapping[str, Any]) -> dict[str, Any]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    api, token = hub
    if not api or not token:
        return {"error": "this server has no hub to send the request to"}
    request = HTTPRequest(
        f"{api.rstrip('/')}/cleanroom/exports",
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=json.dumps(dict(body)),
        request_timeout=30,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except OSError as error:
        return {"error": f"the hub cannot be reached: {error}"}
    try:
        answer = json.loads(response.body or b"{}")
    except ValueError:
        answer = {}
    if response.code != 201:
        return {"error": str(answer.get("message") or f"HTTP {response.code}")}
    return {"name": answer.get("name"), "namespace": answer.get("namespace")}
