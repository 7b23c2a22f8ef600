"""The hub's own endpoints: a modeller's list of Workspaces, and the audit intake for single-user servers.

- `/hub/workspaces`: exactly the Workspaces whose `spec.users` include the signed-in user, each with its
  snapshot, expiry, idle deadline and GPU, and the truth about its session (workspace_view.row): the
  user's own opens and stops, another user's is theirs alone (the hub's default page).
- `/hub/api/cleanroom/audit`: single-user servers post their events (kernel and terminal starts,
  refused downloads, file opens) here. The actor and workspace come from the hub's record of which
  server holds the presenting token, never from the request body.
- `/hub/api/cleanroom/meter`: the notebook pod's byte meter reads (at its start) and reports the bytes its
  Workspace has sent in the current window (`meter_ledger`), with the same token."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import escape, web

from cleanroom.audit import Actor, InvalidEvent
from cleanroom.audit.writer import record
from cleanroom.hub import exports, meter_ledger, metrics, workspace_api
from cleanroom.hub.workspace_view import (
    Action,
    HubSession,
    deadline,
    may_stop,
    row,
    view,
    visible_to,
)

# What a single-user server may report; everything else about a session is recorded by the hub or the operator.
NOTEBOOK_ACTIONS = frozenset(
    {
        "session.start",
        "server.stopped",
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
<td><strong>{display}</strong><br><small>{purpose}</small></td>
<td>{dataset}<br><small class="snapshot" title="the de-identified snapshot it reads">{snapshot}</small></td>
<td class="gpu">{gpu}</td><td class="expires">{expires}</td><td class="idle">{idle}</td>
<td class="state"><span class="state-word">{state}</span><br><small>{detail}</small></td><td>{actions}</td></tr>"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Your workspaces - cleanroom</title>
<link rel="stylesheet" href="{static}">
<style>td.state small {{ overflow-wrap: anywhere; }}</style></head>
<body><div class="container" style="margin-top:2em">
<p class="text-end">Signed in as <span id="user">{user}</span> &middot; <a href="{base}exports">Exports</a>
&middot; <a href="{base}logout">Sign out</a></p>
<h1>Your workspaces</h1>
<p>Each workspace reads one de-identified dataset snapshot, read-only, and cannot reach the network.
Downloads are refused and every session is audited. A workspace is stopped when it expires, and a running
session with no activity is stopped at its idle deadline (the home folder is kept).</p>
<table class="table" id="workspaces"><thead><tr><th>Workspace</th><th>Dataset and snapshot</th><th>GPU</th>
<th>Expires</th><th>Idle stop</th><th>State</th><th></th></tr></thead>
<tbody>{rows}</tbody></table>
{empty}
</div></body></html>"""


