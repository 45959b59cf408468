/* gunicorn-style log lines on stderr. Each line is formatted into one buffer and written with a
 * single write(2), so lines from threads and worker processes never interleave mid-line. */
#include "host_log.h"

#include <libwsgi/libwsgi.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int log_level = WSGI_LOG_INFO;

void host_log_set_level(int level)
{
    log_level = level;
}

int host_log_level(void)
{
    return log_level;
}

static const char *level_name(int level)
{
    switch (level) {
    case WSGI_LOG_ERROR: return "ERROR";
    case WSGI_LOG_WARNING: return "WARNING";
    case WSGI_LOG_INFO: return "INFO";
    case WSGI_LOG_DEBUG: return "DEBUG";
    default: return level < WSGI_LOG_ERROR ? "CRITICAL" : "DEBUG";
    }
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w <= 0) return; /* nowhere to report a failure to log */
        p += w;
        n -= (size_t)w;
    }
}

static void emit(int level, const char *msg, size_t len)
{
    char stack[1024];
    char head[96];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[64];
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S %z", &tm);
    int hl = snprintf(head, sizeof(head), "[%s] [%d] [%s] ", ts, (int)getpid(), level_name(level));
    if (hl < 0) return;
    size_t total = (size_t)hl + len + 1;
    if (total <= sizeof(stack)) {
        memcpy(stack, head, (size_t)hl);
        memcpy(stack + hl, msg, len);
        stack[total - 1] = '\n';
        write_all(stack, total);
        return;
    }
    /* Long lines (tracebacks): one writev, so the line stays in one piece on a pipe (a short
     * write of a huge line is finished piecewise). */
    char nl = '\n';
    struct iovec iov[3] = {{head, (size_t)hl}, {(void *)msg, len}, {&nl, 1}};
    ssize_t w = writev(STDERR_FILENO, iov, 3);
    if (w < 0 || (size_t)w == total) return;
    size_t done = (size_t)w;
    for (int k = 0; k < 3; k++) {
        if (done >= iov[k].iov_len) {
            done -= iov[k].iov_len;
            continue;
        }
        write_all((const char *)iov[k].iov_base + done, iov[k].iov_len - done);
        done = 0;
    }
}

void host_log_cb(void *user_data, int level, const char *msg, size_t len)
{
    (void)user_data;
    if (level > log_level) return;
    emit(level, msg, len);
}

void host_log(int level, const char *fmt, ...)
{
    if (level > log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof(buf)) n = sizeof(buf) - 1;
    emit(level, buf, (size_t)n);
}

/* Copies raw request bytes into the line, escaping what would break it (quotes, control bytes). */
static size_t put_field(char *dst, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (!s || n == 0) {
        if (cap > 0) dst[o++] = '-';
        return o;
    }
    for (size_t k = 0; k < n && o + 4 < cap; k++) {
        unsigned char ch = (unsigned char)s[k];
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        } else {
            dst[o++] = (char)ch;
        }
    }
    return o;
}

void host_access_log(const char *remote, const char *request_line, size_t request_line_len,
                     int status, uint64_t body_bytes, const char *referer, size_t referer_len,
                     const char *user_agent, size_t user_agent_len)
{
    char line[4096];
    char ts[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%d/%b/%Y:%H:%M:%S %z", &tm);
    size_t cap = sizeof(line) - 1;
    int n = snprintf(line, cap, "%s - - [%s] \"", remote ? remote : "-", ts);
    if (n < 0) return;
    size_t o = (size_t)n;
    o += put_field(line + o, cap - o, request_line, request_line_len);
    if (body_bytes > 0)
        n = snprintf(line + o, cap - o, "\" %d %llu \"", status, (unsigned long long)body_bytes);
    else
        n = snprintf(line + o, cap - o, "\" %d - \"", status);
    if (n < 0 || (size_t)n >= cap - o) return;
    o += (size_t)n;
    o += put_field(line + o, cap - o, referer, referer_len);
    if (o + 3 < cap) {
        memcpy(line + o, "\" \"", 3);
        o += 3;
    }
    o += put_field(line + o, cap - o, user_agent, user_agent_len);
    if (o < cap) line[o++] = '"';
    line[o++] = '\n';
    write_all(line, o);
}
