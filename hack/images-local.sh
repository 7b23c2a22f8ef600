#!/usr/bin/env bash
# Builds the chart's images on this machine, with no registry and no container engine, from the same
# Containerfiles users build (images/*/Containerfile take their base as a build argument), and imports them
# into the real node's containerd. Prints the image names as shell assignments (IMAGE_OPERATOR=... ) on stdout.
#
# - The base is Debian's own: an mmdebstrap root filesystem imported as a local image. The host's CA bundle
#   is copied into this local base only, because this machine's package traffic goes through a TLS proxy.
# - Images are built with buildah (overlay storage, or vfs with CLEANROOM_BUILDAH_DRIVER=vfs; chroot
#   isolation) and cached by content: an image's tag is a hash of everything its build reads, and its archive
#   is kept under ~/.cache/cleanroom/images, so a warm run only imports. Buildah's layer cache is kept too:
#   the Containerfiles install the dependencies in a layer of their own, so a code change rebuilds little.
# - Three images exist only for the local stack and have no Containerfile of ours: the pause image (a static
#   program), the S3 server and CoreDNS (the binaries hack/build-binaries.sh built, on an empty base).
#
# Usage: hack/images-local.sh [--no-import | --import-only]
#   --import-only imports the images .cluster/images.env names (what an earlier run built) and builds nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

IMAGES=$CACHE/images
mkdir -p "$IMAGES" "$STATE"
export BUILDAH_ISOLATION=chroot
# Buildah's own storage lives in the cache (it holds the layer cache) and its run state under .cluster.
DRIVER=${CLEANROOM_BUILDAH_DRIVER:-overlay}
BUILDAH=(buildah --root "$CACHE/buildah/$DRIVER" --runroot "$STATE/buildah-run" --storage-driver "$DRIVER")
import=1 build=1
[ "${1:-}" = --no-import ] && import=0
[ "${1:-}" = --import-only ] && build=0

hash_of() { sha256sum | cut -c1-16; }
# A hash of the files (and text) a build reads.
hash_files() {
  local extra=$1
  shift
  { printf '%s\n' "$extra"; (cd "$ROOT" && find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort | xargs sha256sum); } | hash_of
}
have_archive() { [ -s "$IMAGES/$1.tar" ]; }

# The Python base: Debian's python3, as python:3.11-slim-bookworm provides it.
base_packages=python3,python3-venv,python-is-python3,ca-certificates,passwd
base_key=$(printf '%s %s\n' "$DEBIAN_SUITE" "$base_packages" | cat - /etc/ssl/certs/ca-certificates.crt | hash_of)
BASE_IMAGE=localhost/cleanroom/pybase:$base_key
build_base() {
  if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  local rootfs=$IMAGES/pybase-$base_key.rootfs.tar
  if [ ! -s "$rootfs" ]; then
    say "base image: mmdebstrap $DEBIAN_SUITE ($base_packages), about a minute"
    mmdebstrap --variant=apt --format=tar --include="$base_packages" \
      --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
      "$DEBIAN_SUITE" "$rootfs.part" >"$STATE/mmdebstrap.log" 2>&1 \
      || { tail -20 "$STATE/mmdebstrap.log" >&2; die "mmdebstrap failed (log: .cluster/mmdebstrap.log)" "check that Debian's mirror is reachable (apt-get update)"; }
    mv "$rootfs.part" "$rootfs"
  fi
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$rootfs" / >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh "$ctr"
  "${BUILDAH[@]}" commit --quiet "$ctr" "$BASE_IMAGE" >/dev/null
  "${BUILDAH[@]}" rm "$ctr" >/dev/null
}

# Builds images/NAME/Containerfile (optionally a TARGET stage) as localhost/cleanroom/REF:<hash>.
build_containerfile() {
  local name=$1 ref=$2 target=${3:-}
  local file=images/$name/Containerfile
  local tag
  tag=$(hash_files "$base_key $target" "$file" images/"$name" pyproject.toml README.md operator charts/cleanroom/files)
  local image=localhost/cleanroom/$ref:$tag archive=$ref-$tag
  if ! have_archive "$archive"; then
    build_base
    say "image $image: buildah build $file${target:+ --target $target}"
    local args=(--layers --network host -f "$ROOT/$file" -t "$image"
      --build-arg "PYTHON_BASE=$BASE_IMAGE" --build-arg "CUDA_BASE=$BASE_IMAGE")
    [ -n "$target" ] && args+=(--target "$target")
    # A clean environment: the host's REQUESTS_CA_BUNDLE and friends point at files the build does not have.
    env -i PATH="$PATH" HOME="$HOME" BUILDAH_ISOLATION=chroot "${BUILDAH[@]}" build "${args[@]}" "$ROOT" \
      >"$STATE/build-$ref.log" 2>&1 \
      || { tail -30 "$STATE/build-$ref.log" >&2; die "building $image failed (log: .cluster/build-$ref.log)" "fix $file or the error above and rerun"; }
    "${BUILDAH[@]}" push --quiet "$image" "docker-archive:$IMAGES/$archive.tar.part:$image" >/dev/null
    mv "$IMAGES/$archive.tar.part" "$IMAGES/$archive.tar"
    # Archives of earlier builds of this image go (one a code change), and so do layers no image uses.
    find "$IMAGES" -maxdepth 1 -name "$ref-*.tar" ! -name "$archive.tar" -delete
    "${BUILDAH[@]}" rmi "$image" >/dev/null 2>&1 || true
  fi
  printf '%s\n' "$image"
}

