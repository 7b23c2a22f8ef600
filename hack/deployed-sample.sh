#!/usr/bin/env bash
# The sample for the deployed install: uploads the sample corpus to the chart's S3 server (through a
# port-forward), applies examples/ adjusted to the deployed stack (the source is the in-cluster S3 server, the
# notebook image is the locally built CPU target, the notebook fits the real node's 2 CPUs, and it is created
# stopped), waits for the Dataset (ingested by the operator pod), then has alice start the Workspace through
# the hub and the chart's proxy, and waits until its notebook pod runs on the real node and JupyterLab answers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=/dev/null
source "$STATE/deployed.env"
NS=$DEPLOYED_NAMESPACE

forwards=$(mktemp -d)
trap 'for pid in $(cat "$forwards"/* 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done; rm -rf "$forwards"' EXIT
# Forwards a local port to SERVICE:PORT of the release namespace; prints the local port.
forward() {
  local log port=
  log=$(mktemp)
  setsid "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" -n "$NS" port-forward --address 127.0.0.1 "svc/$1" ":$2" >"$log" 2>&1 </dev/null &
  echo $! >"$forwards/$1"
  for _ in $(seq 100); do
    port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$log" | head -1)
    [ -n "$port" ] && break; sleep 0.1
  done
  [ -n "$port" ] || { cat "$log" >&2; die "no port-forward to $1" "kubectl -n $NS get pods"; }
  rm -f "$log"
  echo "$port"
}
s3_port=$(forward cleanroom-s3 7070)
say "sample corpus to the chart's S3 server (s3://raw-imaging/sample/)"
"$ROOT/.venv/bin/python" "$ROOT/hack/sample_corpus.py" "http://127.0.0.1:$s3_port" "$DEPLOYED_S3_ACCESS_KEY" "$DEPLOYED_S3_SECRET_KEY"

say "examples/, adjusted to the deployed stack"
adjust() {
  sed -e "s#endpoint: http://127.0.0.1:7070#endpoint: http://cleanroom-s3.$NS.svc:7070#" \
      -e "s#image: registry.example.org/cleanroom/notebook-cuda:2026.11#image: $DEPLOYED_IMAGE_NOTEBOOK#" \
      -e 's#cpu: "4", memory: 16Gi#cpu: 500m, memory: 2Gi#' -e 's#^  running: true#  running: false#' "$1"
}
adjust "$ROOT/examples/dataset.yaml" | kc apply -f - >/dev/null
# The team's namespace, where its modellers may create Workspaces (the admission policies then hold the
# created-by annotation to the creator's own name, so alice creates hers herself).
kc create namespace team-sample --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n team-sample create role cleanroom-modeller --verb=get,list,watch,create,update,patch,delete \
  --resource=workspaces.cleanroom.dev --dry-run=client -o yaml | kc apply -f - >/dev/null
kc -n team-sample create rolebinding cleanroom-modellers --role=cleanroom-modeller --user=alice@hospital.example \
  --dry-run=client -o yaml | kc apply -f - >/dev/null
# Created stopped, once. A session left running by an earlier run is stopped and started afresh through the
# hub below (tests/deployed/hub_session.py), as alice would after an upgrade.
if kc -n team-sample get workspace segmentation-alice >/dev/null 2>&1; then
  # An existing sample takes the image just built, as alice would after an upgrade (a Workspace keeps its
  # image otherwise, and an image from before a fix would come back at the restart below).
  kc --as alice@hospital.example -n team-sample patch workspace segmentation-alice --type=merge -p \
    "{\"metadata\":{\"annotations\":{\"cleanroom.dev/last-changed-by\":\"alice@hospital.example\"}},\"spec\":{\"image\":\"$DEPLOYED_IMAGE_NOTEBOOK\"}}" >/dev/null
else
  adjust "$ROOT/examples/workspace.yaml" | awk 'found; /^---$/ {found = 1}' \
    | kc --as alice@hospital.example apply -f - >/dev/null
fi
say "waiting for the operator pod to de-identify and publish the sample Dataset"
kc wait --for=condition=Ready dataset/sample-ct --timeout=300s >/dev/null \
  || { kc describe dataset sample-ct >&2; die "the sample Dataset did not become Ready" "kubectl -n $NS logs deploy/cleanroom-operator"; }
say "alice starts the sample Workspace through the hub (the chart's proxy), as the Start button does (or opens it again)"
hub_port=$(forward cleanroom-proxy-public 80)
(cd "$ROOT" && "$ROOT/.venv/bin/python" -m tests.deployed.hub_session "http://127.0.0.1:$hub_port" alice@hospital.example team-sample/segmentation-alice) \
  || { kc -n team-sample describe workspace segmentation-alice >&2; kc -n team-sample get pods -o wide >&2
       die "the sample Workspace did not start through the hub" "kubectl -n $NS logs deploy/cleanroom-hub; kubectl -n $NS logs deploy/cleanroom-operator"; }
say "waiting for the sample Workspace (snapshot copied and verified by a Job, notebook pod Running on real-0)"
kc -n team-sample wait --for=condition=Ready workspace/segmentation-alice --timeout=300s >/dev/null \
  || { kc -n team-sample describe workspace segmentation-alice >&2; kc -n team-sample get pods -o wide >&2
       die "the sample Workspace did not become Ready" "kubectl -n $NS logs deploy/cleanroom-operator"; }
