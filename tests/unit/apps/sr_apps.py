"""Apps that use start_response and write() correctly and incorrectly, for test_start_response.

The bad_* apps pick their invalid argument by QUERY_STRING from BAD_STATUS / BAD_HEADERS.
"""
import sys

TEXT = [("Content-Type", "text/plain")]

BAD_STATUS = {
    "short": "200",
    "two_digits": "20 OK",
    "letters": "abc OK",
    "crlf": "200 OK\r\nX-Injected: yes",
    "lf": "200 OK\nX-Injected: yes",
    "nul": "200 OK\0",
    "bytes": b"200 OK",
    "int": 200,
    "none": None,
    "non_latin1": "200 \u20ac",
}

BAD_HEADERS = {
    "tuple_not_list": (("Content-Type", "text/plain"),),
    "dict": {"Content-Type": "text/plain"},
    "none": None,
    "item_list": [["Content-Type", "text/plain"]],
    "item_3tuple": [("Content-Type", "text/plain", "x")],
    "item_1tuple": [("Content-Type",)],
    "item_str": ["Content-Type: text/plain"],
    "name_bytes": [(b"Content-Type", "text/plain")],
    "value_bytes": [("Content-Type", b"text/plain")],
    "value_int": [("Content-Length", 5)],
    "name_empty": [("", "v")],
    "name_space": [("X Bad", "v")],
    "name_colon": [("X:Bad", "v")],
    "name_cr": [("X\rBad", "v")],
    "name_lf": [("X\nBad", "v")],
    "name_nul": [("X\0Bad", "v")],
    "name_paren": [("X(Bad)", "v")],
    "name_latin1": [("X-\xe9", "v")],
    "name_non_latin1": [("X-\u20ac", "v")],
    "value_cr": [("X-Bad", "a\rb")],
    "value_lf": [("X-Bad", "a\nb")],
    "value_splitting": [("X-Bad", "a\r\nSet-Cookie: evil=1")],
    "value_nul": [("X-Bad", "a\0b")],
    "value_non_latin1": [("X-Bad", "\u20ac")],
}


def bad_status(environ, start_response):
    start_response(BAD_STATUS[environ["QUERY_STRING"]], TEXT)
    return [b"must not be sent"]


def bad_status_caught(environ, start_response):
    try:
        start_response(BAD_STATUS[environ["QUERY_STRING"]], TEXT)
    except Exception:
        pass
    else:
        return [b"not raised"]
    start_response("200 OK", TEXT)
    return [b"recovered"]


def bad_headers(environ, start_response):
    start_response("200 OK", BAD_HEADERS[environ["QUERY_STRING"]])
    return [b"must not be sent"]


def bad_headers_caught(environ, start_response):
    try:
        start_response("200 OK", BAD_HEADERS[environ["QUERY_STRING"]])
    except Exception:
        pass
    else:
        return [b"not raised"]
    start_response("200 OK", TEXT)
    return [b"recovered"]


def second_call(environ, start_response):
    start_response("200 OK", [("X-First", "1")])
    start_response("201 Created", [("X-Second", "2")])
    return [b"must not be sent"]


def second_call_caught(environ, start_response):
    start_response("200 OK", [("X-First", "1")] + TEXT)
    try:
        start_response("201 Created", [("X-Second", "2")])
    except Exception:
        return [b"first kept"]
    return [b"not raised"]


def exc_info_before_body(environ, start_response):
    start_response("200 OK", [("X-First", "1")] + TEXT)
    try:
        raise ValueError("replaced before the body")
    except ValueError:
        start_response("500 Oops", [("X-Second", "2")] + TEXT, sys.exc_info())
    return [b"error page"]


def exc_info_after_empty_chunk(environ, start_response):
    """An empty chunk does not commit the head (PEP 3333), so exc_info may still replace it."""
    start_response("200 OK", [("X-First", "1")] + TEXT)
    yield b""
    try:
        raise ValueError("replaced after an empty chunk")
    except ValueError:
        start_response("503 Later", [("X-Second", "2")] + TEXT, sys.exc_info())
    yield b"retry later"


def exc_info_after_body(environ, start_response):
    """Once the head was sent, start_response(exc_info) must re-raise the original error."""
    start_response("200 OK", TEXT)
    yield b"part one"
    try:
        raise ValueError("original error after the body started")
    except ValueError:
        start_response("500 Too Late", TEXT, sys.exc_info())
    yield b"must not be sent"


def exc_info_after_write(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"written")
    try:
        raise ValueError("original error after write")
    except ValueError:
        start_response("500 Too Late", TEXT, sys.exc_info())
    return [b"must not be sent"]


BAD_EXC_INFO = {
    "none": (None, None, None),  # sys.exc_info() outside an except block
    "ints": (1, 2, 3),
    "bad_traceback": (ValueError, ValueError("x"), 5),
    "not_a_class": ("ValueError", None, None),
}


