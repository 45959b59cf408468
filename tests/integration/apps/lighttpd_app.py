"""Apps served through lighttpd + libwsgi-scgi by test_lighttpd.py: a WSGI app (wsgi) and an ASGI
app (asgi, with WebSocket echo and pathsend) with the same routes:

  /env, /scope     the environ (WSGI: every str value) / the scope (ASGI) as JSON
  /upload          size and SHA-256 of the request body, read in 64 KiB pieces
  /stream?flag=F   100 chunks of 1 KiB; after the first it waits (up to 60 s) until file F exists,
                   so the test sees the first chunk arrive before the app produced the rest
  /file?path=P     the file P (wsgi.file_wrapper / http.response.pathsend)
  /block?flag=F    (WSGI) waits (up to 60 s) until file F exists
  /status-header   200 with a response header named "Status" (404 Not Found)
  /error           raises
  anything else    "hello from <interface>"
"""

import asyncio
import hashlib
import json
import os
import time
import urllib.parse

from asgi_lifespan import lifespan

CHUNK = b"x" * 1023 + b"\n"


def _query(qs):
    return dict(urllib.parse.parse_qsl(qs))


def _wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def wsgi(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = _query(environ.get("QUERY_STRING", ""))
    if path.endswith("/env"):
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        body = json.dumps(env, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path.endswith("/upload"):
        h = hashlib.sha256()
        n = 0
        inp = environ["wsgi.input"]
        while True:
            piece = inp.read(65536)
            if not piece:
                break
            h.update(piece)
            n += len(piece)
        body = json.dumps({"size": n, "sha256": h.hexdigest()}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path.endswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield CHUNK
            _wait_for(q["flag"])
            for _ in range(99):
                yield CHUNK
        return gen()
    if path.endswith("/file"):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.path.getsize(q["path"])))])
        return environ["wsgi.file_wrapper"](open(q["path"], "rb"), 65536)
    if path.endswith("/block"):
        _wait_for(q["flag"])
        body = b"unblocked\n"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path.endswith("/status-header"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Status", "404 Not Found")])
        return [b"status header\n"]
    if path.endswith("/error"):
        raise RuntimeError("lighttpd_app: /error")
    body = b"hello from wsgi\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _scope_json(scope):
    out = {}
    for k, v in scope.items():
        if k in ("asgi", "state", "extensions"):
            continue
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        elif k == "headers":
            v = [[a.decode("latin-1"), b.decode("latin-1")] for a, b in v]
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    out["extensions"] = sorted((scope.get("extensions") or {}).keys())
    return json.dumps(out, sort_keys=True).encode()


async def _start(send, status=200, headers=()):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] == "websocket":
        m = await receive()
        assert m["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            if m.get("text") == "scope":
                await send({"type": "websocket.send", "text": _scope_json(scope).decode()})
            elif m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    path = scope["path"]
    q = _query(scope["query_string"].decode("latin-1"))
    if path.endswith("/scope"):
        await _start(send, headers=[(b"content-type", b"application/json")])
        await send({"type": "http.response.body", "body": _scope_json(scope)})
        return
    if path.endswith("/upload"):
        h = hashlib.sha256()
        n = 0
        more = True
        while more:
            m = await receive()
            h.update(m.get("body", b""))
            n += len(m.get("body", b""))
            more = m.get("more_body", False)
        await _start(send, headers=[(b"content-type", b"application/json")])
        await send({"type": "http.response.body",
                    "body": json.dumps({"size": n, "sha256": h.hexdigest()}).encode()})
        return
    if path.endswith("/stream"):
        await _start(send, headers=[(b"content-type", b"text/plain")])
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        deadline = time.monotonic() + 60
        while not os.path.exists(q["flag"]) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for i in range(99):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i < 98})
        return
    if path.endswith("/file"):
        size = os.path.getsize(q["path"])
        await _start(send, headers=[(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(size).encode())])
        await send({"type": "http.response.pathsend", "path": q["path"]})
        return
    if path.endswith("/status-header"):
        await _start(send, headers=[(b"content-type", b"text/plain"), (b"status", b"404 Not Found")])
        await send({"type": "http.response.body", "body": b"status header\n"})
        return
    if path.endswith("/error"):
        raise RuntimeError("lighttpd_app: /error")
    await _start(send, headers=[(b"content-type", b"text/plain")])
    await send({"type": "http.response.body", "body": b"hello from asgi\n"})
