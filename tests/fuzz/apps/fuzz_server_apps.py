"""Apps served by the fuzz_server and fuzz_server_ws targets (tests/fuzz/): the real libwsgi-epoll /
libwsgi-scgi server code runs them while a client sends it arbitrary bytes. What an app does is
chosen by the first letter of the path, so that the fuzzer reaches each response path with a
one-byte change: echo the body, read it in lines or pieces, stream a response, write(), a file,
raise, an app-chosen status, leave the body unread, ... (the branches of wsgi_app and asgi_app).

Each app first checks what libwsgi promises about the environ or scope (fuzz_apps.py's checks) and
calls os.abort() when a promise is broken: libFuzzer reports that as a crash with the input that
caused it. Every response is bounded in size. A response to HEAD carries X-Fuzz-Head, so that the
harness knows its body is absent. Standard library only."""
import os
import sys

from fuzz_apps import check_environ, check_scope

# A file for wsgi.file_wrapper / pathsend responses (sendfile, or X-Sendfile for libwsgi-scgi):
# this one.
FILE_PATH = os.path.abspath(__file__)
FILE_SIZE = os.path.getsize(FILE_PATH)


def bad(what):
    sys.stderr.write("fuzz_server_apps: libwsgi broke a promise: %s\n" % what)
    sys.stderr.flush()
    os.abort()


def arg(path, default):
    """A small number from the path's second character (0-63)."""
    return ord(path[2]) % 64 if len(path) > 2 else default


# ---- WSGI ----------------------------------------------------------------------------------------

def read_lines(inp, n):
    out = []
    while True:
        line = inp.readline(n) if n else inp.readline()
        if type(line) is not bytes:
            bad("readline gave %r" % type(line))
        if not line:
            return out
        out.append(line)


def read_pieces(inp, n):
    out = []
    while True:
        piece = inp.read(n or 1)
        if type(piece) is not bytes or len(piece) > (n or 1):
            bad("read(%d) gave %r" % (n or 1, piece[:20]))
        if not piece:
            return out
        out.append(piece)


def stream(inp, n):
    # Chunks before and after the body is read (the body is still on the socket for a streamed
    # request: the server reads it for the app while the response is under way).
    for k in range(n % 8):
        yield b"s" * (k * 37)
    yield b"".join(read_lines(inp, 0))
    yield b"end"


class Closing:
    """An iterable with close(), which PEP 3333 says the server calls."""

    def __init__(self, chunks, fail):
        self.chunks = chunks
        self.fail = fail

    def __iter__(self):
        for k, c in enumerate(self.chunks):
            if self.fail and k == 1:
                raise RuntimeError("fuzz: failing inside the iterable")
            yield c

    def close(self):
        if self.fail == 2:
            raise RuntimeError("fuzz: failing in close()")


def wsgi_app(environ, start_response):
    why = check_environ(environ)
    if why is not None:
        bad(why)
    path = environ["PATH_INFO"]
    op = path[1:2]
    n = arg(path, 0)
    inp = environ["wsgi.input"]
    headers = [("Content-Type", "application/octet-stream")]
    if environ["REQUEST_METHOD"] == "HEAD":
        headers.append(("X-Fuzz-Head", "1"))
    if op == "e":  # echo the body, with its length
        body = inp.read()
        if type(body) is not bytes:
            bad("read() gave %r" % type(body))
        start_response("200 OK", headers + [("Content-Length", str(len(body)))])
        return [body]
    if op == "l":  # the body in lines of at most n bytes, echoed as one chunk each
        start_response("200 OK", headers)
        return read_lines(inp, n)
    if op == "r":  # read(n) until the end, one chunk each
        chunks = read_pieces(inp, n)
        start_response("200 OK", headers)
        return chunks
    if op == "s":  # a generator (chunked, or close-delimited for HTTP/1.0)
        start_response("200 OK", headers)
        return stream(inp, n)
    if op == "w":  # write(), then an iterable
        write = start_response("200 OK", headers)
        write(b"written " * n)
        write(inp.read(n))
        return [b"rest", inp.read()]
    if op == "f":  # a file (sendfile; X-Sendfile for libwsgi-scgi with --x-sendfile)
        f = open(FILE_PATH, "rb")
        if n & 1:
            f.seek(n * 7)
        extra = [("Content-Length", str(FILE_SIZE - f.tell()))] if n & 2 else []
        start_response("200 OK", headers + extra)
        return environ["wsgi.file_wrapper"](f, 1 + n * 13)
    if op == "x":  # fail: before start_response, inside the iterable, in close()
        if n % 3 == 0:
            raise RuntimeError("fuzz: failing before start_response")
        start_response("200 OK", headers)
        return Closing([b"a", b"b", b"c"], n % 3)
    if op == "y":  # start_response again with exc_info
        start_response("200 OK", headers)
        try:
            raise ValueError("fuzz")
        except ValueError:
            start_response("500 Internal Server Error", headers, sys.exc_info())
        return [b"error page"]
    if op == "c":  # a status and length of the app's choosing (204, 304, a short or long body)
        status = (100, 101, 200, 204, 205, 206, 304, 404, 500, 999)[n % 10]
        extra = [("Content-Length", str(n * 3))] if n & 16 else []
        start_response("%d Fuzz" % status, headers + extra)
        return [b"c" * n]
    if op == "n":  # leave the body unread (the server drains or closes)
        start_response("200 OK", headers + [("Content-Length", "2")])
        return [b"no"]
    body = inp.read()
    if type(body) is not bytes:
        bad("read() gave %r" % type(body))
    start_response("200 OK", headers + [("Content-Length", "2")])
    return [b"ok"]


