#!/usr/bin/env bash
# Removes everything hack/real-node-up.sh made: the node's pods and processes, their mounts and network
# namespaces, the bridge, the KUBE-* / CNI-* iptables chains and KUBE-* ipsets, and restores
# net.ipv4.ip_forward. Safe to run when nothing is up. Called by hack/cluster-down.sh.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
NODE_DIR=$STATE/node

# The node's components first, so nothing restarts what is stopped below.
for name in csi-snapshotter csi-hostpath snapshot-controller local-path kube-router kube-proxy kubelet; do stop_pidfile "$STATE/$name.pid"; done

# Every container process: the kubelet's cgroupfs driver puts them under a kubepods cgroup.
for procs in /sys/fs/cgroup/*/kubepods/cgroup.procs; do
  [ -e "$procs" ] || continue
  base=$(dirname "$procs")
  find "$base" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
done
pkill -KILL -f "containerd-shim-runc-v2 .*-address $NODE_DIR/containerd.sock" 2>/dev/null || true
stop_pidfile "$STATE/containerd.pid"
sleep 0.5
# Empty kubepods cgroups left behind (deepest first).
for base in /sys/fs/cgroup/*/kubepods; do
  [ -d "$base" ] || continue
  find "$base" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# Mounts under the node's directory (overlay roots, volumes, shm, the kubelet's own), deepest first.
if [ -d "$NODE_DIR" ]; then
  awk '{print $2}' /proc/mounts | grep -F "$NODE_DIR" | sort -r | while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  done
fi
# Buildah's overlay storage (hack/images-local.sh) keeps its home bind-mounted privately while in use.
awk '{print $2}' /proc/mounts | grep -F "$CACHE/buildah/" | sort -r | while read -r mnt; do
  umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
done
# The pods' network namespaces (containerd names them cni-<uuid>) and runc's state for them.
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done
rm -rf /run/containerd/runc/k8s.io 2>/dev/null || true
ip link show cleanroom0 >/dev/null 2>&1 && ip link delete cleanroom0 2>/dev/null

# iptables: rules in built-in chains that jump to the node's chains, then the chains themselves.
for cmd in iptables ip6tables; do
  command -v "$cmd" >/dev/null || continue
  for table in filter nat mangle raw; do
    "$cmd" -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j (KUBE-|CNI-)' | sed 's/^-A /-D /' \
      | while read -r rule; do eval "$cmd -t $table $rule" 2>/dev/null || true; done
    chains=$("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}')
    for chain in $chains; do "$cmd" -t "$table" -F "$chain" 2>/dev/null || true; done
    for chain in $chains; do "$cmd" -t "$table" -X "$chain" 2>/dev/null || true; done
  done
done
command -v ipset >/dev/null && ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)' | while read -r set; do
  ipset destroy "$set" 2>/dev/null || true
done
if command -v nft >/dev/null; then
  for table in $(nft list tables 2>/dev/null | awk '$3 ~ /^kube-proxy$/{print $2 " " $3}' | tr ' ' ':'); do
    nft delete table "${table%%:*}" "${table##*:}" 2>/dev/null || true
  done
fi
[ -f "$NODE_DIR/ip_forward.orig" ] && sysctl -qw "net.ipv4.ip_forward=$(cat "$NODE_DIR/ip_forward.orig")"
rm -rf "$NODE_DIR" "$STATE/real-node.unavailable" "$STATE/images.env"
exit 0
