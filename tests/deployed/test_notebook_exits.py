"""The notebook's ways out (issue 15), tried from a kernel inside the deployed notebook pod on the real node,
through the chart's proxy and the pod's byte meter container, as a modeller who runs code and wants the raw
files out: the same attacks as tests/integration/test_notebook_exits.py (where each is shown to get through
old code on a local server), here against the images and the pod as a hospital runs them. Each check
carries its positive control: the same request for something the server should serve is served, and the
same search finds what it looks for when it is there, so that a refusal here is the protection's.

The first tests use the sample Workspace (a few KB each); the restart and the byte budget use a Workspace of
their own, so that a spent budget (the deployed default, 64 MiB an hour) never stands in another test's way."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.deployed.conftest import (
    ALICE,
    SAMPLE_NS,
    SAMPLE_WS,
    Deployed,
    PortForward,
    alice_workspace,
    audit_rows,
    notebook_pod,
    wait_for,
)
from tests.deployed.hub_session import HubSession
from tests.integration.conftest import Kubectl
from tests.integration.lab_client import Lab

# Kernel code: the path of one dataset file (the snapshot's DICOM, not its manifest), through the home's
# link to the read-only dataset, as a modeller finds it.
FIND_DATASET_FILE = """
import os, glob
DATASET_FILE = next(p for p in sorted(glob.glob(os.path.expanduser('~/data/**/*'), recursive=True))
                    if os.path.isfile(p) and not p.endswith('MANIFEST.json'))
