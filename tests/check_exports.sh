#!/bin/sh
# The ABI surface of libwsgi.
#
#   check_exports.sh symbols LIBWSGI_SO PUBLIC_INCLUDE_DIR
#       Every dynamic symbol libwsgi.so defines carries a project prefix (wsgi_, asgi_, libwsgi_), so
#       nothing internal (and nothing of CPython) leaks into the ABI; the four core entry points are
#       there; and the exported set equals the set of functions the public headers declare
#       LIBWSGI_API: nothing declared is missing, nothing exported is undeclared.
#   check_exports.sh debian-symbols LIBWSGI_SO SYMBOLS_FILE
#       The exported name@version-node pairs equal those listed in debian/libwsgi0.symbols (which
#       dpkg-gensymbols enforces in the package build; this finds a forgotten entry in every test
#       run).
#   check_exports.sh headers INCLUDE_DIR...
#       No public header (including the generated version.h) includes Python.h.
set -eu

fail=0
complain() {
    echo "FAIL: $*" >&2
    fail=1
}

case "${1:-}" in
symbols)
    lib=$2
    incdir=$3
    [ -f "$lib" ] || { echo "FAIL: no such library: $lib" >&2; exit 1; }
    # "ADDR T name" or "ADDR T name@@LIBWSGI_0" (newer binutils); the version node itself is
    # an absolute symbol named LIBWSGI_0.
    syms=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@.*//' | sort -u)
    [ -n "$syms" ] || complain "nm found no defined dynamic symbols in $lib"
    for s in $syms; do
        case $s in
        LIBWSGI_[0-9]*) ;; # version nodes (docs/abi.md: new functions go to new nodes)
        wsgi_* | asgi_* | libwsgi_*) ;;
        *) complain "exported symbol without a project prefix: $s" ;;
        esac
    done
    for required in wsgi_env_build wsgi_call wsgi_iter_next asgi_dispatch; do
        echo "$syms" | grep -qx "$required" || complain "required symbol not exported: $required"
    done
    # The declared API, from the headers: "LIBWSGI_API <type> [*]name(".
    declared=$(cat "$incdir"/*.h | grep 'LIBWSGI_API' | grep -v '#' |
        sed -n 's/^.*[ *]\([A-Za-z_][A-Za-z0-9_]*\)[ ]*(.*$/\1/p' | sort -u)
    [ -n "$declared" ] || complain "no LIBWSGI_API declarations found under $incdir"
    for d in $declared; do
        echo "$syms" | grep -qx "$d" || complain "declared in a public header but not exported: $d"
    done
    for s in $syms; do
        case $s in LIBWSGI_[0-9]*) continue ;; esac
        echo "$declared" | grep -qx "$s" || complain "exported but not declared LIBWSGI_API in a public header: $s"
    done
    n=$(echo "$syms" | wc -l)
    echo "checked $n exported symbols against $(echo "$declared" | wc -l) declarations"
    ;;
debian-symbols)
    lib=$2
    file=$3
    [ -f "$lib" ] || { echo "FAIL: no such library: $lib" >&2; exit 1; }
    [ -f "$file" ] || { echo "FAIL: no such symbols file: $file" >&2; exit 1; }
    # A version node is the absolute symbol LIBWSGI_x, listed as LIBWSGI_x@LIBWSGI_x.
    built=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { print $3 }' | sed 's/@@*/@/' |
        sed 's/^\(LIBWSGI_[0-9.]*\)$/\1@\1/' | sort -u)
    listed=$(grep '^ ' "$file" | awk '{ print $1 }' | sort -u)
    for s in $built; do
        echo "$listed" | grep -qxF "$s" || complain "exported but not in $file: $s (add it with the release that introduces it)"
    done
    for s in $listed; do
        echo "$built" | grep -qxF "$s" || complain "in $file but not exported: $s"
    done
    echo "checked $(echo "$built" | wc -l) exported symbols against $file"
    ;;
headers)
    shift
    checked=0
    for dir in "$@"; do
        for h in "$dir"/*.h; do
            [ -f "$h" ] || continue
            checked=$((checked + 1))
            if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](python[0-9.]*/)?Python\.h[>"]' "$h"; then
                complain "$h includes Python.h"
            fi
        done
    done
    [ "$checked" -gt 0 ] || complain "no headers found in: $*"
    echo "checked $checked public headers"
    ;;
*)
    echo "usage: $0 symbols LIBWSGI_SO INCLUDE_DIR | debian-symbols LIBWSGI_SO SYMBOLS_FILE | headers INCLUDE_DIR..." >&2
    exit 2
    ;;
esac

exit "$fail"
