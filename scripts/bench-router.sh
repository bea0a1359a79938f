#!/usr/bin/env bash
# Router throughput against its peers, on loopback, in one run (issue 18, "Performance").
#
# One static upstream (Debian's nginx, one worker, `return 200` with a fixed body) and three
# reverse proxies in front of it, all on 127.0.0.1:
#   nginx    Debian's nginx, 2 workers, upstream keep-alive (HTTP/1.1, `keepalive 64`)
#   haproxy  Debian's HAProxy, 2 threads, `http-reuse always`
#   router   dronectl-router (release build), one service routed by path with a 90/10 split
#            of two versions (both on the upstream), at its default log level (info)
# `wrk -t1 -cC --latency` runs against each proxy for every C in BENCH_CONNS, interleaved
# (proxy after proxy, round after round, each round starting with the next proxy) so that a
# noisy neighbour hits all of them alike.
# Prints every run, then the median req/s and p99 per proxy and connection count, the
# ratios router/nginx and router/haproxy of those medians, and the same ratios (of req/s,
# p99 and CPU per request) taken round by round: their median, quartiles, and the number
# of rounds in which the router was ahead. Also the proxy's own CPU time per request (user +
# system, its processes and threads, from /proc): on a machine shared with other work the
# req/s of each run depend on what else runs, the CPU cost per request much less.
# Everything it starts is stopped on exit.
#
# Usage: scripts/bench-router.sh   (scripts/bench-router-pool.py pools the raw rows of several runs)
# Env:   BENCH_SECS (per run, default 10), BENCH_ROUNDS (default 3, at least 3),
#        BENCH_CONNS (default "8 64"), BENCH_PORT_BASE (default 18480: upstream, +1 nginx,
#        +2 haproxy, +3 router data, +4 router admin), ROUTER_BIN (skip the build, use it),
#        BENCH_OUT (file for the raw rows, default target/bench/router.tsv),
#        ROUTER_BEFORE_BIN (another router binary, e.g. an older build: run as "before" on
#        +5/+6 in the same rounds, for before/after figures),
#        BENCH_CALLGRIND=1 (afterwards, run the router (and "before") under valgrind's
#        callgrind on +7/+8 for a fixed 5 s wrk run per connection count and print the
#        user-space instructions per request: a count that does not depend on the load
#        of the machine, unlike req/s and CPU time; installs valgrind when missing)
# Needs: apt-get (installs nginx, haproxy and wrk when missing), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

secs=${BENCH_SECS:-10}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNS:-8 64}
base=${BENCH_PORT_BASE:-18480}
if [ "$rounds" -lt 3 ]; then
  echo "BENCH_ROUNDS must be at least 3" >&2
  exit 2
fi

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
if [ "${BENCH_CALLGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null || missing+=(valgrind)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [ -z "${ROUTER_BIN:-}" ]; then
  cargo build --release --quiet -p dronectl-router --bin dronectl-router
  ROUTER_BIN="$CARGO_TARGET_DIR/release/dronectl-router"
fi

up=$base nginx_port=$((base + 1)) haproxy_port=$((base + 2))
router_port=$((base + 3)) admin_port=$((base + 4))
before_port=$((base + 5)) before_admin=$((base + 6))
proxies="nginx haproxy router"
[ -n "${ROUTER_BEFORE_BIN:-}" ] && proxies="$proxies before"
cg_port=$((base + 7)) cg_admin=$((base + 8))
for p in $up $nginx_port $haproxy_port $router_port $admin_port $before_port $before_admin $cg_port $cg_admin; do
  if ss -Hltn "sport = :$p" | grep -q .; then
    echo "port $p is in use (set BENCH_PORT_BASE)" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/bench-router.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the upstream and the nginx proxy (one prefix each: pid, logs and temp files inside) ---
nginx_conf() { # dir workers server-block
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<EOF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 60s;
  $3
}
EOF
}
nginx_conf "$work/upstream" 1 "server { listen 127.0.0.1:$up; location / { default_type text/plain; return 200 'hello from the upstream\n'; } }"
nginx_conf "$work/nginx" 2 "upstream u { server 127.0.0.1:$up; keepalive 64; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$nginx_port; location / {
    proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -p "$work/upstream" -c "$work/upstream/nginx.conf" -g 'daemon off;' &
