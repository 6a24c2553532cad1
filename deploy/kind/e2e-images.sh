#!/usr/bin/env bash
# bash deploy/kind/e2e-images.sh [--name CLUSTER] [--no-load]
# Builds the stand-ins for the e2e-test-images the sig-network tests run, tags them with the names and tags e2e.test
# expects (test/utils/image/manifest.go), and loads them into the kind cluster's nodes. agnhost 2.59 is the one
# deploy/kind/images.sh builds from source (already in the node image); 2.55 (the "previous" agnhost) is the same
# image under the older tag.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
. deploy/kind/e2e-lib.sh
NAME=flatnet LOAD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --no-load) LOAD=0; shift ;;
    *) die "unknown option $1" ;;
  esac
done

E2E_REG=registry.k8s.io/e2e-test-images
DEBIAN_IMAGE="${DEBIAN_IMAGE:-flatnet-kind/debian:bookworm}"
AGNHOST="$E2E_REG/agnhost:2.59"
# target in images/e2e-stand-ins/Dockerfile -> image names e2e.test asks for
declare -A TARGETS=(
  [busybox]="$E2E_REG/busybox:1.37.0-1"
  [nginx]="$E2E_REG/nginx:1.14-4 $E2E_REG/nginx:1.15-4"
  [jessie-dnsutils]="$E2E_REG/jessie-dnsutils:1.7"
  [regression-issue-74839]="$E2E_REG/regression-issue-74839:1.4"
  [distroless-iptables]="registry.k8s.io/build-image/distroless-iptables:v0.8.9"
)

docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1 || die "$DEBIAN_IMAGE is missing (deploy/kind/images.sh builds it)"
docker image inspect "$AGNHOST" >/dev/null 2>&1 || die "$AGNHOST is missing (deploy/kind/images.sh builds it)"

e2e_image_build k8s.io/kubernetes/test/images/regression-issue-74839 regression-issue-74839
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp deploy/kind/images/e2e-stand-ins/Dockerfile "$E2E_DIR/bin/regression-issue-74839" "$ctx/"

images=("$AGNHOST" "$E2E_REG/agnhost:2.55")
docker tag "$AGNHOST" "$E2E_REG/agnhost:2.55"
t0=$SECONDS
for target in "${!TARGETS[@]}"; do
  read -r -a names <<< "${TARGETS[$target]}"
  tags=()
  for n in "${names[@]}"; do tags+=(-t "$n"); images+=("$n"); done
  docker build -q --network host --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" --target "$target" "${tags[@]}" "$ctx" >/dev/null \
    || die "building the $target stand-in failed"
done
klog "e2e stand-in images: built or cached in $((SECONDS - t0)) s"

if [ "$LOAD" = 1 ]; then
  t0=$SECONDS
  # kind skips nodes that already hold an image with the same ID
  "$KIND_BIN" load docker-image --name "$NAME" "${images[@]}" > "$ctx/load.log" 2>&1 \
    || { cat "$ctx/load.log" >&2; die "kind load docker-image failed"; }
  klog "e2e images loaded into $NAME in $((SECONDS - t0)) s"
fi
