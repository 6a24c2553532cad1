#!/usr/bin/env bash
# Builds the real Kubernetes parts the local cluster and the benchmarks use, from the Go module proxy.
# Output: $FLATNET_CACHE/k8s-<version>/bin/{etcd,kube-apiserver,kube-controller-manager,kubectl,kube-proxy,crictl[,coredns]}
# The cache lives outside the clone and is keyed by version; a finished build is reused (marker file .complete).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CACHE="${FLATNET_CACHE:-/var/cache/flatnet}"
OUT="$CACHE/k8s-$K8S_VERSION"
BIN="$OUT/bin"
mkdir -p "$BIN"
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
log() { echo "[build-control-plane] $*" >&2; }

if [ -f "$OUT/.complete" ] && [ "${1:-}" != "--force" ]; then
  log "cached: $BIN"; echo "$BIN"; exit 0
fi

STAGE="$OUT/src"
rm -rf "$STAGE"; mkdir -p "$STAGE/k8s" "$STAGE/etcd"

# --- Kubernetes: a wrapper module that replaces every staging module with its v0.x tag.
minor="${K8S_VERSION#v1.}"; staging_ver="v0.$minor"
cd "$STAGE/k8s"
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
gover=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)
{
  echo "module flatnet.local/k8s-wrapper"
  echo
  echo "go $gover"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  # lines like:  k8s.io/api => ./staging/src/k8s.io/api
  grep -E '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" | awk -v v="$staging_ver" '{print "replace " $1 " => " $1 " " v}'
} > go.mod
log "wrapper go.mod: $(grep -c '^replace' go.mod) staging replaces"
ldf="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf="$ldf -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
done
cmds="kube-apiserver kube-controller-manager kubectl kube-proxy"
for c in $cmds; do go get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >/dev/null 2>&1 || true; done
for c in $cmds; do
  if [ -x "$BIN/$c" ]; then log "have $c"; continue; fi
  log "building $c"
  go build -trimpath -ldflags "$ldf" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
done

# --- etcd: a wrapper main around etcdmain.
if [ ! -x "$BIN/etcd" ]; then
  cd "$STAGE/etcd"
  cat > go.mod <<MOD
module flatnet.local/etcd-wrapper

go 1.24
MOD
  cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go mod tidy >/dev/null
  log "building etcd"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" . && mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

# --- optional: crictl and CoreDNS (best effort).
if [ ! -x "$BIN/crictl" ]; then
  log "building crictl (optional)"
  GOBIN="$STAGE/gobin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >/dev/null 2>&1 \
    && mv "$STAGE/gobin/crictl" "$BIN/crictl" || log "crictl did not build; continuing"
fi
if [ ! -x "$BIN/coredns" ] && [ ! -f "$OUT/.coredns-failed" ]; then
  log "building coredns (optional)"
  GOBIN="$STAGE/gobin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION" >/dev/null 2>&1 \
    && mv "$STAGE/gobin/coredns" "$BIN/coredns" || { log "coredns did not build; continuing"; touch "$OUT/.coredns-failed"; }
fi

rm -rf "$STAGE"
touch "$OUT/.complete"
log "done: $(ls "$BIN" | tr '\n' ' ')"
echo "$BIN"
