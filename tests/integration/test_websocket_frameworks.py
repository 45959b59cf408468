"""WebSocket endpoints of real frameworks (Debian packages) served by libwsgi-epoll and by uvicorn 0.17
(`--ws websockets`, the reference), with the same client script run against both: what the client
sees (messages, Close codes and reasons, denial status) and what the app reports (the disconnect
code) must be identical, and equal to what the endpoint is written to do.

  - Starlette 0.26: a function endpoint and a WebSocketEndpoint class (apps/ws_starlette.py)
  - FastAPI 0.92: a path parameter, a required query parameter (missing: denied before the accept,
    403), a dependency, an int path parameter (invalid: 403) (apps/ws_fastapi.py)
  - Django Channels 4.0 with Django 3.2: ProtocolTypeRouter + URLRouter, a sync WebsocketConsumer
    and an AsyncWebsocketConsumer, no channel layer (apps/ws_channels.py)
"""

import json
import os
import time

import pytest

from conftest import module_server
from wsclient import GUARD, OP_BINARY, OP_TEXT, WSClient
from wsreport import token, wait_report

FRAMEWORKS = {
    "starlette": "ws_starlette:app",
    "fastapi": "ws_fastapi:app",
    "channels": "ws_channels:application",
}


def app_disconnect(tok):
    return wait_report(tok, lambda r: "disconnect" in r, "its disconnect")["disconnect"]["code"]


def http_status(port, target="/"):
    with WSClient(port) as c:
        c.send_raw(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % target.encode())
        r = c.read_response_head()
        return r.status


# Each scenario: (path template, steps) → a summary of what the client saw. {t} is a fresh token.
# Steps: ("text", s) / ("bytes", b): send, record the reply; ("recv",): record one message;
# ("client-close", code): close handshake, record the server's answering code and the code the app
# reported; ("server-close", text): send text, record the server's (code, reason).

def run(port, path, steps, headers=()):
    t = token()
    out = []
    with WSClient(port) as c:
        r = c.handshake(path.format(t=t), headers=headers)
        if r.status != 101:
            return [("status", r.status)]
        for step in steps:
            kind = step[0]
            if kind == "text":
                c.send_text(step[1])
                out.append(("reply", c.recv_data()))
            elif kind == "bytes":
                c.send_binary(step[1])
                out.append(("reply", c.recv_data()))
            elif kind == "recv":
                out.append(("message", c.recv_data()))
            elif kind == "client-close":
                code, _ = c.close_handshake(step[1])
                out.append(("server-answer", code))
                out.append(("app-saw", app_disconnect(t)))
            elif kind == "server-close":
                c.send_text(step[1])
                out.append(("server-close", c.server_close()))
            elif kind == "closed":
                out.append(("server-close", c.server_close()))
    return out


SCENARIOS = {
    "starlette": {
        "echo": ("/ws/echo?token={t}", [("text", "h\u00e9llo"), ("bytes", b"\x00\x01"), ("text", ""),
                                        ("client-close", 4010)],
                 [("reply", "h\u00e9llo"), ("reply", b"\x00\x01"), ("reply", ""), ("server-answer", 4010),
                  ("app-saw", 4010)]),
        "server-close": ("/ws/echo", [("server-close", "close")], [("server-close", (4001, "starlette bye"))]),
        "endpoint": ("/ws/endpoint?token={t}", [("text", "x"), ("client-close", 4011)],
                     [("reply", "endpoint: x"), ("server-answer", 4011), ("app-saw", 4011)]),
        "endpoint-close": ("/ws/endpoint", [("text", "y"), ("server-close", "close")],
                           [("reply", "endpoint: y"), ("server-close", (4002, "endpoint bye"))]),
        "deny": ("/ws/deny", [], [("status", 403)]),
        "no-route": ("/ws/nowhere", [], [("status", 403)]),
    },
    "fastapi": {
        "room": ("/ws/lobby?q=hello&token={t}", [("recv",), ("text", "x"), ("bytes", b"\xff"), ("client-close", 4012)],
                 [("message", json.dumps({"room": "lobby", "q": "hello", "ua": "libwsgi-test"})),
                  ("reply", "lobby: x"), ("reply", b"\xff"), ("server-answer", 4012), ("app-saw", 4012)]),
        "server-close": ("/ws/r2?q=1", [("recv",), ("server-close", "close")],
                         [("message", json.dumps({"room": "r2", "q": "1", "ua": "libwsgi-test"})),
                          ("server-close", (4003, "fastapi bye"))]),
        "missing-query": ("/ws/lobby", [], [("status", 403)]),
        "int-path": ("/items/12/ws", [("recv",), ("closed",)],
                     [("message", json.dumps({"item_id": 12})), ("server-close", (1000, ""))]),
        "bad-int-path": ("/items/abc/ws", [], [("status", 403)]),
    },
    "channels": {
        "sync": ("/ws/sync/room1/?token={t}", [("recv",), ("text", "a"), ("bytes", b"\x01"), ("client-close", 4013)],
                 [("message", "sync room room1"), ("reply", "a"), ("reply", b"\x01"), ("server-answer", 4013),
                  ("app-saw", 4013)]),
        "sync-close": ("/ws/sync/r/", [("recv",), ("server-close", "close")],
                       [("message", "sync room r"), ("server-close", (4004, ""))]),
        "async": ("/ws/async/room2/?token={t}", [("recv",), ("text", "b"), ("client-close", 4014)],
                  [("message", "async room room2"), ("reply", "b"), ("server-answer", 4014), ("app-saw", 4014)]),
        "async-close": ("/ws/async/r/", [("recv",), ("server-close", "close")],
                        [("message", "async room r"), ("server-close", (4005, ""))]),
        "sync-denied": ("/ws/sync/denied/", [], [("status", 403)]),
        "async-denied": ("/ws/async/denied/", [], [("status", 403)]),
    },
}