"""


def _since(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment - 1))


def trail(page: requests.Session, action: str, workspace: str, since: float) -> list[dict[str, Any]]:
    """The audit service's records of one action in one Workspace since a moment, as an officer exports
    them (each with its resources decoded)."""
    rows: list[dict[str, Any]] = [
        row for row in audit_rows(page, action=action, workspace=workspace) if row["time"] >= _since(since)
    ]
    for row in rows:
        row["resources"] = json.loads(row["resources"] or "{}")
    return rows


def open_lab(hub: HubSession, url: str) -> Lab:
    """JupyterLab's page first, as a browser's first visit: it signs the browser in to this server (the
    hub's OAuth); the server's API answers only a browser that did."""
    wait_for(
        lambda: (r := hub.session.get(f"{url}/lab", timeout=30)).status_code == 200 and "/lab" in r.url,
        timeout=120,
        what=f"JupyterLab at {url} through the proxy",
    )
    lab = Lab(hub.session, url)
    lab.run(FIND_DATASET_FILE)
    return lab


def dataset_bytes(lab: Lab) -> bytes:
    return base64.b64decode(
        lab.run("import base64; print(base64.b64encode(open(DATASET_FILE,'rb').read()).decode())")
    )


@pytest.fixture(scope="module")
def alice(proxy: PortForward, sample: dict[str, Any]) -> HubSession:
    return HubSession.sign_in(proxy.url, ALICE, ("sample-ai",))


@pytest.fixture(scope="module")
def lab(alice: HubSession) -> Lab:
    """A kernel in the sample Workspace's notebook pod, reached through the chart's proxy and the meter."""
    return open_lab(alice, alice.server_url(SAMPLE_NS, SAMPLE_WS))


def test_the_kernel_runs_in_the_notebook_pod_on_the_real_node(kubectl: Kubectl, lab: Lab) -> None:
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)
    assert pod["spec"]["nodeName"] == "real-0"
    assert lab.run("import socket; print(socket.gethostname())").strip() == pod["metadata"]["name"]
    assert {c["name"] for c in pod["spec"]["containers"]} == {"notebook", "meter"}


def test_a_dataset_file_copied_next_to_a_kernel_spec_or_into_a_jupyter_data_path_is_not_served(
    lab: Lab, audit_page: requests.Session
) -> None:
    started, tag = time.time(), uuid.uuid4().hex[:8]
    written = json.loads(
        lab.run(
            f"""
import errno, json, shutil
tag = {tag!r}
home_data = os.path.expanduser('~/.local/share/jupyter')
places = {{
    # Where Jupyter looks for a user's kernel specs and lab extensions by default.
    'home kernel': f'{{home_data}}/kernels/leak-{{tag}}',
    'home extension': f'{{home_data}}/labextensions/leak-{{tag}}/static',
    # The paths the pod's server does use: the image's, read-only.
    'system kernel': os.environ['JUPYTER_DATA_DIR'] + f'/kernels/leak-{{tag}}',
    'system extension': os.environ['JUPYTER_DATA_DIR'] + f'/labextensions/leak-{{tag}}/static',
}}
out = {{}}
for what, place in places.items():
    try:
        os.makedirs(place, exist_ok=True)
        if 'kernel' in what:
            json.dump({{'argv': ['python3', '-m', 'ipykernel_launcher', '-f', '{{connection_file}}'],
                       'display_name': 'leak', 'language': 'python'}}, open(place + '/kernel.json', 'w'))
            shutil.copy(DATASET_FILE, place + '/logo-64x64.png')
            shutil.copy(DATASET_FILE, place + '/scan.dcm')
        else:
            json.dump({{'name': 'leak-' + tag, 'version': '1.0.0'}}, open(place + '/../package.json', 'w'))
            shutil.copy(DATASET_FILE, place + '/remoteEntry.leak.js')
        out[what] = 'written'
    except OSError as error:
        out[what] = errno.errorcode.get(error.errno, str(error.errno))
print(json.dumps(out))
"""
        ).strip()
    )
    # The image's Jupyter paths are read-only; the home's are the user's to write, and the server ignores them.
    assert written == {
        "home kernel": "written",
        "home extension": "written",
        "system kernel": written["system kernel"],
        "system extension": written["system extension"],
    }, written
    assert {written["system kernel"], written["system extension"]} <= {"EROFS", "EACCES"}, written
    leaked = dataset_bytes(lab)
    assert f"leak-{tag}" not in lab.get("api/kernelspecs").json()["kernelspecs"]
    for path in (
        f"kernelspecs/leak-{tag}/logo-64x64.png",
        f"kernelspecs/leak-{tag}/scan.dcm",
        f"lab/extensions/leak-{tag}/static/remoteEntry.leak.js",
    ):
        response = lab.get(path)
        assert response.status_code in (403, 404), (path, response.status_code)
        assert leaked not in response.content, path
    # The positive control: the same routes serve the image's own kernel logo and lab extensions.
    assert lab.get("kernelspecs/python3/logo-64x64.png").status_code == 200
    assert "python3" in lab.get("api/kernelspecs").json()["kernelspecs"]
    refused = wait_for(
        lambda: [
            r
            for r in trail(audit_page, "route.refused", SAMPLE_WS, started)
            if f"leak-{tag}/scan.dcm" in r["resources"].get("path", "")
        ],
        timeout=60,
        interval=3,
        what="the kernel spec's file refused in the deployed audit trail",
    )
    assert refused[0]["actor"] == ALICE and refused[0]["outcome"] == "denied"


def test_a_binary_file_behind_8192_text_bytes_is_refused_by_the_contents_api(
    lab: Lab, audit_page: requests.Session
) -> None:
    started, tag = time.time(), uuid.uuid4().hex[:8]
    prefixed, notes = f"prefixed-{tag}.bin", f"notes-{tag}.txt"
    lab.run(
        f"open(os.path.expanduser('~/{prefixed}'), 'wb').write(b'a' * 8192 + open(DATASET_FILE, 'rb').read())\n"
        f"open(os.path.expanduser('~/{notes}'), 'w').write('a' * 8192 + 'hello')"
    )
    response = lab.get(f"api/contents/{prefixed}?content=1")
    assert response.status_code == 403, (response.status_code, response.text[:300])
    assert "only text files" in response.text
    assert lab.get(f"api/contents/{prefixed}?content=1&format=base64&type=file").status_code == 403
    # The positive control: the same read of a text file of the same shape, 8,192 bytes and more.
    text = lab.get(f"api/contents/{notes}?content=1")
    assert text.status_code == 200 and text.json()["content"] == "a" * 8192 + "hello"
    wait_for(
        lambda: [
            r
            for r in trail(audit_page, "download.refused", SAMPLE_WS, started)
            if r["resources"].get("path") == prefixed
        ],
        timeout=60,
        interval=3,
        what="the refused read in the deployed audit trail",
    )
    lab.run(f"os.remove(os.path.expanduser('~/{prefixed}')); os.remove(os.path.expanduser('~/{notes}'))")


def test_a_route_off_the_allow_list_is_refused_and_audited(lab: Lab, audit_page: requests.Session) -> None:
    started, tag = time.time(), uuid.uuid4().hex[:8]
    for path in ("api/spec.yaml", "api/config/notebook", "lab/api/extensions", f"custom/{tag}.css"):
        response = lab.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "allow-list" in response.text, (path, response.text[:200])
    # The positive control: JupyterLab's own routes answer through the same proxy and meter.
    assert lab.get("api/status").status_code == 200
    assert lab.get("lab/api/settings").status_code == 200
    refused = wait_for(
        lambda: [
            r
            for r in trail(audit_page, "route.refused", SAMPLE_WS, started)
            if f"custom/{tag}.css" in r["resources"].get("path", "")
        ],
        timeout=60,
        interval=3,
        what="route.refused in the deployed audit trail",
    )
    assert refused[0]["actor"] == ALICE and refused[0]["outcome"] == "denied"


# Kernel code: every place a process of the notebook's user can read that might hold the server's hub token:
# the environment and command line of every process it can see, watched for WATCH seconds (a process that
# the container runs now and then, a probe say, starts with the container's environment, token included),
# and the files of the home, /tmp, the runtime directory and the Jupyter paths. A planted copy shows that
# the search finds the token where it is.
FIND_TOKEN = r"""
import glob, json, os, time
token = TOKEN.encode()
plant = '/tmp/planted-' + TOKEN[:4]
open(plant, 'wb').write(b'x' + token + b'x')
found, denied, seen = set(), set(), set()
def look(path):
    try:
        with open(path, 'rb') as handle:
            if token in handle.read(64 << 20):
                found.add(path)
    except PermissionError:
        denied.add(path)
    except OSError:
        pass
deadline = time.monotonic() + WATCH
while time.monotonic() < deadline:
    for proc in glob.glob('/proc/[0-9]*'):
        seen.add(proc)
        look(proc + '/environ')
        look(proc + '/cmdline')
roots = ['/home/jovyan', '/tmp', os.environ.get('JUPYTER_RUNTIME_DIR', ''), os.environ.get('JUPYTER_DATA_DIR', ''),
         os.environ.get('JUPYTER_CONFIG_DIR', ''), '/etc/jupyter']
for root in filter(None, roots):
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) != '/home/jovyan/data']
        for name in files:
            look(os.path.join(directory, name))
