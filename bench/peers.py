#!/usr/bin/python3
"""Side-by-side benchmark of libwsgi-epoll and the other Python servers on this machine (issue 10).
A benchmark, not a test: it prints tables (and --json FILE), it never fails on numbers.

  /usr/bin/python3 bench/peers.py --build build-bench            # everything, ~13 min on 2 cores
  /usr/bin/python3 bench/peers.py --build build-bench --quick    # 2 s per run, ~6 min
  /usr/bin/python3 bench/peers.py --only hello-64,json --servers epoll,uwsgi-http11,uvicorn \
      --duration 10 --repeat 3 --json /tmp/peers.json

Every server runs as ONE worker process (plus the master/router/parent process some of them need)
on 127.0.0.1 on a free port, pinned to CPU 0 with taskset; the load generator (wrk -t1, or
bench/ws_echo_load for WebSocket) is pinned to CPU 1. Servers are started and stopped by PID.
Every server gets the same apps (bench/apps/peers_*.py). Before each measurement a request checks
that the server answers the workload correctly, and a warm-up run is thrown away.

Per workload and interface a table: req/s (messages/s for WebSocket), p50/p99 latency, errors
(non-2xx + socket errors), the server's CPU % (utime+stime from /proc/PID/stat over the measured
run, the whole process tree), requests per server CPU-second, peak RSS (sum of VmHWM over the
process tree), the CPU 0 time used by other processes during the run (noise: other jobs on the
server's core), and libwsgi-epoll / best peer in req/s and in requests per CPU-second.
For the framework workload (json: Flask, FastAPI) a second table: each server's host overhead per
request = its CPU time per request - the app's own cost, measured in-process by
bench/apps/appcost.py (on python3, and inside libwsgi's runtime), with the ratio to the lowest
peer; --instructions counts the same in instructions under callgrind.
bench/README.md explains the servers, the workloads and how to read the numbers.
"""

import argparse
import http.client
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS = os.path.join(BENCH, "apps")
PY = "/usr/bin/python3"  # Debian's: the one with gunicorn, uvicorn, ... (never a pyenv build)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
CLIENT_CPU = "1"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- workloads

class Workload:
    def __init__(self, name, desc, apps, conns=64, path="/", lua=None, method="GET", body=None,
                 check=None, kind="http", size=0, needs=None, appcost=False):
        self.name, self.desc, self.apps, self.conns, self.path = name, desc, apps, conns, path
        self.lua, self.method, self.body, self.check = lua, method, body, check
        self.kind, self.size = kind, size
        self.needs = needs or {}  # iface -> [(python module, Debian package)]
        # a framework workload: also measure the app's own cost in-process (bench/apps/appcost.py)
        # and print each server's host overhead per request
        self.appcost = appcost


def _len_is(n):
    return lambda status, headers, body: status == 200 and len(body) == n


def _json_page(status, headers, body):
    if status != 200:
        return False
    try:
        return len(json.loads(body)["items"]) == 20
    except (ValueError, KeyError, TypeError):
        return False


POST_BODY = b"p" * 262144
WORKLOADS = [
    Workload("hello-1", "hello world, 1 connection", {"wsgi": "peers_wsgi:hello", "asgi": "peers_asgi:hello"},
             conns=1, check=_len_is(14)),
    Workload("hello-64", "hello world, 64 connections",
             {"wsgi": "peers_wsgi:hello", "asgi": "peers_asgi:hello"}, check=_len_is(14)),
    Workload("big-64k", "a 64 KiB response (Content-Length), 64 connections",
             {"wsgi": "peers_wsgi:big", "asgi": "peers_asgi:big"}, check=_len_is(65536)),
    Workload("post-256k", "POST 256 KiB, echoed back, 64 connections",
             {"wsgi": "peers_wsgi:echo", "asgi": "peers_asgi:echo"}, lua="wrk_post_256k.lua",
             method="POST", body=POST_BODY,
             check=lambda s, h, b: s == 200 and b == POST_BODY),
    Workload("json", "GET /items?limit=20: Flask jsonify / FastAPI + pydantic response model, 64 connections",
             {"wsgi": "peers_flask:app", "asgi": "peers_fastapi:app"}, path="/items?limit=20",
             check=_json_page, appcost=True,
             needs={"wsgi": [("flask", "python3-flask")],
                    "asgi": [("fastapi", "python3-fastapi"), ("pydantic", "python3-pydantic")]}),
    Workload("stream", "100 x 1 KiB chunks (WSGI generator / ASGI more_body), 64 connections",
             {"wsgi": "peers_wsgi:stream", "asgi": "peers_asgi:stream"}, check=_len_is(102400)),
    Workload("ws-64", "WebSocket echo of 64-byte messages, 64 connections (ws_echo_load)",
             {"asgi": "peers_asgi:ws_echo"}, kind="ws", size=64),
    Workload("ws-4k", "WebSocket echo of 4 KiB messages, 64 connections (ws_echo_load)",
             {"asgi": "peers_asgi:ws_echo"}, kind="ws", size=4096),
]


# ---------------------------------------------------------------- servers

def has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Ctx:
    """What a server command needs: the app spec, the port, a private temp dir, the build."""

    def __init__(self, spec, port, tmp, iface, build):
        self.spec, self.port, self.tmp, self.iface, self.build = spec, port, tmp, iface, build
        self.module, _, self.callable = spec.partition(":")
        self.addr = f"127.0.0.1:{port}"


class Server:
    def __init__(self, key, label, ifaces, command, requires, ws=False, stop_sig=signal.SIGTERM,
                 note="", closes=False, binary=None, only=None):
        self.key, self.label, self.ifaces, self.command = key, label, ifaces, command
        self.only = only  # the workloads it serves (None: all)
        self.closes = closes  # closes the connection after every response (no keep-alive)
        # what embeds CPython: the executable or module whose linkage (libpython3.11.so or not) says
        # which interpreter build runs the app; None: the server is a python3 program
        self.binary = binary
        self.requires = requires  # [(check(), what is missing / the Debian package)]
        self.ws, self.stop_sig, self.note = ws, stop_sig, note

    def missing(self):
        return [pkg for check, pkg in self.requires if not check()]


def epoll_bin(build):
    return os.path.join(build, "examples", "epoll", "libwsgi-epoll")


def cmd_epoll(threads):
    def f(c):
        argv = [epoll_bin(c.build), "--app", c.spec, "--pythonpath", APPS, "--bind", c.addr,
                "--interface", c.iface, "--log-level", "warning"]
        if threads is not None:
            argv += ["--threads", str(threads)]
        return argv, {}
    return f


def cmd_gunicorn(gthread):
    def f(c):
        argv = [PY, "-m", "gunicorn", "--bind", c.addr, "--workers", "1", "--log-level", "warning",
                "--chdir", APPS]
        if gthread:
            argv += ["--worker-class", "gthread", "--threads", "4"]
        return argv + [c.spec], {}
    return f


def cmd_uwsgi(mode):
    def f(c):
        argv = ["uwsgi", "--plugin", "python3" if mode != "http" else "python3,http"]
        if mode == "http-socket":
            argv += ["--http-socket", c.addr]
        elif mode == "http11-socket":
            argv += ["--http11-socket", c.addr]
        else:  # the router process in front of the worker, keep-alive on, chunked for streams
            argv += ["--http", c.addr, "--http-keepalive", "--http-auto-chunked"]
        argv += ["--pythonpath", APPS, "--module", c.spec, "--processes", "1", "--disable-logging",
                 "--die-on-term", "--need-app", "--single-interpreter"]
        return argv, {}
    return f


APACHE = "/usr/sbin/apache2"
MOD_WSGI = "/usr/lib/apache2/modules/mod_wsgi.so"
APACHE_MODS = "/usr/lib/apache2/modules"


