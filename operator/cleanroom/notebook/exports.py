"""How an export request reaches the hub from a notebook, and what the server refuses to send.

Two ways in, one way out. `cleanroom export` in a terminal or kernel holds no hub token
(`extension.hide_hub_token`), so it leaves its request in a spool folder of the home; JupyterLab's "Request
export…" command posts it to this server's `api/cleanroom/exports` (`export_api`). Either way the single-user
server (which holds the token) checks it (`refusals`) and posts it to the hub's `/hub/api/cleanroom/exports`
(`submit`). The hub takes the user and the Workspace from its record of which server holds the token; the
request only says which files and why. The copy Job checks the paths again where it reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cleanroom.api import ExportRequestSpec

SPOOL = ".cleanroom/exports"
REQUEST_SUFFIX = ".request.json"
ANSWER_SUFFIX = ".answer.json"
# A request is a list of paths and a justification: anything larger is not one.
MAX_REQUEST_BYTES = 64 * 1024


def _spec_limit(field: str, limit: str) -> int:
    schema = next(f for f in dataclasses.fields(ExportRequestSpec) if f.name == field).metadata["schema"]
    return int(getattr(schema, limit))


# The ExportRequest's own limits (its CRD schema): a request the API server would refuse is refused here,
# with a reason the modeller can act on.
MIN_JUSTIFICATION = _spec_limit("justification", "min_length")
MAX_JUSTIFICATION = _spec_limit("justification", "max_length")
MAX_FILES = _spec_limit("files", "max_items")
_MAX_PATH = 1024


def refused_path(home: Path, relative: str) -> str | None:
    """Why ``relative`` is not a file of the home that may be asked for, or None. Each folder on the way and
    the file itself are looked at without following a symbolic link: a link (or a folder that is one) to
    the dataset, to another volume or to anything outside the home is refused, as the copy Job refuses it."""
    parts = relative.split("/")
    if (
        not relative
        or len(relative) > _MAX_PATH
        or relative.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(c) < 32 or ord(c) == 127 for c in relative)
    ):
        return f"{relative!r}: give a path inside your home folder, e.g. results/metrics.csv"
    current, mode = home, 0
    for depth, part in enumerate(parts, 1):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return f"{relative}: no such file in your home folder"
        if stat.S_ISLNK(mode):
            return f"{relative}: {part} is a link, and links are not followed out of your home folder"
        if depth < len(parts) and not stat.S_ISDIR(mode):
            return f"{relative}: {part} is not a folder"
    return None if stat.S_ISREG(mode) else f"{relative}: not a regular file"


def refusals(home: Path, files: Sequence[str], justification: str) -> list[str]:
    """Everything wrong with a request, for the modeller to fix at once (empty when it may go)."""
    problems = [] if 1 <= len(files) <= MAX_FILES else [f"ask for 1 to {MAX_FILES} files at a time"]
    problems += [why for name in files if (why := refused_path(home, name))]
    if not MIN_JUSTIFICATION <= len(justification.strip()) <= MAX_JUSTIFICATION:
        problems.append(
            f"justification: say in {MIN_JUSTIFICATION} to {MAX_JUSTIFICATION} characters why these "
            "results must leave and what they hold"
        )
    return problems


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
        if isinstance(body, dict) and well_formed(body):
            yield ident, body
        else:
            yield ident, "not a request written by `cleanroom export`"


def well_formed(body: Any) -> bool:
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
    forwarded = 0
    for ident, body in pending(home):
        if isinstance(body, str):
            write_answer(home, ident, {"error": body})
            continue
        write_answer(home, ident, await submit(home, body["files"], body["justification"]))
        forwarded += 1
    return forwarded


async def submit(home: Path, files: Sequence[str], justification: str) -> dict[str, Any]:
    """The one way a request leaves the session: checked here, then posted to the hub as this server.
    The hub's answer ({name, namespace}) or {error, problems} (what to fix) or {error} (the hub's refusal)."""
    problems = refusals(home, files, justification)
    if problems:
        return {"error": "; ".join(problems), "problems": problems}
    body = {"files": list(dict.fromkeys(files)), "justification": justification.strip()}
    code, answer = await _hub("POST", body)
    if code != 201:
        return {"error": str(answer.get("message") or f"HTTP {code}")}
    return {"name": answer.get("name"), "namespace": answer.get("namespace")}


async def listing() -> dict[str, Any]:
    """This user's export requests from this Workspace as the hub knows them ({exports}), or {error}."""
    code, answer = await _hub("GET")
    if code != 200:
        return {"error": str(answer.get("message") or f"HTTP {code}")}
    return {"exports": answer.get("exports") or []}


async def _hub(method: str, body: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    from cleanroom.notebook.audit_client import hub_address

    api, token = hub_address()
    if not api or not token:
        return 0, {"message": "this server has no hub to send the request to"}
    request = HTTPRequest(
        f"{api.rstrip('/')}/cleanroom/exports",
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=None if body is None else json.dumps(dict(body)),
        request_timeout=30,
    )
    try:
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
    except OSError as error:
        return 0, {"message": f"the hub cannot be reached: {error}"}
    try:
        answer = json.loads(response.body or b"{}")
    except ValueError:
        answer = {}
    return response.code, answer if isinstance(answer, dict) else {}
