"""The airlock from JupyterLab, in real Chromium against the deployed install: alice signs in through the stack's
OpenID Connect provider, opens her sample Workspace (its notebook pod on the real node), right-clicks a file of
her home, chooses "Request export…", gives a justification, and sees the request's name and state; the API
server then holds an ExportRequest for her, in her Workspace, for that file, with that justification, and its
copy Job quarantines exactly the bytes of her home. Attacks first: the same route from her own browser session
for a path out of the home and for the ~/data link is refused, and a kernel (no credential of the browser's)
is refused by the route outright; none of them creates an ExportRequest."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from selenium.webdriver import Chrome
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from cleanroom.hub.names import server_name
from cleanroom.notebook import guard
from tests.deployed.conftest import (
    ALICE,
    NODE,
    SAMPLE_NS,
    SAMPLE_WS,
    exec_python,
    notebook_pod,
    sign_in_in_browser,
    wait_for,
)
from tests.e2e.conftest import browser, shots
from tests.integration.conftest import Kubectl

__all__ = ["browser", "shots"]  # fixtures

WRITE_RESULT = r"""
import hashlib, json, os
folder = os.path.expanduser("~/{run}")
os.makedirs(folder, exist_ok=True)
path = os.path.join(folder, "dice.csv")
with open(path, "w") as f:
    f.write("fold,dice,run\n1,0.871,{run}\n2,0.858,{run}\n")
