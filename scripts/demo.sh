#!/usr/bin/env bash
# The main job: install what is needed to build and run (scripts/install-deps.sh run), build
# libwsgi and its servers, and serve the demo app (examples/apps/hello.py) with the epoll server on
# http://127.0.0.1:8000/ (PORT=8080 scripts/demo.sh to change the port).
# Extra arguments go to libwsgi-epoll, e.g. scripts/demo.sh --workers 2 --access-log
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { printf '\n=== demo: %s\n' "$*" >&2; }

phase "1/3 Debian packages to build and run (scripts/install-deps.sh run; nothing to do if present)"
scripts/install-deps.sh run
phase "2/3 configure (cmake -S . -B build)"
# No tests and no benchmarks: the demo needs the library and the server only. The docs target
# appears once Doxygen is installed (README.md, "Documentation").
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DLIBWSGI_BUILD_BENCH=OFF \
  --log-level=WARNING
phase "3/3 build (cmake --build build)"
cmake --build build -j"$(nproc)"
phase "serving examples/apps/hello.py on http://127.0.0.1:${PORT:-8000}/ (Ctrl-C stops)"
exec build/examples/epoll/libwsgi-epoll --app hello:app --pythonpath examples/apps \
  --bind "127.0.0.1:${PORT:-8000}" "$@"
