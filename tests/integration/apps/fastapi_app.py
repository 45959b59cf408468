"""FastAPI app for the libwsgi-epoll vs uvicorn comparison (tests/integration/test_asgi_frameworks.py)."""

import hashlib
from typing import List, Optional

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel

from asgi_fw_common import FILE, TeapotError, background_done

app = FastAPI()


class Item(BaseModel):
    name: str
    count: int
    tags: List[str] = []


@app.exception_handler(TeapotError)
async def teapot_handler(request: Request, exc: TeapotError):
    return JSONResponse({"error": "teapot", "detail": str(exc)}, status_code=418)


@app.get("/json")
async def json_route():
    return {"framework": "fastapi", "items": [1, 2, 3], "text": "h\u00e9llo"}


@app.get("/items/{item_id}")
async def item(item_id: int, q: Optional[str] = None, tags: List[str] = Query(default=[])):
    return {"item_id": item_id, "q": q, "tags": tags}


@app.get("/query")
async def query(request: Request):
    return {"args": sorted(request.query_params.multi_items()), "path": request.url.path}


@app.post("/form")
async def form(name: str = Form(), lang: List[str] = Form(), text: str = Form()):
    return {"name": name, "lang": lang, "text": text}


@app.post("/jsonbody")
async def jsonbody(item: Item):
    return {"received": item.dict(), "total": item.count * 2}


@app.post("/upload")
async def upload(file: UploadFile = File(), field: str = Form()):
    data = await file.read()
    return {"name": file.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "field": field}


@app.post("/raw")
async def raw(request: Request):
    h, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        h.update(chunk)
        size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(50):
            yield "line %d\n" % i
    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/file")
async def file():
    return FileResponse(FILE, media_type="application/octet-stream", filename="data.bin")


@app.get("/background")
async def background(token: str, tasks: BackgroundTasks):
    tasks.add_task(background_done, "fastapi", token)
    return {"scheduled": True}


@app.get("/error")
async def error():
    raise RuntimeError("fastapi route failed")


@app.get("/custom-error")
async def custom_error():
    raise TeapotError("short and stout")


@app.get("/http-error")
async def http_error():
    raise HTTPException(status_code=404, detail="no such thing")


@app.get("/redirect")
async def redirect():
    return RedirectResponse("/json")


@app.get("/cookie")
async def cookie():
    r = PlainTextResponse("cookies set")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r
