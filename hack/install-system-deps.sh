#!/usr/bin/env bash
# Installs the Debian packages the local stack and the tests need, once. Idempotent: exits early when
# everything is there.
set -euo pipefail
need=()
for pair in curl:curl Orthanc:orthanc dciodvfy:dicom3tools chromium:chromium chromedriver:chromium-driver npm:npm; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
command -v go >/dev/null 2>&1 || { echo "!! Go 1.25+ is required to build the local control plane" >&2; exit 1; }
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  # The orthanc package starts a system service where it can; the stack runs its own instance instead.
  pkill -x Orthanc 2>/dev/null || true
fi
echo "==> system packages present" >&2
