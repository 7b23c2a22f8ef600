"""What a modeller does in the browser: sign in with a token, see only their workspaces, start one, work
in JupyterLab without any download command, and be refused a dataset file by URL, with the refusal in
the audit trail. The single-user server runs as a local process over a real materialized snapshot
(kwok's pods do not execute); everything else is the deployed code path."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from selenium.webdriver import ActionChains, Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from cleanroom.audit import read_records
from cleanroom.hub.names import server_name
from tests.integration.conftest import AUDIT_DIR, Kubectl
from tests.integration.hub_process import Hub, hub
from tests.integration.test_workspaces import dataset, workspace

__all__ = ["dataset", "hub"]  # fixtures

ALICE = "alice@hospital.example"


def wait(browser: Chrome, seconds: float = 30) -> WebDriverWait[Chrome]:
    return WebDriverWait(browser, seconds, poll_frequency=0.3)


def menu_text(browser: Chrome) -> str:
    menus = browser.find_elements(By.CSS_SELECTOR, ".lm-Menu")
    return "\n".join(m.text for m in menus if m.is_displayed())


def dataset_file(browser: Chrome) -> WebElement:
    """A DICOM file in the file browser's listing of the dataset."""
    return wait(browser, 60).until(
        ec.visibility_of_element_located(
            (
                By.XPATH,
                "//li[contains(@class,'jp-DirListing-item')][.//span[contains(@class,'jp-DirListing-itemText')][contains(., '.dcm')]]",
            )
        )
    )


def test_a_modeller_signs_in_starts_a_workspace_and_cannot_download(
    browser: Chrome, shots: Path, hub: Hub, kubectl: Kubectl, namespace: str, dataset: str
) -> None:
    name = f"lab-{uuid.uuid4().hex[:5]}"
    kubectl.apply(workspace(name, dataset, running=False), "-n", namespace)
    kubectl.apply(
        workspace("not-mine", dataset, running=False, users=["bob@hospital.example"]), "-n", namespace
    )
    server = server_name(namespace, name)
    started = time.time()

    # 1. Sign in by pasting a token into the form.
    browser.get(f"{hub.url}/hub/login")
    browser.find_element(By.ID, "token").send_keys(hub.token(ALICE, ("prostate-ai",)))
    browser.save_screenshot(str(shots / "1-sign-in.png"))
    browser.find_element(By.ID, "sign-in").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "workspaces")))
    browser.save_screenshot(str(shots / "2-workspaces.png"))

    # 2. Only your own workspaces are listed.
    rows = {
        row.get_attribute("data-server") for row in browser.find_elements(By.CSS_SELECTOR, "tr.workspace")
    }
    assert server in rows
    assert server_name(namespace, "not-mine") not in rows
    assert browser.find_element(By.ID, "user").text == ALICE

    # 3. Start it: the hub sets spec.running, waits for the operator's Ready, and opens JupyterLab.
    browser.find_element(By.CSS_SELECTOR, f"tr[data-server='{server}'] a.start").click()
    browser.save_screenshot(str(shots / "3-starting.png"))
    wait(browser, 180).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LabShell, #jp-main-dock-panel"))
    )
    assert kubectl.get("workspace", name, "-n", namespace)["spec"]["running"] is True
    wait(browser, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-DirListing-item")))
    browser.save_screenshot(str(shots / "4-jupyterlab.png"))

    # 4. The File menu has no Download (a positive control: it does have Save and New).
    wait(browser).until(
        ec.element_to_be_clickable((By.XPATH, "//li[@role='menuitem']//div[text()='File']"))
    ).click()
    wait(browser).until(lambda b: "New" in menu_text(b))
    file_menu = menu_text(browser)
    browser.save_screenshot(str(shots / "5-file-menu.png"))
    assert "Save" in file_menu
    assert "Download" not in file_menu
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()

    # 5. Nor does the file browser's context menu on a dataset file.
    base = f"{hub.url}/user/{ALICE}/{server}"
    [materialized] = (hub.workdir / "sessions" / namespace / name).glob("data-*")
    dicom = next(materialized.rglob("*.dcm")).relative_to(materialized)
    browser.get(f"{base}/lab/tree/data/{dicom.parent}")
    entry = dataset_file(browser)
    filename = entry.find_element(By.CSS_SELECTOR, ".jp-DirListing-itemText").text.strip()
    ActionChains(browser).context_click(entry).perform()
    wait(browser).until(lambda b: "Open" in menu_text(b))
    context_menu = menu_text(browser)
    browser.save_screenshot(str(shots / "6-context-menu.png"))
    assert "Rename" in context_menu or "Open" in context_menu
    assert "Download" not in context_menu
    assert "Copy Download Link" not in context_menu
    assert "Open in New Browser Tab" not in context_menu

    # 6. Asking for a dataset file by URL gets 403, in the browser's own session.
    assert filename == dicom.name
    refused_urls = {
        "files": f"{base}/files/data/{dicom}",
        "contents": f"{base}/api/contents/data/{dicom}?content=1",
    }
    expected = {"files": "raw file downloads are disabled", "contents": "dataset files cannot be opened"}
    for kind, url in refused_urls.items():
        browser.get(url)
        body = browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(shots / f"7-refused-{kind}.png"))
        assert expected[kind] in body, body[:500]
    # And by script from inside JupyterLab's own page, with its cookies: still 403.
    browser.get(f"{base}/lab")
    wait(browser, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LabShell")))
    for url in refused_urls.values():
        status = browser.execute_script("return fetch(arguments[0]).then(r => r.status)", url)
        assert status == 403, url

    # 7. The refusals are in the audit trail, attributed by the hub to alice and her workspace.
    def refused() -> list[dict[str, Any]]:
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))
        return [
            r["event"]
            for r in read_records(AUDIT_DIR)
            if r["event"]["action"] == "download.refused" and r["event"]["time"] >= cutoff
        ]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(refused()) < 2:
        time.sleep(0.5)
    events = refused()
    assert len(events) >= 2, events
    assert all(e["actor"] == {"kind": "user", "name": ALICE} for e in events)
    assert all(
        e["resources"].get("workspace") == name and e["resources"].get("namespace") == namespace
        for e in events
    )
    assert any(filename in e["resources"].get("path", "") for e in events)
    browser.get(f"{hub.url}/hub/workspaces")
    browser.save_screenshot(str(shots / "8-back-to-workspaces.png"))
