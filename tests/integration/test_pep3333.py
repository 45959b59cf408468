"""PEP 3333 corners, checked over HTTP against libwsgi-epoll: the environ, wsgi.input with
Content-Length and chunked bodies, write(), exc_info, close() exactly once (also on client abort),
wsgi.file_wrapper with a large file, wsgi.errors, and an app wrapped in wsgiref's validator."""

import hashlib
import json
import socket
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


@pytest.fixture(scope="module")
def vsrv(request):
    return module_server(request, "epoll", "corners:validated", "--threads", "2")


def get_json(port, target, **kw):
    r = request(port, "GET", target, **kw)
    assert r.status == 200, r
    return json.loads(r.body)


def state(srv, token=""):
    return get_json(srv.port, "/state?token=" + token)


# ---- environ ----------------------------------------------------------------------------------

def test_environ_values(srv):
    env = get_json(srv.port, "/environ/a%20b/%C3%A9?x=1&y=%20", headers=[
        ("X-Custom", "v1"), ("X-Custom", "v2"), ("Content-Type", "text/x-test"),
        ("Accept", "*/*")])
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    # PATH_INFO is percent-decoded and carried as latin-1 ("WSGI bytes in a str").
    assert env["PATH_INFO"] == "/environ/a b/\u00c3\u00a9"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_HOST"] == "test"
    assert env["HTTP_X_CUSTOM"] == "v1, v2"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["file_wrapper_callable"] is True
    for k in ("read", "readline", "readlines", "__iter__"):
        assert k in env["has.wsgi.input"]
    for k in ("write", "writelines", "flush"):
        assert k in env["has.wsgi.errors"]
    # Every CGI-style value is a native str.
    for k, t in env["types"].items():
        if k.isupper():
            assert t == "str", (k, t)


def test_environ_repeated_cookie_headers_keep_their_meaning(srv):
    # Cookie is no comma list: "a=1, b=2" would give cookie a the value "1,". RFC 3875 4.1.18
    # (repeated fields MUST become one value with the same semantics), RFC 9113 8.2.3 ("; ").
    env = get_json(srv.port, "/environ", headers=[("Cookie", "a=1"), ("Accept", "x"),
                                                  ("Cookie", "b=2"), ("Accept", "y")])
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "x, y"


def test_environ_underscore_header_cannot_spoof(srv):
    env = get_json(srv.port, "/environ", headers=[("X_Forwarded_For", "evil"), ("X-Forwarded-For", "good")])
    assert env["HTTP_X_FORWARDED_FOR"] == "good"


def test_environ_content_length_and_http10(srv):
    with Conn(srv.port) as c:
        r = c.request("POST", "/environ", [("Content-Type", "application/x-www-form-urlencoded")],
                      body=b"a=1", version="HTTP/1.0")
        env = json.loads(r.body)
        assert env["CONTENT_LENGTH"] == "3"
        assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_environ_threads_flags(srv_inline):
    env = get_json(srv_inline.port, "/environ")
    assert env["wsgi.multithread"] is False


# ---- wsgi.input ---------------------------------------------------------------------------------

BODY = b"line one\nline two\n\nlast line without newline"
MODES = ["read-n", "readline", "readline-size", "readlines", "iter", "read-after-eof"]


def expected(mode):
    text = BODY.decode()
    if mode == "read-n":
        return [text[i:i + 3] for i in range(0, len(text), 3)]
    if mode in ("readline", "readlines", "iter"):
        return text.splitlines(keepends=True)
    if mode == "readline-size":
        return ["line", " one", "\n"]
    if mode == "read-after-eof":
        return [text, "", "", ""]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("framing", ["length", "chunked", "chunked-bytewise"])
