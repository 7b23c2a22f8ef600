"""Sign-in through a real OpenID Connect provider (npm's oidc-provider with the stack's sample users), the code
flow done with an HTTP client as a browser would: the hub (JupyterHub with cleanroom's OIDCAuthenticator) and
the officers' audit page. Attacks first: a forged state, a replayed code, an ID token for another client, a
user outside the group, one factor where two are required, an address the provider never verified."""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from cleanroom.audit import read_records
from tests.integration.audit_service_process import AuditService
from tests.integration.conftest import AUDIT_DIR, Kubectl
from tests.integration.hub_process import Hub, run_hub
from tests.integration.oidc_provider_process import MFA, Provider, provider, sign_in_at_provider

__all__ = ["provider"]  # fixture

ALICE = "alice@hospital.example"


@pytest.fixture(scope="module")
def oidc_hub(kubeconfig: str, provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    # The sample project's group, and multi-factor sign-in as REFEDS MFA says it (the sample provider reports
    # it when the one-time code is given).
    yield from run_hub(
        kubeconfig, tmp_path_factory, provider.hub_env(allowed_groups="sample-ai", mfa_acr=MFA)
    )


def error(response: requests.Response) -> str:
    found = re.search(r'id="login-error">([^<]*)<', response.text)
    return found.group(1).replace("&#x27;", "'") if found else ""


def hub_user(hub: Hub, session: requests.Session) -> dict[str, Any]:
    response = session.get(f"{hub.url}/hub/api/user")
    assert response.status_code == 200, response.text[:500]
    user: dict[str, Any] = response.json()
    return user


def test_a_modeller_signs_in_with_the_code_flow_pkce_and_a_second_factor(oidc_hub: Hub) -> None:
    session = requests.Session()
    # The hub's redirect to the provider carries an S256 challenge and a nonce, never the verifier.
    start = session.get(f"{oidc_hub.url}/hub/oauth_login", allow_redirects=False)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(start.headers["Location"]).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["nonce"] and query["acr_values"] == MFA and "code_verifier" not in query

    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "alice", otp="123456")
    landed = session.get(callback, allow_redirects=False)
    assert landed.status_code == 302 and landed.headers["Location"].endswith("/hub/workspaces"), landed.text
    user = hub_user(oidc_hub, session)
    assert user["name"] == ALICE and user["groups"] == ["sample-ai"]


def test_a_user_in_no_allowed_group_is_refused_with_the_reason(oidc_hub: Hub) -> None:
    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "eve", otp="123456")
    refused = session.get(callback, allow_redirects=False)
    assert refused.status_code == 403
    assert "eve@hospital.example is not in a group allowed here (sample-ai)" in error(refused)
    assert session.get(f"{oidc_hub.url}/hub/api/user").status_code in (401, 403)
    denied = [
        r["event"]
        for r in read_records(AUDIT_DIR)
        if r["event"]["action"] == "session.login" and "eve@hospital.example" in r["event"].get("reason", "")
    ]
    assert denied and denied[-1]["outcome"] == "denied"


def test_one_factor_is_refused_where_multi_factor_sign_in_is_required(oidc_hub: Hub) -> None:
    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "alice")  # no one-time code
    refused = session.get(callback, allow_redirects=False)
    assert refused.status_code == 403
    assert "multi-factor sign-in is required" in error(refused)
    assert "https://refeds.org/profile/sfa" in error(refused)
    # "Sign in again" asks the provider for the credentials anew, not for its one-factor session.
    again = re.search(r'id="oidc-sign-in"[^>]*href="([^"]+)"', refused.text)
    assert again and "fresh=1" in again.group(1)
    retry = session.get(
        urllib.parse.urljoin(oidc_hub.url, again.group(1).replace("&amp;", "&")), allow_redirects=False
    )
    assert "prompt=login" in retry.headers["Location"]


def test_an_address_the_provider_never_verified_does_not_sign_in_as_its_owner(oidc_hub: Hub) -> None:
    # mallory typed alice's address into her profile; the provider says email_verified: false.
    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "mallory", otp="123456")
    refused = session.get(callback, allow_redirects=False)
    assert refused.status_code == 403 and "email is not verified" in error(refused)


