"""The officers' page's sign-in through OpenID Connect, in-process: where it sends the browser back to, and the
cookies it sets (the provider is stood in for; tests/integration/test_oidc_signin.py runs a real one)."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cleanroom.audit import read_records, write_signing_key
from cleanroom.auditweb.service import NEXT_COOKIE, STATE_COOKIE, AuditService, ServiceConfig
from cleanroom.oidc import OidcSettings, SignInRules
from cleanroom.tokens import Identity, write_dev_issuer


def service(tmp_path: Path) -> AuditService:
    write_dev_issuer(tmp_path / "writers", "https://kubernetes.test", "cleanroom-audit")
    write_signing_key(tmp_path / "signing.pem")
    config = ServiceConfig(
        directory=tmp_path / "trail",
        signing_key=tmp_path / "signing.pem",
        writer_issuer="https://kubernetes.test",
        writer_jwks=str(tmp_path / "writers" / "dev-jwks.json"),
        writers=frozenset(),
        user_issuer="",
        user_jwks="",
        user_audience="",
        oidc=OidcSettings("https://login.test", "cleanroom-audit", "s", SignInRules(username_claim="email")),
    )
    audit = AuditService(config)
    assert audit.signin is not None
    audit.signin.start = lambda redirect_uri, now=None: ("https://login.test/auth?state=s1", "s1")  # type: ignore[method-assign]
    sam = Identity("sam@hospital.example", ("security-officer",), {})
    audit.signin.finish = lambda cookie, query, redirect_uri, now=None: (sam, "the-id-token")  # type: ignore[method-assign]
    return audit


def run(audit: AuditService, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(audit.app())) as client:
            await scenario(client)

    asyncio.run(main())


def test_a_page_opened_without_a_session_signs_in_through_the_provider_and_comes_back(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await client.get("/?actor=alice%40hospital.example", allow_redirects=False)
        assert page.status == 302
        location = urllib.parse.urlsplit(page.headers["Location"])
        assert location.path == "/oidc/login"
        [back] = urllib.parse.parse_qs(location.query)["next"]
        assert urllib.parse.unquote(back) == "/?actor=alice@hospital.example"
        start = await client.get(page.headers["Location"], allow_redirects=False)
        assert start.headers["Location"].startswith("https://login.test/auth")
        assert urllib.parse.unquote(start.cookies[NEXT_COOKIE].value) == "/?actor=alice@hospital.example"
        assert start.cookies[STATE_COOKIE]["samesite"] == "Lax" and start.cookies[STATE_COOKIE]["secure"]
        client.session.cookie_jar.update_cookies({NEXT_COOKIE: start.cookies[NEXT_COOKIE].value})
        landed = await client.get("/oidc/callback?code=c&state=s1")
        text = await landed.text()
        assert re.search(r"url=/\?actor=alice(@|%40)hospital\.example'", text), text
        assert landed.cookies["cleanroom-audit-session"]["samesite"] == "Strict"
        # A POST cannot come back: it goes to the sign-in page.
        verify = await client.post("/verify", allow_redirects=False, cookies={"cleanroom-audit-session": "x"})
        assert verify.headers["Location"] == "/login?expired=1"

    run(service(tmp_path), scenario)


@pytest.mark.parametrize(
    "target", ["//evil.example/phish", "/\\evil.example", "https://evil.example/", "evil"]
)
def test_signing_in_never_sends_the_browser_to_another_site(tmp_path: Path, target: str) -> None:
    """An open redirect: a link to /oidc/login?next=//evil.example that, after a real sign-in, would land the
    officer on the attacker's look-alike page."""

    async def scenario(client: TestClient[Any, Any]) -> None:
        start = await client.get("/oidc/login", params={"next": target}, allow_redirects=False)
        assert start.cookies[NEXT_COOKIE].value == "/"
        # Nor a cookie planted with such a target.
        client.session.cookie_jar.update_cookies({NEXT_COOKIE: target})
        text = await (await client.get("/oidc/callback?code=c&state=s1")).text()
        assert re.search(r"url=/'", text), text

    run(service(tmp_path), scenario)


def test_officers_sign_ins_and_refusals_through_the_provider_are_in_the_trail(tmp_path: Path) -> None:
    """Who read the trail is reviewable: before, a sign-in to the officers' page left no record at all."""
    audit = service(tmp_path)
    eve = Identity("eve@hospital.example", ("sample-ai",), {})

    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.get("/oidc/callback?code=c&state=s1")
        assert audit.signin is not None
        audit.signin.finish = lambda cookie, query, redirect_uri, now=None: (eve, "t")  # type: ignore[method-assign]
        refused = await client.get("/oidc/callback?code=c&state=s1")
        assert refused.status == 403

    run(audit, scenario)
    logins = [
        (r["event"]["actor"]["name"], r["event"]["outcome"], r["event"]["reason"])
        for r in read_records(tmp_path / "trail")
        if r["event"]["action"] == "officer.login"
    ]
    assert logins == [
        ("sam@hospital.example", "success", "openid connect"),
        ("eve@hospital.example", "denied", "openid connect: no security-officer role"),
    ]
