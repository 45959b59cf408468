/* The worker's ASGI side (include/libwsgi/asgi.h, docs/asgi.md): the app's asyncio loop nested in
 * the server's epoll set (its fd, its timeout, a turn after an iteration that has work for it, see
 * server.c's loop), and the app tasks it serves, each an asgi_task at the head of its own struct:
 * an HTTP exchange (asgi_exchange.c) or a WebSocket (ws_conn.c).
 *
 * Apps start eagerly (asgi_loop_set_eager): asgi_dispatch() runs the app's first step at once, so a
 * handler that does not wait has answered (its callbacks have queued the response) when the
 * dispatch returns, and needs no loop turn. A turn runs only when the loop has work: ready
 * callbacks, a timer due, or its fd readable (the apps' own I/O, a wakeup); an idle turn would
 * still cost an epoll_wait and thousands of instructions. The fd's readiness comes from the
 * server's own epoll events (asgi_host_loop_ready() for EV_ASGI) once it reports them, else from a
 * poll().
 *
 * The library's callbacks run inside asgi_loop_run(), where asgi_* calls are forbidden, so they
 * never close or free anything: they mark their task and put it on the host's queue, which
 * asgi_host_run() works through after the loop turn, calling each attached task's progress(). A
 * task outlives its connection's interest in it: once the connection is done with it (response on
 * the wire, WebSocket closed, client gone) it is detached, and freed when the app's task ends
 * (on_done), so that a graceful shutdown waits for apps still running after their connection
 * (Starlette's BackgroundTasks, a WebSocket handler finishing after the disconnect), like uvicorn,
 * before the lifespan shutdown. */
#include "conn.h"
#include "host_log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

struct asgi_host {
    server *srv;
    wsgi_app *app;
    wsgi_runtime *rt;
    int fd;
    asgi_task *q_head, *q_tail; /* tasks to look at after the loop turn */
    asgi_task *detached;        /* tasks whose app is still running after their connection */
    size_t n_detached;
    int timeout_warned;
    int fd_ready;       /* asgi_host_loop_ready() in this iteration */
    int ready_told;     /* the server reports the loop's fd events: no need to poll it */
    int64_t iter_begin; /* ms: when the server's current iteration began (0: none yet) */
    int64_t warn_ms;    /* --loop-block-warn-ms (0: off) */
};

void asgi_task_init(asgi_task *t, const asgi_task_ops *ops, conn *c)
{
    t->ops = ops;
    t->h = server_asgi(c->srv);
    t->c = c;
}

void asgi_task_enqueue(asgi_task *t)
{
    if (t->queued) return;
    t->queued = 1;
    t->q_next = NULL;
    asgi_host *h = t->h;
    if (h->q_tail)
        h->q_tail->q_next = t;
    else
        h->q_head = t;
    h->q_tail = t;
}

static void destroy(asgi_task *t)
{
    asgi_host *h = t->h;
    if (t->parked) {
        if (t->d_prev)
            t->d_prev->d_next = t->d_next;
        else
            h->detached = t->d_next;
        if (t->d_next) t->d_next->d_prev = t->d_prev;
        h->n_detached--;
    }
    asgi_conn_free(t->ac);
    t->ops->destroy(t);
}

/* A detached task: freed if its app is done, else kept until on_done. */
static void park(asgi_task *t)
{
    if (t->done) {
        destroy(t);
        return;
    }
    if (t->parked) return;
    asgi_host *h = t->h;
    t->parked = 1;
    t->d_prev = NULL;
    t->d_next = h->detached;
    if (h->detached) h->detached->d_prev = t;
    h->detached = t;
    h->n_detached++;
}

void asgi_task_detach(asgi_task *t)
{
    t->c = NULL;
    if (!t->queued) park(t); /* else when the queue gets to it */
}

/* ---- callbacks shared by every kind of task (inside asgi_loop_run: they only mark) ----------- */

void asgi_task_on_read_resume(void *user_data)
{
    asgi_task *t = user_data;
    t->read_paused = 0;
    if (t->c) asgi_task_enqueue(t);
}