def _moment(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    at, away = deadline(when, now)
    return f"{at}<br><small>{away}</small>"


class WorkspacesPage(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        items = await asyncio.to_thread(workspace_api.list_workspaces)
        now = datetime.now(UTC)
        rows = []
        for server, item in sorted(visible_to(user.name, items).items()):
            current = view(item)
            spawner = user.spawners.get(server) if server in user.orm_spawners else None
            session: HubSession = "none"
            if spawner is not None and spawner.active:
                session = "ready" if spawner.ready else "starting"
            shown = row(current, user.name, session)
            rows.append(
                _ROW.format(
                    server=server,
                    display=escape.xhtml_escape(current.display_name),
                    purpose=escape.xhtml_escape(current.purpose),
                    dataset=escape.xhtml_escape(current.dataset),
                    snapshot=escape.xhtml_escape(current.snapshot or "no snapshot yet"),
                    gpu=escape.xhtml_escape(current.gpu),
                    expires=_moment(current.expires_at, now),
                    idle=_moment(current.idle_deadline, now),
                    state=escape.xhtml_escape(shown.state),
                    detail=escape.xhtml_escape(shown.detail),
                    actions=" ".join(self._button(action, server, session) for action in shown.actions),
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

    def _button(self, action: Action, server: str, session: HubSession) -> str:
        user, base = self.current_user, self.hub.base_url
        # A session this hub does not hold yet is taken up through the spawn page: the spawner finds the
        # Workspace running for this user and connects to it (nothing is restarted).
        spawn = f"{base}spawn/{user.escaped_name}/{server}"
        if action == "open":
            href = f"{user.url}{server}/lab" if session == "ready" else spawn
            return f'<a class="btn btn-primary open" href="{href}">Open</a>'
        if action == "progress":
            href = f"{base}spawn-pending/{user.escaped_name}/{server}" if session == "starting" else spawn
            return f'<a class="btn btn-primary progress" href="{href}">Progress</a>'
        if action == "start":
            return f'<a class="btn btn-primary start" href="{spawn}">Start</a>'
        label = "Cancel" if action == "cancel" else "Stop"
        return (
            f'<form method="post" action="{base}workspaces/{server}/stop" style="display:inline">'
            f'{self.xsrf_form_html()}<button class="btn btn-secondary stop">{label}</button></form>'
        )


class StopWorkspace(BaseHandler):  # type: ignore[misc]
    @web.authenticated
    async def post(self, server: str) -> None:
        user = self.current_user
        spawner = user.spawners[server] if server in user.orm_spawners else None
        if spawner is not None and spawner.pending == "spawn" and spawner._spawn_future:
            # Cancelling a start that waits for a GPU is the common case; as the hub's own API does it.
            spawner._spawn_future.cancel()
            await asyncio.sleep(1)
        if spawner is not None and (spawner.active or spawner.pending):
            await self.stop_single_user(user, server)
        else:
            await self._stop_unheld(user.name, server)
        self.redirect(f"{self.hub.base_url}workspaces")

    async def _stop_unheld(self, user: str, server: str) -> None:
        """Stop a Workspace that runs for ``user`` without a session of this hub; refuse anyone else's."""
        items = await asyncio.to_thread(workspace_api.list_workspaces)
        item = visible_to(user, items).get(server)
        if item is None:
            raise web.HTTPError(404, f"no workspace of yours is served as {server!r}")
        current = view(item)
        if not current.running:
            return
        if not may_stop(current, user):
            reason = (
                f"{current.display_name} runs for {current.started_by or 'nobody yet'}; only they may stop it"
            )
            record(
                Actor("user", user),
                "access.denied",
                {"namespace": current.namespace, "workspace": current.name},
                outcome="denied",
                reason=reason,
            )
            metrics.access_refused("in_use")
            raise web.HTTPError(403, reason)
        await asyncio.to_thread(workspace_api.set_running, current.namespace, current.name, False, user)
        await asyncio.to_thread(workspace_api.delete_session_settings, current.namespace, current.name)


class AuditIntake(BaseHandler):  # type: ignore[misc]
    """Events from single-user servers, authenticated by the server's own hub token."""

    def check_xsrf_cookie(self) -> None:
        # Token-authenticated machine requests; the token check below replaces the XSRF check.
        return None

    async def post(self) -> None:
        token = self.get_auth_token() or ""
        owner, spawner = server_holding(self, token)
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


class MeterLedger(BaseHandler):  # type: ignore[misc]
    """The spent byte budget of the Workspace whose server holds the presenting token: read by its meter at
    start, reported by it as it counts (merged, never lowered). Where it is kept: the hub's
    ``cleanroom_meter_ledger`` setting (`config`)."""

    def check_xsrf_cookie(self) -> None:
        return None  # token-authenticated machine requests, as AuditIntake

    def _key(self) -> str:
        _owner, spawner = server_holding(self, self.get_auth_token() or "")
        workspace = getattr(spawner, "_workspace", None)
        if not workspace:
            raise web.HTTPError(409, "this server serves no Workspace")
        return f"{workspace[0]}/{workspace[1]}"

    def _file(self) -> meter_ledger.LedgerFile:
        return meter_ledger.ledger_file(
            str(self.settings.get("cleanroom_meter_ledger") or "meter-ledger.json")
        )

    async def get(self) -> None:
        self.finish(self._file().get(self._key()))

    async def post(self) -> None:
        key = self._key()
        try:
            report = json.loads(self.request.body or b"{}")
            if not isinstance(report, dict):
                raise meter_ledger.InvalidLedger("body must be a JSON object")
            merged = self._file().update(key, report, time.time())
        except ValueError as error:
            raise web.HTTPError(400, str(error)) from None
        self.finish(merged)


def server_holding(handler: BaseHandler, token: str) -> tuple[str, Any]:
    """The user and spawner of the running single-user server whose own hub token this is; 403 for any
    other token. What a server reports or asks for is that user's, in that server's Workspace."""
    if token:
        for user in handler.users.values():
            for spawner in user.spawners.values():
                held = getattr(spawner, "api_token", "") or ""
                if held and hmac.compare_digest(held, token):
                    return user.name, spawner
    raise web.HTTPError(403, "only a running single-user server's own token may post here")


def handlers() -> list[tuple[str, type]]:
    return [
        (r"/workspaces", WorkspacesPage),
        (r"/workspaces/([a-z0-9-]+)/stop", StopWorkspace),
        (r"/api/cleanroom/audit", AuditIntake),
        (r"/api/cleanroom/meter", MeterLedger),
        *exports.handlers(),
    ]
