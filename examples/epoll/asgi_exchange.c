/* Serving requests with an ASGI app (include/libwsgi/asgi.h, docs/asgi.md). Everything runs on
 * the loop thread: the app's asyncio loop is nested in the server's epoll set (its fd, its
 * timeout, one asgi_loop_run() per iteration, see server.c's loop), and a connection served by
 * the app stays with the loop in CONN_ASGI for the whole exchange:
 *
 *  - request body: a buffered one (Content-Length up to BODY_BUFFER_MAX) goes with the dispatch;
 *    otherwise (BODY_FEED) the loop reads the socket as data arrives and the parser hands each
 *    de-chunked piece to asgi_conn_feed(). When the library has 256 KiB unread it answers
 *    ASGI_PAUSE: the socket is not read again until on_read_resume.
 *  - Expect: 100-continue (streamed bodies): "100 Continue" goes out after the app's first step
 *    unless it has already answered, so an app that rejects the request without reading the body
 *    lets the client skip sending it (like uvicorn, which sends it when the app awaits the body).
 *  - response: the callbacks only queue (response_writer.c, shared with WSGI) and mark the
 *    exchange; the output is written after the loop turn, so the head and a small body leave in one
 *    sendmsg. Small pieces are copied into the connection's scratch buffer up to ASGI_OUT_HWM; a
 *    larger piece is queued by pointer and written at once, and if the socket does not take it all
 *    the app's send() is held (ASGI_PAUSE) until EPOLLOUT has drained the queue: memory per
 *    connection stays bounded by ASGI_OUT_HWM plus one piece of the app, whatever the reader's
 * pace.
 *  - the client going away (EOF, RST, EPOLLRDHUP once the body is in, a failed write) closes the
 *    connection; the app's receive() then returns http.disconnect and send() raises. Except when
 *    the client closes after it has the whole response (every byte of the head and of the declared
 *    Content-Length, or a bodyless HEAD response) while the app has not sent its final, empty
 *    http.response.body yet (Quart does that after the last chunk; Starlette's FileResponse streams
 *    the file even for HEAD): that is a normal end, not an abort, so the app is let finish (within
 *    --timeout-request) without its last send() raising, as under uvicorn.
 *
 * Callbacks never close or free anything (the library forbids asgi_* calls inside them): they mark
 * the exchange and put it on the host's queue, which asgi_host_run() works through after the loop
 * turn. An exchange outlives its connection's interest in it: once the response is on the wire
 * (or the client is gone) it is detached, and freed when the app's task ends (on_done), so that a
 * graceful shutdown waits for apps still running after their response (Starlette's
 * BackgroundTasks), like uvicorn, before the lifespan shutdown. */
#include "conn.h"
#include "host_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* Response bytes a connection may hold before the app's send() waits for the client. */
#define ASGI_OUT_HWM (64 * 1024)
/* At most this many reads of a request body per readiness event (fairness). */
#define READS_PER_EVENT 8

struct asgi_ex {
    asgi_host *h;
    conn *c; /* NULL once detached from the connection */
    asgi_conn *ac;
    char *body;       /* our copy of a buffered body (borrowed by the library until the free) */
    int done;         /* on_done arrived: the app's task has ended */
    int out_paused;   /* a callback answered ASGI_PAUSE: resume once the queue has drained */
    int read_paused;  /* asgi_conn_feed answered ASGI_PAUSE: do not read until on_read_resume */
    int body_ended;   /* the end of the body was fed */
    int complete;     /* the response's last byte is queued */
    int cut;          /* the app failed after the head: send what is queued, then close */
    int gone;         /* writing to the client failed inside a callback: close */
    int peer_closed;  /* the client closed after receiving the whole response: let the app end */
    int continue_due; /* Expect: 100-continue, decided after the app's first step */
    int queued;       /* in h's queue */
    int parked;       /* in h's detached list */
    asgi_ex *q_next;
    asgi_ex *d_prev, *d_next;
};

