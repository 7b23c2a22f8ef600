#!/usr/bin/env bash
# Starts the audit service for the local stack on https://127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095}: the target of the
# kube-apiserver's audit webhook, the writers' ingestion endpoint (the API server's service-account tokens),
# and the security officers' page (sign-in through the stack's OpenID Connect provider as sam, or with the dev
# issuer's tokens: cleanroom token issue --user sam@hospital.example --group security-officer). Spool:
# .cluster/audit. Idempotent.
# The verifiers' trust anchor is .cluster/audit-trusted-keys (the signing key's fingerprint, outside the trail):
# `cleanroom audit verify DIR` and the page's Verify read it, never the trail's own keys.json.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
port=${CLEANROOM_AUDIT_PORT:-8095}
pidfile=$STATE/audit-service.pid
cleanroom=$ROOT/.venv/bin/cleanroom
[ -x "$cleanroom" ] || die "the audit service needs the project's virtualenv" "run make install first"
[ -f "$STATE/audit-signing.pem" ] || "$ROOT/.venv/bin/python" -c "from cleanroom.audit import write_signing_key; write_signing_key('$STATE/audit-signing.pem')"
"$ROOT/.venv/bin/python" -c "import sys; from cleanroom.audit import key_fingerprint, write_trusted_keys; write_trusted_keys(sys.argv[2], [key_fingerprint(sys.argv[1])])" \
  "$STATE/audit-signing.pem" "$STATE/audit-trusted-keys"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then say "audit service already running"; exit 0; fi
(cd "$ROOT" && CLEANROOM_DEV_ISSUER_DIR=$STATE/hub "$cleanroom" token issue --init --user nobody@localhost >/dev/null)
kc get --raw /openid/v1/jwks >"$STATE/apiserver-jwks.json"
issuer=$(kc get --raw /.well-known/openid-configuration | python3 -c 'import json,sys; print(json.load(sys.stdin)["issuer"])')
# Officers sign in through the stack's OpenID Connect provider (hack/oidc-up.sh: sam holds security-officer).
oidc=()
if [ -f "$STATE/oidc.env" ]; then
  # shellcheck source=/dev/null
  source "$STATE/oidc.env"
  oidc=(CLEANROOM_AUDIT_OIDC_ISSUER="$OIDC_ISSUER" CLEANROOM_AUDIT_OIDC_CLIENT_ID="$OIDC_AUDIT_CLIENT_ID"
    CLEANROOM_AUDIT_OIDC_CLIENT_SECRET="$OIDC_AUDIT_CLIENT_SECRET" CLEANROOM_AUDIT_OIDC_USERNAME_CLAIM=email
    CLEANROOM_AUDIT_OIDC_SCOPES="openid email profile groups" CLEANROOM_AUDIT_OIDC_LOGIN_SERVICE="the sample provider")
fi
CLEANROOM_AUDIT_DIR=$STATE/audit CLEANROOM_AUDIT_SIGNING_KEY=$STATE/audit-signing.pem \
CLEANROOM_AUDIT_WRITER_ISSUER=$issuer CLEANROOM_AUDIT_WRITER_JWKS=$STATE/apiserver-jwks.json \
CLEANROOM_AUDIT_WRITERS=system:serviceaccount:cleanroom-system:cleanroom-operator,system:serviceaccount:cleanroom-system:cleanroom-hub \
CLEANROOM_AUDIT_USER_ISSUER=https://login.cleanroom.local CLEANROOM_AUDIT_USER_AUDIENCE=cleanroom-hub \
CLEANROOM_AUDIT_USER_JWKS=$STATE/hub/dev-jwks.json \
CLEANROOM_AUDIT_WEBHOOK_TOKEN_FILE=$STATE/audit-webhook.token \
CLEANROOM_AUDIT_TRUSTED_KEYS=$STATE/audit-trusted-keys CLEANROOM_AUDIT_MAX_CHECKPOINT_AGE=300 \
  env "${oidc[@]}" setsid "$cleanroom" audit serve --host 127.0.0.1 --port "$port" \
    --tls-cert "$STATE/audit-tls.crt" --tls-key "$STATE/audit-tls.key" >"$STATE/audit-service.log" 2>&1 </dev/null &
echo $! >"$pidfile"
wait_healthy "audit service" "$pidfile" "$STATE/audit-service.log" "https://127.0.0.1:$port/healthz" --cacert "$STATE/audit-tls.crt"
say "audit service on https://127.0.0.1:$port (CA .cluster/audit-tls.crt; log: .cluster/audit-service.log)"
