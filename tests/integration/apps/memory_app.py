"""Apps for the memory bounds of issue 10 (tests/integration/test_memory.py, bench/memory.py): a
huge streamed response and a huge upload, as WSGI (`wsgi`) and ASGI (`asgi`), never holding more
than one chunk of the body.

  GET  /stream?total=N&chunk=C   N bytes in chunks of C (default 64 KiB), no Content-Length
                                 (chunked framing): a WSGI generator / ASGI more_body events;
                                 &cl=1 sends a Content-Length instead
  POST /upload?chunk=C           reads the body and drops it: WSGI wsgi.input.read(C) until
                                 b"" (C default 64 KiB), ASGI a receive() loop over the pieces
                                 the server sends; answers {"size": ..., "reads": ...,
                                 "crc32": ...}, the CRC only with &crc=1 (it costs CPU the
                                 benchmark would otherwise measure)
  GET  /hello                    14 bytes, for a warm-up request
"""

import json
import zlib
from urllib.parse import parse_qs

CHUNK = 65536
HELLO = b"Hello, World!\n"


def _params(qs):
    q = {k: v[-1] for k, v in parse_qs(qs).items()}
    return (int(q.get("total", 0)), int(q.get("chunk", CHUNK)), q.get("cl") == "1",
            q.get("crc") == "1")


def _block(chunk):
    # The same bytes object is sent again and again: the app itself holds one chunk.
    return (bytes(range(256)) * (chunk // 256 + 1))[:chunk]


def _chunks(total, chunk):
    block = _block(chunk)
    full, rest = divmod(total, chunk)
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


def _result(size, reads, crc):
    return json.dumps({"size": size, "reads": reads, "crc32": crc}).encode()


# ---------------------------------------------------------------------------- WSGI

def _churn(total):
    held = [bytes(2000) for _ in range(total // 2000)]
    # the objects live in the heap's middle, below one that stays: the top cannot shrink past it
    _churn.keep = bytes(2000)
    return held

def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    total, chunk, cl, want_crc = _params(environ.get("QUERY_STRING", ""))
    if path == "/stream":
        headers = [("Content-Type", "application/octet-stream")]
        if cl:
            headers.append(("Content-Length", str(total)))
        start_response("200 OK", headers)
        return _chunks(total, chunk)
    if path == "/upload":
        inp = environ["wsgi.input"]
        size = reads = 0
        crc = 0
        while True:
            data = inp.read(chunk)
            if not data:
                break
            size += len(data)
            reads += 1
            if want_crc:
                crc = zlib.crc32(data, crc)
        body = _result(size, reads, crc if want_crc else None)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
        return [HELLO]
    if path == "/churn":
        # total bytes in 2,000-byte objects (over pymalloc's 512: malloc's heap), held, then freed:
        # the heap they leave free is under the server's 32 MiB trim threshold
        body = _result(len(_churn(total)), 0, None)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


# ---------------------------------------------------------------------------- ASGI

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan
    path = scope["path"]
    total, chunk, cl, want_crc = _params(scope["query_string"].decode("latin-1"))
    if path == "/stream":
        headers = [(b"content-type", b"application/octet-stream")]
        if cl:
            headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for block in _chunks(total, chunk):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/upload":
        size = reads = 0
        crc = 0
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return  # the client left
            data = event.get("body", b"")
            if data:
                size += len(data)
                reads += 1
                if want_crc:
                    crc = zlib.crc32(data, crc)
            if not event.get("more_body", False):
                break
        body = _result(size, reads, crc if want_crc else None)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/hello":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(HELLO)).encode())]})
        await send({"type": "http.response.body", "body": HELLO})
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
