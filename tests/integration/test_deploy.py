"""Processes and deploys (issue 13): the shared listening socket, worker recycling (--max-requests,
--max-worker-memory), --timeout, --preload, SIGHUP / SIGTTIN / SIGTTOU, --pid, --reload, bounded
shutdown, systemd socket activation and notification, --umask / --user.

Every wait is an event (a file, a log line, a PID changing) guarded by a generous timeout that only
turns a hang into a failure; no assertion is about how long something took.
"""

import os
import signal
import socket
import ssl
import stat
import subprocess
import threading

import pytest

from conftest import Server, epoll_argv, free_port
from httpclient import Conn, build_request, request, wait_for
from wsclient import WSClient

LOG_GUARD = 60.0


def child_pids(pid):
    """The children of every thread of pid (a reload's bridge is forked by the thread that runs
    the event loop, not necessarily the main one)."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return sorted(out)


def listening_sockets(port):
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[1] == "0100007F:%04X" % port and r[3] == "0A")


def pid_of(port, path="/pid"):
    r = request(port, "GET", path)
    assert r.status == 200, r
    return int(r.body)


def wait_log(s, text, count=1):
    wait_for(lambda: s.log().count(text) >= count, repr(text) + " in the log", guard=LOG_GUARD,
             step=0.05)


class Hammer:
    """A concurrent client: requests /pid on new connections until stopped; every failure counts."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.failures = []
        self.pids = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                r = request(self.port, "GET", "/pid")
                if r.status == 200:
                    self.ok += 1
                    self.pids.add(int(r.body.split()[-1]))
                else:
                    self.failures.append(r.status)
            except (OSError, EOFError) as e:
                self.failures.append(repr(e))

    def stop(self):
        self._stop.set()
        self._t.join(30)
        return self


# ---- the listening socket -----------------------------------------------------------------------

def test_shared_socket_goes_to_the_idle_worker(spawn, tmp_path):
    # One listening socket for both workers: with one worker stuck in a request (--threads 0),
    # every new connection is served by the other one.
    s = spawn("epoll", "deploy_app:app", "--workers", "2", "--threads", "0")
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    wait_log(s, "2 workers ready")
    assert listening_sockets(s.port) == 1
    c, release = start_slow(s.port, tmp_path, "the request to reach the app")
    others = {pid_of(s.port) for _ in range(20)}
    release.touch()
    busy = int(c.read_response().body)
    c.close()
    assert len(others) == 1 and busy not in others
    assert others | {busy} == set(child_pids(s.pid))


def test_reuse_port_gives_each_worker_a_socket(spawn):
    s = spawn("epoll", "deploy_app:app", "--workers", "2", "--reuse-port")
    wait_for(lambda: listening_sockets(s.port) == 2, "two SO_REUSEPORT sockets")
    assert pid_of(s.port) in child_pids(s.pid)


def test_dead_worker_replaced_on_the_shared_socket(spawn):
    s = spawn("epoll", "deploy_app:app", "--workers", "2")
    wait_log(s, "2 workers ready")
    victim = child_pids(s.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(child_pids(s.pid)) == 2 and victim not in child_pids(s.pid), "a new worker")
    for _ in range(20):
        assert pid_of(s.port) != victim


# ---- recycling ---------------------------------------------------------------------------------

