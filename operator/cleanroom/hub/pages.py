"""The hub's own endpoints: a modeller's list of Workspaces, and the audit intake for single-user servers.

- `/hub/workspaces`: exactly the Workspaces whose `spec.users` include the signed-in user, with the
  operator's state and start, open and stop actions (the hub's default page).
- `/hub/api/cleanroom/audit`: single-user servers post their events (kernel and terminal starts,
  refused downloads, file opens) here. The actor and workspace come from the hub's record of which
  server holds the presenting token, never from the request body."""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import escape, web

from cleanroom.audit import Actor, InvalidEvent
from cleanroom.audit.writer import record
from cleanroom.hub import workspace_api
from cleanroom.hub.workspace_view import view, visible_to

# What a single-user server may report; everything else about a session is recorded by the hub or the operator.
NOTEBOOK_ACTIONS = frozenset(
    {
        "session.start",
        "session.stop",
        "kernel.started",
        "terminal.started",
        "download.refused",
        "route.refused",
        "data.file.opened",
        # From the notebook pod's byte meter, which holds the same token.
        "meter.session",
        "meter.refused",
    }
)

_ROW = """<tr class="workspace" data-server="{server}">
<td><strong>{display}</strong><br><small>{purpose}</small></td><td>{dataset}</td><td>{gpu}</td>
<td class="state">{state}<br><small>{message}</small></td><td>{actions}</td></tr>"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Your workspaces - cleanroom</title>
<link rel="stylesheet" href="{static}">
<style>td.state small {{ overflow-wrap: anywhere; }}</style></head>
<body><div class="container" style="margin-top:2em">
<p class="text-end">Signed in as <span id="user">{user}</span> &middot; <a href="{base}logout">Sign out</a></p>
<h1>Your workspaces</h1>
<p>Each workspace reads one de-identified dataset snapshot, read-only, and cannot reach the network.
Downloads are refused and every session is audited.</p>
<table class="table" id="workspaces"><thead><tr><th>Workspace</th><th>Dataset</th><th>GPU</th><th>State</th><th></th></tr></thead>
<tbody>{rows}</tbody></table>
{empty}
</div></body></html>"""


class WorkspacesPage(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        items = await asyncio.to_thread(workspace_api.list_workspaces)
        rows = []
        for server, item in sorted(visible_to(user.name, items).items()):
            current = view(item)
            spawner = user.spawners.get(server) if server in user.orm_spawners else None
            active = spawner is not None and spawner.active
            base = self.hub.base_url
            if active and spawner is not None and spawner.ready:
                state = "Open"
                actions = (
                    f'<a class="btn btn-primary open" href="{user.url}{server}/lab">Open</a> '
                    f'<form method="post" action="{base}workspaces/{server}/stop" style="display:inline">'
                    f'{self.xsrf_form_html()}<button class="btn btn-secondary stop">Stop</button></form>'
                )
            elif active:
                state = "Starting"
                actions = (
                    f'<a class="btn btn-primary progress" href="{base}spawn-pending/{user.escaped_name}/{server}">Progress</a> '
                    f'<form method="post" action="{base}workspaces/{server}/stop" style="display:inline">'
                    f'{self.xsrf_form_html()}<button class="btn btn-secondary stop">Cancel</button></form>'
                )
            else:
                state = "Running (another session)" if current.ready else "Stopped"
                actions = f'<a class="btn btn-primary start" href="{base}spawn/{user.escaped_name}/{server}">Start</a>'
            rows.append(
                _ROW.format(
                    server=server,
                    display=escape.xhtml_escape(current.display_name),
                    purpose=escape.xhtml_escape(current.purpose),
                    dataset=escape.xhtml_escape(current.dataset),
                    gpu=escape.xhtml_escape(current.gpu),
                    state=state,
                    message=escape.xhtml_escape(f"{current.reason}: {current.message}"),
                    actions=actions,
                )
            )
        self.finish(
            _PAGE.format(
                static=self.static_url("css/style.min.css"),
                base=self.hub.base_url,
                user=escape.xhtml_escape(user.name),
                rows="".join(rows),
                empty="" if rows else '<p id="none">No workspace lists you yet. Ask your platform admin.</p>',
            )
        )


class StopWorkspace(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def post(self, server: str) -> None:
        user = self.current_user
        if server not in user.orm_spawners:
            raise web.HTTPError(404, f"you have no server {server!r}")
        spawner = user.spawners[server]
        if spawner.pending == "spawn" and spawner._spawn_future:
            # Cancelling a start that waits for a GPU is the common case; as the hub's own API does it.
            spawner._spawn_future.cancel()
            await asyncio.sleep(1)
        if spawner.active or spawner.pending:
            await self.stop_single_user(user, server)
        self.redirect(f"{self.hub.base_url}workspaces")


class AuditIntake(BaseHandler):  # type: ignore[misc]
    """Events from single-user servers, authenticated by the server's own hub token."""

    def check_xsrf_cookie(self) -> None:
        # Token-authenticated machine requests; the token check below replaces the XSRF check.
        return None

    async def post(self) -> None:
        token = self.get_auth_token() or ""
        owner, spawner = self._server_holding(token)
        try:
            body: dict[str, Any] = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "body must be a JSON object") from None
        action = body.get("action", "")
        if action not in NOTEBOOK_ACTIONS:
            raise web.HTTPError(400, f"action must be one of {sorted(NOTEBOOK_ACTIONS)}")
        resources = {str(k): str(v) for k, v in (body.get("resources") or {}).items()}
        workspace = getattr(spawner, "_workspace", None)
        if workspace:
            resources["namespace"], resources["workspace"] = workspace
        try:
            record(
                Actor("user", owner),
                action,
                resources,
                outcome=str(body.get("outcome", "success")),
                reason=str(body.get("reason", "")),
            )
        except InvalidEvent as error:
            raise web.HTTPError(400, str(error)) from None
        self.set_status(201)
        self.finish({"recorded": action})

    def _server_holding(self, token: str) -> tuple[str, Any]:
        if token:
            for user in self.users.values():
                for spawner in user.spawners.values():
                    held = getattr(spawner, "api_token", "") or ""
                    if held and hmac.compare_digest(held, token):
                        return user.name, spawner
        raise web.HTTPError(403, "only a running single-user server's own token may post audit events")


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/workspaces", WorkspacesPage),
        (r"/workspaces/([a-z0-9-]+)/stop", StopWorkspace),
        (r"/api/cleanroom/audit", AuditIntake),
    ]
