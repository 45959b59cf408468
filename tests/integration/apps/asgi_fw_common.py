"""What the ASGI framework apps of test_asgi_frameworks.py share: the file served by their
FileResponse routes and the marker their background tasks write."""

import os

TMP = os.environ.get("LIBWSGI_TEST_TMP", "/tmp")
# Created by the test before any server starts (same mtime and size for both servers, so the
# ETag and Last-Modified headers compare equal).
FILE = os.path.join(TMP, "asgi-frameworks-file.bin")


def background_done(framework, token):
    """The background task's work: a file the test waits for."""
    path = os.path.join(TMP, "bg-%s-%s" % (framework, token))
    with open(path + ".tmp", "w") as f:
        f.write("done")
    os.rename(path + ".tmp", path)


class TeapotError(Exception):
    """Raised by the /custom-error routes; each app turns it into a 418 with its own handler."""
