"""Real ASGI frameworks (Debian packages) served by libwsgi-epoll and by uvicorn 0.17 (Debian, with
httptools and uvloop, --lifespan auto), with the same requests sent to both: status, body and headers must match.
FastAPI 0.92, Starlette 0.26, Django 3.2 (django.core.asgi) and Quart 0.18, each with JSON routes,
path and query parameters, form, multipart and JSON bodies, streamed bodies, StreamingResponse,
FileResponse, background tasks and exception handlers (a custom one, HTTP errors, and an unhandled
exception → 500).

What is ignored, and why:
  - Date: the time differs between two responses.
  - Server: each server names itself ("libwsgi-epoll" / "uvicorn").
  - Connection and Keep-Alive: connection management is the server's business (e.g. uvicorn says
    "Connection: close" when it closes after an error, libwsgi-epoll keeps the connection).
  - Transfer-Encoding, and Content-Length only when exactly one side has it: how a body without a
    Content-Length from the app is framed is the server's choice (both use chunked for HTTP/1.1;
    bodies are compared after de-chunking). A Content-Length the app gave is compared.
  - The reason phrase, for the codes RFC 9110 renamed (REASON_RENAMED): an ASGI app sends only the
    status code, and each server picks the phrase; libwsgi uses RFC 9110's ("422 Unprocessable
    Content"), uvicorn Python 3.11's http.HTTPStatus ("422 Unprocessable Entity"). Other reasons
    are compared.
Everything else (names, values, order, repeats such as Set-Cookie) must be identical.
Django has no background tasks: its background request is skipped.
"""

import hashlib
import json
import os

import pytest

import conftest
from conftest import module_server
from httpclient import Conn, build_request, chunked, wait_for
from test_frameworks import BOUNDARY, FORM, UPLOAD, comparable_headers, multipart

FRAMEWORKS = {
    "fastapi": "fastapi_app:app",
    "starlette": "starlette_app:app",
    "django": "django_asgi_app:application",
    "quart": "quart_app:app",
}

FILE_DATA = bytes(range(256)) * 4096 + b"tail" * 300  # 1 MiB + 1200: several FileResponse chunks
RAW = os.urandom(8 * 1024 * 1024 + 5)
CHUNKED_RAW = os.urandom(1024 * 1024)
JSON_BODY = json.dumps({"name": "widget", "count": 3, "tags": ["x", "y"]}).encode()
MULTIPART = [("Content-Type", "multipart/form-data; boundary=" + BOUNDARY)]

REQUESTS = {
    "json": ("GET", "/json", [], None),
    "head-json": ("HEAD", "/json", [], None),
    "path-query": ("GET", "/items/42?q=hello&tags=a&tags=b", [], None),
    "path-invalid": ("GET", "/items/notanint", [], None),
    "query": ("GET", "/query?a=1&b=two&a=3&c=%C3%A9", [], None),
    "form": ("POST", "/form", [("Content-Type", "application/x-www-form-urlencoded")], FORM),
    "json-body": ("POST", "/jsonbody", [("Content-Type", "application/json")], JSON_BODY),
    "json-body-invalid": ("POST", "/jsonbody", [("Content-Type", "application/json")], b"{not json"),
    "upload": ("POST", "/upload", MULTIPART, multipart([("field", "value")], [("file", "data.bin", UPLOAD)])),
    "upload-small": ("POST", "/upload", MULTIPART,
                     multipart([("field", "v2")], [("file", "small.txt", b"tiny file\n")])),
    "raw-large": ("POST", "/raw", [("Content-Type", "application/octet-stream")], RAW),
    "raw-chunked": ("POST", "/raw", [("Content-Type", "application/octet-stream"),
                                     ("Transfer-Encoding", "chunked")],
                    chunked(*[CHUNKED_RAW[i:i + 100000] for i in range(0, len(CHUNKED_RAW), 100000)])),
    "stream": ("GET", "/stream", [], None),
    "file": ("GET", "/file", [], None),
    "head-file": ("HEAD", "/file", [], None),
    "error": ("GET", "/error", [], None),
    "custom-error": ("GET", "/custom-error", [], None),
    "http-error": ("GET", "/http-error", [], None),
    "not-found": ("GET", "/no/such/route", [], None),
    "wrong-method": ("DELETE", "/json", [], None),
    "redirect": ("GET", "/redirect", [], None),
    "cookie": ("GET", "/cookie", [], None),
}


