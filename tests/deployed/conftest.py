"""The deployed suite: the chart installed as a hospital would install it (hack/deploy.sh), its images running
as pods on the local stack's real node, attacked as modellers and insiders would.

Where the machine cannot run the real node, `make cluster-up` writes why to .cluster/real-node.unavailable and
every test here is skipped with that reason; anywhere else a missing node is a failure.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
import yaml
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from cleanroom.tokens import DevIssuer, load_dev_issuer
from tests.e2e.test_oidc_browser import provider_login
from tests.integration.conftest import KUBECTL, ROOT, STATE, Kubectl

# The port-forward to the audit service ends on 127.0.0.1, which its certificate (its Service names) does not name.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

UNAVAILABLE = STATE / "real-node.unavailable"
NODE = "real-0"
HUB_ISSUER, HUB_AUDIENCE = "https://login.cleanroom.local", "cleanroom-hub"
SAMPLE_NS, SAMPLE_WS = "team-sample", "segmentation-alice"
ALICE = "alice@hospital.example"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = (
        f"no real node on this machine: {UNAVAILABLE.read_text().strip()}" if UNAVAILABLE.exists() else ""
    )
    for item in items:
        if "tests/deployed/" not in str(item.fspath):
            continue
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        # The first test pays for the install (images built, pods started); churn waits for 20 notebooks.
        item.add_marker(pytest.mark.timeout(1800))


@dataclass(frozen=True)
class Deployed:
    namespace: str
    s3_access_key: str
    s3_secret_key: str
    notebook_image: str
    operator_image: str


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def deploy(overrides: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """hack/deploy.sh (an upgrade when installed): ci/deployed-values.yaml, then the values file that
    CLEANROOM_DEPLOY_VALUES names (if any), with ``overrides`` merged over that one."""
    env = dict(os.environ)
    if overrides:
        given = env.get("CLEANROOM_DEPLOY_VALUES")
        base = yaml.safe_load(Path(given).read_text()) if given else None
        with tempfile.NamedTemporaryFile(
            "w", suffix=".yaml", prefix="deploy-values-", delete=False
        ) as values:
            yaml.safe_dump(_merged(base or {}, overrides), values)
        env["CLEANROOM_DEPLOY_VALUES"] = values.name
    try:
        return subprocess.run(
            [str(ROOT / "hack/deploy.sh")], capture_output=True, text=True, timeout=900, env=env
        )
    finally:
        if overrides:
            os.unlink(env["CLEANROOM_DEPLOY_VALUES"])


@pytest.fixture(scope="session")
def deployed(kubectl: Kubectl) -> Deployed:
    """The chart installed with ci/deployed-values.yaml, every pod Ready (idempotent: an upgrade when up)."""
    node = kubectl.run("get", "node", NODE, check=False)
    if node.returncode != 0:
        pytest.fail(
            f"the real node {NODE} is not registered and {UNAVAILABLE.name} gives no reason: run make cluster-up"
        )
    result = deploy()
    if result.returncode != 0:
        pytest.fail(f"hack/deploy.sh failed:\n{result.stderr[-4000:]}")
    env = _env_file(STATE / "deployed.env")
    images = _env_file(STATE / "images.env")
    return Deployed(
        env["DEPLOYED_NAMESPACE"],
        env["DEPLOYED_S3_ACCESS_KEY"],
        env["DEPLOYED_S3_SECRET_KEY"],
        env["DEPLOYED_IMAGE_NOTEBOOK"],
        images["IMAGE_OPERATOR"],
    )


class PortForward:
    """`kubectl port-forward` to a Service or pod, on a free local port."""

    def __init__(self, kubeconfig: str, namespace: str, target: str, port: int, local_port: int = 0) -> None:
        self.process = subprocess.Popen(
            [
                KUBECTL,
                "--kubeconfig",
                kubeconfig,
                "-n",
                namespace,
                "port-forward",
                "--address",
                "127.0.0.1",
                target,
                f"{local_port or ''}:{port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            self.close()
            raise AssertionError(f"kubectl port-forward {target} did not start: {line}")
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="session")
def proxy(kubeconfig: str, deployed: Deployed) -> Iterator[PortForward]:
    """The chart's proxy (Service cleanroom-proxy-public), as a browser reaches it."""
    forward = PortForward(kubeconfig, deployed.namespace, "svc/cleanroom-proxy-public", 80)
    yield forward
    forward.close()


@pytest.fixture(scope="session")
def public_proxy(kubeconfig: str, deployed: Deployed) -> Iterator[str]:
    """The chart's proxy at the deployed hub's public URL (hub.publicURL in ci/deployed-values.yaml), where the
    identity provider sends a browser back after sign-in. `make dev` forwards that port already; else the
    suite forwards it."""
    values = yaml.safe_load((ROOT / "charts/cleanroom/ci/deployed-values.yaml").read_text())
    public = str(values["hub"]["publicURL"]).rstrip("/")
    port = int(public.rsplit(":", 1)[1])
    with socket.socket() as probe:
        taken = probe.connect_ex(("127.0.0.1", port)) == 0
    if taken and _hub_answers(public):
        yield public
        return
    if taken:
        # make dev's forward outlived the proxy pod it was bound to (hack/deploy.sh replaced the pod when an
        # image changed): it still listens, and refuses every connection. The suite forwards the port itself.
        _stop_pidfile(STATE / "proxy-forward.pid")
    forward = PortForward(kubeconfig, deployed.namespace, "svc/cleanroom-proxy-public", 80, local_port=port)
    yield public
    forward.close()


