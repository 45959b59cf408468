#!/usr/bin/env bash
# The whole test suite: install what is needed, build with warnings as errors, run every ctest
# entry (cmocka unit tests, pytest integration tests over real sockets, the docs build), then
# rebuild the library, its unit tests and libwsgi-epoll with clang under AddressSanitizer + UBSan
# and run the unit and integration tests again, then the unit and reference-leak tests against
# Debian's debug CPython. Set LIBWSGI_SKIP_SANITIZERS=1 / LIBWSGI_SKIP_REFLEAK=1 to skip those
# passes. Every pass runs even if an earlier one fails; the script then exits non-zero, naming the
# pass(es) that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD=${BUILD_DIR:-build-test}
jobs=$(nproc)

# Both passes always run: a failure in the first must not hide the second. Each failed pass is
# recorded and reported at the end, where the script exits non-zero.
failed=()

if ! { cmake -S . -B "$BUILD" -DLIBWSGI_WERROR=ON >/dev/null && cmake --build "$BUILD" -j"$jobs"; }; then
  failed+=("main pass: build ($BUILD)")
# Two test programs at a time, as in the ASan pass: every test picks free ports and none depends
# on the machine's speed, so they may share the two cores (the main pass in about half the time).
elif ! ctest --test-dir "$BUILD" --output-on-failure --timeout 900 -j2; then
  failed+=("main pass: ctest ($BUILD)")
fi

# ---- ASan/UBSan pass: the library, its unit tests and libwsgi-epoll with its integration tests --
if [ "${LIBWSGI_SKIP_SANITIZERS:-0}" != 1 ]; then
  # The example hosts link the shared libwsgi.so and libpython here (LIBWSGI_STATIC_PYTHON_HOSTS
  # OFF): the sanitizer runtime is in the executable, Python itself is not instrumented.
  # ASAN_OPTIONS: Python keeps memory until exit, so leak detection is the job of unit.leaks and
  # the refleak pass, not of LeakSanitizer; a report aborts the process. Servers started by the
  # integration tests write their reports into a directory tests/integration/conftest.py watches
  # (it adds log_path): a report fails the test during which it appeared, even when the server's
  # exit status does not show it (a prefork worker is just replaced).
  if ! { CC=clang cmake -S . -B "$BUILD-asan" -DLIBWSGI_WERROR=ON -DLIBWSGI_SANITIZE="address;undefined" \
           -DLIBWSGI_STATIC_PYTHON_HOSTS=OFF -DLIBWSGI_BUILD_DOCS=OFF -DLIBWSGI_BUILD_BENCH=OFF >/dev/null &&
         cmake --build "$BUILD-asan" -j"$jobs"; }; then
    failed+=("ASan/UBSan pass: build ($BUILD-asan)")
  elif ! ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      ctest --test-dir "$BUILD-asan" -L 'unit|integration' -j2 --output-on-failure --timeout 900; then
    failed+=("ASan/UBSan pass: unit + integration ctest ($BUILD-asan)")
  fi
fi

# ---- Reference-leak pass: the library and its unit tests against Debian's debug CPython ---------
# python3-dbg-embed (Py_DEBUG: sys.gettotalrefcount, the interpreter's own refcount and memory
# checks): every unit test again, and tests/refleak (each response path thousands of times, the
# total refcount, allocated blocks and gc objects must not grow). LIBWSGI_SKIP_REFLEAK=1 skips it.
if [ "${LIBWSGI_SKIP_REFLEAK:-0}" != 1 ]; then
  if ! { cmake -S . -B "$BUILD-refleak" -DLIBWSGI_WERROR=ON -DLIBWSGI_PYTHON_PC=python3-dbg-embed \
           -DLIBWSGI_BUILD_EXAMPLES=OFF -DLIBWSGI_BUILD_DOCS=OFF -DLIBWSGI_BUILD_BENCH=OFF >/dev/null &&
         cmake --build "$BUILD-refleak" -j"$jobs"; }; then
    failed+=("refleak pass: build ($BUILD-refleak)")
  elif ! ctest --test-dir "$BUILD-refleak" -L 'unit|refleak' -j2 --output-on-failure --timeout 1200; then
    failed+=("refleak pass: unit + refleak ctest ($BUILD-refleak)")
  fi
fi

# ---- issue 14: other Pythons and fuzzing (scripts/python-matrix.sh, scripts/fuzz.sh) ----------
# The library and its unit tests against the other CPython versions present (3.11 is the main
# pass): LIBWSGI_SKIP_PYMATRIX=1 skips. Each fuzz target for LIBWSGI_FUZZ_SECONDS (default 30) from
# its seeds and kept crash inputs, with a fixed libFuzzer seed: LIBWSGI_SKIP_FUZZ=1 skips.
if [ "${LIBWSGI_SKIP_PYMATRIX:-0}" != 1 ]; then
  if ! BUILD_DIR="$BUILD" JOBS=2 scripts/python-matrix.sh 3.12 3.13; then
    failed+=("Python version matrix (scripts/python-matrix.sh 3.12 3.13, $BUILD-py3.*)")
  fi
fi
if [ "${LIBWSGI_SKIP_FUZZ:-0}" != 1 ]; then
  if ! FUZZ_BUILD="$BUILD-fuzz" FUZZ_SECONDS="${LIBWSGI_FUZZ_SECONDS:-30}" FUZZ_SEED=1 JOBS=2 \
      scripts/fuzz.sh; then
    failed+=("fuzzing (scripts/fuzz.sh, $BUILD-fuzz)")
  fi
fi
# ---- end of issue 14 passes ------------------------------------------------------------------

if [ ${#failed[@]} -ne 0 ]; then
  echo "scripts/test.sh: FAILED:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
