"""A raw ASGI 3 app with one WebSocket route per behaviour tests/integration/test_websocket*.py
checks, plus a few HTTP routes (the same port serves both). Served unchanged by libwsgi-epoll and
by uvicorn (the reference). What the app saw is reported per token (?token=) through
ws_common.record() (a JSON file under $LIBWSGI_TEST_TMP).

WebSocket routes (path):
  /echo          accept (?subprotocol=), echo every message with its type; records the
                 disconnect (code, reason) and, with ?send_after=1, what send() did after it
  /scope         accept, send the scope as JSON text, then echo
  /subprotocols  accept with ?pick= (none without), send scope["subprotocols"] as JSON, then echo
  /headers       accept with extra response headers, then echo
  /handshake-headers  accept with headers only the server may set (Connection, Upgrade,
                 Content-Length, Sec-WebSocket-Accept/-Extensions...), then echo
  /close         accept, then websocket.close with ?code= and ?reason= (either may be absent)
                 and records the next event (type, code)
  /deny          websocket.close before accept (?receive_after=1: then receive(), recorded)
  /deny-response websocket.http.response.start/body (401, headers, a body in two parts; the same
                 ?receive_after=1)
  /raise-before  raise before accept;   /return-before  return before accept
  /raise-after   accept, receive one message, raise;   /return-after  accept, return
  /flood-out     accept, send ?n= binary messages of ?size= bytes (numbered; empty for size 0),
                 recording progress
  /hold          accept, receive nothing until GET /release?token=, then count what arrives
  /count         accept and echo, keeping the number of open connections and its peak
  /burst-close   accept, send ?n= messages of ?size= bytes, then websocket.close(4000) at once
HTTP routes: /hello, /release?token=, anything else 404.
"""

import asyncio
import hashlib
import json
import os
import struct

from ws_common import exc_info, query, record

_release = {}  # token -> asyncio.Event
_conc = {"open": 0, "peak": 0}


def release_event(token):
    ev = _release.get(token)
    if ev is None:
        ev = _release[token] = asyncio.Event()
    return ev


def scope_json(scope):
    out = {}
    for k, v in scope.items():
        if k in ("raw_path", "query_string"):
            out[k] = [type(v).__name__, v.decode("latin-1") if isinstance(v, bytes) else v]
        elif k == "headers":
            out[k] = [[n.decode("latin-1"), x.decode("latin-1")] for n, x in v]
        elif k == "extensions":
            out[k] = sorted(v or {})
        elif k == "state":
            out[k] = sorted(v)
        else:
            out[k] = v
    return out


async def echo_loop(receive, send, token, q):
    """Echo until the disconnect, which is recorded (and followed by a send() when asked)."""
    n = 0
    while True:
        m = await receive()
        if m["type"] == "websocket.receive":
            n += 1
            if m.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
            else:
                await send({"type": "websocket.send", "text": m["text"]})
            continue
        if m["type"] == "websocket.disconnect":
            rec = {"disconnect": {"code": m.get("code"), "reason": m.get("reason")}, "received": n}
            if q.get("send_after"):
                try:
                    await send({"type": "websocket.send", "text": "after the disconnect"})
                    rec["send_after"] = {"type": None, "is_oserror": False, "text": "returned"}
                except BaseException as e:  # noqa: B902 - what it raised is the point
                    rec["send_after"] = exc_info(e)
            record(token, **rec)
            return
        raise AssertionError("unexpected event %r" % (m,))


