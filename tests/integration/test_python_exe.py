"""libwsgi-epoll inside the Python executable (examples/epoll/pyexe.h, LIBWSGI_PYTHON_EXE_HOSTS):
the program executes python3 (same pid), which imports the server as the module _libwsgi_host.so
and runs it on its own interpreter. What an app sees must be what it sees on the embedded
interpreter (LIBWSGI_EMBEDDED=1, or a build without the module such as the sanitized one): the
same sys.path, flags, argv, encodings, locale, environment, signal dispositions; the process
keeps its pid across the exec, reloads and forks work, and the embedded mode stays reachable."""

import json
import os
import signal

import pytest

from conftest import EPOLL, Server, TEST_APPS, epoll_argv, free_port
from httpclient import request, wait_for

MODULE = os.path.join(os.path.dirname(EPOLL), "_libwsgi_host.so")
PYEXE = os.path.exists(MODULE)
needs_pyexe = pytest.mark.skipif(not PYEXE, reason="built without LIBWSGI_PYTHON_EXE_HOSTS")
EMBEDDED = {"LIBWSGI_EMBEDDED": "1"}
LOG_GUARD = 60.0


def served_by(port):
    r = request(port, "GET", "/")
    assert r.status == 200, r
    return json.loads(r.body)


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def wait_log(s, text, count=1):
    wait_for(lambda: s.log().count(text) >= count, repr(text) + " in the log", guard=LOG_GUARD,
             step=0.05)


def probe(spawn, tmp_path, name, *args, env=None):
    """What interp_probe.py saw at import in a server started with args (and env)."""
    out = tmp_path / (name + ".json")
    s = spawn("epoll", "interp_probe:app", *args,
              env=dict(env or {}, INTERP_PROBE_OUT=str(out)))
    wait_for(out.exists, "the probe's output")
    served = served_by(s.port)
    assert s.stop() == 0
    return json.loads(out.read_text()), served, s


def comparable(p):
    """A probe without what differs by design: the pid, the executable file behind the process,
    and the variable that chose the mode."""
    out = {k: v for k, v in p.items() if k not in ("pid", "exe")}
    out["environ_libwsgi"] = [k for k in p["environ_libwsgi"] if k != "LIBWSGI_EMBEDDED"]
    return out


@needs_pyexe
def test_the_server_runs_inside_python3_with_its_own_pid_and_name(spawn, tmp_path):
    p, served, s = probe(spawn, tmp_path, "pyexe")
    assert served["pid"] == s.pid == p["pid"]  # execv: the pid tests and supervisors know
    assert os.path.basename(served["exe"]).startswith("python3")
    assert p["executable"] == served["exe"] or os.path.realpath(p["executable"]) == served["exe"]
    assert p["comm"] == os.path.basename(EPOLL)[:15]  # ps -o comm, top


def test_embedded_mode_runs_the_program_itself(spawn, tmp_path):
    p, served, s = probe(spawn, tmp_path, "embedded", env=EMBEDDED)
    assert served["pid"] == s.pid
    assert served["exe"] == os.path.realpath(EPOLL)


def test_a_missing_module_falls_back_to_the_embedded_interpreter(spawn, tmp_path):
    p, served, s = probe(spawn, tmp_path, "nomodule",
                         env={"LIBWSGI_HOST_MODULE": str(tmp_path / "missing.so")})
    assert served["exe"] == os.path.realpath(EPOLL)


@needs_pyexe
@pytest.mark.parametrize("args", [(), ("--workers", "2"), ("--workers", "2", "--preload")],
                         ids=["one-process", "prefork", "preload"])
@pytest.mark.parametrize("lc_all", [None, "C.UTF-8"], ids=["no-LC_ALL", "LC_ALL"])
def test_the_app_sees_the_same_interpreter_in_both_modes(spawn, tmp_path, args, lc_all):
    env = {"LC_ALL": lc_all} if lc_all else {}
    pyexe, served, _ = probe(spawn, tmp_path, "pyexe", *args, env=env)
    assert os.path.basename(served["exe"]).startswith("python3")
    embedded, served, _ = probe(spawn, tmp_path, "embedded", *args, env=dict(env, **EMBEDDED))
    assert served["exe"] == os.path.realpath(EPOLL)
    assert comparable(pyexe) == comparable(embedded)


