#!/usr/bin/env bash
# The main job: build dronectl, bring the whole drone-delivery app up on the local Docker
# engine (infrastructure, nine services with their replicas, and dronectl's router), and
# prove it works by sending the original reference implementation's validation request and
# following the delivery until the drone has delivered it.
#
# Works on a fresh machine with a Docker engine and Rust installed. The first run compiles
# everything (several minutes on 2 cores); later runs rebuild only what changed.
#
# Usage: scripts/demo.sh           (leaves the app running; `dronectl -C reference-app down` stops it)
#        DEMO_DOWN=1 scripts/demo.sh   (tears the app down at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
source scripts/prereqs.sh

step() { printf '\n==> %s\n' "$*"; }

step "Building dronectl"
cargo build --quiet --bin dronectl
dronectl="$CARGO_TARGET_DIR/debug/dronectl"
"$dronectl" --version

step "Infrastructure images (redis:7 packed from Debian's redis-server)"
DRONECTL="$dronectl" scripts/infra-images.sh

step "dronectl validate && dronectl build (static binaries, scratch images)"
"$dronectl" -C reference-app validate
"$dronectl" -C reference-app --no-progress build

step "dronectl up"
"$dronectl" -C reference-app --no-progress up --timeout 5m
entry=$("$dronectl" -C reference-app -o json ps | tail -n 1 | jq -r '.result.entry_url')
"$dronectl" -C reference-app ps

step "Scheduling a delivery through $entry (the original's validation request)"
body='{"confirmationRequired":"None","deadline":"","dropOffLocation":"drop off","expedited":true,"ownerId":"myowner","packageInfo":{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10},"pickupLocation":"my pickup","pickupTime":"2019-05-08T20:00:00.000Z"}'
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
status=$(curl -s -o /dev/null -D "$headers" -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" "$entry/api/deliveryrequests")
location=$(grep -i '^location:' "$headers" | tr -d '\r' | awk '{print $2}' || true)
echo "POST /api/deliveryrequests -> $status, Location: $location"
[ "$status" = 202 ] && [ -n "$location" ] || { echo "expected 202 with a Location" >&2; exit 1; }
id=${location##*/}

step "Following delivery $id"
last=""
for _ in $(seq 1 180); do
  public=$(curl -s "$entry/api/deliveries/public/$id" || true)
  stage=$(echo "$public" | jq -r '.stage // .status // empty' 2>/dev/null || true)
  if [ -n "$stage" ] && [ "$stage" != "$last" ]; then
    echo "  $(date +%T) $stage $(echo "$public" | jq -c '{lastKnownLocation, eta} | with_entries(select(.value != null))' 2>/dev/null || true)"
    last=$stage
  fi
  [ "$stage" = Completed ] && break
  sleep 0.5
done
[ "$last" = Completed ] || { echo "the delivery did not complete: $public" >&2; "$dronectl" -C reference-app logs workflow --tail 20 >&2 || true; exit 1; }
echo "Delivery $id completed: $public"

if [ "${DEMO_DOWN:-0}" = 1 ]; then
  step "dronectl down"
  "$dronectl" -C reference-app down --volumes
else
  printf '\nThe app is running at %s — stop it with: %s -C reference-app down\n' "$entry" "$dronectl"
fi
