"""Starlette WebSocket endpoints for tests/integration/test_websocket_frameworks.py (libwsgi-epoll vs
uvicorn): a function endpoint and a WebSocketEndpoint class, both echoing; the text "close" makes
the app close with a code and reason; the disconnect code is reported (ws_common.record)."""

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from ws_common import record


def token_of(ws):
    return ws.query_params.get("token")


async def echo(websocket):
    await websocket.accept(subprotocol=websocket.query_params.get("subprotocol"))
    try:
        while True:
            m = await websocket.receive()
            if m["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(m.get("code", 1000))
            if m.get("text") == "close":
                await websocket.close(code=4001, reason="starlette bye")
                return
            if m.get("text") is not None:
                await websocket.send_text(m["text"])
            else:
                await websocket.send_bytes(m["bytes"])
    except WebSocketDisconnect as e:
        record(token_of(websocket), disconnect={"code": e.code})


class Endpoint(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket, data):
        if data == "close":
            await websocket.close(code=4002, reason="endpoint bye")
            return
        await websocket.send_text("endpoint: " + data)

    async def on_disconnect(self, websocket, close_code):
        record(token_of(websocket), disconnect={"code": close_code})


async def deny(websocket):
    await websocket.close(code=1008)


async def boom(websocket):
    await websocket.accept()
    await websocket.receive_text()
    raise RuntimeError("starlette websocket route failed")


async def home(request):
    return PlainTextResponse("starlette http\n")


app = Starlette(routes=[
    Route("/", home),
    WebSocketRoute("/ws/echo", echo),
    WebSocketRoute("/ws/endpoint", Endpoint),
    WebSocketRoute("/ws/deny", deny),
    WebSocketRoute("/ws/boom", boom),
])
