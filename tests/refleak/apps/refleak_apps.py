"""Apps for tests/refleak/test_refleak.c: every response path of WSGI, ASGI HTTP, WebSocket and
lifespan, each selected by the request path, plus a probe reporting the interpreter's counters."""
import gc
import io
import sys

DATA = __file__


# ---- the probe ---------------------------------------------------------------------------------

def probe(environ, start_response):
    """'<total refcount> <allocated blocks> <gc-tracked objects>' after a full collection; the
    refcount is -1 where the Python is not a debug build (no sys.gettotalrefcount)."""
    gc.collect()
    refs = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else -1
    objs = len(gc.get_objects())
    blocks = sys.getallocatedblocks()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %d %d" % (refs, blocks, objs)]


# ---- WSGI --------------------------------------------------------------------------------------

class Closing:
    """An iterable whose close() is called (and may raise)."""

    def __init__(self, chunks, raise_in_close=False):
        self.chunks = chunks
        self.raise_in_close = raise_in_close

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        if self.raise_in_close:
            raise RuntimeError("close failed on purpose")


class BadIter:
    def __iter__(self):
        raise RuntimeError("__iter__ failed on purpose")


def _gen(start_response):
    start_response("200 OK", [("X-Gen", "1")])
    yield b""
    yield b"a" * 100
    yield b"b"


def _gen_raising(start_response):
    start_response("200 OK", [])
    yield b"first"
    raise RuntimeError("failed mid-iteration on purpose")


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/generator":
        return _gen(start_response)
    if path == "/write":
        write = start_response("200 OK", [])
        write(b"legacy")
        return iter([b"rest"])
    if path == "/input":
        body = environ["wsgi.input"]
        data = body.readline() + body.read(3) + b"".join(body.readlines())
        start_response("200 OK", [("Content-Length", str(len(data)))])
        return [data]
    if path == "/errors":
        environ["wsgi.errors"].write("line one\npartial")
        environ["wsgi.errors"].flush()
        start_response("200 OK", [])
        return [b"ok"]
    if path == "/file":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](open(DATA, "rb"), 4096)
    if path == "/bytesio":
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 10000), 1000)
    if path == "/exc_info":
        start_response("200 OK", [])
        try:
            raise ValueError("replaced")
        except ValueError:
            start_response("500 Oops", [("X", "y")], sys.exc_info())
        return [b"err"]
    if path == "/exc_info_after_head":
        write = start_response("200 OK", [])
        write(b"head sent")
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())  # re-raises
        return [b"unreachable"]
    if path == "/close":
        start_response("200 OK", [])
        return Closing([b"a", b"b"])
    if path == "/close_raises":
        start_response("200 OK", [])
        return Closing([b"a", b"b"], raise_in_close=True)
    # error paths
    if path == "/raise_before_start":
        raise RuntimeError("failed before start_response on purpose")
    if path == "/raise_after_start":
        start_response("200 OK", [])
        raise RuntimeError("failed after start_response on purpose")
    if path == "/raise_midway":
        return _gen_raising(start_response)
    if path == "/raise_in_iter":
        start_response("200 OK", [])
        return BadIter()
    if path == "/no_start_response":
        return [b"body without a head"]
    if path == "/start_twice":
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]
    if path == "/bad_status":
        start_response("2000 Nope", [])
        return [b""]
    if path == "/bad_header":
        start_response("200 OK", [("Bad Name", "x")])
        return [b""]
    if path == "/header_not_str":
        start_response("200 OK", [(b"X", "y")])
        return [b""]
    if path == "/str_chunk":
        start_response("200 OK", [])
        return ["not bytes"]
    if path == "/none_result":
        start_response("200 OK", [])
        return None
    if path == "/length_short":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"abc"]
    if path == "/length_long":
        start_response("200 OK", [("Content-Length", "2")])
        return [b"abc", b"def"]
    raise LookupError(path)


# ---- ASGI HTTP ---------------------------------------------------------------------------------

async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await _websocket(scope, receive, send)
    path = scope["path"]
    if path == "/echo":  # the request body in several chunks, the response in several
        body = []
        while True:
            ev = await receive()
            body.append(ev.get("body", b""))
            if not ev.get("more_body"):
                break
        data = b"".join(body)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(0, len(data), 7):
            await send({"type": "http.response.body", "body": data[i:i + 7], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": DATA})
        return
    if path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")],
                    "more_trailers": False})
        return
    if path == "/disconnect":  # the host drops the client mid-response
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except OSError:
            pass
        return
    if path == "/invalid":
        for bad in ({"type": "http.response.body"}, {"type": "nope"},
                    {"type": "http.response.start", "status": "200"},
                    {"type": "http.response.start", "status": 200, "headers": [(1, 2)]}):
            try:
                await send(bad)
            except Exception:
                pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        return
    if path == "/raise_before_start":
        raise RuntimeError("failed before the head on purpose")
    if path == "/raise_after_start":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("failed after the head on purpose")
    if path == "/no_response":
        return
    raise LookupError(path)


# ---- WebSocket ---------------------------------------------------------------------------------

async def _websocket(scope, receive, send):
    path = scope["path"]
    await receive()  # websocket.connect
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/deny_response":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"a", b"b")]})
        await send({"type": "websocket.http.response.body", "body": b"no"})
        return
    if path == "/raise_before_accept":
        raise RuntimeError("failed before accept on purpose")
    await send({"type": "websocket.accept", "subprotocol": "p", "headers": [(b"x", b"y")]})
    if path == "/raise_after_accept":
        raise RuntimeError("failed after accept on purpose")
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": ev.get("text"), "bytes": ev.get("bytes")})
        if ev.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "r"})


# ---- lifespan ----------------------------------------------------------------------------------

async def _lifespan(scope, receive, send):
    while True:
        ev = await receive()
        if ev["type"] == "lifespan.startup":
            scope["state"]["resource"] = [object() for _ in range(10)]
            await send({"type": "lifespan.startup.complete"})
        elif ev["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
