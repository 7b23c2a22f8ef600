"""The hub's own Prometheus metrics, beside JupyterHub's: sign-ins, refused sign-ins and refused access.

JupyterHub serves prometheus_client's default registry at /hub/metrics (to a token with the read:metrics
scope; hub.config gives Prometheus one), so these appear there with JupyterHub's own series. A refusal's
kind is one of a fixed set read from its reason (the reason itself names claims and values).
"""

from __future__ import annotations

from prometheus_client import Counter

SIGN_INS = Counter("cleanroom_hub_sign_ins_total", "Sign-ins with a verified token.")
SIGN_IN_REFUSALS = Counter(
    "cleanroom_hub_sign_in_refusals_total",
    "Sign-ins refused (400, 401, 403), by kind: no_token, malformed, expired, audience, issuer, signature, "
    "unknown_key, algorithm, claims, email_unverified, not_yet_valid, state, nonce, code, group, mfa, "
    "provider or other.",
    ["status", "kind"],
)
ACCESS_REFUSALS = Counter(
    "cleanroom_hub_access_refusals_total",
    "Signed-in users refused a workspace, by kind: not_listed (not in spec.users), no_such_workspace, "
    "in_use (another listed user's running session).",
    ["kind"],
)

# Reasons as cleanroom.tokens words them, first match wins.
_KINDS = (
    ("no token", "no_token"),
    ("not a JWT", "malformed"),
    ("token expired", "expired"),
    ("token is for another audience", "audience"),
    ("token is from another issuer", "issuer"),
    ("signature does not verify", "signature"),
    ("unknown signing key", "unknown_key"),
    ("algorithm", "algorithm"),
    ("token lacks", "claims"),
    ("token has no usable", "claims"),
    ("claim ", "claims"),
    ("the token's email is not verified", "email_unverified"),
    ("token not valid yet", "not_yet_valid"),
    # OpenID Connect sign-in (cleanroom.oidc, and oauthenticator's own words for its state checks).
    ("the sign-in's state does not match", "state"),
    ("OAuth state", "state"),
    ("no sign-in in progress", "state"),
    ("the ID token's nonce does not match", "nonce"),
    ("the identity provider refused the sign-in's code", "code"),
    ("the identity provider refused the sign-in", "provider"),
    ("multi-factor sign-in is required", "mfa"),
)
# Reasons that begin with the user's name.
_NAMED = (("is not in a group allowed here", "group"),)


def refusal_kind(reason: str) -> str:
    named = next((kind for words, kind in _NAMED if words in reason), None)
    return named or next((kind for prefix, kind in _KINDS if reason.startswith(prefix)), "other")


def signed_in() -> None:
    SIGN_INS.inc()


def sign_in_refused(status: int, reason: str) -> None:
    SIGN_IN_REFUSALS.labels(str(status), refusal_kind(reason)).inc()


def access_refused(kind: str) -> None:
    ACCESS_REFUSALS.labels(kind).inc()
