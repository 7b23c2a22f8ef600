"""Bearer JWT verification for sign-in, and minting tokens from a local dev key.

Pure: keys come in as a JWKS document, the clock as an argument. Every refusal is a `TokenRejected`
with an HTTP status (401: the token is not acceptable; 403: it is, but names nobody we may let in) and
a reason safe to log: it never contains the token."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Asymmetric only: with an HMAC algorithm the verifier's public key would become the shared secret
# (the RS/HS key-confusion attack), and `none` is no signature at all.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class TokenRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str
    audience: str
    leeway_seconds: int = 30
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS
    username_claim: str = "sub"
    groups_claim: str = "groups"
    # Roles, when the identity provider lists them apart from groups (Entra ID's app roles `roles`, Keycloak's
    # `realm_access.roles`): they join the groups, so that a Dataset or the audit page can name either.
    roles_claim: str = ""
    # False only where a token is evidence of a past statement rather than a credential: a decision made on
    # the officers' page carries the ID token of its sign-in, whose nonce binds it to that one decision
    # (cleanroom.airlock.proofs), and is judged again long after the token's minutes are over.
    check_expiry: bool = True


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)


def load_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """Keys by `kid`. A key without a kid, or one for a symmetric algorithm, is refused: rotation works by
    kid, and a shared secret has no place in a public key set."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document.get("keys", []):
        kid = entry.get("kid")
        if not kid:
            raise ValueError("every key in the JWKS needs a 'kid' (rotation selects keys by kid)")
        if entry.get("kty") == "oct":
            raise ValueError(f"key {kid!r} is symmetric (kty oct); sign-in accepts public keys only")
        if "d" in entry:
            raise ValueError(f"key {kid!r} contains a private part; publish only the public key")
        keys[kid] = jwt.PyJWK(entry)
    if not keys:
        raise ValueError("the JWKS has no keys")
    return keys


def verify(token: str, keys: Mapping[str, jwt.PyJWK], policy: TokenPolicy) -> Identity:
    return identity_from_claims(verified_claims(token, keys, policy), policy)


def verified_claims(token: str, keys: Mapping[str, jwt.PyJWK], policy: TokenPolicy) -> dict[str, Any]:
    """The claims of a token whose algorithm, key, signature, issuer, audience and lifetime hold."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected(401, "not a JWT (expected header.payload.signature)") from None
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in policy.algorithms:
        raise TokenRejected(
            401, f"algorithm {alg!r} is not accepted; use one of {', '.join(policy.algorithms)}"
        )
    if not kid or kid not in keys:
        raise TokenRejected(
            401, f"unknown signing key (kid {kid!r}); the issuer's key set may need refreshing"
        )
    key = keys[kid]
    expected_type = _KEY_TYPES[alg[:2]]
    if key.key_type != expected_type:
        raise TokenRejected(401, f"algorithm {alg} does not match key {kid!r} of type {key.key_type}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=policy.audience,
            issuer=policy.issuer,
            leeway=policy.leeway_seconds,
            options={
                "require": ["exp", "iss", "aud"],
                "verify_exp": policy.check_expiry,
                "verify_iat": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected(401, "token expired; sign in again for a fresh one") from None
    except jwt.ImmatureSignatureError:
        raise TokenRejected(
            401, "token not valid yet (nbf in the future); check the issuer's clock"
        ) from None
    except jwt.InvalidAudienceError:
        raise TokenRejected(401, f"token is for another audience; expected {policy.audience!r}") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected(401, f"token is from another issuer; expected {policy.issuer!r}") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenRejected(401, f"token lacks the {error.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected(401, "signature does not verify") from None
    except jwt.PyJWTError as error:
        raise TokenRejected(401, f"token refused: {type(error).__name__}") from None
    return claims


def identity_from_claims(claims: Mapping[str, Any], policy: TokenPolicy) -> Identity:
    """The user that verified claims name: the user name claim, its address verified when it is one, and the
    groups and roles. Also for claims a provider's userinfo endpoint adds to an ID token's."""
    username = claims.get(policy.username_claim)
    if not isinstance(username, str) or not username.strip():
        raise TokenRejected(403, f"token has no usable {policy.username_claim!r} claim to name the user")
    # OpenID Connect Core 5.1: an address is the user's only when the issuer says it verified it; many
    # issuers let anyone type any address into a profile, and that would sign in as its owner.
    if policy.username_claim == "email" and claims.get("email_verified") is not True:
        raise TokenRejected(
            403,
            "the token's email is not verified (email_verified is not true); verify the address with the "
            "identity provider, or name users by the sub claim",
        )
    groups = _names(claims, policy.groups_claim, "group")
    if policy.roles_claim:
        groups += _names(claims, policy.roles_claim, "role")
    return Identity(username.strip().lower(), tuple(sorted(set(groups))), claims)


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name`, or a nested one by a dotted path (`realm_access.roles`, as Keycloak nests roles). A
    claim whose own name has dots (Entra ID's URL-named claims) is found by its full name first."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _names(claims: Mapping[str, Any], name: str, kind: str) -> list[str]:
    value = claim(claims, name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TokenRejected(403, f"claim {name!r} must be a list of {kind} names")
    return list(value)


# --- local development: a key pair that `make dev` writes, and tokens minted from it -------------------


@dataclass(frozen=True)
class DevIssuer:
    """An Ed25519 key that stands in for the platform's identity provider on a laptop."""

    private_key: Ed25519PrivateKey
    kid: str
    issuer: str
    audience: str

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def issue(
        self,
        user: str,
        groups: Sequence[str] = (),
        lifetime_seconds: int = 3600,
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": user,
            "groups": list(groups),
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime_seconds,
            **(extra or {}),
        }
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers={"kid": self.kid})


def write_dev_issuer(directory: str | Path, issuer: str, audience: str) -> DevIssuer:
    """Create (once) `dev-issuer.pem` and `dev-jwks.json` in `directory`; later calls reuse the key."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / "dev-issuer.pem"
    if not pem.exists():
        key = Ed25519PrivateKey.generate()
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        pem.chmod(0o600)
    dev = load_dev_issuer(pem, issuer, audience)
    (directory / "dev-jwks.json").write_text(json.dumps(dev.jwks(), indent=2) + "\n")
    return dev


def load_dev_issuer(pem: str | Path, issuer: str, audience: str) -> DevIssuer:
    key = serialization.load_pem_private_key(Path(pem).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{pem} is not an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return DevIssuer(key, "dev-" + raw.hex()[:12], issuer, audience)
