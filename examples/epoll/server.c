/* The libwsgi-epoll event loop (see server.h). A connection is armed for one event at a time: its
 * epoll registration is kept level-triggered between events and an event nobody armed for is
 * dropped (arm()), which saves an epoll_ctl per request and also keeps a connection handed to an
 * app thread from being acted on behind its back (only the thread running the loop reads or
 * changes the arming). Timeouts live in FIFO lists (idle keep-alive, request, linger, and the
 * WebSocket ping, pong and close timers; TL_* in conn.h): every entry of a list has the same
 * timeout, so appending keeps each list sorted by deadline and expiry is O(1).
 *
 * Who runs the loop. With --threads 0 (and for ASGI apps) it is the worker's main thread, which
 * also calls the app. With --threads N (WSGI) a team of N + 1 threads takes turns (leader and
 * standby, see "the team" below): the thread running the loop (the leader) calls the app itself,
 * with no hand-off to another thread and back, as long as another thread (the standby) watches
 * it; when the standby sees the leader still inside the same app call at its next look, 1 to 8 ms
 * later (an app that blocks: a slow query, time.sleep, a slow upload), it takes the loop over, and
 * the old leader finishes its request as an app thread and reports through a mutex-protected
 * completion queue and an eventfd, as the pool threads of earlier versions did. So at most N
 * requests are in the app at once, the loop never waits for one, and a request that does not
 * block costs no thread switch at all. With every other thread in the app (no standby), the
 * leader queues requests instead of calling the app; the first thread back becomes the standby
 * and the leader runs them itself (run_pending). Everything the loop owns is in struct server (the
 * event batch included), so a new leader continues exactly where the old one stopped; a leader that
 * finds itself replaced when its app call returns unwinds without touching anything
 * (t_leader).
 *
 * While a WSGI app thread is inside the app, the loop writes the output of its response that has
 * waited about 1 ms (exchange.c batches small chunks; PEP 3333 forbids holding them until the
 * next): it looks at the connections lent to app threads every LATE_US while some may have output
 * waiting (late_scan). An ASGI app has no app threads: its event loop's fd sits in the same epoll
 * set, the loop is run once per iteration (asgi_host.c), and asgi_exchange.c and ws_conn.c serve
 * its connections (the functions under "for asgi_exchange.c and ws_conn.c" below are their way
 * back into the server). */
#include "server.h"
#include "conn.h"
#include "guard.h"
#include "host_log.h"
#include "metrics.h"
#include "reexec.h"
#include "host_signals.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { READY_NONE, READY_PUMP, READY_ADVANCE };

/* How long a closing connection may keep sending before we close anyway. */
#define LINGER_MS 2000
/* How long a WebSocket waits for the client's Close frame once ours is queued. */
#define WS_CLOSE_MS 5000
/* Out of descriptors with no connection to close: try accepting again after this long. */
#define ACCEPT_RETRY_MS 500

typedef struct ev_tag {
    ev_kind kind;
    size_t index;
} ev_tag;

typedef struct tlist {
    conn *head, *tail;
    int64_t timeout_ms;
} tlist;

struct server {
    const epoll_options *opt;
    wsgi_app *app;
    listener *ls;
    size_t n_ls;
    ev_tag *ls_tags;
    ev_tag wake_tag, sig_tag, asgi_tag, reload_tag;
    int epfd, wakefd, sigfd;
    int reload_fd; /* SIGHUP without a master: the booting bridge's ready pipe (reexec.h), or -1 */
    int reexec;    /* ... the bridge serves: drain, keep the listening sockets, then exec */
    int team;      /* WSGI with --threads N > 0: a team of threads runs the loop (see the top) */
    asgi_host *asgi; /* NULL: a WSGI app */
    tls_ctx *tls;    /* --certfile: every connection starts with a TLS handshake */
    /* Connections waiting for EPOLLIN whose input OpenSSL has already decrypted (arm()). */
    conn *tls_head, *tls_tail;

    pthread_mutex_t done_mu;
    conn *done_head, *done_tail;
    conn *ready_head, *ready_tail;
    conn *batch_head; /* run_ready's batch, taken from the ready list */
    conn *graveyard;
    conn *spare; /* closed connections kept with their buffers (conn_keep) */
    int n_spare; /* int: compared with CONN_SPARE, 0 under ASan (-Wtype-limits) */

    conn *all;
    size_t n_conns;
    size_t n_app; /* connections owned by app threads */
    /* With a team: the connections lent to app threads, whose waiting output the loop writes
     * (exchange_late_flush); late_on: some may have output waiting, so look every LATE_US. */
    conn *lent;
    atomic_int late_on;
    int64_t late_next; /* us */
    tlist lists[TL_COUNT];

    /* The current batch of events: the leader that replaces another continues it. */
    struct epoll_event evs[256];
    int ev_n, ev_i;

    /* The team (see the top). lstate: the leader's app call, (generation << 1) | 1 while it is in
     * the app, (generation << 1) when not; the standby takes the loop over by changing it. */
    _Atomic uint64_t lstate;
    uint64_t app_gen;
    pthread_mutex_t tmu; /* the fields below */
    pthread_cond_t spare_cv, standby_cv, main_cv;
    int has_leader, finished;
    /* Changed under tmu; read without it on the request path (to_app, run_pending). It goes from
     * 1 to 0 only while the leader is inside an app call (a takeover) or when the team stops. */
    atomic_int has_standby;
    atomic_int n_pend; /* the length of the pend queue below */
    atomic_int standby_sleeping, stopping;
    conn *pend_head, *pend_tail; /* requests waiting for a standby (run_pending) */
    pthread_t *threads;
    unsigned n_threads;

    atomic_int draining;
    int quit;
    int64_t grace_deadline;
    int accept_paused;
    int64_t accept_resume_at; /* accept_paused: listen again at this time (or when a conn closes) */
    /* Every app thread is busy (a request had to wait for one): a shared listening socket is left
     * to the other workers until a thread is free again (listen.c: fair spreading). */
    int saturated;
    int64_t asgi_scan_at; /* --timeout: the next look at ASGI requests (asgi_timeouts) */
    int64_t last_emfile_log;
    int64_t last_limit_log; /* --limit-concurrency's warning, at most every 10 s */
    /* Idle trim (loop()): events came since the heap was last given back, and when the last did. */
    int trim_due;
    int64_t last_event;
};

/* ---- accessors used off the loop thread ----------------------------------------------------- */

wsgi_app *server_app(const server *s)
{
    return s->app;
}
const epoll_options *server_options(const server *s)
{
    return s->opt;
}
int server_draining(const server *s)
{
    return atomic_load_explicit(&((server *)s)->draining, memory_order_relaxed);
}
int server_inline(const server *s)
{
    return !s->team;
}
int server_timeout_ms(const server *s)
{
    return (int)s->opt->timeout_request * 1000;
}
/* Whether this thread runs the loop. A leader replaced while it was in the app returns from
 * every function of the loop without touching anything once its call to the app is over. */
static __thread int t_leader;
/* The leader's state word while this thread, as leader, is in an app call (to_app). */
static __thread uint64_t t_busy;