os.remove(plant)
names = sorted(k for k in os.environ if 'TOKEN' in k or k.startswith('JUPYTERHUB_') or k == 'JPY_API_TOKEN')
print(json.dumps({'env': names, 'in_env': any(TOKEN in v for v in os.environ.values()),
                  'found': sorted(found), 'denied': sorted(denied), 'processes': len(seen)}))
"""


def test_the_kernel_holds_no_hub_token_in_its_environment_or_files(
    kubectl: Kubectl, lab: Lab, sample: dict[str, Any]
) -> None:
    secret = kubectl.get("secret", f"ws-{SAMPLE_WS}-hub", "-n", SAMPLE_NS)
    token = base64.b64decode(secret["data"]["JUPYTERHUB_API_TOKEN"]).decode()
    # Watched over two periods of the pod's probes (10 s): whatever the container runs meanwhile is seen.
    code = f"TOKEN = {token!r}\nWATCH = 25\n{FIND_TOKEN}"
    seen = json.loads(lab.run(code, timeout=120).strip().splitlines()[-1])
    assert "JUPYTERHUB_API_TOKEN" not in seen["env"] and "JPY_API_TOKEN" not in seen["env"], seen
    assert not seen["in_env"], seen
    # Only the planted copy: the search reaches what it reads, and the token is nowhere else.
    assert seen["found"] == [f"/tmp/planted-{token[:4]}"], seen
    # The server's own process (which started with the token) is one the kernel may not read.
    assert any(path.endswith("/environ") for path in seen["denied"]), seen


@pytest.fixture(scope="module")
def own(
    kubectl: Kubectl, deployed: Deployed, alice: HubSession, sample: dict[str, Any]
) -> Iterator[tuple[str, str]]:
    """A Workspace of this module's own, started by alice through the hub; its name and server URL."""
    name = f"exits-{uuid.uuid4().hex[:5]}"
    kubectl.apply(
        alice_workspace(
            name,
            deployed.notebook_image,
            "Deployed suite: the notebook's ways out, restart and byte budget",
            "200m",
            "1Gi",
            False,
        ),
        "--as",
        ALICE,
    )
    try:
        yield name, alice.start(SAMPLE_NS, name)
    finally:
        alice.stop(SAMPLE_NS, name)
        kubectl.run("delete", "workspace", name, "-n", SAMPLE_NS, "--wait=false", check=False)


