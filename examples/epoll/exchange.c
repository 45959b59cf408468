/* One request/response exchange with the app, run by the thread that owns the connection while it
 * is in CONN_APP (a pool thread, or the loop thread with --threads 0): build the environ, call the
 * app, then pull chunks with wsgi_iter_next() for as long as the socket takes them. When the
 * socket is full the connection goes back to the loop, which waits for EPOLLOUT, flushes, and
 * hands it back for the next chunk: a slow client holds no thread, and memory stays bounded.
 * Every libwsgi call of a response happens here, on the owning thread. */
#include "conn.h"
#include "host_log.h"

#include <string.h>

/* With --threads 0 the loop pulls at most this many chunks before serving other connections. */
#define INLINE_BUDGET 32

static void finish_response(conn *c)
{
    if (c->resp) {
        wsgi_response_free(c->resp);
        c->resp = NULL;
    }
    if (c->framing == FRAME_LENGTH && c->resp_cl >= 0 && c->body_bytes < (uint64_t)c->resp_cl &&
        !c->swallow && !c->cut) {
        host_log(WSGI_LOG_WARNING,
                 "app sent %llu body bytes but declared Content-Length %lld: closing the "
                 "connection",
                 (unsigned long long)c->body_bytes, (long long)c->resp_cl);
        c->keep_alive = 0;
    }
    if (!conn_can_drain(c)) c->keep_alive = 0;
    conn_access_log(c);
}

int exchange_abort(conn *c)
{
    if (c->resp) {
        wsgi_response_free(c->resp); /* calls the iterable's close() */
        c->resp = NULL;
    }
    c->keep_alive = 0;
    if (c->status) conn_access_log(c);
    return PUMP_ABORT;
}

/* Build the environ and call the app. 0, or -1 to cut the connection. */
static int start(conn *c)
{
    wsgi_request req;
    conn_fill_request(c, &req);
    wsgi_env *env = NULL;
    int rc = wsgi_env_build(server_app(c->srv), &req, &env);
    if (rc != WSGI_OK) {
        int status = rc == WSGI_ERR_INVAL ? 400 : 500;
        host_log(status == 400 ? WSGI_LOG_DEBUG : WSGI_LOG_ERROR,
                 "cannot build the environ: %s: %s", wsgi_strerror(rc), wsgi_errmsg());
        conn_queue_status(c, status);
        c->resp_done = 1;
        return 0;
    }
    c->in_call = 1;
    rc = wsgi_call(env, &conn_handler, c, &c->resp);
    c->in_call = 0;
    if (rc != WSGI_OK) {
        host_log(WSGI_LOG_ERROR, "wsgi_call: %s: %s", wsgi_strerror(rc), wsgi_errmsg());
        if (c->resp) {
            wsgi_response_free(c->resp);
            c->resp = NULL;
        }
        if (c->started) return -1;
        out_clear(c);
        conn_queue_status(c, 500);
        c->resp_done = 1;
    }
    return 0;
}

int exchange_run(conn *c)
{
    if (!c->resp && !c->resp_done && !c->started) {
        if (start(c) < 0) return exchange_abort(c);
    }
    int budget = server_inline(c->srv) ? INLINE_BUDGET : -1;
    for (;;) {
        int f = out_flush(c);
        if (f == OUT_ERR) return exchange_abort(c);
        if (f == OUT_AGAIN) return PUMP_WRITE;
        if (c->resp_done) {
            finish_response(c);
            return PUMP_DONE;
        }
        if (budget >= 0 && budget-- == 0) return PUMP_YIELD;
        int rc = wsgi_iter_next(c->resp);
        if (rc == 1) continue;
        if (rc == 0) {
            if (c->framing == FRAME_CHUNKED && !c->swallow) conn_queue_chunked_end(c);
            c->resp_done = 1;
            continue;
        }
        if (c->swallow) {
            /* on_start refused the app's head and queued our own response instead. */
            c->resp_done = 1;
            continue;
        }
        /* The app failed after the head was committed: deliver what is already queued (the
         * client then sees a body without its end: short of its length, or chunked without the
         * last chunk) and close. */
        host_log(WSGI_LOG_DEBUG, "response cut: %s: %s", wsgi_strerror(rc),
                 wsgi_response_errmsg(c->resp));
        c->keep_alive = 0;
        c->cut = 1;
        c->resp_done = 1;
    }
}
