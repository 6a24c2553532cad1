#!/usr/bin/env bash
# npm run kind:up [-- --config FILE] [--no-flatnet]
# Creates the kind cluster named in FILE (default kind-config.yaml: 3 nodes, no kindnet, no kube-proxy) with flatnet
# installed, and waits until every node is Ready and CoreDNS is available. Reachable afterwards as kubectl context
# kind-<name> in the default kubeconfig. Everything is built on this machine (deploy/kind/images.sh): no registry is
# needed. A container engine is started if none runs (deploy/kind/engine.sh); npm run kind:down undoes it all.
#   --no-flatnet   stop after the cluster exists (the reference setup, deploy/kind/reference/up.sh, installs its own)
# Running it again on an existing cluster rebuilds the flatnet image from this checkout and rolls it out.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
. deploy/kind/engine.sh
CONFIG=kind-config.yaml FLATNET=1
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --no-flatnet) FLATNET=0; shift ;;
    *) die "unknown option $1 (npm run kind:up [-- --config FILE] [--no-flatnet])" ;;
  esac
done
[ -f "$CONFIG" ] || die "no kind config $CONFIG"
NAME=$(sed -n 's/^name: *//p' "$CONFIG" | head -1); NAME="${NAME:-kind}"
FAMILY=$(sed -n 's/^ *ipFamily: *//p' "$CONFIG" | head -1)
OVERLAY=deploy
case "$FAMILY" in
  ipv6) OVERLAY=deploy/overlays/ipv6 ;;
  dual) OVERLAY=deploy/overlays/dual ;;
esac
T0=$SECONDS

host_record   # before the engine and the first node touch the host (kind:down restores it)
step "container engine" ensure_engine
NODE_IMAGE=$(bash deploy/kind/images.sh | tail -1)
[ -n "$NODE_IMAGE" ] || die "no node image"
KIND="$KIND_BIN" KUBECTL="$K8S_BIN/kubectl"
k() { "$KUBECTL" --context "kind-$NAME" "$@"; }

create() {
  if "$KIND" get clusters 2>/dev/null | grep -qx "$NAME"; then
    klog "kind cluster $NAME exists; keeping it"
    return 0
  fi
  local flags=() cfg="$KIND_STATE/$NAME.yaml"
  [ "$(docker info -f '{{.CgroupDriver}}')" = cgroupfs ] && flags+=(--cgroupfs)
  [ "$(docker info -f '{{.CgroupVersion}}')" = 1 ] && flags+=(--cgroup-v1)
  "$NODE" deploy/kind/config.mjs "$CONFIG" "${flags[@]}" > "$cfg"
  "$KIND" create cluster --config "$cfg" --image "$NODE_IMAGE" --wait 0s
}
step "kind cluster $NAME ($NODE_IMAGE)" create
[ "$FLATNET" = 1 ] || { klog "cluster $NAME is up without a pod network (--no-flatnet) in $((SECONDS - T0)) s"; exit 0; }

load() {
  local img="${FLATNET_IMAGE:-flatnet:dev}"
  # kind skips nodes whose containerd already holds this image ID
  "$KIND" load docker-image --name "$NAME" "$img" > "$KIND_STATE/$NAME-load.log" 2>&1 \
    || { cat "$KIND_STATE/$NAME-load.log" >&2; die "kind load docker-image $img failed"; }
}
step "load flatnet:dev into the nodes" load

# the manifests as kustomize renders them, with the API server's name for this cluster
apply() {
  local pod svc
  pod=$(sed -n 's/^ *podSubnet: *//p' "$CONFIG" | head -1)
  svc=$(sed -n 's/^ *serviceSubnet: *//p' "$CONFIG" | head -1)
  k kustomize "$OVERLAY" > "$KIND_STATE/$NAME-flatnet.yaml"
  [ -z "$pod" ] || grep -q "clusterCIDR: $pod\$" "$KIND_STATE/$NAME-flatnet.yaml" \
    || die "$CONFIG's podSubnet $pod is not the clusterCIDR in $OVERLAY (deploy/manifests/config.yaml); make them match"
  [ -z "$svc" ] || grep -q "serviceCIDR: $svc\$" "$KIND_STATE/$NAME-flatnet.yaml" \
    || die "$CONFIG's serviceSubnet $svc is not the serviceCIDR in $OVERLAY (deploy/manifests/config.yaml); make them match"
  sed -i -E "s#server: https://[a-z0-9.-]+-control-plane:6443#server: https://$NAME-control-plane:6443#" "$KIND_STATE/$NAME-flatnet.yaml"
  local existed=0
  k -n flatnet-system get ds flatnet >/dev/null 2>&1 && existed=1
  k apply -f "$KIND_STATE/$NAME-flatnet.yaml" >/dev/null
  # a re-run with a rebuilt image keeps the tag: restart the pods so they run the new one
  [ "$existed" = 0 ] || k -n flatnet-system rollout restart ds/flatnet >/dev/null
}
step "apply flatnet ($OVERLAY)" apply

ready() {
  k -n flatnet-system rollout status ds/flatnet --timeout=300s >/dev/null
  k wait --for=condition=Ready nodes --all --timeout=300s >/dev/null
  k -n kube-system rollout status deploy/coredns --timeout=300s >/dev/null
}
step "flatnet rolled out, nodes Ready, CoreDNS available" ready
klog "kind cluster $NAME is up with flatnet in $((SECONDS - T0)) s: kubectl --context kind-$NAME get pods -A"
