/* Command-line parsing for libwsgi-epoll and libwsgi-scgi: shared options via host_cli_common(),
 * the rest here. */
#include "cli.h"
#include "version.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f, server_program prog)
{
    if (prog == PROG_SCGI)
        fprintf(f,
                "usage: libwsgi-scgi --app MODULE:CALLABLE [options]\n"
                "\n"
                "A backend for lighttpd serving a Python WSGI or ASGI app through libwsgi:\n"
                "SCGI (mod_scgi), the uwsgi protocol (mod_scgi with scgi.protocol = \"uwsgi\")\n"
                "and plain HTTP/1.1 (mod_proxy, for WebSocket), told apart by each\n"
                "connection's first byte. Spawned by lighttpd (bin-path) it serves the socket\n"
                "it inherits on fd 0; started on its own it listens on --bind.\n"
                "\n"
                "options:\n"
                "%s"
                "  --bind HOST:PORT | unix:PATH\n"
                "                          listen here (repeatable; default: the listening\n"
                "                          socket on fd 0, as lighttpd's bin-path passes it)\n"
                "  --fd N                  serve the listening socket inherited on fd N\n"
                "  --protocol auto|scgi|uwsgi|http\n"
                "                          what connections speak (default auto: SCGI, uwsgi\n"
                "                          and HTTP/1.1, by the first byte)\n"
                "  --x-sendfile            answer file responses (wsgi.file_wrapper, ASGI\n"
                "                          pathsend) with an X-Sendfile header: lighttpd sends\n"
                "                          the file (needs x-sendfile = \"enable\")\n",
                host_cli_common_help());
    else
        fprintf(f,
                "usage: libwsgi-epoll --app MODULE:CALLABLE [options]\n"
                "\n"
                "A minimal HTTP/1.1 server on epoll serving a Python WSGI or ASGI app (with\n"
                "WebSocket for ASGI) through libwsgi.\n"
                "\n"
                "options:\n"
                "%s"
                "  --bind HOST:PORT | unix:PATH\n"
                "                          listen here (repeatable; default 127.0.0.1:8000)\n"
                "  --fd N                  serve the listening socket inherited on fd N\n"
                "  --certfile PATH         serve HTTPS (and wss): PEM certificate chain, server\n"
                "                          certificate first (and the key, without --keyfile)\n"
                "  --keyfile PATH          the PEM private key of --certfile\n"
                "  --ca-certs PATH         PEM CA certificates that issue client certificates;\n"
                "                          clients must then present one (see --cert-reqs)\n"
                "  --cert-reqs none|optional|required\n"
                "                          client certificates with --ca-certs (0|1|2 also\n"
                "                          accepted; default required with --ca-certs)\n"
                "  --ssl-ciphers LIST      OpenSSL cipher list for TLS 1.2 (default OpenSSL's;\n"
                "                          TLS 1.3 suites keep their defaults)\n",
                host_cli_common_help());
    fprintf(f,

            "  --backlog N             listen backlog (default 1024)\n"
            "  --max-header-size BYTES request line + headers limit (default 65536) -> 431\n"
            "                          (414 if the request line alone is longer)\n"
            "  --max-headers N         header lines in a request (default 100; alias\n"
            "                          --limit-request-fields) -> 431\n"
            "  --max-body-size BYTES   request body limit, k/m/g suffixes (default 1g;\n"
            "                          0: unlimited) -> 413\n"
            "  --timeout-keepalive S   idle time allowed between requests (default 5)\n"
            "  --timeout-request S     time to send a request head, and the longest pause\n"
            "                          while sending a body or reading a response (default 60)\n"
            "  --ws-max-size BYTES     largest WebSocket message accepted, k/m/g suffixes\n"
            "                          (default 16m) -> close 1009\n"
            "  --ws-ping-interval S    ping open WebSockets this often (default 20; 0: never)\n"
            "  --ws-ping-timeout S     close a WebSocket whose pong is this late (default 20;\n"
            "                          0: never); the app sees code 1006\n"
            "  --ws-per-message-deflate on|off\n"
            "                          accept permessage-deflate offers (default on)\n"
            "  --limit-concurrency N   answer 503 to requests that arrive while a worker has\n"
            "                          more than N connections and ASGI tasks still running\n"
            "                          after their response (default 0: no limit)\n"
            "  --lifespan-timeout S    time an ASGI app's lifespan startup may take, else\n"
            "                          the worker exits with status 3 (default 60; 0: none)\n"
            "  --loop-block-warn-ms MS warn when an ASGI app holds the event loop longer\n"
            "                          than this in one turn (default 1000; 0: never)\n");
    fputs(obs_cli_help(), f);
    fputs(proc_cli_help(), f);
    fprintf(f, "  --help                  show this help and exit\n"
               "  --version               show the version and exit\n");
}

/* systemd socket activation: LISTEN_PID is this process and LISTEN_FDS sockets start at fd 3
 * (sd_listen_fds(3)). The variables are removed so that the app and its children do not see
 * them. Returns the number of sockets (0: none). */
