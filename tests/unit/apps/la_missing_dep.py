"""A module that exists but imports one that does not: an import error, not a missing module."""
import libwsgi_test_no_such_dependency  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [])
    return [b""]
