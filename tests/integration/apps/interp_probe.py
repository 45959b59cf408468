"""Writes, at import, what an app can see of the interpreter and the process it runs in (JSON, to
$INTERP_PROBE_OUT), for test_python_exe.py: the embedded interpreter and the one a server runs
on inside the Python executable must look the same to an app."""

import json
import locale
import os
import signal
import sys


def _sig(n):
    h = signal.getsignal(n)
    return h.__name__ if callable(h) and hasattr(h, "__name__") else str(h)


def _os_sig(n):
    """The disposition the kernel has (Python's record may differ): /proc/self/status masks."""
    with open("/proc/self/status") as f:
        st = dict(l.split(":", 1) for l in f if ":" in l)
    bit = 1 << (n - 1)
    if int(st["SigIgn"], 16) & bit:
        return "ignored"
    if int(st["SigCgt"], 16) & bit:
        return "caught"
    return "default"


with open("/proc/self/comm") as _f:
    _comm = _f.read().strip()

PROBE = {
    "pid": os.getpid(),
    "exe": os.readlink("/proc/self/exe"),
    "comm": _comm,
    "executable": sys.executable,
    "argv": sys.argv,
    "orig_argv": sys.orig_argv,
    "path": sys.path,
    "flags": repr(sys.flags),
    "xoptions": sys._xoptions,
    "warnoptions": sys.warnoptions,
    "prefix": [sys.prefix, sys.base_prefix, sys.exec_prefix],
    "fsencoding": [sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()],
    "stdio": [(s.encoding, s.errors, s.line_buffering) if s else None
              for s in (sys.stdin, sys.stdout, sys.stderr)],
    "preferred_encoding": locale.getpreferredencoding(False),
    "lc_ctype": locale.setlocale(locale.LC_CTYPE),
    "environ_lc": {k: v for k, v in os.environ.items() if k.startswith("LC_") or k == "LANG"},
    "environ_libwsgi": sorted(k for k in os.environ if k.startswith("LIBWSGI")),
    "main_names": sorted(vars(sys.modules["__main__"])),
    "libwsgi_modules": sorted(m for m in sys.modules if "libwsgi" in m),
    "signals": {name: [_sig(n), _os_sig(n)] for name, n in
                (("SIGINT", signal.SIGINT), ("SIGPIPE", signal.SIGPIPE),
                 ("SIGXFSZ", signal.SIGXFSZ), ("SIGTERM", signal.SIGTERM),
                 ("SIGHUP", signal.SIGHUP))},
    "recursionlimit": sys.getrecursionlimit(),
    "switchinterval": sys.getswitchinterval(),
    "dont_write_bytecode": sys.dont_write_bytecode,
}

_out = os.environ.get("INTERP_PROBE_OUT")
if _out:
    with open(_out, "w") as _f:
        json.dump(PROBE, _f, indent=1, sort_keys=True)


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "exe": os.readlink("/proc/self/exe")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
