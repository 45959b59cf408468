"""libwsgi-epoll serving a raw ASGI app (apps/asgi_corners.py) over real sockets: the scope, request
bodies streamed to receive(), 100-continue, keep-alive and pipelining, HEAD, response framing,
app failures, client aborts seen by the app, and bounded memory both ways."""

import hashlib
import json
import os
import socket
import struct
import time
import uuid

import pytest

import conftest
from conftest import module_server, vm_hwm_kib
from httpclient import Conn, build_request, chunked, request, wait_for

TAG = "asgi-http"


@pytest.fixture(scope="module")
def srv(request):
    return module_server(request, "epoll", "asgi_corners:app", env={"LIBWSGI_TEST_TAG": TAG})


def marker(kind, *parts):
    return os.path.join(conftest.SESSION_TMP, "-".join(("asgi", kind, TAG) + tuple(str(p) for p in parts)))


def state(srv, token):
    return json.loads(request(srv.port, "GET", "/state?token=" + token).body)


def token():
    return uuid.uuid4().hex[:12]


# ---- the scope ------------------------------------------------------------------------------------

def test_hello(srv):
    r = request(srv.port, "GET", "/hello")
    assert r.status == 200 and r.body == b"Hello, World!\n"
    assert r.header("Content-Length") == "14"
    assert r.header("Server") == "libwsgi-epoll" and r.header("Date")


def test_scope_values(srv):
    with Conn(srv.port) as c:
        client_port = c.sock.getsockname()[1]
        r = c.request("GET", "/scope/caf%C3%A9%20x/%2F?a=1&b=%20&a=2",
                      [("X-Custom", "one"), ("x-custom", "two"), ("X-Mixed-Case", "Value Kept")],
                      host="example.test:8080")
    assert r.status == 200
    s = json.loads(r.body)
    assert s["type"] == "http"
    assert s["asgi"]["version"] == "3.0"
    assert s["http_version"] == "1.1"
    assert s["method"] == "GET"
    assert s["scheme"] == "http"
    assert s["path"] == "/scope/caf\u00e9 x//"
    assert s["raw_path"] == "/scope/caf%C3%A9%20x/%2F"
    assert s["query_string"] == "a=1&b=%20&a=2"
    assert s["root_path"] == ""
    assert s["headers"] == [["host", "example.test:8080"], ["x-custom", "one"], ["x-custom", "two"],
                            ["x-mixed-case", "Value Kept"]]
    assert s["client"] == ["127.0.0.1", client_port]
    assert s["server"] == ["127.0.0.1", srv.port]
    # Set by the app's lifespan startup, in this very process.
    assert s["state"] == {"greeting": "set at startup", "pid": srv.pid}
    # Offered because the server implements them (trailers are not).
    assert s["extensions"] == ["http.response.pathsend"]


def test_scope_over_a_unix_socket(spawn, tmp_path):
    # A unix socket has no ports: client and server are None (the spec: server is "[path, None]"
    # or None, client is None where unknown), not a made-up ("localhost", 80).
    path = str(tmp_path / "asgi.sock")
    spawn("epoll", "asgi_corners:app", unix_path=path)
    with Conn(None, unix_path=path) as c:
        s = json.loads(c.request("GET", "/scope/").body)
        assert s["server"] is None
        assert s["client"] is None
        assert s["path"] == "/scope/"
        # The next request's scope is copied from a template that kept this one's values: still None.
        assert json.loads(c.request("GET", "/scope/x").body)["server"] is None


def test_scope_root_path_is_decoded_like_path(spawn):
    # root_path is a str decoded as path is (UTF-8), so a mount point with non-ASCII characters
    # is still the prefix of path (asgiref's WSGI adapter, Starlette's Mount and others strip it
    # from path); it was latin-1 decoded ("/caf\u00c3\u00a9").
    s = spawn("epoll", "asgi_corners:app", "--root-path", "/caf\u00e9")
    r = request(s.port, "GET", "/caf%C3%A9/scope/x")
    assert r.status == 200
    scope = json.loads(r.body)
    assert scope["root_path"] == "/caf\u00e9"
    assert scope["path"] == "/caf\u00e9/scope/x"
    assert scope["path"].startswith(scope["root_path"])


def test_scope_http10(srv):
    r = request(srv.port, "GET", "/scope/", version="HTTP/1.0")
    assert json.loads(r.body)["http_version"] == "1.0"


