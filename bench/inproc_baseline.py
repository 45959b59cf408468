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
"""

import argparse
import asyncio
import importlib
import io
import json
import os
import selectors
import sys
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-wsgi", type=int, default=200000)
    ap.add_argument("--n-asgi", type=int, default=100000)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--turns", default="running,run_forever")
    a = ap.parse_args()
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
