#!/usr/bin/env bash
# Installs the peer de-identification tools for bench/deid.py into their own venv, outside the project
# (~/.cache/cleanroom/bench-venv), so their pins never meet ours: the Python ones from PyPI, and dcmanon's
# own command line (Rust, parallel over files) from crates.io when cargo is there. Idempotent.
set -euo pipefail
venv=${CLEANROOM_CACHE:-$HOME/.cache/cleanroom}/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q dicognito==0.19.0 dicom-anonymizer==2.1.0 deid==0.4.13 dcmanon==0.3.1
if [ ! -x "$venv/bin/dcmanon" ]; then
  if command -v cargo >/dev/null; then
    cargo install --quiet --locked dicom-anonymization@0.3.1 --root "$venv"
  else
    echo "cargo not found: dcmanon's command line is not installed (its Python binding is)" >&2
  fi
fi
echo "peers installed in $venv" >&2
