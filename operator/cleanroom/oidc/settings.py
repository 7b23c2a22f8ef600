"""A relying party's OpenID Connect settings, from the environment (the chart sets them from its values).

The hub reads them under CLEANROOM_HUB_OIDC_, the audit service under CLEANROOM_AUDIT_OIDC_:

| suffix | meaning |
| --- | --- |
| ISSUER | the provider's issuer URL; unset: no OpenID Connect sign-in |
| CLIENT_ID | this client's id at the provider |
| CLIENT_SECRET_FILE (or CLIENT_SECRET) | its secret (the chart mounts it from a Secret) |
| SCOPES | space-separated; default `openid email profile` |
| USERNAME_CLAIM | default `sub`; `email` requires `email_verified: true` |
| GROUPS_CLAIM, ROLES_CLAIM | default `groups` and none; dotted paths reach nested claims |
| ALLOWED_GROUPS | comma-separated; when set, a user must be in one |
| MFA_ACR, MFA_AMR | comma-separated; when set, the sign-in must report one of these acr or amr values |
| USERINFO | `true`: claims from the provider's userinfo endpoint join the ID token's (groups that only it lists) |
| CALLBACK_URL | the redirect URI registered at the provider; default: from the request's own address |
| LOGIN_SERVICE | the name on the sign-in button, e.g. "your hospital" |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cleanroom.oidc.idtoken import SignInRules


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    rules: SignInRules
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    callback_url: str = ""
    login_service: str = "your institution"
    userinfo: bool = False

    @staticmethod
    def from_env(prefix: str, env: Mapping[str, str] | None = None) -> OidcSettings | None:
        """None when `<prefix>ISSUER` is unset; ValueError naming the variable when a setting is wrong."""
        env = os.environ if env is None else env
        issuer = env.get(prefix + "ISSUER", "").strip()
        if not issuer:
            return None
        if not issuer.startswith(("https://", "http://")):
            raise ValueError(f"{prefix}ISSUER must be the provider's issuer URL, got {issuer!r}")
        client_id = env.get(prefix + "CLIENT_ID", "").strip()
        if not client_id:
            raise ValueError(f"set {prefix}CLIENT_ID (this client's id at {issuer})")
        secret = env.get(prefix + "CLIENT_SECRET", "")
        if env.get(prefix + "CLIENT_SECRET_FILE"):
            secret = Path(env[prefix + "CLIENT_SECRET_FILE"]).read_text().strip()
        if not secret:
            raise ValueError(f"set {prefix}CLIENT_SECRET_FILE (a file with the client's secret)")
        scopes = tuple(env.get(prefix + "SCOPES", "openid email profile").split())
        if "openid" not in scopes:
            raise ValueError(f"{prefix}SCOPES must include openid (without it there is no ID token)")
        rules = SignInRules(
            username_claim=env.get(prefix + "USERNAME_CLAIM", "sub").strip() or "sub",
            groups_claim=env.get(prefix + "GROUPS_CLAIM", "groups").strip() or "groups",
            roles_claim=env.get(prefix + "ROLES_CLAIM", "").strip(),
            allowed_groups=_listed(env.get(prefix + "ALLOWED_GROUPS", "")),
            mfa_acr=_listed(env.get(prefix + "MFA_ACR", "")),
            mfa_amr=_listed(env.get(prefix + "MFA_AMR", "")),
        )
        return OidcSettings(
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            rules=rules,
            scopes=scopes,
            callback_url=env.get(prefix + "CALLBACK_URL", "").strip(),
            login_service=env.get(prefix + "LOGIN_SERVICE", "").strip() or "your institution",
            userinfo=env.get(prefix + "USERINFO", "").strip().lower() == "true",
        )


def _listed(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())