struct asgi_host {
    server *srv;
    wsgi_app *app;
    wsgi_runtime *rt;
    int fd;
    asgi_ex *q_head, *q_tail; /* exchanges to look at after the loop turn */
    asgi_ex *detached;        /* exchanges whose app is still running after the response */
    size_t n_detached;
    int timeout_warned;
};

static void enqueue(asgi_ex *x)
{
    if (x->queued) return;
    x->queued = 1;
    x->q_next = NULL;
    asgi_host *h = x->h;
    if (h->q_tail)
        h->q_tail->q_next = x;
    else
        h->q_head = x;
    h->q_tail = x;
}

static void destroy(asgi_ex *x)
{
    asgi_host *h = x->h;
    if (x->parked) {
        if (x->d_prev)
            x->d_prev->d_next = x->d_next;
        else
            h->detached = x->d_next;
        if (x->d_next) x->d_next->d_prev = x->d_prev;
        h->n_detached--;
    }
    asgi_conn_free(x->ac);
    free(x->body);
    free(x);
}

/* A detached exchange: freed if its app is done, else kept until on_done. */
static void park(asgi_ex *x)
{
    if (x->done) {
        destroy(x);
        return;
    }
    if (x->parked) return;
    asgi_host *h = x->h;
    x->parked = 1;
    x->d_prev = NULL;
    x->d_next = h->detached;
    if (h->detached) h->detached->d_prev = x;
    h->detached = x;
    h->n_detached++;
}

/* The connection is done with the exchange. */
static void release(conn *c)
{
    asgi_ex *x = c->ax;
    c->ax = NULL;
    c->body_sink = NULL;
    if (c->body_mode == BODY_FEED) c->body_mode = BODY_DISCARD;
    x->c = NULL;
    if (!x->queued) park(x); /* else when the queue gets to it */
}

void asgi_exchange_drop(conn *c)
{
    asgi_ex *x = c->ax;
    if (!x->complete || out_pending(c))
        host_log(WSGI_LOG_DEBUG, "client %s gone before the end of the response",
                 c->peer[0] ? c->peer : "unix");
    asgi_conn_disconnect(x->ac);
    if (c->status) conn_access_log(c);
    release(c);
}

/* ---- the app's callbacks (inside asgi_loop_run; they only queue and mark) ------------------- */

static int cb_gone(asgi_ex *x)
{
    x->gone = 1;
    enqueue(x);
    return -1;
}

static int cb_start(void *user_data, const wsgi_response_head *head)
{
    asgi_ex *x = user_data;
    conn *c = x->c;
    if (!c || x->gone) return -1;
    if (conn_queue_head(c, head) < 0) return cb_gone(x);
    enqueue(x);
    return 0;
}

static int cb_body(void *user_data, const char *data, size_t len, int more)
{
    asgi_ex *x = user_data;
    conn *c = x->c;
    if (!c || x->gone) return -1;
    /* The bytes are the app's until its next send(): copy what fits under the mark, else queue by
     * pointer and hold the app's send() until they are written. */
    int copy = c->sc_len + len <= ASGI_OUT_HWM;
    if (conn_own_borrowed(c) < 0 || conn_queue_body(c, data, len, copy) < 0) return cb_gone(x);
    if (!more) {
        if (c->framing == FRAME_CHUNKED && conn_queue_chunked_end(c) < 0) return cb_gone(x);
        x->complete = 1;
    }
    enqueue(x);
    if (copy) return 0;
    int f = out_flush(c);
    if (f == OUT_ERR) return cb_gone(x);
    if (f == OUT_AGAIN) {
        x->out_paused = 1;
        return ASGI_PAUSE;
    }
    return 0;
}

static int cb_sendfile(void *user_data, int fd, int64_t offset, int64_t count)
{
    asgi_ex *x = user_data;
    conn *c = x->c;
    if (!c || x->gone) return -1;
    /* The fd stays open until asgi_conn_free(), which waits for the queue to drain. */
    if (conn_queue_file(c, fd, offset, count) < 0) return cb_gone(x);
    if (c->framing == FRAME_CHUNKED && conn_queue_chunked_end(c) < 0) return cb_gone(x);
    x->complete = 1;
    enqueue(x);
    return 0;
}

