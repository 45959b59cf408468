"""Importable only if the second python_path entry reached sys.path."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"extra path"]
