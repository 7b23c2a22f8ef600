"""The authorization code flow's own values, pure: one sign-in attempt's state, nonce and PKCE verifier, the
URL that sends the browser to the provider, the callback's checks, and the provider's logout URL.

PKCE is RFC 7636 with S256 only (section 4.2: a client able to use S256 must; `plain` would hand the verifier
to whoever reads the authorization request). State binds the callback to the browser that started the sign-in
(RFC 6749 section 10.12, login CSRF); the nonce binds the ID token to it (OpenID Connect Core 3.1.2.1, ID
token injection and replay)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cleanroom.tokens import TokenRejected


def pkce_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Attempt:
    """One sign-in in flight: kept by the relying party (a cookie it signs, or its memory), never by the
    provider alone. Each value is 256 random bits, base64url (43 characters: RFC 7636's verifier length)."""

    state: str
    nonce: str
    verifier: str

    @staticmethod
    def new(nonce: str = "") -> Attempt:
        """A fresh attempt; `nonce` when the ID token must commit to something (a decision made on the
        officers' page, cleanroom.airlock.proofs), else random."""
        return Attempt(
            secrets.token_urlsafe(32), nonce or secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        )

    @property
    def challenge(self) -> str:
        return pkce_challenge(self.verifier)


def authorization_url(
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    attempt: Attempt,
    acr_values: Sequence[str] = (),
) -> str:
    """Where the browser goes to sign in. With acr_values the provider is asked for that level of assurance
    (Core 3.1.2.1); the ID token's acr is still checked on the way back, since a provider may answer with less."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": attempt.state,
        "nonce": attempt.nonce,
        "code_challenge": attempt.challenge,
        "code_challenge_method": "S256",
    }
    if acr_values:
        params["acr_values"] = " ".join(acr_values)
    separator = "&" if urllib.parse.urlsplit(endpoint).query else "?"
    return endpoint + separator + urllib.parse.urlencode(params)


def check_callback(expected_state: str, query: Mapping[str, str], issuer: str) -> str:
    """The code from the provider's redirect, once the redirect is this browser's own: the state it carries
    is the one this browser's attempt holds, and, when the provider names itself (RFC 9207), it is the
    configured issuer (a mix-up attack sends another provider's code here). Raises `TokenRejected`."""
    if query.get("error"):
        description = query.get("error_description") or query["error"]
        raise TokenRejected(403, f"the identity provider refused the sign-in: {description}")
    state = query.get("state", "")
    if not expected_state:
        raise TokenRejected(
            400, "no sign-in in progress in this browser (it expired or was used already); sign in again"
        )
    if not state or not hmac.compare_digest(state.encode(), expected_state.encode()):
        raise TokenRejected(400, "the sign-in's state does not match this browser's; sign in again")
    if "iss" in query and query["iss"] != issuer:
        raise TokenRejected(400, f"the code comes from issuer {query['iss']!r}, not {issuer!r}")
    code = query.get("code", "")
    if not code:
        raise TokenRejected(400, "the identity provider sent no code")
    return code


def logout_url(end_session_endpoint: str, client_id: str, post_logout_redirect_uri: str) -> str:
    """RP-Initiated Logout 1.0: the provider ends its own session too (else the next sign-in would pass
    without a password). client_id stands in for id_token_hint, which would mean keeping ID tokens."""
    params = {"client_id": client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    separator = "&" if urllib.parse.urlsplit(end_session_endpoint).query else "?"
    return end_session_endpoint + separator + urllib.parse.urlencode(params)
