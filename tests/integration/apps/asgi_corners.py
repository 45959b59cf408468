"""A raw ASGI 3 app with one route per ASGI / HTTP corner the integration tests check.

Like corners.py, what the tests inspect afterwards (events received, bytes produced, disconnects)
is kept in this process and read back through /state, or written to files under
$LIBWSGI_TEST_TMP, so a test never depends on timing: it asks, or polls with a failure guard.
The lifespan protocol is supported: startup puts values in the state and writes a marker file per
process, shutdown writes another ($LIBWSGI_TEST_TAG keeps the files of different tests apart).
"""

import asyncio
import hashlib
import json
import os
from urllib.parse import parse_qs

TMP = os.environ.get("LIBWSGI_TEST_TMP", "/tmp")
TAG = os.environ.get("LIBWSGI_TEST_TAG", "")
_state = {}  # token -> dict recorded by the routes


def marker(kind, *parts):
    return os.path.join(TMP, "-".join(("asgi", kind, TAG) + tuple(str(p) for p in parts)))


def touch(path, text=""):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def log_event(what):
    """Appends to the tag's ordered event log (background work vs lifespan shutdown)."""
    with open(marker("events"), "a") as f:
        f.write("%s %d\n" % (what, os.getpid()))


def q(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def rec(token):
    return _state.setdefault(token, {})


async def start(send, status=200, headers=(), content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type)] + list(headers)})


async def send_json(send, obj, status=200, headers=()):
    body = json.dumps(obj, sort_keys=True).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + list(headers)})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, token=None):
    """The whole body; with a token, each event's (size, more_body) is recorded as it arrives."""
    parts = []
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            raise ConnectionError("disconnected while reading the body")
        parts.append(m.get("body", b""))
        if token is not None:
            rec(token).setdefault("events", []).append([len(parts[-1]), m.get("more_body", False)])
        if not m.get("more_body", False):
            return b"".join(parts)


async def lifespan(scope, receive, send):
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            scope["state"]["pid"] = os.getpid()
            scope["state"]["greeting"] = "set at startup"
            touch(marker("startup", os.getpid()))
            log_event("startup")
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            log_event("shutdown")
            touch(marker("shutdown", os.getpid()))
            await send({"type": "lifespan.shutdown.complete"})
            return


def scope_json(scope):
    out = {}
    for k, v in scope.items():
        if k in ("raw_path", "query_string"):
            out[k] = v.decode("latin-1")
        elif k == "headers":
            out[k] = [[n.decode("latin-1"), x.decode("latin-1")] for n, x in v]
        elif k == "extensions":
            out[k] = sorted(v or {})
        else:
            out[k] = v
    return out


# ---- routes -------------------------------------------------------------------------------------

async def r_hello(scope, receive, send, args):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"14")]})
    await send({"type": "http.response.body", "body": b"Hello, World!\n"})


async def r_respond_then_block(scope, receive, send, args):
    """Responds in a loop turn (after a real await), then blocks the loop thread in open() of the
    FIFO ?fifo until the test opens it for writing (?marker: created once the response is out)."""
    await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})
    open(args["marker"], "w").close()
    with open(args["fifo"], "rb"):
        pass


async def r_unmeasured(scope, receive, send, args):
    """The whole body in one event, no content-length from the app."""
    await start(send)
    await send({"type": "http.response.body", "body": b"measured by the server\n"})


async def r_scope(scope, receive, send, args):
    await send_json(send, scope_json(scope))


async def r_echo(scope, receive, send, args):
    """The body back, and how it arrived (events recorded under the token)."""
    token = args.get("token")
    body = await read_body(receive, token)
    await start(send, headers=[(b"content-length", str(len(body)).encode())],
                content_type=b"application/octet-stream")
    await send({"type": "http.response.body", "body": body})


async def r_upload(scope, receive, send, args):
    """Consume a body of any size piece by piece: its size, digest and the number of events."""
    h = hashlib.sha256()
    size = events = 0
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return
        b = m.get("body", b"")
        h.update(b)
        size += len(b)
        events += 1
        if not m.get("more_body", False):
            break
    await send_json(send, {"size": size, "sha256": h.hexdigest(), "events": events})


