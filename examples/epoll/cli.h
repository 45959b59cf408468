/* The command line of the two servers built on this code, libwsgi-epoll (HTTP/1.1) and
 * libwsgi-scgi (SCGI / uwsgi behind lighttpd, plus plain HTTP for WebSocket through mod_proxy):
 * the shared host options plus listening addresses, HTTP limits and timeouts, the WebSocket
 * settings, and for libwsgi-scgi the protocols and X-Sendfile. */
#ifndef EPOLL_CLI_H
#define EPOLL_CLI_H

#include "host_cli.h"
#include "proc_cli.h"
#include "obs.h"

#include <stddef.h>
#include <stdint.h>

#define EPOLL_MAX_BINDS 16
/* The largest --max-headers (gunicorn allows 32768; the head's size limit applies as well). */
#define EPOLL_MAX_HEADERS_LIMIT 10000

/* Which program parses (server_main()). */
typedef enum server_program { PROG_EPOLL, PROG_SCGI } server_program;

/* The protocols a connection may speak, told apart by its first byte (libwsgi-scgi). */
enum { PROTO_ACCEPT_SCGI = 1u << 0, PROTO_ACCEPT_UWSGI = 1u << 1, PROTO_ACCEPT_HTTP = 1u << 2 };

/* --cert-reqs: what a client must show with --ca-certs. */
enum { TLS_CERT_NONE, TLS_CERT_OPTIONAL, TLS_CERT_REQUIRED };

typedef struct epoll_options {
    host_options host;
    server_program program;
    const char *name;     /* "libwsgi-epoll" / "libwsgi-scgi": Server header, SERVER_SOFTWARE */
    unsigned scgi_accept; /* 0 (libwsgi-epoll: HTTP only) or PROTO_ACCEPT_* (--protocol) */
    int x_sendfile;       /* --x-sendfile: file responses as X-Sendfile headers (SCGI/uwsgi) */
    int inherit_fd;       /* --fd N, or fd 0 when spawned by lighttpd (libwsgi-scgi); -1: none */
    const char *binds[EPOLL_MAX_BINDS]; /* --bind HOST:PORT | unix:PATH (default 127.0.0.1:8000) */
    size_t n_binds;
    size_t max_header_size;     /* --max-header-size BYTES: request line + headers */
    unsigned max_headers;       /* --max-headers N (--limit-request-fields): header lines */
    uint64_t max_body_size;     /* --max-body-size BYTES (0: unlimited) */
    unsigned timeout_keepalive; /* --timeout-keepalive S: idle time between requests */
    unsigned timeout_request;   /* --timeout-request S: to receive a head; body/write inactivity */
    int backlog;                /* --backlog N */
    uint64_t ws_max_size;       /* --ws-max-size BYTES: largest incoming message (1009 beyond) */
    unsigned ws_ping_interval;  /* --ws-ping-interval S: ping an open WebSocket (0: never) */
    unsigned ws_ping_timeout;   /* --ws-ping-timeout S: drop it if the pong is later (0: never) */
    int ws_per_message_deflate; /* --ws-per-message-deflate on|off: accept RFC 7692 offers */
    /* Processes and deploys (proc_cli.h): recycling, --timeout, --preload, --reload, --pid... */
    proc_options proc;
    int listen_fds; /* systemd socket activation: LISTEN_FDS sockets from fd 3 (0: none) */
    /* TLS (libwsgi-epoll only, tls.c): on when certfile is set */
    const char *certfile; /* --certfile PATH: PEM certificate chain (and the key, if no keyfile) */
    const char *keyfile;  /* --keyfile PATH: PEM private key */
    const char *ca_certs; /* --ca-certs PATH: PEM CAs that issue client certificates */
    const char *ssl_ciphers; /* --ssl-ciphers LIST: OpenSSL cipher list for TLS 1.2 */
    int cert_reqs;           /* --cert-reqs: TLS_CERT_* (default: required with --ca-certs) */
    obs_options obs;         /* access log, metrics, --check-config, proxy headers (obs.h) */

    /* Misbehaving apps and overload (issue 14). */
    unsigned limit_concurrency;  /* --limit-concurrency N: 503 beyond N connections (0: none) */
    unsigned lifespan_timeout;   /* --lifespan-timeout S: lifespan startup deadline (0: none) */
    unsigned loop_block_warn_ms; /* --loop-block-warn-ms MS: warn of longer ASGI turns (0: off) */
} epoll_options;

/* Parse argv. Returns 0 to run, 1 if --help/--version was printed (exit 0), -1 on a usage error
 * (message printed; exit 2). */
int epoll_cli_parse(int argc, char **argv, server_program prog, epoll_options *o);

#endif
