"""Start a server on a free 127.0.0.1 port, make one GET request over a real socket, stop it.

    serve_check.py [--cwd DIR] [--env NAME=VALUE]... EXPECT -- ARGV...

Every "{port}" in ARGV and in the --env values is replaced by the port. Waits until the port
accepts a connection (or the server exits, which fails), requests "/" and checks that the body
contains EXPECT, then stops the server by its PID (SIGTERM, then SIGKILL) and its process group.
Used by tests/packaging/check_installed.sh (the installed libwsgi-epoll) and
tests/packaging/readme_test.py (scripts/demo.sh)."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

# Generous: the server may still be building (scripts/demo.sh) on a loaded machine.
START_DEADLINE = 600


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(args):
    cwd, env = None, dict(os.environ)
    while args and args[0] in ("--cwd", "--env"):
        if args[0] == "--cwd":
            cwd = args[1]
        else:
            k, _, v = args[1].partition("=")
            env[k] = v
        args = args[2:]
    expect, sep, argv = args[0], args[1], args[2:]
    assert sep == "--" and argv, __doc__
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    env = {k: v.replace("{port}", str(port)) for k, v in env.items()}
    print("serve_check: starting %s (port %d)" % (" ".join(argv), port), flush=True)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if proc.poll() is not None:
                print("serve_check: FAIL: server exited with %d before listening" % proc.returncode)
                return 1
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    print("serve_check: FAIL: nothing listens on port %d" % port)
                    return 1
                time.sleep(0.1)
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=60) as r:
            body = r.read().decode("latin-1")
            status = r.status
        print("serve_check: GET / -> %d %r" % (status, body))
        if status != 200 or expect not in body:
            print("serve_check: FAIL: expected 200 and %r in the body" % expect)
            return 1
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
