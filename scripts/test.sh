#!/usr/bin/env bash
# The whole test suite: install what is needed, build with warnings as errors, run every ctest
# entry (cmocka unit tests, pytest integration tests over real sockets, the docs build), then
# rebuild the library and its unit tests with clang under AddressSanitizer + UBSan and run them
# again. Set LIBWSGI_SKIP_SANITIZERS=1 to skip the second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD=${BUILD_DIR:-build-test}
jobs=$(nproc)

cmake -S . -B "$BUILD" -DLIBWSGI_WERROR=ON >/dev/null
cmake --build "$BUILD" -j"$jobs"
ctest --test-dir "$BUILD" --output-on-failure --timeout 900

if [ "${LIBWSGI_SKIP_SANITIZERS:-0}" != 1 ]; then
  # Python itself is not instrumented and keeps memory until exit: leak detection is the job of
  # unit.leaks, not of LeakSanitizer.
  CC=clang cmake -S . -B "$BUILD-asan" -DLIBWSGI_WERROR=ON -DLIBWSGI_SANITIZE="address;undefined" \
    -DLIBWSGI_BUILD_EXAMPLES=OFF -DLIBWSGI_BUILD_DOCS=OFF -DLIBWSGI_BUILD_BENCH=OFF >/dev/null
  cmake --build "$BUILD-asan" -j"$jobs"
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir "$BUILD-asan" -L unit --output-on-failure --timeout 900
fi