def stop_until_gone(kubectl: Kubectl, alice: HubSession, name: str) -> None:
    """Stop the Workspace through the hub (its Stop button) and wait until its pod is gone."""
    assert alice.stop(SAMPLE_NS, name).status_code == 200
    wait_for(
        lambda: (
            kubectl.get("workspace", name, "-n", SAMPLE_NS).get("status", {}).get("phase") == "Stopped"
            # The notebook pod itself (the egress probe's pod carries the same labels and may stay).
            and kubectl.run("get", "pod", f"ws-{name}", "-n", SAMPLE_NS, check=False).returncode != 0
        ),
        timeout=180,
        interval=2,
        what=f"{name} stopped and its pod gone",
    )


def restart(kubectl: Kubectl, alice: HubSession, name: str) -> str:
    """Stop the Workspace through the hub, wait until its pod is gone, and start it again (a start right
    after a stop may be refused while the stop completes)."""
    stop_until_gone(kubectl, alice, name)
    for attempt in range(6):
        try:
            return alice.start(SAMPLE_NS, name)
        except AssertionError:
            if attempt == 5:
                raise
            time.sleep(10)
    raise AssertionError("unreachable")


# Kernel code: a server config in the home, Python the server would run at its start: it leaves a mark,
# then switches the guard and its audit off; and a lab page config that brings the download commands back.
WRITE_HOME_CONFIG = r"""
import json, os
jupyter = os.path.expanduser('~/.jupyter')
os.makedirs(jupyter + '/labconfig', exist_ok=True)
CONFIG = (
    "import os\n"
    "open(os.path.expanduser('~/home-config-ran'), 'w').write('yes')\n"
    "try:\n"
    "    import cleanroom.notebook.guard as guard, cleanroom.notebook.audit_client as audit\n"
    "    guard.refused_route = lambda path: None\n"
    "    guard.refused_read = lambda *args: None\n"
    "    audit.send = lambda *args, **kwargs: None\n"
    "except ImportError:\n"
    "    pass\n"
)
for name in ('jupyter_server_config.py', 'jupyter_config.py', 'jupyter_notebook_config.py'):
    open(os.path.join(jupyter, name), 'w').write(CONFIG)
json.dump({'ServerApp': {'jpserver_extensions': {'cleanroom.notebook': False}}},
          open(jupyter + '/jupyter_server_config.json', 'w'))
json.dump({'disabledExtensions': {'@jupyterlab/docmanager-extension:download': False}},
          open(jupyter + '/labconfig/page_config.json', 'w'))
# The positive control: the file is Python that leaves its mark when run.
exec(CONFIG, {})
print(os.path.exists(os.path.expanduser('~/home-config-ran')))
os.remove(os.path.expanduser('~/home-config-ran'))
"""


