"""libwsgi-scgi behind the real lighttpd (Debian's 1.4.69), configured by examples/lighttpd/lighttpd.conf
itself (every machine-specific setting comes from the environment), issue 11.

Each site is `lighttpd -D -f <conf>` on a free 127.0.0.1 port, after `lighttpd -tt` printed nothing
(no warning), stopped by PID. The daemon is either spawned by lighttpd (bin-path: the listening
socket on fd 0) or started on its own (--bind unix:PATH, bin-path ""). Requests go through
lighttpd: SCGI or uwsgi (mod_scgi), or HTTP/1.1 with Upgrade (mod_proxy) for WebSocket.

What is compared with gunicorn / uvicorn (the frameworks' routes of test_frameworks.py and
test_asgi_frameworks.py): status, body, and headers without those lighttpd manages itself for
every backend (Date, Server, Connection, Transfer-Encoding, Accept-Ranges, and Content-Length where
one side framed the body without it); not the reason phrase, which lighttpd writes itself.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import conftest
from conftest import EXAMPLE_APPS, ROOT, TEST_APPS, Server, free_port, module_server
from httpclient import Conn, build_request, chunked, read_to_eof, wait_for
from wsclient import WSClient

SCGI = os.environ.get("LIBWSGI_SCGI") or os.path.join(ROOT, "build", "examples", "lighttpd",
                                                      "libwsgi-scgi")
CONF = os.path.join(ROOT, "examples", "lighttpd", "lighttpd.conf")
LIGHTTPD = "/usr/sbin/lighttpd"
GUARD = 60.0

pytestmark = pytest.mark.skipif(not os.path.exists(LIGHTTPD),
                                reason="lighttpd is not installed (scripts/install-deps.sh)")

# A mount point beside "/" (which has fix-root-scriptname), as the example config's comment says:
# the same daemon (same socket and bin-path, so lighttpd starts it once).
MOUNTS = """
include "%(conf)s"
$HTTP["url"] =^ "/mnt/" {
    scgi.server = ( "/mnt" => ( var.libwsgi ) )
}
"""
# A daemon started on its own: any number of entries may name its socket; "/" without
# fix-root-scriptname under a URL condition shows lighttpd's CGI-style split of a root mount.
MOUNTS_SEPARATE = MOUNTS + """
$HTTP["url"] =^ "/nofix/" {
    scgi.server = ( "/" => ( ( "host" => "127.0.0.1", "port" => env.LIBWSGI_PORT,
                               "check-local" => "disable" ) ) )
}
"""
# A unix socket instead of the example's TCP port (mod_scgi only).
UNIX_CONF = """
server.modules += ("mod_scgi")
server.port = env.LIGHTTPD_PORT
server.bind = "127.0.0.1"
server.document-root = env.LIGHTTPD_ROOT
scgi.server = ( "/" => ( ( "socket" => env.LIBWSGI_SOCKET, "bin-path" => env.LIBWSGI_SCGI_CMD,
                           "check-local" => "disable", "fix-root-scriptname" => "enable",
                           "max-procs" => 1 ) ) )
