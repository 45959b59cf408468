#!/usr/bin/env bash
# WebSocket echo throughput and latency of libwsgi-epoll and uvicorn serving the same ASGI echo app
# (tests/integration/apps/ws_echo.py), measured with bench/ws_echo_load (C, epoll, closed loop: one
# message in flight per connection). A benchmark, not a test.
#
#   bench/ws_echo_vs_uvicorn.sh                      # 10 s per run, 64 connections, 64 and 4096 bytes
#   DURATION=30 CONNECTIONS=256 SIZES="16 65536" bench/ws_echo_vs_uvicorn.sh
#
# Both servers run as ONE process pinned to CPU 0 (taskset), the load client pinned to CPU 1:
# libwsgi-epoll --workers 1; uvicorn 0.17 --workers 1 --ws websockets --loop uvloop --http httptools
# (its fastest stack here). No permessage-deflate (the client does not offer it), default ping
# interval. Servers listen on a free 127.0.0.1 port and are stopped by PID.
# Settings: LIBWSGI_EPOLL, WS_ECHO_LOAD, DURATION (s), WARMUP (s), CONNECTIONS, SIZES,
# SERVER_CPU, CLIENT_CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

EPOLL=${LIBWSGI_EPOLL:-build/examples/epoll/libwsgi-epoll}
LOAD=${WS_ECHO_LOAD:-build/bench/ws_echo_load}
PY=/usr/bin/python3 # Debian's: the one with uvicorn, websockets, uvloop, httptools
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
SIZES=${SIZES:-64 4096}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
APPS=tests/integration/apps

[ -x "$EPOLL" ] || { echo "no $EPOLL: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
[ -x "$LOAD" ] || { echo "no $LOAD: build first (cmake --build build --target ws_echo_load)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is missing (util-linux)" >&2; exit 1; }
"$PY" -c "import uvicorn, websockets, uvloop, httptools" 2>/dev/null \
  || { echo "uvicorn, websockets, uvloop or httptools missing: scripts/install-deps.sh" >&2; exit 1; }

. bench/server_lib.sh

# run KIND SIZE: start the server, measure, stop; sets R (messages/s p50 p99 errors). Runs in this
# shell (not a subshell), so the EXIT trap always knows the server's PID.
run() {
  local kind=$1 size=$2 port out
  port=$(free_port)
  if [ "$kind" = epoll ]; then
    taskset -c "$SERVER_CPU" "$EPOLL" --app ws_echo:app --pythonpath "$APPS" --bind "127.0.0.1:$port" \
      --workers 1 --log-level warning >/dev/null 2>&1 &
  else
    PYTHONPATH="$APPS" taskset -c "$SERVER_CPU" "$PY" -m uvicorn ws_echo:app --host 127.0.0.1 --port "$port" \
      --workers 1 --ws websockets --loop uvloop --http httptools --lifespan auto --log-level warning \
      --no-access-log >/dev/null 2>&1 &
  fi
  SERVER_PID=$!
  wait_port "$port" "$SERVER_PID"
  out=$(taskset -c "$CLIENT_CPU" "$LOAD" -c "$CONNECTIONS" -d "$DURATION" -w "$WARMUP" -s "$size" 127.0.0.1 "$port" || true)
  stop_server
  local line
  line=$(grep '^RESULT' <<<"$out" || true)
  if [ -z "$line" ]; then
    echo "no result from ws_echo_load: $out" >&2
    R=(0 0 0 "?")
    return
  fi
  read -r -a R < <(awk '{for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
        printf "%s %s %s %s\n", v["msgs_per_s"], v["p50_us"], v["p99_us"], v["errors"]}' <<<"$line")
}

echo "ws_echo_load -c $CONNECTIONS -d $DURATION (warm-up $WARMUP s) against ws_echo.py;" \
     "server on CPU $SERVER_CPU, client on CPU $CLIENT_CPU ($(nproc) cores)"
printf '%-8s %-44s %12s %10s %10s %7s\n' size server "messages/s" "p50 us" "p99 us" errors
for size in $SIZES; do
  run epoll "$size"
  e_rate=${R[0]}
  printf '%-8s %-44s %12s %10s %10s %7s\n' "$size" "libwsgi-epoll (--workers 1)" "${R[@]}"
  run uvicorn "$size"
  u_rate=${R[0]}
  printf '%-8s %-44s %12s %10s %10s %7s\n' "$size" "uvicorn 0.17 (websockets, uvloop, httptools)" "${R[@]}"
  awk -v a="$e_rate" -v b="$u_rate" -v size="$size" \
    'BEGIN { if (b > 0) printf "%-8s %-44s %12.2fx\n", size, "ratio libwsgi-epoll / uvicorn", a / b }'
done
