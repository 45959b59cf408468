"""WebSocket (RFC 6455, RFC 7692, ASGI WebSocket spec 2.5) over real sockets: the same raw ASGI app
(apps/ws_app.py) served by libwsgi-epoll and by uvicorn 0.17 (`--ws websockets`, the reference),
every test run against both with the same assertions.

Where uvicorn 0.17 deviates from the spec the test asserts the spec and skips uvicorn, saying why
(uvicorn 0.17 implements ASGI WebSocket spec 2.3: no websocket.http.response, no `reason` in
websocket.disconnect, no OSError from send() after a disconnect, raw_path as str, an abrupt TCP
close instead of 1011 when the app raises after the accept, no Sec-WebSocket-Version on a version
mismatch).

The client is tests/integration/wsclient.py (raw frames), plus python3-websockets for the
permessage-deflate checks. What the app saw is reported per token through a JSON file
(apps/ws_common.py) polled with a failure guard: no timed assertion anywhere; sleeps only ever
make a "still works after a while" check more lenient.
"""

import asyncio
import json
import os
import signal
import socket
import struct
import time
import zlib

import pytest

from conftest import module_server
from wsclient import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, GUARD, ProtocolViolation,
                      WSClient, build_frame, close_payload, handshake_request)
from httpclient import wait_peer_read
from wsreport import report, token, wait_report

KINDS = ["epoll", "uvicorn"]
APP = "ws_app:app"


def server_args(kind, *args):
    """uvicorn: the websockets implementation (what uvicorn's --ws auto picks too, explicitly)."""
    return list(args) + (["--ws", "websockets"] if kind == "uvicorn" else [])


@pytest.fixture(scope="module", params=KINDS)
def srv(request):
    s = module_server(request, request.param, APP, *server_args(request.param))
    s.kind = request.param
    return s


@pytest.fixture
def start(spawn):
    """start(kind, *args): a server of that kind with its own options, stopped at teardown."""
    def _start(kind, *args, app=APP):
        s = spawn(kind, app, *server_args(kind, *args))
        s.kind = kind
        return s
    return _start


def uvicorn_deviates(srv, why):
    if srv.kind == "uvicorn":
        pytest.skip("uvicorn 0.17 deviates from the spec: " + why)


def disconnect_of(tok):
    return wait_report(tok, lambda r: "disconnect" in r, "websocket.disconnect")["disconnect"]


def http_get(port, target):
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % target.encode())
        data = bytearray()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ---- messages ---------------------------------------------------------------------------------------

def test_echo_text_binary_empty_unicode(srv):
    with WSClient.open(srv.port, "/echo") as c:
        for text in ["hello", "", "h\u00e9llo w\u00f6rld \u2713 \U0001F600 \u4e2d\u6587", "\x00nul inside"]:
            c.send_text(text)
            m = c.recv()
            assert (m.opcode, m.data) == (OP_TEXT, text)
        for data in [b"\x00\xff" * 10, b"", bytes(range(256))]:
            c.send_binary(data)
            m = c.recv()
            assert (m.opcode, m.data) == (OP_BINARY, data)
        assert c.close_handshake(1000)[0] == 1000


