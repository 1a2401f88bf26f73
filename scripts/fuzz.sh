#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for a bounded time: FUZZ_SECONDS each
# (default 60), or the targets named as arguments. Installs cargo-fuzz if missing. The
# project's one toolchain is stable: RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags
# cargo-fuzz passes. Seeds are in fuzz/corpus/<target>; what a run finds is added to a copy
# under .cache/fuzz (ignored), and a crash is written to fuzz/artifacts/<target>/ and fails
# the script. The edge node's config target starts from the configs in configs/ and
# edge-node/tests/data.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$ROOT/.cache/env.sh" ] && source "$ROOT/.cache/env.sh"
SECONDS_EACH=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$ROOT/target/fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for t in "${targets[@]}"; do
  work="$ROOT/.cache/fuzz/$t"
  mkdir -p "$work"
  cp -n corpus/"$t"/* "$work"/ 2>/dev/null || true
  # The node's configs seed its config target: the shipped ones and the tests' own.
  [ "$t" != edge_config ] || cp -n "$ROOT"/configs/edge-*.toml "$ROOT"/edge-node/tests/data/*.toml "$work"/
  echo "fuzz: $t for ${SECONDS_EACH}s" >&2
  cargo fuzz run -O "$t" "$work" -- -max_total_time="$SECONDS_EACH" -max_len=4096 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==|SUMMARY|thread '|panicked|artifact_prefix|Test unit)" || true
  # cargo fuzz exits non-zero on a crash; the pipe above hides it, so look for artifacts.
  if compgen -G "artifacts/$t/crash-*" >/dev/null; then
    echo "fuzz: $t crashed; inputs in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${SECONDS_EACH}s without a crash" >&2
