"""Starlette app for the libwsgi-epoll vs uvicorn comparison (tests/integration/test_asgi_frameworks.py)."""

import asyncio
import hashlib
import json

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

from asgi_fw_common import FILE, TeapotError, background_done


async def json_route(request):
    return JSONResponse({"framework": "starlette", "items": [1, 2, 3], "text": "h\u00e9llo"})


async def item(request):
    return JSONResponse({"item_id": request.path_params["item_id"], "q": request.query_params.get("q"),
                         "tags": request.query_params.getlist("tags")})


async def query(request):
    return JSONResponse({"args": sorted(request.query_params.multi_items()), "path": request.url.path})


async def form(request):
    f = await request.form()
    return JSONResponse({"form": sorted(f.multi_items()), "ctype": request.headers.get("content-type")})


async def jsonbody(request):
    try:
        data = await request.json()
    except json.JSONDecodeError:
        raise HTTPException(status_code=400, detail="invalid JSON")
    return JSONResponse({"received": data, "total": data.get("count", 0) * 2})


async def upload(request):
    f = await request.form()
    up = f["file"]
    data = await up.read()
    return JSONResponse({"name": up.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                         "field": f["field"]})


async def raw(request):
    h, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return JSONResponse({"size": size, "sha256": h.hexdigest()})


async def stream(request):
    async def gen():
        for i in range(50):
            yield "line %d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


async def events(request):
    """Server-sent events, the usual way: the generator asks request.is_disconnected() before each
    event while StreamingResponse's own task waits in receive() for the disconnect (two receive()
    calls at once). ?n=N events (default 5), or until the client goes (?n=0); with ?token=T the
    generator's end (returned, or cancelled by StreamingResponse when the client went) writes a
    marker."""
    n, token = int(request.query_params.get("n", "5")), request.query_params.get("token")

    async def gen():
        try:
            i = 0
            while n == 0 or i < n:
                if await request.is_disconnected():
                    return
                yield "data: %d\n\n" % i
                i += 1
                await asyncio.sleep(0.005)
        finally:
            if token:
                background_done("starlette-sse", token)
    return StreamingResponse(gen(), media_type="text/event-stream")


async def hold(request):
    """An event stream that sends one event and then waits (for nothing): only the client's
    disconnect, which StreamingResponse's receive() sees, ends it (it cancels the generator and
    returns without the final body event). ?token=T: the generator's end writes a marker."""
    token = request.query_params.get("token")

    async def gen():
        try:
            yield "data: hello\n\n"
            await asyncio.Event().wait()
        finally:
            if token:
                background_done("starlette-hold", token)
    return StreamingResponse(gen(), media_type="text/event-stream")


async def file(request):
    return FileResponse(FILE, media_type="application/octet-stream", filename="data.bin")


async def background(request):
    task = BackgroundTask(background_done, "starlette", request.query_params["token"])
    return JSONResponse({"scheduled": True}, background=task)


async def error(request):
    raise RuntimeError("starlette route failed")


async def custom_error(request):
    raise TeapotError("short and stout")


async def http_error(request):
    raise HTTPException(status_code=404, detail="no such thing")


async def redirect(request):
    return RedirectResponse("/json")


async def cookie(request):
    r = PlainTextResponse("cookies set")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r


async def teapot_handler(request, exc):
    return JSONResponse({"error": "teapot", "detail": str(exc)}, status_code=418)


app = Starlette(routes=[
    Route("/json", json_route),
    Route("/items/{item_id:int}", item),
    Route("/query", query),
    Route("/form", form, methods=["POST"]),
    Route("/jsonbody", jsonbody, methods=["POST"]),
    Route("/upload", upload, methods=["POST"]),
    Route("/raw", raw, methods=["POST"]),
    Route("/stream", stream),
    Route("/events", events),
    Route("/hold", hold),
    Route("/file", file),
    Route("/background", background),
    Route("/error", error),
    Route("/custom-error", custom_error),
    Route("/http-error", http_error),
    Route("/redirect", redirect),
    Route("/cookie", cookie),
], exception_handlers={TeapotError: teapot_handler})
