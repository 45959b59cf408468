"""Apps returning wsgi.file_wrapper objects, for test_file_wrapper.

?path=P              the file to send
&kind=file|counting|bytesio|pipe
                     open(P, "rb"), a BufferedReader subclass counting close(), BytesIO of P,
                     or a pipe holding the first pipe_bytes bytes of P
&name=N              key for the counters and for keeping the file object alive
&seek=S              position the file at S before wrapping
&cl=L                send Content-Length: L
&blksize=B           pass B as the wrapper's block size
"""
import io
import os
import threading
from urllib.parse import parse_qs

_lock = threading.Lock()
_closes = {}
# Keeping the file objects alive means only an explicit close() closes them, never the
# garbage collector: the test then sees whether the wrapper really called close().
_files = {}


def _bump(name):
    with _lock:
        _closes[name] = _closes.get(name, 0) + 1


class CountingReader(io.BufferedReader):
    def __init__(self, raw, name):
        super().__init__(raw)
        self._name = name

    def close(self):
        _bump(self._name)
        super().close()


class CountingBytesIO(io.BytesIO):
    def __init__(self, data, name):
        super().__init__(data)
        self._name = name

    def close(self):
        _bump(self._name)
        super().close()


def serve(environ, start_response):
    q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    name = q.get("name", "")
    kind = q.get("kind", "file")
    if kind == "file":
        f = open(q["path"], "rb")
    elif kind == "pipe":
        # A file object with a real descriptor that is not a regular file: never sendfile.
        with open(q["path"], "rb") as src:
            data = src.read(int(q["pipe_bytes"]))
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        f = os.fdopen(r, "rb")
    elif kind == "counting":
        f = CountingReader(io.FileIO(q["path"], "rb"), name)
    else:
        with open(q["path"], "rb") as src:
            f = CountingBytesIO(src.read(), name)
    if name:
        with _lock:
            _files[name] = f
    if "seek" in q:
        f.seek(int(q["seek"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    wrapper = environ["wsgi.file_wrapper"]
    if "blksize" in q:
        return wrapper(f, int(q["blksize"]))
    return wrapper(f)


def state(environ, start_response):
    """'<close() calls> <closed>' for the file kept under QUERY_STRING."""
    name = environ["QUERY_STRING"]
    with _lock:
        f = _files.get(name)
        text = "%d %s" % (_closes.get(name, 0), f.closed if f is not None else "missing")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]


def python_iteration(environ, start_response):
    """Middleware may iterate the wrapper itself: it must be a plain iterable of bytes."""
    wrapper = environ["wsgi.file_wrapper"](io.BytesIO(b"0123456789" * 10), 7)
    chunks = list(wrapper)
    if hasattr(wrapper, "close"):
        wrapper.close()
    ok = all(type(c) is bytes and 0 < len(c) <= 7 for c in chunks)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"".join(chunks) if ok else b"bad chunks: " + repr(chunks).encode()]
