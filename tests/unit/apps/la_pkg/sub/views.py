"""A module inside a package, for dotted specs."""
import types


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"la_pkg.sub.views.application"]


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"la_pkg.sub.views.obj.app"]


obj = types.SimpleNamespace(app=_app)
