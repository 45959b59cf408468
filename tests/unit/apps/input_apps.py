"""Apps that read wsgi.input, for test_wsgi_input."""


def _reply(start_response, body):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _op(inp, name, arg):
    if name == "read":
        return inp.read() if arg is _NOARG else inp.read(arg)
    if name == "readline":
        return inp.readline() if arg is _NOARG else inp.readline(arg)
    if name == "readlines":
        return inp.readlines() if arg is _NOARG else inp.readlines(arg)
    if name == "iter":
        return list(inp)
    if name == "len_readline":
        return len(inp.readline())
    raise ValueError("unknown op " + name)


_NOARG = object()


def script(environ, start_response):
    """Runs the operations of QUERY_STRING on wsgi.input, one result per body line.

    "read&read=3&read=None&readline=2&readlines&iter": each op's result as repr(), or
    "EXC:OSError" (any OSError subclass) / "EXC:<type>" if it raised.
    """
    inp = environ["wsgi.input"]
    out = []
    for op in environ["QUERY_STRING"].split("&"):
        if not op:
            continue
        name, sep, text = op.partition("=")
        arg = _NOARG if not sep else (None if text == "None" else int(text))
        try:
            out.append(repr(_op(inp, name, arg)))
        except Exception as e:  # the test wants to see which exception
            out.append("EXC:" + ("OSError" if isinstance(e, OSError) else type(e).__name__))
    return _reply(start_response, "\n".join(out).encode("ascii"))


def echo(environ, start_response):
    return _reply(start_response, environ["wsgi.input"].read())


def echo_lazy(environ, start_response):
    """Reads the body only while being iterated, i.e. after wsgi_call has returned."""
    inp = environ["wsgi.input"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def chunks():
        while True:
            data = inp.read(7)
            if not data:
                return
            yield data
    return chunks()


def read_uncaught(environ, start_response):
    data = environ["wsgi.input"].read()
    return _reply(start_response, data)
