#!/usr/bin/env bash
# Compile-and-link time of dronectl's integration-test binaries, as a clean clone's CI pays
# it (the library and dependencies already built; the test crates' incremental caches
# removed, their sources touched). Prints wall and CPU time and the load average.
#
# Usage: scripts/bench-test-build.sh [ROUNDS]   (default 1; interleave with other layouts)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo test -p dronectl --tests --no-run --quiet   # warm everything but the test crates
# cargo's test targets: tests/<name>.rs and tests/<name>/main.rs.
crates=$(for f in tests/*.rs tests/*/main.rs; do [ -f "$f" ] && echo "$f"; done \
  | sed -E 's#^tests/([^/]+)/main\.rs$#\1#; s#^tests/([^/]+)\.rs$#\1#' | sort -u)
echo "test crates: $(echo "$crates" | wc -w)"
for round in $(seq 1 "${1:-1}"); do
  for c in $crates; do rm -rf "$target"/debug/incremental/"$c"-*; done
  find tests -name '*.rs' -not -path 'tests/fixtures/*' -exec touch {} +
  echo "round $round: load before $(cut -d' ' -f1-3 /proc/loadavg)"
  /usr/bin/time -f "round $round: %e s wall, %U s user, %S s sys" \
    cargo test -p dronectl --tests --no-run --quiet
  echo "round $round: load after $(cut -d' ' -f1-3 /proc/loadavg)"
done
