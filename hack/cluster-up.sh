#!/usr/bin/env bash
# Brings up the local stack: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) with kwok simulating 2 CPU and 2 GPU nodes, plus a real S3 server (versitygw).
# Idempotent: running it again keeps what is up. Writes the kubeconfig to .cluster/kubeconfig.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$STATE"

say "step 1/6: binaries (built once from the Go module proxy, cached in $CACHE/bin)"
"$ROOT/hack/build-binaries.sh" || die "building the binaries failed (see the step above)" \
  "fix the reported error and rerun 'make cluster-up'; cached binaries are kept"

say "step 2/6: control plane '$CLUSTER_NAME' (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
if [ -f "$KUBECONFIG_FILE" ] && kc get --raw=/readyz >/dev/null 2>&1; then
  say "already running"
else
  # A half-started cluster from an earlier run is removed first, so create always starts clean.
  kwokctl delete cluster --name "$CLUSTER_NAME" >/dev/null 2>&1 || true
  rm -f "$KUBECONFIG_FILE"
  # The API server sends its audit events (hack/audit-policy.yaml) to the audit service started in step 6.
  mkdir -p "$STATE"
  [ -f "$STATE/audit-webhook.token" ] || head -c 32 /dev/urandom | base64 | tr -d '/+=' >"$STATE/audit-webhook.token"
  # TLS, because the API server sends a webhook's bearer token only over https.
  [ -f "$STATE/audit-tls.crt" ] || "$ROOT/.venv/bin/python" "$ROOT/hack/self_signed.py" "$STATE/audit-tls.crt" "$STATE/audit-tls.key"
  cat >"$STATE/audit-webhook.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: audit, cluster: {server: "https://127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095}/api/v1/kubernetes-audit", certificate-authority-data: "$(base64 -w0 "$STATE/audit-tls.crt")"}}]
users: [{name: apiserver, user: {token: "$(cat "$STATE/audit-webhook.token")"}}]
contexts: [{name: audit, context: {cluster: audit, user: apiserver}}]
current-context: audit
YAML
  # Each Workspace's snapshot is copied by a Job, so the job controller's workers (5 by default) bound how
  # fast hundreds of Workspaces start; clusters that run many Workspaces raise it the same way.
  # kwokctl 0.8 files each component's extra args under the position of its first one: keep the first
  # argument of each component in the order the components first appear (controller-manager, apiserver).
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
    --extra-args "kube-controller-manager=concurrent-job-syncs=50" \
    --kube-audit-policy "$ROOT/hack/audit-policy.yaml" \
    --extra-args "kube-apiserver=audit-webhook-config-file=$STATE/audit-webhook.kubeconfig" \
    --extra-args "kube-apiserver=audit-webhook-batch-max-wait=1s" \
    --kubeconfig "$KUBECONFIG_FILE" --wait 3m >"$STATE/kwokctl.log" 2>&1 \
    || { tail -30 "$STATE/kwokctl.log" >&2; die "kwokctl could not start the control plane (log: .cluster/kwokctl.log)" \
         "run 'make cluster-down' then 'make cluster-up'; if it fails again, 'kwokctl create cluster --dry-run' prints the commands to run by hand"; }
  kc config use-context "kwok-$CLUSTER_NAME" >/dev/null
fi
for _ in $(seq 60); do kc get --raw=/readyz >/dev/null 2>&1 && break; sleep 1; done
kc get --raw=/readyz >/dev/null || die "the API server is not ready" "see .cluster/kwokctl.log and ~/.kwok/clusters/$CLUSTER_NAME/logs"

say "step 3/6: fake nodes (2 CPU, 2 GPU with nvidia.com/gpu=4) and the default StorageClass"
kc apply -f "$ROOT/hack/nodes.yaml" >/dev/null
for _ in $(seq 60); do
  [ "$(kc get nodes --no-headers 2>/dev/null | grep -c ' Ready')" -ge 4 ] && break; sleep 1
done
kc get nodes -L nvidia.com/gpu.product
kc apply -f "$ROOT/hack/storage.yaml" >/dev/null

say "step 4/6: S3 server (versitygw $VERSITYGW_VERSION) on 127.0.0.1:$S3_PORT"
"$ROOT/hack/s3-up.sh"

say "step 5/6: DICOMweb PACS (Orthanc) on 127.0.0.1:${CLEANROOM_ORTHANC_PORT:-8042}"
"$ROOT/hack/orthanc-up.sh"
say "step 6/6: audit service (the API server's audit webhook target) on 127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095}"
"$ROOT/hack/audit-up.sh"
say "stack is up. export KUBECONFIG=$KUBECONFIG_FILE"
