"""JupyterHub sign-in through the platform's OpenID Connect provider (Keycloak, Entra ID, LS Login...).

A subclass of oauthenticator's GenericOAuthenticator, which brings the authorization code flow with PKCE
(S256), the state cookie signed with the hub's cookie secret and checked on the callback, and the token
request. What GenericOAuthenticator lacks, and a hospital's sign-in needs, is added here:

- discovery: endpoints and keys come from the issuer's /.well-known/openid-configuration;
- a nonce per attempt, kept in the signed state cookie beside the PKCE verifier;
- the ID token verified with the provider's keys (`cleanroom.oidc.verify_id_token`, on the project's one
  JWT verifier): GenericOAuthenticator's `userdata_from_id_token` reads it with the signature unchecked;
- the site's rules on claims: user name (an email only when verified), groups and roles, required groups,
  multi-factor sign-in (acr/amr), each refusal a page that says why, an audit event and a metric;
- logout at the provider too (end_session), so that the next person at the screen must sign in again.

API clients keep the bearer path: `Authorization: Bearer <JWT>` on /hub/login, verified as
`cleanroom.hub.authenticator.JWTAuthenticator` does (its own issuer, audience and keys, by default the
provider's), under the same rules on groups and multi-factor sign-in."""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from typing import Any

from jupyterhub.handlers import BaseHandler
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import (
    OAuthCallbackHandler,
    OAuthLoginHandler,
    OAuthLogoutHandler,
    _deserialize_state,
    _serialize_state,
)
from tornado import escape, web
from tornado.httpclient import HTTPClientError
from traitlets import Bool, Integer, List, Unicode, default

