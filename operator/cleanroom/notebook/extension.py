"""The Jupyter Server extension: refuses download routes ahead of every other handler and reports the
session's kernels, terminals and dataset file opens to the audit trail. JupyterLab's download commands
are removed by `jupyter_config/labconfig/page_config.json` (JupyterHub's single-user extension owns
the page_config hook)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from tornado import routing, web
from tornado.httputil import HTTPServerRequest

from cleanroom.notebook import audit_client
from cleanroom.notebook.guard import is_under, refused_route


class _RefusedRoutes(routing.Matcher):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        path = request.path or ""
        if not path.startswith(self.base_url):
            return None
        return {} if refused_route(path[len(self.base_url) :]) else None


class RefusedDownload(web.RequestHandler):
    def initialize(self, base_url: str) -> None:
        self.base_url = base_url

    def prepare(self) -> None:
        path = self.request.path or ""
        reason = refused_route(path[len(self.base_url) :]) or "refused"
        audit_client.send("download.refused", path, reason, outcome="denied")
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"403 Forbidden: {reason}\n")


# Requests that start something a session should account for: (method, path suffix, status) -> action.
_STARTS = {("POST", "api/kernels", 201): "kernel.started", ("POST", "api/terminals", 200): "terminal.started"}


class DownloadGuard(ExtensionApp):
    name = "cleanroom.notebook"

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        web_app = self.serverapp.web_app
        base_url = self.serverapp.base_url
        # First rule of the application's router: ahead of the handlers of every server and extension.
        web_app.default_router.rules.insert(
            0, routing.Rule(_RefusedRoutes(base_url), RefusedDownload, {"base_url": base_url})
        )
        log_request = web_app.log_request

        # Wraps the application's log_request (which tornado calls once per finished request) rather
        # than settings["log_function"], which JupyterHub's single-user extension replaces after us.
        def log_and_audit(handler: web.RequestHandler) -> None:
            log_request(handler)
            request = handler.request
            relative = (request.path or "")[len(base_url) :].rstrip("/")
            action = _STARTS.get((request.method or "", relative, handler.get_status()))
            if (
                action is None
                and request.method == "POST"
                and relative == "api/sessions"
                and handler.get_status() == 201
            ):
                action = "kernel.started"
            if action:
                audit_client.send(action, "", f"{request.method} {url_path_join(base_url, relative)}")
            elif request.method == "GET" and relative.startswith("api/contents/"):
                self._audit_data_open(relative.removeprefix("api/contents/"), handler.get_status())

        web_app.log_request = log_and_audit  # type: ignore[method-assign]
        self._link_dataset(self.serverapp.root_dir)
        audit_client.send("session.start", "", "single-user server started")

    @staticmethod
    def _link_dataset(root_dir: str) -> None:
        """`~/data` in the file browser points at the read-only dataset, which lives outside the home."""
        link, target = os.path.join(root_dir, "data"), os.environ.get("CLEANROOM_DATA", "/data")
        if os.path.isdir(target) and not os.path.lexists(link):
            os.symlink(target, link)

    def _audit_data_open(self, path: str, status: int) -> None:
        """A direct contents request for a dataset file (not a directory listing that includes one)."""
        assert self.serverapp is not None
        os_path = os.path.join(self.serverapp.root_dir, unquote(path))
        if os.path.isfile(os_path) and is_under(os_path, os.environ.get("CLEANROOM_DATA", "/data")):
            outcome = "success" if status < 400 else "denied"
            audit_client.send(
                "data.file.opened", unquote(path), f"contents API, HTTP {status}", outcome=outcome
            )

    async def stop_extension(self) -> None:
        await audit_client.deliver("session.stop", "", "single-user server stopped")
