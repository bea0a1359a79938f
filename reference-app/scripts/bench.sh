#!/usr/bin/env bash
# Loopback load benchmark: builds the release binaries, starts redis-server
# (AOF, fsync every second) and every service on free 127.0.0.1 ports, runs
# the load generator for a bounded time / count, waits (bounded) for every
# accepted request to reach a final state, prints the figures, stops itself.
#
#   scripts/bench.sh                      # 60 s (steady state), 64 connections
#   DURATION=20 CONCURRENCY=128 scripts/bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-60}"
CONCURRENCY="${CONCURRENCY:-64}"
MAX_REQUESTS="${MAX_REQUESTS:-500000}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-180}"
if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server (Debian package)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release --workspace --bins
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
echo "machine: $(nproc) cores, $(uname -srm), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
DRONE_E2E_SKIP_BUILD=1 exec timeout $((${DURATION%.*} + ${DRAIN_TIMEOUT%.*} + 120)) \
  "$TARGET_DIR/release/loadgen" --spawn --duration "$DURATION" --concurrency "$CONCURRENCY" \
  --max-requests "$MAX_REQUESTS" --drain-timeout "$DRAIN_TIMEOUT" "$@"
