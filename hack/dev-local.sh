#!/usr/bin/env bash
# The local-process mode of `make dev`, used where the machine cannot run the real node
# (.cluster/real-node.unavailable says why): the operator and the hub run as local processes and the notebook
# pods sit on simulated nodes. Creates the sample Secrets, starts the operator (logs: .cluster/operator.log) and
# the hub, applies examples/ and shows their status.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=/dev/null
source "$STATE/s3.env"

say "secrets in cleanroom-keys (site pseudonym key, S3 reader credentials)"
for ns in cleanroom-system cleanroom-keys; do kc create namespace "$ns" --dry-run=client -o yaml | kc apply -f - >/dev/null; done
[ -f "$STATE/site-pseudonym.key" ] || head -c 32 /dev/urandom | base64 >"$STATE/site-pseudonym.key"
kc -n cleanroom-keys create secret generic site-pseudonym-key --from-file=key="$STATE/site-pseudonym.key" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n cleanroom-keys create secret generic raw-imaging-reader \
  --from-literal=accessKey="$S3_ACCESS_KEY" --from-literal=secretKey="$S3_SECRET_KEY" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null

say "sample corpus (from pydicom's bundled files) to s3://raw-imaging/sample/"
"$ROOT/.venv/bin/python" "$ROOT/hack/sample_corpus.py"

say "audit trail in .cluster/audit (signing key .cluster/audit-signing.pem)"
[ -f "$STATE/audit-signing.pem" ] || "$ROOT/.venv/bin/python" -c "from cleanroom.audit import write_signing_key; write_signing_key('$STATE/audit-signing.pem')"

say "grant signer on 127.0.0.1:${CLEANROOM_SIGNER_PORT:-8093} (logs: .cluster/grant-signer.log)"
# Materializers (here the hub's local sessions) ask it for their snapshot's object URLs; it holds the read key
# (the local server has one account) and seals nothing itself: the operator seals with the same key's secret.
if [ -f "$STATE/grant-signer.pid" ] && kill -0 "$(cat "$STATE/grant-signer.pid")" 2>/dev/null; then
  say "already running (pid $(cat "$STATE/grant-signer.pid"))"
else
  CLEANROOM_SNAPSHOT_ENDPOINT=$S3_ENDPOINT CLEANROOM_SNAPSHOT_ACCESS_KEY=$S3_ACCESS_KEY \
  CLEANROOM_SNAPSHOT_SECRET_KEY=$S3_SECRET_KEY CLEANROOM_SNAPSHOT_BUCKET=cleanroom-snapshots \
  setsid "$ROOT/.venv/bin/python" -m cleanroom.cli_signer --host 127.0.0.1 --port "${CLEANROOM_SIGNER_PORT:-8093}" \
    >"$STATE/grant-signer.log" 2>&1 &
  echo $! >"$STATE/grant-signer.pid"
  wait_healthy grant-signer "$STATE/grant-signer.pid" "$STATE/grant-signer.log" "http://127.0.0.1:${CLEANROOM_SIGNER_PORT:-8093}/healthz"
fi

say "operator (logs: .cluster/operator.log)"
# Materializers' read grants are signed for the address they fetch from: here, the local S3 server; they name
# the signer as the materializers reach it.
printf 'snapshotEndpoint: %s\ngrantSignerUrl: http://127.0.0.1:%s\n' "$S3_ENDPOINT" "${CLEANROOM_SIGNER_PORT:-8093}" \
  >"$STATE/workspace-settings.yaml"
if [ -f "$STATE/operator.pid" ] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
  say "already running (pid $(cat "$STATE/operator.pid"))"
else
  KUBECONFIG=$KUBECONFIG_FILE CLEANROOM_SNAPSHOT_ENDPOINT=$S3_ENDPOINT CLEANROOM_SNAPSHOT_ACCESS_KEY=$S3_ACCESS_KEY \
  CLEANROOM_SNAPSHOT_SECRET_KEY=$S3_SECRET_KEY CLEANROOM_SNAPSHOT_BUCKET=cleanroom-snapshots \
  CLEANROOM_AUDIT_DIR=$STATE/audit CLEANROOM_AUDIT_SIGNING_KEY=$STATE/audit-signing.pem \
  CLEANROOM_WORKSPACE_CONFIG=$STATE/workspace-settings.yaml \
  setsid "$ROOT/.venv/bin/cleanroom" operator --health-host 127.0.0.1 \
    --health-port "${CLEANROOM_HEALTH_PORT:-8081}" >"$STATE/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
  wait_healthy operator "$STATE/operator.pid" "$STATE/operator.log" "http://127.0.0.1:${CLEANROOM_HEALTH_PORT:-8081}/healthz"
fi

say "hub (JupyterHub + configurable-http-proxy on http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000}; logs: .cluster/hub.log)"
mkdir -p "$STATE/hub"
if [ -f "$STATE/hub.pid" ] && kill -0 "$(cat "$STATE/hub.pid")" 2>/dev/null; then
  say "already running (pid $(cat "$STATE/hub.pid"))"
