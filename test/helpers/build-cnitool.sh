#!/usr/bin/env bash
# Builds the real libcni invoker, cnitool, into a versioned cache dir outside the repo (used by the side-by-side suite).
# Prints the binary path. Reuses a finished build.
set -euo pipefail
VER="${CNITOOL_VERSION:-v1.3.0}"
OUT="${FLATNET_CACHE:-/var/cache/flatnet}/cnitool-$VER"
if [ -x "$OUT/cnitool" ] && [ "${1:-}" != "--force" ]; then echo "$OUT/cnitool"; exit 0; fi
mkdir -p "$OUT"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$OUT"
nice -n 10 go install "github.com/containernetworking/cni/cnitool@$VER" >&2
echo "$OUT/cnitool"
