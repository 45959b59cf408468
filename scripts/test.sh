#!/usr/bin/env bash
# The whole test suite: install what is needed, build with warnings as errors, run every ctest
# entry (cmocka unit tests, pytest integration tests over real sockets, the docs build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD=${BUILD_DIR:-build-test}
cmake -S . -B "$BUILD" -DLIBWSGI_WERROR=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure --timeout 600
