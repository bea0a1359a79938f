#!/usr/bin/env bash
# Loopback benchmark of dronectl-router (bounded, ~17 s after the build).
# Needs Debian's `wrk` (apt-get install -y wrk). Prints wrk's report straight at a tiny
# in-process upstream and then through the router, plus the router's own per-version stats.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p dronectl-router --example bench
exec timeout 60 "$CARGO_TARGET_DIR/release/examples/bench"
