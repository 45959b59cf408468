"""libwsgi-epoll as a program: command line, --threads, --workers (prefork, restarts), signals and
graceful shutdown."""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from conftest import EPOLL, Server, epoll_argv, free_port
from httpclient import Conn, build_request, request, wait_for


def run(*args, timeout=60):
    return subprocess.run([EPOLL] + list(args), capture_output=True, text=True, timeout=timeout)


# ---- command line ---------------------------------------------------------------------------------

def test_help():
    r = run("--help")
    assert r.returncode == 0
    for opt in ("--app", "--interface", "--bind", "--chdir", "--pythonpath", "--workers", "--threads",
                "--access-log", "--max-header-size", "--max-body-size", "--timeout-keepalive",
                "--timeout-request"):
        assert opt in r.stdout, opt


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("libwsgi-epoll ")


@pytest.mark.parametrize("args", [
    [],                                   # --app missing
    ["--app", "hello:app", "--workers", "0"],
    ["--app", "hello:app", "--threads", "x"],
    ["--app", "hello:app", "--bind", "nowhere"],
    ["--app", "hello:app", "--interface", "cgi"],
    ["--app", "hello:app", "--frobnicate"],
])
def test_usage_errors(args):
    r = run(*args)
    assert r.returncode == 2
    assert "error" in r.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_broken_app_exits_instead_of_looping(spawn, workers):
    s = spawn("epoll", "broken_app:app", "--workers", workers, ready=False)
    assert s.wait() == 3
    assert "broken on purpose" in s.log()


def test_port_in_use_is_an_error(spawn):
    s = spawn("epoll", "hello:app")
    r = run("--app", "hello:app", "--bind", "127.0.0.1:%d" % s.port)
    assert r.returncode == 1
    assert "Address already in use" in r.stderr


def test_chdir_and_cwd_on_sys_path(spawn, tmp_path):
    (tmp_path / "myapp.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    b = os.getcwd().encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(b)))])\n"
        "    return [b]\n")
    port = free_port()
    s = Server("epoll", [EPOLL, "--app", "myapp:app", "--chdir", str(tmp_path),
                         "--bind", "127.0.0.1:%d" % port], port=port)
    try:
        s.wait_ready()
        assert request(port, "GET", "/").body == str(tmp_path).encode()
    finally:
        s.stop()


def test_access_log_line(spawn):
    s = spawn("epoll", "corners:app", "--access-log")
    request(s.port, "GET", "/hello?x=1", [("User-Agent", "tester/1.0"), ("Referer", "http://ref/")])
    line = wait_for(lambda: [l for l in s.log().splitlines() if "/hello?x=1" in l], "access log")[0]
    # gunicorn's default %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s", plus the
    # request time in seconds %(L)s (issue 13: the combined format with request time)
    import re
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                        r'"GET /hello\?x=1 HTTP/1\.1" 200 14 "http://ref/" "tester/1\.0" \d+\.\d{6}',
                        line), line


# ---- threads ---------------------------------------------------------------------------------------

def concurrent_get(port, targets):
    results = [None] * len(targets)

    def one(i):
        results[i] = request(port, "GET", targets[i])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


def test_threads_run_slow_requests_concurrently(spawn):
    s = spawn("epoll", "corners:app", "--threads", "4")
    key = uuid.uuid4().hex
    # Each request waits in the app until all 4 are inside it: only possible with 4 threads.
    rs = concurrent_get(s.port, ["/barrier?n=4&key=" + key] * 4)
    assert [r.body for r in rs] == [b"together"] * 4


def test_slow_app_does_not_block_the_loop(spawn, tmp_path):
    s = spawn("epoll", "corners:app", "--threads", "2")
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the slow request to start")
    # While one thread is stuck in the app, the loop and the other thread serve others.
    for _ in range(5):
        assert request(s.port, "GET", "/hello").status == 200
    release.touch()
    assert c.read_response().body == b"released"
    c.close()