def test_wsgi_input_methods(any_srv, mode, framing):
    target = "/input-methods?mode=" + mode
    with Conn(any_srv.port) as c:
        if framing == "length":
            c.send(build_request("POST", target, body=BODY))
        else:
            c.send(build_request("POST", target, [("Transfer-Encoding", "chunked")]))
            if framing == "chunked":
                c.send(chunked(BODY[:5], BODY[5:20], BODY[20:]))
            else:
                for b in BODY:
                    c.send(chunked(bytes([b]))[:-5])  # one 1-byte chunk at a time
                c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r.body
        assert json.loads(r.body) == {"mode": mode, "result": expected(mode)}
        # The connection is reusable: the body was consumed exactly.
        assert c.request("GET", "/hello").status == 200


def test_wsgi_input_empty_body(any_srv):
    r = request(any_srv.port, "POST", "/echo", body=b"")
    assert r.status == 200 and r.body == b""
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n")
        assert c.read_response().body == b""


def test_wsgi_input_large_chunked(any_srv):
    data = bytes(range(256)) * 40000  # ~10 MiB
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo-sha", [("Transfer-Encoding", "chunked")]))
        parts = [data[i:i + 100000] for i in range(0, len(data), 100000)]
        c.send(chunked(*parts))
        r = c.read_response()
        assert json.loads(r.body) == {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_unread_large_body_closes_connection_but_answers(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/hello", body=b"x" * (3 << 20)))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!\n"
        assert r.header("Connection", "").lower() == "close"


@pytest.mark.parametrize("chunked_body", [False, True])
def test_unread_body_is_drained_to_keep_connection(any_srv, chunked_body):
    with Conn(any_srv.port) as c:
        body = b"x" * 500000
        if chunked_body:
            c.send(build_request("POST", "/hello", [("Transfer-Encoding", "chunked")]) +
                   chunked(*[body[i:i + 50000] for i in range(0, len(body), 50000)]))
        else:
            c.send(build_request("POST", "/hello", body=body))
        r = c.read_response()
        assert r.status == 200 and r.body == b"Hello, World!\n"
        assert r.header("Connection") is None
        assert c.request("GET", "/hello").status == 200


def test_unread_small_body_keeps_connection(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("POST", "/hello", body=b"x" * 100)
        assert r.status == 200
        assert c.request("GET", "/hello").status == 200


# ---- write(), exc_info, errors --------------------------------------------------------------------

def test_write_callable(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/write")
        assert r.status == 200 and r.body == b"one,two,three"
        r = c.request("GET", "/write-only")
        assert r.body == b"abcdef" and r.header("Content-Length") == "6"


def test_write_inside_generator_keeps_every_chunk(any_srv):
    # Three write()s in one iteration step: each chunk must arrive intact and in order (the
    # server copies a still-queued chunk when the next one arrives in the same call).
    r = request(any_srv.port, "GET", "/gen-write")
    assert r.status == 200
    expected = b"a" * 300000 + b"b" * 300000 + b"c" * 300000 + b"d" * 10
    assert len(r.body) == len(expected) and r.body == expected


def test_exc_info_before_output_replaces_headers(any_srv):
    r = request(any_srv.port, "GET", "/exc-info")
    assert r.status == 500
    assert r.body == b"handled"
    assert r.header("X-Handled") == "yes"
    assert r.header("X-First") is None


def test_exc_info_after_output_cuts_response(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", "/exc-info-after-output"))
        status, _, _, headers, _ = c.read_head()
        assert status == 200
        with pytest.raises((EOFError, ValueError, AssertionError)):
            # partial chunk, then the connection is cut without the terminating chunk
            while True:
                size = int(c.read_line(), 16)
                assert size != 0, "response should have been cut"
                c.read_exact(size + 2)


def test_exc_info_not_exc_info_after_output_raises(any_srv):
    # (None, None, None) as exc_info once the head is out: an error the app can catch (PEP 3333:
    # "must raise an error"); it used to crash the server process.
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/exc-info-not-exc-info")
        assert r.status == 200
        assert r.body == b"partial;raised TypeError"
        assert c.request("GET", "/hello").status == 200


def test_app_exception_before_start_is_500(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/raise")
        assert r.status == 500
        assert c.request("GET", "/hello").status == 200


def test_app_exception_mid_stream_cuts_connection(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("GET", "/raise-in-iter"))
        status, _, _, _, _ = c.read_head()
        assert status == 200
        assert c.read_line() == b"5"
        assert c.read_exact(7) == b"first\r\n"
        assert c.read_until_close() == b""  # no terminating chunk: the client sees the failure


def test_wsgi_errors_goes_to_log(srv):
    assert request(srv.port, "GET", "/errors").status == 200
    wait_for(lambda: "message to wsgi.errors" in srv.log(), "wsgi.errors text in the server log")


# ---- close() ------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["/close", "/close-cl"])
def test_close_called_exactly_once(any_srv, route):
    token = uuid.uuid4().hex
    with Conn(any_srv.port) as c:
        r = c.request("GET", "%s?token=%s" % (route, token))
        assert r.body == b"abc"
        wait_for(lambda: state(any_srv, token)["closes"] >= 1, "close()")
        assert state(any_srv, token)["closes"] == 1


def test_close_called_once_on_head(any_srv):
    token = uuid.uuid4().hex
    r = request(any_srv.port, "HEAD", "/close?token=" + token)
    assert r.status == 200
    wait_for(lambda: state(any_srv, token)["closes"] >= 1, "close()")
    assert state(any_srv, token)["closes"] == 1


def test_close_called_once_on_client_abort(any_srv):
    token = uuid.uuid4().hex
    c = Conn(any_srv.port)
    c.send(build_request("GET", "/forever?size=16384&token=" + token))
    c.read_head()
    c.read_exact(50000)
    c.close()
    wait_for(lambda: state(any_srv, token)["closes"] >= 1, "close() after abort")
    assert state(any_srv, token)["closes"] == 1


def test_close_called_once_when_client_never_reads(srv):
    """The client stops reading and then resets the connection while the server waits for it."""
    token = uuid.uuid4().hex
    c = Conn(srv.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(build_request("GET", "/forever?size=65536&token=" + token))
    wait_for(lambda: state(srv, token)["produced"] >= 1, "the stream to start")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    wait_for(lambda: state(srv, token)["closes"] >= 1, "close() after reset")
    assert state(srv, token)["closes"] == 1


# ---- file_wrapper --------------------------------------------------------------------------------

def test_file_wrapper_large_file(any_srv):
    size = 64 * 1024 * 1024 + 1
    expected = get_json(any_srv.port, "/file-sha?size=%d" % size)["sha256"]
    with Conn(any_srv.port) as c:
        r = c.request("GET", "/file?size=%d" % size)
        assert r.status == 200 and r.framing == "length" and len(r.body) == size
        assert hashlib.sha256(r.body).hexdigest() == expected
        assert c.request("GET", "/hello").status == 200


def test_file_wrapper_head(any_srv):
    with Conn(any_srv.port) as c:
        r = c.request("HEAD", "/file?size=1000000")
        assert r.header("Content-Length") == "1000000"
        assert c.request("GET", "/hello").body == b"Hello, World!\n"


# ---- wsgiref.validate ----------------------------------------------------------------------------

def test_validator_wrapped_app(vsrv):
    with Conn(vsrv.port) as c:
        assert c.request("GET", "/v/hello").body == b"valid"
        assert c.request("POST", "/v/echo", body=b"validated body").body == b"validated body"
        r = c.request("GET", "/v/stream")
        assert r.status == 200 and r.body == b"abc"
        r = c.request("GET", "/v/file")
        assert r.status == 200 and len(r.body) == 1 << 20
        assert c.request("HEAD", "/v/hello").status == 200
    assert "AssertionError" not in vsrv.log()
    assert "WSGIWarning" not in vsrv.log()