# ---- ASGI ----------------------------------------------------------------------------------------

async def receive_body(receive):
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return chunks, False
        if msg["type"] != "http.request":
            bad("http event %r" % msg["type"])
        body = msg.get("body", b"")
        if type(body) is not bytes:
            bad("body is %r" % type(body))
        chunks.append(body)
        if not msg.get("more_body", False):
            return chunks, True


async def lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket(scope, receive, send):
    path = scope["path"]
    op = path[1:2]
    msg = await receive()
    if msg["type"] != "websocket.connect":
        bad("first websocket event %r" % msg["type"])
    if op == "d":  # deny the handshake
        await send({"type": "websocket.close", "code": 1000 + arg(path, 8)})
        return
    accept = {"type": "websocket.accept"}
    if scope["subprotocols"] and op == "p":
        accept["subprotocol"] = scope["subprotocols"][0]
    await send(accept)
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            if type(msg.get("code")) is not int:
                bad("disconnect code %r" % (msg.get("code"),))
            return
        if msg["type"] != "websocket.receive":
            bad("websocket event %r" % msg["type"])
        text, data = msg.get("text"), msg.get("bytes")
        if (text is None) == (data is None):
            bad("websocket.receive with text %r and bytes %r" % (type(text), type(data)))
        if text is not None and type(text) is not str or data is not None and type(data) is not bytes:
            bad("websocket.receive types")
        payload = text if text is not None else data
        if payload[:5] in ("close", b"close"):  # the app closes, with a code from the message
            code = 1000 + (len(payload) % 4) if len(payload) < 20 else 4000 + len(payload)
            await send({"type": "websocket.close", "code": code, "reason": "bye" * (len(payload) % 3)})
            return
        if payload[:3] in ("big", b"big"):  # more than one socket write's worth
            await send({"type": "websocket.send", "bytes": bytes(len(payload)) * 1000})
            continue
        if payload[:4] in ("fail", b"fail"):
            raise RuntimeError("fuzz: failing in a websocket handler")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": data})


async def asgi_app(scope, receive, send):
    kind = scope.get("type") if type(scope) is dict else None
    if kind == "lifespan":
        return await lifespan(receive, send)
    why = check_scope(scope, kind) if kind in ("http", "websocket") else "scope type %r" % (kind,)
    if why is not None:
        bad(why)
    if kind == "websocket":
        return await websocket(scope, receive, send)
    path = scope["path"]
    op = path[1:2]
    n = arg(path, 0)
    headers = [(b"content-type", b"application/octet-stream")]
    if scope["method"] == "HEAD":
        headers.append((b"x-fuzz-head", b"1"))
    if op == "e":  # echo
        chunks, _ = await receive_body(receive)
        body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200,
                    "headers": headers + [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    if op == "s":  # stream while reading: one response chunk per request chunk
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            more = msg.get("more_body", False)
            await send({"type": "http.response.body", "body": msg.get("body", b"")[:n + 1],
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})
        return
    if op == "n":  # answer without reading the body
        await send({"type": "http.response.start", "status": 200,
                    "headers": headers + [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})
        return
    if op == "x":  # fail before / after the response start, or never answer
        if n % 3 == 0:
            raise RuntimeError("fuzz: failing before the response")
        if n % 3 == 1:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("fuzz: failing mid-response")
        return  # returns without a response: the library answers 500
    if op == "c":  # the app's status and length
        status = (100, 101, 200, 204, 205, 206, 304, 404, 500, 999)[n % 10]
        extra = [(b"content-length", b"%d" % (n * 3))] if n & 16 else []
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": b"c" * n})
        return
    if op == "t" and "http.response.trailers" in scope.get("extensions", {}):
        await receive_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": headers,
                    "trailers": True})
        await send({"type": "http.response.body", "body": b"body"})
        await send({"type": "http.response.trailers", "headers": [(b"x-t", b"%d" % n)]})
        return
    if op == "f" and "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.start", "status": 200,
                    "headers": headers + [(b"content-length", b"%d" % FILE_SIZE)]})
        await send({"type": "http.response.pathsend", "path": FILE_PATH})
        return
    if op == "d":  # respond, then wait for the disconnect
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"d"})
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    await receive_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": headers + [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
