"""JupyterHub configuration for cleanroom, from environment variables (the Helm chart and `make dev` set them).

A hub's `jupyterhub_config.py` is two lines: `from cleanroom.hub.config import configure; configure(c)`.

| variable | meaning |
| --- | --- |
| CLEANROOM_HUB_OIDC_* | sign-in through an OpenID Connect provider (`cleanroom.oidc.settings`); unset: token sign-in |
| CLEANROOM_HUB_ISSUER, CLEANROOM_HUB_AUDIENCE | `iss` and `aud` of bearer sign-in tokens (required without OIDC) |
| CLEANROOM_HUB_JWKS_FILE or CLEANROOM_HUB_JWKS_URL | the token issuer's public keys (with OIDC: default the provider's) |
| CLEANROOM_HUB_USERNAME_CLAIM | `sub` (default) or `email` |
| CLEANROOM_HUB_POD_API_URL | the hub API as workspace pods reach it (by IP: pods have no DNS) |
| CLEANROOM_HUB_LOCAL_PROCESS, CLEANROOM_HUB_LOCAL_ROOT | development: run sessions as local processes (`cleanroom.dev.local_sessions`) |
| CLEANROOM_HUB_METER_BUDGET_BYTES, CLEANROOM_HUB_METER_WINDOW_SECONDS | development: a local session's byte budget to the browser (pods take the operator's `browserBytesPerWindow`) |
| CLEANROOM_HUB_DB_URL | the hub's database (default: sqlite in the working directory) |
| CLEANROOM_HUB_METER_LEDGER | the file of the bytes each Workspace's meter has spent in its window (`hub.meter_ledger`; default: meter-ledger.json in the working directory; the chart: next to the database) |
| CLEANROOM_HUB_METRICS_TOKEN | the token Prometheus presents at /hub/metrics (read:metrics only; 32+ characters) |
| CLEANROOM_HUB_BIND_URL | where the proxy listens for browsers (default http://:8000) |
| CLEANROOM_HUB_API_BIND_URL | where the hub API listens (default http://127.0.0.1:8081) |
| CLEANROOM_HUB_PROXY_COMMAND | the configurable-http-proxy executable |
| CLEANROOM_HUB_PROXY_API_URL | the proxy's REST API (default http://127.0.0.1:8001) |
| CLEANROOM_HUB_PROXY_EXTERNAL | `true`: the proxy runs in its own pod (the chart); the hub does not start one |
| CLEANROOM_HUB_CONNECT_URL | the hub API as the proxy reaches it, when they are in different pods |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cleanroom.hub.authenticator import JWTAuthenticator
from cleanroom.hub.limits import install_activity_clamp, named_server_limit
from cleanroom.hub.oidc_authenticator import OIDCAuthenticator
from cleanroom.hub.pages import handlers
from cleanroom.hub.spawner import WorkspaceSpawner
from cleanroom.oidc import OidcSettings

# Development only (CLEANROOM_HUB_LOCAL_PROCESS): sessions as local processes over a local copy of the snapshot.
LOCAL_SESSION_SPAWNER = "cleanroom.dev.local_sessions.LocalSessionSpawner"


class ConfigError(ValueError):
    """A missing or wrong setting; the message names the variable."""


def configure(c: Any, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    try:
        oidc = OidcSettings.from_env("CLEANROOM_HUB_OIDC_", env)
    except (ValueError, OSError) as error:
        raise ConfigError(str(error)) from None
    if oidc is not None:
        _configure_oidc(c, oidc, env)
    else:
        _configure_tokens(c, env)

    if env.get("CLEANROOM_HUB_LOCAL_PROCESS", "") == "true":
        # Named, not imported: the development module sits above the hub, and production never loads it.
        c.JupyterHub.spawner_class = LOCAL_SESSION_SPAWNER
        c.LocalSessionSpawner.local_root = env.get("CLEANROOM_HUB_LOCAL_ROOT", "")
    else:
        c.JupyterHub.spawner_class = WorkspaceSpawner
    # Servers are Workspaces: only named servers, as many as the user has Workspaces.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = named_server_limit
    # The server's token reports activity and nothing else (JupyterHub's default adds access to the
    # server itself, which the server never needs); the server and the meter keep it from kernels.
    c.Spawner.server_token_scopes = ["users:activity!user"]
    # ~/.jupyter and the home's Jupyter paths are the user's to write: the server loads none of them.
    c.Spawner.disable_user_config = True
    install_activity_clamp()
    c.JupyterHub.default_url = "/hub/workspaces"
    c.JupyterHub.extra_handlers = handlers()
    # Where pages.MeterLedger keeps each Workspace's spent byte budget: on a volume only the hub mounts.
    c.JupyterHub.tornado_settings = {
        "cleanroom_meter_ledger": env.get("CLEANROOM_HUB_METER_LEDGER", "meter-ledger.json")
    }
    c.Spawner.default_url = "/lab"
    c.Spawner.cmd = ["jupyterhub-singleuser"]
    c.WorkspaceSpawner.pod_hub_api_url = env.get("CLEANROOM_HUB_POD_API_URL", "")
    # A local session's byte meter (traitlets gives a class the settings of the classes it derives from).
    for variable, trait in (
        ("CLEANROOM_HUB_METER_BUDGET_BYTES", "meter_budget_bytes"),
        ("CLEANROOM_HUB_METER_WINDOW_SECONDS", "meter_window_seconds"),
    ):
        if env.get(variable):
            if not env[variable].isdigit() or int(env[variable]) < 1:
                raise ConfigError(f"{variable} must be a whole number above 0, got {env[variable]!r}")
            setattr(c.WorkspaceSpawner, trait, int(env[variable]))
    c.JupyterHub.bind_url = env.get("CLEANROOM_HUB_BIND_URL", "http://:8000")
    c.JupyterHub.hub_bind_url = env.get("CLEANROOM_HUB_API_BIND_URL", "http://127.0.0.1:8081")
    if env.get("CLEANROOM_HUB_PROXY_COMMAND"):
        c.ConfigurableHTTPProxy.command = [env["CLEANROOM_HUB_PROXY_COMMAND"]]
    if env.get("CLEANROOM_HUB_PROXY_API_URL"):
        c.ConfigurableHTTPProxy.api_url = env["CLEANROOM_HUB_PROXY_API_URL"]
    if env.get("CLEANROOM_HUB_PROXY_EXTERNAL") == "true":
        # Its auth token comes from CONFIGPROXY_AUTH_TOKEN, which both pods read from one Secret.
        c.ConfigurableHTTPProxy.should_start = False
    if env.get("CLEANROOM_HUB_CONNECT_URL"):
        c.JupyterHub.hub_connect_url = env["CLEANROOM_HUB_CONNECT_URL"]
    if env.get("CLEANROOM_HUB_DB_URL"):
        c.JupyterHub.db_url = env["CLEANROOM_HUB_DB_URL"]
    metrics_token = env.get("CLEANROOM_HUB_METRICS_TOKEN", "")
    if metrics_token:
        if len(metrics_token) < 32:
            raise ConfigError("CLEANROOM_HUB_METRICS_TOKEN must be at least 32 characters (a random secret)")
        # /hub/metrics answers only a token with read:metrics: Prometheus's, and nothing else it may do.
        c.JupyterHub.authenticate_prometheus = True
        c.JupyterHub.services = [{"name": "prometheus", "api_token": metrics_token}]
        c.JupyterHub.load_roles = [
            {"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]}
        ]
    # Stops the server, and with it the Workspace's pod, when the hub sees no activity; the operator's
    # idleTimeout is the backstop that also covers a hub that is down.
    c.JupyterHub.last_activity_interval = 60


def _configure_tokens(c: Any, env: Mapping[str, str]) -> None:
    """Token sign-in (the default): a bearer JWT from the platform's issuer, in a header or pasted."""
    for name in ("CLEANROOM_HUB_ISSUER", "CLEANROOM_HUB_AUDIENCE"):
        if not env.get(name):
            raise ConfigError(
                f"set {name} (the sign-in tokens' {'iss' if 'ISSUER' in name else 'aud'} claim), or "
                "CLEANROOM_HUB_OIDC_ISSUER for sign-in through OpenID Connect"
            )
    if not env.get("CLEANROOM_HUB_JWKS_FILE") and not env.get("CLEANROOM_HUB_JWKS_URL"):
        raise ConfigError("set CLEANROOM_HUB_JWKS_FILE or CLEANROOM_HUB_JWKS_URL (the issuer's public keys)")
    c.JupyterHub.authenticator_class = JWTAuthenticator
    c.JWTAuthenticator.issuer = env["CLEANROOM_HUB_ISSUER"]
    c.JWTAuthenticator.audience = env["CLEANROOM_HUB_AUDIENCE"]
    c.JWTAuthenticator.jwks_file = env.get("CLEANROOM_HUB_JWKS_FILE", "")
    c.JWTAuthenticator.jwks_url = env.get("CLEANROOM_HUB_JWKS_URL", "")
    c.JWTAuthenticator.username_claim = env.get("CLEANROOM_HUB_USERNAME_CLAIM", "sub")


