#!/usr/bin/env bash
# Block storage with volume snapshots on the real node: the VolumeSnapshot CRDs and the real snapshot-controller
# and csi-snapshotter (external-snapshotter $EXTERNAL_SNAPSHOTTER_VERSION), over hack/csi_hostpath.py, a CSI
# driver the real kubelet mounts through. StorageClass and VolumeSnapshotClass real-node-block. Called by
# hack/real-node-up.sh once the node is Ready; idempotent; hack/real-node-down.sh stops what it starts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODE=real-0
NODE_DIR=$STATE/node
DRIVER=hostpath.csi.cleanroom.dev
CSI_DIR=$NODE_DIR/csi-hostpath
KUBELET_DIR=$NODE_DIR/kubelet
SOCKET=$KUBELET_DIR/plugins/$DRIVER/csi.sock
SNAPSHOTTER_BIN=$CACHE/bin/external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION
CSI_SPEC_VERSION=v1.13.0
STUBS=$CACHE/src/csi-python-$CSI_SPEC_VERSION-$K8S_VERSION
PY=$ROOT/.venv/bin/python

"$ROOT/hack/build-binaries.sh" snapshotter

# The CSI and kubelet plugin-registration stubs, generated once per version from the modules' own protos.
if [ ! -f "$STUBS/csi_pb2_grpc.py" ] || [ ! -f "$STUBS/api_pb2_grpc.py" ]; then
  say "csi snapshots: generating the CSI $CSI_SPEC_VERSION and plugin-registration stubs"
  spec=$(GOFLAGS=-mod=mod go mod download -json "github.com/container-storage-interface/spec@$CSI_SPEC_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  kubelet=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubelet@v0${K8S_VERSION#v1}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$STUBS"
  "$PY" -m grpc_tools.protoc -I "$spec" --python_out "$STUBS" --grpc_python_out "$STUBS" "$spec/csi.proto"
  "$PY" -m grpc_tools.protoc -I "$kubelet/pkg/apis/pluginregistration/v1" --python_out "$STUBS" \
    --grpc_python_out "$STUBS" "$kubelet/pkg/apis/pluginregistration/v1/api.proto"
fi

crds=$(GOFLAGS=-mod=mod go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$EXTERNAL_SNAPSHOTTER_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/config/crd
for kind in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
  kc apply --server-side -f "$crds/snapshot.storage.k8s.io_$kind.yaml" >/dev/null
done
kc wait --for condition=Established --timeout=60s \
  crd/volumesnapshotclasses.snapshot.storage.k8s.io crd/volumesnapshotcontents.snapshot.storage.k8s.io \
  crd/volumesnapshots.snapshot.storage.k8s.io >/dev/null

start() { # NAME COMMAND...: as real-node-up.sh's, stopped by real-node-down.sh through its pid file
  local name=$1
  shift
  if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then return 0; fi
  setsid "$@" >"$NODE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}
say "csi snapshots: snapshot-controller, driver $DRIVER, csi-snapshotter"
start snapshot-controller "$SNAPSHOTTER_BIN/snapshot-controller" --kubeconfig "$NODE_DIR/admin.kubeconfig" \
  --leader-election=false --http-endpoint= --v=2
start csi-hostpath "$PY" "$ROOT/hack/csi_hostpath.py" --driver "$DRIVER" --node "$NODE" --root "$CSI_DIR" \
  --socket "$SOCKET" --registration-socket "$KUBELET_DIR/plugins_registry/$DRIVER-reg.sock" --stubs "$STUBS" \
  --kubeconfig "$NODE_DIR/admin.kubeconfig"
for _ in $(seq 60); do [ -S "$SOCKET" ] && break; sleep 0.5; done
[ -S "$SOCKET" ] || { tail -20 "$NODE_DIR/logs/csi-hostpath.log" >&2; die "the CSI driver did not start" "read .cluster/node/logs/csi-hostpath.log"; }
# The sidecar exits when it loses the driver's socket (a driver restart): restarted as the kubelet would.
start csi-snapshotter bash -c 'while :; do "$@"; sleep 1; done' csi-snapshotter \
  "$SNAPSHOTTER_BIN/csi-snapshotter" --kubeconfig "$NODE_DIR/admin.kubeconfig" \
  --csi-address "$SOCKET" --leader-election=false --v=2

kc apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $DRIVER}
spec:
  attachRequired: false
  podInfoOnMount: false
  # The materializer writes as the notebook's user: ownership is the volume's, never changed on mount.
  fsGroupPolicy: None
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: real-node-block}
provisioner: $DRIVER
# As block storage classes usually are (EBS gp3, GKE standard-rwo, AKS managed-csi): a volume is made once
# the pod using its claim is scheduled.
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
# The same storage bound at once: bench/snapshot_volumes.py times restores for notebooks that never schedule.
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: real-node-block-immediate}
provisioner: $DRIVER
volumeBindingMode: Immediate
reclaimPolicy: Delete
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: {name: real-node-block}
driver: $DRIVER
deletionPolicy: Delete
YAML
for _ in $(seq 60); do
  kc get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | grep -qw "$DRIVER" && break; sleep 1
done
kc get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' | grep -qw "$DRIVER" \
  || { tail -20 "$NODE_DIR/logs/csi-hostpath.log" >&2; die "the kubelet did not register $DRIVER" "read .cluster/node/logs/kubelet.log and csi-hostpath.log"; }
say "csi snapshots: StorageClass and VolumeSnapshotClass real-node-block ready on $NODE"
