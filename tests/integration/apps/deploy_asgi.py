"""ASGI app for test_deploy.py: pid, a loop-blocking request, an endless stream, a WebSocket."""
import asyncio
import os
import time
from urllib.parse import parse_qs

from asgi_lifespan import lifespan


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text") or ""})
    q = {k.decode(): v[0].decode() for k, v in parse_qs(scope["query_string"]).items()}
    if scope["path"] == "/block":
        open(q["started"], "w").close()
        block_the_loop()
    if scope["path"] == "/await":
        try:
            await asyncio.Event().wait()  # only a cancellation ends it
        except asyncio.CancelledError:
            open(q["cancelled"], "w").close()
            raise
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while True:  # endless: only shutdown ends it
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.05)
    body = b"%d" % os.getpid()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def block_the_loop():
    time.sleep(3600)
