"""Flask app for the libwsgi-epoll vs gunicorn comparison (tests/integration/test_frameworks.py)."""

import hashlib

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)


@app.get("/json")
def json_route():
    return jsonify(framework="flask", items=[1, 2, 3], text="h\u00e9llo")


@app.get("/query")
def query():
    return jsonify(args=sorted(request.args.items(multi=True)), path=request.path)


@app.post("/form")
def form():
    return jsonify(form=sorted(request.form.items(multi=True)), ctype=request.mimetype)


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(name=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   field=request.form.get("field"))


@app.post("/raw")
def raw():
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get("/stream")
def stream():
    def gen():
        for i in range(50):
            yield "line %d\n" % i
    return Response(gen(), mimetype="text/plain")


@app.get("/error")
def error():
    raise RuntimeError("flask route failed")


@app.get("/abort")
def abort_route():
    return jsonify(error="teapot"), 418


@app.get("/redirect")
def redirect_route():
    return redirect("/json")


@app.get("/cookie")
def cookie():
    r = Response("cookies set", mimetype="text/plain")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r
