#!/usr/bin/env bash
# Requests per second of libwsgi-epoll and uvicorn serving the same hello-world ASGI app
# (examples/apps/hello_asgi.py), measured with wrk on 127.0.0.1. A benchmark, not a test.
#
#   bench/wrk_epoll_vs_uvicorn.sh                 # 10 s per server, 64 connections, 2 wrk threads
#   DURATION=30s CONNECTIONS=128 bench/wrk_epoll_vs_uvicorn.sh
#
# Both servers run as ONE process with the app on one asyncio loop (libwsgi-epoll --workers 1;
# uvicorn --workers 1, Debian's 0.17 as it is deployed: httptools and uvloop, both from Debian and
# installed by scripts/install-deps.sh, plus a second run with h11 and asyncio), so the numbers
# compare the per-core cost of each server; wrk shares the machine's cores with it. Needs a build (cmake --build build) and scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/wrk_lib.sh
"$PY" -c "import uvicorn" 2>/dev/null || { echo "uvicorn is missing: scripts/install-deps.sh" >&2; exit 1; }

echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION against hello_asgi.py ($(nproc) cores, one server process)"
bench "libwsgi-epoll (ASGI on the event loop)" \
  "$EPOLL" --app hello_asgi:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --log-level warning
bench "uvicorn 0.17 (httptools, uvloop)" \
  env PYTHONPATH="$APPS" "$PY" -m uvicorn hello_asgi:app --host 127.0.0.1 --port PORT \
  --http httptools --loop uvloop --lifespan auto --log-level warning --no-access-log
bench "uvicorn 0.17 (h11, asyncio)" \
  env PYTHONPATH="$APPS" "$PY" -m uvicorn hello_asgi:app --host 127.0.0.1 --port PORT \
  --http h11 --loop asyncio --lifespan auto --log-level warning --no-access-log
