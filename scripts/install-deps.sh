#!/usr/bin/env bash
# Installs the Debian packages libwsgi needs, by profile:
#
#   scripts/install-deps.sh run        build libwsgi and run its servers (what scripts/demo.sh needs)
#   scripts/install-deps.sh docs       run + Doxygen: cmake --build build --target docs
#   scripts/install-deps.sh test       everything ./scripts/test.sh needs (the default): run, docs,
#                                      unit and integration tests, sanitizers, ABI check, benchmarks
#   scripts/install-deps.sh packaging  test + the Debian packaging tools (scripts/ci-packages.sh)
#   scripts/install-deps.sh bench      test + every server bench/peers.py compares (not in CI)
#
# Several profiles may be given. Idempotent: nothing is done when everything is already installed.
# As root or through sudo; apt-get's own output shows the progress.
set -euo pipefail

RUN=(
  # C compiler (libwsgi is C only: no build-essential, whose g++ the demo does not need), build
  # system; Python's embedding library (python3-embed.pc) and its interpreter, whose sysconfig says
  # how to link the static libpython
  gcc libc6-dev make cmake pkg-config libpython3-dev python3
  # libwsgi-epoll: HTTP parsing, WebSocket framing, SHA-1 for the handshake and TLS (OpenSSL),
  # permessage-deflate
  libhttp-parser-dev libwslay-dev libssl-dev zlib1g-dev
)
DOCS=(doxygen graphviz)
TEST=(
  # the complete toolchain (g++, dpkg-dev) as before the profiles
  build-essential
  # unit tests; clang + its sanitizer runtime for the ASan/UBSan pass; nm for the export check;
  # abidiff for the ABI check against abi/
  libcmocka-dev binutils clang libclang-rt-14-dev abigail-tools
  # the reference-leak pass: Debian's debug CPython (python3-dbg-embed) and valgrind memcheck
  python3-dbg libpython3.11-dbg valgrind
  # the full Python development set (python3.11-dev, distutils), as the tests always had
  python3-dev
  # integration tests (Python side runs on Debian's /usr/bin/python3)
  python3-pytest python3-requests
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
# dpkg-buildpackage, debhelper, lintian; mk-build-deps (devscripts + equivs) for debian/control
PACKAGING=(dpkg-dev debhelper lintian devscripts equivs fakeroot)

# bench/peers.py: the peers only the side-by-side benchmark runs (the others are in TEST already)
BENCH=(uwsgi-core uwsgi-plugin-python3 apache2-bin libapache2-mod-wsgi-py3 python3-hypercorn daphne
  python3-h11 python3-pydantic util-linux)

[ $# -gt 0 ] || set -- test
PACKAGES=()
for profile in "$@"; do
  case $profile in
  run) PACKAGES+=("${RUN[@]}") ;;
  docs) PACKAGES+=("${RUN[@]}" "${DOCS[@]}") ;;
  test) PACKAGES+=("${RUN[@]}" "${DOCS[@]}" "${TEST[@]}") ;;
  packaging) PACKAGES+=("${RUN[@]}" "${DOCS[@]}" "${TEST[@]}" "${PACKAGING[@]}") ;;
  bench) PACKAGES+=("${RUN[@]}" "${DOCS[@]}" "${TEST[@]}" "${BENCH[@]}") ;;
  *)
    echo "usage: $0 [run|docs|test|packaging|bench]..." >&2
    exit 2
    ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  case " ${missing[*]} " in *" $p "*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps ($*): installing ${#missing[@]} packages and their dependencies: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt-get (a second CI run on the same machine, unattended upgrades) may hold dpkg's lock:
# wait for it instead of failing.
APT_WAIT=(-o DPkg::Lock::Timeout=600)
echo "install-deps: apt-get update" >&2
$SUDO apt-get "${APT_WAIT[@]}" update -q
$SUDO apt-get "${APT_WAIT[@]}" install -y -q --no-install-recommends "${missing[@]}"
