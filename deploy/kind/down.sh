#!/usr/bin/env bash
# npm run kind:down : deletes the kind cluster made by kind:up.
set -euo pipefail
NAME="${KIND_CLUSTER:-flatnet}"
kind delete cluster --name "$NAME"
