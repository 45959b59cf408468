/* One request/response exchange with the app, run by the thread that owns the connection while it
 * is in CONN_APP (a team thread, see server.c, or the loop thread with --threads 0): build the
 * environ, call the app, then pull chunks with wsgi_iter_next() for as long as the socket takes
 * them. When the socket is full the connection goes back to the loop, which waits for EPOLLOUT,
 * flushes, and hands it back for the next chunk: a slow client holds no thread, and memory stays
 * bounded. Every libwsgi call of a response happens here, on the owning thread.
 *
 * Batches: small chunks are copied into the scratch buffer as they come (response_writer.c) and
 * written together, up to OUT_BATCH_BYTES per sendmsg: one TCP segment per chunk would cost far
 * more than the copy. A large chunk, a file range, a full batch or the end of the response is
 * written before the next pull. PEP 3333 forbids holding back a chunk while the app produces the
 * next one, so queued output waits about LATE_US at most: with app threads, the loop writes what
 * has waited that long while the app thread is inside the app (a generator that blocks between two
 * chunks, or a slow one), in exchange_late_flush() called from server.c. With --threads 0 the loop
 * is the one running the app: it writes an old batch before pulling again, but nobody can write
 * while the app runs, so an app that blocks between two chunks holds the first back for as long
 * as it blocks (as it holds every other connection of the worker). */
#include "conn.h"
#include "host_log.h"

#include <sched.h>
#include <string.h>

/* With --threads 0 the loop pulls at most this many chunks before serving other connections. */
#define INLINE_BUDGET 32

/* Output is queued: note since when it waits, and (wake) make sure the loop looks at it later if
 * it is the one to write it (app thread, holding the queue). */
static void note_waiting(conn *c, int wake)
{
    if (!atomic_load_explicit(&c->wait_since, memory_order_relaxed))
        atomic_store(&c->wait_since, server_now_us()); /* before late_on is read: late_scan() */
    if (wake && !server_inline(c->srv)) server_late_wake(c->srv);
}

/* Take the queue back from OWN_FREE (the loop may hold it for one write: let it run). */
static void out_claim(conn *c, int as)
{
    int want = OWN_FREE;
    while (!atomic_compare_exchange_strong_explicit(&c->out_owner, &want, as, memory_order_acquire,
                                                    memory_order_relaxed)) {
        want = OWN_FREE;
        sched_yield();
    }
}

void conn_out_lock(conn *c)
{
    /* Only this thread moves it away from OWN_APP (pull()). */
    if (atomic_load_explicit(&c->out_owner, memory_order_relaxed) != OWN_APP) out_claim(c, OWN_CB);
}

void conn_out_unlock(conn *c)
{
    if (atomic_load_explicit(&c->out_owner, memory_order_relaxed) != OWN_CB) return;
    /* Output queued inside the app waits from now. Most of it is a chunk at the end of
     * wsgi_iter_next, on its way out: the loop is not woken for it, so output that write() queues
     * before the app blocks (in a generator) is written by the loop only if it is looking anyway
     * (a busy server), else when the app comes back. */
    if (out_pending(c)) note_waiting(c, 0);
    atomic_store_explicit(&c->out_owner, OWN_FREE, memory_order_release);
}

int exchange_late_flush(conn *c, int64_t now)
{
    int64_t since = atomic_load_explicit(&c->wait_since, memory_order_relaxed);
    if (!since) return 0;
    if (now - since < LATE_US) return 1;
    /* Not in the app (the app thread writes itself), or busy in a callback: look again later. */
    int want = OWN_FREE;
    if (!atomic_compare_exchange_strong_explicit(&c->out_owner, &want, OWN_LOOP,
                                                 memory_order_acquire, memory_order_relaxed))
        return 1;
    /* One call, however much it takes (the loop has other connections); what is left is tried
     * at the next look. A failure (the client is gone) is for the app thread to find: the
     * socket keeps failing. */
    int f = out_flush_once(c);
    atomic_store(&c->wait_since, f == OUT_AGAIN ? now : 0);
    atomic_store_explicit(&c->out_owner, OWN_FREE, memory_order_release);
    return f == OUT_AGAIN;
}

/* Whether to pull the next chunk before writing: 1, 0 (write first) or -1 (out of memory). */
static int may_pull(conn *c)
{
    int b = conn_batch_ready(c);
    if (b <= 0) return b;
    if (!out_pending(c)) {
        atomic_store_explicit(&c->wait_since, 0, memory_order_relaxed);
        return 1;
    }
    note_waiting(c, 1);
    /* With app threads, the loop writes a batch that gets old (exchange_late_flush). */
    if (!server_inline(c->srv)) return 1;
    return server_now_us() - atomic_load_explicit(&c->wait_since, memory_order_relaxed) < LATE_US;
}

/* wsgi_iter_next. With app threads, the loop may write the queued output meanwhile. */
static int pull(conn *c)
{
    if (server_inline(c->srv)) return wsgi_iter_next(c->resp);
    atomic_store_explicit(&c->out_owner, OWN_FREE, memory_order_release);
    int rc = wsgi_iter_next(c->resp);
    out_claim(c, OWN_APP);
    return rc;
}

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
    conn_scratch_trim(c);
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
    conn_obs_dispatch(c, 0);
    rc = wsgi_call(env, &conn_handler, c, &c->resp);
    c->in_call = 0;
    if (rc != WSGI_OK) {
        conn_obs_dispatch(c, rc);
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
        /* Pull while the batch has room and is young; else write it (see the top). */
        int b = c->resp_done || budget == 0 ? 0 : may_pull(c);
        if (b < 0) return exchange_abort(c);
        if (!b) {
            int f = out_flush(c);
            if (f == OUT_ERR) return exchange_abort(c);
            if (f == OUT_AGAIN) return PUMP_WRITE;
            atomic_store_explicit(&c->wait_since, 0, memory_order_relaxed);
            if (c->resp_done) {
                finish_response(c);
                return PUMP_DONE;
            }
            if (budget == 0) return PUMP_YIELD;
            continue;
        }
        if (budget > 0) budget--;
        int rc = pull(c);
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