def exc_info_malformed_after_body(environ, start_response):
    """A malformed exc_info once the head was sent: start_response must raise an error (PEP 3333)
    and the process must survive it. The app reports which one and carries on."""
    start_response("200 OK", TEXT)
    yield b"part one;"
    try:
        start_response("500 Too Late", TEXT, BAD_EXC_INFO[environ["QUERY_STRING"]])
    except Exception as e:
        yield ("raised %s" % type(e).__name__).encode()
        return
    yield b"not raised"


def writer(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"hello ")
    write(b"")
    return [b"world"]


def writer_only(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"all ")
    write(b"written")
    return []


def writer_str_caught(environ, start_response):
    write = start_response("200 OK", TEXT)
    try:
        write("text is not bytes")
    except Exception:
        return [b"raised"]
    return [b"not raised"]


def no_start(environ, start_response):
    return [b"body without a head"]


def no_start_empty(environ, start_response):
    return []


def lazy_start(environ, start_response):
    """A generator app: start_response runs on the first iteration, which PEP 3333 allows."""
    start_response("200 OK", TEXT)
    yield b"lazy"


def lazy_no_start(environ, start_response):
    yield b"body without a head"


def returns_none(environ, start_response):
    start_response("200 OK", TEXT)
    return None


def returns_int(environ, start_response):
    start_response("200 OK", TEXT)
    return 5


def str_chunk(environ, start_response):
    start_response("200 OK", TEXT)
    return ["text is not bytes"]


def str_body(environ, start_response):
    start_response("200 OK", TEXT)
    return "text is not bytes"


def str_after_bytes(environ, start_response):
    start_response("200 OK", TEXT)
    return [b"bytes first", "then text"]


