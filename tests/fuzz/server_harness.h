/* The real libwsgi-epoll / libwsgi-scgi server (examples/epoll: server_run() and everything under
 * it) inside a fuzz target: started once per process, each server on its own thread and its own
 * abstract unix socket, and a client that talks to one of them over a real connection (the bytes
 * in pieces of pseudo-random sizes, while reading what comes back). Shared by fuzz_server and
 * fuzz_server_ws. */
#ifndef LIBWSGI_FUZZ_SERVER_HARNESS_H
#define LIBWSGI_FUZZ_SERVER_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FZS_CHECK(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s: check failed: %s (line %d)\n", __FILE__, #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* One server of the process: a command line of libwsgi-epoll (scgi == 0) or libwsgi-scgi, parsed
 * by the servers' own epoll_cli_parse() (--app, --bind, TLS and process options are the harness's:
 * leave them out), and whether its app is the ASGI one (at most one ASGI server per process: the
 * app's asyncio loop belongs to one thread). */
typedef struct fzs_config {
    const char *name; /* for messages */
    int scgi;
    int asgi;
    const char *args; /* the options, separated by spaces */
} fzs_config;

/* Start the runtime (tests/fuzz/apps on sys.path), the apps, the access log and --proxy-headers
 * (process-wide: on for every server), and the servers, each once it answers. Aborts on failure.
 * FUZZ_SERVER_LOG=7 shows the servers' log (default: only worse than errors: the fuzzer makes
 * apps fail on purpose); FUZZ_SERVER_SHOW=1 prints every answer. */
void fzs_start(const fzs_config *configs, size_t n);

/* The received bytes of one connection. */
typedef struct fzs_buf {
    uint8_t *p;
    size_t len, cap;
    int truncated; /* more arrived than is kept (FZS_MAX_KEEP) */
} fzs_buf;

#define FZS_MAX_KEEP (8u << 20)

/* A client connection to server k (non-blocking). */
int fzs_connect(size_t k);

/* Write data in pieces (sizes from *seed) while reading into out; stop writing early if the
 * server closed its side. 0, or -1 if the server is gone (reset, closed). */
int fzs_send(int fd, const uint8_t *data, size_t len, uint32_t *seed, fzs_buf *out);

/* Read into out until it holds the byte string end (from offset from), until EOF, or for ms
 * milliseconds (no hang: the server may be waiting for more, e.g. the rest of a head). 1 if
 * found, else 0. */
int fzs_read_until(int fd, fzs_buf *out, size_t from, const char *end, int ms);

/* Read into out until more than had bytes are there, EOF, or ms milliseconds (no hang: the
 * server may have nothing to say). */
void fzs_wait(int fd, fzs_buf *out, size_t had, int ms);

/* Half-close (the client has nothing more to say), read until the server closes, close. The
 * server must answer what it got and close: no EOF within FUZZ_SERVER_HANG_MS (default 10000)
 * aborts, as a hang. */
void fzs_finish(int fd, fzs_buf *out);

void fzs_buf_free(fzs_buf *b);

/* Small deterministic pseudo-random numbers (xorshift32; seed never 0). */
static inline uint32_t fzs_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

#endif
