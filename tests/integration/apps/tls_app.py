"""Apps for tests/integration/test_tls.py: what a request looks like over TLS (environ and scope),
a streamed upload, a file through wsgi.file_wrapper (sendfile without TLS), a streamed response,
and a WebSocket echo. Files are made under LIBWSGI_TEST_TMP."""

import hashlib
import json
import os
from urllib.parse import parse_qs

TMP = os.environ.get("LIBWSGI_TEST_TMP", "/tmp")


def _pattern_file(size):
    path = os.path.join(TMP, "tls-file-%d.bin" % size)
    if not os.path.exists(path):
        block = bytes(range(256)) * 4096  # 1 MiB
        with open(path + ".part", "wb") as f:
            left = size
            while left > 0:
                f.write(block[:left])
                left -= len(block)
        os.rename(path + ".part", path)
    return path


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/env":
        body = json.dumps({k: environ.get(k) for k in ("wsgi.url_scheme", "HTTPS", "SERVER_PORT",
                                                        "REQUEST_METHOD", "PATH_INFO")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/upload":
        h = hashlib.sha256()
        n = 0
        inp = environ["wsgi.input"]
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        body = ("%d %s" % (n, h.hexdigest())).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/file":
        size = int(q["size"][0])
        f = open(_pattern_file(size), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/stream":
        n, size = int(q["n"][0]), int(q["size"][0])
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def gen():
            for k in range(n):
                yield bytes([k % 256]) * size
            if "fail" in q:  # after the chunks: the response is cut
                raise RuntimeError("tls_app: stream failed")
        return gen()
    body = b"Hello, TLS!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    h = hashlib.sha256()
    n = 0
    while True:
        m = await receive()
        if m["type"] != "http.request":
            return
        h.update(m.get("body", b""))
        n += len(m.get("body", b""))
        if not m.get("more_body"):
            break
    body = json.dumps({"scheme": scope["scheme"], "type": scope["type"], "path": scope["path"],
                       "n": n, "sha256": h.hexdigest()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
