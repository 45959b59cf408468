"""The system calls behind the HTTP bullets that have no other visible effect: TCP_NODELAY on
accepted sockets, the response head and body leaving in one vectored write (sendmsg with several
iovecs: writev semantics plus MSG_NOSIGNAL), and sendfile(2) for wsgi.file_wrapper. The server
runs under strace; the test reads the trace it wrote. The same for an ASGI app (head and body in one
sendmsg, sendfile for http.response.pathsend). And a WebSocket whose frame head arrives in pieces is
not read again and again until the rest comes."""

import os
import re
import signal
import subprocess

import pytest

from conftest import EPOLL, Server, TEST_APPS, EXAMPLE_APPS, free_port
from httpclient import Conn, wait_for
from wsclient import OP_PING, WSClient, build_frame


def run_traced(tmp_path, app, *args, calls="setsockopt,sendmsg,writev,sendfile", endpoints=False):
    """endpoints: strace -yy, each descriptor with its TCP endpoints (a connection's calls are
    told by its port)."""
    trace = tmp_path / "trace.log"
    port = free_port()
    argv = ["strace", "-f", "-qq"] + (["-yy"] if endpoints else []) + [
            "-s", "256", "-o", str(trace), "-e", "trace=" + calls,
            EPOLL, "--app", app, "--pythonpath", TEST_APPS, "--pythonpath", EXAMPLE_APPS,
            "--bind", "127.0.0.1:%d" % port] + list(args)
    s = Server("strace-epoll", argv, port=port)
    s.trace = trace
    try:
        yield s.wait_ready()
    finally:
        # strace's child is the server: stop it, strace then exits by itself.
        children = []
        try:
            with open("/proc/%d/task/%d/children" % (s.pid, s.pid)) as f:
                children = [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        if not children:
            s.signal(signal.SIGTERM)
        s.wait()


@pytest.fixture
def traced(tmp_path):
    yield from run_traced(tmp_path, "corners:app", "--threads", "2")


@pytest.fixture
def traced_asgi(tmp_path):
    yield from run_traced(tmp_path, "asgi_corners:app")


@pytest.fixture
def traced_ws(tmp_path):
    yield from run_traced(tmp_path, "ws_app:app", calls="recvfrom,sendmsg", endpoints=True)


def test_nodelay_vectored_head_and_body_and_sendfile(traced):
    with Conn(traced.port) as c:
        assert c.request("GET", "/hello").body == b"Hello, World!\n"
        r = c.request("GET", "/file?size=1048576")
        assert len(r.body) == 1048576

    def trace():
        return traced.trace.read_text()
    # A whole line: strace may be caught writing it (seen under load: "sendfile(12, 13, [0]").
    wait_for(lambda: re.search(r"sendfile\(.*\) = ", trace()),
             "a whole sendfile line in the trace")
    text = trace()
    assert re.search(r"setsockopt\(\d+, SOL_TCP, TCP_NODELAY, \[1\], 4\) = 0", text), text
    # "HTTP/1.1 200 OK..." and "Hello, World!\n" in one call: two iovecs, 14-byte body last.
    hello = [l for l in text.splitlines() if "sendmsg(" in l and "Hello, World!" in l]
    assert hello, text
    assert "HTTP/1.1 200 OK" in hello[0] and "msg_iovlen=2" in hello[0], hello[0]
    assert re.search(r"sendfile\(\d+, \d+, \[\d+\] => \[\d+\], \d+\) = \d+", text), text


def test_asgi_head_and_body_in_one_write_and_pathsend(traced_asgi, tmp_path):
    data = os.urandom(1048576)
    (tmp_path / "payload.bin").write_bytes(data)
    with Conn(traced_asgi.port) as c:
        assert c.request("GET", "/hello").body == b"Hello, World!\n"
        assert c.request("GET", "/pathsend?path=%s" % (tmp_path / "payload.bin")).body == data

    def trace():
        return traced_asgi.trace.read_text()
    # A whole line: strace may be caught writing it (seen under load: "sendfile(12, 13, [0]").
    wait_for(lambda: re.search(r"sendfile\(.*\) = ", trace()),
             "a whole sendfile line in the trace")
    text = trace()
    assert re.search(r"setsockopt\(\d+, SOL_TCP, TCP_NODELAY, \[1\], 4\) = 0", text), text
    # The head and the (small, copied) body leave in one sendmsg.
    hello = [l for l in text.splitlines() if "sendmsg(" in l and "Hello, World!" in l]
    assert hello, text
    assert "HTTP/1.1 200 OK" in hello[0], hello[0]
    assert re.search(r"sendfile\(\d+, \d+, \[0\] => \[\d+\], \d+\) = \d+", text), text


def test_websocket_frame_head_in_pieces_is_not_read_in_a_loop(traced_ws):
    """A frame head (or control frame) that arrived in part waits in the connection's buffer for
    its end (ws_conn.c, frame_gate): that end comes from the socket, so the connection waits for
    EPOLLIN. It was armed for EPOLLOUT (as for whole frames left in the buffer), always ready: the
    loop read the socket for nothing at every turn, a core spinning for as long as the client
    held the rest back. Here another connection's twenty echoes make the loop turn; the first
    connection's socket must not be read meanwhile."""
    with WSClient.open(traced_ws.port, "/echo") as c:
        c.send_text("before")
        assert c.recv_data() == "before"
        cport = c.sock.getsockname()[1]
        ping = build_frame(OP_PING, b"late ping")
        c.send_raw(ping[:1])
        with WSClient.open(traced_ws.port, "/echo") as other:
            for k in range(20):
                other.send_text("turn %d" % k)
                assert other.recv_data() == "turn %d" % k
        c.send_raw(ping[1:])
        c.send_text("after-the-ping")
        assert c.recv_data() == "after-the-ping"
        assert c.pongs == [b"late ping"]

    def trace():
        return traced_ws.trace.read_text()
    wait_for(lambda: "after-the-ping" in trace(), "the echo in the trace")
    mine = "->127.0.0.1:%d]" % cport
    idle = [l for l in trace().splitlines() if "recvfrom(" in l and mine in l and "EAGAIN" in l]
    # Whole frames never need more than one read that finds nothing per EPOLLIN; twenty loop
    # turns spent reading it would be twenty or more.
    assert len(idle) <= 3, "\n".join(idle)
