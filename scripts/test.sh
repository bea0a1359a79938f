#!/usr/bin/env bash
# The full test suite of dronectl and of the bundled reference app.
#
# Works on a fresh machine with a Docker engine and Rust installed: it installs what is
# missing (Debian packages), starts the Docker daemon if it is not running, and shares one
# cargo target directory between dronectl, the apps it generates in tests, and reference-app.
#
# Usage: scripts/test.sh            Gates (fmt, clippy) and every test.
#        scripts/test.sh --quick    dronectl's own tests only (no generated-service builds).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
quick=false
[ "${1:-}" = "--quick" ] && quick=true

step() { printf '\n==> %s\n' "$*"; }

# --- Prerequisites --------------------------------------------------------------------
need_pkgs=()
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v git >/dev/null || need_pkgs+=(git)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "Installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if command -v docker >/dev/null && ! docker info >/dev/null 2>&1; then
  step "Starting the Docker daemon"
  (service docker start || (nohup dockerd >/tmp/dockerd.log 2>&1 &)) >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

rm -f "$CARGO_TARGET_DIR"/test-*.log
mkdir -p "$CARGO_TARGET_DIR"
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

# --- Gates ----------------------------------------------------------------------------
step "cargo fmt --check (dronectl)"
cargo fmt --all -- --check
step "cargo clippy -D warnings (dronectl)"
cargo clippy --all-targets --quiet -- -D warnings

# --- dronectl ---------------------------------------------------------------------------
if $quick; then
  step "cargo test (dronectl, quick: skipping the generated-service build)"
  run_tests dronectl cargo test --no-fail-fast -- --skip generated --skip http_service --skip worker_service
else
  step "cargo test (dronectl: unit, CLI, snapshots, generated services)"
  run_tests dronectl cargo test --no-fail-fast
fi

# --- reference app ----------------------------------------------------------------------
if [ -f reference-app/Cargo.toml ] && ! $quick; then
  step "cargo fmt --check and clippy -D warnings (reference-app)"
  (cd reference-app && cargo fmt --all -- --check && cargo clippy --workspace --all-targets --quiet -- -D warnings)
  step "cargo test (reference-app)"
  run_tests reference-app bash -c 'cd reference-app && cargo test --workspace --no-fail-fast'
fi

step "Summary"
total_passed=0; total_failed=0
for log in "$CARGO_TARGET_DIR"/test-*.log; do
  read -r p f < <(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6} END {print p+0, f+0}')
  echo "  $(basename "$log" .log | sed 's/^test-//'): $p passed, $f failed"
  total_passed=$((total_passed + p)); total_failed=$((total_failed + f))
done
echo "${total_passed} passed, ${total_failed} failed"
if [ "$failures" -ne 0 ] || [ "$total_failed" -ne 0 ]; then
  echo "FAILED: $failures suite(s) exited non-zero" >&2
  exit 1
fi
