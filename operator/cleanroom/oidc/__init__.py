"""OpenID Connect sign-in for the hub and the officers' audit page: the authorization code flow with PKCE
(`flow`), ID token verification and the site's rules on claims (`idtoken`), the provider's discovery
document and keys (`provider`), a relying party for pages without oauthenticator (`relying_party`), and the
settings from the environment (`settings`)."""

from cleanroom.oidc.flow import Attempt, authorization_url, check_callback, logout_url, pkce_challenge
from cleanroom.oidc.idtoken import SignInRules, check_rules, require_mfa, verify_id_token
from cleanroom.oidc.provider import KeySet, ProviderMetadata, discover, fetch_json, fetch_userinfo
from cleanroom.oidc.relying_party import RelyingParty, exchange_code
from cleanroom.oidc.settings import OidcSettings

__all__ = [
    "Attempt",
    "KeySet",
    "OidcSettings",
    "ProviderMetadata",
    "RelyingParty",
    "SignInRules",
    "authorization_url",
    "check_callback",
    "check_rules",
    "discover",
    "exchange_code",
    "fetch_json",
    "fetch_userinfo",
    "logout_url",
    "pkce_challenge",
    "require_mfa",
    "verify_id_token",
]
