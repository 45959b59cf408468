/* One client connection of libwsgi-epoll: the input buffer and parser state of the current request,
 * the response being written and the links that put it in the server's lists.
 *
 * ASGI apps run on the loop thread (asgi_host.c): such a connection never leaves the loop; it is in
 * CONN_ASGI while the app serves an HTTP request, with the per-request state in c->ax
 * (asgi_exchange.c), and in CONN_WS for the whole life of a WebSocket, with its state in c->ws
 * (ws_conn.c).
 *
 * Ownership: at any moment a connection belongs either to the event loop or to the thread running
 * its app (the loop's own thread for as long as it is not replaced, see server.c); the state says
 * which (CONN_APP: the app thread). Only the owner touches the connection, and hand-overs go
 * through the server's queues (mutex-protected) or the leader hand-over (server.c), so no field
 * needs a lock.
 * While the app thread owns the connection the socket is not armed in epoll (its kept
 * registration's events are dropped, server.c: arm()), so the loop never acts on its events;
 * armed and disarmed are the loop's fields whoever owns the connection. The
 * one exception is the output queue of a WSGI response while its app thread is inside
 * wsgi_iter_next: the loop may write what has waited there for LATE_US (exchange_late_flush);
 * out_owner says who holds the queue then. */
#ifndef EPOLL_CONN_H
#define EPOLL_CONN_H

#include "cli.h"
#include "listen.h"

#include <libwsgi/libwsgi.h>

#include <http_parser.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct server server;
typedef struct conn conn;
typedef struct asgi_task asgi_task;   /* asgi_host.c: what the ASGI host keeps of one app task */
typedef struct asgi_ex asgi_ex;       /* asgi_exchange.c: one request served by an ASGI app */
typedef struct ws_conn ws_conn;       /* ws_conn.c: one WebSocket served by an ASGI app */
typedef struct asgi_host asgi_host;   /* asgi_host.c: the worker's ASGI loop and tasks */
typedef struct scgi_front scgi_front; /* http_conn.c: an SCGI / uwsgi request head (libwsgi-scgi) */
typedef struct tls_ctx tls_ctx;       /* tls.c: the worker's OpenSSL context (tls.h) */
struct ssl_st;                        /* OpenSSL's SSL: only tls.c includes OpenSSL */

/* What a connection speaks. libwsgi-epoll: HTTP only. libwsgi-scgi: decided by its first byte. */
typedef enum conn_proto { CPROTO_HTTP, CPROTO_SCGI, CPROTO_UWSGI } conn_proto;

/* What an epoll event's data.ptr points to starts with one of these. */
typedef enum ev_kind { EV_CONN, EV_LISTENER, EV_WAKE, EV_SIGNAL, EV_ASGI, EV_RELOAD } ev_kind;

typedef enum conn_state {
    CONN_IDLE,  /* loop: keep-alive, waiting for the first byte of a request */
    CONN_HEAD,  /* loop: reading a request head */
    CONN_BODY,  /* loop: reading a small Content-Length body into the buffer */
    CONN_APP,   /* app thread: running the app, pulling chunks, writing while the socket takes it */
    CONN_WRITE, /* loop: socket full; waiting for EPOLLOUT to flush, then back to CONN_APP */
    CONN_ERROR, /* loop: writing a server-generated error response, then closing */
    CONN_DRAIN, /* loop: discarding the rest of a body the app did not read, to reuse the socket */
    CONN_LINGER, /* loop: write side shut down, discarding input until EOF or a short deadline */
    CONN_ASGI,   /* loop: an ASGI app serves the request (body in, response out, disconnects) */
    CONN_WS,     /* loop: a WebSocket with an ASGI app (handshake, frames, closing handshake) */
    CONN_TLS,    /* loop: the TLS handshake, before the first request (--timeout-request) */
    CONN_CLOSED, /* closed; freed after the current batch of events */
} conn_state;

/* The server's timeout lists (server.c): every entry of a list has the same timeout, so each list
 * stays sorted by deadline. TL_NONE: in no list. */