void server_late_wake(server *s)
{
    /* Seen by the loop before it stops looking (late_scan): no wake-up needed. */
    if (atomic_load(&s->late_on) || atomic_exchange(&s->late_on, 1)) return;
    /* The loop's own thread, in an app call nobody has taken over: whoever runs the loop next
     * (this thread, or a standby that takes over from now on) reads late_on before waiting. */
    if (t_busy && atomic_load(&s->lstate) == t_busy) return;
    uint64_t one = 1;
    ssize_t w = write(s->wakefd, &one, sizeof(one));
    (void)w;
}
uint64_t server_max_body(const server *s)
{
    return s->opt->max_body_size;
}
size_t server_max_header(const server *s)
{
    return s->opt->max_header_size;
}
size_t server_max_headers(const server *s)
{
    return s->opt->max_headers;
}
int server_access_log(const server *s)
{
    return s->opt->host.access_log;
}
asgi_host *server_asgi(const server *s)
{
    return s->asgi;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t server_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- timeout lists ---------------------------------------------------------------------- */

static void tl_remove(server *s, conn *c)
{
    if (c->t_list < 0) return;
    tlist *l = &s->lists[c->t_list];
    if (c->t_prev)
        c->t_prev->t_next = c->t_next;
    else
        l->head = c->t_next;
    if (c->t_next)
        c->t_next->t_prev = c->t_prev;
    else
        l->tail = c->t_prev;
    c->t_prev = c->t_next = NULL;
    c->t_list = -1;
}

static void tl_add(server *s, conn *c, int list)
{
    tl_remove(s, c);
    tlist *l = &s->lists[list];
    c->deadline = now_ms() + l->timeout_ms;
    c->t_list = list;
    c->t_prev = l->tail;
    c->t_next = NULL;
    if (l->tail)
        l->tail->t_next = c;
    else
        l->head = c;
    l->tail = c;
}

/* ---- connection life cycle --------------------------------------------------------------- */

static void tls_unqueue(server *s, conn *c)
{
    if (!c->tls_queued) return;
    c->tls_queued = 0;
    if (c->tls_prev)
        c->tls_prev->tls_next = c->tls_next;
    else
        s->tls_head = c->tls_next;
    if (c->tls_next)
        c->tls_next->tls_prev = c->tls_prev;
    else
        s->tls_tail = c->tls_prev;
    c->tls_prev = c->tls_next = NULL;
}

/* Arm the connection for @events: its next event is wanted (not before; see conn.h's armed and
 * disarmed). Armed with the same events already: nothing to change (saves an epoll_ctl, e.g. a
 * keep-alive connection armed for reading again after its response, a WebSocket armed for reading
 * when its read drained the socket). A fired event not handled yet is still delivered.
 *
 * Kept, not one-shot. The registration stays level-triggered across its events (no epoll_ctl per
 * request to re-arm it); an event that arrives while the connection is logically disarmed (its last
 * event was handled and nothing armed it again) is dropped and the registration disabled then
 * (on_event), which is what EPOLLONESHOT would have done. That holds with a team too (WSGI,
 * --threads N): a connection lent to an app thread was disarmed when the loop handed it over, and
 * only the thread running the loop (one at a time; the leader hand-over orders their accesses)
 * reads or writes armed and disarmed, so the next leader drops the event (one epoll_ctl, only
 * when the client sends or closes while its request is in the app) instead of acting on it.
 * Arming for no events at all stays one-shot: a kept registration would still report EPOLLHUP and
 * EPOLLERR over and over.
 *
 * TLS: input OpenSSL has already decrypted (a read that filled its buffer) does not make the
 * socket readable; such a connection goes on the TLS list instead, where the loop hands it the
 * events as if epoll had reported them (run_tls_pending). */
static void arm(server *s, conn *c, unsigned events)
{
    if ((events & EPOLLIN) && conn_pending(c)) {
        c->tls_events = events & (EPOLLIN | EPOLLOUT); /* as epoll would report them */
        c->disarmed = 1; /* the socket's own events are not wanted meanwhile */
        if (c->tls_queued) return;
        c->tls_queued = 1;
        c->tls_next = NULL;
        c->tls_prev = s->tls_tail;
        if (s->tls_tail)
            s->tls_tail->tls_next = c;
        else
            s->tls_head = c;
        s->tls_tail = c;
        return;
    }
    tls_unqueue(s, c); /* armed in epoll now: an earlier synthesized event is out of date */
    if (!events) events |= EPOLLONESHOT;
    c->disarmed = 0;
    if (c->in_epoll && c->armed == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(s->epfd, c->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        host_log(WSGI_LOG_ERROR, "epoll_ctl: %s", strerror(errno));
        c->armed = 0;
        c->disarmed = 1;
        return;
    }
    c->in_epoll = 1;
    c->armed = events;
}

/* An event arrived for a kept (not one-shot) registration that nobody armed again after its last
 * event: make it one-shot for no events (only an EPOLLHUP / EPOLLERR can fire it once more, and is
 * dropped too), as EPOLLONESHOT would have left it. */
static void disarm_kept(server *s, conn *c)
{
    struct epoll_event ev = {.events = EPOLLONESHOT, .data.ptr = c};
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        host_log(WSGI_LOG_ERROR, "epoll_ctl: %s", strerror(errno));
        return;
    }
    c->armed = EPOLLONESHOT;
}

static void listeners_enable(server *s, int on)
{
    for (size_t k = 0; k < s->n_ls; k++) {
        if (s->ls[k].fd < 0) continue;
        if (on) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->ls_tags[k]};
            if (s->ls[k].shared) ev.events |= EPOLLEXCLUSIVE;
            epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->ls[k].fd, &ev);
        } else {
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->ls[k].fd, NULL);
        }
    }
}

static void conn_close(server *s, conn *c)
{
    if (c->state == CONN_CLOSED) return;
    if (c->ax) asgi_exchange_drop(c);
    if (c->ws) ws_conn_drop(c);
    tl_remove(s, c);
    tls_unqueue(s, c);
    conn_io_close(c); /* TLS: close_notify (best effort), then free the TLS state */
    /* Out of the epoll set first: close() removes the socket only when no other fd refers to it,
     * and a forked child (an app's fork() before its exec, the SIGHUP bridge) may hold a copy,
     * which would keep delivering events for this connection after it is freed. */
    if (c->in_epoll) epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->in_epoll = 0;
    close(c->fd);
    c->fd = -1;
    c->state = CONN_CLOSED;
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        s->all = c->all_next;
    if (c->all_next) c->all_next->all_prev = c->all_prev;
    s->n_conns--;
    metrics_conn_open(-1);
    /* Events of this batch may still point at it: free after the batch. */
    c->q_next = s->graveyard;
    s->graveyard = c;
    if (s->accept_paused && !s->draining) {
        s->accept_paused = 0;
        listeners_enable(s, 1);
    }
}

static void conn_free(conn *c)
{
    conn_front_free(c);
    free(c->in);
    free(c->hdrs);
    free(c->hdr_ptrs);
    conn_access_free(c);
    free(c->outq);
    free(c->scratch);
    free(c);
}

/* Connection churn: a gateway such as lighttpd opens a connection per request, thousands a
 * second. Up to CONN_SPARE closed connections keep their buffers (the input buffer, the output
 * queue and scratch, the header arrays, the SCGI parser's storage) for the next ones: eight
 * allocations and frees fewer per connection. They go when the worker falls idle (idle_trim) or
 * stops. Not under AddressSanitizer, which must see a closed connection used after its free. */
#if defined(__SANITIZE_ADDRESS__)
#define CONN_SPARE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONN_SPARE 0
#endif
#endif
#ifndef CONN_SPARE
#define CONN_SPARE 32
#endif

static void conn_keep(server *s, conn *c)
{
    conn_access_free(c);
    if (c->in_cap != IN_BUF_SIZE) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    if (c->sc_cap > SCRATCH_KEEP) {
        free(c->scratch);
        c->scratch = NULL;
        c->sc_cap = 0;
    }
    conn_front_recycle(c);
    c->q_next = s->spare;
    s->spare = c;
    s->n_spare++;
    s->trim_due = 1; /* freed at the next idle trim, also when a timer closed it */
}

/* A zeroed connection, as calloc gives, with a spare one's buffers if there is one. */
static conn *conn_new(server *s)
{
    conn *c = s->spare;
    if (!c) return calloc(1, sizeof(*c));
    s->spare = c->q_next;
    s->n_spare--;
    scgi_front *sf = c->sf;
    char *in = c->in, *scratch = c->scratch;
    size_t in_cap = c->in_cap, sc_cap = c->sc_cap, hdrs_cap = c->hdrs_cap;
    size_t hdr_ptrs_cap = c->hdr_ptrs_cap, oq_cap = c->oq_cap;
    hdr_span *hdrs = c->hdrs;
    wsgi_header *hdr_ptrs = c->hdr_ptrs;
    out_item *outq = c->outq;
    memset(c, 0, sizeof(*c));
    c->sf = sf;
    c->in = in, c->in_cap = in_cap;
    c->scratch = scratch, c->sc_cap = sc_cap;
    c->hdrs = hdrs, c->hdrs_cap = hdrs_cap;
    c->hdr_ptrs = hdr_ptrs, c->hdr_ptrs_cap = hdr_ptrs_cap;
    c->outq = outq, c->oq_cap = oq_cap;
    return c;
}

static void spare_free(server *s)
{
    while (s->spare) {
        conn *c = s->spare;
        s->spare = c->q_next;
        conn_free(c);
    }
    s->n_spare = 0;
}

static void bury(server *s)
{
    while (s->graveyard) {
        conn *c = s->graveyard;
        s->graveyard = c->q_next;
        if (s->n_spare < CONN_SPARE && !s->draining)
            conn_keep(s, c);
        else
            conn_free(c);
    }
}

/* A lingering connection reads (and discards); with TLS it may also wait to write the rest of its
 * close_notify, before the FIN (conn_shutdown_wr). */
static unsigned linger_events(const conn *c)
{
    return c->tls_shut_wait ? EPOLLIN | EPOLLOUT : EPOLLIN;
}

/* Close with a reset (and, with TLS, without close_notify): the client reads what was sent, then
 * ECONNRESET instead of an end of file. On a Unix socket the client sees an end of file. */
static void conn_reset(server *s, conn *c)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (c->ssl) c->tls_dead = 1;
    conn_close(s, c);
}