def restarts(mport, reason):
    """libwsgi_worker_restarts_total{reason=...} from the metrics endpoint."""
    body = request(mport, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith('libwsgi_worker_restarts_total{reason="%s"}' % reason):
            return int(float(line.split()[-1]))
    raise AssertionError("no restarts counter for %s in:\n%s" % (reason, body))


def test_max_requests_replaces_the_worker_without_failures(spawn):
    mport = free_port()
    s = spawn("epoll", "deploy_app:app", "--max-requests", "20", "--max-requests-jitter", "5",
              "--metrics-bind", "127.0.0.1:%d" % mport)
    first = pid_of(s.port)
    h = Hammer(s.port)
    wait_for(lambda: any(p != first for p in set(h.pids)), "a new worker to answer", guard=LOG_GUARD)
    h.stop()
    assert h.failures == []
    assert "asks to be replaced (max requests)" in s.log()
    wait_for(lambda: first not in child_pids(s.pid), "the old worker to exit")
    assert pid_of(s.port) != first
    assert restarts(mport, "max_requests") >= 1
    assert s.stop() == 0


def test_max_worker_memory_replaces_the_worker(spawn):
    # Any Python worker is over 1 MiB: it asks for a replacement, which is up before it stops.
    s = spawn("epoll", "deploy_app:app", "--max-worker-memory", "1")
    first = pid_of(s.port)
    wait_log(s, "asks to be replaced (max worker memory)")
    wait_for(lambda: first not in child_pids(s.pid), "the old worker to exit", guard=LOG_GUARD)
    assert pid_of(s.port) != first


# ---- --timeout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", ["0", "2"])
def test_timeout_closes_the_stuck_request_and_replaces_the_worker(spawn, tmp_path, threads):
    s = spawn("epoll", "deploy_app:app", "--timeout", "1", "--threads", threads)
    first = pid_of(s.port)
    started = tmp_path / "started"
    c = Conn(s.port)
    c.send(build_request("GET", "/stuck?started=%s" % started))
    wait_for(started.exists, "the request to reach the app")
    # The watchdog closes it: EOF (or a reset) without a response.
    assert c.is_closed_by_peer()
    c.close()
    log = s.log()
    assert "timeout: GET /stuck?started=" in log and "from 127.0.0.1:" in log
    # faulthandler's dump of the stuck thread, marked as the current one.
    wait_log(s, "in stuck_forever_in_the_app")
    assert "Current thread" in s.log()
    wait_log(s, "asks to be replaced (timeout)")
    wait_for(lambda: first not in child_pids(s.pid), "the stuck worker to go", guard=LOG_GUARD)
    assert pid_of(s.port) != first
    assert s.stop() == 0


def test_timeout_replaces_a_worker_whose_asgi_loop_is_blocked(spawn, tmp_path):
    s = spawn("epoll", "deploy_asgi:app", "--timeout", "1")
    first = pid_of(s.port)
    started = tmp_path / "started"
    c = Conn(s.port)
    c.send(build_request("GET", "/block?started=%s" % started))
    wait_for(started.exists, "the request to reach the app")
    wait_log(s, "the event loop is blocked")
    wait_log(s, "in block_the_loop")
    wait_log(s, "asks to be replaced (event loop blocked)")
    wait_for(lambda: first not in child_pids(s.pid), "the blocked worker to go", guard=LOG_GUARD)
    c.close()
    assert pid_of(s.port) != first
    assert s.stop() == 0


def test_timeout_cancels_an_awaiting_asgi_request(spawn, tmp_path):
    # An ASGI request that awaits past --timeout has its task cancelled (the app sees
    # CancelledError, logged with where it waited); the worker stays.
    s = spawn("epoll", "deploy_asgi:app", "--timeout", "1")
    first = pid_of(s.port)
    cancelled = tmp_path / "cancelled"
    r = request(s.port, "GET", "/await?cancelled=%s" % cancelled)
    assert r.status == 500
    assert cancelled.exists()
    log = s.log()
    assert "timeout: GET /await?cancelled=" in log and "cancelling it" in log
    assert "cancelling the ASGI app's task" in log and "in app" in log
    assert pid_of(s.port) == first
    assert s.stop() == 0


# ---- --preload, signals, --pid -----------------------------------------------------------------

def test_preload_imports_in_the_master(spawn):
    s = spawn("epoll", "deploy_app:app", "--preload", "--workers", "2")
    wait_log(s, "2 workers ready")
    assert int(request(s.port, "GET", "/imported-by").body) == s.pid
    assert pid_of(s.port) in child_pids(s.pid)
    assert s.stop() == 0


def write_app(d, version):
    # Versions of different lengths: a .pyc of the same size and mtime second would be taken for
    # the new source.
    version = version + "+" * int(version[1:])
    (d / "versioned.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = b'%s %%d' %% os.getpid()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n" % version)


def version_of(port):
    return request(port, "GET", "/").body.split()[0].decode().rstrip("+")


def test_sighup_reloads_fresh_code_without_failed_requests(spawn, tmp_path):
    write_app(tmp_path, "v1")
    s = spawn("epoll", "versioned:app", "--workers", "2", "--chdir", str(tmp_path))
    wait_log(s, "2 workers ready")
    old = set(child_pids(s.pid))
    assert version_of(s.port) == "v1"
    write_app(tmp_path, "v2")
    h = Hammer(s.port)
    s.signal(signal.SIGHUP)
    wait_log(s, "reload done")
    wait_for(lambda: not (old & set(child_pids(s.pid))), "the old workers to exit")
    h.stop()
    assert h.failures == [] and h.ok > 0
    assert version_of(s.port) == "v2"
    assert s.stop() == 0


def test_broken_deploy_does_not_take_down_a_server_that_was_serving(spawn, tmp_path):
    """A worker that fails to boot stops the server only at its start (a broken app exits instead
    of looping: test_process.py). Once it has served, a SIGHUP to broken code leaves the old
    workers serving; a worker that dies then, or one added by SIGTTIN, cannot boot either: the
    master retries it (logging the failure) and the other worker goes on serving, instead of the
    master stopping them all."""
    write_app(tmp_path, "v1")
    s = spawn("epoll", "versioned:app", "--workers", "2", "--chdir", str(tmp_path))
    wait_log(s, "2 workers ready")
    (tmp_path / "versioned.py").write_text("raise RuntimeError('broken deploy')\n")
    s.signal(signal.SIGHUP)
    wait_log(s, "failed to boot", 2)  # both replacements: the old workers keep serving
    assert version_of(s.port) == "v1"
    os.kill(child_pids(s.pid)[0], signal.SIGKILL)
    wait_log(s, "was killed by signal")
    s.signal(signal.SIGTTIN)
    n = s.log().count("failed to boot")
    wait_log(s, "failed to boot", n + 2)  # the restart and the added worker: retried, not fatal
    assert s.proc.poll() is None, "the master stopped the server:\n" + s.log()[-2000:]
    for _ in range(10):
        assert version_of(s.port) == "v1"
    write_app(tmp_path, "v3")  # fixed: the empty slots fill again
    wait_for(lambda: len(child_pids(s.pid)) == 3, "three workers", guard=30)
    assert s.stop() == 0


def test_old_worker_stuck_in_the_app_is_killed_after_the_graceful_timeout(spawn, tmp_path):
    """--graceful-timeout: "the prefork master kills workers still running 5 s after it", also
    the old workers of a SIGHUP reload. One whose event loop is stuck in the app (--threads 0)
    cannot act on its SIGTERM, and lived on for as long as the app call did."""
    s = spawn("epoll", "corners:app", "--workers", "2", "--threads", "0", "--graceful-timeout", "1")
    wait_log(s, "2 workers ready")
    old = set(child_pids(s.pid))
    started, release = tmp_path / "started", tmp_path / "release"
    c = Conn(s.port)
    try:
        c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
        wait_for(started.exists, "the request to reach the app")
        s.signal(signal.SIGHUP)
        wait_log(s, "reload done")
        # The app call lasts 60 s unless released: well beyond the 1 + 5 s.
        wait_for(lambda: not (old & set(child_pids(s.pid))), "the old workers to be gone",
                 guard=30)
        assert "was killed by signal" not in s.log()  # an old worker is no crash
    finally:
        release.touch()
        c.close()
    assert s.stop() == 0


def test_ttin_ttou_and_pid_file(spawn, tmp_path):
    pid_file = tmp_path / "server.pid"
    s = spawn("epoll", "deploy_app:app", "--workers", "2", "--pid", str(pid_file))
    assert int(pid_file.read_text()) == s.pid
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    s.signal(signal.SIGTTIN)
    wait_for(lambda: len(child_pids(s.pid)) == 3, "three workers")
    s.signal(signal.SIGTTOU)
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers again")
    s.signal(signal.SIGTTOU)  # one at a time: signals of one kind coalesce
    wait_for(lambda: len(child_pids(s.pid)) == 1, "one worker")
    s.signal(signal.SIGTTOU)  # never fewer than one
    assert pid_of(s.port) in child_pids(s.pid)
    assert s.stop() == 0
    assert not pid_file.exists()


# ---- SIGHUP without a master (one process: examples/epoll/reexec.c) ----------------------------

def write_hup_app(d, version):
    """versioned.py of write_app, plus /wait: a request held until the test releases it."""
    version = version + "+" * int(version[1:])
    (d / "hupapp.py").write_text(
        "import os, time\n"
        "from urllib.parse import parse_qs\n"
        "VERSION = %r\n"
        "def app(environ, start_response):\n"
        "    q = {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}\n"
        "    if environ['PATH_INFO'] == '/wait':\n"
        "        open(q['started'], 'w').close()\n"
        "        deadline = time.monotonic() + 60\n"
        "        while not os.path.exists(q['release']) and time.monotonic() < deadline:\n"
        "            time.sleep(0.01)\n"
        "    body = b'%%s %%d' %% (VERSION.encode(), os.getpid())\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n" % version)


def wait_reloaded(s, count=1, keep=()):
    """The count-th reload done and its bridge gone (until it has seen its SIGTERM, the bridge
    may still answer a connection)."""
    wait_log(s, "reload done", count)
    wait_for(lambda: [p for p in child_pids(s.pid) if p not in keep] == [], "the bridge to exit",
             guard=LOG_GUARD)


def served(port, **kw):
    """(version, pid) of the process that answered."""
    version, pid = request(port, "GET", "/", **kw).body.split()
    return version.decode().rstrip("+"), int(pid)


def start_slow(port, d, what="the slow request to reach the app"):
    """A request held in the app (apps' /wait) until the returned path is touched: (conn, release)."""
    started, release = d / "started", d / "release"
    c = Conn(port)
    c.send(build_request("GET", "/wait?started=%s&release=%s" % (started, release)))
    wait_for(started.exists, what)
    return c, release


def test_sighup_without_master_reloads_in_the_same_process(spawn, tmp_path):
    # One process (the default): SIGHUP starts a bridge process with the new code; the old image
    # finishes its in-flight request while the bridge serves, then executes itself again (same
    # pid) and stops the bridge. A concurrent client sees no failure.
    write_hup_app(tmp_path, "v1")
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path))
    assert served(s.port) == ("v1", s.pid)
    slow, release = start_slow(s.port, tmp_path)
    write_hup_app(tmp_path, "v2")
    h = Hammer(s.port)
    s.signal(signal.SIGHUP)
    wait_log(s, "serves the new code")
    # The old image waits for its request; the bridge (a child) answers with the new code.
    bridge = child_pids(s.pid)
    assert len(bridge) == 1
    assert served(s.port) == ("v2", bridge[0])
    release.touch()
    r = slow.read_response()
    slow.close()
    assert r.status == 200 and r.body.split()[0].rstrip(b"+") == b"v1"
    assert int(r.body.split()[1]) == s.pid
    wait_reloaded(s)
    h.stop()
    assert h.failures == [] and h.ok > 0
    assert served(s.port) == ("v2", s.pid)
    # Again: the re-executed image reloads like the first one.
    write_hup_app(tmp_path, "v3")
    s.signal(signal.SIGHUP)
    wait_reloaded(s, 2)
    assert served(s.port) == ("v3", s.pid)
    assert s.stop() == 0


