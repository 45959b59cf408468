#!/usr/bin/python3
"""Soak test of libwsgi-epoll (issue 14, "Under load"): hours of load, watching for leaks.
A benchmark, not a test: it prints a table (and --json FILE) and never fails on numbers.

  /usr/bin/python3 bench/soak.py --build build-bench                      # 10 min, WSGI+ASGI+WebSocket
  /usr/bin/python3 bench/soak.py --build build-bench --duration 3600 --interval 60
  /usr/bin/python3 bench/soak.py --build build --kinds wsgi --duration 120 --interval 10

One libwsgi-epoll server per kind (one worker each), all loaded at the same time for --duration
seconds: wsgi (bench/apps/peers_wsgi.py, GET /stream: a generator of 100 chunks of 1 KiB, chunked),
asgi (peers_asgi.py's stream: 100 body events) with wrk -t1 -c64, and ws (peers_asgi.py's ws_echo)
with bench/ws_echo_load (64 connections, 64-byte messages). The servers are pinned to CPU 0 and the
load generators to CPU 1 (taskset), started and stopped by PID. The load runs in slices of
--interval seconds (each slice a new wrk / ws_echo_load run: connections are opened and closed
every slice too); after each slice a row per server: requests (messages) per second in the slice,
non-2xx and socket errors, the server's RSS (VmRSS) and open file descriptors (/proc/PID/fd), read
1 s after the slice's connections closed.

At the end, per server: RSS after the first minute (the first slice ending at or after 60 s; the
warm-up: the interpreter's caches, the allocator's arenas, per-connection buffers reach their
working size there) and at the end, the growth between the two in %, and the fd counts (min/max
over the slices after the first). A leak shows as growth that goes on with the duration.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
SERVER_CPU = "0"
CLIENT_CPU = "1"

KINDS = {
    # kind: (app spec, interface, path, load generator)
    "wsgi": ("peers_wsgi:stream", "wsgi", "/stream", "wrk"),
    "asgi": ("peers_asgi:stream", "asgi", "/stream", "wrk"),
    "ws": ("peers_asgi:ws_echo", "asgi", "/", "ws"),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, guard=60.0):
    deadline = time.monotonic() + guard
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("server exited with %s before listening" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not listen on %d" % port)


def rss_kib(pid):
    """VmRSS, and its parts RssAnon (the heap: what a leak grows) and RssFile (pages of the
    executable and the shared libraries read in as code paths are first run: bounded by their
    size, not a leak), in KiB."""
    got = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                got[key] = int(line.split()[1])
    return got.get("VmRSS", -1), got.get("RssAnon", -1), got.get("RssFile", -1)


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Load:
    """One slice of load against one server: wrk or ws_echo_load, pinned to the client CPU."""

    def __init__(self, args, kind, port):
        self.kind, self.port = kind, port
        _, _, path, gen = KINDS[kind]
        if gen == "wrk":
            self.argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", "-c%d" % args.connections,
                         "-d%ds" % args.interval, "--latency", "http://127.0.0.1:%d%s" % (port, path)]
        else:
            self.argv = ["taskset", "-c", CLIENT_CPU, args.ws_load, "-c", str(args.connections),
                         "-d", str(args.interval), "-w", "0", "-s", "64", "-p", path,
                         "127.0.0.1", str(port)]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)

    def result(self):
        out, _ = self.proc.communicate()
        if self.argv[3] == "wrk":
            m = re.search(r"Requests/sec:\s+([\d.]+)", out)
            errors = 0
            non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
            if non2xx:
                errors += int(non2xx.group(1))
            sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                             out)
            if sock:
                errors += sum(int(x) for x in sock.groups())
            return (float(m.group(1)) if m else 0.0), errors, out
        m = re.search(r"RESULT msgs_per_s=([\d.]+)", out)
        e = re.search(r"errors=(\d+)", out)
        return (float(m.group(1)) if m else 0.0), (int(e.group(1)) if e else 0), out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("LIBWSGI_BUILD", os.path.join(ROOT, "build")))
    ap.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    ap.add_argument("--interval", type=int, default=30, help="seconds per slice / row (default 30)")
    ap.add_argument("--kinds", default="wsgi,asgi,ws", help="which servers (default wsgi,asgi,ws)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--json", help="write every row and the summary here")
    ap.add_argument("--server-args", default="",
                    help="more libwsgi-epoll options for every server, e.g. '--threads 0'")
    args = ap.parse_args()
    epoll = os.path.join(args.build, "examples", "epoll", "libwsgi-epoll")
    args.ws_load = os.path.join(args.build, "bench", "ws_echo_load")
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            raise SystemExit("unknown kind %r (wsgi, asgi, ws)" % k)
    need = [epoll] + ([args.ws_load] if "ws" in kinds else [])
    for f in need:
        if not os.access(f, os.X_OK):
            raise SystemExit("%s is missing: build it first (cmake --build %s)" % (f, args.build))
    if "wsgi" in kinds or "asgi" in kinds:
        if not shutil.which("wrk"):
            raise SystemExit("wrk is missing (apt-get install wrk)")

    servers = {}
    loads = []
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rows = []
    try:
        for k in kinds:
            spec, iface, _, _ = KINDS[k]
            port = free_port()
            argv = ["taskset", "-c", SERVER_CPU, epoll, "--app", spec, "--pythonpath", APPS,
                    "--bind", "127.0.0.1:%d" % port, "--interface", iface, "--log-level", "warning"]
            argv += shlex.split(args.server_args)
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            servers[k] = (p, port)
            wait_port(port, p)
        log("soak: %s for %d s, a row every %d s (server pids: %s)" % (
            ",".join(kinds), args.duration, args.interval,
            ", ".join("%s %d" % (k, servers[k][0].pid) for k in kinds)))
        print("%7s  %-5s %12s %8s %10s %10s %10s %6s" % ("t (s)", "kind", "req/s", "errors",
                                                         "RSS KiB", "anon KiB", "file KiB", "fds"),
              flush=True)
        t0 = time.monotonic()
        elapsed = 0.0
        while elapsed < args.duration and not stopping:
            loads = [(k, Load(args, k, servers[k][1])) for k in kinds]
            results = {k: l.result() for k, l in loads}
            loads = []
            elapsed = time.monotonic() - t0
            # The load generator has closed its connections: give the servers a moment to see the
            # FINs, so that the fd count is the steady one (a leaked descriptor stays).
            time.sleep(1.0)
            for k in kinds:
                p, _ = servers[k]
                if p.poll() is not None:
                    raise SystemExit("soak: the %s server exited with %s" % (k, p.returncode))
                rate, errors, out = results[k]
                rss, anon, filed = rss_kib(p.pid)
                row = {"t": round(elapsed, 1), "kind": k, "rate": rate, "errors": errors,
                       "rss_kib": rss, "anon_kib": anon, "file_kib": filed, "fds": open_fds(p.pid)}
                rows.append(row)
                print("%7.0f  %-5s %12.0f %8d %10d %10d %10d %6d" % (
                    row["t"], k, rate, errors, rss, anon, filed, row["fds"]), flush=True)
                if rate == 0.0:
                    log("soak: no rate from the %s load generator:\n%s" % (k, out[-500:]))
    finally:
        for _, l in loads:
            l.kill()
        for k, (p, _) in servers.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    summary = {}
    print()
    print("%-5s %14s %14s %8s %14s %14s %8s %12s %10s" % (
        "kind", "RSS@1min KiB", "RSS end KiB", "growth", "anon@1min KiB", "anon end KiB",
        "growth", "fds min-max", "req/s avg"))
    for k in kinds:
        mine = [r for r in rows if r["kind"] == k]
        if not mine:
            continue
        first = next((r for r in mine if r["t"] >= 60), mine[0])
        last = mine[-1]
        growth = 100.0 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
        anon_growth = 100.0 * (last["anon_kib"] - first["anon_kib"]) / max(first["anon_kib"], 1)
        after = [r["fds"] for r in mine[1:]] or [mine[0]["fds"]]
        avg = sum(r["rate"] for r in mine) / len(mine)
        summary[k] = {"rss_1min_kib": first["rss_kib"], "rss_end_kib": last["rss_kib"],
                      "growth_pct": round(growth, 2), "anon_1min_kib": first["anon_kib"],
                      "anon_end_kib": last["anon_kib"], "anon_growth_pct": round(anon_growth, 2),
                      "fds_min": min(after), "fds_max": max(after),
                      "rate_avg": round(avg), "errors": sum(r["errors"] for r in mine)}
        print("%-5s %14d %14d %7.2f%% %14d %14d %7.2f%% %12s %10.0f" % (
            k, first["rss_kib"], last["rss_kib"], growth, first["anon_kib"], last["anon_kib"],
            anon_growth, "%d-%d" % (min(after), max(after)), avg))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
