/* Response output for libwsgi-epoll: the response head and body framing shared by the WSGI and
 * ASGI paths (status line, Date and Server, the app's headers without hop-by-hop ones,
 * Content-Length / chunked / close-delimited framing), the WSGI response callbacks,
 * the output queue written with one sendmsg (writev) per batch and sendfile for files, the
 * server's own short responses (100 Continue, 4xx/5xx), and the 101 that starts a WebSocket.
 *
 * Backpressure (WSGI; ASGI's is in asgi_exchange.c): callbacks only queue. The app's first chunk,
 * and any that does not fit in the batch, is queued by pointer (libwsgi keeps it alive until the
 * next wsgi_iter_next); later small ones are copied into the scratch buffer (the batch, up to
 * OUT_BATCH_BYTES). exchange.c pulls the next chunk only while the batch has room and holds no
 * file range, after copying what is borrowed (conn_batch_ready), and writes it all before it
 * waits for the socket, so a connection holds at most one batch and one chunk of the app. The
 * exception is the legacy write() callable during wsgi_call(), which PEP 3333 requires to have
 * sent its data when it returns: in that case (c->in_call) the callback flushes before returning,
 * waiting for the socket.
 *
 * SCGI / uwsgi (libwsgi-scgi): lighttpd reads a CGI-style response ("Status:" line, headers, the
 * body until the connection closes or Content-Length ends it) and adds Server, Date and the
 * client's framing itself; with --x-sendfile a file body becomes an X-Sendfile header
 * (conn_queue_file). */
#include "conn.h"
#include "host_log.h"
#include "version.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

/* ---- the queue ----------------------------------------------------------------------------- */

static out_item *oq_push(conn *c)
{
    if (c->oq_len == c->oq_cap) {
        size_t cap = c->oq_cap ? c->oq_cap * 2 : 8;
        out_item *q = realloc(c->outq, cap * sizeof(*q));
        if (!q) return NULL;
        c->outq = q;
        c->oq_cap = cap;
    }
    out_item *it = &c->outq[c->oq_len++];
    memset(it, 0, sizeof(*it));
    return it;
}

static int sc_reserve(conn *c, size_t more)
{
    if (c->sc_len + more <= c->sc_cap) return 0;
    size_t cap = c->sc_cap ? c->sc_cap : 1024;
    while (cap < c->sc_len + more)
        cap *= 2;
    char *p = realloc(c->scratch, cap);
    if (!p) return -1;
    c->scratch = p;
    c->sc_cap = cap;
    return 0;
}

/* The @n bytes just written at the end of the scratch buffer (after sc_reserve) become (part of)
 * a queued item, as out_bytes() would have copied them. */
static int out_written(conn *c, size_t n)
{
    if (n == 0) return 0;
    size_t off = c->sc_len;
    c->sc_len += n;
    if (c->oq_len > c->oq_head) {
        out_item *last = &c->outq[c->oq_len - 1];
        if (last->kind == OUT_SCRATCH && last->off + last->len == off) {
            last->len += n;
            return 0;
        }
    }
    out_item *it = oq_push(c);
    if (!it) {
        c->sc_len -= n;
        return -1;
    }
    it->kind = OUT_SCRATCH;
    it->off = off;
    it->len = n;
    return 0;
}

/* Append bytes to the scratch buffer as (part of) a queued item. */
static int out_bytes(conn *c, const char *s, size_t n)
{
    if (n == 0) return 0;
    if (sc_reserve(c, n) < 0) return -1;
    memcpy(c->scratch + c->sc_len, s, n);
    return out_written(c, n);
}

static int out_str(conn *c, const char *s)
{
    return out_bytes(c, s, strlen(s));
}

static int out_mem(conn *c, const char *p, size_t n)
{
    out_item *it = oq_push(c);
    if (!it) return -1;
    it->kind = OUT_MEM;
    it->ptr = p;
    it->len = n;
    return 0;
}

