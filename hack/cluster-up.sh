#!/usr/bin/env bash
# Brings up the local stack: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) with kwok simulating 2 CPU and 2 GPU nodes, plus a real S3 server (versitygw), a PACS, an
# OpenID Connect provider with sample users and the audit service.
# Idempotent: running it again keeps what is up. Writes the kubeconfig to .cluster/kubeconfig.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
claim_stack
mkdir -p "$STATE"

say "step 1/8: binaries (built once from the Go module proxy, cached in $CACHE/bin)"
"$ROOT/hack/build-binaries.sh" || die "building the binaries failed (see the step above)" \
  "fix the reported error and rerun 'make cluster-up'; cached binaries are kept"

say "step 2/8: control plane '$CLUSTER_NAME' (Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
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
  # The real node (step 4) needs: kwok leaving it alone (kwok manages only the nodes annotated as fake),
  # an API server reachable from pods (advertised on the host's address, which the kubernetes Service
  # points at), and a client certificate the kubelet accepts for logs, exec and port-forward.
  host_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
  [ -n "$host_ip" ] || host_ip=127.0.0.1
  pki=$HOME/.kwok/clusters/$CLUSTER_NAME/pki
  # Each Workspace's snapshot is copied by a Job, so the job controller's workers (5 by default) bound how
  # fast hundreds of Workspaces start; clusters that run many Workspaces raise it the same way.
  # kwokctl 0.8 files each component's extra args under the position of its first one: keep the first
  # argument of each component in the order the components first appear (controller-manager, apiserver,
  # kwok-controller), or it panics with "index out of range".
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
    --extra-args "kwok-controller=manage-all-nodes=false" \
    --extra-args "kube-controller-manager=service-cluster-ip-range=10.96.0.0/16" \
    --extra-args "kube-controller-manager=concurrent-job-syncs=50" \
    --kube-audit-policy "$ROOT/hack/audit-policy.yaml" \
    --extra-args "kube-apiserver=audit-webhook-config-file=$STATE/audit-webhook.kubeconfig" \
    --extra-args "kube-apiserver=audit-webhook-batch-max-wait=1s" \
    --extra-args "kwok-controller=manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" \
    --extra-args "kube-apiserver=advertise-address=$host_ip" \
    --extra-args "kube-apiserver=kubelet-client-certificate=$pki/admin.crt" \
    --extra-args "kube-apiserver=kubelet-client-key=$pki/admin.key" \
    --extra-args "kube-apiserver=kubelet-preferred-address-types=InternalIP" \
    --kubeconfig "$KUBECONFIG_FILE" --wait 3m >"$STATE/kwokctl.log" 2>&1 \
    || { tail -30 "$STATE/kwokctl.log" >&2; die "kwokctl could not start the control plane (log: .cluster/kwokctl.log)" \
         "run 'make cluster-down' then 'make cluster-up'; if it fails again, 'kwokctl create cluster --dry-run' prints the commands to run by hand"; }
  kc config use-context "kwok-$CLUSTER_NAME" >/dev/null
  if reissue_apiserver_cert "$pki"; then
    kwokctl stop cluster --name "$CLUSTER_NAME" >>"$STATE/kwokctl.log" 2>&1
    kwokctl start cluster --name "$CLUSTER_NAME" >>"$STATE/kwokctl.log" 2>&1 \
      || die "the control plane did not restart with its re-issued certificate (log: .cluster/kwokctl.log)" "run 'make cluster-down' then 'make cluster-up'"
  fi
fi
for _ in $(seq 60); do kc get --raw=/readyz >/dev/null 2>&1 && break; sleep 1; done
kc get --raw=/readyz >/dev/null || die "the API server is not ready" "see .cluster/kwokctl.log and ~/.kwok/clusters/$CLUSTER_NAME/logs"

say "step 3/8: fake nodes (2 CPU, 2 GPU with nvidia.com/gpu=4) and the default StorageClass"
kc apply -f "$ROOT/hack/nodes.yaml" >/dev/null
for _ in $(seq 60); do
  [ "$(kc get nodes --no-headers 2>/dev/null | grep -c ' Ready')" -ge 4 ] && break; sleep 1
done
kc get nodes -L nvidia.com/gpu.product
kc apply -f "$ROOT/hack/storage.yaml" >/dev/null

say "step 4/8: the real node real-0 (kubelet, containerd, kube-router; see docs/testing.md)"
"$ROOT/hack/real-node-up.sh"

say "step 5/8: S3 server (versitygw $VERSITYGW_VERSION) on 127.0.0.1:$S3_PORT"
"$ROOT/hack/s3-up.sh"

say "step 6/8: DICOMweb PACS (Orthanc) on 127.0.0.1:${CLEANROOM_ORTHANC_PORT:-8042}"
"$ROOT/hack/orthanc-up.sh"
say "step 7/8: OpenID Connect provider (npm's oidc-provider $OIDC_PROVIDER_VERSION, sample users) on port ${CLEANROOM_OIDC_PORT:-8096}"
"$ROOT/hack/oidc-up.sh"
say "step 8/8: audit service (the API server's audit webhook target) on 127.0.0.1:${CLEANROOM_AUDIT_PORT:-8095}"
"$ROOT/hack/audit-up.sh"
say "stack is up. export KUBECONFIG=$KUBECONFIG_FILE"