@pytest.mark.parametrize("size", [1, 125, 126, 127, 65535, 65536, 65537])
def test_length_encodings(srv, size):
    """Each payload length form (7-bit, 16-bit, 64-bit) both ways; the client checks the server
    uses the minimal one (RFC 6455 §5.2)."""
    data = os.urandom(size)
    with WSClient.open(srv.port, "/echo") as c:
        c.send_binary(data)
        assert c.recv_data() == data
        text = ("\u00e9" * size)[:size // 2] + "x" * (size % 2)  # `size` bytes of UTF-8
        c.send_text(text)
        assert c.recv_data() == text


def test_one_mib_both_ways(srv):
    data = os.urandom(1 << 20)
    text = ("\u2713 libwsgi " * 100000)[:(1 << 20) // 3]
    with WSClient.open(srv.port, "/echo") as c:
        c.send_binary(data)
        c.send_text(text)
        assert c.recv_data() == data
        assert c.recv_data() == text
        assert c.close_handshake(1000)[0] == 1000


@pytest.mark.parametrize("count", [200, 3000])
def test_burst_of_messages_in_one_write(srv, count):
    """Many frames in one TCP write: the server reads up to 64 KiB at once and hands wslay 4 KiB at
    a time; when the app's queue is full (32 messages) reading pauses with frames still in that
    buffer, which then wait on the connection until the app catches up. Every message is echoed,
    in order, none lost or repeated (3000: several reads of 64 KiB)."""
    msgs = ["m%05d-%s" % (i, "x" * (i % 40)) for i in range(count)]
    with WSClient.open(srv.port, "/echo") as c:
        c.send_raw(b"".join(build_frame(OP_TEXT, m) for m in msgs))
        for m in msgs:
            assert c.recv_data() == m
        assert c.close_handshake(1000)[0] == 1000


def test_text_and_binary_interleaved_in_one_read(srv):
    """Text and binary messages, some fragmented, with pings between fragments, all in one send:
    each arrives with its own type, in order (libwsgi-epoll hands text frames to wslay as binary
    and remembers which were text: ws_conn.c, mark_kind)."""
    frames, want = [], []
    for i in range(200):
        if i % 3 == 0:
            data = os.urandom(i % 50)
            frames.append(build_frame(OP_BINARY, data))
            want.append(data)
        elif i % 3 == 1:
            text = "t%d-\u00e9\u20ac" % i
            frames.append(build_frame(OP_TEXT, text.encode()))
            want.append(text)
        else:
            text = "frag%d-\u00e9" % i
            raw = text.encode()
            frames.append(build_frame(OP_TEXT, raw[:3], fin=False))
            frames.append(build_frame(OP_PING, b"p%d" % i))
            frames.append(build_frame(OP_CONT, raw[3:], fin=True))
            want.append(text)
    with WSClient.open(srv.port, "/echo") as c:
        c.send_raw(b"".join(frames))
        for w in want:
            got = c.recv_data()
            assert type(got) is type(w) and got == w, (got, w)
        assert c.close_handshake(1000)[0] == 1000


def test_fragmented_input(srv):
    """Messages sent in several frames arrive whole; a ping between fragments is answered at once
    and does not break the message; a UTF-8 sequence split across fragments is valid."""
    with WSClient.open(srv.port, "/echo") as c:
        c.send_message(OP_TEXT, "fragmented text message".encode(), fragments=5)
        assert c.recv_data() == "fragmented text message"
        data = os.urandom(300000)
        c.send_message(OP_BINARY, data, fragments=3)
        assert c.recv_data() == data
        # first fragment, a ping, the rest
        c.send_frame(OP_TEXT, "caf", fin=False)
        c.send_frame(OP_PING, b"between")
        c.send_frame(OP_CONT, b"\xc3", fin=False)  # "é" split in two frames
        c.send_frame(OP_CONT, b"\xa9!", fin=True)
        assert c.recv_data() == "caf\u00e9!"
        assert c.pongs == [b"between"]
        # empty fragments, including an empty final one
        c.send_frame(OP_BINARY, b"", fin=False)
        c.send_frame(OP_CONT, b"ab", fin=False)
        c.send_frame(OP_CONT, b"", fin=True)
        assert c.recv_data() == b"ab"


def test_byte_by_byte(srv):
    """The handshake and a masked frame arrive one byte per segment."""
    req, _ = handshake_request("/echo")
    c = WSClient(srv.port)
    with c:
        for b in req:
            c.send_raw(bytes([b]))
        r = c.read_response_head()
        assert r.status == 101
        for b in build_frame(OP_TEXT, "slow bytes"):
            c.send_raw(bytes([b]))
        assert c.recv_frame().payload == b"slow bytes"


@pytest.mark.parametrize("payload", [b"are you there?", b"", bytes(range(125))])
def test_client_ping_answered_with_same_payload(srv, payload):
    with WSClient.open(srv.port, "/echo") as c:
        c.ping(payload)
        c.send_text("after the ping")  # the pong comes first, recorded by recv()
        assert c.recv_data() == "after the ping"
        assert c.pongs == [payload]


def test_unsolicited_pong_ignored(srv):
    with WSClient.open(srv.port, "/echo") as c:
        c.send_frame(OP_PONG, b"nobody asked")
        c.send_text("still fine")
        assert c.recv_data() == "still fine"


N_PINGS = 440  # 58 KiB on the wire with the messages: fits the socket buffers without reading


def test_reading_goes_on_after_a_ping_burst_filled_the_pong_queue(start):
    """Pings whose pongs pass the server's limit stop its reading while they wait to go out; the
    frames behind them may already be out of the socket (libwsgi-epoll reads up to 64 KiB at
    once), and once the pongs have gone out they must be read too, though the socket has nothing
    new to announce them (and no server ping comes by: --ws-ping-interval 0).

    Deterministic: the app (/hold) receives nothing until released, so the server stops reading
    at the 32nd message and what the client sends after it waits, unparsed, on the server's side;
    released, the app takes the messages and the server reads on into the pings. Their pongs pass
    the limit (64 KiB, 189 bytes counted per 125-byte ping) after about 350 of them; wslay parses
    what its 4 KiB buffer holds (about 30 more), and the rest (60 pings and the last 32 messages,
    some 8 KiB) is left to read. All 64 messages must arrive, and a pong for every ping."""
    s = start("epoll", "--ws-ping-interval", "0")
    t = token()
    with WSClient.open(s.port, "/hold?token=" + t) as c:
        c.send_raw(b"".join(build_frame(OP_TEXT, "m%02d" % i) for i in range(32)) +
                   b"".join(build_frame(OP_PING, b"p" * 125) for _ in range(N_PINGS)) +
                   b"".join(build_frame(OP_TEXT, "m%02d" % i) for i in range(32, 64)))
        assert http_get(s.port, "/release?token=" + t)[0] == 200
        # /hold records its count every 64 messages: the guard only turns a hang into a failure.
        r = wait_report(t, lambda r: r.get("count", 0) >= 64, "64 messages")
        assert r["count"] == 64
        assert c.close_handshake(1000)[0] == 1000
        assert c.pongs == [b"p" * 125] * N_PINGS


# ---- handshake: scope, subprotocols, headers ------------------------------------------------------------

def test_scope(srv):
    with WSClient(srv.port) as c:
        client_port = c.sock.getsockname()[1]
        r = c.handshake("/scope/caf%C3%A9%20x?a=1&b=%20", subprotocols=["one", "two"],
                        headers=[("X-Custom", "v1"), ("x-custom", "v2")])
        assert r.status == 101
        s = json.loads(c.recv_data())
    assert s["type"] == "websocket"
    assert s["asgi"]["version"] == "3.0"
    assert s["http_version"] == "1.1"
    assert s["scheme"] == "ws"
    assert s["path"] == "/scope/caf\u00e9 x"
    assert s["query_string"] == ["bytes", "a=1&b=%20"]
    assert s["root_path"] == ""
    assert s["client"] == ["127.0.0.1", client_port]
    assert s["server"] == ["127.0.0.1", srv.port]
    assert s["subprotocols"] == ["one", "two"]
    # Header names lowercased only by libwsgi (the spec says "should"; uvicorn keeps their case).
    headers = [[n.lower(), v] for n, v in s["headers"]]
    assert ["x-custom", "v1"] in headers and ["x-custom", "v2"] in headers
    assert headers.index(["x-custom", "v1"]) < headers.index(["x-custom", "v2"])
    assert ["sec-websocket-protocol", "one, two"] in headers
    assert ["upgrade", "websocket"] in headers
    if srv.kind == "uvicorn":
        return  # what follows is spec 2.5, uvicorn 0.17 says 2.3 and gives raw_path as str
    assert s["asgi"].get("spec_version") == "2.5"
    assert s["raw_path"] == ["bytes", "/scope/caf%C3%A9%20x"]
    assert "websocket.http.response" in s["extensions"]
    assert all(n == n.lower() for n, _ in s["headers"])
    assert s["state"] == ["greeting"]  # a copy of the lifespan state, as for HTTP


@pytest.fixture(scope="module")
def pair(request):
    return (module_server(request, "epoll", APP), module_server(request, "uvicorn", APP, "--ws", "websockets"))


def test_scope_pair(pair):
    """The same handshake under both servers: same scope, except the keys uvicorn 0.17 gets wrong
    or lacks (spec_version, raw_path type, extensions) and header-name case."""
    scopes = []
    for s in pair:
        with WSClient(s.port) as c:
            c.handshake("/scope/x?q=1", subprotocols=["a", "b"], headers=[("X-One", "1")])
            scope = json.loads(c.recv_data())
        for k in ("client", "server", "spec_version"):
            scope.pop(k, None)
        scope["asgi"].pop("spec_version", None)
        scope["raw_path"] = scope["raw_path"][1]
        scope.pop("extensions", None)
        scope.pop("state", None)
        scope["headers"] = [[n.lower(), v] for n, v in scope["headers"] if n.lower() != "sec-websocket-key"]
        scopes.append(scope)
    assert scopes[0] == scopes[1]


def test_subprotocol_negotiation(srv):
    with WSClient(srv.port) as c:
        r = c.handshake("/subprotocols?pick=chat.v1", subprotocols=["chat.v2", "chat.v1"])
        assert r.status == 101
        assert r.headers_named("Sec-WebSocket-Protocol") == ["chat.v1"]
        assert json.loads(c.recv_data()) == ["chat.v2", "chat.v1"]


def test_subprotocols_from_several_headers(srv):
    with WSClient(srv.port) as c:
        r = c.handshake("/subprotocols?pick=b", headers=[("Sec-WebSocket-Protocol", "a, b"),
                                                         ("Sec-WebSocket-Protocol", "c")])
        assert r.status == 101 and r.header("Sec-WebSocket-Protocol") == "b"
        assert json.loads(c.recv_data()) == ["a", "b", "c"]


def test_no_subprotocol_chosen(srv):
    with WSClient(srv.port) as c:
        r = c.handshake("/subprotocols", subprotocols=["x"])
        assert r.status == 101 and r.header("Sec-WebSocket-Protocol") is None
        assert json.loads(c.recv_data()) == ["x"]
    with WSClient(srv.port) as c:
        assert c.handshake("/subprotocols").status == 101
        assert json.loads(c.recv_data()) == []


@pytest.mark.parametrize("offer", [["x"], []])
def test_subprotocol_not_offered_is_an_app_error(srv, offer):
    """RFC 6455 §4.2.2: the server's subprotocol MUST be one the client offered (a client fails a
    connection that names another, §4.1). An app that picks one anyway gets ValueError from its
    websocket.accept; not accepted then, its exception is answered like any other: 500."""
    uvicorn_deviates(srv, "it sends whatever subprotocol the app picked")
    with WSClient(srv.port) as c:
        r = c.handshake("/subprotocols?pick=zzz", subprotocols=offer)
        assert r.status == 500, (r.status, r.headers_named("Sec-WebSocket-Protocol"))
        assert r.headers_named("Sec-WebSocket-Protocol") == []
    # The worker goes on serving.
    with WSClient(srv.port) as c:
        assert c.handshake("/subprotocols?pick=x", subprotocols=["x"]).status == 101


def test_accept_headers_in_101(srv):
    with WSClient(srv.port) as c:
        r = c.handshake("/headers")
        assert r.status == 101
        assert r.header("x-extra") == "one"
        assert r.headers_named("set-cookie") == ["a=1", "b=2"]
        c.send_text("ok")
        assert c.recv_data() == "ok"


# ---- closing --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ("code=4001&reason=bye%20%E2%9C%93", (4001, "bye \u2713")),
    ("code=1000", (1000, "")),
    ("", (1000, "")),
    ("code=1001&reason=going", (1001, "going")),
])
def test_server_close_code_and_reason(srv, query, expected):
    t = token()
    with WSClient.open(srv.port, "/close?token=%s&%s" % (t, query)) as c:
        assert c.server_close() == expected
    # After its websocket.close, the app's receive() gives websocket.disconnect.
    assert wait_report(t, lambda r: "after_close" in r, "the event after close")["after_close"] == "websocket.disconnect"


