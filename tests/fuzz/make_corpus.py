#!/usr/bin/python3
"""Writes the seed corpus (corpus/<target>/) of the fuzz targets: a few well-formed inputs in
each target's input layout, from which libFuzzer's mutations start. Run again after changing a
target's layout: /usr/bin/python3 tests/fuzz/make_corpus.py. Standard library only."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def span(b):
    if isinstance(b, str):
        b = b.encode("latin-1")
    if len(b) >= 255:
        return bytes([255]) + struct.pack("<H", len(b)) + b
    return bytes([len(b)]) + b


def request(which, method="GET", target="/", headers=(), scheme=None, server=None, client=None,
            body=None, extra=(), sets=(), major=1, minor=1, sport=8080, cport=54321, cl=None):
    f = (1 if scheme is not None else 0) | (2 if server is not None else 0) \
        | (4 if client is not None else 0) | (8 if body is not None else 0)
    if cl is not None:
        f |= 1 << 4
    out = bytes([which, f, 0, major, minor]) + struct.pack("<HH", sport, cport) + bytes([0])
    if cl is not None:
        out += struct.pack("<H", cl)
    out += span(method) + span(target) + span(scheme or "") + span(server or "") + span(client or "")
    out += bytes([len(headers)]) + b"".join(span(n) + span(v) for n, v in headers)
    out += bytes([len(extra)]) + b"".join(span(n) + span(v) for n, v in extra)
    out += bytes([len(sets)]) + b"".join(span(n) + span(v) for n, v in sets)
    return out + (body or b"")


def scgi_netstring(pairs):
    payload = b"".join(n + b"\0" + v + b"\0" for n, v in pairs)
    return str(len(payload)).encode() + b":" + payload + b","


def uwsgi_packet(pairs):
    vars_ = b"".join(struct.pack("<H", len(n)) + n + struct.pack("<H", len(v)) + v for n, v in pairs)
    return b"\0" + struct.pack("<H", len(vars_)) + b"\0" + vars_


def ws_frame(opcode, payload, fin=True, rsv1=False, mask=b"\x11\x22\x33\x44"):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n < 65536:
        hdr = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return hdr + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def deflate_msg(data):
    z = zlib.compressobj(wbits=-15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\0\0\xff\xff") else out


def main():
    seeds = {"request": {}, "scgi": {}, "ws": {}, "http": {}}
    hdrs = (("Host", "example.com"), ("User-Agent", "curl/8.0"), ("Accept", "*/*"))
    for which, kind in ((0, "wsgi"), (1, "asgi"), (2, "ws")):
        r = seeds["request"]
        r[kind + "_get"] = request(which, target="/hello?x=1&y=%20z", headers=hdrs,
                                   server="example.com", client="127.0.0.1")
        r[kind + "_post"] = request(which, "POST", "/submit", headers=hdrs + (
            ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "7")),
            body=b"a=1&b=2", cl=7, scheme="https", sport=443)
        r[kind + "_absolute"] = request(which, "OPTIONS", "http://h/p%2Fq;x?%ff", minor=0,
                                        headers=(("X-A", "1"), ("x-a", "2"), ("X_B", "u")),
                                        extra=(("SCRIPT_NAME", "/app"), ("REMOTE_USER", "bob")),
                                        sets=(("wsgi.x", "y"),))
        r[kind + "_star"] = request(which, "OPTIONS", "*", client="::1", cport=0)
    seeds["request"]["ws_upgrade"] = request(2, target="/chat", headers=hdrs + (
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat, superchat")), body="héllo".encode())

    settings = bytes([0, 64, 0, 0, 0, 7])
    lighttpd = [(b"CONTENT_LENGTH", b"5"), (b"REQUEST_METHOD", b"POST"),
                (b"REQUEST_URI", b"/app/x?q=1"), (b"QUERY_STRING", b"q=1"),
                (b"SCRIPT_NAME", b"/app"), (b"PATH_INFO", b"/x"),
                (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"REQUEST_SCHEME", b"http"),
                (b"SERVER_PORT", b"80"), (b"SERVER_NAME", b"localhost"),
                (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
                (b"HTTP_HOST", b"localhost"), (b"HTTP_CONTENT_LENGTH", b"5"),
                (b"CONTENT_TYPE", b"text/plain"), (b"HTTP_X_FOO_BAR", b"baz")]
    s = seeds["scgi"]
    s["scgi_lighttpd"] = settings + scgi_netstring(lighttpd + [(b"SCGI", b"1")]) + b"hello"
    s["uwsgi_lighttpd"] = settings + uwsgi_packet(lighttpd) + b"hello"
    s["scgi_minimal"] = settings + scgi_netstring([(b"CONTENT_LENGTH", b"0"), (b"SCGI", b"1"),
                                                   (b"REQUEST_METHOD", b"GET"),
                                                   (b"REQUEST_URI", b"/")])
    s["uwsgi_https"] = settings + uwsgi_packet([(b"REQUEST_METHOD", b"GET"),
                                                (b"REQUEST_URI", b"/"), (b"HTTPS", b"on"),
                                                (b"SERVER_PROTOCOL", b"HTTP/2.0")])
    s["http"] = settings + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"

    w = seeds["ws"]
    pmd = b"permessage-deflate; client_max_window_bits"
    w["plain"] = bytes([2]) + span(b"") + bytes([5]) + ws_frame(1, b"hello") + \
        ws_frame(2, bytes(range(200))) + ws_frame(9, b"ping") + \
        ws_frame(1, b"frag", fin=False) + ws_frame(0, b"ment") + \
        ws_frame(8, struct.pack(">H", 1000) + b"bye")
    w["deflate"] = bytes([2]) + span(pmd) + bytes([9]) + \
        ws_frame(1, deflate_msg(b"hello hello hello"), rsv1=True) + \
        ws_frame(2, deflate_msg(bytes(300)), rsv1=True) + ws_frame(1, b"plain")
    w["deflate_no_ctx"] = bytes([2 | 8]) + span(b"x-unknown, permessage-deflate; "
                                                b"server_no_context_takeover; "
                                                b"client_no_context_takeover; "
                                                b"server_max_window_bits=10") + \
        span(b"permessage-deflate") + bytes([3]) + \
        ws_frame(1, deflate_msg(b"abc" * 100), rsv1=True) + ws_frame(8, b"")
    w["too_big"] = bytes([0]) + span(b"") + bytes([1]) + ws_frame(2, bytes(100))
    w["close_1byte"] = bytes([1]) + span(b"") + bytes([1]) + ws_frame(8, b"\x03")

    h = seeds["http"]
    keep = bytes([0x80, 0x80, 0, 5, 0])
    get = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n"
    post = b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    h["pipelined"] = keep + get + post + chunked + get
    h["drained"] = bytes([0x80, 0x80, 0xff, 9, 0]) + post + chunked + get
    h["expect_continue"] = keep + (b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                   b"Content-Length: 3\r\n\r\nabc")
    h["http10"] = keep + b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get
    h["absolute"] = keep + b"OPTIONS http://h:8/p%20q?x HTTP/1.1\r\nHost: h\r\n\r\n"
    h["upgrade"] = keep + (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           b"Sec-WebSocket-Version: 13\r\n\r\n\x81\x85abcd")
    h["smuggle"] = keep + (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    h["big_body_limit"] = bytes([0x10, 0x01, 0, 1, 0]) + post
    scgi_mode = bytes([0x80, 0x80, 0, 3, 7])
    h["scgi"] = scgi_mode + scgi_netstring(lighttpd + [(b"SCGI", b"1")]) + b"hello"
    h["uwsgi"] = scgi_mode + uwsgi_packet(lighttpd) + b"hello"
    h["scgi_drained"] = bytes([0x80, 0x80, 1, 3, 1]) + scgi_netstring(lighttpd + [(b"SCGI", b"1")]) + b"hello"
    h["scgi_mode_http"] = scgi_mode + get

    for target, files in seeds.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(data)


if __name__ == "__main__":
    main()
