"""The two-person rule: which decisions count, and whether an export is approved, rejected or waits.

An export is approved when two different people, neither of them the requester, approved it: one a data
steward of the Dataset (a member of its spec.export.stewardGroup) and one a security officer (a member of
the installation's officers' group). A rejection from anyone who holds the role they decide in rejects it.
A decision counts only when its groups hold the role it claims; the groups themselves are the approver's
authenticated groups, which the cleanroom admission policy holds to the API server's userInfo, or, for a
decision made on the officers' page, the groups of the sign-in its proof carries (`airlock.proofs`, checked
by the caller's `proven`). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from cleanroom.api import ExportDecision, ExportRole, ExportVerdict

State = Literal["pending", "approved", "rejected"]


@dataclass(frozen=True)
class JudgedDecision:
    decision: ExportDecision
    counted: bool
    note: str = ""


@dataclass(frozen=True)
class Judgement:
    state: State
    decisions: tuple[JudgedDecision, ...]
    # For people: who approved, who is still needed, or who rejected and why.
    message: str


# A page decision as its proof states it, or None and why the proof does not hold.
Proven = Callable[[ExportDecision], tuple[ExportDecision | None, str]]


def judge_decisions(
    decisions: Sequence[ExportDecision],
    *,
    requester: str,
    steward_group: str,
    officer_group: str,
    proven: Proven | None = None,
) -> Judgement:
    role_groups = {ExportRole.DATA_STEWARD: steward_group, ExportRole.SECURITY_OFFICER: officer_group}
    judged: list[JudgedDecision] = []
    seen: set[str] = set()
    for decision in decisions:
        group = role_groups[decision.role]
        problem = ""
        if decision.proof is not None:
            checked, problem = (
                proven(decision)
                if proven is not None
                else (None, "made on the officers' page, whose sign-ins this operator is not set to verify")
            )
            decision = checked or decision
        if problem:
            note = problem
        elif decision.by == requester:
            note = "the requester cannot decide on their own export"
        elif decision.by in seen:
            note = "a person decides once; only their first decision counts"
        elif not group:
            note = f"no {decision.role} group is set (the Dataset's spec.export.stewardGroup)"
        elif group not in decision.groups:
            note = f"{decision.by} does not show membership of {group}, which {decision.role} needs"
        else:
            note = ""
        seen.add(decision.by)
        judged.append(JudgedDecision(decision, counted=not note, note=note))
    counted = [j.decision for j in judged if j.counted]
    rejection = next((d for d in counted if d.verdict is ExportVerdict.REJECT), None)
    if rejection is not None:
        return Judgement(
            "rejected", tuple(judged), f"rejected by {rejection.by} ({rejection.role}): {rejection.reason}"
        )
    stewards = [d.by for d in counted if d.role is ExportRole.DATA_STEWARD]
    officers = [d.by for d in counted if d.role is ExportRole.SECURITY_OFFICER]
    pair = next(((s, o) for s in stewards for o in officers if s != o), None)
    if pair is not None:
        return Judgement(
            "approved", tuple(judged), f"approved by {pair[0]} (DataSteward) and {pair[1]} (SecurityOfficer)"
        )
    missing = [
        role
        for role, approvers in ((ExportRole.DATA_STEWARD, stewards), (ExportRole.SECURITY_OFFICER, officers))
        if not approvers
    ]
    have = ", ".join(f"{d.by} ({d.role})" for d in counted) or "no approval that counts"
    needed = " and ".join(str(role) for role in missing) or "a second person"
    return Judgement("pending", tuple(judged), f"waiting for {needed}; so far {have}")
