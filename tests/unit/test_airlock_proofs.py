"""Decisions made on the officers' page, as the operator judges them: a decision counts only when its proof, the
ID token of its approver's sign-in for that one decision, is the provider's, for the page's client, commits to
this request and this decision, and names the approver and the role's group. Each attack is refused; the same
decision with an honest proof counts (so a refusal is the check's, not a broken fixture's)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jwt
import pytest

from cleanroom.airlock.approval import Judgement, judge_decisions
from cleanroom.airlock.proofs import ExportRef, ProofPolicy, check_proof, decision_nonce
from cleanroom.api import ExportDecision, ExportDecisionProof, ExportRole, ExportVerdict
from cleanroom.tokens import DevIssuer, load_jwks, write_dev_issuer

STEWARDS, OFFICERS = "prostate-stewards", "cleanroom:security-officers"
ALICE, STELLA, SAM = "alice@hospital.example", "stella@hospital.example", "sam@hospital.example"
OLGA = "olga@hospital.example"  # both a steward and an officer
GROUPS = {
    ALICE: ("sample-ai", STEWARDS, OFFICERS),
    STELLA: (STEWARDS,),
    SAM: (OFFICERS,),
    OLGA: (STEWARDS, OFFICERS),
}
ISSUER, PAGE = "https://login.hospital.example", "cleanroom-audit"
EXPORT = ExportRef("team-a", "x-1", "6f1c0d1e-0000-4000-8000-000000000001")
REASON = "aggregate Dice per fold only; no per-patient values"
POLICY = ProofPolicy(ISSUER, PAGE, username_claim="email")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    return write_dev_issuer(tmp_path_factory.mktemp("idp"), ISSUER, PAGE)


@pytest.fixture(scope="module")
def keys(provider: DevIssuer) -> dict[str, jwt.PyJWK]:
    return load_jwks(provider.jwks())


def sign_in(provider: DevIssuer, user: str, nonce: str, **claims: Any) -> str:
    """An ID token as the provider issues it to the page after `user` signed in for a decision."""
    extra = {"email": user, "email_verified": True, "nonce": nonce, **claims}
    return provider.issue(user, GROUPS[user], extra=extra)


def page_decision(
    provider: DevIssuer,
    user: str,
    role: ExportRole,
    verdict: ExportVerdict = ExportVerdict.APPROVE,
    *,
    export: ExportRef = EXPORT,
    signer: str = "",
    token: str = "",
) -> ExportDecision:
    """The decision the page writes: `by` and groups as the sign-in gives them, the proof its token."""
    salt = "c2FsdC1vZi10aGlzLWRlY2lzaW9u"
    group = STEWARDS if role is ExportRole.DATA_STEWARD else OFFICERS
    nonce = decision_nonce(export, str(role), str(verdict), REASON, salt)
    token = token or sign_in(provider, signer or user, nonce)
    return ExportDecision(user, role, verdict, REASON, (group,), ExportDecisionProof(token, salt))


def judge(keys: dict[str, jwt.PyJWK], *decisions: ExportDecision, export: ExportRef = EXPORT) -> Judgement:
    return judge_decisions(
        decisions,
        requester=ALICE,
        steward_group=STEWARDS,
        officer_group=OFFICERS,
        proven=lambda d: check_proof(d, export, keys, POLICY),
    )


def test_a_steward_and_an_officer_approving_on_the_page_release(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    judgement = judge(
        keys,
        page_decision(provider, STELLA, ExportRole.DATA_STEWARD),
        page_decision(provider, SAM, ExportRole.SECURITY_OFFICER),
    )
    assert judgement.state == "approved", judgement
    assert f"{STELLA} (DataSteward) and {SAM} (SecurityOfficer)" in judgement.message


def test_a_page_decision_and_a_kubectl_decision_make_the_pair(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    kubectl = ExportDecision(STELLA, ExportRole.DATA_STEWARD, ExportVerdict.APPROVE, REASON, (STEWARDS,))
    assert judge(keys, kubectl, page_decision(provider, SAM, ExportRole.SECURITY_OFFICER)).state == "approved"


def test_the_requester_signing_in_on_the_page_cannot_approve(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    own = page_decision(provider, ALICE, ExportRole.DATA_STEWARD)
    judgement = judge(keys, own, page_decision(provider, SAM, ExportRole.SECURITY_OFFICER))
    assert judgement.state == "pending"
    assert judgement.decisions[0].note == "the requester cannot decide on their own export"


def test_a_decision_naming_someone_else_than_its_sign_in_does_not_count(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    """The requester signs in herself but writes the steward's name into the decision (a forged form field,
    or the page's account writing what it likes)."""
    forged = page_decision(provider, STELLA, ExportRole.DATA_STEWARD, signer=ALICE)
    judgement = judge(keys, forged, page_decision(provider, SAM, ExportRole.SECURITY_OFFICER))
    assert judgement.state == "pending"
    assert judgement.decisions[0].note == f"its sign-in names {ALICE}, not {STELLA}"


