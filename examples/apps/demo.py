"""A small stdlib-only WSGI demo with a few routes, to try libwsgi-epoll by hand:

    build/examples/epoll/libwsgi-epoll --app demo:app --pythonpath examples/apps --access-log

    curl http://127.0.0.1:8000/                      # an index of the routes
    curl http://127.0.0.1:8000/json?name=you          # JSON
    curl -d 'a=1&b=2' http://127.0.0.1:8000/form      # an urlencoded form
    curl -T somefile http://127.0.0.1:8000/upload     # a body streamed into wsgi.input
    curl -N http://127.0.0.1:8000/stream              # a chunked, slowly streamed response
    curl http://127.0.0.1:8000/environ                # what the app sees
"""

import hashlib
import json
import time
from urllib.parse import parse_qs

ROUTES = {
    "/": "this index",
    "/json": "a JSON document (?name=...)",
    "/form": "POST an urlencoded form, get it back as JSON",
    "/upload": "POST or PUT any body: its size and SHA-256, read in 64 KiB blocks",
    "/stream": "ten lines, one every 0.2 s (chunked)",
    "/environ": "the WSGI environ's string values",
    "/file": "this file, through wsgi.file_wrapper (sendfile)",
}


def _send(start_response, status, body, ctype="application/json"):
    if not isinstance(body, bytes):
        body = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    if path == "/":
        text = "".join("%-10s %s\n" % kv for kv in ROUTES.items()).encode()
        return _send(start_response, "200 OK", text, "text/plain; charset=utf-8")
    if path == "/json":
        q = parse_qs(environ.get("QUERY_STRING", ""))
        return _send(start_response, "200 OK", {"hello": q.get("name", ["world"])[0],
                                                 "server": environ.get("SERVER_SOFTWARE")})
    if path == "/form" and method == "POST":
        n = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(n).decode("utf-8", "replace"))
        return _send(start_response, "200 OK", form)
    if path == "/upload" and method in ("POST", "PUT"):
        h, size, stream = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            block = stream.read(65536)
            if not block:
                break
            h.update(block)
            size += len(block)
        return _send(start_response, "200 OK", {"size": size, "sha256": h.hexdigest()})
    if path == "/stream":
        def lines():
            for i in range(10):
                yield b"line %d\n" % i
                time.sleep(0.2)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return lines()
    if path == "/environ":
        return _send(start_response, "200 OK",
                     {k: v for k, v in environ.items() if isinstance(v, str)})
    if path == "/file":
        f = open(__file__, "rb")
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        start_response("200 OK", [("Content-Type", "text/x-python"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 65536)
    return _send(start_response, "404 Not Found", {"error": "no route " + path})
