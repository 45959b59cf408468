"""A small raw-socket HTTP/1.x client for the integration tests.

Standard clients hide exactly what these tests look at (framing, pipelining, 100 Continue,
connection reuse), so responses are read byte by byte from a socket here. Every blocking read has a
generous timeout that only guards against a hang; no test relies on it to pass.
"""

import socket
import time

GUARD = 30.0  # seconds; a failure guard only


class Response:
    def __init__(self, status, reason, version, headers, body, framing, raw_head):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # list of (name, value) str pairs, in order
        self.body = body
        self.framing = framing  # "length", "chunked", "close" or "none"
        self.raw_head = raw_head

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def __repr__(self):
        return "<Response %d %r %d bytes %s>" % (self.status, self.reason, len(self.body), self.framing)


class Conn:
    """One client connection; requests and responses are explicit."""

    def __init__(self, port, host="127.0.0.1", timeout=GUARD, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError("connection closed in a line: %r" % self.buf[:200])
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_until_close(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        """Status line and headers of the next response (may be a 1xx)."""
        lines = []
        status_line = self.read_line()
        while True:
            line = self.read_line()
            if not line:
                break
            lines.append(line)
        version, _, rest = status_line.decode("latin-1").partition(" ")
        code, _, reason = rest.partition(" ")
        headers = []
        for line in lines:
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k, v.strip()))
        raw = status_line + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
        return int(code), reason, version, headers, raw

    def read_response(self, method="GET", skip_continue=True):
        while True:
            status, reason, version, headers, raw = self.read_head()
            if status == 100 and skip_continue:
                continue
            break
        r = Response(status, reason, version, headers, b"", "none", raw)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if te is not None and te.lower() == "chunked":
            r.framing = "chunked"
            parts = []
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():
                        pass  # trailers
                    break
                parts.append(self.read_exact(size))
                assert self.read_exact(2) == b"\r\n"
            r.body = b"".join(parts)
        elif cl is not None:
            r.framing = "length"
            r.body = self.read_exact(int(cl))
        else:
            r.framing = "close"
            r.body = self.read_until_close()
        return r

    def request(self, method, target, headers=(), body=None, version="HTTP/1.1", host="test"):
        self.send(build_request(method, target, headers, body, version, host))
        return self.read_response(method)

    def is_closed_by_peer(self):
        """True if the server closed the connection (EOF or reset) with nothing more to read."""
        if self.buf:
            return False
        return not self._fill() and not self.buf


def build_request(method, target, headers=(), body=None, version="HTTP/1.1", host="test"):
    lines = ["%s %s %s" % (method, target, version)]
    names = {k.lower() for k, _ in headers}
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    if isinstance(body, str):
        body = body.encode("latin-1")
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data + (body or b"")


def chunked(*parts):
    out = b""
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n\r\n"


def request(port, method, target, headers=(), body=None, version="HTTP/1.1", **kw):
    with Conn(port, **kw) as c:
        return c.request(method, target, headers, body, version)


def wait_for(pred, what, guard=GUARD, step=0.01):
    """Poll pred() until true; the guard only turns a hang into a failure."""
    deadline = time.monotonic() + guard
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(step)
