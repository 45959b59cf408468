"""Seeing what the servers do, and serving behind a proxy (issue 13): the access log in gunicorn's
format language (--access-logfile, --access-logformat, reopened on SIGUSR1), the Prometheus
endpoint (--metrics-bind, summed over workers), --check-config, --proxy-headers with
--forwarded-allow-ips, and --root-path. Lines and metrics are parsed, not eyeballed."""

import json
import os
import re
import signal
import socket
import subprocess

import pytest

from conftest import EPOLL, EXAMPLE_APPS, TEST_APPS, free_port
from httpclient import Conn, build_request, read_to_eof, request, wait_for

HELLO = b"Hello, World!\n"


def run(*args, timeout=60):
    return subprocess.run([EPOLL] + list(args), capture_output=True, text=True, timeout=timeout)


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [l for l in f.read().splitlines() if l]


# ---- access log ------------------------------------------------------------------------------

FORMAT = ('%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|'
          '%(T)s|%(D)s|%(M)s|%(L)s|%(p)s|%({x-trace}i)s|%({content-type}o)s|%({HOME}e)s|100%%|'
          # %({KEY}e)s is a key of the request's WSGI environ, as gunicorn's atoms are
          '%({HTTP_X_TRACE}e)s|%({http_user_agent}e)s|%({REQUEST_METHOD}e)s|%({RAW_URI}e)s|'
          '%({QUERY_STRING}e)s|%({SERVER_PROTOCOL}e)s|%({REMOTE_ADDR}e)s|%({CONTENT_TYPE}e)s|'
          '%({HTTP_CONTENT_TYPE}e)s|%({wsgi.url_scheme}e)s')


def test_access_log_format_atoms(spawn, tmp_path):
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--access-logfile", log, "--access-logformat", FORMAT,
              "--threads", "0")
    request(s.port, "GET", "/hello?x=1&y=2",
            [("User-Agent", "tester/3"), ("Referer", "http://ref/"), ("X-Trace", "abc"),
             ("Authorization", "Basic Ym9iOnNlY3JldA==")])  # bob:secret
    request(s.port, "HEAD", "/hello")
    request(s.port, "GET", "/caf%C3%A9%2Fx%22?q=%41")
    got = wait_for(lambda: len(lines(log)) >= 3 and lines(log), "three access log lines")
    f = got[0].split("|")
    assert f[0] == "127.0.0.1" and f[1] == "-" and f[2] == "bob", got[0]
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", f[3]), f[3]
    assert f[4:9] == ["GET /hello?x=1&y=2 HTTP/1.1", "GET", "/hello", "x=1&y=2", "HTTP/1.1"]
    assert f[9:12] == ["200", "14", "14"]
    assert f[12:14] == ["http://ref/", "tester/3"]
    secs, micros, millis, dsecs = int(f[14]), int(f[15]), int(f[16]), f[17]
    assert secs == micros // 1000000 and millis == micros // 1000
    assert re.fullmatch(r"\d+\.\d{6}", dsecs) and int(dsecs.replace(".", "")) == micros
    assert re.fullmatch(r"<\d+>", f[18]) and int(f[18][1:-1]) == s.pid  # --workers 1: one process
    assert f[19:21] == ["abc", "text/plain"]
    assert f[21] == "-"  # not the process environment: HOME is no key of a request's environ
    assert f[22] == "100%"
    assert f[23:32] == ["abc", "tester/3", "GET", "/hello?x=1&y=2", "x=1&y=2", "HTTP/1.1",
                        "127.0.0.1", "-", "-"], got[0]
    assert f[32] == "-"  # a key the log line cannot know
    h = got[1].split("|")
    assert h[2] == "-" and h[5] == "HEAD" and h[7] == "" and h[9] == "200"
    assert h[10] == "0" and h[11] == "-"  # a HEAD response carries no body bytes
    assert h[12:14] == ["-", "-"] and h[19] == "-"
    # %(U)s is PATH_INFO, percent-decoded as gunicorn logs it (a quote escaped); %(r)s and %(q)s
    # stay as sent
    e = got[2].split("|")
    assert e[6] == "/caf\xc3\xa9/x\\x22".encode("latin-1").decode("utf-8"), e[6]
    assert e[4] == "GET /caf%C3%A9%2Fx%22?q=%41 HTTP/1.1" and e[7] == "q=%41"