def test_sighup_without_master_with_a_relative_chdir(spawn, tmp_path):
    # --chdir app from tmp_path: the command line means what it meant at the start (the app's
    # directory is tmp_path/app), for the bridge and for the re-executed image alike, although
    # the process has been in tmp_path/app since it loaded the app.
    (tmp_path / "app").mkdir()
    write_hup_app(tmp_path / "app", "v1")
    s = spawn("epoll", "hupapp:app", "--chdir", "app", cwd=str(tmp_path))
    assert served(s.port) == ("v1", s.pid)
    write_hup_app(tmp_path / "app", "v2")
    s.signal(signal.SIGHUP)
    wait_for(lambda: "reload done" in s.log() or "reload failed" in s.log(), "the reload's end",
             guard=LOG_GUARD)
    assert "reload failed" not in s.log(), s.log()
    wait_reloaded(s)
    assert served(s.port) == ("v2", s.pid)
    write_hup_app(tmp_path / "app", "v3")
    s.signal(signal.SIGHUP)
    wait_reloaded(s, 2)
    assert served(s.port) == ("v3", s.pid)
    assert s.stop() == 0


def test_sighup_without_master_keeps_serving_after_a_syntax_error(spawn, tmp_path):
    write_hup_app(tmp_path, "v1")
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path), "--threads", "0")
    (tmp_path / "hupapp.py").write_text("def app(:\n")
    s.signal(signal.SIGHUP)
    wait_log(s, "reload failed")
    assert "SyntaxError" in s.log()
    wait_for(lambda: child_pids(s.pid) == [], "the failed bridge to be reaped", guard=LOG_GUARD)
    assert served(s.port) == ("v1", s.pid)
    write_hup_app(tmp_path, "v2")
    s.signal(signal.SIGHUP)
    wait_reloaded(s)
    assert served(s.port) == ("v2", s.pid)
    assert s.stop() == 0


