"""Signing in as people do: in Chromium, through the OpenID Connect provider's own login page (the stack's
oidc-provider with its sample users), into the hub and into the officers' audit page; and refused, with the
reason on the page, for a user outside the project's group."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.audit_service_process import AuditService
from tests.integration.hub_process import Hub
from tests.integration.oidc_provider_process import USERS, Provider, provider
from tests.integration.test_oidc_signin import oidc_audit, oidc_hub

__all__ = ["oidc_audit", "oidc_hub", "provider"]  # fixtures


def wait(browser: Chrome, seconds: float = 30) -> WebDriverWait[Chrome]:
    return WebDriverWait(browser, seconds, poll_frequency=0.3)


def provider_login(browser: Chrome, shots: Path, user: str, otp: str = "") -> None:
    """The provider's own page, as the user sees it: name, password, and the second factor when given."""
    wait(browser).until(ec.presence_of_element_located((By.ID, "username"))).send_keys(user)
    browser.find_element(By.ID, "password").send_keys(USERS[user]["password"])
    if otp:
        browser.find_element(By.ID, "otp").send_keys(otp)
    browser.save_screenshot(str(shots / f"provider-login-{user}.png"))
    browser.find_element(By.ID, "sign-in").click()


def test_a_modeller_signs_in_through_the_providers_login_page(
    browser: Chrome, shots: Path, oidc_hub: Hub, provider: Provider
) -> None:
    browser.get(f"{oidc_hub.url}/hub/login")
    browser.save_screenshot(str(shots / "1-hub-login.png"))
    browser.find_element(By.ID, "oidc-sign-in").click()
    wait(browser).until(lambda b: b.current_url.startswith(provider.issuer))
    provider_login(browser, shots, "alice", otp="123456")
    wait(browser).until(ec.presence_of_element_located((By.ID, "workspaces")))
    browser.save_screenshot(str(shots / "2-workspaces.png"))
    assert browser.find_element(By.ID, "user").text == "alice@hospital.example"


def test_a_user_outside_the_project_group_is_refused_with_the_reason(
    browser: Chrome, shots: Path, oidc_hub: Hub
) -> None:
    browser.get(f"{oidc_hub.url}/hub/login")
    browser.find_element(By.ID, "oidc-sign-in").click()
    provider_login(browser, shots, "eve", otp="123456")
    refusal = wait(browser).until(ec.presence_of_element_located((By.ID, "login-error")))
    browser.save_screenshot(str(shots / "refused.png"))
    assert "eve@hospital.example is not in a group allowed here (sample-ai)" in refusal.text
    browser.get(f"{oidc_hub.url}/hub/workspaces")
    assert "/hub/workspaces" not in browser.current_url or not browser.find_elements(By.ID, "workspaces")


def test_an_officer_signs_in_to_the_audit_page_and_out_again(
    browser: Chrome, shots: Path, oidc_audit: AuditService, provider: Provider
) -> None:
    browser.get(f"{oidc_audit.url}/login")
    browser.find_element(By.ID, "oidc-sign-in").click()
    provider_login(browser, shots, "sam", otp="123456")
    # Back from the provider (a cross-site navigation), the page moves on by itself so that the SameSite=Strict
    # session cookie is sent: the officer lands on the trail, not on the sign-in page again.
    user = wait(browser).until(ec.presence_of_element_located((By.ID, "user")))
    browser.save_screenshot(str(shots / "audit-trail.png"))
    assert user.text == "sam@hospital.example"
    browser.find_element(By.ID, "logout").click()
    wait(browser).until(lambda b: b.current_url.startswith(provider.issuer))
    browser.save_screenshot(str(shots / "provider-logout.png"))
    wait(browser).until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[name='logout']"))).click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "oidc-sign-in")))
    # The trail again: signed out here and at the provider, so the provider asks for the password.
    browser.get(f"{oidc_audit.url}/?action=session.login")
    wait(browser).until(ec.presence_of_element_located((By.ID, "password")))
    assert browser.current_url.startswith(provider.issuer)
    provider_login(browser, shots, "sam", otp="123456")
    wait(browser).until(ec.presence_of_element_located((By.ID, "user")))
    assert browser.current_url == f"{oidc_audit.url}/?action=session.login"  # back where the officer was
