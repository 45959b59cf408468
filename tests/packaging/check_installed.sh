#!/bin/sh
# Checks an installed libwsgi the way its users meet it, from a scratch directory outside the
# source tree:
#   - the installed files: headers under include/libwsgi/, libwsgi.so -> libwsgi.so.0 ->
#     libwsgi.so.0.MINOR.PATCH with SONAME libwsgi.so.0, libwsgi.a, libwsgi.pc, the CMake package,
#     libwsgi-epoll and libwsgi-scgi (and for the Debian packages their man pages, libwsgi(3), the
#     HTML reference and the lighttpd example configuration);
#   - the minimal C host (examples/minimal/minimal.c, as host.c) built with
#     `cc host.c $(pkg-config --cflags --libs libwsgi)`, and again against libwsgi.a with
#     `pkg-config --static`, serving a request to a Python app;
#   - the same host built by a 5-line CMakeLists.txt with find_package(libwsgi) (consumer/);
#   - the installed libwsgi-epoll --app ... serving a request over a real socket.
#
#   check_installed.sh stage BUILD_DIR [PART]
#       `cmake --install BUILD_DIR --prefix <scratch>`, then check that prefix (PKG_CONFIG_PATH and
#       CMAKE_PREFIX_PATH point at it); the ctests packaging.install_staged.*
#   check_installed.sh system [PART]
#       check what is installed under /usr (the Debian packages; scripts/ci-packages.sh)
#
# PART: files+pkgconfig (the installed files, the pkg-config hosts), cmake (the find_package host
# with libwsgi::libwsgi), cmake-static (the same with libwsgi::libwsgi_static), servers
# (libwsgi-epoll over a socket) or all (the default).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
host_c=$here/../../examples/minimal/minimal.c # the host every check builds
py=${LIBWSGI_PYTHON3:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/libwsgi-installed.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
    echo "check_installed: FAIL: $*" >&2
    exit 1
}
step() { echo "check_installed: $*"; }

mode=${1:-}
if [ "$mode" = stage ]; then
    part=${3:-all}
else
    part=${2:-all}
fi
case $part in
all | files+pkgconfig | cmake | cmake-static | servers) ;;
*) fail "unknown PART '$part'" ;;
esac
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }

case $mode in
stage)
    [ -d "${2:-}" ] || fail "usage: $0 stage BUILD_DIR [PART]"
    prefix=$work/prefix
    step "cmake --install $2 --prefix $prefix"
    cmake --install "$2" --prefix "$prefix" >"$work/install.log" || {
        cat "$work/install.log"
        fail "cmake --install"
    }
    pc=$(find "$prefix" -name libwsgi.pc)
    [ -n "$pc" ] || fail "no libwsgi.pc installed"
    libdir=$(dirname "$(dirname "$pc")")
    export PKG_CONFIG_PATH="$libdir/pkgconfig" CMAKE_PREFIX_PATH="$prefix"
    # `cc ... -lwsgi` against a library outside the loader's path: say where it is at run time.
    export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    bindir=$prefix/bin
    ;;
system)
    prefix=/usr
    libdir=$(pkg-config --variable=libdir libwsgi) || fail "pkg-config does not find libwsgi"
    bindir=/usr/bin
    ;;
*)
    echo "usage: $0 stage BUILD_DIR [PART] | system [PART]" >&2
    exit 2
    ;;
esac
incdir=$prefix/include/libwsgi
mkdir "$work/app" "$work/pc" "$work/cmake"
cp "$here/pkg_app.py" "$work/app/"
target_path="/installed?from=host" # the request the host serves
expect="installed libwsgi: /installed from=host"

