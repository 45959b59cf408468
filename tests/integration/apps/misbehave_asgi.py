"""An ASGI 3 app that misbehaves in one way per route (test_misbehaving.py).

Invalid events, responses never sent (returning, or awaiting forever), raising before and after
the response, blocking the event loop, leaving the process. /hello answers normally; /state?token=
says whether a request's task saw its end (cancelled, disconnected), so a test asks instead of
guessing from timing. `hanging_lifespan` is an app whose lifespan startup never completes.
"""

import asyncio
import ctypes
import os
import sys
import time
from urllib.parse import parse_qs

from asgi_lifespan import lifespan

_state = {}  # token -> what happened to the task


def _q(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


async def _start(send, status=200, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")] + list(headers)})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    path = scope["path"]
    q = _q(scope)
    token = q.get("token", "")
    if scope["type"] == "websocket":  # never accepts nor denies: the server's handshake timeout
        await asyncio.Event().wait()

    if path == "/hello":
        await _start(send, headers=[(b"content-length", b"5")])
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/state":
        body = repr(_state.get(token)).encode()
        await _start(send, headers=[(b"content-length", str(len(body)).encode())])
        await send({"type": "http.response.body", "body": body})
    elif path == "/raise-at-call":
        raise RuntimeError("misbehave: raised at call")
    elif path == "/raise-after-start":
        await _start(send)
        raise RuntimeError("misbehave: raised after http.response.start")
    elif path == "/raise-after-first-chunk":
        await _start(send)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        raise RuntimeError("misbehave: raised after the first chunk")
    elif path == "/raise-after-response":
        await _start(send, headers=[(b"content-length", b"4")])
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError("misbehave: raised after the response")
    elif path == "/unknown-event":
        await send({"type": "http.response.bogus"})
    elif path == "/body-before-start":
        await send({"type": "http.response.body", "body": b"no head"})
    elif path == "/status":  # any status, with the Content-Length the app claims
        await _start(send, int(q["status"]), [(b"content-length", q.get("cl", "0").encode())])
        await send({"type": "http.response.body", "body": b""})
    elif path == "/invalid-status":
        await send({"type": "http.response.start", "status": "abc", "headers": []})
    elif path == "/invalid-headers":
        await send({"type": "http.response.start", "status": 200, "headers": [("x", "str")]})
    elif path == "/str-body":
        await _start(send)
        await send({"type": "http.response.body", "body": "a str"})
    elif path == "/not-a-dict":
        await send(["http.response.start", 200])
    elif path == "/start-twice":
        await _start(send)
        await _start(send)
    elif path == "/return-without-response":
        return
    elif path == "/await-forever":
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _state[token] = "cancelled"
            raise
    elif path == "/await-forever-after-start":
        await _start(send)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.Event().wait()
    elif path == "/wait-disconnect":
        m = await receive()  # the request (no body)
        m = await receive()
        _state[token] = m["type"]
    elif path == "/read-body":
        n = 0
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                _state[token] = "disconnected while reading"
                return
            n += len(m.get("body", b""))
            if not m.get("more_body"):
                break
        await _start(send, headers=[(b"content-length", str(len(str(n))).encode())])
        await send({"type": "http.response.body", "body": str(n).encode()})
    elif path == "/endless":
        await _start(send)
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 16384, "more_body": True})
        except OSError:
            _state[token] = "send raised OSError"
    elif path == "/block":
        time.sleep(float(q.get("s", "1.5")))  # blocks the whole event loop
        await _start(send, headers=[(b"content-length", b"7")])
        await send({"type": "http.response.body", "body": b"blocked"})
    elif path == "/block-later":
        await asyncio.sleep(0)  # blocks inside a loop turn, not inside the dispatch
        time.sleep(float(q.get("s", "1.5")))
        await _start(send, headers=[(b"content-length", b"7")])
        await send({"type": "http.response.body", "body": b"blocked"})
    elif path == "/sys-exit":
        sys.exit(3)
    elif path == "/os-exit":
        os._exit(7)
    elif path == "/segfault":
        ctypes.string_at(0)
    else:
        await _start(send, 404, [(b"content-length", b"0")])
        await send({"type": "http.response.body", "body": b""})


async def hanging_lifespan(scope, receive, send):
    """Its lifespan startup never answers: the server must give up after --lifespan-timeout."""
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.Event().wait()
    await app(scope, receive, send)
