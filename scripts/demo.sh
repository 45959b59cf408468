#!/usr/bin/env bash
# The main job: install what is needed, build libwsgi, and serve the demo app
# (examples/apps/hello.py) with the epoll server on http://127.0.0.1:8000/ (PORT to change).
# Extra arguments go to libwsgi-epoll, e.g. scripts/demo.sh --workers 2 --access-log
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DLIBWSGI_BUILD_DOCS=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "serving examples/apps/hello.py on http://127.0.0.1:${PORT:-8000}/ (Ctrl-C stops)" >&2
exec build/examples/epoll/libwsgi-epoll --app hello:app --pythonpath examples/apps \
  --bind "127.0.0.1:${PORT:-8000}" "$@"
