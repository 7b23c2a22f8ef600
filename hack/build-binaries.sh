#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy and caches them by version
# under ~/.cache/cleanroom/bin/<component>-<version>/. Idempotent: a cached binary whose
# --version matches is reused, so a warm run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

CACHE=${CLEANROOM_CACHE:-$HOME/.cache/cleanroom}
export GOFLAGS=-mod=mod CGO_ENABLED=0
export GOTOOLCHAIN=local

step() { printf '\n==> [build] %s\n' "$*" >&2; }
fail() {
  printf '\n!! [build] step failed: %s\n' "$1" >&2
  printf '   what to do: %s\n' "$2" >&2
  exit 1
}

k8s_dir=$CACHE/bin/kubernetes-$K8S_VERSION
etcd_dir=$CACHE/bin/etcd-$ETCD_VERSION
kwok_dir=$CACHE/bin/kwok-$KWOK_VERSION
mkdir -p "$k8s_dir" "$etcd_dir" "$kwok_dir"

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.} ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
  done
  echo "$ld"
}

# Writes a wrapper Go module in DIR that builds the given k8s.io/kubernetes commands.
# k8s.io/kubernetes replaces its staging modules with local paths, which a consumer ignores;
# a wrapper module must pin each staging module to its published v0.x release instead.
k8s_wrapper() {
  local wrap=$1
  shift
  mkdir -p "$wrap"
  cd "$wrap"
  local minor=${K8S_VERSION#v1.}
  [ -f go.mod ] || go mod init cleanroom.dev/k8s-wrapper >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null \
    || fail "download k8s.io/kubernetes@$K8S_VERSION" "check that the Go module proxy is reachable (go env GOPROXY)"
  local upstream_mod
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module cleanroom.dev/k8s-wrapper"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" \
      | awk -v v="v0.$minor" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for cmd in "$@"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'
  } > tools.go
  go mod tidy -e >/dev/null 2>&1 || true
}

build_kubernetes() {
  if [ -x "$k8s_dir/kubectl" ] && "$k8s_dir/kube-apiserver" --version 2>/dev/null | grep "$K8S_VERSION" >/dev/null \
     && [ -x "$k8s_dir/kube-controller-manager" ] && [ -x "$k8s_dir/kube-scheduler" ]; then
    step "kubernetes $K8S_VERSION: cached in $k8s_dir"; return
  fi
  step "kubernetes $K8S_VERSION: building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: 15-25 min on 2 cores)"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  k8s_wrapper "$CACHE/src/k8s-wrapper-$K8S_VERSION" "${cmds[@]}"
  local ld
  ld=$(k8s_ldflags)
  for cmd in "${cmds[@]}"; do
    step "kubernetes: go build $cmd"
    go build -tags selinux,notest -ldflags "$ld" -o "$k8s_dir/$cmd" "k8s.io/kubernetes/cmd/$cmd" \
      || fail "go build $cmd" "read the compiler error above; a missing module usually means the staging replace list is stale: delete $CACHE/src/k8s-wrapper-$K8S_VERSION and rerun"
  done
}

# The real node's kubelet and kube-proxy. Upstream builds the kubelet with cgo (it links libc's resolver and
# user lookups); kube-proxy is built the same way so the two share one build cache.
build_node() {
  local dir=$CACHE/bin/node-$K8S_VERSION
  if "$dir/kubelet" --version 2>/dev/null | grep "$K8S_VERSION" >/dev/null && [ -x "$dir/kube-proxy" ]; then
    step "kubelet, kube-proxy $K8S_VERSION: cached in $dir"; return
  fi
  command -v gcc >/dev/null || fail "no C compiler" "apt-get install gcc (the kubelet is built with cgo)"
  step "kubelet, kube-proxy $K8S_VERSION: building with cgo (cold: about 12 min on 2 cores)"
  mkdir -p "$dir"
  local cmds=(kubelet kube-proxy)
  k8s_wrapper "$CACHE/src/k8s-node-wrapper-$K8S_VERSION" "${cmds[@]}"
  local ld
  ld=$(k8s_ldflags)
  for cmd in "${cmds[@]}"; do
    step "kubernetes: go build $cmd (cgo)"
    CGO_ENABLED=1 go build -tags selinux,notest -ldflags "$ld" -o "$dir/$cmd" "k8s.io/kubernetes/cmd/$cmd" \
      || fail "go build $cmd" "read the compiler error above"
  done
}

# NetworkPolicy enforcement on the real node (iptables + ipset). A test component of the local stack only:
# never part of the chart.
build_kuberouter() {
  go_install_tool kube-router "$KUBE_ROUTER_VERSION" "NetworkPolicy enforcement for the real node" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
}

# Cluster DNS for the real node's pods (the chart's pods find each other by Service name). CoreDNS's own
# main links every plugin; this one links only what the stack uses, as CoreDNS documents for custom builds.
build_coredns() {
  local dir=$CACHE/bin/coredns-$COREDNS_VERSION
  if [ -x "$dir/coredns" ]; then step "coredns $COREDNS_VERSION: cached"; return; fi
  step "coredns $COREDNS_VERSION: building cluster DNS for the real node (errors, log, health, kubernetes)"
  local wrap=$CACHE/src/coredns-wrapper-$COREDNS_VERSION
  mkdir -p "$wrap" "$dir"
  cd "$wrap"
  cat > main.go <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

func init() { dnsserver.Directives = []string{"errors", "log", "health", "kubernetes"} }

func main() { coremain.Run() }
GO
  [ -f go.mod ] || go mod init cleanroom.dev/coredns-wrapper >/dev/null 2>&1
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1 || fail "go get coredns" "check the Go module proxy"
  go mod tidy >/dev/null 2>&1 || true
  go build -ldflags "-s -w" -o "$dir/coredns" . || fail "go build coredns" "read the compiler error above"
}

