#!/usr/bin/env bash
# npm run kind:up [-- --config kind-config.yaml] : creates a kind cluster without kindnet and kube-proxy, builds the
# flatnet image, loads it into the nodes, applies deploy/ and waits for every node to be Ready.
# Needs docker (or podman with KIND_EXPERIMENTAL_PROVIDER=podman), kind and kubectl on PATH. Not runnable on machines
# without a container engine (flatnet's own CI uses the local cluster in test/cluster instead).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=kind-config.yaml
IMAGE="${FLATNET_IMAGE:-flatnet:dev}"
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --image) IMAGE="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind:up needs $tool on PATH" >&2; exit 1; }
done
NAME=$(sed -n 's/^name: *//p' "$CONFIG" | head -1); NAME="${NAME:-flatnet}"
OVERLAY=deploy
case "$CONFIG" in
  *ipv6*) OVERLAY=deploy/overlays/ipv6 ;;
  *dual*) OVERLAY=deploy/overlays/dual ;;
esac

if ! kind get clusters | grep -qx "$NAME"; then
  kind create cluster --config "$CONFIG" --wait 0s
fi
docker build -f deploy/Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$NAME"
kubectl --context "kind-$NAME" apply -k "$OVERLAY"
kubectl --context "kind-$NAME" -n flatnet-system rollout status ds/flatnet --timeout=300s
kubectl --context "kind-$NAME" wait --for=condition=Ready nodes --all --timeout=300s
kubectl --context "kind-$NAME" -n kube-system rollout status deploy/coredns --timeout=300s
echo "flatnet is running on kind cluster $NAME (kubectl --context kind-$NAME get pods -A)"
