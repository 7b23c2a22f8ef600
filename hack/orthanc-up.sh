#!/usr/bin/env bash
# Starts a real Orthanc PACS (Debian's orthanc + orthanc-dicomweb) on 127.0.0.1 for DICOMweb source tests,
# with HTTP basic authentication, and writes its URL and credentials to .cluster/orthanc.env. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ORTHANC_PORT=${CLEANROOM_ORTHANC_PORT:-8042}
plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
command -v Orthanc >/dev/null || die "Orthanc is not installed" "run hack/install-system-deps.sh (Debian packages orthanc, orthanc-dicomweb)"
[ -f "$plugin" ] || die "the Orthanc DICOMweb plugin is missing ($plugin)" "apt-get install orthanc-dicomweb"
mkdir -p "$STATE/orthanc/db"
if [ ! -f "$STATE/orthanc.env" ]; then
  cat >"$STATE/orthanc.env" <<ENV
ORTHANC_URL=http://127.0.0.1:$ORTHANC_PORT
ORTHANC_USER=cleanroom
ORTHANC_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
ENV
fi
# shellcheck source=/dev/null
source "$STATE/orthanc.env"
cat >"$STATE/orthanc/orthanc.json" <<JSON
{
  "Name": "cleanroom-test-pacs",
  "StorageDirectory": "$STATE/orthanc/db",
  "IndexDirectory": "$STATE/orthanc/db",
  "HttpPort": $ORTHANC_PORT,
  "RemoteAccessAllowed": false,
  "DicomServerEnabled": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "$ORTHANC_USER": "$ORTHANC_PASSWORD" },
  "Plugins": [ "$plugin" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
JSON
if [ -f "$STATE/orthanc.pid" ] && kill -0 "$(cat "$STATE/orthanc.pid")" 2>/dev/null; then
  say "Orthanc already running"
else
  setsid Orthanc "$STATE/orthanc/orthanc.json" >"$STATE/orthanc.log" 2>&1 &
  echo $! >"$STATE/orthanc.pid"
fi
for _ in $(seq 100); do
  curl -sf -u "$ORTHANC_USER:$ORTHANC_PASSWORD" "$ORTHANC_URL/system" >/dev/null && break; sleep 0.2
done
curl -sf -u "$ORTHANC_USER:$ORTHANC_PASSWORD" "$ORTHANC_URL/system" >/dev/null \
  || { tail -20 "$STATE/orthanc.log" >&2; die "Orthanc did not start (log: .cluster/orthanc.log)" "check that port $ORTHANC_PORT is free (CLEANROOM_ORTHANC_PORT changes it)"; }
say "Orthanc (DICOMweb at $ORTHANC_URL/dicom-web) up; credentials in .cluster/orthanc.env"
