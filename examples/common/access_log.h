/* The access log of the example hosts: gunicorn's --access-logformat language compiled once,
 * lines rendered from a record the host fills, written with one write(2) to stderr or to a file
 * that is reopened (logrotate) after SIGUSR1. */
#ifndef WSGI_HOST_ACCESS_LOG_H
#define WSGI_HOST_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

/* gunicorn's default (the combined log format) plus the request time in seconds (%(L)s). */
#define ACCESS_LOG_DEFAULT_FORMAT                                                                  \
    "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\" %(L)s"

/* Most distinct %({name}i)s / %({name}o)s headers one format may name. */
#define ACCESS_LOG_MAX_HEADERS 16

/* One finished request, as the log line needs it. Strings are raw bytes with lengths (NULL: "-").
 */
typedef struct access_record {
    const char *remote; /* h: client address (NUL-terminated) */
    const char *user;   /* u: from Authorization: Basic, or NULL */
    size_t user_len;
    const char *method, *target; /* m; U, q from the target */
    size_t method_len, target_len;
    int http_major, http_minor; /* H */
    int status;                 /* s (0: "-") */
    uint64_t body_bytes;        /* B, b */
    int64_t duration_us;        /* T, D, M, L */
    /* %({name}i)s: the values in the order access_log_request_headers() named them. */
    const char *req_values[ACCESS_LOG_MAX_HEADERS];
    size_t req_lens[ACCESS_LOG_MAX_HEADERS];
    /* %({name}o)s: the same for response headers. */
    const char *resp_values[ACCESS_LOG_MAX_HEADERS];
    size_t resp_lens[ACCESS_LOG_MAX_HEADERS];
} access_record;

/* Compile fmt (NULL: the default) and open the destination (NULL or "-": stderr). 0, or -1 with
 * a message on stderr (an unknown atom, a file that cannot be opened). */
int access_log_setup(const char *fmt, const char *path);
/* Whether access_log_setup() succeeded: the host prepares records only then. */
int access_log_enabled(void);
/* The lowercase request / response header names the format uses (%({name}i)s, %({name}o)s; the
 * referer and user agent of f and a are request headers too, always first and second). */
size_t access_log_request_headers(const char *const **names);
size_t access_log_response_headers(const char *const **names);
/* In a process forked from the one that opened the file (a prefork worker): reopen it if its path
 * names another file now (rotated while the master, which never writes, kept the old one). */
void access_log_worker_start(void);
/* Write one line (reopening the file first if SIGUSR1 came). Any thread. */
void access_log_write(const access_record *r);
/* Install the SIGUSR1 handler that marks the file for reopening (call in each process that
 * writes: the workers; also harmless in the master). */
void access_log_handle_sigusr1(void);

#endif