def test_default_format_with_request_time(spawn, tmp_path):
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--access-logfile", log)
    request(s.port, "GET", "/raise", [("User-Agent", "t")])
    got = wait_for(lambda: lines(log), "the line")
    combined = (r'127\.0\.0\.1 - - \[[^\]]+\] "%s" %s %s "-" "%s" \d+\.\d{6}')
    assert re.fullmatch(combined % (r"GET /raise HTTP/1\.1", "500", r"\d+", "t"), got[0]), got[0]


def test_access_log_reopened_on_sigusr1(spawn, tmp_path):
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--access-logfile", log, "--workers", "2")
    request(s.port, "GET", "/hello?before")
    wait_for(lambda: any("before" in l for l in lines(log)), "the first line")
    os.rename(log, log + ".1")  # what logrotate does before it signals
    s.signal(signal.SIGUSR1)
    n = [0]

    def after():
        n[0] += 1
        request(s.port, "GET", "/hello?after%d" % n[0])
        return any("after" in l for l in lines(log))

    wait_for(after, "a line in the new file")
    assert any("before" in l for l in lines(log + ".1"))
    assert not any("before" in l for l in lines(log))
    # Both workers reopened: new connections (spread over the workers) all land in the new file.
    for k in range(6):
        request(s.port, "GET", "/hello?late%d" % k)
    wait_for(lambda: sum("late" in l for l in lines(log)) == 6, "all late lines in the new file")
    assert not any("late" in l for l in lines(log + ".1"))
    assert s.proc.poll() is None


@pytest.mark.parametrize("workers", ["1", "2"])
def test_relative_access_log_file_with_chdir(spawn, tmp_path, workers):
    """A relative --access-logfile names a file of the start directory, where the server checks
    and creates it, as its other relative paths do: the workers, which have changed to --chdir's
    directory to import the app, write there too, also after a SIGUSR1 reopen."""
    (tmp_path / "app").mkdir()
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--chdir", "app", "--access-logfile", "access.log",
              "--access-logformat", "%(U)s", "--workers", workers, cwd=str(tmp_path))
    request(s.port, "GET", "/hello/before")
    wait_for(lambda: "/hello/before" in lines(log), "the line in the start directory's file")
    os.rename(log, log + ".1")
    s.signal(signal.SIGUSR1)
    wait_for(lambda: request(s.port, "GET", "/hello/after") and "/hello/after" in lines(log),
             "a line in the reopened file")
    assert not os.path.exists(tmp_path / "app" / "access.log")


def test_access_log_alias_still_writes_to_stderr(spawn):
    s = spawn("epoll", "asgi_corners:app", "--access-log")
    request(s.port, "GET", "/hello?alias=1")
    wait_for(lambda: '"GET /hello?alias=1 HTTP/1.1" 200' in s.log(), "the line on stderr")


def test_bad_access_log_format_is_a_usage_error():
    r = run("--app", "corners:app", "--access-logformat", "%(nope)s")
    assert r.returncode == 2 and "access-logformat" in r.stderr


# ---- metrics ---------------------------------------------------------------------------------

