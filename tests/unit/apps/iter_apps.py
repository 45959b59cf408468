"""Response iterables of every kind, with counters the test reads back, for test_wsgi_iter.

Counters live in this module; the app "count" returns one of them, so a test can check after a
request how often close() ran or how far an iterable was pulled.
"""
import threading
from urllib.parse import parse_qs

TEXT = [("Content-Type", "text/plain")]
_counts = {}
_lock = threading.Lock()


def _bump(key):
    with _lock:
        _counts[key] = _counts.get(key, 0) + 1


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"], keep_blank_values=True).items()}


def _chunks(q):
    """"a,,b" -> [b"a", b"", b"b"]; absent -> []."""
    if "chunks" not in q:
        return []
    return [c.encode() for c in q["chunks"].split(",")]


def count(environ, start_response):
    with _lock:
        value = _counts.get(environ["QUERY_STRING"], 0)
    start_response("200 OK", TEXT)
    return [str(value).encode()]


class Closing:
    """An iterator with close(); counts name.next (chunks handed out) and name.close."""

    def __init__(self, name, chunks, fail_at=-1, close_raises=False):
        self.name, self.chunks, self.fail_at, self.close_raises = name, chunks, fail_at, close_raises
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i == self.fail_at:
            raise RuntimeError("iter_apps failure in __next__")
        if self.i >= len(self.chunks):
            raise StopIteration
        chunk = self.chunks[self.i]
        self.i += 1
        _bump(self.name + ".next")
        return chunk

    def close(self):
        _bump(self.name + ".close")
        if self.close_raises:
            raise RuntimeError("iter_apps failure in close")


def closing(environ, start_response):
    """?name=N&chunks=a,b&fail_at=I&close_raises=1&cl=L"""
    q = _query(environ)
    headers = list(TEXT)
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    return Closing(q["name"], _chunks(q), int(q.get("fail_at", "-1")), "close_raises" in q)


def as_list(environ, start_response):
    start_response("200 OK", TEXT)
    return _chunks(_query(environ))


def as_tuple(environ, start_response):
    start_response("200 OK", TEXT)
    return tuple(_chunks(_query(environ)))


def as_generator(environ, start_response):
    """?name=N&n=COUNT&size=BYTES: fresh bytes objects, chunk i filled with chr(65 + i % 26)."""
    q = _query(environ)
    name, n, size = q.get("name", "gen"), int(q.get("n", "3")), int(q.get("size", "4"))
    start_response("200 OK", TEXT)
    try:
        for i in range(n):
            _bump(name + ".next")
            yield bytes([65 + i % 26]) * size
    finally:
        _bump(name + ".finally")


def writer_host_fail(environ, start_response):
    """Counts which exception write() raised once the host's on_body failed."""
    name = _query(environ)["name"]
    write = start_response("200 OK", TEXT)
    try:
        write(b"first")
    except Exception as e:
        _bump("%s.%s" % (name, "OSError" if isinstance(e, OSError) else type(e).__name__))
        raise
    _bump(name + ".no_exception")
    return Closing(name, [b"more"])


def bodiless(environ, start_response):
    """Declares Content-Length 100 and sends no body: right for HEAD, 1xx, 204 and 304 only."""
    from urllib.parse import parse_qs

    status = parse_qs(environ["QUERY_STRING"]).get("status", ["200 OK"])[0]
    start_response(status, [("Content-Length", "100")])
    return [b""]


def writer_host_fail_swallow(environ, start_response):
    """Ignores write()'s OSError and returns an iterable anyway: it must still be closed once."""
    name = _query(environ)["name"]
    write = start_response("200 OK", TEXT)
    try:
        write(b"first")
    except OSError:
        _bump(name + ".OSError")
    return Closing(name, [b"more"])


def gen_writes(environ, start_response):
    """A generator that calls write() three times within one iteration step, then yields."""
    write = start_response("200 OK", TEXT)

    def body():
        for ch in b"abc":
            write(bytes([ch]) * 300000)
        yield b"d" * 10

    return body()


def seq(environ, start_response):
    """?kind=list|tuple&chunks=a,,b&cl=L&str_at=I: an exact list or tuple of the chunks, with an
    optional Content-Length and a str item at index I (not bytes: an app error)."""
    q = _query(environ)
    headers = list(TEXT)
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response(q.get("status", "200 OK"), headers)
    items = _chunks(q)
    if "str_at" in q:
        items[int(q["str_at"])] = "not bytes"
    return tuple(items) if q.get("kind") == "tuple" else items


class _Tracked:
    """Counts its own deallocation under the name given."""

    def __init__(self, name):
        self.name = name

    def __del__(self):
        _bump(self.name + ".del")


def tracked(environ, start_response):
    """?name=N: keeps an object in the environ (and one in a chunk's reach) whose deallocation
    is counted, so a test sees when the response's references are released."""
    environ["x.tracked"] = _Tracked(_query(environ)["name"])
    start_response("200 OK", TEXT)
    return [b"tracked"]
