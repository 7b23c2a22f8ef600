#!/usr/bin/env bash
# Adds a real node, real-0, beside the kwok nodes: Debian's containerd and runc with a bridge network, a
# kubelet and kube-proxy built from source, kube-router enforcing NetworkPolicies (firewall only), CoreDNS as
# a pod, and a provisioner whose volumes non-root pods can write. Pods scheduled there really run.
# The node advertises nvidia.com/gpu as an extended resource and carries GPU feature discovery labels, so a
# GPU Workspace lands there (nothing inside uses a GPU). Tainted cleanroom.dev/real-node=true:NoSchedule,
# so only pods meant for it land there.
#
# Where this machine cannot run it (not root, no bridge netfilter, no overlayfs), it writes the reason to
# .cluster/real-node.unavailable, says why, and exits 0: the deployed tests skip with that reason.
# Idempotent. hack/real-node-down.sh removes every process, mount, interface and iptables chain it made.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODE=real-0
NODE_DIR=$STATE/node
POD_CIDR=10.244.0.0/24
CLUSTER_DNS=10.96.0.10
NODE_BIN=$CACHE/bin/node-$K8S_VERSION
SOCK=$NODE_DIR/containerd.sock
rm -f "$STATE/real-node.unavailable"

unavailable() {
  echo "$1" >"$STATE/real-node.unavailable"
  say "no real node: $1"
  say "the deployed tests (tests/deployed) will be skipped with that reason"
  exit 0
}
[ "$(id -u)" = 0 ] || unavailable "the real node needs root (containerd, network namespaces, iptables)"
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null \
  || [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] \
  || unavailable "the kernel has no bridge netfilter (br_netfilter): NetworkPolicies could not be enforced"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || grep -qw overlay /proc/filesystems \
  || unavailable "the kernel has no overlayfs (containerd's snapshotter)"
for tool in containerd runc ctr iptables ipset conntrack mmdebstrap buildah; do
  command -v "$tool" >/dev/null || unavailable "$tool is missing: run hack/install-system-deps.sh"
done
[ -x /usr/lib/cni/bridge ] || unavailable "the CNI plugins are missing: apt-get install containernetworking-plugins"

say "real node: binaries (kubelet and kube-proxy $K8S_VERSION with cgo, kube-router $KUBE_ROUTER_VERSION, CoreDNS $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_VERSION)"
"$ROOT/hack/build-binaries.sh" node kuberouter coredns localpath

HOST_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
[ -n "$HOST_IP" ] || unavailable "no IPv4 address with a default route for the node"
PKI=$HOME/.kwok/clusters/$CLUSTER_NAME/pki
[ -f "$PKI/ca.crt" ] || die "the control plane's CA is not at $PKI" "run make cluster-up (the control plane comes first)"
APISERVER=$(kc config view --minify -o jsonpath='{.clusters[0].cluster.server}')
mkdir -p "$NODE_DIR"/{root,state,cni/net.d,kubelet,pods,logs,local-path} "$NODE_DIR/certs"

# --- identities: the kubelet as system:node:real-0, kube-proxy, kube-router and the provisioner as admins of
# the local stack (they are test components of it, never part of the chart).
if [ ! -f "$NODE_DIR/certs/kubelet.crt" ]; then
  openssl req -new -newkey rsa:2048 -nodes -keyout "$NODE_DIR/certs/kubelet.key" \
    -subj "/O=system:nodes/CN=system:node:$NODE" -out "$NODE_DIR/certs/kubelet.csr" 2>/dev/null
  openssl x509 -req -in "$NODE_DIR/certs/kubelet.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -out "$NODE_DIR/certs/kubelet.crt" 2>/dev/null
fi
kubeconfig_for() {
  local file=$1 cert=$2 key=$3
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$APISERVER", certificate-authority: "$PKI/ca.crt"}}]
users: [{name: u, user: {client-certificate: "$cert", client-key: "$key"}}]
contexts: [{name: local, context: {cluster: local, user: u}}]
current-context: local
YAML
}
kubeconfig_for "$NODE_DIR/kubelet.kubeconfig" "$NODE_DIR/certs/kubelet.crt" "$NODE_DIR/certs/kubelet.key"
kubeconfig_for "$NODE_DIR/admin.kubeconfig" "$PKI/admin.crt" "$PKI/admin.key"