void asgi_task_on_done(void *user_data, int result)
{
    asgi_task *t = user_data;
    t->done = 1;
    /* Negative with nothing sent: the library delivered a 500 (or a WebSocket's 403) already
     * (complete). Otherwise an HTTP response is unfinished: the client gets it cut short. */
    if (result < 0 && !t->complete) t->cut = 1;
    asgi_task_enqueue(t);
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
    h->warn_ms = server_options(s)->loop_block_warn_ms;
    /* server.c puts the fd in its epoll set (or gives up): its EV_ASGI events say when it is
     * readable, so asgi_host_run() never needs to poll() it. */
    h->ready_told = 1;
    if (h->fd < 0) {
        host_log(WSGI_LOG_ERROR, "cannot create the ASGI event loop: %s: %s", wsgi_strerror(h->fd),
                 wsgi_errmsg());
        free(h);
        return NULL;
    }
    /* Callbacks may then fire inside asgi_dispatch(): they only mark and queue, as in a turn, and
     * the exchange's handle is written (asgi_dispatch's out) before the first of them. */
    if (asgi_loop_set_eager(h->rt, 1) != WSGI_OK)
        host_log(WSGI_LOG_INFO, "ASGI apps start at the next loop turn: %s", wsgi_errmsg());
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

/* The server saw the loop's fd in its epoll events (EV_ASGI). From the first report on,
 * asgi_host_run() relies on them instead of polling the fd each iteration. */
void asgi_host_loop_ready(asgi_host *h)
{
    h->fd_ready = 1;
    h->ready_told = 1;
}

/* The loop's fd has events (the apps' sockets, a wakeup, a signal) without waiting. */
static int loop_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n != 0; /* an error: let the turn find out */
}

void asgi_host_run(asgi_host *h)
{
    int fd_ready = h->fd_ready;
    h->fd_ready = 0;
    if (fd_ready || asgi_loop_timeout(h->rt) == 0 || (!h->ready_told && loop_readable(h->fd))) {
        int rc = asgi_loop_run(h->rt);
        if (rc != WSGI_OK && rc != WSGI_ERR_PYTHON) /* WSGI_ERR_PYTHON: already logged */
            host_log(WSGI_LOG_ERROR, "asgi_loop_run: %s", wsgi_strerror(rc));
    }
    asgi_task *t;
    while ((t = h->q_head)) {
        h->q_head = t->q_next;
        if (!h->q_head) h->q_tail = NULL;
        t->queued = 0;
        if (t->c)
            t->ops->progress(t->c);
        else
            park(t);
    }
}

/* Blocking the loop: the app's code runs on the event loop thread (each request's first step
 * inside asgi_dispatch(), the rest in asgi_loop_run()), so an iteration of the server's loop that
 * takes long is an app that did not await (time.sleep, synchronous I/O): every connection of the
 * worker waited meanwhile. The server's loop reads the clock once per iteration anyway; one more
 * read after epoll_wait measures it (uvicorn has no such warning; asyncio's debug mode logs slow
 * callbacks, at a cost per callback). */
void asgi_host_iteration_begin(asgi_host *h, int64_t now_ms)
{
    h->iter_begin = now_ms;
}

void asgi_host_iteration_end(asgi_host *h, int64_t now_ms)
{
    if (!h->warn_ms || !h->iter_begin) return;
    int64_t took = now_ms - h->iter_begin;
    if (took > h->warn_ms)
        host_log(WSGI_LOG_WARNING,
                 "ASGI app %s blocked the event loop for %lld ms (--loop-block-warn-ms %lld): "
                 "every connection of worker %d waited; a handler or task is doing blocking work "
                 "(time.sleep, synchronous I/O) instead of awaiting it (run_in_executor)",
                 server_options(h->srv)->host.app_spec, (long long)took, (long long)h->warn_ms,
                 (int)getpid());
    h->iter_begin = 0;
}

void asgi_host_free(asgi_host *h)
{
    if (!h) return;
    /* Every connection is closed: what is left is detached. */
    asgi_task *t;
    while ((t = h->q_head)) {
        h->q_head = t->q_next;
        t->queued = 0;
        if (!t->c) park(t);
    }
    h->q_tail = NULL;
    while (h->detached)
        destroy(h->detached);
    free(h);
}