def cmd_mod_wsgi(daemon):
    def f(c):
        root = os.path.join(c.tmp, "apache")
        os.makedirs(root, exist_ok=True)
        os.chmod(c.tmp, 0o755)  # the children run as www-data: they reach the daemon socket here
        os.chmod(root, 0o755)
        script = os.path.join(APPS, c.module + ".py")
        lines = [
            f'ServerRoot "{root}"', f"PidFile {root}/httpd.pid", f"DefaultRuntimeDir {root}",
            f"Listen {c.addr}", "ServerName 127.0.0.1",
            f"LoadModule mpm_event_module {APACHE_MODS}/mod_mpm_event.so",
            f"LoadModule authz_core_module {APACHE_MODS}/mod_authz_core.so",
            f"LoadModule wsgi_module {MOD_WSGI}",
            f"ErrorLog {root}/error.log", "LogLevel warn",
            # one child process; 64 threads so that 64 keep-alive connections are all served
            # (with the default 25 the event MPM closes the connections over its limit)
            "StartServers 1", "ServerLimit 1", "ThreadLimit 64", "ThreadsPerChild 64",
            "MaxRequestWorkers 64", "MinSpareThreads 1", "MaxSpareThreads 64",
            "MaxConnectionsPerChild 0",
            "KeepAlive On", "MaxKeepAliveRequests 0", "KeepAliveTimeout 30",
            f"WSGIScriptAlias / {script}", f"WSGICallableObject {c.callable}",
            "WSGIApplicationGroup %{GLOBAL}",
            f"<Directory {APPS}>", "  Require all granted", "</Directory>",
        ]
        if os.getuid() == 0:
            lines += ["User www-data", "Group www-data"]
        if daemon:
            lines += [f"WSGISocketPrefix {root}/wsgi",
                      f"WSGIDaemonProcess bench processes=1 threads=4 python-path={APPS}",
                      "WSGIProcessGroup bench"]
        else:
            lines += [f"WSGIPythonPath {APPS}"]
        conf = os.path.join(root, "httpd.conf")
        with open(conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return [APACHE, "-f", conf, "-DFOREGROUND"], {}
    return f


def cmd_uvicorn(fast):
    def f(c):
        argv = [PY, "-m", "uvicorn", c.spec, "--host", "127.0.0.1", "--port", str(c.port),
                "--lifespan", "on", "--log-level", "warning", "--no-access-log"]
        if fast:
            argv += ["--http", "httptools", "--loop", "uvloop", "--ws", "websockets"]
        else:
            argv += ["--http", "h11", "--loop", "asyncio", "--ws", "wsproto"]
        return argv, {}
    return f


def cmd_hypercorn(c):
    return [PY, "-m", "hypercorn", "--bind", c.addr, "--workers", "1", "--worker-class", "uvloop",
            "--log-level", "warning", c.spec], {}


def cmd_daphne(c):
    return [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(c.port), "-v", "0", c.spec], {}


def _uwsgi_ok():
    return shutil.which("uwsgi") is not None


UWSGI_PY = "/usr/lib/uwsgi/plugins/python3_plugin.so"


def _uwsgi_py():
    return os.path.exists(UWSGI_PY)


LIGHTTPD = "/usr/sbin/lighttpd"
LIGHTTPD_CONF = os.path.join(ROOT, "examples", "lighttpd", "lighttpd.conf")


def cmd_lighttpd(backend):
    """lighttpd (examples/lighttpd/lighttpd.conf, uwsgi protocol) in front of one backend worker
    started on its own on a loopback port: libwsgi-scgi or uWSGI (--uwsgi-socket). A small shell
    is the process the benchmark starts and stops: both servers are its children (so their CPU
    and RSS are counted), and SIGTERM stops both."""
    def f(c):
        bport = free_port()
        if backend == "scgi":
            b = [os.path.join(c.build, "examples", "lighttpd", "libwsgi-scgi"), "--app", c.spec,
                 "--pythonpath", APPS, "--bind", f"127.0.0.1:{bport}", "--interface", c.iface,
                 "--log-level", "warning"]
        else:
            b = ["uwsgi", "--plugin", "python3", "--uwsgi-socket", f"127.0.0.1:{bport}",
                 "--pythonpath", APPS, "--module", c.spec, "--processes", "1", "--disable-logging",
                 "--die-on-term", "--need-app", "--single-interpreter"]
        q = " ".join(shlex.quote(x) for x in b)
        script = (f"{q} & B=$!; "
                  f"while ! (exec 3<>/dev/tcp/127.0.0.1/{bport}) 2>/dev/null; do sleep 0.05; done; "
                  f"{LIGHTTPD} -D -f {shlex.quote(LIGHTTPD_CONF)} & L=$!; "
                  "trap 'kill -TERM $L $B; wait' TERM INT; wait")
        env = {"LIGHTTPD_PORT": str(c.port), "LIGHTTPD_ROOT": c.tmp, "LIBWSGI_PORT": str(bport),
               "LIBWSGI_SCGI_CMD": "", "LIBWSGI_PROTOCOL": "uwsgi"}
        return ["/bin/bash", "-c", script], env
    return f


def cmd_floor(c):
    return [os.path.join(c.build, "bench", "floor_http"), str(c.port)], {}


def make_servers(build):
    ebin = epoll_bin(build)
    epoll_req = [(lambda: os.access(ebin, os.X_OK), f"{ebin} (build it: cmake --build {build})")]
    fbin = os.path.join(build, "bench", "floor_http")
    return [
        Server("floor", "floor: C epoll, fixed response, no Python", ("wsgi", "asgi"), cmd_floor,
               [(lambda: os.access(fbin, os.X_OK), f"{fbin} (build it: cmake --build {build})")],
               only=("hello-1", "hello-64"),
               note="bench/floor_http.c: what the kernel's TCP and epoll cost; not a peer"),
        Server("epoll", "libwsgi-epoll", ("wsgi", "asgi"), cmd_epoll(None), epoll_req, ws=True,
               note="default options: --threads 4 for WSGI; ASGI on the event loop", binary=ebin),
        Server("epoll-t0", "libwsgi-epoll --threads 0", ("wsgi",), cmd_epoll(0), epoll_req,
               note="WSGI app called on the event loop thread", binary=ebin),
        Server("lt-scgi", "lighttpd + libwsgi-scgi (uwsgi)", ("wsgi",), cmd_lighttpd("scgi"),
               [(lambda: os.access(LIGHTTPD, os.X_OK), "lighttpd"),
                (lambda: os.access(os.path.join(build, "examples", "lighttpd", "libwsgi-scgi"),
                                   os.X_OK), f"libwsgi-scgi (build it: cmake --build {build})")],
               only=("hello-1", "hello-64", "post-256k", "stream"),
               note="lighttpd 1.4 + libwsgi-scgi --threads 4, uwsgi protocol over 127.0.0.1 TCP "
                    "(examples/lighttpd/lighttpd.conf); compared with lt-uwsgi only"),
        Server("lt-uwsgi", "lighttpd + uWSGI (uwsgi)", ("wsgi",), cmd_lighttpd("uwsgi"),
               [(lambda: os.access(LIGHTTPD, os.X_OK), "lighttpd"), (_uwsgi_ok, "uwsgi-core"),
                (_uwsgi_py, "uwsgi-plugin-python3")],
               only=("hello-1", "hello-64", "post-256k", "stream"), binary=UWSGI_PY,
               note="the same lighttpd config, uWSGI --uwsgi-socket, 1 process, 1 thread"),
        Server("gunicorn-sync", "gunicorn sync", ("wsgi",), cmd_gunicorn(False),
               [(lambda: has_module("gunicorn"), "gunicorn")],
               note="master + 1 sync worker (no keep-alive: Connection: close)", closes=True),
        Server("gunicorn-gthread", "gunicorn gthread --threads 4", ("wsgi",), cmd_gunicorn(True),
               [(lambda: has_module("gunicorn"), "gunicorn")], note="master + 1 gthread worker"),
        Server("uwsgi-http-socket", "uWSGI --http-socket", ("wsgi",), cmd_uwsgi("http-socket"),
               [(_uwsgi_ok, "uwsgi-core"), (_uwsgi_py, "uwsgi-plugin-python3")],
               stop_sig=signal.SIGINT, binary=UWSGI_PY,
               note="1 process, 1 thread; HTTP/1.0-style: closes after every response", closes=True),
        Server("uwsgi-http11", "uWSGI --http11-socket", ("wsgi",), cmd_uwsgi("http11-socket"),
               [(_uwsgi_ok, "uwsgi-core"), (_uwsgi_py, "uwsgi-plugin-python3")],
               stop_sig=signal.SIGINT, note="1 process, 1 thread; the http-socket with keep-alive",
               binary=UWSGI_PY),
        Server("uwsgi-http", "uWSGI --http router", ("wsgi",), cmd_uwsgi("http"),
               [(_uwsgi_ok, "uwsgi-core"), (_uwsgi_py, "uwsgi-plugin-python3")],
               stop_sig=signal.SIGINT, binary=UWSGI_PY,
               note="http router process + 1 worker (1 thread), --http-keepalive --http-auto-chunked"),
        Server("mod_wsgi", "Apache mod_wsgi (embedded)", ("wsgi",), cmd_mod_wsgi(False),
               [(lambda: os.access(APACHE, os.X_OK), "apache2-bin"),
                (lambda: os.path.exists(MOD_WSGI), "libapache2-mod-wsgi-py3")],
               note="mpm_event, parent + 1 child with 64 threads, app in the child", binary=MOD_WSGI),
        Server("mod_wsgi-daemon", "Apache mod_wsgi (daemon, 4 threads)", ("wsgi",), cmd_mod_wsgi(True),
               [(lambda: os.access(APACHE, os.X_OK), "apache2-bin"),
                (lambda: os.path.exists(MOD_WSGI), "libapache2-mod-wsgi-py3")],
               note="mpm_event parent + 1 child, app in 1 daemon process with 4 threads", binary=MOD_WSGI),
        Server("uvicorn", "uvicorn httptools+uvloop", ("asgi",), cmd_uvicorn(True),
               [(lambda: has_module("uvicorn"), "python3-uvicorn"),
                (lambda: has_module("httptools"), "python3-httptools"),
                (lambda: has_module("uvloop"), "python3-uvloop"),
                (lambda: has_module("websockets"), "python3-websockets")], ws=True,
               note="--ws websockets"),
        Server("uvicorn-h11", "uvicorn h11+asyncio", ("asgi",), cmd_uvicorn(False),
               [(lambda: has_module("uvicorn"), "python3-uvicorn"),
                (lambda: has_module("h11"), "python3-h11"),
                (lambda: has_module("wsproto"), "python3-wsproto")]),
        Server("hypercorn", "hypercorn (uvloop)", ("asgi",), cmd_hypercorn,
               [(lambda: has_module("hypercorn"), "python3-hypercorn"),
                (lambda: has_module("uvloop"), "python3-uvloop")], ws=True, closes=True,
               note="-k uvloop, wsproto; closes after a response sent before it read the request's end"),
        Server("daphne", "daphne", ("asgi",), cmd_daphne,
               [(lambda: has_module("daphne"), "daphne")], ws=True, note="Twisted, autobahn"),
    ]


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                st = fh.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def proc_ticks(pid):
    """utime+stime of pid (all its threads), and cutime+cstime (its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            st = fh.read()
    except OSError:
        return None
    f = st[st.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14])


def hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_busy(cpu):
    """Busy ticks of one CPU from /proc/stat (everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v) - v[3] - v[4]
    return 0


def client_conns(root, port):
    """Client connections (ESTABLISHED, local port = the server's) held open by the server's tree."""
    inodes = set()
    for p in tree(root):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                        n += 1
        except OSError:
            continue
    return n


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Snapshot:
    def __init__(self, root):
        self.t = time.monotonic()
        self.pids = {}
        for p in tree(root):
            r = proc_ticks(p)
            if r:
                self.pids[p] = r[0]
        r = proc_ticks(root)
        self.reaped = r[1] if r else 0
        self.cpu0 = cpu_busy(SERVER_CPU)
        self.cpu1 = cpu_busy(CLIENT_CPU)


def cpu_between(a, b):
    ticks = sum(t - a.pids.get(p, 0) for p, t in b.pids.items()) + (b.reaped - a.reaped)
    wall = b.t - a.t
    return ticks / CLK_TCK, wall, max(0, (b.cpu0 - a.cpu0) - ticks) / CLK_TCK


def wait_port(port, proc, timeout=40.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return "exited with status %s" % proc.returncode
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return None
        except OSError:
            time.sleep(0.05)
    return "did not listen within %.0f s" % timeout


def stop(proc, sig, timeout=15):
    """Stop the server by its PID (and whatever of its tree is left, by PID)."""
    if proc.poll() is None:
        pids = tree(proc.pid)
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  pid {proc.pid} ignored signal {sig}: SIGKILL")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        time.sleep(0.05)
        for p in pids[1:]:
            try:
                os.kill(p, signal.SIGKILL)  # a leftover child of this server (not expected)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- load generators

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", s)
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else None


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1)) if m else 0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        r[f"p{q}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                  map(int, m.groups()))) if m else {}
    r["errors"] = r["non2xx"] + sum(r["socket_errors"].values())
    return r


def wrk_argv(w, port, seconds):
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{w.conns}", f"-d{seconds}s", "--latency"]
    if w.lua:
        argv += ["-s", os.path.join(BENCH, w.lua)]
    return argv + [f"http://127.0.0.1:{port}{w.path}"]


def check_http(w, port):
    """One request as wrk will send it; None if the answer is right, else why not."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Content-Type": "application/octet-stream"} if w.body else {}
        c.request(w.method, w.path, body=w.body, headers=headers)
        r = c.getresponse()
        body = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return f"request failed: {e!r}"
    if not w.check(r.status, r.getheaders(), body):
        return f"wrong answer: {r.status}, {len(body)} bytes: {body[:120]!r}"
    return None


def check_ws(port, loadgen):
    out = subprocess.run(["taskset", "-c", CLIENT_CPU, loadgen, "-c", "1", "-d", "0.2", "-w", "0",
                          "-s", "16", "127.0.0.1", str(port)], capture_output=True, text=True,
                         timeout=30)
    m = re.search(r"^RESULT .*messages=(\d+) errors=(\d+)", out.stdout, re.M)
    if not m or int(m.group(1)) == 0 or int(m.group(2)):
        return "WebSocket echo failed: " + (out.stdout + out.stderr).strip()[-300:]
    return None


# ---------------------------------------------------------------- one run

def run_one(server, w, iface, args, tmp):
    spec = w.apps[iface]
    port = free_port()
    rundir = tempfile.mkdtemp(prefix=f"{server.key}-", dir=tmp)
    argv, extra_env = server.command(Ctx(spec, port, rundir, iface, args.build))
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = APPS
    env.update(extra_env)
    logpath = os.path.join(rundir, "server.log")
    res = {"server": server.key, "workload": w.name, "iface": iface,
           "command": " ".join(["taskset", "-c", SERVER_CPU] + argv)}
    lg = None
    with open(logpath, "w") as logf:
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + argv, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=APPS)
    try:
        why = wait_port(port, proc)
        if not why:
            why = check_ws(port, args.loadgen) if w.kind == "ws" else check_http(w, port)
        if why:
            res["error"] = why
            return res
        if w.kind == "http":
            subprocess.run(wrk_argv(w, port, args.warmup), capture_output=True, timeout=args.warmup + 60)
            argv = wrk_argv(w, port, args.duration)
            wait_before_snapshot = 0.0
        else:  # ws_echo_load warms up by itself (-w), then measures
            argv = ["taskset", "-c", CLIENT_CPU, args.loadgen, "-c", str(w.conns), "-d", str(args.duration),
                    "-w", str(args.warmup), "-s", str(w.size), "127.0.0.1", str(port)]
            wait_before_snapshot = args.warmup  # connections are open within ms
        c0 = children_cpu()
        c1_busy0, c1_t0 = cpu_busy(CLIENT_CPU), time.monotonic()
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(wait_before_snapshot)
        a = Snapshot(proc.pid)
        time.sleep(args.duration / 2)
        conns = client_conns(proc.pid, port)
        stdout, stderr = lg.communicate(timeout=args.duration + 60)
        b = Snapshot(proc.pid)
        client_cpu = children_cpu() - c0
        c1_wall = b.t - c1_t0
        c1_other = max(0.0, (b.cpu1 - c1_busy0) / CLK_TCK - client_cpu)
        if w.kind == "http":
            r = parse_wrk(stdout)
            if lg.returncode or "requests in" not in stdout:
                res["error"] = "wrk: " + (stdout + stderr).strip()[-300:]
                return res
        else:
            m = re.search(r"^RESULT (.*)$", stdout, re.M)
            if not m:
                res["error"] = "ws_echo_load: " + (stdout + stderr).strip()[-300:]
                return res
            kv = dict(x.split("=") for x in m.group(1).split())
            r = {"rps": float(kv["msgs_per_s"]), "requests": int(kv["messages"]),
                 "p50_ms": int(kv["p50_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
                 "errors": int(kv["errors"]) + (w.conns - int(kv["open"])), "non2xx": 0,
                 "socket_errors": {"ws": int(kv["errors"]), "closed": w.conns - int(kv["open"])}}
        r["conns"] = conns
        r["client_cpu_pct"] = 100 * client_cpu / c1_wall
        r["cpu1_other_pct"] = 100 * c1_other / c1_wall
        cpu_s, wall, other = cpu_between(a, b)
        r["cpu_s"] = cpu_s
        r["wall_s"] = wall
        r["cpu_pct"] = 100 * cpu_s / wall
        r["per_cpu_s"] = r["requests"] / cpu_s if cpu_s > 0 else (0.0 if not r["requests"] else None)
        r["cpu0_other_pct"] = 100 * other / wall
        r["rss_mib"] = sum(hwm_kib(p) for p in tree(proc.pid)) / 1024
        r["processes"] = len(b.pids)
        res.update(r)
        return res
    finally:
        if lg is not None and lg.poll() is None:  # interrupted: the load generator first, by its PID
            lg.kill()
            lg.wait()
        stop(proc, server.stop_sig)
        if "error" in res:
            try:
                with open(logpath, errors="replace") as fh:
                    tail = fh.read()[-600:].strip()
                if tail:
                    res["error"] += " | server log: " + tail.replace("\n", " / ")
            except OSError:
                pass
        shutil.rmtree(rundir, ignore_errors=True)


# ---------------------------------------------------------------- report

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error", "?") if runs else "no run"}
    rps = [r["rps"] for r in ok]
    a = {k: med([r.get(k) for r in ok]) for k in ("rps", "p50_ms", "p99_ms", "cpu_pct", "per_cpu_s",
                                                   "cpu0_other_pct", "cpu1_other_pct", "client_cpu_pct",
                                                   "conns")}
    a["rss_mib"] = max(r["rss_mib"] for r in ok)
    a["errors"] = sum(r["errors"] for r in ok)
    a["runs"] = len(ok)
    a["failed_runs"] = len(runs) - len(ok)
    a["rps_min"], a["rps_max"] = min(rps), max(rps)
    a["spread_pct"] = 100 * (max(rps) - min(rps)) / a["rps"] if a["rps"] else 0.0
    kinds = {}
    for r in ok:
        if r["non2xx"]:
            kinds["non-2xx"] = kinds.get("non-2xx", 0) + r["non2xx"]
        for k, v in r["socket_errors"].items():
            if v:
                kinds[k] = kinds.get(k, 0) + v
    a["error_kinds"] = kinds
    return a


def fmt(v, spec, width):
    return f"{'-':>{width}}" if v is None else f"{v:{width}{spec}}"


def paired(runs, a, b, field):
    """Run-by-run ratios of a to b in one field: run i of each server is in the same pass, minutes
    apart at most, so the machine's drift (a shared VM's speed moves by 30 % over a quarter of an
    hour) cancels out in each ratio, not in the ratio of medians. (median, lowest, highest, how many
    passes a was ahead in, passes) or None."""
    if not runs or a not in runs or b not in runs:
        return None
    rs = [ra[field] / rb[field] for ra, rb in zip(runs[a], runs[b])
          if "error" not in ra and "error" not in rb and ra.get(field) and rb.get(field)]
    if len(rs) < 2:
        return None
    return statistics.median(rs), min(rs), max(rs), sum(r >= 1 for r in rs), len(rs)


def ratios(agg, epoll_key, runs=None):
    """libwsgi-epoll row vs the best peer (not a libwsgi-epoll row) in req/s and per CPU-second;
    with --repeat, also the median of the pass-by-pass ratios (paired())."""
    e = agg.get(epoll_key)
    peers = {k: v for k, v in agg.items()
             if not k.startswith(("epoll", "lt-")) and k != "floor" and "error" not in v}
    if not e or "error" in e or not peers:
        return None
    best = max(peers, key=lambda k: peers[k]["rps"])
    cpu_peers = {k: v for k, v in peers.items() if v["per_cpu_s"]}
    best_cpu = max(cpu_peers, key=lambda k: cpu_peers[k]["per_cpu_s"]) if cpu_peers else None
    r = {"epoll": epoll_key, "best_peer": best, "ratio_rps": e["rps"] / peers[best]["rps"]
         if peers[best]["rps"] else None}
    if best_cpu and e["per_cpu_s"]:
        r["best_peer_cpu"] = best_cpu
        r["ratio_per_cpu_s"] = e["per_cpu_s"] / cpu_peers[best_cpu]["per_cpu_s"]
    p = paired(runs, epoll_key, best, "rps")
    if p:
        r["paired_rps"] = p
    p = paired(runs, epoll_key, best_cpu, "per_cpu_s") if best_cpu else None
    if p:
        r["paired_per_cpu_s"] = p
    return r


def print_table(title, w, iface, servers, agg, args, rats, labels, runs=None):
    unit = "msg/s" if w.kind == "ws" else "req/s"
    print(f"\n== {title}: {w.desc} ==")
    if w.kind == "ws":
        print(f"   ws_echo_load -c {w.conns} -s {w.size} -d {args.duration} -w {args.warmup}; "
              f"{args.repeat} run(s) per server, interleaved")
    else:
        print(f"   wrk -t1 -c{w.conns} -d{args.duration}s --latency"
              f"{' -s bench/' + w.lua if w.lua else ''} http://127.0.0.1:PORT{w.path}; "
              f"{args.repeat} run(s) per server, interleaved")
    hdr = (f"{'server':<38} {unit:>8} {'spread':>6} {'p50 ms':>7} {'p99 ms':>8} {'errors':>7} "
           f"{'conns':>5} {'CPU %':>5} {'per CPU-s':>9} {'RSS MiB':>7} {'client%':>7} {'other0%':>7} "
           f"{'other1%':>7}")
    print(hdr)
    print("-" * len(hdr))
    notes = []
    for s in servers:
        a = agg.get(s.key)
        if a is None:
            continue
        if "error" in a:
            print(f"{labels[s.key]:<38} FAILED: {a['error'][:200]}")
            continue
        spread = f"{a['spread_pct']:.0f}%" if a["runs"] > 1 else ""
        print(f"{labels[s.key]:<38} {a['rps']:8.0f} {spread:>6} {fmt(a['p50_ms'], '.2f', 7)} "
              f"{fmt(a['p99_ms'], '.2f', 8)} {a['errors']:7d} {a['conns']:5.0f} {a['cpu_pct']:5.0f} "
              f"{fmt(a['per_cpu_s'], '.0f', 9)} {a['rss_mib']:7.1f} {a['client_cpu_pct']:7.0f} "
              f"{a['cpu0_other_pct']:7.0f} {a['cpu1_other_pct']:7.0f}")
        if a["errors"]:
            notes.append(f"{labels[s.key]}: " + ", ".join(f"{k} {v}" for k, v in a["error_kinds"].items()))
        if not a["rps"]:
            notes.append(f"{labels[s.key]}: no response completed (a body that never ends on a kept-alive "
                         "connection?)")
        elif a["conns"] is not None and w.conns > 1 and a["conns"] < w.conns / 2 and not s.closes:
            notes.append(f"{labels[s.key]}: served {a['conns']:.0f} of {w.conns} connections at a time; the "
                         "others waited unanswered")
        if (a["client_cpu_pct"] or 0) >= 90:
            notes.append(f"{labels[s.key]}: the load generator used {a['client_cpu_pct']:.0f}% of its core "
                         "(the client may be the limit)")
        if a["failed_runs"]:
            notes.append(f"{labels[s.key]}: {a['failed_runs']} run(s) failed")
        if a["runs"] > 1:
            notes.append(f"{labels[s.key]}: {unit} min {a['rps_min']:.0f} max {a['rps_max']:.0f}")
    for n in notes:
        print("   " + n)
    for r in rats:
        if r is None:
            continue
        line = (f"   {labels[r['epoll']]} / best peer: {r['ratio_rps'] or 0:.2f}x req/s "
                f"(best: {labels[r['best_peer']]})")
        if "ratio_per_cpu_s" in r:
            line += f", {r['ratio_per_cpu_s']:.2f}x per CPU-s (best: {labels[r['best_peer_cpu']]})"
        print(line)
        for k, what in (("paired_rps", "req/s"), ("paired_per_cpu_s", "per CPU-s")):
            if k in r:
                m, lo, hi, ahead, n = r[k]
                print(f"   paired by pass ({what}): median {m:.2f}x, {lo:.2f}-{hi:.2f}, ahead in "
                      f"{ahead} of {n} passes")
    ls, lu = agg.get("lt-scgi"), agg.get("lt-uwsgi")
    if ls and lu and "error" not in ls and "error" not in lu and lu["rps"]:
        line = f"   through lighttpd: libwsgi-scgi / uWSGI: {ls['rps'] / lu['rps']:.2f}x req/s"
        if ls.get("per_cpu_s") and lu.get("per_cpu_s"):
            line += f", {ls['per_cpu_s'] / lu['per_cpu_s']:.2f}x per CPU-s"
        print(line)
        for field, what in (("rps", "req/s"), ("per_cpu_s", "per CPU-s")):
            p = paired(runs, "lt-scgi", "lt-uwsgi", field)
            if p:
                print(f"   through lighttpd, paired by pass ({what}): median {p[0]:.2f}x, "
                      f"{p[1]:.2f}-{p[2]:.2f}, ahead in {p[3]} of {p[4]} passes")
    f = agg.get("floor")
    if f and "error" not in f and f.get("per_cpu_s"):
        # The kernel's share: no server on this machine can do more requests per CPU-second.
        peers = [v["per_cpu_s"] for k, v in agg.items()
                 if not k.startswith(("epoll", "lt-")) and k != "floor" and "error" not in v
                 and v.get("per_cpu_s")]
        mine = [v["per_cpu_s"] for k, v in agg.items() if k.startswith("epoll") and "error" not in v
                and v.get("per_cpu_s")]
        line = f"   floor (no Python): {f['per_cpu_s']:.0f} req per CPU-s"
        if peers:
            line += f" = {f['per_cpu_s'] / max(peers):.2f}x the best peer (the most any server can be ahead)"
        if mine:
            line += f"; libwsgi-epoll at {max(mine) / f['per_cpu_s']:.0%} of it"
        print(line)


# ---------------------------------------------------------------- framework workloads: host overhead

APPCOST = os.path.join(APPS, "appcost.py")
APPCOST_N = {"wsgi": 2000, "asgi": 400}  # requests per round (5 rounds): about 1.5 s each
CG_WARM = 20  # --instructions: requests before the counted ones, in every run
# --instructions: two runs of warm-up + N requests each, the difference counted; --quick: (20, 120).
# The difference must be large: a full collection of Python's GC (of the whole framework's objects,
# 10-20 M instructions) falls in one run or the other, and spreads over these requests.
CG_N = (20, 320)
_ldd = {}


def links_libpython(path):
    """Whether an executable or module loads libpython*.so (ldd); cached."""
    if path not in _ldd:
        try:
            out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _ldd[path] = "libpython" in out
    return _ldd[path]


def runs_in_python_exe(path):
    """Whether libwsgi-epoll at path runs inside the Python executable (LIBWSGI_PYTHON_EXE_HOSTS:
    its module next to it, and LIBWSGI_EMBEDDED not set)."""
    off = os.environ.get("LIBWSGI_EMBEDDED", "")
    return (os.path.basename(path) == "libwsgi-epoll" and off in ("", "0")
            and os.path.exists(os.path.join(os.path.dirname(path), "_libwsgi_host.so")))


def interpreter(path):
    """The CPython build a server runs its app on: "python3" (a Python program, run by Debian's
    executable, or libwsgi-epoll inside it), "libpython.so" (an embedder loading
    libpython3.11.so) or "static" (an embedder with libpython linked into it, as python3 is)."""
    if path is None or runs_in_python_exe(path):
        return "python3"
    return "libpython.so" if links_libpython(path) else "static"


def _appcost_env():
    env = dict(os.environ, PYTHONPATH=APPS)
    env.pop("PYTHONHOME", None)
    return env


def measure_app_cost(iface, args):
    """One measurement of a framework app's own CPU time per request (bench/apps/appcost.py),
    pinned to the servers' CPU: on the python3 executable, and inside libwsgi's runtime (bench_wsgi,
    linked as libwsgi-epoll is, importing appcost). {"python3": result, "libwsgi": result}."""
    n = APPCOST_N[iface] // (2 if args.quick else 1)
    env = _appcost_env()
    out = {}
    try:
        r = subprocess.run(["taskset", "-c", SERVER_CPU, PY, APPCOST, iface, "--n", str(n)],
                           capture_output=True, text=True, env=env, cwd=APPS, timeout=900)
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        out["python3"] = lines[0] if lines else {"error": (r.stdout + r.stderr).strip()[-300:]}
    except subprocess.TimeoutExpired:
        out["python3"] = {"error": "timed out"}
    bw = os.path.join(args.build, "bench", "bench_wsgi")
    if os.access(bw, os.X_OK):
        try:
            r = subprocess.run(["taskset", "-c", SERVER_CPU, bw, APPS, "appcost:app", "1"],
                               capture_output=True, text=True, cwd=APPS, timeout=900,
                               env=dict(env, APPCOST=iface, APPCOST_N=str(n)))
            m = re.search(r"^APPCOST (.*)$", r.stderr, re.M)
            out["libwsgi"] = json.loads(m.group(1)) if m else {
                "error": (r.stdout + r.stderr).strip()[-300:]}
        except subprocess.TimeoutExpired:
            out["libwsgi"] = {"error": "timed out"}
    for k, v in out.items():
        if "error" in v:
            log(f"   app cost ({k}) failed: {v['error']}")
    return out


def _callgrind_total(files):
    """Instructions executed, summed over callgrind output files (one per process)."""
    total = 0
    for f in files:
        with open(f, errors="replace") as fh:
            for line in fh:
                if line.startswith("totals:") or line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
    return total


def _callgrind_argv(outfile, children=False):
    return ["valgrind", "--tool=callgrind", "--trace-children=" + ("yes" if children else "no"),
            f"--callgrind-out-file={outfile}"]


def cg_n(args):
    return (CG_N[0], 120) if args.quick else CG_N


def app_instructions(iface, args, tmp):
    """The app's own cost in instructions per request (callgrind): appcost on python3 and inside
    libwsgi's runtime, each run twice (warm-up + N1, warm-up + N2 requests): the difference / (N2 -
    N1). {"python3": instr, "libwsgi": instr} (missing where a run failed)."""
    out = {}
    bw = os.path.join(args.build, "bench", "bench_wsgi")
    env = _appcost_env()
    ns = cg_n(args)
    for where in ("python3", "libwsgi"):
        if where == "libwsgi" and not os.access(bw, os.X_OK):
            continue
        totals = []
        for n in ns:
            d = tempfile.mkdtemp(prefix=f"cg-app-{where}-", dir=tmp)
            outfile = os.path.join(d, "cg.%p")
            if where == "python3":
                argv, e = [PY, APPCOST, iface, "--n", str(n), "--warmup", str(CG_WARM), "--rounds", "1"], env
            else:
                argv = [bw, APPS, "appcost:app", "1"]
                e = dict(env, APPCOST=iface, APPCOST_N=str(n), APPCOST_WARMUP=str(CG_WARM), APPCOST_ROUNDS="1")
            r = subprocess.run(["taskset", "-c", SERVER_CPU] + _callgrind_argv(outfile) + argv,
                               capture_output=True, text=True, env=e, cwd=APPS, timeout=3600)
            files = [os.path.join(d, f) for f in os.listdir(d) if f.startswith("cg.")]
            ok = r.returncode == 0 and ('"error"' not in r.stdout + r.stderr) and files
            if not ok:
                log(f"   callgrind of the app ({where}) failed: {(r.stdout + r.stderr).strip()[-300:]}")
                break
            totals.append(_callgrind_total(files))
            shutil.rmtree(d, ignore_errors=True)
        if len(totals) == 2:
            out[where] = (totals[1] - totals[0]) / (ns[1] - ns[0])
    return out


def _requests(port, w, n):
    """n requests of workload w one after another on a keep-alive connection (a new one whenever
    the server closes it); each answer checked."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    headers = {"Content-Type": "application/octet-stream"} if w.body else {}
    try:
        for _ in range(n):
            c.request(w.method, w.path, body=w.body, headers=headers)
            r = c.getresponse()
            body = r.read()
            if not w.check(r.status, r.getheaders(), body):
                raise RuntimeError(f"wrong answer: {r.status}, {len(body)} bytes")
    finally:
        c.close()


