"""Sign-in token verification: every refusal the hub must make, and the claims it maps."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cleanroom.hub.authenticator import JWTAuthenticator
from cleanroom.tokens import DevIssuer, TokenPolicy, TokenRejected, load_jwks, verify

ISSUER, AUDIENCE = "https://login.platform.example", "cleanroom-hub"
POLICY = TokenPolicy(issuer=ISSUER, audience=AUDIENCE, leeway_seconds=30)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid}


JWKS = {"keys": [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1"), public_jwk(ED_KEY, "ed-1")]}
KEYS = load_jwks(JWKS)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "Alice@Hospital.example",
        "email": "alice@hospital.example",
        "groups": ["prostate-ai", "radiology"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Any, alg: str, kid: str, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def refusal(token: str, policy: TokenPolicy = POLICY) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        verify(token, KEYS, policy)
    return caught.value


@pytest.mark.parametrize(
    ("key", "alg", "kid"), [(RSA_KEY, "RS256", "rsa-1"), (EC_KEY, "ES256", "ec-1"), (ED_KEY, "EdDSA", "ed-1")]
)
def test_rs256_es256_and_eddsa_tokens_sign_in(key: Any, alg: str, kid: str) -> None:
    identity = verify(sign(key, alg, kid), KEYS, POLICY)
    assert identity.username == "alice@hospital.example"
    assert identity.groups == ("prostate-ai", "radiology")


EMAIL_POLICY = TokenPolicy(ISSUER, AUDIENCE, username_claim="email")


def test_the_username_can_come_from_a_verified_email_claim() -> None:
    token = sign(ED_KEY, "EdDSA", "ed-1", sub="0f1e2d3c", email_verified=True)
    assert verify(token, KEYS, EMAIL_POLICY).username == "alice@hospital.example"


@pytest.mark.parametrize("verified", [None, False, "true", 1])
def test_an_email_the_issuer_has_not_verified_does_not_name_the_user(verified: Any) -> None:
    # Many issuers let anyone type any address into a profile: an unverified one would sign in as its owner.
    token = sign(ED_KEY, "EdDSA", "ed-1", sub="0f1e2d3c", email_verified=verified)
    refused = refusal(token, EMAIL_POLICY)
    assert refused.status == 403
    assert "email_verified" in refused.reason


def test_email_verified_is_not_required_when_the_user_comes_from_sub() -> None:
    token = sign(ED_KEY, "EdDSA", "ed-1", email_verified=False)
    assert verify(token, KEYS, POLICY).username == "alice@hospital.example"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'kid': 'ed-1'})}.{b64(claims())}."
    assert "algorithm 'none' is not accepted" in refusal(token).reason


def test_hs256_signed_with_the_public_rsa_key_is_refused() -> None:
    """The key-confusion attack: HMAC keyed with the verifier's public key."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})
    payload = b64(claims())
    import hashlib
    import hmac as _hmac

    signature = (
        base64.urlsafe_b64encode(_hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    assert "'HS256' is not accepted" in refusal(f"{header}.{payload}.{signature}").reason


def test_an_algorithm_that_does_not_fit_the_key_is_refused() -> None:
    token = sign(RSA_KEY, "RS256", "ec-1")
    assert "does not match key 'ec-1'" in refusal(token).reason


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": int(time.time()) - 120}, "token expired"),
        # Built when the suite is collected, which can be half an hour before this runs: a day ahead.
        ({"nbf": int(time.time()) + 86400}, "not valid yet"),
        ({"aud": "another-service"}, "another audience"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": None}, "lacks the 'exp' claim"),
        ({"sub": None}, "no usable 'sub' claim"),
        ({"sub": 3}, "no usable 'sub' claim"),
        ({"groups": [1, 2]}, "must be a list of group names"),
    ],
)
def test_bad_claims_are_refused_with_a_reason(overrides: dict[str, Any], expected: str) -> None:
    assert expected in refusal(sign(ED_KEY, "EdDSA", "ed-1", **overrides)).reason


def test_clock_skew_within_the_leeway_is_tolerated() -> None:
    token = sign(ED_KEY, "EdDSA", "ed-1", exp=int(time.time()) - 10, nbf=int(time.time()) + 10)
    assert verify(token, KEYS, POLICY).username == "alice@hospital.example"


def test_an_unknown_kid_and_a_forged_signature_are_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    assert "unknown signing key" in refusal(sign(other, "EdDSA", "ed-2")).reason
    assert "signature does not verify" in refusal(sign(other, "EdDSA", "ed-1")).reason


def test_missing_user_is_403_not_401() -> None:
    assert refusal(sign(ED_KEY, "EdDSA", "ed-1", sub=None)).status == 403
    assert refusal(sign(ED_KEY, "EdDSA", "ed-1", aud="x")).status == 401


def test_key_sets_with_secrets_or_without_kids_are_refused() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        load_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]})
    with pytest.raises(ValueError, match="private part"):
        private = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(ED_KEY))
        load_jwks({"keys": [{**private, "kid": "p"}]})
    with pytest.raises(ValueError, match="needs a 'kid'"):
        load_jwks({"keys": [{k: v for k, v in JWKS["keys"][0].items() if k != "kid"}]})


def test_the_dev_issuer_mints_tokens_the_verifier_accepts(tmp_path: Any) -> None:
    dev = DevIssuer(ED_KEY, "dev-1", ISSUER, AUDIENCE)
    identity = verify(dev.issue("bob@hospital.example", ["lung"]), load_jwks(dev.jwks()), POLICY)
    assert (identity.username, identity.groups) == ("bob@hospital.example", ("lung",))


def authenticator(tmp_path: Any) -> JWTAuthenticator:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(JWKS))
    return JWTAuthenticator(jwks_file=str(path), issuer=ISSUER, audience=AUDIENCE)


def test_the_authenticator_maps_user_and_groups(tmp_path: Any) -> None:
    result = asyncio.run(authenticator(tmp_path).authenticate(None, {"token": sign(ED_KEY, "EdDSA", "ed-1")}))
    assert result == {"name": "alice@hospital.example", "groups": ["prostate-ai", "radiology"]}


def test_a_refusal_is_logged_without_the_token(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    token = sign(ED_KEY, "EdDSA", "ed-1", aud="elsewhere")
    auth = authenticator(tmp_path)
    auth.log = logging.getLogger("test-hub")
    with caplog.at_level(logging.INFO), pytest.raises(TokenRejected):
        asyncio.run(auth.authenticate(None, {"token": token}))
    assert "another audience" in caplog.text
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_a_rotated_key_is_picked_up_by_kid(tmp_path: Any) -> None:
    auth = authenticator(tmp_path)
    auth.jwks_min_refresh_seconds = 0
    asyncio.run(auth.authenticate(None, {"token": sign(ED_KEY, "EdDSA", "ed-1")}))
    rotated = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [*JWKS["keys"], public_jwk(rotated, "ed-2")]}))
    result = asyncio.run(auth.authenticate(None, {"token": sign(rotated, "EdDSA", "ed-2")}))
    assert result["name"] == "alice@hospital.example"