static int systemd_listen_fds(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    int n = 0;
    if (pid && fds && strtol(pid, NULL, 10) == (long)getpid()) {
        n = (int)strtol(fds, NULL, 10);
        if (n < 0) n = 0;
        if (n > EPOLL_MAX_BINDS) {
            fprintf(stderr, "warning: LISTEN_FDS=%d: serving the first %d\n", n, EPOLL_MAX_BINDS);
            n = EPOLL_MAX_BINDS;
        }
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return n;
}

int epoll_cli_parse(int argc, char **argv, server_program prog, epoll_options *o)
{
    memset(o, 0, sizeof(*o));
    host_options_init(&o->host);
    o->program = prog;
    o->name = prog == PROG_SCGI ? "libwsgi-scgi" : EPOLL_SERVER_NAME;
    o->scgi_accept =
        prog == PROG_SCGI ? PROTO_ACCEPT_SCGI | PROTO_ACCEPT_UWSGI | PROTO_ACCEPT_HTTP : 0;
    o->inherit_fd = -1;
    o->max_header_size = 65536;
    o->max_headers = 100;
    o->max_body_size = 1024ull * 1024 * 1024;
    o->timeout_keepalive = 5;
    o->timeout_request = 60;
    o->backlog = 1024;
    o->ws_max_size = 16u << 20;
    o->ws_ping_interval = 20;
    o->ws_ping_timeout = 20;
    o->ws_per_message_deflate = 1;
    o->cert_reqs = -1;
    o->lifespan_timeout = 60;
    o->loop_block_warn_ms = 1000;
    obs_options_init(&o->obs);
    proc_options_init(&o->proc);

    int i = 1;
    while (i < argc) {
        const char *v = NULL;
        uint64_t n;
        int r;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, prog);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s (libwsgi %s, http_parser %lu.%lu.%lu)\n", o->name, EPOLL_SERVER_VERSION,
                   libwsgi_version(), (http_parser_version() >> 16) & 255,
                   (http_parser_version() >> 8) & 255, http_parser_version() & 255);
            return 1;
        }
        r = host_cli_common(&o->host, argc, argv, &i);
        if (r < 0) return -1;
        if (r > 0) continue;
        r = obs_cli_option(&o->obs, &o->host, argc, argv, &i);
        if (r < 0) return -1;
        if (r > 0) continue;
        r = proc_cli_parse(&o->proc, argc, argv, &i);
        if (r < 0) return -1;
        if (r > 0) continue;
        if ((r = host_cli_match("--bind", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0) return -1;
            if (o->n_binds == EPOLL_MAX_BINDS) {
                fprintf(stderr, "error: at most %d --bind options\n", EPOLL_MAX_BINDS);
                return -1;
            }
            o->binds[o->n_binds++] = v;
            continue;
        }
        if ((r = host_cli_match("--fd", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--fd", v, 0, 1 << 20, 0, &n) < 0) return -1;
            o->inherit_fd = (int)n;
            continue;
        }
        if (prog == PROG_SCGI && (r = host_cli_match("--protocol", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0) return -1;
            if (strcmp(v, "auto") == 0)
                o->scgi_accept = PROTO_ACCEPT_SCGI | PROTO_ACCEPT_UWSGI | PROTO_ACCEPT_HTTP;
            else if (strcmp(v, "scgi") == 0)
                o->scgi_accept = PROTO_ACCEPT_SCGI;
            else if (strcmp(v, "uwsgi") == 0)
                o->scgi_accept = PROTO_ACCEPT_UWSGI;
            else if (strcmp(v, "http") == 0)
                o->scgi_accept = PROTO_ACCEPT_HTTP;
            else {
                fprintf(stderr, "error: --protocol: expected auto, scgi, uwsgi or http, got '%s'\n",
                        v);
                return -1;
            }
            continue;
        }
        if (prog == PROG_SCGI && (r = host_cli_match("--x-sendfile", 0, argc, argv, &i, &v)) != 0) {
            o->x_sendfile = 1;
            continue;
        }
        static const char *const tls_opts[] = {"--certfile", "--keyfile", "--ca-certs",
                                               "--cert-reqs", "--ssl-ciphers"};
        for (size_t k = 0; k < sizeof(tls_opts) / sizeof(tls_opts[0]); k++) {
            if ((r = host_cli_match(tls_opts[k], 1, argc, argv, &i, &v)) == 0) continue;
            if (r < 0) return -1;
            if (prog == PROG_SCGI) {
                fprintf(stderr,
                        "error: %s: libwsgi-scgi does not speak TLS: configure it in "
                        "lighttpd (ssl.engine), which talks to libwsgi-scgi in the clear\n",
                        tls_opts[k]);
                return -1;
            }
            if (k == 0) o->certfile = v;
            if (k == 1) o->keyfile = v;
            if (k == 2) o->ca_certs = v;
            if (k == 4) o->ssl_ciphers = v;
            if (k == 3) {
                if (strcmp(v, "none") == 0 || strcmp(v, "0") == 0)
                    o->cert_reqs = TLS_CERT_NONE;
                else if (strcmp(v, "optional") == 0 || strcmp(v, "1") == 0)
                    o->cert_reqs = TLS_CERT_OPTIONAL;
                else if (strcmp(v, "required") == 0 || strcmp(v, "2") == 0)
                    o->cert_reqs = TLS_CERT_REQUIRED;
                else {
                    fprintf(stderr,
                            "error: --cert-reqs: expected none, optional or required, "
                            "got '%s'\n",
                            v);
                    return -1;
                }
            }
            r = 2;
            break;
        }
        if (r == 2) continue;
        if ((r = host_cli_match("--backlog", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--backlog", v, 1, 65535, 0, &n) < 0) return -1;
            o->backlog = (int)n;
            continue;
        }
        if ((r = host_cli_match("--max-header-size", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--max-header-size", v, 256, 16u << 20, 1, &n) < 0)
                return -1;
            o->max_header_size = (size_t)n;
            continue;
        }
        if ((r = host_cli_match("--max-headers", 1, argc, argv, &i, &v)) != 0 ||
            (r = host_cli_match("--limit-request-fields", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--max-headers", v, 1, EPOLL_MAX_HEADERS_LIMIT, 0, &n) < 0)
                return -1;
            o->max_headers = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--max-body-size", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--max-body-size", v, 0, UINT64_MAX, 1, &n) < 0) return -1;
            o->max_body_size = n;
            continue;
        }
        if ((r = host_cli_match("--timeout-keepalive", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--timeout-keepalive", v, 0, 86400, 0, &n) < 0) return -1;
            o->timeout_keepalive = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--timeout-request", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--timeout-request", v, 1, 86400, 0, &n) < 0) return -1;
            o->timeout_request = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--ws-max-size", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--ws-max-size", v, 1, 1u << 30, 1, &n) < 0) return -1;
            o->ws_max_size = n;
            continue;
        }
        if ((r = host_cli_match("--ws-ping-interval", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--ws-ping-interval", v, 0, 86400, 0, &n) < 0) return -1;
            o->ws_ping_interval = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--ws-ping-timeout", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--ws-ping-timeout", v, 0, 86400, 0, &n) < 0) return -1;
            o->ws_ping_timeout = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--limit-concurrency", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--limit-concurrency", v, 0, 1u << 24, 0, &n) < 0) return -1;
            o->limit_concurrency = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--lifespan-timeout", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--lifespan-timeout", v, 0, 86400, 0, &n) < 0) return -1;
            o->lifespan_timeout = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--loop-block-warn-ms", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0 || host_cli_uint("--loop-block-warn-ms", v, 0, 86400000, 0, &n) < 0)
                return -1;
            o->loop_block_warn_ms = (unsigned)n;
            continue;
        }
        if ((r = host_cli_match("--ws-per-message-deflate", 1, argc, argv, &i, &v)) != 0) {
            if (r < 0) return -1;
            if (strcmp(v, "on") == 0) {
                o->ws_per_message_deflate = 1;
            } else if (strcmp(v, "off") == 0) {
                o->ws_per_message_deflate = 0;
            } else {
                fprintf(stderr, "error: --ws-per-message-deflate: expected on or off, got '%s'\n",
                        v);
                return -1;
            }
            continue;
        }
        fprintf(stderr, "error: unknown argument '%s' (try --help)\n", argv[i]);
        return -1;
    }
    if (host_cli_validate(&o->host) < 0) return -1;
    if (!o->certfile && (o->keyfile || o->ca_certs || o->ssl_ciphers || o->cert_reqs >= 0)) {
        fprintf(stderr, "error: --keyfile, --ca-certs, --cert-reqs and --ssl-ciphers need "
                        "--certfile\n");
        return -1;
    }
    if (o->cert_reqs > TLS_CERT_NONE && !o->ca_certs) {
        fprintf(stderr, "error: --cert-reqs optional|required needs --ca-certs (the CAs that "
                        "issue client certificates)\n");
        return -1;
    }
    if (o->cert_reqs < 0) o->cert_reqs = o->ca_certs ? TLS_CERT_REQUIRED : TLS_CERT_NONE;
    if (obs_cli_validate(&o->obs, &o->host) < 0) return -1;
    if (proc_cli_validate(&o->proc) < 0) return -1;
    /* Socket activation: the sockets systemd passes, unless --bind or --fd says otherwise. */
    int activated = systemd_listen_fds();
    if (o->n_binds == 0 && o->inherit_fd < 0) o->listen_fds = activated;
    if (o->n_binds && o->inherit_fd >= 0) {
        fprintf(stderr, "error: --bind and --fd exclude each other\n");
        return -1;
    }
    /* libwsgi-scgi without either serves fd 0 (server_main() checks it is a listening socket). */
    if (o->n_binds == 0 && o->inherit_fd < 0 && !o->listen_fds && prog == PROG_EPOLL)
        o->binds[o->n_binds++] = "127.0.0.1:8000";
    return 0;
}
