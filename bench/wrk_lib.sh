# Shared by bench/wrk_*.sh (sourced, not run): start a server on a free 127.0.0.1 port, warm it
# up, measure it with wrk, stop it by PID. Settings: LIBWSGI_EPOLL, DURATION, CONNECTIONS,
# WRK_THREADS, SCHEME (http, or https for a server speaking TLS).
EPOLL=${LIBWSGI_EPOLL:-build/examples/epoll/libwsgi-epoll}
PY=/usr/bin/python3 # Debian's: the one with gunicorn and uvicorn
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
SCHEME=${SCHEME:-http}
APPS=examples/apps

[ -x "$EPOLL" ] || { echo "no $EPOLL: build first (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing: scripts/install-deps.sh" >&2; exit 1; }

. bench/server_lib.sh

# bench NAME COMMAND... : start the server (with PORT substituted), warm up, measure, stop.
bench() {
  local name=$1
  shift
  local port
  port=$(free_port)
  local args=("${@//PORT/$port}")
  "${args[@]}" >/dev/null 2>&1 &
  SERVER_PID=$!
  wait_port "$port" "$SERVER_PID"
  wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d2s "$SCHEME://127.0.0.1:$port/" >/dev/null
  local out rps p50 p99 errors
  out=$(wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$SCHEME://127.0.0.1:$port/")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' | paste -sd';' - || true)
  printf '%-44s %12s req/s   p50 %-9s p99 %-9s %s\n' "$name" "$rps" "$p50" "$p99" "$errors"
  stop_server
}

