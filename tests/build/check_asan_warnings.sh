#!/bin/sh
# The servers' sources compile without a warning under AddressSanitizer with the default compiler
# (LIBWSGI_SANITIZE=address with gcc, -Wall -Wextra as the top CMakeLists.txt sets them): code
# that changes under __SANITIZE_ADDRESS__ (server.c: CONN_SPARE 0) must not trip a warning that
# -DLIBWSGI_WERROR=ON turns into a build failure. Syntax only: no object is written.
# usage: check_asan_warnings.sh SOURCE_DIR BUILD_DIR [CC]
set -eu
src=$1
build=$2
cc=${3:-gcc}
command -v "$cc" >/dev/null 2>&1 || { echo "no $cc: skipped"; exit 0; }
py=$(pkg-config --cflags python3-embed 2>/dev/null || true)
for f in "$src"/examples/epoll/server.c "$src"/examples/epoll/http_conn.c; do
  "$cc" -DLIBWSGI_STATIC=1 -D_GNU_SOURCE -I"$src"/examples/epoll -I"$src"/examples/lighttpd \
    -I"$src"/examples/common -I"$src"/include -I"$build"/include $py \
    -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror \
    -fsanitize=address -fsyntax-only "$f"
done
echo "ok"