def test_sighup_without_master_stop_during_the_reload_stops_the_bridge(spawn, tmp_path):
    write_hup_app(tmp_path, "v1")
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path))
    slow, release = start_slow(s.port, tmp_path)
    s.signal(signal.SIGHUP)
    wait_log(s, "serves the new code")
    bridge = child_pids(s.pid)
    assert len(bridge) == 1
    s.signal(signal.SIGTERM)
    release.touch()
    assert slow.read_response().status == 200
    slow.close()
    assert s.wait() == 0
    wait_for(lambda: not os.path.exists("/proc/%d" % bridge[0]), "the bridge to exit",
             guard=LOG_GUARD)
    assert "executing" not in s.log()


def test_sighup_without_master_bridge_serves_when_the_new_image_fails(spawn, tmp_path):
    # The bridge imports the new code, the re-executed image (same pid) does not (the files
    # changed in between; here: the app fails in the pid named by fail-in): the bridge keeps
    # serving and the process waits for it; the next SIGHUP tries the exec again.
    write_hup_app(tmp_path, "v1")
    src = (tmp_path / "hupapp.py").read_text()
    (tmp_path / "hupapp.py").write_text(
        "import os\n"
        "if os.path.exists('fail-in') and open('fail-in').read() == str(os.getpid()):\n"
        "    raise RuntimeError('the new image fails')\n" + src)
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path))
    (tmp_path / "fail-in").write_text(str(s.pid))
    s.signal(signal.SIGHUP)
    wait_log(s, "waits for it")
    bridge = child_pids(s.pid)
    assert len(bridge) == 1 and "the new image fails" in s.log()
    assert served(s.port) == ("v1", bridge[0])
    (tmp_path / "fail-in").unlink()
    s.signal(signal.SIGHUP)
    wait_reloaded(s)
    assert served(s.port) == ("v1", s.pid)
    assert s.stop() == 0