@needs_pyexe
def test_check_config_sees_the_same_interpreter_in_both_modes(tmp_path):
    import subprocess
    seen = {}
    for mode, env in (("pyexe", {}), ("embedded", EMBEDDED)):
        out = tmp_path / (mode + ".json")
        r = subprocess.run(epoll_argv("interp_probe:app", "--check-config",
                                      pythonpath=(TEST_APPS,)),
                           env=dict(os.environ, INTERP_PROBE_OUT=str(out), **env),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "configuration OK" in r.stdout
        seen[mode] = json.loads(out.read_text())
    assert os.path.basename(seen["pyexe"]["exe"]).startswith("python3")
    assert comparable(seen["pyexe"]) == comparable(seen["embedded"])


def write_app(d, version):
    (d / "pyexe_versioned.py").write_text(
        "import atexit, json, os\n"
        "VERSION = %r\n"
        "def _bye():\n"
        "    with open(os.path.join(%r, 'atexit.%%d' %% os.getpid()), 'w') as f:\n"
        "        f.write(VERSION)\n"
        "atexit.register(_bye)\n"
        "def app(environ, start_response):\n"
        "    body = json.dumps({'version': VERSION, 'pid': os.getpid(),\n"
        "                       'exe': os.readlink('/proc/self/exe')}).encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n" % (version + "+" * int(version[1:]), str(d)))


def version(port):
    v = served_by(port)
    return v["version"].rstrip("+"), v["pid"], v["exe"]


@pytest.mark.parametrize("mode", ["pyexe", "embedded"])
def test_sighup_without_master_keeps_the_pid_and_the_mode(spawn, tmp_path, mode):
    if mode == "pyexe" and not PYEXE:
        pytest.skip("built without LIBWSGI_PYTHON_EXE_HOSTS")
    env = EMBEDDED if mode == "embedded" else {}
    write_app(tmp_path, "v1")
    s = spawn("epoll", "pyexe_versioned:app", "--chdir", str(tmp_path), env=env)
    v, pid, exe = version(s.port)
    assert (v, pid) == ("v1", s.pid)
    expect_exe = exe
    assert os.path.basename(exe).startswith("python3") == (mode == "pyexe")
    write_app(tmp_path, "v2")
    s.signal(signal.SIGHUP)
    wait_log(s, "reload done")
    wait_for(lambda: children(s.pid) == [], "the bridge to exit", guard=LOG_GUARD)
    assert version(s.port) == ("v2", s.pid, expect_exe)
    # The old image's atexit handlers ran (it finalized its interpreter before the exec).
    assert (tmp_path / ("atexit.%d" % s.pid)).read_text().rstrip("+") == "v1"
    assert s.stop() == 0
    assert (tmp_path / ("atexit.%d" % s.pid)).read_text().rstrip("+") == "v2"


@pytest.mark.parametrize("mode", ["pyexe", "embedded"])
@pytest.mark.parametrize("preload", [False, True], ids=["import-in-worker", "preload"])
def test_prefork_reload_and_worker_exit_in_both_modes(spawn, tmp_path, mode, preload):
    if mode == "pyexe" and not PYEXE:
        pytest.skip("built without LIBWSGI_PYTHON_EXE_HOSTS")
    env = EMBEDDED if mode == "embedded" else {}
    write_app(tmp_path, "v1")
    s = spawn("epoll", "pyexe_versioned:app", "--chdir", str(tmp_path), "--workers", "2",
              *(["--preload"] if preload else []), env=env)
    wait_log(s, "2 workers ready")
    old = set(children(s.pid))
    v, pid, exe = version(s.port)
    assert v == "v1" and pid in old
    assert os.path.basename(exe).startswith("python3") == (mode == "pyexe")
    write_app(tmp_path, "v2")
    s.signal(signal.SIGHUP)
    wait_log(s, "reload done")
    wait_for(lambda: not (old & set(children(s.pid))), "the old workers to exit")
    # --preload: the master's copy of the app is what new workers inherit (gunicorn's rule).
    assert version(s.port)[0] == ("v1" if preload else "v2")
    # Each old worker finalized its interpreter as it stopped: its atexit handler ran.
    for p in old:
        wait_for(lambda: (tmp_path / ("atexit.%d" % p)).exists(), "worker %d's atexit" % p)
    s.signal(signal.SIGTTIN)
    wait_for(lambda: len(children(s.pid)) == 3, "three workers")
    assert s.stop() == 0
