#!/usr/bin/env bash
# Starts the local stack's OpenID Connect provider (hack/oidc-provider/server.mjs: npm's oidc-provider, cached by
# version under ~/.cache/cleanroom/node/) with the sample users alice (sample-ai), sam (security-officer and the
# chart's default exports.securityOfficerGroup, cleanroom:security-officers), stella (sample-stewards), eve (no
# group) and mallory (an unverified copy of alice's address); the password is the user name, the one-time code
# 123456. It listens on the host's address, port ${CLEANROOM_OIDC_PORT:-8096}, which browsers on this machine and
# the hub's pod on the real node both reach: the issuer must be one URL for both. Writes the issuer and the
# clients' secrets to .cluster/oidc.env. Idempotent; `make down` stops it (its pid file is .cluster/oidc.pid).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
port=${CLEANROOM_OIDC_PORT:-8096}
pidfile=$STATE/oidc.pid
module=$CACHE/node/oidc-provider-$OIDC_PROVIDER_VERSION/node_modules/oidc-provider
[ -f "$module/package.json" ] || "$ROOT/hack/install-node-tools.sh"
command -v node >/dev/null || die "node is required for the OpenID Connect provider" "run hack/install-system-deps.sh"
host_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
host=${CLEANROOM_OIDC_HOST:-${host_ip:-127.0.0.1}}
issuer=http://$host:$port
mkdir -p "$STATE/oidc"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  say "OpenID Connect provider already running"
else
  OIDC_PROVIDER_MODULE=$module OIDC_ISSUER=$issuer OIDC_STATE_DIR=$STATE/oidc \
  OIDC_HUB_URL=http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000} OIDC_AUDIT_URL=https://127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095} \
    setsid node "$ROOT/hack/oidc-provider/server.mjs" >"$STATE/oidc.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
fi
wait_healthy "OpenID Connect provider" "$pidfile" "$STATE/oidc.log" "$issuer/.well-known/openid-configuration"
secret() { "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$STATE/oidc/clients.json" "$1"; }
cat >"$STATE/oidc.env" <<ENV
OIDC_ISSUER=$issuer
OIDC_HUB_CLIENT_ID=cleanroom-hub
OIDC_HUB_CLIENT_SECRET=$(secret cleanroom-hub)
OIDC_AUDIT_CLIENT_ID=cleanroom-audit
OIDC_AUDIT_CLIENT_SECRET=$(secret cleanroom-audit)
ENV
chmod 600 "$STATE/oidc.env"
say "OpenID Connect provider $issuer (users alice, sam, eve, mallory; log: .cluster/oidc.log; clients in .cluster/oidc.env)"