if want files+pkgconfig; then
    step "installed files under $prefix"
    for h in libwsgi.h common.h runtime.h wsgi.h asgi.h version.h; do
        [ -f "$incdir/$h" ] || fail "missing header $incdir/$h"
    done
    [ ! -e "$incdir/version.h.in" ] || fail "version.h.in installed"
    ! grep -rlE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](python[0-9.]*/)?Python\.h' "$incdir" || fail "an installed header includes Python.h"
    real=$(readlink -f "$libdir/libwsgi.so")
    case $(basename "$real") in
    libwsgi.so.0.*.*) ;;
    *) fail "libwsgi.so resolves to $real, not libwsgi.so.0.MINOR.PATCH" ;;
    esac
    [ "$(readlink -f "$libdir/libwsgi.so.0")" = "$real" ] || fail "libwsgi.so.0 does not lead to $real"
    soname=$(objdump -p "$real" | awk '$1 == "SONAME" { print $2 }')
    [ "$soname" = libwsgi.so.0 ] || fail "SONAME is '$soname'"
    [ -f "$libdir/libwsgi.a" ] || fail "no $libdir/libwsgi.a"
    for f in libwsgiConfig.cmake libwsgiConfigVersion.cmake libwsgiTargets.cmake; do
        [ -f "$libdir/cmake/libwsgi/$f" ] || fail "missing $libdir/cmake/libwsgi/$f"
    done
    for server in libwsgi-epoll libwsgi-scgi; do
        [ -x "$bindir/$server" ] || fail "no $bindir/$server"
        "$bindir/$server" --version >/dev/null || fail "$bindir/$server --version"
    done
    if [ "$mode" = system ]; then
        # What only the Debian packages are sure to carry (a staged tree has them only after
        # `--target docs`): the man pages, the HTML reference, the lighttpd example.
        for page in man1/libwsgi-epoll.1 man1/libwsgi-scgi.1 man3/libwsgi.3; do
            [ -f "/usr/share/man/$page.gz" ] || fail "no man page /usr/share/man/$page.gz"
        done
        man -w libwsgi-epoll >/dev/null || fail "man does not find libwsgi-epoll(1)"
        [ -f /usr/share/doc/libwsgi-doc/html/index.html ] || fail "no HTML reference in libwsgi-doc"
        [ -f /usr/share/doc/libwsgi-servers/examples/lighttpd/lighttpd.conf ] ||
            fail "no lighttpd example configuration in libwsgi-servers"
    fi

    cp "$host_c" "$work/pc/host.c"
    step "cc host.c \$(pkg-config --cflags --libs libwsgi)   [$(pkg-config --cflags --libs libwsgi)]"
    cd "$work/pc"
    # shellcheck disable=SC2046 # word splitting of pkg-config's output is the point
    cc -o host host.c $(pkg-config --cflags --libs libwsgi)
    ./host "$work/app" pkg_app:app "$target_path" >out.txt || fail "the pkg-config host failed"
    grep -q "$expect" out.txt || fail "the pkg-config host printed: $(cat out.txt)"
    ldd ./host | grep -q 'libwsgi\.so\.0 => ' || fail "the pkg-config host does not load libwsgi.so.0"

    # --static lists what libwsgi.a needs; -l:libwsgi.a makes the linker take the archive although
    # libwsgi.so sits next to it (plain -lwsgi prefers the shared library).
    static_flags=$(pkg-config --static --cflags --libs libwsgi)
    step "cc host.c \$(pkg-config --static --cflags --libs libwsgi), libwsgi.a   [$static_flags]"
    # shellcheck disable=SC2046
    cc -o host-static host.c $(echo "$static_flags" | sed 's/-lwsgi\b/-l:libwsgi.a/')
    ./host-static "$work/app" pkg_app:app "$target_path" >out.txt || fail "the static host failed"
    grep -q "$expect" out.txt || fail "the static host printed: $(cat out.txt)"
    ! ldd ./host-static | grep -q libwsgi || fail "the static host loads a libwsgi.so"
fi

# consumer/CMakeLists.txt as it is, and with libwsgi::libwsgi_static (libwsgi.a).
for target in libwsgi libwsgi_static; do
    if [ $target = libwsgi ]; then want cmake || continue; else want cmake-static || continue; fi
    step "cmake: find_package(libwsgi), libwsgi::$target"
    mkdir "$work/cmake/$target"
    cp "$host_c" "$work/cmake/$target/host.c"
    sed "s/libwsgi::libwsgi)/libwsgi::$target)/" "$here/consumer/CMakeLists.txt" \
        >"$work/cmake/$target/CMakeLists.txt"
    cd "$work/cmake/$target"
    grep -q "libwsgi::$target)" CMakeLists.txt || fail "no libwsgi::$target in the CMakeLists.txt"
    # shellcheck disable=SC2015 # either step failing is the failure
    cmake -S . -B build >build.log 2>&1 && cmake --build build >>build.log 2>&1 || {
        cat build.log
        fail "the CMake consumer (libwsgi::$target) did not build"
    }
    ./build/host "$work/app" pkg_app:app "$target_path" >out.txt || fail "the CMake host (libwsgi::$target) failed"
    grep -q "$expect" out.txt || fail "the CMake host (libwsgi::$target) printed: $(cat out.txt)"
    if [ "$target" = libwsgi ]; then
        ldd ./build/host | grep -q 'libwsgi\.so\.0 => ' || fail "libwsgi::libwsgi: no libwsgi.so.0"
    else
        ! ldd ./build/host | grep -q libwsgi || fail "libwsgi::libwsgi_static loads a libwsgi.so"
    fi
done

if want servers; then
    # With its module installed (LIBWSGI_PYTHON_EXE_HOSTS) the server runs inside python3: the
    # module is found relative to the installed program, whatever the prefix.
    expect="installed libwsgi: / "
    if [ -f "$libdir/libwsgi/_libwsgi_host.so" ]; then
        expect="runs in: python3"
    fi
    step "$bindir/libwsgi-epoll --app pkg_app:app over a socket (expecting '$expect')"
    "$py" "$here/serve_check.py" "$expect" -- "$bindir/libwsgi-epoll" --app pkg_app:app \
        --pythonpath "$work/app" --bind "127.0.0.1:{port}" || fail "the installed libwsgi-epoll"
fi
step "all checks passed"
