"""The identity provider as a relying party reads it: its discovery document and its signing keys.

Blocking I/O (urllib, with a timeout); async callers run it in a thread. Keys are cached and fetched again
when a token names a kid the cache lacks (the provider rotated its keys), at most once a minute so that
tokens with made-up kids cannot make us hammer the provider."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jwt

from cleanroom.tokens import TokenRejected, load_jwks

Fetch = Callable[[str], Mapping[str, Any]]
_T = TypeVar("_T")


def fetch_json(url: str, timeout: float = 10) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        document = json.load(response)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


@dataclass(frozen=True)
class ProviderMetadata:
    """What the discovery document says (OpenID Connect Discovery 1.0, section 3)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str = ""
    userinfo_endpoint: str = ""

    @staticmethod
    def from_document(issuer: str, document: Mapping[str, Any]) -> ProviderMetadata:
        # Discovery 4.3: the issuer in the document must be exactly the one configured, or a provider (or
        # whoever answers at its address) could speak for another.
        if document.get("issuer") != issuer:
            raise ValueError(
                f"the discovery document names issuer {document.get('issuer')!r}, not {issuer!r}; set the "
                "issuer exactly as the provider spells it (a trailing slash counts)"
            )
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(k)]
        if missing:
            raise ValueError(f"the discovery document of {issuer} lacks {', '.join(missing)}")
        methods = document.get("code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise ValueError(f"{issuer} does not offer PKCE with S256 (code_challenge_methods_supported)")
        return ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            jwks_uri=str(document["jwks_uri"]),
            end_session_endpoint=str(document.get("end_session_endpoint") or ""),
            userinfo_endpoint=str(document.get("userinfo_endpoint") or ""),
        )


def fetch_userinfo(endpoint: str, access_token: str, timeout: float = 10) -> dict[str, Any]:
    """The userinfo answer for an access token (Core 5.3), as a JSON object."""
    if not endpoint:
        raise TokenRejected(401, "the provider offers no userinfo endpoint (its discovery document has none)")
    request = urllib.request.Request(
        endpoint, headers={"Accept": "application/json", "Authorization": f"Bearer {access_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            document = json.load(response)
    except (OSError, ValueError) as error:
        raise TokenRejected(401, f"the provider's userinfo endpoint did not answer: {error}") from None
    if not isinstance(document, dict):
        raise TokenRejected(401, "the provider's userinfo answer is not a JSON object")
    return document


def discover(issuer: str, fetch: Fetch = fetch_json) -> ProviderMetadata:
    return ProviderMetadata.from_document(
        issuer, fetch(issuer.rstrip("/") + "/.well-known/openid-configuration")
    )


class KeySet:
    """A provider's public keys by kid, from a JWKS URL or a file (an air-gapped issuer)."""

    def __init__(self, source: str, min_refresh_seconds: float = 60, fetch: Fetch = fetch_json) -> None:
        if not source:
            raise ValueError("no JWKS source: a URL or a file is needed")
        self.source = source
        self.min_refresh_seconds = min_refresh_seconds
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > self.min_refresh_seconds
            if self._keys and not (refresh and stale):
                return self._keys
            if self.source.startswith(("http://", "https://")):
                document: Mapping[str, Any] = self._fetch(self.source)
            else:
                document = json.loads(Path(self.source).read_text())
            self._keys, self._fetched_at = load_jwks(document), time.monotonic()
            return self._keys

    def verify(self, check: Callable[[Mapping[str, jwt.PyJWK]], _T]) -> _T:
        """`check(keys)`, once more with freshly fetched keys when the token names a kid not seen yet. Keys that
        cannot be read refuse the token: nothing is verified without them."""
        try:
            try:
                return check(self.keys())
            except TokenRejected as refusal:
                if not refusal.reason.startswith("unknown signing key"):
                    raise
                return check(self.keys(refresh=True))
        except (OSError, ValueError) as error:
            raise TokenRejected(401, f"the issuer's keys cannot be read ({self.source}): {error}") from None
