#!/usr/bin/env bash
# Stops everything cluster-up and dev started and leaves no process behind. Keeps the binary cache.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
# The real node first: its pods, mounts, network and iptables chains (hack/real-node-down.sh).
"$ROOT/hack/real-node-down.sh"
for pidfile in "$STATE"/*.pid; do
  [ -e "$pidfile" ] || continue
  say "stopping $(basename "$pidfile" .pid)"
  stop_pidfile "$pidfile"
done
if [ -x "$KWOK_BIN/kwokctl" ]; then
  say "deleting control plane '$CLUSTER_NAME'"
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
fi
# kwokctl stops its components by pid file; anything that survived a crash is stopped here.
pkill -f "kwok/clusters/$CLUSTER_NAME/" 2>/dev/null || true
rm -rf "$STATE"
release_stack
say "stack is down"