static void cb_read_resume(void *user_data)
{
    asgi_ex *x = user_data;
    x->read_paused = 0;
    if (x->c) enqueue(x);
}

static void cb_done(void *user_data, int result)
{
    asgi_ex *x = user_data;
    x->done = 1;
    /* Negative with nothing sent: the library delivered a 500 already (complete). Otherwise the
     * response is unfinished: the client gets it cut short. */
    if (result < 0 && !x->complete) x->cut = 1;
    enqueue(x);
}

static const asgi_handler handler = {
    .struct_size = sizeof(asgi_handler),
    .on_start = cb_start,
    .on_body = cb_body,
    .on_sendfile = cb_sendfile,
    .on_read_resume = cb_read_resume,
    .on_done = cb_done,
};

/* ---- the request body ------------------------------------------------------------------------ */

static int body_sink(conn *c, const char *data, size_t len)
{
    asgi_ex *x = c->ax;
    int r = asgi_conn_feed(x->ac, data, len, 1);
    if (r == ASGI_PAUSE) x->read_paused = 1;
    if (r < 0) {
        host_log(WSGI_LOG_ERROR, "asgi_conn_feed: %s: %s", wsgi_strerror(r), wsgi_errmsg());
        c->body_error = 503;
        return -1;
    }
    return 0;
}

/* The body was bad (400, 413) or too slow (408). Nothing of the app's response sent yet: answer
 * for the body ourselves (the app sees http.disconnect); else cut. */
static void body_failed(conn *c, int status)
{
    host_log(WSGI_LOG_DEBUG, "request body from %s: answering %d", c->peer[0] ? c->peer : "unix",
             status);
    if (c->started) {
        server_conn_close(c);
        return;
    }
    asgi_conn_disconnect(c->ax->ac);
    release(c);
    server_conn_reply_error(c, status);
}

/* Parse what is buffered. 0, or -1 if the connection was answered/closed. */
static int feed_body(conn *c)
{
    asgi_ex *x = c->ax;
    if (c->body_mode != BODY_FEED) return 0; /* none, or buffered: given with the dispatch */
    if (c->in_parsed < c->in_len && !c->msg_done && conn_parse_body(c) == PARSE_ERROR) {
        body_failed(c, c->err_status ? c->err_status : 400);
        return -1;
    }
    if (c->msg_done && !x->body_ended) {
        x->body_ended = 1;
        int r = asgi_conn_feed(x->ac, NULL, 0, 0);
        if (r == ASGI_PAUSE) x->read_paused = 1;
    }
    return 0;
}

/* Read and feed what the socket has. 0, or -1 if the connection was answered/closed. */
static int read_body(conn *c)
{
    asgi_ex *x = c->ax;
    for (int k = 0; k < READS_PER_EVENT && !c->msg_done && !x->read_paused; k++) {
        /* Everything before in_parsed (the head, earlier body) is no longer needed. */
        if (c->in_parsed == c->in_len) {
            c->in_parsed = c->in_len = 0;
        } else if (c->in_parsed > 0) {
            memmove(c->in, c->in + c->in_parsed, c->in_len - c->in_parsed);
            c->in_len -= c->in_parsed;
            c->in_parsed = 0;
        }
        if (conn_in_reserve(c, c->in_len + IN_BUF_SIZE) < 0) {
            body_failed(c, 503);
            return -1;
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            host_log(WSGI_LOG_DEBUG, "client %s closed the connection in the middle of a body",
                     c->peer[0] ? c->peer : "unix");
            server_conn_close(c);
            return -1;
        }
        if (n < 0) return 0;
        c->in_len += (size_t)n;
        if (feed_body(c) < 0) return -1;
        if ((size_t)n < room) break;
    }
    return 0;
}