/* Copy every still-queued borrowed chunk into the scratch buffer. libwsgi keeps a body chunk
 * alive only until the on_body after the next one (WSGI: write() called several times in one
 * call; ASGI: a paused send() the app cancelled), so an on_body that finds borrowed bytes still
 * queued makes them owned before queueing more. */
int conn_own_borrowed(conn *c)
{
    for (size_t k = c->oq_head; k < c->oq_len; k++) {
        out_item *it = &c->outq[k];
        if (it->kind != OUT_MEM) continue;
        if (sc_reserve(c, it->len) < 0) return -1;
        memcpy(c->scratch + c->sc_len, it->ptr, it->len);
        it->kind = OUT_SCRATCH;
        it->off = c->sc_len;
        c->sc_len += it->len;
    }
    return 0;
}

int conn_batch_ready(conn *c)
{
    size_t queued = 0;
    int borrowed = 0;
    for (size_t k = c->oq_head; k < c->oq_len; k++) {
        const out_item *it = &c->outq[k];
        if (it->kind == OUT_FILE) return 0;
        if (it->kind == OUT_MEM) borrowed = 1;
        queued += it->len;
    }
    if (queued >= OUT_BATCH_BYTES) return 0;
    if (queued && c->sc_cap < OUT_BATCH_SCRATCH) {
        /* A batch begins: one allocation for all of it (below malloc's mmap threshold), not a
         * doubling series per response. */
        char *p = realloc(c->scratch, OUT_BATCH_SCRATCH);
        if (!p) return -1;
        c->scratch = p;
        c->sc_cap = OUT_BATCH_SCRATCH;
    }
    if (borrowed && conn_own_borrowed(c) < 0) return -1;
    return 1;
}

void conn_scratch_trim(conn *c)
{
    if (c->sc_cap <= SCRATCH_KEEP || out_pending(c)) return;
    free(c->scratch);
    c->scratch = NULL;
    c->sc_cap = c->sc_len = 0;
}

static int out_file(conn *c, int fd, int64_t off, int64_t count)
{
    out_item *it = oq_push(c);
    if (!it) return -1;
    it->kind = OUT_FILE;
    it->fd = fd;
    it->foff = off;
    it->fcount = count;
    return 0;
}

int out_pending(const conn *c)
{
    return c->oq_head < c->oq_len;
}

void out_clear(conn *c)
{
    c->oq_head = c->oq_len = 0;
    c->sc_len = 0;
}

/* Write the queue with at most calls system calls (< 0: no limit). OUT_AGAIN: something is left. */
static int flush_calls(conn *c, int calls)
{
    while (c->oq_head < c->oq_len) {
        if (calls >= 0 && calls-- == 0) return OUT_AGAIN;
        out_item *it = &c->outq[c->oq_head];
        if (it->kind == OUT_FILE) {
            if (it->fcount == 0) {
                c->oq_head++;
                continue;
            }
            off_t off = (off_t)it->foff;
            size_t want = it->fcount > 0x7ffff000 ? 0x7ffff000 : (size_t)it->fcount;
            ssize_t n = conn_sendfile(c, it->fd, &off, want);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return OUT_AGAIN;
                return OUT_ERR;
            }
            if (n == 0) {
                host_log(WSGI_LOG_WARNING, "file ended before the length promised by the app");
                return OUT_ERR;
            }
            it->foff += n;
            it->fcount -= n;
            if (it->fcount == 0) c->oq_head++;
            continue;
        }
        struct iovec iov[64];
        int k = 0;
        for (size_t i = c->oq_head; i < c->oq_len && k < 64; i++) {
            const out_item *m = &c->outq[i];
            if (m->kind == OUT_FILE) break;
            iov[k].iov_base = (void *)(m->kind == OUT_MEM ? m->ptr : c->scratch + m->off);
            iov[k].iov_len = m->len;
            k++;
        }
        ssize_t n = conn_sendv(c, iov, k, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return OUT_AGAIN;
            return OUT_ERR;
        }
        size_t left = (size_t)n;
        while (left > 0) {
            out_item *m = &c->outq[c->oq_head];
            size_t take = left < m->len ? left : m->len;
            if (m->kind == OUT_MEM)
                m->ptr += take;
            else
                m->off += take;
            m->len -= take;
            left -= take;
            if (m->len == 0) c->oq_head++;
        }
        while (c->oq_head < c->oq_len && c->outq[c->oq_head].kind != OUT_FILE &&
               c->outq[c->oq_head].len == 0)
            c->oq_head++;
    }
    out_clear(c);
    return OUT_DONE;
}