"""


def ppid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return None, None


def children_of(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid, state = ppid_of(int(name))
            if ppid == pid and state != "Z":
                out.append(int(name))
    return out


def gone(pid):
    """The process ended (a zombie no one reaps, as under a container's init, counts as ended)."""
    _, state = ppid_of(pid)
    return state is None or state == "Z"


class Site:
    """lighttpd + libwsgi-scgi serving app. spawned: lighttpd starts the daemon (bin-path)."""

    def __init__(self, app, *args, spawned=True, protocol="scgi", mounts=False, workers=1,
                 unix=False):
        # mkdtemp: a name from free_port() collided when the kernel handed the same port out twice
        self.tmp = tempfile.mkdtemp(prefix="lt-", dir=conftest.SESSION_TMP)
        self.port = free_port()
        self.backend_port = free_port()
        # lighttpd names the unix socket of a daemon it starts LIBWSGI_SOCKET + "-0".
        self.socket = os.path.join(self.tmp, "app.sock")
        self.daemon_socket = self.socket + "-0" if spawned else self.socket
        argv = [SCGI, "--app", app, "--chdir", TEST_APPS, "--pythonpath", EXAMPLE_APPS,
                "--workers", str(workers)] + list(args)
        self.daemon = None
        if not spawned:
            if unix:
                self.daemon = Server("libwsgi-scgi", argv + ["--bind", "unix:" + self.socket],
                                     unix_path=self.socket).wait_ready()
            else:
                self.daemon = Server("libwsgi-scgi",
                                     argv + ["--bind", "127.0.0.1:%d" % self.backend_port],
                                     port=self.backend_port).wait_ready()
        self.env = {
            "LIGHTTPD_PORT": str(self.port),
            "LIGHTTPD_ROOT": self.tmp,
            "LIBWSGI_PORT": str(self.backend_port),
            "LIBWSGI_SOCKET": self.socket,
            "LIBWSGI_SCGI_CMD": " ".join(argv) if spawned else "",
            "LIBWSGI_PROTOCOL": protocol,
        }
        conf = CONF
        if mounts or unix:
            conf = os.path.join(self.tmp, "site.conf")
            with open(conf, "w") as f:
                if unix:
                    f.write(UNIX_CONF)
                else:
                    f.write((MOUNTS if spawned else MOUNTS_SEPARATE) % {"conf": CONF})
        full_env = dict(os.environ, **self.env)
        full_env.pop("PYTHONPATH", None)
        check = subprocess.run([LIGHTTPD, "-tt", "-f", conf], env=full_env, capture_output=True,
                               timeout=GUARD)
        assert check.returncode == 0 and not check.stdout and not check.stderr, check
        self.lighttpd = Server("lighttpd", [LIGHTTPD, "-D", "-f", conf], port=self.port,
                               env=self.env).wait_ready()

    def log(self):
        return self.lighttpd.log() + (self.daemon.log() if self.daemon else "")

    def request(self, method, target, headers=(), body=None, host="example.test"):
        with Conn(self.port) as c:
            c.send(build_request(method, target, headers, body, host=host))
            return c.read_response(method)

    def json(self, target, **kw):
        r = self.request("GET", target, **kw)
        assert r.status == 200, (r, r.body, self.log())
        return json.loads(r.body)

    def backend_pids(self):
        if self.daemon:
            return [self.daemon.pid] + children_of(self.daemon.pid)
        pids = children_of(self.lighttpd.pid)
        return pids + [c for p in pids for c in children_of(p)]

    def stop(self):
        self.lighttpd.stop()
        if self.daemon:
            self.daemon.stop()


@pytest.fixture
def site():
    sites = []

    def make(*a, **kw):
        s = Site(*a, **kw)
        sites.append(s)
        return s

    yield make
    for s in sites:
        s.stop()


@pytest.fixture(scope="module", params=["scgi", "uwsgi"])
def wsgi_site(request):
    s = Site("lighttpd_app:wsgi", "--x-sendfile", protocol=request.param, mounts=True)
    request.addfinalizer(s.stop)
    return s


@pytest.fixture(scope="module")
def asgi_site(request):
    s = Site("lighttpd_app:asgi", "--x-sendfile", mounts=True)
    request.addfinalizer(s.stop)
    return s


# ---- configuration --------------------------------------------------------------------------


def test_example_config_is_clean_both_ways(tmp_path):
    """`lighttpd -tt` accepts examples/lighttpd/lighttpd.conf without a warning, spawned and not."""
    for cmd in (SCGI + " --app hello:app --chdir " + EXAMPLE_APPS, ""):
        env = dict(os.environ, LIGHTTPD_PORT="8080", LIGHTTPD_ROOT=str(tmp_path),
                   LIBWSGI_PORT="9000", LIBWSGI_SCGI_CMD=cmd, LIBWSGI_PROTOCOL="scgi")
        r = subprocess.run([LIGHTTPD, "-tt", "-f", CONF], env=env, capture_output=True, timeout=GUARD)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


# ---- the WSGI environ and the ASGI scope as lighttpd passes them ------------------------------


def test_wsgi_environ_through_lighttpd(wsgi_site):
    env = wsgi_site.json("/a/b%20c/env?x=1&y=%C3%A9", host="example.test:8443")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""  # fix-root-scriptname: the app is at the root
    assert env["PATH_INFO"] == "/a/b c/env"
    assert env["QUERY_STRING"] == "x=1&y=%C3%A9"
    assert env["REQUEST_URI"] == "/a/b%20c/env?x=1&y=%C3%A9"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "example.test:8443"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["SERVER_PORT"] == str(wsgi_site.port)
    assert env["SERVER_SOFTWARE"].startswith("lighttpd/")
    assert env["DOCUMENT_ROOT"] == wsgi_site.tmp
    # lighttpd sends CONTENT_LENGTH; the request header copies are not duplicated as HTTP_*.
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_wsgi_post_environ_has_content_headers_once(wsgi_site):
    r = wsgi_site.request("POST", "/env", [("Content-Type", "text/x-test")], b"12345")
    env = json.loads(r.body)
    assert (env["CONTENT_LENGTH"], env["CONTENT_TYPE"]) == ("5", "text/x-test")
    assert "HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env


def test_wsgi_script_name_mounts(wsgi_site):
    env = wsgi_site.json("/mnt/x/y/env")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/x/y/env")


def test_asgi_scope_through_lighttpd(asgi_site):
    s = asgi_site.json("/p%2Fq/r/scope?k=v", host="example.test")
    assert s["type"] == "http" and s["http_version"] == "1.1" and s["method"] == "GET"
    assert s["scheme"] == "http"
    assert s["path"] == "/p/q/r/scope" and s["raw_path"] == "/p%2Fq/r/scope"
    assert s["root_path"] == "" and s["query_string"] == "k=v"
    assert s["client"][0] == "127.0.0.1" and s["server"][1] == asgi_site.port
    names = [k for k, _ in s["headers"]]
    assert ["host", "example.test"] in s["headers"]
    assert all(n == n.lower() for n in names)


def test_asgi_root_path_from_mount(asgi_site):
    s = asgi_site.json("/mnt/x/scope")
    assert (s["root_path"], s["path"]) == ("/mnt", "/mnt/x/scope")


def test_http2_reaches_the_app_as_http2(wsgi_site, asgi_site):
    """lighttpd speaks HTTP/2 (h2c, prior knowledge) to the client; the app is told so."""
    for site, path, key, want in ((wsgi_site, "/env", "SERVER_PROTOCOL", "HTTP/2.0"),
                                  (asgi_site, "/scope", "http_version", "2")):
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}",
                              "http://127.0.0.1:%d%s" % (site.port, path)],
                             capture_output=True, timeout=GUARD, check=True).stdout
        body, version = out.rsplit(b"\n", 1)
        assert version == b"2"
        assert json.loads(body)[key] == want


