"""A JupyterHub spawner whose named servers are Workspaces.

Starting a server sets the Workspace's `spec.running` and waits for the operator's `Ready`; stopping
clears it. The operator stays the only writer of pod specs; the hub contributes the session's
JUPYTERHUB_* settings as a Secret the pod reads. A user who is not in `spec.users` gets 403 and an
`access.denied` audit event.

A session ends when its notebook pod is gone, not when `spec.running` is cleared: JupyterHub revokes the
server's token as soon as `stop` returns (or `poll` says the server stopped), and the pod's byte meter and
server report the session's last totals with that token while their containers stop. So `stop` waits,
bounded, for the pod to go, and `poll` says a stopped Workspace runs while its pod is still there.

The hub's activity record feeds the Workspace's idle timeout through the `cleanroom.dev/last-activity`
annotation.

Development runs sessions as local processes instead of pods (kwok's pods do not execute): that is
`cleanroom.dev.local_sessions.LocalSessionSpawner`, a subclass that overrides where the server listens and
how it is served (`_listen_address`, `_serve`) and ships in no production path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Float, Integer, Unicode, default

from cleanroom.api.contract import object_name
from cleanroom.audit import Actor
from cleanroom.audit.writer import record
from cleanroom.hub import metrics, workspace_api
from cleanroom.hub.workspace_view import may_stop, pod_gone, start_failed, view, visible_to


def refusal(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose message the hub's error page shows to the user (not only to its log)."""
    error = web.HTTPError(status, "%s", message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


class WorkspaceSpawner(Spawner):  # type: ignore[misc]
    notebook_port = Integer(8888, config=True, help="The port the notebook pod's server listens on.")
    pod_hub_api_url = Unicode(
        "",
        config=True,
        help="JUPYTERHUB_API_URL as workspace pods reach it. Pods have no DNS, so this is the hub API "
        "Service's cluster IP (the Helm chart fills it in).",
    )
    poll_seconds = Float(1.0, config=True, help="How often a start checks the Workspace's Ready condition.")
    stop_wait_seconds = Float(
        90.0,
        config=True,
        help="How long a stop waits for the notebook pod to go (its grace period is 30 s) before it returns, "
        "and how long past its grace period a terminating pod still counts as running.",
    )

    @default("start_timeout")
    def _start_timeout(self) -> int:
        # Materializing a large snapshot and waiting for a free GPU take minutes, not seconds.
        return 900

    @default("http_timeout")
    def _http_timeout(self) -> int:
        return 120

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._workspace: tuple[str, str] | None = None
        self._progress: list[dict[str, Any]] = []
        self._activity_sent: datetime | None = None

    # --- state kept in the hub's database -------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._workspace:
            state["workspace"] = list(self._workspace)
        if self.api_token:
            # JupyterHub keeps only a hash of the server's token; the hub's audit and meter intake
            # (pages.server_holding) know a running server by it, also after the hub restarts.
            state["api_token"] = self.api_token
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        if state.get("workspace"):
            namespace, name = state["workspace"]
            self._workspace = (namespace, name)
        if state.get("api_token"):
            self.api_token = str(state["api_token"])

    # --- lifecycle --------------------------------------------------------------------------------------

    async def find_workspace(self) -> dict[str, Any]:
        items = await asyncio.to_thread(workspace_api.list_workspaces)
        mine = visible_to(self.user.name, items)
        found = mine.get(self.name)
        if found is None:
            known = any(view(item).server == self.name for item in items)
            reason = (
                f"{self.user.name} is not in spec.users of the workspace behind server {self.name!r}"
                if known
                else f"no workspace is served as {self.name!r}"
            )
            record(
                Actor("user", self.user.name),
                "access.denied",
                {"workspace": self.name},
                outcome="denied",
                reason=reason,
            )
            self.log.warning("workspace access refused: %s", reason)
            metrics.access_refused("not_listed" if known else "no_such_workspace")
            raise refusal(403 if known else 404, reason)
        return dict(found)

    async def start(self) -> tuple[str, int] | str:
        workspace = await self.find_workspace()
        current = view(workspace)
        if current.running and current.started_by and not may_stop(current, self.user.name):
            # Another listed user's session: starting it again would hand their notebook to this user.
            reason = f"{current.display_name} runs for {current.started_by}; only they may open or stop it"
            record(
                Actor("user", self.user.name),
                "access.denied",
                {"namespace": current.namespace, "workspace": current.name},
                outcome="denied",
                reason=reason,
            )
            metrics.access_refused("in_use")
            raise refusal(409, reason)
        self._workspace = (current.namespace, current.name)
        self.ip, self.port = self._listen_address()
        env = self.get_env()
        await asyncio.to_thread(workspace_api.write_session_settings, workspace, self.session_settings(env))
        self._note(10, f"Starting workspace {current.display_name}")
        await asyncio.to_thread(
            workspace_api.set_running, current.namespace, current.name, True, self.user.name
        )
        ready = await self.wait_ready(current.namespace, current.name)
        return await self._serve(ready, env)

    def _listen_address(self) -> tuple[str, int]:
        """Where the server listens: the notebook pod's port, on all of the pod's addresses."""
        return "0.0.0.0", self.notebook_port

    async def _serve(self, workspace: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, int] | str:
        """The server's URL once its Workspace is Ready: the pod behind the Workspace's Service (the operator
        made both; the hub only points the proxy there)."""
        namespace, name = self._workspace or ("", "")
        return f"http://{object_name(name)}.{namespace}.svc:{self.notebook_port}"

    def session_settings(self, env: Mapping[str, str]) -> dict[str, str]:
        """The JUPYTERHUB_* part of the hub's environment for this server: nothing of the hub's own."""
        settings = {key: value for key, value in env.items() if key.startswith("JUPYTERHUB_")}
        if self.pod_hub_api_url:
            settings["JUPYTERHUB_API_URL"] = self.pod_hub_api_url
            settings["JUPYTERHUB_ACTIVITY_URL"] = (
                f"{self.pod_hub_api_url.rstrip('/')}/users/{self.user.escaped_name}/activity"
            )
        return settings

    async def wait_ready(self, namespace: str, name: str) -> dict[str, Any]:
        last = ""
        while True:
            workspace = await asyncio.to_thread(workspace_api.get_workspace, namespace, name)
            if workspace is None:
                raise refusal(410, f"workspace {namespace}/{name} was deleted while starting")
            current = view(workspace)
            if current.ready:
                self._note(90, "Workspace Ready: snapshot verified and mounted read-only")
                return workspace
            failure = start_failed(workspace)
            if failure:
                await asyncio.to_thread(workspace_api.set_running, namespace, name, False, self.user.name)
                raise refusal(409, f"workspace {namespace}/{name} cannot start: {failure}")
            if current.message != last:
                # The operator's own words, the scheduler's reason for a busy GPU among them.
                self._note(50, f"{current.reason}: {current.message}")
                last = current.message
            await asyncio.sleep(self.poll_seconds)

    def _note(self, percent: int, message: str) -> None:
        self._progress.append({"progress": percent, "message": message})

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        while self._spawn_pending or sent < len(self._progress):
            while sent < len(self._progress):
                yield self._progress[sent]
                sent += 1
            await asyncio.sleep(0.5)

    async def stop(self, now: bool = False) -> None:
        if self._workspace:
            namespace, name = self._workspace
            workspace = await asyncio.to_thread(workspace_api.get_workspace, namespace, name)
            if workspace is not None:
                await asyncio.to_thread(workspace_api.set_running, namespace, name, False, self.user.name)
            await asyncio.to_thread(workspace_api.delete_session_settings, namespace, name)
            await self._until_pod_gone(namespace, name)
            # The hub's own record of the stop (a pod that is killed reports nothing).
            record(
                Actor("user", self.user.name),
                "session.stop",
                {"namespace": namespace, "workspace": name},
                reason="stopped through the hub",
            )

    async def _session_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The notebook pod that serves this session (None once gone)."""
        return await asyncio.to_thread(workspace_api.get_notebook_pod, namespace, name)

    async def _pod_gone(self, namespace: str, name: str, if_unknown: bool) -> bool:
        """Whether the session's pod is gone (`pod_gone`); ``if_unknown`` when the API server did not say."""
        try:
            pod = await self._session_pod(namespace, name)
        except Exception as error:  # the API server down, or this hub's RBAC without get on pods
            self.log.warning("%s/%s: the notebook pod could not be read: %s", namespace, name, error)
            return if_unknown
        return pod_gone(pod, datetime.now(UTC), timedelta(seconds=self.stop_wait_seconds))

    async def _until_pod_gone(self, namespace: str, name: str) -> None:
        """Wait, at most stop_wait_seconds, until the notebook pod is gone: its meter reports the session's
        ledger and totals while it stops, with the server token JupyterHub revokes once this stop returns."""
        deadline = asyncio.get_running_loop().time() + self.stop_wait_seconds
        while not await self._pod_gone(namespace, name, if_unknown=False):
            if asyncio.get_running_loop().time() >= deadline:
                self.log.warning("%s/%s: the notebook pod is still there after the stop", namespace, name)
                return
            await asyncio.sleep(self.poll_seconds)

    async def poll(self) -> int | None:
        """None while the Workspace is meant to run and can: running, and Ready or on its way there
        (the hub stops a server only after a poll says it runs, so a cancelled start must say so too)."""
        if self._workspace is None:
            return 0
        namespace, name = self._workspace
        workspace = await asyncio.to_thread(workspace_api.get_workspace, namespace, name)
        if workspace is None:
            return 0
        current = view(workspace)
        if not current.running or start_failed(workspace) is not None:
            # Stopped by the operator (idle, expiry, revocation) or failed: the session ends with its pod.
            # A pod that cannot be read is not waited for: the server's last reports may then be lost.
            return 0 if await self._pod_gone(namespace, name, if_unknown=True) else None
        if current.ready:
            await self.report_activity(namespace, name)
        return None

    async def report_activity(self, namespace: str, name: str) -> None:
        """Copy the hub's last activity (browser, kernels) to the Workspace for the operator's idle cull."""
        seen = self.orm_spawner.last_activity if self.orm_spawner is not None else None
        if seen is None or seen == self._activity_sent:
            return
        moment = seen if seen.tzinfo else seen.replace(tzinfo=UTC)
        await asyncio.to_thread(workspace_api.annotate_activity, namespace, name, moment)
        self._activity_sent = seen
