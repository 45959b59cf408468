"""ASGI apps, for interface detection."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


class _Asgi3:
    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


instance = _Asgi3()


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi in la_asgi"]
