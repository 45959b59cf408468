#!/usr/bin/env bash
# User-space instructions per request of a whole server, under callgrind (deterministic on a busy
# machine; the kernel's work is not counted): the server serves N1, then in a second run N2
# keep-alive requests on one connection, and (total2 - total1) / (N2 - N1) is printed.
# A benchmark, not a test.
#
#   bench/callgrind_server.sh epoll-asgi          # libwsgi-epoll, peers_asgi:hello
#   bench/callgrind_server.sh epoll-wsgi          # libwsgi-epoll, peers_wsgi:hello (--threads 4)
#   bench/callgrind_server.sh uvicorn             # uvicorn --loop uvloop --http httptools
#   N1=200 N2=1200 LIBWSGI_EPOLL=build-bench/examples/epoll/libwsgi-epoll bench/callgrind_server.sh epoll-asgi
#
# Session 5 (Release build of 903915a): epoll-asgi 26,600 instructions per request, uvicorn 101,470.
# Session 6, N2=2200, three runs each (the count moves by a few % from run to run: hash seeds, GC):
# inside python3 (the default) epoll-asgi 25,872-26,423, epoll-wsgi 9,461-9,552; on the embedded
# interpreter (LIBWSGI_EMBEDDED=1, or 867b74a) 26,597-26,789 and 9,453-9,805. Then the per-request
# work of branch asgifast (no epoll_ctl re-arm, one-pass head, scope template, eager Task): epoll-asgi
# ~23,700 (867b74a: 26,500-27,600 on the same machine); the merged result is in bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=${1:-epoll-asgi}
N1=${N1:-200}
N2=${N2:-1200}
EPOLL=${LIBWSGI_EPOLL:-build-bench/examples/epoll/libwsgi-epoll}
PY=/usr/bin/python3
APPS=$PWD/bench/apps
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# keep-alive GET / requests, one at a time, each read whole (Content-Length)
cat >"$OUT/client.py" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(1200):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("the server did not listen")
buf = b""
for _ in range(n):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    while True:
        h = buf.find(b"\r\n\r\n")
        if h >= 0:
            head = buf[:h].decode("latin-1").lower()
            cl = int(head.split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= h + 4 + cl:
                buf = buf[h + 4 + cl:]
                break
        d = s.recv(65536)
        if not d:
            raise SystemExit("the server closed the connection")
        buf += d
EOF

run() { # run N FILE: one server under callgrind serving N requests
    local n=$1 file=$2 port
    port=$($PY -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
    case "$KIND" in
    epoll-asgi | epoll-wsgi)
        local app=peers_asgi:hello
        [ "$KIND" = epoll-wsgi ] && app=peers_wsgi:hello
        # --trace-children: the program executes python3 (pyexe.h), which serves.
        valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$file" "$EPOLL" --app "$app" \
            --pythonpath "$APPS" --bind "127.0.0.1:$port" --log-level warning 2>/dev/null &
        ;;
    uvicorn)
        (cd "$APPS" && exec valgrind --tool=callgrind --callgrind-out-file="$file" $PY -m uvicorn \
            peers_asgi:hello --host 127.0.0.1 --port "$port" --loop uvloop --http httptools \
            --log-level warning --no-access-log --lifespan off 2>/dev/null) &
        ;;
    *) echo "unknown kind $KIND (epoll-asgi, epoll-wsgi, uvicorn)" >&2; exit 2 ;;
    esac
    local pid=$!
    $PY "$OUT/client.py" "$port" "$n"
    kill -TERM "$pid"
    wait "$pid" || true
}

total() { grep -h '^summary:' "$1"* | awk '{s += $2} END {print s}'; }

run "$N1" "$OUT/cg1"
run "$N2" "$OUT/cg2"
t1=$(total "$OUT/cg1")
t2=$(total "$OUT/cg2")
echo "$KIND: $(( (t2 - t1) / (N2 - N1) )) instructions per request (callgrind, user space; $N1 and $N2 requests: $t1, $t2)"
