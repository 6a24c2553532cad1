# Upstream e2e tooling for the kind scripts (source it after lib.sh). Everything is built from the Go module proxy and
# cached under $FLATNET_CACHE/e2e-$K8S_VERSION, keyed by the Kubernetes version:
#   e2e.test                          go test -c k8s.io/kubernetes/test/e2e
#   bin/ginkgo                        the ginkgo v2 CLI at the version k8s.io/kubernetes pins
#   bin/regression-issue-74839        test/images/regression-issue-74839 (a conntrack test's server)
E2E_DIR="$FLATNET_CACHE/e2e-$K8S_VERSION"
E2E_TEST="$E2E_DIR/e2e.test"
GINKGO="$E2E_DIR/bin/ginkgo"

# e2e_module: prints a module dir of our own (a copy of k8s_wrapper's go.mod), so `go test -c` with -mod=mod never
# rewrites the wrapper another build is using at the same time.
e2e_module() {
  local src dir="$E2E_DIR/mod"
  if [ ! -f "$dir/.ready" ]; then
    src=$(k8s_wrapper) || return 1
    mkdir -p "$dir"
    cp "$src/go.mod" "$src/doc.go" "$dir/"
    [ -f "$src/go.sum" ] && cp "$src/go.sum" "$dir/"
    sed -i 's#^module .*#module flatnet.local/k8s-e2e-wrapper#' "$dir/go.mod"
    touch "$dir/.ready"
  fi
  echo "$dir"
}

# e2e_build: e2e.test (cached)
e2e_build() {
  [ -x "$E2E_TEST" ] && { klog "e2e.test: cached ($E2E_TEST)"; return 0; }
  local dir t0=$SECONDS
  dir=$(e2e_module) || return 1
  klog "building e2e.test (k8s.io/kubernetes/test/e2e $K8S_VERSION; ~5-12 min on 2 cores) ..."
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go test -c -trimpath -ldflags "$(k8s_ldflags)" \
    -o "$E2E_TEST.tmp" k8s.io/kubernetes/test/e2e) || return 1
  mv "$E2E_TEST.tmp" "$E2E_TEST"
  klog "e2e.test built in $((SECONDS - t0)) s"
}

# ginkgo_version: the github.com/onsi/ginkgo/v2 version k8s.io/kubernetes requires
ginkgo_version() {
  local gomod
  gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  sed -n 's#^\s*github.com/onsi/ginkgo/v2 \(v[^ ]*\).*#\1#p' "$gomod" | head -1
}

# ginkgo_build: the ginkgo CLI (cached)
ginkgo_build() {
  [ -x "$GINKGO" ] && { klog "ginkgo: cached ($GINKGO)"; return 0; }
  local v t0=$SECONDS
  v=$(ginkgo_version)
  [ -n "$v" ] || die "cannot find the ginkgo version k8s.io/kubernetes@$K8S_VERSION pins"
  mkdir -p "$E2E_DIR/bin"
  (cd /tmp && GOBIN="$E2E_DIR/bin" CGO_ENABLED=0 go install -trimpath "github.com/onsi/ginkgo/v2/ginkgo@$v") || return 1
  klog "ginkgo $v built in $((SECONDS - t0)) s"
}

# e2e_image_build PKG NAME: a main package from the k8s.io/kubernetes module into $E2E_DIR/bin/NAME (cached)
e2e_image_build() {
  local pkg="$1" out="$E2E_DIR/bin/$2" dir
  [ -x "$out" ] && return 0
  dir=$(e2e_module) || return 1
  mkdir -p "$E2E_DIR/bin"
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp" "$pkg") \
    && mv "$out.tmp" "$out"
}