# ---- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_large_upload_is_streamed(wsgi_site, asgi_site, app):
    site = wsgi_site if app == "wsgi" else asgi_site
    data = os.urandom(8 * 1024 * 1024 + 7)
    r = site.request("POST", "/upload", [("Content-Type", "application/octet-stream")], data)
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_chunked_upload(wsgi_site, asgi_site, app):
    site = wsgi_site if app == "wsgi" else asgi_site
    parts = [os.urandom(n) for n in (1, 70000, 5, 300000)]
    data = b"".join(parts)
    with Conn(site.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")], None,
                             host="example.test") + chunked(*parts))
        r = c.read_response()
    assert r.status == 200, r.body
    assert json.loads(r.body) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_streamed_response_arrives_before_it_ends(wsgi_site, asgi_site, app, tmp_path):
    """The first chunk reaches the client while the app still waits to produce the rest."""
    site = wsgi_site if app == "wsgi" else asgi_site
    flag = tmp_path / "go"
    with Conn(site.port) as c:
        c.send(build_request("GET", "/stream?flag=%s" % flag, [("Connection", "close")],
                             host="example.test"))
        status, _, _, headers, _ = c.read_head()
        assert status == 200
        while len(c.buf) < 1024 and c._fill():
            pass
        # The first chunk is here (with lighttpd's chunk framing), and nothing else can be: the
        # app is waiting for the flag.
        assert b"x" * 1023 + b"\n" in c.buf
        flag.write_text("go")
        rest = c.read_until_close()
    assert ("Transfer-Encoding", "chunked") in headers
    assert dechunk(rest) == (b"x" * 1023 + b"\n") * 100


def dechunk(data):
    out = b""
    while True:
        size_line, data = data.split(b"\r\n", 1)
        n = int(size_line.split(b";")[0], 16)
        if n == 0:
            return out
        out += data[:n]
        data = data[n + 2:]


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_file_via_x_sendfile(wsgi_site, asgi_site, app, tmp_path):
    """With --x-sendfile the app's file (wsgi.file_wrapper / pathsend) is sent by lighttpd: the
    response carries lighttpd's own file headers (ETag, Last-Modified), which the app never set."""
    site = wsgi_site if app == "wsgi" else asgi_site
    path = tmp_path / "some file%.bin"
    data = os.urandom(300000)
    path.write_bytes(data)
    q = "/file?path=" + str(path).replace("%", "%25").replace(" ", "%20")
    r = site.request("GET", q)
    assert r.status == 200, (r.body[:200], site.log()[-2000:])
    assert r.body == data
    assert r.header("last-modified") and r.header("etag")
    assert r.header("x-sendfile") is None


