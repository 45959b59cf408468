"""Quart app for the libwsgi-epoll vs uvicorn comparison (tests/integration/test_asgi_frameworks.py)."""

import hashlib

from quart import Quart, Response, abort, jsonify, redirect, request, send_file

from asgi_fw_common import FILE, TeapotError, background_done

app = Quart(__name__)


@app.errorhandler(TeapotError)
async def teapot_handler(exc):
    return jsonify(error="teapot", detail=str(exc)), 418


@app.get("/json")
async def json_route():
    return jsonify(framework="quart", items=[1, 2, 3], text="h\u00e9llo")


@app.get("/items/<int:item_id>")
async def item(item_id):
    return jsonify(item_id=item_id, q=request.args.get("q"), tags=request.args.getlist("tags"))


@app.get("/query")
async def query():
    return jsonify(args=sorted(request.args.items(multi=True)), path=request.path)


@app.post("/form")
async def form():
    f = await request.form
    return jsonify(form=sorted(f.items(multi=True)), ctype=request.mimetype)


@app.post("/jsonbody")
async def jsonbody():
    data = await request.get_json()
    return jsonify(received=data, total=data.get("count", 0) * 2)


@app.post("/upload")
async def upload():
    files = await request.files
    f = files["file"]
    data = f.read()
    return jsonify(name=f.filename, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                   field=(await request.form).get("field"))


@app.post("/raw")
async def raw():
    h, size = hashlib.sha256(), 0
    async for chunk in request.body:
        h.update(chunk)
        size += len(chunk)
    return jsonify(size=size, sha256=h.hexdigest())


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(50):
            yield ("line %d\n" % i).encode()
    return Response(gen(), mimetype="text/plain")


@app.get("/file")
async def file():
    return await send_file(FILE, mimetype="application/octet-stream")


@app.get("/background")
async def background():
    app.add_background_task(background_done, "quart", request.args["token"])
    return jsonify(scheduled=True)


@app.get("/error")
async def error():
    raise RuntimeError("quart route failed")


@app.get("/custom-error")
async def custom_error():
    raise TeapotError("short and stout")


@app.get("/http-error")
async def http_error():
    abort(404)


@app.get("/redirect")
async def redirect_route():
    return redirect("/json")


@app.get("/cookie")
async def cookie():
    r = Response("cookies set", mimetype="text/plain")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r
