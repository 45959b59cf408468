"""Apps for test_leaks: every response path, plus a probe that reports allocated blocks."""
import gc
import io
import sys

DATA = __file__


def probe(environ, start_response):
    gc.collect()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(sys.getallocatedblocks()).encode()]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def generator(environ, start_response):
    start_response("200 OK", [("X-Gen", "1")])
    yield b""
    yield b"a" * 100
    yield b"b"


def writer(environ, start_response):
    write = start_response("200 OK", [])
    write(b"legacy")
    return iter([b"rest"])


def reader(environ, start_response):
    body = environ["wsgi.input"]
    data = body.readline() + body.read(3) + b"".join(body.readlines())
    start_response("200 OK", [("Content-Length", str(len(data)))])
    return [data]


def raises(environ, start_response):
    start_response("200 OK", [])
    raise RuntimeError("expected failure")


def raises_midway(environ, start_response):
    start_response("200 OK", [])
    yield b"first"
    raise RuntimeError("expected failure mid-iteration")


def bad_header(environ, start_response):
    start_response("200 OK", [("Bad Name", "x")])
    return [b""]


def excinfo(environ, start_response):
    start_response("200 OK", [])
    try:
        raise ValueError("x")
    except ValueError:
        start_response("500 Oops", [("X", "y")], sys.exc_info())
    return [b"err"]


def file_wrapper(environ, start_response):
    start_response("200 OK", [])
    return environ["wsgi.file_wrapper"](open(DATA, "rb"), 4096)


def bytesio_wrapper(environ, start_response):
    start_response("200 OK", [])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 10000), 1000)


def errors_stream(environ, start_response):
    environ["wsgi.errors"].write("line one\npartial")
    environ["wsgi.errors"].flush()
    start_response("200 OK", [])
    return [b"ok"]
