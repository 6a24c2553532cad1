#!/usr/bin/env bash
# Builds the upstream reference plugins (containernetworking/plugins) from the Go module proxy into a versioned cache
# dir outside the repo, for the side-by-side tests of features Debian's packaged 1.1.1 (/usr/lib/cni) predates:
# the nftables backends of bridge's ipMasq and portmap (v1.5+), nftables-syntax conditionsV4/V6, and the backend
# picked when iptables is missing. Prints the directory. Reuses a finished build.
set -euo pipefail
VER="${CNI_PLUGINS_VERSION:-v1.9.1}"
OUT="${FLATNET_CACHE:-/var/cache/flatnet}/cni-plugins-$VER"
PLUGINS=(main/bridge ipam/host-local meta/portmap main/loopback)
done_marker="$OUT/.complete"
if [ -f "$done_marker" ] && [ "${1:-}" != "--force" ]; then echo "$OUT"; exit 0; fi
mkdir -p "$OUT"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$OUT" GOFLAGS=-mod=mod
for p in "${PLUGINS[@]}"; do
  nice -n 10 go install "github.com/containernetworking/plugins/plugins/$p@$VER" >&2
done
touch "$done_marker"
echo "$OUT"