/* Close after the response: shut the write side and discard what the client still sends, so
 * that closing with unread input does not reset the connection before the client has read it. */
static void close_graceful(server *s, conn *c)
{
    /* A body that ends with the connection (HTTP/1.0 or SCGI without Content-Length) which the
     * app failed to finish: a FIN, or TLS's close_notify, would tell the client (or lighttpd) it
     * is complete. */
    if (c->cut && c->framing == FRAME_CLOSE) {
        host_log(WSGI_LOG_DEBUG, "response to %s cut: resetting the connection",
                 c->peer[0] ? c->peer : "unix");
        conn_reset(s, c);
        return;
    }
    /* SCGI / uwsgi: lighttpd sends one request per connection and nothing after it; once all of
     * it is read, closing cannot reset the connection under the response (no unread input). */
    if (c->proto != CPROTO_HTTP && c->msg_done && c->in_parsed == c->in_len) {
        conn_close(s, c);
        return;
    }
    if (conn_shutdown_wr(c) < 0) {
        conn_close(s, c);
        return;
    }
    c->state = CONN_LINGER;
    tl_add(s, c, TL_LINGER);
    arm(s, c, linger_events(c));
}

/* Append to one of the server's queues (linked through q_next). */
static void fifo_push(conn **head, conn **tail, conn *c)
{
    c->q_next = NULL;
    if (*tail)
        (*tail)->q_next = c;
    else
        *head = c;
    *tail = c;
}

static void ready_push(server *s, conn *c, int action)
{
    c->ready_action = action;
    fifo_push(&s->ready_head, &s->ready_tail, c);
}

static void on_pump_result(server *s, conn *c, int r);

/* Make the loop's epoll_wait return (its eventfd; on_wake). */
static void wake_loop(server *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->wakefd, &one, sizeof(one));
    (void)w; /* the counter cannot overflow in practice; a failed wake-up is retried by the next */
}

/* An app thread (not the leader) is done with the connection: report to the loop. */
static void report_done(server *s, conn *c, int r)
{
    c->pump_result = r;
    pthread_mutex_lock(&s->done_mu);
    fifo_push(&s->done_head, &s->done_tail, c);
    pthread_mutex_unlock(&s->done_mu);
    wake_loop(s);
}

static int run_exchange(conn *c)
{
    if (c->abort_requested) return exchange_abort(c);
    /* --timeout watches each call into the app (guard.c). */
    guard_call_begin(c);
    int r = exchange_run(c);
    guard_call_end();
    return r;
}

static void lend(server *s, conn *c)
{
    if (c->lent) return;
    c->lent = 1;
    c->l_prev = NULL;
    c->l_next = s->lent;
    if (s->lent) s->lent->l_prev = c;
    s->lent = c;
}

static void unlend(server *s, conn *c)
{
    if (!c->lent) return;
    c->lent = 0;
    if (c->l_prev)
        c->l_prev->l_next = c->l_next;
    else
        s->lent = c->l_next;
    if (c->l_next) c->l_next->l_prev = c->l_prev;
    c->l_prev = c->l_next = NULL;
}

/* Write what waits on connections whose app thread is in the app; stop looking when nothing
 * does (an app thread whose output begins to wait then wakes the loop: server_late_wake). */
static void late_scan(server *s)
{
    int64_t now = server_now_us();
    s->late_next = now + LATE_US;
    int waiting = 0;
    for (conn *c = s->lent; c; c = c->l_next)
        waiting |= exchange_late_flush(c, now);
    if (waiting) return;
    atomic_store(&s->late_on, 0);
    for (conn *c = s->lent; c; c = c->l_next) {
        if (atomic_load(&c->wait_since)) {
            atomic_store(&s->late_on, 1);
            break;
        }
    }
}

/* Wake the standby if it stopped watching (the worker was idle). */
static void standby_wake(server *s)
{
    pthread_mutex_lock(&s->tmu);
    atomic_store(&s->standby_sleeping, 0);
    pthread_cond_signal(&s->standby_cv);
    pthread_mutex_unlock(&s->tmu);
}

/* Saturation (struct server): stop taking connections from a shared listening socket while a
 * request waits for an app thread, so that an idle worker gets them; take them again once the
 * waiting requests have a thread. Per-worker sockets (--reuse-port) have nobody else to take
 * their connections: they stay enabled. */
static void saturation_begin(server *s)
{
    if (s->saturated || s->draining || s->accept_paused) return;
    int any = 0;
    for (size_t k = 0; k < s->n_ls; k++)
        any |= s->ls[k].fd >= 0 && s->ls[k].shared;
    if (!any) return;
    s->saturated = 1;
    for (size_t k = 0; k < s->n_ls; k++)
        if (s->ls[k].fd >= 0 && s->ls[k].shared)
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->ls[k].fd, NULL);
}

static void saturation_check(server *s)
{
    if (!s->saturated) return;
    pthread_mutex_lock(&s->tmu);
    int waiting = s->pend_head != NULL;
    pthread_mutex_unlock(&s->tmu);
    if (waiting) return;
    s->saturated = 0;
    if (s->draining || s->accept_paused) return;
    for (size_t k = 0; k < s->n_ls; k++) {
        if (s->ls[k].fd < 0 || !s->ls[k].shared) continue;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &s->ls_tags[k]};
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->ls[k].fd, &ev);
    }
}

/* The leader calls the app of a lent connection itself, the standby watching (team). Returns 0 if
 * the standby took the loop over meanwhile: this thread is an app thread now and has reported. */
static int run_here(server *s, conn *c)
{
    uint64_t busy = (++s->app_gen << 1) | 1;
    atomic_store(&s->lstate, busy); /* publishes the loop's state to the standby */
    if (atomic_load(&s->standby_sleeping)) standby_wake(s);
    t_busy = busy;
    int r = run_exchange(c);
    t_busy = 0;
    if (atomic_compare_exchange_strong(&s->lstate, &busy, busy - 1)) {
        on_pump_result(s, c, r); /* still the leader */
        return 1;
    }
    /* The standby took the loop over while the app ran: this is an app thread now. */
    t_leader = 0;
    report_done(s, c, r);
    return 0;
}

/* Hand the connection to the app: run it here, or (team, no standby free: every other thread is
 * in the app) queue it for the leader to run once a thread back from the app watches it as the
 * standby (run_pending). */
static void to_app(server *s, conn *c)
{
    tl_remove(s, c);
    tls_unqueue(s, c); /* the loop must not touch it while the app thread has it */
    if (c->state != CONN_APP) {
        c->state = CONN_APP;
        s->n_app++;
    }
    if (!s->team) {
        on_pump_result(s, c, run_exchange(c));
        return;
    }
    lend(s, c);
    if (!atomic_load(&s->has_standby)) {
        pthread_mutex_lock(&s->tmu);
        if (!s->has_standby) {
            /* Nobody could take the loop over if the app blocked: every other thread is in the
             * app. */
            fifo_push(&s->pend_head, &s->pend_tail, c);
            atomic_fetch_add(&s->n_pend, 1);
            pthread_cond_signal(&s->spare_cv);
            pthread_mutex_unlock(&s->tmu);
            saturation_begin(s);
            return;
        }
        pthread_mutex_unlock(&s->tmu);
    }
    run_here(s, c);
}

/* Requests queued while the leader had no standby (to_app), run by the leader itself once a
 * standby watches it again, oldest first, as new ones are. (They used to go to the first thread
 * back from the app, before it would become the standby: under steady load the queue then never
 * emptied, the leader kept queueing every request and the threads took turns at the GIL; Flask at
 * 64 connections cost 339 us of CPU per request against 177 with --threads 0, from the first app
 * call that took over a millisecond on.) Returns 0 if this thread is no longer the leader. */
static int run_pending(server *s)
{
    while (atomic_load(&s->n_pend)) {
        pthread_mutex_lock(&s->tmu);
        conn *c = s->has_standby ? s->pend_head : NULL;
        if (c) {
            s->pend_head = c->q_next;
            if (!s->pend_head) s->pend_tail = NULL;
            c->q_next = NULL;
            atomic_fetch_sub(&s->n_pend, 1);
        }
        pthread_mutex_unlock(&s->tmu);
        if (!c) break;
        if (!run_here(s, c)) return 0;
    }
    saturation_check(s);
    return 1;
}

/* Whether queued requests wait for a leader that has a standby now: run_pending would run them,
 * so the loop must not sleep (loop()). The wake-up a thread sends as it becomes the standby with
 * requests queued (team_main) is no sure sign: on_wake may read it together with an earlier one
 * in the very iteration whose run_pending looked before that thread was the standby. */
static int pending_runnable(server *s)
{
    return atomic_load(&s->n_pend) && atomic_load(&s->has_standby);
}

