#!/usr/bin/python3
"""Fair load spreading between workers (issue 13): latency of fast requests with slow ones mixed in.

libwsgi-epoll runs with --workers 2 twice: with one listening socket shared by both workers (the
default, EPOLLEXCLUSIVE) and with one SO_REUSEPORT socket per worker (--reuse-port). Closed-loop
clients on new connections: SLOW clients request /slow (the app sleeps --slow seconds), FAST
clients request /fast; the p50/p90/p99 of the fast requests show whether a fast request waits
behind slow ones in a busy worker while the other idles.

    /usr/bin/python3 bench/spread.py --build build-bench [--threads 0 --threads 2] [--duration 10]
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("bad response: %r" % data[:80])
    return time.perf_counter() - t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] * 1000


def run(build, threads, reuse_port, args, slow_clients):
    port = free_port()
    exe = os.path.join(build, "examples", "epoll", "libwsgi-epoll")
    argv = [exe, "--app", "spread_app:app", "--pythonpath", os.path.join(HERE, "apps"),
            "--bind", "127.0.0.1:%d" % port, "--workers", "2", "--threads", str(threads),
            "--log-level", "warning"] + (["--reuse-port"] if reuse_port else [])
    srv = subprocess.Popen(argv)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                get(port, "/fast")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(1.0)  # both workers up
        stop = time.monotonic() + args.duration
        fast, errors = [], []

        def client(path, out):
            while time.monotonic() < stop:
                try:
                    d = get(port, path)
                    if out is not None:
                        out.append(d)
                except Exception as e:  # noqa: BLE001 - counted, reported
                    errors.append(repr(e))

        ts = [threading.Thread(target=client, args=("/slow?%g" % args.slow, None))
              for _ in range(slow_clients)]
        ts += [threading.Thread(target=client, args=("/fast", fast)) for _ in range(args.fast_clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return fast, errors
    finally:
        srv.terminate()
        srv.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, action="append", help="--threads of the server (repeatable; default 0 and 2)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--slow", type=float, default=0.2, help="seconds a slow request sleeps")
    ap.add_argument("--slow-clients", type=int, default=None,
                    help="default: one less than the app threads of both workers (2 x max(threads, 1) - 1):"
                         " one worker is saturated, the other has room")
    ap.add_argument("--fast-clients", type=int, default=4)
    args = ap.parse_args()
    print("workers 2; clients of /slow (%g s) and %d of /fast, new connection per request, %g s each"
          % (args.slow, args.fast_clients, args.duration))
    print("%-8s %-6s %-26s %9s %8s %8s %8s %7s" % ("threads", "slow", "listening", "fast reqs", "p50 ms",
                                                  "p90 ms", "p99 ms", "errors"))
    for threads in args.threads or [0, 2]:
        slow_clients = args.slow_clients if args.slow_clients is not None else 2 * max(threads, 1) - 1
        for reuse in (False, True):
            fast, errors = run(args.build, threads, reuse, args, slow_clients)
            print("%-8d %-6d %-26s %9d %8.1f %8.1f %8.1f %7d" % (
                threads, slow_clients, "per-worker (--reuse-port)" if reuse else "shared (default)", len(fast),
                pct(fast, 50), pct(fast, 90), pct(fast, 99), len(errors)))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
