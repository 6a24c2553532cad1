#!/usr/bin/env bash
# npm run bench:kind [-- --runs N] : how long kind:up takes here. Removes the images kind:up builds (the Go binaries stay
# cached in $FLATNET_CACHE), times the image build from that cold state, then the first kind:up on it, then N more
# kind:up / kind:down cycles with every image cached; records the load average before each and writes
# test/bench/results/kind-up.md. Run it with no other kind cluster: it removes the images those clusters use.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
export PATH="$(pwd)/node_modules/.bin:$PATH"
OUT=test/bench/results/kind-up.md
NAME=fnbench
CFG=$(mktemp --suffix=.yaml)
trap 'rm -f "$CFG"' EXIT
sed "s/^name: .*/name: $NAME/" kind-config.yaml > "$CFG"
load() { cut -d' ' -f1-3 /proc/loadavg; }
rows=()
timed() { # LABEL CMD...: runs CMD, adds a row with its duration and the load average before it
  local label="$1" l t0
  shift
  l=$(load); t0=$(date +%s.%N)
  "$@" > /tmp/fnbench-step.log 2>&1 || { tail -30 /tmp/fnbench-step.log >&2; die "$label failed"; }
  rows+=("| $label | $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') | $l |")
  klog "$label: ${rows[-1]}"
}

"$KIND_BIN" get clusters 2>/dev/null | grep -q . && die "kind clusters are running; bench:kind needs none"
bash deploy/kind/engine.sh >/dev/null
mapfile -t imgs < <(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(flatnet-kind/|flatnet:dev$|registry\.k8s\.io/)' || true)
[ "${#imgs[@]}" = 0 ] || docker rmi -f "${imgs[@]}" >/dev/null
docker image prune -f >/dev/null

timed "images from cold (Debian rootfs, node base, node image, agnhost, flatnet image)" bash deploy/kind/images.sh
timed "images again, all cached" bash deploy/kind/images.sh
timed "kind:up, first cluster on the fresh images" npm run -s kind:up -- --config "$CFG"
timed "kind:down" npm run -s kind:down -- --name "$NAME"
warm=()
for i in $(seq 1 "$RUNS"); do
  timed "kind:up, cached, run $i (engine started by it)" npm run -s kind:up -- --config "$CFG"
  warm+=("$(echo "${rows[-1]}" | awk -F'|' '{print $3}')")
  timed "kind:down, run $i" npm run -s kind:down -- --name "$NAME"
done
sorted=$(printf '%s\n' "${warm[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
{
  echo "# kind:up timings"
  echo
  echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB; docker $(docker info -f '{{.ServerVersion}}, {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}' 2>/dev/null)"
  echo "- kind $KIND_VERSION, Kubernetes $K8S_VERSION, kind-config.yaml (3 nodes); Go binaries already cached in $FLATNET_CACHE"
  echo "- recorded $(date -u +%Y-%m-%dT%H:%MZ) by \`npm run bench:kind -- --runs $RUNS\`"
  echo "- kind:up with every image cached: median $median s over $RUNS runs (min $(echo "$sorted" | head -1 | xargs), max $(echo "$sorted" | tail -1 | xargs))"
  echo
  echo "| step | seconds | load average before (1, 5, 15 min) |"
  echo "|---|---:|---|"
  printf '%s\n' "${rows[@]}"
} > "$OUT"
klog "wrote $OUT"
