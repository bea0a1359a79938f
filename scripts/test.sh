#!/usr/bin/env bash
# The full test suite: dronectl (unit, CLI, snapshots, generated services, Docker builds,
# the local target and its rollouts, CI pipelines, the Kubernetes back end against the
# in-process API server), the router, kube-fake, and the bundled reference app.
#
# Works on a fresh machine with a Docker engine and Rust installed: it installs what is
# missing, starts the Docker daemon if it is not running, packs the infrastructure images
# (nothing can be pulled), and shares one cargo target directory between dronectl, the apps
# its tests generate, and reference-app, so nothing is compiled twice.
#
# Usage: scripts/test.sh            Gates (fmt, clippy) and every test.
#        scripts/test.sh --quick    dronectl's own fast tests only (no Docker, no builds of services).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
quick=false
[ "${1:-}" = "--quick" ] && quick=true
started=$(date +%s)

# Each step's wall time, for the summary (where the time goes).
step_names=(); step_starts=()
step() {
  local now; now=$(date +%s)
  step_names+=("$*"); step_starts+=("$now")
  printf '\n==> %s   [%ss]\n' "$*" "$(( now - started ))"
}

step "Prerequisites"
source scripts/prereqs.sh
mkdir -p "$CARGO_TARGET_DIR"
rm -f "$CARGO_TARGET_DIR"/test-*.log
# Tests that cannot run here record themselves (tests/common::skip) in this directory.
skipped_dir="$CARGO_TARGET_DIR/tmp/skipped"
rm -rf "$skipped_dir"

failures=0
# Runs a test command with its output kept in a log; a failure is counted, not fatal, so
# every suite runs and the summary shows them all.
run_tests() {
  local name=$1; shift
  local log="$CARGO_TARGET_DIR/test-$name.log"
  set +e
  "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "!! $name: exit status $status" >&2
    failures=$((failures + 1))
  fi
}

step "Gates: cargo fmt --check, cargo clippy -D warnings (dronectl workspace)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

if $quick; then
  step "cargo test (dronectl: unit, CLI and snapshot tests)"
  run_tests dronectl cargo test --no-fail-fast --lib --test testsuite -- new:: validate:: help:: ci:: --skip pipeline_steps
else
  step "Infrastructure images (scripts/infra-images.sh)"
  cargo build --quiet --bin dronectl
  DRONECTL="$CARGO_TARGET_DIR/debug/dronectl" scripts/infra-images.sh

  # Compiling and linking the test binaries is its own step so the summary shows build
  # time apart from run time.
  step "cargo test --workspace --no-run (compile and link the test binaries)"
  cargo test --workspace --no-run --quiet

  step "cargo test --workspace (dronectl, router, kube-fake)"
  run_tests dronectl cargo test --workspace --no-fail-fast

  step "reference-app: fmt, clippy, tests"
  (cd reference-app && cargo fmt --all -- --check && cargo clippy --workspace --all-targets --quiet -- -D warnings)
  run_tests reference-app bash -c 'cd reference-app && cargo test --workspace --no-fail-fast'
fi

step "Summary"
summary_at=$(date +%s)
echo "  wall time of each step:"
for i in "${!step_names[@]}"; do
  end=${step_starts[$((i + 1))]:-$summary_at}
  printf '    %6ss  %s\n' "$((end - step_starts[i]))" "${step_names[$i]}"
done
# Per test binary: cargo prints `Running <source> (<binary>)` before each and libtest ends
# each with `test result: … finished in <s>s`; tests running for over 60 s are named by
# libtest as they go.
per_binary() {
  awk '
    /^ *Running / { bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
                    src = ($2 == "unittests") ? $3 : $2; name = bin ": " src }
    /^ *Doc-tests / { name = $2 ": doc-tests" }
    /^test result:/ { t = $NF; sub(/s$/, "", t)
                      printf "%9.1fs  %s (%d passed, %d failed, %d ignored)\n", t, name, $4, $6, $8 }
  ' "$1" | sort -rn
}
total_passed=0; total_failed=0; total_ignored=0
for log in "$CARGO_TARGET_DIR"/test-*.log; do
  [ -f "$log" ] || continue
  read -r p f i < <(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6; i+=$8} END {print p+0, f+0, i+0}')
  echo "  $(basename "$log" .log | sed 's/^test-//'): $p passed, $f failed, $i ignored; run time of each test binary, slowest first:"
  per_binary "$log" | sed 's/^/  /'
  grep -E '^test .* has been running for over 60 seconds$' "$log" | sed 's/^test /      over 60 s: /; s/ has been running.*//' || true
  grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^/    /' || true
  total_passed=$((total_passed + p)); total_failed=$((total_failed + f)); total_ignored=$((total_ignored + i))
done
# A test that cannot run here (tests/common::skip) passes in libtest's count; it is
# counted as skipped, not passed. #[ignore]d tests are skipped too.
total_skipped=0
if [ -d "$skipped_dir" ] && [ -n "$(ls -A "$skipped_dir")" ]; then
  echo "  skipped at run time (could not run here; libtest counted them as passed):"
  for f in "$skipped_dir"/*; do sed 's/^/    /' "$f"; total_skipped=$((total_skipped + 1)); done
fi
echo "Tests that ran are listed above in each suite's output; logs are in $CARGO_TARGET_DIR/test-*.log"
passed=$((total_passed - total_skipped))
echo "$((passed + total_failed)) ran: ${passed} passed, ${total_failed} failed; $((total_skipped + total_ignored)) skipped (${total_ignored} ignored, ${total_skipped} could not run here); $(( $(date +%s) - started ))s in all"
if [ "$failures" -ne 0 ] || [ "$total_failed" -ne 0 ]; then
  echo "FAILED: $failures suite(s) exited non-zero" >&2
  exit 1
fi
