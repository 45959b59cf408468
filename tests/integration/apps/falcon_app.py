"""Falcon app for the libwsgi-epoll vs gunicorn comparison."""

import hashlib

import falcon


class JsonRes:
    def on_get(self, req, resp):
        resp.media = {"framework": "falcon", "items": [1, 2, 3], "text": "h\u00e9llo"}


class QueryRes:
    def on_get(self, req, resp):
        resp.media = {"args": sorted((k, v) for k, vs in req.params.items()
                                     for v in (vs if isinstance(vs, list) else [vs])),
                      "path": req.path}


class FormRes:
    def on_post(self, req, resp):
        form = req.get_media()
        resp.media = {"form": sorted(form.items()), "ctype": req.content_type}


class UploadRes:
    def on_post(self, req, resp):
        out = {}
        for part in req.get_media():
            data = part.stream.read()
            if part.name == "file":
                out.update(name=part.filename, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest())
            else:
                out[part.name] = data.decode()
        resp.media = out


class RawRes:
    def on_post(self, req, resp):
        data = req.bounded_stream.read()
        resp.media = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class StreamRes:
    def on_get(self, req, resp):
        resp.content_type = "text/plain"
        resp.stream = (("line %d\n" % i).encode() for i in range(50))


class ErrorRes:
    def on_get(self, req, resp):
        raise RuntimeError("falcon resource failed")


class AbortRes:
    def on_get(self, req, resp):
        resp.status = "418 I'm a teapot"
        resp.media = {"error": "teapot"}


class RedirectRes:
    def on_get(self, req, resp):
        raise falcon.HTTPFound("/json")


class CookieRes:
    def on_get(self, req, resp):
        resp.content_type = "text/plain"
        resp.text = "cookies set"
        resp.set_cookie("a", "1", secure=False)
        resp.set_cookie("b", "2", secure=False, http_only=True)


app = falcon.App()
app.req_options.auto_parse_form_urlencoded = False
for route, res in [("/json", JsonRes()), ("/query", QueryRes()), ("/form", FormRes()),
                   ("/upload", UploadRes()), ("/raw", RawRes()), ("/stream", StreamRes()),
                   ("/error", ErrorRes()), ("/abort", AbortRes()), ("/redirect", RedirectRes()),
                   ("/cookie", CookieRes())]:
    app.add_route(route, res)