def scrape(port):
    r = request(port, "GET", "/metrics")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def test_metrics_counters_match_the_requests_sent(spawn):
    mport = free_port()
    s = spawn("epoll", "corners:app", "--workers", "2", "--metrics-bind", "127.0.0.1:%d" % mport)
    n_ok, n_raise = 24, 3
    for k in range(n_ok):
        assert request(s.port, "GET", "/hello?k=%d" % k).body == HELLO
    for k in range(n_raise):
        assert request(s.port, "GET", "/raise").status == 500
    body = b"x" * 1000
    assert request(s.port, "POST", "/echo", [("Content-Type", "application/octet-stream")],
                   body=body).body == body
    total = n_ok + n_raise + 1
    # the client has closed every connection, but the server sees each close
    # only when its loop reads the EOF: wait for that too, not just the count
    # (and libwsgi_workers counts workers running: the second may still have been booting)
    m = wait_for(lambda: (lambda m: m['libwsgi_requests_in_flight'] == 0
                          and m['libwsgi_connections_open'] == 0
                          and m['libwsgi_workers'] == 2
                          and m['libwsgi_request_duration_seconds_count'] == total and m)(scrape(mport)),
                 "every request counted, every connection closed, both workers running")
    assert m['libwsgi_requests_total{status="2xx"}'] == n_ok + 1
    assert m['libwsgi_requests_total{status="5xx"}'] == n_raise
    assert m['libwsgi_requests_total{status="4xx"}'] == 0
    assert m['libwsgi_request_outcomes_total{outcome="ok"}'] == n_ok + 1
    assert m['libwsgi_request_outcomes_total{outcome="app_exception"}'] == n_raise
    assert m['libwsgi_app_exceptions_total'] == n_raise
    assert m['libwsgi_request_duration_seconds_bucket{le="+Inf"}'] == total
    buckets = sorted((float(k.split('"')[1]), v) for k, v in m.items()
                     if k.startswith("libwsgi_request_duration_seconds_bucket") and "Inf" not in k)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative
    assert m["libwsgi_request_body_bytes_total"] == len(body)
    assert m["libwsgi_response_body_bytes_total"] >= n_ok * len(HELLO) + len(body)
    assert m["libwsgi_workers"] == 2
    assert m["libwsgi_connections_open"] == 0
    # A worker killed: counted as a restart with its reason, and its gauges do not linger.
    pids = [int(p) for p in re.findall(r"booted worker \d with pid (\d+)", s.log())]
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: scrape(mport)['libwsgi_worker_restarts_total{reason="killed"}'] == 1,
             "the restart counted")


def raw_exchange(port, data):
    """Sends @data, half-closes, returns the status code of the first response."""
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    got = read_to_eof(c)
    c.close()
    return int(got.split(b" ", 2)[1])


def test_server_made_errors_are_logged_and_counted(spawn, tmp_path):
    """Requests the server answers itself (a malformed head, a body over --max-body-size, a head
    over --max-header-size) never reach the app, but they are requests: one access-log line each,
    as gunicorn writes for them, and counted in libwsgi_rejected_requests_total by status class
    (not in the app's libwsgi_requests_total)."""
    log = str(tmp_path / "access.log")
    mport = free_port()
    s = spawn("epoll", "corners:app", "--access-logfile", log, "--metrics-bind",
              "127.0.0.1:%d" % mport, "--max-body-size", "1000", "--max-header-size", "2048")
    assert request(s.port, "GET", "/hello").body == HELLO
    assert raw_exchange(s.port, b"GET /bad path HTTP/1.1\r\nHost: x\r\n\r\n") == 400
    assert raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                        + b"x" * 5000) == 413
    assert raw_exchange(s.port, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000
                        + b"\r\n\r\n") == 431
    got = wait_for(lambda: len(lines(log)) >= 4 and lines(log), "four access log lines")
    statuses = sorted(int(l.split('" ', 1)[1].split()[0]) for l in got)
    assert statuses == [200, 400, 413, 431], got
    assert any('"POST /echo HTTP/1.1" 413' in l for l in got), got  # its head was complete
    m = wait_for(lambda: (lambda m: m['libwsgi_rejected_requests_total{status="4xx"}'] == 3 and m)(
        scrape(mport)), "three rejected requests counted")
    assert m['libwsgi_rejected_requests_total{status="5xx"}'] == 0
    assert m['libwsgi_requests_total{status="4xx"}'] == 0
    assert m['libwsgi_requests_total{status="2xx"}'] == 1
    assert len(lines(log)) == 4  # one line each, none twice
    # A chunked body going over the limit while the app reads it: the client gets the 413, and
    # so does the log (not the app's 500 that never left the server).
    chunks = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    assert raw_exchange(s.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                        b"\r\n\r\n" + chunks) == 413
    got = wait_for(lambda: len(lines(log)) >= 5 and lines(log), "the fifth line")
    assert '"POST /echo HTTP/1.1" 413 ' in got[4], got[4]


