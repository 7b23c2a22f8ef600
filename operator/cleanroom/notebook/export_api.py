"""`api/cleanroom/exports` on the single-user server: JupyterLab's "Request export…" command asks here.

Thin on purpose: the checks and the call to the hub are `exports.submit`, the same path `cleanroom export`
takes through the spool, and the hub decides whose request it is. The route answers only the signed-in
browser (the server's own authentication, as for the contents API); a kernel holds no credential for it, and
could write the spool anyway, so it gains nothing here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from cleanroom.notebook import exports

ROUTE = "api/cleanroom/exports"


class ExportsHandler(APIHandler):
    # Asking for an export reads files of the home: the permission the contents API asks for.
    auth_resource = "contents"

    def initialize(self, home: str) -> None:
        self.home = Path(home)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        answer = await exports.listing()
        self._answer(502 if "error" in answer else 200, answer)

    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        files, justification = _request_of(body)
        answer = await exports.submit(self.home, files, justification)
        if "problems" in answer:
            self._answer(400, answer)
        else:
            self._answer(502 if "error" in answer else 201, answer)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


def _request_of(body: Any) -> tuple[list[str], str]:
    if not exports.well_formed(body):
        raise web.HTTPError(400, "the body must be {files: [paths in the home], justification: text}")
    return body["files"], body["justification"]


def handlers(home: str) -> list[tuple[str, type, dict[str, Any]]]:
    """For the extension's handler list (jupyter_server puts the base URL in front)."""
    return [(f"/{ROUTE}", ExportsHandler, {"home": home})]
