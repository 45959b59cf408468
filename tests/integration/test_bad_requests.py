"""Requests libwsgi-epoll must refuse before they reach the app: malformed (400), smuggling
(400), oversized heads (431) and bodies (413), unsupported codings (501), and slow clients (408),
which must not starve the others."""

import json
import socket

import pytest

from conftest import module_server
from httpclient import Conn, build_request, chunked, request


@pytest.fixture(scope="module")
def srv(request):
    return module_server(request, "epoll", "corners:app", "--threads", "2",
                         "--max-header-size", "4096", "--max-body-size", "100000",
                         "--timeout-request", "2")


@pytest.fixture(scope="module")
def srv_inline(request):
    return module_server(request, "epoll", "corners:app", "--threads", "0",
                         "--max-header-size", "4096", "--max-body-size", "100000",
                         "--timeout-request", "2")


@pytest.fixture(params=["threads", "inline"])
def any_srv(request, srv, srv_inline):
    return srv if request.param == "threads" else srv_inline


def app_calls(srv):
    return json.loads(request(srv.port, "GET", "/state").body)["calls"]


def raw(srv, data):
    """Send raw bytes, return the response and whether the server then closed the connection."""
    with Conn(srv.port) as c:
        c.send(data)
        r = c.read_response()
        return r, c.is_closed_by_peer()


BAD_400 = {
    "garbage request line": b"HELLO\r\n\r\n",
    "no version": b"GET /\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "no colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "control char in value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    "missing host (1.1)": b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "CL and TE (smuggling)": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "TE and CL (smuggling)": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate CL (smuggling)": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                b"Content-Length: 5\r\n\r\nhello",
    "conflicting CL (smuggling)": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                  b"Content-Length: 6\r\n\r\nhello!",
    "CL list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
    "negative CL": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "CL not a number": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "two TE headers": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "NUL in target": b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    # Taken by the non-strict http_parser; whitespace a front end may split the line at (RFC 9112 3)
    "HTAB in target": b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTAB in query": b"GET /?a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
    "FF in target": b"GET /a\x0cb HTTP/1.1\r\nHost: x\r\n\r\n",
    # Debian's http_parser is built without HTTP_PARSER_STRICT: it takes any byte after some CRs
    # for the LF, and checks only the "H" of "HTTP". A bare CR is invalid (RFC 9112 2.2): a proxy
    # in front may see "X-A: \rZHost: evil" as one field where the parser sees two.
    "bare CR after an empty value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\rZX-Smuggled: 1\r\n\r\n",
    "bare CR after a blank value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \rZX-Smuggled: 1\r\n\r\n",
    "bare CR ending the head": b"GET / HTTP/1.1\r\nHost: x\r\n\rZ",
    "HTTP-name not HTTP": b"GET / HXYZ/1.1\r\nHost: x\r\n\r\n",
    "lowercase HTTP-name": b"GET / Http/1.1\r\nHost: x\r\n\r\n",
    # RFC 9112 3.2: 400 for a Host field with an invalid value (Host = uri-host [ ":" port ]).
    "Host with a blank": b"GET / HTTP/1.1\r\nHost: exa mple\r\n\r\n",
    "Host with a path": b"GET / HTTP/1.1\r\nHost: example/evil\r\n\r\n",
    "Host with userinfo": b"GET / HTTP/1.1\r\nHost: user@example\r\n\r\n",
    "Host with a bad port": b"GET / HTTP/1.1\r\nHost: example:80a\r\n\r\n",
    "Host: unclosed IP literal": b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    "Host (1.0) with a blank": b"GET / HTTP/1.0\r\nHost: exa mple\r\n\r\n",
    # RFC 9112 3.2: a Host that is not uri-host [":" port] is a 400 (MUST). Apps build absolute
    # URLs (redirects, url_for(_external=True), build_absolute_uri) from it.
    "host with a space": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host with a path": b"GET / HTTP/1.1\r\nHost: a.test/evil?\r\n\r\n",
    "host with userinfo": b"GET / HTTP/1.1\r\nHost: user@a.test\r\n\r\n",
    "host with a backslash": b"GET / HTTP/1.1\r\nHost: a.test\\b\r\n\r\n",
    "host port not digits": b"GET / HTTP/1.1\r\nHost: a.test:80x\r\n\r\n",
    "host with two colons": b"GET / HTTP/1.1\r\nHost: a.test:80:81\r\n\r\n",
    "host ipv6 unclosed": b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    "host ipv6 not hex": b"GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n",
    "host ipv6 then garbage": b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
    "host not ascii": b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9.test\r\n\r\n",
    "host with quotes": b"GET / HTTP/1.1\r\nHost: \"a.test\"\r\n\r\n",
    "invalid host in HTTP/1.0": b"GET / HTTP/1.0\r\nHost: a.test/x\r\n\r\n",
    # RFC 9112 3.2: a request-target has no fragment ('#' is not a pchar nor in a query); it
    # reached the app inside PATH_INFO / QUERY_STRING ("/hello#frag": a 404 from every router).
    "fragment in target": b"GET /hello#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment after query": b"GET /environ?a=1#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    "fragment in absolute form": b"GET http://x/environ#f HTTP/1.1\r\nHost: x\r\n\r\n",
}

