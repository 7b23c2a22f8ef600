#!/usr/bin/env bash
# Applies crds/ to the local cluster and waits until the API server serves them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ -f "$KUBECONFIG_FILE" ] || die "no local cluster (.cluster/kubeconfig missing)" "run 'make cluster-up' first"
kc apply --server-side --force-conflicts -f "$ROOT/crds/" >/dev/null
kc wait --for condition=established --timeout=60s crd/datasets.cleanroom.dev crd/workspaces.cleanroom.dev >/dev/null
say "CRDs installed: $(kc get crd -o name | grep cleanroom.dev | tr '\n' ' ')"