async def r_stream(scope, receive, send, args):
    n, size = int(args.get("n", "5")), int(args.get("size", "3"))
    await start(send)
    for i in range(n):
        await send({"type": "http.response.body", "body": (b"%d" % (i % 10)) * size,
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def r_length(scope, receive, send, args):
    body = b"exactly this long\n"
    await start(send, headers=[(b"content-length", str(len(body)).encode())])
    await send({"type": "http.response.body", "body": body[:5], "more_body": True})
    await send({"type": "http.response.body", "body": body[5:]})


async def r_big(scope, receive, send, args):
    """size bytes in chunk-sized pieces; bytes produced so far are recorded under the token."""
    token, size, chunk = args["token"], int(args["size"]), int(args.get("chunk", "65536"))
    r = rec(token)
    r["produced"] = 0
    piece = b"z" * chunk
    await start(send, headers=[(b"content-length", str(size).encode())],
                content_type=b"application/octet-stream")
    left = size
    try:
        while left > 0:
            b = piece if left >= chunk else piece[:left]
            left -= len(b)
            await send({"type": "http.response.body", "body": b, "more_body": left > 0})
            r["produced"] += len(b)
    except OSError:
        r["send_raised"] = True
        touch(marker("send-raised", token))


async def r_raise_before(scope, receive, send, args):
    raise RuntimeError("failed before the response on purpose")


async def r_raise_after(scope, receive, send, args):
    await start(send)
    await send({"type": "http.response.body", "body": b"partial ", "more_body": True})
    raise RuntimeError("failed in the middle of the response on purpose")


async def r_no_response(scope, receive, send, args):
    return None


async def r_bad_order(scope, receive, send, args):
    await send({"type": "http.response.body", "body": b"body before start"})


async def r_reject(scope, receive, send, args):
    """Answers at once without reading the body (Expect: 100-continue must then not be sent)."""
    await send_json(send, {"rejected": True}, status=403)


async def r_wait_disconnect(scope, receive, send, args):
    """Start a streaming response, then wait in receive() for the client to go away."""
    token = args["token"]
    await start(send)
    await send({"type": "http.response.body", "body": b"first chunk\n", "more_body": True})
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            touch(marker("disconnect", token))
            return


async def r_receive_when_told(scope, receive, send, args):
    """Read nothing of the body until marker("go") exists, then record the first event's type."""
    token = args["token"]
    while not os.path.exists(marker("go", token)):
        await asyncio.sleep(0.02)
    m = await receive()
    touch(marker("received", token), m["type"])
    if m["type"] != "http.disconnect":
        await read_body(receive)
        await send_json(send, {"ok": True})


async def r_after_response(scope, receive, send, args):
    """Receive after the response is complete: the spec says http.disconnect."""
    token = args["token"]
    await read_body(receive)
    await send_json(send, {"ok": True})
    m = await receive()
    touch(marker("after-response", token), m["type"])


async def r_after_response_unread(scope, receive, send, args):
    """Receive after the response is complete, the request (or its body) never read: still
    http.disconnect (the spec; uvicorn answers the same)."""
    await send_json(send, {"ok": True})
    m = await receive()
    touch(marker("after-response-unread", args["token"]), m["type"])


async def r_background(scope, receive, send, args):
    """Respond, then keep working until the test creates the go file (or at once without one)."""
    token = args["token"]
    await send_json(send, {"accepted": token})
    go = args.get("go")
    while go and not os.path.exists(go):
        await asyncio.sleep(0.01)
    log_event("background-" + token)
    touch(marker("background", token))


async def r_slow_stream(scope, receive, send, args):
    """A chunk each time the test creates the next go file: a response in flight on demand."""
    token, n = args["token"], int(args.get("n", "3"))
    await start(send)
    for i in range(n):
        go = marker("go", token, i)
        while not os.path.exists(go):
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"part %d\n" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def r_late_end(scope, receive, send, args):
    """Every byte of the Content-Length with more_body True, then (once the test has closed the
    connection and created the go file) the final empty body: the client closing in between is a
    normal end, so that send() must not raise."""
    token = args["token"]
    body = b"all of it\n"
    await start(send, headers=[(b"content-length", str(len(body)).encode())])
    await send({"type": "http.response.body", "body": body, "more_body": True})
    go = marker("go", token)
    while not os.path.exists(go):
        await asyncio.sleep(0.01)
    try:
        await send({"type": "http.response.body", "body": b""})
        touch(marker("late-end", token), "ok")
    except OSError as e:
        touch(marker("late-end", token), "raised %r" % e)


async def r_pathsend(scope, receive, send, args):
    path = args["path"]
    if "http.response.pathsend" not in (scope.get("extensions") or {}):
        await send_json(send, {"pathsend": False}, status=501)
        return
    await start(send, headers=[(b"content-length", str(os.path.getsize(path)).encode())],
                content_type=b"application/octet-stream")
    await send({"type": "http.response.pathsend", "path": path})


async def r_status(scope, receive, send, args):
    """The status code given in ?code (a code without a standard reason phrase, say)."""
    await send({"type": "http.response.start", "status": int(args["code"]),
                "headers": [(b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


async def r_state(scope, receive, send, args):
    await send_json(send, _state.get(args.get("token", ""), {}))


ROUTES = {
    "/hello": r_hello,
    "/unmeasured": r_unmeasured,
    "/respond-then-block": r_respond_then_block,
    "/scope": r_scope,
    "/echo": r_echo,
    "/upload": r_upload,
    "/stream": r_stream,
    "/length": r_length,
    "/big": r_big,
    "/raise-before": r_raise_before,
    "/raise-after": r_raise_after,
    "/no-response": r_no_response,
    "/bad-order": r_bad_order,
    "/reject": r_reject,
    "/wait-disconnect": r_wait_disconnect,
    "/receive-when-told": r_receive_when_told,
    "/after-response": r_after_response,
    "/after-response-unread": r_after_response_unread,
    "/background": r_background,
    "/slow-stream": r_slow_stream,
    "/late-end": r_late_end,
    "/pathsend": r_pathsend,
    "/status": r_status,
    "/state": r_state,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    path = scope["path"]
    if scope["root_path"] and path.startswith(scope["root_path"] + "/"):
        path = path[len(scope["root_path"]):]  # mounted (--root-path): route on the rest
    route = ROUTES.get(path)
    if route is None and path.startswith("/scope/"):
        route = r_scope
    if route is None:
        await send_json(send, {"error": "no route", "path": scope["path"]}, status=404)
        return
    await route(scope, receive, send, q(scope))


async def no_lifespan(scope, receive, send):
    """The same routes, but raising on lifespan scopes (an app that does not speak lifespan)."""
    if scope["type"] != "http":
        raise ValueError("only http scopes, not %r" % scope["type"])
    await app(scope, receive, send)


async def failing_startup(scope, receive, send):
    """Lifespan startup fails: the server must not serve."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable on purpose"})
        return
    await app(scope, receive, send)