print(json.dumps("sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()))
"""

# From the kernel: the route on the server's own port, with no credential (a kernel holds none). What answers:
# its status and the start of its body (the guard's refusal of a route would say so; this route is allowed).
KERNEL_POST = r"""
import json, urllib.error, urllib.request
url = "http://127.0.0.1:{port}{prefix}api/cleanroom/exports"
body = json.dumps({{"files": ["{path}"], "justification": "{why}"}}).encode()
try:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=10) as answer:
        code, text = answer.status, answer.read()
except urllib.error.HTTPError as error:
    code, text = error.code, error.read()
print(json.dumps([code, text[:300].decode(errors="replace")]))
"""

# In the page, with the browser's own session (its cookies and XSRF token), as JupyterLab's requests go.
BROWSER_POST = """
const done = arguments[arguments.length - 1];
const xsrf = document.cookie.split('; ').filter(c => c.startsWith('_xsrf=')).map(c => c.slice(6));
fetch(arguments[0], {method: 'POST', credentials: 'same-origin',
  headers: {'X-XSRFToken': decodeURIComponent(xsrf[xsrf.length - 1] || '')},
  body: JSON.stringify({files: arguments[1], justification: arguments[2]})})
  .then(r => r.text().then(t => done([r.status, t]))).catch(e => done([0, String(e)]));
"""


def wait(session: Chrome, seconds: float = 60) -> WebDriverWait[Chrome]:
    return WebDriverWait(session, seconds, poll_frequency=0.3)


def requests_of(kubectl: Kubectl, justification: str) -> list[dict[str, Any]]:
    items = kubectl.get("exportrequests", "-n", SAMPLE_NS)["items"]
    return [i for i in items if i["spec"].get("justification") == justification]


def sign_in_to_lab(browser: Chrome, shots: Path, public_proxy: str, folder: str) -> str:
    """alice at the hub through the provider, then her Workspace's JupyterLab with the file browser at
    ``folder``; the server's URL."""
    sign_in_in_browser(browser, shots, public_proxy)
    server = f"{public_proxy}/user/{ALICE}/{server_name(SAMPLE_NS, SAMPLE_WS)}"
    browser.get(f"{server}/lab/tree/{folder}?reset")
    wait(browser, 180).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LabShell")))
    return server


def test_alice_requests_an_export_from_jupyterlab_and_the_hub_creates_it_in_her_name(
    browser: Chrome,
    shots: Path,
    public_proxy: str,
    kubectl: Kubectl,
    sample: dict[str, Any],
) -> None:
    run = f"lab-export-{uuid.uuid4().hex[:6]}"
    justification = f"Dice per fold for table 2 of the paper, run {run}; no per-patient values"
    path = f"{run}/dice.csv"
    pod = notebook_pod(kubectl, SAMPLE_NS, SAMPLE_WS)
    assert pod["spec"]["nodeName"] == NODE
    pod_name = pod["metadata"]["name"]
    digest = exec_python(kubectl, SAMPLE_NS, pod_name, WRITE_RESULT.format(run=run))

    # --- attacks, each refused, none creating a request ----------------------------------------------------
    [notebook] = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    port = next(a.split("=", 1)[1] for a in notebook["args"] if a.startswith("--port="))
    prefix = f"/user/{ALICE}/{server_name(SAMPLE_NS, SAMPLE_WS)}/"
    code, text = exec_python(
        kubectl,
        SAMPLE_NS,
        pod_name,
        KERNEL_POST.format(port=port, prefix=prefix, path=path, why=justification),
    )
    # Refused by the server's authentication, not by the guard (the route is on its allow-list).
    assert code == 403 and guard.ROUTE_NOT_ALLOWED not in text, (code, text)
    server = sign_in_to_lab(browser, shots, public_proxy, run)
    browser.save_screenshot(str(shots / "1-jupyterlab.png"))
    route = f"{server}/api/cleanroom/exports"
    data_file = next(
        f"data/{line}"
        for line in exec_python(
            kubectl,
            SAMPLE_NS,
            pod_name,
            "import json, os; print(json.dumps(sorted(os.path.relpath(os.path.join(d, n), '/data') "
            "for d, _, ns in os.walk('/data') for n in ns if n.endswith('.dcm'))))",
        )
    )
    for files, why in (
        ([f"../{run}/dice.csv"], "give a path inside your home folder"),
        ([data_file], "is a link"),
    ):
        status, body = browser.execute_async_script(BROWSER_POST, route, files, justification)
        assert status == 400 and why in body, (files, status, body)
    assert requests_of(kubectl, justification) == []

    # --- the command: right-click the file, "Request export…", a justification -------------------------------
    item = wait(browser, 120).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-DirListing-item[title^='Name: dice.csv']"))
    )
    item.click()
    ActionChains(browser).context_click(item).perform()
    wait(browser).until(
        ec.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class, 'lm-Menu-item')][.//*[text()='Request export…']]")
        )
    ).click()
    why = wait(browser).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Dialog textarea[name='justification']"))
    )
    files = browser.find_element(By.CSS_SELECTOR, ".jp-Dialog textarea[name='files']")
    assert files.get_attribute("value") == path
    why.send_keys(justification)
    browser.save_screenshot(str(shots / "2-request.png"))
    browser.find_element(
        By.XPATH, "//div[contains(@class, 'jp-Dialog')]//button[.//*[text()='Request export']]"
    ).click()
    name = (
        wait(browser, 60)
        .until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Dialog .cr-ExportName")))
        .text
    )
    row = wait(browser, 30).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, f".jp-Dialog tr[data-name='{name}']"))
    )
    assert path in row.text, row.text
    browser.save_screenshot(str(shots / "3-requested.png"))

    # --- the API server's record: alice's, her Workspace's, that file, that justification ----------------------
    [created] = requests_of(kubectl, justification)
    assert created["metadata"]["name"] == name
    assert created["metadata"]["annotations"]["cleanroom.dev/requested-by"] == ALICE
    assert created["spec"]["workspace"] == SAMPLE_WS
    assert created["spec"]["files"] == [path]
    # The copy Job quarantines exactly the bytes of her home that she pointed at.
    checked = wait_for(
        lambda: (
            body
            if ((body := kubectl.get("exportrequest", name, "-n", SAMPLE_NS)).get("status") or {}).get(
                "phase"
            )
            in ("AwaitingApproval", "Rejected", "Failed")
            else None
        ),
        timeout=300,
        interval=2,
        what=f"{name} copied and checked",
    )
    status = checked["status"]
    assert status["phase"] == "AwaitingApproval", json.dumps(status)[:3000]
    assert [(f["path"], f["digest"]) for f in status["quarantine"]["files"]] == [(path, digest)]
    kubectl.run("delete", "exportrequest", name, "-n", SAMPLE_NS, "--wait=false", check=False)
