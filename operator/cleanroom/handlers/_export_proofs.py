"""Who signs decisions made on the officers' page, and the identity provider's keys to verify them with
(`cleanroom.airlock.proofs` does the verifying, in the plan). The operator's settings from its environment,
CLEANROOM_EXPORT_DECISION_*: the provider (ISSUER), the page's client id (AUDIENCE), and the USERNAME_CLAIM,
GROUPS_CLAIM and ROLES_CLAIM the hub and the page read (the chart sets them from hub.oidc and
audit.service.oidc). Unset: no decision made on the page counts."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

import jwt

from cleanroom.airlock.proofs import ProofPolicy
from cleanroom.oidc import KeySet, discover

LOGGER = logging.getLogger("cleanroom.export")


@functools.cache
def _configured() -> tuple[ProofPolicy, KeySet] | None:
    issuer = os.environ.get("CLEANROOM_EXPORT_DECISION_ISSUER", "")
    if not issuer:
        return None
    policy = ProofPolicy(
        issuer=issuer,
        audience=os.environ["CLEANROOM_EXPORT_DECISION_AUDIENCE"],
        username_claim=os.environ.get("CLEANROOM_EXPORT_DECISION_USERNAME_CLAIM", "sub") or "sub",
        groups_claim=os.environ.get("CLEANROOM_EXPORT_DECISION_GROUPS_CLAIM", "groups") or "groups",
        roles_claim=os.environ.get("CLEANROOM_EXPORT_DECISION_ROLES_CLAIM", ""),
    )
    return policy, KeySet(discover(issuer).jwks_uri)


def policy_and_keys(request: Mapping[str, Any]) -> tuple[ProofPolicy | None, Mapping[str, jwt.PyJWK]]:
    """For a request with page decisions: the policy and the provider's keys, fetched again when a token
    names a key not seen yet (at most once a minute, `KeySet`). Keys that cannot be read leave none, and
    then no page decision counts on this pass."""
    decisions = [d for d in (request.get("spec") or {}).get("decisions") or () if d.get("proof")]
    if not decisions:
        return None, {}
    configured: tuple[ProofPolicy, KeySet] | None = None
    try:
        configured = _configured()
        if configured is None:
            return None, {}
        policy, keyset = configured
        keys = keyset.keys()
        kids = {_kid(str(d["proof"].get("idToken", ""))) for d in decisions}
        return policy, keys if kids <= set(keys) else keyset.keys(refresh=True)
    except (OSError, ValueError) as error:
        LOGGER.warning("the identity provider's keys cannot be read: %s", error)
        return (configured[0] if configured else None), {}


def _kid(token: str) -> str:
    try:
        return str(jwt.get_unverified_header(token).get("kid", ""))
    except jwt.PyJWTError:
        return ""
