"""ASGI apps for test_asgi_http: receive() and send() semantics, invalid events, backpressure,
disconnects and detached tasks.

Apps leave notes in NOTES[key] (key from the query string "key=..."); the test reads them back
with a later request to `report` (GET /<key>), so what an app observed is checked even when its
own response was cut."""
import ast
import asyncio
import zlib
from urllib.parse import parse_qs

NOTES = {}


def note(key, text):
    NOTES.setdefault(key, []).append(str(text))


def query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}


async def report(scope, receive, send):
    body = "\n".join(NOTES.get(scope["path"][1:], [])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def describe(event):
    """type/bodytype/len/more_body/sorted keys of a receive() event."""
    if event["type"] != "http.request":
        return "%s keys=%s" % (event["type"], ",".join(sorted(event)))
    body = event.get("body", b"")
    return "%s/%s/%d/%r keys=%s" % (event["type"], type(body).__name__, len(body),
                                    event.get("more_body", "missing"), ",".join(sorted(event)))


async def read_body(receive, key=None):
    """The whole body; with @key, notes every receive() event as it arrives (so a test can read,
    mid-body, which events the app has had so far)."""
    chunks = []
    while True:
        event = await receive()
        if key is not None:
            note(key, describe(event))
        if event["type"] != "http.request":
            return b"".join(chunks), event["type"]
        chunks.append(event.get("body", b""))
        if not event.get("more_body", False):
            return b"".join(chunks), None


async def echo(scope, receive, send):
    """Sends the request body back; notes every receive() event."""
    key = query(scope).get("key", "echo")
    body, _ = await read_body(receive, key)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def count(scope, receive, send):
    """Counts the body without keeping it: bytes, events, largest event, Adler-32."""
    n = events = largest = 0
    adler = 1
    end = "complete"
    while True:
        event = await receive()
        if event["type"] != "http.request":
            end = event["type"]
            break
        body = event["body"]
        n += len(body)
        events += 1
        largest = max(largest, len(body))
        adler = zlib.adler32(body, adler)
        if not event["more_body"]:
            break
    text = "bytes=%d events=%d largest=%d adler=%08x end=%s" % (n, events, largest, adler, end)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text.encode()})


async def wait_after_body(scope, receive, send):
    """Reads the body, then awaits receive() again with no response sent: only a disconnect can
    end that wait. Then tries to respond anyway."""
    key = query(scope)["key"]
    body, _ = await read_body(receive)
    note(key, "body=%r" % body)
    note(key, "waiting")
    event = await receive()
    note(key, "then " + describe(event))
    event = await receive()
    note(key, "again " + describe(event))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        note(key, "send ok")
    except OSError as e:
        note(key, "send %s: %s" % (type(e).__name__, e))


async def watch_then_respond(scope, receive, send):
    """A watcher task awaits receive() after the body (as Starlette's disconnect listener does);
    the response completing must wake it with http.disconnect."""
    key = query(scope)["key"]
    await read_body(receive)

    async def watcher():
        note(key, "watcher waiting")
        event = await receive()
        note(key, "watcher got " + event["type"])

    task = asyncio.get_running_loop().create_task(watcher())
    await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    await asyncio.sleep(0)
    note(key, "watcher done before end: %s" % task.done())
    await send({"type": "http.response.body", "body": b" end"})
    await task
    note(key, "finished")


