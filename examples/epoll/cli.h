/* The libwsgi-epoll command line: the shared host options plus listening addresses, HTTP limits
 * and timeouts. */
#ifndef EPOLL_CLI_H
#define EPOLL_CLI_H

#include "host_cli.h"

#include <stddef.h>
#include <stdint.h>

#define EPOLL_MAX_BINDS 16

typedef struct epoll_options {
    host_options host;
    const char *binds[EPOLL_MAX_BINDS]; /* --bind HOST:PORT | unix:PATH (default 127.0.0.1:8000) */
    size_t n_binds;
    size_t max_header_size;     /* --max-header-size BYTES: request line + headers */
    uint64_t max_body_size;     /* --max-body-size BYTES (0: unlimited) */
    unsigned timeout_keepalive; /* --timeout-keepalive S: idle time between requests */
    unsigned timeout_request;   /* --timeout-request S: to receive a head; body/write inactivity */
    int backlog;                /* --backlog N */
} epoll_options;

/* Parse argv. Returns 0 to run, 1 if --help/--version was printed (exit 0), -1 on a usage error
 * (message printed; exit 2). */
int epoll_cli_parse(int argc, char **argv, epoll_options *o);

#endif