/* ---- moving a connection on ----------------------------------------------------------------- */

/* The response is on the wire. */
static void finish(conn *c)
{
    asgi_ex *x = c->ax;
    if (x->cut) {
        host_log(WSGI_LOG_DEBUG, "response to %s cut: the app failed after the head",
                 c->peer[0] ? c->peer : "unix");
        c->keep_alive = 0;
    }
    if (!conn_can_drain(c)) c->keep_alive = 0;
    conn_access_log(c);
    release(c);
    server_conn_done(c);
}

/* The client has every byte of the response it expects, though the app has not ended it. */
static int wire_complete(const conn *c)
{
    if (!c->started || out_pending(c)) return 0;
    return c->framing == FRAME_NONE ||
           (c->framing == FRAME_LENGTH && c->resp_cl >= 0 && c->body_bytes >= (uint64_t)c->resp_cl);
}

/* Write what is queued, resume a held send(), finish, or wait for the next event. */
static void progress(conn *c)
{
    asgi_ex *x = c->ax;
    if (x->gone) {
        server_conn_close(c);
        return;
    }
    if (out_pending(c) && out_flush(c) == OUT_ERR) {
        server_conn_close(c);
        return;
    }
    int pending = out_pending(c);
    if (!pending && x->out_paused) {
        x->out_paused = 0;
        asgi_conn_resume(x->ac);
    }
    if (!pending && (x->complete || x->cut)) {
        finish(c);
        return;
    }
    int reading = c->body_mode == BODY_FEED && !c->msg_done;
    unsigned ev = pending ? EPOLLOUT : 0;
    if (x->peer_closed)
        ; /* nothing more to learn from the client */
    else if (!reading)
        ev |= EPOLLRDHUP; /* the body is in: only the client going away is of interest */
    else if (!x->read_paused)
        ev |= EPOLLIN;
    else
        ev |= EPOLLRDHUP; /* reading is paused: still learn that the client went away */
    /* The client's pace is bounded (--timeout-request), the app's is not (except to end a response
     * the client has already closed). */
    server_conn_timer(c, pending || (reading && !x->read_paused) || x->peer_closed);
    server_conn_arm(c, ev);
}

void asgi_exchange_start(conn *c)
{
    asgi_host *h = server_asgi(c->srv);
    asgi_ex *x = calloc(1, sizeof(*x));
    if (!x) {
        server_conn_reply_error(c, 503);
        return;
    }
    x->h = h;
    x->c = c;
    c->ax = x;
    c->state = CONN_ASGI;
    server_conn_timer(c, 0);
    if (c->body_mode == BODY_STREAM) {
        c->body_mode = BODY_FEED;
        c->body_sink = body_sink;
    }
    wsgi_request req;
    conn_fill_request(c, &req);
    if (req.body_len) {
        /* The library borrows req.body until asgi_conn_free(), which may come after the next
         * request has reused the input buffer. */
        x->body = malloc(req.body_len);
        if (!x->body) {
            c->ax = NULL;
            free(x);
            server_conn_reply_error(c, 503);
            return;
        }
        memcpy(x->body, req.body, req.body_len);
        req.body = x->body;
    }
    int rc = asgi_dispatch(h->app, &req, &handler, x, &x->ac);
    if (rc != WSGI_OK) {
        int status = rc == WSGI_ERR_INVAL ? 400 : 500;
        host_log(status == 400 ? WSGI_LOG_DEBUG : WSGI_LOG_ERROR, "asgi_dispatch: %s: %s",
                 wsgi_strerror(rc), wsgi_errmsg());
        c->ax = NULL;
        c->body_sink = NULL;
        free(x->body);
        free(x);
        server_conn_reply_error(c, status);
        return;
    }
    if (c->body_mode == BODY_FEED && c->expect_continue && !c->continue_sent) x->continue_due = 1;
    /* The app runs at the next loop turn; the queue then arms the socket. */
    enqueue(x);
    feed_body(c); /* body bytes that came with the head */
}