def test_a_sign_in_for_another_request_does_not_count_here(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    """Replay: the steward's genuine decision on another request, or on a request of the same name that was
    deleted and made again (another uid), copied onto this one."""
    for other in (replace(EXPORT, name="x-2"), replace(EXPORT, uid="6f1c0d1e-0000-4000-8000-000000000002")):
        replayed = page_decision(provider, STELLA, ExportRole.DATA_STEWARD, export=other)
        assert judge(keys, replayed, export=other).decisions[0].counted  # where it was made, it counts
        judgement = judge(keys, replayed, page_decision(provider, SAM, ExportRole.SECURITY_OFFICER))
        assert judgement.state == "pending"
        assert judgement.decisions[0].note == "its sign-in was made for another request or another decision"


def test_a_sign_in_for_a_rejection_does_not_approve(provider: DevIssuer, keys: dict[str, jwt.PyJWK]) -> None:
    rejected = page_decision(provider, STELLA, ExportRole.DATA_STEWARD, ExportVerdict.REJECT)
    turned = replace(rejected, verdict=ExportVerdict.APPROVE)
    assert not judge(keys, turned).decisions[0].counted
    reworded = replace(page_decision(provider, STELLA, ExportRole.DATA_STEWARD), reason="all fine")
    assert not judge(keys, reworded).decisions[0].counted


def test_a_steward_sign_in_does_not_make_an_officer(provider: DevIssuer, keys: dict[str, jwt.PyJWK]) -> None:
    """The proof holds for the role it was made for, but the token does not list the officers' group."""
    claimed = page_decision(provider, STELLA, ExportRole.SECURITY_OFFICER)
    judgement = judge(keys, page_decision(provider, SAM, ExportRole.DATA_STEWARD), claimed)
    assert judgement.state == "pending"
    assert judgement.decisions[1].note == f"its sign-in does not list {OFFICERS} among {STELLA}'s groups"


def test_a_token_not_from_the_provider_or_not_for_the_page_does_not_count(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A key of the attacker's own, under the provider's kid: the signature does not verify.
    other = write_dev_issuer(tmp_path_factory.mktemp("attacker"), ISSUER, PAGE)
    impostor = replace(other, kid=provider.kid)
    # The provider's token for another client (the hub's): the audience is not the page's.
    hub = replace(provider, audience="cleanroom-hub")
    for forger, why in ((impostor, "signature does not verify"), (hub, "another audience")):
        honest = page_decision(provider, STELLA, ExportRole.DATA_STEWARD)
        assert honest.proof is not None
        nonce = jwt.decode(honest.proof.id_token, options={"verify_signature": False})["nonce"]
        token = sign_in(forger, STELLA, nonce)
        forged = replace(honest, proof=replace(honest.proof, id_token=token))
        judgement = judge(keys, forged)
        assert not judgement.decisions[0].counted and why in judgement.decisions[0].note
        assert judge(keys, honest).decisions[0].counted


def test_the_same_person_twice_counts_once(provider: DevIssuer, keys: dict[str, jwt.PyJWK]) -> None:
    first = page_decision(provider, OLGA, ExportRole.SECURITY_OFFICER)
    again = page_decision(provider, OLGA, ExportRole.DATA_STEWARD)
    judgement = judge(keys, first, again)
    assert judgement.state == "pending"
    assert "decides once" in judgement.decisions[1].note


def test_an_expired_sign_in_still_proves_the_decision_it_was_made_for(
    provider: DevIssuer, keys: dict[str, jwt.PyJWK]
) -> None:
    """The request waits days for its second approver; the first one's token lived minutes. It is evidence
    of a decision bound to this request, not a credential, so it keeps counting."""
    honest = page_decision(provider, STELLA, ExportRole.DATA_STEWARD)
    assert honest.proof is not None
    claims = jwt.decode(honest.proof.id_token, options={"verify_signature": False})
    old = provider.issue(STELLA, GROUPS[STELLA], lifetime_seconds=300, now=1_700_000_000, extra=claims | {
        "iat": 1_700_000_000, "exp": 1_700_000_300})  # fmt: skip
    assert judge(keys, replace(honest, proof=replace(honest.proof, id_token=old))).decisions[0].counted


def test_without_a_configured_provider_no_page_decision_counts(provider: DevIssuer) -> None:
    judgement = judge_decisions(
        [page_decision(provider, STELLA, ExportRole.DATA_STEWARD), page_decision(provider, SAM, ExportRole.SECURITY_OFFICER)],
        requester=ALICE,
        steward_group=STEWARDS,
        officer_group=OFFICERS,
    )  # fmt: skip
    assert judgement.state == "pending"
    assert "not set to verify" in judgement.decisions[0].note
