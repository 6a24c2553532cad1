#!/usr/bin/env bash
# npm run kind:conformance [-- options]: upstream e2e.test against a kind cluster made by kind:up.
#   --config FILE       kind config the cluster was made from (its name: field picks the cluster; default kind-config.yaml)
#   --mode iptables|nftables   switch flatnet's proxy mode first (ConfigMap flatnet-system/flatnet-config + DaemonSet
#                       rollout) and wait until every node's daemon reports healthy
#   --set conformance   (default) `\[sig-network\].*\[Conformance\]`, nothing skipped
#   --set wide          `\[sig-network\] (Services|Networking|DNS|HostPort|Conntrack|EndpointSlice|KubeProxy|Proxy)`,
#                       skipping [Serial], [Disruptive], [Flaky], [Feature:...], LoadBalancer and cloud-provider tests
#   --focus RE          a focus of your own (skips only [Disruptive] and [Flaky] unless --skip is given)
#   --skip RE           replaces the set's skip regex
#   --procs N           ginkgo parallel processes (default 4: the specs mostly wait on pods, 2 cores bear 4)
#   --label NAME        names the run (default: the proxy mode; the reference setup passes `reference`)
#   --no-summary        do not write test/bench/results/conformance-<label>[-<set>].md
# Builds and caches e2e.test, ginkgo and the e2e stand-in images ($FLATNET_CACHE/e2e-<k8s version>), loads the images
# into the nodes, runs ginkgo with progress on the terminal, writes JUnit + JSON + the full log to
# test-results/conformance-<label>[-<set>]/ and the summary to test/bench/results/. Exit status: 0 when nothing failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/kind/lib.sh
. deploy/kind/e2e-lib.sh

CONFIG=kind-config.yaml MODE="" SET=conformance FOCUS="" SKIP="" SKIP_SET=0 PROCS="${E2E_PROCS:-4}" LABEL="" SUMMARY=1
while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --set) SET="$2"; shift 2 ;;
    --focus) FOCUS="$2"; SET=custom; shift 2 ;;
    --skip) SKIP="$2"; SKIP_SET=1; shift 2 ;;
    --procs) PROCS="$2"; shift 2 ;;
    --label) LABEL="$2"; shift 2 ;;
    --no-summary) SUMMARY=0; shift ;;
    *) die "unknown option $1 (see the head of deploy/kind/conformance.sh)" ;;
  esac
done
case "$MODE" in ""|iptables|nftables|ipvs) ;; *) die "--mode is iptables, nftables or ipvs" ;; esac
case "$SET" in
  conformance) FOCUS='\[sig-network\].*\[Conformance\]'; [ "$SKIP_SET" = 1 ] || SKIP='' ;;
  wide) FOCUS='\[sig-network\] (Services|Networking|DNS|HostPort|Conntrack|EndpointSlice|KubeProxy|Proxy)'
    [ "$SKIP_SET" = 1 ] || SKIP='\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Feature:|LoadBalancer|[Cc]loud|GCE|AWS' ;;
  custom) [ "$SKIP_SET" = 1 ] || SKIP='\[Disruptive\]|\[Flaky\]' ;;
  *) die "--set is conformance or wide" ;;
esac

# Specs that need SCTP cannot pass on a kernel without it, with any CNI (their servers cannot listen): skip them there.
if ! grep -qw sctp /proc/net/protocols 2>/dev/null && ! modprobe -n sctp 2>/dev/null; then
  SKIP="${SKIP:+$SKIP|}SCTP"
  klog "this kernel has no SCTP: specs naming SCTP are skipped"
fi

NAME=$(sed -n 's/^name: *//p' "$CONFIG" | head -1); NAME="${NAME:-flatnet}"
KIND="${KIND:-$(command -v kind || echo "$KIND_BIN")}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$K8S_BIN/kubectl")}"
NODE="${NODE:-$(command -v node || echo "$(pwd)/node_modules/.bin/node")}"
"$KIND" get clusters 2>/dev/null | grep -qx "$NAME" || die "no kind cluster $NAME (npm run kind:up -- --config $CONFIG)"

T_ALL=$SECONDS
step "e2e.test" e2e_build
step "ginkgo" ginkgo_build
step "e2e images" bash deploy/kind/e2e-images.sh --name "$NAME"

KCFG=$(mktemp); trap 'rm -f "$KCFG"' EXIT
"$KIND" get kubeconfig --name "$NAME" > "$KCFG"
k() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }

current_mode() {
  k -n flatnet-system get configmap flatnet-config -o jsonpath='{.data.config\.yaml}' 2>/dev/null \
    | sed -n 's/^mode: *\([a-z]*\).*/\1/p'
}

# every flatnet pod's node answers 200 on the daemon's healthz (synced rules)
wait_healthy() {
  local ip deadline=$((SECONDS + 300))
  for ip in $(k get nodes -o jsonpath='{range .items[*]}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}'); do
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$ip:10256/healthz")" = 200 ]; do
      [ $SECONDS -lt $deadline ] || die "node $ip: healthz did not turn 200 within 300 s"
      sleep 2
    done
  done
}

