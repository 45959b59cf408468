"""A minimal ASGI app without lifespan support: detected by --interface auto (test_asgi_process.py)."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