def test_scope_absolute_form_target_authority_is_the_host(srv):
    """RFC 9112 3.2.2: the host header of the scope is the absolute-form target's authority, not
    the Host field sent along (which is ignored)."""
    r = request(srv.port, "GET", "http://example.com:8080/scope/?q=1", [("Host", "other.example")])
    s = json.loads(r.body)
    assert s["path"] == "/scope/" and s["query_string"] == "q=1"
    assert [v for n, v in s["headers"] if n == "host"] == ["example.com:8080"]


# ---- request bodies ---------------------------------------------------------------------------------

def test_chunked_body_arrives_in_several_events(srv):
    """Each piece is sent only once the app has received the previous one, so every piece is its
    own http.request event with more_body True (no timing involved)."""
    t = token()
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/echo?token=" + t, [("Transfer-Encoding", "chunked")]))
        sent = b""
        for i, piece in enumerate([b"first-", b"second-", b"third"]):
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += piece
            wait_for(lambda: len(state(srv, t).get("events", [])) == i + 1, "event %d" % (i + 1))
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200 and r.body == sent
    events = state(srv, t)["events"]
    assert events[:3] == [[6, True], [7, True], [5, True]]
    assert events[3:] == [[0, False]]


def test_content_length_body_streamed(srv):
    body = os.urandom(3 * 1024 * 1024 + 17)  # above the 64 KiB buffering threshold
    t = token()
    r = request(srv.port, "POST", "/echo?token=" + t, body=body)
    assert r.status == 200 and r.body == body
    events = state(srv, t)["events"]
    assert sum(n for n, _ in events) == len(body)
    assert events[-1][1] is False and all(more for _, more in events[:-1])


def test_small_body_in_one_event(srv):
    t = token()
    r = request(srv.port, "POST", "/echo?token=" + t, body=b"small")
    assert r.body == b"small"
    assert state(srv, t)["events"] == [[5, False]]


def test_no_body_is_one_empty_event(srv):
    t = token()
    request(srv.port, "GET", "/echo?token=" + t)
    assert state(srv, t)["events"] == [[0, False]]


@pytest.mark.parametrize("kind", ["length-buffered", "length-streamed", "chunked"])
def test_100_continue_then_body(srv, kind):
    body = b"x" * (100 if kind == "length-buffered" else 300000)
    headers = [("Expect", "100-continue")]
    headers.append(("Transfer-Encoding", "chunked") if kind == "chunked"
                   else ("Content-Length", str(len(body))))
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/echo", headers))
        status, _, _, _, _ = c.read_head()  # the client waits for it before sending the body
        assert status == 100
        c.send(chunked(body) if kind == "chunked" else body)
        r = c.read_response()
        assert r.status == 200 and r.body == body
        assert c.request("GET", "/hello").status == 200  # the connection is reusable


def test_no_100_continue_when_the_app_answers_without_the_body(srv):
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/reject", [("Expect", "100-continue"),
                                                 ("Content-Length", "300000")]))
        r = c.read_response(skip_continue=False)
        assert r.status == 403
        # The body was never asked for: the connection cannot be reused.
        assert r.header("Connection") == "close"
        assert c.is_closed_by_peer()


@pytest.mark.rss
def test_large_upload_bounded_memory(srv):
    """200 MiB generated on the fly: the server holds only a few buffers of it at a time."""
    size = 200 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()
    before = vm_hwm_kib(srv.pid)
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/upload", [("Content-Length", str(size))]))
        for _ in range(size // len(block)):
            c.send(block)
            digest.update(block)
        r = c.read_response()
    assert r.status == 200, r.body
    data = json.loads(r.body)
    assert data["size"] == size and data["sha256"] == digest.hexdigest()
    assert data["events"] > 1
    growth_mib = (vm_hwm_kib(srv.pid) - before) / 1024
    assert growth_mib < 64, "peak RSS grew by %.1f MiB during a %d MiB upload" % (growth_mib, size >> 20)


def test_large_chunked_upload(srv):
    size = 32 * 1024 * 1024
    block = os.urandom(256 * 1024)
    digest = hashlib.sha256()
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]))
        for _ in range(size // len(block)):
            c.send(b"%x\r\n%s\r\n" % (len(block), block))
            digest.update(block)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    data = json.loads(r.body)
    assert data["size"] == size and data["sha256"] == digest.hexdigest()


def test_malformed_chunked_body_is_400(srv):
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + b"zz\r\nabc\r\n")
        r = c.read_response()
    assert r.status == 400


