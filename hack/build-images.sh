#!/usr/bin/env bash
# Builds and optionally pushes the images: REGISTRY=registry.example.org/cleanroom TAG=0.1.0 [PUSH=1]
# [ENGINE=docker|podman] hack/build-images.sh. Needs a container engine and pinned base digests
# (hack/pin-base-images.sh); neither exists on the development machines, so CI lints instead.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
# shellcheck source=/dev/null
source "$ROOT/images/base-images.env"
ENGINE=${ENGINE:-docker}
REGISTRY=${REGISTRY:?set REGISTRY, e.g. registry.example.org/cleanroom}
TAG=${TAG:-0.1.0}
[ -n "$PYTHON_BASE_DIGEST" ] && [ -n "$CUDA_BASE_DIGEST" ] || die "base image digests are not pinned" "run hack/pin-base-images.sh"
for image in operator hub notebook; do
  say "$ENGINE build $REGISTRY/$image:$TAG"
  "$ENGINE" build -f "$ROOT/images/$image/Containerfile" -t "$REGISTRY/$image:$TAG" \
    --build-arg "PYTHON_BASE=$PYTHON_BASE@$PYTHON_BASE_DIGEST" --build-arg "CUDA_BASE=$CUDA_BASE@$CUDA_BASE_DIGEST" "$ROOT"
  [ "${PUSH:-}" = 1 ] && "$ENGINE" push "$REGISTRY/$image:$TAG"
done
