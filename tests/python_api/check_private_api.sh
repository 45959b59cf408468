#!/bin/sh
# Public CPython API only: every undefined _Py* symbol of libwsgi.so must be on the allow-list
# (what public macros expand to, see allowlist.txt).
#
#   check_private_api.sh LIBWSGI_SO ALLOWLIST
set -eu
lib=$1
list=$2
[ -f "$lib" ] || { echo "FAIL: no such library: $lib" >&2; exit 1; }
allowed=$(sed 's/#.*//' "$list" | awk 'NF { print $1 }' | sort -u)
# "  U name" or "  U name@VERSION"; weak (w/v) references count too.
used=$(nm -D --undefined-only "$lib" | awk '{ print $NF }' | sed 's/@.*//' | grep '^_Py' | sort -u || true)
fail=0
for s in $used; do
    if ! echo "$allowed" | grep -qx "$s"; then
        echo "FAIL: libwsgi.so uses the private CPython symbol $s (not in $list)" >&2
        fail=1
    fi
done
echo "private CPython symbols referenced:" $used
exit $fail
