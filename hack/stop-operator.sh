#!/usr/bin/env bash
# Stops the operator and the hub that `make dev` started in the background.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
stop_pidfile "$STATE/operator.pid"
stop_pidfile "$STATE/hub.pid"