def test_file_without_x_sendfile_is_sent_by_the_daemon(site, tmp_path):
    s = site("lighttpd_app:wsgi")
    path = tmp_path / "f.bin"
    data = os.urandom(100000)
    path.write_bytes(data)
    r = s.request("GET", "/file?path=%s" % path)
    assert r.status == 200 and r.body == data
    assert r.header("etag") is None and r.header("last-modified") is None


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_app_error_is_500(wsgi_site, asgi_site, app):
    site = wsgi_site if app == "wsgi" else asgi_site
    r = site.request("GET", "/error")
    assert r.status == 500
    assert site.request("GET", "/").status == 200  # and the daemon goes on


@pytest.mark.parametrize("app", ["wsgi", "asgi"])
def test_app_status_header_does_not_change_the_status(wsgi_site, asgi_site, app):
    """The status is the app's (start_response / http.response.start), whatever its headers: a
    response header named "Status" would be the CGI Status field to lighttpd (RFC 3875 6.3.3),
    which then answered 404 or 502 instead of the app's 200. Over CGI such a header cannot be
    passed on, so it is dropped (libwsgi-epoll sends it as it is)."""
    site = wsgi_site if app == "wsgi" else asgi_site
    r = site.request("GET", "/status-header")
    assert (r.status, r.body) == (200, b"status header\n"), (r, r.body[:200])
    assert r.header("content-type") == "text/plain"


def test_fifty_concurrent_requests(wsgi_site):
    results = [None] * 50

    def one(i):
        try:
            r = wsgi_site.request("GET", "/hello/%d" % i)
            results[i] = (r.status, r.body)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
    assert results == [(200, b"hello from wsgi\n")] * 50


# ---- WebSocket through mod_proxy ---------------------------------------------------------------


def test_websocket_echo_through_mod_proxy(asgi_site):
    with WSClient.open(asgi_site.port, "/ws") as ws:
        ws.send_text("hello")
        assert ws.recv_data() == "hello"
        ws.send_binary(b"\x00\x01" * 5000)
        assert ws.recv_data() == b"\x00\x01" * 5000
        ws.send_text("scope")
        scope = json.loads(ws.recv_data())
        assert scope["type"] == "websocket" and scope["path"] == "/ws"
        assert ws.close_handshake(1000) == (1000, "")


# ---- processes --------------------------------------------------------------------------------


def backend_listens(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_lighttpd_stops_its_spawned_daemon(site, workers):
    s = site("lighttpd_app:wsgi", workers=workers)
    assert s.request("GET", "/").status == 200
    pids = s.backend_pids()
    assert len(pids) == workers + (1 if workers > 1 else 0), pids
    assert backend_listens(s.backend_port)
    s.lighttpd.stop()
    wait_for(lambda: all(gone(p) for p in pids), "the daemon and its workers to exit", guard=GUARD)
    assert not backend_listens(s.backend_port)


def test_spawned_daemon_reloads_on_sighup(site):
    """SIGHUP to the daemon lighttpd spawned (one process, its socket on fd 0): a graceful reload
    in the same process (examples/epoll/reexec.c); lighttpd sees the same pid serving."""
    s = site("lighttpd_app:wsgi")
    assert s.request("GET", "/").status == 200
    pids = s.backend_pids()
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGHUP)
    wait_for(lambda: "reload done" in s.log(), "the reload", guard=GUARD)
    wait_for(lambda: s.backend_pids() == pids,
             "the bridge process to exit", guard=GUARD)
    assert s.request("GET", "/").status == 200
    s.lighttpd.stop()
    wait_for(lambda: gone(pids[0]), "the daemon to exit", guard=GUARD)