enum {
    TL_NONE = -1,
    TL_IDLE,     /* --timeout-keepalive */
    TL_REQUEST,  /* --timeout-request */
    TL_LINGER,   /* closing: discarding input */
    TL_WS_PING,  /* --ws-ping-interval: time to ping */
    TL_WS_PONG,  /* --ws-ping-timeout: the pong is late */
    TL_WS_CLOSE, /* the closing handshake */
    TL_COUNT
};

typedef enum body_mode {
    BODY_NONE,     /* no body */
    BODY_BUFFERED, /* Content-Length <= BODY_BUFFER_MAX: read by the loop before the app runs */
    BODY_STREAM,  /* chunked or large: read by the app thread through wsgi.input (conn_body_read) */
    BODY_DISCARD, /* after the response: the unread rest is parsed and dropped (CONN_DRAIN) */
    BODY_FEED,    /* chunked or large, ASGI: read by the loop, each piece given to body_sink */
} body_mode;

typedef enum framing {
    FRAME_NONE,    /* no body allowed (HEAD, 1xx, 204, 304) */
    FRAME_LENGTH,  /* the app's Content-Length */
    FRAME_CHUNKED, /* HTTP/1.1 without Content-Length */
    FRAME_CLOSE,   /* HTTP/1.0 without Content-Length: the body ends when the connection closes */
} framing;

/* One piece of output: bytes in the scratch buffer, bytes borrowed from the app (valid until the
 * next wsgi_iter_next), or a byte range of a file for sendfile. */
typedef enum out_kind { OUT_SCRATCH, OUT_MEM, OUT_FILE } out_kind;
typedef struct out_item {
    out_kind kind;
    const char *ptr; /* OUT_MEM */
    size_t off;      /* OUT_SCRATCH: offset in conn.scratch */
    size_t len;      /* OUT_MEM, OUT_SCRATCH: bytes left */
    int fd;          /* OUT_FILE */
    int64_t foff, fcount;
} out_item;

/* A request header as offsets into conn.in (the buffer may move while it grows). */
typedef struct hdr_span {
    size_t name_off, name_len, value_off, value_len;
} hdr_span;

struct conn {
    ev_kind kind; /* EV_CONN; first member */
    server *srv;
    const listener *lst;
    int fd;
    conn_state state;

    /* server lists */
    conn *all_prev, *all_next; /* every open connection */
    conn *t_prev, *t_next;     /* the timeout list it is in (t_list >= 0) */
    int t_list;
    int64_t deadline;
    conn *q_next; /* completion queue, pending queue, ready list or graveyard */
    int pump_result;
    int ready_action;
    int abort_requested;
    unsigned armed; /* the events of its epoll registration (EPOLLONESHOT included), 0 when a
                     * one-shot registration fired or none exists */
    int in_epoll;   /* in the epoll set (arm() adds it the first time) */
    int disarmed;   /* its last event was handled and nothing armed it since: a kept
                     * registration's next event is dropped (server.c: arm()) */

    char peer[INET6_ADDRSTRLEN];
    unsigned peer_port;

    /* The protocol (proto_known once decided). SCGI / uwsgi: one request per connection, its head
     * parsed by scgi_parse.c into sf; http_parser then frames the body as for a Content-Length
     * (fed a made-up head first, while synth is set), so every body path is the same. */
    conn_proto proto;
    int proto_known, synth;
    scgi_front *sf;

    /* input: [0, in_parsed) consumed by the parser, [in_parsed, in_len) not yet */
    char *in;
    size_t in_cap, in_len, in_parsed;
    http_parser parser;

    /* the request head */
    hdr_span *hdrs;
    size_t n_hdrs, hdrs_cap;
    wsgi_header *hdr_ptrs; /* built from hdrs on the app thread, for wsgi_env_build */
    size_t hdr_ptrs_cap;
    int hdr_state; /* 0 none, 1 in a name, 2 in a value */
    size_t url_off, url_len;
    int head_done, msg_done;
    int err_status; /* status chosen by our own checks in the parser callbacks */
    int64_t content_length;
    int chunked;
    int ck_state;     /* chunked framing as http_conn.c checks it (chunk_framing) */
    uint64_t ck_left; /* the chunk-data bytes still to come */
    size_t ck_ext;    /* the request's chunk-extension bytes so far (limited by chunk_framing) */
    int expect_continue, continue_sent;
    int keep_alive, is_head, http_major, http_minor;

