"""ASGI apps for test_asgi_ws: the websocket scope, every event in and out of order, denial,
the end of the task, backpressure and disconnects.

`script` runs the steps given in the request header x-script (a Python literal list):
  "recv"          await receive() and note what came
  {...}           await send(message) and note "ok" or the exception
  "raise"         raise RuntimeError
  "return"        return at once
With ?catch the app notes send()'s exceptions and goes on; otherwise the first one propagates.
Apps leave notes in NOTES[key] (key from the query string); the test reads them back with an
http request to `report` (GET /<key>)."""
import asyncio
import ast

# The notes and the report app are asgi_http_apps' own (one NOTES dict for both modules).
from asgi_http_apps import NOTES, note, query, report  # noqa: E402,F401


def describe(event):
    t = event["type"]
    keys = ",".join(sorted(event))
    if t == "websocket.receive":
        if event.get("text") is not None:
            return "%s text=%r keys=%s" % (t, event["text"], keys)
        b = event["bytes"]
        return "%s bytes=%s keys=%s" % (t, repr(b) if len(b) <= 64 else "<%d bytes>" % len(b), keys)
    if t == "websocket.disconnect":
        return "%s code=%r reason=%r keys=%s" % (t, event["code"], event.get("reason"), keys)
    return "%s keys=%s" % (t, keys)


def header(scope, name):
    for k, v in scope["headers"]:
        if k == name:
            return v.decode()
    return None


async def script(scope, receive, send):
    q = query(scope)
    key, catch = q["key"], "catch" in q
    for step in ast.literal_eval(header(scope, b"x-script")):
        if step == "recv":
            note(key, describe(await receive()))
        elif step == "raise":
            raise RuntimeError("libwsgi-test ws failure")
        elif step == "return":
            return
        else:
            try:
                await send(step)
                note(key, "ok")
            except Exception as e:
                note(key, "%s: %s" % (type(e).__name__, e))
                if not catch:
                    raise
    note(key, "end")


async def scope_dump(scope, receive, send):
    q = query(scope)
    s = dict(scope)
    for k in ("type", "scheme", "path", "raw_path", "query_string", "root_path", "http_version",
              "subprotocols", "asgi", "extensions", "client", "server", "state"):
        note(q["key"], "%s=%r" % (k, s.pop(k, "MISSING")))
    note(q["key"], "headers=%r" % (s.pop("headers"),))
    note(q["key"], "other=%r" % sorted(s))
    await receive()
    await send({"type": "websocket.close"})


async def echo(scope, receive, send):
    """Accepts, echoes every message until the disconnect, notes the disconnect and what a send()
    after it raises."""
    key = query(scope)["key"]
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            note(key, describe(ev))
            try:
                await send({"type": "websocket.send", "text": "late"})
                note(key, "late send ok")
            except OSError as e:
                note(key, "late send %s" % type(e).__name__)
            return
        try:
            await send({"type": "websocket.send", "text": ev.get("text"), "bytes": ev.get("bytes")})
        except OSError as e:
            note(key, "echo %s" % type(e).__name__)


async def accept_then_wait(scope, receive, send):
    """Accepts, then receives only when the test allows (NOTES[key+'go'] set), to let the queue
    fill up: notes every event it gets."""
    key = query(scope)["key"]
    await receive()
    await send({"type": "websocket.accept"})
    while not NOTES.get(key + "go"):
        await asyncio.sleep(0.001)
    while True:
        ev = await receive()
        note(key, describe(ev))
        if ev["type"] == "websocket.disconnect":
            return


async def accept_then_close(scope, receive, send):
    """Accepts, then, once the test allows (NOTES[key+'go'] set), ends without receiving what
    came: websocket.close, or with ?return the task just returns (the library closes)."""
    q = query(scope)
    key = q["key"]
    await receive()
    await send({"type": "websocket.accept"})
    while not NOTES.get(key + "go"):
        await asyncio.sleep(0.001)
    if "return" not in q:
        await send({"type": "websocket.close", "code": 4000})
    note(key, "closed")


KEEP = []


async def accept_mutating(scope, receive, send):
    """websocket.accept whose headers are a generator that replaces the message's subprotocol
    while the library converts them (app code runs there): the subprotocol the host gets is the
    one the library validated, 600 'x' (a str only the message held, big enough for malloc)."""
    n = int(query(scope)["n"])
    await receive()
    msg = {"type": "websocket.accept", "subprotocol": "x" * n}

    def headers():
        msg["subprotocol"] = None  # the only reference to the validated str goes
        KEEP.append("y" * n)  # same size: glibc hands this one the freed block
        yield (b"x-a", b"1")

    msg["headers"] = headers()
    await send(msg)
    await send({"type": "websocket.close"})