# Hosts RFC 9112 3.2 / RFC 3986 3.2.2 allow: they reach the app as sent (OWS trimmed).
GOOD_HOSTS = {
    "empty": (b"", ""),
    "name and port": (b"example.test:8080", "example.test:8080"),
    "ipv4": (b"192.0.2.1", "192.0.2.1"),
    "ipv6 and port": (b"[::1]:8080", "[::1]:8080"),
    "ipv6 full": (b"[2001:db8::a:b:192.0.2.1]", "[2001:db8::a:b:192.0.2.1]"),
    "ipv6 zone id": (b"[fe80::1%25eth0]", "[fe80::1%25eth0]"),
    "ipvfuture": (b"[v1.fe80::a+en1]", "[v1.fe80::a+en1]"),
    "underscore, trailing dot, upper case": (b"My_Host.Example.", "My_Host.Example."),
    "percent-encoded, sub-delims": (b"%61b!$&'()*+,;=-~.test", "%61b!$&'()*+,;=-~.test"),
    "empty port": (b"example.test:", "example.test:"),
    "surrounding spaces": (b" \t example.test \t", "example.test"),
}


@pytest.mark.parametrize("name", sorted(BAD_400))
def test_malformed_is_400_and_never_reaches_app(any_srv, name):
    before = app_calls(any_srv)
    r, closed = raw(any_srv, BAD_400[name])
    assert r.status == 400, (name, r)
    assert r.header("Connection", "").lower() == "close"
    assert closed
    assert app_calls(any_srv) == before + 1  # only the /state call itself


@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "example.com:", "",
                                  "127.0.0.1:80", "[::1]:8080", "[::1]", "a-b_c~d.e%41!$&'()*+,;="])
def test_valid_host_values_are_accepted(any_srv, host):
    with Conn(any_srv.port) as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        r = c.read_response()
        assert r.status == 200, (host, r)


def test_connect_is_501(any_srv):
    """An origin server does not tunnel: CONNECT is a method it does not implement (RFC 9110
    9.1: 501), whatever follows the head is not HTTP, and the connection closes."""
    before = app_calls(any_srv)
    r, closed = raw(any_srv, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
                    b"\x16\x03\x01tunnel bytes")
    assert r.status == 501 and closed, r
    assert app_calls(any_srv) == before + 1
# RFC 9110 9.1: an origin server SHOULD answer a method it does not recognise with 501 (methods
# are case-sensitive: "get" is not GET); RFC 9112 3: a malformed request line is a 400 (the
# garbage and bad-version lines of BAD_400). http_parser knows a fixed set of methods.
@pytest.mark.parametrize("line", [b"FOO /hello HTTP/1.1", b"QUERY /hello HTTP/1.1",
                                  b"get /hello HTTP/1.1", b"GETX /hello HTTP/1.1",
                                  b"\r\nBREW * HTTP/1.1", b"X-Y_Z! /hello?a=b HTTP/1.0",
                                  b"A" * 33])  # longer than any method (RFC 9112 3)
def test_unknown_method_is_501(any_srv, line):
    before = app_calls(any_srv)
    r, closed = raw(any_srv, line + b"\r\nHost: x\r\n\r\n")
    assert r.status == 501 and closed, (line, r)
    assert app_calls(any_srv) == before + 1


@pytest.mark.parametrize("line", [b"FOO", b"FOO /hello", b"FOO  /hello HTTP/1.1",
                                  b"FOO /hello HTTP/1.1 ", b"FOO /hello HTTP/x.1",
                                  b"FOO /a\tb HTTP/1.1", b"FO(O /hello HTTP/1.1",
                                  b"FOO /hello#f HTTP/1.1"])