start() { # NAME LOG COMMAND...: a process of the node, stopped by cluster-down through its pid file
  local name=$1 log=$2
  shift 2
  if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then return 0; fi
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

say "real node: images (built from images/*/Containerfile on a Debian base; cached by content)"
"$ROOT/hack/images-local.sh" --no-import >"$STATE/images.env" || die "building the local images failed" "read the error above"
# shellcheck source=/dev/null
source "$STATE/images.env"

# --- containerd with its own root, state and socket. restrict_oom_score_adj: root in this VM lacks
# CAP_SYS_RESOURCE, and runc fails every sandbox when it writes a negative oom_score_adj.
cat >"$NODE_DIR/containerd.toml" <<TOML
version = 2
root = "$NODE_DIR/root"
state = "$NODE_DIR/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE_PAUSE"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
TOML
cat >"$NODE_DIR/cni/net.d/10-cleanroom.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "cleanroom", "plugins": [
  {"type": "bridge", "bridge": "cleanroom0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$NODE_DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
# The bridge plugin needs forwarding on; down restores what was there.
[ -f "$NODE_DIR/ip_forward.orig" ] || cat /proc/sys/net/ipv4/ip_forward >"$NODE_DIR/ip_forward.orig"
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1
say "real node: containerd (socket .cluster/node/containerd.sock)"
start containerd "$NODE_DIR/logs/containerd.log" containerd --config "$NODE_DIR/containerd.toml"
for _ in $(seq 60); do ctr -a "$SOCK" version >/dev/null 2>&1 && break; sleep 0.5; done
ctr -a "$SOCK" version >/dev/null 2>&1 || { tail -20 "$NODE_DIR/logs/containerd.log" >&2; die "containerd did not start" "read .cluster/node/logs/containerd.log"; }

"$ROOT/hack/images-local.sh" --import-only || die "importing the local images failed" "read the error above"

# --- kubelet. failCgroupV1: this host is cgroup v1. oomScoreAdj 0: see containerd above.
cat >"$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
oomScoreAdj: 0
address: $HOST_IP
port: 10250
readOnlyPort: 0
healthzPort: 10258
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
staticPodPath: $NODE_DIR/pods
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
registerWithTaints:
  - {key: cleanroom.dev/real-node, value: "true", effect: NoSchedule}
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 100
serializeImagePulls: false
YAML
say "real node: kubelet $K8S_VERSION as $NODE ($HOST_IP)"
start kubelet "$NODE_DIR/logs/kubelet.log" "$NODE_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
  --kubeconfig "$NODE_DIR/kubelet.kubeconfig" --hostname-override "$NODE" --node-ip "$HOST_IP" \
  --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/certs" \
  --node-labels "cleanroom.dev/real-node=true,nvidia.com/gpu.present=true,nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB,nvidia.com/gpu.memory=81920,nvidia.com/gpu.count=4,node.kubernetes.io/instance-type=real-cpu"
for _ in $(seq 120); do kc get node "$NODE" >/dev/null 2>&1 && break; sleep 1; done
kc get node "$NODE" >/dev/null 2>&1 || { tail -30 "$NODE_DIR/logs/kubelet.log" >&2; die "the kubelet did not register $NODE" "read .cluster/node/logs/kubelet.log"; }
kc patch node "$NODE" --type merge -p "{\"spec\": {\"podCIDR\": \"$POD_CIDR\", \"podCIDRs\": [\"$POD_CIDR\"]}}" >/dev/null 2>&1 || true
# A GPU as an extended resource (the Kubernetes task "Advertise Extended Resources for a Node").
kc patch node "$NODE" --subresource status --type json \
  -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "4"}]' >/dev/null

say "real node: kube-proxy (iptables) and kube-router (NetworkPolicies only)"
# kube-router lets pods reach the node's own ports in the NodePort range whatever the policies say. kwokctl
# puts the API server (and kwok) on a random port in the default range (30000-32767), so a notebook denied all
# egress could reach the API server through it (the deployed suite caught this): the range is narrowed to ports
# nothing here uses.
start kube-proxy "$NODE_DIR/logs/kube-proxy.log" "$NODE_BIN/kube-proxy" --kubeconfig "$NODE_DIR/admin.kubeconfig" \
  --hostname-override "$NODE" --proxy-mode iptables --cluster-cidr 10.244.0.0/16 \
  --conntrack-max-per-core 0 --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249
start kube-router "$NODE_DIR/logs/kube-router.log" "$CACHE/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router" \
  --kubeconfig "$NODE_DIR/admin.kubeconfig" --hostname-override "$NODE" \
  --run-firewall=true --run-router=false --run-service-proxy=false --health-port 20244 --metrics-port 0 \
  --service-node-port-range 30000-30009

say "real node: CoreDNS (kube-system/coredns, Service kube-dns $CLUSTER_DNS) and volumes (StorageClass real-node)"
IMAGE_COREDNS=$IMAGE_COREDNS IMAGE_HELPER=$IMAGE_HELPER CLUSTER_DNS=$CLUSTER_DNS \
  envsubst '${IMAGE_COREDNS} ${IMAGE_HELPER} ${CLUSTER_DNS}' <"$ROOT/hack/real-node.yaml" | kc apply -f - >/dev/null
cat >"$NODE_DIR/local-path.json" <<JSON
{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$NODE_DIR/local-path"]}]}
JSON
kc -n local-path-storage get configmap local-path-config -o jsonpath='{.data.helperPod\.yaml}' >"$NODE_DIR/helper-pod.yaml"
start local-path "$NODE_DIR/logs/local-path.log" "$CACHE/bin/local-path-provisioner-$LOCAL_PATH_VERSION/local-path-provisioner" \
  start --kubeconfig "$NODE_DIR/admin.kubeconfig" --namespace local-path-storage --config "$NODE_DIR/local-path.json" \
  --helper-pod-file "$NODE_DIR/helper-pod.yaml" --helper-image "$IMAGE_HELPER" --provisioner-name cleanroom.dev/real-node

for _ in $(seq 120); do
  [ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] && break; sleep 1
done
[ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] \
  || { tail -30 "$NODE_DIR/logs/kubelet.log" >&2; die "$NODE did not become Ready" "read .cluster/node/logs/kubelet.log"; }
kc -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null \
  || { kc -n kube-system describe pods -l k8s-app=kube-dns >&2; die "CoreDNS did not start on $NODE" "read the pod's events above"; }
say "real node $NODE is Ready: pods that tolerate cleanroom.dev/real-node run on it"
"$ROOT/hack/csi-snapshots-up.sh"
