"""A modeller in real Chromium against the deployed install: sign in at the chart's proxy through the stack's
OpenID Connect provider (its own login page, as an institution's would be), open the sample Workspace whose
notebook pod runs on the real node, and run a cell in JupyterLab served from that pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from cleanroom.hub.names import server_name
from tests.deployed.conftest import ALICE, SAMPLE_NS, SAMPLE_WS, sign_in_in_browser
from tests.e2e.conftest import browser, shots
from tests.integration.conftest import Kubectl

__all__ = ["browser", "shots"]  # fixtures


def wait(session: Chrome, seconds: float = 30) -> WebDriverWait[Chrome]:
    return WebDriverWait(session, seconds, poll_frequency=0.3)


def test_a_modeller_opens_the_sample_workspace_on_the_real_node_and_runs_a_cell(
    browser: Chrome,
    shots: Path,
    public_proxy: str,
    kubectl: Kubectl,
    sample: dict[str, Any],
) -> None:
    server = server_name(SAMPLE_NS, SAMPLE_WS)
    sign_in_in_browser(browser, shots, public_proxy)
    browser.save_screenshot(str(shots / "1-workspaces.png"))
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-server='{server}']")
    assert "Running" in row.text, row.text

    # JupyterLab, served by the notebook pod on real-0 through the chart's proxy.
    # ?reset: JupyterLab restores the layout kept in the home (an earlier run's open notebook), not the launcher.
    browser.get(f"{public_proxy}/user/{ALICE}/{server}/lab?reset")
    wait(browser, 180).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-LabShell")))
    browser.save_screenshot(str(shots / "2-jupyterlab.png"))
    pod = kubectl.get("pod", f"ws-{SAMPLE_WS}", "-n", SAMPLE_NS)
    assert pod["spec"]["nodeName"] == "real-0"

    # A new notebook from the launcher, one cell, run with Shift+Enter.
    wait(browser, 180).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-LauncherCard[data-category='Notebook']"))
    ).click()
    editor = wait(browser, 180).until(
        ec.element_to_be_clickable(
            (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .cm-content")
        )
    )
    wait(browser, 180).until(
        lambda b: (
            "Idle" in b.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)").text
            or b.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
        )
    )
    editor.click()
    editor.send_keys("import os, socket; print(6 * 7, socket.gethostname(), os.getuid())")
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    output = wait(browser, 180).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output")
        )
    )
    wait(browser, 180).until(lambda _: "42" in output.text)
    browser.save_screenshot(str(shots / "3-cell-ran.png"))
    # The kernel runs in the pod (its hostname) as the notebook's non-root user.
    assert f"42 ws-{SAMPLE_WS} 1000" in output.text, output.text
