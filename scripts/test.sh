#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), then runs every unit,
# property and integration test of the workspace, and compiles the benches.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
./scripts/setup.sh
# shellcheck disable=SC1091
source "${TRAFFIC_CACHE:-$ROOT/.cache}/env.sh"
# The edge node's model-free stages (the pipeline crate) build and test without GStreamer,
# ONNX Runtime or zenoh: fail if it comes to depend on any of them.
if cargo tree --locked -q -p pipeline -e normal,build --prefix none | grep -E '^(gstreamer|glib|ort|zenoh)([- ]|$)'; then
  echo "test: the pipeline crate depends on GStreamer, ONNX Runtime or zenoh (above); keep them in edge-node" >&2
  exit 1
fi
cargo test --workspace --locked --benches --no-run -q
cargo test --workspace --locked "$@"
