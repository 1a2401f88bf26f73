#!/usr/bin/env bash
# Benchmarks on sample video, one command, for anyone measuring this system on their box:
# the end-to-end bench on vtest.avi beside the plain Python peer (same model, same ONNX
# Runtime), the multi-camera bench (1, 2, 4, 8 cameras on one node, shared engine against a
# session per camera) and the real-plate bench (CCPD crops and photos, beside the Python
# plate peer). Writes target/bench-report/README.md with SVG plots and each bench's output.
# Sizes: E2E_FRAMES / E2E_ROUNDS, MC_FRAMES / MC_ROUNDS (see each bench's header). About
# 15 minutes on a 2-core box, release builds included.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
./scripts/setup.sh
# shellcheck disable=SC1091
source "${TRAFFIC_CACHE:-$ROOT/.cache}/env.sh"
OUT=$ROOT/target/bench-report
mkdir -p "$OUT"
run() {
  local name=$1; shift
  echo "bench: $name" >&2
  # The figures go to stdout (kept), progress and logs to stderr (kept apart).
  env "$@" cargo bench --locked -q -p benches --bench "$name" >"$OUT/$name.txt" 2>"$OUT/$name.log" \
    || { echo "bench: $name failed; see $OUT/$name.log" >&2; exit 1; }
  cat "$OUT/$name.txt"
}
run e2e E2E_ROUNDS="${E2E_ROUNDS:-3}"
run multi_camera MC_ROUNDS="${MC_ROUNDS:-1}"
run plates_real RUST_LOG=warn
python3 benches/python/report.py --target "$ROOT/target" --out "$OUT"
echo "bench: report in $OUT/README.md" >&2
