"""libwsgi-epoll serving ASGI apps as a program: --interface, --threads (does not apply), the
lifespan protocol (state, unsupported, startup failure, shutdown on SIGTERM, one per worker) and
graceful shutdown with responses and background work in flight."""

import json
import os
import re
import signal
import uuid

import pytest

import conftest
from httpclient import Conn, build_request, request, wait_for
from test_process import can_serve, child_pids


def tagged():
    """A tag for the marker files of one test (passed to the app as LIBWSGI_TEST_TAG)."""
    return "p" + uuid.uuid4().hex[:10]


def marker(tag, kind, *parts):
    return os.path.join(conftest.SESSION_TMP, "-".join(("asgi", kind, tag) + tuple(str(p) for p in parts)))


def markers(tag, kind):
    prefix = "-".join(("asgi", kind, tag)) + "-"
    return sorted(int(f[len(prefix):]) for f in os.listdir(conftest.SESSION_TMP)
                  if f.startswith(prefix) and not f.endswith(".tmp"))


def events(tag):
    with open(marker(tag, "events")) as f:
        return [line.split() for line in f.read().splitlines()]


@pytest.mark.parametrize("args", [[], ["--interface", "asgi"], ["--interface", "auto"]])
def test_asgi_app_is_served(spawn, args):
    s = spawn("epoll", "asgi_app:app", *args)
    r = request(s.port, "GET", "/")
    assert r.status == 200 and r.body == b"asgi"
    assert "ASGI on the event loop" in s.log()


@pytest.mark.parametrize("threads", ["0", "8"])
def test_threads_do_not_apply(spawn, threads):
    s = spawn("epoll", "asgi_corners:app", "--threads", threads)
    with Conn(s.port) as c:
        for _ in range(5):
            assert c.request("GET", "/hello").status == 200


def test_wsgi_app_still_served_with_interface_auto(spawn):
    s = spawn("epoll", "hello:app")
    assert request(s.port, "GET", "/").body == b"Hello, World!\n"


def test_access_log_line(spawn):
    s = spawn("epoll", "asgi_corners:app", "--access-log")
    request(s.port, "GET", "/stream?n=2&size=3&x=1", [("User-Agent", "tester/2.0")])
    line = wait_for(lambda: [l for l in s.log().splitlines() if "/stream?n=2" in l], "access log")[0]
    assert re.search(r'"GET /stream\?n=2&size=3&x=1 HTTP/1\.1" 200 6 "-" "tester/2\.0"', line), line


# ---- lifespan ---------------------------------------------------------------------------------------

def test_lifespan_startup_state_and_shutdown_on_sigterm(spawn):
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", env={"LIBWSGI_TEST_TAG": tag})
    assert markers(tag, "startup") == [s.pid]  # before it listened
    scope = json.loads(request(s.port, "GET", "/scope/").body)
    assert scope["state"] == {"greeting": "set at startup", "pid": s.pid}
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert markers(tag, "shutdown") == [s.pid]
    assert [e[0] for e in events(tag)] == ["startup", "shutdown"]


def test_lifespan_shutdown_on_sigint(spawn):
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", env={"LIBWSGI_TEST_TAG": tag})
    s.signal(signal.SIGINT)
    assert s.wait() == 0
    assert markers(tag, "shutdown") == [s.pid]


def test_app_without_lifespan_is_served(spawn):
    s = spawn("epoll", "asgi_corners:no_lifespan")
    assert request(s.port, "GET", "/hello").status == 200
    scope = json.loads(request(s.port, "GET", "/scope/").body)
    assert scope["state"] == {}
    assert "does not support the ASGI lifespan protocol" in s.log()
    assert s.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lifespan_startup_failure_stops_the_server(spawn, workers):
    s = spawn("epoll", "asgi_corners:failing_startup", "--workers", workers, ready=False)
    assert s.wait() == 3  # a failed boot: the master does not restart the worker forever
    log = s.log()
    assert "database unreachable on purpose" in log
    assert "listening at" not in log


def test_lifespan_per_worker(spawn):
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", "--workers", "2", env={"LIBWSGI_TEST_TAG": tag})
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    workers = sorted(child_pids(s.pid))
    wait_for(lambda: markers(tag, "startup") == workers, "a lifespan startup in each worker")
    seen = set()

    def both_answered():
        seen.add(json.loads(request(s.port, "GET", "/scope/").body)["state"]["pid"])
        return seen == set(workers)
    wait_for(both_answered, "both workers to answer with their own lifespan state", step=0)
    assert s.stop() == 0
    assert markers(tag, "shutdown") == workers


# ---- graceful shutdown --------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_graceful_shutdown_finishes_in_flight_response(spawn, workers):
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", "--workers", workers, env={"LIBWSGI_TEST_TAG": tag})
    if workers == "2":
        wait_for(lambda: len(markers(tag, "startup")) == 2, "two workers")
    t = uuid.uuid4().hex[:8]
    c = Conn(s.port)
    c.send(build_request("GET", "/slow-stream?n=2&token=" + t))
    # The head goes out with the first body event (ASGI spec), so release part 0 first.
    conftest_touch(marker(tag, "go", t, 0))
    status, _, _, headers, _ = c.read_head()
    assert status == 200
    assert c.read_line() == b"7" and c.read_exact(9) == b"part 0\n\r\n"
    s.signal(signal.SIGTERM)
    wait_for(lambda: not can_serve(s.port), "the listeners to close")
    assert s.proc.poll() is None  # still serving the response in flight
    conftest_touch(marker(tag, "go", t, 1))
    assert c.read_line() == b"7" and c.read_exact(9) == b"part 1\n\r\n"
    assert c.read_line() == b"0" and c.read_line() == b""
    assert c.is_closed_by_peer()  # no keep-alive while shutting down
    assert s.wait() == 0
    assert len(markers(tag, "shutdown")) == int(workers)
    c.close()


def test_shutdown_waits_for_work_after_the_response(spawn, tmp_path):
    """An app still running after its response (like Starlette's BackgroundTasks) finishes before
    the lifespan shutdown, as under uvicorn."""
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", env={"LIBWSGI_TEST_TAG": tag})
    go = tmp_path / "go"
    r = request(s.port, "GET", "/background?token=bg&go=%s" % go)
    assert r.status == 200
    s.signal(signal.SIGTERM)
    wait_for(lambda: not can_serve(s.port), "the listener to close")
    assert s.proc.poll() is None  # waiting for the background work
    go.touch()
    assert s.wait() == 0
    assert [e[0] for e in events(tag)] == ["startup", "background-bg", "shutdown"]


def test_graceful_timeout_bounds_shutdown(spawn, tmp_path):
    tag = tagged()
    s = spawn("epoll", "asgi_corners:app", "--graceful-timeout", "1", env={"LIBWSGI_TEST_TAG": tag})
    r = request(s.port, "GET", "/background?token=stuck&go=%s" % (tmp_path / "never"))
    assert r.status == 200
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert "graceful timeout" in s.log()
    assert markers(tag, "shutdown") == [s.pid]  # the lifespan shutdown still ran


def conftest_touch(path):
    with open(path, "w"):
        pass