# ---- keep-alive, pipelining, HEAD, framing ------------------------------------------------------------

def test_keep_alive_many_requests(srv):
    with Conn(srv.port) as c:
        for i in range(30):
            r = c.request("GET", "/hello?i=%d" % i)
            assert r.status == 200 and r.body == b"Hello, World!\n"
            assert r.header("Connection") is None


def test_pipelining_answers_in_order(srv):
    with Conn(srv.port) as c:
        reqs = b"".join(build_request("GET", "/stream?n=3&size=%d" % (i + 1)) for i in range(5))
        reqs += build_request("POST", "/echo", body=b"posted")
        reqs += build_request("POST", "/echo", [("Transfer-Encoding", "chunked")], chunked(b"ab", b"cd"))
        reqs += build_request("GET", "/hello")
        c.send(reqs)
        for i in range(5):
            r = c.read_response()
            assert r.status == 200 and r.framing == "chunked"
            assert r.body == b"".join((b"%d" % k) * (i + 1) for k in range(3))
        assert c.read_response().body == b"posted"
        assert c.read_response().body == b"abcd"
        assert c.read_response().body == b"Hello, World!\n"


def test_pipelined_byte_by_byte(srv):
    with Conn(srv.port) as c:
        for b in build_request("GET", "/hello") + build_request("POST", "/echo", body=b"xyz"):
            c.send(bytes([b]))
        assert c.read_response().body == b"Hello, World!\n"
        assert c.read_response().body == b"xyz"


def test_head_has_no_body(srv):
    with Conn(srv.port) as c:
        r = c.request("HEAD", "/length")
        assert r.status == 200 and r.header("Content-Length") == "18" and r.body == b""
        r = c.request("HEAD", "/stream")
        assert r.status == 200 and r.header("Transfer-Encoding") is None
        # Nothing of either body was sent: the next response parses.
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


def test_streaming_response_is_chunked(srv):
    r = request(srv.port, "GET", "/stream?n=20&size=100")
    assert r.framing == "chunked" and r.header("Content-Length") is None
    assert r.body == b"".join((b"%d" % (i % 10)) * 100 for i in range(20))


def test_content_length_response(srv):
    r = request(srv.port, "GET", "/length")
    assert r.framing == "length" and r.body == b"exactly this long\n"
    assert r.header("Transfer-Encoding") is None


def test_one_event_body_without_content_length_gets_one(srv):
    """The whole body in one http.response.body and no content-length from the app: libwsgi adds
    one (docs/asgi.md, "Content-Length"), so an HTTP/1.0 keep-alive client keeps its connection
    and HTTP/1.1 is framed by length; a streamed body is not measured."""
    body = b"measured by the server\n"
    with Conn(srv.port) as c:
        for _ in range(3):
            r = c.request("GET", "/unmeasured", [("Connection", "keep-alive")], version="HTTP/1.0")
            assert r.body == body and r.header("Content-Length") == str(len(body))
            assert r.header("Connection", "").lower() == "keep-alive"
        r = c.request("GET", "/unmeasured")
        assert r.framing == "length" and r.header("Transfer-Encoding") is None and r.body == body
        r = c.request("HEAD", "/unmeasured")
        assert r.header("Content-Length") == str(len(body)) and r.body == b""
        r = c.request("GET", "/stream?n=3&size=2")
        assert r.framing == "chunked" and r.body == b"001122"


@pytest.mark.parametrize("code, reason", [(200, b"OK"), (299, b""), (599, b"")])
def test_status_line_keeps_the_space_before_an_empty_reason(srv, code, reason):
    # RFC 9112 section 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]; "a server
    # MUST send the space that separates the status-code from the reason-phrase even when the
    # reason-phrase is absent". An ASGI app gives only the code: one without a standard reason
    # phrase still gets its SP.
    r = request(srv.port, "GET", "/status?code=%d" % code)
    assert r.status == code and r.body == b"ok\n"
    assert r.raw_head.split(b"\r\n", 1)[0] == b"HTTP/1.1 %d %s" % (code, reason)


def test_205_has_no_content(srv):
    """RFC 9110 15.3.6: no content in a 205; its empty body framed by Content-Length: 0."""
    with Conn(srv.port) as c:
        r = c.request("GET", "/status?code=205")
        assert r.status == 205 and r.header("Content-Length") == "0" and r.body == b""
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