def test_server_close_after_a_burst(srv):
    """Messages the app sent before its websocket.close all arrive, in order, before the Close."""
    t = token()
    with WSClient.open(srv.port, "/burst-close?n=20&size=100000&token=" + t) as c:
        for i in range(20):
            data = c.recv_data()
            assert len(data) == 100000 and data[:4] == struct.pack("!I", i)
        assert c.server_close() == (4000, "after the burst")
    assert wait_report(t, lambda r: "after_close" in r, "the event after close")["after_close"] == "websocket.disconnect"


def test_data_after_the_client_close_is_ignored(srv):
    """Frames after the client's Close are not delivered to the app (RFC 6455 §5.5.1)."""
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_text("before")
        assert c.recv_data() == "before"
        c.send_raw(build_frame(OP_CLOSE, close_payload(1000)) + build_frame(OP_TEXT, "after the close"))
        assert c.recv_close()[0] == 1000
    r = wait_report(t, lambda r: "disconnect" in r, "websocket.disconnect")
    assert r["received"] == 1 and r["disconnect"]["code"] == 1000


@pytest.mark.parametrize("reason", ["x" * 200, "\u00e9" * 100])
def test_server_close_reason_too_long(srv, reason):
    """A reason longer than a Close frame holds (123 bytes): whatever the server does (truncate,
    1011, an error in the app), the frames stay valid: control frame <= 125 bytes, reason valid
    UTF-8 (a truncation must not split a character). The client checks both."""
    from urllib.parse import quote
    with WSClient.open(srv.port, "/close?code=4000&reason=" + quote(reason)) as c:
        code, got = c.server_close()
    assert code in (None, 4000, 1011)
    if code == 4000:
        assert reason.startswith(got)


@pytest.mark.parametrize("code", [999, 1005, 1006, 1015, 2999, 5000])
def test_app_close_with_a_code_that_must_not_be_sent(srv, code):
    """RFC 6455 §7.4.1: 1005, 1006, 1015 and codes outside the registry never go on the wire.
    Whatever the server does with the app's close (an error in the app: 1011, or dropping the
    connection), the client's parser rejects an invalid code in the Close it gets."""
    with WSClient.open(srv.port, "/close?code=%d" % code) as c:
        got, _ = c.server_close()
    assert got in (None, 1011), got


