"""WebSocket under load, libwsgi-epoll and uvicorn 0.17 (`--ws websockets`) with the same assertions:
1,000 concurrent connections on one worker, and memory bounded both ways when one side does not
read (an app sending to a client that does not read; a client flooding an app that does not
receive). Memory is the server's peak RSS (VmHWM) growth during the test, on a fresh server.

No timed assertion: "the sender is stalled" is decided by seeing no progress for a while, which
only decides when to stop pushing; the memory bound and the final counts hold however fast the
machine is (on a slow one the test is merely less strict).
"""

import asyncio
import hashlib
import resource
import socket
import struct
import time

import pytest

from conftest import vm_hwm_kib
from wsreport import report, token, wait_report
from wsclient import GUARD, OP_BINARY, OP_CLOSE, OP_PING, WSClient, aopen, arecv, build_frame, close_payload

KINDS = ["epoll", "uvicorn"]
APP = "ws_app:app"
STALL = 1.0  # seconds without progress after which a sender is taken as blocked by backpressure


def server_args(kind, *args):
    return list(args) + (["--ws", "websockets"] if kind == "uvicorn" else [])


@pytest.fixture
def start(spawn):
    def _start(kind, *args):
        return spawn(kind, APP, *server_args(kind, *args))
    return _start


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, n))
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


# ---- 1,000 concurrent connections ----------------------------------------------------------------------

N_CONC = 1000


@pytest.mark.parametrize("kind", KINDS)
def test_1000_concurrent_connections(start, kind):
    raise_nofile(2 * N_CONC + 200)  # before the server starts: it inherits the limit
    s = start(kind)
    t = token()

    async def main():
        sem = asyncio.Semaphore(64)  # handshakes in flight at once; all stay open afterwards

        async def open_one():
            async with sem:
                return await aopen(s.port, "/count?token=" + t)

        conns = await asyncio.gather(*(open_one() for _ in range(N_CONC)))
        # Every connection is open at once: the app counted them all.
        await asyncio.get_running_loop().run_in_executor(
            None, wait_report, t, lambda r: r.get("peak", 0) >= N_CONC, "%d open connections" % N_CONC)

        async def exchange(i, reader, writer):
            msg = b"connection %d says hello" % i
            writer.write(build_frame(OP_BINARY, msg))
            op, data = await arecv(reader)
            assert (op, data) == (OP_BINARY, msg)
            writer.write(build_frame(OP_CLOSE, close_payload(1000)))
            op, data = await arecv(reader)
            assert op == OP_CLOSE and data[:2] == struct.pack("!H", 1000)
            assert await reader.read() == b""  # the server closes after the close handshake
            writer.close()

        await asyncio.gather(*(exchange(i, r, w) for i, (r, w) in enumerate(conns)))
        return len(conns)

    assert asyncio.run(asyncio.wait_for(main(), 3 * GUARD)) == N_CONC
    assert report(t)["peak"] == N_CONC
    # Still serving.
    with WSClient.open(s.port, "/echo") as c:
        c.send_text("after the crowd")
        assert c.recv_data() == "after the crowd"


# ---- backpressure --------------------------------------------------------------------------------------------

MIB = 1 << 20
BOUND_MIB = 48


OUT_FLOODS = {
    # messages, bytes each, allowed peak RSS growth (MiB)
    "1MiB-messages": (128, MIB, BOUND_MIB),  # 128 MiB
    # 600,000 empty messages: 1.2 MB on the wire, but each queued message costs memory of its own,
    # so what holds send() back must count messages, not only payload bytes
    "empty-messages": (600000, 0, 24),
}