def raises(environ, start_response):
    start_response("200 OK", TEXT)
    return [str(1 // 0).encode()]


def raises_in_generator(environ, start_response):
    start_response("200 OK", TEXT)
    raise KeyError("sr_apps generator failure")
    yield b"never"


def head(environ, start_response):
    start_response("404 Not Found", [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("X-Latin", "caf\xe9"),
        ("Set-Cookie", "b=2"),
        ("content-length", "9"),
    ])
    return [b"not found"]


def head_custom_reason(environ, start_response):
    start_response("599 Custom Reason Phrase Here", TEXT)
    return [b"x"]


def head_latin1_reason(environ, start_response):
    start_response("200 Tr\xe8s bien", TEXT)
    return [b"x"]


def exc_info_none(environ, start_response):
    start_response("200 OK", TEXT, None)
    return [b"explicit None"]


def raise_after_write(environ, start_response):
    write = start_response("200 OK", TEXT)
    write(b"partial")
    raise ValueError("sr_apps failure after write")


def repeated_content_length(environ, start_response):
    """The same Content-Length twice (in two spellings) around another header."""
    start_response("200 OK", [("Content-Length", "5"), ("X-Between", "1"),
                              ("content-length", " 5")] + TEXT)
    return [b"hello"]


def conflicting_content_length(environ, start_response):
    start_response("200 OK", [("Content-Length", "5"), ("Content-Length", "6")] + TEXT)
    return [b"hello"]


def write_beyond_content_length(environ, start_response):
    write = start_response("200 OK", TEXT + [("Content-Length", "5")])
    write(b"hello world")
    return [b"and more"]


def many_headers(environ, start_response):
    start_response("200 OK", [("X-H-%d" % i, "v-%d" % i) for i in range(200)])
    return [b"many"]


# Callables and streams of a finished request, kept to be misused by a later request.
_stale = {}


def stash(environ, start_response):
    write = start_response("200 OK", TEXT)
    _stale.update(write=write, start_response=start_response, input=environ["wsgi.input"],
                  errors=environ["wsgi.errors"])
    return [b"stashed"]


def use_stale(environ, start_response):
    """Each stale object must fail cleanly (raise) or do nothing; never reach the old response.

    Body: one "name=outcome" per line, outcome "raised" or "returned <repr>".
    """
    results = []
    for name, call in [
        ("write", lambda: _stale["write"](b"late")),
        ("start_response", lambda: _stale["start_response"]("200 OK", [])),
        ("input", lambda: _stale["input"].read()),
        ("errors", lambda: _stale["errors"].write("stale errors line\n")),
    ]:
        try:
            results.append("%s=returned %r" % (name, call()))
        except Exception:
            results.append("%s=raised" % name)
    start_response("200 OK", TEXT)
    return ["\n".join(results).encode()]


def keyword_arguments(environ, start_response):
    """start_response by keyword, and every wrong call it must refuse with TypeError."""
    out = []
    for args, kwargs in [((), {}), (("200 OK",), {}), (("200 OK", TEXT, None, 1), {}),
                         (("200 OK",), {"headers": TEXT}), (("200 OK", TEXT), {"status": "x"}),
                         ((), {"status": "200 OK"})]:
        try:
            start_response(*args, **kwargs)
            out.append(b"accepted")
        except TypeError as e:
            out.append(("TypeError: %s" % e).encode())
    start_response(response_headers=TEXT, status="200 OK", exc_info=None)
    return [b"\n".join(out)]


# start_response objects (and their write) are reused for later requests when the app kept
# neither: one the app did keep must never be handed to another request.
_kept = {}


def keep_write(environ, start_response):
    _kept["write"] = start_response("200 OK", TEXT)
    _kept["input"] = environ["wsgi.input"]
    return [b"kept write"]


def keep_start_response(environ, start_response):
    _kept["start_response"] = start_response
    start_response("200 OK", TEXT)
    return [b"kept start_response"]


def plain(environ, start_response):
    start_response("200 OK", TEXT)
    return [b"plain"]


def check_fresh(environ, start_response):
    """Whether this request's callables are ones an earlier request left with the app, and what
    the kept ones do now. Body: one "name=value" per line."""
    write = start_response("200 OK", TEXT)
    out = ["write_is_kept=%s" % (write is _kept.get("write")),
           "start_response_is_kept=%s" % (start_response is _kept.get("start_response")),
           "write_of_kept_start_response=%s" % (write.__self__ is _kept.get("start_response")),
           "kept_write_of_this=%s" % (_kept["write"].__self__ is start_response),
           "input_is_kept=%s" % (environ["wsgi.input"] is _kept["input"])]
    for name, call in [("kept_write", lambda: _kept["write"](b"late")),
                       ("kept_start_response", lambda: _kept["start_response"]("200 OK", [])),
                       ("kept_input", lambda: _kept["input"].read())]:
        try:
            call()
            out.append("%s=returned" % name)
        except Exception:
            out.append("%s=raised" % name)
    return ["\n".join(out).encode()]


def value_bytes_checked(environ, start_response):
    """Every header value of lengths 0..24 with one byte of each kind at each position: the
    controls (other than tab) and DEL are refused, everything else accepted. Body: "ok", or the
    cases that went the wrong way."""
    try:
        raise ValueError("replace the head on every call")
    except ValueError:
        exc_info = sys.exc_info()
    wrong = []
    for length in range(25):
        for pos in range(max(length, 1)):
            for code in (0, 9, 10, 13, 31, 32, 65, 126, 127, 128, 255):
                value = "v" * length
                if length:
                    value = value[:pos] + chr(code) + value[pos + 1:]
                bad = length > 0 and ((code < 32 and code != 9) or code == 127)
                try:
                    start_response("200 OK", [("X-Value", value)], exc_info)
                    refused = False
                except ValueError:
                    refused = True
                if refused != bad:
                    wrong.append("%d/%d/%d" % (length, pos, code))
    start_response("200 OK", TEXT, exc_info)
    return [(" ".join(wrong) or "ok").encode()]


def names_checked(environ, start_response):
    """The same name objects, valid and invalid, offered again and again: the validity of each
    never changes. Body: "ok", or what went the wrong way."""
    try:
        raise ValueError("replace the head on every call")
    except ValueError:
        exc_info = sys.exc_info()
    names = [("X-Good", False), ("Content-Length", False), ("Bad Name", True), ("X:Colon", True),
             ("", True), ("x-good", False), ("X\x01", True), ("caf\xe9", True)]
    wrong = []
    for _ in range(3):
        for name, bad in names:
            for fresh in (name, "".join(list(name))):  # the constant and a new equal str
                try:
                    start_response("200 OK", [(fresh, "1")], exc_info)
                    refused = False
                except ValueError:
                    refused = True
                if refused != bad:
                    wrong.append(repr(fresh))
    start_response("200 OK", TEXT, exc_info)
    return [(" ".join(wrong) or "ok").encode()]


def body_shape(environ, start_response):
    """A body of the shape QUERY_STRING names (shape=...&status=...&te=1), without a
    Content-Length: whether libwsgi adds one (test_length_added_for_known_bodies)."""
    q = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    headers = [("Content-Type", "text/plain")]
    if q.get("te") == "1":
        headers.append(("Transfer-Encoding", "chunked"))
    shape = q.get("shape", "one")
    if shape == "write":
        write = start_response(q.get("status", "200 OK"), headers)
        write(b"ab")
        return [b"cd"]
    start_response(q.get("status", "200 OK").replace("+", " "), headers)
    if shape == "one":
        return [b"hello"]
    if shape == "many":
        return [b"ab", b"", b"cde", b"f"]
    if shape == "tuple":
        return (b"ab", bytearray(b"cd")) if q.get("mixed") else (b"ab", b"cd")
    if shape == "empty":
        return []
    if shape == "emptybytes":
        return [b"", b""]
    if shape == "gen":
        return (c for c in [b"ab", b"cd"])
    raise ValueError(shape)
