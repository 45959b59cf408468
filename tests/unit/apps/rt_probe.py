"""Apps that report interpreter-wide state, for test_runtime."""
import os
import sys
import threading


def _text(start_response, text):
    data = text.encode("utf-8")
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Content-Length", str(len(data)))])
    return [data]


def sys_path(environ, start_response):
    return _text(start_response, "\n".join(sys.path))


def cwd(environ, start_response):
    return _text(start_response, os.getcwd())


def flags(environ, start_response):
    f = sys.flags
    return _text(start_response, "isolated=%d ignore_environment=%d no_user_site=%d" %
                 (f.isolated, f.ignore_environment, f.no_user_site))


_local = threading.local()


def tlocal(environ, start_response):
    """Body: the value this Python thread stored before, then the thread id.

    QUERY_STRING, when given, becomes the stored value for the next request on this thread.
    """
    previous = getattr(_local, "value", "<none>")
    if environ["QUERY_STRING"]:
        _local.value = environ["QUERY_STRING"]
    return _text(start_response, "%s|%d" % (previous, threading.get_ident()))


def fail(environ, start_response):
    raise ValueError("rt_probe failure marker")


def errors(environ, start_response):
    environ["wsgi.errors"].write("rt_probe wsgi.errors line\n")
    environ["wsgi.errors"].flush()
    return _text(start_response, "ok")