int out_flush(conn *c)
{
    return flush_calls(c, -1);
}

int out_flush_once(conn *c)
{
    return flush_calls(c, 1);
}

int out_flush_blocking(conn *c, int timeout_ms)
{
    for (;;) {
        int r = out_flush(c);
        if (r != OUT_AGAIN) return r;
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr == 0) {
            host_log(WSGI_LOG_DEBUG, "timed out writing to a client");
            return OUT_ERR;
        }
        if (pr < 0 && errno != EINTR) return OUT_ERR;
    }
}

/* ---- Date ---------------------------------------------------------------------------------- */

/* "Sun, 06 Nov 1994 08:49:37 GMT", formatted once per second per thread (no locale involved). */
static const char *http_date(void)
{
    static __thread time_t last;
    static __thread char buf[40];
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != last || !buf[0]) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        last = now;
    }
    return buf;
}

/* ---- server-generated responses ------------------------------------------------------------ */

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

int conn_queue_status(conn *c, int status)
{
    char buf[512];
    int n;
    if (c->proto != CPROTO_HTTP && status != 100) {
        const char *r = reason(status);
        n = snprintf(buf, sizeof(buf),
                     "Status: %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status, r, strlen(r) + 1, r);
        c->status = status;
        c->keep_alive = 0;
        c->body_bytes = strlen(r) + 1;
    } else if (status == 100) {
        n = snprintf(buf, sizeof(buf), "HTTP/1.1 100 Continue\r\n\r\n");
    } else {
        const char *r = reason(status);
        /* 426 answers a WebSocket handshake with another version (RFC 6455 4.4), naming the
         * protocol it requires in Upgrade, which a sender lists in Connection too (RFC 9110
         * 15.5.22, 7.8). */
        int up = status == 426;
        const char *extra = up ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" : "";
        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n%sContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: %sclose\r\n\r\n%s\n",
                     status, r, server_options(c->srv)->name, http_date(), extra, strlen(r) + 1,
                     up ? "Upgrade, " : "", r);
        c->status = status;
        c->keep_alive = 0;
        c->body_bytes = strlen(r) + 1;
    }
    if (n < 0 || (size_t)n >= sizeof(buf)) return -1;
    return out_bytes(c, buf, (size_t)n);
}

/* ---- the libwsgi response callbacks --------------------------------------------------------- */

static int hop_by_hop(const char *name, size_t len)
{
    switch (len) { /* by length first: most headers are none of these */
    case 2: return strncasecmp(name, "te", 2) == 0;
    case 7: return strncasecmp(name, "trailer", 7) == 0 || strncasecmp(name, "upgrade", 7) == 0;
    case 10:
        return strncasecmp(name, "connection", 10) == 0 || strncasecmp(name, "keep-alive", 10) == 0;
    case 16: return strncasecmp(name, "proxy-connection", 16) == 0;
    case 17: return strncasecmp(name, "transfer-encoding", 17) == 0;
    default: return 0;
    }
}

static int has_token(const char *v, size_t n, const char *tok)
{
    size_t t = strlen(tok);
    for (size_t i = 0; i + t <= n; i++)
        if (strncasecmp(v + i, tok, t) == 0) return 1;
    return 0;
}

