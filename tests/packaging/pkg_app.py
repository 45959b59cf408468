"""The WSGI app the installed-library checks serve (tests/packaging/check_installed.sh)."""


def app(environ, start_response):
    import os
    body = ("installed libwsgi: %s %s\nruns in: %s\n" % (
        environ["PATH_INFO"], environ["QUERY_STRING"],
        os.path.basename(os.readlink("/proc/self/exe")))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