/* The loop wants the app thread to drop the response (client gone or too slow). */
static void request_abort(server *s, conn *c)
{
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->in_epoll = 0;
    c->armed = 0;
    c->disarmed = 1;
    c->abort_requested = 1;
    to_app(s, c);
}

/* A response generated by the server itself (4xx); the connection closes after it. */
/* An error reply is queued: send it, then close; wait for EPOLLOUT while the socket is full. */
static void flush_then_close(server *s, conn *c)
{
    int f = out_flush(c);
    if (f == OUT_DONE)
        close_graceful(s, c);
    else if (f == OUT_AGAIN)
        arm(s, c, EPOLLOUT);
    else
        conn_close(s, c);
}

/* The server's own answer to a request the app never gets (or has not answered yet): counted
 * as rejected and access-logged like any response (gunicorn logs these too). */
static void reply_error(server *s, conn *c, int status)
{
    out_clear(c);
    conn_queue_status(c, status);
    /* Not when the app has the request (a WebSocket it did not accept in time, a body that failed
     * under an ASGI app): the observer counts that one. */
    if (!c->obs_app) metrics_request_rejected(status);
    conn_access_log(c);
    c->state = CONN_ERROR;
    tl_add(s, c, TL_REQUEST);
    flush_then_close(s, c);
}

static void next_request(server *s, conn *c)
{
    conn_request_begin(c);
    if (c->in_len > 0) {
        /* Pipelined: the next request is already (partly) here. Parsed from the ready list (not
         * here: with --threads 0 that would recurse once per pipelined request). Until then it is
         * in no timeout list and not armed, so nothing else can close it: an exchange may have
         * left it armed (ASGI watches for the client going away, EPOLLRDHUP), and a reset then
         * reported before the ready list runs would close it through the link that queues it
         * (dropping the connections behind it, and freeing it while queued). Disarmed, such an
         * event is dropped (on_event); the ready list arms it again. */
        c->state = CONN_HEAD;
        c->disarmed = 1;
        tls_unqueue(s, c);
        ready_push(s, c, READY_ADVANCE);
    } else if (s->draining) {
        /* Idle now (after a drained body): closed like the idle ones when shutdown began. */
        conn_close(s, c);
    } else {
        c->state = CONN_IDLE;
        tl_add(s, c, TL_IDLE);
        arm(s, c, EPOLLIN);
    }
}

/* Parse and drop what is buffered of an unread body; the next request follows it. */
static void drain(server *s, conn *c)
{
    int r = conn_parse_body(c);
    if (r == PARSE_DONE) {
        next_request(s, c);
        return;
    }
    if (r == PARSE_ERROR || c->body_received > c->drain_limit) {
        conn_close(s, c);
        return;
    }
    arm(s, c, EPOLLIN);
}

static void start_drain(server *s, conn *c)
{
    c->body_mode = BODY_DISCARD;
    c->drain_limit = c->body_received + DRAIN_MAX;
    c->state = CONN_DRAIN;
    tl_add(s, c, TL_REQUEST);
    drain(s, c);
}

/* The response is on the wire: the next request, the rest of an unread body, or close. */
static void response_done(server *s, conn *c)
{
    guard_request_done(); /* --max-requests */
    c->state = CONN_HEAD; /* loop-owned again */
    if (!c->keep_alive || s->draining)
        close_graceful(s, c);
    else if (!c->msg_done)
        start_drain(s, c);
    else
        next_request(s, c);
}

static void on_pump_result(server *s, conn *c, int r)
{
    if (r == PUMP_YIELD) {
        ready_push(s, c, READY_PUMP);
        return;
    }
    s->n_app--;
    unlend(s, c);
    switch (r) {
    case PUMP_WRITE:
        c->state = CONN_WRITE;
        tl_add(s, c, TL_REQUEST);
        arm(s, c, EPOLLOUT);
        break;
    case PUMP_DONE: response_done(s, c); break;
    default: conn_close(s, c); break;
    }
}

/* The request is ready for the app: an app thread (WSGI) or the loop's ASGI app. */
static void start_app(server *s, conn *c)
{
    if (s->asgi) {
        c->asgi_since_ms = guard_on() ? now_ms() : 0; /* --timeout: asgi_timeouts() */
        asgi_exchange_start(c);
    } else {
        to_app(s, c);
    }
}

/* --timeout for ASGI requests (guard.c): every 200 ms, cancel the tasks of requests in the app
 * for too long. Returns the time to the next look (-1: off). */
static int asgi_timeouts(server *s)
{
    if (!s->asgi || !guard_on()) return -1;
    int64_t now = now_ms();
    if (now < s->asgi_scan_at) return (int)(s->asgi_scan_at - now);
    s->asgi_scan_at = now + 200;
    for (conn *c = s->all; c; c = c->all_next)
        if (c->state == CONN_ASGI && c->ax && c->asgi_since_ms) guard_asgi_check(c, now);
    return 200;
}

/* ---- for asgi_exchange.c and ws_conn.c ------------------------------------------------------ */

void server_conn_arm(conn *c, unsigned events)
{
    arm(c->srv, c, events);
}
void server_conn_timer(conn *c, int list)
{
    if (list >= 0)
        tl_add(c->srv, c, list);
    else
        tl_remove(c->srv, c);
}
void server_conn_close(conn *c)
{
    conn_close(c->srv, c);
}
void server_conn_reply_error(conn *c, int status)
{
    reply_error(c->srv, c, status);
}
void server_conn_done(conn *c)
{
    response_done(c->srv, c);
}

/* --limit-concurrency N (uvicorn's option): a request that arrives while the worker has more than N
 * connections open (this one included) and ASGI apps still running after their response is
 * answered 503 and its connection closed, so that an overloaded worker sheds load early instead of
 * queueing it. uvicorn refuses from the N-th connection on (its count includes the request's own);
 * here N connections are served. Logged once per 10 s at most. */
static int over_concurrency_limit(server *s)
{
    unsigned limit = s->opt->limit_concurrency;
    if (!limit) return 0;
    size_t load = s->n_conns + (s->asgi ? asgi_host_busy(s->asgi) : 0);
    if (load <= limit) return 0;
    int64_t now = now_ms();
    if (now - s->last_limit_log > 10000) {
        host_log(WSGI_LOG_WARNING,
                 "--limit-concurrency %u exceeded (%zu connections and running ASGI tasks): 503",
                 limit, load);
        s->last_limit_log = now;
    }
    return 1;
}

/* Parse what is buffered and move the request on. */
static void advance(server *s, conn *c)
{
    if (c->state == CONN_IDLE || c->state == CONN_HEAD) {
        int r = conn_parse_head(c);
        if (r == PARSE_ERROR) {
            reply_error(s, c, c->err_status ? c->err_status : 400);
            return;
        }
        if (r == PARSE_MORE) {
            arm(s, c, EPOLLIN);
            return;
        }
        conn_access_prepare(c); /* observe.c: the arrival time, the access log's record */
        if (s->draining) c->keep_alive = 0;
        if (over_concurrency_limit(s)) {
            reply_error(s, c, 503);
            return;
        }
        if (conn_upgrade_websocket(c)) {
            if (s->asgi) {
                ws_conn_start(c);
            } else {
                host_log(WSGI_LOG_DEBUG, "WebSocket upgrade from %s: the app is WSGI (400)",
                         c->peer[0] ? c->peer : "unix");
                reply_error(s, c, 400);
            }
            return;
        }
        int st = conn_choose_body(c);
        if (st) {
            reply_error(s, c, st);
            return;
        }
        if (c->body_mode == BODY_STREAM) {
            start_app(s, c);
            return;
        }
        if (c->body_mode == BODY_BUFFERED) {
            if (conn_in_reserve(c, c->in_parsed + (size_t)c->content_length + 1) < 0) {
                reply_error(s, c, 503);
                return;
            }
            if (c->expect_continue && c->in_len - c->in_parsed <= (size_t)c->content_length) {
                c->continue_sent = 1;
                conn_queue_status(c, 100);
            }
        }
        c->state = CONN_BODY;
    }
    if (c->state == CONN_BODY) {
        int r = conn_parse_body(c);
        if (r == PARSE_ERROR) {
            reply_error(s, c, c->err_status ? c->err_status : 400);
            return;
        }
        if (r == PARSE_DONE && !out_pending(c)) {
            start_app(s, c);
            return;
        }
        unsigned ev = r == PARSE_DONE ? 0 : EPOLLIN;
        if (out_pending(c)) {
            int f = out_flush(c);
            if (f == OUT_ERR) {
                conn_close(s, c);
                return;
            }
            if (f == OUT_AGAIN)
                ev |= EPOLLOUT;
            else if (r == PARSE_DONE) {
                start_app(s, c);
                return;
            }
        }
        arm(s, c, ev);
    }
}

