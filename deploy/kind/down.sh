#!/usr/bin/env bash
# npm run kind:down [-- --config FILE | --name NAME] : deletes the kind cluster kind:up made (default: the one named in
# kind-config.yaml). When no kind cluster is left it also undoes what kind:up added to the host: the `kind` Docker
# network, the Docker engine if kind:up started it (and its docker0 bridge, runc wrapper and state), and the kernel
# settings the nodes changed (recorded before the first cluster: see host_record in deploy/kind/lib.sh). Built images
# stay in the engine's storage as the build cache (`docker image prune` or deleting /var/lib/docker removes them).
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
CONFIG=kind-config.yaml NAME=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    *) die "unknown option $1 (npm run kind:down [-- --config FILE | --name NAME])" ;;
  esac
done
[ -n "$NAME" ] || NAME=$(sed -n 's/^name: *//p' "$CONFIG" | head -1)
NAME="${NAME:-kind}"

engine_up() { timeout 10 docker info >/dev/null 2>&1; }
left=""
if engine_up && [ -x "$KIND_BIN" ]; then
  if "$KIND_BIN" get clusters 2>/dev/null | grep -qx "$NAME"; then
    "$KIND_BIN" delete cluster --name "$NAME" >/dev/null 2>&1 || die "kind delete cluster --name $NAME failed"
    klog "deleted kind cluster $NAME"
  else
    klog "no kind cluster $NAME"
  fi
  rm -f "$KIND_STATE/$NAME.yaml" "$KIND_STATE/$NAME-flatnet.yaml" "$KIND_STATE/$NAME-load.log"
  left=$("$KIND_BIN" get clusters 2>/dev/null | tr '\n' ' ')
fi
if [ -n "${left// /}" ]; then
  klog "kind clusters still running: $left; the engine and host settings stay until the last is gone"
  exit 0
fi

if engine_up && docker network inspect kind >/dev/null 2>&1 && [ -z "$(docker network inspect kind -f '{{range .Containers}}x{{end}}')" ]; then
  docker network rm kind >/dev/null && klog "removed the kind Docker network"
fi

# the engine, if kind:up started it
if [ -f "$KIND_STATE/dockerd.started" ]; then
  pid=$(cat "$KIND_STATE/dockerd.started")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; klog "dockerd $pid did not stop; killed"; }
    klog "stopped dockerd ($pid), which kind:up had started"
  fi
  rm -f "$KIND_STATE/dockerd.started" "$KIND_STATE/dockerd.pid" "$KIND_STATE/runc-wrapper"
fi

# links the engine or kind made that were not there before (docker0, the kind network's bridge, leftover veths)
if [ -f "$KIND_STATE/host-before" ] && ! engine_up; then
  for l in $(ls /sys/class/net); do
    grep -qx "link $l" "$KIND_STATE/host-before" && continue
    case "$l" in docker0|br-*|veth*) ip link del "$l" 2>/dev/null && klog "removed link $l" || true ;; esac
  done
fi
host_restore
if [ -d "$KIND_STATE" ] && ! engine_up; then
  # dockerd's exec root keeps bind mounts (netns/default) after it exits
  awk -v d="$KIND_STATE/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
  rm -rf "$KIND_STATE"
fi
klog "kind:down done"
