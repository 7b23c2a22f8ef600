#!/usr/bin/env bash
# The sample for the deployed install: uploads the sample corpus to the chart's S3 server (through a
# port-forward), applies examples/ adjusted to the deployed stack (the source is the in-cluster S3 server, the
# notebook image is the locally built CPU target, the notebook fits the real node's 2 CPUs), and waits for the
# Dataset (ingested by the operator pod) and the Workspace (its notebook pod Running on the real node).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=/dev/null
source "$STATE/deployed.env"
NS=$DEPLOYED_NAMESPACE

forward_log=$(mktemp)
setsid kc -n "$NS" port-forward --address 127.0.0.1 svc/cleanroom-s3 :7070 >"$forward_log" 2>&1 </dev/null &
forward=$!
trap 'kill -TERM "$forward" 2>/dev/null || true; rm -f "$forward_log"' EXIT
port=
for _ in $(seq 100); do
  port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$forward_log" | head -1)
  [ -n "$port" ] && break; sleep 0.1
done
[ -n "$port" ] || { cat "$forward_log" >&2; die "no port-forward to the chart's S3 server" "kubectl -n $NS get pods"; }
say "sample corpus to the chart's S3 server (s3://raw-imaging/sample/)"
"$ROOT/.venv/bin/python" "$ROOT/hack/sample_corpus.py" "http://127.0.0.1:$port" "$DEPLOYED_S3_ACCESS_KEY" "$DEPLOYED_S3_SECRET_KEY"

say "examples/, adjusted to the deployed stack"
sed -e "s#endpoint: http://127.0.0.1:7070#endpoint: http://cleanroom-s3.$NS.svc:7070#" \
    -e "s#image: registry.example.org/cleanroom/notebook-cuda:2026.11#image: $DEPLOYED_IMAGE_NOTEBOOK#" \
    -e 's#cpu: "4", memory: 16Gi#cpu: "1", memory: 2Gi#' \
    "$ROOT"/examples/dataset.yaml "$ROOT"/examples/workspace.yaml | sed 's/^# A sample Workspace/---\n# A sample Workspace/' \
  | kc apply -f - >/dev/null
say "waiting for the operator pod to de-identify and publish the sample Dataset"
kc wait --for=condition=Ready dataset/sample-ct --timeout=300s >/dev/null \
  || { kc describe dataset sample-ct >&2; die "the sample Dataset did not become Ready" "kubectl -n $NS logs deploy/cleanroom-operator"; }
say "waiting for the sample Workspace (snapshot copied and verified by a Job, notebook pod Running on real-0)"
kc -n team-sample wait --for=condition=Ready workspace/segmentation-alice --timeout=300s >/dev/null \
  || { kc -n team-sample describe workspace segmentation-alice >&2; kc -n team-sample get pods -o wide >&2
       die "the sample Workspace did not become Ready" "kubectl -n $NS logs deploy/cleanroom-operator"; }
