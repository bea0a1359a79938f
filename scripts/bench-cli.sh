#!/usr/bin/env bash
# Start-up benchmark: wall time of `dronectl --version` and of
# `dronectl new service --dry-run` (template rendering + manifest parse and edit),
# measured with hyperfine on a release build. Target: under 20 ms each.
#
# Usage: scripts/bench-cli.sh            (writes target/bench/cli.json and .md)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if ! command -v hyperfine >/dev/null; then
  echo "installing hyperfine (Debian package)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null
fi

cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/dronectl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" -q new app bench-app --no-git -C "$work" >/dev/null
app="$work/bench-app"
"$bin" -q -C "$app" new service existing >/dev/null

out="$CARGO_TARGET_DIR/bench"
mkdir -p "$out"
hyperfine --warmup 20 --runs 200 -N \
  --export-json "$out/cli.json" --export-markdown "$out/cli.md" \
  -n "dronectl --version" "$bin --version" \
  -n "dronectl new service --dry-run" "$bin -q -C $app new service ratings --dry-run"

python3 - "$out/cli.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
print()
print("| command | mean | min | max | target |")
print("|---|---|---|---|---|")
ok = True
for r in data["results"]:
    mean = r["mean"] * 1000
    ok &= mean < 20
    print(f"| `{r['command']}` | {mean:.2f} ms | {r['min']*1000:.2f} ms | {r['max']*1000:.2f} ms | < 20 ms {'✓' if mean < 20 else '✗'} |")
sys.exit(0 if ok else 1)
PY
