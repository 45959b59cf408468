"""The app's own cost per request of bench/peers.py's framework workload (json): the same app the
servers get (peers_flask:app for WSGI, peers_fastapi:app for ASGI) called in-process by a
pure-Python driver, with the request wrk sends (GET /items?limit=20, one Host header), no sockets.
peers.py subtracts it from each server's CPU time per request: what is left is the host's own cost.

What the driver does per request is the least any server does:
  WSGI  copy a prepared environ, call app(environ, start_response), iterate the result (counting
        the bytes), close() it;
  ASGI  copy a prepared scope, await app(scope, receive, send) inside a running event loop (one
        coroutine awaiting the requests one after another; receive() returns the empty body at
        once, send() counts the body bytes), so the app's awaits are the only ones.
The time is CPU time of the thread (time.thread_time) over ROUNDS rounds of N requests after a
warm-up; the result holds the median and the best round, in microseconds per request.

Two ways to run it:
  /usr/bin/python3 bench/apps/appcost.py wsgi asgi [--n N] [--loop asyncio|uvloop] [--warmup W]
      [--rounds R]
      prints one JSON object per interface (the python3 executable: PGO + LTO, statically linked)
  APPCOST="wsgi asgi" APPCOST_N=N [APPCOST_WARMUP=W APPCOST_ROUNDS=R] bench_wsgi bench/apps appcost:app 1
      imported inside libwsgi (the runtime on libpython3.11.so, which libwsgi, uWSGI and mod_wsgi
      embed): the module runs the driver at import and writes "APPCOST <json>" lines to stderr;
      `app` is a trivial WSGI app for bench_wsgi to call once.
"""

import asyncio
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

PATH, QUERY = "/items", "limit=20"
HOST = "127.0.0.1:8000"
ROUNDS = 5
WARMUP = 300


def environ():
    """What a WSGI server makes of wrk's `GET /items?limit=20` (wrk sends only Host)."""
    import io
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": PATH, "QUERY_STRING": QUERY,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234", "HTTP_HOST": HOST,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def scope():
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": PATH, "raw_path": PATH.encode(),
        "query_string": QUERY.encode(), "root_path": "", "headers": [(b"host", HOST.encode())],
        "client": ("127.0.0.1", 51234), "server": ("127.0.0.1", 8000),
    }


def _result(what, n, times, total, loop=None):
    per = sorted(t * 1e6 / n for t in times)
    r = {"what": what, "n": n, "rounds": len(times), "us_median": statistics.median(per),
         "us_best": per[0], "us_worst": per[-1], "body_bytes": total, "python": sys.version.split()[0],
         "executable": sys.executable}
    if loop:
        r["loop"] = loop
    return r


def wsgi_cost(n, warmup=WARMUP, rounds=ROUNDS):
    from peers_flask import app
    base = environ()
    status = []

    def start_response(s, headers, exc_info=None):
        status.append(s)

    def once():
        del status[:]
        result = app(base.copy(), start_response)
        size = 0
        try:
            for chunk in result:
                size += len(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if status != ["200 OK"] or not size:
            raise RuntimeError("the app answered %r with %d bytes" % (status, size))
        return size

    for _ in range(max(1, warmup)):
        size = once()
    times = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(n):
            once()
        times.append(time.thread_time() - t0)
    return _result("wsgi", n, times, size)


def asgi_cost(n, loop_kind="asyncio", warmup=WARMUP, rounds=ROUNDS):
    from peers_fastapi import app
    base = scope()
    state = {"status": None, "size": 0}
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive():
        return request

    async def send(message):
        if message["type"] == "http.response.start":
            state["status"] = message["status"]
        else:
            state["size"] += len(message.get("body", b""))

    async def run():
        for _ in range(max(1, warmup)):
            await app(base.copy(), receive, send)
        if state["status"] != 200 or not state["size"]:
            raise RuntimeError("the app answered %r with %d bytes" % (state["status"], state["size"]))
        size = state["size"] // max(1, warmup)
        times = []
        for _ in range(rounds):
            t0 = time.thread_time()
            for _ in range(n):
                await app(base.copy(), receive, send)
            times.append(time.thread_time() - t0)
        return times, size

    if loop_kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        times, size = loop.run_until_complete(run())
    finally:
        loop.close()
    return _result("asgi", n, times, size, loop_kind)


def measure(whats, n, loop_kind="asyncio", warmup=WARMUP, rounds=ROUNDS):
    out = []
    for what in whats:
        try:
            out.append(wsgi_cost(n, warmup, rounds) if what == "wsgi" else
                       asgi_cost(n, loop_kind, warmup, rounds))
        except Exception as e:  # a benchmark: say what failed, let the caller go on
            out.append({"what": what, "error": repr(e)})
    return out


def app(environ, start_response):  # for bench_wsgi, which calls the app it loaded once
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="+", choices=("wsgi", "asgi"))
    ap.add_argument("--n", type=int, default=2000, help="requests per round (default 2000)")
    ap.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    ap.add_argument("--warmup", type=int, default=WARMUP, help="requests before the rounds (default %d)" % WARMUP)
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="rounds of N requests (default %d)" % ROUNDS)
    a = ap.parse_args()
    for r in measure(a.what, a.n, a.loop, a.warmup, a.rounds):
        print(json.dumps(r), flush=True)
elif os.environ.get("APPCOST"):
    # imported by an embedder (bench_wsgi): measure now, on its interpreter
    for _r in measure(os.environ["APPCOST"].split(), int(os.environ.get("APPCOST_N", "2000")),
                      os.environ.get("APPCOST_LOOP", "asyncio"), int(os.environ.get("APPCOST_WARMUP", WARMUP)),
                      int(os.environ.get("APPCOST_ROUNDS", ROUNDS))):
        _r["executable"] = "embedded libpython (%s)" % (os.environ.get("APPCOST_HOST") or "libwsgi")
        sys.stderr.write("APPCOST " + json.dumps(_r) + "\n")
    sys.stderr.flush()