static int server_line(conn *c)
{
    return out_str(c, "Server: ") | out_str(c, server_options(c->srv)->name) | out_str(c, "\r\n");
}

static int after_queue(conn *c)
{
    /* write() inside wsgi_call: the app may free the bytes as soon as we return. */
    if (c->in_call) return out_flush_blocking(c, server_timeout_ms(c->srv)) == OUT_DONE ? 0 : -1;
    return 0;
}

/* Whether the response goes out without its body bytes: HEAD, 1xx, 204, 304 (RFC 9112 6.3), and
 * 205, in which "a server MUST NOT generate content" (RFC 9110 15.3.6). */
static int no_body_sent(const conn *c, int status)
{
    return c->is_head || status < 200 || status == 204 || status == 205 || status == 304;
}

/* The app's Content-Length is not sent for a 204 (RFC 9110 8.6: a server must not send one: a
 * client that frames by it, as http_parser does, would take the next response's bytes for this
 * one's body) nor for a 205, which gets "Content-Length: 0" instead (its body is empty and, unlike
 * a 204's, must be framed: RFC 9112 6.3). */
static int drop_app_header(int status, const wsgi_header *x)
{
    return (status == 204 || status == 205) && x->name_len == 14 &&
           strncasecmp(x->name, "content-length", 14) == 0;
}

/* The app's headers but hop-by-hop ones, "Name: value" lines of a CGI-style head. 0 or -1. A
 * header named Status is dropped: in a CGI response it is the status (RFC 3875 6.3.3), and
 * lighttpd would answer with it instead of the app's. */
static int queue_app_headers(conn *c, const wsgi_response_head *h)
{
    int rc = 0;
    for (size_t k = 0; k < h->n_headers; k++) {
        const wsgi_header *x = &h->headers[k];
        if (hop_by_hop(x->name, x->name_len) || drop_app_header(h->status, x)) continue;
        if (x->name_len == 6 && strncasecmp(x->name, "status", 6) == 0) continue;
        rc |= out_bytes(c, x->name, x->name_len);
        rc |= out_str(c, ": ");
        rc |= out_bytes(c, x->value, x->value_len);
        rc |= out_str(c, "\r\n");
    }
    if (h->status == 205) rc |= out_str(c, "Content-Length: 0\r\n");
    return rc;
}

/* SCGI / uwsgi: the CGI-style head; the body ends with Content-Length or the connection. */
static int queue_cgi_head(conn *c, const wsgi_response_head *h)
{
    int no_body = no_body_sent(c, h->status);
    c->framing = no_body ? FRAME_NONE : h->content_length >= 0 ? FRAME_LENGTH : FRAME_CLOSE;
    c->resp_cl = h->content_length;
    c->keep_alive = 0;
    int rc = out_str(c, "Status: ");
    rc |= out_bytes(c, h->status_line, h->status_line_len);
    rc |= out_str(c, "\r\n");
    rc |= queue_app_headers(c, h);
    rc |= out_str(c, "\r\n");
    return rc ? -1 : 0;
}

int conn_refuse_interim(conn *c, const wsgi_response_head *h)
{
    if (h->status >= 200) return 0;
    host_log(WSGI_LOG_ERROR, "app %s answered with status %d, which is not a final response: 500",
             server_options(c->srv)->host.app_spec, h->status);
    c->started = 1;
    conn_queue_status(c, 500);
    return 1;
}

