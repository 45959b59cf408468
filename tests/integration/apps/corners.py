"""A WSGI app with one route per PEP 3333 / HTTP corner the integration tests check.

State that tests inspect afterwards (close() calls, chunks produced, calls made) is kept in this
process and read back through /state routes, so a test never depends on timing: it asks.
"""

import atexit
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

_lock = threading.Lock()
_closes = {}     # token -> number of close() calls
_produced = {}   # token -> chunks produced by a streaming generator
_calls = [0]     # app calls (bad requests must not reach the app)
_barriers = {}
_files = {}


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK", extra=()):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))] + list(extra))
    return [body]


class Closing:
    """An iterable whose close() is counted per token."""

    def __init__(self, token, chunks):
        self.token = token
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        with _lock:
            _closes[self.token] = _closes.get(self.token, 0) + 1


class Forever:
    """An endless stream of chunks (counted), closed when the client goes away."""

    def __init__(self, token, size, mark=None):
        self.token = token
        self.chunk = b"x" * size
        self.mark = mark  # a file close() creates: evidence that outlives the process

    def __iter__(self):
        while True:
            with _lock:
                _produced[self.token] = _produced.get(self.token, 0) + 1
            yield self.chunk

    def close(self):
        with _lock:
            _closes[self.token] = _closes.get(self.token, 0) + 1
        if self.mark:
            open(self.mark, "w").close()


def numbered_chunk(i, size):
    """Chunk i of /numbered: its index repeated, cut to size bytes."""
    return (b"%d." % i * (size // 2 + 1))[:size]


def environ_view(environ):
    out = {}
    for k, v in environ.items():
        if isinstance(v, str):
            out[k] = v
        elif k in ("wsgi.version",):
            out[k] = list(v)
        elif isinstance(v, bool):
            out[k] = v
    out["types"] = {k: type(v).__name__ for k, v in environ.items()}
    for k in ("wsgi.input", "wsgi.errors"):
        obj = environ[k]
        out["has." + k] = [m for m in ("read", "readline", "readlines", "__iter__", "write",
                                        "writelines", "flush") if hasattr(obj, m)]
    out["file_wrapper_callable"] = callable(environ.get("wsgi.file_wrapper"))
    return out


def _remove_files():
    for path in _files.values():
        try:
            os.unlink(path)
        except OSError:
            pass


atexit.register(_remove_files)


def big_file(size):
    path = _files.get(size)
    if path is None:
        # In the test session's directory (removed by conftest.py even if we are killed).
        fd, path = tempfile.mkstemp(prefix="libwsgi-big-", dir=os.environ.get("LIBWSGI_TEST_TMP"))
        block = bytes(range(256)) * 4096  # 1 MiB, not all one byte
        with os.fdopen(fd, "wb") as f:
            left = size
            while left:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))
        _files[size] = path
    return path


