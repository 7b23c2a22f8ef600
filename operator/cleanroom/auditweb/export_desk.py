"""The exports page: security officers and data stewards see the ExportRequests waiting for them, with their
checks, and approve or reject them. The I/O half; what is decided is `auditweb.exports`.

How a decision reaches the API server without the page holding a power of its own: the form (CSRF token bound
to the session) sends the browser to the identity provider once more, for an ID token whose nonce commits to
this decision (`airlock.proofs.decision_nonce`). Back at /oidc/callback, the token is verified, must name the
person whose session posted the form, and is written with the decision as its proof; the page's service
account may add nothing but such decisions (the export-writers admission policy), and the operator counts a
decision only when its proof verifies and names the approver. Every decision and every refusal goes into the
trail (`export.page_decision`), the actor from the sign-in.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
from aiohttp import web

from cleanroom.airlock.proofs import decision_nonce
from cleanroom.api import EXPORT_REQUESTS, GROUP, VERSION
from cleanroom.audit.events import Actor, AuditEvent
from cleanroom.audit.spool import AuditLog
from cleanroom.auditweb.exports import (
    WAITING,
    ExportView,
    csrf_holds,
    csrf_token,
    decision_entry,
    refusal,
    render_exports,
    roles_of,
)
from cleanroom.oidc import RelyingParty
from cleanroom.tokens import Identity, TokenRejected

PENDING_SECONDS = 600
Page = Callable[[str, str, int], web.Response]


@dataclass(frozen=True)
class PendingDecision:
    """A decision whose approver was sent to the provider to sign for it."""

    namespace: str
    name: str
    uid: str
    role: str
    verdict: str
    reason: str
    salt: str
    user: str  # whose session posted the form
    until: float


class ExportDesk:
    def __init__(
        self,
        log: AuditLog,
        signin: RelyingParty,
        officer_group: str,
        page: Page,
        session_user: Callable[[web.Request], Awaitable[tuple[Identity, str]]],
        callback_url: Callable[[web.Request], str],
        state_cookie: str,
    ) -> None:
        self.log = log
        self.signin = signin
        self.officer_group = officer_group
        self.page = page
        self.session_user = session_user
        self.callback_url = callback_url
        self.state_cookie = state_cookie
        self.csrf_key = secrets.token_bytes(32)
        self._pending: dict[str, PendingDecision] = {}
        self._lock = threading.Lock()

    # --- the API server -------------------------------------------------------------------------------

    def _objects(self) -> kubernetes.client.CustomObjectsApi:
        from cleanroom._clients.kube import custom_objects

        return custom_objects()

    def steward_group(self, dataset: str) -> str:
        if not dataset:
            return ""
        try:
            body: Any = self._objects().get_cluster_custom_object(GROUP, VERSION, "datasets", dataset)
        except kubernetes.client.ApiException:
            return ""
        return str(((body.get("spec") or {}).get("export") or {}).get("stewardGroup") or "")

    def steward_groups(self) -> set[str]:
        """Every Dataset's steward group: who besides officers may sign in to this page (for exports only)."""
        answer: Any = self._objects().list_cluster_custom_object(GROUP, VERSION, "datasets")
        groups = {((d.get("spec") or {}).get("export") or {}).get("stewardGroup") for d in answer["items"]}
        return {str(g) for g in groups if g}

    def waiting(self) -> list[ExportView]:
        answer: Any = self._objects().list_cluster_custom_object(GROUP, VERSION, EXPORT_REQUESTS)
        groups: dict[str, str] = {}
        views = []
        for item in answer["items"]:
            status = item.get("status") or {}
            if status.get("phase") != WAITING:
                continue
            dataset = str(status.get("dataset") or "")
            if dataset not in groups:
                groups[dataset] = self.steward_group(dataset)
            views.append(ExportView.of(item, groups[dataset]))
        return views

    def view(self, namespace: str, name: str) -> ExportView | None:
        try:
            item: Any = self._objects().get_namespaced_custom_object(
                GROUP, VERSION, namespace, EXPORT_REQUESTS, name
            )
        except kubernetes.client.ApiException:
            return None
        return ExportView.of(item, self.steward_group(str((item.get("status") or {}).get("dataset") or "")))

    def add_decision(self, view: ExportView, entry: Mapping[str, Any]) -> str:
        """Appends the decision; "" when the API server took it, else its refusal."""
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": view.ref.uid},
            {"op": "add", "path": "/spec/decisions/-" if view.deciders else "/spec/decisions",
             "value": dict(entry) if view.deciders else [dict(entry)]},
        ]  # fmt: skip
        try:
            self._objects().patch_namespaced_custom_object(
                GROUP, VERSION, view.ref.namespace, EXPORT_REQUESTS, view.ref.name, patch,
                _content_type="application/json-patch+json",
            )  # fmt: skip
        except kubernetes.client.ApiException as error:
            try:
                return str(json.loads(error.body or "{}").get("message") or error.reason)
            except ValueError:
                return str(error.reason)
        return ""

    # --- the trail ------------------------------------------------------------------------------------

    def record(self, user: str, outcome: str, reason: str, namespace: str = "", name: str = "") -> None:
        resources = {"namespace": namespace, "export": name} if name else {}
        self.log.append(
            [AuditEvent("export.page_decision", Actor("user", user), outcome, resources, reason[:2000])]
        )

    # --- handlers -------------------------------------------------------------------------------------

    async def exports(self, request: web.Request) -> web.Response:
        identity, session = await self.session_user(request)
        views = await asyncio.to_thread(self.waiting)
        mine = [v for v in views if roles_of(identity.groups, v.steward_group, self.officer_group)]
        body = f"""<p class="who">Signed in as <span id="user">{html.escape(identity.username)}</span>
 &middot; <a id="logout" href="/logout">Sign out</a></p>
<p>Exports waiting for a data steward and a security officer. Deciding sends you to sign in for that one
decision; your name comes from that sign-in.</p>
{render_exports(mine, identity.username, identity.groups, self.officer_group, csrf_token(self.csrf_key, session))}"""
        return self.page("Exports", body, 200)

    async def decide(self, request: web.Request) -> web.Response:
        identity, session = await self.session_user(request)
        form = await request.post()
        field = {
            k: str(form.get(k, "")) for k in ("csrf", "namespace", "name", "uid", "role", "verdict", "reason")
        }
        namespace, name = field["namespace"], field["name"]
        if not csrf_holds(self.csrf_key, session, field["csrf"]):
            return self._refused(
                identity.username, "the form's CSRF token is missing or not this session's", namespace, name
            )
        view = await asyncio.to_thread(self.view, namespace, name)
        if view is None or view.ref.uid != field["uid"]:
            return self._refused(
                identity.username, f"no ExportRequest {namespace}/{name} as shown", namespace, name
            )
        why = refusal(view, identity.username, identity.groups, field["role"], field["verdict"], field["reason"],
                      self.officer_group)  # fmt: skip
        if why:
            return self._refused(identity.username, why, namespace, name)
        salt = secrets.token_urlsafe(24)
        nonce = decision_nonce(view.ref, field["role"], field["verdict"], field["reason"], salt)
        url, state = await asyncio.to_thread(self.signin.start, self.callback_url(request), None, nonce)
        pending = PendingDecision(namespace, name, view.ref.uid, field["role"], field["verdict"], field["reason"],
                                  salt, identity.username, time.time() + PENDING_SECONDS)  # fmt: skip
        with self._lock:
            for old in [s for s, p in self._pending.items() if p.until < time.time()]:
                del self._pending[old]
            self._pending[state] = pending
        # A page that moves on by itself, not a redirect: the page's CSP (form-action 'self') would stop a
        # form's redirect to the provider.
        target = html.escape(url, quote=True)
        response = self.page(
            "Sign in for this decision",
            f"<meta http-equiv='refresh' content='0;url={target}'><p>To record your decision, sign in for it at "
            f"the identity provider. <a id='continue' href='{target}'>Continue</a></p>",
            200,
        )
        # As /oidc/login sets it: the provider's redirect back is cross-site, hence SameSite=Lax.
        response.set_cookie(
            self.state_cookie,
            state,
            httponly=True,
            samesite="Lax",
            secure=True,
            path="/oidc",
            max_age=PENDING_SECONDS,
        )
        return response

    def owns(self, state: str) -> bool:
        with self._lock:
            return bool(state) and state in self._pending

    async def callback(self, request: web.Request, state: str) -> web.Response:
        """The provider's redirect back from a decision's sign-in: verify, check, write, record."""
        with self._lock:
            pending = self._pending.pop(state, None)
        assert pending is not None  # owns() said so
        try:
            identity, id_token = await asyncio.to_thread(
                self.signin.finish, state, dict(request.query), self.callback_url(request)
            )
        except TokenRejected as refused:
            return self._refused(pending.user, f"the sign-in for the decision was refused: {refused.reason}",
                                 pending.namespace, pending.name, refused.status)  # fmt: skip
        if identity.username != pending.user:
            return self._refused(identity.username, f"signed in as {identity.username}, but {pending.user} asked for "
                                 "this decision; sign out and decide as yourself", pending.namespace, pending.name)  # fmt: skip
        view = await asyncio.to_thread(self.view, pending.namespace, pending.name)
        if view is None or view.ref.uid != pending.uid:
            return self._refused(
                identity.username,
                "the ExportRequest is gone or was replaced",
                pending.namespace,
                pending.name,
            )
        why = refusal(view, identity.username, identity.groups, pending.role, pending.verdict, pending.reason,
                      self.officer_group)  # fmt: skip
        if why:
            return self._refused(identity.username, why, pending.namespace, pending.name)
        entry = decision_entry(identity.username, identity.groups, pending.role, pending.verdict, pending.reason,
                               view, self.officer_group, id_token, pending.salt)  # fmt: skip
        answer = await asyncio.to_thread(self.add_decision, view, entry)
        if answer:
            return self._refused(identity.username, f"the API server refused the decision: {answer}",
                                 pending.namespace, pending.name)  # fmt: skip
        said = f"{pending.verdict} as {pending.role}: {pending.reason}"
        self.record(identity.username, "success", said, pending.namespace, pending.name)
        return self.page(
            "Decision recorded",
            f"<p id='recorded'>{html.escape(said)} recorded on {html.escape(pending.namespace)}/"
            f"{html.escape(pending.name)} as {html.escape(identity.username)}.</p>"
            "<p><a id='back' href='/exports'>Back to the exports</a></p>",
            200,
        )

    def _refused(self, user: str, reason: str, namespace: str, name: str, status: int = 403) -> web.Response:
        self.record(user, "denied", reason, namespace, name)
        return self.page(
            "Decision refused",
            f"<p id='error'>{html.escape(reason)}</p><p><a href='/exports'>Back</a></p>",
            status,
        )