else
  source "$ROOT/hack/versions.env"
  (cd "$ROOT" && CLEANROOM_DEV_ISSUER_DIR=$STATE/hub "$ROOT/.venv/bin/cleanroom" token issue --init --user nobody@localhost >/dev/null)
  # Browsers sign in through the stack's OpenID Connect provider (hack/oidc-up.sh); dev tokens still work.
  oidc=()
  if [ -f "$STATE/oidc.env" ]; then
    # shellcheck source=/dev/null
    source "$STATE/oidc.env"
    oidc=(CLEANROOM_HUB_OIDC_ISSUER="$OIDC_ISSUER" CLEANROOM_HUB_OIDC_CLIENT_ID="$OIDC_HUB_CLIENT_ID"
      CLEANROOM_HUB_OIDC_CLIENT_SECRET="$OIDC_HUB_CLIENT_SECRET" CLEANROOM_HUB_OIDC_USERNAME_CLAIM=email
      CLEANROOM_HUB_OIDC_SCOPES="openid email profile groups" CLEANROOM_HUB_OIDC_LOGIN_SERVICE="the sample provider")
  fi
  # The hub keeps its database and cookie secret in its working directory, .cluster/hub.
  env "${oidc[@]}" KUBECONFIG=$KUBECONFIG_FILE CLEANROOM_SNAPSHOT_ENDPOINT=$S3_ENDPOINT \
    CLEANROOM_SNAPSHOT_ACCESS_KEY=$S3_ACCESS_KEY CLEANROOM_SNAPSHOT_SECRET_KEY=$S3_SECRET_KEY \
    CLEANROOM_SNAPSHOT_BUCKET=cleanroom-snapshots \
    CLEANROOM_AUDIT_DIR=$STATE/audit CLEANROOM_AUDIT_SIGNING_KEY=$STATE/audit-signing.pem \
    CLEANROOM_SERVICE_ACCOUNT=system:serviceaccount:cleanroom-system:cleanroom-hub \
    CLEANROOM_HUB_ISSUER=https://login.cleanroom.local CLEANROOM_HUB_AUDIENCE=cleanroom-hub \
    CLEANROOM_HUB_JWKS_FILE=$STATE/hub/dev-jwks.json \
    CLEANROOM_HUB_LOCAL_PROCESS=true CLEANROOM_HUB_LOCAL_ROOT=$STATE/hub/sessions \
    CLEANROOM_HUB_BIND_URL=http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000} \
    CLEANROOM_HUB_API_BIND_URL=http://127.0.0.1:8091 CLEANROOM_HUB_PROXY_API_URL=http://127.0.0.1:8092 \
    CLEANROOM_HUB_PROXY_COMMAND=$CACHE/node/configurable-http-proxy-$CHP_VERSION/node_modules/.bin/configurable-http-proxy \
    setsid sh -c 'cd "$1" && exec "$2" hub --config "$3"' hub "$STATE/hub" "$ROOT/.venv/bin/cleanroom" \
    "$ROOT/charts/cleanroom/files/jupyterhub_config.py" >"$STATE/hub.log" 2>&1 </dev/null &
  echo $! >"$STATE/hub.pid"
  wait_healthy hub "$STATE/hub.pid" "$STATE/hub.log" "http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000}/hub/health"
fi

say "examples/"
kc apply -f "$ROOT/examples/" >/dev/null
say "waiting for the sample Dataset to be de-identified and published"
kc wait --for=condition=Ready dataset/sample-ct --timeout=300s >/dev/null \
  || { kc describe dataset sample-ct >&2; die "the sample Dataset did not become Ready" "read .cluster/operator.log"; }
say "waiting for the sample Workspace (snapshot materialized and verified, GPU pod scheduled)"
kc -n team-sample wait --for=condition=Ready workspace/segmentation-alice --timeout=180s >/dev/null \
  || { kc -n team-sample describe workspace segmentation-alice >&2; die "the sample Workspace did not become Ready" "read .cluster/operator.log"; }
kc get datasets
kc get workspaces -A
kc -n team-sample get pods,pvc,networkpolicies -o wide
echo
url=$(kc -n team-sample get workspace segmentation-alice -o jsonpath='{.status.url}')
say "the sample Workspace is Ready: its hub URL is $url (the notebook pod runs on a simulated node, see docs/testing.md)"
if [ -f "$STATE/oidc.env" ]; then
  say "sign in at http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000}/hub/login through the sample provider as alice, password alice, one-time code 123456"
  say "  (officers: sam, same pattern); API clients send a token from:"
else
  say "sign in at http://127.0.0.1:${CLEANROOM_HUB_PORT:-8000}/hub/login with the token from:"
fi
say "  .venv/bin/cleanroom token issue --user alice@hospital.example --group prostate-ai"
say "security officers: https://127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095}/ (certificate .cluster/audit-tls.crt), token from:"
say "  .venv/bin/cleanroom token issue --user sam@hospital.example --group security-officer"
say "export KUBECONFIG=$KUBECONFIG_FILE; kubectl describe workspace -n team-sample segmentation-alice; .venv/bin/cleanroom snapshot ls; .venv/bin/cleanroom audit query"