switch_mode() {
  local cur
  cur=$(current_mode)
  [ -n "$cur" ] || die "no flatnet-system/flatnet-config ConfigMap in $NAME (is flatnet installed?)"
  if [ "$cur" = "$MODE" ]; then
    klog "flatnet already runs in $MODE mode"
  else
    k -n flatnet-system get configmap flatnet-config -o json \
      | jq --arg m "$MODE" '.data["config.yaml"] |= sub("(?m)^mode: *[a-z]+"; "mode: \($m)")' \
      | k replace -f - >/dev/null
    k -n flatnet-system rollout restart ds/flatnet >/dev/null
    k -n flatnet-system rollout status ds/flatnet --timeout=300s >/dev/null
    [ "$(current_mode)" = "$MODE" ] || die "the ConfigMap still says $(current_mode)"
  fi
  wait_healthy
}
[ -n "$MODE" ] && step "flatnet mode $MODE" switch_mode
[ -n "$LABEL" ] || LABEL="${MODE:-$(current_mode)}"
[ -n "$LABEL" ] || die "cannot tell the proxy mode; pass --label"
RUN="$LABEL"; [ "$SET" = conformance ] || RUN="$LABEL-$SET"
OUT="$(pwd)/test-results/conformance-$RUN"
rm -rf "$OUT"; mkdir -p "$OUT"

WORKERS=$(k get nodes --no-headers -o custom-columns=T:.spec.taints | grep -vc NoSchedule || true)
klog "e2e.test on $NAME ($RUN): focus '$FOCUS', skip '${SKIP:-none}', $PROCS processes; full log $OUT/ginkgo.log"
# Progress: one line per finished spec, from ginkgo's verbose log; the log keeps everything.
progress() {
  # serial runs print the spec name before its result line, parallel ones after it
  awk -v t0="$(date +%s)" '
    /^Will run [0-9]+ of [0-9]+ specs/ { total = $3; print "[e2e] " $0; fflush() }
    /^\[sig-/ { last = $0 }
    /^(•|S \[|P \[)/ { head = $0; name = last; last = ""
      if ((getline nxt) > 0 && nxt ~ /^\[sig-/) name = nxt
      n++
      state = head ~ /FAIL|PANIC|TIMEDOUT|INTERRUPTED/ ? "FAIL" : (head ~ /^S/ ? "skip" : "ok")
      printf "[e2e %d/%s %ds] %-4s %s\n", n, total ? total : "?", systime() - t0, state, name; fflush() }
    /^(Ran [0-9]+ of|FAIL!|SUCCESS!|Test Suite (Passed|Failed))/ { print "[e2e] " $0; fflush() }'
}
T_RUN=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
set +e
KUBERNETES_CONFORMANCE_TEST=y "$GINKGO" run --procs="$PROCS" --timeout=5h --no-color -v \
  --focus="$FOCUS" ${SKIP:+--skip="$SKIP"} \
  --output-dir="$OUT" --json-report=report.json --junit-report=junit.xml \
  "$E2E_TEST" -- \
  --kubeconfig="$KCFG" --provider=skeleton --num-nodes="$WORKERS" --kubectl-path="$KUBECTL" \
  --report-dir="$OUT" --disable-log-dump=true 2>&1 | tee "$OUT/ginkgo.log" | progress
rc=${PIPESTATUS[0]}
set -e
RUN_S=$((SECONDS - T_RUN))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
klog "e2e run: exit $rc in $RUN_S s (with builds and image loading: $((SECONDS - T_ALL)) s)"

if [ "$SUMMARY" = 1 ] && [ -f "$OUT/report.json" ]; then
  title="conformance: $RUN"
  proxy="flatnet, proxy mode $LABEL"
  [ "$LABEL" = reference ] && proxy="reference setup (upstream kube-proxy, reference CNI plugins)"
  "$NODE" deploy/kind/e2e-summary.mjs --report "$OUT/report.json" --out "test/bench/results/conformance-$RUN.md" \
    --explain deploy/kind/e2e-explanations.tsv --title "$title" \
    --meta "cluster: kind $KIND_VERSION, Kubernetes $K8S_VERSION, $(k get nodes --no-headers | wc -l) nodes ($CONFIG); $proxy" \
    --meta "e2e.test $K8S_VERSION built from the k8s.io/kubernetes module; ginkgo $("$GINKGO" version | awk '{print $NF}'), $PROCS processes, on $(nproc) cores" \
    --meta "focus \`$FOCUS\`; skip \`${SKIP:-(none)}\`" \
    --meta "images: agnhost built from source; busybox, nginx, jessie-dnsutils, distroless-iptables are stand-ins built from Debian bookworm packages (deploy/kind/images/e2e-stand-ins), under the upstream names" \
    --meta "wall time of the whole command (builds cached, image loading, run): $((SECONDS - T_ALL)) s" \
    --meta "load average (1, 5, 15 min) at the start of the e2e run: $LOAD_START; at its end: $LOAD_END" || true
fi
exit "$rc"
