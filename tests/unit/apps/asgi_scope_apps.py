"""ASGI apps that show the http scope to the test, for test_asgi_scope, and callables of every
shape for interface detection."""
import functools


def canon(v):
    """repr() with dict keys sorted, so the text does not depend on insertion order. Containers
    keep their exact type visible: a list prints [..], a tuple (..), a dict subclass its name."""
    if type(v) is dict:
        items = sorted(v.items(), key=lambda kv: repr(kv[0]))
        return "{" + ", ".join(canon(k) + ": " + canon(x) for k, x in items) + "}"
    if type(v) is list:
        return "[" + ", ".join(canon(x) for x in v) + "]"
    if type(v) is tuple:
        return "(" + ", ".join(canon(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, (dict, list, tuple)):
        return type(v).__name__ + "!" + repr(v)
    return repr(v)


async def drain(receive):
    while True:
        event = await receive()
        if event["type"] != "http.request" or not event.get("more_body", False):
            return


async def respond(send, body, status=200):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def dump(scope, receive, send):
    """One line per scope key: KEY <tab> TYPE <tab> canon(VALUE), UTF-8."""
    await drain(receive)
    lines = ["%s\t%s\t%s" % (k, type(v).__name__, canon(v)) for k, v in sorted(scope.items())]
    lines.append("@scope-type\t%s\t" % type(scope).__name__)
    await respond(send, "\n".join(lines).encode("utf-8"))


async def mutate(scope, receive, send):
    """Shows state/asgi/extensions as received, then mutates them: the next request must not
    see the changes (each scope gets its own copies)."""
    await drain(receive)
    body = "state=%s asgi=%s" % (canon(scope["state"]), canon(scope["asgi"]))
    scope["state"]["added_by_request"] = True
    scope["asgi"]["version"] = "mutated"
    scope["extensions"]["mutated.extension"] = {}
    scope["headers"].append((b"x-mutated", b"1"))
    await respond(send, body.encode())


# ---- interface detection ---------------------------------------------------------------------

async def async_function(scope, receive, send):
    await drain(receive)
    await respond(send, b"async function")


class Asgi3:
    """An ASGI 3 app as a class: its instances are the apps."""

    def __init__(self, name="instance"):
        self.name = name

    async def __call__(self, scope, receive, send):
        await drain(receive)
        await respond(send, ("class instance " + self.name).encode())

    async def method(self, scope, receive, send):
        await drain(receive)
        await respond(send, ("bound method " + self.name).encode())


asgi3_instance = Asgi3()
bound_method = Asgi3("bm").method


async def _with_prefix(prefix, scope, receive, send):
    await drain(receive)
    await respond(send, (prefix + " partial").encode())


asgi_partial = functools.partial(_with_prefix, "functools")


def make_asgi3(name):
    """A factory returning an ASGI 3 instance."""
    return Asgi3(name)


def wsgi_function(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi function"]


class WsgiClass:
    """A WSGI app as a class: instantiated per request with (environ, start_response)."""

    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        yield b"wsgi class"


class SyncCallable:
    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"sync instance"]


sync_instance = SyncCallable()