def test_other_upgrades_are_plain_http(srv):
    """Upgrade: h2c (or anything but websocket) is ignored: a plain HTTP response (RFC 9110 §7.8
    lets a server ignore an upgrade it does not do)."""
    uvicorn_deviates(srv, "with httptools it answers 400 'Unsupported upgrade request' instead of "
                          "ignoring the Upgrade header")
    req = (b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    with WSClient(srv.port) as c:
        c.send_raw(req)
        r = c.read_response_head()
        assert r.status == 200
        assert c.read_exact(int(r.header("Content-Length"))) == b"Hello, World!\n"


def test_client_close_seen_by_app(srv):
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_text("one")
        assert c.recv_data() == "one"
        # The server answers with a Close echoing the code (RFC 6455 §5.5.1), then closes TCP.
        assert c.close_handshake(4002, "client leaving \u2713")[0] == 4002
    d = disconnect_of(t)
    assert d["code"] == 4002
    if srv.kind == "uvicorn":
        return  # uvicorn 0.17 (spec 2.3) has no reason in websocket.disconnect
    assert d["reason"] == "client leaving \u2713"


def test_client_close_without_code(srv):
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_close()  # empty payload: no status code
        code, _ = c.recv_close()
        assert code in (1005, 1000)  # echoed empty, or a plain normal closure
        assert c.is_closed_by_peer()
    assert disconnect_of(t)["code"] == 1005


def test_client_close_1000_no_reason(srv):
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        assert c.close_handshake(1000) == (1000, "")
    d = disconnect_of(t)
    assert d["code"] == 1000 and d.get("reason") in ("", None)


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_client_close_with_a_code_registered_after_rfc6455(srv, code):
    """1012 (Service Restart), 1013 (Try Again Later) and 1014 (Bad Gateway) are in the IANA
    registry RFC 6455 §7.4.2 defers to (and an app may send them: docs/asgi.md). A client's Close
    with one is echoed and the app gets its code and reason; it is not a protocol error (wslay
    1.1.1 knows the codes up to 1011 only, and failed the connection with 1002)."""
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_text("one")
        assert c.recv_data() == "one"
        assert c.close_handshake(code, "later \u2713")[0] == code
    d = disconnect_of(t)
    assert d["code"] == code
    if srv.kind != "uvicorn":  # uvicorn 0.17 (spec 2.3) has no reason in websocket.disconnect
        assert d["reason"] == "later \u2713"


def test_client_echo_of_a_code_registered_after_rfc6455(srv):
    """The app closes with 1013 and the client echoes it: the app's receive() after its close gives
    websocket.disconnect with the client's 1013 (not 1006, a connection lost without a Close)."""
    t = token()
    with WSClient.open(srv.port, "/close?code=1013&reason=later&token=" + t) as c:
        assert c.server_close() == (1013, "later")
    r = wait_report(t, lambda r: "after_close" in r, "the event after close")
    assert r["after_close"] == "websocket.disconnect"
    assert r["after_close_code"] == 1013


def test_abrupt_drop_is_1006(srv):
    t = token()
    c = WSClient.open(srv.port, "/echo?token=" + t)
    c.send_text("x")
    assert c.recv_data() == "x"
    c.close()  # no Close frame
    assert disconnect_of(t)["code"] == 1006


def test_abrupt_drop_with_reset(srv):
    t = token()
    c = WSClient.open(srv.port, "/echo?token=" + t)
    c.send_text("x")
    assert c.recv_data() == "x"
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    assert disconnect_of(t)["code"] == 1006


@pytest.mark.parametrize("how", ["close-frame", "drop"])
def test_send_after_disconnect_raises_oserror(srv, how):
    uvicorn_deviates(srv, "send() after the disconnect raises RuntimeError, not OSError (spec 2.4)")
    t = token()
    with WSClient.open(srv.port, "/echo?send_after=1&token=" + t) as c:
        if how == "close-frame":
            c.close_handshake(1000)
    r = wait_report(t, lambda r: "send_after" in r, "send() after the disconnect")
    assert r["send_after"]["is_oserror"], r


# ---- denial and app failures -----------------------------------------------------------------------------

def assert_not_upgraded(r):
    assert r.header("Upgrade") is None and r.header("Sec-WebSocket-Accept") is None


def test_close_before_accept_is_403(srv):
    t = token()
    with WSClient(srv.port) as c:
        r = c.handshake("/deny?token=" + t)
        assert r.status == 403, r
        assert_not_upgraded(r)
    # The server is fine afterwards.
    with WSClient.open(srv.port, "/echo") as c:
        c.send_text("next")
        assert c.recv_data() == "next"


def test_receive_after_denial_is_disconnect(srv):
    """After websocket.close before the accept (403), the app's next receive() returns
    websocket.disconnect (the server closed the connection): the app can end."""
    t = token()
    with WSClient(srv.port) as c:
        assert c.handshake("/deny?receive_after=1&token=" + t).status == 403
    assert wait_report(t, lambda r: "after_deny" in r, "receive() after the denial")["after_deny"] == "websocket.disconnect"


def test_receive_after_denial_response_is_disconnect(srv):
    uvicorn_deviates(srv, "no websocket.http.response extension (it answers 500)")
    t = token()
    with WSClient(srv.port) as c:
        assert c.handshake("/deny-response?receive_after=1&token=" + t).status == 401
    assert wait_report(t, lambda r: "after_deny" in r, "receive() after the denial")["after_deny"] == "websocket.disconnect"


def test_denial_response_extension(srv):
    uvicorn_deviates(srv, "no websocket.http.response extension (it answers 500)")
    t = token()
    with WSClient(srv.port) as c:
        r = c.handshake("/deny-response?token=" + t)
    assert r.status == 401, r
    assert r.body == b"denied by the app"
    assert r.header("content-type") == "text/plain"
    assert r.header("www-authenticate") == 'Basic realm="ws"'
    assert r.headers_named("x-denied") == ["yes", "twice"]
    assert_not_upgraded(r)
    assert "websocket.http.response" in report(t)["extensions"]


@pytest.mark.parametrize("path", ["/raise-before", "/return-before"])
def test_app_ending_before_accept_denies_over_http(srv, path):
    """The spec only says a denied connection gets 403. An app that returns without deciding has
    denied it (libwsgi: 403); one that raises has failed, and gets the 500 an HTTP app would
    (libwsgi, and uvicorn, daphne, hypercorn; uvicorn also answers 500 to a return). Either way an
    HTTP denial: no 101, a complete response, the server still serving."""
    with WSClient(srv.port) as c:
        r = c.handshake(path)
        if srv.kind == "uvicorn":
            assert r.status in (403, 500), r
        else:
            assert r.status == (500 if path == "/raise-before" else 403), r
        assert_not_upgraded(r)
    assert http_get(srv.port, "/hello") == (200, b"Hello, World!\n")


def test_app_raising_after_accept_closes_1011(srv):
    uvicorn_deviates(srv, "it drops the TCP connection without a Close frame (1006 for the client)")
    with WSClient.open(srv.port, "/raise-after") as c:
        c.send_text("boom")
        code, _ = c.server_close()
    assert code == 1011


def test_app_returning_after_accept_closes_1000(srv):
    with WSClient.open(srv.port, "/return-after") as c:
        assert c.server_close()[0] == 1000


# ---- protocol errors --------------------------------------------------------------------------------------

PROTOCOL_ERRORS = {
    "unmasked": build_frame(OP_TEXT, b"no mask", mask=False),
    "reserved-opcode-3": build_frame(3, b"x"),
    "reserved-opcode-0xB": build_frame(0xB, b"x"),
    "rsv1-without-deflate": build_frame(OP_TEXT, b"x", rsv=4),
    "rsv2": build_frame(OP_TEXT, b"x", rsv=2),
    "rsv3": build_frame(OP_BINARY, b"x", rsv=1),
    "fragmented-ping": build_frame(OP_PING, b"x", fin=False),
    "ping-126-bytes": build_frame(OP_PING, b"x" * 126),
    "continuation-first": build_frame(OP_CONT, b"x"),
    "text-inside-fragmented": build_frame(OP_TEXT, b"a", fin=False) + build_frame(OP_TEXT, b"b"),
    "close-1-byte": build_frame(OP_CLOSE, b"\x03"),
    "close-code-999": build_frame(OP_CLOSE, close_payload(999)),
    "close-code-1004": build_frame(OP_CLOSE, close_payload(1004)),
    "close-code-1005": build_frame(OP_CLOSE, close_payload(1005)),
    "close-code-1006": build_frame(OP_CLOSE, close_payload(1006)),
    "close-code-1015": build_frame(OP_CLOSE, close_payload(1015)),
    "close-code-2999": build_frame(OP_CLOSE, close_payload(2999)),
    "close-code-5000": build_frame(OP_CLOSE, close_payload(5000)),
    # The same malformed control frames behind a valid ping, in one write: its pong is queued when
    # the bad frame is read, and the Close must still carry 1002 (RFC 6455 7.1.7, 7.4.1), not
    # leave without a code.
    "ping-126-bytes-after-a-ping": build_frame(OP_PING, b"a") + build_frame(OP_PING, b"x" * 126),
    "fragmented-ping-after-a-ping": build_frame(OP_PING, b"a") + build_frame(OP_PING, b"x", fin=False),
    "close-126-bytes-after-a-ping": build_frame(OP_PING, b"a") + build_frame(OP_CLOSE, b"\x03\xe8" + b"x" * 124),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_ERRORS))
