#!/usr/bin/env bash
# System calls per request of libwsgi-epoll, per workload: the server runs under `strace -f -c`
# (every thread), wrk sends keep-alive requests for a few seconds, and the table divides each
# call's count by the number of requests wrk completed. A benchmark, not a test: the counts are
# what the issue asks to write down ("fewer syscalls per request; count them with strace -c").
# Under strace everything is slow, so the counts, not the times, are the result.
#
#   bench/syscalls.sh                         # every workload, 4 connections, 3 s each
#   CONNECTIONS=64 SECONDS_EACH=5 bench/syscalls.sh hello-wsgi post-asgi
#
# Workloads: hello-wsgi, hello-wsgi-t0 (--threads 0), hello-asgi, post-wsgi, post-asgi (256 KiB
# echo), stream-wsgi, stream-asgi (100 chunks of 1 KiB). WebSocket echo: bench/ws_echo_load under
# strace the same way (ws-64, ws-4096). Settings: LIBWSGI_EPOLL, WS_ECHO_LOAD, CONNECTIONS,
# SECONDS_EACH.
set -euo pipefail
cd "$(dirname "$0")/.."

EPOLL=${LIBWSGI_EPOLL:-build/examples/epoll/libwsgi-epoll}
LOAD=${WS_ECHO_LOAD:-build/bench/ws_echo_load}
PY=/usr/bin/python3
CONNECTIONS=${CONNECTIONS:-4}
SECONDS_EACH=${SECONDS_EACH:-3}
ALL="hello-wsgi hello-wsgi-t0 hello-asgi post-wsgi post-asgi stream-wsgi stream-asgi ws-64 ws-4096"
WORKLOADS=${*:-$ALL}

[ -x "$EPOLL" ] || { echo "no $EPOLL: build first" >&2; exit 1; }
command -v strace >/dev/null || { echo "strace is missing" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing" >&2; exit 1; }

. bench/server_lib.sh

TMP=$(mktemp -d)
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT

# run NAME APP PYTHONPATH SERVER-ARGS LOAD...: one workload; prints its row.
run() {
  local name=$1 app=$2 path=$3 sargs=$4
  shift 4
  local port out n
  port=$(free_port)
  # shellcheck disable=SC2086
  strace -f -c -o "$TMP/$name.strace" "$EPOLL" --app "$app" --pythonpath "$path" \
    --bind "127.0.0.1:$port" --log-level warning $sargs >/dev/null 2>&1 &
  SERVER_PID=$!
  wait_port "$port" "$SERVER_PID"
  if [ "${1:-}" = ws ]; then
    out=$("$LOAD" -c "$CONNECTIONS" -d "$SECONDS_EACH" -w 0 -s "$2" 127.0.0.1 "$port")
    n=$(sed -n 's/.*messages=\([0-9]*\).*/\1/p' <<<"$out")
  else
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" "$@" "http://127.0.0.1:$port/")
    n=$(awk '/requests in/{print $1}' <<<"$out")
  fi
  # strace's child is the server: stop it; strace writes its summary and exits.
  local child
  child=$(cat "/proc/$SERVER_PID/task/$SERVER_PID/children" 2>/dev/null || true)
  [ -n "$child" ] && kill -TERM $child 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  "$PY" - "$TMP/$name.strace" "$name" "$n" <<'EOF'
import sys
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0)
counts = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        counts[f[-1]] = int(f[3])
if not n:
    print("%-14s no requests completed" % name)
    sys.exit()
# Start-up (imports: openat, read, mmap, ...) is not per request: only calls seen at least once per
# 20 requests are listed, the rest summed as "other".
per = {k: v / n for k, v in counts.items()}
main = {k: v for k, v in per.items() if v >= 0.05}
other = sum(v for k, v in per.items() if v < 0.05)
total = sum(main.values())
row = "  ".join("%s %.2f" % (k, v) for k, v in sorted(main.items(), key=lambda kv: -kv[1]))
print("%-14s %7d req  %6.2f/req  %s  (other %.2f)" % (name, n, total, row, other))
EOF
}

echo "libwsgi-epoll system calls per request (strace -f -c, $CONNECTIONS connections, ${SECONDS_EACH} s each)"
WSGI=bench/apps
for w in $WORKLOADS; do
  case $w in
    hello-wsgi) run "$w" peers_wsgi:hello "$WSGI" "" ;;
    hello-wsgi-t0) run "$w" peers_wsgi:hello "$WSGI" "--threads 0" ;;
    hello-asgi) run "$w" peers_asgi:hello "$WSGI" "" ;;
    post-wsgi) run "$w" peers_wsgi:echo "$WSGI" "" -s bench/wrk_post_256k.lua ;;
    post-asgi) run "$w" peers_asgi:echo "$WSGI" "" -s bench/wrk_post_256k.lua ;;
    stream-wsgi) run "$w" peers_wsgi:stream "$WSGI" "" ;;
    stream-asgi) run "$w" peers_asgi:stream "$WSGI" "" ;;
    ws-64) run "$w" ws_echo:app tests/integration/apps "" ws 64 ;;
    ws-4096) run "$w" ws_echo:app tests/integration/apps "" ws 4096 ;;
    *) echo "unknown workload $w (known: $ALL)" >&2; exit 2 ;;
  esac
done
