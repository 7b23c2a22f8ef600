"""OpenID Connect sign-in, the pure parts: PKCE, state and nonce, the ID token's checks, claims to a user, the
multi-factor rule, discovery and settings; and the hub's authenticator against forged ID tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import _serialize_state

from cleanroom.hub import metrics as hub_metrics
from cleanroom.hub.oidc_authenticator import OIDCAuthenticator
from cleanroom.oidc import (
    Attempt,
    KeySet,
    OidcSettings,
    ProviderMetadata,
    SignInRules,
    authorization_url,
    check_callback,
    logout_url,
    pkce_challenge,
    require_mfa,
    verify_id_token,
)
from cleanroom.tokens import TokenRejected, load_jwks

ISSUER, CLIENT = "https://login.hospital.example/realms/imaging", "cleanroom-hub"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = {"keys": [{**jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True), "kid": "k1"}]}
KEYS = load_jwks(JWKS)
MFA = "https://refeds.org/profile/mfa"


def id_token(key: Any = KEY, kid: str = "k1", alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "email": "alice@hospital.example",
        "email_verified": True,
        "groups": ["sample-ai"],
        "nonce": "n-0S6_WzA2Mj",
        "acr": MFA,
        "amr": ["pwd", "otp"],
        "iat": now,
        # Parametrized tokens are built when the suite is collected, which `make test` does half an hour
        # before the unit tests run: a lifetime that outlasts the suite.
        "exp": now + 86400,
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def verified(
    token: str, nonce: str = "n-0S6_WzA2Mj", userinfo_claims: dict[str, Any] | None = None, **rules: Any
) -> Any:
    return verify_id_token(token, KEYS, ISSUER, CLIENT, nonce, SignInRules(**rules), userinfo=userinfo_claims)


# --- PKCE, state, nonce -----------------------------------------------------------------------------------


def test_pkce_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636 Appendix B.
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_each_attempt_has_fresh_256_bit_values() -> None:
    attempts = [Attempt.new() for _ in range(50)]
    values = [v for a in attempts for v in (a.state, a.nonce, a.verifier)]
    assert len(set(values)) == len(values)
    assert all(len(v) == 43 for v in values)  # 32 random bytes, base64url: RFC 7636's 43..128


def test_the_authorization_request_sends_the_challenge_never_the_verifier() -> None:
    attempt = Attempt.new()
    url = authorization_url(
        "https://login.example/auth", CLIENT, "https://hub/cb", ["openid", "email"], attempt, [MFA]
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == attempt.challenge
    assert query["state"] == attempt.state and query["nonce"] == attempt.nonce
    assert query["acr_values"] == MFA and query["scope"] == "openid email"
    assert attempt.verifier not in url


@pytest.mark.parametrize(
    ("expected", "query", "reason"),
    [
        # Login CSRF: the attacker's own callback (his code, his state) opened in the victim's browser.
        ("mine", {"state": "attackers", "code": "c"}, "state does not match"),
        ("mine", {"code": "c"}, "state does not match"),
        ("", {"state": "mine", "code": "c"}, "no sign-in in progress"),
        # Mix-up: a code from another provider, which RFC 9207's iss names.
        ("mine", {"state": "mine", "code": "c", "iss": "https://evil.example"}, "not 'https://login"),
        ("mine", {"state": "mine"}, "sent no code"),
        ("mine", {"state": "mine", "error": "access_denied"}, "refused the sign-in: access_denied"),
    ],
)
def test_a_callback_that_is_not_this_browsers_is_refused(
    expected: str, query: dict[str, str], reason: str
) -> None:
    with pytest.raises(TokenRejected, match=reason):
        check_callback(expected, query, ISSUER)


def test_a_callback_of_this_browser_gives_its_code() -> None:
    assert check_callback("mine", {"state": "mine", "code": "c", "iss": ISSUER}, ISSUER) == "c"


def test_logout_goes_to_the_providers_end_session_with_our_client() -> None:
    url = logout_url("https://login.example/logout?x=1", CLIENT, "https://hub.example/hub/login")
    assert url.startswith("https://login.example/logout?x=1&")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert (
        query["client_id"] == CLIENT and query["post_logout_redirect_uri"] == "https://hub.example/hub/login"
    )


# --- the ID token -------------------------------------------------------------------------------------------


def test_a_good_id_token_names_the_user_and_groups() -> None:
    identity = verified(id_token(), username_claim="email")
    assert identity.username == "alice@hospital.example" and identity.groups == ("sample-ai",)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        # Another client's ID token (the audit page's, say) replayed at this one.
        (id_token(aud="cleanroom-audit"), "another audience"),
        (id_token(aud=["cleanroom-audit", CLIENT], azp="cleanroom-audit"), "several audiences"),
        # A token minted for an earlier sign-in, or injected into this one: its nonce is not this attempt's.
        (id_token(nonce="someone-elses"), "nonce does not match"),
        (id_token(nonce=None), "nonce does not match"),
        (id_token(iss="https://login.evil.example"), "another issuer"),
        (id_token(key=OTHER_KEY), "signature does not verify"),
        (id_token(exp=int(time.time()) - 3600), "expired"),
        (
            jwt.encode({"iss": ISSUER, "aud": CLIENT, "sub": "x", "nonce": "n-0S6_WzA2Mj"}, None, "none"),
            "'none'",
        ),
        (
            jwt.encode({"iss": ISSUER, "aud": CLIENT, "exp": 2**40}, "k1", "HS256", headers={"kid": "k1"}),
            "HS256",
        ),
    ],
)
def test_an_id_token_that_is_not_for_this_sign_in_is_refused(token: str, reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        verified(token)


def test_an_unverified_address_does_not_sign_in_as_its_owner() -> None:
    # The provider lets users type any address into their profile: mallory types alice's.
    with pytest.raises(TokenRejected, match="email is not verified"):
        verified(id_token(email_verified=False), username_claim="email")


def test_groups_and_roles_come_from_configurable_claims() -> None:
    token = id_token(groups=None, realm_access={"roles": ["security-officer"]}, roles=["reviewer"])
    identity = verified(token, groups_claim="realm_access.roles", roles_claim="roles")
    assert identity.groups == ("reviewer", "security-officer")
    # Entra ID names claims by URL: a dotted name is looked up whole first.
    url = "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups"
    assert verified(id_token(**{url: ["g1"]}), groups_claim=url).groups == ("g1",)


def test_a_user_outside_the_allowed_groups_is_refused_with_the_reason() -> None:
    with pytest.raises(TokenRejected, match=r"not in a group allowed here \(sample-ai\)") as refused:
        verified(id_token(groups=[]), allowed_groups=("sample-ai",))
    assert refused.value.status == 403
    assert verified(id_token(groups=["x", "sample-ai"]), allowed_groups=("sample-ai",)).username


@pytest.mark.parametrize(
    ("acr", "amr", "acr_values", "amr_values", "allowed"),
    [
        (None, None, (), (), True),  # nothing required
        (MFA, ["pwd", "otp"], (MFA,), (), True),
        ("https://refeds.org/profile/sfa", ["pwd"], (MFA,), (), False),
        (None, None, (MFA,), (), False),
        ("1", ["pwd", "mfa"], (), ("mfa",), True),  # Entra ID
        ("1", ["pwd"], (), ("mfa", "otp"), False),
        ("0", ["otp"], ("2",), ("otp",), True),  # Keycloak: either rule suffices
        ("1", "otp", (), ("otp",), False),  # amr must be a list (RFC 8176)
    ],
)
def test_multi_factor_sign_in_as_the_provider_reports_it(
    acr: Any, amr: Any, acr_values: tuple[str, ...], amr_values: tuple[str, ...], allowed: bool
) -> None:
    claims = {k: v for k, v in {"acr": acr, "amr": amr}.items() if v is not None}
    if allowed:
        require_mfa(claims, acr_values, amr_values)
    else:
        with pytest.raises(TokenRejected, match="multi-factor sign-in is required") as refused:
            require_mfa(claims, acr_values, amr_values)
        assert refused.value.status == 403


def test_a_one_factor_id_token_is_refused_where_mfa_is_required() -> None:
    token = id_token(acr="https://refeds.org/profile/sfa", amr=["pwd"])
    with pytest.raises(TokenRejected, match="multi-factor"):
        verified(token, mfa_acr=(MFA,))


# --- discovery, keys, settings -------------------------------------------------------------------------------

DOCUMENT = {
    "issuer": ISSUER,
    "authorization_endpoint": ISSUER + "/auth",
    "token_endpoint": ISSUER + "/token",
    "jwks_uri": ISSUER + "/certs",
    "end_session_endpoint": ISSUER + "/logout",
    "code_challenge_methods_supported": ["plain", "S256"],
}


def test_discovery_reads_the_endpoints() -> None:
    metadata = ProviderMetadata.from_document(ISSUER, DOCUMENT)
    assert (
        metadata.token_endpoint == ISSUER + "/token" and metadata.end_session_endpoint == ISSUER + "/logout"
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"issuer": "https://login.evil.example"}, "names issuer"),
        ({"issuer": ISSUER + "/"}, "trailing slash"),
        ({"token_endpoint": None}, "lacks token_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
    ],
)
def test_a_discovery_document_that_cannot_be_trusted_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ProviderMetadata.from_document(ISSUER, {**DOCUMENT, **change})


def test_keys_are_fetched_again_for_a_new_kid_but_not_more_than_once_a_minute() -> None:
    fetched: list[str] = []
    documents = [JWKS, {"keys": [*JWKS["keys"], {**JWKS["keys"][0], "kid": "k2"}]}]

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return documents[min(len(fetched) - 1, 1)]

    keys = KeySet("https://login.example/certs", min_refresh_seconds=0, fetch=fetch)
    rotated = id_token(kid="k2")
    identity = keys.verify(
        lambda k: verify_id_token(rotated, k, ISSUER, CLIENT, "n-0S6_WzA2Mj", SignInRules())
    )
    assert identity.username and len(fetched) == 2
    slow = KeySet("https://login.example/certs", min_refresh_seconds=60, fetch=lambda url: JWKS)
    with pytest.raises(TokenRejected, match="unknown signing key"):
        slow.verify(lambda k: verify_id_token(id_token(kid="k9"), k, ISSUER, CLIENT, "n", SignInRules()))


def test_settings_from_the_environment(tmp_path: Path) -> None:
    assert OidcSettings.from_env("X_", {}) is None
    (tmp_path / "secret").write_text("s3cret\n")
    settings = OidcSettings.from_env(
        "X_",
        {
            "X_ISSUER": ISSUER,
            "X_CLIENT_ID": CLIENT,
            "X_CLIENT_SECRET_FILE": str(tmp_path / "secret"),
            "X_ALLOWED_GROUPS": "sample-ai, radiology",
            "X_MFA_AMR": "mfa",
            "X_GROUPS_CLAIM": "realm_access.roles",
        },
    )
    assert settings is not None and settings.client_secret == "s3cret"
    assert settings.rules.allowed_groups == ("sample-ai", "radiology") and settings.rules.mfa_amr == ("mfa",)
    assert settings.scopes == ("openid", "email", "profile")
    with pytest.raises(ValueError, match="X_CLIENT_ID"):
        OidcSettings.from_env("X_", {"X_ISSUER": ISSUER})
    with pytest.raises(ValueError, match="X_SCOPES must include openid"):
        OidcSettings.from_env(
            "X_", {"X_ISSUER": ISSUER, "X_CLIENT_ID": "c", "X_CLIENT_SECRET": "s", "X_SCOPES": "email"}
        )


# --- the hub's authenticator: the ID token it gets from the token endpoint -------------------------------------


class Handler:
    """What the authenticator reads of the callback request: the code and the signed state cookie."""

    def __init__(self, nonce: str = "n-0S6_WzA2Mj") -> None:
        self.cookie = _serialize_state({"state_id": "s1", "nonce": nonce, "code_verifier": "v" * 43})

    def get_state_cookie(self) -> str:
        return self.cookie

    def get_argument(self, name: str, default: Any = None) -> Any:
        return {"code": "the-code"}.get(name, default)


def authenticator(token: str, **config: Any) -> tuple[OIDCAuthenticator, list[dict[str, Any]]]:
    hub = OIDCAuthenticator(
        issuer=ISSUER,
        client_id=CLIENT,
        client_secret="s",
        oauth_callback_url="https://hub/hub/oauth_callback",
        **config,
    )
    hub._metadata = ProviderMetadata.from_document(ISSUER, DOCUMENT)
    hub._keys = KeySet(DOCUMENT["jwks_uri"], fetch=lambda url: JWKS)
    requests: list[dict[str, Any]] = []

    async def token_endpoint(handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        requests.append(params)
        return {"access_token": "opaque", "token_type": "Bearer", "id_token": token}

    hub.get_token_info = token_endpoint  # type: ignore[method-assign]
    return hub, requests


def unsigned(claims: dict[str, Any]) -> str:
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.{part('forged')}"


def test_genericoauthenticator_alone_accepts_a_forged_id_token_and_ours_does_not() -> None:
    """The attack: whoever can answer for the token endpoint (a proxy in the path, a mis-set token_url) hands
    the hub an ID token with any claims. GenericOAuthenticator's userdata_from_id_token reads it unverified."""
    claims = jwt.decode(id_token(), options={"verify_signature": False})
    forged = unsigned({**claims, "email": "sam@hospital.example", "groups": ["security-officer"]})
    generic = GenericOAuthenticator(client_id=CLIENT, userdata_from_id_token=True)
    accepted = asyncio.run(generic.token_to_user({"id_token": forged}))
    assert accepted["groups"] == ["security-officer"]  # the library's default takes it
    hub, _ = authenticator(forged, username_claim="email")
    with pytest.raises(TokenRejected, match="signature does not verify"):
        asyncio.run(hub.authenticate(Handler()))


