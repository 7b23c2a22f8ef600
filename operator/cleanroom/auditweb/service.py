"""The audit service: the ingestion endpoint for writers and the security officers' web page.

- `POST /api/v1/events`: events from writers (the operator, the hub), each request carrying a Kubernetes
  service-account token for the audience `cleanroom-audit` whose subject is one of the allowed writers.
  Retries are idempotent: an event id already in the log is not stored again. Each record carries the
  service's own receive time beside the time the writer claims, and each answer a signed receipt (the
  chain's head after the batch) that the writer keeps as a witness (`receipts`).
- `/`: search and filters, a dataset's access history, a user's timeline, chain verification and CSV
  export, for users whose sign-in token (the same issuer as the hub's) carries the `security-officer` role.
  Officers sign in through the platform's OpenID Connect provider (CLEANROOM_AUDIT_OIDC_*, the code flow with
  PKCE: /oidc/login, /oidc/callback, /logout; `cleanroom.oidc.RelyingParty`), or post a token to /login (the
  CLEANROOM_AUDIT_USER_* issuer, for scripts). The ID token or posted token is kept in a Secure, HttpOnly,
  SameSite=Strict cookie and verified again on every request. The
  page reads the index only to find records; what it shows is read back from the chain (`index`).
  Verification trusts the keys in CLEANROOM_AUDIT_TRUSTED_KEYS (a file the chart mounts from a ConfigMap),
  never the trail's own keys.json.
- `GET /metrics`: Prometheus metrics (events received, chain length, age of the newest checkpoint, failed
  verifications; `auditweb.metrics`), unauthenticated: counts only. With `--metrics-port` they are served on
  that port alone (plain HTTP) and not on the service's own, which every writer and the API server reach:
  the chart's NetworkPolicy admits only Prometheus to the metrics port.

Configuration from the environment (`ServiceConfig.from_env`); the CLI entry is `cleanroom audit serve`."""

from __future__ import annotations

import asyncio
import hmac
import html
import io
import json
import logging
import os
import sqlite3
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cleanroom.airlock.proofs import is_decision_nonce
from cleanroom.api.contract import DEFAULT_SECURITY_OFFICER_GROUP, SECURITY_OFFICER_ROLE
from cleanroom.audit.csvsafe import write_csv
from cleanroom.audit.events import Actor, AuditEvent, InvalidEvent, event_from_json
from cleanroom.audit.index import AuditIndex, find, set_aside
from cleanroom.audit.k8s import translate_list
from cleanroom.audit.segments import shipper_from_env
from cleanroom.audit.spool import AuditLog, load_signing_key, verify_directory
from cleanroom.audit.trust import ENV as TRUSTED_KEYS_ENV
from cleanroom.audit.trust import NoTrustAnchor, configured
from cleanroom.auditweb.export_desk import ExportDesk
from cleanroom.auditweb.metrics import ServiceMetrics
from cleanroom.oidc import OidcSettings, RelyingParty, require_mfa
from cleanroom.tokens import Identity, TokenPolicy, TokenRejected, load_jwks
from cleanroom.tokens import verify as verify_token

LOGGER = logging.getLogger("cleanroom.auditweb")
OFFICER_ROLE = SECURITY_OFFICER_ROLE
COOKIE = "cleanroom-audit-session"
# A sign-in in flight: the state of this browser's attempt. SameSite=Lax, because the provider's redirect back
# is a cross-site navigation, which does not carry a Strict cookie.
STATE_COOKIE = "cleanroom-audit-oidc-state"
UNAUTHENTICATED = "unauthenticated"  # the actor of a refused sign-in, as the hub names it
NEXT_COOKIE = "cleanroom-audit-oidc-next"  # the page to return to after signing in
FILTERS = ("actor", "action", "dataset", "workspace", "since", "until")
PAGE_LIMIT = 500


