#!/usr/bin/env bash
# npm run setup: prepares this machine for the tests and the local cluster (run as root).
#  1. Debian packages: docker.io and mmdebstrap (the kind tier), iproute2, iptables, nftables, conntrack, ipset, ipvsadm, the reference CNI plugins,
#     containerd + runc, iperf3, openssl, socat, jq, ethtool, gcc (for the static pause binary);
#  2. the real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, kube-proxy, crictl),
#     built from the Go module proxy and cached in /var/cache/flatnet keyed by version, and cnitool likewise;
#  3. the CNI plugin binaries (npm run build -> dist/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pkgs="docker.io mmdebstrap iproute2 iptables nftables conntrack ipset ipvsadm containernetworking-plugins containerd runc iperf3 openssl jq socat psmisc util-linux curl iputils-ping ethtool gcc libc6-dev kmod"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  apt-get update -qq
  # no service starts from the packages' scripts: docker.io's would run dockerd with its default netfilter rules
  # (FORWARD policy DROP); the kind scripts start their own engine that leaves the host's netfilter alone
  policy=""
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1; }
  apt-get install -y -qq $missing >/dev/null
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
fi
echo "[setup] control plane"
bash test/cluster/build-control-plane.sh
echo "[setup] cnitool (the libcni invoker the side-by-side suite drives)"
bash test/helpers/build-cnitool.sh >/dev/null
echo "[setup] CNI plugins"
npm run -s build
