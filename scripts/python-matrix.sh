#!/usr/bin/env bash
# Builds libwsgi and its unit tests against each CPython version given (default: 3.11 3.12 3.13)
# and runs the unit ctests (label "unit"), then prints one line per version: PASS, FAIL, or "not
# present, skipped". Shows that the library keeps to the public C API across Python releases.
#
#   scripts/python-matrix.sh [X.Y ...]
#
# Debian's own version (pkg-config python3-embed, 3.11) is used as is; any other comes from the
# pyenv root ($PYENV_ROOT, default /root/.pyenv): versions/X.Y.*/lib/pkgconfig/python-X.Y-embed.pc
# with its shared libpythonX.Y.so (the newest patch release if several). Those Pythons have only the
# standard library: their runs set LIBWSGI_TEST_STDLIB_ONLY=1, which skips the few unit tests that
# need a Debian package (anyio); tests needing frameworks are integration tests, run on 3.11 only.
# Build directories: ${BUILD_DIR:-build-test}-pyX.Y. Parallelism: JOBS (default 2). Exits non-zero
# if any present version fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build-test}
JOBS=${JOBS:-2}
PYENV_ROOT=${PYENV_ROOT:-/root/.pyenv}
versions=("$@")
[ ${#versions[@]} -ne 0 ] || versions=(3.11 3.12 3.13)
debian=$(pkg-config --modversion python3-embed 2>/dev/null || true)

# The .pc file (or module name) for version $1, or nothing if the version is not present.
find_pc() {
    local v=$1
    if [ "$v" = "$debian" ]; then
        echo python3-embed
        return
    fi
    local d
    for d in "$PYENV_ROOT"/versions/"$v".*; do
        [ -f "$d/lib/pkgconfig/python-$v-embed.pc" ] && [ -e "$d/lib/libpython$v.so" ] && echo "$d"
    done | sort -V | tail -n 1 | sed "s|\$|/lib/pkgconfig/python-$v-embed.pc|"
}

results=()
failed=0
for v in "${versions[@]}"; do
    pc=$(find_pc "$v" || true)
    if [ -z "$pc" ]; then
        results+=("Python $v: not present, skipped")
        continue
    fi
    dir="$BUILD-py$v"
    stdlib_only=(LIBWSGI_TEST_STDLIB_ONLY=1)
    [ "$pc" = python3-embed ] && stdlib_only=()
    echo "=== Python $v ($pc) in $dir" >&2
    if ! { cmake -S . -B "$dir" -DLIBWSGI_WERROR=ON -DLIBWSGI_PYTHON_EMBED_PC="$pc" \
        -DLIBWSGI_BUILD_EXAMPLES=OFF -DLIBWSGI_BUILD_DOCS=OFF -DLIBWSGI_BUILD_BENCH=OFF >/dev/null &&
        cmake --build "$dir" -j"$JOBS" >/dev/null; }; then
        results+=("Python $v: FAIL (build, $dir)")
        failed=1
        continue
    fi
    # The libpython is found through the build tree's RPATH; PYTHONHOME/PYTHONPATH set for another
    # Python would point this one at the wrong standard library.
    if env -u PYTHONHOME -u PYTHONPATH "${stdlib_only[@]}" \
        ctest --test-dir "$dir" -L unit -j"$JOBS" --output-on-failure --timeout 300 >"$dir/ctest.log" 2>&1; then
        results+=("Python $v: PASS ($(grep -o '[0-9]*% tests passed.*' "$dir/ctest.log" | head -n 1 || true), $pc)")
    else
        tail -n 60 "$dir/ctest.log" >&2
        results+=("Python $v: FAIL (unit ctest, see $dir/ctest.log)")
        failed=1
    fi
done
printf '%s\n' "${results[@]}"
exit $failed
