"""TLS in libwsgi-epoll (--certfile, --keyfile, --ca-certs, --cert-reqs, --ssl-ciphers), with
Python's ssl module and curl as clients: environ and scope over TLS (https, wss, HTTPS=on), ALPN,
keep-alive and pipelining, a streamed upload (WSGI and ASGI), a file through wsgi.file_wrapper
(the sendfile path without TLS), a streamed response, WebSocket over TLS, clients that never
finish or never start a real handshake, client certificates, certificates read again by the new
workers of a SIGHUP reload, and close_notify before the FIN when the socket is full (an LD_PRELOAD
shim, shims/eagain_write.c, fails its first writes with EAGAIN).

The certificates are made by the openssl command (Debian's openssl package) in a temporary
directory: a self-signed server certificate for 127.0.0.1 / localhost, and a small CA with one
client certificate. Every wait is bounded by a guard; no assertion depends on timing.
"""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import Server, epoll_argv, free_port
from httpclient import wait_for
from wsclient import OP_BINARY, OP_TEXT, WSClient, build_frame

GUARD = 15.0
APP = "tls_app:app"
ASGI = "tls_app:asgi"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_server_cert(d, name, cn="localhost"):
    """A self-signed EC certificate for 127.0.0.1 and localhost: d/name.pem (cert), d/name.key."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj", "/CN=" + cn,
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="libwsgi-tls-")
    c = {"dir": d}
    c["cert"], c["key"] = make_server_cert(d, "server")
    # A CA and a client certificate it signed; and a client certificate nobody signed.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=libwsgi test CA", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2", cwd=d)
    make_server_cert(d, "stranger", cn="stranger")
    for k in ("ca", "client", "stranger"):
        c[k] = os.path.join(d, k + ".pem")
        c[k + "_key"] = os.path.join(d, k + ".key")
    yield c
    subprocess.run(["rm", "-rf", d], check=False)


def client_ctx(certs, alpn=("h2", "http/1.1"), client=None):
    ctx = ssl.create_default_context(cafile=certs["cert"])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if client:
        ctx.load_cert_chain(certs[client], certs[client + "_key"])
    return ctx


def tls_server(spawn, certs, app=APP, *args, tls_args=None):
    if tls_args is None:
        tls_args = ["--certfile", certs["cert"], "--keyfile", certs["key"]]
    return spawn("epoll", app, *(list(tls_args) + list(args)))


def https(port, certs, **kw):
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=GUARD,
                                       context=kw.pop("context", None) or client_ctx(certs), **kw)


def get(conn, path, method="GET", body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def tls_socket(port, certs, **kw):
    raw = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    return client_ctx(certs, **kw).wrap_socket(raw, server_hostname="localhost")


def read_until_eof(sock):
    """Everything until the server closes (a reset or a TLS alert counts as closed)."""
    out = bytearray()
    while True:
        try:
            b = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return bytes(out)
        if not b:
            return bytes(out)
        out += b


# ---- requests --------------------------------------------------------------------------------


def test_environ_is_https_and_alpn_is_http11(spawn, certs):
    s = tls_server(spawn, certs)
    c = https(s.port, certs)
    status, _, body = get(c, "/env")
    assert status == 200
    env = json.loads(body)
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SERVER_PORT"] == str(s.port)
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    assert c.sock.version() in ("TLSv1.3", "TLSv1.2")
    c.close()
    assert "listening at https://" in s.log()


def test_keepalive_many_requests_one_connection(spawn, certs):
    s = tls_server(spawn, certs)
    c = https(s.port, certs)
    for k in range(50):
        status, _, body = get(c, "/env?k=%d" % k)
        assert status == 200 and json.loads(body)["wsgi.url_scheme"] == "https"
    first = c.sock
    get(c, "/")
    assert c.sock is first  # the same TLS connection throughout
    c.close()


def test_pipelining_more_than_a_record(spawn, certs):
    # 200 requests in one write: about 60 KiB, several TLS records, read by the server in pieces
    # smaller than a record (decrypted bytes left in OpenSSL that epoll cannot see).
    s = tls_server(spawn, certs, APP, "--threads", "0")
    sock = tls_socket(s.port, certs)
    n = 200
    reqs = b"".join(b"GET /env?k=%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" % (k, b"p" * 220)
                    for k in range(n))
    reqs += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    sock.sendall(reqs)
    data = read_until_eof(sock)
    sock.close()
    assert data.count(b"HTTP/1.1 200 OK") == n + 1
    assert data.count(b'"wsgi.url_scheme": "https"') == n
    assert data.endswith(b"Hello, TLS!\n")


@pytest.mark.parametrize("app, threads", [(APP, "0"), (APP, "4"), (ASGI, "4")])
def test_request_pipelined_behind_a_streamed_body(spawn, certs, app, threads):
    # The body is read up to its end and no further, so the request behind it, which came in the
    # same TLS record, stays decrypted in OpenSSL, where epoll cannot see it: it must be served
    # without waiting for more input (the client sends nothing more).
    s = tls_server(spawn, certs, app, "--threads", threads, "--timeout-keepalive", "30")
    body = os.urandom(300001)
    sock = tls_socket(s.port, certs)
    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                 b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (len(body), body))
    data = read_until_eof(sock)
    sock.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert hashlib.sha256(body).hexdigest().encode() in data


@pytest.mark.parametrize("threads", ["0", "4"])
def test_large_upload_streamed(spawn, certs, threads):
    s = tls_server(spawn, certs, APP, "--threads", threads)
    body = os.urandom(1 << 20) * 6  # 6 MiB: streamed through wsgi.input, not buffered
    c = https(s.port, certs)
    status, _, got = get(c, "/upload", "POST", body)
    assert status == 200
    assert got.decode() == "%d %s" % (len(body), hashlib.sha256(body).hexdigest())

    # Chunked, in pieces of odd sizes.
    def pieces():
        for k in range(0, len(body), 100003):
            yield body[k:k + 100003]
    c.putrequest("POST", "/upload")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for p in pieces():
        c.send(b"%x\r\n%s\r\n" % (len(p), p))
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    assert r.status == 200
    assert r.read().decode() == "%d %s" % (len(body), hashlib.sha256(body).hexdigest())
    c.close()


def test_large_file_via_file_wrapper(spawn, certs):
    s = tls_server(spawn, certs)
    size = 12 * (1 << 20) + 12345
    c = https(s.port, certs)
    status, headers, got = get(c, "/file?size=%d" % size)
    assert status == 200 and len(got) == size
    assert got == (bytes(range(256)) * 4096 * 13)[:size]
    # The connection is still good after the file.
    assert get(c, "/")[2] == b"Hello, TLS!\n"
    c.close()


def test_streamed_response(spawn, certs):
    s = tls_server(spawn, certs)
    c = https(s.port, certs)
    status, headers, got = get(c, "/stream?n=300&size=10000")
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert got == b"".join(bytes([k % 256]) * 10000 for k in range(300))
    c.close()


def test_curl(spawn, certs):
    s = tls_server(spawn, certs)
    base = "https://localhost:%d" % s.port
    body = os.urandom(300000)
    up = os.path.join(certs["dir"], "upload.bin")
    with open(up, "wb") as f:
        f.write(body)
    # Options apply up to --next: each part repeats them.
    common = ["--cacert", certs["cert"], "--resolve", "localhost:%d:127.0.0.1" % s.port,
              "-w", "\\n@@ %{num_connects} %{http_version}\\n"]
    r = subprocess.run(["curl", "-sS", "--max-time", str(GUARD)] + common +
                       [base + "/env", base + "/", "--next"] + common +
                       ["--data-binary", "@" + up, base + "/upload"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode("latin-1")
    assert '"wsgi.url_scheme": "https"' in out and '"HTTPS": "on"' in out
    assert "Hello, TLS!" in out
    assert "%d %s" % (len(body), hashlib.sha256(body).hexdigest()) in out
    # Three URLs over one connection (keep-alive), HTTP/1.1 (ALPN: curl offers h2 first).
    stats = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("@@ ")]
    assert [v for _, v in stats] == ["1.1"] * 3
    assert [int(n) for n, _ in stats] == [1, 0, 0]


def test_ssl_ciphers_tls12(spawn, certs):
    s = tls_server(spawn, certs, APP, tls_args=["--certfile", certs["cert"], "--keyfile", certs["key"],
                                                "--ssl-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"])
    ctx = client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c = https(s.port, certs, context=ctx)
    assert get(c, "/")[0] == 200
    assert c.sock.version() == "TLSv1.2"
    assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    c.close()
    # A TLS 1.2 client offering only ciphers outside the list is refused; the server goes on.
    ctx = client_ctx(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        tls_socket_ctx(s.port, ctx)
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()


def tls_socket_ctx(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


# ---- ASGI and WebSocket ----------------------------------------------------------------------


def test_asgi_scope_scheme_and_upload(spawn, certs):
    s = tls_server(spawn, certs, ASGI)
    c = https(s.port, certs)
    status, _, got = get(c, "/x")
    assert status == 200
    j = json.loads(got)
    assert j["scheme"] == "https" and j["type"] == "http" and j["n"] == 0
    body = os.urandom(1 << 20) * 5
    status, _, got = get(c, "/up", "POST", body)
    j = json.loads(got)
    assert (j["n"], j["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    c.close()


def wss(port, certs, path="/"):
    ws = WSClient(port)
    ws.sock = client_ctx(certs, alpn=("http/1.1",)).wrap_socket(ws.sock, server_hostname="localhost")
    r = ws.handshake(path)
    assert r.status == 101, r
    return ws


def test_websocket_over_tls(spawn, certs):
    s = tls_server(spawn, certs, ASGI)
    ws = wss(s.port, certs)
    m = ws.recv()
    assert (m.opcode, m.data) == (OP_TEXT, "wss")
    for k in range(20):
        ws.send_text("hello %d" % k)
        m = ws.recv()
        assert (m.opcode, m.data) == (OP_TEXT, "hello %d" % k)
    big = os.urandom(3 << 20)
    ws.send_binary(big)
    m = ws.recv()
    assert m.opcode == OP_BINARY and m.data == big
    # Many messages in one write: several records, read by the server 64 KiB at a time.
    ws.send_raw(b"".join(build_frame(OP_TEXT, "m%d" % k + "x" * 500)
                         for k in range(300)))
    for k in range(300):
        m = ws.recv()
        assert m.data == "m%d" % k + "x" * 500
    ws.close_handshake(1000)
    ws.close()


# ---- clients that misbehave --------------------------------------------------------------------


def test_garbage_instead_of_client_hello(spawn, certs):
    s = tls_server(spawn, certs)
    with socket.create_connection(("127.0.0.1", s.port), timeout=GUARD) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = read_until_eof(raw)
        assert b"HTTP/1.1" not in got  # at most a TLS alert, then the close
    with socket.create_connection(("127.0.0.1", s.port), timeout=GUARD) as raw:
        raw.sendall(os.urandom(5000))
        read_until_eof(raw)
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()
    assert s.proc.poll() is None


def client_hello(certs):
    """The bytes of a real ClientHello (from an in-memory handshake)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(certs).wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_handshake_that_never_finishes(spawn, certs):
    s = tls_server(spawn, certs, APP, "--timeout-request", "1")
    hello = client_hello(certs)
    stalled = []
    for part in (b"", hello[:len(hello) // 2], hello):  # nothing, half, all but the rest
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=GUARD)
        raw.sendall(part)
        stalled.append(raw)
    # Served meanwhile.
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()
    for raw in stalled:
        read_until_eof(raw)  # closed by the server at --timeout-request (the guard is 15 s)
        raw.close()
    assert s.proc.poll() is None


def test_handshake_in_progress_when_a_graceful_stop_begins_is_served(spawn, certs):
    """A connection accepted but still before its handshake when a graceful stop begins (SIGTERM
    here; the old workers of a SIGHUP reload and a replaced worker stop the same way) is not
    dropped: like a plain connection waiting for its first request, it completes the handshake
    and its request is answered, with Connection: close. Dropping it failed a client during a
    reload under load."""
    s = tls_server(spawn, certs)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=GUARD)
    # Connected after raw, so accepted after it (one FIFO accept queue): once this is answered,
    # raw is accepted and waits for its ClientHello.
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()
    s.signal(signal.SIGTERM)
    wait_for(lambda: "shutting down gracefully" in s.log(), "the graceful stop")
    t = client_ctx(certs).wrap_socket(raw, server_hostname="localhost")
    t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = read_until_eof(t)
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert b"\r\nConnection: close\r\n" in got.split(b"\r\n\r\n")[0] + b"\r\n"
    t.close()
    assert s.wait() == 0