# An image of one static binary on an empty base (local stack only).
build_binary_image() {
  local ref=$1 binary=$2 version=$3
  local image=localhost/cleanroom/$ref:$version archive=$ref-$version
  if ! have_archive "$archive"; then
    say "image $image: $(basename "$binary") on an empty base"
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" copy --chmod 0755 "$ctr" "$binary" "/$(basename "$binary")" >/dev/null
    "${BUILDAH[@]}" config --entrypoint "[\"/$(basename "$binary")\"]" --user 65532:65532 "$ctr"
    "${BUILDAH[@]}" commit --quiet "$ctr" "$image" >/dev/null
    "${BUILDAH[@]}" rm "$ctr" >/dev/null
    "${BUILDAH[@]}" push --quiet "$image" "docker-archive:$IMAGES/$archive.tar.part:$image" >/dev/null
    mv "$IMAGES/$archive.tar.part" "$IMAGES/$archive.tar"
  fi
  printf '%s\n' "$image"
}

# The sandbox ("pause") image: sleeps, reaps orphans, exits on TERM or INT.
build_pause() {
  local src=$ROOT/hack/pause.c
  local version
  version=$(hash_files "" hack/pause.c)
  local bin=$CACHE/bin/pause-$version/pause
  if [ ! -x "$bin" ]; then
    mkdir -p "$(dirname "$bin")"
    gcc -static -O2 -o "$bin" "$src" || die "building the pause program failed" "apt-get install gcc libc6-dev"
  fi
  build_binary_image pause "$bin" "$version"
}

if [ $build = 1 ]; then
  IMAGE_OPERATOR=$(build_containerfile operator operator)
  IMAGE_HUB=$(build_containerfile hub hub)
  IMAGE_PROXY=$(build_containerfile proxy proxy)
  IMAGE_NOTEBOOK=$(build_containerfile notebook notebook-cpu cpu)
  IMAGE_S3=$(build_binary_image s3 "$S3_BIN/versitygw" "$VERSITYGW_VERSION")
  IMAGE_COREDNS=$(build_binary_image coredns "$CACHE/bin/coredns-$COREDNS_VERSION/coredns" "$COREDNS_VERSION")
  IMAGE_PAUSE=$(build_pause)
  IMAGE_HELPER=$BASE_IMAGE
  build_base
  if [ ! -s "$IMAGES/pybase-$base_key.tar" ]; then
    "${BUILDAH[@]}" push --quiet "$BASE_IMAGE" "docker-archive:$IMAGES/pybase-$base_key.tar.part:$BASE_IMAGE" >/dev/null
    mv "$IMAGES/pybase-$base_key.tar.part" "$IMAGES/pybase-$base_key.tar"
  fi
else
  # shellcheck source=/dev/null
  source "$STATE/images.env"
fi

if [ $import = 1 ]; then
  [ -S "$STATE/node/containerd.sock" ] || die "the real node's containerd is not running" "run make cluster-up"
  for image in "$IMAGE_OPERATOR" "$IMAGE_HUB" "$IMAGE_PROXY" "$IMAGE_NOTEBOOK" "$IMAGE_S3" "$IMAGE_COREDNS" "$IMAGE_PAUSE" "$IMAGE_HELPER"; do
    if ctr -a "$STATE/node/containerd.sock" -n k8s.io images ls -q | grep -qxF "$image"; then continue; fi
    ref=${image#localhost/cleanroom/}
    archive=${ref/:/-}
    say "importing $image into the real node"
    ctr -a "$STATE/node/containerd.sock" -n k8s.io images import "$IMAGES/$archive.tar" >/dev/null \
      || die "importing $image failed" "rerun make cluster-up; the archive is $IMAGES/$archive.tar"
  done
fi
[ $build = 1 ] || exit 0
for var in IMAGE_OPERATOR IMAGE_HUB IMAGE_PROXY IMAGE_NOTEBOOK IMAGE_S3 IMAGE_COREDNS IMAGE_PAUSE IMAGE_HELPER; do
  printf '%s=%s\n' "$var" "${!var}"
done
