"""The system calls behind the HTTP bullets that have no other visible effect: TCP_NODELAY on
accepted sockets, the response head and body leaving in one vectored write (sendmsg with several
iovecs: writev semantics plus MSG_NOSIGNAL), and sendfile(2) for wsgi.file_wrapper. The server
runs under strace; the test reads the trace it wrote."""

import os
import re
import signal
import subprocess

import pytest

from conftest import EPOLL, Server, TEST_APPS, EXAMPLE_APPS, free_port
from httpclient import Conn, wait_for


@pytest.fixture
def traced(tmp_path):
    trace = tmp_path / "trace.log"
    port = free_port()
    argv = ["strace", "-f", "-qq", "-o", str(trace), "-e",
            "trace=setsockopt,sendmsg,writev,sendfile",
            EPOLL, "--app", "corners:app", "--pythonpath", TEST_APPS, "--pythonpath", EXAMPLE_APPS,
            "--bind", "127.0.0.1:%d" % port, "--threads", "2"]
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
