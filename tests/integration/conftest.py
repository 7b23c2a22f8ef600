"""Fixtures for tests against the real local stack (make cluster-up): API server, scheduler, kwok, S3."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cluster"


def _versions() -> dict[str, str]:
    lines = (ROOT / "hack/versions.env").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


VERSIONS = _versions()
K8S_VERSION = VERSIONS["K8S_VERSION"]
CACHE = Path(os.environ.get("CLEANROOM_CACHE", Path.home() / ".cache/cleanroom"))
KUBECTL = str(CACHE / f"bin/kubernetes-{K8S_VERSION}/kubectl")


class Kubectl:
    """kubectl against the local cluster, as an admin would type it."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-f", "-", *extra, stdin=text, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json").stdout)
        return out

    def wait_for(self, predicate: Any, *args: str, timeout: float = 60) -> dict[str, Any]:
        """Poll `kubectl get ARGS` until predicate(object) is true; fail with the last object seen."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            result = self.run("get", *args, "-o", "json", check=False)
            if result.returncode == 0:
                last = json.loads(result.stdout)
                if predicate(last):
                    return last
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting on {args}; last seen:\n{json.dumps(last, indent=1)[:4000]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_env() -> dict[str, str]:
    lines = (STATE / "s3.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


ISOLATED_GPU_TYPE = "nvidia-test-isolated"
ISOLATED_GPU_LABEL = "cleanroom.dev/test-gpu-pool"


def workspace_settings_file() -> Path:
    """Operator settings for the tests: the default GPU types plus one that only a test's own node carries;
    read grants signed for the local S3 server, where the hub's local sessions fetch them, and naming the
    tests' grant signer."""
    from cleanroom.workspaces.settings import DEFAULT_GPU_TYPES

    path = STATE / "test-workspace-settings.yaml"
    types = {**DEFAULT_GPU_TYPES, ISOLATED_GPU_TYPE: {ISOLATED_GPU_LABEL: "isolated"}}
    settings = {
        "gpuTypes": types,
        "snapshotEndpoint": s3_env()["S3_ENDPOINT"],
        "grantSignerUrl": grant_signer_url(),
    }
    path.write_text(yaml.safe_dump(settings))
    return path


_GRANT_SIGNER: dict[str, str] = {}


def grant_signer_url() -> str:
    """The grant signer the test operator's grants name: `python -m cleanroom.cli_signer` on a free port, with
    the local S3 server's one account as its read key (the operator seals with the same secret). Started once
    per session, stopped when the session ends."""
    if not _GRANT_SIGNER:
        import atexit

        url, process = start_grant_signer("test-grant-signer")
        atexit.register(process.terminate)
        _GRANT_SIGNER["url"] = url
    return _GRANT_SIGNER["url"]


def start_grant_signer(
    name: str, tls: tuple[Path, Path] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """A grant signer process (its URL and process; the caller stops it), over TLS with ``tls`` (certificate
    and key files, the certificate its own CA), answering on /healthz before this returns."""
    s3, port = s3_env(), free_port()
    log = (STATE / f"{name}.log").open("a")
    arguments = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cleanroom.cli_signer",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *arguments,
        ],
        env={
            **os.environ,
            "CLEANROOM_SNAPSHOT_ENDPOINT": s3["S3_ENDPOINT"],
            "CLEANROOM_SNAPSHOT_ACCESS_KEY": s3["S3_ACCESS_KEY"],
            "CLEANROOM_SNAPSHOT_SECRET_KEY": s3["S3_SECRET_KEY"],
            "CLEANROOM_SNAPSHOT_BUCKET": "cleanroom-snapshots",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2, context=context).close()
            return url, process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.terminate()
                raise AssertionError(f"the grant signer did not start: {STATE / f'{name}.log'}") from None
            time.sleep(0.2)


AUDIT_DIR = STATE / "test-audit"


def audit_signing_key() -> Path:
    from cleanroom.audit import write_signing_key

    path = STATE / "test-audit-signing.pem"
    if not path.exists():
        write_signing_key(path)
    return path


