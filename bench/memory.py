#!/usr/bin/python3
"""Memory of libwsgi-epoll under a huge streamed response and a huge upload (issue 10: "a 1 GiB
streamed response and a 1 GiB upload each keep server RSS growth under 32 MiB; idle RSS of a worker
no higher than today's (~20 MiB)"). A benchmark: it prints tables (and --json FILE), it never fails
on numbers; tests/integration/test_memory.py asserts the bounds (on 256 MiB, with this module's
client).

  /usr/bin/python3 bench/memory.py --build build-bench                 # 1 GiB per case
  /usr/bin/python3 bench/memory.py --build build-bench --size 256m --only wsgi-stream,asgi-upload-cl
  /usr/bin/python3 bench/memory.py --build build-bench --threads 0      # WSGI on the loop thread

Cases (app: tests/integration/apps/memory_app.py, a fresh server for each case):
  wsgi-stream          a WSGI generator of 64 KiB chunks, no Content-Length (chunked framing)
  wsgi-stream-cl       the same generator with a Content-Length
  wsgi-upload-cl       POST with Content-Length, the app reads wsgi.input.read(65536) until b""
  wsgi-upload-chunked  the same body with Transfer-Encoding: chunked (64 KiB chunks)
  asgi-stream          http.response.body events of 64 KiB with more_body, chunked framing
  asgi-stream-cl       the same events after a content-length header
  asgi-upload-cl       POST with Content-Length, the app loops on receive() until more_body=False
  asgi-upload-chunked  the same, chunked
  wsgi-idle, asgi-idle examples/apps hello:app / hello_asgi:app: RSS right after start and after
                       10,000 keep-alive requests (pipelined 100 at a time on one connection)

The client never holds a body: it receives into one fixed 256 KiB buffer (socket.recv_into),
decodes the framing in place and discards the bytes; an upload is the same pre-built 256 KiB block
sent again and again. Memory is read from /proc/PID/status of the server: VmRSS after a warm-up
request of the same kind ("before"), VmHWM after the transfer ("peak"; the peak is first reset to
the current RSS by writing 5 to /proc/PID/clear_refs, where the kernel allows it; where it does not,
the peak since start is used, which can only overstate the growth), growth = peak - before.
VmRSS is also sampled every 32 MiB during the transfer ("max sampled").

This module is also the client of tests/integration/test_memory.py (run_case, run_idle).
"""

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
TEST_APPS = os.path.join(ROOT, "tests", "integration", "apps")
EXAMPLE_APPS = os.path.join(ROOT, "examples", "apps")
MIB = 1 << 20
BUF = 256 * 1024  # the client's one receive buffer, and the upload block
CHUNK = 65536  # app chunks (stream) and client chunks (chunked upload)
GUARD = 60.0  # seconds a socket operation may block: a hang guard, never a measurement
SAMPLE_EVERY = 32 * MIB
IDLE_REQUESTS = 10000
PIPELINE = 100

CASES = {
    # name: (interface, kind)
    "wsgi-stream": ("wsgi", "stream"),
    "wsgi-stream-cl": ("wsgi", "stream-cl"),
    "wsgi-upload-cl": ("wsgi", "upload-cl"),
    "wsgi-upload-chunked": ("wsgi", "upload-chunked"),
    "asgi-stream": ("asgi", "stream"),
    "asgi-stream-cl": ("asgi", "stream-cl"),
    "asgi-upload-cl": ("asgi", "upload-cl"),
    "asgi-upload-chunked": ("asgi", "upload-chunked"),
}
IDLE_CASES = {"wsgi-idle": ("wsgi", "hello:app"), "asgi-idle": ("asgi", "hello_asgi:app")}


# ---------------------------------------------------------------- /proc

def proc_status_kib(pid, field):
    """A 'kB' field of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/%d/status" % (field, pid))


def rss_kib(pid):
    return proc_status_kib(pid, "VmRSS")


def hwm_kib(pid):
    return proc_status_kib(pid, "VmHWM")


def reset_peak(pid):
    """Reset VmHWM to the current RSS (clear_refs 5, Linux 4.0+); False where not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the streaming client

