# Shared by the kind scripts (source it). Everything here is idempotent.
#   FLATNET_CACHE   where slow builds are cached, outside the clone (default /var/cache/flatnet)
#   K8S_VERSION     Kubernetes version of the node image and the test tools (default v1.35.4)
#   KIND_VERSION    kind version built from the Go module proxy (default v0.33.0)
FLATNET_CACHE="${FLATNET_CACHE:-/var/cache/flatnet}"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
KIND_STATE=/run/flatnet-kind
KIND_BIN="$FLATNET_CACHE/kind-$KIND_VERSION/kind"
K8S_BIN="$FLATNET_CACHE/k8s-$K8S_VERSION/bin"
export GOTOOLCHAIN=local

klog() { echo "[kind $(date +%H:%M:%S)] $*" >&2; }
die() { klog "error: $*"; exit 1; }

# step NAME CMD...: runs one long step with a start line and its duration
step() {
  local name="$1" t0=$SECONDS; shift
  klog "$name ..."
  "$@"
  klog "$name: done in $((SECONDS - t0)) s"
}

# k8s_wrapper: prints a directory holding a Go module that requires k8s.io/kubernetes at $K8S_VERSION with every
# staging module replaced by its published v0.x tag, so `go build`/`go test -c` of any package in the tree works there.
k8s_wrapper() {
  local dir="$FLATNET_CACHE/go-k8s-$K8S_VERSION"
  if [ ! -f "$dir/.ready" ]; then
    mkdir -p "$dir"
    (
      cd "$dir"
      local gomod gover minor
      gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
      [ -f "$gomod" ] || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
      gover=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -1)
      minor="${K8S_VERSION#v1.}"
      {
        printf 'module flatnet.local/k8s-wrapper\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\n' "$gover" "$K8S_VERSION"
        grep -E '^\s*k8s\.io/[A-Za-z0-9._-]+ => \./staging/' "$gomod" | awk -v v="v0.$minor" '{print "replace " $1 " => " $1 " " v}'
      } > go.mod
      printf 'package wrapper\n' > doc.go
    ) || return 1
    touch "$dir/.ready"
  fi
  echo "$dir"
}

# k8s_ldflags: version stamping as Kubernetes' own build does it
k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}" ldf="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
  done
  echo "$ldf"
}

# k8s_build PKG OUT: builds a main package of k8s.io/kubernetes into OUT (cached: an existing OUT is kept)
k8s_build() {
  local pkg="$1" out="$2" dir
  [ -x "$out" ] && return 0
  dir=$(k8s_wrapper) || return 1
  mkdir -p "$(dirname "$out")"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go get "$pkg@$K8S_VERSION" >/dev/null 2>&1; \
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out.tmp" "$pkg") && mv "$out.tmp" "$out"
}

# Node 24 from the repository's node_modules (the system's node may be older); npm scripts have it first on PATH
NODE="${NODE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/node_modules/.bin/node}"
[ -x "$NODE" ] || NODE=$(command -v node)

# Host settings kind nodes change: kubelet writes these kernel sysctls (they are not per network namespace, so a
# privileged node container writes the host's), flatnet and kube-proxy set conntrack limits, and their modules load.
# kind:up records them before its first cluster; kind:down puts them back when its last cluster is gone.
HOST_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max net.ipv4.ip_forward net.ipv6.conf.all.forwarding
  fs.inotify.max_user_watches fs.inotify.max_user_instances"
HOST_MODULES="br_netfilter vxlan ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack_netlink"

host_record() {
  local f="$KIND_STATE/host-before" s m
  [ -f "$f" ] && return 0
  mkdir -p "$KIND_STATE"
  {
    for s in $HOST_SYSCTLS; do echo "sysctl $s $(sysctl -n "$s" 2>/dev/null || echo -)"; done
    for m in $HOST_MODULES; do
      if [ -d "/sys/module/$m" ]; then echo "module $m loaded"; else echo "module $m absent"; fi
    done
    for m in $(ls /sys/class/net); do echo "link $m"; done
  } > "$f.tmp" && mv "$f.tmp" "$f"
}

host_restore() {
  local f="$KIND_STATE/host-before" what name val cur
  [ -f "$f" ] || return 0
  while read -r what name val; do
    case "$what" in
      sysctl)
        [ "$val" = - ] && continue
        cur=$(sysctl -n "$name" 2>/dev/null || echo -)
        [ "$cur" = "$val" ] || { sysctl -qw "$name=$val" >/dev/null 2>&1 && klog "restored $name = $val (was $cur)"; } || true ;;
      module)
        [ "$val" = absent ] && [ -d "/sys/module/$name" ] && modprobe -r "$name" 2>/dev/null && klog "unloaded module $name" || true ;;
    esac
  done < "$f"
  rm -f "$f"
}