def _hub_answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/hub/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _stop_pidfile(path: Path) -> None:
    if not path.exists():
        return
    pid = path.read_text().strip()
    # The process group first: make dev's S3 forward is a loop that starts kubectl again (hack/dev.sh).
    if subprocess.run(["kill", "--", f"-{pid}"], check=False, capture_output=True).returncode != 0:
        subprocess.run(["kill", pid], check=False, capture_output=True)
    path.unlink(missing_ok=True)
    time.sleep(1)


@pytest.fixture(scope="session")
def store(kubeconfig: str, deployed: Deployed) -> Iterator[PortForward]:
    """The chart's S3 server, as an admin (or whoever holds its keys) reaches it."""
    forward = PortForward(kubeconfig, deployed.namespace, "svc/cleanroom-s3", 7070)
    yield forward
    forward.close()


@pytest.fixture(scope="session")
def issuer() -> DevIssuer:
    """The dev identity provider whose JWKS the deployed hub trusts (hack/deploy.sh)."""
    return load_dev_issuer(STATE / "hub" / "dev-issuer.pem", HUB_ISSUER, HUB_AUDIENCE)


@pytest.fixture(scope="session")
def sample(kubectl: Kubectl, deployed: Deployed) -> dict[str, Any]:
    """The sample Dataset ingested by the operator pod and the sample Workspace Ready on the real node."""
    result = subprocess.run(
        [str(ROOT / "hack/deployed-sample.sh")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"hack/deployed-sample.sh failed:\n{result.stderr[-4000:]}")
    return kubectl.get("workspace", SAMPLE_WS, "-n", SAMPLE_NS)


@pytest.fixture
def audit_page(kubeconfig: str, deployed: Deployed) -> Iterator[requests.Session]:
    """A security officer signed in to the deployed audit service's page (the hub's issuer, audience
    cleanroom-audit)."""
    forward = PortForward(kubeconfig, deployed.namespace, "svc/cleanroom-audit", 8090)
    officer = load_dev_issuer(STATE / "hub" / "dev-issuer.pem", HUB_ISSUER, "cleanroom-audit")
    session = requests.Session()
    session.verify = False
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides session.verify
    session.base = f"https://127.0.0.1:{forward.port}"  # type: ignore[attr-defined]
    signed_in = session.post(
        f"{session.base}/login",  # type: ignore[attr-defined]
        data={"token": officer.issue("sam@hospital.example", ("security-officer",))},
    )
    assert signed_in.status_code == 200, signed_in.text[-1000:]
    yield session
    forward.close()


def audit_rows(page: requests.Session, **filters: str) -> list[dict[str, str]]:
    """The trail's records matching the page's filters, as the officer's CSV export gives them."""
    response = page.get(f"{page.base}/export.csv", params=filters)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text[-500:]
    return list(csv.DictReader(io.StringIO(response.text)))


def alice_workspace(
    name: str, image: str, purpose: str, cpu: str, memory: str, running: bool, **labels: str
) -> dict[str, Any]:
    """A Workspace over the sample Dataset in the sample namespace, created by alice herself (apply it with
    `--as alice`: the admission policies admit no other name in cleanroom.dev/created-by)."""
    return {
        "apiVersion": "cleanroom.dev/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": SAMPLE_NS,
            "labels": dict(labels),
            "annotations": {"cleanroom.dev/created-by": ALICE},
        },
        "spec": {
            "dataset": {"name": "sample-ct"},
            "users": [ALICE],
            "purpose": purpose,
            "image": image,
            "resources": {"gpu": 0, "cpu": cpu, "memory": memory, "homeStorage": "1Gi"},
            "running": running,
        },
    }


def signed_in(base: str, issuer: DevIssuer, user: str, groups: tuple[str, ...] = ()) -> requests.Session:
    """A browser-like session signed in to the hub with a bearer token."""
    session = requests.Session()
    response = session.get(
        f"{base}/hub/login", headers={"Authorization": f"Bearer {issuer.issue(user, groups)}"}
    )
    assert response.status_code == 200, response.text[-2000:]
    return session


def sign_in_in_browser(browser: Chrome, shots: Path, public_proxy: str, user: str = "alice") -> None:
    """``user`` signs in at the hub behind the chart's proxy through the stack's OpenID Connect provider (its
    own login page, hack/oidc-up.sh) and lands on the hub's Workspaces page."""
    issuer = _env_file(STATE / "oidc.env")["OIDC_ISSUER"]
    browser.get(f"{public_proxy}/hub/login")
    browser.find_element(By.ID, "oidc-sign-in").click()
    WebDriverWait(browser, 60).until(lambda b: b.current_url.startswith(issuer))
    provider_login(browser, shots, user)
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "workspaces")))


def wait_for(predicate: Any, timeout: float = 120, what: str = "", interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def notebook_pod(kubectl: Kubectl, namespace: str, workspace: str) -> dict[str, Any]:
    pods = kubectl.get(
        "pods",
        "-n",
        namespace,
        "-l",
        f"cleanroom.dev/workspace={workspace},app.kubernetes.io/component=notebook",
    )["items"]
    running = [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and "egress-probe" not in p["metadata"]["name"]
    ]
    assert running, (
        f"no running notebook pod for {namespace}/{workspace}: {[p['metadata']['name'] for p in pods]}"
    )
    return running[0]


def exec_python(kubectl: Kubectl, namespace: str, pod: str, code: str, container: str = "notebook") -> Any:
    """Run Python in the notebook container, as the notebook's user (the kernel's user, UID and network),
    and return what the code printed as JSON on its last line."""
    encoded = base64.b64encode(code.encode()).decode()
    result = kubectl.run(
        "exec",
        "-n",
        namespace,
        pod,
        "-c",
        container,
        "--",
        "python",
        "-c",
        f"import base64; exec(base64.b64decode('{encoded}'))",
        check=False,
    )
    assert result.returncode == 0, f"exec in {pod} failed: {result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
