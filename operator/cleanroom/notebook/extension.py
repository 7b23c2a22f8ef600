"""The Jupyter Server extension: answers only the routes on `guard`'s allow-list (ahead of every other
handler), keeps the hub token from kernels and terminals, and reports the session's kernels, terminals,
refusals and dataset file opens to the audit trail. JupyterLab's download commands are removed by
`jupyter_config/labconfig/page_config.json` (JupyterHub's single-user extension owns the page_config
hook)."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from jupyter_server.utils import url_path_join
from tornado import ioloop, routing, web
from tornado.httputil import HTTPServerRequest

from cleanroom.notebook import audit_client, export_api, exports
from cleanroom.notebook.guard import Refusal, is_under, refused_route

_PR_SET_DUMPABLE = 4
# How often the server looks for export requests that `cleanroom export` left in the home's spool.
EXPORT_POLL_MS = 2000
_OUTSIDE = Refusal("route.refused", "outside this server's base URL")


def _refusal(base_url: str, path: str) -> Refusal | None:
    if not path.startswith(base_url) and path != base_url.rstrip("/"):
        return _OUTSIDE
    return refused_route(path[len(base_url) :])


class _RefusedRoutes(routing.Matcher):
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return {} if _refusal(self.base_url, request.path or "") else None


class RefusedRoute(web.RequestHandler):
    def initialize(self, base_url: str) -> None:
        self.base_url = base_url

    def prepare(self) -> None:
        path = self.request.path or ""
        refusal = _refusal(self.base_url, path) or _OUTSIDE
        audit_client.send(refusal.action, path, f"{self.request.method} {refusal.reason}", outcome="denied")
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"403 Forbidden: {refusal.reason}\n")


def hide_hub_token(environ: MutableMapping[str, str]) -> None:
    """Kernels and terminals start with the server's environment: without the token in it, user code
    cannot call the hub as this server (the server keeps its copy in memory)."""
    for name in audit_client.TOKEN_VARIABLES:
        environ.pop(name, None)


def make_undumpable() -> None:
    """The server's process memory and /proc/<pid>/environ (which still holds the token it started with)
    become unreadable to other processes of the same user, kernels included (prctl PR_SET_DUMPABLE 0;
    a kernel is a new program and dumpable again, which is fine: it is the user's)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def keep_token_out_of_runtime_files(serverapp: ServerApp) -> None:
    """The server writes its info file (jpserver-<pid>.json) and a browser-open file (a URL with ?token=)
    into Jupyter's runtime directory, each with its identity provider's token, which under JupyterHub is
    the hub token. Kernels read that directory (their connection files are there), so the info file goes
    without the token and the browser-open file is not written (the hub opens the browser, not this server)."""
    serverapp.no_browser_open_file = True
    server_info = serverapp.server_info
    serverapp.server_info = lambda: {**server_info(), "token": ""}  # type: ignore[method-assign]


# Requests that start something a session should account for: (method, path suffix, status) -> action.
_STARTS = {("POST", "api/kernels", 201): "kernel.started", ("POST", "api/terminals", 200): "terminal.started"}


class DownloadGuard(ExtensionApp):
    name = "cleanroom.notebook"

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None
        # JupyterLab's "Request export…" (the lab extension in images/notebook/labextension).
        self.handlers.extend(export_api.handlers(self.serverapp.root_dir))

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self._take_hub_token()
        web_app = self.serverapp.web_app
        base_url = self.serverapp.base_url
        # First rule of the application's router: ahead of the handlers of every server and extension.
        web_app.default_router.rules.insert(
            0, routing.Rule(_RefusedRoutes(base_url), RefusedRoute, {"base_url": base_url})
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
        self._forward_exports(self.serverapp.root_dir)
        audit_client.send("session.start", "", "single-user server started")

    def _take_hub_token(self) -> None:
        """Make every holder of the token read it now (JupyterHub's identity provider and its extension
        each read it lazily from the environment), keep a copy for the audit client, then remove it from
        the environment that every child process inherits."""
        assert self.serverapp is not None
        holders = [self.serverapp.identity_provider] + [
            point.app for point in self.serverapp.extension_manager.extension_points.values() if point.app
        ]
        tokens = {hub_auth.api_token for h in holders if (hub_auth := getattr(h, "hub_auth", None))}
        audit_client.configure(os.environ, next(iter(tokens - {""}), ""))
        hide_hub_token(os.environ)
        keep_token_out_of_runtime_files(self.serverapp)
        make_undumpable()

    @staticmethod
    def _forward_exports(root_dir: str) -> None:
        """`cleanroom export` in a terminal or kernel leaves its request in the home's spool (it holds no hub
        token); this server posts it to the hub every couple of seconds (`notebook.exports`)."""
        home = Path(root_dir)

        async def forward() -> None:
            try:
                await exports.forward_pending(home)
            except Exception as error:  # a bad request file must not stop the server's loop
                audit_client.LOGGER.error("export requests not forwarded: %s", error)

        ioloop.PeriodicCallback(forward, EXPORT_POLL_MS).start()

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
        # session.stop is the hub's record; this one says the server itself shut down cleanly (it may arrive
        # after the hub revoked the server's token, and then it is lost: the hub's record is not).
        await audit_client.deliver("server.stopped", "", "single-user server stopped")
