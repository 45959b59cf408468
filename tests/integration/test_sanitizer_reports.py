"""The sanitizer pass is only worth something if a report fails the test: pytest runs on an
uninstrumented python3, and a server (or a prefork worker its master replaces) that aborts on a
report does not by itself make a test fail. Here an inner pytest session (with this directory's
conftest as its plugin) runs a test that passes on its own while the sanitized server it started
double-frees; the inner session must fail and show the report. Runs only against a server built
with AddressSanitizer (scripts/test.sh, second pass)."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import HERE, server_is_sanitized

pytestmark = pytest.mark.skipif(not server_is_sanitized(),
                                reason="libwsgi-epoll is not built with AddressSanitizer")

APP = """
import ctypes

libc = ctypes.CDLL(None)  # malloc and free as the process sees them: ASan's
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def app(environ, start_response):
    p = libc.malloc(16)
    libc.free(p)
    libc.free(p)
    start_response("200 OK", [])
    return [b"unreachable"]
"""

INNER = """
from httpclient import request


def test_server_double_frees(spawn):
    s = spawn("epoll", "asan_boom:app", "--pythonpath", {apps!r})
    try:
        request(s.port, "GET", "/")
    except Exception:
        pass  # the worker aborted mid-request: only the report may fail this test
"""


def test_a_report_in_a_server_fails_the_test(tmp_path):
    (tmp_path / "asan_boom.py").write_text(APP)
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER.format(apps=str(tmp_path))))
    env = dict(os.environ, PYTHONPATH=HERE)
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):  # the inner session sets its own log_path
        env[var] = ":".join(o for o in env.get(var, "").split(":") if not o.startswith("log_path="))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest",
                        "-q", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "sanitizer report(s) from a server" in out, out
    assert "double-free" in out, out
