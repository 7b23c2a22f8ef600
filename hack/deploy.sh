#!/usr/bin/env bash
# The deployed install on the local stack: `helm upgrade --install` of charts/cleanroom with
# ci/deployed-values.yaml into cleanroom-system, the chart's images (hack/images-local.sh) running as pods on
# the real node, with the Secrets an admin would create first. Idempotent; waits until every pod is Ready.
# Prints the release's facts as shell assignments to .cluster/deployed.env.
# Needs `make cluster-up crds` with a real node (see .cluster/real-node.unavailable when there is none).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HELM=$CACHE/bin/helm-$HELM_VERSION/helm
CHART=$ROOT/charts/cleanroom
NS=${CLEANROOM_DEPLOY_NAMESPACE:-cleanroom-system}
RELEASE=cleanroom
[ -f "$STATE/real-node.unavailable" ] && die "no real node: $(cat "$STATE/real-node.unavailable")" "the deployed install needs one (docs/testing.md)"
[ -S "$STATE/node/containerd.sock" ] || die "the real node's containerd is not running" "run make cluster-up"
[ -x "$HELM" ] || "$ROOT/hack/build-binaries.sh" helm
say "images of this checkout's code (hack/images-local.sh: cached by content, built when the code changed)"
"$ROOT/hack/images-local.sh" >"$STATE/images.env.new" || die "building the images failed" "read the error above"
mv "$STATE/images.env.new" "$STATE/images.env"
# shellcheck source=/dev/null
source "$STATE/images.env"

say "deployed install: namespace $NS (Pod Security restricted) and the Secrets an admin creates first"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
secret() { # NAME KEY=VALUE...: created once, kept across runs
  local name=$1
  shift
  kc -n "$NS" get secret "$name" >/dev/null 2>&1 && return 0
  local args=()
  for kv in "$@"; do args+=("--from-literal=$kv"); done
  kc -n "$NS" create secret generic "$name" "${args[@]}" >/dev/null
}
random() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
secret cleanroom-s3-root accessKey="root$(random | cut -c1-8)" secretKey="$(random)"
s3_access=$(kc -n "$NS" get secret cleanroom-s3-root -o jsonpath='{.data.accessKey}' | base64 -d)
s3_secret=$(kc -n "$NS" get secret cleanroom-s3-root -o jsonpath='{.data.secretKey}' | base64 -d)
# The bundled server has one account; a site's store gives the operator a writer and a read-only key.
secret cleanroom-snapshot-writer accessKey="$s3_access" secretKey="$s3_secret"
secret cleanroom-snapshot-reader accessKey="$s3_access" secretKey="$s3_secret"
# The Dataset's Secrets live in a namespace of their own (operator.secretNamespaces): the operator reads no
# Secret of the release namespace, where the audit signing key is.
kc create namespace cleanroom-keys --dry-run=client -o yaml | kc apply -f - >/dev/null
NS=cleanroom-keys secret raw-imaging-reader accessKey="$s3_access" secretKey="$s3_secret"
[ -f "$STATE/site-pseudonym.key" ] || head -c 32 /dev/urandom | base64 >"$STATE/site-pseudonym.key"
NS=cleanroom-keys secret site-pseudonym-key key="$(cat "$STATE/site-pseudonym.key")"
if ! kc -n "$NS" get secret cleanroom-audit-signing-key >/dev/null 2>&1; then
  key=$(mktemp -u)
  "$ROOT/.venv/bin/python" -c "from cleanroom.audit import write_signing_key; import sys; write_signing_key(sys.argv[1])" "$key"
  kc -n "$NS" create secret generic cleanroom-audit-signing-key --from-file=signing-key.pem="$key" >/dev/null
  rm -f "$key"
fi
# The officer's verifier trusts the signing key by its fingerprint, from its own configuration (the chart's
# audit.trustedKeys for the page, .cluster/audit-trusted-keys for `cleanroom audit verify`), never from the
# trail it verifies.
key_file=$(mktemp)
kc -n "$NS" get secret cleanroom-audit-signing-key -o jsonpath='{.data.signing-key\.pem}' | base64 -d >"$key_file"
audit_fp=$("$ROOT/.venv/bin/python" -c 'import sys; from cleanroom.audit import key_fingerprint; print(key_fingerprint(sys.argv[1]))' "$key_file")
rm -f "$key_file"
grep -qxF "$audit_fp" "$STATE/audit-trusted-keys" 2>/dev/null || echo "$audit_fp" >>"$STATE/audit-trusted-keys"
mkdir -p "$STATE/hub"
[ -f "$STATE/hub/dev-jwks.json" ] || (cd "$ROOT" && CLEANROOM_DEV_ISSUER_DIR=$STATE/hub "$ROOT/.venv/bin/cleanroom" token issue --init --user nobody@localhost >/dev/null)
kc -n "$NS" create configmap cleanroom-dev-jwks --from-file=jwks.json="$STATE/hub/dev-jwks.json" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null

