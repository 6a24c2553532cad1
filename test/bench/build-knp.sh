#!/usr/bin/env bash
# Builds kube-network-policies (kubernetes-sigs, the NetworkPolicy agent kindnet embeds) from the Go module proxy into
# a versioned cache dir outside the repo, for `bench:netpol -- --sections knp`. Prints the binary's path. Reuses a
# finished build.
set -euo pipefail
VER="${KNP_VERSION:-v0.8.0}"
OUT="${FLATNET_CACHE:-/var/cache/flatnet}/knp-$VER"
BIN="$OUT/kube-network-policies"
if [ -x "$BIN" ] && [ "${1:-}" != "--force" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$OUT" GOFLAGS=-mod=mod
# the module's only command is its root cmd/ package (installed as "cmd")
nice -n 10 go install "sigs.k8s.io/kube-network-policies/cmd@$VER" >&2
mv "$OUT/cmd" "$BIN"
echo "$BIN"