int conn_queue_head(conn *c, const wsgi_response_head *h)
{
    c->started = 1;
    c->status = h->status;
    if (c->alog) conn_access_head(c, h);
    if (c->proto != CPROTO_HTTP) return queue_cgi_head(c, h);
    int no_body = no_body_sent(c, h->status);
    int have_server = 0, have_date = 0;
    for (size_t k = 0; k < h->n_headers; k++) {
        const wsgi_header *x = &h->headers[k];
        if (x->name_len == 6 && strncasecmp(x->name, "server", 6) == 0)
            have_server = 1;
        else if (x->name_len == 4 && strncasecmp(x->name, "date", 4) == 0)
            have_date = 1;
        else if (x->name_len == 10 && strncasecmp(x->name, "connection", 10) == 0 &&
                 has_token(x->value, x->value_len, "close"))
            c->keep_alive = 0;
    }
    if (no_body)
        c->framing = FRAME_NONE;
    else if (h->content_length >= 0)
        c->framing = FRAME_LENGTH;
    else if (c->http_minor >= 1)
        c->framing = FRAME_CHUNKED;
    else
        c->framing = FRAME_CLOSE;
    c->resp_cl = h->content_length;
    /* A body the app did not read is drained after the response if it is short enough. */
    if (c->framing == FRAME_CLOSE || !conn_can_drain(c) || server_draining(c->srv))
        c->keep_alive = 0;

    /* The whole head in one piece of the scratch buffer: its size first, then the bytes. */
    const char *name = server_options(c->srv)->name, *date = have_date ? "" : http_date();
    size_t name_len = have_server ? 0 : strlen(name), date_len = strlen(date);
    size_t need = 9 + h->status_line_len + 2 + (have_server ? 0 : 8 + name_len + 2) +
                  (have_date ? 0 : 6 + date_len + 2) + 28 + 24 + 19 + 2;
    for (size_t k = 0; k < h->n_headers; k++)
        need += h->headers[k].name_len + h->headers[k].value_len + 4;
    if (sc_reserve(c, need) < 0) return -1;
    char *p = c->scratch + c->sc_len, *p0 = p;
#define PUT(s, n) (memcpy(p, (s), (n)), p += (n))
#define PUTS(lit) PUT(lit, sizeof(lit) - 1)
    PUTS("HTTP/1.1 ");
    PUT(h->status_line, h->status_line_len);
    PUTS("\r\n");
    if (!have_server) {
        PUTS("Server: ");
        PUT(name, name_len);
        PUTS("\r\n");
    }
    if (!have_date) {
        PUTS("Date: ");
        PUT(date, date_len);
        PUTS("\r\n");
    }
    for (size_t k = 0; k < h->n_headers; k++) { /* as queue_app_headers() */
        const wsgi_header *x = &h->headers[k];
        if (hop_by_hop(x->name, x->name_len) || drop_app_header(h->status, x)) continue;
        PUT(x->name, x->name_len);
        PUTS(": ");
        PUT(x->value, x->value_len);
        PUTS("\r\n");
    }
    if (h->status == 205) PUTS("Content-Length: 0\r\n");
    if (c->framing == FRAME_CHUNKED) PUTS("Transfer-Encoding: chunked\r\n");
    if (!c->keep_alive)
        PUTS("Connection: close\r\n");
    else if (c->http_minor == 0)
        PUTS("Connection: keep-alive\r\n");
    PUTS("\r\n");
#undef PUTS
#undef PUT
    return out_written(c, (size_t)(p - p0));
}

static int named_in(const wsgi_header *x, const wsgi_header *set, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (set[k].name_len == x->name_len && strncasecmp(set[k].name, x->name, x->name_len) == 0)
            return 1;
    return 0;
}