async def receive_together(scope, receive, send):
    """Three tasks in receive() at once (the spec does not forbid it; Starlette's
    Request.is_disconnected() does it while its StreamingResponse listens for the disconnect):
    each event goes to the oldest call still waiting, a call cancelled while it waits takes
    nothing, and a disconnect reaches every call still waiting (and every later one)."""
    key = query(scope)["key"]
    loop = asyncio.get_running_loop()

    async def one(name):
        event = await receive()
        note(key, "%s got %s" % (name, describe(event)))

    a = loop.create_task(one("a"))
    await asyncio.sleep(0)
    gone = loop.create_task(one("cancelled"))
    await asyncio.sleep(0)
    b = loop.create_task(one("b"))
    await asyncio.sleep(0)
    c = loop.create_task(one("c"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    note(key, "waiting")
    await asyncio.gather(a, b, c)
    note(key, "then " + describe(await receive()))


async def script(scope, receive, send):
    """Sends the messages listed in the request body (a Python literal) one by one; notes "ok" or
    the exception of each. With ?catch the app catches every error and goes on, otherwise the
    first error propagates out of the app."""
    q = query(scope)
    key, catch = q["key"], "catch" in q
    body, _ = await read_body(receive)
    for message in ast.literal_eval(body.decode()):
        try:
            await send(message)
            note(key, "ok")
        except Exception as e:
            note(key, "%s: %s" % (type(e).__name__, e))
            if not catch:
                raise
    note(key, "end")


async def raise_before_start(scope, receive, send):
    await receive()
    raise RuntimeError("libwsgi-test asgi failure before start")


async def raise_after_start(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"half", "more_body": True})
    raise ValueError("libwsgi-test asgi failure after start")


async def raise_immediately(scope, receive, send):
    raise KeyError("libwsgi-test raised before any await")


async def no_response(scope, receive, send):
    await receive()


async def start_only(scope, receive, send):
    await send({"type": "http.response.start", "status": 204, "headers": []})


def not_a_coroutine_result(scope, receive, send):
    """Looks like ASGI to nothing: only reachable with interface forced to ASGI."""
    return None


async def stream(scope, receive, send):
    """Sends ?n bodies of more_body=True then an empty final one; NOTES[key] is the number of
    send() calls that completed so far (the test reads it while the app is paused)."""
    q = query(scope)
    key, n = q["key"], int(q["n"])
    NOTES[key] = ["0"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    NOTES[key] = ["1"]
    for i in range(n):
        await send({"type": "http.response.body", "body": b"%d;" % i, "more_body": True})
        NOTES[key] = [str(i + 2)]
    await send({"type": "http.response.body", "body": b""})
    NOTES[key] = ["done"]


async def client_gone(scope, receive, send):
    """The host's on_body fails: send() raises OSError, receive() reports http.disconnect."""
    key = query(scope)["key"]
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(3):
        try:
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
            note(key, "send %d ok" % i)
        except OSError as e:
            note(key, "send %d %s" % (i, type(e).__name__))
    event = await receive()
    note(key, "receive " + event["type"])


async def slow_stream(scope, receive, send):
    """Streams with a short timer between chunks until send() fails, then checks receive()."""
    key = query(scope)["key"]
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(1000):
        try:
            await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        except OSError as e:
            note(key, "send %d %s" % (i, type(e).__name__))
            break
        await asyncio.sleep(0.001)
    event = await receive()
    note(key, "receive " + event["type"])


async def detached(scope, receive, send):
    """Keeps running after the host freed its handle: background work goes on, send() raises,
    receive() reports http.disconnect, and the task finishes."""
    key = query(scope)["key"]
    await read_body(receive)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        # An empty body event with more_body: the head goes out now (held until a body event).
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        note(key, "started")
    except OSError as e:
        note(key, "start " + type(e).__name__)
    await asyncio.sleep(0.005)
    try:
        await send({"type": "http.response.body", "body": b"late"})
        note(key, "send ok")
    except OSError as e:
        note(key, "send " + type(e).__name__)
    event = await receive()
    note(key, "receive " + event["type"])
    await asyncio.sleep(0.005)
    note(key, "finished")


async def detached_receiving(scope, receive, send):
    """Awaits the streamed body; the host frees the connection meanwhile."""
    key = query(scope)["key"]
    note(key, "waiting")
    event = await receive()
    note(key, "got " + describe(event))
    await asyncio.sleep(0)
    note(key, "finished")


async def background_after_response(scope, receive, send):
    """Responds completely, then keeps working: on_done must come when the task ends."""
    key = query(scope)["key"]
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done early"})
    note(key, "responded")
    await asyncio.sleep(0.002)
    note(key, "background finished")


async def cancel_self(scope, receive, send):
    """The app's task is cancelled (here by itself) before it responded."""
    await receive()
    asyncio.current_task().cancel()
    await asyncio.sleep(0)


async def await_forever(scope, receive, send):
    """Awaits an event nobody sets: only asgi_conn_cancel() ends it."""
    key = query(scope)["key"]
    note(key, "waiting")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        note(key, "cancelled")
        raise


async def system_exit(scope, receive, send):
    """sys.exit() inside a request handler: a failed request (uvicorn catches BaseException in
    run_asgi too), not the end of the host's loop."""
    await receive()
    raise SystemExit("libwsgi-test system exit in a request")


async def keyboard_interrupt(scope, receive, send):
    await receive()
    raise KeyboardInterrupt("libwsgi-test interrupt in a request")


async def stream_until_gone(scope, receive, send):
    """Streams until send() raises and lets the OSError propagate, as most apps do."""
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        await asyncio.sleep(0.001)


async def cancel_paused_send(scope, receive, send):
    """Cancels a send() the host paused, then sends again: the host may still have the first
    chunk queued when the second on_body arrives (bodies large so they are real allocations)."""
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    pending = asyncio.ensure_future(send({"type": "http.response.body",
                                          "body": b"a" * 100000, "more_body": True}))
    await asyncio.sleep(0)
    pending.cancel()
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"b" * 100000})


