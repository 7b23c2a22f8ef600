"""A relying party's sign-in through the code flow with PKCE, for a web page with no framework of its own for
it (the officers' audit page; the hub has oauthenticator's). No web framework here either: the caller maps
requests and cookies to these calls, and runs the blocking ones (discovery, the token request) in a thread.

An attempt lives in this process's memory, keyed by its state, for ten minutes, and is taken out on the
first callback that names it: a callback replayed, or one from a browser that did not start the attempt
(its state cookie differs), finds nothing. The page runs one replica (it owns the audit spool), so memory
is enough; a restart costs a sign-in in progress a second click."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from cleanroom.oidc.flow import Attempt, authorization_url, check_callback, logout_url
from cleanroom.oidc.idtoken import check_rules, verify_id_token
from cleanroom.oidc.provider import KeySet, ProviderMetadata, discover, fetch_userinfo
from cleanroom.oidc.settings import OidcSettings
from cleanroom.tokens import Identity, TokenRejected, identity_from_claims, verified_claims

ATTEMPT_SECONDS = 600


def exchange_code(
    token_endpoint: str, client_id: str, client_secret: str, code: str, redirect_uri: str, verifier: str
) -> dict[str, Any]:
    """The token request (RFC 6749 4.1.3 with RFC 7636's code_verifier), the client authenticated with HTTP
    Basic (2.3.1: id and secret form-encoded first). A refusal (a used or expired code, a verifier that does
    not match the challenge) is a `TokenRejected` with the provider's error code."""
    body = urllib.parse.urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
    ).encode()
    pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
    request = urllib.request.Request(
        token_endpoint,
        data=body,
        headers={
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        try:
            reason = str(json.load(error).get("error", error.code))
        except ValueError:
            reason = str(error.code)
        raise TokenRejected(
            401, f"the identity provider refused the sign-in's code ({reason}); sign in again"
        ) from None
    if not isinstance(answer, dict):
        raise TokenRejected(401, "the identity provider's token response is not a JSON object")
    return answer


class RelyingParty:
    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._metadata: ProviderMetadata | None = None
        self._keys: KeySet | None = None
        self._attempts: dict[str, tuple[Attempt, float]] = {}
        # With userinfo: what it said at sign-in, by the ID token's digest, until the token expires.
        self._userinfo: dict[str, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()

    def metadata(self) -> ProviderMetadata:
        """Blocking: the discovery document, read once (again after a failure)."""
        with self._lock:
            if self._metadata is None:
                metadata = discover(self.settings.issuer)
                self._keys = KeySet(metadata.jwks_uri)
                self._metadata = metadata
            return self._metadata

    def keys(self) -> KeySet:
        self.metadata()
        assert self._keys is not None
        return self._keys

    def start(self, redirect_uri: str, now: float | None = None, nonce: str = "") -> tuple[str, str]:
        """Blocking. The provider URL to send the browser to, and the state to keep in its cookie; with
        `nonce`, the ID token that comes back must carry it (`finish` checks)."""
        now = time.time() if now is None else now
        metadata = self.metadata()
        attempt = Attempt.new(nonce)
        with self._lock:
            for state in [s for s, (_, until) in self._attempts.items() if until < now]:
                del self._attempts[state]
            self._attempts[attempt.state] = (attempt, now + ATTEMPT_SECONDS)
        url = authorization_url(
            metadata.authorization_endpoint,
            self.settings.client_id,
            redirect_uri,
            self.settings.scopes,
            attempt,
            self.settings.rules.mfa_acr,
        )
        return url, attempt.state

    def finish(
        self, cookie_state: str, query: Mapping[str, str], redirect_uri: str, now: float | None = None
    ) -> tuple[Identity, str]:
        """Blocking. The user and the ID token, from the provider's redirect back; `TokenRejected` otherwise."""
        now = time.time() if now is None else now
        metadata = self.metadata()
        # The attempt this browser's cookie names, taken out so that its callback cannot be replayed; its state
        # must then be the one the redirect carries (check_callback).
        with self._lock:
            held = self._attempts.pop(cookie_state, None) if cookie_state else None
        attempt = held[0] if held and held[1] >= now else None
        code = check_callback(attempt.state if attempt else "", query, metadata.issuer)
        assert attempt is not None
        answer = exchange_code(
            metadata.token_endpoint,
            self.settings.client_id,
            self.settings.client_secret,
            code,
            redirect_uri,
            attempt.verifier,
        )
        id_token = str(answer.get("id_token") or "")
        userinfo = (
            fetch_userinfo(metadata.userinfo_endpoint, str(answer.get("access_token") or ""))
            if self.settings.userinfo
            else None
        )
        identity = self.keys().verify(
            lambda keys: verify_id_token(
                id_token,
                keys,
                metadata.issuer,
                self.settings.client_id,
                attempt.nonce,
                self.settings.rules,
                userinfo=userinfo,
            )
        )
        if userinfo is not None:
            with self._lock:
                for digest in [d for d, (_, until) in self._userinfo.items() if until < now]:
                    del self._userinfo[digest]
                self._userinfo[_digest(id_token)] = (userinfo, float(identity.claims["exp"]))
        return identity, id_token

    def session(self, id_token: str) -> Identity:
        """Blocking. The user of a session that keeps its ID token (the audit page's cookie), verified again:
        signature, issuer, this client as audience, expiry, and the site's rules. With userinfo, the claims it
        gave at sign-in join the token's; a token this process did not sign in has none, and is refused."""
        rules = self.settings.rules
        policy = rules.policy(self.settings.issuer, self.settings.client_id)
        try:
            keys = self.keys()
        except (
            OSError,
            ValueError,
        ) as error:  # the provider is down: nothing can be verified, so nobody is in
            raise TokenRejected(401, f"the identity provider's keys cannot be read: {error}") from None
        claims = keys.verify(lambda k: verified_claims(id_token, k, policy))
        if self.settings.userinfo:
            with self._lock:
                held = self._userinfo.get(_digest(id_token))
            if held is None:
                raise TokenRejected(401, "this session's userinfo is not known here (the service restarted?)")
            claims = {**held[0], **claims}
        identity = identity_from_claims(claims, policy)
        check_rules(identity, rules)
        return identity

    def logout(self, post_logout_redirect_uri: str) -> str:
        """Blocking. The provider's end_session URL, or "" when it offers none (or cannot be reached)."""
        try:
            metadata = self.metadata()
        except (OSError, ValueError):
            return ""
        if not metadata.end_session_endpoint:
            return ""
        return logout_url(metadata.end_session_endpoint, self.settings.client_id, post_logout_redirect_uri)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
