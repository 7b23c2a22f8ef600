#!/usr/bin/env bash
# On a machine that reaches the registries: resolve each base image's digest (skopeo or crane) and write it
# into images/base-images.env, so builds are reproducible and reviewable. Run before hack/build-images.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
env_file=$ROOT/images/base-images.env
resolve() {
  if command -v skopeo >/dev/null; then skopeo inspect --format '{{.Digest}}' "docker://$1"
  elif command -v crane >/dev/null; then crane digest "$1"
  else die "neither skopeo nor crane is installed" "install one of them"; fi
}
for var in PYTHON_BASE CUDA_BASE; do
  image=$(grep "^$var=" "$env_file" | cut -d= -f2)
  digest=$(resolve "$image")
  sed -i "s|^${var}_DIGEST=.*|${var}_DIGEST=$digest|" "$env_file"
  say "$image@$digest"
done