def test_client_disappears_mid_response(spawn, certs):
    s = tls_server(spawn, certs)
    for _ in range(3):
        sock = tls_socket(s.port, certs)
        sock.sendall(b"GET /file?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (8 << 20))
        sock.recv(1000)
        sock.close()
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()


@pytest.fixture(scope="module")
def eagain_shim():
    """tests/integration/shims/eagain_write.c built into a temporary directory (an LD_PRELOAD
    library that fails the first write() of a given size to a socket with EAGAIN)."""
    cc = os.environ.get("CC") or "cc"
    d = tempfile.mkdtemp(prefix="libwsgi-shim-")
    so = os.path.join(d, "eagain_write.so")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shims", "eagain_write.c")
    try:
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, src, "-ldl", "-lpthread"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip("cannot build the LD_PRELOAD shim: %s" % e)
    return so


# A TLS 1.3 close_notify record: 5-byte header, the 2-byte alert and its content type, 16-byte tag.
CLOSE_NOTIFY_LEN = 24


@pytest.mark.parametrize("times", [0, 1, 3])  # 0: the control, nothing injected
def test_close_notify_is_retried_when_the_socket_is_full(spawn, certs, eagain_shim, times):
    """A response delimited by the connection's close is complete only if TLS says so: the server's
    close_notify must reach the client before the FIN (RFC 8446 6.1: without it, a truncation
    attack cannot be told from the end). When SSL_shutdown cannot write the alert at once (a full
    socket buffer: here the first writes of a close_notify-sized record fail with EAGAIN), the
    server waits for EPOLLOUT and writes it then, and only then shuts its write side."""
    log = os.path.join(tempfile.mkdtemp(prefix="libwsgi-shim-log-"), "failures")
    env = {"LD_PRELOAD": eagain_shim, "LIBWSGI_SHIM_LEN": str(CLOSE_NOTIFY_LEN),
           "LIBWSGI_SHIM_TIMES": str(times), "LIBWSGI_SHIM_LOG": log,
           # ASan wants its runtime first in the library list; the shim only wraps write().
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    s = spawn("epoll", APP, "--certfile", certs["cert"], "--keyfile", certs["key"], "--workers", "1",
              env=env)
    ctx = client_ctx(certs)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # the record size above
    # Python sets it by default: an EOF without close_notify would then look like a clean end.
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=GUARD)
    sock = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    # HTTP/1.0 and a streamed body: no Content-Length, no chunking, the close ends the body.
    sock.sendall(b"GET /stream?n=3&size=1000 HTTP/1.0\r\nHost: x\r\n\r\n")
    data = bytearray()
    while True:
        try:
            b = sock.recv(65536)
        except ssl.SSLError as e:  # UNEXPECTED_EOF_WHILE_READING
            pytest.fail("the connection ended without close_notify after %d bytes: %s" % (len(data), e))
        if not b:
            break  # close_notify received
        data += b
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length" not in head.lower()
    assert body == b"".join(bytes([k % 256]) * 1000 for k in range(3))
    # The fault was injected (once per failed write).
    assert (os.path.getsize(log) if os.path.exists(log) else 0) == times


def test_cut_close_delimited_response_has_no_close_notify(spawn, certs):
    """A close-delimited body the app fails to finish ends without close_notify (a reset): over
    TLS too, the client must not take the truncated body for the whole response."""
    s = tls_server(spawn, certs)
    ctx = client_ctx(certs)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=GUARD)
    sock = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    sock.sendall(b"GET /stream?n=3&size=1000&fail=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    data = bytearray()
    ending = None
    while ending is None:
        try:
            b = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError) as e:
            ending = "error: %s" % e
            break
        if not b:
            ending = "close_notify"
        data += b
    sock.close()
    assert bytes(data).endswith(bytes([2]) * 1000)
    assert ending.startswith("error"), "a cut response ended with a clean close_notify"
    c = https(s.port, certs)
    assert get(c, "/")[0] == 200
    c.close()


