#!/usr/bin/env bash
# Stops the operator that `make dev` started in the background.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
stop_pidfile "$STATE/operator.pid"
