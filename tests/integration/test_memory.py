"""Memory bounds of issue 10: a 1 GiB streamed response and a 1 GiB upload each keep the server's RSS
growth under 32 MiB, WSGI and ASGI; an idle worker's RSS stays where it is (about 20 MiB) and does
not grow over 10,000 requests.

The app is apps/memory_app.py (a WSGI generator / ASGI more_body events of 64 KiB; an upload read in
64 KiB pieces from wsgi.input / a receive() loop, with Content-Length and chunked). The client and
the measurement are bench/memory.py's (run_case, run_idle), so that this test and the benchmark
measure alike: the client receives into one fixed 256 KiB buffer with recv_into and discards as it
goes, and sends an upload as one pre-built 256 KiB block again and again, so it never holds a body.
Memory is read from /proc/PID/status of a fresh server per case: VmRSS after a 1 MiB warm-up
request of the same kind ("before"), VmHWM after the transfer ("peak", reset to the current RSS
through /proc/PID/clear_refs first where the kernel allows it, which can only make it smaller).
A transfer of 1 GiB took 0.8 to 5 s on the loaded 2-core machine this was written on; no timing
is asserted.
"""

import importlib.util
import json
import os

import pytest

from conftest import ROOT
from httpclient import request, wait_for

_spec = importlib.util.spec_from_file_location("bench_memory", os.path.join(ROOT, "bench", "memory.py"))
bench_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_memory)

SIZE = 1 << 30
GROWTH_BOUND_MIB = 32  # issue 10
# An idle worker measured 20.0 MiB (WSGI and ASGI hello, Release build, Debian's Python 3.11) when
# this test was written; the bound leaves 10% for noise. A worker of --workers N is smaller (18.8).
IDLE_BOUND_MIB = 22
# Over 10,000 requests: a leak of 400 bytes a request would reach it (unit.leaks looks closer).
IDLE_GROWTH_BOUND_MIB = 4

TRANSFERS = [
    # (interface, kind, extra server arguments)
    ("wsgi", "stream", ()),
    ("wsgi", "stream-cl", ()),
    ("wsgi", "upload-cl", ()),
    ("wsgi", "upload-chunked", ()),
    # the app on the event loop thread: the loop writes the stream and reads the upload itself
    ("wsgi", "stream", ("--threads", "0")),
    ("wsgi", "upload-cl", ("--threads", "0")),
    ("wsgi", "upload-chunked", ("--threads", "0")),
    ("asgi", "stream", ()),
    ("asgi", "stream-cl", ()),
    ("asgi", "upload-cl", ()),
    ("asgi", "upload-chunked", ()),
]


def _describe(r):
    sampled = r["max_sampled_kib"]
    return ("%s of %d MiB in %.2f s: RSS before %.1f MiB, peak %.1f MiB%s, max sampled during the "
            "transfer %s, after %.1f MiB" % (
                r["kind"], r["bytes"] >> 20, r["seconds"], r["rss_before_kib"] / 1024, r["peak_kib"] / 1024,
                "" if r["peak_reset"] else " (peak since start: clear_refs refused)",
                "%.1f MiB" % (sampled / 1024) if sampled else "-", r["rss_after_kib"] / 1024))


@pytest.mark.parametrize("iface,kind,args", TRANSFERS,
                         ids=["-".join((i, k) + ((("threads" + a[1]),) if a else ())) for i, k, a in TRANSFERS])
@pytest.mark.rss
def test_huge_transfer_keeps_rss_growth_bounded(spawn, iface, kind, args):
    srv = spawn("epoll", "memory_app:" + iface, "--interface", iface, *args)
    r = bench_memory.run_case(srv.pid, srv.port, kind, SIZE)
    assert r["status"] == 200, r
    if kind.startswith("stream"):
        assert r["received"] == SIZE, r
        assert r["framing"] == ("length" if kind == "stream-cl" else "chunked"), r
    else:
        assert r["answer"]["size"] == SIZE, r
        assert r["answer"]["reads"] > 1, r  # the app read the body in pieces
    growth_mib = r["growth_kib"] / 1024
    assert growth_mib < GROWTH_BOUND_MIB, "peak RSS grew by %.1f MiB: %s" % (growth_mib, _describe(r))


@pytest.mark.rss
@pytest.mark.parametrize("iface,app", [("wsgi", "hello:app"), ("asgi", "hello_asgi:app")])
def test_idle_worker_rss(spawn, iface, app):
    srv = spawn("epoll", app, "--interface", iface)
    r = bench_memory.run_idle(srv.pid, srv.port)
    start, after = r["rss_start_kib"] / 1024, r["rss_after_kib"] / 1024
    assert start < IDLE_BOUND_MIB, "idle RSS right after start: %.1f MiB" % start
    assert after - start < IDLE_GROWTH_BOUND_MIB, \
        "RSS %.1f MiB right after start, %.1f MiB after %d requests" % (start, after, r["requests"])


# 24 MiB freed in the heap's middle: under the server's 32 MiB trim threshold (server_main.c), so
# only the idle trim (server.c idle_trim) gives it back.
CHURN = 24 << 20


@pytest.mark.rss
@pytest.mark.parametrize("threads", ["4", "0"])
def test_idle_worker_gives_freed_heap_back(spawn, threads):
    """Memory an app freed goes back to the kernel once the worker is idle: its RSS falls back to
    near where it was before the request instead of keeping the heap's high-water mark. Polled
    until it does (the trim follows 250 ms without events; no timing is asserted)."""
    srv = spawn("epoll", "memory_app:wsgi", "--threads", threads)
    assert request(srv.port, "GET", "/hello").status == 200
    before = bench_memory.rss_kib(srv.pid)
    r = request(srv.port, "GET", "/churn?total=%d" % CHURN)
    assert r.status == 200 and json.loads(r.body)["size"] == CHURN // 2000, r.body
    after = bench_memory.rss_kib(srv.pid)
    wait_for(lambda: bench_memory.rss_kib(srv.pid) < before + 4096,
             "RSS back within 4 MiB of %d KiB (%d KiB right after the request)" % (before, after))