int conn_queue_switch(conn *c, const wsgi_header *ours, size_t n_ours, const wsgi_header *app,
                      size_t n_app)
{
    c->status = 101;
    int have_server = 0, have_date = 0;
    for (size_t k = 0; k < n_app; k++) {
        const wsgi_header *x = &app[k];
        if (x->name_len == 6 && strncasecmp(x->name, "server", 6) == 0) have_server = 1;
        if (x->name_len == 4 && strncasecmp(x->name, "date", 4) == 0) have_date = 1;
    }
    int rc = out_str(c, "HTTP/1.1 101 Switching Protocols\r\n");
    if (!have_server) rc |= server_line(c);
    if (!have_date) {
        rc |= out_str(c, "Date: ");
        rc |= out_str(c, http_date());
        rc |= out_str(c, "\r\n");
    }
    for (size_t k = 0; k < n_ours + n_app; k++) {
        const wsgi_header *x = k < n_ours ? &ours[k] : &app[k - n_ours];
        /* The app cannot frame a 101 (no body: RFC 9110 8.6) nor redo the handshake: the
         * Sec-WebSocket-* headers are the server's (an extension the client did not offer would
         * make it fail the connection, RFC 6455 4.1). */
        if (k >= n_ours &&
            (hop_by_hop(x->name, x->name_len) || named_in(x, ours, n_ours) ||
             (x->name_len == 14 && strncasecmp(x->name, "content-length", 14) == 0) ||
             (x->name_len > 14 && strncasecmp(x->name, "sec-websocket-", 14) == 0)))
            continue;
        rc |= out_bytes(c, x->name, x->name_len);
        rc |= out_str(c, ": ");
        rc |= out_bytes(c, x->value, x->value_len);
        rc |= out_str(c, "\r\n");
    }
    rc |= out_str(c, "\r\n");
    return rc ? -1 : 0;
}

static int start_locked(conn *c, const wsgi_response_head *h)
{
    if (c->body_error) {
        /* The request body was bad (too large, malformed, timed out): the app only saw an
         * OSError from wsgi.input, so answer for what really happened. */
        host_log(WSGI_LOG_DEBUG, "replacing the app's %d with %d", h->status, c->body_error);
        c->swallow = 1;
        c->started = 1;
        conn_queue_status(c, c->body_error);
        return -1;
    }
    if (conn_refuse_interim(c, h)) {
        c->swallow = 1; /* as above: the app's response goes nowhere */
        return -1;
    }
    if (conn_queue_head(c, h) < 0) return -1;
    return after_queue(c);
}

static int chunk_size_line(conn *c, uint64_t n)
{
    /* Once per chunk: no snprintf. */
    char line[20];
    size_t k = sizeof(line);
    line[--k] = '\n';
    line[--k] = '\r';
    do {
        line[--k] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    return out_bytes(c, line + k, sizeof(line) - k);
}

int conn_queue_chunked_end(conn *c)
{
    return out_str(c, "0\r\n\r\n");
}

int conn_queue_body(conn *c, const char *data, size_t len, int copy)
{
    if (c->framing == FRAME_NONE || len == 0) return 0; /* HEAD, 204, 205, 304: dropped */
    int rc = 0;
    if (c->framing == FRAME_CHUNKED) rc |= chunk_size_line(c, len);
    rc |= copy ? out_bytes(c, data, len) : out_mem(c, data, len);
    if (c->framing == FRAME_CHUNKED) rc |= out_str(c, "\r\n");
    if (rc) return -1;
    c->body_bytes += len;
    return 0;
}

/* --x-sendfile (SCGI / uwsgi): a body that is a whole regular file becomes an X-Sendfile header
 * with its path (lighttpd url-decodes it, so '%', blanks and controls are encoded; its
 * X-Sendfile2 ranges are for FastCGI only), appended to the head, which must still be the only
 * thing queued; then no body is sent, lighttpd sends the file and its Content-Length. 0 done,
 * 1 not possible here (send the bytes instead), -1 out of memory with the head reopened. */
static int x_sendfile(conn *c, int fd, int64_t off, int64_t count)
{
    if (c->body_bytes || c->oq_head != 0 || c->oq_len != 1) return 1;
    out_item *head = &c->outq[0];
    if (head->kind != OUT_SCRATCH || head->off + head->len != c->sc_len || head->len < 4 ||
        memcmp(c->scratch + c->sc_len - 4, "\r\n\r\n", 4) != 0)
        return 1;
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    struct stat st, st2;
    if (n <= 0 || path[0] != '/' || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || off != 0 ||
        count != st.st_size)
        return 1;
    path[n] = '\0';
    /* A deleted or replaced file has no path lighttpd could open. */
    if (stat(path, &st2) != 0 || st2.st_ino != st.st_ino || st2.st_dev != st.st_dev) return 1;
    char enc[3 * sizeof(path)];
    size_t e = 0;
    for (ssize_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)path[i];
        if (ch >= 0x80) return 1; /* lighttpd wants UTF-8: leave such names to the byte path */
        if (ch <= ' ' || ch == '%' || ch == 0x7f) {
            static const char hex[] = "0123456789ABCDEF";
            enc[e++] = '%';
            enc[e++] = hex[ch >> 4];
            enc[e++] = hex[ch & 15];
        } else {
            enc[e++] = (char)ch;
        }
    }
    c->sc_len -= 2; /* reopen the head */
    head->len -= 2;
    int rc = out_str(c, "X-Sendfile: ");
    rc |= out_bytes(c, enc, e);
    rc |= out_str(c, "\r\n\r\n");
    if (rc) return -1;
    c->framing = FRAME_NONE; /* lighttpd sends the file; whatever else the app sends is dropped */
    c->body_bytes = (uint64_t)count;
    return 0;
}