@dataclass(frozen=True)
class ServiceConfig:
    directory: Path
    signing_key: Path
    writer_issuer: str
    writer_jwks: str
    writers: frozenset[str]
    user_issuer: str
    user_jwks: str
    user_audience: str
    role_claim: str = "groups"
    writer_audience: str = "cleanroom-audit"
    webhook_token: str = ""
    # The officers' Verify: the trusted key fingerprints (a file; "" = none configured, verification fails
    # saying so) and how old the newest checkpoint may be (None: no limit).
    trusted_keys: str = ""
    max_checkpoint_age: float | None = None
    checkpoint_seconds: float = 60.0
    # Officers' sign-in through the OpenID Connect provider (CLEANROOM_AUDIT_OIDC_*; cleanroom.oidc.settings).
    oidc: OidcSettings | None = None
    # The exports page (with OIDC sign-in only): whose members decide on exports as SecurityOfficer.
    export_officer_group: str = DEFAULT_SECURITY_OFFICER_GROUP

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> ServiceConfig:
        env = os.environ if env is None else env
        required = {
            "CLEANROOM_AUDIT_DIR": "the audit spool directory",
            "CLEANROOM_AUDIT_SIGNING_KEY": "the checkpoint signing key (PEM)",
            "CLEANROOM_AUDIT_WRITER_ISSUER": "the issuer of writers' service-account tokens, or 'kubernetes'",
            "CLEANROOM_AUDIT_WRITER_JWKS": "the API server's JWKS (file, URL, or 'kubernetes')",
            "CLEANROOM_AUDIT_WRITERS": "comma-separated service accounts allowed to write",
            "CLEANROOM_AUDIT_USER_ISSUER": "the issuer of sign-in tokens",
            "CLEANROOM_AUDIT_USER_JWKS": "the sign-in issuer's JWKS (file or URL)",
            "CLEANROOM_AUDIT_USER_AUDIENCE": "the audience of sign-in tokens",
        }
        oidc = OidcSettings.from_env("CLEANROOM_AUDIT_OIDC_", env)
        if oidc is not None:  # officers sign in through the provider; posted tokens only where configured
            for name in (
                "CLEANROOM_AUDIT_USER_ISSUER",
                "CLEANROOM_AUDIT_USER_JWKS",
                "CLEANROOM_AUDIT_USER_AUDIENCE",
            ):
                required.pop(name)
        missing = [f"{name} ({meaning})" for name, meaning in required.items() if not env.get(name)]
        if missing:
            raise ValueError("the audit service is not configured: set " + "; ".join(missing))
        return ServiceConfig(
            directory=Path(env["CLEANROOM_AUDIT_DIR"]),
            signing_key=Path(env["CLEANROOM_AUDIT_SIGNING_KEY"]),
            writer_issuer=env["CLEANROOM_AUDIT_WRITER_ISSUER"],
            writer_jwks=env["CLEANROOM_AUDIT_WRITER_JWKS"],
            writers=frozenset(w.strip() for w in env["CLEANROOM_AUDIT_WRITERS"].split(",") if w.strip()),
            user_issuer=env.get("CLEANROOM_AUDIT_USER_ISSUER", ""),
            user_jwks=env.get("CLEANROOM_AUDIT_USER_JWKS", ""),
            user_audience=env.get("CLEANROOM_AUDIT_USER_AUDIENCE", ""),
            oidc=oidc,
            role_claim=env.get("CLEANROOM_AUDIT_ROLE_CLAIM", "groups"),
            # The API server's audit webhook authenticates with this bearer token (its webhook kubeconfig).
            webhook_token=Path(env["CLEANROOM_AUDIT_WEBHOOK_TOKEN_FILE"]).read_text().strip()
            if env.get("CLEANROOM_AUDIT_WEBHOOK_TOKEN_FILE")
            else "",
            trusted_keys=env.get(TRUSTED_KEYS_ENV, ""),
            max_checkpoint_age=float(env["CLEANROOM_AUDIT_MAX_CHECKPOINT_AGE"])
            if env.get("CLEANROOM_AUDIT_MAX_CHECKPOINT_AGE")
            else None,
            checkpoint_seconds=float(env.get("CLEANROOM_AUDIT_CHECKPOINT_SECONDS", "60")),
            export_officer_group=env.get(
                "CLEANROOM_AUDIT_EXPORT_OFFICER_GROUP", DEFAULT_SECURITY_OFFICER_GROUP
            ),
        )


