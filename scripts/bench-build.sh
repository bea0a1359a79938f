#!/usr/bin/env bash
# Build benchmark for the whole reference app (reference-app/), printed as a Markdown table
# for docs/build.md:
#   1. clean build: `dronectl build --force` with an empty target dir (every crate compiled)
#   2. no-change rebuild (target < 1 s): hyperfine over `dronectl build`
#   3. one-file-change rebuild: a comment appended to one service's source file
#   4. image sizes (target < 15 MB each)
#   5. the naive way, for comparison: per service, one after another, `cargo build -p <svc>`
#      with its own empty target dir (static, release), then `docker build` of a
#      Dockerfile that COPYs the binary into scratch.
#
# CPU heavy (the clean builds compile the dependency graph from scratch; the naive way does
# it once per service). NAIVE_SERVICES=N measures the naive way on the first N services only
# and extrapolates linearly (reported as such). SKIP_CLEAN=1 skips steps 1 and 5.
# Everything it creates (images, target dirs) is removed at the end.
#
# Usage: [NAIVE_SERVICES=N] [SKIP_CLEAN=1] [APP_DIR=dir] [DRONECTL=bin] scripts/bench-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
app=${APP_DIR:-$root/reference-app}   # APP_DIR: another copy of the app
[ -f "$app/dronectl.yaml" ] || { echo "$app/dronectl.yaml is missing" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
if [ -z "${DRONECTL:-}" ]; then   # DRONECTL: a dronectl binary to use instead
  cargo build -q --release --bin dronectl
  DRONECTL="$CARGO_TARGET_DIR/release/dronectl"
fi
dronectl=$DRONECTL
work=$(mktemp -d)
tag="bench-$$"
cleanup() {
  docker images -q --filter "reference=*/*:$tag" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker images -q --filter "reference=naive-*:$tag" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

services=$(python3 - "$app/dronectl.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = text.split("\nservices:", 1)[1]
names = []
for line in block.splitlines():
    if line and not line.startswith((" ", "#")):
        break
    m = re.match(r"^  ([a-z][a-z0-9-]*):\s*$", line)
    if m:
        names.append(m.group(1))
print(" ".join(names))
PY
)
n_services=$(wc -w <<<"$services")
echo "services ($n_services): $services" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores" >&2

clean=""; naive=""; naive_note=""
if [ "${SKIP_CLEAN:-0}" != 1 ]; then
  echo "== clean build (empty target dir)" >&2
  t0=$(now)
  CARGO_TARGET_DIR="$work/clean-target" "$dronectl" -C "$app" --no-progress build --force --tag "$tag" >&2
  t1=$(now); clean=$(secs "$t0" "$t1")
  rm -rf "$work/clean-target"
fi

echo "== no-change rebuild" >&2
"$dronectl" -C "$app" --no-progress -q build --tag "$tag" >&2   # make sure every image exists
hyperfine --style basic --warmup 1 --runs 10 --export-json "$work/nochange.json" \
  "$dronectl -C $app --no-progress -q build --tag $tag" >&2
nochange=$(python3 -c "import json;r=json.load(open('$work/nochange.json'))['results'][0];print(f\"{r['mean']*1000:.0f} ms ± {r['stddev']*1000:.0f}\")")

echo "== one-file change" >&2
first=${services%% *}
file=$(ls "$app/services/$first/src/"*.rs | head -1)
cp "$file" "$work/orig.rs"
echo "// bench change $$" >>"$file"
t0=$(now)
"$dronectl" -C "$app" --no-progress build --tag "$tag" >&2 || { cp "$work/orig.rs" "$file"; exit 1; }
t1=$(now); onefile=$(secs "$t0" "$t1")
cp "$work/orig.rs" "$file"
"$dronectl" -C "$app" --no-progress -q build --tag "$tag" >&2

sizes=$("$dronectl" -C "$app" -o json build --tag "$tag" | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e.get('event') == 'summary':
        print(', '.join(f\"{i['service']} {i['size']/1e6:.1f} MB\" for i in e['result']['images']))")

if [ "${SKIP_CLEAN:-0}" != 1 ]; then
  count=${NAIVE_SERVICES:-$n_services}
  echo "== naive: per service cargo build (own target dir) + docker build, $count of $n_services" >&2
  t0=$(now); i=0
  for svc in $services; do
    [ "$i" -ge "$count" ] && break; i=$((i + 1))
    (cd "$app" && CARGO_TARGET_DIR="$work/naive-$svc" RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build -q --release --target x86_64-unknown-linux-gnu -p "$svc")
    mkdir -p "$work/ctx-$svc"
    cp "$work/naive-$svc/x86_64-unknown-linux-gnu/release/$svc" "$work/ctx-$svc/"
    printf 'FROM scratch\nCOPY %s /%s\nUSER 65532:65532\nENTRYPOINT ["/%s"]\n' "$svc" "$svc" "$svc" >"$work/ctx-$svc/Dockerfile"
    docker build -q -t "naive-$svc:$tag" "$work/ctx-$svc" >/dev/null
    rm -rf "$work/naive-$svc"
  done
  t1=$(now); naive=$(secs "$t0" "$t1")
  if [ "$count" -lt "$n_services" ]; then
    naive_note=" (measured on $count services, extrapolated ×$n_services/$count)"
    naive=$(python3 -c "print(f'{$naive * $n_services / $count:.1f}')")
  fi
fi

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "| measurement | result |"
echo "|---|---|"
[ -n "$clean" ] && echo "| clean build, all $n_services services (empty target dir) | ${clean} s |"
echo "| no-change rebuild | $nochange |"
echo "| one-file change ($first) | ${onefile} s |"
echo "| image sizes | $sizes |"
if [ -n "$naive" ]; then
  echo "| naive: per-service cargo build + docker build | ${naive} s$naive_note |"
  echo "| naive / dronectl (clean) | $(python3 -c "print(f'{$naive / $clean:.1f}x')") |"
fi