def test_a_forged_state_is_refused(oidc_hub: Hub) -> None:
    """Login CSRF: the attacker signs in, stops before his callback, and has the victim's browser open it; the
    victim would then work, unknowingly, in the attacker's session."""
    attacker = requests.Session()
    attackers_callback = sign_in_at_provider(
        attacker, f"{oidc_hub.url}/hub/oauth_login", "alice", otp="123456"
    )
    victim = requests.Session()
    victim.get(f"{oidc_hub.url}/hub/oauth_login", allow_redirects=False)  # a sign-in of her own in progress
    refused = victim.get(attackers_callback, allow_redirects=False)
    assert refused.status_code == 400 and "state mismatch" in error(refused)
    assert victim.get(f"{oidc_hub.url}/hub/api/user").status_code in (401, 403)
    # Without a sign-in of her own, there is no state to match at all.
    assert requests.get(attackers_callback, allow_redirects=False).status_code == 400


def test_a_replayed_code_is_refused(oidc_hub: Hub) -> None:
    """The callback URL (with its code) leaks, from a log or a Referer, together with the state cookie: the
    provider redeems a code once, and the hub refuses what the provider refuses."""
    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "alice", otp="123456")
    state_cookie = next(c for c in session.cookies if c.name == "oauthenticator-state")
    assert session.get(callback, allow_redirects=False).status_code == 302
    thief = requests.Session()
    thief.cookies.set_cookie(state_cookie)
    replayed = thief.get(callback, allow_redirects=False)
    assert replayed.status_code == 401, replayed.text[:500]
    assert "refused the sign-in's code" in error(replayed)
    assert thief.get(f"{oidc_hub.url}/hub/api/user").status_code in (401, 403)


def test_api_clients_keep_the_bearer_path(oidc_hub: Hub) -> None:
    def token(user: str, groups: tuple[str, ...], **claims: Any) -> str:
        # The platform's token issuer (hub.auth) names users by sub, as before; the provider's rules on groups
        # and the second factor hold for its tokens too.
        return oidc_hub.token(user, groups, extra=claims)

    session = requests.Session()
    signed = session.get(
        f"{oidc_hub.url}/hub/login",
        headers={"Authorization": f"Bearer {token(ALICE, ('sample-ai',), acr=MFA)}"},
        allow_redirects=False,
    )
    assert signed.status_code == 302, signed.text[:300]
    assert hub_user(oidc_hub, session)["name"] == ALICE
    # The same rules hold: a token without the second factor, or of a user outside the group, is refused.
    for refused in (token(ALICE, ("sample-ai",)), token("eve@hospital.example", (), acr=MFA)):
        answer = requests.get(f"{oidc_hub.url}/hub/login", headers={"Authorization": f"Bearer {refused}"})
        assert answer.status_code == 403, answer.text[:300]


def test_logout_ends_the_session_at_the_provider_too(oidc_hub: Hub, provider: Provider) -> None:
    session = requests.Session()
    callback = sign_in_at_provider(session, f"{oidc_hub.url}/hub/oauth_login", "alice", otp="123456")
    session.get(callback, allow_redirects=False)
    logout = session.get(f"{oidc_hub.url}/hub/logout", allow_redirects=False)
    end_session = logout.headers["Location"]
    assert (
        end_session.startswith(f"{provider.issuer}/session/end?") and "client_id=cleanroom-hub" in end_session
    )
    confirm = session.get(end_session)
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', confirm.text, re.S)
    assert form, confirm.text[:1000]
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
    back = session.post(
        urllib.parse.urljoin(confirm.url, form.group(1)),
        data={**fields, "logout": "yes"},
        allow_redirects=False,
    )
    assert back.headers["Location"].startswith(f"{oidc_hub.url}/hub/login")
    assert session.get(f"{oidc_hub.url}/hub/api/user").status_code in (401, 403)
    # The provider asks for the password again: its session ended as well.
    again = session.get(f"{oidc_hub.url}/hub/oauth_login", allow_redirects=False)
    page = session.get(again.headers["Location"])
    assert 'id="password"' in page.text


