#!/usr/bin/python3
"""Pure-Python baselines for bench/bench_wsgi and bench/bench_asgi, measured in the interpreter
libwsgi embeds (Debian's /usr/bin/python3). Run by bench/peers.py (the in-process part); prints one
JSON object per line. A benchmark, not a test.

  wsgi            copy a prepared environ dict, call the hello app (examples/apps/hello.py, the app
                  bench_wsgi runs), iterate the result, close it: the least any Python WSGI server
                  does per request.
  asgi batch B    the hello app (bench/apps/hello_asgi.py, bench_asgi's) run as asyncio Tasks, B
                  created per loop turn: a callback creates B tasks on a copy of a prepared scope
                  and schedules itself again, so each turn of a loop that stays running steps B
                  tasks (each finishes in its first step) and the callback. "loop" says which loop:
                  asyncio (SelectorEventLoop on epoll, libwsgi's) or uvloop; "turn" says how a turn
                  is run: "running" (the loop stays in run_forever, like uvicorn's) or
                  "run_forever" (call_soon(stop) + run_forever() per turn, which is how libwsgi's
                  boot.run_once drives the loop for its host).

Usage: inproc_baseline.py [--n-wsgi N] [--n-asgi N] [--batches 1,64] [--loops asyncio,uvloop]
       inproc_baseline.py --callgrind BUILD [--cg-n N] [--batches 1,64] [--python PY]

--callgrind counts instructions instead of timing (valgrind --tool=callgrind; deterministic on a
busy machine): per request, the difference between a run of 3N requests and one of N, over 2N, so
start-up and teardown cancel out. It runs BUILD/bench/bench_asgi (hello_asgi, eager and deferred
start) and the asyncio-Task baseline above (the loop kept running) on PY (default: this
interpreter; bench_asgi embeds the static libpython3.11.a, /usr/bin/python3 is built with PGO, so
the two interpreters differ by a few per cent: build a python linked like bench_asgi to compare
exactly), for each batch, and prints the ratio baseline / libwsgi.
"""

import argparse
import asyncio
import importlib
import io
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def environ():
    """What bench_common.h's request becomes (a GET with wrk's five headers)."""
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/hello", "QUERY_STRING": "name=world",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234",
        "HTTP_HOST": "localhost:8000", "HTTP_USER_AGENT": "wrk/4.2", "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate", "HTTP_CONNECTION": "keep-alive",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def bench_wsgi(n):
    app = load(os.path.join(ROOT, "examples", "apps", "hello.py"), "hello").app
    base = environ()
    state = []

    def start_response(status, headers, exc_info=None):
        state.append(status)
        return None

    total = 0
    t0 = time.perf_counter()
    for _ in range(n):
        del state[:]
        result = app(base.copy(), start_response)
        for chunk in result:
            total += len(chunk)
        close = getattr(result, "close", None)
        if close is not None:
            close()
    dt = time.perf_counter() - t0
    assert total == 14 * n
    return {"what": "wsgi", "n": n, "seconds": dt, "req_per_s": n / dt, "us_per_req": dt * 1e6 / n}


