"""ASGI 3 apps of bench/peers.py: every ASGI server is given the same callables (module:callable).

hello    14-byte text, Content-Length                   (workloads hello-1, hello-64)
big      64 KiB, Content-Length                         (big-64k)
echo     the request body back, Content-Length          (post-256k: wrk posts 256 KiB)
stream   100 body events of 1 KiB (more_body), no Content-Length (chunked)
ws_echo  WebSocket echo (ws-64, ws-4k; HTTP gets 404)
The JSON endpoint is peers_fastapi.py. Every app answers lifespan (so that no server logs that it
is unsupported) with the same few lines.
"""

HELLO = b"Hello, World!\n"
HELLO_START = {"type": "http.response.start", "status": 200,
               "headers": [(b"content-type", b"text/plain"), (b"content-length", b"14")]}
HELLO_BODY = {"type": "http.response.body", "body": HELLO}


async def lifespan(receive, send):
    while True:
        m = await receive()
        await send({"type": m["type"] + ".complete"})
        if m["type"] == "lifespan.shutdown":
            return


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return await lifespan(receive, send)
    await send(HELLO_START)
    await send(HELLO_BODY)


BIG = b"x" * 65536


async def big(scope, receive, send):
    if scope["type"] != "http":
        return await lifespan(receive, send)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"65536")]})
    await send({"type": "http.response.body", "body": BIG})


async def echo(scope, receive, send):
    if scope["type"] != "http":
        return await lifespan(receive, send)
    parts = []
    while True:
        m = await receive()
        if m["type"] != "http.request":
            return
        parts.append(m.get("body", b""))
        if not m.get("more_body"):
            break
    body = b"".join(parts)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


CHUNK = b"y" * 1024


async def stream(scope, receive, send):
    if scope["type"] != "http":
        return await lifespan(receive, send)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    for _ in range(100):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def ws_echo(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    elif scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    else:
        await lifespan(receive, send)


application = hello
