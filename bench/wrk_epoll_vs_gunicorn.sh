#!/usr/bin/env bash
# Requests per second of libwsgi-epoll and gunicorn serving the same hello-world app
# (examples/apps/hello.py), measured with wrk on 127.0.0.1. A benchmark, not a test.
#
#   bench/wrk_epoll_vs_gunicorn.sh                 # 10 s per server, 64 connections, 2 wrk threads
#   DURATION=30s CONNECTIONS=128 bench/wrk_epoll_vs_gunicorn.sh
#
# Every server runs as ONE process (libwsgi-epoll --workers 1, gunicorn --workers 1), so the
# numbers compare the per-core cost of each server; wrk shares the machine's cores with it.
# Needs a build (cmake --build build) and scripts/install-deps.sh (wrk, gunicorn).
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/wrk_lib.sh

echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION against hello.py ($(nproc) cores, one server process)"
bench "libwsgi-epoll --threads 0 (app on the loop)" \
  "$EPOLL" --app hello:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --threads 0 --log-level warning
bench "libwsgi-epoll --threads 4" \
  "$EPOLL" --app hello:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --threads 4 --log-level warning
bench "gunicorn (sync worker)" \
  "$PY" -m gunicorn --pythonpath "$APPS" --bind 127.0.0.1:PORT --workers 1 --log-level warning hello:app
bench "gunicorn --worker-class gthread --threads 4" \
  "$PY" -m gunicorn --pythonpath "$APPS" --bind 127.0.0.1:PORT --workers 1 --worker-class gthread \
  --threads 4 --log-level warning hello:app