class Reader:
    """Reads HTTP/1.1 responses from a socket through one fixed buffer (recv_into), so that a body
    of any size is counted and discarded as it arrives. Unread bytes are buf[start:end]."""

    def __init__(self, sock, size=BUF, on_progress=None):
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.on_progress = on_progress  # called with the body bytes discarded so far, now and then
        self._next_progress = SAMPLE_EVERY

    def fill(self):
        """Receive more (into the free end of the buffer; the unread bytes are moved to its front
        first, which only happens for a few bytes of a split head or chunk-size line)."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            n = self.end - self.start
            if n > len(self.buf) // 2:
                raise RuntimeError("a response line or head longer than %d bytes" % (len(self.buf) // 2))
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        got = self.sock.recv_into(self.view[self.end:])
        if not got:
            raise EOFError("connection closed by the server")
        self.end += got

    def line(self):
        while True:
            i = self.buf.find(b"\r\n", self.start, self.end)
            if i >= 0:
                out = bytes(self.buf[self.start:i])
                self.start = i + 2
                return out
            self.fill()

    def head(self):
        """(status, {lowercased name: value}) of the next final response (1xx skipped)."""
        while True:
            status_line = self.line()
            headers = {}
            while True:
                h = self.line()
                if not h:
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            status = int(status_line.split()[1])
            if status >= 200:
                return status, headers

    def _progress(self, done):
        if self.on_progress and done >= self._next_progress:
            self._next_progress = done + SAMPLE_EVERY
            self.on_progress(done)

    def skip(self, n, done=0):
        """Discard the next n bytes; done = body bytes discarded before (for on_progress)."""
        while n:
            if self.start == self.end:
                self.fill()
            k = min(n, self.end - self.start)
            self.start += k
            n -= k
            done += k
            self._progress(done)
        return done

    def take(self, n):
        """The next n bytes, kept (small bodies only)."""
        out = bytearray()
        while len(out) < n:
            if self.start == self.end:
                self.fill()
            k = min(n - len(out), self.end - self.start)
            out += self.buf[self.start:self.start + k]
            self.start += k
        return bytes(out)

    def skip_chunked(self):
        """Discard a chunked body; returns its length (the data only, framing excluded)."""
        done = 0
        while True:
            size = int(self.line().split(b";")[0], 16)
            if size == 0:
                while self.line():  # trailer fields, then the empty line
                    pass
                return done
            done = self.skip(size, done)
            if self.line():
                raise RuntimeError("chunk of %d bytes not followed by CRLF" % size)

    def body(self, headers, keep=False):
        """The body after head(): (length, bytes if keep else None)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            if keep:
                raise RuntimeError("keep=True is for Content-Length bodies")
            return self.skip_chunked(), None
        n = int(headers.get("content-length", "0"))
        if keep:
            return n, self.take(n)
        return self.skip(n), None


def _connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=GUARD)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _get(sock, reader, target, keep=False):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % target.encode())
    status, headers = reader.head()
    n, body = reader.body(headers, keep)
    return status, headers, n, body