static void on_readable(server *s, conn *c)
{
    size_t limit = s->opt->max_header_size + 1024;
    if (c->state == CONN_BODY) limit = c->in_cap; /* reserved for the whole body in advance() */
    if (c->state == CONN_DRAIN) {
        limit = c->in_cap;
        if (c->in_parsed == c->in_len) c->in_parsed = c->in_len = 0;
        if (conn_in_reserve(c, IN_BUF_SIZE) < 0) {
            conn_close(s, c);
            return;
        }
    }
    if (c->in_len == c->in_cap) {
        if (c->in_cap >= limit || conn_in_reserve(c, c->in_cap ? c->in_cap * 2 : IN_BUF_SIZE)) {
            reply_error(s, c, c->state == CONN_BODY ? 503 : conn_head_too_large(c));
            return;
        }
    }
    ssize_t n = conn_recv(c, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) {
        /* The client went away (maybe half-way through a request). A gateway that half-closed
         * inside an SCGI / uwsgi head can still read why it failed. */
        int st = c->state == CONN_HEAD ? conn_head_eof(c) : 0;
        if (c->state == CONN_BODY)
            /* As conn_body_read() says it for a streamed body: nothing reached the app. */
            host_log(WSGI_LOG_DEBUG,
                     "client %s closed the connection in the middle of a body (%llu of %lld "
                     "bytes): the request is dropped",
                     c->peer[0] ? c->peer : "unix", (unsigned long long)c->body_received,
                     (long long)c->content_length);
        if (st)
            reply_error(s, c, st);
        else
            conn_close(s, c);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            arm(s, c, EPOLLIN | (out_pending(c) ? EPOLLOUT : 0));
        else
            conn_close(s, c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == CONN_DRAIN) {
        drain(s, c);
        return;
    }
    if (c->state == CONN_IDLE) {
        /* The clock for the whole head starts with its first byte. */
        c->state = CONN_HEAD;
        tl_add(s, c, TL_REQUEST);
    }
    advance(s, c);
}

/* What arrives is discarded: with TLS, after our close_notify, the raw socket is read (nothing of
 * it needs decrypting). */
static void on_linger_readable(server *s, conn *c)
{
    char buf[4096];
    for (int k = 0; k < 16; k++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            arm(s, c, linger_events(c));
            return;
        }
        conn_close(s, c);
        return;
    }
    arm(s, c, linger_events(c));
}

static void on_linger_event(server *s, conn *c, unsigned events)
{
    if (c->tls_shut_wait && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) &&
        conn_shutdown_wr(c) < 0) {
        conn_close(s, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_linger_readable(s, c);
    else
        arm(s, c, linger_events(c));
}

/* The TLS handshake (CONN_TLS): on to the first request once it is done. */
static void tls_step(server *s, conn *c)
{
    unsigned want = 0;
    int r = tls_conn_handshake(c, &want);
    if (r < 0) {
        conn_close(s, c);
    } else if (r == 0) {
        arm(s, c, want);
    } else {
        c->state = CONN_IDLE;
        tl_add(s, c, TL_REQUEST); /* the first request's own clock, as for a plain connection */
        arm(s, c, EPOLLIN);
    }
}

/* An event for the connection (from epoll, or synthesized for TLS input already decrypted): it
 * is disarmed now (see arm()). */
static void on_conn_event(server *s, conn *c, unsigned events)
{
    switch (c->state) {
    case CONN_TLS: tls_step(s, c); break;
    case CONN_IDLE:
    case CONN_HEAD:
    case CONN_BODY:
        if (events & EPOLLOUT) {
            int f = out_flush(c);
            if (f == OUT_ERR) {
                conn_close(s, c);
                return;
            }
            if (!(events & EPOLLIN)) {
                /* Only the 100 Continue was waiting: re-evaluate (it may be all we needed). */
                advance(s, c);
                return;
            }
        }
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(s, c);
        else
            arm(s, c, EPOLLIN);
        break;
    case CONN_WRITE: {
        if (events & EPOLLERR) {
            request_abort(s, c);
            return;
        }
        int f = out_flush(c);
        if (f == OUT_ERR)
            request_abort(s, c);
        else if (f == OUT_AGAIN) {
            tl_add(s, c, TL_REQUEST); /* progress (or not): the clock restarts on each wake-up */
            arm(s, c, EPOLLOUT);
        } else
            to_app(s, c);
        break;
    }
    case CONN_ERROR: flush_then_close(s, c); break;
    case CONN_DRAIN: on_readable(s, c); break;
    case CONN_LINGER: on_linger_event(s, c, events); break;
    case CONN_ASGI: asgi_exchange_event(c, events); break;
    case CONN_WS: ws_conn_event(c, events); break;
    case CONN_APP:
    case CONN_CLOSED: break; /* stale event */
    }
}

static void on_timeout(server *s, conn *c)
{
    switch (c->state) {
    case CONN_TLS:
        host_log(WSGI_LOG_DEBUG, "TLS handshake with %s timed out", c->peer[0] ? c->peer : "unix");
        conn_close(s, c);
        break;
    case CONN_IDLE:
    case CONN_DRAIN:
    case CONN_LINGER:
    case CONN_ERROR: conn_close(s, c); break;
    case CONN_HEAD:
        if (c->in_len > 0) {
            host_log(WSGI_LOG_DEBUG, "request head timed out (%s)", c->peer);
            reply_error(s, c, 408);
        } else {
            conn_close(s, c);
        }
        break;
    case CONN_BODY: reply_error(s, c, 408); break;
    case CONN_WRITE:
        host_log(WSGI_LOG_DEBUG, "client %s stopped reading: dropping the response", c->peer);
        request_abort(s, c);
        break;
    case CONN_ASGI: asgi_exchange_timeout(c); break;
    case CONN_WS: ws_conn_timeout(c); break;
    case CONN_APP:
    case CONN_CLOSED: break;
    }
}

/* An IPv4 address in dotted decimal, as inet_ntop() writes it (out: >= 16 bytes). */
static void ipv4_text(const struct in_addr *in, char *out)
{
    const unsigned char *b = (const unsigned char *)&in->s_addr;
    for (int k = 0; k < 4; k++) {
        unsigned v = b[k];
        if (v >= 100) *out++ = (char)('0' + v / 100);
        if (v >= 10) *out++ = (char)('0' + v / 10 % 10);
        *out++ = (char)('0' + v % 10);
        *out++ = k < 3 ? '.' : '\0';
    }
}

static void on_accept(server *s, listener *l)
{
    for (int k = 0; k < 64; k++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the listener stays readable, so stop accepting until a
                 * connection closes or, if none does, for a little while. */
                int64_t now = now_ms();
                if (now - s->last_emfile_log > 10000) {
                    host_log(WSGI_LOG_WARNING, "accept: %s: pausing new connections",
                             strerror(errno));
                    s->last_emfile_log = now;
                }
                s->accept_paused = 1;
                s->accept_resume_at = now + ACCEPT_RETRY_MS;
                listeners_enable(s, 0);
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                host_log(WSGI_LOG_ERROR, "accept: %s", strerror(errno));
            }
            return;
        }
        conn *c = conn_new(s);
        if (!c) {
            close(fd);
            continue;
        }
        c->kind = EV_CONN;
        c->srv = s;
        c->lst = l;
        c->fd = fd;
        c->t_list = -1;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            ipv4_text(&a->sin_addr, c->peer); /* glibc's inet_ntop formats with sprintf */
            c->peer_port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, c->peer, sizeof(c->peer));
            c->peer_port = ntohs(a->sin6_port);
        }
        /* libwsgi-scgi: an SCGI / uwsgi response is one write and a close, which Nagle never
         * delays; TCP_NODELAY is set only if the connection turns out to speak HTTP. */
        if (!l->is_unix && !s->opt->scgi_accept) conn_set_nodelay(c);
        conn_request_begin(c);
        c->all_next = s->all;
        if (s->all) s->all->all_prev = c;
        s->all = c;
        s->n_conns++;
        metrics_conn_open(1);
        /* A new connection gets the request timeout for its first request (not keep-alive's),
         * or first for its TLS handshake. */
        c->state = CONN_IDLE;
        if (s->tls) {
            if (tls_conn_start(c, s->tls) != 0) {
                conn_close(s, c);
                continue;
            }
            c->state = CONN_TLS;
        }
        tl_add(s, c, TL_REQUEST);
        if (!s->opt->scgi_accept) {
            arm(s, c, EPOLLIN); /* added to the epoll set */
            if (!c->in_epoll) conn_close(s, c);
            continue;
        }
        /* libwsgi-scgi: the gateway writes its request as soon as it is connected, and the
         * listener defers accept until it has (TCP_DEFER_ACCEPT): read it now. A request served
         * at once (the usual case) never enters the epoll set; otherwise on_readable arms it. */
        on_readable(s, c);
        if (s->team && !t_leader) return; /* the app blocked: another thread runs the loop now */
    }
}