    /* the request body */
    body_mode body_mode;
    size_t body_off, body_len; /* BODY_BUFFERED: the body in conn.in */
    uint64_t body_received;    /* decoded body bytes so far */
    uint64_t drain_limit;      /* CONN_DRAIN: give up (close) past this many */
    char *dst;                 /* BODY_STREAM: where on_body copies (conn_body_read's buffer) */
    size_t dst_cap, dst_len;
    int body_error; /* 400/408/413 seen while streaming the body: replaces the app's response */
    /* BODY_FEED: receives the de-chunked body as http_parser finds it; < 0 stops the parser */
    int (*body_sink)(conn *c, const char *data, size_t len);

    /* observe.c, proxy_headers.c (issue 13): the access log's record of the request (its parts
     * copied, and what the observer reported), when the head was complete (CLOCK_MONOTONIC ns),
     * the client a trusted proxy forwarded ("" if none) */
    void *alog;
    int64_t arrival_ns;
    char fwd_peer[INET6_ADDRSTRLEN];

    /* the response */
    wsgi_response *resp;
    int in_call; /* inside wsgi_call(): data given to on_body must be written before returning */
    int obs_app; /* this request reached the app (conn_obs_dispatch): the observer counts it */
    int started; /* head queued */
    int status;
    framing framing;
    int64_t resp_cl;
    uint64_t body_bytes;
    int swallow;   /* the app's response is replaced by a server error response */
    int resp_done; /* nothing more to pull from the app */
    int cut;       /* the app failed mid-response: send what is queued, then close (reset) */

    asgi_ex *ax;           /* CONN_ASGI: the exchange with the ASGI app */
    int64_t asgi_since_ms; /* --timeout (guard.c): when the ASGI app got the request (0: off) */
    ws_conn *ws;           /* CONN_WS: the WebSocket */

    /* output queue */
    out_item *outq;
    size_t oq_head, oq_len, oq_cap;
    char *scratch;
    size_t sc_len, sc_cap;

    /* WSGI: wait_since: since when queued output waits for more to join it (us; 0: nothing
     * queued). out_owner (OWN_*): who holds the output queue (exchange.c). */
    _Atomic int64_t wait_since;
    atomic_int out_owner;
    conn *l_prev, *l_next; /* loop: the connections lent to app threads (server.c) */
    int lent;

    /* TLS (tls.c); ssl is NULL on a plain connection. tls_shut: our close_notify is sent (the
     * linger then reads the raw socket), or tls_shut_wait: still waiting for room in the socket;
     * tls_dead: a fatal TLS error (no close_notify);
     * tls_wpend: the plaintext bytes of a record SSL_write left half-written (a retry must offer
     * at least as many). tls_prev/next, tls_queued, tls_events: server.c's list of connections
     * with decrypted input buffered in OpenSSL, which epoll cannot see (server.c: arm()). */
    struct ssl_st *ssl;
    int tls_shut, tls_shut_wait, tls_dead;
    size_t tls_wpend;
    conn *tls_prev, *tls_next;
    int tls_queued;
    unsigned tls_events;
};

/* Request bodies up to this size (with Content-Length) are read before the app runs. */
#define BODY_BUFFER_MAX (64 * 1024)
/* Initial (and usual) size of a connection's input buffer. */
#define IN_BUF_SIZE (16 * 1024)
/* What the loop reads of a streamed ASGI body at a time (asgi_exchange.c). */
#define BODY_READ_SIZE (64 * 1024)
/* At most this much of a body the app left unread is drained to keep the connection. */
#define DRAIN_MAX (1024 * 1024)
/* WSGI: queued output waits at most about this long (us) while the app produces more: then it is
 * written (by the loop, if the app thread is still in the app). */