def server_instructions(server, w, iface, args, tmp):
    """Instructions per request of a server's whole process tree under callgrind (children followed),
    serving warm-up + N1 and warm-up + N2 requests in two runs: the difference / (N2 - N1)."""
    totals = []
    ns = cg_n(args)
    for n in ns:
        port = free_port()
        rundir = tempfile.mkdtemp(prefix=f"cg-{server.key}-", dir=tmp)
        os.chmod(rundir, 0o777)  # Apache's children (www-data) write their callgrind files here
        argv, extra_env = server.command(Ctx(w.apps[iface], port, rundir, iface, args.build))
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["PYTHONPATH"] = APPS
        env.update(extra_env)
        outfile = os.path.join(rundir, "cg.%p")
        logpath = os.path.join(rundir, "server.log")
        with open(logpath, "w") as logf:
            proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + _callgrind_argv(outfile, True) + argv,
                                    stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=APPS)
        err = None
        try:
            err = wait_port(port, proc, timeout=900)
            if not err:
                _requests(port, w, CG_WARM + n)
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            err = repr(e)
        finally:
            stop(proc, server.stop_sig, timeout=900)  # callgrind writes its files at exit
        files = [os.path.join(rundir, f) for f in os.listdir(rundir) if f.startswith("cg.")]
        if err or not files:
            with open(logpath, errors="replace") as fh:
                tail = fh.read()[-300:].replace("\n", " / ")
            return {"error": f"{err or 'no callgrind output'} | {tail}"}
        totals.append(_callgrind_total(files))
        shutil.rmtree(rundir, ignore_errors=True)
    return {"instr_per_req": (totals[1] - totals[0]) / (ns[1] - ns[0]), "totals": totals, "n": ns}