# ---- client certificates -------------------------------------------------------------------------


def client_cert_outcome(port, certs, client):
    """'ok' if a request with this client certificate (None: none) is answered, else 'refused'.
    With TLS 1.3 the server checks the client's certificate after the client has finished its
    side of the handshake, so a refusal may show only when the client reads."""
    try:
        sock = tls_socket(port, certs, client=client)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return "refused"
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = read_until_eof(sock)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return "refused"
    finally:
        sock.close()
    return "ok" if got.startswith(b"HTTP/1.1 200") else "refused"


def test_client_certificates_required(spawn, certs):
    s = tls_server(spawn, certs, APP, tls_args=["--certfile", certs["cert"], "--keyfile", certs["key"],
                                                "--ca-certs", certs["ca"]])
    assert client_cert_outcome(s.port, certs, "client") == "ok"
    assert client_cert_outcome(s.port, certs, None) == "refused"
    assert client_cert_outcome(s.port, certs, "stranger") == "refused"
    assert client_cert_outcome(s.port, certs, "client") == "ok"


def test_client_certificates_optional(spawn, certs):
    s = tls_server(spawn, certs, APP, tls_args=["--certfile", certs["cert"], "--keyfile", certs["key"],
                                                "--ca-certs", certs["ca"], "--cert-reqs", "optional",
                                                # a later option does not reset --cert-reqs
                                                "--ws-per-message-deflate", "on"])
    assert client_cert_outcome(s.port, certs, "client") == "ok"
    assert client_cert_outcome(s.port, certs, None) == "ok"
    assert client_cert_outcome(s.port, certs, "stranger") == "refused"


