"""FastAPI WebSocket endpoints for tests/integration/test_websocket_frameworks.py (libwsgi-epoll vs
uvicorn): a path parameter and a required query parameter (a missing one denies the connection:
FastAPI closes with 1008 before accepting, so 403), a dependency, echo, the text "close" closing
with a code and reason, and the disconnect code reported (ws_common.record)."""

from typing import Optional

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect

from ws_common import record

app = FastAPI()


def user_agent(websocket: WebSocket):
    return websocket.headers.get("user-agent", "")


@app.get("/")
async def home():
    return {"framework": "fastapi"}


@app.websocket("/ws/{room}")
async def room_ws(websocket: WebSocket, room: str, q: str = Query(...), token: Optional[str] = None,
                  ua: str = Depends(user_agent)):
    await websocket.accept()
    await websocket.send_json({"room": room, "q": q, "ua": ua})
    try:
        while True:
            m = await websocket.receive()
            if m["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(m.get("code", 1000))
            if m.get("text") == "close":
                await websocket.close(code=4003, reason="fastapi bye")
                return
            if m.get("text") is not None:
                await websocket.send_text("%s: %s" % (room, m["text"]))
            else:
                await websocket.send_bytes(m["bytes"])
    except WebSocketDisconnect as e:
        record(token, disconnect={"code": e.code})


@app.websocket("/items/{item_id}/ws")
async def item_ws(websocket: WebSocket, item_id: int):
    await websocket.accept()
    await websocket.send_json({"item_id": item_id})
    await websocket.close()