def test_a_websocket_the_app_never_answers_is_counted_once(spawn):
    """A WebSocket handshake the app neither accepts nor denies in --timeout-request gets the
    server's 503, but the app had the request: it is counted as the app's (the observer reports
    it), not also as rejected by the server."""
    mport = free_port()
    s = spawn("epoll", "misbehave_asgi:app", "--metrics-bind", "127.0.0.1:%d" % mport,
              "--timeout-request", "1", "--graceful-timeout", "1")
    head = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        c.sendall(head.encode())  # no half-close: a client gone in the handshake gets nothing
        assert read_to_eof(c).startswith(b"HTTP/1.1 503 ")
    # Counted (or not) before the 503 was written; the app's call goes on (awaiting forever).
    m = scrape(mport)
    assert m['libwsgi_rejected_requests_total{status="5xx"}'] == 0
    assert m["libwsgi_requests_in_flight"] == 1


def test_a_slow_client_does_not_hold_up_the_metrics_scrapes(spawn):
    """A client of the metrics endpoint that sends its request a byte at a time (or never ends it)
    does not hold the scrapes behind it: they are answered meanwhile, and the slow one is cut
    after its few seconds whatever it sends."""
    import threading
    mport = free_port()
    spawn("epoll", "corners:app", "--metrics-bind", "127.0.0.1:%d" % mport)
    scrape(mport)  # up
    stop = threading.Event()
    dribbling = threading.Event()

    def dribble():
        c = socket.create_connection(("127.0.0.1", mport), timeout=60)
        try:
            while not stop.is_set():
                c.sendall(b"G")
                dribbling.set()
                stop.wait(0.5)
        except OSError:
            pass  # the endpoint gave up on it after its 5 s
        c.close()

    t = threading.Thread(target=dribble)
    t.start()
    try:
        assert dribbling.wait(30)
        # Answered while the slow client dribbles on (it sends until stop is set, after this:
        # one at a time, this scrape would wait for it for ever, and time out)
        m = scrape(mport)
        assert "libwsgi_requests_total{status=\"2xx\"}" in m
    finally:
        stop.set()
        t.join()


def test_metrics_websockets_and_connections(spawn):
    mport = free_port()
    s = spawn("epoll", "ws_echo:app", "--metrics-bind", "127.0.0.1:%d" % mport)
    from wsclient import WSClient
    ws = WSClient.open(s.port, "/")
    m = wait_for(lambda: (lambda m: m["libwsgi_websockets_open"] == 1 and m)(scrape(mport)),
                 "one WebSocket open")
    assert m["libwsgi_connections_open"] >= 1
    ws.close()
    wait_for(lambda: scrape(mport)["libwsgi_websockets_open"] == 0, "the WebSocket closed")


# ---- --check-config --------------------------------------------------------------------------

def test_check_config():
    paths = ["--pythonpath", TEST_APPS, "--pythonpath", EXAMPLE_APPS]
    r = run("--app", "corners:app", "--check-config", *paths)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout and "WSGI" in r.stdout
    r = run("--app", "asgi_corners:app", "--check-config", *paths)
    assert r.returncode == 0 and "ASGI" in r.stdout
    r = run("--app", "no_such_module_here:app", "--check-config", *paths)
    assert r.returncode == 1 and "no_such_module_here" in r.stderr
    r = run("--app", "broken_app:app", "--check-config", *paths)
    assert r.returncode == 1
    r = run("--app", "corners:app", "--check-config", "--forwarded-allow-ips", "300.1.1.1")
    assert r.returncode == 2 and "forwarded-allow-ips" in r.stderr
    r = run("--app", "corners:app", "--check-config", "--bind", "nonsense")
    assert r.returncode == 1


# ---- behind a proxy --------------------------------------------------------------------------

def environ(port, headers=(), target="/environ"):
    r = request(port, "GET", target, headers)
    assert r.status == 200, r.body
    return json.loads(r.body)


def scope(port, headers=(), target="/scope"):
    r = request(port, "GET", target, headers)
    assert r.status == 200, r.body
    return json.loads(r.body)