def _app_cost(costs, where):
    """(median, min, max, count) of the app's cost over the measurements, or None."""
    vals = [c[where]["us_median"] if isinstance(c.get(where), dict) else c.get(where) for c in costs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return (med(vals), min(vals), max(vals), len(vals)) if vals else None


def host_overhead(per_req, py3, lib, servers, args):
    """Per server (per_req: key -> its cost per request, CPU us or instructions): the app's own
    cost (py3, lib: (median, min, max, count) on the python3 executable / inside libwsgi's
    runtime) and what is left, the host's own cost: against the python3 app cost for every server
    (the definition of issue 10), and against the app cost on the server's own interpreter build
    where it was measured. Ratios of the libwsgi-epoll rows to the lowest peer."""
    bw = os.path.join(args.build, "bench", "bench_wsgi")
    lib_interp = interpreter(bw) if lib else None
    rows = {}
    for s in servers:
        cost = per_req.get(s.key)
        if not cost:
            continue
        interp = interpreter(s.binary)
        row = {"per_req": cost, "interpreter": interp}
        if py3:
            row["app"] = py3[0]
            row["host"] = cost - py3[0]
        same = py3 if interp == "python3" else (lib if interp == lib_interp else None)
        if same:
            row["app_same"] = same[0]
            row["host_same"] = cost - same[0]
        rows[s.key] = row
    out = {"app_python3": py3, "app_libwsgi": lib, "libwsgi_interpreter": lib_interp, "rows": rows,
           "ratios": []}
    for key in ("host", "host_same"):
        peers = {k: r[key] for k, r in rows.items() if not k.startswith("epoll") and r.get(key) is not None}
        pos = {k: v for k, v in peers.items() if v > 0}
        for ek in ("epoll", "epoll-t0"):
            e = rows.get(ek, {}).get(key)
            if e is None or not pos:
                continue
            best = min(pos, key=pos.get)
            out["ratios"].append({"measure": key, "epoll": ek, "best_peer": best, "epoll_cost": e,
                                  "best_peer_cost": pos[best], "ratio": e / pos[best] if e > 0 else None,
                                  "every_peer_higher": all(e < v for v in peers.values())})
    return out


def print_host_overhead(h, servers, labels, unit, scale, spec, how):
    """The host-overhead table of a framework workload; costs are divided by scale for printing."""
    py3, lib = h["app_python3"], h["app_libwsgi"]

    def f(v, width):
        return fmt(None if v is None else v / scale, spec, width)

    def rng(x):
        if not x:
            return "not measured"
        if x[3] == 1:
            return f"{x[0] / scale:{spec}} {unit}"
        return f"{x[0] / scale:{spec}} {unit} (median of {x[3]} measurements, {x[1] / scale:{spec}}-{x[2] / scale:{spec}})"

    print(f"   host overhead = {how} - the app's own cost in-process (bench/apps/appcost.py):")
    print(f"     the app alone on the python3 executable: {rng(py3)}")
    print(f"     the app alone inside libwsgi's runtime (bench_wsgi, {h['libwsgi_interpreter'] or '-'}): {rng(lib)}")
    print(f"   {'server':<38} {'per req':>10} {'host':>10} {'x best':>6}   {'runs on':<12} {'app':>10} "
          f"{'host':>10} {'x best':>6}")
    print(f"   {'':<38} {'(' + unit + ')':>10} {'(server - python3 app)':>24}   {'':<12} "
          f"{'(server - app on its interpreter)':>35}")
    best = {}
    for r in h["ratios"]:
        best.setdefault(r["measure"], r["best_peer_cost"])
    for s in servers:
        r = h["rows"].get(s.key)
        if not r:
            continue

        def ratio(key):
            v, b = r.get(key), best.get(key)
            return f"{v / b:5.2f}x" if v is not None and b and v > 0 else f"{'-':>6}"

        print(f"   {labels[s.key]:<38} {f(r['per_req'], 10)} {f(r.get('host'), 10)} {ratio('host')}   "
              f"{r['interpreter']:<12} {f(r.get('app_same'), 10)} {f(r.get('host_same'), 10)} {ratio('host_same')}")
    for r in h["ratios"]:
        what = "the python3 app cost" if r["measure"] == "host" else "the app cost on each server's interpreter"
        verdict = "below every peer" if r["every_peer_higher"] else "NOT below every peer"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "n/a"
        print(f"   {labels[r['epoll']]} host overhead / lowest peer ({labels[r['best_peer']]}), against {what}: "
              f"{r['epoll_cost'] / scale:{spec}} / {r['best_peer_cost'] / scale:{spec}} {unit} = {ratio}: {verdict}")
    print("   (x best: host / the lowest peer's host; a host overhead <= 0 means the noise is larger than it)")


def instructions_table(w, iface, ss, args, tmp, labels):
    """--instructions: the host overhead in instructions per request (callgrind), for a framework
    workload; returns what it printed, for the JSON."""
    log(f"   callgrind: the app's own instructions per request ({iface})")
    app = app_instructions(iface, args, tmp)
    per_req, runs = {}, {}
    for s in ss:
        log(f"   callgrind: {s.label}")
        r = server_instructions(s, w, iface, args, tmp)
        runs[s.key] = r
        if "error" in r:
            log(f"   ... FAILED: {r['error'][:300]}")
        else:
            per_req[s.key] = r["instr_per_req"]
    ns = cg_n(args)
    print(f"   -- the same in instructions (valgrind --tool=callgrind, whole process tree; runs of {CG_WARM} + "
          f"{ns[0]} and {CG_WARM} + {ns[1]} requests on one connection, the difference counted):")
    for s in ss:
        if "error" in runs.get(s.key, {}):
            print(f"   {labels[s.key]:<38} FAILED under callgrind: {runs[s.key]['error'][:200]}")
    h = host_overhead(per_req, _app_cost([app], "python3"), _app_cost([app], "libwsgi"), ss, args)
    print_host_overhead(h, ss, labels, "M instr", 1e6, ".3f", "server instructions per request")
    h["runs"] = runs
    return h


# ---------------------------------------------------------------- in-process part

def inproc(args):
    print("\n== in-process (no sockets): libwsgi from C vs the same work in pure Python, Debian CPython 3.11 ==")
    bw = os.path.join(args.build, "bench", "bench_wsgi")
    ba = os.path.join(args.build, "bench", "bench_asgi")
    quick = args.quick
    n_wsgi, n_asgi = (50000, 20000) if quick else (200000, 100000)
    out = {"libwsgi": [], "python": []}
    rows = []
    if os.access(bw, os.X_OK) and os.access(ba, os.X_OK):
        r = subprocess.run(["taskset", "-c", SERVER_CPU, bw, os.path.join(ROOT, "examples", "apps"),
                            "hello:app", str(n_wsgi)], capture_output=True, text=True)
        m = re.search(r"([\d.]+) req/s, ([\d.]+) us/request", r.stdout)
        lib = {"wsgi": (float(m.group(1)), float(m.group(2))) if m else None}
        out["libwsgi"].append({"what": "wsgi", "output": r.stdout.strip() + r.stderr.strip()})
        for b in (1, 64):
            r = subprocess.run(["taskset", "-c", SERVER_CPU, ba, APPS, "hello_asgi:app", str(n_asgi), str(b)],
                               capture_output=True, text=True)
            m = re.search(r"([\d.]+) req/s, ([\d.]+) us/request", r.stdout)
            lib[f"asgi{b}"] = (float(m.group(1)), float(m.group(2))) if m else None
            out["libwsgi"].append({"what": f"asgi batch {b}", "output": r.stdout.strip() + r.stderr.strip()})
    else:
        print(f"   skipped libwsgi's side: no {bw} / {ba} (configure with -DLIBWSGI_BUILD_BENCH=ON)")
        lib = {}
    r = subprocess.run(["taskset", "-c", SERVER_CPU, PY, os.path.join(BENCH, "inproc_baseline.py"),
                        "--n-wsgi", str(n_wsgi * 5), "--n-asgi", str(n_asgi)],
                       capture_output=True, text=True)
    base = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode:
        print("   inproc_baseline.py failed: " + r.stderr.strip()[-400:])
    out["python"] = base

    def py(what, batch=None, loop="asyncio", turn="running"):
        for x in base:
            if x.get("what") == what and "req_per_s" in x and (what == "wsgi" or (
                    x["batch"] == batch and x["loop"] == loop and x["turn"] == turn)):
                return x["req_per_s"], x["us_per_req"]
        return None

    def row(name, l, p):
        ls = f"{l[0]:>10.0f} {l[1]:>7.2f}" if l else f"{'-':>10} {'-':>7}"
        ps = f"{p[0]:>10.0f} {p[1]:>7.2f}" if p else f"{'-':>10} {'-':>7}"
        extra = f"{l[1] - p[1]:+8.2f} {l[1] / p[1]:6.1f}x" if l and p else f"{'-':>8} {'-':>7}"
        print(f"{name:<46} {ls}   {ps}  {extra}")
        rows.append({"what": name, "libwsgi": l, "python": p})

    print(f"{'':<46} {'libwsgi':>18}   {'pure Python':>18}  {'libwsgi - Python':>16}")
    print(f"{'':<46} {'req/s':>10} {'us/req':>7}   {'req/s':>10} {'us/req':>7}  {'us/req':>8} {'time':>7}")
    row("WSGI hello | environ.copy(), call, iterate", lib.get("wsgi"), py("wsgi"))
    for b in (1, 64):
        row(f"ASGI hello {b:2d}/turn | asyncio, loop kept running", lib.get(f"asgi{b}"), py("asgi", b))
        row(f"ASGI hello {b:2d}/turn | asyncio, run_forever/turn",
            lib.get(f"asgi{b}"), py("asgi", b, turn="run_forever"))
        row(f"ASGI hello {b:2d}/turn | uvloop, loop kept running", lib.get(f"asgi{b}"), py("asgi", b, loop="uvloop"))
    # the interpreter itself: libpython3.11.so (embedders) vs the python3 executable
    spd = {"embedded": [], "python3": []}
    if os.access(bw, os.X_OK):
        for _ in range(3):
            for kind, argv in (("embedded", [bw, APPS, "pyspeed:app", "1"]),
                               ("python3", [PY, "-c", "import pyspeed"])):
                r = subprocess.run(["taskset", "-c", SERVER_CPU] + argv, capture_output=True, text=True,
                                   env=dict(os.environ, PYTHONPATH=APPS))
                m = re.search(r"PYSPEED ([\d.]+) ms", r.stderr)
                if m:
                    spd[kind].append(float(m.group(1)))
    if spd["embedded"] and spd["python3"]:
        e, p = min(spd["embedded"]), min(spd["python3"])
        print(f"{'pyspeed.py (ms of pure-Python work, best of 45)':<46} {e:>18.1f}   {p:>18.1f}  "
              f"{e - p:+8.1f} {e / p:6.2f}x  (libpython3.11.so embedded vs the python3 executable)")
        rows.append({"what": "pyspeed ms", "libwsgi": e, "python": p, "all": spd})
    print("   libwsgi: BUILD/bench/bench_wsgi (env_build + call + iter + free, from C) and bench_asgi "
          "(asgi_dispatch + loop turns until on_done),\n   N/turn = BATCH; pure Python: "
          "bench/inproc_baseline.py on /usr/bin/python3; 'run_forever/turn' turns the loop the way\n   "
          "libwsgi's boot.run_once does (call_soon(stop) + run_forever()); pyspeed: bench/apps/pyspeed.py "
          "imported by bench_wsgi and by python3.")
    return {"rows": rows, "raw": out}


# ---------------------------------------------------------------- main

def tool_versions():
    v = {}
    import importlib.metadata
    for dist in ("gunicorn", "uvicorn", "hypercorn", "daphne", "Flask", "fastapi", "pydantic", "uvloop",
                 "httptools", "websockets", "h11", "wsproto", "Twisted"):
        try:
            v[dist.lower()] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    for name, argv in (("uwsgi", ["uwsgi", "--version"]), ("apache2", [APACHE, "-v"]),
                       ("wrk", ["wrk", "-v"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            v[name] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return {k: str(x) for k, x in v.items()}


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    # SIGTERM, and SIGINT even when started in the background (where the shell ignores it), end the
    # run through the finally clauses, which stop the server and the load generator by PID
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    ap = argparse.ArgumentParser(description="libwsgi-epoll vs other Python servers, side by side "
                                 "(see bench/README.md)")
    ap.add_argument("--build", default=os.environ.get("LIBWSGI_BUILD", "build"),
                    help="build directory (default build; a Release build is what to measure)")
    ap.add_argument("--duration", type=int, default=5, help="seconds measured per run (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up seconds before each run (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per server and workload, servers interleaved; medians and spread")
    ap.add_argument("--quick", action="store_true", help="2 s runs, 1 s warm-up, shorter in-process part")
    ap.add_argument("--only", default="", help="workloads, comma-separated: "
                    + ",".join(w.name for w in WORKLOADS) + ",inproc; NAME/wsgi or NAME/asgi for one side")
    ap.add_argument("--servers", default="", help="server keys, comma-separated (epoll is always "
                    "included): see --list")
    ap.add_argument("--list", action="store_true", help="list servers and workloads and exit")
    ap.add_argument("--json", help="write every run and the aggregates here")
    ap.add_argument("--instructions", action="store_true", help="framework workloads (json): also count "
                    "the host overhead in instructions per request under valgrind --tool=callgrind (slow: "
                    "minutes per server; immune to the machine's noise)")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup = min(args.duration, 2), 1
    args.build = os.path.abspath(os.path.join(ROOT, args.build) if not os.path.isabs(args.build) else args.build)
    args.loadgen = os.path.join(args.build, "bench", "ws_echo_load")

    servers = make_servers(args.build)
    if args.list:
        for s in servers:
            print(f"{s.key:<18} {'/'.join(s.ifaces):<10} {'ws ' if s.ws else '   '}{s.label}: {s.note}")
        for w in WORKLOADS:
            print(f"{w.name:<18} {'/'.join(w.apps):<10} {w.desc}")
        print(f"{'inproc':<18} {'':<10} bench_wsgi/bench_asgi vs bench/inproc_baseline.py")
        return 0

    only = [x for x in args.only.split(",") if x]
    known = {w.name for w in WORKLOADS} | {"inproc"}
    for o in only:
        if o.split("/")[0] not in known:
            ap.error(f"unknown workload {o!r} (known: {', '.join(sorted(known))})")
    if args.servers:
        want = {x for x in args.servers.split(",") if x} | {"epoll"}
        unknown = want - {s.key for s in servers}
        if unknown:
            ap.error(f"unknown server(s) {', '.join(sorted(unknown))} (see --list)")
        servers = [s for s in servers if s.key in want]

    def selected(w, iface):
        return not only or w.name in only or f"{w.name}/{iface}" in only

    print(f"bench/peers.py: {' '.join(sys.argv[1:])}")
    with open("/proc/loadavg") as fh:
        load0 = fh.read().split()[:3]
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; load average before: {' '.join(load0)}")
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = "?"
    print(f"servers on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}; build {args.build} "
          f"(source tree at {rev})")
    print("columns: req/s (msg/s for WebSocket), spread (max-min)/median over --repeat runs, latency "
          "p50/p99 (wrk --latency; round trip for WebSocket),\n  errors (non-2xx + socket errors), conns "
          "(client connections open in the server mid-run), CPU % of the server's process tree,\n  "
          "per CPU-s (requests per server CPU-second), RSS MiB (sum of VmHWM over the tree), client% (CPU of "
          "the load generator),\n  other0%/other1% (CPU 0/1 time used by anything else during the run: noise)")

    # what is missing, said once
    skipped = {}
    tools_missing = []
    if not shutil.which("taskset"):
        print("taskset is missing (Debian package util-linux): cannot pin, nothing measured")
        return 1
    if not shutil.which("wrk"):
        tools_missing.append("wrk")
        print("SKIPPED every HTTP workload: wrk is missing (apt-get install wrk)")
    if args.instructions and not shutil.which("valgrind"):
        print("SKIPPED --instructions: valgrind is missing (apt-get install valgrind)")
        args.instructions = False
    if not os.access(args.loadgen, os.X_OK):
        print(f"SKIPPED the WebSocket workloads: no {args.loadgen} (cmake --build {args.build} "
              "--target ws_echo_load)")
    available = []
    for s in servers:
        miss = s.missing()
        if miss:
            skipped[s.key] = miss
            print(f"SKIPPED {s.label}: missing {', '.join(miss)} (apt-get install -y "
                  f"--no-install-recommends {' '.join(m for m in miss if ' ' not in m)})")
        else:
            available.append(s)
    if not any(s.key == "epoll" for s in available):
        print("libwsgi-epoll is not built: nothing to compare")
        return 1
    print("available: " + ", ".join(s.label for s in available))
    versions = tool_versions()
    print("versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()))

    tests = []
    for w in WORKLOADS:
        for iface in ("wsgi", "asgi"):
            if iface not in w.apps or not selected(w, iface):
                continue
            if w.kind == "http" and "wrk" in tools_missing:
                continue
            if w.kind == "ws" and not os.access(args.loadgen, os.X_OK):
                continue
            miss = [pkg for mod, pkg in w.needs.get(iface, []) if not has_module(mod)]
            if miss:
                print(f"SKIPPED {w.name}/{iface}: missing {', '.join(miss)}")
                continue
            ss = [s for s in available if iface in s.ifaces and (w.kind != "ws" or s.ws)
                  and (s.only is None or w.name in s.only)]
            tests.append((w, iface, ss))
    n_runs = sum(len(ss) for _, _, ss in tests) * args.repeat
    est = n_runs * (args.duration + args.warmup + 1.5)
    print(f"{n_runs} runs, about {est / 60:.0f} min")

    labels = {}
    for s in servers:
        labels[s.key] = s.label
    labels["epoll"] = "libwsgi-epoll (default: --threads 4)"
    results = {"argv": sys.argv[1:], "source": rev, "build": args.build, "load_before": load0, "cpus": os.cpu_count(), "versions": versions,
               "skipped_servers": skipped, "duration": args.duration, "warmup": args.warmup,
               "repeat": args.repeat, "tests": []}
    summary = []
    host_summary = []
    tmp = tempfile.mkdtemp(prefix="libwsgi-peers-")
    os.chmod(tmp, 0o755)  # Apache's children (www-data) reach mod_wsgi's daemon socket below it
    try:
        for w, iface, ss in tests:
            title = f"{w.name} / {iface.upper()}"
            log(f"-- {title}")
            runs = {s.key: [] for s in ss}
            costs = []  # framework workloads: the app's own cost, before every pass and after the last
            for rep in range(args.repeat):
                if w.appcost:
                    log(f"   the app's own cost, in-process (pass {rep + 1}/{args.repeat})")
                    costs.append(measure_app_cost(iface, args))
                order = ss[rep % len(ss):] + ss[:rep % len(ss)]
                for s in order:
                    log(f"   {s.label} (run {rep + 1}/{args.repeat})")
                    r = run_one(s, w, iface, args, tmp)
                    if "error" in r:
                        log(f"   ... FAILED: {r['error'][:300]}")
                    runs[s.key].append(r)
            if w.appcost:
                log("   the app's own cost, in-process (after the last pass)")
                costs.append(measure_app_cost(iface, args))
            agg = {k: aggregate(v) for k, v in runs.items()}
            lab = dict(labels)
            if iface == "asgi":
                lab["epoll"] = "libwsgi-epoll (ASGI on the loop)"
            rats = [ratios(agg, "epoll", runs)]
            if "epoll-t0" in agg:
                rats.append(ratios(agg, "epoll-t0", runs))
            print_table(title, w, iface, ss, agg, args, rats, lab, runs)
            results["tests"].append({"workload": w.name, "iface": iface, "desc": w.desc, "runs": runs,
                                     "aggregate": agg, "ratios": [r for r in rats if r]})
            if w.appcost:
                per_req = {k: 1e6 / a["per_cpu_s"] for k, a in agg.items() if "error" not in a and a.get("per_cpu_s")}
                host = host_overhead(per_req, _app_cost(costs, "python3"), _app_cost(costs, "libwsgi"), ss, args)
                host["app_cost_measurements"] = costs
                print_host_overhead(host, ss, lab, "us", 1, ".1f",
                                    "server CPU time per request (1e6 / per CPU-s)")
                results["tests"][-1]["host_overhead_cpu_us"] = host
                for r in host["ratios"]:
                    host_summary.append((title, "CPU us", r, lab))
                if args.instructions:
                    sys.stdout.flush()
                    hi = instructions_table(w, iface, ss, args, tmp, lab)
                    results["tests"][-1]["host_overhead_instructions"] = hi
                    for r in hi["ratios"]:
                        host_summary.append((title, "M instr", r, lab))
            sys.stdout.flush()
            for r in rats:
                if r:
                    summary.append((title, lab[r["epoll"]], r, lab))
        if not only or "inproc" in only:
            results["inproc"] = inproc(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if summary:
        print("\n== summary: libwsgi-epoll / best peer (below 1.00 = a peer is ahead) ==")
        print(f"{'test':<18} {'libwsgi-epoll row':<38} {'req/s':>6}  {'best peer (req/s)':<36} "
              f"{'per CPU-s':>9}  best peer (per CPU-s)")
        for title, name, r, lab in summary:
            flag = ""
            if (r["ratio_rps"] or 0) < 1 or r.get("ratio_per_cpu_s", 1) < 1:
                flag = "  <- NOT AHEAD"
            print(f"{title:<18} {name:<38} {r['ratio_rps'] or 0:6.2f}  {lab[r['best_peer']]:<36} "
                  f"{r.get('ratio_per_cpu_s', float('nan')):9.2f}  {lab.get(r.get('best_peer_cpu'), '-')}{flag}")
    if host_summary:
        print("\n== host overhead per request (framework workloads): libwsgi-epoll / lowest peer "
              "(below 1.00 = libwsgi-epoll's own cost is the lowest) ==")
        print(f"{'test':<18} {'libwsgi-epoll row':<38} {'unit':<8} {'app cost on':<17} {'host':>8} {'peer':>8} "
              f"{'ratio':>6}  lowest peer")
        for title, unit, r, lab in host_summary:
            flag = "" if r["every_peer_higher"] else "  <- NOT BELOW EVERY PEER"
            ratio = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'n/a':>6}"
            app = "python3" if r["measure"] == "host" else "its interpreter"
            scale, spec = (1e6, ".3f") if unit == "M instr" else (1, ".1f")
            print(f"{title:<18} {lab[r['epoll']]:<38} {unit:<8} {app:<17} {r['epoll_cost'] / scale:8{spec}} "
                  f"{r['best_peer_cost'] / scale:8{spec}} {ratio}  {lab[r['best_peer']]}{flag}")
    with open("/proc/loadavg") as fh:
        load1 = fh.read().split()[:3]
    results["load_after"] = load1
    print(f"\nload average after: {' '.join(load1)} (before: {' '.join(load0)}); "
          "other0%/other1% above a few % mean other jobs shared the server's/load generator's core")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); servers stopped")
        sys.exit(130)