def _from_kubernetes(path: str) -> dict[str, Any]:
    """The API server's own OIDC discovery documents, read with this pod's service account (the chart binds
    system:service-account-issuer-discovery to it)."""
    from cleanroom._clients.kube import api_client

    client = api_client()
    method, url, headers, body, post_params = client.param_serialize(
        method="GET", resource_path=path, auth_settings=["BearerToken"]
    )
    response = client.call_api(method, url, header_params=headers, body=body, post_params=post_params)
    response.read()  # type: ignore[no-untyped-call]
    return dict(json.loads(response.data or b"{}"))


def writer_issuer(configured: str) -> str:
    return (
        str(_from_kubernetes("/.well-known/openid-configuration")["issuer"])
        if configured == "kubernetes"
        else configured
    )


def _load_jwks(source: str) -> dict[str, jwt.PyJWK]:
    if source == "kubernetes":
        return load_jwks(_from_kubernetes("/openid/v1/jwks"))
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as response:
            return load_jwks(json.load(response))
    return load_jwks(json.loads(Path(source).read_text()))


class AuditService:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.log = AuditLog(
            config.directory,
            load_signing_key(config.signing_key),
            checkpoint_seconds=config.checkpoint_seconds,
        )
        self.metrics = ServiceMetrics(self.log)
        self.writer_keys = _load_jwks(config.writer_jwks)
        self.user_keys = _load_jwks(config.user_jwks) if config.user_jwks else {}
        self.signin = RelyingParty(config.oidc) if config.oidc else None
        # Decisions on exports are signed at the provider, so the exports page exists with OIDC sign-in only.
        self.desk = (
            ExportDesk(
                self.log,
                self.signin,
                config.export_officer_group,
                lambda title, body, status: _page(title, body, status),
                self.session_user,
                self._callback_url,
                STATE_COOKIE,
            )
            if self.signin is not None
            else None
        )
        self.writer_policy = TokenPolicy(
            writer_issuer(config.writer_issuer), config.writer_audience, groups_claim="-"
        )
        self.user_policy = TokenPolicy(
            config.user_issuer, config.user_audience, groups_claim=config.role_claim
        )

    # --- who is asking ---------------------------------------------------------------------------------

    def writer(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise _refuse(401, "send a service-account token: Authorization: Bearer <token>")
        try:
            identity = verify_token(header[7:].strip(), self.writer_keys, self.writer_policy)
        except TokenRejected as refusal:
            raise _refuse(401, refusal.reason) from None
        if identity.username not in self.config.writers:
            raise _refuse(403, f"{identity.username} may not write audit events")
        return identity.username

    async def officer(self, request: web.Request) -> Identity:
        identity, _token = await self.session_user(request)
        if OFFICER_ROLE not in identity.groups:
            raise _refuse(403, f"{identity.username} does not have the {OFFICER_ROLE} role", page=True)
        return identity

    async def session_user(self, request: web.Request) -> tuple[Identity, str]:
        """Who this browser's session is, and its token; without one (or with an expired one) the browser is
        sent to sign in. The trail's pages need the officer role besides (`officer`)."""
        token = request.cookies.get(COOKIE, "")
        # With the provider, a page opened without a session (or with an expired one: Keycloak's ID tokens last
        # minutes) signs in again through it and comes back; the provider's own session makes that one round
        # trip. A POST cannot be replayed after it: that one goes to the sign-in page.
        again = (
            "/oidc/login?" + urllib.parse.urlencode({"next": request.raw_path})
            if self.signin is not None and request.method == "GET"
            else ""
        )
        if not token:
            raise web.HTTPFound(again or "/login")
        try:
            identity = await asyncio.to_thread(self.signed_in, token)
        except TokenRejected:
            raise web.HTTPFound(again or "/login?expired=1") from None
        return identity, token

    def signed_in(self, token: str) -> Identity:
        """Blocking (the provider's keys may be fetched). The session's user: an ID token from the OpenID
        Connect sign-in (this client's audience), or a token posted to /login (the USER_* issuer), each under
        the multi-factor rule when one is configured."""
        refusal = TokenRejected(401, "sign-in with a token is not configured here")
        if self.signin is not None:
            try:
                identity = self.signin.session(token)
            except TokenRejected as first:
                refusal = first
            else:
                # A decision's sign-in is readable by whoever reads its ExportRequest: it is never a session.
                if is_decision_nonce(identity.claims):
                    raise TokenRejected(401, "a decision's sign-in is not a session; sign in")
                return identity
        if not self.user_keys:
            raise refusal
        identity = verify_token(token, self.user_keys, self.user_policy)
        if self.config.oidc is not None:
            require_mfa(identity.claims, self.config.oidc.rules.mfa_acr, self.config.oidc.rules.mfa_amr)
        return identity

    def _record_sign_in(self, name: str, outcome: str, reason: str) -> None:
        """Who signed in to the trail, or was refused, goes into the trail itself (the officers' reading of the
        trail is itself reviewable); the reason, never the token."""
        self.log.append(
            [AuditEvent("officer.login", Actor("user", name or UNAUTHENTICATED), outcome, reason=reason)]
        )

    # --- handlers ----------------------------------------------------------------------------------------

    async def ingest(self, request: web.Request) -> web.Response:
        writer = self.writer(request)
        try:
            body = await request.json()
        except ValueError:
            raise _refuse(400, 'the body must be JSON: {"events": [...]}') from None
        raw = body.get("events") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            raise _refuse(400, 'the body must be {"events": [event, ...]} with at least one event')
        try:
            events = [event_from_json(item) for item in raw]
        except (InvalidEvent, KeyError, TypeError) as error:
            raise _refuse(400, f"invalid event: {error}") from None
        sequences = self.log.append(events)
        self.metrics.received("writers", len(events))
        return web.json_response(
            {"writer": writer, "sequences": sequences, "receipt": self.log.receipt(writer)}, status=201
        )

    async def kubernetes_audit(self, request: web.Request) -> web.Response:
        """The kube-apiserver's audit webhook: exec, attach, port-forward and writes to Datasets/Workspaces."""
        expected = self.config.webhook_token
        header = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(header.encode(), f"Bearer {expected}".encode()):
            raise _refuse(401, "the API server's webhook token is required")
        try:
            events = translate_list(await request.json())
        except (ValueError, KeyError, TypeError) as error:
            raise _refuse(400, f"not an audit EventList: {error}") from None
        if events:
            self.log.append(events)
            self.metrics.received("kubernetes", len(events))
        return web.json_response({"recorded": len(events)}, status=200)

    async def login_form(self, request: web.Request) -> web.Response:
        note = (
            "<p class='note'>Your session expired; sign in again.</p>" if request.query.get("expired") else ""
        )
        if self.config.oidc is not None:
            service = html.escape(self.config.oidc.login_service)
            return _page(
                "Sign in",
                f"{note}<p><a id='oidc-sign-in' href='/oidc/login'>Sign in with {service}</a></p>",
            )
        return _page(
            "Sign in",
            f"""{note}<form method="post" action="/login">
<label for="token">Access token</label><textarea id="token" name="token" rows="5" required></textarea>
<button id="sign-in" type="submit">Sign in</button></form>""",
        )

    async def login(self, request: web.Request) -> web.Response:
        token = str((await request.post()).get("token", "")).strip()
        try:
            identity = await asyncio.to_thread(self.signed_in, token)
        except TokenRejected as refusal:
            self._record_sign_in("", "denied", f"token: {refusal.reason}")
            return _page(
                "Sign in refused", f"<p id='error'>{html.escape(refusal.reason)}</p>", status=refusal.status
            )
        if OFFICER_ROLE not in identity.groups:
            self._record_sign_in(identity.username, "denied", f"token: no {OFFICER_ROLE} role")
            return _page(
                "Forbidden",
                f"<p id='error'>{html.escape(identity.username)} does not have the {OFFICER_ROLE} role.</p>",
                status=403,
            )
        self._record_sign_in(identity.username, "success", "token")
        response = web.HTTPFound("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=True, path="/")
        raise response

    def _callback_url(self, request: web.Request) -> str:
        assert self.config.oidc is not None
        return self.config.oidc.callback_url or f"{request.scheme}://{request.host}/oidc/callback"

    async def oidc_login(self, request: web.Request) -> web.Response:
        if self.signin is None:
            raise web.HTTPNotFound()
        try:
            url, state = await asyncio.to_thread(self.signin.start, self._callback_url(request))
        except (OSError, ValueError) as error:
            LOGGER.error("OpenID Connect discovery failed: %s", error)
            return _page(
                "Sign in",
                f"<p id='error'>The identity provider does not answer: {html.escape(str(error))}</p>",
                503,
            )
        response = web.HTTPFound(url)
        response.set_cookie(
            STATE_COOKIE, state, httponly=True, samesite="Lax", secure=True, path="/oidc", max_age=600
        )
        back = request.query.get("next", "/")
        response.set_cookie(
            NEXT_COOKIE,
            back if _local(back) else "/",
            httponly=True,
            samesite="Lax",
            secure=True,
            path="/oidc",
        )
        raise response

    async def oidc_callback(self, request: web.Request) -> web.Response:
        if self.signin is None:
            raise web.HTTPNotFound()
        cookie_state = request.cookies.get(STATE_COOKIE, "")
        if self.desk is not None and self.desk.owns(cookie_state):
            answer = await self.desk.callback(request, cookie_state)
            answer.del_cookie(STATE_COOKIE, path="/oidc")
            return answer
        try:
            identity, id_token = await asyncio.to_thread(
                self.signin.finish, cookie_state, dict(request.query), self._callback_url(request)
            )
        except TokenRejected as refusal:
            LOGGER.warning("officer sign-in refused (%s): %s", refusal.status, refusal.reason)
            self._record_sign_in("", "denied", f"openid connect: {refusal.reason}")
            response = _page(
                "Sign in refused",
                f"<p id='error'>{html.escape(refusal.reason)}</p><p><a id='oidc-sign-in' href='/oidc/login'>Sign in again</a></p>",
                status=refusal.status,
            )
            response.del_cookie(STATE_COOKIE, path="/oidc")
            return response
        steward = OFFICER_ROLE not in identity.groups and await self._steward(identity)
        if OFFICER_ROLE not in identity.groups and not steward:
            self._record_sign_in(identity.username, "denied", f"openid connect: no {OFFICER_ROLE} role")
            response = _page(
                "Forbidden",
                f"<p id='error'>{html.escape(identity.username)} does not have the {OFFICER_ROLE} role.</p>",
                status=403,
            )
        else:
            # A page that moves on by itself rather than a redirect: the browser arrived here from the provider
            # (cross-site), and the session cookie is SameSite=Strict, which a redirect in that same navigation
            # would not send.
            self._record_sign_in(
                identity.username,
                "success",
                "openid connect" + (" (data steward: exports only)" if steward else ""),
            )
            back = request.cookies.get(NEXT_COOKIE, "/")
            back = "/exports" if steward and back == "/" else back  # a steward may open nothing else
            back = html.escape(back if _local(back) else "/")
            response = _page(
                "Signed in",
                f"<meta http-equiv='refresh' content='0;url={back}'><p>Signed in as "
                f"{html.escape(identity.username)}. <a id='continue' href='{back}'>Continue</a></p>",
            )
            response.set_cookie(COOKIE, id_token, httponly=True, samesite="Strict", secure=True, path="/")
        response.del_cookie(STATE_COOKIE, path="/oidc")
        response.del_cookie(NEXT_COOKIE, path="/oidc")
        return response

    async def _steward(self, identity: Identity) -> bool:
        """Whether a user without the officer role is a data steward of some Dataset: they may open the
        exports page (and nothing else here)."""
        if self.desk is None:
            return False
        try:
            groups = await asyncio.to_thread(self.desk.steward_groups)
        except Exception as error:  # the API server is unreachable: nobody is a steward until it answers
            LOGGER.warning("the Datasets' steward groups cannot be read: %s", error)
            return False
        return bool(groups & set(identity.groups))

    async def exports(self, request: web.Request) -> web.Response:
        if self.desk is None:
            raise web.HTTPNotFound(
                text="the exports page needs OpenID Connect sign-in (CLEANROOM_AUDIT_OIDC_*)"
            )
        return await self.desk.exports(request)

    async def decide(self, request: web.Request) -> web.Response:
        if self.desk is None:
            raise web.HTTPNotFound(
                text="the exports page needs OpenID Connect sign-in (CLEANROOM_AUDIT_OIDC_*)"
            )
        return await self.desk.decide(request)

    async def logout(self, request: web.Request) -> web.Response:
        """Ends the session here and, where the provider offers it, there (the next sign-in asks again)."""
        back = f"{request.scheme}://{request.host}/login"
        target = await asyncio.to_thread(self.signin.logout, back) if self.signin is not None else ""
        response = web.HTTPFound(target or "/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def search(self, request: web.Request) -> web.Response:
        identity = await self.officer(request)
        filters = {name: request.query.get(name, "").strip() for name in FILTERS}
        found, total = await asyncio.to_thread(
            find, self.config.directory, filters, limit=PAGE_LIMIT, newest_first=True
        )
        rows = "".join(_row(record) for record in found)
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v})
        inputs = "".join(
            f"<label>{name}<input name='{name}' id='f-{name}' value='{html.escape(value)}'></label>"
            for name, value in filters.items()
        )
        body = f"""<p class="who">Signed in as <span id="user">{html.escape(identity.username)}</span>
 &middot; <a id="logout" href="/logout">Sign out</a></p>
<form method="get" action="/" id="filters">{inputs}<button id="search" type="submit">Search</button></form>
<p><span id="count">{total}</span> events{" (newest " + str(PAGE_LIMIT) + " shown)" if total > PAGE_LIMIT else ""}
 &middot; <a id="export" href="/export.csv?{query}">CSV export</a>
 &middot; <a id="exports" href="/exports">Exports waiting for approval</a></p>
<form method="post" action="/verify"><button id="verify" type="submit">Verify the chain</button></form>
<table id="events"><thead><tr><th>seq</th><th>time (writer)</th><th>received</th><th>actor</th><th>action</th><th>outcome</th><th>resources</th><th>reason</th></tr></thead>
<tbody>{rows}</tbody></table>"""
        return _page("Audit trail", body)

    async def verify_chain(self, request: web.Request) -> web.Response:
        await self.officer(request)
        result, ok = await asyncio.to_thread(self.verification)
        self.metrics.verified(ok)
        return _page(
            "Verification",
            result + "<p><a href='/'>Back to the trail</a></p>",
            status=200 if ok else 409,
        )

    def verification(self) -> tuple[str, bool]:
        """What the officers' Verify shows: the chain under the configured trusted keys and age limit, then
        the index against the chain."""
        try:
            if not self.config.trusted_keys:
                raise NoTrustAnchor(
                    f"no trusted key fingerprints configured ({TRUSTED_KEYS_ENV}; the chart's audit.trustedKeys)"
                )
            anchors = configured(
                env={TRUSTED_KEYS_ENV: self.config.trusted_keys}, trail=self.config.directory
            )
        except NoTrustAnchor as missing:
            return f"<p id='verify-result' class='bad'>NOT VERIFIED: {html.escape(str(missing))}</p>", False
        report = verify_directory(
            self.config.directory, anchors, max_age_seconds=self.config.max_checkpoint_age
        )
        problem = report.problem
        if problem is not None:
            return (
                f"<p id='verify-result' class='bad'>FAILED at sequence {problem.seq}: {html.escape(problem.kind)}: "
                f"{html.escape(problem.detail)}</p>",
                False,
            )
        lines = [
            f"<p id='verify-result' class='ok'>OK: {report.records} records, every link and checkpoint "
            f"signature holds ({report.checkpoints} checkpoints, signed by trusted keys).</p>"
        ]
        if report.unsealed:
            lines.append(
                f"<p id='unsealed'>Records {report.sealed + 1} to {report.records} come after the newest "
                f"checkpoint ({html.escape(report.newest or 'none')}): not sealed yet.</p>"
            )
        try:
            with closing(AuditIndex(self.config.directory)) as index:
                disagreement = index.check()
        except sqlite3.Error as error:
            set_aside(self.config.directory, error)
            lines.append(
                f"<p id='index-unusable' class='bad'>The search index cannot be read ({html.escape(str(error))}); "
                "searches read the chain itself until it can.</p>"
            )
            return "".join(lines), True
        if disagreement is not None:
            lines.append(
                f"<p id='index-rebuilt' class='bad'>The search index disagreed with the chain at record "
                f"{disagreement} and was rebuilt from the chain.</p>"
            )
        return "".join(lines), True

    async def export_csv(self, request: web.Request) -> web.Response:
        await self.officer(request)
        filters = {name: request.query.get(name, "").strip() for name in FILTERS}
        found, _total = await asyncio.to_thread(find, self.config.directory, filters)
        out = io.StringIO()
        write_csv(
            out,
            ["seq", "time", "received", "actor", "action", "outcome", "resources", "reason", "id"],
            (
                [
                    record["seq"],
                    record["event"]["time"],
                    record.get("received", ""),
                    record["event"]["actor"]["name"],
                    record["event"]["action"],
                    record["event"]["outcome"],
                    json.dumps(record["event"].get("resources") or {}, sort_keys=True),
                    record["event"].get("reason", ""),
                    record["event"]["id"],
                ]
                for record in found
            ),
        )
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": "attachment; filename=cleanroom-audit.csv"},
        )

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        # Counts and ages only, no event content: the chart's NetworkPolicy lets Prometheus reach it.
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _ship_forever(self, app: web.Application) -> Any:
        """Ship sealed segments to S3 every CLEANROOM_AUDIT_S3_SHIP_SECONDS; an outage is retried, never lost."""
        shipper = shipper_from_env(self.config.directory)
        task = None
        if shipper is not None:
            period = float(os.environ.get("CLEANROOM_AUDIT_S3_SHIP_SECONDS", "30"))

            async def loop() -> None:
                while True:
                    try:
                        await asyncio.to_thread(shipper.ship)
                    except Exception as error:  # the store is down or refusing: keep the spool, try again
                        LOGGER.warning("audit segments not shipped yet: %s", error)
                    await asyncio.sleep(period)

            task = asyncio.create_task(loop())
        yield
        if task is not None:
            task.cancel()

    async def _seal_forever(self, _app: web.Application) -> Any:
        """Sign a checkpoint at start and then every `checkpoint_seconds`, idle or not, so a verifier can
        require a recent one: a trail whose tail was cut off together with its checkpoints then shows an old
        newest checkpoint. The first one is signed at start because a verifier with an age limit refuses a
        trail that no checkpoint seals yet, and a new service would otherwise fail its first minute."""

        async def seal() -> None:
            try:
                await asyncio.to_thread(self.log.checkpoint)
            except Exception as error:  # a full disk: keep serving, the age limit will show it
                self.metrics.checkpoint_failed()
                LOGGER.error("audit checkpoint not signed: %s", error)

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.config.checkpoint_seconds)
                await seal()

        await seal()
        task = asyncio.create_task(loop())
        yield
        task.cancel()

    def metrics_app(self) -> web.Application:
        """GET /metrics and nothing else: what the metrics port serves."""
        app = web.Application()
        app.add_routes([web.get("/metrics", self.metrics_page)])
        return app

    def _metrics_listener(self, host: str, port: int) -> Any:
        async def listen(_app: web.Application) -> Any:
            runner = web.AppRunner(self.metrics_app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            yield
            await runner.cleanup()

        return listen

    def app(self, metrics_port: int = 0, metrics_host: str = "0.0.0.0") -> web.Application:
        """The service; with a metrics port, /metrics is served there (by a listener of this app's lifetime)
        instead of here, so that a network policy can tell Prometheus from the writers."""
        app = web.Application(middlewares=[_security_headers])
        app.cleanup_ctx.append(self._ship_forever)
        app.cleanup_ctx.append(self._seal_forever)
        app.add_routes(
            [
                web.post("/api/v1/events", self.ingest),
                web.post("/api/v1/kubernetes-audit", self.kubernetes_audit),
                web.get("/login", self.login_form),
                web.post("/login", self.login),
                web.get("/oidc/login", self.oidc_login),
                web.get("/oidc/callback", self.oidc_callback),
                web.get("/logout", self.logout),
                web.get("/", self.search),
                web.post("/verify", self.verify_chain),
                web.get("/export.csv", self.export_csv),
                web.get("/exports", self.exports),
                web.post("/exports/decide", self.decide),
                web.get("/healthz", self.health),
            ]
        )
        if metrics_port:
            app.cleanup_ctx.append(self._metrics_listener(metrics_host, metrics_port))
        else:
            app.add_routes([web.get("/metrics", self.metrics_page)])
        return app


def _local(path: str) -> bool:
    """A path on this service, never another site (`//host` and `/\\host` are other sites to a browser)."""
    return path.startswith("/") and not path.startswith(("//", "/\\")) and not any(c in path for c in "\r\n")


def _refuse(status: int, reason: str, page: bool = False) -> web.HTTPException:
    kind = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden}[status]
    if page:
        return kind(
            text=_html("Forbidden", f"<p id='error'>{html.escape(reason)}</p>"), content_type="text/html"
        )
    return kind(text=json.dumps({"error": reason}), content_type="application/json")


