"""Hello-world ASGI app for the in-process benchmark (bench/bench_asgi.c)."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"14")]})
    await send({"type": "http.response.body", "body": b"Hello, World!\n"})
