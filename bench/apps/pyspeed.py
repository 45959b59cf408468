"""Interpreter speed probe of bench/peers.py (in-process part): importing this module times a fixed
pure-Python workload (dicts, str, a small class, json) and writes "PYSPEED <best ms>" to stderr.

Imported once by /usr/bin/python3 and once inside libwsgi (bench_wsgi APPS pyspeed:app 1), it
compares the python3 executable with the libpython3.11.so that every embedder (libwsgi, uWSGI,
mod_wsgi) runs on: the time is thread CPU time, best of 15 rounds."""

import json
import sys
import time


class _P:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b

    def f(self):
        return self.a + self.b


def _work():
    d = {}
    s = 0
    for i in range(200000):
        d[i % 1000] = str(i)
        s += len(d[i % 1000])
    for i in range(200000):
        s += _P(i, 1).f()
    s += len(json.dumps([{"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i in range(20000)]))
    return s


_best = float("inf")
for _ in range(15):
    _t0 = time.thread_time()
    _work()
    _best = min(_best, time.thread_time() - _t0)
sys.stderr.write(f"PYSPEED {_best * 1000:.1f} ms\n")
sys.stderr.flush()


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]