pids+=($!)
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
nginx_pid=$!

# --- HAProxy ---
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$haproxy_port
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$up
EOF
haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
haproxy_pid=$!

# --- the router ---
cat >"$work/router.json" <<EOF
{"services": {"bench": {"routes": ["/"], "versions": {
  "stable": {"weight": 90, "endpoints": ["127.0.0.1:$up"]},
  "canary": {"weight": 10, "endpoints": ["127.0.0.1:$up"]}}}}}
EOF
# An admin token, so that each router run can read how its connections were placed on the
# workers (router_worker_connections, halfway through the run). The token stays in files
# (curl reads its header from one), out of every process's arguments.
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077 && printf '%s' "$admin_token" >"$work/admin-token" &&
  printf 'authorization: Bearer %s\n' "$admin_token" >"$work/admin-header")
"$ROUTER_BIN" --listen "127.0.0.1:$router_port" --admin-listen "127.0.0.1:$admin_port" \
  --admin-token-file "$work/admin-token" \
  --config "$work/router.json" 2>"$work/router.log" &
pids+=($!)
router_pid=$!
ports="$up $nginx_port $haproxy_port $router_port"
if [ -n "${ROUTER_BEFORE_BIN:-}" ]; then
  "$ROUTER_BEFORE_BIN" --listen "127.0.0.1:$before_port" --admin-listen "127.0.0.1:$before_admin" \
    --admin-token-file "$work/admin-token" \
    --config "$work/router.json" 2>"$work/before.log" &
  pids+=($!)
  before_pid=$!
  ports="$ports $before_port"
fi

for p in $ports; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$p/" || { echo "port $p does not answer" >&2; exit 1; }
done

# --- the runs ---
out=${BENCH_OUT:-$CARGO_TARGET_DIR/bench/router.tsv}
mkdir -p "$(dirname "$out")"
printf 'round\tproxy\tconns\treq_s\tp99_ms\tcpu_us_per_req\terrors\tworkers\n' >"$out"
cpu_ticks() { # utime + stime of a process (all its threads) and its children (nginx workers)
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
to_ms() { # wrk's "1.23ms" / "456.00us" / "1.01s" -> milliseconds
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}
# Warm-up: every proxy opens its upstream connections once.
for p in ${ports#"$up "}; do
  timeout 10 wrk -t1 -c64 -d2s "http://127.0.0.1:$p/" >/dev/null
done
half=$(awk -v s="$secs" 'BEGIN { print s / 2 }')
echo "round proxy   conns     req/s   p99 ms  cpu µs/req workers  errors"
read -r -a order <<<"$proxies"
for r in $(seq "$rounds"); do
  # Each round starts with the next proxy (nginx first in round 1, HAProxy in round 2, ...),
  # so that no proxy always runs right after the same one.
  k=$(((r - 1) % ${#order[@]}))
  rotated="${order[*]:k} ${order[*]:0:k}"
  for c in $conns; do
    for proxy in $rotated; do
      case $proxy in
        nginx) port=$nginx_port pid=$nginx_pid ;;
        haproxy) port=$haproxy_port pid=$haproxy_pid ;;
        router) port=$router_port pid=$router_pid admin=$admin_port ;;
        before) port=$before_port pid=$before_pid admin=$before_admin ;;
      esac
      # The routers' connections per worker, read halfway through the run ("8/0": all
      # eight on worker 0).
      rm -f "$work/split"
      scrape=
      case $proxy in router | before)
        (sleep "$half"
          curl -fsS -H @"$work/admin-header" \
            "http://127.0.0.1:$admin/metrics" 2>/dev/null |
            awk '/^router_worker_connections/ { v = v sep $2; sep = "/" } END { print v }' \
              >"$work/split") &
        scrape=$!
        ;;
      esac
      t0=$(cpu_ticks "$pid")
      res=$(timeout $((secs + 20)) wrk -t1 -c"$c" -d"${secs}s" --latency "http://127.0.0.1:$port/")
      t1=$(cpu_ticks "$pid")
      # A placement that could not be read leaves the column empty; it stops nothing.
      [ -z "$scrape" ] || wait "$scrape" || true
      split=$(cat "$work/split" 2>/dev/null || true)
      total=$(awk '/requests in/ {print $1}' <<<"$res")
      cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$total" 'BEGIN { printf "%.1f", (n > 0 ? t / hz * 1e6 / n : 0) }')
      rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$res")
      p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$res")")
      errs=$(awk '/Non-2xx|Socket errors/ {n++} END {print n + 0}' <<<"$res")
      if [ "$errs" != 0 ]; then
        errs=$(grep -E 'Non-2xx|Socket errors' <<<"$res" | tr -s ' ' | paste -sd';')
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$proxy" "$c" "$rps" "$p99" "$cpu" "$errs" "$split" >>"$out"
      printf '%5s %-8s %5s %9.0f %8.3f %11s %7s  %s\n' "$r" "$proxy" "$c" "$rps" "$p99" "$cpu" "${split:--}" "$errs"
    done
  done