def test_sighup_without_master_bridge_serves_when_the_new_image_fails_early(spawn, tmp_path):
    # As above, but the re-executed image fails before it even loads the app: its
    # --access-logfile cannot be opened any more (here: a directory took the file's place while
    # the old image finished its request). It exited with status 2 and left the bridge running
    # with nobody to stop it; now it waits for the bridge, and the next SIGHUP tries again.
    write_hup_app(tmp_path, "v1")
    log = tmp_path / "access.log"
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path), "--access-logfile", str(log))
    slow, release = start_slow(s.port, tmp_path)
    s.signal(signal.SIGHUP)
    wait_log(s, "serves the new code")
    bridge = child_pids(s.pid)
    assert len(bridge) == 1
    log.unlink()
    log.mkdir()
    release.touch()
    assert slow.read_response().status == 200
    slow.close()
    wait_log(s, "waits for it")
    assert s.proc.poll() is None, s.log()
    assert child_pids(s.pid) == bridge
    assert served(s.port) == ("v1", bridge[0])
    log.rmdir()
    s.signal(signal.SIGHUP)
    wait_reloaded(s)
    assert served(s.port) == ("v1", s.pid)
    assert s.stop() == 0


def test_sighup_without_master_unix_socket_pid_file_and_metrics(spawn, tmp_path):
    # The unix socket is handed over (not bound again, not unlinked), the pid file keeps the
    # pid, the metrics endpoint keeps its counters and counts the reload.
    write_hup_app(tmp_path, "v1")
    path, pid_file, mport = str(tmp_path / "s.sock"), tmp_path / "server.pid", free_port()
    s = spawn("epoll", "hupapp:app", "--chdir", str(tmp_path), "--pid", str(pid_file),
              "--metrics-bind", "127.0.0.1:%d" % mport, unix_path=path)
    for _ in range(3):
        assert served(None, unix_path=path) == ("v1", s.pid)
    # A request is counted when the server has freed it, maybe after the client has its answer.
    wait_for(lambda: total_requests(mport) == 3, "three requests counted")
    write_hup_app(tmp_path, "v2")
    s.signal(signal.SIGHUP)
    wait_reloaded(s, keep=[metrics_pid(s)])
    assert child_pids(s.pid) == [metrics_pid(s)]
    assert served(None, unix_path=path) == ("v2", s.pid)
    assert int(pid_file.read_text()) == s.pid
    wait_for(lambda: total_requests(mport) == 4, "the counters kept, and the fourth request")
    assert restarts(mport, "reload") == 1
    assert s.stop() == 0
    assert not os.path.exists(path) and not pid_file.exists()