def _row(record: Mapping[str, Any]) -> str:
    event = record["event"]
    resources = ", ".join(f"{k}={v}" for k, v in sorted((event.get("resources") or {}).items()))
    actor = html.escape(event["actor"]["name"])
    dataset = (event.get("resources") or {}).get("dataset", "")
    resources_html = html.escape(resources)
    if dataset:
        resources_html += f" <a class='history' href='/?dataset={urllib.parse.quote(dataset)}'>history</a>"
    return (
        f"<tr class='event outcome-{html.escape(event['outcome'])}'><td>{record['seq']}</td><td>{html.escape(event['time'])}</td>"
        f"<td>{html.escape(str(record.get('received', '')))}</td>"
        f"<td><a class='timeline' href='/?actor={urllib.parse.quote(event['actor']['name'])}'>{actor}</a></td>"
        f"<td>{html.escape(event['action'])}</td><td>{html.escape(event['outcome'])}</td>"
        f"<td>{resources_html}</td><td>{html.escape(event.get('reason', ''))}</td></tr>"
    )


_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #ddd;padding:4px;font-size:13px;text-align:left}"
    "label{margin-right:1em}.ok{color:#060}.bad{color:#a00}.outcome-denied{background:#fff3f3}textarea{width:100%}"
)


def _html(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title} - cleanroom audit</title>"
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>{body}</body></html>"
    )


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=_html(title, body), content_type="text/html", status=status)


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def serve(host: str, port: int, tls_cert: str = "", tls_key: str = "", metrics_port: int = 0) -> None:
    """Serve HTTP, or HTTPS with a certificate (the API server sends its webhook token only over TLS); with a
    metrics port, /metrics on it alone."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context = None
    if tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key or None)
    web.run_app(
        AuditService(ServiceConfig.from_env()).app(metrics_port, host),
        host=host,
        port=port,
        ssl_context=context,
        print=None,
    )