def _upload(sock, reader, target, total, chunked):
    """POST total bytes (a fixed block sent again and again) and read the JSON answer."""
    block = (bytes(range(256)) * (BUF // 256))[:BUF]
    head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n" % target
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else "Content-Length: %d\r\n\r\n" % total
    sock.sendall(head.encode())
    if chunked:
        # the block as CHUNK-sized chunks, framing included, built once
        piece = b"".join(b"%x\r\n" % CHUNK + block[i:i + CHUNK] + b"\r\n" for i in range(0, BUF, CHUNK))
    else:
        piece = block
    sent = 0
    while total - sent >= BUF:
        sock.sendall(piece)
        sent += BUF
        reader._progress(sent)
    rest = total - sent
    if rest:
        tail = block[:rest]
        sock.sendall((b"%x\r\n" % rest + tail + b"\r\n") if chunked else tail)
    if chunked:
        sock.sendall(b"0\r\n\r\n")
    status, headers = reader.head()
    _, body = reader.body(headers, keep=True)
    return status, body


def _stream_target(kind, total):
    return "/stream?total=%d%s" % (total, "&cl=1" if kind == "stream-cl" else "")


def run_case(pid, port, kind, total, crc=False):
    """One transfer of total bytes against the server (pid, port), after a warm-up of the same kind
    (1 MiB). Returns a dict: bytes, seconds, rss_before_kib, peak_kib, growth_kib, max_sampled_kib,
    peak_reset (whether clear_refs worked), and the app's answer for uploads."""
    warm = 1 * MIB
    samples = []
    res = {"kind": kind, "bytes": total}
    with _connect(port) as sock:
        reader = Reader(sock)
        # warm-up: the same route with a small body, on the same connection
        if kind.startswith("stream"):
            status, _, n, _ = _get(sock, reader, _stream_target(kind, warm))
            assert status == 200 and n == warm, (status, n)
        else:
            status, body = _upload(sock, reader, "/upload", warm, kind == "upload-chunked")
            assert status == 200 and json.loads(body)["size"] == warm, (status, body)
        res["peak_reset"] = reset_peak(pid)
        before = rss_kib(pid)
        reader.on_progress = lambda done: samples.append(rss_kib(pid))
        reader._next_progress = SAMPLE_EVERY
        t0 = time.monotonic()
        if kind.startswith("stream"):
            status, headers, n, _ = _get(sock, reader, _stream_target(kind, total))
            res["status"], res["received"] = status, n
            res["framing"] = "chunked" if "transfer-encoding" in headers else "length"
        else:
            target = "/upload?crc=1" if crc else "/upload"
            status, body = _upload(sock, reader, target, total, kind == "upload-chunked")
            res["status"] = status
            res["answer"] = json.loads(body) if status == 200 else body.decode("latin-1", "replace")
        res["seconds"] = time.monotonic() - t0
    peak = hwm_kib(pid)
    res["rss_before_kib"] = before
    res["peak_kib"] = peak
    res["growth_kib"] = peak - before
    res["max_sampled_kib"] = max(samples) if samples else None
    res["rss_after_kib"] = rss_kib(pid)
    return res


def run_idle(pid, port, requests=IDLE_REQUESTS, settle=0.2):
    """RSS of an idle server right after start, then after `requests` keep-alive GET / requests
    (pipelined PIPELINE at a time on one connection, responses read and checked)."""
    time.sleep(settle)
    res = {"rss_start_kib": rss_kib(pid), "hwm_start_kib": hwm_kib(pid), "requests": requests}
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    t0 = time.monotonic()
    with _connect(port) as sock:
        reader = Reader(sock)
        left = requests
        while left:
            k = min(PIPELINE, left)
            sock.sendall(req * k)
            for _ in range(k):
                status, headers = reader.head()
                n, _ = reader.body(headers)
                if status != 200 or not n:
                    raise RuntimeError("hello answered %d with %d bytes" % (status, n))
            left -= k
    res["seconds"] = time.monotonic() - t0
    time.sleep(settle)
    res["rss_after_kib"] = rss_kib(pid)
    res["hwm_after_kib"] = hwm_kib(pid)
    res["growth_kib"] = res["rss_after_kib"] - res["rss_start_kib"]
    return res


# ---------------------------------------------------------------- servers (bench only)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EpollServer:
    """libwsgi-epoll serving an app on a free port, started and stopped by PID."""

    def __init__(self, binary, app, iface, extra=(), cpu=None, tmp=None):
        self.port = free_port()
        argv = [binary, "--app", app, "--interface", iface, "--pythonpath", TEST_APPS,
                "--pythonpath", EXAMPLE_APPS, "--bind", "127.0.0.1:%d" % self.port,
                "--log-level", "warning"] + list(extra)
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        self.argv = argv
        self.log = tempfile.NamedTemporaryFile(prefix="memory-", suffix=".log", dir=tmp, delete=False)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid  # taskset execs the server: same PID
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s: %s" % (self.proc.returncode, self.log_text()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("server did not listen: " + self.log_text())
                time.sleep(0.02)

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()[-800:]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def parse_size(s):
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = s.strip().lower()
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


def _interrupted(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    signal.signal(signal.SIGTERM, _interrupted)
    ap = argparse.ArgumentParser(description="libwsgi-epoll's RSS under a huge streamed response and "
                                 "a huge upload, and idle (see bench/README.md)")
    ap.add_argument("--build", default=os.environ.get("LIBWSGI_BUILD", "build"))
    ap.add_argument("--size", default="1g", help="bytes per transfer, k/m/g suffixes (default 1g)")
    ap.add_argument("--only", default="", help="cases, comma-separated: " + ",".join(list(CASES) + list(IDLE_CASES)))
    ap.add_argument("--threads", type=int, default=None, help="--threads for the WSGI server (default: "
                    "the server's default)")
    ap.add_argument("--crc", action="store_true", help="uploads: the app computes a CRC-32 of the body "
                    "and the client checks it (costs server CPU)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the server to CPU 0 and this "
                    "client to CPU 1")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    build = args.build if os.path.isabs(args.build) else os.path.join(ROOT, args.build)
    binary = os.path.join(build, "examples", "epoll", "libwsgi-epoll")
    if not os.access(binary, os.X_OK):
        print("no %s (cmake --build %s)" % (binary, args.build))
        return 1
    total = parse_size(args.size)
    only = [x for x in args.only.split(",") if x]
    for o in only:
        if o not in CASES and o not in IDLE_CASES:
            ap.error("unknown case %r" % o)
    cpu = None
    if not args.no_pin and (os.cpu_count() or 1) >= 2:
        cpu = 0
        os.sched_setaffinity(0, {1})
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    try:
        rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = "?"
    print("bench/memory.py %s" % " ".join(sys.argv[1:]))
    print("libwsgi-epoll %s (source tree at %s); %s; %d CPUs%s; load average before: %s"
          % (binary, rev, platform.platform(), os.cpu_count(),
             ", server on CPU 0, client on CPU 1" if cpu is not None else "", load0))
    wsgi_extra = ["--threads", str(args.threads)] if args.threads is not None else []
    results = {"argv": sys.argv[1:], "source": rev, "size": total, "cases": [], "idle": []}

    rows = []
    print("\n== transfers: %s each, a fresh server per case ==" % fmt_bytes(total))
    hdr = "%-22s %10s %8s %8s %11s %9s %11s %10s  %s" % (
        "case", "bytes", "seconds", "MiB/s", "RSS before", "peak", "max sampled", "growth", "")
    print(hdr)
    print("-" * len(hdr))
    for name, (iface, kind) in CASES.items():
        if only and name not in only:
            continue
        srv = EpollServer(binary, "memory_app:" + iface, iface, wsgi_extra if iface == "wsgi" else [], cpu)
        try:
            r = run_case(srv.pid, srv.port, kind, total, crc=args.crc)
        except (OSError, RuntimeError, EOFError, AssertionError) as e:
            print("%-22s FAILED: %r | server log: %s" % (name, e, srv.log_text().replace("\n", " / ")))
            results["cases"].append({"case": name, "error": repr(e)})
            continue
        finally:
            srv.stop()
        r["case"] = name
        ok = r["status"] == 200 and (r.get("received") == total or
                                     (isinstance(r.get("answer"), dict) and r["answer"]["size"] == total))
        note = "" if ok else "WRONG: %r" % {k: r.get(k) for k in ("status", "received", "answer")}
        if ok and args.crc and "answer" in r:
            import zlib
            block = (bytes(range(256)) * (BUF // 256))[:BUF]
            crc, left = 0, total
            while left:
                k = min(left, BUF)
                crc = zlib.crc32(block[:k], crc)
                left -= k
            if r["answer"]["crc32"] != crc:
                note = "CRC MISMATCH"
        if r["growth_kib"] >= 32 * 1024:
            note = (note + " " if note else "") + "OVER 32 MiB"
        if not r["peak_reset"]:
            note = (note + " " if note else "") + "(peak since start: clear_refs refused)"
        print("%-22s %10d %8.2f %8.0f %9.1f M %7.1f M %9s M %8.1f M  %s" % (
            name, total, r["seconds"], total / MIB / r["seconds"] if r["seconds"] else 0,
            r["rss_before_kib"] / 1024, r["peak_kib"] / 1024,
            "%.1f" % (r["max_sampled_kib"] / 1024) if r["max_sampled_kib"] else "-",
            r["growth_kib"] / 1024, note))
        sys.stdout.flush()
        results["cases"].append(r)
        rows.append(r)

    idle_rows = [n for n in IDLE_CASES if not only or n in only]
    if idle_rows:
        print("\n== idle worker: hello app, RSS right after start and after %d keep-alive requests =="
              % IDLE_REQUESTS)
        hdr = "%-22s %12s %14s %12s %10s %8s" % ("case", "RSS at start", "RSS after 10k", "peak (HWM)",
                                               "growth", "seconds")
        print(hdr)
        print("-" * len(hdr))
        for name in idle_rows:
            iface, app = IDLE_CASES[name]
            srv = EpollServer(binary, app, iface, wsgi_extra if iface == "wsgi" else [], cpu)
            try:
                r = run_idle(srv.pid, srv.port)
            except (OSError, RuntimeError, EOFError) as e:
                print("%-22s FAILED: %r | server log: %s" % (name, e, srv.log_text().replace("\n", " / ")))
                results["idle"].append({"case": name, "error": repr(e)})
                continue
            finally:
                srv.stop()
            r["case"] = name
            print("%-22s %10.1f M %12.1f M %10.1f M %8.1f M %8.2f" % (
                name, r["rss_start_kib"] / 1024, r["rss_after_kib"] / 1024, r["hwm_after_kib"] / 1024,
                r["growth_kib"] / 1024, r["seconds"]))
            results["idle"].append(r)
    with open("/proc/loadavg") as f:
        print("\nload average after: %s (before: %s); seconds and MiB/s are wall clock on a shared "
              "machine: RSS is the measure here" % (" ".join(f.read().split()[:3]), load0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print("wrote " + args.json)
    return 0


def fmt_bytes(n):
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k and n % k == 0:
            return "%d %s" % (n // k, unit)
    return "%d bytes" % n


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print("interrupted (%s); servers stopped" % e, file=sys.stderr)
        sys.exit(130)
