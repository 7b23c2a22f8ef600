#!/usr/bin/env bash
# Starts the local S3-compatible server (versitygw over a directory, with versioning so that object lock
# works) and writes its endpoint and credentials to .cluster/s3.env. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$STATE/s3/data" "$STATE/s3/versions"
if [ ! -f "$STATE/s3.env" ]; then
  cat >"$STATE/s3.env" <<ENV
S3_ENDPOINT=http://127.0.0.1:$S3_PORT
S3_ACCESS_KEY=cleanroom-admin
S3_SECRET_KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' )
ENV
fi
# shellcheck source=/dev/null
source "$STATE/s3.env"
if [ -f "$STATE/s3.pid" ] && kill -0 "$(cat "$STATE/s3.pid")" 2>/dev/null; then
  say "S3 server already running"
else
  setsid "$S3_BIN/versitygw" --access "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" --port "127.0.0.1:$S3_PORT" --keep-alive \
    posix --versioning-dir "$STATE/s3/versions" "$STATE/s3/data" >"$STATE/s3.log" 2>&1 &
  echo $! >"$STATE/s3.pid"
fi
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" && break; sleep 0.2
done
curl -s -o /dev/null "http://127.0.0.1:$S3_PORT/" || { tail -20 "$STATE/s3.log" >&2; die "the S3 server did not start (log: .cluster/s3.log)" "check that port $S3_PORT is free (CLEANROOM_S3_PORT changes it)"; }
say "S3 server at $S3_ENDPOINT (credentials in .cluster/s3.env)"
