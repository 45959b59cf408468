/* libFuzzer target: bytes from a client on a libwsgi-epoll or libwsgi-scgi connection, through
 * the servers' request parsing (examples/epoll/http_conn.c): HTTP/1.1 over http_parser (the head
 * with its smuggling and size checks, the choice of body mode, a buffered or chunked body, a body
 * left unread and drained, pipelined requests one after the other) or, for libwsgi-scgi, the
 * first byte's protocol choice and an SCGI / uwsgi head (scgi_parse.c) mapped to the request with
 * its body framed by http_parser; and the wsgi_request made from each request. The bytes arrive
 * in pieces of pseudo-random sizes, as reads from a socket do.
 *
 * The steps are those of server.c's advance() / next_request() / drain() for one connection;
 * server.c itself (epoll, timers, the app hand-off) is not linked: its few functions the parser
 * calls are stubbed below (limits from the input, no logging). A streamed body (BODY_STREAM,
 * read by the app thread from the socket) ends the run. fuzz_server runs the same bytes through
 * the whole server (server.c's state machine, the apps, streamed bodies) over a real connection,
 * slower and less deterministic than this target; see README.md for what reaching server.c's
 * state machine without a socket would need.
 *
 * Input: 5 bytes of settings (header limit, body limit, which requests leave their body unread,
 * split seed, the protocols accepted: 0 for libwsgi-epoll, else libwsgi-scgi's --protocol bits),
 * then the connection's bytes. */
#include "conn.h"
#include "fuzz_input.h"
#include "host_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- what http_conn.c needs from the rest of the server ------------------------------------ */

static size_t max_header;
static uint64_t max_body;
static epoll_options options;

const epoll_options *server_options(const server *s)
{
    (void)s;
    return &options;
}

size_t server_max_header(const server *s)
{
    (void)s;
    return max_header;
}
/* --max-headers: the default. */
#define MAX_HEADERS 100
size_t server_max_headers(const server *s)
{
    (void)s;
    return MAX_HEADERS;
}
uint64_t server_max_body(const server *s)
{
    (void)s;
    return max_body;
}
int server_access_log(const server *s)
{
    (void)s;
    return 0;
}
int server_timeout_ms(const server *s)
{
    (void)s;
    return 1000;
}
void host_log(int level, const char *fmt, ...)
{
    (void)level, (void)fmt;
}
/* observe.c (access log, metrics, --proxy-headers): not linked; the target never prepares an
 * access log record (c->alog stays NULL) and leaves the request's observation fields alone. */
void conn_access_free(conn *c)
{
    CHECK(c->alog == NULL);
}
void conn_obs_fill(conn *c, wsgi_request *req)
{
    (void)c, (void)req;
}
/* Only the streamed body (conn_body_read) and the access log use these: never reached here. */
void host_access_log(const char *remote, const char *request_line, size_t request_line_len,
                     int status, uint64_t body_bytes, const char *referer, size_t referer_len,
                     const char *user_agent, size_t user_agent_len)
{
    (void)remote, (void)request_line, (void)request_line_len, (void)status, (void)body_bytes;
    (void)referer, (void)referer_len, (void)user_agent, (void)user_agent_len;
    abort();
}
void conn_out_lock(conn *c)
{
    (void)c;
    abort();
}
void conn_out_unlock(conn *c)
{
    (void)c;
    abort();
}
int conn_queue_status(conn *c, int status)
{
    (void)c, (void)status;
    abort();
}
int out_flush_blocking(conn *c, int timeout_ms)
{
    (void)c, (void)timeout_ms;
    abort();
}
int out_pending(const conn *c)
{
    (void)c;
    abort();
}
int out_flush(conn *c)
{
    (void)c;
    abort();
}
/* tls.c: the connection has no TLS here (c->ssl NULL), so conn_recv() never calls it. */
ssize_t tls_recv(conn *c, void *buf, size_t len)
{
    (void)c, (void)buf, (void)len;
    abort();
}

/* ---- the connection ------------------------------------------------------------------------ */

typedef struct wire {
    const uint8_t *p;
    size_t left;
    uint32_t seed;
} wire;

/* One read from the socket into c->in: 0, or -1 when the client has nothing more. */
static int read_more(conn *c, wire *w)
{
    if (!w->left) return -1;
    w->seed ^= w->seed << 13;
    w->seed ^= w->seed >> 17;
    w->seed ^= w->seed << 5;
    size_t n = (w->seed & 3) ? 1 + (w->seed >> 8) % 16 : 1 + (w->seed >> 8) % 4096;
    if (n > w->left) n = w->left;
    CHECK(conn_in_reserve(c, c->in_len + n) == 0);
    memcpy(c->in + c->in_len, w->p, n);
    c->in_len += n;
    w->p += n;
    w->left -= n;
    return 0;
}

static int inside(const conn *c, const char *p, size_t n)
{
    return p >= c->in && n <= c->in_len && (size_t)(p - c->in) <= c->in_len - n;
}

/* Reads every byte of a span, so that AddressSanitizer checks it is valid memory. */
static volatile unsigned touch_sink;
static void touch(const char *p, size_t n)
{
    unsigned s = 0;
    for (size_t i = 0; i < n; i++)
        s += (unsigned char)p[i];
    touch_sink = s;
}