#define LATE_US 1000
/* WSGI: small chunks are gathered into batches of up to this many bytes (one sendmsg). */
#define OUT_BATCH_BYTES (64 * 1024)
/* The scratch buffer of a batch: the batch, the framing of the chunk that ends it, some head. */
#define OUT_BATCH_SCRATCH (OUT_BATCH_BYTES + 4096)
/* The chunked framing around one chunk: "%llx\r\n" and "\r\n". */
#define CHUNK_FRAMING_MAX 24
/* A scratch buffer grown beyond this by a response is given back when the response ends. */
#define SCRATCH_KEEP (16 * 1024)

/* ---- tls.c: the connection's I/O layer -------------------------------------------------------
 * Every read and write of a connection's socket goes through these. Without TLS (c->ssl NULL)
 * they are the plain system calls, inline; with TLS they go through OpenSSL and keep the same
 * contract: > 0 bytes, 0 at EOF (conn_recv) or -1 with errno (EAGAIN: wait for the socket, also
 * when OpenSSL waits for the other direction; EPROTO: a TLS error). A write that returned EAGAIN
 * must be retried with the same bytes first (OpenSSL's rule; the output queue and wslay do). */
ssize_t tls_recv(conn *c, void *buf, size_t len);
ssize_t tls_sendv(conn *c, const struct iovec *iov, int n);
ssize_t tls_sendfile(conn *c, int fd, off_t *off, size_t count);
int tls_pending(const conn *c);
/* Our close_notify: 1 sent (or nothing to send), 0 the socket is full (wait for EPOLLOUT and call
 * again: tls_shut_wait), -1 failed. */
int tls_shutdown(conn *c);
void tls_free(conn *c);

/* Read up to len bytes. With TLS it reads until len bytes or until the socket is drained, so a
 * short read means "nothing more now" as with recv(); only a full buffer may leave decrypted bytes
 * in OpenSSL (conn_pending()). */
static inline ssize_t conn_recv(conn *c, void *buf, size_t len)
{
    if (!c->ssl) return recv(c->fd, buf, len, 0);
    return tls_recv(c, buf, len);
}
/* Write n buffers (sendmsg with MSG_NOSIGNAL | flags). With TLS: at most one record (16 KiB) per
 * call, small buffers gathered into it; flags (MSG_MORE) do not apply. */
static inline ssize_t conn_sendv(conn *c, const struct iovec *iov, int n, int flags)
{
    if (!c->ssl) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return sendmsg(c->fd, &m, MSG_NOSIGNAL | flags);
    }
    return tls_sendv(c, iov, n);
}
/* sendfile(); with TLS the file is read (pread) and written in records of up to 16 KiB. */
static inline ssize_t conn_sendfile(conn *c, int fd, off_t *off, size_t count)
{
    if (!c->ssl) return sendfile(c->fd, fd, off, count);
    return tls_sendfile(c, fd, off, count);
}
/* Decrypted input waits in OpenSSL (epoll does not know): read it without waiting for EPOLLIN. */
static inline int conn_pending(const conn *c)
{
    return c->ssl && tls_pending(c);
}
/* Closing after a response: our close_notify (TLS), then the write side's FIN. 0 done, 1 the
 * close_notify waits for room in the socket (call again on EPOLLOUT: the FIN must not overtake
 * it, or a close-delimited response looks truncated), -1 failed. */
static inline int conn_shutdown_wr(conn *c)
{
    if (c->ssl) {
        int r = tls_shutdown(c);
        if (r <= 0) return r < 0 ? -1 : 1;
    }
    return shutdown(c->fd, SHUT_WR);
}
/* The connection is being closed: close_notify if nothing went wrong (best effort, never
 * blocks), then free the TLS state. The caller closes the fd. */
static inline void conn_io_close(conn *c)
{
    if (c->ssl) tls_free(c);
}
/* A new connection of a TLS listener: c->ssl set up for the server side of a handshake. 0 or -1
 * (logged). */
int tls_conn_start(conn *c, tls_ctx *t);
/* Move the handshake on: 1 done, 0 not yet (*events: what to wait for, EPOLLIN or EPOLLOUT),
 * -1 failed (logged at debug level; close the connection). */
