"""Targets for app specs, for test_app_load."""
import types


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"la_simple.application"]


def other(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"la_simple.other"]


def _nested(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"la_simple.holder.inner.app"]


holder = types.SimpleNamespace(inner=types.SimpleNamespace(app=_nested))

not_callable = 42


def factory(*args, **kwargs):
    """The body tells which arguments the spec passed."""
    body = repr((args, kwargs)).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    return app


def failing_factory():
    raise ValueError("la_simple factory failed")


def non_callable_factory():
    return 42
