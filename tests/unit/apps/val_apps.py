"""Apps wrapped in wsgiref.validate.validator, for test_validator.

The validator raises AssertionError for any contract violation by the server or the app, which
the test sees as a response error. Its warnings are turned into errors too. A few checks run in
__del__ (e.g. "iterator garbage collected without being closed"), where exceptions are only
"unraisable": they are collected here and the test asks for them with the app "problems".
"""
import io
import sys
import warnings
from urllib.parse import parse_qs
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

_problems = []


def _unraisable(info):
    _problems.append("%s: %s (%r)" % (info.exc_type.__name__, info.exc_value, info.object))


sys.unraisablehook = _unraisable

TEXT = [("Content-Type", "text/plain")]


def problems(environ, start_response):
    """Not validated: the unraisable errors collected so far, one per line."""
    start_response("200 OK", TEXT)
    return ["\n".join(_problems).encode("utf-8", "backslashreplace")]


def clear_problems(environ, start_response):
    _problems.clear()
    start_response("200 OK", TEXT)
    return [b"cleared"]


def _hello(environ, start_response):
    body = ("hello %s %s" % (environ["PATH_INFO"], environ["QUERY_STRING"])).encode("latin-1")
    start_response("200 OK", TEXT + [("Content-Length", str(len(body)))])
    return [body]


def _post_echo(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE", "text/plain"))])
    return [b"got: ", body]


def _chunked_echo(environ, start_response):
    inp = environ["wsgi.input"]
    parts = []
    while True:
        data = inp.read(1000)
        if not data:
            break
        parts.append(data)
    start_response("200 OK", TEXT)
    return [b"".join(parts)]


def _lines(environ, start_response):
    inp = environ["wsgi.input"]
    first = inp.readline()
    second = inp.readline(4)
    rest = inp.readlines()
    start_response("200 OK", TEXT)
    return [repr([first, second, rest]).encode()]


def _iterate_input(environ, start_response):
    lines = list(environ["wsgi.input"])
    start_response("200 OK", TEXT)
    return [b"%d lines" % len(lines)]


def _writer(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"written, ")
    return [b"then returned"]


def _file(environ, start_response):
    path = parse_qs(environ["QUERY_STRING"])["path"][0]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)


def _generator(environ, start_response):
    start_response("200 OK", TEXT)
    for i in range(5):
        yield b"chunk%d;" % i


def _not_found(environ, start_response):
    start_response("404 Not Found", TEXT + [("X-Extra", "1")])
    return [b"nothing here"]


def _errors(environ, start_response):
    err = environ["wsgi.errors"]
    err.write("validator errors line\n")
    err.writelines(["validator more\n"])
    err.flush()
    start_response("200 OK", TEXT)
    return [b"logged"]


def _exc_info(environ, start_response):
    start_response("200 OK", TEXT)
    try:
        raise ValueError("handled by the app")
    except ValueError:
        start_response("500 Internal Server Error", TEXT, sys.exc_info())
    return [b"app error page"]


def _reads_without_size(environ, start_response):
    environ["wsgi.input"].read()  # the validator insists on read(size)
    start_response("200 OK", TEXT)
    return [b"must not be sent"]


def drop_unclosed(environ, start_response):
    """Negative control, not validated itself: drops a validated iterable without closing it,
    which the validator reports from __del__ (where only the unraisable hook sees it)."""
    it = validator(_hello)(environ, lambda status, headers, exc_info=None: (lambda data: None))
    saved, sys.stderr = sys.stderr, io.StringIO()  # the validator also prints to stderr
    try:
        del it
    finally:
        sys.stderr = saved
    start_response("200 OK", TEXT)
    return [b"dropped"]


hello = validator(_hello)
reads_without_size = validator(_reads_without_size)
post_echo = validator(_post_echo)
chunked_echo = validator(_chunked_echo)
lines = validator(_lines)
iterate_input = validator(_iterate_input)
writer = validator(_writer)
file = validator(_file)
generator = validator(_generator)
not_found = validator(_not_found)
errors = validator(_errors)
exc_info = validator(_exc_info)
