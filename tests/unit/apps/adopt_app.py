"""For test_adopt: reports a marker the host set before libwsgi existed."""
import sys


def app(environ, start_response):
    start_response("200 OK", [])
    return [getattr(sys, "host_marker", "missing").encode()]
