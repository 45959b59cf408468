#!/usr/bin/env bash
# Requests per second over TLS (keep-alive HTTPS, wrk): libwsgi-epoll --certfile against uvicorn
# --ssl-certfile, one process each, hello-world apps (examples/apps). A benchmark, not a test: the
# certificate is a throw-away self-signed EC one (P-256), made with the openssl command.
#
#   bench/wrk_tls_vs_uvicorn.sh                   # 10 s per server, 64 connections, 2 wrk threads
#   DURATION=30s CONNECTIONS=128 bench/wrk_tls_vs_uvicorn.sh
#
# The plain-HTTP libwsgi-epoll numbers of the same run are printed first, for the cost of TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/wrk_lib.sh
"$PY" -c "import uvicorn" 2>/dev/null || { echo "uvicorn is missing: scripts/install-deps.sh" >&2; exit 1; }
CERTS=$(mktemp -d)
trap 'rm -rf "$CERTS"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -keyout "$CERTS/key.pem" -out "$CERTS/cert.pem" 2>/dev/null
TLS=(--certfile "$CERTS/cert.pem" --keyfile "$CERTS/key.pem")
UTLS=(--ssl-certfile "$CERTS/cert.pem" --ssl-keyfile "$CERTS/key.pem")
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, hello world ($(nproc) cores, one server process)"
SCHEME=http bench "libwsgi-epoll WSGI, plain HTTP" \
  "$EPOLL" --app hello:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --log-level warning
SCHEME=https
bench "libwsgi-epoll WSGI, TLS" \
  "$EPOLL" --app hello:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --log-level warning "${TLS[@]}"
bench "libwsgi-epoll ASGI, TLS" \
  "$EPOLL" --app hello_asgi:app --pythonpath "$APPS" --bind 127.0.0.1:PORT --log-level warning "${TLS[@]}"
bench "uvicorn 0.17 ASGI, TLS (httptools, uvloop)" \
  env PYTHONPATH="$APPS" "$PY" -m uvicorn hello_asgi:app --host 127.0.0.1 --port PORT \
  --http httptools --loop uvloop --lifespan auto --log-level warning --no-access-log "${UTLS[@]}"
