/* Logging for the example hosts: gunicorn-style lines on stderr, used both as libwsgi's log
 * callback and for the host's own messages, plus the access log line. */
#ifndef WSGI_HOST_LOG_H
#define WSGI_HOST_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <libwsgi/libwsgi.h>

#if defined(__GNUC__)
#define HOST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HOST_PRINTF(a, b)
#endif

/* Most verbose level written (a wsgi_log_level). */
void host_log_set_level(int level);
int host_log_level(void);

/* The libwsgi log callback (wsgi_log_cb): "[date] [pid] [LEVEL] msg" on stderr, one write. */
void host_log_cb(void *user_data, int level, const char *msg, size_t len);

/* printf-style host messages at a wsgi_log_level. */
void host_log(int level, const char *fmt, ...) HOST_PRINTF(2, 3);

/* One access log line in gunicorn's default format:
 *   %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"
 * remote may be NULL ("-"); request_line, referer and user_agent are raw bytes with lengths
 * (NULL/0 gives "-"). */
void host_access_log(const char *remote, const char *request_line, size_t request_line_len,
                     int status, uint64_t body_bytes, const char *referer, size_t referer_len,
                     const char *user_agent, size_t user_agent_len);

#endif
