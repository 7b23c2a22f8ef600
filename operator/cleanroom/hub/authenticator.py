"""JupyterHub sign-in with a bearer JWT from the platform's identity provider.

The token arrives in an `Authorization: Bearer` header on /hub/login, or pasted into the login form.
It is verified by `cleanroom.tokens`; claims map to the hub user and its groups (the hub manages
group membership from the token). Refusals answer 401/403 with the reason and are logged and audited
without the token."""

from __future__ import annotations

import logging
from typing import Any

import jwt
from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from tornado import escape
from traitlets import Bool, Integer, Unicode, default

from cleanroom.audit import Actor
from cleanroom.audit.writer import record
from cleanroom.hub import metrics
from cleanroom.oidc.provider import KeySet
from cleanroom.tokens import Identity, TokenPolicy, TokenRejected, verify

UNAUTHENTICATED = Actor("user", "unauthenticated")


def refused(log: logging.Logger, refusal: TokenRejected) -> None:
    """A refused sign-in: logged, audited and counted, never with the token."""
    log.warning("sign-in refused (%s): %s", refusal.status, refusal.reason)
    record(UNAUTHENTICATED, "session.login", {}, outcome="denied", reason=refusal.reason)
    metrics.sign_in_refused(refusal.status, refusal.reason)


def signed_in(log: logging.Logger, identity: Identity, how: str) -> None:
    log.info("sign-in: %s groups=%s (%s)", identity.username, ",".join(identity.groups), how)
    record(Actor("user", identity.username), "session.login", {}, reason=how)
    metrics.signed_in()


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - cleanroom</title>
<link rel="stylesheet" href="{static}"></head>
<body><div class="container" style="max-width:40em;margin-top:3em">
<h1>Sign in to cleanroom</h1>
<p>Paste the access token your platform's sign-in page gave you.</p>
{error}
<form method="post" action="{action}">
{xsrf}
<label for="token">Access token</label>
<textarea id="token" name="token" rows="6" style="width:100%" autocomplete="off" required></textarea>
<button type="submit" id="sign-in" class="btn btn-primary" style="margin-top:1em">Sign in</button>
</form></div></body></html>"""


class JWTLoginHandler(BaseHandler):  # type: ignore[misc]
    async def get(self) -> None:
        header = self.request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            await self._sign_in(header[7:].strip())
            return
        self.finish(self._form())

    async def post(self) -> None:
        await self._sign_in(self.get_body_argument("token", "").strip())

    async def _sign_in(self, token: str) -> None:
        try:
            user = await self.login_user({"token": token})
        except TokenRejected as refusal:
            self.set_status(refusal.status)
            self.finish(self._form(refusal.reason))
            return
        self.redirect(self.get_next_url(user))

    def _form(self, error: str = "") -> str:
        return _FORM.format(
            static=self.static_url("css/style.min.css"),
            action=self.request.uri,
            xsrf=self.xsrf_form_html(),
            error=f'<p class="alert alert-danger" id="login-error">{escape.xhtml_escape(error)}</p>'
            if error
            else "",
        )


class JWTAuthenticator(Authenticator):  # type: ignore[misc]
    jwks_file = Unicode("", config=True, help="Path of a JWKS file with the issuer's public keys.")
    jwks_url = Unicode(
        "", config=True, help="URL of the issuer's JWKS; fetched again when a token names an unknown kid."
    )
    issuer = Unicode(config=True, help="Required `iss` of every token.")
    audience = Unicode(config=True, help="Required `aud` of every token (this hub).")
    leeway_seconds = Integer(30, config=True, help="Clock skew tolerated on exp and nbf.")
    username_claim = Unicode("sub", config=True, help="Claim that names the hub user (`sub` or `email`).")
    groups_claim = Unicode("groups", config=True, help="Claim with the user's groups.")
    jwks_min_refresh_seconds = Integer(60, config=True, help="Least time between JWKS refetches.")

    @default("manage_groups")
    def _manage_groups(self) -> bool:
        return True

    @default("allow_all")
    def _allow_all(self) -> bool:
        # The identity provider decides who is a platform user; Workspaces decide who reaches which data.
        return True

    auto_login = Bool(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keys: KeySet | None = None

    def get_handlers(self, app: Any) -> list[tuple[str, type]]:
        return [("/login", JWTLoginHandler)]

    def policy(self) -> TokenPolicy:
        if not self.issuer or not self.audience:
            raise ValueError("set c.JWTAuthenticator.issuer and c.JWTAuthenticator.audience")
        return TokenPolicy(
            issuer=self.issuer,
            audience=self.audience,
            leeway_seconds=self.leeway_seconds,
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
        )

    def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        if self._keys is None:
            source = self.jwks_file or self.jwks_url
            if not source:
                raise ValueError("set c.JWTAuthenticator.jwks_file or c.JWTAuthenticator.jwks_url")
            self._keys = KeySet(source, self.jwks_min_refresh_seconds)
        return self._keys.keys(refresh)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any]:
        token = (data or {}).get("token", "")
        if not token:
            raise TokenRejected(401, "no token: send Authorization: Bearer <JWT> or paste it into the form")
        try:
            self.keys()
            assert self._keys is not None
            identity = self._keys.verify(lambda keys: verify(token, keys, self.policy()))
        except TokenRejected as refusal:
            refused(self.log, refusal)
            raise
        signed_in(self.log, identity, "signed in with a verified JWT")
        return {"name": identity.username, "groups": list(identity.groups)}
