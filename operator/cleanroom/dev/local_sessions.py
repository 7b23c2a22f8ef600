"""Development only: the hub's sessions as local processes instead of pods.

kwok's pods do not execute, so `make dev` on a machine without the real node and the hub's integration and
browser tests run the hub with `CLEANROOM_HUB_LOCAL_PROCESS=true`, which makes `hub.config` choose this
spawner (by name: no production module imports this one). After the operator reports the Workspace Ready,
it materializes the verified snapshot to a local directory, makes it read-only, and runs the single-user
server as a local process over it, behind the byte meter as in the pod (the server on a localhost port, the
proxy pointed at the meter), with the pod's Jupyter paths and, when the hub runs as root, without any
capability (as the pod's container runs). What a local session cannot give: another user for the meter and
a read-only root file system, so the user's code could stop the meter or change the server's files; the pod
is the real boundary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyterhub.utils import random_port
from traitlets import Integer, Unicode

from cleanroom.api.contract import GRANT_URL_VARIABLE
from cleanroom.hub import workspace_api
from cleanroom.hub.spawner import WorkspaceSpawner, refusal
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


class LocalSessionSpawner(WorkspaceSpawner):
    local_root = Unicode("", config=True, help="Where local sessions keep data and homes.")
    meter_budget_bytes = Integer(
        DEFAULT_BUDGET_BYTES,
        config=True,
        help="A local session's byte budget to the browser (pods get the operator's).",
    )
    meter_window_seconds = Integer(DEFAULT_WINDOW_SECONDS, config=True, help="The byte budget's window.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._process: asyncio.subprocess.Process | None = None
        self._meter: asyncio.subprocess.Process | None = None

    def clear_state(self) -> None:
        super().clear_state()
        self._process = None
        self._meter = None

    def _listen_address(self) -> tuple[str, int]:
        # The meter's address: the proxy sends the browser there, and the meter forwards to the server.
        return "127.0.0.1", random_port()

    async def stop(self, now: bool = False) -> None:
        # The server first, so that the meter's final totals include its last responses.
        await _terminate(self._process, 1 if now else 5)
        await _terminate(self._meter, 10)
        self._process = self._meter = None
        await super().stop(now)

    async def _session_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        # The session is this hub's local processes (stopped above, the meter's last report made): the
        # Workspace's pod on a simulated node serves nothing.
        return None

    async def poll(self) -> int | None:
        if self._workspace is not None:
            for process in (self._process, self._meter):
                if process is not None and process.returncode is not None:
                    return process.returncode
        return await super().poll()

    async def _serve(self, workspace: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, int]:
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
        self._note(80, "Starting the byte meter and the single-user server")
        self._meter = await self._start_meter(server_port, env)
        self._process = await asyncio.create_subprocess_exec(
            *self._server_command(home, runtime, server_port), env=process_env, cwd=str(home)
        )
        return (self.ip, self.port)

    def _server_command(self, home: Path, runtime: Path, port: int) -> list[str]:
        command = [
            str(Path(sys.executable).with_name("jupyterhub-singleuser")),
            f"--ServerApp.root_dir={home}",
            "--ip=127.0.0.1",
            f"--port={port}",
            *server_options(str(runtime)),
        ]
        if os.geteuid() == 0:
            # CI machines run everything as root; a workspace pod never does (runAsNonRoot), and its
            # container has no capability: neither has this process and whatever it starts.
            command = [*_WITHOUT_CAPABILITIES, *command, "--allow-root"]
        return command

    async def _start_meter(self, server_port: int, env: Mapping[str, str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
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
