#!/usr/bin/env bash
# Brings up the local stack: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) with kwok simulating 2 CPU and 2 GPU nodes, plus a real S3 server (versitygw).
# Idempotent: running it again keeps what is up. Writes the kubeconfig to .cluster/kubeconfig.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$STATE"

say "step 1/5: binaries (built once from the Go module proxy, cached in $CACHE/bin)"
"$ROOT/hack/build-binaries.sh" || die "building the binaries failed (see the step above)" \
  "fix the reported error and rerun 'make cluster-up'; cached binaries are kept"

say "step 2/5: control plane '$CLUSTER_NAME' (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
if [ -f "$KUBECONFIG_FILE" ] && kc get --raw=/readyz >/dev/null 2>&1; then
  say "already running"
else
  # A half-started cluster from an earlier run is removed first, so create always starts clean.
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  rm -f "$KUBECONFIG_FILE"
  KWOK_KUBE_VERSION=$K8S_VERSION KWOK_ETCD_VERSION=${ETCD_VERSION#v} \
  kwokctl create cluster --name "$CLUSTER_NAME" --runtime binary \
    --kube-apiserver-binary "$K8S_BIN/kube-apiserver" \
    --kube-controller-manager-binary "$K8S_BIN/kube-controller-manager" \
    --kube-scheduler-binary "$K8S_BIN/kube-scheduler" \
    --etcd-binary "$ETCD_BIN/etcd" \
    --kwok-controller-binary "$KWOK_BIN/kwok" \
    --kube-authorization --kube-admission --disable-qps-limits \
    --extra-args "kube-controller-manager=enable-hostpath-provisioner=true" \
    --extra-args "kube-apiserver=service-cluster-ip-range=10.96.0.0/16" \
    --extra-args "kube-controller-manager=service-cluster-ip-range=10.96.0.0/16" \
    --kubeconfig "$KUBECONFIG_FILE" --wait 3m >"$STATE/kwokctl.log" 2>&1 \
    || { tail -30 "$STATE/kwokctl.log" >&2; die "kwokctl could not start the control plane (log: .cluster/kwokctl.log)" \
         "run 'make cluster-down' then 'make cluster-up'; if it fails again, 'kwokctl create cluster --dry-run' prints the commands to run by hand"; }
  kc config use-context "kwok-$CLUSTER_NAME" >/dev/null
fi
for _ in $(seq 60); do kc get --raw=/readyz >/dev/null 2>&1 && break; sleep 1; done
kc get --raw=/readyz >/dev/null || die "the API server is not ready" "see .cluster/kwokctl.log and ~/.kwok/clusters/$CLUSTER_NAME/logs"

say "step 3/5: fake nodes (2 CPU, 2 GPU with nvidia.com/gpu=4) and the default StorageClass"
kc apply -f "$ROOT/hack/nodes.yaml" >/dev/null
for _ in $(seq 60); do
  [ "$(kc get nodes --no-headers 2>/dev/null | grep -c ' Ready')" -ge 4 ] && break; sleep 1
done
kc get nodes -L nvidia.com/gpu.product
kc apply -f "$ROOT/hack/storage.yaml" >/dev/null

say "step 4/5: S3 server (versitygw $VERSITYGW_VERSION) on 127.0.0.1:$S3_PORT"
"$ROOT/hack/s3-up.sh"

say "step 5/5: DICOMweb PACS (Orthanc) on 127.0.0.1:${CLEANROOM_ORTHANC_PORT:-8042}"
"$ROOT/hack/orthanc-up.sh"
say "stack is up. export KUBECONFIG=$KUBECONFIG_FILE"
