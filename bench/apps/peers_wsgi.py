"""WSGI apps of bench/peers.py: every WSGI server is given the same callables (module:callable).

hello   14-byte text, Content-Length            (workloads hello-1, hello-64)
big     64 KiB, Content-Length                  (big-64k)
echo    the request body back, Content-Length   (post-256k: wrk posts 256 KiB)
stream  100 chunks of 1 KiB from a generator, no Content-Length (chunked on HTTP/1.1)
The JSON endpoint is peers_flask.py.
"""

HELLO = b"Hello, World!\n"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]


def hello(environ, start_response):
    start_response("200 OK", HELLO_HEADERS)
    return [HELLO]


BIG = b"x" * 65536
BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))]


def big(environ, start_response):
    start_response("200 OK", BIG_HEADERS)
    return [BIG]


def echo(environ, start_response):
    try:
        n = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        n = 0
    stream = environ["wsgi.input"]
    parts = []
    left = n
    while left > 0:
        data = stream.read(min(left, 65536))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    body = b"".join(parts)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


CHUNK = b"y" * 1024


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(100):
        yield CHUNK


application = hello
