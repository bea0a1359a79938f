#!/usr/bin/env bash
# Run the whole drone-delivery app locally without containers: a private
# redis-server and every service as a process, each on a free 127.0.0.1 port,
# with the X_URL variables wired. Ctrl-C (or SIGTERM) stops everything.
#
#   scripts/run-local.sh            # debug build
#   PROFILE=release scripts/run-local.sh
#   SKIP_BUILD=1 scripts/run-local.sh
# Extra environment (e.g. DRONE_SPEED_MPS, FLEET_SIZE, LOG_LEVEL) is passed on.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROFILE="${PROFILE:-debug}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/$PROFILE"
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}"
SERVICES=(account thirdparty package dronescheduler delivery deliveryhistory supervisor workflow ingestion)

if [ ! -x "$REDIS_SERVER" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "redis-server not found; installing it (apt-get install -y redis-server)" >&2
    apt-get install -y redis-server >/dev/null || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
    REDIS_SERVER="$(command -v redis-server)"
  else
    echo "redis-server not found; install it with: apt-get install -y redis-server" >&2
    exit 1
  fi
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  flag=""; [ "$PROFILE" = release ] && flag="--release"
  (cd "$ROOT" && cargo build $flag --bins)
fi

free_port() {
  local p
  while :; do
    p=$(( RANDOM % 22000 + 10000 ))   # below the ephemeral range (32768+)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

WORK="$(mktemp -d -t drone-local.XXXXXX)"
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs were in $WORK"
}
trap cleanup EXIT INT TERM

REDIS_PORT=$(free_port)
# The memory bound and eviction policy of dronectl.yaml (--maxmemory N --maxmemory-policy noeviction).
read -r -a REDIS_MEMORY_ARGS <<<"$(grep -o '"--maxmemory", "[^"]*", "--maxmemory-policy", "[^"]*"' "$ROOT/dronectl.yaml" | tr -d '",')"
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --save "" \
  "${REDIS_MEMORY_ARGS[@]}" --logfile "$WORK/redis.log" &
PIDS+=($!)
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

declare -A PORT
for s in "${SERVICES[@]}"; do PORT[$s]=$(free_port); done
for s in "${SERVICES[@]}"; do
  up=$(echo "$s" | tr 'a-z-' 'A-Z_')
  export "${up}_URL=http://127.0.0.1:${PORT[$s]}"
done
export DRONE_SPEED_MPS="${DRONE_SPEED_MPS:-2000}"
for s in "${SERVICES[@]}"; do
  PORT="${PORT[$s]}" BIND_ADDR=127.0.0.1 CONSUMER_NAME="$s-local" "$BIN/$s" >"$WORK/$s.log" 2>&1 &
  PIDS+=($!)
done

for s in "${SERVICES[@]}"; do
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null && \
       (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}"; printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3; head -1 <&3) 2>/dev/null | grep -q ' 200 '; then
      break
    fi
    sleep 0.1
  done
done

echo "redis:           $REDIS_URL"
for s in "${SERVICES[@]}"; do printf '%-16s http://127.0.0.1:%s\n' "$s:" "${PORT[$s]}"; done
echo "logs:            $WORK"
echo
echo "try:"
echo "  curl -si -XPOST http://127.0.0.1:${PORT[ingestion]}/api/deliveryrequests -H 'content-type: application/json' \\"
echo "    -d '{\"confirmationRequired\":\"None\",\"deadline\":\"\",\"dropOffLocation\":\"drop off\",\"expedited\":true,\"ownerId\":\"myowner\",\"packageInfo\":{\"packageId\":\"mypackage\",\"size\":\"Small\",\"tag\":\"mytag\",\"weight\":10},\"pickupLocation\":\"my pickup\",\"pickupTime\":\"2019-05-08T20:00:00.000Z\"}'"
echo "  curl -s http://127.0.0.1:${PORT[delivery]}/api/deliveries/public/<deliveryId>"
if [ -n "${RUN_LOCAL_ENV_FILE:-}" ]; then
  { echo "REDIS_URL=$REDIS_URL"; for s in "${SERVICES[@]}"; do up=$(echo "$s" | tr 'a-z-' 'A-Z_'); echo "${up}_URL=http://127.0.0.1:${PORT[$s]}"; done; echo "LOGS=$WORK"; } > "$RUN_LOCAL_ENV_FILE"
fi
echo "Ctrl-C to stop."
wait
