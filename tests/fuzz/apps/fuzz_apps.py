"""Apps for the fuzz targets (tests/fuzz/). Each checks what libwsgi promises about the environ or
scope it is given, whatever bytes the request held, and answers b"ok" or b"bad: <what>"; the C
harness aborts on anything but b"ok" (a crash for libFuzzer). Standard library only."""

TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_environ(environ):
    if type(environ) is not dict:
        return "environ is not a dict"
    for key, value in environ.items():
        if type(key) is not str:
            return "key %r is not a str" % (key,)
        if key.startswith("wsgi."):
            continue
        if type(value) is not str:
            return "%s is not a str" % key
        try:
            value.encode("latin-1")
            key.encode("latin-1")
        except UnicodeEncodeError:
            return "%s is not latin-1" % key
        if key.startswith("HTTP_"):
            name = key[5:].encode("latin-1")
            if not name or any(c not in TCHARS for c in name) or name != name.upper():
                return "bad header key %r" % key
            # The value is the host's bytes as they came (wsgi.h: only names are checked).
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL", "wsgi.input", "wsgi.errors", "wsgi.url_scheme"):
        if key not in environ:
            return "no " + key
    # wsgi.url_scheme: "http" for none, else wsgi_request::scheme as given (any bytes).
    if environ["wsgi.version"] != (1, 0):
        return "wsgi.version"
    return None


def wsgi_app(environ, start_response):
    bad = check_environ(environ)
    if bad is None:
        data = environ["wsgi.input"].read()
        if type(data) is not bytes:
            bad = "wsgi.input.read() gave %r" % type(data)
        environ["wsgi.input"].readline()
        environ["wsgi.errors"].write("")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok" if bad is None else b"bad: " + bad.encode("utf-8", "replace")]


def check_scope(scope, kind):
    if type(scope) is not dict or scope.get("type") != kind:
        return "scope type"
    for key, typ in (("http_version", str), ("method", str), ("scheme", str), ("path", str),
                     ("raw_path", bytes), ("query_string", bytes), ("root_path", str),
                     ("headers", list), ("asgi", dict)):
        if kind == "websocket" and key == "method":
            continue
        if type(scope.get(key)) is not typ:
            return "%s is %r" % (key, type(scope.get(key)))
    for h in scope["headers"]:
        if len(h) != 2 or type(h[0]) is not bytes or type(h[1]) is not bytes:
            return "header %r" % (h,)
        if h[0] != h[0].lower():
            return "header name %r not lowercase" % (h[0],)
    for key in ("client", "server"):
        v = scope.get(key)
        if v is not None and (len(v) != 2 or type(v[0]) is not str):
            return "%s %r" % (key, v)
    if kind == "websocket":
        sp = scope.get("subprotocols")
        if type(sp) is not list or any(type(s) is not str for s in sp):
            return "subprotocols %r" % (sp,)
    return None


async def asgi_app(scope, receive, send):
    kind = scope.get("type") if type(scope) is dict else None
    bad = check_scope(scope, kind) if kind in ("http", "websocket") else "scope type %r" % (kind,)
    answer = b"ok" if bad is None else b"bad: " + bad.encode("utf-8", "replace")
    if kind == "websocket":
        msg = await receive()
        if msg.get("type") != "websocket.connect":
            answer = b"bad: first event %r" % (msg.get("type"),)
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": answer})
        # Messages the harness sends after the accept are echoed until it disconnects.
        while True:
            msg = await receive()
            if msg["type"] != "websocket.receive":
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": msg["text"]})
            else:
                await send({"type": "websocket.send", "bytes": msg["bytes"]})
    more = True
    while more:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": answer})
