#!/usr/bin/env bash
# bash deploy/kind/reference/up.sh [--config FILE] [--mode iptables|nftables] [--image NODE_IMAGE --patches FILE]
# The reference setup flatnet's conformance runs are compared with: a kind cluster (same node image, same machine-only
# patches as kind:up) running upstream kube-proxy from kubeadm's addon, and the reference CNI plugins from Debian's
# containernetworking-plugins (bridge + host-local + portmap, as /usr/lib/cni in the node image) with one static
# route per remote node's podCIDR, and egress leaving the pod CIDR masqueraded (as kindnet does). No flatnet part runs.
# Then: bash deploy/kind/conformance.sh --config deploy/kind/reference/kind-config.yaml --label reference
# Remove: kind delete cluster --name fnref
set -euo pipefail
cd "$(dirname "$0")/../../.."
. deploy/kind/lib.sh
CONFIG=deploy/kind/reference/kind-config.yaml MODE="" IMAGE="" PATCHES=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    --patches) PATCHES="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
NAME=$(sed -n 's/^name: *//p' "$CONFIG" | head -1); NAME="${NAME:-fnref}"
KIND="${KIND:-$(command -v kind || echo "$KIND_BIN")}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$K8S_BIN/kubectl")}"
DEBIAN_IMAGE="${DEBIAN_IMAGE:-flatnet-kind/debian:bookworm}"
PROXY_IMAGE="registry.k8s.io/kube-proxy:$K8S_VERSION"
CLUSTER_CIDR=$(sed -n 's/^ *podSubnet: *//p' "$CONFIG" | head -1)
if [ -n "$MODE" ]; then
  tmp=$(mktemp --suffix=.yaml)
  sed "s/^\( *kubeProxyMode:\).*/\1 $MODE/" "$CONFIG" > "$tmp"
  CONFIG="$tmp"
fi

build_proxy_image() {
  [ -x "$K8S_BIN/kube-proxy" ] || k8s_build k8s.io/kubernetes/cmd/kube-proxy "$K8S_BIN/kube-proxy"
  local ctx
  ctx=$(mktemp -d)
  cp deploy/kind/reference/kube-proxy/Dockerfile "$K8S_BIN/kube-proxy" "$ctx/"
  docker build -q --network host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$PROXY_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
}
step "kube-proxy image $PROXY_IMAGE" build_proxy_image

# The node image and this machine's config patches come from kind:up, which stops before flatnet with --no-flatnet;
# --image and --patches (a kind config fragment: containerdConfigPatches, kubeadmConfigPatches) create it directly.
create() {
  if [ -z "$IMAGE" ]; then bash deploy/kind/up.sh --config "$CONFIG" --no-flatnet; return; fi
  "$KIND" get clusters 2>/dev/null | grep -qx "$NAME" && return 0
  local cfg
  cfg=$(mktemp --suffix=.yaml)
  cat "$CONFIG" ${PATCHES:+"$PATCHES"} > "$cfg"
  "$KIND" create cluster --config "$cfg" --image "$IMAGE" --wait 0s
}
step "kind cluster $NAME" create
step "load $PROXY_IMAGE" "$KIND" load docker-image --name "$NAME" "$PROXY_IMAGE"

KCFG=$(mktemp); trap 'rm -f "$KCFG"' EXIT
"$KIND" get kubeconfig --name "$NAME" > "$KCFG"
k() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }

# node name, InternalIP and podCIDR of every node
mapfile -t NODES < <(k get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {.spec.podCIDR}{"\n"}{end}')

network() {
  local line name ip cidr other oname oip ocidr mtu
  for line in "${NODES[@]}"; do
    read -r name ip cidr <<< "$line"
    [ -n "$cidr" ] || die "node $name has no podCIDR"
    mtu=$(docker exec "$name" cat /sys/class/net/eth0/mtu)
    docker exec "$name" sh -c 'cp /usr/lib/cni/bridge /opt/cni/bin/bridge.tmp && mv /opt/cni/bin/bridge.tmp /opt/cni/bin/bridge'
    docker exec -i "$name" sh -c 'cat > /etc/cni/net.d/10-reference.conflist' <<EOF
{
  "cniVersion": "1.0.0",
  "name": "reference",
  "plugins": [
    { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": $mtu,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$cidr" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
    for other in "${NODES[@]}"; do
      read -r oname oip ocidr <<< "$other"
      [ "$oname" = "$name" ] || docker exec "$name" ip route replace "$ocidr" via "$oip"
    done
    # pods' traffic leaving the pod CIDR leaves with the node's address, as with kindnet
    docker exec "$name" sh -c "iptables -t nat -C POSTROUTING -s $CLUSTER_CIDR ! -d $CLUSTER_CIDR -m comment --comment reference-egress -j MASQUERADE 2>/dev/null \
      || iptables -t nat -A POSTROUTING -s $CLUSTER_CIDR ! -d $CLUSTER_CIDR -m comment --comment reference-egress -j MASQUERADE"
  done
}
step "reference CNI config, routes and masquerade on ${#NODES[@]} nodes" network

ready() {
  k -n kube-system rollout status ds/kube-proxy --timeout=300s
  k wait --for=condition=Ready nodes --all --timeout=300s
  k -n kube-system rollout status deploy/coredns --timeout=300s
}
step "kube-proxy, nodes and CoreDNS ready" ready
klog "reference cluster $NAME is up (kube-proxy mode $(k -n kube-system get cm kube-proxy -o jsonpath='{.data.config\.conf}' | sed -n 's/^mode: *//p'))"
