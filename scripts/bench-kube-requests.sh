#!/usr/bin/env bash
# API requests per second while a Kubernetes rollout waits in a timed pause, counted by
# kube-fake's request log: a canary of `delivery` (2 replicas) at 50 % pausing, measured
# over BENCH_PAUSE_SECONDS (default 300 = a 5-minute pause) after the pause began.
#
# Usage: scripts/bench-kube-requests.sh [SECONDS]   (prints the count by verb and resource)
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_PAUSE_SECONDS="${1:-${BENCH_PAUSE_SECONDS:-300}}"
cargo test --quiet --test testsuite kube_rollout::bench_requests_per_second_while_paused \
  -- --ignored --nocapture 2>&1 | grep -E '^BENCH|test result'
