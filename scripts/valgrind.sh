#!/usr/bin/env bash
# valgrind memcheck over the unit tests: builds the library and its unit tests (gcc, no examples)
# in BUILD (default build-test-valgrind), then runs every unit test binary under memcheck, two at
# a time (tests/valgrind/run.py). Fails on any invalid access or definite leak that
# tests/valgrind/python.supp (CPython's known noise) does not suppress. Logs: BUILD/valgrind/.
#
# Not part of scripts/test.sh: the whole run takes about 22 minutes on a 2-core machine (unit.leaks
# alone 13, the WebSocket leak test 4-6), more than the CI budget leaves after the other passes.
# Usage: scripts/valgrind.sh [BUILD [CTEST_REGEX]]   e.g. scripts/valgrind.sh "" 'asgi_http|failmalloc'
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD_DIR:-build-test}-valgrind}
cmake -S . -B "$BUILD" -DLIBWSGI_WERROR=ON -DLIBWSGI_BUILD_EXAMPLES=OFF -DLIBWSGI_BUILD_DOCS=OFF \
  -DLIBWSGI_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
exec /usr/bin/python3 tests/valgrind/run.py "$BUILD" 2 ${2:+"$2"}
