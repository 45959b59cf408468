#!/usr/bin/env bash
# Installs every Debian package libwsgi needs to build, test and run its examples.
# Idempotent and quiet when everything is already there. Usage: scripts/install-deps.sh
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config python3-dev libpython3.11-dev
  # unit tests and docs; clang + its sanitizer runtime for the ASan/UBSan pass
  libcmocka-dev doxygen graphviz binutils clang libclang-rt-14-dev
  # example hosts: HTTP parsing, WebSocket framing, SHA-1 for the handshake and TLS (OpenSSL),
  # permessage-deflate
  libhttp-parser-dev libwslay-dev libssl-dev zlib1g-dev
  # integration tests (Python side runs on Debian's /usr/bin/python3)
  python3 python3-pytest python3-requests
  # examples/epoll integration tests: the reference server, the frameworks compared, the benchmark
  gunicorn python3-flask python3-django python3-falcon python3-bottle python3-pyramid wrk strace
  # ASGI integration tests: the reference server and the frameworks compared (form parsing needs
  # python3-multipart)
  python3-uvicorn python3-fastapi python3-starlette python3-quart python3-multipart
  # WebSocket integration tests: the clients, uvicorn as deployed (uvloop, httptools, websockets),
  # and a Django Channels consumer
  python3-websockets python3-wsproto python3-uvloop python3-httptools python3-django-channels
  # libwsgi-scgi behind the real lighttpd (examples/lighttpd); curl for HTTP/2 (h2c) through it
  lighttpd curl
  # the docs.man test renders the man pages
  man-db groff-base
  # TLS integration tests: the openssl command makes their certificates (curl is listed above)
  openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