def total_requests(mport):
    body = request(mport, "GET", "/metrics").body.decode()
    return sum(int(float(line.split()[-1])) for line in body.splitlines()
               if line.startswith("libwsgi_requests_total{"))


def metrics_pid(s):
    return int(s.log().split("/metrics (pid ")[1].split(")")[0])


def test_sighup_without_master_sends_websockets_1001(spawn):
    s = spawn("epoll", "deploy_asgi:app", "--graceful-timeout", "2")
    ws = WSClient.open(s.port, "/ws")
    ws.send_text("hi")
    assert ws.recv_data() == "hi"
    s.signal(signal.SIGHUP)
    code, _ = ws.server_close()
    assert code == 1001
    ws.close()
    wait_reloaded(s)
    assert pid_of(s.port) == s.pid
    assert s.stop() == 0


# ---- --reload ----------------------------------------------------------------------------------

def test_reload_restarts_on_a_change_and_survives_a_syntax_error(spawn, tmp_path):
    write_app(tmp_path, "v1")
    s = spawn("epoll", "versioned:app", "--reload", "--chdir", str(tmp_path))
    assert version_of(s.port) == "v1"
    write_app(tmp_path, "v2")
    wait_for(lambda: version_of(s.port) == "v2", "the edited app to be served", guard=LOG_GUARD)
    # A syntax error: the new worker fails to boot, the old one keeps serving v2.
    (tmp_path / "versioned.py").write_text("def app(:\n")
    wait_log(s, "SyntaxError")
    wait_log(s, "the old worker keeps serving")
    assert version_of(s.port) == "v2"
    write_app(tmp_path, "v3")
    wait_for(lambda: version_of(s.port) == "v3", "the fixed app to be served", guard=LOG_GUARD)
    assert s.stop() == 0


# ---- bounded shutdown --------------------------------------------------------------------------

def test_reload_sends_websockets_1001_and_ends_streams(spawn):
    s = spawn("epoll", "deploy_asgi:app", "--workers", "2", "--graceful-timeout", "2")
    wait_log(s, "2 workers ready")
    ws = WSClient.open(s.port, "/ws")
    ws.send_text("hi")
    assert ws.recv_data() == "hi"
    stream = Conn(s.port)
    stream.send(build_request("GET", "/stream"))
    assert stream.read_line().startswith(b"HTTP/1.1 200")
    old = set(child_pids(s.pid))
    s.signal(signal.SIGHUP)
    code, _ = ws.server_close()
    assert code == 1001
    ws.close()
    # The endless response ends at --graceful-timeout: the connection is closed.
    stream.read_until_close()
    stream.close()
    wait_for(lambda: not (old & set(child_pids(s.pid))), "the old workers to exit", guard=LOG_GUARD)
    assert pid_of(s.port) in child_pids(s.pid)
    assert s.stop() == 0


def test_sigterm_never_waits_forever_on_a_stream(spawn):
    s = spawn("epoll", "deploy_asgi:app", "--graceful-timeout", "1")
    stream = Conn(s.port)
    stream.send(build_request("GET", "/stream"))
    assert stream.read_line().startswith(b"HTTP/1.1 200")
    s.signal(signal.SIGTERM)
    stream.read_until_close()
    stream.close()
    assert s.wait() == 0


# ---- systemd -----------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["2", "1"])
def test_socket_activation_and_notify(tmp_path, workers):
    # workers 1: no master; SIGHUP executes the process again on the same (inherited) socket.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(LOG_GUARD)
    fd = listener.fileno()
    # systemd's contract: the sockets from fd 3, LISTEN_PID the server's own PID (sh execs it).
    argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"] + \
        epoll_argv("deploy_app:app", "--workers", workers)
    log = open(tmp_path / "server.log", "wb")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, preexec_fn=lambda: os.dup2(fd, 3), close_fds=False)
    try:
        try:
            assert notify.recv(4096) == b"READY=1"
        except OSError:
            raise AssertionError((tmp_path / "server.log").read_text())
        listener.close()  # the server holds it now
        assert pid_of(port) in (child_pids(proc.pid) if workers != "1" else [proc.pid])
        assert "LISTEN_FDS fd 3" in (tmp_path / "server.log").read_text()
        os.kill(proc.pid, signal.SIGHUP)
        assert notify.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
        assert notify.recv(4096) == b"READY=1"
        if workers == "1":  # the reload's bridge gone: only the same pid answers
            wait_for(lambda: child_pids(proc.pid) == [], "the bridge to exit", guard=LOG_GUARD)
            assert pid_of(port) == proc.pid
        os.kill(proc.pid, signal.SIGTERM)
        assert notify.recv(4096) == b"STOPPING=1"
        assert proc.wait(LOG_GUARD) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        log.close()


