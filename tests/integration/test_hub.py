"""The hub on the real control plane: JWT sign-in, the workspace list, start and stop through the
spawner (which sets spec.running and waits for the operator's Ready), refusals, and their audit events."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import requests

from cleanroom.audit import read_records
from cleanroom.hub.names import server_name
from tests.integration.conftest import AUDIT_DIR, ISOLATED_GPU_TYPE, Kubectl
from tests.integration.hub_process import Hub, hub, server_path, xsrf
from tests.integration.test_workspaces import dataset, requester, wait_ready, workspace

__all__ = ["dataset", "hub"]  # fixtures

ALICE, BOB = "alice@hospital.example", "bob@hospital.example"


def audit_events(action: str, since: float) -> list[dict[str, Any]]:
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since - 1))
    return [
        r["event"]
        for r in read_records(AUDIT_DIR)
        if r["event"]["action"] == action and r["event"]["time"] >= cutoff
    ]


def test_a_bearer_token_signs_in_and_the_page_lists_only_your_workspaces(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    kubectl.apply(workspace("mine", dataset, running=False), "-n", namespace)
    kubectl.apply(workspace("theirs", dataset, running=False, users=[BOB]), "-n", namespace)
    page = hub.session(ALICE, ("prostate-ai",)).get(f"{hub.url}/hub/workspaces")
    assert page.status_code == 200
    listed = server_path(page.text)
    assert server_name(namespace, "mine") in listed
    assert server_name(namespace, "theirs") not in listed
    assert f"{namespace}/mine" in page.text


def test_refused_tokens_get_401_with_the_reason_and_are_audited_without_the_token(hub: Hub) -> None:
    started = time.time()
    cases = {
        "token expired": hub.token(ALICE, lifetime_seconds=-120),
        "another audience": hub.issuer.issue(ALICE, extra={"aud": "some-other-service"}),
        "not a JWT": "definitely-not-a-token",
    }
    for reason, token in cases.items():
        response = requests.get(f"{hub.url}/hub/login", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (reason, response.status_code)
        assert reason in response.text
        assert token not in hub.log_text()
    denied = audit_events("session.login", started)
    assert sum(e["outcome"] == "denied" for e in denied) >= len(cases)
    # The form path: a pasted token that does not verify.
    session = requests.Session()
    session.get(f"{hub.url}/hub/login")
    form = session.post(
        f"{hub.url}/hub/login", data={"token": cases["token expired"], "_xsrf": xsrf(session)}
    )
    assert form.status_code == 401 and "token expired" in form.text


def wait_for(predicate: Any, timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def stopped_workspace(
    kubectl: Kubectl, namespace: str, dataset: str, prefix: str, **spec: Any
) -> tuple[str, str]:
    """A Workspace for alice, not running yet; its name and its hub server name."""
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, dataset, running=False, **spec), "-n", namespace)
    return name, server_name(namespace, name)


def stop_session(hub: Hub, session: requests.Session, server: str) -> requests.Response:
    """Stop (or cancel the start of) a server from the workspace page, as the Stop button does."""
    return session.post(f"{hub.url}/hub/workspaces/{server}/stop", data={"_xsrf": xsrf(session)})


def open_lab(hub: Hub, session: requests.Session, server: str, user: str = ALICE) -> None:
    """JupyterLab's page, as the spawn page's redirect loads it once the server is up: the page (not an API
    call) signs the browser in to the server through the hub's OAuth, and only then does the server's API
    answer it (until then jupyter_server's APIHandler answers 403 where a page would redirect)."""
    wait_for(
        lambda: (
            (r := session.get(f"{hub.url}/user/{user}/{server}/lab")).status_code == 200 and "/lab" in r.url
        ),
        timeout=120,
        what="JupyterLab behind the proxy",
    )


def test_start_sets_running_waits_for_ready_serves_the_session_and_stop_clears_it(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    name, server = stopped_workspace(kubectl, namespace, dataset, "seg")
    session = hub.session(ALICE)
    start = session.get(f"{hub.url}/hub/spawn/{ALICE}/{server}")
    assert start.status_code == 200, start.text[-2000:]
    body = wait_for(
        lambda: (b := kubectl.get("workspace", name, "-n", namespace))["spec"].get("running") and b,
        what="spec.running",
    )
    assert body["metadata"]["annotations"]["cleanroom.dev/started-by"] == ALICE
    wait_ready(kubectl, namespace, name)
    # The hub's Secret with the session settings, for the pod's envFrom; nothing of the hub's own env.
    secret = kubectl.get("secret", f"ws-{name}-hub", "-n", namespace)
    assert set(secret["data"]) >= {"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "JUPYTERHUB_SERVICE_PREFIX"}
    assert not {k for k in secret["data"] if not k.startswith("JUPYTERHUB_")}
    # Through the proxy, signed in to the server by the hub's OAuth, as a browser is.
    open_lab(hub, session, server)
    api = session.get(f"{hub.url}/user/{ALICE}/{server}/api/status")
    assert api.status_code == 200 and "started" in api.json()
    # Another signed-in user's browser is turned away by the server itself.
    other = hub.session(BOB).get(f"{hub.url}/user/{ALICE}/{server}/api/status", allow_redirects=False)
    assert other.status_code in (302, 403)
    # The dataset is there, read-only, and listed (not read) through the contents API.
    listing = session.get(f"{hub.url}/user/{ALICE}/{server}/api/contents/data?content=1").json()
    assert any(item["name"] == "MANIFEST.json" for item in listing["content"])

    stop = stop_session(hub, session, server)
    assert stop.status_code == 200
    wait_for(
        lambda: kubectl.get("workspace", name, "-n", namespace)["spec"].get("running") is False,
        what="spec.running false",
    )
    assert kubectl.run("get", "secret", f"ws-{name}-hub", "-n", namespace, check=False).returncode != 0


def page_row(session: requests.Session, hub: Hub, server: str) -> str:
    """The workspace page's row for one server, as HTML."""
    page = session.get(f"{hub.url}/hub/workspaces")
    assert page.status_code == 200
    assert "Running (another session)" not in page.text
    found = re.search(rf'<tr class="workspace" data-server="{server}">(.*?)</tr>', page.text, re.DOTALL)
    assert found, page.text[-3000:]
    return found.group(1)


def cell(html: str, name: str) -> str:
    found = re.search(rf'<td class="{name}">(.*?)</td>', html, re.DOTALL)
    assert found, html
    return found.group(1)


def test_a_session_started_outside_the_hub_is_its_starters_to_open_and_stop_and_nobody_elses(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    """As examples/workspace.yaml does: created with running: true, so it runs for its creator (here the
    suite's own user) with no session of the hub's. Alice is listed too; the session is not hers."""
    owner, name = requester(), f"outside-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, dataset, running=True, users=[ALICE, owner]), "-n", namespace)
    server = server_name(namespace, name)
    body = wait_ready(kubectl, namespace, name)
    assert body["status"]["startedBy"] == owner

    mine = hub.session(owner)
    shown = page_row(mine, hub, server)
    assert 'class="state-word">Running<' in shown
    assert 'class="btn btn-primary open"' in shown and 'class="btn btn-secondary stop">Stop' in shown
    assert 'class="btn btn-primary start"' not in shown
    # The snapshot, the expiry, the idle deadline and the GPU of the Workspace.
    assert body["status"]["snapshot"]["shortDigest"] in shown
    assert body["status"]["expiresAt"][:16].replace("T", " ") + " UTC" in cell(shown, "expires")
    assert " UTC" in cell(shown, "idle")
    assert cell(shown, "gpu") == "none"

    theirs = hub.session(ALICE)
    shown = page_row(theirs, hub, server)
    assert f'class="state-word">In use by {owner}<' in shown
    assert "btn" not in shown
    # The attack: alice stops a session that is not hers, by posting the Stop form herself.
    started = time.time()
    refused = stop_session(hub, theirs, server)
    assert refused.status_code == 403, refused.status_code
    assert kubectl.get("workspace", name, "-n", namespace)["spec"]["running"] is True
    # Nor can she take it over by starting it herself (the old page offered her Start).
    hijack = theirs.get(f"{hub.url}/hub/spawn/{ALICE}/{server}")
    assert hijack.status_code == 409, hijack.status_code
    assert f"runs for {owner}" in hijack.text
    after = kubectl.get("workspace", name, "-n", namespace)
    assert after["spec"]["running"] is True
    assert after["metadata"]["annotations"].get("cleanroom.dev/started-by", owner) == owner
    # No session settings of hers were written for the pod to take.
    assert kubectl.run("get", "secret", f"ws-{name}-hub", "-n", namespace, check=False).returncode != 0
    assert sum(e["actor"]["name"] == ALICE for e in audit_events("access.denied", started)) >= 2

    # Its starter stops it from the page, though the hub holds no session of it.
    assert stop_session(hub, mine, server).status_code == 200
    wait_for(
        lambda: kubectl.get("workspace", name, "-n", namespace)["spec"].get("running") is False,
        what="spec.running false after its starter's stop",
    )
    kubectl.apply(workspace(name, dataset, running=True, users=[ALICE, owner]), "-n", namespace)
    wait_ready(kubectl, namespace, name)
    # Open takes the running session up (nothing restarted) and JupyterLab answers through the proxy. Open
    # answers with the spawn-pending page while the session is taken up; its script then loads JupyterLab,
    # which signs the browser in to the server (the server's API alone answers 403 before that).
    opened = mine.get(f"{hub.url}/hub/spawn/{owner}/{server}")
    assert opened.status_code == 200, opened.text[-2000:]
    open_lab(hub, mine, server, user=owner)
    assert mine.get(f"{hub.url}/user/{owner}/{server}/api/status").status_code == 200
    assert 'class="state-word">Running<' in page_row(mine, hub, server)
    assert stop_session(hub, mine, server).status_code == 200
    wait_for(
        lambda: kubectl.get("workspace", name, "-n", namespace)["spec"].get("running") is False,
        what="spec.running false after the hub's stop",
    )


def test_a_user_not_in_the_workspace_gets_403_and_an_audit_event(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    kubectl.apply(workspace("private", dataset, running=False), "-n", namespace)
    server = server_name(namespace, "private")
    started = time.time()
    response = hub.session(BOB).get(f"{hub.url}/hub/spawn/{BOB}/{server}")
    assert response.status_code == 403, response.status_code
    assert "not in spec.users" in response.text
    assert kubectl.get("workspace", "private", "-n", namespace)["spec"].get("running") is False
    denied = audit_events("access.denied", started)
    assert any(e["actor"]["name"] == BOB and e["outcome"] == "denied" for e in denied)


def test_hub_activity_reaches_the_workspace_for_idle_culling(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    name, server = stopped_workspace(kubectl, namespace, dataset, "idle")
    session = hub.session(ALICE)
    session.get(f"{hub.url}/hub/spawn/{ALICE}/{server}")
    open_lab(hub, session, server)
    stamp = wait_for(
        lambda: (
            kubectl.get("workspace", name, "-n", namespace)["metadata"]
            .get("annotations", {})
            .get("cleanroom.dev/last-activity")
        ),
        timeout=90,
        what="the last-activity annotation",
    )
    assert stamp.endswith("Z")
    stop_session(hub, session, server)


def test_the_spawn_progress_shows_the_schedulers_reason_when_no_gpu_is_free(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    """No node carries this GPU type: the hub's progress stream relays the scheduler's own words."""
    resources = {"gpu": 1, "gpuType": ISOLATED_GPU_TYPE, "cpu": "1", "memory": "1Gi", "homeStorage": "1Gi"}
    name, server = stopped_workspace(kubectl, namespace, dataset, "nogpu", resources=resources)
    session = hub.session(ALICE)
    session.get(f"{hub.url}/hub/spawn/{ALICE}/{server}", allow_redirects=False)
    messages: list[str] = []
    with session.get(
        f"{hub.url}/hub/api/users/{ALICE}/servers/{server}/progress", stream=True, timeout=90
    ) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                messages.append(json.loads(line[5:])["message"])
                if any("Unschedulable" in m for m in messages):
                    break
    unschedulable = next(m for m in messages if "Unschedulable" in m)
    assert "node" in unschedulable.lower(), messages
    stop_session(hub, session, server)
    wait_for(
        lambda: kubectl.get("workspace", name, "-n", namespace)["spec"].get("running") is False,
        what="spec.running false after stop",
    )


def test_the_session_reports_kernels_terminals_dataset_opens_and_its_stop_to_the_audit_trail(
    hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    name, server = stopped_workspace(kubectl, namespace, dataset, "audit")
    session = hub.session(ALICE)
    started = time.time()
    session.get(f"{hub.url}/hub/spawn/{ALICE}/{server}")
    open_lab(hub, session, server)
    base = f"{hub.url}/user/{ALICE}/{server}"
    # The single-user server's own XSRF cookie guards its API, as in the browser.
    token = next(c.value for c in session.cookies if c.name == "_xsrf" and c.path.startswith("/user"))
    headers = {"X-XSRFToken": token or ""}
    assert session.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers).status_code == 201
    assert session.post(f"{base}/api/terminals", headers=headers).status_code == 200
    manifest = session.get(f"{base}/api/contents/data/MANIFEST.json?content=1")
    assert manifest.status_code == 403
    # Raw-file routes are refused before any handler runs, for any file (a user name with @ included).
    raw = session.get(f"{base}/files/notes.txt")
    assert raw.status_code == 403 and "raw file downloads are disabled" in raw.text
    stop_session(hub, session, server)

    def mine(action: str) -> list[dict[str, Any]]:
        return [
            e
            for e in audit_events(action, started)
            if e["resources"].get("workspace") == name and e["actor"]["name"] == ALICE
        ]

    for action in (
        "session.start",
        "kernel.started",
        "terminal.started",
        "data.file.opened",
        "download.refused",
        "session.stop",
    ):
        wait_for(lambda action=action: mine(action), timeout=30, what=f"audit event {action}")
    [opened] = mine("data.file.opened")
    assert opened["resources"]["path"] == "data/MANIFEST.json" and opened["outcome"] == "denied"