int conn_queue_file(conn *c, int fd, int64_t off, int64_t count)
{
    if (c->framing == FRAME_NONE || count <= 0) return 0;
    if (c->proto != CPROTO_HTTP && server_options(c->srv)->x_sendfile) {
        int x = x_sendfile(c, fd, off, count);
        if (x <= 0) return x;
    }
    int rc = 0;
    if (c->framing == FRAME_CHUNKED) rc |= chunk_size_line(c, (uint64_t)count);
    rc |= out_file(c, fd, off, count);
    if (c->framing == FRAME_CHUNKED) rc |= out_str(c, "\r\n");
    if (rc) return -1;
    c->body_bytes += (uint64_t)count;
    return 0;
}

static int body_locked(conn *c, const char *data, size_t len)
{
    if (c->swallow) return -1;
    if (c->framing == FRAME_NONE || len == 0) return 0;
    /* The first chunk goes by pointer (the head and a one-chunk body leave in one sendmsg without
     * a copy); later ones are copied while they fit in the batch, next to their framing, so a run
     * of small chunks is one iovec and exchange.c can pull the next chunk before writing. */
    int copy =
        !c->in_call && c->body_bytes > 0 && c->sc_len + len + CHUNK_FRAMING_MAX <= OUT_BATCH_BYTES;
    if (conn_own_borrowed(c) < 0 || conn_queue_body(c, data, len, copy) < 0) return -1;
    return after_queue(c);
}

static int sendfile_locked(conn *c, int fd, int64_t offset, int64_t count)
{
    if (c->swallow) return -1;
    if (c->framing == FRAME_NONE || count <= 0) return 0;
    if (conn_queue_file(c, fd, offset, count) < 0) return -1;
    return after_queue(c);
}

/* The callbacks run on the app thread; while it is inside wsgi_iter_next the loop may be writing
 * the queue (exchange_late_flush), hence the lock. */
static int on_start(void *user_data, const wsgi_response_head *h)
{
    conn *c = user_data;
    conn_out_lock(c);
    int r = start_locked(c, h);
    conn_out_unlock(c);
    return r;
}

static int on_body(void *user_data, const char *data, size_t len)
{
    conn *c = user_data;
    conn_out_lock(c);
    int r = body_locked(c, data, len);
    conn_out_unlock(c);
    return r;
}

static int on_sendfile(void *user_data, int fd, int64_t offset, int64_t count)
{
    conn *c = user_data;
    conn_out_lock(c);
    int r = sendfile_locked(c, fd, offset, count);
    conn_out_unlock(c);
    return r;
}

const wsgi_response_handler conn_handler = {
    .struct_size = sizeof(wsgi_response_handler),
    .on_start = on_start,
    .on_body = on_body,
    .on_sendfile = on_sendfile,
};
