"""A WSGI app whose import waits for the test (test_process.py: signals while the app imports):
it creates $SLOW_IMPORT_STARTED, then waits until $SLOW_IMPORT_RELEASE exists."""
import os
import time

if os.environ.get("SLOW_IMPORT_STARTED"):
    open(os.environ["SLOW_IMPORT_STARTED"], "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["SLOW_IMPORT_RELEASE"]) and time.monotonic() < deadline:
        time.sleep(0.01)


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
