/* One HTTP request/response with an ASGI app (include/libwsgi/asgi.h, docs/asgi.md). Everything
 * runs on the loop thread (the app's loop is nested in the server's, see asgi_host.c), and a
 * connection served by the app stays with the loop in CONN_ASGI for the whole exchange:
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
 *    --timeout-request) without its last send() raising, as under uvicorn;
 * asgi_conn_client_closed() makes its receive() return http.disconnect, so an app that waits for
 * that (an event stream answering HEAD) ends too.
 *
 * Callbacks never close or free anything (the library forbids asgi_* calls inside them): they mark
 * the exchange (an asgi_task) and queue it; asgi_host.c calls progress() after the loop turn, and
 * keeps the exchange after the response while the app still runs. The response callbacks are
 * shared with ws_conn.c, for a WebSocket handshake the app denies over HTTP. */
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
    asgi_task t;      /* first: the callbacks' user_data */
    char *body;       /* our copy of a buffered body (borrowed by the library until the free) */
    int body_ended;   /* the end of the body was fed */
    int peer_closed;  /* the client closed after receiving the whole response: let the app end */
    int continue_due; /* Expect: 100-continue, decided after the app's first step */
};

static void exchange_progress(conn *c);

static void exchange_destroy(asgi_task *t)
{
    asgi_ex *x = (asgi_ex *)t;
    free(x->body);
    free(x);
}

static const asgi_task_ops exchange_ops = {.progress = exchange_progress,
                                           .destroy = exchange_destroy};

/* The connection is done with the exchange. */
static void release(conn *c)
{
    asgi_ex *x = c->ax;
    c->ax = NULL;
    c->body_sink = NULL;
    if (c->body_mode == BODY_FEED) c->body_mode = BODY_DISCARD;
    asgi_task_detach(&x->t);
}

void asgi_exchange_drop(conn *c)
{
    asgi_ex *x = c->ax;
    if (!x->t.complete || out_pending(c))
        host_log(WSGI_LOG_DEBUG, "client %s gone before the end of the response",
                 c->peer[0] ? c->peer : "unix");
    asgi_conn_disconnect(x->t.ac);
    if (c->status) conn_access_log(c);
    release(c);
}

/* ---- the app's callbacks (inside asgi_loop_run; they only queue and mark) ------------------- */

static int cb_gone(asgi_task *t)
{
    t->gone = 1;
    asgi_task_enqueue(t);
    return -1;
}

int asgi_response_on_start(void *user_data, const wsgi_response_head *head)
{
    asgi_task *t = user_data;
    conn *c = t->c;
    if (!c || t->gone) return -1;
    if (conn_refuse_interim(c, head)) {
        /* Our 500 is the whole response; the app's send() raises. */
        t->complete = 1;
        asgi_task_enqueue(t);
        return -1;
    }
    if (conn_queue_head(c, head) < 0) return cb_gone(t);
    asgi_task_enqueue(t);
    return 0;
}

int asgi_response_on_body(void *user_data, const char *data, size_t len, int more)
{
    asgi_task *t = user_data;
    conn *c = t->c;
    if (!c || t->gone) return -1;
    /* The bytes are the app's until its next send(): copy what fits under the mark, else queue by
     * pointer and hold the app's send() until they are written. */
    int copy = c->sc_len + len <= ASGI_OUT_HWM;
    if (conn_own_borrowed(c) < 0 || conn_queue_body(c, data, len, copy) < 0) return cb_gone(t);
    if (!more) {
        if (c->framing == FRAME_CHUNKED && conn_queue_chunked_end(c) < 0) return cb_gone(t);
        t->complete = 1;
    }
    asgi_task_enqueue(t);
    if (copy) return 0;
    int f = out_flush(c);
    if (f == OUT_ERR) return cb_gone(t);
    if (f == OUT_AGAIN) {
        t->out_paused = 1;
        return ASGI_PAUSE;
    }
    return 0;
}

static int cb_sendfile(void *user_data, int fd, int64_t offset, int64_t count)
{
    asgi_task *t = user_data;
    conn *c = t->c;
    if (!c || t->gone) return -1;
    /* The fd stays open until asgi_conn_free(), which waits for the queue to drain. */
    if (conn_queue_file(c, fd, offset, count) < 0) return cb_gone(t);
    if (c->framing == FRAME_CHUNKED && conn_queue_chunked_end(c) < 0) return cb_gone(t);
    t->complete = 1;
    asgi_task_enqueue(t);
    return 0;
}

static const asgi_handler handler = {
    .struct_size = sizeof(asgi_handler),
    .on_start = asgi_response_on_start,
    .on_body = asgi_response_on_body,
    .on_sendfile = cb_sendfile,
    .on_read_resume = asgi_task_on_read_resume,
    .on_done = asgi_task_on_done,
};

/* ---- the request body ------------------------------------------------------------------------ */

