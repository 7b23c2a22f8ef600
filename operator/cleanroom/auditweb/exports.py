"""The exports page of the officers' web page, pure: who may decide on which ExportRequest in which role, the
form's CSRF token, the decision the page writes, and the HTML.

The page decides nothing by itself: a decision is written only after its approver signed in for it at the
identity provider (`cleanroom.airlock.proofs`), and the operator counts it only when that sign-in verifies.
The checks here refuse early, with a reason, what admission and the operator would refuse anyway: the
requester, a second decision of the same person, a role the sign-in does not hold, a request not waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cleanroom.airlock.proofs import ExportRef
from cleanroom.api import REQUESTED_BY_ANNOTATION, ExportRequestPhase, ExportRole, ExportVerdict
from cleanroom.api.contract import APPROVED

WAITING = ExportRequestPhase.AWAITING_APPROVAL.value
REASON_LIMIT = 2048


@dataclass(frozen=True)
class ExportView:
    """What the page shows of one ExportRequest, and what it needs to judge a decision on it."""

    ref: ExportRef
    requester: str
    workspace: str
    files: tuple[str, ...]
    justification: str
    phase: str
    steward_group: str  # the Dataset's spec.export.stewardGroup ("" when it has none)
    deciders: tuple[str, ...]  # who has decided already (spec.decisions[].by)
    checks: tuple[Mapping[str, Any], ...]
    decisions: tuple[Mapping[str, Any], ...]  # status.decisions: as the operator judged them
    message: str  # the Approved condition's message: who approved, who is still needed

    @staticmethod
    def of(request: Mapping[str, Any], steward_group: str) -> ExportView:
        meta, spec = request["metadata"], request.get("spec") or {}
        status = request.get("status") or {}
        approved: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or () if c.get("type") == APPROVED), {}
        )
        return ExportView(
            ref=ExportRef(str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", ""))),
            requester=str((meta.get("annotations") or {}).get(REQUESTED_BY_ANNOTATION, "")),
            workspace=str(spec.get("workspace", "")),
            files=tuple(str(f) for f in spec.get("files") or ()),
            justification=str(spec.get("justification", "")),
            phase=str(status.get("phase") or ""),
            steward_group=steward_group,
            deciders=tuple(str(d.get("by", "")) for d in spec.get("decisions") or ()),
            checks=tuple(status.get("checks") or ()),
            decisions=tuple(status.get("decisions") or ()),
            message=str(approved.get("message", "")),
        )


def role_group(role: str, steward_group: str, officer_group: str) -> str:
    return {
        ExportRole.DATA_STEWARD.value: steward_group,
        ExportRole.SECURITY_OFFICER.value: officer_group,
    }.get(role, "")


def roles_of(groups: Sequence[str], steward_group: str, officer_group: str) -> tuple[str, ...]:
    """The roles a signed-in user holds for a request: DataSteward by the Dataset's steward group,
    SecurityOfficer by the installation's officers' group."""
    return tuple(
        role.value
        for role in ExportRole
        if (group := role_group(role.value, steward_group, officer_group)) and group in groups
    )


def refusal(
    view: ExportView,
    user: str,
    groups: Sequence[str],
    role: str,
    verdict: str,
    reason: str,
    officer_group: str,
) -> str:
    """Why `user` (as signed in) may not record this decision, or "" when they may."""
    if view.phase != WAITING:
        return f"{view.ref.namespace}/{view.ref.name} is not waiting for a decision (it is {view.phase or 'new'})"
    if user == view.requester:
        return "the requester of an export cannot decide on it (two other people must approve)"
    if user in view.deciders:
        return f"{user} has decided on {view.ref.name} already; a person decides once"
    if role not in (r.value for r in ExportRole):
        return f"no such role {role!r}: DataSteward or SecurityOfficer"
    if role not in roles_of(groups, view.steward_group, officer_group):
        group = role_group(role, view.steward_group, officer_group) or "(none: the Dataset names no stewards)"
        return f"{user} is not in {group}, which deciding as {role} needs"
    if verdict not in (v.value for v in ExportVerdict):
        return f"no such verdict {verdict!r}: Approve or Reject"
    if not reason.strip() or len(reason) > REASON_LIMIT:
        return f"say what you looked at and why (1 to {REASON_LIMIT} characters); a rejection's reason reaches the requester"
    return ""


def decision_entry(
    user: str,
    groups: Sequence[str],
    role: str,
    verdict: str,
    reason: str,
    view: ExportView,
    officer_group: str,
    id_token: str,
    salt: str,
) -> dict[str, Any]:
    """The spec.decisions entry the page adds: the approver's name and the role's group as their sign-in
    for this decision gives them, and that sign-in as the proof."""
    group = role_group(role, view.steward_group, officer_group)
    return {
        "by": user,
        "groups": [group] if group in groups else [],
        "role": role,
        "verdict": verdict,
        "reason": reason,
        "proof": {"idToken": id_token, "salt": salt},
    }


def csrf_token(key: bytes, session: str) -> str:
    """The form's token: bound to this browser's session (a session's token is useless in another's), made
    with a key only this process holds (OWASP's synchronizer token, HMAC variant)."""
    return hmac.new(key, b"csrf\0" + hashlib.sha256(session.encode()).digest(), hashlib.sha256).hexdigest()


def csrf_holds(key: bytes, session: str, presented: str) -> bool:
    return bool(session) and hmac.compare_digest(csrf_token(key, session).encode(), presented.encode())


def render_exports(
    views: Sequence[ExportView], user: str, groups: Sequence[str], officer_group: str, csrf: str
) -> str:
    """The waiting requests this user may decide on (or has), each with its files, checks, decisions so far
    and, where they hold a role, the decision form."""
    if not views:
        return "<p id='no-exports'>No export is waiting for you.</p>"
    return "".join(_article(v, user, groups, officer_group, csrf) for v in views)


def _article(view: ExportView, user: str, groups: Sequence[str], officer_group: str, csrf: str) -> str:
    e = html.escape
    ident = e(f"{view.ref.namespace}/{view.ref.name}")
    checks = "".join(
        f"<li class='check {'passed' if c.get('passed') else 'failed'}'>{e(str(c.get('name', '')))}: "
        f"{'passed' if c.get('passed') else 'FAILED'}; looked at {e(_listed(c.get('lookedAt')))}"
        + "".join(f"<br>{e(str(f.get('file') or 'all files'))}: {e(str(f.get('detail', '')))}" for f in c.get("findings") or ())
        + "</li>"
        for c in view.checks
    )  # fmt: skip
    decided = "".join(
        f"<li class='decision'>{e(str(d.get('by')))} ({e(str(d.get('role')))}): {e(str(d.get('verdict')))}: "
        f"{e(str(d.get('reason')))}{'' if d.get('counted') else ' (not counted: ' + e(str(d.get('note', ''))) + ')'}</li>"
        for d in view.decisions
    )  # fmt: skip
    roles = roles_of(groups, view.steward_group, officer_group)
    why_not = refusal(view, user, groups, roles[0] if roles else "", "Approve", "-", officer_group)
    if why_not:
        form = f"<p class='cannot-decide'>{e(why_not)}</p>"
    else:
        options = "".join(f"<option value='{r}'>{r}</option>" for r in roles)
        form = f"""<form method="post" action="/exports/decide" class="decide">
<input type="hidden" name="csrf" value="{e(csrf)}"><input type="hidden" name="namespace" value="{e(view.ref.namespace)}">
<input type="hidden" name="name" value="{e(view.ref.name)}"><input type="hidden" name="uid" value="{e(view.ref.uid)}">
<label>Role <select name="role">{options}</select></label>
<label>Reason <textarea name="reason" rows="2" required maxlength="{REASON_LIMIT}"></textarea></label>
<button type="submit" name="verdict" value="Approve">Approve</button>
<button type="submit" name="verdict" value="Reject">Reject</button></form>"""
    return f"""<article class="export" id="{ident}"><h2>{ident}</h2>
<p>Requested by <span class="requester">{e(view.requester)}</span> from Workspace {e(view.workspace)}: {e(view.justification)}</p>
<p>Files: {e(", ".join(view.files))}</p><ul class="checks">{checks}</ul>
<p class="status">{e(view.message)}</p><ul class="decisions">{decided}</ul>{form}</article>"""


def _listed(value: Any) -> str:
    return "; ".join(str(v) for v in value) if isinstance(value, list) else str(value or "")
