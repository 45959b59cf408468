"""The system calls behind the HTTP bullets that have no other visible effect: TCP_NODELAY on
accepted sockets, the response head and body leaving in one vectored write (sendmsg with several
iovecs: writev semantics plus MSG_NOSIGNAL), and sendfile(2) for wsgi.file_wrapper. The server
runs under strace; the test reads the trace it wrote. The same for an ASGI app (head and body in one
sendmsg, sendfile for http.response.pathsend)."""

import os
import re
import signal
import subprocess

import pytest

from conftest import EPOLL, Server, TEST_APPS, EXAMPLE_APPS, free_port
from httpclient import Conn, wait_for


def run_traced(tmp_path, app, *args):
    trace = tmp_path / "trace.log"
    port = free_port()
    argv = ["strace", "-f", "-qq", "-s", "256", "-o", str(trace), "-e",
            "trace=setsockopt,sendmsg,writev,sendfile",
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


def test_nodelay_vectored_head_and_body_and_sendfile(traced):
    with Conn(traced.port) as c:
        assert c.request("GET", "/hello").body == b"Hello, World!\n"
        r = c.request("GET", "/file?size=1048576")
        assert len(r.body) == 1048576

    def trace():
        return traced.trace.read_text()
    wait_for(lambda: "sendfile(" in trace(), "sendfile in the trace")
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
    wait_for(lambda: "sendfile(" in trace(), "sendfile in the trace")
    text = trace()
    assert re.search(r"setsockopt\(\d+, SOL_TCP, TCP_NODELAY, \[1\], 4\) = 0", text), text
    # The head and the (small, copied) body leave in one sendmsg.
    hello = [l for l in text.splitlines() if "sendmsg(" in l and "Hello, World!" in l]
    assert hello, text
    assert "HTTP/1.1 200 OK" in hello[0], hello[0]
    assert re.search(r"sendfile\(\d+, \d+, \[0\] => \[\d+\], \d+\) = \d+", text), text
