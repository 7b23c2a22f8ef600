# Shared paths and helpers for hack/ scripts. Source it; it sets no shell options.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$ROOT/hack/versions.env"
CACHE=${CLEANROOM_CACHE:-$HOME/.cache/cleanroom}
STATE=$ROOT/.cluster
CLUSTER_NAME=${CLEANROOM_CLUSTER_NAME:-cleanroom}
KUBECONFIG_FILE=$STATE/kubeconfig
K8S_BIN=$CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/bin/etcd-$ETCD_VERSION
KWOK_BIN=$CACHE/bin/kwok-$KWOK_VERSION
S3_BIN=$CACHE/bin/versitygw-$VERSITYGW_VERSION
S3_PORT=${CLEANROOM_S3_PORT:-7070}
export PATH="$K8S_BIN:$KWOK_BIN:$PATH"

say() { printf '==> %s\n' "$*" >&2; }
die() {
  printf '!! %s\n' "$1" >&2
  [ -n "${2:-}" ] && printf '   what to do: %s\n' "$2" >&2
  exit 1
}
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# Stops the process whose pid is in FILE (and its process group), then removes FILE.
stop_pidfile() {
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# Waits until URL answers (extra curl arguments after it); dies, showing LOG, if the process in PIDFILE exits
# or nothing answers within 30 s.
wait_healthy() {
  local name=$1 pidfile=$2 log=$3 url=$4
  shift 4
  for _ in $(seq 60); do
    curl -sf "$@" "$url" >/dev/null && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$log" >&2; die "the $name exited" "read $log"; }
    sleep 0.5
  done
  tail -20 "$log" >&2
  die "the $name did not answer at $url within 30 s" "read $log"
}

# One local stack a machine: its ports (S3, PACS, audit service, hub), the kwok cluster's name and the real
# node (kubelet ports, bridge, iptables chains) are the machine's. OWNER records which checkout holds them.
OWNER_FILE=${CLEANROOM_STACK_OWNER_FILE:-/run/cleanroom-stack.owner}
claim_stack() {
  local owner
  owner=$(cat "$OWNER_FILE" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$ROOT" ] && [ -d "$owner/.cluster" ]; then
    die "the local stack of another checkout ($owner) is up on this machine: its ports, cluster name and real node would clash with this one's" \
      "run 'make down' in $owner first (or remove $OWNER_FILE if that checkout is gone)"
  fi
  echo "$ROOT" >"$OWNER_FILE" 2>/dev/null || true
}
release_stack() {
  [ "$(cat "$OWNER_FILE" 2>/dev/null || true)" = "$ROOT" ] && rm -f "$OWNER_FILE"
  return 0
}

# kwokctl's API server certificate (pki/admin.crt, also the admin's client certificate) names the host's
# addresses but not the kubernetes Service's 10.96.0.1, which pods on the real node dial with the cluster CA.
# Re-issue it, same key and subject, with that address added; true when it changed (the API server must then
# be restarted to serve it).
reissue_apiserver_cert() {
  local pki=$1 sans
  sans=$(openssl x509 -in "$pki/admin.crt" -noout -ext subjectAltName | tail -n +2 | tr -d ' ' | sed 's/IPAddress:/IP:/g')
  case ",$sans," in *",IP:10.96.0.1,"*) return 1 ;; esac
  local ext
  ext=$(mktemp)
  printf 'subjectAltName=%s,IP:10.96.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$sans" >"$ext"
  openssl req -new -key "$pki/admin.key" -subj "$(openssl x509 -in "$pki/admin.crt" -noout -subject -nameopt compat | sed 's/^subject=//')" \
    | openssl x509 -req -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 -extfile "$ext" -out "$pki/admin.crt.new" 2>/dev/null
  rm -f "$ext"
  mv "$pki/admin.crt.new" "$pki/admin.crt"
}
