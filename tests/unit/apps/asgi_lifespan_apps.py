"""ASGI apps for test_asgi_lifespan. make(mode) returns a fresh app object per call, because
lifespan startup runs once per loaded app; every app notes its lifespan events in NOTES[mode]
and serves:
  GET /state   -> canon(scope["state"]), then mutates the state at the top level and inside a
                  nested list (only the nested change may be seen by the next request)
  GET /notes   -> NOTES[mode]
  anything     -> "ok"
"""
import asyncio

NOTES = {}


def note(key, text):
    NOTES.setdefault(key, []).append(str(text))


def canon(v):
    if type(v) is dict:
        items = sorted(v.items(), key=lambda kv: repr(kv[0]))
        return "{" + ", ".join(canon(k) + ": " + canon(x) for k, x in items) + "}"
    if type(v) is list:
        return "[" + ", ".join(canon(x) for x in v) + "]"
    return repr(v)


async def serve_http(mode, scope, receive, send):
    while True:
        event = await receive()
        if event["type"] != "http.request" or not event.get("more_body"):
            break
    path = scope["path"]
    if path == "/state":
        state = scope["state"]
        body = canon(state)
        state["added_by_request"] = True
        state.setdefault("requests", []).append(len(state.get("requests", [])))
        if "items" in state:
            state["items"].append("request")
    elif path == "/notes":
        body = "\n".join(NOTES.get(mode, []))
    else:
        body = "ok"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def make(mode):
    """Modes: complete, startup_failed, shutdown_failed, raise_in_shutdown, unsupported,
    return_early (returns right after startup.complete), slow (awaits timers in both phases),
    loop_on (keeps calling receive() after shutdown.complete, as a lifespan loop without a
    return does; notes the CancelledError it gets there), ignore_shutdown (answers startup only:
    lifespan.shutdown is noted and the loop goes on to receive() again)."""

    async def app(scope, receive, send):
        if mode == "unsupported":
            assert scope["type"] == "http", "libwsgi-test: only http"
        if scope["type"] == "http":
            return await serve_http(mode, scope, receive, send)
        note(mode, "scope type=%s asgi.version=%s state=%s" % (
            scope["type"], scope["asgi"]["version"], type(scope.get("state")).__name__))
        while True:
            try:
                event = await receive()
            except asyncio.CancelledError:
                note(mode, "cancelled in receive()")
                raise
            note(mode, event["type"])
            if event["type"] == "lifespan.startup":
                if mode == "startup_failed":
                    await send({"type": "lifespan.startup.failed",
                                "message": "libwsgi-test: database unreachable"})
                    return
                if mode == "slow":
                    await asyncio.sleep(0.01)
                    await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])
                scope["state"]["name"] = "lifespan-" + mode
                scope["state"]["items"] = ["startup"]
                await send({"type": "lifespan.startup.complete"})
                if mode == "return_early":
                    return
            elif event["type"] == "lifespan.shutdown":
                if mode == "ignore_shutdown":
                    continue
                if mode == "shutdown_failed":
                    await send({"type": "lifespan.shutdown.failed",
                                "message": "libwsgi-test: flush failed"})
                    return
                if mode == "raise_in_shutdown":
                    raise RuntimeError("libwsgi-test: shutdown exploded")
                if mode == "slow":
                    await asyncio.sleep(0.01)
                await send({"type": "lifespan.shutdown.complete"})
                note(mode, "after shutdown.complete")
                if mode == "loop_on":
                    continue
                return

    return app


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi"]