@pytest.mark.rss
@pytest.mark.parametrize("flood", sorted(OUT_FLOODS))
@pytest.mark.parametrize("kind", KINDS)
def test_app_sending_to_a_client_that_does_not_read(start, kind, flood):
    """The app sends message after message; the client reads nothing until the app's send() stops
    making progress (or the app is done). The server must hold the app (send() waits) instead of
    queueing it all. Then the client reads everything: all of it arrives, in order, intact."""
    s = start(kind)
    t = token()
    n, size, bound = OUT_FLOODS[flood]
    c = WSClient(s.port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    try:
        before = vm_hwm_kib(s.pid)  # before the handshake: the app starts sending at its accept
        assert c.handshake("/flood-out?n=%d&size=%d&token=%s" % (n, size, t)).status == 101
        last, since = -1, time.monotonic()
        while True:
            r = report(t) or {}
            sent = r.get("sent", 0)
            if r.get("done") or "error" in r:
                break
            if sent != last:
                last, since = sent, time.monotonic()
            elif time.monotonic() - since > STALL:
                break
            time.sleep(0.02)
        growth = (vm_hwm_kib(s.pid) - before) / 1024
        assert "error" not in (report(t) or {}), report(t)
        assert growth < bound, "peak RSS grew by %.1f MiB while the app sent %d messages of %d bytes to a " \
                               "client that did not read (%d sent)" % (growth, n, size, last)
        if size:
            block = bytes(range(256)) * (size // 256)
            for i in range(n):
                data = c.recv_data()
                assert len(data) == size and data[:4] == struct.pack("!I", i) and data[4:] == block[4:]
        else:
            assert c.read_exact(2 * n) == b"\x82\x00" * n  # n empty binary frames, nothing else
        wait_report(t, lambda r: r.get("done"), "the end of the flood")
        assert c.close_handshake(1000)[0] == 1000
    finally:
        c.close()


FLOODS = {
    # messages, bytes each, messages per write, allowed peak RSS growth (MiB)
    "256KiB-messages": (512, 256 * 1024, 1, BOUND_MIB),  # 128 MiB
    # 100,000 messages of 16 bytes (2.2 MB on the wire, may all fit in the socket buffers): queued
    # as Python events they would take tens of MiB
    "16-byte-messages": (100000, 16, 1000, 16),
}


@pytest.mark.rss
@pytest.mark.parametrize("flood", sorted(FLOODS))
@pytest.mark.parametrize("kind", KINDS)
def test_client_flooding_an_app_that_does_not_receive(start, kind, flood):
    """The client floods an app that calls receive() only once released; the server must stop
    reading the socket instead of queueing what arrives. Then everything arrives, in order."""
    s = start(kind)
    t = token()
    n, size, batch, bound = FLOODS[flood]
    filler = b"\xab" * (size - 8)
    n_chunks = -(-n // batch)

    def chunk_of(j):  # messages j*batch.. numbered, so the app can tell order and duplicates
        return b"".join(build_frame(OP_BINARY, struct.pack("!Q", i) + filler, mask_key=b"\0\0\0\0")
                        for i in range(j * batch, min(n, (j + 1) * batch)))  # a zero key: no XOR cost

    c = WSClient.open(s.port, "/hold?token=" + t)
    try:
        wait_report(t, lambda r: r.get("accepted"), "the accept")
        before = vm_hwm_kib(s.pid)
        c.sock.setblocking(False)
        chunk = chunk_of(0)
        view = memoryview(chunk)
        sent, off = 0, 0  # whole chunks sent, bytes of the current one
        since = time.monotonic()
        while sent < n_chunks:
            try:
                k = c.sock.send(view[off:])
            except BlockingIOError:
                if time.monotonic() - since > STALL:
                    break
                time.sleep(0.005)
                continue
            since = time.monotonic()
            off += k
            if off == len(chunk):
                sent, off = sent + 1, 0
                if sent < n_chunks:
                    chunk = chunk_of(sent)
                    view = memoryview(chunk)
        # What sits in the server's socket buffer may still be being read: let its peak RSS settle.
        last, since = -1, time.monotonic()
        while time.monotonic() - since < STALL:
            hwm = vm_hwm_kib(s.pid)
            if hwm != last:
                last, since = hwm, time.monotonic()
            time.sleep(0.05)
        growth = (vm_hwm_kib(s.pid) - before) / 1024
        assert growth < bound, "peak RSS grew by %.1f MiB while a client pushed %d messages of %d bytes " \
                               "to an app that did not receive" % (growth, sent * batch, size)
        if size * n > (64 << 20):
            assert sent < n_chunks, "the server read all %d MiB without the app receiving" % (n * size >> 20)
        # Release the app; everything still arrives.
        c.sock.settimeout(GUARD)
        with socket.create_connection(("127.0.0.1", s.port), timeout=GUARD) as h:
            h.sendall(b"GET /release?token=%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % t.encode())
            assert h.recv(100).startswith(b"HTTP/1.1 200")
        if sent < n_chunks:
            c.sock.sendall(view[off:])
            for j in range(sent + 1, n_chunks):
                c.sock.sendall(chunk_of(j))
        assert c.close_handshake(1000)[0] == 1000
    finally:
        c.close()
    r = wait_report(t, lambda r: "disconnect" in r, "the end")
    assert (r["count"], r["size"]) == (n, n * size)
    assert r["seq"] == hashlib.sha256(b"".join(struct.pack("!Q", i) for i in range(n))).hexdigest(), \
        "messages reordered, lost or repeated across the pause"


@pytest.mark.rss
@pytest.mark.parametrize("kind", KINDS)
def test_ping_flood_from_a_client_that_does_not_read(start, kind):
    """A client sends pings (125 bytes each) and never reads the pongs: the server must stop
    reading it once pongs pile up, not queue one pong per ping without limit. Up to 600,000 pings
    (76 MB on the wire) or until the client cannot send any more."""
    s = start(kind)
    batch = build_frame(OP_PING, b"p" * 125, mask_key=b"\0\0\0\0") * 1000
    c = WSClient.open(s.port, "/echo")
    try:
        before = vm_hwm_kib(s.pid)
        c.sock.setblocking(False)
        view = memoryview(batch)
        batches, off = 0, 0
        since = time.monotonic()
        while batches < 600:
            try:
                k = c.sock.send(view[off:])
            except BlockingIOError:
                if time.monotonic() - since > STALL:
                    break
                time.sleep(0.005)
                continue
            since = time.monotonic()
            off += k
            if off == len(batch):
                batches, off = batches + 1, 0
        growth = (vm_hwm_kib(s.pid) - before) / 1024
        assert growth < BOUND_MIB / 2, "peak RSS grew by %.1f MiB while a client sent %d pings without " \
                                       "reading the pongs" % (growth, batches * 1000)
    finally:
        c.close()
    with WSClient.open(s.port, "/echo") as c:  # still serving
        c.send_text("after the flood")
        assert c.recv_data() == "after the flood"


@pytest.mark.rss
@pytest.mark.parametrize("kind", KINDS)
def test_compressed_flood_to_an_app_that_does_not_receive(start, kind):
    """permessage-deflate: 400 messages of 1 MiB of zeros, about 1 KiB each on the wire (all of it
    fits in the socket buffers), to an app that does not receive until released. The server must
    stop inflating once its queue is full, not inflate 400 MiB into memory."""
    s = start(kind)
    t = token()
    n, size = 400, MIB
    c = WSClient.open(s.port, "/hold?token=" + t, deflate=True)
    try:
        assert c.extension is not None, c.response
        wait_report(t, lambda r: r.get("accepted"), "the accept")
        payload = c.deflate(bytes(size))
        frame = build_frame(OP_BINARY, payload, rsv=4, mask_key=b"\0\0\0\0")
        before = vm_hwm_kib(s.pid)
        c.sock.setblocking(False)
        view = memoryview(frame)
        sent_msgs, off = 0, 0
        since = time.monotonic()
        while sent_msgs < n:
            try:
                k = c.sock.send(view[off:])
            except BlockingIOError:
                if time.monotonic() - since > STALL:
                    break
                time.sleep(0.005)
                continue
            since = time.monotonic()
            off += k
            if off == len(frame):
                sent_msgs, off = sent_msgs + 1, 0
        # Give the server the time to (wrongly) inflate what sits in its socket buffer: poll the
        # peak RSS until it stops moving, then judge it.
        last, since = -1, time.monotonic()
        while time.monotonic() - since < STALL:
            hwm = vm_hwm_kib(s.pid)
            if hwm != last:
                last, since = hwm, time.monotonic()
            time.sleep(0.05)
        growth = (vm_hwm_kib(s.pid) - before) / 1024
        assert growth < BOUND_MIB, "peak RSS grew by %.1f MiB while a client sent %d compressed MiB to " \
                                   "an app that did not receive" % (growth, sent_msgs)
        c.sock.settimeout(GUARD)
        with socket.create_connection(("127.0.0.1", s.port), timeout=GUARD) as h:
            h.sendall(b"GET /release?token=%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % t.encode())
            assert h.recv(100).startswith(b"HTTP/1.1 200")
        if off:
            c.sock.sendall(view[off:])
            sent_msgs += 1
        for _ in range(n - sent_msgs):
            c.sock.sendall(frame)
        assert c.close_handshake(1000)[0] == 1000
    finally:
        c.close()
    r = wait_report(t, lambda r: "disconnect" in r, "the end")
    assert (r["count"], r["size"]) == (n, n * size)
