"""The local stack's OpenID Connect provider (hack/oidc-provider/server.mjs, npm's oidc-provider) as a process
of the test's own, on a free port with its own keys and client secrets, and a browser-like client that signs
in through its login form (the code flow done with an HTTP client, every redirect followed as a browser
would)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cleanroom.oidc import Attempt, authorization_url, exchange_code
from tests.integration.conftest import CACHE, ROOT, VERSIONS, free_port

MODULE = (
    CACHE / "node" / f"oidc-provider-{VERSIONS['OIDC_PROVIDER_VERSION']}" / "node_modules" / "oidc-provider"
)
USERS = json.loads((ROOT / "hack" / "oidc-provider" / "users.json").read_text())
MFA, SFA = "https://refeds.org/profile/mfa", "https://refeds.org/profile/sfa"


class Provider:
    def __init__(self, workdir: Path, claims_in_userinfo_only: bool = False) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.state = workdir / "state"
        self.log_path = workdir / "oidc.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            ["node", str(ROOT / "hack" / "oidc-provider" / "server.mjs")],
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "OIDC_PROVIDER_MODULE": str(MODULE),
                "OIDC_ISSUER": self.issuer,
                "OIDC_STATE_DIR": str(self.state),
                "OIDC_CLAIMS_IN_USERINFO_ONLY": "true" if claims_in_userinfo_only else "",
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the OpenID Connect provider exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the OpenID Connect provider did not answer:\n{self.log_path.read_text()}")
        self.secrets: dict[str, str] = json.loads((self.state / "clients.json").read_text())

    def hub_env(self, **settings: str) -> dict[str, str]:
        """The hub's CLEANROOM_HUB_OIDC_* settings for this provider, as the stack's scripts write them."""
        return {
            "CLEANROOM_HUB_OIDC_ISSUER": self.issuer,
            "CLEANROOM_HUB_OIDC_CLIENT_ID": "cleanroom-hub",
            "CLEANROOM_HUB_OIDC_CLIENT_SECRET": self.secrets["cleanroom-hub"],
            "CLEANROOM_HUB_OIDC_SCOPES": "openid email profile groups",
            "CLEANROOM_HUB_OIDC_USERNAME_CLAIM": "email",
            **{f"CLEANROOM_HUB_OIDC_{k.upper()}": v for k, v in settings.items()},
        }

    def audit_env(self, **settings: str) -> dict[str, str]:
        return {
            "CLEANROOM_AUDIT_OIDC_ISSUER": self.issuer,
            "CLEANROOM_AUDIT_OIDC_CLIENT_ID": "cleanroom-audit",
            "CLEANROOM_AUDIT_OIDC_CLIENT_SECRET": self.secrets["cleanroom-audit"],
            "CLEANROOM_AUDIT_OIDC_SCOPES": "openid email profile groups",
            "CLEANROOM_AUDIT_OIDC_USERNAME_CLAIM": "email",
            **{f"CLEANROOM_AUDIT_OIDC_{k.upper()}": v for k, v in settings.items()},
        }

    def id_token(self, client: str, redirect_uri: str, user: str, otp: str = "") -> str:
        """An ID token for `client`, by the code flow with PKCE as that client does it (its secret, a fresh
        attempt): what someone holding such a token has."""
        attempt = Attempt.new()
        session = requests.Session()
        start = authorization_url(
            f"{self.issuer}/auth", client, redirect_uri, ["openid", "email", "profile", "groups"], attempt
        )
        callback = fill_login_form(session, session.get(start), user, otp, redirect_uri)
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))["code"]
        answer = exchange_code(
            f"{self.issuer}/token", client, self.secrets[client], code, redirect_uri, attempt.verifier
        )
        return str(answer["id_token"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    if not shutil.which("node"):
        pytest.fail("node is needed for the OpenID Connect provider: hack/install-system-deps.sh installs it")
    if not (MODULE / "package.json").exists():
        pytest.fail(
            f"oidc-provider is missing at {MODULE}: run hack/install-node-tools.sh (make install does)"
        )
    process = Provider(tmp_path_factory.mktemp("oidc"))
    yield process
    process.stop()


def follow_to(session: requests.Session, response: requests.Response, stop_at: str) -> str:
    """Follows redirects as a browser would until one points at `stop_at` (the relying party's callback),
    which is returned unvisited."""
    while response.is_redirect:
        location = urllib.parse.urljoin(response.url, response.headers["Location"])
        if stop_at in location:
            return location
        response = session.get(location, allow_redirects=False)
    raise AssertionError(f"no redirect to {stop_at}; ended at {response.url} ({response.status_code})")


def sign_in_at_provider(
    session: requests.Session, start: str, user: str, otp: str = "", callback: str = "callback"
) -> str:
    """Opens `start` (the relying party's sign-in), fills the provider's login form as `user` (with the
    one-time code when given) and returns the callback URL the provider redirects to, not yet visited."""
    response = session.get(start, allow_redirects=False)
    assert response.is_redirect, response.text[:500]
    authorize = urllib.parse.urljoin(response.url, response.headers["Location"])
    return fill_login_form(session, session.get(authorize), user, otp, callback)


def fill_login_form(
    session: requests.Session, form: requests.Response, user: str, otp: str, callback: str
) -> str:
    action = re.search(r'<form method="post" action="([^"]+)"', form.text)
    assert action, f"no login form at {form.url}:\n{form.text[:1000]}"
    posted = session.post(
        urllib.parse.urljoin(form.url, action.group(1)),
        data={"username": user, "password": USERS[user]["password"], "otp": otp},
        allow_redirects=False,
    )
    return follow_to(session, posted, callback)