def test_malformed_line_with_unknown_method_is_400(any_srv, line):
    r, closed = raw(any_srv, line + b"\r\nHost: x\r\n\r\n")
    assert r.status == 400 and closed, (line, r)


def test_unknown_method_sent_byte_by_byte_is_501(any_srv):
    """The method is refused at its first byte, the status depends on the rest of the line."""
    with Conn(any_srv.port) as c:
        for b in b"QUERY /hello HTTP/1.1\r\nHost: x\r\n\r\n":
            c.send(bytes([b]))
        r = c.read_response()
        assert r.status == 501, r
        assert c.is_closed_by_peer()


def test_unknown_method_behind_keep_alive_requests_is_501(any_srv):
    """The line is re-parsed from the buffer's start (unknown_method_status): behind a pipelined
    request whose body was read, and cut in pieces after an answered one, it is still the next
    request's line that is judged."""
    foo = b"FOO /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", body=b"hello") + foo)
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", r
        assert c.read_response().status == 501
    with Conn(any_srv.port) as c:
        assert c.request("GET", "/hello").status == 200
        for b in b"\r\n" + foo:
            c.send(bytes([b]))
        r = c.read_response()
        assert r.status == 501, r
        assert c.is_closed_by_peer()


@pytest.mark.parametrize("name", sorted(GOOD_HOSTS))
def test_valid_host_reaches_app(srv, name):
    sent, seen = GOOD_HOSTS[name]
    with Conn(srv.port) as c:
        c.send(b"GET /environ HTTP/1.1\r\nHost: " + sent + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, (name, r)
    assert json.loads(r.body)["HTTP_HOST"] == seen


def test_http2_version_is_505(any_srv):
    r, closed = raw(any_srv, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    assert r.status == 505 and closed


def test_bad_chunk_size_is_400(any_srv):
    # The app was already called (chunked bodies stream): it sees wsgi.input fail, and the
    # server answers 400 for the malformed body instead of whatever the app made of that.
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) +
               b"zz\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert c.is_closed_by_peer()


@pytest.mark.parametrize("body", [
    b"5\r\nhelloXX0\r\n\r\n",           # chunk-data not followed by CRLF
    b"5\r\nhello\rX0\r\n\r\n",           # ... by CR and another byte
    b"5\rXhello\r\n0\r\n\r\n",           # chunk-size line: CR without LF
    b"5;a\x01b\r\nhello\r\n0\r\n\r\n",   # a control byte in a chunk extension
    b"5\r\nhello\r\n0\rX\r\n",           # last-chunk line: CR without LF
    b"5\r\nhello\r\n0\r\n\rX",           # end of the trailer section: CR without LF
    b"5\r\nhello\r\n0\r\nX-T:\rZ\r\n\r\n",  # a trailer field: CR without LF
])
def test_malformed_chunked_framing_is_400(any_srv, body):
    """RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF. The non-strict
    http_parser takes any two bytes after chunk-data for the CRLF (and any byte after a CR for
    the LF): a front end that reads the body otherwise would see another request than ours.
    A request pipelined after it must not be answered."""
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + body +
               build_request("GET", "/hello"))
        r = c.read_response()
        assert r.status == 400, r
        assert r.header("Connection", "").lower() == "close"
        assert c.is_closed_by_peer()


@pytest.mark.parametrize("body", [
    b"5 ;a=b ; c=\"d e\"\r\nhello\r\n0\r\n\r\n",  # BWS and quoted-string extensions
    b"5\r\nhe\r\nl\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",  # CR LF inside chunk-data, trailers
    b"5\r\nhe\r\nl\r\n0\r\nX-T: 1\n\n",   # trailer lines ended by LF alone (RFC 9112 2.2)
])
def test_valid_chunked_framing_is_accepted(any_srv, body):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        assert r.status == 200 and r.body == (b"hello" if b"hello" in body else b"he\r\nl"), r
        assert c.request("GET", "/hello").status == 200


# RFC 9110 5.6.1.2: a recipient MUST accept empty list elements and OWS around them
# (Transfer-Encoding = #transfer-coding); RFC 9112 5.1: OWS around a field value is not part of
# it; transfer-coding names are case-insensitive (RFC 9112 7). http_parser takes none of these
# forms for chunked (it then refuses the request).
@pytest.mark.parametrize("te", ["chunked\t", "chunked,", "chunked ,", ", chunked", ",chunked",
                                " , chunked , ", "chunked,,", "CHUNKED"])
