#!/usr/bin/env bash
# Installs configurable-http-proxy (the hub's proxy) and oidc-provider (the local stack's OpenID Connect
# provider, hack/oidc-up.sh) from npm, cached by version under
# ~/.cache/cleanroom/node/<name>-<version>/. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${CLEANROOM_CACHE:-$HOME/.cache/cleanroom}
install_one() {
  local name=$1 version=$2 dir=$CACHE/node/$1-$2
  if [ -f "$dir/node_modules/$name/package.json" ]; then echo "==> $name $version: cached" >&2; return; fi
  command -v npm >/dev/null || { echo "!! npm is required (Debian: apt-get install nodejs npm)" >&2; exit 1; }
  echo "==> npm install $name@$version into $dir" >&2
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --silent "$name@$version" >&2
}
install_one configurable-http-proxy "$CHP_VERSION"
install_one oidc-provider "$OIDC_PROVIDER_VERSION"