def _server_end(server_port, client_port):
    """The server's end of a 127.0.0.1 connection in /proc/net/tcp: (state, bytes queued to read)
    or None. States: 1 established, 8 close-wait (the client's FIN is in)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
            if int(local, 16) == server_port and int(remote, 16) == client_port:
                return int(fields[3], 16), int(fields[4].split(":")[1], 16)
    return None


def test_pipelined_request_of_a_client_that_half_closed_meanwhile(srv, tmp_path):
    """A response completed in a loop turn puts the connection's pipelined request on the ready
    list; the client's FIN, reported by the next epoll_wait before that list runs, must not close
    it there (server.c, next_request). The app holds the loop thread (a FIFO) after its response
    until the FIN is in, so that order is certain. A client that half-closes still reads: both
    answers come, and the server goes on."""
    fifo, marker = tmp_path / "fifo", tmp_path / "marker"
    os.mkfifo(fifo)
    target = "/respond-then-block?fifo=%s&marker=%s" % (fifo, marker)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as c:
        c.sendall(build_request("GET", target) + build_request("GET", "/hello"))
        wait_for(marker.exists, "the response to be out and the loop thread to block")
        c.shutdown(socket.SHUT_WR)
        cport = c.getsockname()[1]
        wait_for(lambda: (_server_end(srv.port, cport) or (0,))[0] == 8, "the FIN at the server")
        with open(fifo, "wb"):
            pass
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2, data
    assert data.endswith(b"Hello, World!\n"), data
    assert request(srv.port, "GET", "/hello").body == b"Hello, World!\n"


def test_ready_list_survives_a_reset_of_a_queued_connection(srv, tmp_path):
    """Connection A's response completes in a loop turn with its next request pipelined: A goes on
    the ready list (server.c, next_request), where it must not be closed through the link that
    queues it. B's two pipelined requests and A's reset are already in when that turn ends (the
    app holds the loop thread on a FIFO meanwhile), so the next epoll batch has both: B is
    answered twice, and the server goes on. (A guard for next_request's disarming; this ordering
    did not lose B before it either: the loss was seen only in a TLS stress run.)"""
    fifo, marker = tmp_path / "fifo", tmp_path / "marker"
    os.mkfifo(fifo)
    target = "/respond-then-block?fifo=%s&marker=%s" % (fifo, marker)
    a = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    b = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        a.sendall(build_request("GET", target) + build_request("GET", "/hello"))
        wait_for(marker.exists, "A's response to be out and the loop thread to block")
        b.sendall(build_request("GET", "/hello") + build_request("GET", "/hello"))
        bport = b.getsockname()[1]
        wait_for(lambda: (_server_end(srv.port, bport) or (0, 0))[1] > 0, "B's requests at the server")
        aport = a.getsockname()[1]
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()  # RST
        wait_for(lambda: (_server_end(srv.port, aport) or (0,))[0] != 1, "A's reset at the server")
        with open(fifo, "wb"):
            pass
        data = b""
        while data.count(b"Hello, World!\n") < 2:
            chunk = b.recv(65536)  # a lost request: socket.timeout after 30 s
            assert chunk, data
            data += chunk
    finally:
        a.close()
        b.close()
    assert request(srv.port, "GET", "/hello").body == b"Hello, World!\n"


def test_http10_close_delimited(srv):
    with Conn(srv.port) as c:
        r = c.request("GET", "/stream?n=3&size=2", version="HTTP/1.0")
        assert r.framing == "close" and r.body == b"001122"
        assert c.is_closed_by_peer()


def test_pathsend(srv, tmp_path):
    p = tmp_path / "payload.bin"
    data = os.urandom(1024 * 1024 + 3)
    p.write_bytes(data)
    r = request(srv.port, "GET", "/pathsend?path=" + str(p))
    assert r.status == 200 and r.framing == "length" and r.body == data


def test_pathsend_to_a_fifo_is_refused_without_blocking(spawn, tmp_path):
    # The extension's path names a file; a FIFO is not one. Opening it for reading blocks until a
    # writer comes, and that open() runs on the worker's one event-loop thread: every connection
    # of the worker would wait for good. It is refused at once (the app's send() raises OSError;
    # uncaught, a 500), and the worker goes on serving. Own server: a regression hangs only it.
    s = spawn("epoll", "asgi_corners:app")
    fifo = tmp_path / "a.fifo"
    os.mkfifo(fifo)
    with Conn(s.port, timeout=10.0) as c:  # a hang guard only
        assert c.request("GET", "/pathsend?path=" + str(fifo)).status == 500
    assert request(s.port, "GET", "/hello").status == 200
    wait_for(lambda: "a.fifo" in s.log(), "the app's OSError in the log")


# ---- app failures -------------------------------------------------------------------------------------

def test_raise_before_start_is_500(srv):
    with Conn(srv.port) as c:
        r = c.request("GET", "/raise-before")
        assert r.status == 500
        assert c.request("GET", "/hello").status == 200  # a complete 500: the connection lives
    wait_for(lambda: "failed before the response on purpose" in srv.log(), "the traceback in the log")


def test_raise_after_start_cuts_the_connection(srv):
    with Conn(srv.port) as c:
        c.send(build_request("GET", "/raise-after"))
        status, _, _, headers, _ = c.read_head()
        assert status == 200 and ("Transfer-Encoding", "chunked") in headers
        assert c.read_line() == b"8" and c.read_exact(10) == b"partial \r\n"
        with pytest.raises(EOFError):
            c.read_line()  # no last chunk: the client knows the body is incomplete
    wait_for(lambda: "in the middle of the response on purpose" in srv.log(), "the traceback")


def test_returning_without_response_is_500(srv):
    assert request(srv.port, "GET", "/no-response").status == 500
    wait_for(lambda: "returned without sending a response" in srv.log(), "the error in the log")


def test_invalid_message_order_is_500(srv):
    assert request(srv.port, "GET", "/bad-order").status == 500
    wait_for(lambda: "http.response.start was not sent" in srv.log(), "the error in the log")


# ---- disconnects ------------------------------------------------------------------------------------

def test_client_abort_is_http_disconnect(srv):
    t = token()
    c = Conn(srv.port)
    c.send(build_request("GET", "/wait-disconnect?token=" + t))
    status, _, _, _, _ = c.read_head()
    assert status == 200
    assert c.read_line() == b"c" and c.read_exact(14) == b"first chunk\n\r\n"
    c.close()
    wait_for(lambda: os.path.exists(marker("disconnect", t)), "the app's http.disconnect")


def test_client_abort_makes_send_raise(srv):
    t = token()
    c = Conn(srv.port)
    c.send(build_request("GET", "/big?size=%d&token=%s" % (1 << 40, t)))
    assert c.read_head()[0] == 200
    c.read_exact(1 << 20)
    c.close()
    wait_for(lambda: os.path.exists(marker("send-raised", t)), "the app's send() raising")


def fin_reached_server(srv_port, client_port):
    """True once the server's end of this connection is no longer ESTABLISHED in the kernel
    (CLOSE_WAIT: the client's FIN arrived; or already closed by the server)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, st = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == srv_port and int(remote.split(":")[1], 16) == client_port:
                return st != "01"
    return True


def test_client_closing_after_the_whole_response_is_not_an_abort(srv):
    """Quart sends its final empty body after the last chunk; a client that has the whole
    Content-Length and closes in between must not make that send() raise (uvicorn ignores it)."""
    t = token()
    c = Conn(srv.port)
    client_port = c.sock.getsockname()[1]
    r = c.request("GET", "/late-end?token=" + t)
    assert r.status == 200 and r.body == b"all of it\n"
    c.close()
    wait_for(lambda: fin_reached_server(srv.port, client_port), "the FIN to reach the server")
    assert request(srv.port, "GET", "/hello").status == 200  # the loop has turned since
    with open(marker("go", t), "w"):
        pass
    path = marker("late-end", t)
    wait_for(lambda: os.path.exists(path), "the app's final send()")
    with open(path) as f:
        assert f.read() == "ok"


def server_closed(srv_port, client_port):
    """True once the server's end of this connection is closed (gone from /proc/net/tcp, or past
    CLOSE_WAIT: the server has sent its FIN)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, st = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == srv_port and int(remote.split(":")[1], 16) == client_port:
                return st not in ("01", "08")  # ESTABLISHED, CLOSE_WAIT
    return True


def test_client_gone_while_body_reading_is_paused(srv):
    """The app has read nothing, so the server stops reading the body once 256 KiB are unread;
    a client that goes away meanwhile must still be noticed (EPOLLRDHUP), so that the app's next
    receive() is http.disconnect rather than body the client has abandoned."""
    t = token()
    c = Conn(srv.port)
    client_port = c.sock.getsockname()[1]
    c.send(build_request("POST", "/receive-when-told?token=" + t,
                         headers=[("Content-Length", str(4 << 20))]))
    # Just over the 256 KiB mark: reading pauses with at most 1 KiB left unread. More than that
    # can fill the server's receive window (it is not reading), and then the client's FIN is never
    # delivered, so no server could notice the close: that made this test fail under load.
    c.send(b"x" * (257 << 10))
    c.close()
    wait_for(lambda: server_closed(srv.port, client_port), "the server to close the connection")
    with open(marker("go", t), "w"):
        pass
    path = marker("received", t)
    wait_for(lambda: os.path.exists(path), "the app's receive()")
    with open(path) as f:
        assert f.read() == "http.disconnect"


def test_receive_after_response_is_disconnect(srv):
    t = token()
    assert request(srv.port, "POST", "/after-response?token=" + t, body=b"b").status == 200
    path = marker("after-response", t)
    wait_for(lambda: os.path.exists(path), "the app's receive() after the response")
    with open(path) as f:
        assert f.read() == "http.disconnect"


@pytest.mark.parametrize("method,body", [("GET", None), ("POST", b"never read")])
def test_receive_after_response_is_disconnect_even_unread(srv, method, body):
    """ASGI: http.disconnect "is sent to the application if receive is called after a response
    has been sent", also when the app never read the request."""
    t = token()
    assert request(srv.port, method, "/after-response-unread?token=" + t, body=body).status == 200
    path = marker("after-response-unread", t)
    wait_for(lambda: os.path.exists(path), "the app's receive() after the response")
    with open(path) as f:
        assert f.read() == "http.disconnect"


def test_app_keeps_running_after_its_response(srv):
    t = token()
    r = request(srv.port, "GET", "/background?token=" + t)
    assert json.loads(r.body) == {"accepted": t}
    wait_for(lambda: os.path.exists(marker("background", t)), "the work after the response")


@pytest.mark.rss
def test_slow_reader_bounded_memory(srv):
    """A reader much slower than the app: the app's send() waits, so the server holds at most a
    few buffers and the app has produced little more than the client has read."""
    t = token()
    size = 1 << 33  # 8 GiB: far more than could ever be buffered
    before = vm_hwm_kib(srv.pid)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no receive-window autotuning
    s.settimeout(30)
    s.connect(("127.0.0.1", srv.port))
    c = Conn.__new__(Conn)
    c.sock, c.buf, c.eof = s, b"", False
    try:
        c.send(build_request("GET", "/big?size=%d&chunk=262144&token=%s" % (size, t)))
        assert c.read_head()[0] == 200
        got = len(c.buf)
        c.buf = b""
        while got < 48 * 1024 * 1024:
            n = len(s.recv(64 * 1024))
            assert n > 0
            got += n
            if got % (1 << 20) < 65536:
                time.sleep(0.002)  # slower than the app could produce
        produced = state(srv, t)["produced"]
        assert produced <= got + 16 * 1024 * 1024, (produced, got)
    finally:
        c.close()
    growth_mib = (vm_hwm_kib(srv.pid) - before) / 1024
    assert growth_mib < 64, "peak RSS grew by %.1f MiB for a slow reader" % growth_mib
    wait_for(lambda: os.path.exists(marker("send-raised", t)), "the app's send() raising")


# ---- limits ---------------------------------------------------------------------------------------------

def test_chunked_body_over_the_limit_is_413(spawn):
    s = spawn("epoll", "asgi_corners:app", "--max-body-size", "100k")
    with Conn(s.port) as c:
        c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]))
        block = b"y" * 32768
        try:
            for _ in range(8):
                c.send(b"%x\r\n%s\r\n" % (len(block), block))
        except OSError:
            pass  # the server may close before the client is done sending
        r = c.read_response()
    assert r.status == 413
    assert request(s.port, "GET", "/hello").status == 200


def test_stalled_body_is_408(spawn):
    s = spawn("epoll", "asgi_corners:app", "--timeout-request", "1")
    with Conn(s.port) as c:
        c.send(build_request("POST", "/upload", [("Content-Length", "1000000")]) + b"only the start")
        r = c.read_response()  # after --timeout-request without progress
    assert r.status == 408
