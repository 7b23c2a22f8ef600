"""The notebook's ways out, tried as a modeller who runs code in the kernel and wants the raw files out,
on a real single-user server behind the real hub, proxy and byte meter (issue 15). Each attack here got
through before the server answered an allow-list of routes, loaded no user configuration, checked whole
files, kept the hub token from the kernel and sat behind the meter."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.integration.conftest import Kubectl
from tests.integration.hub_process import Hub, run_hub, xsrf
from tests.integration.lab_client import Lab
from tests.integration.test_hub import (
    ALICE,
    audit_events,
    open_lab,
    stop_session,
    stopped_workspace,
    wait_for,
)
from tests.integration.test_workspaces import dataset

__all__ = ["dataset"]  # fixtures

# Small enough that a test can spend it, far above what these tests need otherwise.
BUDGET = 6 * 1024 * 1024

# Kernel code: the path of one dataset file (the snapshot's DICOM, not its manifest).
FIND_DATASET_FILE = """
import os, glob
DATASET_FILE = next(p for p in sorted(glob.glob(os.path.expanduser('~/data/**/*'), recursive=True))
                    if os.path.isfile(p) and not p.endswith('MANIFEST.json'))
"""


@pytest.fixture(scope="module")
def hub(kubeconfig: str, operator: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from run_hub(kubeconfig, tmp_path_factory, {"CLEANROOM_HUB_METER_BUDGET_BYTES": str(BUDGET)})


class Session:
    """One running workspace, signed in as alice, with a kernel."""

    def __init__(self, hub: Hub, kubectl: Kubectl, namespace: str, dataset: str, prefix: str) -> None:
        self.hub, self.kubectl, self.namespace = hub, kubectl, namespace
        self.name, self.server = stopped_workspace(kubectl, namespace, dataset, prefix)
        self.browser = hub.session(ALICE)
        self.started = time.time()
        self.start()

    def start(self) -> None:
        self.browser.get(f"{self.hub.url}/hub/spawn/{ALICE}/{self.server}")
        open_lab(self.hub, self.browser, self.server)
        self.lab = Lab(self.browser, f"{self.hub.url}/user/{ALICE}/{self.server}")
        self.lab.run(FIND_DATASET_FILE)

    def stop(self) -> None:
        stop_session(self.hub, self.browser, self.server)
        wait_for(lambda: self.lab.get("api/status").status_code != 200, timeout=60, what="the server to stop")

    def events(self, action: str) -> list[dict[str, Any]]:
        return [e for e in audit_events(action, self.started) if e["resources"].get("workspace") == self.name]

    def dataset_bytes(self) -> bytes:
        return base64.b64decode(
            self.lab.run("import base64; print(base64.b64encode(open(DATASET_FILE,'rb').read()).decode())")
        )


@pytest.fixture(scope="module")
def module_namespace(kubectl: Kubectl) -> Iterator[str]:
    """One namespace for the module's one running session (the shared `namespace` fixture is per test)."""
    name = f"exits-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def session(hub: Hub, kubectl: Kubectl, module_namespace: str, dataset: str) -> Iterator[Session]:
    running = Session(hub, kubectl, module_namespace, dataset, "exits")
    yield running
    stop_session(hub, running.browser, running.server)


def test_a_dataset_file_copied_next_to_a_kernel_spec_is_not_served(session: Session) -> None:
    lab = session.lab
    lab.run(
        FIND_DATASET_FILE
        + """
import json, shutil
spec = os.path.expanduser('~/.local/share/jupyter/kernels/leak')
os.makedirs(spec, exist_ok=True)
json.dump({'argv': ['python3', '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
           'display_name': 'leak', 'language': 'python'}, open(spec + '/kernel.json', 'w'))
shutil.copy(DATASET_FILE, spec + '/scan.dcm')
shutil.copy(DATASET_FILE, spec + '/logo-64x64.png')
"""
    )
    assert "leak" not in lab.get("api/kernelspecs").json()["kernelspecs"]
    for name in ("scan.dcm", "logo-64x64.png"):
        response = lab.get(f"kernelspecs/leak/{name}")
        assert response.status_code in (403, 404), (name, response.status_code)
        assert response.content != session.dataset_bytes()
    # The system kernel's logo is still served: JupyterLab shows it in the launcher.
    assert lab.get("kernelspecs/python3/logo-64x64.png").status_code == 200
    wait_for(lambda: session.events("route.refused"), timeout=30, what="a route.refused event")


