"""HTTP/1.1 behaviour of libwsgi-epoll over real sockets: keep-alive, pipelining, HTTP/1.0, HEAD,
100-continue, request and response framing, Date/Server, backpressure, client aborts."""

import json
import re
import socket
import time
import uuid

import pytest

from conftest import module_server
from httpclient import Conn, build_request, chunked, request, wait_for


@pytest.fixture(scope="module")
def srv(request):
    return module_server(request, "epoll", "corners:app", "--threads", "4")


@pytest.fixture(scope="module")
def srv_inline(request):
    return module_server(request, "epoll", "corners:app", "--threads", "0")


@pytest.fixture(params=["threads", "inline"])
def any_srv(request, srv, srv_inline):
    return srv if request.param == "threads" else srv_inline


def state(srv, token=""):
    import json
    return json.loads(request(srv.port, "GET", "/state?token=" + token).body)


def test_hello_and_server_headers(any_srv):
    r = request(any_srv.port, "GET", "/hello")
    assert r.status == 200
    assert r.body == b"Hello, World!\n"
    assert r.header("Content-Length") == "14"
    assert r.header("Server", "").startswith("libwsgi-epoll")
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", r.header("Date"))
    assert r.version == "HTTP/1.1"


def test_keep_alive_many_requests_one_connection(any_srv):
    with Conn(any_srv.port) as c:
        for i in range(20):
            r = c.request("GET", "/hello?i=%d" % i)
            assert r.status == 200 and r.body == b"Hello, World!\n"
            assert r.header("Connection") is None


def test_pipelining_answers_in_order(any_srv):
    with Conn(any_srv.port) as c:
        reqs = b"".join(build_request("GET", "/stream?n=3&size=%d" % (i + 1)) for i in range(5))
        reqs += build_request("POST", "/echo", body=b"posted")
        reqs += build_request("GET", "/hello")
        c.send(reqs)
        for i in range(5):
            r = c.read_response()
            assert r.status == 200
            assert r.body == b"".join((b"%d" % k) * (i + 1) for k in range(3))
        assert c.read_response().body == b"posted"
        assert c.read_response().body == b"Hello, World!\n"


@pytest.mark.parametrize("size", [65537, 300000])
def test_large_body_then_pipelined_request(any_srv, size):
    # A body over the buffered limit is received by the app thread straight into wsgi.input's
    # bytes: never past its end, so the pipelined request behind it survives, whole.
    import hashlib
    import json
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo-sha", body=body) + build_request("POST", "/echo", body=b"next")
               + build_request("POST", "/echo", body=body))
        r = json.loads(c.read_response().body)
        assert r == {"len": size, "sha256": hashlib.sha256(body).hexdigest()}
        assert c.read_response().body == b"next"
        assert c.read_response().body == body


def test_pipelined_requests_sent_byte_by_byte(srv):
    with Conn(srv.port) as c:
        data = build_request("GET", "/hello") + build_request("POST", "/echo", body=b"xyz")
        for b in data:
            c.send(bytes([b]))
        assert c.read_response().body == b"Hello, World!\n"
        assert c.read_response().body == b"xyz"