def test_protocol_error_closes_1002(srv, name):
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_text("before")
        assert c.recv_data() == "before"
        c.send_raw(PROTOCOL_ERRORS[name])
        code, _ = c.expect_failure_close()
    assert code == 1002
    # The app is told (with the code the server closed with, or 1006: the spec leaves it open).
    assert disconnect_of(t)["code"] in (1002, 1006)


INVALID_UTF8 = {
    "bytes-ff-fe": [(OP_TEXT, b"\xff\xfe", True)],
    "truncated-at-end": [(OP_TEXT, b"ok\xc3", True)],
    "overlong-slash": [(OP_TEXT, b"\xc0\xaf", True)],
    "utf16-surrogate": [(OP_TEXT, b"\xed\xa0\x80", True)],
    "above-u10ffff": [(OP_TEXT, b"\xf4\x90\x80\x80", True)],
    "bad-in-last-fragment": [(OP_TEXT, b"fine ", False), (OP_CONT, b"still ", False), (OP_CONT, b"\xc3\x28", True)],
    "truncated-across-fragments": [(OP_TEXT, b"a\xe2\x82", False), (OP_CONT, b"", True)],
}


@pytest.mark.parametrize("name", sorted(INVALID_UTF8))
def test_invalid_utf8_closes_1007(srv, name):
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        for op, payload, fin in INVALID_UTF8[name]:
            c.send_frame(op, payload, fin=fin)
        code, _ = c.expect_failure_close()
    assert code == 1007
    d = disconnect_of(t)
    assert d["code"] in (1007, 1006)
    assert report(t)["received"] == 0  # nothing of it reached the app


def test_invalid_utf8_fails_at_the_message_end(srv):
    """libwsgi-epoll checks a text message's UTF-8 once the message is whole (the library's strict
    decoder; wslay gets the frames as binary: ws_conn.c, mark_kind), which RFC 6455 8.1 allows: a
    ping after a bad first fragment is still answered, and the message's last fragment fails the
    connection with 1007. (With wslay checking, its Close 1007 would come instead of the pong.)"""
    if srv.kind != "epoll":
        pytest.skip("libwsgi-epoll's own design (RFC 6455 8.1 allows failing at either point)")
    with WSClient.open(srv.port, "/echo") as c:
        c.send_frame(OP_TEXT, b"\xff\xfe", fin=False)
        c.ping(b"still open")
        f = c.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"still open"), f
        c.send_frame(OP_CONT, b"end", fin=True)
        code, _ = c.expect_failure_close()
    assert code == 1007


def test_invalid_utf8_in_close_reason(srv):
    with WSClient.open(srv.port, "/echo") as c:
        c.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff")
        code, _ = c.expect_failure_close()
    assert code == 1007


def test_invalid_utf8_in_close_reason_sent_in_pieces(srv):
    """The reason's bad bytes in a later piece than the code (found by tests/fuzz/fuzz_server_ws:
    wslay checks each piece as if it began with the code, and libwsgi-epoll echoed the reason).
    However the server reads the pieces, the answer is 1007."""
    with WSClient.open(srv.port, "/echo") as c:
        frame = build_frame(OP_CLOSE, struct.pack("!H", 1000) + b"ok\x03\xe8")
        c.send_raw(frame[:-2])
        wait_peer_read(c.sock)  # the server has read the first piece: the second is a read apart
        c.send_raw(frame[-2:])
        code, _ = c.expect_failure_close()
    assert code == 1007


@pytest.mark.parametrize("cut", [1, 4, 7, 9, 13])  # header 6 bytes (masked), code, reason
def test_valid_close_sent_in_pieces(srv, cut):
    """A valid Close whose frame arrives in two reads, cut inside the header, inside the code or
    inside a character of the reason: wslay checks a Close per piece read, so libwsgi-epoll gives
    it whole frames (a control frame is never handed over in part); the app gets the code and
    reason, and the answer is the echoed code, not 1007."""
    t = token()
    with WSClient.open(srv.port, "/echo?token=" + t) as c:
        c.send_text("one")
        assert c.recv_data() == "one"
        frame = build_frame(OP_CLOSE, struct.pack("!H", 4003) + "bye \u2713".encode())
        c.send_raw(frame[:cut])
        wait_peer_read(c.sock)  # the server has read the first piece: the second is a read apart
        c.send_raw(frame[cut:])
        assert c.recv_close()[0] == 4003
    d = disconnect_of(t)
    assert d["code"] == 4003
    if srv.kind != "uvicorn":  # uvicorn 0.17 (spec 2.3) has no reason in websocket.disconnect
        assert d["reason"] == "bye \u2713"


# ---- --ws-max-size ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=KINDS)
def small(request):
    """A server with --ws-max-size 65536."""
    s = module_server(request, request.param, APP, *server_args(request.param, "--ws-max-size", "65536"))
    s.kind = request.param
    return s


@pytest.mark.parametrize("op", [OP_BINARY, OP_TEXT])
def test_max_size_is_inclusive(small, op):
    with WSClient.open(small.port, "/echo") as c:
        c.send_message(op, b"m" * 65536)
        assert len(c.recv_data()) == 65536