def test_a_home_config_written_from_the_kernel_is_not_loaded_after_a_restart(
    kubectl: Kubectl, alice: HubSession, own: tuple[str, str]
) -> None:
    name, url = own
    lab = open_lab(alice, url)
    assert lab.run(WRITE_HOME_CONFIG).strip() == "True"
    dataset_path = lab.run("print(os.path.relpath(DATASET_FILE, os.path.expanduser('~')))").strip()
    url = restart(kubectl, alice, name)
    lab = open_lab(alice, url)
    # The config was there for the server to load, and it never ran.
    assert lab.run(
        "print(os.path.exists(os.path.expanduser('~/.jupyter/jupyter_server_config.py')),"
        " os.path.exists(os.path.expanduser('~/home-config-ran')))"
    ).split() == ["True", "False"]
    assert lab.get(f"files/{dataset_path}").status_code == 403
    assert lab.get(f"api/contents/{dataset_path}?content=1").status_code == 403
    assert lab.get("api/spec.yaml").status_code == 403
    assert "docmanager-extension:download" in lab.get("lab").text  # still listed as disabled
    # The positive control: the same server lists the dataset, so the 403s are the guard's.
    listing = lab.get(f"api/contents/{dataset_path.rsplit('/', 1)[0]}?content=1")
    assert listing.status_code == 200


def meter_budget(kubectl: Kubectl, name: str) -> tuple[int, int]:
    """The budget and window the operator gave this Workspace's meter container."""
    pod = notebook_pod(kubectl, SAMPLE_NS, name)
    meter = next(c for c in pod["spec"]["containers"] if c["name"] == "meter")
    args = dict(a.lstrip("-").split("=", 1) for a in meter["args"] if a.startswith("--"))
    return int(args["budget-bytes"]), int(float(args["window-seconds"]))


def fetch(lab: Lab, path: str) -> requests.Response:
    """A GET on a connection of its own: after a long kernel run the pooled connection through the
    port-forward may be closed at the other end (RemoteDisconnected), and this test counts every byte."""
    for attempt in range(2):
        try:
            return lab.get(path, headers={"Connection": "close"}, timeout=120)
        except requests.ConnectionError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def test_a_base64_file_larger_than_the_budget_is_cut_off_at_the_budget_and_audited(
    kubectl: Kubectl, alice: HubSession, own: tuple[str, str], audit_page: requests.Session
) -> None:
    """Text the guard must let through (it is the work), made of the dataset: the meter stops it."""
    name, url = own
    budget, window = meter_budget(kubectl, name)
    lab = open_lab(alice, url)
    started = time.time()
    part = budget // 8
    parts = int(
        lab.run(
            f"""
import base64
raw = base64.b64encode(open(DATASET_FILE, 'rb').read()).decode() + '\\n'
text = raw * ({budget + part} // len(raw) + 1)
open(os.path.expanduser('~/leak.txt'), 'w').write(text)
count = 0
for start in range(0, len(text), {part}):
    open(os.path.expanduser(f'~/leak-{{count}}.txt'), 'w').write(text[start:start + {part}])
    count += 1
open(os.path.expanduser('~/leak-small.txt'), 'w').write(raw)
del text
print(count)
""",
            timeout=300,
        )
    )
    # The positive control: the same text, small, opens from the browser side.
    small = fetch(lab, "api/contents/leak-small.txt?content=1")
    assert small.status_code == 200 and small.json()["content"].endswith("\n")
    # Slice by slice: served until the budget is spent, then refused.
    received, refused_at = 0, None
    for index in range(parts):
        response = fetch(lab, f"api/contents/leak-{index}.txt?content=1")
        if response.status_code == 429:
            refused_at = index
            break
        assert response.status_code == 200, (index, response.status_code, response.text[:200])
        received += len(response.json()["content"])
    assert refused_at is not None and refused_at >= 1, (refused_at, received)
    assert "byte budget" in response.text and "Retry-After" in response.headers
    # Cut off at the budget: no more than the budget came out, and no less than the budget less a slice
    # (and what JupyterLab's own requests spent).
    assert budget - 2 * part <= received <= budget, (received, budget)
    # Nor does the whole file come out at once.
    assert fetch(lab, "api/contents/leak.txt?content=1").status_code == 429

    # The first refusal is reported at once, with the session's bytes as the meter counted them (the totals
    # at the stop: the next test).
    refusals = wait_for(
        lambda: trail(audit_page, "meter.refused", name, started),
        timeout=60,
        interval=3,
        what="meter.refused in the deployed audit trail",
    )
    first = refusals[0]
    assert first["outcome"] == "denied" and first["actor"] == ALICE, first
    assert f"budget {budget} bytes per {window} s" in first["reason"], first["reason"]
    sent = int(first["reason"].split("; ", 1)[1].split(" bytes to the browser", 1)[0])
    assert received <= sent <= budget, (received, sent, first["reason"])