XFF = [("X-Forwarded-For", "198.51.100.7, 203.0.113.5"), ("X-Forwarded-Proto", "https"),
       ("X-Forwarded-Host", "www.example.org")]


def test_proxy_headers_from_a_trusted_peer(spawn, tmp_path):
    log = str(tmp_path / "a.log")
    s = spawn("epoll", "corners:app", "--proxy-headers", "--access-logfile", log)
    e = environ(s.port, XFF)
    # uvicorn's rule: the right-most address that is not a trusted proxy.
    assert e["REMOTE_ADDR"] == "203.0.113.5"
    assert e["wsgi.url_scheme"] == "https" and e["HTTP_HOST"] == "www.example.org"
    s2 = spawn("epoll", "corners:app", "--proxy-headers",
               "--forwarded-allow-ips", "127.0.0.1,203.0.113.0/24")
    assert environ(s2.port, XFF)["REMOTE_ADDR"] == "198.51.100.7"
    # RFC 7239 from a proxy that sets only it (with X-Forwarded-* too, those decide: see
    # test_proxy_headers_a_forwarded_header_the_proxy_passed_through).
    e = environ(s.port, [("Forwarded", 'for="[2001:db8::1]:4711";proto=http;host=a.example, '
                                            'for=192.0.2.60;proto=https;host="b.example:8443"')])
    assert e["REMOTE_ADDR"] == "192.0.2.60" and e["wsgi.url_scheme"] == "https"
    assert e["HTTP_HOST"] == "b.example:8443"
    wait_for(lambda: any(l.startswith("203.0.113.5 ") for l in lines(log)), "the client logged")


def test_proxy_headers_from_an_untrusted_peer_are_ignored(spawn):
    s = spawn("epoll", "corners:app", "--proxy-headers", "--forwarded-allow-ips", "10.9.8.7")
    e = environ(s.port, XFF + [("Forwarded", "for=192.0.2.60;proto=https")])
    assert e["REMOTE_ADDR"] == "127.0.0.1" and e["wsgi.url_scheme"] == "http"
    assert e["HTTP_HOST"] == "test"
    # Without --proxy-headers nothing is taken, whoever the peer is.
    s2 = spawn("epoll", "corners:app")
    e = environ(s2.port, XFF)
    assert e["REMOTE_ADDR"] == "127.0.0.1" and e["wsgi.url_scheme"] == "http"