OVERSIZED = {
    "one-frame": lambda c: c.send_binary(b"x" * 65537),
    "text": lambda c: c.send_text("x" * 65537),
    "fragments": lambda c: c.send_message(OP_BINARY, b"x" * 90000, fragments=3),
    "many-small-fragments": lambda c: c.send_message(OP_TEXT, b"y" * 70000, fragments=70),
    # A header announcing 1 TiB and one byte of it: refused without waiting for the payload.
    "header-only": lambda c: c.send_raw(build_frame(OP_BINARY, b"", length=1 << 40, mask_key=b"\0\0\0\0") + b"x"),
}


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_oversized_message_closes_1009(small, name):
    t = token()
    with WSClient.open(small.port, "/echo?token=" + t) as c:
        OVERSIZED[name](c)
        code, _ = c.expect_failure_close()
    assert code == 1009
    if small.kind == "uvicorn":
        return  # websockets stopped reading: it sees the TCP close only after its 10 s close_timeout
    d = disconnect_of(t)
    assert d["code"] in (1009, 1006)
    assert report(t)["received"] == 0  # nothing of it reached the app


def test_max_size_applies_to_the_inflated_size(small):
    with WSClient.open(small.port, "/echo", deflate=True) as c:
        c.send_binary(bytes(65536), compress=True)
        assert c.recv_data() == bytes(65536)
        c.send_binary(bytes(65537), compress=True)
        assert c.expect_failure_close()[0] == 1009


def test_compressed_bomb_closes_1009(small):
    """8 MiB of zeros deflate to ~8 KiB: the limit applies to the inflated size."""
    with WSClient.open(small.port, "/echo", deflate=True) as c:
        assert c.extension is not None
        c.send_binary(bytes(8 << 20), compress=True)
        code, _ = c.expect_failure_close()
    assert code == 1009


# ---- permessage-deflate ---------------------------------------------------------------------------------------

def test_deflate_with_websockets_client(srv):
    import websockets

    big = ("All work and no play makes Jack a dull boy. " * 30000).encode()  # ~1.3 MB, compressible
    rnd = os.urandom(200000)

    async def run():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % srv.port, max_size=None,
                                      ping_interval=None, open_timeout=GUARD) as ws:
            ext = ws.response_headers.get("Sec-WebSocket-Extensions")
            for msg in ["small", big.decode(), big, rnd, b""]:
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), GUARD) == msg
            return ext

    ext = asyncio.run(run())
    assert ext is not None and ext.split(";")[0].strip() == "permessage-deflate"


def test_deflate_on_the_wire(srv):
    """The server really compresses (RSV1, far fewer bytes on the wire) and inflates what the
    client compressed, fragmented or not."""
    big = "libwsgi websocket " * 60000  # ~1 MiB
    with WSClient.open(srv.port, "/echo", deflate=True) as c:
        assert c.response.header("Sec-WebSocket-Extensions").startswith("permessage-deflate")
        c.send_text(big)
        m = c.recv()
        assert m.data == big and m.compressed and m.wire_len < len(big) // 20
        c.send_text(big, compress=True)
        assert c.recv_data() == big
        data = os.urandom(100000) * 3
        c.send_message(OP_BINARY, data, fragments=4, compress=True)
        assert c.recv_data() == data
        c.send_binary(b"", compress=True)
        assert c.recv_data() == b""
        c.send_binary(b"uncompressed in a deflate session")
        assert c.recv_data() == b"uncompressed in a deflate session"
        assert c.close_handshake(1000)[0] == 1000


@pytest.mark.parametrize("empty", [b"", ""], ids=["binary", "text"])
def test_deflate_empty_message_after_a_compressed_one(srv, empty):
    """An empty message in a deflate session with context takeover: its compressed form is one
    0x00 byte (RFC 7692 §7.2.3.6), or it goes uncompressed; an empty payload with RSV1 leaves
    the client's inflater inside a stored block, and the next message fails to inflate."""
    import websockets

    async def run():
        async with websockets.connect("ws://127.0.0.1:%d/echo" % srv.port, ping_interval=None,
                                      open_timeout=GUARD) as ws:
            assert ws.response_headers.get("Sec-WebSocket-Extensions") is not None
            got = []
            for msg in ["hello " * 100, empty, "after the empty one", empty, b"last"]:
                await ws.send(msg)
                got.append(await asyncio.wait_for(ws.recv(), GUARD))
            return got

    assert asyncio.run(run()) == ["hello " * 100, empty, "after the empty one", empty, b"last"]
    with WSClient.open(srv.port, "/echo", deflate=True) as c:
        c.send_text("x" * 1000)
        assert c.recv_data() == "x" * 1000
        c.send_binary(empty.encode() if isinstance(empty, str) else empty)
        m = c.recv()
        assert m.data == b"" and (not m.compressed or m.wire_len > 0), m
        c.send_text("next")
        assert c.recv_data() == "next"


def test_deflate_no_context_takeover(srv):
    """server_no_context_takeover: each message inflates alone (the client resets its inflater),
    so the same message twice costs the same bytes twice."""
    msg = "repeat me " * 5000
    with WSClient.open(srv.port, "/echo", deflate=True,
                       deflate_params="; server_no_context_takeover; client_no_context_takeover") as c:
        assert "server_no_context_takeover" in c.extension, c.response
        sizes = []
        for _ in range(3):
            c.send_text(msg, compress=True)
            m = c.recv()
            assert m.data == msg and m.compressed
            sizes.append(m.wire_len)
        assert sizes[0] == sizes[1] == sizes[2]


def test_deflate_server_max_window_bits(srv):
    """server_max_window_bits=10 offered: the answer keeps it (RFC 7692 §7.1.2.1) and the server's
    messages inflate with a 1 KiB window (a longer back-reference would fail in the client)."""
    block = os.urandom(3000)
    msg = block * 20  # repeats 3000 bytes apart: compressible only with a window above 1 KiB
    with WSClient.open(srv.port, "/echo", deflate=True, deflate_params="; server_max_window_bits=10") as c:
        assert c.extension.get("server_max_window_bits") in ("10", "9", "8"), c.response
        c.send_binary(msg)
        assert c.recv_data() == msg


def test_deflate_unknown_parameter_declined(srv):
    """An offer with a parameter RFC 7692 does not define must be declined (§5.1), not refused."""
    with WSClient(srv.port) as c:
        r = c.handshake("/echo", extensions="permessage-deflate; no_such_param=1")
        assert r.status == 101
        assert r.header("Sec-WebSocket-Extensions") is None
        c.send_text("plain")
        m = c.recv()
        assert m.data == "plain" and not m.compressed


def test_deflate_second_offer_accepted(srv):
    """Several offers: the first acceptable one wins."""
    with WSClient(srv.port) as c:
        r = c.handshake("/echo", extensions="permessage-deflate; no_such_param=1, permessage-deflate")
        assert r.status == 101
        ext = r.header("Sec-WebSocket-Extensions")
        assert ext is not None and ext.split(";")[0].strip() == "permessage-deflate"