static void on_wake(server *s)
{
    uint64_t v;
    ssize_t r = read(s->wakefd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&s->done_mu);
    conn *list = s->done_head;
    s->done_head = s->done_tail = NULL;
    pthread_mutex_unlock(&s->done_mu);
    while (list) {
        conn *c = list;
        list = c->q_next;
        c->q_next = NULL;
        on_pump_result(s, c, c->pump_result); /* never calls the app: the leader stays */
    }
    saturation_check(s);
}

/* Connections whose input OpenSSL holds already (arm()): their events, as epoll would report
 * them. Only those queued when this starts (a handler may queue its connection again). Returns 0
 * if this thread is no longer the leader. */
static int run_tls_pending(server *s)
{
    size_t n = 0;
    for (conn *c = s->tls_head; c; c = c->tls_next)
        n++;
    while (n-- > 0 && s->tls_head) {
        conn *c = s->tls_head;
        tls_unqueue(s, c);
        on_conn_event(s, c, c->tls_events);
        if (!t_leader) return 0;
    }
    return 1;
}

/* The connections that were ready when this starts (those made ready meanwhile wait for the next
 * iteration, so a response that yields is not pumped again before other events). Returns 0 if
 * this thread is no longer the leader: the rest of the batch stays for the new one. */
static int run_ready(server *s)
{
    if (!s->batch_head) {
        s->batch_head = s->ready_head;
        s->ready_head = s->ready_tail = NULL;
    }
    while (s->batch_head) {
        conn *c = s->batch_head;
        s->batch_head = c->q_next;
        c->q_next = NULL;
        if (c->state == CONN_CLOSED) continue;
        if (c->ready_action == READY_PUMP) {
            on_pump_result(s, c, run_exchange(c));
        } else {
            tl_add(s, c, TL_REQUEST);
            advance(s, c);
        }
        if (!t_leader) return 0;
    }
    return 1;
}

/* Stop accepting and finish what is in flight. For a reload without a master (s->reexec) the
 * listening sockets stay open: the next image of this process inherits them. */
static void begin_drain(server *s)
{
    if (s->draining) return;
    atomic_store(&s->draining, 1);
    s->grace_deadline = now_ms() + (int64_t)s->opt->host.graceful_timeout * 1000;
    const char *what =
        s->reexec ? "finishing in-flight requests before the restart" : "shutting down gracefully";
    size_t tasks = s->asgi ? asgi_host_busy(s->asgi) : 0;
    if (tasks)
        host_log(WSGI_LOG_INFO,
                 "worker %d: %s (%zu connections, %zu ASGI app calls running after their "
                 "connection: waited for up to --graceful-timeout)",
                 (int)getpid(), what, s->n_conns, tasks);
    else
        host_log(WSGI_LOG_INFO, "worker %d: %s (%zu connections)", (int)getpid(), what, s->n_conns);
    /* Stop accepting: the other workers (or the reload's bridge, or nobody) get the new
     * connections. */
    for (size_t k = 0; k < s->n_ls; k++) {
        if (s->ls[k].fd >= 0) {
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->ls[k].fd, NULL);
            if (!s->reexec) listen_close(&s->ls[k], 0);
        }
    }
    /* Idle keep-alive connections have nothing in flight; open WebSockets are told to go away.
     * A connection accepted but with no request yet (idle on the request timer, not keep-alive's)
     * is not idle: its first request may be on the way, and closing it would fail it (a worker
     * replaced by a reload or --max-requests must not drop it); it is answered with close. So is
     * one still in its TLS handshake (CONN_TLS): the handshake completes on its request clock. */
    for (conn *c = s->all, *next; c; c = next) {
        next = c->all_next;
        if (c->state == CONN_IDLE && c->t_list == TL_IDLE)
            conn_close(s, c);
        else if (c->state == CONN_WS)
            ws_conn_shutdown(c);
    }
}

static void on_signals(server *s, uint64_t sigs)
{
    const uint64_t stop = (1ull << SIGQUIT) | (1ull << SIGTERM) | (1ull << SIGINT);
    if (sigs & ((1ull << SIGTTIN) | (1ull << SIGTTOU)))
        host_log(WSGI_LOG_WARNING,
                 "worker %d: SIGTTIN / SIGTTOU ignored: this server runs as one process, with "
                 "no master to add or remove workers (start it with --workers N)",
                 (int)getpid());
    if (sigs & (1ull << SIGUSR1))
        host_log(WSGI_LOG_INFO, "worker %d: SIGUSR1: no access log file to reopen", (int)getpid());
    if (sigs & (1ull << SIGUSR2))
        host_log(WSGI_LOG_WARNING,
                 "worker %d: SIGUSR2 ignored (gunicorn's binary upgrade: libwsgi reloads on "
                 "SIGHUP)",
                 (int)getpid());
    if (sigs & (1ull << SIGCHLD)) reexec_reap();
    if ((sigs & stop) && (s->reload_fd >= 0 || s->reexec)) {
        /* Stopping during a reload: no exec, and the bridge stops too. */
        reexec_stop_bridges(); /* closes the ready pipe */
        s->reload_fd = -1;
        /* Draining already: the sockets kept for the exec go now, as on a plain stop. */
        for (size_t k = 0; k < s->n_ls && s->reexec; k++)
            listen_close(&s->ls[k], 0);
        s->reexec = 0;
    }
    if (sigs & (1ull << SIGQUIT)) {
        host_log(WSGI_LOG_INFO, "worker %d: quitting now", (int)getpid());
        s->quit = 1;
    } else if (sigs & ((1ull << SIGTERM) | (1ull << SIGINT))) {
        /* A second Ctrl-C does not wait for the grace period. */
        if (s->draining && (sigs & (1ull << SIGINT))) s->quit = 1;
        begin_drain(s);
    } else if ((sigs & (1ull << SIGHUP)) && !s->draining && s->reload_fd < 0) {
        /* Without a master (reexec.h): a bridge with the new code first. */
        s->reload_fd = reexec_start(s->ls, s->n_ls);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->reload_tag};
        if (s->reload_fd >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->reload_fd, &ev) != 0) {
            host_log(WSGI_LOG_ERROR, "epoll_ctl (reload): %s", strerror(errno));
            reexec_stop_bridges();
            s->reload_fd = -1;
        }
    }
}

static void on_event(server *s, struct epoll_event *e)
{
    ev_kind kind = *(ev_kind *)e->data.ptr;
    switch (kind) {
    case EV_CONN: {
        conn *c = e->data.ptr;
        if (c->armed & EPOLLONESHOT) c->armed = 0; /* the kernel disabled it */
        if (c->disarmed) {
            /* Not armed since its last event (a kept registration still fires): dropped. */
            if (c->armed && c->state != CONN_CLOSED) disarm_kept(s, c);
            break;
        }
        c->disarmed = 1;
        on_conn_event(s, c, e->events);
        break;
    }
    case EV_LISTENER:
        if (!s->draining) on_accept(s, &s->ls[((ev_tag *)e->data.ptr)->index]);
        break;
    case EV_WAKE: on_wake(s); break;
    case EV_ASGI: asgi_host_loop_ready(s->asgi); break; /* asgi_host_run() below turns it */
    case EV_SIGNAL: on_signals(s, host_signals_read(s->sigfd)); break;
    case EV_RELOAD: {
        int r = reexec_bridge_status();
        if (r == 0) break;
        s->reload_fd = -1; /* closed by reexec.c, which takes it out of the epoll set */
        if (r > 0) {
            s->reexec = 1;
            begin_drain(s);
        }
        break;
    }
    }
}

enum { LOOP_DONE, LOOP_REPLACED };

/* The heap goes back to the kernel when the worker falls idle. The malloc thresholds set in
 * server_main.c keep up to 32 MiB of freed heap while requests come (faulting the same pages in
 * again for every body cost a third of the requests per CPU-second), and glibc returns memory in
 * the middle of the heap only on malloc_trim(); so without this a worker's RSS kept the highest
 * heap it had ever touched: a WebSocket server under bench/soak.py grew 2 % from its first minute
 * to its eighth with the same bytes in use, as busy periods touched pages of free chunks for the
 * first time. IDLE_TRIM_MS after the last event (no event at all, timers aside), one
 * malloc_trim(0): tens of microseconds for a heap of a few MiB, once per idle period. Returns the
 * epoll_wait timeout, shortened to wake when the idle period is reached. */
#define IDLE_TRIM_MS 250

static int idle_trim(server *s, int64_t now, int timeout)
{
    int64_t left = s->last_event + IDLE_TRIM_MS - now;
    if (left > 0) return timeout < 0 || left < timeout ? (int)left : timeout;
    s->trim_due = 0;
    spare_free(s);
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    return timeout;
}