@pytest.fixture(scope="module")
def served_file():
    path = os.path.join(conftest.SESSION_TMP, "asgi-frameworks-file.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(FILE_DATA)
    return path


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def pair(request, served_file):
    spec = FRAMEWORKS[request.param]
    epoll = module_server(request, "epoll", spec)
    uvicorn = module_server(request, "uvicorn", spec)
    return request.param, epoll, uvicorn


def fetch(server, method, target, headers, body):
    with Conn(server.port) as c:
        c.send(build_request(method, target, headers, body, host="example.test"))
        return c.read_response(method)


# code -> (libwsgi's RFC 9110 phrase, uvicorn's Python 3.11 phrase)
REASON_RENAMED = {
    413: ("Content Too Large", "Request Entity Too Large"),
    422: ("Unprocessable Content", "Unprocessable Entity"),
}


def same(ours, ref):
    assert ours.status == ref.status, (ours, ref, ours.body[:300], ref.body[:300])
    if ours.status in REASON_RENAMED:
        assert (ours.reason, ref.reason) == REASON_RENAMED[ours.status]
    else:
        assert ours.reason == ref.reason
    assert ours.body == ref.body
    assert comparable_headers(ours, ref) == comparable_headers(ref, ours)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_same_response_as_uvicorn(pair, name):
    framework, epoll, uvicorn = pair
    method, target, headers, body = REQUESTS[name]
    ours = fetch(epoll, method, target, headers, body)
    ref = fetch(uvicorn, method, target, headers, body)
    same(ours, ref)
    # The routes really did what they are for (not just failed the same way on both servers).
    if name in ("json", "path-query", "query", "form", "json-body", "upload", "upload-small",
                "raw-large", "raw-chunked", "file"):
        assert ours.status == 200, ours.body[:500]
    if name == "path-query":
        assert json.loads(ours.body) == {"item_id": 42, "q": "hello", "tags": ["a", "b"]}
    if name == "json-body":
        data = json.loads(ours.body)
        assert data["total"] == 6 and data["received"]["name"] == "widget"
    if name == "form":
        assert "Python" in str(json.loads(ours.body)) and "h\u00e9llo world!" in str(json.loads(ours.body))
    if name == "upload":
        data = json.loads(ours.body)
        assert data["size"] == len(UPLOAD) and data["field"] == "value"
        assert data["sha256"] == hashlib.sha256(UPLOAD).hexdigest()
    if name in ("raw-large", "raw-chunked"):
        raw = RAW if name == "raw-large" else CHUNKED_RAW
        assert json.loads(ours.body) == {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if name == "stream":
        assert ours.body == b"".join(b"line %d\n" % i for i in range(50))
        assert ours.framing == "chunked"
    if name == "file":
        assert ours.body == FILE_DATA
    if name == "error":
        assert ours.status == 500
    if name == "custom-error":
        assert ours.status == 418 and json.loads(ours.body)["error"] == "teapot"
    if name == "http-error":
        assert ours.status == 404


def test_background_task_runs_after_the_response(pair):
    framework, epoll, uvicorn = pair
    if framework == "django":
        pytest.skip("Django has no background tasks")
    results = []
    for kind, server in (("epoll", epoll), ("uvicorn", uvicorn)):
        token = "%s-%s" % (kind, os.urandom(4).hex())
        results.append(fetch(server, "GET", "/background?token=" + token, [], None))
        path = os.path.join(conftest.SESSION_TMP, "bg-%s-%s" % (framework, token))
        wait_for(lambda: os.path.exists(path), "the %s background task under %s" % (framework, kind))
    same(*results)
    assert results[0].status == 200


def test_unhandled_exception_is_logged(pair):
    framework, epoll, _ = pair
    fetch(epoll, "GET", "/error", [], None)
    wait_for(lambda: "%s route failed" % framework in epoll.log()
             or (framework == "django" and "django view failed" in epoll.log()),
             "the traceback in the log")


def test_keep_alive_across_framework_requests(pair):
    framework, epoll, _ = pair
    with Conn(epoll.port) as c:
        for name in ("json", "form", "json-body", "upload-small", "not-found", "stream", "file",
                     "custom-error", "error", "json"):
            method, target, headers, body = REQUESTS[name]
            c.send(build_request(method, target, headers, body, host="example.test"))
            r = c.read_response(method)
            assert r.status in (200, 404, 418, 500), (name, r)


def test_server_sent_events_with_is_disconnected(pair):
    # starlette's Request.is_disconnected() calls receive() while StreamingResponse's task already
    # waits in receive(): two receive() calls at once, which the spec does not forbid (the second
    # used to raise RuntimeError, a 500). Then the client goes mid-stream: the endless stream ends.
    framework, epoll, uvicorn = pair
    if framework != "starlette":
        pytest.skip("the route is the starlette app's")
    start = len(epoll.log())  # the module's server: other tests' errors are logged before
    same(fetch(epoll, "GET", "/events", [], None), fetch(uvicorn, "GET", "/events", [], None))
    r = fetch(epoll, "GET", "/events", [], None)
    assert r.status == 200 and r.body == b"".join(b"data: %d\n\n" % i for i in range(5))
    token = os.urandom(4).hex()
    c = Conn(epoll.port)
    c.send(build_request("GET", "/events?n=0&token=" + token, host="example.test"))
    assert c.read_head()[0] == 200
    c.close()
    path = os.path.join(conftest.SESSION_TMP, "bg-starlette-sse-%s" % token)
    wait_for(lambda: os.path.exists(path), "the event generator to end after the disconnect")
    assert "Exception in ASGI application" not in epoll.log()[start:]


def test_stream_ended_by_the_client_is_not_an_app_error(pair):
    # StreamingResponse sees the client's disconnect in receive(), cancels its generator and
    # returns without the final body event: under uvicorn that is silent, the normal end of every
    # server-sent-events stream. It was logged as an ERROR ("returned without completing the
    # response") and reported to the host as an application error.
    framework, epoll, _ = pair
    if framework != "starlette":
        pytest.skip("the route is the starlette app's")
    token = os.urandom(4).hex()
    start = len(epoll.log())
    c = Conn(epoll.port)
    c.send(build_request("GET", "/hold?token=" + token, host="example.test"))
    assert c.read_head()[0] == 200
    c.close()
    path = os.path.join(conftest.SESSION_TMP, "bg-starlette-hold-%s" % token)
    wait_for(lambda: os.path.exists(path), "the event generator to end after the disconnect")
    wait_for(lambda: "without completing the response" in epoll.log()[start:], "the end of the app")
    log = epoll.log()[start:]
    assert "[ERROR]" not in log and "Exception in ASGI application" not in log, log


def test_head_of_an_endless_stream_ends_when_the_client_goes(pair):
    # HEAD of a server-sent-events route (curl -I, a link checker): the head is the whole
    # response, the client closes, and the stream's generator, which only a disconnect ends, must
    # learn of it (receive() -> http.disconnect) as under uvicorn. libwsgi-epoll took the close for
    # the normal end of a complete response and told the app nothing: it ran on until
    # --timeout-request (60 s), and held a graceful shutdown as long.
    framework, epoll, uvicorn = pair
    if framework != "starlette":
        pytest.skip("the route is the starlette app's")
    for server in (epoll, uvicorn):
        token = os.urandom(4).hex()
        start = len(server.log())
        r = fetch(server, "HEAD", "/hold?token=" + token, [], None)
        assert r.status == 200 and r.body == b""
        path = os.path.join(conftest.SESSION_TMP, "bg-starlette-hold-%s" % token)
        wait_for(lambda: os.path.exists(path), "the generator to end after the client closed (%s)"
                 % server.name, guard=20)
        assert "[ERROR]" not in server.log()[start:] and "Traceback" not in server.log()[start:]
