"""What the WebSocket test apps report back to the tests (apps/ws_*.py, tests/integration/test_websocket*.py).

An app records what it saw for a token the test chose (in the query string): the whole record is
rewritten atomically to $LIBWSGI_TEST_TMP/ws-<token>.json at each change, so a test can poll it
(with a failure guard, never a timed expectation) whichever server runs the app.
"""

import json
import os
from urllib.parse import parse_qs

TMP = os.environ.get("LIBWSGI_TEST_TMP", "/tmp")
_records = {}


def report_path(token):
    return os.path.join(TMP, "ws-%s.json" % token)


def record(token, **values):
    """Update the token's record with values and write it out; list values given as
    append_<key>=x are appended to <key>."""
    if not token:
        return
    r = _records.setdefault(token, {})
    for k, v in values.items():
        if k.startswith("append_"):
            r.setdefault(k[7:], []).append(v)
        else:
            r[k] = v
    path = report_path(token)
    with open(path + ".tmp", "w") as f:
        json.dump(r, f)
    os.rename(path + ".tmp", path)


def query(scope):
    return {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def exc_info(e):
    return {"type": type(e).__name__, "is_oserror": isinstance(e, OSError), "text": str(e)}