def test_spawned_on_a_unix_socket(site):
    """lighttpd's bin-path with a unix socket: the daemon serves the inherited socket, and after
    lighttpd stopped it, nothing is left (lighttpd removes the socket file)."""
    s = site("lighttpd_app:wsgi", unix=True)
    env = s.json("/u/env")
    assert env["PATH_INFO"] == "/u/env" and env["REMOTE_ADDR"] == "127.0.0.1"
    pids = s.backend_pids()
    assert len(pids) == 1 and os.path.exists(s.daemon_socket)
    s.lighttpd.stop()
    wait_for(lambda: gone(pids[0]), "the daemon to exit", guard=GUARD)
    assert not os.path.exists(s.daemon_socket)


def test_separately_started_daemon_on_a_unix_socket(site):
    s = site("lighttpd_app:wsgi", spawned=False, unix=True)
    assert s.json("/v/env")["PATH_INFO"] == "/v/env"
    s.lighttpd.stop()
    assert s.daemon.proc.poll() is None  # not lighttpd's to stop
    assert s.daemon.stop() == 0
    assert not os.path.exists(s.socket)  # the daemon removes the socket it made


def test_separately_started_daemon_and_uwsgi(site):
    s = site("lighttpd_app:wsgi", spawned=False, protocol="uwsgi", mounts=True)
    env = s.json("/x/env")
    assert env["PATH_INFO"] == "/x/env" and env["SERVER_SOFTWARE"].startswith("lighttpd/")
    env = s.json("/mnt/x/y/env")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mnt", "/x/y/env")
    # "/" without fix-root-scriptname: lighttpd splits the path after its first segment (its
    # CGI-style default for a root mount), and the app sees exactly that split.
    env = s.json("/nofix/q/env")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/nofix", "/q/env")
    s.lighttpd.stop()
    assert s.daemon.proc.poll() is None
    assert s.daemon.stop() == 0


# ---- frameworks against gunicorn / uvicorn ------------------------------------------------------

import test_asgi_frameworks as taf  # noqa: E402
import test_frameworks as tf  # noqa: E402

LIGHTTPD_HEADERS = {"date", "server", "connection", "transfer-encoding", "keep-alive",
                    "accept-ranges"}
WSGI_NAMES = ["json", "head-json", "query", "form", "upload", "upload-small", "raw-large", "stream",
              "error", "not-found", "redirect", "cookie"]
ASGI_NAMES = ["json", "head-json", "path-query", "path-invalid", "query", "form", "json-body",
              "upload", "raw-large", "stream", "error", "not-found"]


def comparable(r, other):
    return tf.comparable_headers(r, other, ignored=LIGHTTPD_HEADERS)


@pytest.fixture(scope="module", params=["flask", "django", "fastapi"])
def fw_pair(request):
    name = request.param
    if name == "fastapi":
        spec = taf.FRAMEWORKS[name]
        ref = module_server(request, "uvicorn", spec)
        reqs, names = taf.REQUESTS, ASGI_NAMES
    else:
        spec = tf.FRAMEWORKS[name]
        ref = module_server(request, "gunicorn", spec)
        reqs, names = tf.REQUESTS, WSGI_NAMES
    s = Site(spec)
    request.addfinalizer(s.stop)
    return name, s, ref, reqs, names


def test_frameworks_same_as_reference_server(fw_pair):
    name, s, ref, reqs, names = fw_pair
    for req in names:
        method, target, headers, body = reqs[req]
        try:
            ours = s.request(method, target, headers, body)
        except OSError as e:  # a timeout included: say which request, and what the servers logged
            pytest.fail("%s %s: %r\n%s" % (name, req, e, s.log()))
        with Conn(ref.port) as c:
            c.send(build_request(method, target, headers, body, host="example.test"))
            theirs = c.read_response(method)
        what = "%s %s" % (name, req)
        # lighttpd writes its own reason phrase for the status (not the app's).
        assert ours.status == theirs.status, (what, ours, theirs)
        assert ours.body == theirs.body, what
        assert comparable(ours, theirs) == comparable(theirs, ours), what
        if req in ("json", "upload", "raw-large"):
            assert ours.status == 200, (what, ours.body)


# ---- the daemon on its own: malformed SCGI / uwsgi heads --------------------------------------


@pytest.fixture(scope="module")
def daemon(request):
    port = free_port()
    s = Server("libwsgi-scgi", [SCGI, "--app", "lighttpd_app:wsgi", "--pythonpath", TEST_APPS,
                                "--bind", "127.0.0.1:%d" % port, "--max-body-size", "1m",
                                "--max-header-size", "4096"], port=port)
    request.addfinalizer(s.stop)
    return s.wait_ready()


