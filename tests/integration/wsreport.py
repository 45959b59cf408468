"""The tests' side of what the WebSocket test apps report (apps/ws_common.py writes
$LIBWSGI_TEST_TMP/ws-<token>.json, which is conftest.SESSION_TMP): a token to put in the request,
and polling the app's record with a failure guard (never a timed expectation)."""

import json
import os
import time
import uuid

import conftest
from wsclient import GUARD


def token():
    return uuid.uuid4().hex[:12]


def report_path(tok):
    return os.path.join(conftest.SESSION_TMP, "ws-%s.json" % tok)


def report(tok):
    try:
        with open(report_path(tok)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_report(tok, pred, what, guard=GUARD):
    """Poll the app's report until pred(report); the guard only turns a hang into a failure."""
    deadline = time.monotonic() + guard
    while True:
        r = report(tok)
        if r is not None and pred(r):
            return r
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app to report %s; last report: %r" % (what, r))
        time.sleep(0.01)