def test_a_binary_file_behind_8192_text_bytes_is_refused_by_the_contents_api(session: Session) -> None:
    lab = session.lab
    lab.run(
        FIND_DATASET_FILE
        + "open(os.path.expanduser('~/prefixed.bin'), 'wb').write(b'a' * 8192 + open(DATASET_FILE, 'rb').read())"
    )
    response = lab.get("api/contents/prefixed.bin?content=1")
    assert response.status_code == 403, response.text[:300]
    assert "only text files" in response.text
    # Nor as base64 on request, text or not.
    lab.run("open(os.path.expanduser('~/notes.txt'), 'w').write('hello')")
    assert lab.get("api/contents/notes.txt?content=1&format=base64&type=file").status_code == 403
    assert lab.get("api/contents/notes.txt?content=1").json()["content"] == "hello"
    wait_for(
        lambda: any(e["resources"].get("path") == "prefixed.bin" for e in session.events("download.refused")),
        timeout=30,
        what="the refusal in the audit trail",
    )


def test_routes_off_the_allow_list_are_refused_and_audited(session: Session) -> None:
    lab = session.lab
    for path in (
        "api/spec.yaml",
        "api/config/notebook",
        "lab/api/extensions",
        "lab/api/plugins",
        "custom/x.css",
    ):
        response = lab.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "allow-list" in response.text
    # JupyterLab's own routes still answer.
    assert lab.get("api/kernelspecs").status_code == 200
    assert lab.get("lab/api/settings").status_code == 200
    page = lab.get("lab").text
    bundle = page.split('src="', 2)[-1].split('"', 1)[0] if "main." in page else ""
    if bundle:
        assert (
            session.browser.get(
                bundle if bundle.startswith("http") else f"{session.hub.url}{bundle}"
            ).status_code
            == 200
        )
    refused = wait_for(lambda: session.events("route.refused"), timeout=30, what="route.refused events")
    assert any("api/spec.yaml" in e["resources"].get("path", "") for e in refused)


def test_the_kernel_holds_no_hub_token_and_cannot_read_the_servers(session: Session) -> None:
    out = session.lab.run(
        """
import os
print(sorted(k for k in os.environ if k in ('JUPYTERHUB_API_TOKEN', 'JPY_API_TOKEN')))
try:
    print(b'JUPYTERHUB_API_TOKEN' in open(f'/proc/{os.getppid()}/environ', 'rb').read())
except PermissionError:
    print('denied')
"""
    )
    assert out.split() == ["[]", "denied"], out


def server_token(session: Session, kubectl: Kubectl) -> dict[str, str]:
    """The single-user server's hub token, from the Secret the hub writes for the pod."""
    secret = kubectl.get("secret", f"ws-{session.name}-hub", "-n", session.namespace)
    return {"Authorization": f"token {base64.b64decode(secret['data']['JUPYTERHUB_API_TOKEN']).decode()}"}


def test_the_servers_token_may_only_report_activity(session: Session, hub: Hub, kubectl: Kubectl) -> None:
    scopes = requests.get(f"{hub.url}/hub/api/user", headers=server_token(session, kubectl)).json()["scopes"]
    # users:activity and what it implies, for alice only: no access to servers, no other scope.
    implied = {"users:activity", "read:users:activity", "read:users:name", "read:users:groups"}
    assert f"users:activity!user={ALICE}" in scopes, scopes
    assert all(s.split("!")[0] in implied and s.endswith(f"!user={ALICE}") for s in scopes), scopes