def test_chunked_transfer_encoding_list_forms_are_accepted(any_srv, te):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", te)]) +
               b"5\r\nhello\r\n0\r\n\r\n" + build_request("GET", "/hello"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"hello", (te, r)
        assert c.read_response().body == b"Hello, World!\n"


def test_unsupported_transfer_coding_is_501(any_srv):
    before = app_calls(any_srv)
    r, closed = raw(any_srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert r.status in (400, 501)
    assert closed
    assert app_calls(any_srv) == before + 1


@pytest.mark.parametrize("te,status", [
    ("chunked, gzip", 400),    # chunked not last: the length cannot be known (RFC 9112 6.3)
    ("gzip", 400),
    ("chunked, chunked", 400),  # chunked applied twice
    ("gzip, chunked", 501),    # framed, but a coding we cannot decode
])
def test_transfer_coding_lists(any_srv, te, status):
    before = app_calls(any_srv)
    r, closed = raw(any_srv, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %s\r\n\r\n"
                    b"0\r\n\r\n" % te.encode())
    assert r.status == status and closed
    assert app_calls(any_srv) == before + 1


def test_headers_too_large_is_431(any_srv):
    before = app_calls(any_srv)
    r, closed = raw(any_srv, build_request("GET", "/hello", [("X-Big", "a" * 5000)]))
    assert r.status == 431 and closed
    r, closed = raw(any_srv, build_request("GET", "/hello", [("X-H%d" % i, "v" * 60) for i in range(80)]))
    assert r.status == 431 and closed
    assert app_calls(any_srv) == before + 1


def test_request_target_too_long_is_414(any_srv):
    """RFC 9112 3: a request-target longer than the server wishes to parse gets 414, not the
    431 of a head whose fields are too large; 431 stays for the fields."""
    before = app_calls(any_srv)
    r, closed = raw(any_srv, build_request("GET", "/" + "a" * 5000))
    assert r.status == 414 and closed, r
    with Conn(any_srv.port) as c:  # a target without its end
        c.send(b"GET /" + b"a" * 10000)
        r = c.read_response()
        assert r.status == 414, r
    r, closed = raw(any_srv, build_request("GET", "/hello?" + "q" * 3000, [("X-Big", "a" * 3000)]))
    assert r.status == 431 and closed, r
    assert app_calls(any_srv) == before + 1


def test_too_many_headers_is_431(any_srv):
    r, closed = raw(any_srv, build_request("GET", "/hello", [("X-%d" % i, "v") for i in range(150)]))
    assert r.status == 431 and closed


@pytest.mark.parametrize("option", ["--max-headers", "--limit-request-fields"])
def test_header_count_limit_is_configurable(spawn, option):
    """--max-headers N (gunicorn's --limit-request-fields): N header lines are served, N + 1 get
    431, for HTTP and for libwsgi-scgi's SCGI heads alike (one HTTP_* variable per header)."""
    s = spawn("epoll", "corners:app", option, "10")
    # build_request adds Host: 9 more make 10
    assert request(s.port, "GET", "/hello", [("X-%d" % i, "v") for i in range(9)]).status == 200
    r, closed = raw(s, build_request("GET", "/hello", [("X-%d" % i, "v") for i in range(10)]))
    assert r.status == 431 and closed
    big = spawn("epoll", "corners:app", option, "300")
    assert request(big.port, "GET", "/hello", [("X-%d" % i, "v") for i in range(250)]).status == 200


def test_endless_head_is_431_without_waiting_for_its_end(any_srv):
    with Conn(any_srv.port) as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 10000)
        r = c.read_response()
        assert r.status == 431


def test_body_too_large_content_length_is_413(any_srv):
    before = app_calls(any_srv)
    with Conn(any_srv.port) as c:
        # Expect: 100-continue lets the client learn the answer before sending anything.
        c.send(build_request("POST", "/echo", [("Content-Length", "100001"), ("Expect", "100-continue")]))
        r = c.read_response(skip_continue=False)
        assert r.status == 413
        assert c.is_closed_by_peer()
    r, closed = raw(any_srv, build_request("POST", "/echo", body=b"x" * 100001))
    assert r.status == 413 and closed
    assert app_calls(any_srv) == before + 1


@pytest.mark.parametrize("cl", ["9223372036854775808", "18446744073709551600"])
def test_content_length_beyond_int64_is_413(any_srv, cl):
    # http_parser accepts lengths up to ~2^64; one past INT64_MAX must not turn negative (and the
    # request into one without a body whose bytes the server then waits for).
    before = app_calls(any_srv)
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", cl)]) + b"abc")
        r = c.read_response()
        assert r.status == 413
        assert c.is_closed_by_peer()
    assert app_calls(any_srv) == before + 1


def test_body_at_the_limit_is_accepted(any_srv):
    r = request(any_srv.port, "POST", "/echo", body=b"x" * 100000)
    assert r.status == 200 and len(r.body) == 100000


def test_chunked_body_too_large_is_413(any_srv):
    # A chunked body has no length up front: the app is called, wsgi.input fails once the limit
    # is crossed, and the server answers 413 instead of whatever the app made of that.
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]))
        c.send(chunked(*([b"y" * 30000] * 4)))
        r = c.read_response()
        assert r.status == 413
    with Conn(any_srv.port) as c:
        # One oversized chunk is refused from its size line.
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"186a1\r\n")
        r = c.read_response()
        assert r.status == 413


