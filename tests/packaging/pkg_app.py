"""The WSGI app the installed-library checks serve (tests/packaging/check_installed.sh)."""


def app(environ, start_response):
    body = ("installed libwsgi: %s %s\n" % (environ["PATH_INFO"], environ["QUERY_STRING"])).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