/* Run the loop until the worker stops (LOOP_DONE) or, in a team, until this thread comes back
 * from an app call to find the loop taken over (LOOP_REPLACED). Each iteration first finishes
 * what the previous leader left: the rest of its event batch, then the ready list. */
static int loop(server *s)
{
    for (;;) {
        if (s->team && !run_pending(s)) return LOOP_REPLACED;
        while (s->ev_i < s->ev_n) {
            on_event(s, &s->evs[s->ev_i++]);
            if (!t_leader) return LOOP_REPLACED;
        }
        if (!run_ready(s)) return LOOP_REPLACED;
        if (s->tls_head && !run_tls_pending(s)) return LOOP_REPLACED;
        if (s->asgi) asgi_host_run(s->asgi);
        int asgi_scan = asgi_timeouts(s);
        int64_t now = now_ms();
        if (s->asgi) asgi_host_iteration_end(s->asgi, now);
        if (s->ev_n > 0) {
            s->trim_due = 1;
            s->last_event = now;
        }
        /* seq_cst: after a takeover it must see what the old leader's app call stored before it
         * read lstate (server_late_wake) without a happens-before edge to this thread. */
        if (atomic_load(&s->late_on) && server_now_us() >= s->late_next) late_scan(s);
        for (int k = 0; k < TL_COUNT; k++) {
            while (s->lists[k].head && s->lists[k].head->deadline <= now) {
                conn *c = s->lists[k].head;
                tl_remove(s, c);
                on_timeout(s, c);
                if (!t_leader) return LOOP_REPLACED;
            }
        }
        if (s->accept_paused && !s->draining && now >= s->accept_resume_at) {
            s->accept_paused = 0;
            listeners_enable(s, 1);
        }
        bury(s);

        if (s->quit) break;
        /* ASGI apps still running after their response (background tasks) are waited for too;
         * requests --timeout gave up on (still in the app, their sockets shut down) are not. */
        if (s->draining && s->n_conns <= guard_stuck() && !(s->asgi && asgi_host_busy(s->asgi)))
            break;
        now = now_ms();
        if (s->draining && now >= s->grace_deadline) {
            size_t tasks = s->asgi ? asgi_host_busy(s->asgi) : 0;
            if (tasks)
                host_log(WSGI_LOG_WARNING,
                         "graceful timeout: dropping %zu connections and %zu ASGI app calls still "
                         "running after their connection",
                         s->n_conns, tasks);
            else
                host_log(WSGI_LOG_WARNING, "graceful timeout: dropping %zu connections",
                         s->n_conns);
            break;
        }
        int timeout = -1;
        for (int k = 0; k < TL_COUNT; k++) {
            if (!s->lists[k].head) continue;
            int64_t d = s->lists[k].head->deadline - now;
            if (d < 0) d = 0;
            if (timeout < 0 || d < timeout) timeout = (int)d;
        }
        if (s->draining) {
            int64_t d = s->grace_deadline - now;
            if (timeout < 0 || d < timeout) timeout = (int)(d < 0 ? 0 : d);
        }
        if (s->asgi) {
            /* Recomputed before every wait: dispatch, feed and resume make work ready without
             * making the loop's fd readable. */
            int t = asgi_host_timeout(s->asgi);
            if (t >= 0 && (timeout < 0 || t < timeout)) timeout = t;
        }
        if (s->accept_paused && !s->draining) {
            int64_t d = s->accept_resume_at - now;
            if (timeout < 0 || d < timeout) timeout = (int)(d < 0 ? 0 : d);
        }
        if (atomic_load(&s->late_on)) {
            int64_t d = (s->late_next - server_now_us() + 999) / 1000;
            if (timeout < 0 || d < timeout) timeout = (int)(d < 0 ? 0 : d);
        }
        if (asgi_scan >= 0 && (timeout < 0 || asgi_scan < timeout)) timeout = asgi_scan;
        if (s->trim_due) timeout = idle_trim(s, now, timeout);
        if (s->ready_head || s->tls_head) timeout = 0;
        /* Queued requests are counted in n_app. */
        if (s->team && s->n_app && pending_runnable(s)) timeout = 0;
        if (s->asgi) guard_loop_end(); /* --timeout: an ASGI loop turn is over */
        int n = epoll_wait(s->epfd, s->evs, 256, timeout);
        if (s->asgi) guard_loop_begin();
        if (n < 0) {
            if (errno == EINTR) continue;
            host_log(WSGI_LOG_ERROR, "epoll_wait: %s", strerror(errno));
            return LOOP_DONE;
        }
        s->ev_n = n;
        s->ev_i = 0;
        if (s->asgi) asgi_host_iteration_begin(s->asgi, now_ms());
    }
    return LOOP_DONE;
}

/* ---- the team ---------------------------------------------------------------------------- */

/* How often the standby looks at the leader. Each look is a timer and a thread switch on a busy
 * core (about 0.6 us of CPU per request at 27k requests/s through lighttpd, measured with
 * looks every 1 ms against every 10 ms), so while every look finds the leader in another call
 * than at the last one (short calls) or in none, the looks back off from WATCH_NS to
 * WATCH_MAX_NS; a standby that has just started (after a takeover or an idle sleep) looks every
 * WATCH_NS. After WATCH_IDLE_NS without any app call it sleeps until the leader's next one. */
#define WATCH_NS      1000000L
#define WATCH_MAX_NS  4000000L
#define WATCH_IDLE_NS 200000000L

/* The standby: watch the leader; take the loop over when it has been inside the same app call
 * for a whole look (1 to 8 ms). Returns 1 when this thread is the leader now, 0 to stop. */
static int standby(server *s)
{
    uint64_t last = atomic_load(&s->lstate);
    long watch = WATCH_NS, idle = 0;
    for (;;) {
        struct timespec ts = {0, watch};
        nanosleep(&ts, NULL);
        if (atomic_load(&s->stopping)) return 0;
        uint64_t w = atomic_load(&s->lstate);
        if ((w & 1) && w == last) {
            if (atomic_compare_exchange_strong(&s->lstate, &w, w - 1)) {
                pthread_mutex_lock(&s->tmu);
                atomic_store(&s->has_standby, 0);
                pthread_cond_signal(&s->spare_cv); /* a spare thread becomes the standby */
                pthread_mutex_unlock(&s->tmu);
                host_log(WSGI_LOG_DEBUG, "an app call blocks: another thread runs the event loop");
                return 1;
            }
        }
        idle = w == last ? idle + watch : 0;
        last = w;
        if (watch < WATCH_MAX_NS) watch *= 2;
        if (idle < WATCH_IDLE_NS) continue;
        /* Nothing happened for a while: sleep until the leader calls an app (to_app wakes us). */
        pthread_mutex_lock(&s->tmu);
        atomic_store(&s->standby_sleeping, 1);
        if (atomic_load(&s->lstate) == last) {
            while (atomic_load(&s->standby_sleeping) && !atomic_load(&s->stopping))
                pthread_cond_wait(&s->standby_cv, &s->tmu);
        }
        atomic_store(&s->standby_sleeping, 0);
        pthread_mutex_unlock(&s->tmu);
        idle = 0;
        watch = WATCH_NS;
        last = atomic_load(&s->lstate);
    }
}

static void lead(server *s)
{
    t_leader = 1;
    if (loop(s) == LOOP_REPLACED) return;
    t_leader = 0;
    pthread_mutex_lock(&s->tmu);
    s->finished = 1;
    atomic_store(&s->stopping, 1);
    pthread_cond_broadcast(&s->spare_cv);
    pthread_cond_broadcast(&s->standby_cv);
    pthread_cond_broadcast(&s->main_cv);
    pthread_mutex_unlock(&s->tmu);
}

/* A team thread: the leader, the standby, or spare (an app thread is a former leader). */
static void *team_main(void *arg)
{
    server *s = arg;
    pthread_mutex_lock(&s->tmu);
    while (!atomic_load(&s->stopping)) {
        if (!s->has_leader) {
            s->has_leader = 1;
            pthread_mutex_unlock(&s->tmu);
            lead(s);
        } else if (!s->has_standby) {
            /* Requests queued meanwhile are the leader's to run, now that it is watched again
             * (run_pending), not this thread's: it never runs one of its own. */
            atomic_store(&s->has_standby, 1);
            int queued = s->pend_head != NULL;
            pthread_mutex_unlock(&s->tmu);
            /* The leader may be waiting in epoll_wait (if it reads this wake-up before it
             * looks at the queue again, it still does not sleep: pending_runnable). */
            if (queued) wake_loop(s);
            if (standby(s)) lead(s);
        } else {
            pthread_cond_wait(&s->spare_cv, &s->tmu);
            continue;
        }
        pthread_mutex_lock(&s->tmu);
    }
    pthread_mutex_unlock(&s->tmu);
    return NULL;
}