@pytest.mark.parametrize("args", [(), ("--workers", "2")], ids=["one-process", "prefork"])
def test_relative_tls_files_with_chdir(tmp_path, args):
    """Relative --certfile / --keyfile name files of the start directory, where the master
    checks them; each worker loads them again after it has changed to --chdir's directory to
    import the app, and failed to boot (exit status 3) on the same command line."""
    (tmp_path / "app").mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem", "-out",
                    "cert.pem", "-days", "2", "-subj", "/CN=localhost"], cwd=str(tmp_path),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    argv = epoll_argv("deploy_app:app", "--chdir", "app", "--certfile", "cert.pem", "--keyfile",
                      "key.pem", *args, bind="127.0.0.1:%d" % port)
    s = Server("epoll", argv, port=port, cwd=str(tmp_path))
    try:
        s.wait_ready()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.1 200 ")
    finally:
        assert s.stop() == 0, s.log()


@pytest.mark.parametrize("args", [(), ("--workers", "2", "--preload")],
                         ids=["one-process", "preload"])
def test_relative_pid_file_and_unix_socket_removed_after_chdir(tmp_path, args):
    """--pid and --bind unix: with relative paths mean what they meant at the start (the start
    directory), also with --chdir: the process that imported the app (the server itself, or a
    --preload master) has since changed directory, and still removes both files at exit."""
    (tmp_path / "app").mkdir()
    argv = epoll_argv("deploy_app:app", "--chdir", "app", "--pid", "server.pid",
                      bind="unix:server.sock", *args)
    s = Server("epoll", argv, unix_path=str(tmp_path / "server.sock"), cwd=str(tmp_path))
    try:
        s.wait_ready()
        assert request(None, "GET", "/", unix_path=s.unix_path).status == 200
        assert int((tmp_path / "server.pid").read_text()) == s.pid
    finally:
        assert s.stop() == 0
    assert sorted(os.listdir(tmp_path)) == ["app"], s.log()


def test_umask_applies_to_the_unix_socket(spawn, tmp_path):
    path = str(tmp_path / "s.sock")
    s = spawn("epoll", "deploy_app:app", "--umask", "077", unix_path=path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert s.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_and_group_after_binding(spawn, tmp_path):
    # Port 80-ish binds need root; here any port: the worker runs as nobody after binding.
    import pwd
    import shutil
    import tempfile
    nobody = pwd.getpwnam("nobody")
    app_dir = tempfile.mkdtemp(prefix="libwsgi-user-")  # pytest's tmp_path is private to root
    request_cleanup = lambda: shutil.rmtree(app_dir, ignore_errors=True)  # noqa: E731
    os.chmod(app_dir, 0o755)
    import pathlib
    app_dir = pathlib.Path(app_dir)
    write_app(app_dir, "v1")
    s = spawn("epoll", "versioned:app", "--workers", "2", "--chdir", str(app_dir),
              "--user", "nobody", "--group", str(nobody.pw_gid))
    wait_for(lambda: len(child_pids(s.pid)) == 2, "two workers")
    worker = int(request(s.port, "GET", "/").body.split()[1])
    with open("/proc/%d/status" % worker) as f:
        uid_line = [line for line in f if line.startswith("Uid:")][0]
    assert int(uid_line.split()[1]) == nobody.pw_uid
    assert s.stop() == 0
    request_cleanup()


@pytest.mark.parametrize("args", [("--workers", "2"), ()], ids=["prefork", "one-process"])
def test_programs_the_app_runs_do_not_inherit_ignored_signals(spawn, args):
    """Workers ignore the master's signals (SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2) with a
    handler that does nothing, not SIG_IGN, which exec keeps: a program the app starts (a daemon,
    a shell pipeline) gets the default actions back."""
    s = spawn("epoll", "deploy_app:app", *args)
    mask = int(request(s.port, "GET", "/child-sigign").body, 16)
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGTERM, signal.SIGINT):
        assert not mask & (1 << (sig - 1)), "%s ignored in the app's child" % sig.name