def _session_ended(audit_page: requests.Session, name: str, since: float) -> list[dict[str, Any]]:
    return [
        row
        for row in trail(audit_page, "meter.session", name, since)
        if row["reason"].startswith("session ended: ")
    ]


def test_a_stopped_sessions_last_totals_reach_the_trail_and_a_restart_keeps_the_spent_budget(
    kubectl: Kubectl, alice: HubSession, own: tuple[str, str], audit_page: requests.Session
) -> None:
    """After the budget test (above, same Workspace): alice stops the session through the hub; the meter's
    final meter.session (the session's bytes) and the server's server.stopped reach the audit trail; and the
    session started again within the window serves only what the window has left: the same slices, fetched
    again, stop at the budget less what the stopped session sent. Each is checked before any is asserted,
    so that a failure names every one that failed. On the old code: JupyterHub revoked the server's token
    when the spawner's stop returned, before the pod's containers had stopped, so the hub refused their
    last reports; and the new pod's meter started with a whole budget."""
    name, url = own
    budget, window = meter_budget(kubectl, name)
    part = budget // 8
    stopped_at = time.time()
    stop_until_gone(kubectl, alice, name)
    deadline = time.monotonic() + 90
    while not (ended := _session_ended(audit_page, name, stopped_at)) and time.monotonic() < deadline:
        time.sleep(3)
    stopped = trail(audit_page, "server.stopped", name, stopped_at)

    # Started again within the window.
    server = url.rstrip("/").rsplit("/", 1)[1]
    for attempt in range(6):
        spawn = alice.session.get(f"{alice.base}/hub/spawn/{alice.user}/{server}", timeout=300)
        if spawn.status_code == 200:
            break
        assert attempt < 5, (spawn.status_code, spawn.text[-500:])
        time.sleep(10)

    def lab_answer() -> requests.Response | None:
        lab = alice.session.get(f"{url}/lab", timeout=30)
        through_meter = lab.status_code == 429 or (lab.status_code == 200 and lab.url.endswith("/lab"))
        return lab if through_meter and "/user/" in lab.url else None

    page = wait_for(lab_answer, timeout=300, interval=2, what="the restarted session answering")
    # The budget test's slices (each budget/8 of text, in the home), fetched again until the meter refuses.
    received_after = 0
    if page.status_code == 200:
        lab = Lab(alice.session, url)
        for index in range(16):
            response = fetch(lab, f"api/contents/leak-{index}.txt?content=1")
            if response.status_code != 200:
                break
            received_after += len(response.json()["content"])
    sent_before = (
        int(ended[0]["reason"].removeprefix("session ended: ").split(" bytes to the browser", 1)[0])
        if ended
        else 0
    )
    failures = []
    if not ended:
        failures.append("no meter.session 'session ended: ...' in the audit trail 90 s after the stop")
    if not stopped:
        failures.append("no server.stopped in the audit trail")
    if received_after > budget - sent_before or received_after > 2 * part:
        failures.append(
            f"the restarted session has a fresh budget: {received_after} bytes of slices served after "
            f"{sent_before} sent before the stop, budget {budget}"
        )
    assert not failures, failures

    last = ended[0]
    assert last["actor"] == ALICE and last["resources"].get("workspace") == name, last
    # The budget test had it send its whole budget (less at most two slices) before the refusals.
    assert budget - 2 * part <= sent_before <= budget, (sent_before, budget, last["reason"])
    assert f"budget {budget} bytes per {window} s" in last["reason"], last["reason"]
