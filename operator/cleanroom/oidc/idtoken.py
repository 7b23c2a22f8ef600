"""Who signed in, from an ID token: verified as OpenID Connect Core 3.1.3.7 asks, pure.

The signature, issuer, audience (this client), expiry, the user's name (with `email_verified` when the name
is an address) and groups come from `cleanroom.tokens.verify`, the one verifier of the project; this module
adds what belongs to an ID token alone (the nonce of this browser's attempt, `azp` when there are several
audiences) and the site's rules: required groups and multi-factor sign-in."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from cleanroom.tokens import (
    Identity,
    TokenPolicy,
    TokenRejected,
    claim,
    identity_from_claims,
    verified_claims,
)


@dataclass(frozen=True)
class SignInRules:
    """How claims become a user, and who may come in.

    - username_claim, groups_claim, roles_claim: claim names (dotted paths reach nested claims);
    - allowed_groups: when set, a user must be in one of them (groups or roles), else refused with 403;
    - mfa_acr / mfa_amr: when either is set, the sign-in must have been multi-factor: the ID token's `acr`
      is one of mfa_acr, or its `amr` lists one of mfa_amr (Entra ID says `mfa` there, Keycloak `otp`)."""

    username_claim: str = "sub"
    groups_claim: str = "groups"
    roles_claim: str = ""
    allowed_groups: tuple[str, ...] = ()
    mfa_acr: tuple[str, ...] = ()
    mfa_amr: tuple[str, ...] = ()

    def policy(self, issuer: str, audience: str, leeway_seconds: int = 30) -> TokenPolicy:
        return TokenPolicy(
            issuer=issuer,
            audience=audience,
            leeway_seconds=leeway_seconds,
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
            roles_claim=self.roles_claim,
        )


def verify_id_token(
    token: str,
    keys: Mapping[str, jwt.PyJWK],
    issuer: str,
    client_id: str,
    nonce: str,
    rules: SignInRules,
    leeway_seconds: int = 30,
    userinfo: Mapping[str, Any] | None = None,
) -> Identity:
    """The user an ID token names, for the attempt whose nonce is given; with `userinfo` (the provider's
    userinfo answer, for providers that put groups there rather than in the ID token, as LS Login does),
    its claims join the ID token's, which win where both have one. Raises `TokenRejected`."""
    if not token:
        raise TokenRejected(
            401, "the identity provider returned no ID token (is the scope openid requested?)"
        )
    policy = rules.policy(issuer, client_id, leeway_seconds)
    claims = verified_claims(token, keys, policy)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # Core 3.1.3.7 items 4 and 5: a token for several parties must say it was issued to us.
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise TokenRejected(401, f"the ID token has several audiences and was not issued to {client_id!r}")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise TokenRejected(
            401,
            "the ID token's nonce does not match this sign-in (a replayed or injected token); sign in again",
        )
    if userinfo is not None:
        # Core 5.3.2: the userinfo answer must be about the ID token's subject, or it may be another user's
        # (a token substitution).
        if userinfo.get("sub") != claims.get("sub"):
            raise TokenRejected(401, "the userinfo answer is about another subject than the ID token")
        claims = {**userinfo, **claims}
    identity = identity_from_claims(claims, policy)
    check_rules(identity, rules)
    return identity


def check_rules(identity: Identity, rules: SignInRules) -> None:
    """The site's rules on a verified identity: groups, then multi-factor. Raises `TokenRejected` (403)."""
    if rules.allowed_groups and not set(identity.groups) & set(rules.allowed_groups):
        raise TokenRejected(
            403,
            f"{identity.username} is not in a group allowed here ({', '.join(rules.allowed_groups)}); "
            "ask your platform's administrator to add you",
        )
    require_mfa(identity.claims, rules.mfa_acr, rules.mfa_amr)


def require_mfa(claims: Mapping[str, Any], acr_values: Sequence[str], amr_values: Sequence[str]) -> None:
    """Multi-factor sign-in (SATRE 3.2.04) as the provider reports it: `acr` (RFC 9470's authentication
    context, e.g. REFEDS MFA) or `amr` (RFC 8176's methods). Nothing configured: nothing required."""
    if not acr_values and not amr_values:
        return
    acr = claim(claims, "acr")
    amr = claim(claims, "amr")
    methods = [m for m in amr if isinstance(m, str)] if isinstance(amr, list) else []
    if isinstance(acr, str) and acr in acr_values:
        return
    if set(methods) & set(amr_values):
        return
    wanted = [f"acr {' or '.join(acr_values)}"] if acr_values else []
    wanted += [f"amr with {' or '.join(amr_values)}"] if amr_values else []
    raise TokenRejected(
        403,
        "multi-factor sign-in is required: the identity provider reported "
        f"acr {acr!r} and amr {methods}, and this site asks for {' or '.join(wanted)}; sign in again with "
        "your second factor",
    )