/* Start the team (signals stay with the main thread) and wait until the loop ends. */
static int team_run(server *s, unsigned n)
{
    s->threads = calloc(n, sizeof(pthread_t));
    if (!s->threads) return -1;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_mutex_lock(&s->tmu); /* the threads start once all are there */
    int e = 0;
    for (unsigned k = 0; k < n && !e; k++) {
        e = pthread_create(&s->threads[k], NULL, team_main, s);
        if (!e) s->n_threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        host_log(WSGI_LOG_ERROR, "cannot start %u threads: %s", n, strerror(e));
        atomic_store(&s->stopping, 1);
        pthread_mutex_unlock(&s->tmu);
        for (unsigned k = 0; k < s->n_threads; k++)
            pthread_join(s->threads[k], NULL);
        s->n_threads = 0;
        return -1;
    }
    while (!s->finished)
        pthread_cond_wait(&s->main_cv, &s->tmu);
    pthread_mutex_unlock(&s->tmu);
    return 0;
}

/* After the loop ended with no request in the app: every team thread is leaving. */
static void team_join(server *s)
{
    pthread_mutex_lock(&s->tmu);
    atomic_store(&s->stopping, 1);
    pthread_cond_broadcast(&s->spare_cv);
    pthread_cond_broadcast(&s->standby_cv);
    pthread_mutex_unlock(&s->tmu);
    for (unsigned k = 0; k < s->n_threads; k++)
        pthread_join(s->threads[k], NULL);
    s->n_threads = 0;
}

int server_run(const epoll_options *o, wsgi_app *app, tls_ctx *tls, listener *ls, size_t n_ls)
{
    server *s = calloc(1, sizeof(*s));
    if (!s) return -1;
    int result = -1;
    s->opt = o;
    s->app = app;
    s->ls = ls;
    s->n_ls = n_ls;
    s->epfd = s->wakefd = s->sigfd = s->reload_fd = -1;
    pthread_mutex_init(&s->done_mu, NULL);
    pthread_mutex_init(&s->tmu, NULL);
    pthread_cond_init(&s->spare_cv, NULL);
    pthread_cond_init(&s->standby_cv, NULL);
    pthread_cond_init(&s->main_cv, NULL);
    s->lists[TL_IDLE].timeout_ms = (int64_t)o->timeout_keepalive * 1000;
    s->lists[TL_REQUEST].timeout_ms = (int64_t)o->timeout_request * 1000;
    s->lists[TL_LINGER].timeout_ms = LINGER_MS;
    s->lists[TL_WS_PING].timeout_ms = (int64_t)o->ws_ping_interval * 1000;
    s->lists[TL_WS_PONG].timeout_ms = (int64_t)o->ws_ping_timeout * 1000;
    s->lists[TL_WS_CLOSE].timeout_ms = WS_CLOSE_MS;
    s->ls_tags = calloc(n_ls, sizeof(ev_tag));
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    /* Besides the stop signals: without a master, SIGHUP reloads (reexec.h) and the reload's
     * bridges are reaped (SIGCHLD). And those of gunicorn's that a process without a master
     * cannot act on but must survive (their default action stops or kills it): SIGTTIN / SIGTTOU
     * (add or remove a worker: the master's), SIGUSR1 (reopen the access log: set up by the
     * access log when there is one), SIGUSR2 (gunicorn's binary upgrade, which libwsgi has not).
     * Only when nobody took them already: a prefork worker ignores the master's signals. */
    int sigs[9] = {SIGTERM, SIGINT, SIGQUIT}, n_sigs = 3;
    if (reexec_enabled()) {
        sigs[n_sigs++] = SIGHUP;
        sigs[n_sigs++] = SIGCHLD;
    }
    static const int survive[] = {SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
    for (size_t k = 0; k < sizeof(survive) / sizeof(*survive); k++) {
        struct sigaction cur;
        if (sigaction(survive[k], NULL, &cur) == 0 && cur.sa_handler == SIG_DFL)
            sigs[n_sigs++] = survive[k];
    }
    s->sigfd = host_signals_open(sigs, n_sigs);
    /* A bridge that exited before the handler was there sent its SIGCHLD for nothing. */
    reexec_reap();
    if (!s->ls_tags || s->epfd < 0 || s->wakefd < 0 || s->sigfd < 0) {
        host_log(WSGI_LOG_ERROR, "cannot set up the event loop: %s", strerror(errno));
        goto out;
    }
    s->tls = tls;
    int asgi = wsgi_app_interface(app) == WSGI_INTERFACE_ASGI;
    if (asgi && !(s->asgi = asgi_host_new(s, app))) goto out;
    /* An ASGI app runs on this thread, in its event loop: --threads does not apply. */
    s->team = !asgi && o->host.threads > 0;
    s->wake_tag.kind = EV_WAKE;
    s->sig_tag.kind = EV_SIGNAL;
    s->reload_tag.kind = EV_RELOAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->wake_tag};
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev);
    ev.data.ptr = &s->sig_tag;
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->sigfd, &ev);
    if (s->asgi) {
        s->asgi_tag.kind = EV_ASGI;
        ev.data.ptr = &s->asgi_tag;
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, asgi_host_fd(s->asgi), &ev) != 0) {
            host_log(WSGI_LOG_ERROR, "epoll_ctl (ASGI loop): %s", strerror(errno));
            goto out;
        }
    }
    for (size_t k = 0; k < n_ls; k++) {
        s->ls_tags[k].kind = EV_LISTENER;
        s->ls_tags[k].index = k;
    }
    /* libwsgi-scgi: accept a gateway's connection once its request has arrived (on_accept
     * reads it at once). */
    for (size_t k = 0; k < n_ls && o->scgi_accept; k++) {
        int one = 1;
        if (!ls[k].is_unix) setsockopt(ls[k].fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one));
    }
    listeners_enable(s, 1);
    for (size_t k = 0; k < n_ls; k++) {
        if (s->asgi)
            host_log(WSGI_LOG_INFO, "listening at %s%s (pid %d, ASGI on the event loop)",
                     ls[k].is_unix || o->scgi_accept ? ""
                     : s->tls                        ? "https://"
                                                     : "http://",
                     ls[k].spec, (int)getpid());
        else
            host_log(WSGI_LOG_INFO, "listening at %s%s (pid %d, %u threads)",
                     ls[k].is_unix || o->scgi_accept ? ""
                     : s->tls                        ? "https://"
                                                     : "http://",
                     ls[k].spec, (int)getpid(), o->host.threads);
    }

    if (s->team) {
        /* N app threads, plus one so that the loop runs while N requests are in the app. */
        if (team_run(s, o->host.threads + 1) != 0) goto out;
    } else {
        t_leader = 1;
        loop(s);
    }

    /* With --threads 0, a response that used up its chunk budget waits on the ready list in
     * CONN_APP (counted in n_app) but no thread is inside the app: the loop owns it, and the
     * cleanup below closes its iterable. */
    for (conn *c = s->ready_head; c; c = c->q_next)
        if (c->state == CONN_APP && c->ready_action == READY_PUMP) s->n_app--;
    s->ready_head = s->ready_tail = NULL;

    if (s->n_app > 0) {
        /* App threads are still inside libwsgi: the runtime must not be torn down under them. */
        result = SERVER_BUSY | (s->reexec ? SERVER_REEXEC : 0);
        goto out_nofree;
    }
    if (s->team) team_join(s);
    result = s->reexec ? SERVER_REEXEC : 0;
    for (conn *c = s->all, *next; c; c = next) {
        next = c->all_next;
        /* A response waiting for a slow reader (CONN_WRITE) still holds the app's iterable: free
         * it (its close() runs) before the app and the runtime go. */
        if (c->resp) exchange_abort(c);
        conn_close(s, c);
    }
    bury(s);
    spare_free(s);
out:
    asgi_host_free(s->asgi);
out_nofree:
    /* A reload's exec keeps the handlers until it looks for a stop signal that came meanwhile
     * (reexec_exec()): back at the default action, such a signal would kill the process. */
    if (!s->reexec) host_signals_close();
    if (s->reload_fd >= 0) reexec_stop_bridges(); /* the loop failed during a reload */
    /* A reload's exec inherits the listening sockets. */
    for (size_t k = 0; k < n_ls && !s->reexec; k++)
        listen_close(&ls[k], 0);
    if (result < 0 || !(result & SERVER_BUSY)) {
        if (s->epfd >= 0) close(s->epfd);
        if (s->wakefd >= 0) close(s->wakefd);
        pthread_mutex_destroy(&s->done_mu);
        pthread_mutex_destroy(&s->tmu);
        pthread_cond_destroy(&s->spare_cv);
        pthread_cond_destroy(&s->standby_cv);
        pthread_cond_destroy(&s->main_cv);
        free(s->threads);
        free(s->ls_tags);
        free(s);
    }
    return result;
}
