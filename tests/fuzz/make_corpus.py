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
    seeds = {"request": {}, "scgi": {}, "ws": {}, "http": {}, "server": {}, "server_ws": {}}
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

    # fuzz_server: the server (0 epoll WSGI inline, 1 epoll WSGI threads, 2 scgi-auto WSGI,
    # 3 scgi-only WSGI, 4 scgi-auto ASGI), a split seed, the connection's bytes. The apps pick
    # what to do by the path's first letter (apps/fuzz_server_apps.py).
    v = seeds["server"]

    def req(method, path, body=b"", headers=(), version=b"1.1", chunked=False):
        h = b"%s %s HTTP/%s\r\nHost: fuzz\r\n" % (method, path, version)
        h += b"".join(b"%s: %s\r\n" % kv for kv in headers)
        if chunked:
            h += b"Transfer-Encoding: chunked\r\n\r\n"
            return h + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:3], body[3:]) if c) \
                + b"0\r\n\r\n"
        if body or method in (b"POST", b"PUT"):
            h += b"Content-Length: %d\r\n" % len(body)
        return h + b"\r\n" + body

    every_op = (req(b"POST", b"/e", b"hello") + req(b"POST", b"/l5", b"a\nbb\nccc") +
                req(b"POST", b"/r3", b"abcdefg") + req(b"GET", b"/s3") +
                req(b"POST", b"/w4", b"written") + req(b"GET", b"/f3") + req(b"GET", b"/fA") +
                req(b"GET", b"/cC") + req(b"GET", b"/cS") + req(b"POST", b"/n", b"unread") +
                req(b"HEAD", b"/e") + req(b"GET", b"/t"))
    # Failures last: one inside the iterable cuts the connection.
    failing = req(b"GET", b"/x0") + req(b"GET", b"/y") + req(b"GET", b"/x2") + req(b"GET", b"/x1")
    for k in (0, 1, 2, 4):
        v["%d_every_op" % k] = bytes([k, 7]) + every_op
        v["%d_failing" % k] = bytes([k, 8]) + failing
        v["%d_chunked" % k] = bytes([k, 3]) + req(b"POST", b"/e", b"chunked body", chunked=True) + \
            req(b"POST", b"/s5", b"stream me", chunked=True) + req(b"GET", b"/d")
        v["%d_continue" % k] = bytes([k, 9]) + req(b"PUT", b"/e", b"abc",
                                                   headers=((b"Expect", b"100-continue"),))
        v["%d_http10" % k] = bytes([k, 1]) + req(b"GET", b"/s2", version=b"1.0") + \
            req(b"GET", b"/e", version=b"1.0", headers=((b"Connection", b"keep-alive"),))
        v["%d_proxy" % k] = bytes([k, 5]) + req(b"GET", b"/?q=1", headers=(
            (b"X-Forwarded-For", b"203.0.113.7, 10.0.0.1"), (b"X-Forwarded-Proto", b"https"),
            (b"Forwarded", b'for="[2001:db8::1]:4711";proto=https;host=example.com'),
            (b"Authorization", b"Basic dXNlcjpwYXNz"), (b"User-Agent", b"fuzz"),
            (b"Referer", b"http://x/")))
    v["0_too_big"] = bytes([0, 2]) + req(b"POST", b"/e", b"x" * 400) + req(b"GET", b"/e")
    v["4_trailers_pathsend"] = bytes([4, 4]) + req(b"POST", b"/t", b"body") + req(b"GET", b"/f")
    v["4_websocket"] = bytes([4, 6]) + (b"GET /e HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                        b"Connection: Upgrade\r\nSec-WebSocket-Key: "
                                        b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
                                        b"\r\n\r\n\x81\x85abcd" + bytes(c ^ b"abcd"[i % 4]
                                                                  for i, c in enumerate(b"hello")))
    for k in (2, 3, 4):
        for op, body in ((b"/e", b"hello"), (b"/s3", b""), (b"/f3", b""), (b"/x1", b""),
                         (b"/l2", b"a\nb\nc")):
            pairs = [(b"CONTENT_LENGTH", b"%d" % len(body)), (b"SCGI", b"1"),
                     (b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", op), (b"PATH_INFO", op),
                     (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"HTTP_HOST", b"fuzz"),
                     (b"REMOTE_ADDR", b"192.0.2.1"), (b"REMOTE_PORT", b"5000")]
            name = op[1:2].decode()
            v["%d_scgi_%s" % (k, name)] = bytes([k, 3]) + scgi_netstring(pairs) + body
            v["%d_uwsgi_%s" % (k, name)] = bytes([k, 3]) + uwsgi_packet(pairs[:1] + pairs[2:]) + body

    # fuzz_server_ws: flags (offer, subprotocols, path), a split seed, then operations: raw bytes
    # (0), one frame (1: its first byte, a length-prefixed payload), a message in fragments
    # (2: bits 2 binary, 3-4 fragments - 1, 5 compressed, 6 pings between, 7 a close after),
    # a large frame (3: 16-bit length, fill byte).
    w = seeds["server_ws"]

    def frame(b0, payload):
        return bytes([1, b0]) + span(payload)

    def message(payload, binary=False, parts=1, deflate=False, pings=False, close=False):
        op = 2 | (4 if binary else 0) | ((parts - 1) << 3) | (32 if deflate else 0) | \
            (64 if pings else 0) | (128 if close else 0)
        return bytes([op]) + span(payload)

    close = frame(0x88, struct.pack(">H", 1000) + b"bye")
    sync = bytes([0, 0])
    w["echo"] = bytes([0, 1]) + message(b"hello") + message(bytes(range(100)), binary=True) + \
        frame(0x89, b"ping") + message(b"fragmented message", parts=3, pings=True) + sync + close
    w["deflate"] = bytes([1, 2]) + message(b"hello hello hello", deflate=True) + sync + \
        message(b"compressed in parts " * 5, parts=2, deflate=True) + sync + \
        message(b"big", deflate=True) + sync + close
    w["deflate_params"] = bytes([2 | 4 | (1 << 3), 3]) + message(b"abc" * 50, deflate=True) + \
        message(b"close", close=False)
    w["offer_from_input"] = bytes([3, 4]) + span(b"permessage-deflate; client_max_window_bits=9; "
                                                 b"client_no_context_takeover") + \
        message(b"x" * 200, deflate=True, binary=True) + close
    w["deny"] = bytes([2 << 3, 5]) + message(b"never read")
    w["app_close"] = bytes([0, 6]) + message(b"close now") + message(b"after close")
    w["app_big_fail"] = bytes([0, 7]) + message(b"big" * 20) + sync + message(b"fail")
    w["too_big"] = bytes([0, 8]) + bytes([3 | (1 << 2)]) + struct.pack("<H", 5000) + b"a" + close
    w["bad_utf8"] = bytes([0, 9]) + message(b"\xff\xfe") + close
    w["unmasked"] = bytes([0, 10]) + bytes([1 | 4, 0x81]) + span(b"hi")
    w["path_from_input"] = bytes([3 << 3 | 32, 11]) + span(b"/echo?x=1") + \
        span(b"Sec-WebSocket-Protocol: a\r\nOrigin: http://x\r\n") + message(b"hi") + close

    for target, files in seeds.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(data)


if __name__ == "__main__":
    main()