def test_chunk_extensions_past_the_head_limit_are_refused(any_srv):
    """Chunk extensions are no body bytes, so --max-body-size never bounds them, and http_parser
    bounds each chunk-size line only (431 past --max-header-size): one byte of data per chunk
    let a client send them for ever. RFC 9112 7.1.1: a server ought to limit their total length
    in a request and answer a 4xx past it; the limit is the head's (4096 here)."""
    body = b"".join(b"1;e=%s\r\nx\r\n" % (b"v" * 100) for _ in range(60)) + b"0\r\n\r\n"
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + body)
        r = c.read_response()
        assert r.status == 413, r
        assert c.is_closed_by_peer()


def test_huge_chunk_size_after_some_body_is_413(any_srv):
    # A chunk size close to 2^64 must not wrap around the body limit check (which would let the
    # body run on until the limit is crossed by the data itself, or the client gives up).
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) +
               b"100\r\n" + b"x" * 256 + b"\r\nffffffffffffffe0\r\n" + b"y" * 100)
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert r.status == 413


def test_bad_request_after_good_one_on_same_connection(any_srv):
    with Conn(any_srv.port) as c:
        assert c.request("GET", "/hello").status == 200
        c.send(b"BROKEN\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
        assert c.is_closed_by_peer()


def test_slowloris_head_times_out_with_408_without_starving_others(any_srv):
    slow = [Conn(any_srv.port) for _ in range(20)]
    for c in slow:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    # Others are served while the slow clients hang on.
    for _ in range(10):
        assert request(any_srv.port, "GET", "/hello").status == 200
    for c in slow:
        # --timeout-request 2: the server gives up on them (the guard is much longer).
        r = c.read_response()
        assert r.status == 408
        assert c.is_closed_by_peer()
        c.close()


def test_slow_body_times_out(any_srv):
    with Conn(any_srv.port) as c:
        c.send(build_request("POST", "/echo", [("Content-Length", "10")]) + b"abc")
        r = c.read_response()
        assert r.status == 408


def test_slow_streamed_body_times_out(srv):
    with Conn(srv.port) as c:
        c.send(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"3\r\nabc\r\n")
        r = c.read_response()
        assert r.status == 408


def test_idle_connection_without_request_is_closed(any_srv):
    with Conn(any_srv.port) as c:
        assert c.is_closed_by_peer()  # no response bytes, just a close


@pytest.mark.parametrize("body", ["buffered", "streamed"])
def test_client_closing_mid_body_is_logged(spawn, body):
    """A client that closes half-way through its body: no app call for a buffered one (the
    streamed one's read fails in the app), and a log line either way saying so."""
    from httpclient import wait_for
    s = spawn("epoll", "corners:app", "--log-level", "debug", "--threads", "1")
    length = 1000 if body == "buffered" else 1 << 20  # libwsgi-epoll buffers up to 64 KiB
    c = socket.create_connection(("127.0.0.1", s.port))
    c.sendall(build_request("POST", "/echo", [("Content-Length", str(length))]) + b"abc")
    c.close()
    wait_for(lambda: "in the middle of a body" in s.log(), "the log line")
    assert request(s.port, "GET", "/hello").status == 200


def test_client_closing_mid_body_does_not_break_server(any_srv):
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", any_srv.port))
        s.sendall(build_request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"5\r\nab")
        s.close()
        s = socket.create_connection(("127.0.0.1", any_srv.port))
        s.sendall(build_request("POST", "/echo", [("Content-Length", "1000")]) + b"abc")
        s.close()
    assert request(any_srv.port, "GET", "/hello").status == 200