async def websocket(scope, receive, send):
    q = query(scope)
    token = q.get("token")
    path = scope["path"]
    first = await receive()
    assert first["type"] == "websocket.connect", first
    record(token, connected=True)

    if path == "/deny":
        await send({"type": "websocket.close"})
        if q.get("receive_after"):
            m = await receive()
            record(token, after_deny=m["type"])
        return
    if path == "/deny-response":
        record(token, extensions=sorted(scope.get("extensions") or {}))
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"www-authenticate", b'Basic realm="ws"'),
                                (b"x-denied", b"yes"), (b"x-denied", b"twice")]})
        await send({"type": "websocket.http.response.body", "body": b"denied ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"by the app"})
        if q.get("receive_after"):
            m = await receive()
            record(token, after_deny=m["type"])
        return
    if path == "/raise-before":
        raise RuntimeError("ws_app: raised before accept")
    if path == "/return-before":
        return

    accept = {"type": "websocket.accept"}
    if path == "/subprotocols":
        if q.get("pick"):
            accept["subprotocol"] = q["pick"]
    elif q.get("subprotocol"):
        accept["subprotocol"] = q["subprotocol"]
    if path == "/headers":
        accept["headers"] = [(b"x-extra", b"one"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    if path == "/handshake-headers":  # headers that belong to the server's handshake, not the app
        accept["headers"] = [(b"connection", b"close"), (b"upgrade", b"h2c"), (b"content-length", b"5"),
                             (b"transfer-encoding", b"chunked"), (b"sec-websocket-accept", b"bogus"),
                             (b"sec-websocket-extensions", b"permessage-deflate"), (b"x-kept", b"yes")]
    await send(accept)
    record(token, accepted=True)

    if path.startswith("/scope"):
        await send({"type": "websocket.send", "text": json.dumps(scope_json(scope))})
    elif path == "/subprotocols":
        await send({"type": "websocket.send", "text": json.dumps(scope.get("subprotocols"))})
    elif path == "/close":
        msg = {"type": "websocket.close"}
        if "code" in q:
            msg["code"] = int(q["code"])
        if "reason" in q:
            msg["reason"] = q["reason"]
        await send(msg)
        m = await receive()
        record(token, after_close=m["type"], after_close_code=m.get("code"))
        return
    elif path == "/raise-after":
        await receive()
        raise RuntimeError("ws_app: raised after accept")
    elif path == "/return-after":
        return
    elif path == "/flood-out":
        n, size = int(q.get("n", 64)), int(q.get("size", 1 << 20))
        block = bytes(range(256)) * (size // 256)
        every = max(1, n // 256)  # at most ~256 progress records
        try:
            for i in range(n):
                data = struct.pack("!I", i) + block[4:] if size else b""
                await send({"type": "websocket.send", "bytes": data})
                if (i + 1) % every == 0 or i + 1 == n:
                    record(token, sent=i + 1)
        except OSError as e:
            record(token, error=exc_info(e))
            return
        record(token, done=True)
        await echo_loop(receive, send, token, q)
        return
    elif path == "/hold":
        await release_event(token).wait()
        count = size = 0
        seq = hashlib.sha256()  # of every message's first 8 bytes: order and duplicates show
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                record(token, count=count, size=size, seq=seq.hexdigest(), disconnect={"code": m.get("code")})
                return
            data = m.get("bytes") if m.get("bytes") is not None else m["text"].encode()
            count += 1
            size += len(data)
            seq.update(data[:8])
            if count % 64 == 0:
                record(token, count=count, size=size)
    elif path == "/burst-close":
        n, size = int(q.get("n", 10)), int(q.get("size", 100000))
        for i in range(n):
            await send({"type": "websocket.send", "bytes": struct.pack("!I", i) + bytes(size - 4)})
        await send({"type": "websocket.close", "code": 4000, "reason": "after the burst"})
        m = await receive()
        record(token, after_close=m["type"])
        return
    elif path == "/count":
        _conc["open"] += 1
        _conc["peak"] = max(_conc["peak"], _conc["open"])
        record(token, peak=_conc["peak"])
        try:
            await echo_loop(receive, send, None, q)
        finally:
            _conc["open"] -= 1
            if _conc["open"] == 0:
                _conc["peak"] = 0
        return
    await echo_loop(receive, send, token, q)


async def http(scope, receive, send):
    q = query(scope)
    status, body = 200, b"Hello, World!\n"
    if scope["path"] == "/release":
        release_event(q.get("token")).set()
        body = b"released\n"
    elif scope["path"] != "/hello":
        status, body = 404, b"not found\n"
    while True:
        m = await receive()
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                if "state" in scope:  # lifespan state (uvicorn 0.17 has none)
                    scope["state"]["greeting"] = "set at startup"
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


