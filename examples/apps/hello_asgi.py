"""The hello-world ASGI app used by the benchmarks (bench/wrk_epoll_vs_uvicorn.sh)."""

BODY = b"Hello, World!\n"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan: the servers carry on without it
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


application = app