def test_the_hub_sends_the_pkce_verifier_and_checks_the_nonce_of_its_own_attempt() -> None:
    hub, requests = authenticator(id_token(), username_claim="email")
    model = asyncio.run(hub.authenticate(Handler()))
    assert model == {"name": "alice@hospital.example", "groups": ["sample-ai"]}
    assert requests[0]["code_verifier"] == "v" * 43 and requests[0]["code"] == "the-code"
    hub, _ = authenticator(id_token())
    with pytest.raises(TokenRejected, match="nonce does not match"):
        asyncio.run(hub.authenticate(Handler(nonce="another-attempts")))


@pytest.mark.parametrize(
    ("token", "config", "reason"),
    [
        (id_token(aud="cleanroom-audit"), {}, "another audience"),
        (id_token(groups=["radiology"]), {"allowed_groups": {"sample-ai"}}, "not in a group allowed here"),
        (id_token(acr="1", amr=["pwd"]), {"mfa_acr": [MFA]}, "multi-factor sign-in is required"),
    ],
)
def test_the_hub_refuses_with_the_reason(token: str, config: dict[str, Any], reason: str) -> None:
    hub, _ = authenticator(token, **config)
    with pytest.raises(TokenRejected, match=reason):
        asyncio.run(hub.authenticate(Handler()))


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("OAuth state mismatch", "state"),
        ("the sign-in's state does not match this browser's; sign in again", "state"),
        (
            "the ID token's nonce does not match this sign-in (a replayed or injected token); sign in again",
            "nonce",
        ),
        ("the identity provider refused the sign-in's code (invalid_grant); sign in again", "code"),
        ("eve@hospital.example is not in a group allowed here (sample-ai); ask ...", "group"),
        ("multi-factor sign-in is required: the identity provider reported acr '1' ...", "mfa"),
    ],
)
def test_oidc_refusals_are_counted_by_kind(reason: str, kind: str) -> None:
    assert hub_metrics.refusal_kind(reason) == kind