def deflated(data):
    d = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = d.compress(data) + d.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


DEFLATE_ERRORS = {
    # RSV1 belongs on the first frame of a message only (RFC 7692 §6)
    "rsv1-on-continuation": ([(OP_BINARY, deflated(b"abc" * 100), False, 4), (OP_CONT, b"", True, 4)], (1002,)),
    "rsv1-on-ping": ([(OP_PING, b"x", True, 4)], (1002,)),
    # not a deflate stream: the connection fails (RFC 7692 §8; the code is not specified)
    "corrupt-deflate-data": ([(OP_BINARY, b"\xff\xff\xff\xff\xff\xff", True, 4)], (1002, 1007)),
    # compressed text that inflates to invalid UTF-8
    "compressed-invalid-utf8": ([(OP_TEXT, deflated(b"ok \xff\xfe"), True, 4)], (1007,)),
}


@pytest.mark.parametrize("name", sorted(DEFLATE_ERRORS))
def test_deflate_errors(srv, name):
    frames, codes = DEFLATE_ERRORS[name]
    with WSClient.open(srv.port, "/echo", deflate=True) as c:
        assert c.extension is not None
        for op, payload, fin, rsv in frames:
            c.send_frame(op, payload, fin=fin, rsv=rsv)
        code, _ = c.expect_failure_close()
    assert code in codes


def test_deflate_compressed_utf8_split_across_fragments(srv):
    """A compressed, fragmented text message whose fragment boundary splits a character."""
    text = "\u00e9\u2713\U0001F600" * 2000
    payload = deflated(text.encode())
    with WSClient.open(srv.port, "/echo", deflate=True) as c:
        c.send_frame(OP_TEXT, payload[:7], fin=False, rsv=4)
        c.send_frame(OP_CONT, payload[7:13], fin=False)
        c.send_frame(OP_CONT, payload[13:], fin=True)
        assert c.recv_data() == text


@pytest.mark.parametrize("kind", KINDS)
def test_deflate_off(start, kind):
    s = start(kind, "--ws-per-message-deflate", "off")
    with WSClient(s.port) as c:
        r = c.handshake("/echo", deflate=True)
        assert r.status == 101 and r.header("Sec-WebSocket-Extensions") is None
        big = "x" * 100000
        c.send_text(big)
        m = c.recv()
        assert m.data == big and not m.compressed and m.wire_len == len(big)
        c.send_frame(OP_TEXT, b"x", rsv=4)  # RSV1 now means nothing: a protocol error
        assert c.expect_failure_close()[0] == 1002


# ---- other handshakes --------------------------------------------------------------------------------------------