def test_reported_activity_is_stored_as_the_hubs_own_minute(
    session: Session, hub: Hub, kubectl: Kubectl
) -> None:
    """A time the reporter chose (in the future, with microseconds) would reach the user outside."""
    chosen = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=123456)
    body = {"servers": {session.server: {"last_activity": chosen.isoformat().replace("+00:00", "Z")}}}
    headers = server_token(session, kubectl)
    assert requests.post(f"{hub.url}/hub/api/users/{ALICE}/activity", headers=headers, json=body).ok
    model = session.browser.get(f"{hub.url}/hub/api/users/{ALICE}").json()
    seen = model["servers"][session.server]["last_activity"]
    stored = datetime.fromisoformat(seen.replace("Z", "+00:00"))
    assert stored <= datetime.now(UTC) and stored.second == 0 and stored.microsecond == 0, seen


def test_named_servers_are_limited_to_the_users_workspaces(session: Session, hub: Hub) -> None:
    """Each named server is a place to store activity times; names that are no Workspace of the user's
    are refused and do not stay."""
    browser = session.browser
    for index in range(4):
        response = browser.post(
            f"{hub.url}/hub/api/users/{ALICE}/servers/junk-{index}", headers={"X-XSRFToken": xsrf(browser)}
        )
        assert response.status_code in (201, 202, 400, 404), response.text[:300]
    model = browser.get(f"{hub.url}/hub/api/users/{ALICE}?include_stopped_servers=1").json()
    assert len([name for name in model["servers"] if name.startswith("junk-")]) <= 1, sorted(model["servers"])


def test_a_home_config_that_switches_the_guard_off_is_not_loaded(session: Session) -> None:
    session.lab.run(
        """
import json, os
jupyter = os.path.expanduser('~/.jupyter')
os.makedirs(jupyter + '/labconfig', exist_ok=True)
# A config file is Python the server runs at start, before it imports its extensions.
open(jupyter + '/jupyter_server_config.py', 'w').write(
    "import cleanroom.notebook.guard as guard, cleanroom.notebook.audit_client as audit\\n"
    "guard.refused_route = lambda path: None\\n"
    "guard.refused_read = lambda *args: None\\n"
    "audit.send = lambda *args, **kwargs: None\\n")
json.dump({'disabledExtensions': {'@jupyterlab/docmanager-extension:download': False}},
          open(jupyter + '/labconfig/page_config.json', 'w'))
"""
    )
    session.stop()
    session.start()
    lab = session.lab
    dataset_path = lab.run("print(os.path.relpath(DATASET_FILE, os.path.expanduser('~')))").strip()
    assert lab.get(f"files/{dataset_path}").status_code == 403
    assert lab.get(f"api/contents/{dataset_path}?content=1").status_code == 403
    assert "docmanager-extension:download" in lab.get("lab").text  # still listed as disabled


def test_a_base64_file_larger_than_the_budget_is_cut_off_at_the_budget(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    """Text the guard must let through (it is the work), made of the dataset: the meter stops it."""
    metered = Session(hub, kubectl, namespace, dataset, "meter")
    lab = metered.lab
    lab.run(
        FIND_DATASET_FILE
        + f"""
import base64
raw = open(DATASET_FILE, 'rb').read()
with open(os.path.expanduser('~/leak.txt'), 'w') as out:
    while out.tell() < {2 * BUDGET}:
        out.write(base64.b64encode(raw).decode() + '\\n')
"""
    )
    response = lab.get("api/contents/leak.txt?content=1")
    assert response.status_code == 429, (response.status_code, len(response.content))
    assert "byte budget" in response.text and "Retry-After" in response.headers
    # The kernel prints it instead, slice by slice: the meter closes the kernel's websocket at the budget.
    with pytest.raises(Exception, match=r"closed|1008"):
        for start in range(0, 2 * BUDGET, 1 << 20):
            lab.run(f"print(open(os.path.expanduser('~/leak.txt')).read()[{start}:{start + (1 << 20)}])")
    refused = wait_for(lambda: metered.events("meter.refused"), timeout=30, what="meter.refused")
    assert refused[0]["outcome"] == "denied" and f"budget {BUDGET} bytes per 3600 s" in refused[0]["reason"]
    stop_session(hub, metered.browser, metered.server)
    [total] = wait_for(lambda: metered.events("meter.session"), timeout=60, what="the session's totals")
    sent = int(total["reason"].split("session ended: ", 1)[1].split(" bytes", 1)[0])
    assert 0 < sent <= BUDGET, total["reason"]
    assert json.dumps(total).count("refused") >= 1