static int body_sink(conn *c, const char *data, size_t len)
{
    asgi_ex *x = c->ax;
    int r = asgi_conn_feed(x->t.ac, data, len, 1);
    if (r == ASGI_PAUSE) x->t.read_paused = 1;
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
    asgi_conn_disconnect(c->ax->t.ac);
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
        int r = asgi_conn_feed(x->t.ac, NULL, 0, 0);
        if (r == ASGI_PAUSE) x->t.read_paused = 1;
    }
    return 0;
}

/* Read and feed what the socket has. 0, or -1 if the connection was answered/closed. */
static int read_body(conn *c)
{
    asgi_ex *x = c->ax;
    for (int k = 0; k < READS_PER_EVENT && !c->msg_done && !x->t.read_paused; k++) {
        /* Everything before in_parsed (the head, earlier body) is no longer needed. */
        if (c->in_parsed == c->in_len) {
            c->in_parsed = c->in_len = 0;
        } else if (c->in_parsed > 0) {
            memmove(c->in, c->in + c->in_parsed, c->in_len - c->in_parsed);
            c->in_len -= c->in_parsed;
            c->in_parsed = 0;
        }
        /* 64 KiB at a time (not the head's 16): a quarter of the reads and feeds for a big body.
         * Not more: a larger buffer is given back at the next request (conn_request_begin). */
        size_t want = c->in_len + IN_BUF_SIZE;
        if (conn_in_reserve(c, want > BODY_READ_SIZE ? want : BODY_READ_SIZE) < 0) {
            body_failed(c, 503);
            return -1;
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t n = conn_recv(c, c->in + c->in_len, room);
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
    if (x->t.cut) {
        host_log(WSGI_LOG_DEBUG, "response to %s cut: the app failed after the head",
                 c->peer[0] ? c->peer : "unix");
        c->keep_alive = 0;
        c->cut = 1; /* a close-delimited body ends with a reset (close_graceful) */
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
    if (x->t.gone) {
        server_conn_close(c);
        return;
    }
    if (out_pending(c) && out_flush(c) == OUT_ERR) {
        server_conn_close(c);
        return;
    }
    int pending = out_pending(c);
    if (!pending && x->t.out_paused) {
        x->t.out_paused = 0;
        asgi_conn_resume(x->t.ac);
    }
    if (!pending && (x->t.complete || x->t.cut)) {
        finish(c);
        return;
    }
    int reading = c->body_mode == BODY_FEED && !c->msg_done;
    unsigned ev = pending ? EPOLLOUT : 0;
    if (x->peer_closed)
        ; /* nothing more to learn from the client */
    else if (!reading)
        ev |= EPOLLRDHUP; /* the body is in: only the client going away is of interest */
    else if (!x->t.read_paused)
        ev |= EPOLLIN;
    else
        ev |= EPOLLRDHUP; /* reading is paused: still learn that the client went away */
    /* The client's pace is bounded (--timeout-request), the app's is not (except to end a response
     * the client has already closed). */
    int timed = pending || (reading && !x->t.read_paused) || x->peer_closed;
    server_conn_timer(c, timed ? TL_REQUEST : TL_NONE);
    server_conn_arm(c, ev);
}

/* After a loop turn that touched the exchange. */
static void exchange_progress(conn *c)
{
    asgi_ex *x = c->ax;
    if (x->continue_due) {
        /* After the app's first step: it did not answer at once, so it wants the body. */
        x->continue_due = 0;
        if (!c->started && !c->msg_done && !x->t.done) {
            c->continue_sent = 1;
            conn_queue_status(c, 100);
        }
    }
    progress(c);
}

void asgi_exchange_start(conn *c)
{
    asgi_ex *x = calloc(1, sizeof(*x));
    if (!x) {
        server_conn_reply_error(c, 503);
        return;
    }
    asgi_task_init(&x->t, &exchange_ops, c);
    c->ax = x;
    c->state = CONN_ASGI;
    server_conn_timer(c, TL_NONE);
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
    conn_obs_dispatch(c, 0);
    int rc = asgi_dispatch(server_app(c->srv), &req, &handler, &x->t, &x->t.ac);
    if (rc != WSGI_OK) {
        conn_obs_dispatch(c, rc);
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
    asgi_task_enqueue(&x->t);
    feed_body(c); /* body bytes that came with the head */
}

void asgi_exchange_event(conn *c, unsigned events)
{
    asgi_ex *x = c->ax;
    int reading = c->body_mode == BODY_FEED && !c->msg_done && !x->t.read_paused;
    if (events & EPOLLERR) {
        server_conn_close(c); /* reset */
        return;
    }
    if (reading && (events & (EPOLLIN | EPOLLHUP))) {
        if (read_body(c) < 0) return;
    } else if ((events & EPOLLRDHUP) && !(events & EPOLLHUP) && wire_complete(c)) {
        c->keep_alive = 0;
        x->peer_closed = 1;
        /* receive() now says http.disconnect (an endless stream answering HEAD ends), send()
         * still works. */
        asgi_conn_client_closed(x->t.ac);
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