int tls_conn_handshake(conn *c, unsigned *events);

/* ---- http_conn.c: parsing ---------------------------------------------------------------- */
enum { PARSE_MORE = 0, PARSE_DONE = 1, PARSE_ERROR = -1 };
/* Start a new request: keep pipelined bytes, reset the parser and the per-request fields. */
void conn_request_begin(conn *c);
/* Feed buffered input until the head is complete. PARSE_ERROR sets c->err_status. */
int conn_parse_head(conn *c);
/* The status for a head past --max-header-size: 414 while in the request line, else 431. */
int conn_head_too_large(const conn *c);
/* The peer half-closed in the middle of an SCGI / uwsgi head (libwsgi-scgi): the status to answer
 * (logged), or 0 when there is nothing to answer (HTTP, or no byte yet: just close). */
int conn_head_eof(conn *c);
/* After the head: choose c->body_mode from the head and the limits. Returns 0, or a status
 * (413, 417) to answer without calling the app. */
int conn_choose_body(conn *c);
/* BODY_NONE / BODY_BUFFERED: feed buffered input until the message ends. PARSE_ERROR sets
 * c->err_status. */
int conn_parse_body(conn *c);
/* Whether a body the app left unread can be drained after the response (so the connection can
 * be kept); a chunked body may still turn out too long, which then closes the connection. */
int conn_can_drain(const conn *c);
/* The wsgi_body_read_cb for BODY_STREAM (runs on the app thread; may block). */
int conn_body_read(void *user_data, char *buf, size_t len, size_t *nread);
/* The request's method (HTTP, SCGI or uwsgi), not NUL-terminated: *len bytes. */
const char *conn_request_method(const conn *c, size_t *len);
/* Whether the comma-separated list v (a header value) holds the token tok (case-insensitive). */
int conn_token_in_list(const char *v, size_t n, const char *tok);
/* Whether a header called name (any of them, if repeated) holds the token tok. */
int conn_header_has_token(const conn *c, const char *name, const char *tok);
/* The head asks to switch to WebSocket (Upgrade: websocket). */
int conn_upgrade_websocket(const conn *c);
/* An upgrade without a body: let the parser pass the end of the head, so [in_parsed, in_len) is
 * what the client sent after it (the new protocol's bytes). 0, or -1 if the message is not over
 * there (a body) or malformed. */
int conn_end_head(conn *c);
/* A Host value (no surrounding OWS) is uri-host [":" port] (RFC 9112 3.2): 1, else 0. */
int conn_valid_host(const char *v, size_t n);
/* Fill req from the parsed head (pointers into conn.in, valid until the buffer is next touched). */
void conn_fill_request(conn *c, wsgi_request *req);
/* ---- observe.c, proxy_headers.c: access log, metrics, forwarded headers (issue 13) -------- */
/* The head is complete: note the time, and copy what the access log needs (the head's bytes do
 * not live until the response ends). */
void conn_access_prepare(conn *c);
/* The response head (for %({name}o)s). */
void conn_access_head(conn *c, const wsgi_response_head *h);
void conn_access_log(conn *c);
void conn_access_free(conn *c);
/* The request is about to go to the app: its arrival time, the forwarded client, scheme and host
 * (--proxy-headers). */
void conn_obs_fill(conn *c, wsgi_request *req);
/* The in-flight gauge around wsgi_call() / asgi_dispatch() / asgi_websocket_dispatch(): called
 * with 0 just before (the app may run inside), then with the call's result if it failed — a
 * request the library did not accept is never reported to the observer, which counts the others
 * out. */
void conn_obs_dispatch(conn *c, int rc);
void conn_proxy_apply(conn *c, wsgi_request *req);
/* An SCGI / uwsgi request (http_conn.c): its method, and one of its variables (0 found, -1). */
void conn_scgi_method(const conn *c, const char **m, size_t *len);
int conn_scgi_param(const conn *c, const char *name, const char **value, size_t *len);
/* Grow conn.in to at least want bytes. 0 or -1. */
int conn_in_reserve(conn *c, size_t want);
/* TCP_NODELAY on a TCP connection (HTTP: small responses must not wait for an ACK). */
void conn_set_nodelay(conn *c);
/* Free what the connection's protocol front end holds (the SCGI head). */
void conn_front_free(conn *c);
/* The connection closes and its buffers wait for another one (server.c: conn_keep): its SCGI
 * parser is reset by the next connection's first read. */