done

# --- medians and ratios ---
echo
awk -F'\t' -v conns="$conns" '
  NR > 1 {
    key = $2 " " $3; n[key]++; rps[key, n[key]] = $4; p99[key, n[key]] = $5; cpu[key, n[key]] = $6
    round_val[$1, $2, $3, 4] = $4; round_val[$1, $2, $3, 5] = $5; round_val[$1, $2, $3, 6] = $6
    rounds[$1] = 1
  }
  # The ratios a/b of column col (4 req/s, 5 p99, 6 CPU per request) taken round by
  # round, sorted into v; returns how many there are.
  function paired(a, b, c, col, v,   r, m, i, j, t) {
    m = 0
    for (r in rounds) if (round_val[r, b, c, col] > 0 && round_val[r, a, c, col] != "")
      v[++m] = round_val[r, a, c, col] / round_val[r, b, c, col]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return m
  }
  function quantile(v, m, q,   pos, lo) { # of sorted v[1..m], linear between ranks
    pos = 1 + (m - 1) * q; lo = int(pos)
    return lo >= m ? v[m] : v[lo] + (pos - lo) * (v[lo + 1] - v[lo])
  }
  # "median [lower quartile, upper quartile]" of the per-round ratios, and in how many
  # rounds a is ahead (better: more req/s, or no higher p99 or CPU per request).
  function spread(a, b, c, col,   v, m, i, ahead) {
    m = paired(a, b, c, col, v)
    if (m == 0) return "–"
    ahead = 0
    for (i = 1; i <= m; i++) ahead += col == 4 ? v[i] >= 1 : v[i] <= 1
    return sprintf("%.2f× [%.2f, %.2f], %d/%d", quantile(v, m, 0.5), quantile(v, m, 0.25), quantile(v, m, 0.75), ahead, m)
  }
  function median(arr, key, cnt,   i, j, t, v) {
    for (i = 1; i <= cnt; i++) v[i] = arr[key, i]
    for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2
  }
  END {
    split(conns, cs, " ")
    before = ("before " cs[1]) in n
    printf "| connections | nginx req/s (p99) | HAProxy req/s (p99) | router req/s (p99) | router/nginx | router/HAProxy |%s\n", before ? " before req/s (p99) | before/nginx | before/HAProxy |" : ""
    printf "|---|---|---|---|---|---|%s\n", before ? "---|---|---|" : ""
    for (k = 1; k in cs; k++) {
      c = cs[k]
      for (p = 1; p <= 4; p++) {
        name = p == 1 ? "nginx" : p == 2 ? "haproxy" : p == 3 ? "router" : "before"
        key = name " " c
        if (key in n) { R[name] = median(rps, key, n[key]); P[name] = median(p99, key, n[key]); C[name] = median(cpu, key, n[key]) }
      }
      printf "| %s | %.0f (%.2f ms) | %.0f (%.2f ms) | %.0f (%.2f ms) | %.2f× | %.2f× |", c,
        R["nginx"], P["nginx"], R["haproxy"], P["haproxy"], R["router"], P["router"],
        R["router"] / R["nginx"], R["router"] / R["haproxy"]
      if (before) printf " %.0f (%.2f ms) | %.2f× | %.2f× |", R["before"], P["before"], R["before"] / R["nginx"], R["before"] / R["haproxy"]
      printf "\n"
      line[c] = sprintf("| %s | %.1f | %.1f | %.1f |%s", c, C["nginx"], C["haproxy"], C["router"], before ? sprintf(" %.1f |", C["before"]) : "")
    }
    printf "\nCPU time of the proxy per request, µs (median):\n\n"
    printf "| connections | nginx | HAProxy | router |%s\n|---|---|---|---|%s\n", before ? " before |" : "", before ? "---|" : ""
    for (k = 1; k in cs; k++) print line[cs[k]]
    # The same ratios taken round by round (each proxy against the others of its own
    # round): a machine whose speed drifts between rounds moves both sides of each ratio
    # alike. Their median, quartiles, and the rounds in which the first is ahead.
    printf "\nRound by round: ratio of the same round, median [quartiles], rounds ahead (more req/s; p99 and CPU no higher):\n\n"
    printf "| connections | pair | req/s | p99 | CPU per request |\n|---|---|---|---|---|\n"
    np = split("router nginx router haproxy" (before ? " before nginx before haproxy router before" : ""), pr, " ")
    for (k = 1; k in cs; k++) {
      c = cs[k]
      for (i = 1; i < np; i += 2)
        printf "| %s | %s/%s | %s | %s | %s |\n", c, pr[i], pr[i + 1],
          spread(pr[i], pr[i + 1], c, 4), spread(pr[i], pr[i + 1], c, 5), spread(pr[i], pr[i + 1], c, 6)
    }
    printf "\nmedians of %d rounds; raw rows in '"$out"'\n", n["router " cs[1]]
  }' "$out"