def test_unsupported_version(srv):
    """RFC 6455 §4.2.2/4.4: an unsupported Sec-WebSocket-Version is refused with a 4xx and a
    Sec-WebSocket-Version header listing the supported version. A 426 (Upgrade Required) MUST
    name the protocol it requires in Upgrade (RFC 9110 §15.5.22, §7.8), which a sender of
    Upgrade also lists in Connection: still no handshake (no Sec-WebSocket-Accept)."""
    with WSClient(srv.port) as c:
        r = c.handshake("/echo", version="8")
        assert 400 <= r.status < 500 and r.status != 404, r
        if r.status == 426:
            assert r.header("Sec-WebSocket-Accept") is None, r
            assert [v.strip().lower() for v in r.header("Upgrade").split(",")] == ["websocket"], r
            assert "upgrade" in [v.strip().lower() for v in r.header("Connection").split(",")], r
        else:
            assert_not_upgraded(r)
    uvicorn_deviates(srv, "no Sec-WebSocket-Version in its 400")
    assert r.header("Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("problem", ["short-key", "no-key", "no-version"])
def test_invalid_handshake_is_400(srv, problem):
    with WSClient(srv.port) as c:
        if problem == "short-key":
            r = c.handshake("/echo", key="c2hvcnQ=")
        elif problem == "no-version":
            r = c.handshake("/echo", version=None)
        else:
            req = (b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Version: 13\r\n\r\n")
            c.send_raw(req)
            r = c.read_response_head()
        assert r.status in (400, 426), r
    assert http_get(srv.port, "/hello")[0] == 200


def test_firefox_style_connection_header(srv):
    """Connection is a list ("keep-alive, Upgrade", as Firefox sends it) and Upgrade is
    case-insensitive: still a WebSocket handshake."""
    with WSClient(srv.port) as c:
        req, _ = handshake_request("/echo")
        req = req.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade").replace(
            b"Upgrade: websocket", b"Upgrade: WebSocket")
        c.send_raw(req)
        assert c.read_response_head().status == 101
        c.send_text("firefox")
        assert c.recv_data() == "firefox"


@pytest.mark.parametrize("offer_deflate", [False, True], ids=["no-extension-offered", "deflate-offered"])
def test_app_cannot_override_handshake_headers(srv, offer_deflate):
    """Accept headers that belong to the handshake (Connection, Upgrade, Content-Length,
    Transfer-Encoding, Sec-WebSocket-Accept, Sec-WebSocket-Extensions) do not reach the 101: the
    client gets one valid handshake, and an extension only if it offered one (RFC 6455 §4.1: a
    client must fail the connection otherwise). The client checks all of it; x-kept stays."""
    uvicorn_deviates(srv, "it copies every accept header into the 101 (a second Connection, "
                          "Sec-WebSocket-Accept, ...)")
    with WSClient(srv.port) as c:
        r = c.handshake("/handshake-headers", deflate=offer_deflate)
        assert r.status == 101
        assert r.headers_named("Upgrade") == ["websocket"]
        assert [v.lower() for v in r.headers_named("Connection")] == ["upgrade"]
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None
        assert r.header("x-kept") == "yes"
        c.send_text("still framed")
        assert c.recv_data() == "still framed"


def test_101_has_no_body_framing(srv):
    """RFC 9110 §8.6/§6.4.1: no Content-Length or Transfer-Encoding in a 1xx response."""
    with WSClient(srv.port) as c:
        r = c.handshake("/headers")
        assert r.status == 101
        assert r.header("Content-Length") is None and r.header("Transfer-Encoding") is None


@pytest.mark.parametrize("problem", ["POST", "HTTP/1.0", "no-Host"])
def test_not_a_websocket_handshake(srv, problem):
    """RFC 6455 §4.1/§4.2.1: the method must be GET, the version at least HTTP/1.1, and Host is
    required (RFC 9112 §3.2: 400 without it)."""
    if problem != "POST":
        uvicorn_deviates(srv, "it upgrades an HTTP/1.0 request and one without Host")
    req, _ = handshake_request("/echo", method="POST" if problem == "POST" else "GET")
    if problem == "HTTP/1.0":
        req = req.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    if problem == "no-Host":
        req = req.replace(b"Host: 127.0.0.1\r\n", b"")
    with WSClient(srv.port) as c:
        c.send_raw(req)
        r = c.read_response_head()
        assert r.status != 101 and 400 <= r.status < 500, r
        assert_not_upgraded(r)


def test_http_and_websocket_on_the_same_port(srv):
    with WSClient.open(srv.port, "/echo") as ws:
        ws.send_text("one")
        assert ws.recv_data() == "one"
        assert http_get(srv.port, "/hello") == (200, b"Hello, World!\n")
        ws.send_text("two")
        assert ws.recv_data() == "two"


def test_upgrade_after_keep_alive_request(srv):
    """An HTTP request, then a WebSocket upgrade on the same connection."""
    with WSClient(srv.port) as c:
        c.send_raw(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response_head()
        assert r.status == 200
        assert c.read_exact(int(r.header("content-length"))) == b"Hello, World!\n"
        assert c.handshake("/echo").status == 101
        c.send_text("upgraded")
        assert c.recv_data() == "upgraded"


def test_wsgi_app_refuses_upgrade(start):
    """A WSGI app cannot take a WebSocket: 400 or 426 at once, never 101, and no hang (the guard
    of the client only turns a hang into a failure). uvicorn is not compared: it hands WSGI apps a
    websocket scope its WSGI middleware rejects (500)."""
    srv = start("epoll", app="hello:app")
    with WSClient(srv.port) as c:
        r = c.handshake("/")
        assert r.status in (400, 426), r
        assert_not_upgraded(r)
    assert http_get(srv.port, "/") == (200, b"Hello, World!\n")


# ---- server pings and idle connections ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_unanswered_pings_drop_the_client(start, kind):
    s = start(kind, "--ws-ping-interval", "1", "--ws-ping-timeout", "1")
    t = token()
    with WSClient.open(s.port, "/echo?token=" + t) as c:
        # This client reads but never answers a ping: the server gives up on it and closes.
        frames = c.wait_closed()
        assert any(f.opcode == OP_PING for f in frames), frames
        assert not any(f.opcode in (OP_TEXT, OP_BINARY) for f in frames), frames
    assert disconnect_of(t)["code"] == 1006


@pytest.mark.parametrize("kind", KINDS)
def test_answered_pings_keep_the_client(start, kind):
    s = start(kind, "--ws-ping-interval", "1", "--ws-ping-timeout", "1")
    t = token()
    with WSClient.open(s.port, "/echo?token=" + t) as c:
        # Read (answering each ping at once) until three pings came: more than two timeouts.
        c.sock.settimeout(GUARD)
        while len(c.pings) < 3:
            f = c.recv_frame()
            assert f.opcode == OP_PING, f
            c.pings.append(f.payload)
            c.send_frame(OP_PONG, f.payload)
        c.send_text("still here")
        assert c.recv_data() == "still here"
        assert "disconnect" not in report(t)
        assert c.close_handshake(1000)[0] == 1000


@pytest.mark.parametrize("kind", KINDS)
def test_idle_websocket_outlives_http_timeouts(start, kind):
    """HTTP keep-alive (and, for libwsgi-epoll, request) timeouts do not apply to a WebSocket: it
    stays open, idle, three times as long (pings are off: 20 s default interval)."""
    args = ["--timeout-keepalive", "1", "--timeout-request", "1"] if kind == "epoll" else ["--timeout-keep-alive", "1"]
    s = start(kind, *args)
    t = token()
    with WSClient.open(s.port, "/echo?token=" + t) as c:
        time.sleep(3)
        c.send_text("after a long silence")
        assert c.recv_data() == "after a long silence"
        assert "disconnect" not in report(t)


def test_client_that_never_answers_the_close(start):
    """The server sent its Close; the client neither answers nor closes: the server closes the TCP
    connection anyway, eventually (libwsgi-epoll only: uvicorn's websockets waits its 10 s
    close_timeout, too long for this suite)."""
    s = start("epoll")
    t = token()
    with WSClient.open(s.port, "/close?code=4001&token=" + t) as c:
        f = c.recv_frame()
        assert f.opcode == OP_CLOSE and f.payload[:2] == struct.pack("!H", 4001)
        assert c.read_until_close() == b""
    assert wait_report(t, lambda r: "after_close" in r, "the event after close")["after_close"] == "websocket.disconnect"


def test_workers_2(start):
    """--workers 2 (prefork, SO_REUSEPORT): WebSockets work in whichever worker takes them."""
    s = start("epoll", "--workers", "2")
    clients = [WSClient.open(s.port, "/echo") for _ in range(16)]
    try:
        for i, c in enumerate(clients):
            c.send_text("worker test %d" % i)
        for i, c in enumerate(clients):
            assert c.recv_data() == "worker test %d" % i
    finally:
        for c in clients:
            c.close()
    assert http_get(s.port, "/hello") == (200, b"Hello, World!\n")


# ---- shutdown --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_after_denied_connections(start, kind):
    """Denied handshakes leave nothing behind: with no connection open, SIGTERM ends the server
    at once, not after --graceful-timeout (600 s here; the guard of the wait is 15 s)."""
    s = start(kind, *(["--graceful-timeout", "600"] if kind == "epoll" else []))
    for path in ("/deny", "/raise-before", "/return-before") + (("/deny-response",) if kind == "epoll" else ()):
        with WSClient(s.port) as c:
            assert c.handshake(path).status in (401, 403, 500)
    with WSClient.open(s.port, "/echo") as c:
        assert c.close_handshake(1000)[0] == 1000
    s.signal(signal.SIGTERM)
    assert s.wait(GUARD) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_with_open_websocket(start, kind):
    """SIGTERM while a WebSocket is open: the server ends it (a Close frame, 1001 Going Away or
    1012 Service Restart, or dropping it) and exits; the app sees websocket.disconnect."""
    s = start(kind, *(["--graceful-timeout", "5"] if kind == "epoll" else []))
    t = token()
    c = WSClient.open(s.port, "/echo?token=" + t)
    try:
        c.send_text("x")
        assert c.recv_data() == "x"
        s.signal(signal.SIGTERM)
        code, _ = c.expect_failure_close()  # answers the server's Close, if any, then sees EOF
        assert code in (1001, 1012, None), code
        if kind == "epoll":
            assert code == 1001
        assert s.wait(GUARD) == 0
        d = disconnect_of(t)
        assert d["code"] in (1001, 1012, 1006, 1000), d
    finally:
        c.close()