# ---- start-up and reload ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--certfile", "/nonexistent.pem"], "--certfile /nonexistent.pem"),
    (["--certfile", "{cert}", "--keyfile", "{stranger_key}"], "stranger.key"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--ssl-ciphers", "NOPE"], "--ssl-ciphers"),
    (["--keyfile", "{key}"], "need --certfile"),
    (["--certfile", "{cert}", "--keyfile", "{key}", "--cert-reqs", "required"], "needs --ca-certs"),
])
def test_bad_tls_options_fail_at_start(certs, args, words):
    argv = epoll_argv(APP, *[a.format(**certs) for a in args], bind="127.0.0.1:%d" % free_port())
    r = subprocess.run(argv, capture_output=True, timeout=60)
    assert r.returncode != 0
    assert words in (r.stdout + r.stderr).decode()


def test_check_config_loads_the_tls_files(certs):
    ok = epoll_argv(APP, "--check-config", "--certfile", certs["cert"], "--keyfile", certs["key"])
    r = subprocess.run(ok, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bad = epoll_argv(APP, "--check-config", "--certfile", certs["cert"], "--keyfile",
                     certs["stranger_key"])
    r = subprocess.run(bad, capture_output=True, timeout=60)
    assert r.returncode == 1 and b"stranger.key" in r.stderr


def test_scgi_refuses_tls_options(certs):
    scgi = os.environ.get("LIBWSGI_SCGI") or os.path.join(
        os.path.dirname(os.environ.get("LIBWSGI_EPOLL", "")), "..", "lighttpd", "libwsgi-scgi")
    if not os.path.exists(scgi):
        pytest.skip("libwsgi-scgi not built")
    r = subprocess.run([scgi, "--app", APP, "--certfile", certs["cert"]], capture_output=True,
                       timeout=60)
    assert r.returncode == 2 and b"lighttpd" in r.stderr


def peer_cert(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as raw:
        with ctx.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)


def start_two_workers(certs, cn, workers=2):
    d = tempfile.mkdtemp(prefix="libwsgi-tls-reload-", dir=certs["dir"])
    cert, key = make_server_cert(d, "live", cn=cn)
    port = free_port()
    s = Server("epoll", epoll_argv(APP, "--workers", str(workers), "--certfile", cert,
                                   "--keyfile", key, bind="127.0.0.1:%d" % port), port=port)
    s.wait_ready()
    # Both workers up (the second may still be loading its files when the first listens).
    deadline = time.monotonic() + GUARD
    while s.log().count("listening at https://") < workers:
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.05)
    return s, d, cert, key