def _configure_oidc(c: Any, oidc: OidcSettings, env: Mapping[str, str]) -> None:
    """Browsers sign in through the provider; API clients keep the bearer path, with the CLEANROOM_HUB_ISSUER,
    _AUDIENCE and _JWKS_* settings where given (the provider's issuer and keys otherwise)."""
    c.JupyterHub.authenticator_class = OIDCAuthenticator
    a = c.OIDCAuthenticator
    a.issuer, a.client_id, a.client_secret = oidc.issuer, oidc.client_id, oidc.client_secret
    a.scope = list(oidc.scopes)
    a.login_service = oidc.login_service
    a.username_claim = oidc.rules.username_claim
    a.groups_claim, a.roles_claim = oidc.rules.groups_claim, oidc.rules.roles_claim
    a.allowed_groups = set(oidc.rules.allowed_groups)
    a.mfa_acr, a.mfa_amr = list(oidc.rules.mfa_acr), list(oidc.rules.mfa_amr)
    a.userinfo = oidc.userinfo
    if oidc.callback_url:
        a.oauth_callback_url = oidc.callback_url
    a.bearer_jwks = env.get("CLEANROOM_HUB_JWKS_FILE", "") or env.get("CLEANROOM_HUB_JWKS_URL", "")
    # Without keys of their own, bearer tokens can only be the provider's: its issuer, whatever ISSUER says.
    a.bearer_issuer = env.get("CLEANROOM_HUB_ISSUER", "") if a.bearer_jwks else ""
    a.bearer_audience = env.get("CLEANROOM_HUB_AUDIENCE", "")
    # Tokens of an issuer of their own name users by its claim (hub.auth.usernameClaim); the provider's, by
    # the provider's. Either way the user is the same name a Workspace lists.
    a.bearer_username_claim = env.get("CLEANROOM_HUB_USERNAME_CLAIM", "sub") if a.bearer_jwks else ""