def app(environ, start_response):
    with _lock:
        _calls[0] += 1
    path = environ["PATH_INFO"]
    q = _q(environ)
    inp = environ["wsgi.input"]

    if path == "/hello":
        body = b"Hello, World!\n"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/fork-hold":
        # A child process that holds copies of every fd of the server (its sockets included)
        # until q["release"] exists: what an app's fork() does until the child execs or exits.
        pid = os.fork()
        if pid == 0:
            deadline = time.monotonic() + 30
            while not os.path.exists(q["release"]) and time.monotonic() < deadline:
                time.sleep(0.01)
            os._exit(0)
        body = str(pid).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path.startswith("/environ"):
        return _json(start_response, environ_view(environ))

    if path == "/echo":
        # The whole body with read(), answered with a Content-Length.
        data = inp.read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(data)))])
        return [data]

    if path == "/echo-sha":
        h = hashlib.sha256()
        n = 0
        while True:
            block = inp.read(65536)
            if not block:
                break
            h.update(block)
            n += len(block)
        return _json(start_response, {"len": n, "sha256": h.hexdigest()})

    if path == "/input-methods":
        mode = q.get("mode")
        if mode == "read-n":
            parts = []
            while True:
                b = inp.read(int(q.get("n", "3")))
                if not b:
                    break
                parts.append(b.decode("latin-1"))
            res = parts
        elif mode == "readline":
            res = []
            while True:
                line = inp.readline()
                if not line:
                    break
                res.append(line.decode("latin-1"))
        elif mode == "readline-size":
            res = [inp.readline(int(q.get("n", "4"))).decode("latin-1") for _ in range(3)]
        elif mode == "readlines":
            res = [x.decode("latin-1") for x in inp.readlines()]
        elif mode == "iter":
            res = [x.decode("latin-1") for x in inp]
        elif mode == "read-after-eof":
            first = inp.read()
            res = [first.decode("latin-1"), inp.read().decode("latin-1"), inp.read(5).decode("latin-1"),
                   inp.readline().decode("latin-1")]
        else:
            res = None
        return _json(start_response, {"mode": mode, "result": res})

    if path == "/stream-echo-first":
        # Echo the first line of the body before reading the rest: only works if chunked bodies
        # are streamed into wsgi.input as they arrive.
        first = inp.readline()
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first:" + first
            rest = inp.read()
            yield b"rest:" + rest
        return gen()

    if path == "/respond-then-read":
        # The head and a first chunk go out before the body is read (from the generator).
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first,"
            yield b"read:%d" % len(inp.read())
        return gen()

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"")
        write(b"two,")
        return [b"three"]

    if path == "/write-only":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    if path == "/gen-write":
        # write() from inside a generator: several chunks within one wsgi_iter_next(), large
        # enough that the server cannot have sent the first before the third arrives.
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def body():
            for ch in b"abc":
                write(bytes([ch]) * 300000)
            yield b"d" * 10

        return body()

    if path == "/exc-info":
        # An error before the body: replace the headers with exc_info (allowed before output).
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain"),
                                                         ("X-Handled", "yes")], sys.exc_info())
        return [b"handled"]

    if path == "/exc-info-after-output":
        # exc_info after the head was sent: start_response must re-raise, the response is cut.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"partial"
            try:
                raise ValueError("late")
            except ValueError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            yield b"never"
        return gen()

    if path == "/exc-info-not-exc-info":
        # exc_info after the head was sent that is no sys.exc_info() tuple ((None, None, None),
        # what sys.exc_info() gives outside an except block): start_response must still raise.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial;")
        try:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())
        except Exception as e:
            return [("raised %s" % type(e).__name__).encode()]
        return [b"not raised"]

    if path == "/raise":
        raise RuntimeError("app failure before start_response")

    if path == "/raise-in-iter":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"first"
            raise RuntimeError("failure in the middle")
        return gen()

    if path == "/close":
        token = q["token"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing(token, [b"a", b"b", b"c"])

    if path == "/close-cl":
        token = q["token"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return Closing(token, [b"a", b"b", b"c"])

    if path == "/hog-fds":
        # Use up the process's file descriptors (under a soft limit lowered to 256) until the file
        # q["release"] appears; then give them back. Meanwhile the server cannot accept.
        import resource
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, limits[0]), limits[1]))
        fds = []
        try:
            while True:
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass

        def release(flag=q["release"], ready=q["ready"], start=len(fds)):
            # Also takes the descriptor of this request's connection once it is closed, and says
            # so by making the directory q["ready"] (mkdir needs no descriptor).
            while not os.path.exists(flag):
                try:
                    fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
                    if len(fds) == start + 1:
                        os.mkdir(ready)
                except OSError:
                    time.sleep(0.02)
            for fd in fds:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        threading.Thread(target=release, daemon=True).start()
        return _json(start_response, {"hogged": len(fds)})

    if path == "/forever":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Forever(q["token"], int(q.get("size", "65536")), q.get("mark"))

    if path == "/state":
        token = q.get("token", "")
        with _lock:
            return _json(start_response, {"closes": _closes.get(token, 0),
                                          "produced": _produced.get(token, 0),
                                          "calls": _calls[0], "pid": os.getpid()})

    if path == "/stream":
        n = int(q.get("n", "5"))
        size = int(q.get("size", "10"))

        def gen():
            for i in range(n):
                yield (b"%d" % (i % 10)) * size
        code = q.get("code", "200")
        start_response(code + (" OK" if code == "200" else " Whatever"),
                       [("Content-Type", "text/plain")])
        return gen()

    if path == "/numbered":
        # q["n"] chunks that carry their index, of the sizes in q["sizes"] (cycled), from a
        # generator: the server batches the small ones, and they must arrive complete and in
        # order. cl=1: with a Content-Length; raise=1: the generator fails after the last one;
        # pause=k: 2 ms of sleep after every k-th chunk (the server writes what waits meanwhile);
        # write=1: every third chunk goes through the legacy write() instead.
        n = int(q.get("n", "1000"))
        pause = int(q.get("pause", "0"))
        sizes = [int(x) for x in q.get("sizes", "100").split(",")]
        chunks = [numbered_chunk(i, sizes[i % len(sizes)]) for i in range(n)]
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl") == "1":
            headers.append(("Content-Length", str(sum(map(len, chunks)))))

        def gen():
            for i, chunk in enumerate(chunks):
                if q.get("write") == "1" and i % 3 == 1:
                    write(chunk)
                else:
                    yield chunk
                if pause and i % pause == pause - 1:
                    time.sleep(0.002)
            if q.get("raise") == "1":
                raise RuntimeError("failure after the numbered chunks")
        write = start_response("200 OK", headers)
        return gen()

    if path == "/then-wait":
        # q["n"] small chunks at once, then nothing until the test creates q["release"] (once it
        # has read them: PEP 3333 forbids holding a chunk back until the app yields the next).
        n = int(q.get("n", "3"))

        def gen():
            for i in range(n):
                yield b"chunk%d;" % i
            deadline = time.monotonic() + 60
            while not os.path.exists(q["release"]) and time.monotonic() < deadline:
                time.sleep(0.01)
            yield b"end"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()

    if path == "/stream-big":
        # A large response made of many chunks without Content-Length (chunked framing).
        total = int(q["total"])
        chunk = b"y" * int(q.get("chunk", "262144"))

        def gen():
            left = total
            while left > 0:
                n = min(left, len(chunk))
                left -= n
                yield chunk[:n]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return gen()

    if path == "/declared-short":
        # Declares 5 bytes, yields 10: the client must get exactly 5.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"01234", b"56789"]

    if path == "/empty-chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"", b"a", b"", b"b", b""]

    if path == "/file":
        size = int(q["size"])
        f = open(big_file(size), "rb")
        headers = [("Content-Type", "application/octet-stream")]
        if q.get("cl", "1") == "1":
            headers.append(("Content-Length", str(size)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 65536)

    if path == "/file-sha":
        size = int(q["size"])
        h = hashlib.sha256()
        with open(big_file(size), "rb") as f:
            h.update(f.read())
        return _json(start_response, {"sha256": h.hexdigest()})

    if path == "/status":
        code = q.get("code", "200")
        start_response(code + " " + q.get("reason", "Whatever"), [("Content-Type", "text/plain")])
        return [b"" if code in ("204", "304") else b"status body"]

    if path == "/headers":
        body = b"h"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"),
                                  ("Set-Cookie", "b=2"), ("X-Custom", "v"),
                                  ("Content-Length", "1")])
        return [body]

    if path == "/head-cl":
        # Like Flask, Django, WebOb: HEAD gets the GET's Content-Length and no body.
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"0123456789"]

    if path == "/not-modified-cl":
        start_response("304 Not Modified", [("Content-Length", "10"), ("ETag", '"x"')])
        return []

    if path == "/connection-close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"),
                                  ("Connection", "close")])
        return [b"ok"]

    if path == "/barrier":
        # Passes only when n requests are inside the app at the same time (--threads).
        n = int(q["n"])
        key = q["key"]
        with _lock:
            b = _barriers.setdefault(key, threading.Barrier(n))
        try:
            b.wait(timeout=30)
            res = b"together"
        except threading.BrokenBarrierError:
            res = b"alone"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(res)))])
        return [res]

    if path == "/wait":
        # Blocks until the test creates q["release"]; tells it it has started via q["started"].
        open(q["started"], "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(q["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = b"released"
        if q.get("ident"):  # which thread ran it
            body += b" %d" % threading.get_ident()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/ident":
        body = b"%d" % threading.get_ident()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/sleep":
        # Blocks for q["ms"] milliseconds (long enough for libwsgi-epoll's standby to take the
        # loop over), then answers with q["tag"].
        time.sleep(int(q["ms"]) / 1000.0)
        body = q.get("tag", "slept").encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/errors":
        environ["wsgi.errors"].write("message to wsgi.errors\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def _validated_inner(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    if path == "/v/echo":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        data = inp.read(n)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/v/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b", b"c"])
    if path == "/v/file":
        f = open(big_file(1 << 20), "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(1 << 20))])
        return environ["wsgi.file_wrapper"](f, 8192)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"valid"]


# wsgiref's validator asserts PEP 3333 on both sides: environ/input types from the server, and
# the app's use of start_response and the iterable. A server bug becomes an AssertionError (500).
validated = validator(_validated_inner)
