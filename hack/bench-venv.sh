#!/usr/bin/env bash
# Installs the peer de-identification tools for bench/deid.py into their own venv, outside the project
# (~/.cache/cleanroom/bench-venv), so their pins never meet ours. Idempotent.
set -euo pipefail
venv=${CLEANROOM_CACHE:-$HOME/.cache/cleanroom}/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q dicognito==0.19.0 dicom-anonymizer==2.1.0 deid==0.4.13 dcmanon==0.3.1
echo "peers installed in $venv" >&2
