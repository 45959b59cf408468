"""Fixtures that run libwsgi-epoll, gunicorn and uvicorn on free 127.0.0.1 ports.

Servers are started as child processes, are ready when a TCP connect succeeds (the epoll server
listens only once its app is loaded), and are stopped at teardown by PID (SIGTERM, then SIGKILL as
a guard) — never by name.

Sanitizer reports: the servers may be built with AddressSanitizer/UBSan (LIBWSGI_SANITIZE, the
second pass of scripts/test.sh), while pytest itself runs on Debian's uninstrumented python3. Every
process of the session is told (ASAN_OPTIONS / UBSAN_OPTIONS log_path) to write its reports into a
directory of the session; a test during or after which a new report file appears fails with the
report, whatever the server's exit status was (a prefork worker that aborts is just restarted by
its master), and so does the session if one appears after the last test.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEST_APPS = os.path.join(HERE, "apps")
EXAMPLE_APPS = os.path.join(ROOT, "examples", "apps")
EPOLL = os.environ.get("LIBWSGI_EPOLL") or os.path.join(ROOT, "build", "examples", "epoll", "libwsgi-epoll")
# gunicorn from Debian, run by Debian's interpreter (the one running these tests).
GUNICORN = [sys.executable, "-m", "gunicorn"]
# uvicorn 0.17 from Debian, the ASGI reference: it picks httptools and uvloop (python3-httptools,
# python3-uvloop, installed by scripts/install-deps.sh), as it is deployed.
UVICORN = [sys.executable, "-m", "uvicorn"]
READY_GUARD = 60.0
STOP_GUARD = 60.0
# Server logs and files the test apps make live here, removed at the end of the session.
SESSION_TMP = None
# Where sanitized servers write their reports (asan.PID, ubsan.PID); set up at configure time, so
# that it is in the environment before any server (even a module-scoped one) starts.
SANITIZER_LOG_DIR = None
_sanitizer_reported = set()


def server_is_sanitized():
    """True if libwsgi-epoll is built with AddressSanitizer (LIBWSGI_SANITIZE)."""
    try:
        with open(EPOLL, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    """LIBWSGI_TEST_SHARD=K/N (set by tests/integration/CMakeLists.txt for the long files) keeps
    every Nth test from the Kth, so that one file is several ctest entries that run in parallel
    and each stays short.

    Tests marked rss bound the server's resident memory: under AddressSanitizer that memory is
    mostly ASan's own (shadow memory, redzones, the quarantine of freed blocks), so they run in
    the uninstrumented pass only."""
    shard = os.environ.get("LIBWSGI_TEST_SHARD")
    if shard:
        k, n = (int(x) for x in shard.split("/"))
        keep = [item for i, item in enumerate(items) if i % n == k - 1]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
    if not server_is_sanitized():
        return
    skip = pytest.mark.skip(reason="RSS bounds are checked against the uninstrumented server only")
    for item in items:
        if item.get_closest_marker("rss"):
            item.add_marker(skip)


def pytest_configure(config):
    global SANITIZER_LOG_DIR
    config.addinivalue_line("markers", "rss: asserts a bound on the server's resident memory "
                            "(skipped when the server is built with AddressSanitizer)")
    if SANITIZER_LOG_DIR is None:
        SANITIZER_LOG_DIR = tempfile.mkdtemp(prefix="libwsgi-sanitizer-")
        for var, prefix in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
            opts = os.environ.get(var, "")
            # The last occurrence of an option wins: ours decides where reports go.
            os.environ[var] = (opts + ":" if opts else "") + "log_path=" + os.path.join(
                SANITIZER_LOG_DIR, prefix)


def new_sanitizer_reports():
    """Text of the report files written since the last call (empty if none)."""
    found = []
    if SANITIZER_LOG_DIR is None or not os.path.isdir(SANITIZER_LOG_DIR):
        return found
    for name in sorted(os.listdir(SANITIZER_LOG_DIR)):
        if name in _sanitizer_reported:
            continue
        _sanitizer_reported.add(name)
        with open(os.path.join(SANITIZER_LOG_DIR, name), "rb") as f:
            found.append("==== %s ====\n%s" % (name, f.read().decode("utf-8", "replace")))
    return found


@pytest.fixture(autouse=True)
def _no_sanitizer_report():
    """Fails the test if a server wrote a sanitizer report while it ran (or while it was torn
    down: this fixture is set up before, and so torn down after, the ones that start servers)."""
    earlier = new_sanitizer_reports()
    if earlier:  # e.g. by a module-scoped server stopped between two modules
        pytest.fail("sanitizer report(s) from a server, written before this test:\n"
                    + "\n".join(earlier), pytrace=False)
    yield
    reports = new_sanitizer_reports()
    if reports:
        pytest.fail("sanitizer report(s) from a server:\n" + "\n".join(reports), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Reports written after the last test (a module-scoped server stopped at the end) fail the
    session too."""
    reports = new_sanitizer_reports()
    if reports:
        sys.stderr.write("\nsanitizer report(s) from a server after the last test:\n%s\n"
                         % "\n".join(reports))
        session.exitstatus = 1
    shutil.rmtree(SANITIZER_LOG_DIR or "", ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_tmp():
    global SESSION_TMP
    SESSION_TMP = tempfile.mkdtemp(prefix="libwsgi-integration-")
    os.environ["LIBWSGI_TEST_TMP"] = SESSION_TMP  # inherited by the servers (see apps/corners.py)
    yield SESSION_TMP
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_connect(port=None, unix_path=None):
    try:
        if unix_path:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(unix_path)
        else:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


class Server:
    """A server process started by a test."""

    def __init__(self, name, argv, port=None, unix_path=None, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.port = port
        self.unix_path = unix_path
        self.log_file = tempfile.NamedTemporaryFile(prefix=name + "-", suffix=".log", delete=False,
                                                    dir=SESSION_TMP)
        full_env = dict(os.environ)
        full_env.pop("PYTHONPATH", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=full_env, cwd=cwd)
        self.pid = self.proc.pid
        self.returncode = None

    def log(self):
        with open(self.log_file.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self):
        deadline = time.monotonic() + READY_GUARD
        while not can_connect(self.port, self.unix_path):
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before listening:\n%s"
                                     % (self.name, self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("%s did not start listening:\n%s" % (self.name, self.log()))
            time.sleep(0.02)
        return self

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, guard=STOP_GUARD):
        try:
            self.returncode = self.proc.wait(guard)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not exit:\n%s" % (self.name, self.log()))
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            self.wait()
        self.returncode = self.proc.returncode
        return self.returncode


def epoll_argv(app, *args, pythonpath=(TEST_APPS, EXAMPLE_APPS), bind=None):
    argv = [EPOLL, "--app", app]
    for p in pythonpath:
        argv += ["--pythonpath", p]
    if bind:
        argv += ["--bind", bind]
    return argv + list(args)


@pytest.fixture
def spawn():
    """spawn(kind, app, *args, ...) starts a server and stops it at teardown.

    kind is "epoll" or "gunicorn"; the server is returned once it accepts connections.
    """
    started = []

    def _spawn(kind, app, *args, ready=True, unix_path=None, env=None, cwd=None, port=None):
        port = port or (None if unix_path else free_port())
        bind = ("unix:" + unix_path) if unix_path else "127.0.0.1:%d" % port
        argv, extra_env = server_argv(kind, app, bind, port, args)
        s = Server(kind, argv, port=port, unix_path=unix_path, env=dict(extra_env, **(env or {})),
                   cwd=cwd)
        started.append(s)
        return s.wait_ready() if ready else s

    yield _spawn
    errors = []
    for s in started:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        raise AssertionError("\n".join(errors))


def server_argv(kind, app, bind, port, args):
    """The command line (and environment) of a server of this kind serving app on bind."""
    if kind == "epoll":
        return epoll_argv(app, *args, bind=bind), {}
    if kind == "gunicorn":
        return GUNICORN + ["--bind", bind, "--pythonpath", TEST_APPS + "," + EXAMPLE_APPS,
                           "--workers", "1", "--log-level", "warning"] + list(args) + [app], {}
    if kind == "uvicorn":
        return (UVICORN + [app, "--host", "127.0.0.1", "--port", str(port), "--lifespan", "auto",
                           "--log-level", "warning"] + list(args),
                {"PYTHONPATH": TEST_APPS + os.pathsep + EXAMPLE_APPS})
    raise ValueError(kind)


def module_server(request, kind, app, *args, env=None):
    """A server shared by all tests of a module (started once, stopped at module teardown)."""
    port = free_port()
    argv, extra_env = server_argv(kind, app, "127.0.0.1:%d" % port, port, args)
    s = Server(kind, argv, port=port, env=dict(extra_env, **(env or {})))
    request.addfinalizer(s.stop)
    return s.wait_ready()


def vm_hwm_kib(pid):
    """Peak resident set size of a process (VmHWM in /proc/PID/status), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for pid %d" % pid)
