"""Decisions made on the officers' page: what their sign-in commits to, and whether a proof holds. Pure.

The page never decides with a power of its own. For each decision the approver signs in once more at the
identity provider, and the page asks for an ID token whose nonce (OpenID Connect Core 3.1.2.1) is a
commitment to the decision: this ExportRequest (namespace, name and uid, so that no other request, not even
a later one of the same name, can use it), the role, the verdict and the reason. The page writes the
decision with that token; the operator verifies it here and takes the approver's name and groups from the
token, never from the page. Whoever holds the page's service account can add decisions, but only ones that
people signed for: a token is the provider's signature, and its nonce fits one decision.

The token's expiry is not checked: it is evidence that the approver made this decision, judged again at
every pass while the request waits (days), long after the token's minutes. The page checks the expiry when
the token arrives (`cleanroom.oidc.verify_id_token`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

import jwt

from cleanroom.api import ExportDecision
from cleanroom.tokens import TokenPolicy, TokenRejected, identity_from_claims, verified_claims

# Marks a nonce as a decision's, so that the page can tell a decision's sign-in from a session's and never
# takes a decision's token as a session (it is readable by whoever reads the ExportRequest).
NONCE_PREFIX = "xr1."


@dataclass(frozen=True)
class ExportRef:
    """The one ExportRequest a decision is about."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class ProofPolicy:
    """Whose signature a page decision carries: the provider and the page's client (the token's audience),
    and how its claims name the user, as the page and the hub read them (the requester's name comes from
    the hub's sign-in, so both must use the same user name claim)."""

    issuer: str
    audience: str
    username_claim: str = "sub"
    groups_claim: str = "groups"
    roles_claim: str = ""

    def token_policy(self) -> TokenPolicy:
        return TokenPolicy(
            issuer=self.issuer,
            audience=self.audience,
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
            roles_claim=self.roles_claim,
            check_expiry=False,
        )


def decision_nonce(export: ExportRef, role: str, verdict: str, reason: str, salt: str) -> str:
    """The nonce a decision's sign-in asks for: a SHA-256 commitment to the request, the decision and a
    random salt, as canonical JSON (sorted keys, no spaces), base64url without padding."""
    statement = {
        "namespace": export.namespace,
        "name": export.name,
        "uid": export.uid,
        "role": role,
        "verdict": verdict,
        "reason": reason,
        "salt": salt,
    }
    digest = hashlib.sha256(json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()).digest()
    return NONCE_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_decision_nonce(claims: Mapping[str, object]) -> bool:
    nonce = claims.get("nonce")
    return isinstance(nonce, str) and nonce.startswith(NONCE_PREFIX)


def check_proof(
    decision: ExportDecision, export: ExportRef, keys: Mapping[str, jwt.PyJWK], policy: ProofPolicy
) -> tuple[ExportDecision | None, str]:
    """The decision as its proof states it (`by` and `groups` from the token), or None and why it does not
    hold: a signature, issuer or audience that do not verify, a nonce for another request or decision, or
    a `by` or group the token does not name."""
    proof = decision.proof
    if proof is None:
        return None, "no proof of sign-in"
    token_policy = policy.token_policy()
    try:
        claims = verified_claims(proof.id_token, keys, token_policy)
        identity = identity_from_claims(claims, token_policy)
    except TokenRejected as refusal:
        return None, f"its sign-in does not verify: {refusal.reason}"
    expected = decision_nonce(export, str(decision.role), str(decision.verdict), decision.reason, proof.salt)
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.encode()):
        return None, "its sign-in was made for another request or another decision"
    if identity.username != decision.by:
        return None, f"its sign-in names {identity.username}, not {decision.by}"
    foreign = [g for g in decision.groups if g not in identity.groups]
    if foreign:
        return None, f"its sign-in does not list {', '.join(foreign)} among {decision.by}'s groups"
    return replace(decision, groups=identity.groups), ""
