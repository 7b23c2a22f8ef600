#!/usr/bin/env bash
# make chart-check: lint the chart, validate every example's manifests against the Kubernetes 1.35 schemas
# and our CRDs' (taken from the local control plane's own OpenAPI document: no download), install the chart
# into the local control plane, wait for its pods, and compare the operator's and hub's effective
# permissions (kubectl auth can-i --list) with the lists in docs/rbac.md. Needs `make cluster-up crds`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HELM=$CACHE/bin/helm-$HELM_VERSION/helm
KUBECONFORM=$CACHE/bin/kubeconform-$KUBECONFORM_VERSION/kubeconform
CHART=$ROOT/charts/cleanroom
RELEASE=chart-check
NS=cleanroom-chart-check
KUBE_VERSION=${K8S_VERSION#v}
[ -x "$HELM" ] && [ -x "$KUBECONFORM" ] || "$ROOT/hack/build-binaries.sh" helm kubeconform
[ -f "$KUBECONFIG_FILE" ] || die "no local cluster" "run make cluster-up crds first"

say "chart CRDs are the repository's crds/"
for crd in "$ROOT"/crds/*.yaml; do
  cmp -s "$crd" "$CHART/crds/$(basename "$crd")" || die "charts/cleanroom/crds/$(basename "$crd") differs from crds/" "make crds-gen (the CRDs and the chart's copy are generated from cleanroom.api)"
done

say "helm lint (default values and every example)"
"$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --strict >/dev/null
for values in "$CHART"/examples/*.yaml "$CHART"/ci/*.yaml; do
  "$HELM" lint "$CHART" --kube-version "$KUBE_VERSION" --strict -f "$values" >/dev/null || die "helm lint failed for $values" "run: $HELM lint $CHART -f $values"
done

say "schemas from the local kube-apiserver's OpenAPI (Kubernetes $KUBE_VERSION and the installed CRDs)"
schemas=$(mktemp -d)
trap 'rm -rf "$schemas"' EXIT
kc get --raw /openapi/v2 | python3 "$ROOT/hack/k8s_json_schemas.py" "$schemas"
location="$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json"

# CRDs are left to the API server, which validates them when `make crds` installs them: kubeconform's schema
# for them (from the OpenAPI v2 document) lacks x-kubernetes-validations at the root of a schema.
say "kubeconform -strict on helm template of every example, and on examples/"
for values in "$CHART"/values.yaml "$CHART"/examples/*.yaml "$CHART"/ci/*.yaml; do
  "$HELM" template "$RELEASE" "$CHART" -n "$NS" --include-crds --kube-version "$KUBE_VERSION" -f "$values" \
    | "$KUBECONFORM" -strict -summary -skip CustomResourceDefinition -schema-location "$location" - \
    || die "manifests from $(basename "$values") do not validate" "read the kubeconform lines above"
done
"$KUBECONFORM" -strict -summary -schema-location "$location" "$ROOT"/examples/*.yaml

say "helm install into the local control plane (namespace $NS)"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kc create namespace cleanroom-chart-sources --dry-run=client -o yaml | kc apply -f - >/dev/null
# The one namespace that holds Workspaces here (workspaces.namespaces): the operator's and hub's writes are
# RoleBindings there, and nowhere else.
ws_ns=cleanroom-chart-ws
kc create namespace "$ws_ns" --dry-run=client -o yaml | kc apply -f - >/dev/null
for secret in cleanroom-snapshot-writer cleanroom-snapshot-reader cleanroom-s3-root; do
  kc -n "$NS" create secret generic "$secret" --from-literal=accessKey=chart-check --from-literal=secretKey=chart-check-secret \
    --dry-run=client -o yaml | kc apply -f - >/dev/null
done
key=$(mktemp)
"$ROOT/.venv/bin/python" -c "from cleanroom.audit import write_signing_key; import sys; write_signing_key(sys.argv[1])" "$key.pem"
kc -n "$NS" create secret generic cleanroom-audit-signing-key --from-file=signing-key.pem="$key.pem" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
rm -f "$key" "$key.pem"
kc -n "$NS" create configmap cleanroom-dev-jwks --from-literal=jwks.json='{"keys": []}' --dry-run=client -o yaml | kc apply -f - >/dev/null
"$HELM" upgrade --install "$RELEASE" "$CHART" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" \
  -f "$CHART/ci/local-values.yaml" --set "workspaces.namespaces={$ws_ns}" --wait --timeout 5m \
  || { kc -n "$NS" get pods,pvc,events >&2; die "helm install did not become ready" "read the objects above"; }
kc -n "$NS" get deploy,pods,pvc,svc,networkpolicy

say "effective permissions match docs/rbac.md"
check_permissions() {
  local account=$1 namespace=$2 section=$3 expected actual
  expected=$(awk -v s="<!-- $section -->" '$0==s{f=1;next} f&&/^```/{if(++n==2)exit;next} f&&n==1' "$ROOT/docs/rbac.md")
  # Rules every authenticated user has (self reviews, discovery) are not ours to document.
  actual=$(kc auth can-i --list -n "$namespace" --as="system:serviceaccount:$NS:$account" \
    | awk 'NR>1 && $1 !~ /^selfsubject/ && $1 !~ /^\[/ {print}' | tr -s ' ' | sed 's/ \[\] \[\] / /; s/ $//' | sort)
  if [ "$(echo "$expected" | sort)" != "$actual" ]; then
    diff <(echo "$expected" | sort) <(echo "$actual") >&2 || true
    die "$account's permissions in $namespace differ from docs/rbac.md ($section)" "change the Role or the documented list (< documented, > actual)"
  fi
  say "$account in $namespace: $(grep -c . <<<"$actual" || true) rules, as documented"
}
check_permissions "$RELEASE-cleanroom-operator" "$NS" operator-release-namespace
check_permissions "$RELEASE-cleanroom-operator" cleanroom-chart-sources operator-secret-namespace
check_permissions "$RELEASE-cleanroom-operator" cleanroom-chart-ws operator-workspace-namespace
check_permissions "$RELEASE-cleanroom-operator" default operator-elsewhere
check_permissions "$RELEASE-cleanroom-hub" cleanroom-chart-ws hub-workspace-namespace
check_permissions "$RELEASE-cleanroom-hub" default hub
check_permissions "$RELEASE-cleanroom-audit" default audit-service

say "the operator works under its chart service account (a local process with that account's token)"
# kwok's pods do not execute, so the RBAC is exercised by running the operator here as the service account.
"$ROOT/hack/stop-operator.sh"
# A kubeconfig that authenticates as one of the chart's service accounts.
account_kubeconfig() {
  local account=$1 file=$2 server ca_file token
  token=$(kc -n "$NS" create token "$account" --duration 10m)
  server=$(kc config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca_file=$(kc config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
  if [ -n "$ca_file" ]; then cp "$ca_file" "$file.ca"
  else kc config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$file.ca"; fi
  KUBECONFIG=$file "$K8S_BIN/kubectl" config set-cluster local --server="$server" --certificate-authority="$file.ca" --embed-certs >/dev/null
  KUBECONFIG=$file "$K8S_BIN/kubectl" config set-credentials sa --token="$token" >/dev/null
  KUBECONFIG=$file "$K8S_BIN/kubectl" config set-context local --cluster=local --user=sa >/dev/null
  KUBECONFIG=$file "$K8S_BIN/kubectl" config use-context local >/dev/null
  rm -f "$file.ca"
}
sa_kubeconfig=$(mktemp)
account_kubeconfig "$RELEASE-cleanroom-operator" "$sa_kubeconfig"
sources=cleanroom-chart-sources
# Who creates the Workspace below, as the API server knows us: the admission policy admits no other name.
me=$(kc auth whoami -o jsonpath='{.status.userInfo.username}')
# shellcheck source=/dev/null
source "$STATE/s3.env"
"$ROOT/.venv/bin/python" "$ROOT/hack/sample_corpus.py" >/dev/null
# The Dataset's Secrets live in a namespace listed in operator.secretNamespaces (ci/local-values.yaml).
kc -n "$sources" create secret generic raw-imaging-reader --from-literal=accessKey="$S3_ACCESS_KEY" \
  --from-literal=secretKey="$S3_SECRET_KEY" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n "$sources" create secret generic site-pseudonym-key --from-literal=key="$(head -c 32 /dev/urandom | base64)" \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
log=$STATE/chart-check-operator.log
audit_dir=$(mktemp -d)
"$ROOT/.venv/bin/python" -c "from cleanroom.audit import write_signing_key; import sys; write_signing_key(sys.argv[1])" "$audit_dir/key.pem"
KUBECONFIG=$sa_kubeconfig CLEANROOM_NAMESPACE=$NS CLEANROOM_SERVICE_ACCOUNT=system:serviceaccount:$NS:$RELEASE-cleanroom-operator \
  CLEANROOM_SNAPSHOT_ENDPOINT=$S3_ENDPOINT CLEANROOM_SNAPSHOT_ACCESS_KEY=$S3_ACCESS_KEY CLEANROOM_SNAPSHOT_SECRET_KEY=$S3_SECRET_KEY \
  CLEANROOM_SNAPSHOT_BUCKET=cleanroom-snapshots CLEANROOM_AUDIT_DIR=$audit_dir/log CLEANROOM_AUDIT_SIGNING_KEY=$audit_dir/key.pem \
  setsid "$ROOT/.venv/bin/cleanroom" operator --health-host 127.0.0.1 --health-port 18089 --log-format plain >"$log" 2>&1 &
operator_pid=$!
cleanup_operator() {
  # Only ever a started process's group: `kill -- -0` would signal this script's own group.
  kill -TERM -- "-$operator_pid" 2>/dev/null || true
  [ -n "${audit_pid:-}" ] && kill -TERM -- "-$audit_pid" 2>/dev/null || true
  rm -rf "$sa_kubeconfig" "${audit_kubeconfig:-}" "$schemas" "$audit_dir"
}
trap cleanup_operator EXIT
kc apply -f - >/dev/null <<YAML
apiVersion: cleanroom.dev/v1alpha1
kind: Dataset
metadata: {name: chart-check-ct}
spec:
  description: The chart check's Dataset, ingested by the operator under its chart service account
  source:
    s3:
      endpoint: $S3_ENDPOINT
      bucket: raw-imaging
      prefix: sample/
      credentialsSecretRef: {namespace: $sources, name: raw-imaging-reader}
  deidentification:
    method: Pseudonymize
    keySecretRef: {namespace: $sources, name: site-pseudonym-key}
  access: {users: [alice@hospital.example, "$me"], namespaces: {names: [$ws_ns]}}
---
apiVersion: cleanroom.dev/v1alpha1
kind: Workspace
metadata: {name: rbac-check, namespace: $ws_ns, annotations: {cleanroom.dev/created-by: "$me"}}
spec:
  dataset: {name: chart-check-ct}
  users: [alice@hospital.example]
  purpose: Check that the operator's chart RBAC is enough to reconcile
  image: registry.example.org/cleanroom/notebook-cuda:2026.11
  resources: {gpu: 0, cpu: "1", memory: 1Gi, homeStorage: 1Gi}
YAML
if ! kc wait --for=condition=Ready dataset/chart-check-ct --timeout=180s >/dev/null \
  || ! kc -n "$ws_ns" wait --for=condition=Ready workspace/rbac-check --timeout=180s >/dev/null; then
  tail -30 "$log" >&2
  die "the operator under its service account did not ingest a Dataset and start a Workspace" "read $log"
fi
kc -n "$ws_ns" get pods,jobs,pvc,networkpolicy,resourcequota,limitrange,secrets --no-headers | awk '{print "    " $1}' >&2
kc -n "$ws_ns" patch workspace rbac-check --type=merge \
  -p '{"metadata":{"annotations":{"cleanroom.dev/last-changed-by":"'"$me"'"}},"spec":{"running":false}}' >/dev/null
kc -n "$ws_ns" wait --for=jsonpath='{.status.phase}'=Stopped workspace/rbac-check --timeout=60s >/dev/null
kc -n "$ws_ns" delete workspace rbac-check --wait=true --timeout=60s >/dev/null
kc delete dataset chart-check-ct --wait=true --timeout=60s >/dev/null
# How the API's refusals read in kopf's and the client's logs ("403" alone would match inside digests).
refused='APIForbiddenError|is forbidden|Forbidden'
# Only refusals about this release's own objects count: with workspaces.namespaces set, Workspaces that other
# suites left in other namespaces are outside its rights by design (the operator reports them refused).
ours="namespace \\\\?\"($ws_ns|$NS|$sources)\\\\?\"|chart-check-ct|at the cluster scope"
if grep -E "$refused" "$log" | grep -qE "$ours"; then
  grep -E "$refused" "$log" | grep -E "$ours" | head -5 >&2
  die "the operator was refused something under its chart RBAC" "add the rule to templates/operator-rbac.yaml and docs/rbac.md"
fi
kill -TERM -- "-$operator_pid" 2>/dev/null || true
kc delete namespace "$ws_ns" --wait=false >/dev/null
say "ingested a Dataset (Secrets from a listed namespace), started, stopped and deleted a Workspace: no permission refused, no admission policy in the way"

say "the audit service under its chart service account verifies a writer's service-account token"
audit_kubeconfig=$(mktemp)
account_kubeconfig "$RELEASE-cleanroom-audit" "$audit_kubeconfig"
"$ROOT/.venv/bin/python" -c "from cleanroom.tokens import write_dev_issuer; write_dev_issuer('$audit_dir/users', 'https://login.cleanroom.local', 'cleanroom-audit')"
KUBECONFIG=$audit_kubeconfig CLEANROOM_AUDIT_DIR=$audit_dir/service CLEANROOM_AUDIT_SIGNING_KEY=$audit_dir/key.pem \
  CLEANROOM_AUDIT_WRITER_ISSUER=kubernetes CLEANROOM_AUDIT_WRITER_JWKS=kubernetes \
  CLEANROOM_AUDIT_WRITERS=system:serviceaccount:$NS:$RELEASE-cleanroom-operator \
  CLEANROOM_AUDIT_USER_ISSUER=https://login.cleanroom.local CLEANROOM_AUDIT_USER_AUDIENCE=cleanroom-audit \
  CLEANROOM_AUDIT_USER_JWKS=$audit_dir/users/dev-jwks.json \
  setsid "$ROOT/.venv/bin/cleanroom" audit serve --host 127.0.0.1 --port 18090 >"$STATE/chart-check-audit.log" 2>&1 &
audit_pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18090/healthz >/dev/null && break; sleep 0.2; done
writer_token=$(kc -n "$NS" create token "$RELEASE-cleanroom-operator" --audience cleanroom-audit --duration 10m)
event='{"events": [{"schema": "cleanroom.dev/audit/v1", "id": "chart-check-'"$RANDOM$RANDOM"'", "time": "2026-01-01T00:00:00.000000Z", "actor": {"kind": "service", "name": "chart-check"}, "action": "snapshot.published", "outcome": "success", "resources": {"dataset": "chart-check"}, "reason": "", "purpose": "", "requestId": ""}]}'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $writer_token" -H 'Content-Type: application/json' -d "$event" http://127.0.0.1:18090/api/v1/events)
[ "$code" = 201 ] || { cat "$STATE/chart-check-audit.log" >&2; die "the audit service refused the operator's token ($code)" "read .cluster/chart-check-audit.log"; }
hub_token=$(kc -n "$NS" create token "$RELEASE-cleanroom-hub" --audience some-other-service --duration 10m)
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $hub_token" -d "$event" http://127.0.0.1:18090/api/v1/events)
[ "$code" = 401 ] || die "the audit service accepted a token for another audience ($code)" "check CLEANROOM_AUDIT_WRITER_* settings"
kill -TERM -- "-$audit_pid" 2>/dev/null || true
say "the operator's token is accepted (201), a token for another audience refused (401)"

if [ "${CLEANROOM_CHART_KEEP:-}" != "1" ]; then
  say "helm uninstall"
  "$HELM" uninstall "$RELEASE" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" --wait >/dev/null
  kc delete namespace "$NS" cleanroom-chart-sources --wait=false >/dev/null
fi
say "chart-check passed"
