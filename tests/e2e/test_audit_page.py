"""What a security officer does in the browser: sign in, find a dataset's access history and a user's
timeline, verify the chain, and what a modeller sees (403)."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.audit_service_process import AuditService, audit_service, event
from tests.integration.test_audit_service import post

__all__ = ["audit_service"]  # fixture


def sign_in(browser: Chrome, service: AuditService, user: str, groups: tuple[str, ...]) -> None:
    browser.get(f"{service.url}/login")
    browser.find_element(By.ID, "token").send_keys(service.user_token(user, groups))
    browser.find_element(By.ID, "sign-in").click()


def test_a_security_officer_reviews_a_dataset_and_a_user_and_verifies_the_chain(
    browser: Chrome, shots: Path, audit_service: AuditService
) -> None:
    token = audit_service.writer_token()
    opened = {
        **event("data.file.opened", dataset="prostate-mri", workspace="seg", namespace="team-a"),
        "actor": {"kind": "user", "name": "alice@hospital.example"},
    }
    refused = {
        **event("download.refused", dataset="prostate-mri", workspace="seg", namespace="team-a"),
        "actor": {"kind": "user", "name": "alice@hospital.example"},
        "outcome": "denied",
    }
    other = event("snapshot.published", dataset="lung-ct")
    assert post(audit_service, token, {"events": [opened, refused, other]}).status_code == 201

    sign_in(browser, audit_service, "sam@hospital.example", ("security-officer",))
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "events")))
    browser.save_screenshot(str(shots / "1-trail.png"))
    assert browser.find_element(By.ID, "user").text == "sam@hospital.example"

    # A dataset's access history: follow the link from a row.
    browser.find_element(By.CSS_SELECTOR, "tr.event a.history[href*='prostate-mri']").click()
    WebDriverWait(browser, 10).until(ec.url_contains("dataset=prostate-mri"))
    actions = [
        # seq, time (writer), received, actor, action, ...
        row.find_elements(By.TAG_NAME, "td")[4].text
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.event")
    ]
    browser.save_screenshot(str(shots / "2-dataset-history.png"))
    assert sorted(actions) == ["data.file.opened", "download.refused"]

    # A user's timeline.
    browser.find_element(By.CSS_SELECTOR, "a.timeline").click()
    WebDriverWait(browser, 10).until(ec.url_contains("actor="))
    assert browser.find_element(By.ID, "f-actor").get_attribute("value") == "alice@hospital.example"
    browser.save_screenshot(str(shots / "3-user-timeline.png"))

    # Verify.
    browser.find_element(By.ID, "verify").click()
    result = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "verify-result")))
    browser.save_screenshot(str(shots / "4-verified.png"))
    assert result.text.startswith("OK:")


def test_a_modeller_is_refused_the_audit_page(
    browser: Chrome, shots: Path, audit_service: AuditService
) -> None:
    sign_in(browser, audit_service, "alice@hospital.example", ("prostate-ai",))
    error = WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "error")))
    browser.save_screenshot(str(shots / "1-refused.png"))
    assert "does not have the security-officer role" in error.text
    browser.get(f"{audit_service.url}/")
    assert "/login" in browser.current_url
