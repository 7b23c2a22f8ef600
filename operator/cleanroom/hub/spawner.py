"""A JupyterHub spawner whose named servers are Workspaces.

Starting a server sets the Workspace's `spec.running` and waits for the operator's `Ready`; stopping
clears it. The operator stays the only writer of pod specs; the hub contributes the session's
JUPYTERHUB_* settings as a Secret the pod reads. A user who is not in `spec.users` gets 403 and an
`access.denied` audit event. The hub's activity record feeds the Workspace's idle timeout through the
`cleanroom.dev/last-activity` annotation.

`local_process = True` (development and the browser tests only): kwok's pods do not execute, so after
the operator reports Ready the spawner materializes the verified snapshot to a local directory, makes
it read-only, and runs the single-user server as a local process over it, behind the byte meter as in
the pod (the server on a localhost port, the proxy pointed at the meter), with the pod's Jupyter paths
and, when the hub runs as root, without any capability (as the pod's container runs). What a local
session cannot give: another user for the meter and a read-only root file system, so the user's code
could stop the meter or change the server's files; the pod is the real boundary."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyterhub.spawner import Spawner
from jupyterhub.utils import random_port
from tornado import web
from traitlets import Bool, Float, Integer, Unicode, default

from cleanroom.api.contract import GRANT_URL_VARIABLE, object_name
from cleanroom.audit import Actor
from cleanroom.audit.writer import record
from cleanroom.hub import metrics, workspace_api
from cleanroom.hub.workspace_view import may_stop, start_failed, view, visible_to
from cleanroom.notebook.meter import DEFAULT_BUDGET_BYTES, DEFAULT_WINDOW_SECONDS
from cleanroom.workspaces.jupyter_paths import jupyter_environment, server_options

CONFIG_DIR = Path(__file__).resolve().parent.parent / "notebook" / "jupyter_config"


# setpriv (util-linux) drops every capability, bounding set included, so that root cannot regain them.
_WITHOUT_CAPABILITIES = ("setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all")


async def _terminate(process: asyncio.subprocess.Process | None, timeout: float) -> None:
    if process is None or process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=timeout)
    except TimeoutError:
        process.kill()
        await process.wait()


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
    local_process = Bool(False, config=True, help="Development only: run the server as a local process.")
    local_root = Unicode("", config=True, help="Development only: where local sessions keep data and homes.")
    meter_budget_bytes = Integer(
        DEFAULT_BUDGET_BYTES,
        config=True,
        help="Development only: a local session's byte budget to the browser (pods get the operator's).",
    )
    meter_window_seconds = Integer(DEFAULT_WINDOW_SECONDS, config=True, help="The byte budget's window.")

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
        self._process: asyncio.subprocess.Process | None = None
        self._meter: asyncio.subprocess.Process | None = None
        self._activity_sent: datetime | None = None

    # --- state kept in the hub's database -------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._workspace:
            state["workspace"] = list(self._workspace)
        return state

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        if state.get("workspace"):
            namespace, name = state["workspace"]
            self._workspace = (namespace, name)

    def clear_state(self) -> None:
        super().clear_state()
        self._process = None
        self._meter = None

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
        if self.local_process:
            self.ip, self.port = "127.0.0.1", random_port()
        else:
            self.ip, self.port = "0.0.0.0", self.notebook_port
        env = self.get_env()
        await asyncio.to_thread(workspace_api.write_session_settings, workspace, self.session_settings(env))
        self._note(10, f"Starting workspace {current.display_name}")
        await asyncio.to_thread(
            workspace_api.set_running, current.namespace, current.name, True, self.user.name
        )
        ready = await self.wait_ready(current.namespace, current.name)
        if self.local_process:
            return await self.start_local(ready, env)
        service = object_name(current.name)
        return f"http://{service}.{current.namespace}.svc:{self.notebook_port}"

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
        # The server first, so that the meter's final totals include its last responses.
        await _terminate(self._process, 1 if now else 5)
        await _terminate(self._meter, 10)
        self._process = self._meter = None
        if self._workspace:
            namespace, name = self._workspace
            workspace = await asyncio.to_thread(workspace_api.get_workspace, namespace, name)
            if workspace is not None:
                await asyncio.to_thread(workspace_api.set_running, namespace, name, False, self.user.name)
            await asyncio.to_thread(workspace_api.delete_session_settings, namespace, name)
            # The hub's own record of the stop: the server's report of its shutdown (server.stopped) races
            # JupyterHub revoking its token as soon as this returns, and a pod that is killed reports nothing.
            record(
                Actor("user", self.user.name),
                "session.stop",
                {"namespace": namespace, "workspace": name},
                reason="stopped through the hub",
            )

    async def poll(self) -> int | None:
        """None while the Workspace is meant to run and can: running, and Ready or on its way there
        (the hub stops a server only after a poll says it runs, so a cancelled start must say so too)."""
        if self._workspace is None:
            return 0
        for process in (self._process, self._meter):
            if process is not None and process.returncode is not None:
                return process.returncode
        namespace, name = self._workspace
        workspace = await asyncio.to_thread(workspace_api.get_workspace, namespace, name)
        if workspace is None:
            return 0
        current = view(workspace)
        if not current.running or start_failed(workspace) is not None:
            return 0
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

    # --- development: a local process over a locally materialized snapshot --------------------------------

    async def start_local(self, workspace: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, int]:
        namespace, name = self._workspace or ("", "")
        snapshot = str(workspace["status"]["snapshot"]["digest"])
        root = (
            Path(self.local_root or os.path.expanduser("~/.cache/cleanroom/local-sessions"))
            / namespace
            / name
        )
        data = root / f"data-{snapshot.split(':')[-1][:16]}"
        if not data.exists():
            self._note(60, f"Materializing snapshot {snapshot[:19]} locally")
            await self.materialize(snapshot, data, str(workspace["spec"]["dataset"]["name"]))
        home = root / "home" / self.user.escaped_name.replace("%", "_")
        home.mkdir(parents=True, exist_ok=True)
        # Not in the home, and read-only: no kernel spec, lab extension or config of the user's.
        jupyter_data, runtime = root / "jupyter-data", root / "runtime" / self.user.escaped_name
        jupyter_data.mkdir(exist_ok=True)
        jupyter_data.chmod(0o555)
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        process_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "CLEANROOM_DATA": str(data),
            "CLEANROOM_WORKSPACE": f"{namespace}/{name}",
            "CLEANROOM_SNAPSHOT": snapshot,
            **env,
            **jupyter_environment(str(CONFIG_DIR), str(jupyter_data), str(runtime), str(home)),
        }
        server_port = random_port()
        command = [
            str(Path(sys.executable).with_name("jupyterhub-singleuser")),
            f"--ServerApp.root_dir={home}",
            "--ip=127.0.0.1",
            f"--port={server_port}",
            *server_options(str(runtime)),
        ]
        if os.geteuid() == 0:
            # CI machines run everything as root; a workspace pod never does (runAsNonRoot), and its
            # container has no capability: neither has this process and whatever it starts.
            command = [*_WITHOUT_CAPABILITIES, *command, "--allow-root"]
        self._note(80, "Starting the byte meter and the single-user server")
        self._meter = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cleanroom.cli",
            "notebook-meter",
            f"--listen=127.0.0.1:{self.port}",
            f"--upstream=http://127.0.0.1:{server_port}",
            f"--budget-bytes={self.meter_budget_bytes}",
            f"--window-seconds={self.meter_window_seconds}",
            env={
                "PATH": os.environ.get("PATH", ""),
                "JUPYTERHUB_API_URL": env.get("JUPYTERHUB_API_URL", ""),
                "JUPYTERHUB_API_TOKEN": env.get("JUPYTERHUB_API_TOKEN", ""),
            },
        )
        self._process = await asyncio.create_subprocess_exec(*command, env=process_env, cwd=str(home))
        return (self.ip, self.port)

    async def materialize(self, snapshot: str, target: Path, dataset: str) -> None:
        """What the materializer Job does, with the read grant the operator issued for it (no store keys).
        The operator empties the grant once its Job has verified the copy, and on simulated nodes that Job
        ends at once: a spent grant is then replaced by this development process's own store credentials."""
        namespace, name = self._workspace or ("", "")
        grant = await asyncio.to_thread(workspace_api.reader_grant_url, namespace, name)
        if grant:
            command, env = ["materialize-grant"], {**os.environ, GRANT_URL_VARIABLE: grant}
        elif os.environ.get("CLEANROOM_SNAPSHOT_ACCESS_KEY"):
            command, env = ["materialize", dataset, snapshot], dict(os.environ)
        else:
            raise refusal(500, f"the operator holds no read grant for {namespace}/{name} at the moment")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cleanroom.cli",
            "snapshot",
            *command,
            str(partial),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise refusal(500, f"materializing {snapshot} failed: {output.decode()[-500:]}")
        for path in sorted(partial.rglob("*"), reverse=True):
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        partial.rename(target)
        target.chmod(0o555)