void conn_front_recycle(conn *c);

/* ---- response_writer.c: output ----------------------------------------------------------- */
extern const wsgi_response_handler conn_handler;
enum { OUT_DONE = 0, OUT_AGAIN = 1, OUT_ERR = -1 };
/* Queue the response head: status line, Server and Date, the app's headers without hop-by-hop
 * ones, the framing (c->framing) and Connection; decides c->keep_alive. 0 or -1. */
int conn_queue_head(conn *c, const wsgi_response_head *h);
/* A status below 200 from the app is no final response (a client would wait for the real one
 * after a 100 or 103, or switch protocols after a 101, and take the next request's answer for
 * this one's): if h has one, log it, queue our 500 instead (the connection closes after it) and
 * return 1; else 0. */
int conn_refuse_interim(conn *c, const wsgi_response_head *h);
/* Queue a piece of the body with its chunk framing; nothing for FRAME_NONE. copy: into the
 * scratch buffer, else by pointer (the bytes must stay valid until flushed). 0 or -1. */
int conn_queue_body(conn *c, const char *data, size_t len, int copy);
/* Copy the borrowed (by-pointer) body bytes still queued, before the library may release them. */
int conn_own_borrowed(conn *c);
/* WSGI: whether the next chunk may be pulled before the queue is written: less than
 * OUT_BATCH_BYTES queued and no file range (its fd is the library's only until the next call);
 * borrowed bytes are then copied (the library releases them at the next wsgi_iter_next).
 * 1 (pull), 0 (write first) or -1 (out of memory). */
int conn_batch_ready(conn *c);
/* The response is over and its output written: give back a scratch buffer it grew large. */
void conn_scratch_trim(conn *c);
/* Queue count bytes of fd from off (sendfile), with chunk framing. 0 or -1. */
int conn_queue_file(conn *c, int fd, int64_t off, int64_t count);
int out_flush(conn *c); /* non-blocking */
/* One write call (sendmsg or sendfile) at most: OUT_AGAIN if anything is left. */
int out_flush_once(conn *c);
/* Flush, waiting up to timeout_ms for the socket each time it is full (app thread only). */
int out_flush_blocking(conn *c, int timeout_ms);
int out_pending(const conn *c);
void out_clear(conn *c);
/* Queue a complete server-generated response (status 100 is the interim "100 Continue"); for
 * SCGI / uwsgi a CGI-style one ("Status:" line). */
int conn_queue_status(conn *c, int status);
/* Queue the last chunk of a chunked body. */
int conn_queue_chunked_end(conn *c);
/* Queue "101 Switching Protocols": Server and Date (unless the app has them), ours, then the app's
 * headers except hop-by-hop ones, Content-Length and the names in ours. 0 or -1. */
int conn_queue_switch(conn *c, const wsgi_header *ours, size_t n_ours, const wsgi_header *app,
                      size_t n_app);

/* ---- exchange.c: running the app (on the app thread) ------------------------------------- */
enum { PUMP_WRITE, PUMP_DONE, PUMP_ABORT, PUMP_YIELD };
int exchange_run(conn *c);
int exchange_abort(conn *c);
/* Who holds a WSGI connection's output queue. OWN_APP: its owner (the app thread, or the loop),
 * as for every other field. While the app thread is inside wsgi_iter_next: OWN_FREE (it runs app
 * code), and whoever swaps OWN_FREE for OWN_CB (the app thread's callbacks) or OWN_LOOP (the
 * loop, to write) holds it until it puts OWN_FREE back. */
enum { OWN_APP, OWN_FREE, OWN_CB, OWN_LOOP };
/* Callbacks (and anything else the app thread does to the queue from inside the app) are
 * bracketed by these. */
