"""The hub's side of the airlock: the notebook asks for an export here, and the requester downloads it here.

- `POST /hub/api/cleanroom/exports` (from the single-user server, which forwards `cleanroom export` and
  JupyterLab's "Request export…"): the server's own hub token says which user and which Workspace; the body
  says only which files and why. The hub creates the ExportRequest with `cleanroom.dev/requested-by` naming
  that user (admission lets only the hub name someone else; it never lets the hub decide).
  `GET` there: that user's exports from that Workspace, for JupyterLab to show their state.
- `/hub/exports`: the signed-in user's own exports (requested-by is them), their state, a rejection's reason
  and, once released, a link per file.
- `/hub/exports/<namespace>/<name>/download?file=PATH`: for the requester only, while the export is
  released and not expired: audited (`export.downloaded`), then a redirect to a presigned URL of the
  released object that lives `CLEANROOM_HUB_EXPORT_LINK_SECONDS` (default 300).

Download links are signed with a read key of the store, as the browser reaches it:
CLEANROOM_HUB_EXPORT_ENDPOINT, CLEANROOM_HUB_EXPORT_BUCKET (default cleanroom-snapshots),
CLEANROOM_HUB_EXPORT_ACCESS_KEY, CLEANROOM_HUB_EXPORT_SECRET_KEY, CLEANROOM_HUB_EXPORT_REGION.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
from jupyterhub.handlers import BaseHandler
from tornado import escape, web

from cleanroom._clients.presign import Signer, presigned_get
from cleanroom.api import REQUESTED_BY_ANNOTATION, is_true
from cleanroom.api.contract import EXPIRED, REJECTED, RELEASED
from cleanroom.audit import Actor
from cleanroom.audit.writer import record
from cleanroom.hub import workspace_api

DEFAULT_LINK_SECONDS = 300
MAX_FILES = 64


@dataclass(frozen=True)
class ExportView:
    namespace: str
    name: str
    workspace: str
    files: tuple[str, ...]
    phase: str
    message: str
    expires_at: str
    released: bool


def view(item: Mapping[str, Any]) -> ExportView:
    status = item.get("status") or {}
    conditions = status.get("conditions") or []
    ended = next(
        (
            c
            for c in conditions
            if c.get("type") in (REJECTED, EXPIRED, RELEASED) and c.get("status") == "True"
        ),
        None,
    )
    quarantine = [f"{f.get('path')}" for f in (status.get("quarantine") or {}).get("files") or []]
    return ExportView(
        namespace=str(item["metadata"]["namespace"]),
        name=str(item["metadata"]["name"]),
        workspace=str(item["spec"]["workspace"]),
        files=tuple(quarantine or item["spec"].get("files") or ()),
        phase=str(status.get("phase") or "Pending"),
        message=str((ended or {}).get("message") or ""),
        expires_at=str(status.get("expiresAt") or ""),
        released=is_true(conditions, RELEASED),
    )


def requested_by(item: Mapping[str, Any]) -> str:
    return str((item["metadata"].get("annotations") or {}).get(REQUESTED_BY_ANNOTATION, ""))


def exports_of(user: str, items: Sequence[Mapping[str, Any]]) -> list[ExportView]:
    """The user's own exports, newest first."""
    mine = [i for i in items if requested_by(i) == user]
    mine.sort(key=lambda i: str(i["metadata"].get("creationTimestamp", "")), reverse=True)
    return [view(i) for i in mine]


def exports_from(
    user: str, workspace: tuple[str, str], items: Sequence[Mapping[str, Any]]
) -> list[ExportView]:
    """The user's own exports from one Workspace (a session sees no other project's), newest first."""
    return [v for v in exports_of(user, items) if (v.namespace, v.workspace) == workspace]


def download_refusal(item: Mapping[str, Any] | None, user: str, path: str, now: datetime) -> str | None:
    """Why ``user`` may not download ``path`` of this export now, or None when they may."""
    if item is None or requested_by(item) != user:
        return "no export of yours has that name"
    shown = view(item)
    if not shown.released:
        return f"the export is {shown.phase}, not released"
    expires = datetime.fromisoformat(shown.expires_at.replace("Z", "+00:00")) if shown.expires_at else now
    if now >= expires:
        return "the download time is over"
    if path not in shown.files:
        return f"{path!r} is not a file of this export"
    return None


def validated_request(body: Any) -> tuple[list[str], str]:
    """The files and justification of a request from a notebook, or a 400 saying what is wrong."""
    if not isinstance(body, dict):
        raise web.HTTPError(400, "the body must be a JSON object with files and justification")
    files, justification = body.get("files"), body.get("justification")
    if (
        not isinstance(files, list)
        or not 1 <= len(files) <= MAX_FILES
        or not all(isinstance(f, str) for f in files)
    ):
        raise web.HTTPError(400, f"files must be a list of 1 to {MAX_FILES} paths in the home folder")
    if not isinstance(justification, str) or not 20 <= len(justification.strip()) <= 4096:
        raise web.HTTPError(400, "justification must say in 20 to 4096 characters why the files must leave")
    return list(dict.fromkeys(files)), justification.strip()


