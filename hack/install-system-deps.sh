#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, once. Idempotent: exits early when
# everything is there. The real node (hack/real-node-up.sh) needs containerd, runc, the CNI plugins, iptables,
# ipset, conntrack and a C compiler (the kubelet is built with cgo); its images are built with buildah from an
# mmdebstrap base.
set -euo pipefail
need=()
for pair in curl:curl Orthanc:orthanc dciodvfy:dicom3tools chromium:chromium chromedriver:chromium-driver npm:npm \
  containerd:containerd runc:runc iptables:iptables ipset:ipset conntrack:conntrack gcc:gcc buildah:buildah \
  mmdebstrap:mmdebstrap envsubst:gettext-base openssl:openssl ip:iproute2; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
command -v go >/dev/null 2>&1 || { echo "!! Go 1.25+ is required to build the local control plane" >&2; exit 1; }
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
# libc6-dev: the static pause program and the kubelet's cgo; uidmap: buildah.
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
command -v newuidmap >/dev/null 2>&1 || need+=(uidmap)
python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  # The orthanc and containerd packages start system services where they can; the stack runs its own.
  pkill -x Orthanc 2>/dev/null || true
fi
echo "==> system packages present" >&2