def test_groups_that_only_the_userinfo_endpoint_lists_are_read_there(
    kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A provider that keeps everything but sub, acr and amr out of the ID token (LS Login does so): without
    userinfo the hub sees no group and refuses; with it, alice is in sample-ai."""
    lean = Provider(tmp_path_factory.mktemp("oidc-lean"), claims_in_userinfo_only=True)
    try:
        for userinfo, expected in (("", 403), ("true", 302)):
            env = lean.hub_env(allowed_groups="sample-ai", username_claim="sub", userinfo=userinfo)
            hubs = run_hub(kubeconfig, tmp_path_factory, env)
            hub = next(hubs)
            try:
                session = requests.Session()
                callback = sign_in_at_provider(session, f"{hub.url}/hub/oauth_login", "alice", otp="123456")
                answer = session.get(callback, allow_redirects=False)
                assert answer.status_code == expected, (userinfo, error(answer))
                if expected == 302:
                    user = hub_user(hub, session)
                    assert user["name"] == "alice" and user["groups"] == ["sample-ai"]
            finally:
                next(hubs, None)
    finally:
        lean.stop()


# --- the officers' audit page ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oidc_audit(
    kubectl: Kubectl, kubeconfig: str, provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditService]:
    service = AuditService(kubectl, kubeconfig, tmp_path_factory.mktemp("audit-oidc"), provider.audit_env())
    yield service
    service.stop()


def audit_session(service: AuditService) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the service's own CA
    session.verify = service.ca
    return session


def test_an_officer_signs_in_to_the_audit_page_through_the_provider(oidc_audit: AuditService) -> None:
    session = audit_session(oidc_audit)
    form = session.get(f"{oidc_audit.url}/login")
    assert "id='oidc-sign-in'" in form.text and 'id="token"' not in form.text
    callback = sign_in_at_provider(session, f"{oidc_audit.url}/oidc/login", "sam", otp="123456")
    landed = session.get(callback)
    assert landed.status_code == 200 and "Signed in as sam@hospital.example" in landed.text
    cookie = next(c for c in session.cookies if c.name == "cleanroom-audit-session")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    page = session.get(f"{oidc_audit.url}/", allow_redirects=False)
    assert page.status_code == 200 and 'id="user">sam@hospital.example<' in page.text
    # The callback is single-use: replayed with the same cookies, it finds no sign-in in progress.
    assert session.get(callback).status_code == 400
    logins = [
        r["event"] for r in read_records(oidc_audit.directory) if r["event"]["action"] == "officer.login"
    ]
    assert ("sam@hospital.example", "success") in [(e["actor"]["name"], e["outcome"]) for e in logins]


def test_a_modeller_is_refused_the_audit_page(oidc_audit: AuditService) -> None:
    session = audit_session(oidc_audit)
    callback = sign_in_at_provider(session, f"{oidc_audit.url}/oidc/login", "alice", otp="123456")
    refused = session.get(callback)
    assert refused.status_code == 403 and "does not have the security-officer role" in refused.text
    assert not any(c.name == "cleanroom-audit-session" for c in session.cookies)
    logins = [
        r["event"] for r in read_records(oidc_audit.directory) if r["event"]["action"] == "officer.login"
    ]
    assert ("alice@hospital.example", "denied") in [(e["actor"]["name"], e["outcome"]) for e in logins]


def test_an_id_token_for_the_hub_does_not_open_the_audit_page(
    oidc_audit: AuditService, oidc_hub: Hub, provider: Provider
) -> None:
    """An officer's ID token issued to the hub (audience cleanroom-hub), in the audit page's cookie: the same
    provider and signature, another client."""
    token = provider.id_token("cleanroom-hub", f"{oidc_hub.url}/hub/oauth_callback", "sam", otp="123456")
    session = audit_session(oidc_audit)
    session.cookies.set("cleanroom-audit-session", token, domain="127.0.0.1", path="/")
    page = session.get(f"{oidc_audit.url}/", allow_redirects=False)
    # Refused, the page sends the browser to sign in again (and back to where it was).
    assert page.status_code == 302 and page.headers["Location"] in (
        "/oidc/login?next=/",
        "/oidc/login?next=%2F",
    )
    # The control: the page's own client's token, for the same officer, opens it.
    own = provider.id_token("cleanroom-audit", f"{oidc_audit.url}/oidc/callback", "sam", otp="123456")
    session.cookies.set("cleanroom-audit-session", own, domain="127.0.0.1", path="/")
    assert session.get(f"{oidc_audit.url}/", allow_redirects=False).status_code == 200


def test_an_intercepted_code_is_useless_without_the_attempts_verifier(oidc_audit: AuditService) -> None:
    """PKCE's attack: the attacker intercepts sam's code (a malicious app on the redirect, a log) and redeems it
    with an attempt of his own: same client, a valid state of his, but not the verifier the code was bound to."""
    sam = audit_session(oidc_audit)
    intercepted = sign_in_at_provider(sam, f"{oidc_audit.url}/oidc/login", "sam", otp="123456")
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(intercepted).query))["code"]
    attacker = audit_session(oidc_audit)
    own = attacker.get(f"{oidc_audit.url}/oidc/login", allow_redirects=False)
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(own.headers["Location"]).query))["state"]
    forged = f"{oidc_audit.url}/oidc/callback?" + urllib.parse.urlencode({"code": code, "state": state})
    refused = attacker.get(forged)
    assert refused.status_code == 401 and "refused the sign-in's code" in html.unescape(refused.text)
    assert not any(c.name == "cleanroom-audit-session" for c in attacker.cookies)
