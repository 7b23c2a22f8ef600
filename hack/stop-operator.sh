#!/usr/bin/env bash
# Stops the operator and the hub that `make dev` started in the background: the local processes of the
# local-process mode, and the deployed install's operator pod (scaled to 0; hack/deploy.sh scales it back).
# Two operators would fight over the same objects, so the integration suite calls this before starting its own.
# The deployed install's workspace-writers, export-writers and workspace-volumes admission bindings go too
# (hack/deploy.sh puts them back): they hold every user's Workspace and ExportRequest changes to the
# annotations that name them, and every claim named ws-*-data to the operator's account, which the
# integration suite's own releases of the policies test in namespaces of their own.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
stop_pidfile "$STATE/operator.pid"
stop_pidfile "$STATE/hub.pid"
if [ -f "$KUBECONFIG_FILE" ] && kc -n cleanroom-system get deployment/cleanroom-operator >/dev/null 2>&1; then
  kc -n cleanroom-system scale deployment/cleanroom-operator --replicas=0 >/dev/null
  kc -n cleanroom-system wait --for=delete pod -l app.kubernetes.io/name=cleanroom-operator --timeout=60s >/dev/null 2>&1 || true
  kc delete validatingadmissionpolicybinding cleanroom-workspace-writers cleanroom-export-writers cleanroom-workspace-volumes \
    --ignore-not-found >/dev/null 2>&1 || true
fi