def all_threads_sleep(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        if state not in ("S", "D"):
            return False
    return True


@pytest.mark.parametrize("threads", ["0", "2"])
def test_connection_closed_while_a_forked_child_holds_its_socket(spawn, tmp_path, threads):
    # close() takes a socket out of an epoll set only when no other fd refers to it: a forked child
    # (an app's fork() before its exec, the SIGHUP bridge) keeps the registration alive, and its
    # events came for a connection already freed (use after free under ASan, a loop spinning on a
    # level-triggered EOF otherwise). The server must take it out of the set itself.
    s = spawn("epoll", "corners:app", "--threads", threads)
    release = tmp_path / "release"
    c = Conn(s.port)
    r = c.request("GET", "/fork-hold?release=%s" % release)
    child = int(r.body)
    try:
        c.close()  # EOF: the server closes its end while the child still holds the socket
        for _ in range(20):
            assert request(s.port, "GET", "/hello").status == 200
        wait_for(lambda: all_threads_sleep(s.pid), "every thread of the server to sleep")
        assert request(s.port, "GET", "/hello").status == 200
    finally:
        release.touch()
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass  # not ours: the server reaps it (or it has gone)


@pytest.mark.parametrize("then", ["pipelined", "half-close"])
def test_input_while_the_request_is_in_an_app_thread(spawn, tmp_path, then):
    # --threads: the connection's epoll registration stays level-triggered between requests (no
    # epoll_ctl per request). Its request blocks in the app, so the standby runs the loop; the
    # client then sends more (a pipelined request, or its FIN): the socket turns readable while an
    # app thread owns the connection. The loop must leave it alone (not read it, not spin on it)
    # and still serve others; once the app returns, the answer and what followed are handled.
    s = spawn("epoll", "corners:app", "--threads", "2")
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the slow request to start")
    if then == "pipelined":
        c.send(build_request("GET", "/environ?tag=second"))
    else:
        c.sock.shutdown(socket.SHUT_WR)
    for _ in range(20):
        assert request(s.port, "GET", "/hello").status == 200
    # Not spinning on the readable socket: at some moment every thread of the server sleeps (a
    # loop that took the event again and again would always be running or runnable).
    wait_for(lambda: all_threads_sleep(s.pid), "every thread of the server to sleep")
    release.touch()
    assert c.read_response().body == b"released"
    if then == "pipelined":
        second = c.read_response()
        assert second.status == 200 and json.loads(second.body)["QUERY_STRING"] == "tag=second"
    c.close()
    assert request(s.port, "GET", "/hello").status == 200


def test_every_thread_in_the_app_the_loop_still_serves(spawn, tmp_path):
    # --threads 2: two requests block in the app; the loop (run by the third thread of the team)
    # still answers what needs no app, and a request for the app waits its turn.
    s = spawn("epoll", "corners:app", "--threads", "2")
    conns = []
    for k in range(2):
        started, release = tmp_path / ("started%d" % k), tmp_path / "release"
        c = Conn(s.port)
        c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
        wait_for(started.exists, "slow request %d to start" % k)
        conns.append(c)
    with Conn(s.port) as bad:
        bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert bad.read_response().status == 400
    queued = Conn(s.port)
    queued.send(build_request("GET", "/hello"))
    (tmp_path / "release").touch()
    for c in conns:
        assert c.read_response().body == b"released"
        c.close()
    assert queued.read_response().status == 200
    queued.close()


def test_request_queued_while_every_thread_was_in_the_app_runs_on_the_loop_thread(spawn, tmp_path):
    # --threads 2, a team of three: two requests block in the app and the third thread runs the
    # loop with no standby, so it queues the next request for the app. Once a blocked thread is
    # back (it becomes the standby), the loop's thread runs the queued request itself, as it does
    # new ones. It used to go to the first thread back instead: under steady load the queue then
    # never emptied and every request was handed to a thread of its own (Flask at 64 connections:
    # twice the CPU per request of --threads 0).
    s = spawn("epoll", "corners:app", "--threads", "2")
    release = tmp_path / "release"
    blocked = []
    for k in range(2):
        started = tmp_path / ("started%d" % k)
        c = Conn(s.port)
        c.send(build_request("GET", "/wait?ident=1&started=%s&release=%s" % (started, release)))
        wait_for(started.exists, "slow request %d to start" % k)
        blocked.append(c)
    queued = Conn(s.port)
    queued.send(build_request("GET", "/ident"))
    # Answered by the loop itself, sent after the queued request: once it is answered, the loop
    # has read the queued one (and, with no standby, queued it).
    with Conn(s.port) as bad:
        bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert bad.read_response().status == 400
    release.touch()
    app_threads = set()
    for c in blocked:
        body = c.read_response().body
        assert body.startswith(b"released "), body
        app_threads.add(body.split()[1])
        c.close()
    r = queued.read_response()
    queued.close()
    assert r.status == 200
    assert len(app_threads) == 2 and r.body not in app_threads, (r.body, app_threads)


@pytest.fixture(scope="module")
def wake_order_shim():
    """tests/integration/shims/wake_order.c built into a temporary directory (an LD_PRELOAD
    library that makes the team's hand-over wake-ups interleave in one given way)."""
    cc = os.environ.get("CC") or "cc"
    d = tempfile.mkdtemp(prefix="libwsgi-shim-")
    so = os.path.join(d, "wake_order.so")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims", "wake_order.c")
    try:
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl", "-lpthread"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip("cannot build the LD_PRELOAD shim: %s" % e)
    return so


def test_queued_request_runs_when_the_standby_wake_up_was_read_early(spawn, tmp_path,
                                                                      wake_order_shim):
    # --threads 1, a team of two: a request blocks in the app and the other thread runs the loop
    # with no standby, so it queues the next request. When the blocked call returns, its thread
    # reports (a write to the loop's eventfd), becomes the standby and, the queue not being empty,
    # wakes the loop a second time. When the first wake-up had already woken the loop, the loop's
    # look at the queue (run_pending, at the top of an iteration) could come before that thread was
    # the standby, and its read of the eventfd later in the same iteration swallowed the second
    # wake-up too: the loop then slept in epoll_wait with a request it could run, until some other
    # event or timer (at most 250 ms, the idle heap trim, when nothing else happens). The shim makes
    # that interleaving happen (the scheduler's choice otherwise) and records any epoll_wait that
    # may block before the queued request has begun.
    arm, mark, log = tmp_path / "arm", tmp_path / "queued-started", tmp_path / "shim.log"
    release = tmp_path / "release"
    env = {"LD_PRELOAD": wake_order_shim, "LIBWSGI_SHIM_ARM": str(arm),
           "LIBWSGI_SHIM_MARK": str(mark), "LIBWSGI_SHIM_LOG": str(log),
           # ASan wants its runtime first in the library list.
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    s = spawn("epoll", "corners:app", "--threads", "1", env=env)
    started = tmp_path / "started"
    blocked = Conn(s.port)
    blocked.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the slow request to start")
    queued = Conn(s.port)
    queued.send(build_request("GET", "/wait?started=%s&release=%s" % (mark, release)))
    # Answered by the loop itself, sent after the queued request: once it is answered, the loop
    # has read the queued one (and, with no standby, queued it).
    with Conn(s.port) as bad:
        bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        assert bad.read_response().status == 400
    arm.touch()
    release.touch()
    assert blocked.read_response().body == b"released"
    assert queued.read_response().body == b"released"
    blocked.close()
    queued.close()
    records = log.read_text().split() if log.exists() else []
    assert records[:1] == ["parked"], records  # the interleaving took place
    assert "slept" not in records, records


@pytest.mark.parametrize("threads", ["1", "4"])
def test_mixed_fast_and_blocking_requests(spawn, threads):
    # Fast requests run on the loop's thread; blocking ones make the standby take the loop over
    # (a pipelined batch continues on the new leader). Every answer must come, right and in order.
    s = spawn("epoll", "corners:app", "--threads", threads)
    errors = []

    def client(i):
        try:
            with Conn(s.port) as c:
                for k in range(30):
                    if k % 5 == 0:
                        tags = ["c%dk%dp%d" % (i, k, p) for p in range(3)]
                        c.send(b"".join(build_request("GET", "/sleep?ms=3&tag=" + t) if p == 0 else
                                        build_request("GET", "/environ?tag=" + t)
                                        for p, t in enumerate(tags)))
                        first = c.read_response()
                        assert first.body == tags[0].encode(), first.body
                        for t in tags[1:]:
                            r = c.read_response()
                            assert json.loads(r.body)["QUERY_STRING"] == "tag=" + t
                    else:
                        assert c.request("GET", "/hello").status == 200
        except Exception as e:  # reported below: an assert in a thread would be lost
            errors.append("client %d: %r" % (i, e))

    ts = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    assert all(not t.is_alive() for t in ts)


def test_threads_zero_serves_inline(spawn):
    s = spawn("epoll", "corners:app", "--threads", "0")
    env = json.loads(request(s.port, "GET", "/environ").body)
    assert env["wsgi.multithread"] is False
    with Conn(s.port) as c:
        for _ in range(10):
            assert c.request("GET", "/hello").status == 200


# ---- workers and signals ------------------------------------------------------------------------

def child_pids(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def test_workers_serve_on_one_port(spawn):
    # --reuse-port: one SO_REUSEPORT socket per worker (the default, one shared socket, is
    # test_deploy.py's).
    s = spawn("epoll", "corners:app", "--workers", "2", "--threads", "2", "--reuse-port")
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    workers = set(child_pids(s.pid))
    seen = set()

    def both_answered():
        # SO_REUSEPORT spreads new connections by their source port; once both workers listen
        # (each loads the app first), a few requests reach both.
        seen.add(int(request(s.port, "GET", "/pid").body))
        return seen == workers
    wait_for(both_answered, "both workers to answer", step=0)
    env = json.loads(request(s.port, "GET", "/environ").body)
    assert env["wsgi.multiprocess"] is True
    assert s.stop() == 0


def can_serve(port):
    try:
        return request(port, "GET", "/hello").status == 200
    except (OSError, EOFError):
        # EOFError: accepted by the kernel into the backlog of a listener that a draining worker
        # then closed (the kernel resets such connections).
        return False


def listening_sockets(port):
    """Sockets in LISTEN state on 127.0.0.1:port (each worker has its own SO_REUSEPORT one, and
    listens only once its app is loaded; the master's is bound but never listening)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[1] == "0100007F:%04X" % port and r[3] == "0A")


def test_master_restarts_dead_worker(spawn):
    s = spawn("epoll", "corners:app", "--workers", "2", "--reuse-port")
    # Both workers listening: killing one must not leave the port without a listener (on a
    # loaded machine the second can still be loading its app when the first already serves).
    wait_for(lambda: len(child_pids(s.pid)) == 2 and listening_sockets(s.port) == 2, "two workers")
    victim = child_pids(s.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(child_pids(s.pid)) == 2 and victim not in child_pids(s.pid)
             and listening_sockets(s.port) == 2, "a replacement worker")
    for _ in range(20):
        assert request(s.port, "GET", "/hello").status == 200
    assert "was killed by signal 9" in s.log()
    assert s.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_in_flight_request(spawn, tmp_path, workers, sig):
    s = spawn("epoll", "corners:app", "--workers", workers, "--threads", "2")
    if workers == "2":
        wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the request to reach the app")
    # An idle keep-alive connection is closed at once on shutdown.
    idle = Conn(s.port)
    assert idle.request("GET", "/hello").status == 200
    s.signal(sig)
    assert idle.is_closed_by_peer() or True  # may have been served by another worker
    # New connections are refused once every worker has stopped listening.
    wait_for(lambda: not can_serve(s.port), "the listeners to close")
    assert s.proc.poll() is None  # still finishing the in-flight request
    release.touch()
    r = c.read_response()
    assert r.status == 200 and r.body == b"released"
    assert r.header("Connection", "").lower() == "close"
    assert s.wait() == 0
    c.close()
    idle.close()


@pytest.mark.parametrize("app", ["corners:app", "asgi_corners:app"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_right_after_listen_is_a_graceful_shutdown(app, sig):
    """A client may see the port open (and a supervisor may stop the server) as soon as listen()
    returns, before the event loop has installed its signal handlers: a SIGTERM/SIGINT then must
    still be a graceful exit 0, not a death by signal. strace holds the server for a moment right
    after its listen() (found by the ASan run, where that moment is longer), so the signal
    deterministically arrives there."""
    port = free_port()
    argv = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=listen",
            "-e", "inject=listen:delay_exit=1000000"] + epoll_argv(app, bind="127.0.0.1:%d" % port)
    s = Server("strace-epoll", argv, port=port).wait_ready()
    try:
        with open("/proc/%d/task/%d/children" % (s.pid, s.pid)) as f:
            (server_pid,) = [int(x) for x in f.read().split()]
        os.kill(server_pid, sig)
        assert s.wait() == 0, s.log()  # strace exits with the status of the server
    finally:
        s.kill()


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_sigint_to_the_master_stops_at_once(spawn, tmp_path, first):
    """docs/configuration.md: "A second SIGINT stops at once", as uvicorn's second Ctrl-C. With
    a master (kill -INT twice, not a terminal's Ctrl-C that reaches the workers too) the master
    must pass the hurry on instead of waiting out the grace period for a stuck request."""
    s = spawn("epoll", "corners:app", "--workers", "2", "--threads", "2",
              "--graceful-timeout", "3600")
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the request to reach the app")
    s.signal(first)
    wait_for(lambda: "shutting down gracefully" in s.log(), "the master's graceful shutdown")
    s.signal(signal.SIGINT)
    try:
        s.wait(guard=15)  # not the 3600 s grace period
    finally:
        release.touch()
        c.close()


def test_graceful_timeout_bounds_shutdown(spawn, tmp_path):
    s = spawn("epoll", "corners:app", "--threads", "2", "--graceful-timeout", "1")
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, "the request to reach the app")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0  # did not wait for the stuck request beyond the grace period
    assert "graceful timeout" in s.log()
    release.touch()
    c.close()


def test_shutdown_closes_connection_idle_after_a_drained_body(spawn):
    # The app answered without reading the body; the server drains the rest to keep the
    # connection. Once that is done during a shutdown the connection is idle: it must be closed
    # like the idle ones, not kept until the graceful timeout.
    s = spawn("epoll", "corners:app", "--threads", "2", "--timeout-keepalive", "3600",
              "--graceful-timeout", "20")
    c = Conn(s.port)
    c.send(build_request("POST", "/hello", [("Content-Length", "200000")]) + b"x" * 100)
    r = c.read_response()
    assert r.status == 200 and r.header("Connection") is None  # kept: the rest is drained
    s.signal(signal.SIGTERM)
    wait_for(lambda: not can_serve(s.port), "the listener to close")
    c.send(b"x" * 199900)
    assert c.is_closed_by_peer()
    assert s.wait() == 0
    assert "graceful timeout" not in s.log()
    c.close()


@pytest.mark.parametrize("threads", ["2", "0"])
def test_graceful_timeout_closes_response_of_slow_reader(spawn, tmp_path, threads):
    # A response waiting for a client that does not read (EPOLLOUT) when the grace period ends:
    # the iterable's close() must still run before the worker exits (PEP 3333).
    s = spawn("epoll", "corners:app", "--threads", threads, "--graceful-timeout", "1")
    token, mark = uuid.uuid4().hex, tmp_path / "closed"
    c = Conn(s.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(build_request("GET", "/forever?token=%s&size=65536&mark=%s" % (token, mark)))
    c.read_head()  # the response is under way; the body is never read
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert "graceful timeout" in s.log()
    assert mark.exists(), s.log()
    c.close()


def test_graceful_timeout_closes_inline_response_of_fast_reader(spawn, tmp_path):
    # --threads 0: a response of tiny chunks to a client that reads everything never fills the
    # socket, so between loop turns the connection waits on the ready list (its chunk budget spent)
    # rather than for EPOLLOUT. When the grace period ends there, close() must still run.
    s = spawn("epoll", "corners:app", "--threads", "0", "--graceful-timeout", "1")
    token, mark = uuid.uuid4().hex, tmp_path / "closed"
    c = Conn(s.port)
    c.send(build_request("GET", "/forever?token=%s&size=1&mark=%s" % (token, mark)))
    c.read_head()

    def drain():
        try:
            while c.sock.recv(65536):
                pass
        except OSError:
            pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert "graceful timeout" in s.log()
    assert mark.exists(), s.log()
    reader.join(30)
    c.close()


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accepting(spawn, tmp_path):
    # accept() failing with EMFILE while no connection is open (nothing will close to free a
    # descriptor) must not spin on the listener, which stays readable; accepting resumes once
    # descriptors are free again.
    s = spawn("epoll", "corners:app")
    release, ready = tmp_path / "release", tmp_path / "ready"
    r = request(s.port, "GET", "/hog-fds?release=%s&ready=%s" % (release, ready),
                headers=[("Connection", "close")])
    assert r.status == 200 and json.loads(r.body)["hogged"] > 0
    wait_for(ready.exists, "the app to hold every descriptor, the connection's too")
    c = Conn(s.port)  # completed by the kernel; the server cannot accept it
    wait_for(lambda: "pausing new connections" in s.log(), "accept() failing with EMFILE")
    wall, cpu = time.monotonic(), cpu_seconds(s.pid)
    time.sleep(2)  # a window to measure, not a wait for anything
    wall, cpu = time.monotonic() - wall, cpu_seconds(s.pid) - cpu
    assert cpu < wall / 2, "busy loop: %.2fs of CPU in %.2fs" % (cpu, wall)
    release.touch()
    r = c.request("GET", "/hello")
    assert r.status == 200 and r.body == b"Hello, World!\n"
    c.close()


def test_sigquit_stops_at_once(spawn, tmp_path):
    s = spawn("epoll", "corners:app", "--workers", "2")
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    s.signal(signal.SIGQUIT)
    s.wait()


def process_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_operator_signals_never_stop_or_kill_a_single_process_server(spawn):
    """gunicorn's operator signals sent to a server running as one process (the default): their
    default actions would stop it (SIGTTIN, SIGTTOU: the process hung in state T) or kill it
    (SIGUSR1 without an access log, SIGUSR2). Each is logged and the server goes on serving."""
    s = spawn("epoll", "hello:app")
    expect = {signal.SIGTTIN: "SIGTTIN / SIGTTOU ignored", signal.SIGTTOU: "SIGTTIN / SIGTTOU ignored",
              signal.SIGUSR1: "SIGUSR1: no access log file to reopen",
              signal.SIGUSR2: "SIGUSR2 ignored"}
    for sig, words in expect.items():
        before = s.log().count(words)
        s.signal(sig)
        wait_for(lambda: s.log().count(words) > before, "the %s line" % sig.name)
        assert process_state(s.pid) in ("S", "R"), sig.name
        assert request(s.port, "GET", "/").status == 200
    assert s.proc.poll() is None


def test_operator_signals_a_prefork_server_survives(spawn):
    """With a master: SIGUSR1 without an access log reaches the workers, which have nothing to
    reopen (it used to kill them, even while booting: the master restarted them); SIGUSR2 is
    logged by the master, which it used to kill. The same workers serve on."""
    s = spawn("epoll", "hello:app", "--workers", "2")
    pids = lambda: sorted(re.findall(r"booted worker \d with pid (\d+)", s.log()))
    wait_for(lambda: len(pids()) == 2, "two workers")
    before = pids()
    s.signal(signal.SIGUSR1)  # at once: the workers may still be booting
    s.signal(signal.SIGUSR2)
    wait_for(lambda: "SIGUSR2 ignored" in s.log(), "the master's line")
    for _ in range(4):
        assert request(s.port, "GET", "/").status == 200
    assert s.proc.poll() is None and pids() == before
    assert "exited" not in s.log() and "killed" not in s.log()


def test_operator_signals_while_a_single_process_imports_its_app(tmp_path):
    """SIGTTIN, SIGTTOU, SIGUSR1 (no access log) and SIGUSR2 sent while the app is still being
    imported (a first start, or the new image of a SIGHUP reload) neither stop nor kill the
    server: they wait, blocked, for the event loop, which logs them."""
    started, release = tmp_path / "started", tmp_path / "release"
    port = free_port()
    s = Server("epoll", epoll_argv("slow_import_app:app", bind="127.0.0.1:%d" % port), port=port,
               env={"SLOW_IMPORT_STARTED": str(started), "SLOW_IMPORT_RELEASE": str(release)})
    try:
        wait_for(lambda: started.exists(), "the import under way")
        for sig in (signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2):
            s.signal(sig)
        assert process_state(s.pid) in ("S", "R")
        release.write_text("go")
        s.wait_ready()
        assert request(port, "GET", "/").body == b"ok"
        wait_for(lambda: "SIGUSR2 ignored" in s.log() and "SIGUSR1: no access log" in s.log()
                 and "SIGTTIN / SIGTTOU ignored" in s.log(), "the signals logged")
        assert process_state(s.pid) in ("S", "R") and s.proc.poll() is None
    finally:
        release.write_text("go")
        s.stop()
