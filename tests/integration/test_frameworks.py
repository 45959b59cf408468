"""Real frameworks (Debian packages) served by libwsgi-epoll and by gunicorn 20.1 (Debian), with the
same requests sent to both: status, body and headers must match.

What is ignored, and why:
  - Date: the time differs between two responses.
  - Server: each server names itself ("libwsgi-epoll" / "gunicorn").
  - Connection: gunicorn's default sync worker closes every connection and says so
    ("Connection: close"); libwsgi-epoll keeps connections alive (no header). Connection
    management is the server's business, not the app's.
  - Transfer-Encoding, and Content-Length only when one side used chunked framing: how a body
    without a Content-Length from the app is framed on the wire is the server's choice (both use
    chunked here, but the bodies are compared after de-chunking either way). A Content-Length the
    app gave is compared.
  - The order of the values inside Allow: werkzeug builds it from a Python set, whose iteration
    order depends on each process's hash seed (the values themselves are compared).
Everything else — header names, values, order and repeats (Set-Cookie) — must be identical.
"""

import hashlib
import json

import pytest

from conftest import module_server
from httpclient import Conn, build_request

FRAMEWORKS = {
    "flask": "flask_app:app",
    "django": "django_app:application",
    "falcon": "falcon_app:app",
    "bottle": "bottle_app:app",
    "pyramid": "pyramid_app:app",
}

IGNORED = {"date", "server", "connection", "transfer-encoding", "keep-alive"}
# Computed from the clock by the app (Quart's send_file: now + cache timeout): two servers asked one
# after the other can be a second apart. Compared for presence, not value.
CLOCK_VALUED = {"expires"}

BOUNDARY = "----libwsgi-boundary-7MA4YWxkTrZu0gW"
UPLOAD = bytes(range(256)) * 8192  # 2 MiB: above libwsgi-epoll's buffering threshold (streamed)


def multipart(fields, files):
    out = b""
    for name, value in fields:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                % (BOUNDARY, name, value)).encode()
    for name, filename, data in files:
        out += ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n" % (BOUNDARY, name, filename)).encode()
        out += data + b"\r\n"
    return out + ("--%s--\r\n" % BOUNDARY).encode()


FORM = b"name=libwsgi&lang=C&lang=Python&empty=&text=h%C3%A9llo+world%21"

REQUESTS = {
    "json": ("GET", "/json", [], None),
    "head-json": ("HEAD", "/json", [], None),
    "query": ("GET", "/query?a=1&b=two&a=3&c=%C3%A9", [], None),
    "form": ("POST", "/form", [("Content-Type", "application/x-www-form-urlencoded")], FORM),
    "upload": ("POST", "/upload", [("Content-Type", "multipart/form-data; boundary=" + BOUNDARY)],
               multipart([("field", "value")], [("file", "data.bin", UPLOAD)])),
    "upload-small": ("POST", "/upload", [("Content-Type", "multipart/form-data; boundary=" + BOUNDARY)],
                     multipart([("field", "v2")], [("file", "small.txt", b"tiny file\n")])),
    "raw-large": ("POST", "/raw", [("Content-Type", "application/octet-stream")], UPLOAD * 4),
    "stream": ("GET", "/stream", [], None),
    "error": ("GET", "/error", [], None),
    "abort": ("GET", "/abort", [], None),
    "not-found": ("GET", "/no/such/route", [], None),
    "wrong-method": ("DELETE", "/json", [], None),
    "redirect": ("GET", "/redirect", [], None),
    "cookie": ("GET", "/cookie", [], None),
}


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def pair(request):
    spec = FRAMEWORKS[request.param]
    epoll = module_server(request, "epoll", spec, "--threads", "4")
    gunicorn = module_server(request, "gunicorn", spec)
    return request.param, epoll, gunicorn


def fetch(server, method, target, headers, body):
    with Conn(server.port) as c:
        c.send(build_request(method, target, headers, body, host="example.test"))
        return c.read_response(method)


def comparable_headers(r, other, ignored=IGNORED):
    drop = set(ignored)
    if (r.header("content-length") is None) != (other.header("content-length") is None):
        drop.add("content-length")
    out = []
    for k, v in r.headers:
        k = k.lower()
        if k in drop:
            continue
        if k == "allow":
            v = ", ".join(sorted(x.strip() for x in v.split(",")))
        if k in CLOCK_VALUED:
            v = "<from the clock>"
        out.append((k, v))
    return out


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_same_response_as_gunicorn(pair, name):
    framework, epoll, gunicorn = pair
    method, target, headers, body = REQUESTS[name]
    ours = fetch(epoll, method, target, headers, body)
    ref = fetch(gunicorn, method, target, headers, body)
    assert ours.status == ref.status, (ours, ref)
    assert ours.reason == ref.reason
    assert ours.body == ref.body
    assert comparable_headers(ours, ref) == comparable_headers(ref, ours)
    # The routes really did what they are for (not just failed the same way on both servers).
    if name in ("json", "query", "form", "upload", "upload-small", "raw-large"):
        assert ours.status == 200, ours.body
        data = json.loads(ours.body)
        if name == "upload":
            assert data["size"] == len(UPLOAD) and data["field"] == "value"
            assert data["sha256"] == hashlib.sha256(UPLOAD).hexdigest()
        if name == "raw-large":
            assert data["size"] == 4 * len(UPLOAD)
        if name == "form":
            assert "Python" in str(data["form"]) and "h\u00e9llo world!" in str(data["form"])
    if name == "stream":
        assert ours.body == b"".join(b"line %d\n" % i for i in range(50))
    if name == "error":
        assert ours.status == 500


def test_keep_alive_across_framework_requests(pair):
    """Several framework requests on one libwsgi-epoll connection (gunicorn's sync worker would
    close after each)."""
    framework, epoll, _ = pair
    with Conn(epoll.port) as c:
        for name in ("json", "form", "upload-small", "not-found", "stream", "json"):
            method, target, headers, body = REQUESTS[name]
            c.send(build_request(method, target, headers, body, host="example.test"))
            r = c.read_response(method)
            assert r.status in (200, 404)