def test_http10_close_delimited_and_closed(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/stream?n=3&size=2", version="HTTP/1.0")
        assert r.status == 200
        assert r.framing == "close"
        assert r.body == b"001122"
        assert r.header("Transfer-Encoding") is None


def test_http10_content_length_closes_by_default(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/hello", version="HTTP/1.0", host=None)
        assert r.body == b"Hello, World!\n"
        assert r.header("Connection", "").lower() == "close"
        assert c.is_closed_by_peer()


def test_http10_keep_alive_when_asked(any_srv):
    with Conn(any_srv.port) as c:
        for _ in range(3):
            r = c.request("GET", "/hello", [("Connection", "keep-alive")], version="HTTP/1.0")
            assert r.body == b"Hello, World!\n"
            assert r.header("Connection", "").lower() == "keep-alive"


def test_list_body_without_content_length_gets_one(any_srv):
    """An app that returns a list of bytes without a Content-Length (here /status: ["status
    body"]) gets one computed by libwsgi (PEP 3333, "Handling the Content-Length Header"): an
    HTTP/1.0 keep-alive client keeps its connection instead of getting a close-delimited body,
    and HTTP/1.1 is framed by length, not chunked. A generator body (/stream) is not measured."""
    with Conn(any_srv.port) as c:
        for _ in range(3):
            r = c.request("GET", "/status?code=200&reason=OK", [("Connection", "keep-alive")],
                          version="HTTP/1.0")
            assert r.body == b"status body"
            assert r.header("Content-Length") == "11"
            assert r.header("Connection", "").lower() == "keep-alive"
        r = c.request("GET", "/status?code=200&reason=OK")
        assert r.framing == "length" and r.header("Transfer-Encoding") is None
        assert r.header("Content-Length") == "11" and r.body == b"status body"
        r = c.request("HEAD", "/status?code=200&reason=OK")
        assert r.header("Content-Length") == "11" and r.body == b""
        r = c.request("GET", "/stream?n=3&size=2")
        assert r.framing == "chunked" and r.body == b"001122"


def test_http10_transfer_encoding_closes_even_with_keep_alive(any_srv):
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing (an HTTP/1.0
    # intermediary may not have read it as a body): answer, then close.
    with Conn(any_srv.port) as c:
        r = c.request("POST", "/echo", [("Connection", "keep-alive"),
                                        ("Transfer-Encoding", "chunked")],
                      body=chunked(b"hello"), version="HTTP/1.0")
        assert r.status == 200 and r.body == b"hello"
        assert r.header("Connection", "").lower() == "close"
        assert c.is_closed_by_peer()


def test_connection_close_from_client(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/hello", [("Connection", "close")])
        assert r.body == b"Hello, World!\n"
        assert r.header("Connection", "").lower() == "close"
        assert c.is_closed_by_peer()


# RFC 9112 9.6: a "close" connection option ends the connection after the response, and a
# request pipelined behind it MUST NOT be processed, whatever the version; RFC 9110 5.6.1.2: a
# recipient MUST accept empty list elements, and OWS around each (Connection = #connection-option,
# 7.6.1). http_parser misses "close" after an empty element or before a trailing HTAB.
@pytest.mark.parametrize("value,version", [
    ("close\t", "HTTP/1.1"),
    (", close", "HTTP/1.1"),
    (",close", "HTTP/1.1"),
    ("keep-alive,,close", "HTTP/1.1"),
    ("Keep-Alive , Close", "HTTP/1.1"),
    ("keep-alive, close", "HTTP/1.0"),
])
def test_connection_close_option_in_any_list_form(any_srv, value, version):
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", "/hello", [("Connection", value)], version=version) +
               build_request("GET", "/hello", version=version))
        r = c.read_response()
        assert r.body == b"Hello, World!\n"
        assert r.header("Connection", "").lower() == "close", (value, r)
        assert c.is_closed_by_peer(), value


def test_connection_close_from_app(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/connection-close")
        assert r.body == b"ok"
        assert r.header_all("Connection") == ["close"]
        assert c.is_closed_by_peer()


def test_head_has_no_body_and_keeps_connection(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("HEAD", "/hello")
        assert r.status == 200
        assert r.header("Content-Length") == "14"
        r = c.request("HEAD", "/stream?n=2")
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None
        # Nothing of either body was sent: the next response starts right away.
        r = c.request("GET", "/hello")
        assert r.body == b"Hello, World!\n"


# HEAD and 304 declare the entity's Content-Length with no body: the connection must stay usable.
@pytest.mark.parametrize("method,target", [("HEAD", "/head-cl"), ("GET", "/not-modified-cl")])
def test_bodiless_response_with_content_length_keeps_connection(srv, method, target):
    with Conn(srv.port) as c:
        r = c.request(method, target)
        assert r.status in (200, 304)
        assert r.header("Content-Length") == "10"
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


def test_204_and_304_have_no_body(any_srv):
    with Conn(any_srv.port) as c:
        for code in (204, 304):
            r = c.request("GET", "/status?code=%d" % code)
            assert r.status == code
            assert r.header("Transfer-Encoding") is None
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


def test_205_has_no_content(any_srv):
    """RFC 9110 15.3.6: "a server MUST NOT generate content in a 205 response". The app's body
    (and its Content-Length, given or computed) is dropped; unlike a 204's, a 205's empty body is
    framed, Content-Length: 0 (RFC 9112 6.3), and the connection goes on."""
    with Conn(any_srv.port) as c:
        for target in ("/status?code=205&reason=Reset+Content", "/stream?n=2&size=2&code=205"):
            r = c.request("GET", target)
            assert r.status == 205
            assert r.header("Content-Length") == "0" and r.header("Transfer-Encoding") is None
            assert r.body == b""
            assert c.request("GET", "/hello").body == b"Hello, World!\n"


def test_chunked_response_when_no_content_length(any_srv):
    r = request(any_srv.port, "GET", "/stream?n=4&size=3")
    assert r.framing == "chunked"
    assert r.header("Transfer-Encoding") == "chunked"
    assert r.body == b"000111222333"


def test_empty_chunks_do_not_end_the_chunked_body(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/empty-chunks")
        assert r.body == b"ab"
        assert c.request("GET", "/hello").status == 200


def test_content_length_response_stops_at_declared_length(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/declared-short")
        assert r.body == b"01234"
        # The rest was not sent: the connection is still in sync.
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


def test_app_headers_kept_in_order_with_duplicates(any_srv):
    r = request(any_srv.port, "GET", "/headers")
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"]
    names = [k for k, _ in r.headers]
    assert names.index("Content-Type") < names.index("Set-Cookie") < names.index("X-Custom")


def test_content_length_body(any_srv):
    body = bytes(range(256)) * 10
    r = request(any_srv.port, "POST", "/echo", body=body)
    assert r.status == 200 and r.body == body


def test_large_content_length_body_streamed(any_srv):
    body = (b"0123456789abcdef" * 65536) * 3  # 3 MiB: above the buffering threshold
    import hashlib
    r = request(any_srv.port, "POST", "/echo-sha", body=body)
    import json
    res = json.loads(r.body)
    assert res == {"len": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_request_body(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) +
               chunked("hello ", "chunked ", "world"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello chunked world"
        assert c.request("GET", "/hello").status == 200


def test_chunked_request_body_with_extensions_and_trailers(srv):
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) +
               b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
        assert c.read_response().body == b"abcde"
        assert c.request("GET", "/hello").status == 200


def test_chunked_body_streamed_as_it_arrives(srv):
    """The app answers with the first line before the client has sent the rest of the body."""
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/stream-echo-first", [("Transfer-Encoding", "chunked")]))
        c.send(b"6\r\nline1\n\r\n")
        status, _, _, headers, _ = c.read_head()
        assert status == 200
        size = int(c.read_line(), 16)
        assert c.read_exact(size) == b"first:line1\n"
        assert c.read_exact(2) == b"\r\n"
        # Only now does the client send the rest.
        c.send(b"4\r\nmore\r\n0\r\n\r\n")
        size = int(c.read_line(), 16)
        assert c.read_exact(size) == b"rest:more"


def test_expect_100_continue_small_body(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", "5")]))
        status, reason, _, _, _ = c.read_head()
        assert status == 100
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"


# Expect = #expectation (RFC 9110 10.1.1): a recipient MUST accept empty list elements and OWS
# around them (5.6.1.2), so these hold 100-continue and nothing else, and are no cause for a 417.
@pytest.mark.parametrize("value", ["100-continue,", ", 100-Continue", "100-continue\t", "100-continue, ,"])
def test_expect_100_continue_in_any_list_form(any_srv, value):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Expect", value), ("Content-Length", "5")]))
        status, reason, _, _, _ = c.read_head()
        assert status == 100, (value, status)
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello"


def test_expect_100_continue_streamed_body(any_srv):
    with Conn(any_srv.port) as c:
        body = b"z" * (1 << 20)
        c.send(build_request("POST", "/echo-sha", [("Expect", "100-continue"),
                                                   ("Content-Length", str(len(body)))]))
        status, _, _, _, _ = c.read_head()
        assert status == 100
        c.send(body)
        r = c.read_response()
        assert r.status == 200 and b'"len": 1048576' in r.body


def test_expect_100_continue_not_sent_when_app_ignores_body(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/hello", [("Expect", "100-continue"),
                                                ("Content-Length", str(1 << 20))]))
        r = c.read_response(skip_continue=False)
        assert r.status == 200
        # The body was never read, so the connection cannot be reused.
        assert r.header("Connection", "").lower() == "close"


@pytest.mark.parametrize("expect", [True, False])
def test_response_begun_before_the_body_is_read(any_srv, expect):
    """A 100 (Continue) is an interim response: it must come before the final one (RFC 9110
    15.2), never in the middle of its body. An app that reads wsgi.input after its response
    started gets no 100 sent; the client, which has its final status, may send the body anyway.
    The head and first chunk are written before the server waits for the body (PEP 3333: no
    block held back), also with --threads 0, where the app's thread is the only writer."""
    body = b"q" * 100000  # streamed into wsgi.input (more than the 64 KiB read before the app)
    with Conn(any_srv.port) as c:
        headers = [("Content-Length", str(len(body)))] + ([("Expect", "100-continue")] if expect else [])
        c.send(build_request("POST", "/respond-then-read", headers))
        status, _, _, headers, _ = c.read_head()
        assert status == 200
        assert ("Transfer-Encoding", "chunked") in headers
        c.send(body)
        parts = []
        while True:
            line = c.read_line()
            assert b"Continue" not in line, parts
            size = int(line, 16)
            if size == 0:
                assert c.read_line() == b""
                break
            parts.append(c.read_exact(size))
            assert c.read_exact(2) == b"\r\n"
        assert b"".join(parts) == b"first,read:100000"


def test_expect_unknown_is_417(any_srv):
    r = request(any_srv.port, "POST", "/echo", [("Expect", "something-else")], body=b"x")
    assert r.status == 417


def test_large_file_wrapper_response(any_srv):
    import hashlib, json
    size = 32 * 1024 * 1024 + 123
    r = request(any_srv.port, "GET", "/file?size=%d" % size)
    assert r.status == 200 and len(r.body) == size
    expected = json.loads(request(any_srv.port, "GET", "/file-sha?size=%d" % size).body)["sha256"]
    assert hashlib.sha256(r.body).hexdigest() == expected


def test_file_wrapper_without_content_length_is_chunked(any_srv):
    size = 3 * 1024 * 1024 + 7
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/file?size=%d&cl=0" % size)
        assert r.framing == "chunked" and len(r.body) == size
        assert c.request("GET", "/hello").status == 200


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_backpressure_generator_not_run_ahead_of_slow_client(any_srv):
    """A client that does not read: the app's generator is pulled only as the socket drains."""
    token = uuid.uuid4().hex
    size = 1 << 20
    c = Conn(any_srv.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(build_request("GET", "/forever?size=%d&token=%s" % (size, token)))
    # Let the server fill the socket buffers; however long this takes, the bound must hold.
    import time
    time.sleep(1.0)
    produced = state(any_srv, token)["produced"] if any_srv is not None else 0
    # Socket buffers on loopback hold a few MiB at most: without backpressure this would be huge.
    assert produced <= 16, produced
    # Now read 64 MiB: the stream flows.
    got = 0
    c.read_head()
    while got < 64 * size:
        c._fill()
        got += len(c.buf)
        c.buf = b""
    c.close()
    wait_for(lambda: state(any_srv, token)["closes"] == 1, "close() after the client went away")


def test_large_streamed_response_uses_bounded_memory(any_srv):
    total = 1024 * 1024 * 1024  # 1 GiB through a 256 KiB-chunk generator
    before = vm_rss_kb(any_srv.pid)
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", "/stream-big?total=%d" % total))
        c.read_head()
        got = 0
        sock = c.sock
        data = c.buf
        c.buf = b""
        # Read chunked framing loosely: count bytes until the terminating chunk arrives.
        tail = b""
        while True:
            if data:
                got += len(data)
                tail = (tail + data)[-16:]
                if tail.endswith(b"\r\n0\r\n\r\n"):
                    break
            data = sock.recv(1 << 20)
            if not data:
                break
        assert got > total
    after = vm_rss_kb(any_srv.pid)
    assert after - before < 64 * 1024, (before, after)


def numbered(n, sizes):
    """The body of /numbered (as apps/corners.py makes it)."""
    return b"".join((b"%d." % i * (sizes[i % len(sizes)] // 2 + 1))[:sizes[i % len(sizes)]]
                    for i in range(n))


def dechunk(raw):
    """A chunked body (without the head), and whether it had its last chunk."""
    out = []
    pos = 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            return b"".join(out), False
        size = int(raw[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out), raw[end:] == b"\r\n\r\n"
        out.append(raw[end + 2:end + 2 + size])
        assert raw[end + 2 + size:end + 4 + size] == b"\r\n"
        pos = end + 4 + size


@pytest.mark.parametrize("n, sizes", [
    (5000, [100]),                     # many small chunks: batched
    (2000, [1, 7, 1000, 3]),           # tiny ones
    (300, [10, 70000, 5, 30000, 1]),   # small ones around chunks too large to copy
])
@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_many_small_chunks_arrive_complete_and_in_order(any_srv, n, sizes, framing):
    target = "/numbered?n=%d&sizes=%s" % (n, ",".join(map(str, sizes)))
    want = numbered(n, sizes)
    if framing == "length":
        target += "&cl=1"
    version = "HTTP/1.0" if framing == "close" else "HTTP/1.1"
    with Conn(any_srv.port) as c:
        if framing == "close":
            r = c.request("GET", target, version=version)
        else:
            # Pipelined with a second request: the batches must not run into the next response.
            c.send(build_request("GET", target) + build_request("GET", "/hello"))
            r = c.read_response()
            assert c.read_response().body == b"Hello, World!\n"
        assert r.status == 200
        assert r.framing == framing
        assert len(r.body) == len(want)
        assert r.body == want


@pytest.mark.parametrize("extra", ["pause=5", "pause=3&write=1", "write=1"])
def test_small_chunks_with_pauses_and_write_many_clients(any_srv, extra):
    """Chunks the server writes while the app sleeps between them (with threads, the loop writes
    them while the app thread is in the app), and write() inside the generator, on several
    connections at once: every body complete and in order."""
    import concurrent.futures
    sizes = [1, 100, 3000, 20]
    target = "/numbered?n=300&sizes=%s&%s" % (",".join(map(str, sizes)), extra)
    want = numbered(300, sizes)

    def one(_):
        with Conn(any_srv.port) as c:
            for _ in range(3):
                r = c.request("GET", target)
                assert r.status == 200 and r.body == want
        return True

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert all(ex.map(one, range(8)))


def test_batched_chunks_then_app_failure_cut_after_them(any_srv):
    """The chunks queued before the generator raises are delivered, then the connection is cut."""
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", "/numbered?n=500&sizes=50&raise=1"))
        assert c.read_head()[0] == 200
        body, complete = dechunk(c.read_until_close())
    assert body == numbered(500, [50])
    assert not complete


def test_chunks_not_held_back_while_app_blocks(srv, tmp_path):
    """PEP 3333 (buffering and streaming): chunks the app yields back to back leave together, but
    are not kept until it yields the next one. The app waits for the test to see them (with
    --threads 0 the loop runs the app, and nobody can write while it blocks: not tested)."""
    release = tmp_path / "release"
    with Conn(srv.port) as c:
        c.send(build_request("GET", "/then-wait?n=3&release=%s" % release))
        assert c.read_head()[0] == 200
        # A server that held them would hang here (until the app gives up after 60 s; the
        # connection's guard timeout turns that into a failure).
        while b"chunk2;" not in c.buf:
            assert c._fill(), c.buf
        release.touch()
        while not c.buf.endswith(b"\r\n0\r\n\r\n"):
            assert c._fill(), c.buf
        assert dechunk(c.buf) == (b"chunk0;chunk1;chunk2;end", True)


def test_backpressure_small_chunks(any_srv):
    """A client that does not read, a generator of small (batched) chunks: the app is pulled only
    as the socket drains, and the server's memory stays bounded."""
    token = uuid.uuid4().hex
    size = 1024
    before = vm_rss_kb(any_srv.pid)
    c = Conn(any_srv.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(build_request("GET", "/forever?size=%d&token=%s" % (size, token)))
    # Let the server fill the socket buffers; however long this takes, the bounds must hold.
    time.sleep(1.0)
    produced = state(any_srv, token)["produced"]
    grown = vm_rss_kb(any_srv.pid) - before
    # What the kernel buffers on loopback (tcp_wmem's 4 MiB at most on the server's side, the
    # client's receive buffer) plus one batch (64 KiB): far below 16 MiB. Without backpressure the
    # endless generator would have produced gigabytes by now.
    assert produced * size <= 16 << 20, produced
    assert grown < 32 * 1024, grown
    # Now read 16 MiB: the stream flows; then go away: close() once.
    c.read_head()
    got = len(c.buf)
    c.buf = b""
    while got < 16 << 20:
        assert c._fill()
        got += len(c.buf)
        c.buf = b""
    c.close()
    wait_for(lambda: state(any_srv, token)["closes"] == 1, "close() after the client went away")


def test_client_abort_mid_response_calls_close_once(any_srv):
    token = uuid.uuid4().hex
    c = Conn(any_srv.port)
    c.send(build_request("GET", "/forever?size=65536&token=" + token))
    c.read_head()
    c.read_exact(100000)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()  # RST
    wait_for(lambda: state(any_srv, token)["closes"] >= 1, "close() after the client abort")
    assert state(any_srv, token)["closes"] == 1


def test_client_abort_during_slow_app_does_not_break_server(srv):
    # Many clients that send a request and vanish; the server keeps serving.
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(build_request("GET", "/stream?n=100&size=1000"))
        s.close()
    assert request(srv.port, "GET", "/hello").status == 200


def test_absolute_form_target(any_srv):
    r = request(any_srv.port, "GET", "http://example.com/environ?x=1")
    import json
    env = json.loads(r.body)
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1"


@pytest.mark.parametrize("target,host", [
    ("http://example.com/environ?x=1", "example.com"),
    ("http://example.com:8080/environ", "example.com:8080"),
    ("HTTP://[::1]:81/environ", "[::1]:81"),
])
def test_absolute_form_target_authority_is_the_host(any_srv, target, host):
    """RFC 9112 3.2.2: for an absolute-form target the origin server must ignore the Host field
    and use the target's authority: HTTP_HOST, which PEP 3333's URL reconstruction reads first,
    is the target's host (the Host field sent along names another)."""
    import json
    r = request(any_srv.port, "GET", target, [("Host", "other.example")])
    env = json.loads(r.body)
    assert env["PATH_INFO"] == "/environ"
    assert env["HTTP_HOST"] == host
    # HTTP/1.0 needs no Host field: the target's authority is the host all the same
    with Conn(any_srv.port) as c:
        r = c.request("GET", target, version="HTTP/1.0", host=None)
        assert json.loads(r.body)["HTTP_HOST"] == host


@pytest.mark.parametrize("target, host", [
    ("http://example.com/environ?x=1", "example.com"),
    ("http://example.com:8080/environ", "example.com:8080"),
    ("HTTP://[::1]:81/environ", "[::1]:81"),
    ("https://other.test/environ?q", "other.test"),
])
def test_absolute_form_authority_replaces_host(any_srv, target, host):
    """RFC 9112 3.2.2: an origin server that receives an absolute-form target MUST ignore Host and
    use the target's authority: HTTP_HOST, from which apps build their absolute URLs, is it."""
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", target, host="sent-host.test"))
        r = c.read_response()
    assert r.status == 200, r
    env = json.loads(r.body)
    assert env["HTTP_HOST"] == host
    assert env["PATH_INFO"] == "/environ"


@pytest.mark.parametrize("authority", ["user@example.com", "a b", "ex%ample.com:80x", "[::1",
                                       "", ":80"])
def test_absolute_form_bad_authority_is_400(any_srv, authority):
    """An authority that is not host[:port] (userinfo included, RFC 9110 4.2.4) is refused, and so
    is an http URI with an empty host (RFC 9110 4.2.1: a recipient MUST reject it as invalid)."""
    with Conn(any_srv.port) as c:
        c.send(("GET http://%s/environ HTTP/1.1\r\nHost: x\r\n\r\n" % authority).encode())
        r = c.read_response()
    assert r.status == 400, r


def test_unix_socket(spawn, tmp_path):
    path = str(tmp_path / "s.sock")
    s = spawn("epoll", "corners:app", unix_path=path)
    with Conn(None, unix_path=path) as c:
        r = c.request("GET", "/environ")
        assert r.status == 200
        import json
        env = json.loads(r.body)
        assert "REMOTE_ADDR" not in env or env["REMOTE_ADDR"] in ("", "127.0.0.1")
        assert c.request("GET", "/hello").body == b"Hello, World!\n"
    s.stop()