void conn_out_lock(conn *c);
void conn_out_unlock(conn *c);
/* Loop thread, for a connection lent to an app thread: write the output that has waited LATE_US
 * or more while the app thread is in the app. Returns 1 if output still waits (look again). */
int exchange_late_flush(conn *c, int64_t now);

/* ---- asgi_host.c: the worker's ASGI loop and the app tasks it serves (loop thread) ---------- */
/* What the host keeps of one app task: the head of an asgi_ex or a ws_conn, and the user_data of
 * the library's callbacks. Callbacks only mark it and asgi_task_enqueue() it; after the loop turn
 * asgi_host_run() calls ops->progress() on each queued task still attached to its connection. */
typedef struct asgi_task_ops {
    void (*progress)(conn *c);     /* move the connection on (write, arm, finish, close) */
    void (*destroy)(asgi_task *t); /* free the struct (asgi_conn_free() is done) */
} asgi_task_ops;
struct asgi_task {
    const asgi_task_ops *ops;
    asgi_host *h;
    conn *c; /* NULL once detached from the connection */
    asgi_conn *ac;
    int done;        /* on_done arrived: the app's task has ended */
    int out_paused;  /* a callback answered ASGI_PAUSE: resume once the output has drained */
    int read_paused; /* the library answered ASGI_PAUSE: do not read until on_read_resume */
    int complete;    /* the HTTP response's last byte is queued */
    int cut;         /* the app failed after the head: send what is queued, then close */
    int gone;        /* writing to the client failed inside a callback: close */
    int queued;      /* in h's queue */
    int parked;      /* in h's detached list */
    asgi_task *q_next;
    asgi_task *d_prev, *d_next;
};
/* The worker's ASGI side: the app's event loop, the tasks still running after their connection.
 * NULL if the loop cannot be created (logged). */
asgi_host *asgi_host_new(server *s, wsgi_app *app);
/* Free it; tasks still running are detached (the library lets them finish on their own). */
void asgi_host_free(asgi_host *h);
int asgi_host_fd(asgi_host *h); /* the loop's fd, for EPOLLIN */
/* The most epoll_wait may sleep for the ASGI side (-1: no limit); recompute before every wait. */
/* The server saw the loop's fd readable in this iteration (EV_ASGI): no need to poll it. */
void asgi_host_loop_ready(asgi_host *h);
int asgi_host_timeout(asgi_host *h);
/* One turn: run the app's loop, then move the connections its callbacks touched. */
void asgi_host_run(asgi_host *h);
/* The server's iteration began (after epoll_wait) / has run the app's code (dispatches, the loop
 * turn) at time now_ms (CLOCK_MONOTONIC, ms): an iteration longer than --loop-block-warn-ms was an
 * app blocking the event loop, which is logged. */
void asgi_host_iteration_begin(asgi_host *h, int64_t now_ms);
void asgi_host_iteration_end(asgi_host *h, int64_t now_ms);
/* Apps still running after their connection (background tasks): shutdown waits for them. */
size_t asgi_host_busy(const asgi_host *h);
/* A new task of connection c (zeroed by the caller); it is not queued. */
void asgi_task_init(asgi_task *t, const asgi_task_ops *ops, conn *c);
/* Look at the task after the loop turn (from a callback, or to run the app's first step). */
void asgi_task_enqueue(asgi_task *t);
/* The connection is done with the task: freed now if the app has ended, else when it does. */
void asgi_task_detach(asgi_task *t);
/* Callbacks every kind of task uses (user_data: the asgi_task). */
void asgi_task_on_read_resume(void *user_data);
void asgi_task_on_done(void *user_data, int result);

/* ---- asgi_exchange.c: one HTTP request/response with an ASGI app (loop thread) ------------- */
/* The request head (and a buffered body) is complete: start the app (state CONN_ASGI). */
void asgi_exchange_start(conn *c);
void asgi_exchange_event(conn *c, unsigned events);
void asgi_exchange_timeout(conn *c);
/* The connection is being closed: the app sees http.disconnect; the exchange is detached. */
void asgi_exchange_drop(conn *c);
/* The response callbacks (user_data: the asgi_task of connection t->c), also used for a WebSocket
 * handshake the app denies over HTTP: they queue the head and body, and mark the task complete
 * when the last byte is queued. */
