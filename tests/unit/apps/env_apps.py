"""Apps that show the environ to the test, for test_wsgi_env."""


def dump(environ, start_response):
    """One line per key: KEY <tab> TYPE <tab> VALUE.

    str values are sent as the hex of their latin-1 encoding, so the test sees the exact code
    points; a str that is not latin-1 is reported with the type "str!non-latin-1". Other values
    are sent as repr(). Keys that are not str are reported as "!" + repr(key).
    """
    lines = []
    for key in sorted(environ, key=repr):
        value = environ[key]
        name = key if type(key) is str else "!" + repr(key)
        kind = type(value).__name__
        if type(value) is str:
            try:
                text = value.encode("latin-1").hex()
            except UnicodeEncodeError:
                kind = "str!non-latin-1"
                text = value.encode("utf-8", "backslashreplace").hex()
        else:
            text = repr(value).replace("\t", " ").replace("\n", " ")
        lines.append("%s\t%s\t%s" % (name, kind, text))
    # PEP 3333: the environ is a builtin dict, not a subclass or emulation.
    lines.append("@environ-type\t%s\t" % type(environ).__name__)
    body = "\n".join(lines).encode("latin-1", "backslashreplace")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def errors(environ, start_response):
    """Exercises wsgi.errors: whole lines, several lines per write, writelines, partial lines."""
    err = environ["wsgi.errors"]
    err.write("errors-one\n")
    err.write("errors-two\nerrors-three\n")
    err.writelines(["errors-four\n", "errors-five\n"])
    err.write("errors-par")
    err.write("tial\n")
    err.write("errors-tail")
    err.flush()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def big(environ, start_response):
    """Sizes of the big parts of the request, checked without sending them back."""
    header = environ.get("HTTP_X_BIG", "")
    path = environ["PATH_INFO"]
    text = "header=%d/%s path=%d/%s http_keys=%d" % (
        len(header), set(header) <= {"x"}, len(path), set(path) <= {"/", "p"},
        sum(1 for k in environ if k.startswith("HTTP_X_H_")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode()]