async def start_then_read(scope, receive, send):
    """Sends http.response.start, then reads the whole streamed body before sending it back: the
    head must not reach the host before the first body event. ?raise: fails instead of sending."""
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-held", b"1")]})
    body, _ = await read_body(receive)
    if "raise" in query(scope):
        raise RuntimeError("libwsgi-test asgi failure after start, before any body")
    await send({"type": "http.response.body", "body": body})


KEEP = []
HOLD = {}


class Dropper(bytes):
    """A bytes whose destruction (app code: the library lets go of a body two sends later)
    replaces the body of the message being sent then (HOLD["msg"], a bytes only it held)."""

    def __del__(self):
        msg = HOLD.pop("msg", None)
        if msg is not None:
            n = len(msg["body"])
            msg["body"] = b""
            KEEP.append(b"y" * n)  # same size: glibc hands this one the freed block


async def body_dropper(scope, receive, send):
    """Sends a Dropper body, then b"b", then 600 'x' while the Dropper is released: the host must
    get the 600 'x' it was handed."""
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": Dropper(b"a"), "more_body": True})
    await send({"type": "http.response.body", "body": b"b", "more_body": True})
    msg = {"type": "http.response.body", "body": b"x" * int(query(scope)["n"])}
    HOLD["msg"] = msg
    await send(msg)


async def body_raced(scope, receive, send):
    """The first body event (600 'x', held only by the message) while another thread replaces it:
    the thread waits on pipe ?go= (written by the host's on_start, which runs without the GIL and
    before the body's on_body), replaces the body and answers on pipe ?done=. The body the host
    then gets must still be the one the library was handed."""
    import os
    import threading

    q = query(scope)
    n, go_fd, done_fd = int(q["n"]), int(q["go"]), int(q["done"])
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    msg = {"type": "http.response.body", "body": b"x" * n}

    def other():
        os.read(go_fd, 1)
        msg["body"] = b""  # the only reference to the bytes the library was handed goes
        KEEP.append(b"y" * n)  # same size: glibc hands this one the freed block
        os.write(done_fd, b"d")

    t = threading.Thread(target=other)
    t.start()
    await send(msg)
    t.join()


async def cancel_others(scope, receive, send):
    """Cancels every other task, as some shutdown code does: a request dispatched in the same turn
    is cancelled before its first step, so its app never runs."""
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task():
            t.cancel()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def stream_until_disconnect(scope, receive, send):
    """An endless event stream (answering HEAD, say): one chunk, then it waits for http.disconnect
    in receive(); then it still sends its final, empty body event."""
    key = query(scope)["key"]
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"event", "more_body": True})
    note(key, "streaming")
    event = await receive()
    note(key, "got " + describe(event))
    try:
        await send({"type": "http.response.body", "body": b""})
        note(key, "final send ok")
    except OSError as e:
        note(key, "final send %s" % type(e).__name__)
