"""The two-person rule as a specification: who may approve an export, and when it is released."""

from __future__ import annotations

from cleanroom.airlock.approval import judge_decisions
from cleanroom.api import ExportDecision, ExportRole, ExportVerdict

STEWARDS, OFFICERS = "prostate-stewards", "cleanroom:security-officers"
ALICE = "alice@hospital.example"  # the requester


def approve(by: str, role: ExportRole, *groups: str) -> ExportDecision:
    return ExportDecision(by, role, ExportVerdict.APPROVE, "looked at the metrics: aggregate only", groups)


def judge(*decisions: ExportDecision):  # type: ignore[no-untyped-def]
    return judge_decisions(decisions, requester=ALICE, steward_group=STEWARDS, officer_group=OFFICERS)


STEWARD = approve("bob@hospital.example", ExportRole.DATA_STEWARD, STEWARDS)
OFFICER = approve("olga@hospital.example", ExportRole.SECURITY_OFFICER, OFFICERS)


def test_a_steward_and_an_officer_who_are_two_other_people_approve() -> None:
    judgement = judge(STEWARD, OFFICER)
    assert judgement.state == "approved"
    assert (
        "bob@hospital.example (DataSteward) and olga@hospital.example (SecurityOfficer)" in judgement.message
    )


def test_one_approval_does_not_release() -> None:
    for one in (STEWARD, OFFICER):
        judgement = judge(one)
        assert judgement.state == "pending"
    assert "waiting for SecurityOfficer" in judge(STEWARD).message


def test_the_requester_cannot_approve_even_holding_both_roles() -> None:
    own = approve(ALICE, ExportRole.DATA_STEWARD, STEWARDS, OFFICERS)
    judgement = judge(own, OFFICER)
    assert judgement.state == "pending"
    assert judgement.decisions[0].note == "the requester cannot decide on their own export"
    assert judge(approve(ALICE, ExportRole.SECURITY_OFFICER, OFFICERS), STEWARD).state == "pending"


def test_one_person_cannot_fill_both_roles() -> None:
    both = "bob@hospital.example"
    judgement = judge(
        approve(both, ExportRole.DATA_STEWARD, STEWARDS, OFFICERS),
        approve(both, ExportRole.SECURITY_OFFICER, STEWARDS, OFFICERS),
    )
    assert judgement.state == "pending"
    assert "decides once" in judgement.decisions[1].note


def test_two_approvals_in_the_same_role_do_not_release() -> None:
    second = approve("sam@hospital.example", ExportRole.DATA_STEWARD, STEWARDS)
    assert judge(STEWARD, second).state == "pending"


def test_a_role_claimed_without_its_group_does_not_count() -> None:
    claimed = approve("mallory@hospital.example", ExportRole.DATA_STEWARD, "other-team")
    judgement = judge(claimed, OFFICER)
    assert judgement.state == "pending"
    assert "does not show membership of prostate-stewards" in judgement.decisions[0].note


def test_without_a_steward_group_nothing_is_approved() -> None:
    judgement = judge_decisions([STEWARD, OFFICER], requester=ALICE, steward_group="", officer_group=OFFICERS)
    assert judgement.state == "pending"


def test_a_rejection_by_a_role_holder_rejects_with_its_reason() -> None:
    reject = ExportDecision(
        "olga@hospital.example",
        ExportRole.SECURITY_OFFICER,
        ExportVerdict.REJECT,
        "per-patient rows in table 3",
        (OFFICERS,),
    )
    judgement = judge(STEWARD, reject)
    assert judgement.state == "rejected"
    assert "per-patient rows in table 3" in judgement.message


def test_a_rejection_that_does_not_count_does_not_reject() -> None:
    stray = ExportDecision(
        "eve@hospital.example", ExportRole.SECURITY_OFFICER, ExportVerdict.REJECT, "no", ()
    )
    assert judge(STEWARD, OFFICER, stray).state == "approved"