# Volumes for the real node's pods: directories a non-root pod can write (the controller-manager's host-path
# provisioner makes root-owned 0750 ones, and fsGroup does not apply to hostPath volumes).
build_localpath() {
  go_install_tool local-path-provisioner "$LOCAL_PATH_VERSION" "volumes for the real node" \
    github.com/rancher/local-path-provisioner
}

# Volume snapshots on the real node (hack/csi-snapshots-up.sh): the snapshot controller and the CSI snapshotter
# sidecar, from the same module. Its go.mod replaces the Kubernetes staging modules, which `go install
# pkg@version` refuses, so a wrapper module requires it and carries those replaces over.
build_snapshotter() {
  local dir=$CACHE/bin/external-snapshotter-$EXTERNAL_SNAPSHOTTER_VERSION
  if [ -x "$dir/snapshot-controller" ] && [ -x "$dir/csi-snapshotter" ]; then
    step "external-snapshotter $EXTERNAL_SNAPSHOTTER_VERSION: cached"; return
  fi
  step "external-snapshotter $EXTERNAL_SNAPSHOTTER_VERSION: building snapshot-controller and csi-snapshotter (cold: about 5 min)"
  local wrap=$CACHE/src/snapshotter-wrapper-$EXTERNAL_SNAPSHOTTER_VERSION module=github.com/kubernetes-csi/external-snapshotter/v8
  mkdir -p "$wrap" "$dir"
  cd "$wrap"
  local upstream_mod
  upstream_mod=$(go mod download -json "$module@$EXTERNAL_SNAPSHOTTER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])') \
    || fail "download $module@$EXTERNAL_SNAPSHOTTER_VERSION" "check that the Go module proxy is reachable (go env GOPROXY)"
  {
    echo "module cleanroom.dev/snapshotter-wrapper"
    echo
    echo "go 1.26"
    echo
    echo "require $module $EXTERNAL_SNAPSHOTTER_VERSION"
    echo "require github.com/kubernetes-csi/external-snapshotter/client/v8 $EXTERNAL_SNAPSHOTTER_VERSION"
    echo
    grep -E '^replace k8s.io/' "$upstream_mod"
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/csi-snapshotter"\n\t_ "%s/cmd/snapshot-controller"\n)\n' "$module" "$module" > tools.go
  go mod tidy -e >/dev/null 2>&1 || true
  for cmd in snapshot-controller csi-snapshotter; do
    go build -ldflags "-s -w -X main.version=$EXTERNAL_SNAPSHOTTER_VERSION" -o "$dir/$cmd" "$module/cmd/$cmd" \
      || fail "go build $cmd" "read the compiler error above"
  done
}

build_etcd() {
  if "$etcd_dir/etcd" --version 2>/dev/null | grep "${ETCD_VERSION#v}" >/dev/null; then
    step "etcd $ETCD_VERSION: cached"; return
  fi
  step "etcd $ETCD_VERSION: building"
  local wrap=$CACHE/src/etcd-wrapper-$ETCD_VERSION
  mkdir -p "$wrap"; cd "$wrap"
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  [ -f go.mod ] || go mod init cleanroom.dev/etcd-wrapper >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || fail "go get etcd server" "check the Go module proxy"
  go mod tidy >/dev/null 2>&1 || true
  go build -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=cleanroom" -o "$etcd_dir/etcd" . \
    || fail "go build etcd" "read the compiler error above"
}

build_kwok() {
  if "$kwok_dir/kwokctl" --version 2>/dev/null | grep "${KWOK_VERSION#v}" >/dev/null && [ -x "$kwok_dir/kwok" ]; then
    step "kwok $KWOK_VERSION: cached"; return
  fi
  step "kwok $KWOK_VERSION: building kwok and kwokctl"
  GOBIN=$kwok_dir go install -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION" \
    || fail "go install kwok" "check the Go module proxy"
}

# A tool with one command, installed from the Go module proxy into $CACHE/bin/<name>-<version>/ unless there.
# Arguments: name, version, what it is for, package path, extra -ldflags.
go_install_tool() {
  local name=$1 version=$2 purpose=$3 package=$4 ldflags=${5:-}
  local dir=$CACHE/bin/$name-$version
  if [ -x "$dir/$name" ]; then step "$name $version: cached"; return; fi
  step "$name $version: building $purpose"
  mkdir -p "$dir"
  GOBIN=$dir go install -ldflags "-s -w $ldflags" "$package@$version" \
    || fail "go install $name" "check the Go module proxy"
}

build_versitygw() {
  go_install_tool versitygw "$VERSITYGW_VERSION" "the S3 server" github.com/versity/versitygw/cmd/versitygw
}

build_cyclonus() {
  go_install_tool cyclonus "$CYCLONUS_VERSION" "the NetworkPolicy evaluator the tests use" \
    github.com/mattfenwick/cyclonus/cmd/cyclonus
}

build_helm() {
  # helm reads its own version from this ldflag; without it `helm version` says v3.x-unreleased.
  go_install_tool helm "$HELM_VERSION" "the chart tool make chart-check uses" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

build_kubeconform() {
  go_install_tool kubeconform "$KUBECONFORM_VERSION" "the manifest validator make chart-check uses" \
    github.com/yannh/kubeconform/cmd/kubeconform
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kwok versitygw etcd kubernetes cyclonus)
for t in "${targets[@]}"; do "build_$t"; done
step "done: binaries under $CACHE/bin"
