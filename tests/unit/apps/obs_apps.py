"""Apps for test_observer.c: one per outcome the request observer reports."""


def wsgi_list(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def wsgi_gen(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("201 Created", [("Content-Type", "text/plain")])

    def gen():
        yield b"ab"
        yield b""
        yield body
        yield b"cde"

    return gen()


def wsgi_raise(environ, start_response):
    raise RuntimeError("boom before the head")


def wsgi_raise_late(environ, start_response):
    start_response("200 OK", [])

    def gen():
        yield b"part"
        raise RuntimeError("boom after the head")

    return gen()


def wsgi_str(environ, start_response):
    start_response("200 OK", [])
    return ["not bytes"]


def wsgi_no_start(environ, start_response):
    return [b""]


async def asgi_ok(scope, receive, send):
    body = b""
    while True:
        ev = await receive()
        body += ev.get("body", b"")
        if not ev.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"got " + body})


async def asgi_raise(scope, receive, send):
    raise ValueError("asgi boom")


async def asgi_nothing(scope, receive, send):
    return None


async def asgi_wait(scope, receive, send):
    # Waits for the body the host never sends: the host lets go first.
    await receive()
    await receive()


async def ws_echo(scope, receive, send):
    ev = await receive()
    assert ev["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        ev = await receive()
        if ev["type"] == "websocket.disconnect":
            return
        if ev.get("text") is not None:
            await send({"type": "websocket.send", "text": ev["text"]})
        else:
            await send({"type": "websocket.send", "bytes": ev["bytes"]})


async def ws_deny(scope, receive, send):
    await receive()
    await send({"type": "websocket.close"})


async def ws_accept_return(scope, receive, send):
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "bye"})
