"""A raw-socket WebSocket client (RFC 6455, RFC 7692) for the integration tests.

It builds every frame by hand, so a test can send what a well-behaved client never would:
unmasked frames, reserved opcodes and bits, fragmented control frames, invalid UTF-8, lengths
beyond a limit, a message split over many frames or written byte by byte. What the server sends is
parsed strictly (a server frame must not be masked, must use a known opcode, no RSV bit unless
permessage-deflate was negotiated) and recorded as it is, so tests can assert on the wire format.

Buffering is linear: received bytes sit in a bytearray with a read offset; consumed bytes are
dropped in bulk once they are at least half of the buffer (never `bytes += ...` in a loop), and
large payloads are received straight into their final buffer.

All blocking calls are bounded by GUARD seconds: a failure guard only, never a timed assertion.
"""

import base64
import hashlib
import os
import socket
import struct
import zlib

from httpclient import read_head_with

GUARD = 15.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
COMPACT_MIN = 1 << 16

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KNOWN_OPS = (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG)


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def mask_payload(payload, key):
    """payload XOR the 4-byte key, in linear time (big-int XOR, no per-byte Python loop)."""
    n = len(payload)
    if n == 0 or key == b"\0\0\0\0":
        return bytes(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def build_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length=None):
    """One frame. rsv is the 3 RSV bits as an int (4 = RSV1). length overrides the encoded payload
    length (to lie about it); mask_key defaults to 4 random bytes."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    head = bytearray()
    head.append((0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF))
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if mask:
        mask_key = os.urandom(4) if mask_key is None else mask_key
        head += mask_key
        payload = mask_payload(payload, mask_key)
    return bytes(head) + bytes(payload)


def close_payload(code=None, reason=""):
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def valid_close_code(code):
    """A code an endpoint may put in a Close frame (RFC 6455 §7.4; IANA registry up to 1014)."""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


def parse_close(payload):
    """(code, reason) of a Close frame's payload; (1005, "") when it has none. A code that must
    not be sent, or a reason that is not UTF-8, is a ProtocolViolation."""
    if len(payload) == 0:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolViolation("server sent a 1-byte Close payload")
    code = struct.unpack("!H", payload[:2])[0]
    if not valid_close_code(code):
        raise ProtocolViolation("server sent close code %d" % code)
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("server sent a Close reason that is not UTF-8: %r" % bytes(payload[2:]))


class ProtocolViolation(AssertionError):
    """The server broke RFC 6455."""


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "payload", "wire_len")

    def __init__(self, fin, rsv, opcode, payload, wire_len):
        self.fin, self.rsv, self.opcode, self.payload, self.wire_len = fin, rsv, opcode, payload, wire_len

    def __repr__(self):
        return "Frame(fin=%d rsv=%d op=%d len=%d %r)" % (self.fin, self.rsv, self.opcode,
                                                          len(self.payload), bytes(self.payload[:40]))


class Message:
    """A data message (opcode OP_TEXT/OP_BINARY, data str/bytes) or the server's Close
    (opcode OP_CLOSE, code, reason). compressed: RSV1 was set; wire_len: payload bytes on the wire."""

    def __init__(self, opcode, data=None, code=None, reason=None, compressed=False, wire_len=0, frames=1):
        self.opcode, self.data, self.code, self.reason = opcode, data, code, reason
        self.compressed, self.wire_len, self.frames = compressed, wire_len, frames

    @property
    def is_close(self):
        return self.opcode == OP_CLOSE

    def __repr__(self):
        if self.is_close:
            return "Close(%r, %r)" % (self.code, self.reason)
        return "Message(op=%d, %r%s, wire=%d)" % (self.opcode, self.data[:40], "..." if len(self.data) > 40 else "",
                                                 self.wire_len)


class HandshakeResponse:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status, self.reason, self.headers, self.body, self.raw_head = status, reason, headers, body, raw_head

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def headers_named(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def __repr__(self):
        return "HandshakeResponse(%d %s, %r, %r)" % (self.status, self.reason, self.headers, self.body[:200])


def handshake_request(path="/", host="127.0.0.1", key=None, subprotocols=(), extensions=None,
                      headers=(), version="13", method="GET"):
    key = key or base64.b64encode(os.urandom(16)).decode("ascii")
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: %s" % key]
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: %s" % ", ".join(subprotocols))
    if extensions:
        lines.append("Sec-WebSocket-Extensions: %s" % extensions)
    for k, v in headers:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), key


class WSClient:
    """One client connection. connect() + handshake(), or WSClient.open(port, path) for both.

    deflate=True offers permessage-deflate (client_max_window_bits; extra parameters with
    deflate_params); once negotiated, RSV1 messages are inflated and send_*(compress=True)
    deflates outgoing ones.
    """

    def __init__(self, port, host="127.0.0.1", timeout=GUARD):
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._data = bytearray()
        self._pos = 0
        self.eof = False
        self.response = None
        self.extension = None  # the negotiated permessage-deflate parameters (dict) or None
        self._inflater = None
        self._deflater = None
        self.pings = []  # payloads of the server's pings, in order
        self.pongs = []  # payloads of the server's pongs, in order
        self.auto_pong = True

    @classmethod
    def open(cls, port, path="/", **kw):
        """Connect and complete the handshake, which must succeed (101)."""
        c = cls(port)
        try:
            r = c.handshake(path, **kw)
            if r.status != 101:
                raise AssertionError("handshake refused: %r" % (r,))
        except BaseException:
            c.close()
            raise
        return c

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- bytes ----------------------------------------------------------------------------------

    def send_raw(self, data):
        self.sock.sendall(data)

    def _buffered(self):
        return len(self._data) - self._pos

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self._data += data
        return True

    def _consume(self, n):
        self._pos += n
        if self._pos == len(self._data):
            self._data.clear()
            self._pos = 0
        elif self._pos >= COMPACT_MIN and 2 * self._pos >= len(self._data):
            del self._data[:self._pos]
            self._pos = 0

    def read_exact(self, n):
        have = self._buffered()
        if have >= n:
            out = bytes(self._data[self._pos:self._pos + n])
            self._consume(n)
            return out
        out = bytearray(n)
        out[:have] = self._data[self._pos:]
        self._data.clear()
        self._pos = 0
        with memoryview(out) as view:
            while have < n:
                try:
                    got = self.sock.recv_into(view[have:])
                except (ConnectionResetError, BrokenPipeError):
                    got = 0
                if not got:
                    self.eof = True
                    self._data = bytearray(out[:have])
                    raise EOFError("connection closed after %d of %d bytes" % (have, n))
                have += got
        return bytes(out)

    def read_line(self):
        scan = self._pos
        while True:
            end = self._data.find(b"\r\n", scan)
            if end >= 0:
                break
            scan = max(self._pos, len(self._data) - 1)
            if not self._fill():
                raise EOFError("connection closed in a line: %r" % bytes(self._data[self._pos:self._pos + 200]))
        line = bytes(self._data[self._pos:end])
        self._consume(end - self._pos + 2)
        return line

    def read_until_close(self):
        while self._fill():
            pass
        out = bytes(self._data[self._pos:])
        self._data.clear()
        self._pos = 0
        return out

    def wait_closed(self):
        """Read (and discard frames) until the server closes the TCP connection; returns every
        frame that came before the EOF. EOFError-free: a reset counts as closed."""
        frames = []
        while True:
            try:
                frames.append(self.recv_frame())
            except EOFError:
                return frames

    def is_closed_by_peer(self):
        if self._buffered():
            return False
        return not self._fill() and not self._buffered()

    # ---- handshake ----------------------------------------------------------------------------------

    def handshake(self, path="/", subprotocols=(), headers=(), deflate=False, deflate_params="",
                  extensions=None, version="13", key=None, send_after=b"", method="GET"):
        """Send the opening handshake (plus send_after in the same write) and read the answer; a
        non-101 answer is read with its body (Content-Length, chunked or until close)."""
        if deflate:
            extensions = "permessage-deflate; client_max_window_bits" + deflate_params
        req, key = handshake_request(path, key=key, subprotocols=subprotocols, extensions=extensions,
                                     headers=headers, version=version, method=method)
        self.send_raw(req + send_after)
        r = self.read_response_head()
        if r.status == 101:
            if r.headers_named("sec-websocket-accept") != [accept_key(key)]:
                raise ProtocolViolation("bad Sec-WebSocket-Accept %r" % r.headers_named("sec-websocket-accept"))
            exts = r.headers_named("sec-websocket-extensions")
            if exts and not extensions:  # RFC 6455 §4.1: an extension the client did not offer
                raise ProtocolViolation("extension %r answered but none offered" % exts)
            if len(exts) > 1:
                raise ProtocolViolation("several Sec-WebSocket-Extensions answers: %r" % exts)
            if (r.header("upgrade") or "").lower() != "websocket":
                raise ProtocolViolation("101 without Upgrade: websocket: %r" % (r,))
            if "upgrade" not in (r.header("connection") or "").lower():
                raise ProtocolViolation("101 without Connection: Upgrade: %r" % (r,))
            ext = r.header("sec-websocket-extensions")
            if ext:
                self._negotiated(ext)
        else:
            r.body = self._read_body(r)
        self.response = r
        return r

    def read_response_head(self):
        code, reason, _, headers, status_line, lines = read_head_with(self.read_line)
        return HandshakeResponse(code, reason, headers, b"", status_line + b"\r\n" + b"\r\n".join(lines))

    def _read_body(self, r):
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if te == "chunked":
            parts = []
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():
                        pass
                    return b"".join(parts)
                parts.append(self.read_exact(size))
                self.read_exact(2)
        if cl is not None:
            return self.read_exact(int(cl))
        if r.status in (204, 304) or r.status < 200:
            return b""
        return self.read_until_close()

    def _negotiated(self, ext):
        name, *params = [p.strip() for p in ext.split(";")]
        if name != "permessage-deflate" or "," in ext:
            raise ProtocolViolation("unexpected extension answer %r" % ext)
        p = {}
        for item in params:
            k, _, v = item.partition("=")
            p[k.strip()] = v.strip().strip('"') if v else True
        self.extension = p
        # Inflate with exactly the window the server agreed to use: a back-reference beyond it
        # ("invalid distance too far back") means the server ignored server_max_window_bits.
        self._server_bits = int(p["server_max_window_bits"]) if p.get("server_max_window_bits") not in (None, True) else 15
        self._inflater = zlib.decompressobj(-self._server_bits)
        bits = p.get("client_max_window_bits")
        self._client_bits = 15 if bits in (None, True) else max(9, int(bits))
        self._deflater = zlib.compressobj(6, zlib.DEFLATED, -self._client_bits)

    # ---- frames -------------------------------------------------------------------------------------

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length=None):
        self.send_raw(build_frame(opcode, payload, fin, rsv, mask, mask_key, length))

    def deflate(self, data):
        """permessage-deflate payload of one message (RFC 7692 §7.2.1)."""
        out = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        if self.extension.get("client_no_context_takeover"):
            self._deflater = zlib.compressobj(6, zlib.DEFLATED, -self._client_bits)
        return out[:-4]

    def send_text(self, text, compress=False):
        self.send_message(OP_TEXT, text.encode("utf-8"), compress=compress)

    def send_binary(self, data, compress=False):
        self.send_message(OP_BINARY, data, compress=compress)

    def send_message(self, opcode, payload, fragments=1, compress=False):
        """A data message, split into `fragments` frames of near-equal size."""
        rsv = 0
        if compress:
            payload = self.deflate(payload)
            rsv = 4
        if fragments <= 1:
            self.send_frame(opcode, payload, rsv=rsv)
            return
        step = max(1, -(-len(payload) // fragments))
        pieces = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        while len(pieces) < fragments:
            pieces.append(b"")
        out = bytearray()
        for i, piece in enumerate(pieces):
            out += build_frame(opcode if i == 0 else OP_CONT, piece, fin=(i == len(pieces) - 1),
                               rsv=rsv if i == 0 else 0)
        self.send_raw(out)

    def send_close(self, code=None, reason=""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def recv_frame(self):
        """The next frame as sent by the server, checked for what a server must never do."""
        b0, b1 = self.read_exact(2)
        fin, rsv, opcode = b0 >> 7, (b0 >> 4) & 7, b0 & 0xF
        if b1 & 0x80:
            raise ProtocolViolation("the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
            if n < 126:
                raise ProtocolViolation("length %d not in its minimal form (16 bits)" % n)
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
            if n < 65536 or n >> 63:
                raise ProtocolViolation("length %d not in its minimal form (64 bits)" % n)
        if opcode not in KNOWN_OPS:
            raise ProtocolViolation("the server used opcode %d" % opcode)
        if opcode >= 8 and (n > 125 or not fin):
            raise ProtocolViolation("bad control frame from the server (len %d, fin %d)" % (n, fin))
        if rsv and not (rsv == 4 and self.extension is not None and opcode in (OP_TEXT, OP_BINARY)):
            raise ProtocolViolation("the server set RSV bits %d on opcode %d" % (rsv, opcode))
        return Frame(fin, rsv, opcode, self.read_exact(n), n)

    def recv(self):
        """The next data message, or the server's Close (as a Message with is_close). Pings are
        recorded (and answered when auto_pong), pongs recorded."""
        parts = []
        first = None
        wire = 0
        nframes = 0
        while True:
            f = self.recv_frame()
            if f.opcode == OP_PING:
                self.pings.append(f.payload)
                if self.auto_pong:
                    self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                self.pongs.append(f.payload)
                continue
            if f.opcode == OP_CLOSE:
                if first is not None:
                    pass  # a Close may interrupt a fragmented message
                code, reason = parse_close(f.payload)
                return Message(OP_CLOSE, code=code, reason=reason, wire_len=f.wire_len)
            if first is None:
                if f.opcode == OP_CONT:
                    raise ProtocolViolation("continuation frame without a message")
                first = f
            elif f.opcode != OP_CONT:
                raise ProtocolViolation("new message inside a fragmented one")
            parts.append(f.payload)
            wire += f.wire_len
            nframes += 1
            if f.fin:
                break
        payload = b"".join(parts)
        compressed = bool(first.rsv & 4)
        if compressed:
            payload = self._inflater.decompress(payload + b"\x00\x00\xff\xff")
            if self.extension.get("server_no_context_takeover"):
                self._inflater = zlib.decompressobj(-self._server_bits)
        if first.opcode == OP_TEXT:
            try:
                data = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolViolation("the server sent invalid UTF-8 in a text message")
        else:
            data = payload
        return Message(first.opcode, data, compressed=compressed, wire_len=wire, frames=nframes)

    def recv_data(self):
        """The next data message's data; a Close instead is a failure."""
        m = self.recv()
        if m.is_close:
            raise AssertionError("expected a message, got %r" % (m,))
        return m.data

    def recv_close(self):
        """Skip data messages until the server's Close; returns (code, reason)."""
        while True:
            m = self.recv()
            if m.is_close:
                return m.code, m.reason

    def close_handshake(self, code=1000, reason=""):
        """Send a Close, read until the server's Close (returned as (code, reason)), then expect
        the server to close the TCP connection (RFC 6455 §7.1.1: the server closes first)."""
        self.send_close(code, reason)
        answer = self.recv_close()
        if not self.is_closed_by_peer():
            raise ProtocolViolation("data after the server's Close frame")
        self.close()  # the server half-closed or closed: finish the TCP close on our side
        return answer

    def server_close(self):
        """The server closes: its Close (code, reason), our answering Close, then EOF. A server
        that just drops the connection gives (None, None)."""
        return self.expect_failure_close()

    def expect_failure_close(self):
        """After a protocol error: the server's Close (code, reason), then EOF. A server that just
        drops the connection gives (None, None)."""
        try:
            code, reason = self.recv_close()
        except EOFError:
            self.close()
            return None, None
        try:
            self.send_close(code if code not in (1005, 1006, None) else 1000)
        except OSError:
            pass
        self.wait_closed()
        self.close()
        return code, reason


# ---- asyncio: many connections at once (a lightweight client, no extensions) --------------------------

async def aopen(port, path="/", host="127.0.0.1"):
    import asyncio
    reader, writer = await asyncio.open_connection(host, port)
    req, key = handshake_request(path, host=host)
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        writer.close()
        raise AssertionError("handshake refused: %r" % head)
    want = accept_key(key).encode()
    if want not in head:
        writer.close()
        raise ProtocolViolation("bad Sec-WebSocket-Accept: %r" % head)
    return reader, writer


async def arecv(reader):
    """The next frame (opcode, payload) from an asyncio reader; no fragmentation expected."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0xF, await reader.readexactly(n)
