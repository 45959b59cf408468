"""Bottle app for the libwsgi-epoll vs gunicorn comparison."""

import hashlib
import json

import bottle

app = bottle.Bottle()


@app.get("/json")
def json_route():
    return {"framework": "bottle", "items": [1, 2, 3], "text": "h\u00e9llo"}


@app.get("/query")
def query():
    return {"args": sorted(bottle.request.query.allitems()), "path": bottle.request.path}


@app.post("/form")
def form():
    return {"form": sorted(bottle.request.forms.decode().allitems()),
            "ctype": bottle.request.content_type}


@app.post("/upload")
def upload():
    f = bottle.request.files.get("file")
    data = f.file.read()
    return {"name": f.raw_filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "field": bottle.request.forms.get("field")}


@app.post("/raw")
def raw():
    data = bottle.request.body.read()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@app.get("/stream")
def stream():
    bottle.response.content_type = "text/plain"
    return ("line %d\n" % i for i in range(50))


@app.get("/error")
def error():
    raise RuntimeError("bottle route failed")


@app.get("/abort")
def abort_route():
    bottle.response.status = 418
    bottle.response.content_type = "application/json"
    return json.dumps({"error": "teapot"})


@app.get("/redirect")
def redirect_route():
    bottle.redirect("/json")


@app.get("/cookie")
def cookie():
    bottle.response.set_cookie("a", "1")
    bottle.response.set_cookie("b", "2", httponly=True)
    bottle.response.content_type = "text/plain"
    return "cookies set"