def wait_for_new_cert(s, port, before, cert):
    deadline = time.monotonic() + GUARD
    while True:
        assert s.proc.poll() is None, "the server exited:\n" + s.log()
        try:
            now = peer_cert(port)
        except OSError:
            now = None
        if now and now != before:
            break
        assert time.monotonic() < deadline, "still the old certificate:\n" + s.log()
        time.sleep(0.1)
    with open(cert) as f:
        assert ssl.PEM_cert_to_DER_cert(f.read()) == now


def test_a_new_worker_reads_the_certificate_files_again(certs):
    # What a reload relies on: the TLS context is made in each worker after fork. Here the master
    # replaces killed workers, and the new ones serve the renewed certificate.
    s, d, cert, key = start_two_workers(certs, "first")
    try:
        before = peer_cert(s.port)
        new_cert, new_key = make_server_cert(d, "renewed", cn="second")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        assert peer_cert(s.port) == before  # the running workers keep what they loaded
        pids = [int(ln.rsplit(" ", 1)[1]) for ln in s.log().splitlines()
                if "booted worker" in ln]
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for_new_cert(s, s.port, before, cert)
    finally:
        s.stop()


@pytest.mark.parametrize("workers", [2, 1])
def test_sighup_reload_reads_the_certificate_again(certs, workers):
    # workers 1: no master, the process executes itself again (examples/epoll/reexec.c).
    s, d, cert, key = start_two_workers(certs, "first", workers)
    try:
        before = peer_cert(s.port)
        # Renew: a new certificate and key in place of the old files.
        new_cert, new_key = make_server_cert(d, "renewed", cn="second")
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        s.signal(signal.SIGHUP)
        wait_for_new_cert(s, s.port, before, cert)
    finally:
        s.stop()
