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
  cmp -s "$crd" "$CHART/crds/$(basename "$crd")" || die "charts/cleanroom/crds/$(basename "$crd") differs from crds/" "cp crds/*.yaml charts/cleanroom/crds/"
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

say "kubeconform -strict on helm template of every example, and on examples/"
for values in "$CHART"/values.yaml "$CHART"/examples/*.yaml "$CHART"/ci/*.yaml; do
  "$HELM" template "$RELEASE" "$CHART" -n "$NS" --include-crds --kube-version "$KUBE_VERSION" -f "$values" \
    | "$KUBECONFORM" -strict -summary -schema-location "$location" - \
    || die "manifests from $(basename "$values") do not validate" "read the kubeconform lines above"
done
"$KUBECONFORM" -strict -summary -schema-location "$location" "$ROOT"/examples/*.yaml

say "helm install into the local control plane (namespace $NS)"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kc create namespace cleanroom-chart-sources --dry-run=client -o yaml | kc apply -f - >/dev/null
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
  -f "$CHART/ci/local-values.yaml" --wait --timeout 5m \
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
  say "$account in $namespace: $(echo "$actual" | wc -l) rules, as documented"
}
check_permissions "$RELEASE-cleanroom-operator" "$NS" operator-release-namespace
check_permissions "$RELEASE-cleanroom-operator" cleanroom-chart-sources operator-secret-namespace
check_permissions "$RELEASE-cleanroom-operator" default operator-elsewhere
check_permissions "$RELEASE-cleanroom-hub" default hub

if [ "${CLEANROOM_CHART_KEEP:-}" != "1" ]; then
  say "helm uninstall"
  "$HELM" uninstall "$RELEASE" -n "$NS" --kubeconfig "$KUBECONFIG_FILE" --wait >/dev/null
  kc delete namespace "$NS" cleanroom-chart-sources --wait=false >/dev/null
fi
say "chart-check passed"
