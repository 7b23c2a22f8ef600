"""Approving an export on the officers' page as people do, in Chromium: the data steward and then the security
officer sign in through the provider's own login page, read the request and its checks, write why and click
Approve; the page sends each to the provider to sign for that decision (silently, the provider's session
answers) and back; the export is released. The stack is tests/integration/test_export_page.py's: the audit
service, the provider, the chart's policy and the operator under test, all real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.e2e.test_oidc_browser import provider_login, wait
from tests.integration.oidc_provider_process import provider
from tests.integration.test_export_page import (
    ALICE,
    SAM,
    STELLA,
    Scene,
    ask,
    dataset,
    page_operator,
    release,
    scene,
)

__all__ = ["dataset", "page_operator", "provider", "release", "scene"]  # fixtures


def approve_as(
    browser: Chrome, shots: Path, scene: Scene, user: str, export: dict[str, Any], why: str
) -> None:
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(f"{scene.service.url}/exports")
    wait(browser).until(lambda b: b.current_url.startswith(scene.provider.issuer))
    provider_login(browser, shots, user, otp="123456")
    ident = f"{export['metadata']['namespace']}/{export['metadata']['name']}"
    article = wait(browser).until(ec.presence_of_element_located((By.ID, ident)))
    browser.save_screenshot(str(shots / f"exports-{user}.png"))
    assert "NoDicom: passed" in article.text and "results/metrics.csv" in article.text
    article.find_element(By.NAME, "reason").send_keys(why)
    article.find_element(By.CSS_SELECTOR, "button[value='Approve']").click()
    recorded = wait(browser).until(ec.presence_of_element_located((By.ID, "recorded")))
    browser.save_screenshot(str(shots / f"recorded-{user}.png"))
    assert f"as {user}@hospital.example" in recorded.text


def test_a_steward_and_an_officer_approve_in_the_browser(
    browser: Chrome, shots: Path, scene: Scene, tmp_path: Path
) -> None:
    export = ask(scene, ALICE, tmp_path)
    approve_as(browser, shots, scene, "stella", export, "Per-fold Dice only, as the justification says")
    approve_as(browser, shots, scene, "sam", export, "Checks passed; aggregate metrics leave")
    name = export["metadata"]["name"]
    scene.kubectl.run("wait", "--for=condition=Released", f"exportrequest/{name}", "-n", scene.namespace,
                      "--timeout=60s")  # fmt: skip
    body = scene.kubectl.get("exportrequest", name, "-n", scene.namespace)
    approved = next(c for c in body["status"]["conditions"] if c["type"] == "Approved")
    assert f"{STELLA} (DataSteward) and {SAM} (SecurityOfficer)" in approved["message"]
