"""Apps for test_errors."""

TEXT = [("Content-Type", "text/plain")]


def ok(environ, start_response):
    start_response("200 OK", TEXT)
    return [b"a", b"b"]


def raises(environ, start_response):
    raise ZeroDivisionError("err_apps failure marker")


def noisy(environ, start_response):
    """Produces WARNING-level log lines (wsgi.errors) that a level-ERROR runtime must drop."""
    environ["wsgi.errors"].write("err_apps warning line\n")
    environ["wsgi.errors"].flush()
    start_response("200 OK", TEXT)
    return [b"noisy"]
