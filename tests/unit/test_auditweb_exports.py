"""The exports page's own rules, pure: who may decide on which request in which role, the CSRF token, the
decision it writes (the name and groups from the sign-in, never from the form) and what the page shows."""

from __future__ import annotations

import secrets
from typing import Any

from cleanroom.airlock.proofs import ExportRef
from cleanroom.auditweb.exports import (
    ExportView,
    csrf_holds,
    csrf_token,
    decision_entry,
    refusal,
    render_exports,
    roles_of,
)

STEWARDS, OFFICERS = "prostate-stewards", "cleanroom:security-officers"
ALICE, STELLA, SAM = "alice@hospital.example", "stella@hospital.example", "sam@hospital.example"


def request(phase: str = "AwaitingApproval", decided: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": "x-1",
            "uid": "u-1",
            "annotations": {"cleanroom.dev/requested-by": ALICE},
        },
        "spec": {
            "workspace": "seg",
            "files": ["results/metrics.csv"],
            "justification": "Aggregate Dice per fold for table 2",
            "decisions": [
                {"by": b, "role": "DataSteward", "verdict": "Approve", "reason": "ok"} for b in decided
            ],
        },
        "status": {
            "phase": phase,
            "dataset": "prostate",
            "checks": [{"name": "NoDicom", "passed": True, "lookedAt": "1 file", "findings": []}],
            "conditions": [{"type": "Approved", "status": "False", "message": "waiting for DataSteward"}],
        },
    }


VIEW = ExportView.of(request(), STEWARDS)


def why(view: ExportView, user: str, groups: tuple[str, ...], role: str, verdict: str = "Approve") -> str:
    return refusal(view, user, groups, role, verdict, "looked at the CSV: aggregates only", OFFICERS)


def test_roles_come_from_the_signed_in_groups() -> None:
    assert roles_of((STEWARDS,), STEWARDS, OFFICERS) == ("DataSteward",)
    assert roles_of((OFFICERS, STEWARDS), STEWARDS, OFFICERS) == ("DataSteward", "SecurityOfficer")
    assert roles_of(("sample-ai",), STEWARDS, OFFICERS) == ()
    # A Dataset without a steward group has no steward, whatever group is empty-named.
    assert roles_of(("",), "", OFFICERS) == ()


def test_a_steward_and_an_officer_may_decide() -> None:
    assert why(VIEW, STELLA, (STEWARDS,), "DataSteward") == ""
    assert why(VIEW, SAM, (OFFICERS,), "SecurityOfficer", "Reject") == ""


def test_the_requester_may_not_decide_even_holding_both_roles() -> None:
    for role in ("DataSteward", "SecurityOfficer"):
        assert "requester" in why(VIEW, ALICE, (STEWARDS, OFFICERS), role)


def test_a_role_not_held_is_refused() -> None:
    assert "is not in cleanroom:security-officers" in why(VIEW, STELLA, (STEWARDS,), "SecurityOfficer")
    assert "is not in prostate-stewards" in why(VIEW, "eve@hospital.example", (), "DataSteward")
    assert "no such role" in why(VIEW, SAM, (OFFICERS,), "Admin")


def test_a_person_decides_once() -> None:
    view = ExportView.of(request(decided=(SAM,)), STEWARDS)
    assert "decided on x-1 already" in why(view, SAM, (OFFICERS, STEWARDS), "DataSteward")


def test_only_a_waiting_request_is_decided_on() -> None:
    for phase in ("Copying", "Checking", "Released", "Rejected"):
        assert "not waiting" in why(
            ExportView.of(request(phase), STEWARDS), SAM, (OFFICERS,), "SecurityOfficer"
        )


def test_a_decision_needs_a_reason_and_a_known_verdict() -> None:
    assert "say what you looked at" in refusal(
        VIEW, SAM, (OFFICERS,), "SecurityOfficer", "Reject", " ", OFFICERS
    )
    assert "no such verdict" in why(VIEW, SAM, (OFFICERS,), "SecurityOfficer", "Maybe")


def test_the_decision_written_names_the_signed_in_user_and_only_the_roles_group() -> None:
    entry = decision_entry(
        SAM, (OFFICERS, "other"), "SecurityOfficer", "Approve", "fine", VIEW, OFFICERS, "t", "s"
    )
    assert entry == {
        "by": SAM,
        "groups": [OFFICERS],
        "role": "SecurityOfficer",
        "verdict": "Approve",
        "reason": "fine",
        "proof": {"idToken": "t", "salt": "s"},
    }


def test_the_csrf_token_is_bound_to_the_session_and_the_process_key() -> None:
    key = secrets.token_bytes(32)
    mine = csrf_token(key, "session-of-sam")
    assert csrf_holds(key, "session-of-sam", mine)
    assert not csrf_holds(key, "session-of-stella", mine)  # another browser's token
    assert not csrf_holds(secrets.token_bytes(32), "session-of-sam", mine)  # another process's (a restart)
    assert not csrf_holds(key, "session-of-sam", "")
    assert not csrf_holds(key, "", csrf_token(key, ""))


def test_the_page_shows_the_checks_and_a_form_only_to_who_may_decide() -> None:
    shown = render_exports([VIEW], SAM, (OFFICERS,), OFFICERS, "tok")
    assert "NoDicom: passed" in shown and "results/metrics.csv" in shown
    assert 'action="/exports/decide"' in shown and 'value="tok"' in shown
    # No identity travels in the form: the name comes from the sign-in.
    assert 'name="by"' not in shown and "name='by'" not in shown
    own = render_exports([VIEW], ALICE, (OFFICERS, STEWARDS), OFFICERS, "tok")
    assert "/exports/decide" not in own and "requester" in own


def test_the_page_escapes_what_the_requester_wrote() -> None:
    hostile = request()
    hostile["spec"]["justification"] = "<script>alert(1)</script> and more words"
    shown = render_exports([ExportView.of(hostile, STEWARDS)], SAM, (OFFICERS,), OFFICERS, "tok")
    assert "<script>" not in shown and "&lt;script&gt;" in shown


def test_a_view_keeps_the_request_it_was_made_from() -> None:
    assert VIEW.ref == ExportRef("team-a", "x-1", "u-1")
    assert VIEW.requester == ALICE and VIEW.steward_group == STEWARDS and VIEW.deciders == ()