from cleanroom.hub.authenticator import refused, signed_in
from cleanroom.oidc import (
    KeySet,
    ProviderMetadata,
    SignInRules,
    check_rules,
    discover,
    fetch_userinfo,
    logout_url,
    verify_id_token,
)
from cleanroom.tokens import Identity, TokenPolicy, TokenRejected, verify

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - cleanroom</title>
<link rel="stylesheet" href="{static}"></head>
<body><div class="container" style="max-width:40em;margin-top:3em">
<h1>Sign in to cleanroom</h1>
{error}
<p><a id="oidc-sign-in" class="btn btn-primary btn-lg" href="{start}">Sign in with {service}</a></p>
<p class="text-muted">You sign in with your institution's account; cleanroom never sees your password.</p>
</div></body></html>"""


def _error_html(reason: str) -> str:
    return f'<p class="alert alert-danger" id="login-error">{escape.xhtml_escape(reason)}</p>'


class OIDCSignInPage(BaseHandler):  # type: ignore[misc]
    """/hub/login: a button to the provider for browsers, the bearer path for API clients."""

    async def get(self) -> None:
        header = self.request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            await self._bearer(header[7:].strip())
            return
        self.finish(self._page())

    async def post(self) -> None:
        # A token posted as a form field, as the token sign-in's form does (scripts that used it keep working).
        await self._bearer(self.get_body_argument("token", "").strip())

    async def _bearer(self, token: str) -> None:
        try:
            user = await self.login_user({"token": token})
        except TokenRejected as refusal:
            self.set_status(refusal.status)
            self.finish(self._page(refusal.reason))
            return
        self.redirect(self.get_next_url(user))

    def _page(self, error: str = "") -> str:
        query = {"next": self.get_argument("next", "")} if self.get_argument("next", "") else {}
        start = self.hub.base_url + "oauth_login" + ("?" + urllib.parse.urlencode(query) if query else "")
        return _PAGE.format(
            static=self.static_url("css/style.min.css"),
            start=escape.xhtml_escape(start),
            service=escape.xhtml_escape(self.authenticator.login_service),
            error=_error_html(error) if error else "",
        )


class OIDCLoginHandler(OAuthLoginHandler):  # type: ignore[misc]
    """/hub/oauth_login: discovery first, then GenericOAuthenticator's redirect with state and PKCE, to which
    this adds the nonce (in the signed state cookie and the request) and the acr asked for."""

    _nonce = ""

    async def get(self) -> None:
        try:
            await self.authenticator.provider()
        except Exception as error:  # the provider is down or misconfigured: say so, do not crash the page
            self.log.error("OpenID Connect discovery failed: %s", error)
            self.set_status(503)
            self.finish(_refusal_page(self, f"the identity provider does not answer: {error}"))
            return
        super().get()

    def set_state_cookie(self, state_cookie_value: str) -> None:
        state = _deserialize_state(state_cookie_value)
        self._nonce = state["nonce"] = secrets.token_urlsafe(32)
        super().set_state_cookie(_serialize_state(state))

    def authorize_redirect(
        self, *args: Any, extra_params: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        params = {**(extra_params or {}), "nonce": self._nonce}
        if self.authenticator.mfa_acr:
            params["acr_values"] = " ".join(self.authenticator.mfa_acr)
        # "Sign in again" after a refusal: the provider asks for the credentials anew (Core 3.1.2.1), or its
        # single sign-on would hand back the same one-factor session.
        if self.get_argument("fresh", ""):
            params["prompt"] = "login"
        super().authorize_redirect(*args, extra_params=params, **kwargs)


class OIDCCallbackHandler(OAuthCallbackHandler):  # type: ignore[misc]
    """/hub/oauth_callback: every refusal, from a forged state to a missing group, is a page with the reason,
    an audit event and a metric."""

    async def get(self) -> None:
        try:
            try:
                self.check_arguments()
            except web.HTTPError as error:
                refusal = TokenRejected(400, error.log_message or "the sign-in's callback is not valid")
                refused(self.log, refusal)  # the authenticator records the refusals after this point
                raise refusal from None
            user = await self.login_user()
        except TokenRejected as refusal:
            self.set_status(refusal.status)
            self.finish(_refusal_page(self, refusal.reason))
            return
        if user is None:
            raise web.HTTPError(403, "sign-in refused")
        self.redirect(self.get_next_url(user))


def _refusal_page(handler: BaseHandler, reason: str) -> str:
    return _PAGE.format(
        static=handler.static_url("css/style.min.css"),
        start=escape.xhtml_escape(handler.hub.base_url + "oauth_login?fresh=1"),
        service=escape.xhtml_escape(handler.authenticator.login_service),
        error=_error_html("Sign-in refused: " + reason),
    ).replace(">Sign in with ", ">Sign in again with ")


class OIDCLogoutHandler(OAuthLogoutHandler):  # type: ignore[misc]
    async def render_logout_page(self) -> None:
        target = await self.authenticator.provider_logout_url(self)
        if target:
            self.redirect(target)
            return
        await super().render_logout_page()


class OIDCAuthenticator(GenericOAuthenticator):  # type: ignore[misc]
    login_handler = OIDCLoginHandler
    callback_handler = OIDCCallbackHandler
    logout_handler = OIDCLogoutHandler

    issuer = Unicode(
        config=True, help="The provider's issuer URL; endpoints come from its discovery document."
    )
    groups_claim = Unicode("groups", config=True, help="Claim with the user's groups (dotted path allowed).")
    roles_claim = Unicode("", config=True, help="Claim with the user's roles, added to the groups.")
    mfa_acr = List(Unicode(), config=True, help="acr values that count as multi-factor sign-in.")
    mfa_amr = List(Unicode(), config=True, help="amr entries that count as multi-factor sign-in.")
    leeway_seconds = Integer(30, config=True, help="Clock skew tolerated on exp and nbf.")
    userinfo = Bool(False, config=True, help="Add the userinfo endpoint's claims to the ID token's.")
    bearer_issuer = Unicode("", config=True, help="`iss` of API clients' bearer tokens (default: issuer).")
    bearer_audience = Unicode("", config=True, help="`aud` of bearer tokens; empty: no bearer path.")
    bearer_jwks = Unicode("", config=True, help="Bearer tokens' keys, URL or file (default: the provider's).")
    bearer_username_claim = Unicode(
        "", config=True, help="The claim naming the user in bearer tokens (default: username_claim)."
    )

    @default("username_claim")
    def _username_claim(self) -> str:
        return "sub"

    @default("scope")
    def _scope(self) -> list[str]:
        return ["openid", "email", "profile"]

    @default("manage_groups")
    def _manage_groups(self) -> bool:
        return True

    @default("allow_all")
    def _allow_all(self) -> bool:
        # The rules (allowed_groups, mfa_*) are enforced in authenticate, with a reason; JupyterHub's own
        # allow-lists would refuse without one.
        return True

    @default("enable_auth_state")
    def _enable_auth_state(self) -> bool:
        return False  # no tokens kept: the hub needs none after sign-in, and none can leak from its database

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._bearer_keys: KeySet | None = None
        self._discovery = asyncio.Lock()

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [("/login", OIDCSignInPage), *super().get_handlers(app)]

    def rules(self) -> SignInRules:
        if not isinstance(self.username_claim, str):
            raise ValueError("OIDCAuthenticator.username_claim must be a claim name")
        return SignInRules(
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
            roles_claim=self.roles_claim,
            allowed_groups=tuple(sorted(self.allowed_groups)),
            mfa_acr=tuple(self.mfa_acr),
            mfa_amr=tuple(self.mfa_amr),
        )

    async def provider(self) -> ProviderMetadata:
        """The discovery document, read once (again after a failure); sets the endpoints the flow uses."""
        async with self._discovery:
            if self._metadata is None:
                metadata = await asyncio.to_thread(discover, self.issuer)
                self.authorize_url, self.token_url = metadata.authorization_endpoint, metadata.token_endpoint
                self._keys = KeySet(metadata.jwks_uri)
                self._metadata = metadata
            return self._metadata

    async def provider_logout_url(self, handler: BaseHandler) -> str:
        try:
            metadata = await self.provider()
        except Exception as error:
            self.log.warning("no logout at the identity provider (discovery failed): %s", error)
            return ""
        if not metadata.end_session_endpoint:
            return ""
        callback = self.get_callback_url(handler)
        return logout_url(
            metadata.end_session_endpoint, self.client_id, urllib.parse.urljoin(callback, "login")
        )

    async def get_token_info(self, handler: Any, params: dict[str, Any]) -> dict[str, Any]:
        try:
            info: dict[str, Any] = await super().get_token_info(handler, params)
        except HTTPClientError as error:
            # A code used twice, expired, or not issued for our PKCE verifier: the provider says invalid_grant.
            raise TokenRejected(
                401, f"the identity provider refused the sign-in's code ({error.code}); sign in again"
            ) from None
        return info

    async def authenticate(
        self, handler: Any, data: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            if data and "token" in data:
                identity = await self._bearer(str(data["token"]))
                how = "signed in with a verified JWT"
            else:
                identity = await self._code(handler, data)
                how = "signed in through OpenID Connect"
        except TokenRejected as refusal:
            refused(self.log, refusal)
            raise
        signed_in(self.log, identity, how)
        return {"name": identity.username, "groups": list(identity.groups)}

    async def _code(self, handler: Any, data: dict[str, Any] | None) -> Identity:
        await self.provider()
        cookie = handler.get_state_cookie()
        if not cookie:
            raise TokenRejected(
                400, "no sign-in in progress in this browser (it expired or was used); sign in again"
            )
        nonce = str(_deserialize_state(cookie).get("nonce") or "")
        if not nonce:
            raise TokenRejected(400, "the sign-in attempt carries no nonce; sign in again")
        token_info = await self.get_token_info(
            handler, self.build_access_tokens_request_params(handler, data)
        )
        id_token = str(token_info.get("id_token") or "")
        keys, rules, metadata = self._keys, self.rules(), await self.provider()
        assert keys is not None
        userinfo = (
            await asyncio.to_thread(
                fetch_userinfo, metadata.userinfo_endpoint, str(token_info.get("access_token") or "")
            )
            if self.userinfo
            else None
        )
        return await asyncio.to_thread(
            keys.verify,
            lambda k: verify_id_token(
                id_token, k, self.issuer, self.client_id, nonce, rules, self.leeway_seconds, userinfo
            ),
        )

    async def _bearer(self, token: str) -> Identity:
        if not token:
            raise TokenRejected(401, "no token: send Authorization: Bearer <JWT>, or sign in in a browser")
        if not self.bearer_audience:
            raise TokenRejected(401, "bearer tokens are not accepted here; sign in in a browser")
        if self._bearer_keys is None:
            self._bearer_keys = KeySet(self.bearer_jwks) if self.bearer_jwks else None
        if self._bearer_keys is None:
            await self.provider()
        keys = self._bearer_keys or self._keys
        assert keys is not None
        rules = self.rules()
        policy = TokenPolicy(
            issuer=self.bearer_issuer or self.issuer,
            audience=self.bearer_audience,
            leeway_seconds=self.leeway_seconds,
            username_claim=self.bearer_username_claim or rules.username_claim,
            groups_claim=rules.groups_claim,
            roles_claim=rules.roles_claim,
        )
        identity = await asyncio.to_thread(keys.verify, lambda k: verify(token, k, policy))
        check_rules(identity, rules)
        return identity

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        return True  # authenticate refused whoever the rules keep out, with the reason

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> bool:
        # Nothing kept to refresh with (enable_auth_state is off); the hub's cookie bounds a session.
        return True