CASES = [(fw, name) for fw in sorted(SCENARIOS) for name in sorted(SCENARIOS[fw])]


@pytest.fixture(scope="module")
def servers(request):
    """servers(framework) -> (epoll, uvicorn), started on first use, kept for the module."""
    started = {}

    def get(framework):
        if framework not in started:
            spec = FRAMEWORKS[framework]
            started[framework] = (module_server(request, "epoll", spec),
                                  module_server(request, "uvicorn", spec, "--ws", "websockets"))
        return started[framework]
    return get


@pytest.mark.parametrize("framework,name", CASES)
def test_same_as_uvicorn(servers, framework, name):
    epoll, uvicorn = servers(framework)
    path, steps, expected = SCENARIOS[framework][name]
    headers = [("User-Agent", "libwsgi-test")]
    ours = run(epoll.port, path, steps, headers)
    ref = run(uvicorn.port, path, steps, headers)
    assert ours == ref
    assert ours == expected


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_http_on_the_same_port(servers, framework):
    epoll, uvicorn = servers(framework)
    assert http_status(epoll.port) == http_status(uvicorn.port) == 200


def test_starlette_subprotocol(servers):
    epoll, uvicorn = servers("starlette")
    seen = []
    for s in (epoll, uvicorn):
        with WSClient(s.port) as c:
            r = c.handshake("/ws/echo?subprotocol=chat", subprotocols=["chat", "other"])
            seen.append((r.status, r.header("Sec-WebSocket-Protocol")))
    assert seen[0] == seen[1] == (101, "chat")


def test_route_raising_after_accept(servers):
    """A Starlette route raising after the accept: libwsgi-epoll closes with 1011; uvicorn 0.17
    drops the TCP connection without a Close frame (a deviation: the client sees 1006)."""
    epoll, _ = servers("starlette")
    with WSClient.open(epoll.port, "/ws/boom") as c:
        c.send_text("boom")
        assert c.server_close()[0] == 1011
    wait_log = time.monotonic() + GUARD
    while "starlette websocket route failed" not in epoll.log():
        assert time.monotonic() < wait_log, "the traceback is not in the log"
        time.sleep(0.02)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_large_messages_through_frameworks(servers, framework):
    epoll, uvicorn = servers(framework)
    path = {"starlette": "/ws/echo", "fastapi": "/ws/big?q=1", "channels": "/ws/async/big/"}[framework]
    data = os.urandom(1 << 20)
    text = "\u2713" * 300000
    for s in (epoll, uvicorn):
        with WSClient.open(s.port, path) as c:
            if framework != "starlette":
                c.recv_data()  # the greeting
            c.send_binary(data)
            assert c.recv_data() == data
            c.send_text(text)
            reply = c.recv_data()
            assert reply.endswith(text) and len(reply) - len(text) < 10
