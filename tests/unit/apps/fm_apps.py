"""Apps for test_failmalloc: each response path in a few lines, selected by the request path, and a
probe reporting the interpreter's allocated blocks (to tell a leak from a failed allocation)."""
import gc
import sys


def probe(environ, start_response):
    gc.collect()
    start_response("200 OK", [])
    return [b"%d" % sys.getallocatedblocks()]


def _gen(write):
    write(b"written ")
    yield b"gen"
    yield b"erated"


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/gen":
        return _gen(start_response("200 OK", [("X-A", "b")]))
    if path == "/input":
        body = environ["wsgi.input"]
        data = body.readline() + body.read()
        environ["wsgi.errors"].write("read %d bytes\n" % len(data))
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]
    if path == "/raise":
        start_response("200 OK", [])
        raise RuntimeError("failed on purpose")
    if path == "/file":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    raise LookupError(path)


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            ev = await receive()
            if ev["type"] == "lifespan.startup":
                scope["state"]["ready"] = True
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "subprotocol": None})
        while True:
            ev = await receive()
            if ev["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": ev.get("text"), "bytes": ev.get("bytes")})
    body = b""
    while True:
        ev = await receive()
        body += ev.get("body", b"")
        if not ev.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-len", b"%d" % len(body))],
                "trailers": True})
    await send({"type": "http.response.body", "body": body[:5], "more_body": True})
    await send({"type": "http.response.body", "body": body[5:]})
    await send({"type": "http.response.trailers", "headers": [(b"x-t", b"1")]})
