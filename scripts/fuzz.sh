#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, AddressSanitizer + UBSan, LIBWSGI_FUZZ=ON)
# and runs each for a bounded time, starting from its seed corpus and its kept crash inputs.
#
#   scripts/fuzz.sh [target ...]          targets: request scgi ws http server server_ws
#                                         (default: all six)
#
#   FUZZ_SECONDS  seconds per target (default 30, what CI runs; e.g. FUZZ_SECONDS=3600 for a long
#                 run)
#   FUZZ_BUILD    build directory (default build-fuzz); new corpus entries go to
#                 $FUZZ_BUILD/corpus/<target>/, crashes to $FUZZ_BUILD/artifacts/<target>/
#   FUZZ_JOBS     parallel libFuzzer workers per target (default 1)
#   FUZZ_SEED     libFuzzer's -seed (default: a new one each run); scripts/test.sh uses 1
#   JOBS          build parallelism (default 2)
#
# Prints one line per target and exits non-zero if any target crashed, leaked, hung or failed to
# build. A crash input is kept as a regression test by copying it into
# tests/fuzz/regressions/<target>/ once fixed (see tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-30}
FJOBS=${FUZZ_JOBS:-1}
JOBS=${JOBS:-2}
targets=("$@")
[ ${#targets[@]} -ne 0 ] || targets=(request scgi ws http server server_ws)

# The examples are configured (fuzz_server* link the real server, examples/epoll's
# wsgi_http_server); only the fuzz targets and what they need are built.
CC=clang cmake -S . -B "$BUILD" -DLIBWSGI_FUZZ=ON -DLIBWSGI_SANITIZE="address;undefined" \
    -DLIBWSGI_WERROR=ON -DLIBWSGI_BUILD_EXAMPLES=ON -DLIBWSGI_BUILD_DOCS=OFF \
    -DLIBWSGI_BUILD_BENCH=OFF >/dev/null
build=()
for t in "${targets[@]}"; do build+=("fuzz_$t"); done
cmake --build "$BUILD" -j"$JOBS" --target "${build[@]}" >/dev/null

results=()
failed=0
for t in "${targets[@]}"; do
    # Absolute paths: the fuzzer runs in $BUILD, where -jobs puts its fuzz-<n>.log files.
    bin="$PWD/$BUILD/tests/fuzz/fuzz_$t"
    work="$PWD/$BUILD/corpus/$t"
    art="$PWD/$BUILD/artifacts/$t"
    mkdir -p "$work" "$art"
    dirs=("$work" "$PWD/tests/fuzz/corpus/$t")
    [ -d "tests/fuzz/regressions/$t" ] && dirs+=("$PWD/tests/fuzz/regressions/$t")
    par=()
    [ "$FJOBS" -gt 1 ] && par=(-jobs="$FJOBS" -workers="$FJOBS")
    [ -n "${FUZZ_SEED:-}" ] && par+=(-seed="$FUZZ_SEED")
    # The interpreter keeps memory until exit: leak checks only for the targets without Python.
    leaks=1
    case $t in request | server*) leaks=0 ;; esac
    log="$BUILD/fuzz-$t.log"
    echo "=== fuzz_$t for ${SECONDS_EACH}s (log: $log)" >&2
    if (cd "$BUILD" && ASAN_OPTIONS=detect_leaks=$leaks:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$bin" -max_total_time="$SECONDS_EACH" -timeout=25 -detect_leaks=$leaks "${par[@]}" \
        -artifact_prefix="$art/" -print_final_stats=1 "${dirs[@]}") >"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        results+=("fuzz_$t: OK ($execs runs in ${SECONDS_EACH}s, $cov, corpus $(ls "$work" | wc -l) new)")
    else
        tail -n 40 "$log" >&2
        results+=("fuzz_$t: FAILED (see $log; inputs in $art/)")
        failed=1
    fi
done
printf '%s\n' "${results[@]}"
exit $failed
