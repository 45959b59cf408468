"""A WSGI app that misbehaves in one way per route (test_misbehaving.py).

Each route is one fault: raising at every point of a response, breaking the start_response rules,
yielding what is not bytes, invalid statuses and oversized headers, leaving the process
(sys.exit, os._exit, a segfault in C code). Every route name says what it does; /hello answers
normally, so a test can check the worker still serves after the fault. What the tests inspect
afterwards (close() calls) is read back through /state, never guessed from timing.
"""

import ctypes
import os
import sys
import threading
from urllib.parse import parse_qs

_lock = threading.Lock()
_closes = {}  # token -> close() calls


def _q(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _count_close(token):
    with _lock:
        _closes[token] = _closes.get(token, 0) + 1


class Body:
    """An iterable with hooks: chunks, then optionally a failure in __iter__, in next() or in
    close()."""

    def __init__(self, token, chunks, fail_iter=False, fail_after=None, fail_close=False,
                 endless=False):
        self.token, self.chunks = token, chunks
        self.fail_iter, self.fail_after, self.fail_close = fail_iter, fail_after, fail_close
        self.endless = endless

    def __iter__(self):
        if self.fail_iter:
            raise RuntimeError("misbehave: __iter__ raised")
        return self.gen()

    def gen(self):
        for i, c in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("misbehave: the iterable raised after %d chunks" % i)
            yield c
        while self.endless:
            yield b"x" * 16384

    def close(self):
        _count_close(self.token)
        if self.fail_close:
            raise RuntimeError("misbehave: close() raised")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _q(environ)
    token = q.get("token", "")
    ok = ("200 OK", [("Content-Type", "text/plain")])
    okcl = ("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])

    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello"]
    if path == "/state":
        with _lock:
            body = str(_closes.get(token, 0)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/raise-at-call":
        raise RuntimeError("misbehave: raised at call")
    if path == "/raise-after-start-response":
        start_response(*ok)
        raise RuntimeError("misbehave: raised after start_response")
    if path == "/raise-in-iter":
        start_response(*ok)
        return Body(token, [b"never"], fail_iter=True)
    if path == "/raise-in-first-next":
        start_response(*ok)
        return Body(token, [b"never"], fail_after=0)
    if path == "/raise-after-first-chunk":
        start_response(*ok)
        return Body(token, [b"first", b"never"], fail_after=1)
    if path == "/raise-in-close":
        start_response(*okcl)
        return Body(token, [b"0123456789"], fail_close=True)
    if path == "/raise-in-close-chunked":
        start_response(*ok)
        return Body(token, [b"0123456789"], fail_close=True)
    if path == "/start-response-twice":
        start_response(*ok)
        start_response(*ok)  # no exc_info: must raise
        return [b"never"]
    if path == "/start-response-twice-caught":
        start_response(*ok)
        try:
            start_response(*ok)
        except Exception:
            pass  # the app swallows the error: its first start_response stands
        return [b"swallowed"]
    if path == "/no-start-response":
        return [b"body without start_response"]
    if path == "/str-chunk":
        start_response(*ok)
        return ["a str, not bytes"]
    if path == "/str-chunk-later":
        start_response(*ok)
        return [b"first", "a str, not bytes"]
    if path == "/none-chunk":
        start_response(*ok)
        return [None]
    if path == "/int-result":
        start_response(*ok)
        return 42
    if path == "/huge-header":
        start_response("200 OK", [("X-Huge", "x" * (int(q.get("size", "1048576"))))])
        return [b"huge"]
    if path == "/many-headers":
        start_response("200 OK", [("X-H%d" % i, "v") for i in range(int(q.get("n", "10000")))])
        return [b"many"]
    if path == "/invalid-status":
        start_response(q.get("status", "abc"), [])
        return [b"never"]
    if path == "/status":  # any status, with the Content-Length the app claims
        start_response(q["status"], [("Content-Length", q.get("cl", "0"))])
        return []
    if path == "/header-with-newline":
        start_response("200 OK", [("X-Split", "a\r\nSet-Cookie: evil=1")])
        return [b"never"]
    if path == "/non-str-header":
        start_response("200 OK", [(b"X-Bytes", b"v")])
        return [b"never"]
    if path == "/read-body":
        body = environ["wsgi.input"].read()
        out = str(len(body)).encode()
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]
    if path == "/endless":
        start_response(*ok)
        return Body(token, [], endless=True)
    if path == "/sys-exit":
        sys.exit(3)
    if path == "/sys-exit-in-iter":
        start_response(*ok)

        def gen():
            yield b"first"
            sys.exit(4)
        return gen()
    if path == "/keyboard-interrupt":
        raise KeyboardInterrupt
    if path == "/os-exit":
        os._exit(7)
    if path == "/segfault":
        ctypes.string_at(0)
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