void asgi_exchange_event(conn *c, unsigned events)
{
    asgi_ex *x = c->ax;
    int reading = c->body_mode == BODY_FEED && !c->msg_done && !x->read_paused;
    if (events & EPOLLERR) {
        server_conn_close(c); /* reset */
        return;
    }
    if (reading && (events & (EPOLLIN | EPOLLHUP))) {
        if (read_body(c) < 0) return;
    } else if ((events & EPOLLRDHUP) && !(events & EPOLLHUP) && wire_complete(c)) {
        c->keep_alive = 0;
        x->peer_closed = 1;
    } else if (events & (EPOLLRDHUP | EPOLLHUP)) {
        host_log(WSGI_LOG_DEBUG, "client %s closed the connection", c->peer[0] ? c->peer : "unix");
        server_conn_close(c);
        return;
    }
    progress(c);
}

void asgi_exchange_timeout(conn *c)
{
    if (c->ax->peer_closed) {
        host_log(WSGI_LOG_DEBUG, "app did not end the response to %s, which has closed",
                 c->peer[0] ? c->peer : "unix");
        server_conn_close(c);
    } else if (out_pending(c)) {
        host_log(WSGI_LOG_DEBUG, "client %s stopped reading: dropping the response", c->peer);
        server_conn_close(c);
    } else if (c->body_mode == BODY_FEED && !c->msg_done) {
        body_failed(c, 408);
    } else {
        progress(c);
    }
}

/* ---- the host side of the app's loop ----------------------------------------------------------
 */

asgi_host *asgi_host_new(server *s, wsgi_app *app)
{
    asgi_host *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    h->srv = s;
    h->app = app;
    h->rt = wsgi_app_runtime(app);
    h->fd = asgi_loop_fd(h->rt);
    if (h->fd < 0) {
        host_log(WSGI_LOG_ERROR, "cannot create the ASGI event loop: %s: %s", wsgi_strerror(h->fd),
                 wsgi_errmsg());
        free(h);
        return NULL;
    }
    return h;
}

int asgi_host_fd(asgi_host *h)
{
    return h->fd;
}

size_t asgi_host_busy(const asgi_host *h)
{
    return h->n_detached;
}

int asgi_host_timeout(asgi_host *h)
{
    if (h->q_head) return 0;
    int t = asgi_loop_timeout(h->rt);
    if (t >= -1) return t;
    if (!h->timeout_warned) {
        host_log(WSGI_LOG_WARNING, "asgi_loop_timeout: %s: polling every 10 ms", wsgi_strerror(t));
        h->timeout_warned = 1;
    }
    return 10;
}

void asgi_host_run(asgi_host *h)
{
    int rc = asgi_loop_run(h->rt);
    if (rc != WSGI_OK && rc != WSGI_ERR_PYTHON) /* WSGI_ERR_PYTHON: already logged */
        host_log(WSGI_LOG_ERROR, "asgi_loop_run: %s", wsgi_strerror(rc));
    asgi_ex *x;
    while ((x = h->q_head)) {
        h->q_head = x->q_next;
        if (!h->q_head) h->q_tail = NULL;
        x->queued = 0;
        conn *c = x->c;
        if (!c) {
            park(x);
            continue;
        }
        if (x->continue_due) {
            /* After the app's first step: it did not answer at once, so it wants the body. */
            x->continue_due = 0;
            if (!c->started && !c->msg_done && !x->done) {
                c->continue_sent = 1;
                conn_queue_status(c, 100);
            }
        }
        progress(c);
    }
}

void asgi_host_free(asgi_host *h)
{
    if (!h) return;
    /* Every connection is closed: what is left is detached. */
    asgi_ex *x;
    while ((x = h->q_head)) {
        h->q_head = x->q_next;
        x->queued = 0;
        if (!x->c) park(x);
    }
    h->q_tail = NULL;
    while (h->detached) {
        x = h->detached;
        destroy(x);
    }
    free(h);
}