def scgi_bytes(pairs, body=b""):
    head = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
    return str(len(head)).encode() + b":" + head + b"," + body


def uwsgi_bytes(pairs, body=b""):
    import struct
    d = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
    return struct.pack("<BHB", 0, len(d), 0) + d + body


def exchange(port, data, shut=False):
    """Send data (then half-close if shut), read until the daemon closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d


GOOD = [(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/ok"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]


@pytest.mark.parametrize("data,status", [
    (b"12:CONTENT_LEN", 400),                                   # truncated netstring, then EOF
    (b"5:abc", 400),                                            # shorter than announced
    (b"10x:", 400),                                             # not a length
    (scgi_bytes([(b"SCGI", b"1"), (b"REQUEST_METHOD", b"GET")]), 400),  # no CONTENT_LENGTH first
    (scgi_bytes(GOOD)[:-1] + b";", 400),                        # no ',' after the netstring
    (scgi_bytes([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"GET")]), 400),
    (scgi_bytes([(b"CONTENT_LENGTH", b"2000000")] + GOOD[1:]), 413),  # over --max-body-size
    (scgi_bytes(GOOD + [(b"HTTP_X_BIG", b"a" * 5000)]), 431),   # head over --max-header-size
    (b"\x00\x00\x01\x00" + b"\x01" * 10, 400),                  # uwsgi: truncated, then EOF
    (b"\x00\xff\xff\x00", 431),                                  # uwsgi: 65535 > the header limit
    (uwsgi_bytes([(b"REQUEST_METHOD", b"GET")]), 400),          # uwsgi: no REQUEST_URI
])
def test_malformed_heads_get_an_error_and_a_close(daemon, data, status):
    out = exchange(daemon.port, data, shut=True)
    assert out.startswith(b"Status: %d " % status), out[:200]
    # and the daemon goes on serving
    ok = exchange(daemon.port, scgi_bytes(GOOD))
    assert ok.startswith(b"Status: 200 OK\r\n") and ok.endswith(b"hello from wsgi\n")


def test_scgi_header_count_follows_max_headers():
    """--max-headers bounds an SCGI head's variables too: its HTTP_* ones and the CGI ones
    besides (64 more are allowed for those)."""
    port = free_port()
    s = Server("libwsgi-scgi", [SCGI, "--app", "lighttpd_app:wsgi", "--pythonpath", TEST_APPS,
                                "--bind", "127.0.0.1:%d" % port, "--max-headers", "200"],
               port=port)
    try:
        s.wait_ready()
        many = [(b"HTTP_X_%d" % i, b"v") for i in range(200)]
        ok = exchange(port, scgi_bytes(GOOD + many))
        assert ok.startswith(b"Status: 200 OK\r\n"), ok[:200]
        many = [(b"HTTP_X_%d" % i, b"v") for i in range(300)]
        assert exchange(port, scgi_bytes(GOOD + many), shut=True).startswith(b"Status: 431 ")
    finally:
        s.stop()


def test_scgi_body_is_exactly_content_length(daemon):
    body = os.urandom(200000)
    pairs = [(b"CONTENT_LENGTH", str(len(body)).encode())] + GOOD[1:3] + \
        [(b"REQUEST_URI", b"/upload"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
    out = exchange(daemon.port, scgi_bytes(pairs, body))
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK")
    assert json.loads(payload) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    # a body cut short: the app's read fails, the daemon answers 400 (nothing was sent yet)
    out = exchange(daemon.port, scgi_bytes(pairs, body[:1000]), shut=True)
    assert out.startswith(b"Status: 400 ")


def test_access_log_names_the_client_not_the_gateway(tmp_path):
    port = free_port()
    s = Server("libwsgi-scgi", [SCGI, "--app", "lighttpd_app:wsgi", "--pythonpath", TEST_APPS,
                                "--bind", "127.0.0.1:%d" % port, "--access-log"], port=port)
    try:
        s.wait_ready()
        pairs = GOOD + [(b"REMOTE_ADDR", b"203.0.113.7"), (b"REMOTE_PORT", b"4242"),
                        (b"HTTP_USER_AGENT", b"agent/1.0")]
        assert exchange(port, scgi_bytes(pairs)).startswith(b"Status: 200 OK")
        wait_for(lambda: "203.0.113.7" in s.log(), "the access log line", guard=GUARD)
        line = [ln for ln in s.log().splitlines() if "203.0.113.7" in ln][0]
        assert '"GET /ok HTTP/1.1" 200' in line and "agent/1.0" in line
    finally:
        s.stop()


def test_head_timeout_is_a_cgi_style_408():
    """A gateway that stops in the middle of an SCGI head gets the 408 in its own protocol."""
    port = free_port()
    s = Server("libwsgi-scgi", [SCGI, "--app", "lighttpd_app:wsgi", "--pythonpath", TEST_APPS,
                                "--bind", "127.0.0.1:%d" % port, "--timeout-request", "1"],
               port=port)
    try:
        s.wait_ready()
        for partial in (b"12:", b"\x00\x10\x00\x00\x01"):
            out = exchange(port, partial)  # no half-close: the daemon's timeout ends it
            assert out.startswith(b"Status: 408 "), out[:100]
    finally:
        s.stop()


def test_blocking_requests_do_not_stop_accepting(daemon, tmp_path):
    """A request is read and run as soon as it is accepted; when its app call blocks, another
    thread takes the loop over and goes on accepting and serving (3 blocked, 1 served)."""
    flag = tmp_path / "go"
    pairs = [(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"), (b"REQUEST_METHOD", b"GET"),
             (b"REQUEST_URI", b"/block?flag=%s" % str(flag).encode()),
             (b"SERVER_PROTOCOL", b"HTTP/1.1")]
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", daemon.port), timeout=GUARD)
            s.sendall(scgi_bytes(pairs))
            socks.append(s)
        ok = exchange(daemon.port, scgi_bytes(GOOD))
        assert ok.endswith(b"hello from wsgi\n")
        flag.write_text("go")
        for s in socks:
            out = read_to_eof(s)
            assert out.startswith(b"Status: 200 OK") and out.endswith(b"unblocked\n")
    finally:
        for s in socks:
            s.close()


def test_closed_connections_leave_nothing_to_the_next(daemon):
    """A gateway opens a connection per request; the daemon keeps the buffers of closed
    connections for the next ones (server.c: conn_keep). Requests of every kind in a row — uwsgi
    with and without a body, a body that grows the input buffer, SCGI refused by its parser,
    plain HTTP on the same port — each get their own answer, with nothing of the one before."""
    for i in range(20):
        pairs = [(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/env"),
                 (b"PATH_INFO", b"/env"), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                 (b"REMOTE_ADDR", b"10.0.0.%d" % i), (b"HTTP_X_ONLY_%d" % i, b"%d" % i)]
        many = [(b"HTTP_X_MANY_%d" % k, b"v") for k in range(70)] if i % 2 else []
        out = exchange(daemon.port, uwsgi_bytes(pairs + many))
        head, _, payload = out.partition(b"\r\n\r\n")
        assert head.startswith(b"Status: 200 OK"), head
        env = json.loads(payload)
        assert env["REMOTE_ADDR"] == "10.0.0.%d" % i and env["HTTP_X_ONLY_%d" % i] == str(i)
        assert len([k for k in env if k.startswith("HTTP_X_MANY_")]) == len(many)
        assert not [k for k in env if k.startswith("HTTP_X_ONLY_") and k != "HTTP_X_ONLY_%d" % i]
        assert "CONTENT_LENGTH" not in env or env["CONTENT_LENGTH"] in ("", "0")

        assert exchange(daemon.port, b"5:abc", shut=True).startswith(b"Status: 400 ")

        body = os.urandom(60000 + 997 * i)  # buffered before the app runs: conn.in grows
        pairs = [(b"CONTENT_LENGTH", b"%d" % len(body)), (b"REQUEST_METHOD", b"POST"),
                 (b"REQUEST_URI", b"/upload"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
        head, _, payload = exchange(daemon.port, uwsgi_bytes(pairs, body)).partition(b"\r\n\r\n")
        assert head.startswith(b"Status: 200 OK"), head
        assert json.loads(payload) == {"size": len(body),
                                       "sha256": hashlib.sha256(body).hexdigest()}

        pairs[0] = (b"CONTENT_LENGTH", b"0")
        head, _, payload = exchange(daemon.port, uwsgi_bytes(pairs)).partition(b"\r\n\r\n")
        assert json.loads(payload)["size"] == 0

        out = exchange(daemon.port, b"GET /env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, payload = out.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), head
        env = json.loads(payload)
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert not [k for k in env if k.startswith("HTTP_X_ONLY_")]


def test_kept_connections_under_concurrent_mixed_clients(daemon):
    """Review (session 11): eight gateways at once, each opening a connection per request of a
    random kind — uwsgi and SCGI heads (with and without a body, buffered or streamed), plain
    HTTP, heads and bodies cut off by the gateway, a malformed head — so that connections closed
    in every state are kept (server.c: conn_keep) and reused by another gateway's request while
    app threads run. Every answer is its own request's, with nothing of another."""
    import random
    errors = []

    def gateway(g):
        rnd = random.Random(g)
        try:
            for i in range(40):
                tag = b"g%di%d" % (g, i)
                kind = rnd.randrange(7)
                if kind in (0, 1):
                    pairs = [(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"),
                             (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/env?" + tag),
                             (b"SERVER_PROTOCOL", b"HTTP/1.1"),
                             (b"REMOTE_ADDR", b"10.%d.%d.%d" % (g, i, kind)),
                             (b"HTTP_X_TAG_" + tag.upper(), tag)]
                    pairs += [(b"HTTP_X_PAD_%d" % k, b"p" * rnd.randrange(50))
                              for k in range(rnd.randrange(80))]
                    data = scgi_bytes(pairs) if kind == 0 else uwsgi_bytes(
                        [p for p in pairs if p[0] != b"SCGI"])
                    head, _, payload = exchange(daemon.port, data).partition(b"\r\n\r\n")
                    assert head.startswith(b"Status: 200 OK"), head
                    env = json.loads(payload)
                    assert env["REMOTE_ADDR"] == "10.%d.%d.%d" % (g, i, kind), env
                    assert env["QUERY_STRING"] == tag.decode(), env
                    tags = [k for k in env if k.startswith("HTTP_X_TAG_")]
                    assert tags == ["HTTP_X_TAG_" + tag.upper().decode()], tags
                    assert env.get("CONTENT_LENGTH", "0") in ("", "0"), env
                elif kind == 2:
                    body = rnd.randbytes(rnd.choice([1, 1000, 70000, 200000]))
                    pairs = [(b"CONTENT_LENGTH", b"%d" % len(body)), (b"REQUEST_METHOD", b"POST"),
                             (b"REQUEST_URI", b"/upload"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
                    head, _, payload = exchange(daemon.port,
                                                uwsgi_bytes(pairs, body)).partition(b"\r\n\r\n")
                    assert head.startswith(b"Status: 200 OK"), head
                    assert json.loads(payload) == {"size": len(body),
                                                   "sha256": hashlib.sha256(body).hexdigest()}
                elif kind == 3:  # cut in the head, or in the body: the gateway goes away
                    pairs = [(b"CONTENT_LENGTH", b"5000"), (b"REQUEST_METHOD", b"POST"),
                             (b"REQUEST_URI", b"/upload"), (b"SERVER_PROTOCOL", b"HTTP/1.1")]
                    data = uwsgi_bytes(pairs, b"x" * 100)
                    with socket.create_connection(("127.0.0.1", daemon.port), timeout=GUARD) as s:
                        s.sendall(data[:rnd.randrange(1, len(data))])
                elif kind == 4:
                    out = exchange(daemon.port, b"GET /env?%s HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n" % tag)
                    head, _, payload = out.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 OK"), head
                    env = json.loads(payload)
                    assert env["QUERY_STRING"] == tag.decode()
                    assert env["REMOTE_ADDR"] == "127.0.0.1"
                    assert not [k for k in env if k.startswith("HTTP_X_TAG_")], env
                elif kind == 5:
                    assert exchange(daemon.port, b"5:abc", shut=True).startswith(b"Status: 400 ")
                else:
                    out = exchange(daemon.port, scgi_bytes(GOOD))
                    assert out.startswith(b"Status: 200 OK\r\n") and out.endswith(
                        b"hello from wsgi\n"), out
        except Exception as e:  # reported below: an assert in a thread would be lost
            errors.append("gateway %d: %r" % (g, e))

    ts = [threading.Thread(target=gateway, args=(g,)) for g in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(GUARD)
    assert not errors, errors
    assert all(not t.is_alive() for t in ts)
    ok = exchange(daemon.port, scgi_bytes(GOOD))
    assert ok.startswith(b"Status: 200 OK\r\n"), daemon.log()[-2000:]
