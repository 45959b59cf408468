"""Apps for test_review: each one reproduces a suspected libwsgi bug."""
import asyncio
import sys

# ---- WSGI -------------------------------------------------------------------------------------

WDATA = b"w" * 1000  # a unique object whose refcount the test watches


def write_in_gen(environ, start_response):
    """write() from inside the iterable, then a yielded chunk."""
    write = start_response("200 OK", [])

    def gen():
        write(WDATA)
        yield b"tail"

    return gen()


def wdata_refs(environ, start_response):
    start_response("200 OK", [])
    return [str(sys.getrefcount(WDATA)).encode()]


def many_headers(environ, start_response):
    """More headers than lw_headbuf's stack: the head goes through PyMem_Malloc."""
    start_response("200 OK", [("X-H%d" % i, "v") for i in range(40)])
    return [b"ok"]


# ---- ASGI -------------------------------------------------------------------------------------

START = {"type": "http.response.start", "status": 200, "headers": []}


class ClearOnIter:
    """A header pair whose iteration empties the list of headers being parsed."""

    def __init__(self, lst):
        self.lst = lst

    def __iter__(self):
        self.lst.clear()
        return iter([b"x-a", b"1"])


async def mutate_headers(scope, receive, send):
    headers = []
    headers.append(ClearOnIter(headers))
    headers.append([b"x-b", b"2"])
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    except Exception:
        await send(START)
    await send({"type": "http.response.body", "body": b"survived"})


class HeadersClash:
    """Same hash as "headers", and a comparison that raises: dict lookups of "headers" fail."""

    def __hash__(self):
        return hash("headers")

    def __eq__(self, other):
        raise ValueError("clash")


async def headers_lookup_fails(scope, receive, send):
    msg = {"type": "http.response.start", "status": 200, HeadersClash(): 1}
    try:
        await send(msg)
    except ValueError:
        await send(START)
    await send({"type": "http.response.body", "body": b"survived"})


class BadBool:
    def __bool__(self):
        raise ValueError("bad __bool__")


async def bad_trailers_flag(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [],
                "trailers": BadBool()})
    await send({"type": "http.response.body", "body": b"x"})


async def cancel_receive(scope, receive, send):
    """Cancel a pending receive() (what asyncio.wait_for does on timeout), then receive again."""
    fut = receive()
    fut.cancel()
    await asyncio.sleep(0)
    body = b""
    while True:
        ev = await receive()
        body += ev.get("body", b"")
        if not ev.get("more_body"):
            break
    await send(START)
    await send({"type": "http.response.body", "body": body})


async def cancel_send(scope, receive, send):
    """Cancel a send() that the host paused, then send again."""
    await send(START)
    fut = send({"type": "http.response.body", "body": b"a", "more_body": True})
    fut.cancel()
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"b"})


async def lifespan_fail_surrogate(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "bad \udcff"})
        return
    await send(START)
    await send({"type": "http.response.body", "body": b"ok"})
