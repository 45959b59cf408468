"""WSGI app for test_deploy.py: which process answers, requests that wait or never return."""
import os
import time
from urllib.parse import parse_qs

IMPORTED_BY = os.getpid()  # with --preload: the master


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/wait":
        # Hold this request until the test says so (the files are the test's handshake).
        open(q["started"], "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(q["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    elif path == "/stuck":
        open(q["started"], "w").close()
        stuck_forever_in_the_app()
    elif path == "/child-sigign":
        # The signals a program the app runs starts out ignoring (a hex mask, bit N-1 for N).
        import subprocess
        out = subprocess.run(["/bin/sh", "-c", "grep SigIgn /proc/self/status"],
                             capture_output=True, check=True).stdout
        body = out.split()[1]
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    elif path == "/imported-by":
        body = b"%d" % IMPORTED_BY
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    body = b"%d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stuck_forever_in_the_app():
    time.sleep(3600)