int asgi_response_on_start(void *user_data, const wsgi_response_head *head);
int asgi_response_on_body(void *user_data, const char *data, size_t len, int more);

/* ---- ws_conn.c: a WebSocket with an ASGI app (loop thread) --------------------------------- */
/* The head asks for a WebSocket (Upgrade: websocket) and the app is ASGI: check the opening
 * handshake, then let the app decide (state CONN_WS), or answer 400/426 and close. */
void ws_conn_start(conn *c);
void ws_conn_event(conn *c, unsigned events);
void ws_conn_timeout(conn *c);
/* Graceful shutdown began: an open WebSocket is closed with 1001 (going away). */
void ws_conn_shutdown(conn *c);
/* The connection is being closed: the app sees websocket.disconnect (1006 unless it already knows
 * the end); framing state is freed and the task detached. */
void ws_conn_drop(conn *c);

/* ---- ws_deflate.c: permessage-deflate (RFC 7692) ------------------------------------------ */
struct z_stream_s;
/* What the handshake agreed (on: the extension is in use), and the zlib streams, made on first
 * use: zd compresses ours (server_bits), zi inflates the client's (client_bits). */
typedef struct ws_pmd {
    unsigned char on, server_no_ctx, client_no_ctx;
    unsigned char server_bits, client_bits;         /* 9..15, 8..15 */
    unsigned char server_bits_set, client_bits_set; /* named in the answer */
    struct z_stream_s *zd, *zi;
} ws_pmd;
enum { WS_PMD_TOO_BIG = -2, WS_PMD_BAD = -3, WS_PMD_NOMEM = -4 };
/* Take the first offer in the request's Sec-WebSocket-Extensions headers that we can honour: 1
 * (p filled), or 0 (none: no compression). */
int ws_pmd_negotiate(ws_pmd *p, const wsgi_header *h, size_t n);
/* The Sec-WebSocket-Extensions value answering it; its length (0: does not fit). */
size_t ws_pmd_answer(const ws_pmd *p, char *buf, size_t cap);
/* Compress one message into *out (malloc'd, the caller frees). 0 or -1. */
int ws_pmd_compress(ws_pmd *p, const char *data, size_t len, char **out, size_t *out_len);
/* Inflate one message into *out (malloc'd) if it stays within max bytes. 0, WS_PMD_TOO_BIG,
 * WS_PMD_BAD (not a deflate stream) or WS_PMD_NOMEM. */
int ws_pmd_inflate(ws_pmd *p, const unsigned char *data, size_t len, uint64_t max, char **out,
                   size_t *out_len);
void ws_pmd_free(ws_pmd *p); /* the zlib streams */

/* ---- server.c ------------------------------------------------------------------------------ */
/* Settings needed off the loop thread. */
wsgi_app *server_app(const server *s);
const epoll_options *server_options(const server *s);
int server_draining(const server *s);
int server_inline(const server *s);
int server_timeout_ms(const server *s); /* --timeout-request in ms */
int64_t server_now_us(void);            /* CLOCK_MONOTONIC */
/* An app thread: output of a lent connection began to wait; the loop looks every LATE_US. */
void server_late_wake(server *s);
uint64_t server_max_body(const server *s);
size_t server_max_header(const server *s);
size_t server_max_headers(const server *s); /* --max-headers: header lines per request */
int server_access_log(const server *s);
asgi_host *server_asgi(const server *s); /* NULL when the app is WSGI */
/* For asgi_exchange.c and ws_conn.c (loop thread): arm the socket for its next event (arm()); put
 * the connection in timeout list TL_* (the clock restarts; TL_NONE: no timeout); close now; answer
 * with a server error and close; the response is complete (keep-alive: next request, drain an
 * unread body, or close). */
void server_conn_arm(conn *c, unsigned events);
void server_conn_timer(conn *c, int list);
void server_conn_close(conn *c);
void server_conn_reply_error(conn *c, int status);
void server_conn_done(conn *c);

#endif
