#!/usr/bin/env bash
# npm run kind:conformance : runs the upstream e2e sig-network conformance tests and the Service tests against the
# kind cluster made by kind:up, and collects the JUnit results in test-results/conformance/.
# Uses hydrophone (go install sigs.k8s.io/hydrophone@latest) when present, else e2e.test + ginkgo from the
# Kubernetes release matching the server version (KUBE_TEST_DIR pointing at an unpacked kubernetes-test tarball).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAME="${KIND_CLUSTER:-flatnet}"
CTX="kind-$NAME"
OUT="$(pwd)/test-results/conformance"
mkdir -p "$OUT"
FOCUS='\[sig-network\].*\[Conformance\]|\[sig-network\] Services '
SKIP='\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Feature:|LoadBalancer|ESIPP|GCE|\[Slow\]'
kubectl --context "$CTX" get nodes >/dev/null

if command -v hydrophone >/dev/null; then
  hydrophone --kubeconfig "${KUBECONFIG:-$HOME/.kube/config}" --focus "$FOCUS" --skip "$SKIP" --output-dir "$OUT"
else
  : "${KUBE_TEST_DIR:?set KUBE_TEST_DIR to a directory holding e2e.test and ginkgo, or install hydrophone}"
  "$KUBE_TEST_DIR/ginkgo" --nodes="${E2E_PARALLEL:-4}" "$KUBE_TEST_DIR/e2e.test" -- \
    --provider=local --kubeconfig="${KUBECONFIG:-$HOME/.kube/config}" --context="$CTX" \
    --ginkgo.focus="$FOCUS" --ginkgo.skip="$SKIP" --report-dir="$OUT" --ginkgo.junit-report="$OUT/junit.xml"
fi
echo "JUnit results in $OUT"