def scope():
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": "/hello", "raw_path": b"/hello",
        "query_string": b"name=world", "root_path": "",
        "headers": [(b"host", b"localhost:8000"), (b"user-agent", b"wrk/4.2"), (b"accept", b"*/*"),
                    (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive")],
        "client": ("127.0.0.1", 51234), "server": ("127.0.0.1", 8000), "state": {},
    }


def make_loop(kind):
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop(selectors.EpollSelector())


def bench_asgi(n, batch, kind, turn):
    app = load(os.path.join(ROOT, "bench", "apps", "hello_asgi.py"), "hello_asgi").app
    base = scope()
    loop = make_loop(kind)
    asyncio.set_event_loop(loop)
    sent = [0]
    done = [0]

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent[0] += 1

    def on_done(task):
        done[0] += 1

    create_task = loop.create_task
    left = [n]

    def tick():
        b = batch if batch < left[0] else left[0]
        left[0] -= b
        for _ in range(b):
            create_task(app(base.copy(), receive, send)).add_done_callback(on_done)
        if turn == "running":  # the next turn creates the next batch, or stops the loop
            loop.call_soon(tick if left[0] > 0 else loop.stop)

    t0 = time.perf_counter()
    if turn == "running":
        loop.call_soon(tick)
        loop.run_forever()
        while done[0] < n:  # only if a task suspended (it does not)
            loop.call_soon(loop.stop)
            loop.run_forever()
    else:
        while left[0] > 0:
            tick()
            while loop._ready or done[0] < n - left[0]:  # what libwsgi's loop_timeout() checks
                loop.call_soon(loop.stop)
                loop.run_forever()
    dt = time.perf_counter() - t0
    loop.close()
    assert done[0] == n and sent[0] == 2 * n, (done[0], sent[0])
    return {"what": "asgi", "loop": kind, "turn": turn, "batch": batch, "n": n, "seconds": dt,
            "req_per_s": n / dt, "us_per_req": dt * 1e6 / n}


def callgrind_instructions(argv):
    """Instructions callgrind counts for one run of argv (the whole process)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv,
                           capture_output=True, text=True)
        m = re.search(r"Collected : (\d+)", r.stderr)
        if r.returncode or not m:
            raise RuntimeError("callgrind of %s failed: %s" % (argv, (r.stdout + r.stderr)[-600:]))
        return int(m.group(1))


def per_request(argv_for, n):
    """(instructions of 3n requests - instructions of n requests) / 2n."""
    return (callgrind_instructions(argv_for(3 * n)) - callgrind_instructions(argv_for(n))) / (2 * n)


def callgrind_main(a):
    bench = os.path.join(a.callgrind, "bench", "bench_asgi")
    apps = os.path.join(ROOT, "bench", "apps")
    py = a.python or sys.executable
    rows = []
    for b in [int(x) for x in a.batches.split(",")]:
        n = max(a.cg_n // b, 1) * b
        row = {"what": "asgi-callgrind", "batch": b, "n": n}
        for start in ("eager", "deferred"):
            row["libwsgi_" + start] = per_request(
                lambda k: [bench, apps, "hello_asgi:app", str(k), str(b), start], n)
        row["asyncio_task"] = per_request(
            lambda k: [py, os.path.abspath(__file__), "--one-asgi", "%d,%d" % (k, b)], n)
        row["python"] = py
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\ninstructions per request (callgrind, hello_asgi; asyncio Task on %s):" % py)
    print("%6s %16s %18s %14s %13s" % ("batch", "libwsgi eager", "libwsgi deferred",
                                        "asyncio Task", "Task / eager"))
    for r in rows:
        print("%6d %16.0f %18.0f %14.0f %12.2fx" % (r["batch"], r["libwsgi_eager"],
                                                    r["libwsgi_deferred"], r["asyncio_task"],
                                                    r["asyncio_task"] / r["libwsgi_eager"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-wsgi", type=int, default=200000)
    ap.add_argument("--n-asgi", type=int, default=100000)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--turns", default="running,run_forever")
    ap.add_argument("--callgrind", metavar="BUILD", help="count instructions (see above)")
    ap.add_argument("--cg-n", type=int, default=2000, help="N of --callgrind (default 2000)")
    ap.add_argument("--python", help="the interpreter of --callgrind's baseline")
    ap.add_argument("--one-asgi", help=argparse.SUPPRESS)  # "N,BATCH": one run, for --callgrind
    a = ap.parse_args()
    if a.one_asgi:
        n, b = (int(x) for x in a.one_asgi.split(","))
        bench_asgi(n, b, "asyncio", "running")
        return
    if a.callgrind:
        callgrind_main(a)
        return
    print(json.dumps(bench_wsgi(a.n_wsgi)), flush=True)
    for kind in a.loops.split(","):
        if kind == "uvloop":
            try:
                importlib.import_module("uvloop")
            except ImportError:
                print(json.dumps({"what": "asgi", "loop": "uvloop", "skipped": "python3-uvloop missing"}))
                continue
        for turn in a.turns.split(","):
            if kind == "uvloop" and turn == "run_forever":
                continue  # uvloop has no _ready to poll; the running loop is its only shape here
            for b in a.batches.split(","):
                print(json.dumps(bench_asgi(a.n_asgi, int(b), kind, turn)), flush=True)


if __name__ == "__main__":
    main()
