#!/bin/sh
# The ABI of libwsgi.so against the checked-in baseline of its SONAME (docs/abi.md).
#
#   check_abi.sh check BASELINE LIBWSGI_SO
#       abidiff BASELINE against the built library. BASELINE holds only what the public headers
#       define (the opaque handles' insides are private). Any reported change fails: removed or changed
#       functions and types are breaks; an added function (in a new version node) is fine but the
#       baseline must then be regenerated, so that the next change is compared with it.
#   check_abi.sh selftest BASELINE LIBWSGI_SO
#       Shows that `check` catches a break: a copy of BASELINE with one more exported function
#       (one the library lacks, as if it had been removed) must fail it.
#   check_abi.sh dump LIBWSGI_SO OUT HEADERS_DIR...
#       Writes a new baseline (the 'abi-baseline' build target; see docs/abi.md).
#
# The library must carry DWARF debug information (the default RelWithDebInfo build does); without
# it the check exits 77, which ctest reports as skipped.
set -eu

headers_opts() {
    for d in "$@"; do printf ' --headers-dir %s' "$d"; done
}
need_debug_info() {
    if ! readelf -S "$1" | grep -q '\.debug_info'; then
        echo "check_abi: $1 has no debug information (build with -g, e.g. RelWithDebInfo): skipped"
        exit 77
    fi
}
command -v abidiff >/dev/null || {
    echo "check_abi: abidiff not found (Debian: abigail-tools; scripts/install-deps.sh test)" >&2
    exit 1
}

cmd=${1:-}
case $cmd in
check | selftest)
    baseline=$2 lib=$3
    need_debug_info "$lib"
    [ -f "$baseline" ] || {
        echo "check_abi: no baseline $baseline (see docs/abi.md, 'abi-baseline')" >&2
        exit 1
    }
    if [ "$cmd" = selftest ]; then
        tmp=$(mktemp "${TMPDIR:-/tmp}/libwsgi-abi.XXXXXX")
        trap 'rm -f "$tmp"' EXIT
        # Duplicate the first exported function's symbol under a name the library lacks.
        awk '{ print } !done && /<elf-symbol name=.wsgi_/ { sub(/name=.wsgi_/, "name='\''wsgi_abi_selftest_"); print; done = 1 }' \
            "$baseline" >"$tmp"
        grep -q wsgi_abi_selftest_ "$tmp" || {
            echo "check_abi: selftest could not edit $baseline" >&2
            exit 1
        }
        if sh "$0" check "$tmp" "$lib" >/dev/null 2>&1; then
            echo "check_abi: FAIL: a removed function was not reported"
            exit 1
        fi
        echo "check_abi: a removed function fails the check, as it must"
        exit 0
    fi
    rc=0
    # The baseline holds only the types the public headers define (dump's --drop-private-types),
    # so no --headers-dir here: that filter goes by source location, which the baseline omits, and
    # would hide every change. The opaque handles' definitions in the built library are reported as
    # harmless (declaration-only -> defined) and filtered out by abidiff itself. Added functions
    # are reported too (exit status 4), so a stale baseline is noticed.
    abidiff "$baseline" "$lib" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "check_abi: FAIL: abidiff exit status $rc (4: ABI change, 8: incompatible change)."
        echo "  A break needs a SONAME bump; a deliberate compatible change (a function added in a new"
        echo "  version node, a field appended to a struct_size struct) needs a new baseline:"
        echo "  cmake --build <build> --target abi-baseline, reviewed and committed (docs/abi.md)."
        exit 1
    fi
    echo "check_abi: $lib matches $baseline"
    ;;
dump)
    lib=$2 out=$3
    shift 3
    need_debug_info "$lib"
    # shellcheck disable=SC2046
    abidw --no-corpus-path --no-comp-dir-path --no-show-locs --drop-private-types \
        $(headers_opts "$@") --out-file "$out" "$lib"
    echo "check_abi: wrote $out"
    ;;
*)
    echo "usage: $0 check|selftest BASELINE LIB | dump LIB OUT HEADERS_DIR..." >&2
    exit 2
    ;;
esac
