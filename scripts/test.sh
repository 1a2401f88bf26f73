#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), then runs every unit,
# property and integration test of the workspace, and compiles the benches.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
./scripts/setup.sh
# shellcheck disable=SC1091
source "${TRAFFIC_CACHE:-$ROOT/.cache}/env.sh"
cargo test --workspace --locked --benches --no-run -q
cargo test --workspace --locked "$@"