# The API server as pods reach it (the kubernetes Service's endpoint), for the operator's and hub's egress.
api_ip=$(kc get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}')
api_port=$(kc get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].ports[0].port}')
image_args=()
for pair in operator:IMAGE_OPERATOR hub:IMAGE_HUB proxy:IMAGE_PROXY; do
  name=${pair%%:*} var=${pair#*:} image=${!var}
  image_args+=(--set "images.$name.repository=${image%:*}" --set "images.$name.tag=${image##*:}")
done
image_args+=(--set "s3.bundled.image.repository=${IMAGE_S3%:*}" --set "s3.bundled.image.tag=${IMAGE_S3##*:}")
# Browsers sign in through the stack's OpenID Connect provider (hack/oidc-up.sh) when it runs; the hub's and
# the audit service's pods reach it on the host's address. Tokens from the dev issuer keep working for API
# clients and the deployed tests (hub.auth, the audit service's /login).
oidc_args=()
if [ -f "$STATE/oidc.env" ]; then
  # shellcheck source=/dev/null
  source "$STATE/oidc.env"
  for client in hub:"$OIDC_HUB_CLIENT_SECRET" audit:"$OIDC_AUDIT_CLIENT_SECRET"; do
    kc -n "$NS" create secret generic "cleanroom-${client%%:*}-oidc" --from-literal=client-secret="${client#*:}" \
      --dry-run=client -o yaml | kc apply -f - >/dev/null
  done
  oidc_host=${OIDC_ISSUER#http://}
  oidc_args=(--set "hub.oidc.issuer=$OIDC_ISSUER" --set "hub.oidc.clientId=$OIDC_HUB_CLIENT_ID"
    --set "hub.oidc.clientSecret.secretName=cleanroom-hub-oidc" --set "hub.oidc.usernameClaim=email"
    --set "hub.oidc.scopes={openid,email,profile,groups}" --set "hub.oidc.loginService=the sample provider"
    --set "audit.service.oidc.clientId=$OIDC_AUDIT_CLIENT_ID" --set "audit.service.oidc.clientSecret.secretName=cleanroom-audit-oidc"
    --set "networkPolicy.hubIdentityProviderCIDRs={${oidc_host%%:*}/32}" --set "networkPolicy.hubIdentityProviderPort=${oidc_host##*:}")
fi

# A first install that failed has no revision to upgrade from: it is removed and installed again.
status=$("$HELM" status "$RELEASE" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" -o json 2>/dev/null | "$ROOT/.venv/bin/python" -c 'import json,sys; r=json.load(sys.stdin); print(r["info"]["status"], r["version"])' 2>/dev/null || true)
case "$status" in
  "failed 1"|"pending-install 1") "$HELM" uninstall "$RELEASE" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" --wait >/dev/null ;;
esac
# CLEANROOM_DEPLOY_VALUES: a values file over ci/deployed-values.yaml, to try a setting on the stack before it
# becomes the deployed default (e.g. workspaces.snapshotVolumes.mode shared); the next plain deploy drops it.
extra_values=()
[ -n "${CLEANROOM_DEPLOY_VALUES:-}" ] && extra_values=(-f "$CLEANROOM_DEPLOY_VALUES")
say "helm upgrade --install $RELEASE (operator, hub, proxy, audit service, S3 server as pods on real-0)"
"$HELM" upgrade --install "$RELEASE" "$CHART" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" \
  -f "$CHART/ci/deployed-values.yaml" "${extra_values[@]}" "${image_args[@]}" \
  --set "networkPolicy.apiServerCIDRs={$api_ip/32}" --set "networkPolicy.apiServerPort=$api_port" \
  --set "audit.trustedKeys={$audit_fp}" "${oidc_args[@]}" \
  --wait --timeout 5m >"$STATE/helm-deploy.log" 2>&1 \
  || { cat "$STATE/helm-deploy.log" >&2; kc -n "$NS" get pods,pvc -o wide >&2; kc -n "$NS" get events --sort-by=.lastTimestamp | tail -20 >&2
       die "the deployed install did not become ready" "read the pods' state and events above; kubectl -n $NS logs deploy/cleanroom-operator"; }
# An operator scaled down by the integration suite (two operators would fight) comes back here.
kc -n "$NS" scale deployment/"$RELEASE"-operator --replicas=1 >/dev/null
kc -n "$NS" rollout status deployment/"$RELEASE"-operator --timeout=120s >/dev/null
cat >"$STATE/deployed.env" <<ENV
DEPLOYED_NAMESPACE=$NS
DEPLOYED_RELEASE=$RELEASE
DEPLOYED_S3_ACCESS_KEY=$s3_access
DEPLOYED_S3_SECRET_KEY=$s3_secret
DEPLOYED_IMAGE_NOTEBOOK=$IMAGE_NOTEBOOK
ENV
kc -n "$NS" get pods -o wide
say "deployed: every pod Ready on the real node (facts in .cluster/deployed.env)"