def operator_kubeconfig(kubeconfig: str) -> str:
    """A kubeconfig for the test operator's own service account (cluster-admin, as a test stand-in for the
    chart's RBAC). The operator must not share the suite's identity: tenancy tells the operator's own writes
    apart from a user's by the API server's user name, as it does in a deployed install."""
    path = STATE / "test-operator.kubeconfig"
    admin = Kubectl(kubeconfig)
    admin.run("create", "namespace", "cleanroom-test-system", check=False)
    admin.run("create", "serviceaccount", "test-operator", "-n", "cleanroom-test-system", check=False)
    admin.run(
        "create", "clusterrolebinding", "cleanroom-test-operator", "--clusterrole=cluster-admin",
        "--serviceaccount=cleanroom-test-system:test-operator", check=False,
    )  # fmt: skip
    token = admin.run(
        "create", "token", "test-operator", "-n", "cleanroom-test-system", "--duration=24h"
    ).stdout
    config = yaml.safe_load(admin.run("config", "view", "--minify", "--raw").stdout)
    config["users"] = [{"name": "test-operator", "user": {"token": token.strip()}}]
    config["contexts"][0]["context"]["user"] = "test-operator"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def operator_env(kubeconfig: str) -> dict[str, str]:
    s3 = s3_env()
    return {
        **os.environ,
        "KUBECONFIG": operator_kubeconfig(kubeconfig),
        "PYTHONUNBUFFERED": "1",
        "CLEANROOM_SNAPSHOT_ENDPOINT": s3["S3_ENDPOINT"],
        "CLEANROOM_SNAPSHOT_ACCESS_KEY": s3["S3_ACCESS_KEY"],
        "CLEANROOM_SNAPSHOT_SECRET_KEY": s3["S3_SECRET_KEY"],
        "CLEANROOM_SNAPSHOT_BUCKET": "cleanroom-snapshots",
        # Released exports in a bucket of their own, as docs/install.md advises (the hub's key reads only it).
        "CLEANROOM_EXPORT_OUTBOX_BUCKET": "cleanroom-exports",
        "CLEANROOM_WORKSPACE_CLOCK_SECONDS": "3",
        "CLEANROOM_WORKSPACE_CONFIG": str(workspace_settings_file()),
        "CLEANROOM_AUDIT_DIR": str(AUDIT_DIR),
        "CLEANROOM_AUDIT_SIGNING_KEY": str(audit_signing_key()),
    }


class OperatorProcess:
    """`cleanroom operator` as a real process, the way it runs in its Deployment."""

    def __init__(self, kubeconfig: str, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.metrics_port = free_port()
        self.log_path = log_path
        # Settings a test module adds for its own run (it stops the process, sets them and starts it again).
        self.extra_env: dict[str, str] = {}
        self.start()

    def start(self) -> None:
        self.log = self.log_path.open("a")
        self.log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cleanroom.cli",
                "operator",
                "--health-host",
                "127.0.0.1",
                "--health-port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--log-format",
                "json",
            ],
            env={**operator_env(self.kubeconfig), **self.extra_env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_healthy()

    def new_log_lines(self) -> list[str]:
        with self.log_path.open() as log:
            log.seek(self.log_offset)
            return [line for line in log.read().splitlines() if line.strip()]

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"operator exited early:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"operator not healthy in {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill would: no chance to clean up."""
        self.process.kill()
        self.process.wait()
        self.log.close()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return int(self.process.returncode)


def _stop_dev_operator() -> None:
    # Two operators would fight over the same objects: make dev's (a local process, or the deployed install's
    # pod, scaled to 0) is stopped for the run; hack/deploy.sh brings the deployed one back.
    subprocess.run([str(ROOT / "hack/stop-operator.sh")], check=False)


@pytest.fixture(scope="session", autouse=True)
def _deployed_install_stopped() -> None:
    """Every integration test runs beside no deployed operator and without the deployed release's writers'
    admission bindings (which hold each user's Workspace to an annotation naming them): the tests create
    objects as the cluster's admin and release the policies in namespaces of their own. Done once per session,
    whichever test comes first: test_crd_validation run alone after the deployed suite was refused by the
    binding hack/deploy.sh had put back."""
    _stop_dev_operator()
