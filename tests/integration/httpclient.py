"""A small raw-socket HTTP/1.x client for the integration tests.

Standard clients hide exactly what these tests look at (framing, pipelining, 100 Continue,
connection reuse), so responses are read byte by byte from a socket here. Every blocking read has a
generous timeout that only guards against a hang; no test relies on it to pass.
"""

import socket
import time

GUARD = 30.0  # seconds; a failure guard only
COMPACT_MIN = 1 << 16  # see Conn


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


def read_head_with(read_line):
    """A response head read line by line with read_line() (no line ending; b"" ends the head):
    (code, reason, version, [(name, value)], status line, header lines)."""
    status_line = read_line()
    lines = []
    while True:
        line = read_line()
        if not line:
            break
        lines.append(line)
    version, _, rest = status_line.decode("latin-1").partition(" ")
    code, _, reason = rest.partition(" ")
    headers = []
    for line in lines:
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k, v.strip()))
    return int(code), reason, version, headers, status_line, lines


class Conn:
    """One client connection; requests and responses are explicit.

    Received bytes not consumed yet are self._data[self._pos:] (a bytearray and an offset).
    Consuming only moves the offset; the consumed prefix is deleted once it is at least
    COMPACT_MIN bytes and at least as long as what is left, so each byte is copied a bounded
    number of times whatever the sizes: reading is linear in the bytes received. Large bodies
    (read_exact beyond what is buffered) are received straight into their final buffer.
    """

    def __init__(self, port, host="127.0.0.1", timeout=GUARD, unix_path=None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unix_path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    # self.buf: the received bytes not consumed yet, as bytes (a copy); assigning replaces them
    # (tests read it after read_head() and clear it with c.buf = b"").
    @property
    def buf(self):
        return bytes(self._data[self._pos:])

    @buf.setter
    def buf(self, value):
        self._data = bytearray(value)
        self._pos = 0

    def _buffered(self):
        return len(self._data) - self._pos

    def _take(self, n):
        """The next n buffered bytes (all present), consumed."""
        start = self._pos
        out = bytes(self._data[start:start + n])
        self._consume(n)
        return out

    def _consume(self, n):
        self._pos += n
        if self._pos == len(self._data):
            self._data.clear()
            self._pos = 0
        elif self._pos >= COMPACT_MIN and 2 * self._pos >= len(self._data):
            del self._data[:self._pos]  # moves at most as many bytes as were consumed
            self._pos = 0

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
        self._data += data  # amortised constant time per byte
        return True

    def read_exact(self, n):
        have = self._buffered()
        if have >= n:
            return self._take(n)
        # Receive the rest straight into the result. If the connection ends (or the guard
        # timeout fires) first, what arrived stays buffered, as if read by _fill().
        out = bytearray(n)
        out[:have] = self._data[self._pos:]
        self.buf = b""
        try:
            with memoryview(out) as view:
                while have < n and not self.eof:
                    try:
                        got = self.sock.recv_into(view[have:])
                    except ConnectionResetError:
                        got = 0
                    if not got:
                        self.eof = True
                    have += got
        finally:
            if have < n:
                self.buf = out[:have]
        if have < n:
            raise EOFError("connection closed after %d of %d bytes" % (have, n))
        return bytes(out)

    def read_line(self):
        scan = self._pos
        while True:
            end = self._data.find(b"\r\n", scan)
            if end >= 0:
                break
            scan = max(self._pos, len(self._data) - 1)  # only new bytes (and a split CRLF)
            if not self._fill():
                raise EOFError("connection closed in a line: %r"
                               % bytes(self._data[self._pos:self._pos + 200]))
        line = self._take(end - self._pos)
        self._consume(2)
        return line

    def read_until_close(self):
        while self._fill():
            pass
        out = self.buf
        self.buf = b""
        return out

    def read_head(self):
        """Status line and headers of the next response (may be a 1xx)."""
        code, reason, version, headers, status_line, lines = read_head_with(self.read_line)
        raw = status_line + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
        return code, reason, version, headers, raw

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
    out = []
    for p in parts:
        if isinstance(p, str):
            p = p.encode()
        out.append(b"%x\r\n%s\r\n" % (len(p), p))
    return b"".join(out) + b"0\r\n\r\n"


def request(port, method, target, headers=(), body=None, version="HTTP/1.1", **kw):
    with Conn(port, **kw) as c:
        return c.request(method, target, headers, body, version)


def read_to_eof(sock):
    """Everything the peer sends until it closes."""
    out = b""
    while True:
        d = sock.recv(65536)
        if not d:
            return out
        out += d


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


def _tcp_queues(local, remote):
    """(tx_queue, rx_queue) of the IPv4 TCP socket local -> remote in /proc/net/tcp, or None."""
    def hexaddr(a):
        return "%s:%04X" % ("".join("%02X" % int(b) for b in reversed(a[0].split("."))), a[1])
    want = (hexaddr(local), hexaddr(remote))
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if (cols[1], cols[2]) == want:
                tx, rx = cols[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def wait_peer_read(sock, what="the server to read what was sent"):
    """Wait until the peer process has read everything sent on sock (a loopback IPv4 TCP socket):
    our bytes are acknowledged (no longer in our send queue) and no longer in the peer socket's
    receive queue. Then a piece sent next is a read of its own for the peer, whatever the
    machine's speed: what a test of data split across reads needs (a sleep only makes it
    likely)."""
    me, peer = sock.getsockname()[:2], sock.getpeername()[:2]

    def drained():
        mine, theirs = _tcp_queues(me, peer), _tcp_queues(peer, me)
        return mine is not None and theirs is not None and mine[0] == 0 and theirs[1] == 0

    wait_for(drained, what)