def test_the_hub_signs_in_through_oidc_when_an_issuer_is_configured_and_with_tokens_otherwise() -> None:
    from traitlets.config import Config

    from cleanroom.hub.authenticator import JWTAuthenticator
    from cleanroom.hub.config import ConfigError, configure

    tokens = {"CLEANROOM_HUB_ISSUER": "https://t", "CLEANROOM_HUB_AUDIENCE": "cleanroom-hub"}
    c = Config()
    configure(c, {**tokens, "CLEANROOM_HUB_JWKS_FILE": "/jwks.json"})
    assert c.JupyterHub.authenticator_class is JWTAuthenticator
    oidc = {
        "CLEANROOM_HUB_OIDC_ISSUER": ISSUER,
        "CLEANROOM_HUB_OIDC_CLIENT_ID": CLIENT,
        "CLEANROOM_HUB_OIDC_CLIENT_SECRET": "s",
        "CLEANROOM_HUB_OIDC_ALLOWED_GROUPS": "sample-ai",
        "CLEANROOM_HUB_OIDC_MFA_ACR": MFA,
    }
    c = Config()
    configure(c, {**tokens, **oidc})
    assert c.JupyterHub.authenticator_class is OIDCAuthenticator
    assert c.OIDCAuthenticator.allowed_groups == {"sample-ai"} and c.OIDCAuthenticator.mfa_acr == [MFA]
    # No keys of their own: bearer tokens are the provider's, whatever CLEANROOM_HUB_ISSUER says.
    assert c.OIDCAuthenticator.bearer_issuer == "" and c.OIDCAuthenticator.bearer_audience == "cleanroom-hub"
    assert c.OIDCAuthenticator.bearer_username_claim == ""
    # With keys of their own (the platform's token issuer), bearer tokens keep hub.auth's issuer and user claim.
    c = Config()
    configure(
        c,
        {
            **tokens,
            **oidc,
            "CLEANROOM_HUB_JWKS_FILE": "/jwks.json",
            "CLEANROOM_HUB_OIDC_USERNAME_CLAIM": "email",
        },
    )
    assert (
        c.OIDCAuthenticator.bearer_issuer == "https://t"
        and c.OIDCAuthenticator.bearer_username_claim == "sub"
    )
    assert c.OIDCAuthenticator.username_claim == "email"
    with pytest.raises(ConfigError, match="CLEANROOM_HUB_OIDC_ISSUER"):
        configure(Config(), {})


def test_userinfo_adds_the_groups_a_provider_keeps_out_of_the_id_token() -> None:
    token = id_token(groups=None, email=None, email_verified=None)
    info = {
        "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "email": "alice@hospital.example",
        "email_verified": True,
    }
    identity = verified(token, username_claim="email", userinfo_claims={**info, "groups": ["sample-ai"]})
    assert identity.username == "alice@hospital.example" and identity.groups == ("sample-ai",)
    # The signed ID token wins where both speak: userinfo cannot rename the user.
    renamed = verified(
        id_token(), username_claim="email", userinfo_claims={**info, "email": "sam@hospital.example"}
    )
    assert renamed.username == "alice@hospital.example"


def test_a_userinfo_answer_about_another_subject_is_refused() -> None:
    # Token substitution: the access token (and so the userinfo answer) belongs to someone else.
    other = {"sub": "someone-else", "groups": ["security-officer"]}
    with pytest.raises(TokenRejected, match="another subject"):
        verified(id_token(groups=None), userinfo_claims=other)