async def deny_mutating(scope, receive, send):
    """A denial response whose body event's more_body is an object whose truth test (app code,
    run by the library while it reads the event) replaces the event's body of 600 'x' (a bytes
    only the event held) with b"": the host must get one of the two, never the freed block (which
    the 600 'y' made here take over)."""
    n = int(query(scope)["n"])
    await receive()
    await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
    msg = {"type": "websocket.http.response.body", "body": b"x" * n}

    class Last:
        def __bool__(self):
            msg["body"] = b""  # the only reference to the validated bytes goes
            KEEP.append(b"y" * n)  # same size: glibc hands this one the freed block
            return False

    msg["more_body"] = Last()
    await send(msg)


HOLD = {}


class Dropper(bytes):
    """A bytes whose destruction (app code: the library lets go of a message two sends later)
    replaces the payload of the message being sent then (HOLD["msg"], a bytes only it held)."""

    def __del__(self):
        msg = HOLD.pop("msg", None)
        if msg is not None:
            n = len(msg["bytes"])
            msg["bytes"] = b""
            KEEP.append(b"y" * n)  # same size: glibc hands this one the freed block


async def send_dropper(scope, receive, send):
    """Sends a Dropper, then b"b", then 600 'x' while the Dropper is released: the host must get
    the 600 'x' it was handed."""
    n = int(query(scope)["n"])
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "bytes": Dropper(b"a")})
    await send({"type": "websocket.send", "bytes": b"b"})
    msg = {"type": "websocket.send", "bytes": b"x" * n}
    HOLD["msg"] = msg
    await send(msg)
    await send({"type": "websocket.close"})


async def close_raced(scope, receive, send):
    """websocket.close with a reason only the message holds (600 'x'), while another thread
    replaces it: the thread waits on pipe ?go= (written by the host's on_ws_close, which runs
    without the GIL), replaces the reason and answers on pipe ?done=. The reason the host reads
    after that must still be the one it was handed."""
    import os
    import threading

    q = query(scope)
    n, go_fd, done_fd = int(q["n"]), int(q["go"]), int(q["done"])
    await receive()
    await send({"type": "websocket.accept"})
    msg = {"type": "websocket.close", "code": 4000, "reason": "x" * n}

    def other():
        os.read(go_fd, 1)
        msg["reason"] = ""  # the only reference to the str the host was handed goes
        KEEP.append("y" * n)  # same size: glibc hands this one the freed block
        os.write(done_fd, b"d")

    t = threading.Thread(target=other)
    t.start()
    await send(msg)
    t.join()


async def concurrent_senders(scope, receive, send):
    """Accepts, then three tasks send at once (a broadcast, a heartbeat...), as apps do under any
    ASGI server; notes each completed send() (or its exception), then closes."""
    key = query(scope)["key"]
    await receive()
    await send({"type": "websocket.accept"})

    async def one(i):
        try:
            await send({"type": "websocket.send", "text": "m%d" % i})
            note(key, "sent %d" % i)
        except Exception as e:
            note(key, "%d %s: %s" % (i, type(e).__name__, e))

    await asyncio.gather(one(1), one(2), one(3))
    await send({"type": "websocket.close"})


async def go(scope, receive, send):
    """HTTP: sets NOTES[<path>+'go'] so accept_then_wait starts receiving."""
    NOTES[scope["path"][1:] + "go"] = True
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def sender(scope, receive, send):
    """Accepts and sends ?n binary messages of 100 KB, noting each completed send()."""
    q = query(scope)
    key, n = q["key"], int(q["n"])
    await receive()
    await send({"type": "websocket.accept"})
    for i in range(n):
        await send({"type": "websocket.send", "bytes": bytes([65 + i]) * 100000})
        note(key, "sent %d" % i)
    await send({"type": "websocket.close", "code": 1000})


async def detached(scope, receive, send):
    """Accepts, then keeps running after the host freed its handle."""
    key = query(scope)["key"]
    await receive()
    await send({"type": "websocket.accept"})
    note(key, "accepted")
    await asyncio.sleep(0.005)
    note(key, describe(await receive()))
    try:
        await send({"type": "websocket.send", "text": "x"})
    except OSError as e:
        note(key, "send %s" % type(e).__name__)
    note(key, "finished")


# ---- reference leaks: the same paths, without notes (test_leaks_per_path) ----------------------

async def probe(scope, receive, send):
    import gc
    import sys
    gc.collect()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % sys.getallocatedblocks()})


async def leak_path(scope, receive, send):
    path = scope["path"]
    await receive()
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/response":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": [(b"a", b"b")]})
        await send({"type": "websocket.http.response.body", "body": b"no"})
        return
    if path == "/raise_before":
        raise RuntimeError("leak test")
    await send({"type": "websocket.accept", "subprotocol": "p", "headers": [(b"x", b"y")]})
    if path == "/raise_after":
        raise RuntimeError("leak test")
    if path == "/invalid":
        for bad in ({"type": "websocket.send"}, {"type": "websocket.accept"},
                    {"type": "websocket.close", "code": 1005}, {"type": "websocket.send", "text": 1}):
            try:
                await send(bad)
            except Exception:
                pass
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            try:
                await send({"type": "websocket.send", "bytes": b"late"})
            except OSError:
                pass
            return
        await send({"type": "websocket.send", "text": ev.get("text"), "bytes": ev.get("bytes")})
        if ev.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "r"})
