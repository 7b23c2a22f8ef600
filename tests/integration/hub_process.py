"""JupyterHub with configurable-http-proxy as real processes, configured as the chart configures them,
over the real control plane. Sessions run as local processes (`CLEANROOM_HUB_LOCAL_PROCESS`): kwok's
pods do not execute."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cleanroom.tokens import DevIssuer, write_dev_issuer
from tests.integration.conftest import CACHE, ROOT, VERSIONS, free_port, operator_env

ISSUER, AUDIENCE = "https://login.cleanroom.test", "cleanroom-hub"
CHP = (
    CACHE
    / "node"
    / f"configurable-http-proxy-{VERSIONS['CHP_VERSION']}"
    / "node_modules"
    / ".bin"
    / "configurable-http-proxy"
)
HUB_CONFIG = ROOT / "charts" / "cleanroom" / "files" / "jupyterhub_config.py"


class Hub:
    def __init__(self, kubeconfig: str, workdir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.issuer: DevIssuer = write_dev_issuer(workdir / "issuer", ISSUER, AUDIENCE)
        self.port, self.api_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "hub.log"
        self.env = {
            **operator_env(kubeconfig),
            "CLEANROOM_HUB_ISSUER": ISSUER,
            "CLEANROOM_HUB_AUDIENCE": AUDIENCE,
            "CLEANROOM_HUB_JWKS_FILE": str(workdir / "issuer" / "dev-jwks.json"),
            "CLEANROOM_HUB_LOCAL_PROCESS": "true",
            "CLEANROOM_HUB_LOCAL_ROOT": str(workdir / "sessions"),
            "CLEANROOM_HUB_BIND_URL": self.url,
            "CLEANROOM_HUB_API_BIND_URL": f"http://127.0.0.1:{self.api_port}",
            "CLEANROOM_HUB_PROXY_API_URL": f"http://127.0.0.1:{self.proxy_api_port}",
            "CLEANROOM_HUB_PROXY_COMMAND": str(CHP),
            "CLEANROOM_SERVICE_ACCOUNT": "system:serviceaccount:cleanroom-system:cleanroom-hub",
            **(extra_env or {}),
        }
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(HUB_CONFIG)],
            cwd=workdir,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"hub exited early:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/hub/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"hub not healthy in {timeout}s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, user: str, groups: tuple[str, ...] = (), **kwargs: Any) -> str:
        return self.issuer.issue(user, groups, **kwargs)

    def session(self, user: str, groups: tuple[str, ...] = ()) -> requests.Session:
        """A browser-like session signed in with a bearer token."""
        session = requests.Session()
        response = session.get(
            f"{self.url}/hub/login", headers={"Authorization": f"Bearer {self.token(user, groups)}"}
        )
        assert response.status_code == 200, response.text[-2000:]
        return session

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def xsrf(session: requests.Session) -> str:
    """The hub's XSRF cookie (the single-user server sets its own, under its own path)."""
    return next(c.value or "" for c in session.cookies if c.name == "_xsrf" and c.path.startswith("/hub"))


def run_hub(
    kubeconfig: str, tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None
) -> Iterator[Hub]:
    if not CHP.exists():
        pytest.fail(
            f"configurable-http-proxy missing at {CHP}: run hack/install-node-tools.sh (make install does)"
        )
    workdir = tmp_path_factory.mktemp("hub")
    process = Hub(kubeconfig, workdir, extra_env)
    yield process
    process.stop()
    # Keep the hub's log beside the operator's for a failed run's post-mortem.
    shutil.copy(process.log_path, ROOT / ".cluster" / "test-hub.log")


@pytest.fixture(scope="module")
def hub(kubeconfig: str, operator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from run_hub(kubeconfig, tmp_path_factory)


def server_path(text: str) -> list[str]:
    return re.findall(r'data-server="([a-z0-9-]+)"', text)