class ExportIntake(BaseHandler):  # type: ignore[misc]
    """Export requests from single-user servers, authenticated by the server's own hub token."""

    def check_xsrf_cookie(self) -> None:
        # Token-authenticated machine requests; the token check replaces the XSRF check.
        return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JSON with the reason, which `cleanroom export` shows the modeller (not the hub's HTML error page).
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(error, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish({"status": status_code, "message": message})

    def _session(self) -> tuple[str, tuple[str, str]]:
        """The user and (namespace, Workspace) of the server whose token this request carries."""
        from cleanroom.hub.pages import server_holding

        owner, spawner = server_holding(self, self.get_auth_token() or "")
        workspace = getattr(spawner, "_workspace", None)
        if not workspace:
            raise web.HTTPError(409, "this server is not a cleanroom workspace session")
        return owner, workspace

    async def get(self) -> None:
        owner, workspace = self._session()
        items = await asyncio.to_thread(workspace_api.list_export_requests)
        self.finish({"exports": [asdict(v) for v in exports_from(owner, workspace, items)]})

    async def post(self) -> None:
        owner, workspace = self._session()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body must be JSON") from None
        files, justification = validated_request(body)
        namespace, name = workspace
        try:
            created = await asyncio.to_thread(
                workspace_api.create_export_request, namespace, name, owner, files, justification
            )
        except kubernetes.client.ApiException as error:
            if error.status in (400, 403, 422):
                message = (
                    json.loads(error.body or "{}").get("message", error.reason)
                    if error.body
                    else error.reason
                )
                raise web.HTTPError(400, str(message)) from None
            raise
        self.set_status(201)
        self.finish({"name": created, "namespace": namespace})


_ROW = """<tr class="export" data-name="{name}"><td><strong>{name}</strong><br><small>{workspace}</small></td>
<td>{files}</td><td class="phase">{phase}<br><small>{message}</small></td><td>{expires}</td></tr>"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Your exports - cleanroom</title>
<link rel="stylesheet" href="{static}"></head>
<body><div class="container" style="margin-top:2em">
<p class="text-end">Signed in as <span id="user">{user}</span> &middot; <a href="{base}workspaces">Workspaces</a></p>
<h1>Your exports</h1>
<p>Results leave a workspace only through the airlock: <code>cleanroom export FILE... -j "why"</code> in the
notebook copies them into quarantine, checks them for patient data, and releases them here once a data
steward and a security officer have approved. Each link works for a few minutes; every download is audited.</p>
<table class="table" id="exports"><thead><tr><th>Export</th><th>Files</th><th>State</th><th>Until</th></tr></thead>
<tbody>{rows}</tbody></table>{empty}
</div></body></html>"""


class ExportsPage(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        items = await asyncio.to_thread(workspace_api.list_export_requests)
        rows = []
        for shown in exports_of(user.name, items):
            files = "<br>".join(
                f'<a class="download" href="{self.hub.base_url}exports/{shown.namespace}/{shown.name}/download'
                f'?file={escape.url_escape(path, plus=False)}">{escape.xhtml_escape(path)}</a>'
                if shown.released
                else escape.xhtml_escape(path)
                for path in shown.files
            )
            rows.append(
                _ROW.format(
                    name=escape.xhtml_escape(shown.name),
                    workspace=escape.xhtml_escape(shown.workspace),
                    files=files,
                    phase=escape.xhtml_escape(shown.phase),
                    message=escape.xhtml_escape(shown.message),
                    expires=escape.xhtml_escape(shown.expires_at or "-"),
                )
            )
        self.finish(
            _PAGE.format(
                static=self.static_url("css/style.min.css"),
                base=self.hub.base_url,
                user=escape.xhtml_escape(user.name),
                rows="".join(rows),
                empty="" if rows else '<p id="none">You have asked for no export yet.</p>',
            )
        )


def _signer() -> Signer | None:
    env = os.environ
    endpoint, key, secret = (
        env.get(f"CLEANROOM_HUB_EXPORT_{n}", "") for n in ("ENDPOINT", "ACCESS_KEY", "SECRET_KEY")
    )
    if not (endpoint and key and secret):
        return None
    bucket = env.get("CLEANROOM_HUB_EXPORT_BUCKET", "cleanroom-snapshots")
    return Signer(endpoint, bucket, key, secret, env.get("CLEANROOM_HUB_EXPORT_REGION", "") or "us-east-1")


class ExportDownload(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def get(self, namespace: str, name: str) -> None:
        user = self.current_user.name
        path = self.get_argument("file")
        item = await asyncio.to_thread(workspace_api.get_export_request, namespace, name)
        resources = {"namespace": namespace, "export": name, "file": path}
        refusal = download_refusal(item, user, path, datetime.now(UTC))
        if refusal is not None:
            record(Actor("user", user), "export.downloaded", resources, outcome="denied", reason=refusal)
            raise web.HTTPError(403 if item is not None else 404, refusal)
        assert item is not None
        signer = _signer()
        if signer is None:
            raise web.HTTPError(503, "downloads are not configured on this hub (CLEANROOM_HUB_EXPORT_*)")
        lifetime = timedelta(
            seconds=int(os.environ.get("CLEANROOM_HUB_EXPORT_LINK_SECONDS", DEFAULT_LINK_SECONDS))
        )
        outbox = str((item.get("status") or {}).get("outbox") or "")
        url = presigned_get(signer, outbox + path, lifetime)
        record(
            Actor("user", user),
            "export.downloaded",
            {**resources, "workspace": str(item["spec"]["workspace"])},
            reason=f"a link valid for {int(lifetime.total_seconds())} s",
        )
        self.redirect(url)


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/exports", ExportsPage),
        (r"/exports/([a-z0-9-]+)/([a-z0-9.-]+)/download", ExportDownload),
        (r"/api/cleanroom/exports", ExportIntake),
    ]
