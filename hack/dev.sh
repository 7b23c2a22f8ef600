#!/usr/bin/env bash
# `make dev`: with the stack up and the CRDs installed, install the chart as a hospital would (hack/deploy.sh:
# the operator, hub, proxy, audit service and S3 server as pods on the real node), ingest the sample Dataset
# with the operator pod, start the sample Workspace's notebook pod on the real node, and open the chart's
# proxy on http://127.0.0.1:8000 for the browser. Where the machine cannot run the real node, it falls back to
# local processes (hack/dev-local.sh) and says so.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [ -f "$STATE/real-node.unavailable" ]; then
  say "no real node ($(cat "$STATE/real-node.unavailable")): the operator and hub run as local processes instead"
  exec "$ROOT/hack/dev-local.sh"
fi
# The local-process operator and hub of an earlier mode would fight the chart's.
"$ROOT/hack/stop-operator.sh"
"$ROOT/hack/deploy.sh"
"$ROOT/hack/deployed-sample.sh"

port=${CLEANROOM_HUB_PORT:-8000}
stop_pidfile "$STATE/proxy-forward.pid"
# The forward outlives this script: it must not keep the descriptors it inherits, or `flock LOCK make dev` (how
# several sessions share one stack) would stay locked for as long as the forward runs.
(
  for fd in $(ls "/proc/$BASHPID/fd"); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
  exec setsid "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" -n cleanroom-system port-forward --address 127.0.0.1 \
    svc/cleanroom-proxy-public "$port:80" >"$STATE/proxy-forward.log" 2>&1 </dev/null
) &
echo $! >"$STATE/proxy-forward.pid"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/hub/health" && break; sleep 0.2; done

# Download links of released exports point at the bundled S3 server as a browser reaches it
# (exports.download.endpoint in charts/cleanroom/ci/deployed-values.yaml, http://127.0.0.1:7071), as an ingress
# would expose the store: forward that port so that the hub's links work in this machine's browser. Presigned
# GETs of the outbox only; the store refuses anything else without its keys. kubectl's forward ends when its
# pod goes (hack/deploy.sh replaces the S3 pod when its image changes), so it is started again, on the
# Service's pod of the moment; stop_pidfile ends the loop and its kubectl together (one process group).
download_port=$(sed -n 's|^  download: {endpoint: "http://127.0.0.1:\([0-9]*\)"}|\1|p' "$ROOT/charts/cleanroom/ci/deployed-values.yaml")
stop_pidfile "$STATE/s3-forward.pid"
(
  for fd in $(ls "/proc/$BASHPID/fd"); do [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
  exec setsid bash -c 'while :; do "$0" --kubeconfig "$1" -n cleanroom-system port-forward --address 127.0.0.1 \
    svc/cleanroom-s3 "$2:7070"; sleep 1; done' "$K8S_BIN/kubectl" "$KUBECONFIG_FILE" "${download_port:-7071}" \
    >"$STATE/s3-forward.log" 2>&1 </dev/null
) &
echo $! >"$STATE/s3-forward.pid"

kc get datasets
kc get workspaces -A
kc -n team-sample get pods,pvc,networkpolicies -o wide
echo
say "the sample Workspace's notebook pod runs on the real node; the chart's proxy is on http://127.0.0.1:$port"
say "export download links go to the bundled S3 server, forwarded on http://127.0.0.1:${download_port:-7071}"
if [ -f "$STATE/oidc.env" ]; then
  say "sign in at http://127.0.0.1:$port/hub/login through the sample provider as alice, password alice, one-time code 123456"
  say "  (sam: security officer; stella: the sample Dataset's data steward; eve: in no group; mallory: an unverified copy"
  say "  of alice's address); API clients send a token from:"
else
  say "sign in at http://127.0.0.1:$port/hub/login with the token from:"
fi
say "  CLEANROOM_DEV_ISSUER_DIR=.cluster/hub .venv/bin/cleanroom token issue --user alice@hospital.example --group sample-ai"
say "kubectl -n cleanroom-system logs deploy/cleanroom-operator; kubectl describe workspace -n team-sample segmentation-alice"