/* The request the app would get. HTTP: every span inside the connection's buffer. SCGI / uwsgi:
 * header names are rebuilt ("foo-bar" from HTTP_FOO_BAR) in the front's scratch buffer, the
 * address strings too: every span readable. */
static void check_request(conn *c)
{
    wsgi_request req;
    conn_fill_request(c, &req);
    int http = c->proto == CPROTO_HTTP;
    CHECK(req.method && req.method_len > 0);
    touch(req.method, req.method_len);
    CHECK(req.target_len == 0 || inside(c, req.target, req.target_len));
    /* + 1: a Host field added for an absolute-form target sent without one (HTTP/1.0), last, its
     * name a literal and its value the target's authority (inside the buffer). */
    CHECK(req.n_headers <= MAX_HEADERS + 1 || !http);
    for (size_t i = 0; i < req.n_headers; i++) {
        const wsgi_header *h = &req.headers[i];
        CHECK(h->name && h->name_len > 0);
        int added_host = http && i + 1 == req.n_headers && h->name_len == 4 &&
                         memcmp(h->name, "Host", 4) == 0 && !inside(c, h->name, 4);
        CHECK(!http || added_host || inside(c, h->name, h->name_len));
        CHECK(h->value_len == 0 || !http || inside(c, h->value, h->value_len));
        touch(h->name, h->name_len);
        touch(h->value, h->value_len);
    }
    for (size_t i = 0; i < req.n_extra_environ; i++) {
        touch(req.extra_environ[i].name, req.extra_environ[i].name_len);
        touch(req.extra_environ[i].value, req.extra_environ[i].value_len);
    }
    if (req.server_name) touch(req.server_name, strlen(req.server_name));
    if (req.client_addr) touch(req.client_addr, strlen(req.client_addr));
    if (req.body && req.body_len) CHECK(inside(c, req.body, req.body_len));
    CHECK(req.http_major >= 0 && req.http_minor >= 0);
}

static void check_error(const conn *c)
{
    CHECK(c->err_status == 0 || (c->err_status >= 400 && c->err_status <= 599));
}

/* Parse until the message is over: 1, 0 (the client stopped sending) or -1 (an error). */
static int body(conn *c, wire *w)
{
    for (;;) {
        int r = conn_parse_body(c);
        if (r == PARSE_ERROR) {
            check_error(c);
            return -1;
        }
        if (r == PARSE_DONE) return 1;
        if (c->body_mode == BODY_DISCARD && c->body_received > c->drain_limit) return -1;
        if (read_more(c, w) < 0) return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    unsigned h = fz_u8(&in), b = fz_u8(&in);
    max_header = h & 0x80 ? 8192 : 64 + h * 16;
    max_body = b & 0x80 ? 0 : (uint64_t)b * 100; /* 0: no limit */
    unsigned drain_mask = fz_u8(&in);
    uint32_t seed = fz_u8(&in) * 2654435761u + 1;
    options.scgi_accept = fz_u8(&in) & (PROTO_ACCEPT_SCGI | PROTO_ACCEPT_UWSGI | PROTO_ACCEPT_HTTP);
    options.max_header_size = max_header;
    options.max_body_size = max_body;
    wire w = {in.p, in.left, seed};

    static const listener lst = {.host = "127.0.0.1", .port = 8080};
    conn *c = calloc(1, sizeof *c);
    CHECK(c);
    c->lst = &lst;
    snprintf(c->peer, sizeof c->peer, "%s", "192.0.2.1");
    c->peer_port = 40000;
    for (unsigned n = 0; n < 64; n++) {
        conn_request_begin(c);
        /* The server parses once something arrived (EPOLLIN), never an empty buffer. */
        if (c->in_len == 0 && read_more(c, &w) < 0) break;
        int r;
        while ((r = conn_parse_head(c)) == PARSE_MORE)
            if (read_more(c, &w) < 0) {
                /* The client half-closed in the middle of the head. */
                int st = conn_head_eof(c);
                CHECK(st == 0 || (st >= 400 && st <= 599));
                break;
            }
        if (r != PARSE_DONE) {
            check_error(c);
            break; /* an error (answered, closed) or the client stopped */
        }
        if (conn_upgrade_websocket(c)) {
            /* ws_conn_start(): the head must end there; what follows is WebSocket. */
            if (conn_end_head(c) == 0) check_request(c);
            break;
        }
        if (conn_choose_body(c) != 0) break; /* 413 / 417: answered, closed */
        if (c->body_mode == BODY_STREAM) {
            check_request(c); /* the app reads the rest from the socket: not here */
            break;
        }
        if (c->body_mode == BODY_BUFFERED)
            CHECK(conn_in_reserve(c, c->in_parsed + (size_t)c->content_length + 1) == 0);
        if (drain_mask & (1u << (n % 8))) {
            /* The app answers without reading the body: drained after the response. */
            check_request(c);
            if (!c->keep_alive) break;
            if (!c->msg_done) {
                if (!conn_can_drain(c)) break;
                c->body_mode = BODY_DISCARD;
                c->drain_limit = c->body_received + DRAIN_MAX;
                if (body(c, &w) != 1) break;
            }
            continue;
        }
        if (body(c, &w) != 1) break;
        check_request(c);
        if (!c->keep_alive) break;
    }
    conn_front_free(c);
    free(c->in);
    free(c->hdrs);
    free(c->hdr_ptrs);
    free(c->alog);
    free(c);
    return 0;
}