# --- optional: instructions per request under callgrind (load-independent) ---
if [ "${BENCH_CALLGRIND:-0}" = 1 ]; then
  instructions() { # binary conns -> user-space instructions per request
    local bin=$1 c=$2 vp n ir
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$bin" --listen "127.0.0.1:$cg_port" \
      --admin-listen "127.0.0.1:$cg_admin" --config "$work/router.json" 2>"$work/cg.log" &
    vp=$!
    pids+=($vp)
    for _ in $(seq 200); do
      curl -fsS -o /dev/null "http://127.0.0.1:$cg_port/" 2>/dev/null && break
      sleep 0.2
    done
    timeout 20 wrk -t1 -c"$c" -d2s "http://127.0.0.1:$cg_port/" >/dev/null
    callgrind_control -z "$vp" >/dev/null 2>&1
    n=$(timeout 30 wrk -t1 -c"$c" -d5s "http://127.0.0.1:$cg_port/" | awk '/requests in/ {print $1}')
    callgrind_control -d "$vp" >/dev/null 2>&1
    ir=$(awk '/^summary:/ {print $2}' "$work/cg.$vp.1")
    kill "$vp"
    wait "$vp" 2>/dev/null || true
    awk -v ir="$ir" -v n="$n" 'BEGIN { printf "%.0f", (n > 0 ? ir / n : 0) }'
  }
  echo
  echo "User-space instructions per request (callgrind, 5 s of wrk -t1 after 2 s of warm-up):"
  echo
  printf '| connections | router |%s\n|---|---|%s\n' "${ROUTER_BEFORE_BIN:+ before |}" "${ROUTER_BEFORE_BIN:+---|}"
  for c in $conns; do
    line="| $c | $(instructions "$ROUTER_BIN" "$c") |"
    [ -n "${ROUTER_BEFORE_BIN:-}" ] && line="$line $(instructions "$ROUTER_BEFORE_BIN" "$c") |"
    echo "$line"
  done
fi
