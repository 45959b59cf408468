"""A minimal ASGI app: libwsgi-epoll must refuse it clearly until ASGI support lands."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})
