"""Pyramid app for the libwsgi-epoll vs gunicorn comparison."""

import hashlib

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.response import Response


def json_view(request):
    return {"framework": "pyramid", "items": [1, 2, 3], "text": "h\u00e9llo"}


def query(request):
    return {"args": sorted(request.GET.items()), "path": request.path}


def form(request):
    return {"form": sorted(request.POST.items()), "ctype": request.content_type}


def upload(request):
    f = request.POST["file"]
    data = f.file.read()
    return {"name": f.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "field": request.POST.get("field")}


def raw(request):
    data = request.body
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def stream(request):
    r = Response(content_type="text/plain")
    r.app_iter = (("line %d\n" % i).encode() for i in range(50))
    return r


def error(request):
    raise RuntimeError("pyramid view failed")


def failed(exc, request):
    # An exception view: the framework answers errors itself (as the other frameworks do).
    return Response("pyramid caught: %s" % exc, status=500, content_type="text/plain")


def abort(request):
    request.response.status = 418
    return {"error": "teapot"}


def redirect(request):
    return HTTPFound(location="/json")


def cookie(request):
    r = Response("cookies set", content_type="text/plain")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r


with Configurator() as config:
    for name, view, method, renderer in [
        ("json", json_view, "GET", "json"), ("query", query, "GET", "json"),
        ("form", form, "POST", "json"), ("upload", upload, "POST", "json"),
        ("raw", raw, "POST", "json"), ("stream", stream, "GET", None),
        ("error", error, "GET", None), ("abort", abort, "GET", "json"),
        ("redirect", redirect, "GET", None), ("cookie", cookie, "GET", None),
    ]:
        config.add_route(name, "/" + name)
        config.add_view(view, route_name=name, request_method=method, renderer=renderer)
    config.add_view(failed, context=RuntimeError)
    app = config.make_wsgi_app()