def test_proxy_headers_asgi_scope(spawn):
    s = spawn("epoll", "asgi_corners:app", "--proxy-headers", "--forwarded-allow-ips", "*")
    sc = scope(s.port, XFF)
    assert sc["client"][0] == "198.51.100.7"  # '*': every hop is trusted, the left-most is taken
    assert sc["scheme"] == "https"
    s2 = spawn("epoll", "asgi_corners:app", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1")
    sc = scope(s2.port, XFF)
    assert sc["client"][0] == "127.0.0.1" and sc["scheme"] == "http"


def test_root_path(spawn):
    s = spawn("epoll", "corners:app", "--root-path", "/api")
    e = environ(s.port, target="/api/environ")
    assert e["SCRIPT_NAME"] == "/api" and e["PATH_INFO"] == "/environ"
    s2 = spawn("epoll", "asgi_corners:app", "--root-path", "/api")
    sc = scope(s2.port, target="/scope")  # a proxy that strips the prefix (uvicorn's use)
    assert sc["root_path"] == "/api" and sc["path"] == "/scope"
    r = run("--app", "corners:app", "--root-path", "api/")
    assert r.returncode == 2 and "--root-path" in r.stderr


def test_metrics_in_flight_back_to_zero_after_requests_the_app_never_got(spawn):
    # Requests the server refuses before the app sees them (here a WebSocket handshake without
    # its key) were counted in flight and never counted out.
    mport = free_port()
    s = spawn("epoll", "ws_echo:app", "--metrics-bind", "127.0.0.1:%d" % mport)
    bad_ws = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    for k in range(3):
        assert request(s.port, "GET", "/", bad_ws).status == 400
    m = wait_for(lambda: (lambda m: m["libwsgi_connections_open"] == 0 and m)(scrape(mport)),
                 "every connection closed")
    assert m["libwsgi_requests_in_flight"] == 0
    assert m['libwsgi_requests_total{status="4xx"}'] == 0  # the app served none of them


def test_proxy_headers_x_forwarded_for_on_many_lines(spawn):
    # A proxy that adds its own X-Forwarded-For line (HAProxy's option forwardfor) after those
    # the client sent: the last line is the trusted one, however many came before it.
    s = spawn("epoll", "corners:app", "--proxy-headers")
    forged = [("X-Forwarded-For", "6.6.6.%d" % k) for k in range(12)]
    e = environ(s.port, forged + [("X-Forwarded-For", "203.0.113.9")])
    assert e["REMOTE_ADDR"] == "203.0.113.9"


def test_proxy_headers_a_forwarded_header_the_proxy_passed_through(spawn):
    # The nginx configuration of docs/deployment.md sets X-Forwarded-For and -Proto and passes
    # the client's other headers on, a Forwarded header included: that one is the client's word.
    s = spawn("epoll", "corners:app", "--proxy-headers")
    nginx = [("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
             ("X-Forwarded-For", "198.51.100.20"), ("X-Forwarded-Proto", "http")]
    e = environ(s.port, nginx)
    assert e["REMOTE_ADDR"] == "198.51.100.20"
    assert e["wsgi.url_scheme"] == "http" and e["HTTP_HOST"] == "test"


def test_proxy_headers_an_invalid_forwarded_host_is_ignored(spawn):
    # A Host that is not host[:port] is a 400 (RFC 9112 3.2); a forwarded host replacing it must
    # not bring one back: a proxy that does not set X-Forwarded-Host itself passes the client's
    # on (docs/deployment.md). Such a value is ignored, Host kept; a valid one is still taken.
    s = spawn("epoll", "corners:app", "--proxy-headers")
    for bad in ("a.test/evil?", "a b", "user@a.test", "a.test:80x"):
        e = environ(s.port, [("X-Forwarded-For", "198.51.100.20"), ("X-Forwarded-Host", bad)])
        assert e["HTTP_HOST"] == "test", bad
        e = environ(s.port, [("Forwarded", 'for=192.0.2.60;host="%s"' % bad)])
        assert e["HTTP_HOST"] == "test", bad
    e = environ(s.port, [("X-Forwarded-Host", "[::1]:8443")])
    assert e["HTTP_HOST"] == "[::1]:8443"


def test_sigusr1_without_an_access_log_kills_no_process(spawn):
    # logrotate's postrotate sends SIGUSR1 whatever the server logs; a process without the access
    # log's handler died of it (the master forwards it to every worker). SIGUSR1 goes before
    # SIGTERM, so a process it killed never gets to its graceful shutdown.
    s = spawn("epoll", "corners:app", "--workers", "2")
    wait_for(lambda: "2 workers ready" in s.log(), "both workers booted")
    s.signal(signal.SIGUSR1)
    assert s.stop() == 0
    assert len(re.findall(r"worker \d+: shutting down gracefully", s.log())) == 2, s.log()
    assert "signal 10" not in s.log()
    one = spawn("epoll", "corners:app")  # --workers 1: no master
    assert request(one.port, "GET", "/hello").body == HELLO
    one.signal(signal.SIGUSR1)
    assert one.stop() == 0


def test_access_log_of_a_worker_started_after_the_rotation(spawn, tmp_path):
    # A worker the master starts after a SIGUSR1 (a crash, --max-requests, a reload) inherited the
    # master's descriptor, still the rotated file's, and wrote there until the next rotation.
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--access-logfile", log, "--access-logformat", "%(p)s %(U)s",
              "--workers", "2", "--reuse-port")  # per-worker sockets: both get connections
    wait_for(lambda: "2 workers ready" in s.log(), "both workers booted")
    os.rename(log, log + ".1")
    s.signal(signal.SIGUSR1)
    old = [int(p) for p in re.findall(r"booted worker \d with pid (\d+)", s.log())]
    os.kill(old[0], signal.SIGKILL)
    new = wait_for(lambda: [int(p) for p in re.findall(r"booted worker \d with pid (\d+)", s.log())
                            if int(p) not in old and "listening at" in s.log().split(
                                "pid %s" % p, 1)[-1]], "the replacement listening")[0]
    tag = "<%d> " % new

    def served_by_new():
        request(s.port, "GET", "/hello")
        return any(l.startswith(tag) for l in lines(log) + lines(log + ".1"))

    wait_for(served_by_new, "a request served by the new worker")
    assert not any(l.startswith(tag) for l in lines(log + ".1"))


def test_metrics_count_the_requests_of_a_worker_added_by_sigttin(spawn):
    # The region had one slot per worker of --workers: a worker SIGTTIN added had none, and its
    # requests were counted nowhere.
    mport = free_port()
    s = spawn("epoll", "corners:app", "--workers", "2", "--reuse-port",
              "--metrics-bind", "127.0.0.1:%d" % mport)
    wait_for(lambda: "2 workers ready" in s.log(), "both workers booted")
    s.signal(signal.SIGTTIN)
    third = wait_for(lambda: re.findall(r"booted worker 2 with pid (\d+)", s.log()), "worker 2")[0]
    wait_for(lambda: "(pid %s," % third in s.log(), "worker 2 listening")
    sent = [0]

    def served_by_third():
        sent[0] += 1
        return request(s.port, "GET", "/pid").body.decode() == third

    wait_for(served_by_third, "a request served by worker 2")
    m = wait_for(lambda: (lambda m: m["libwsgi_connections_open"] == 0 and m)(scrape(mport)),
                 "every connection closed")
    assert m['libwsgi_requests_total{status="2xx"}'] == sent[0]
    assert m["libwsgi_workers"] == 3
    s.signal(signal.SIGTTOU)
    wait_for(lambda: scrape(mport)["libwsgi_workers"] == 2, "worker 2 gone")
    assert scrape(mport)['libwsgi_requests_total{status="2xx"}'] == sent[0]  # its counts stay


def test_access_log_of_a_refused_request_names_no_earlier_client(spawn, tmp_path):
    # nginx keeps its upstream connections alive and sends requests of different clients over
    # one: a request refused before the app (417 here) was logged with the client the proxy
    # forwarded for the connection's previous request.
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--proxy-headers", "--access-logfile", log,
              "--access-logformat", "%(h)s %(s)s")
    with Conn(s.port) as c:
        c.send(build_request("GET", "/hello", [("X-Forwarded-For", "203.0.113.5")]))
        assert c.read_response().status == 200
        c.send(build_request("GET", "/hello", [("X-Forwarded-For", "198.51.100.99"),
                                               ("Expect", "something")]))
        assert c.read_response().status == 417
    got = wait_for(lambda: len(lines(log)) >= 2 and lines(log), "two lines")
    assert got[0] == "203.0.113.5 200"
    assert got[1].endswith(" 417") and not got[1].startswith("203.0.113.5 "), got


def test_forwarded_allow_ips_separated_by_spaces(spawn):
    # The list was sized by its commas but split at spaces too: entries separated by spaces only
    # were written past its end (glibc: "malloc(): corrupted top size").
    many = " ".join("10.0.%d.%d" % (k // 250, k % 250) for k in range(2000)) + " 127.0.0.1"
    r = run("--app", "corners:app", "--pythonpath", TEST_APPS, "--check-config",
            "--forwarded-allow-ips", many)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr
    s = spawn("epoll", "corners:app", "--proxy-headers", "--forwarded-allow-ips",
              "10.9.8.7 127.0.0.1")
    assert environ(s.port, XFF)["REMOTE_ADDR"] == "203.0.113.5"


def test_access_log_format_percent_escapes(spawn, tmp_path):
    # Python's % operator (gunicorn's) reads "%%(h)s" as the text "%(h)s"; it was taken for a "%"
    # and the atom h.
    log = str(tmp_path / "access.log")
    s = spawn("epoll", "corners:app", "--access-logfile", log,
              "--access-logformat", "%%(h)s|%(s)s|%%%(s)s|%%%%")
    request(s.port, "GET", "/hello")
    assert wait_for(lambda: lines(log), "the line") == ["%(h)s|200|%200|%%"]
