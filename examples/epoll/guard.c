/* The guards of guard.h. Each thread that calls the app owns one slot (allocated on its first
 * call); the slot holds the time the current call began (0: none), a one-line description of the
 * request copied at the call's start (the request head may move while the app reads the body) and
 * its socket. The watchdog thread looks at the slots every 200 ms; a slot's mutex is taken only by
 * the watchdog and by the end of a call that the watchdog may be looking at, so that the socket it
 * shuts down is still the request's. The stack is dumped by faulthandler in the stuck thread
 * itself (a signal sent to that thread, faulthandler.register(all_threads=True) marks it as the
 * "Current thread"): async-signal-safe, without the GIL, so it works even when the app holds it. */
#include "guard.h"
#include "conn.h"
#include "host_log.h"
#include "host_py.h"
#include "prefork.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 1100
#define DESC_LEN  240

typedef struct slot {
    pthread_mutex_t mu;
    pthread_t thread;
    _Atomic int64_t start_ms; /* 0: not in a call */
    int fd;                   /* the request's socket (-1: the event loop, no request) */
    int fired;                /* the watchdog gave up on this call */
    char desc[DESC_LEN];
} slot;

static slot slots[MAX_SLOTS];
static atomic_int n_slots;
static __thread slot *t_slot;

static int g_timeout_ms;        /* 0: no call watching */
static uint64_t g_max_rss;      /* bytes; 0: off */
static uint64_t g_max_requests; /* 0: off */
static atomic_uint_fast64_t g_requests;
static atomic_uint g_stuck;
static int g_inline;
static int g_dump_sig;
static pthread_t g_thread;
static int g_running;
static atomic_int g_stop;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1; /* never 0 */
}

static slot *my_slot(void)
{
    if (t_slot) return t_slot;
    int k = atomic_fetch_add(&n_slots, 1);
    if (k >= MAX_SLOTS) return NULL;
    slot *s = &slots[k];
    pthread_mutex_init(&s->mu, NULL);
    s->thread = pthread_self();
    t_slot = s;
    /* The server's helper threads block every signal: this one must reach the app thread. */
    if (g_dump_sig) {
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, g_dump_sig);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    return s;
}

static void describe(const conn *c, char *buf, size_t cap)
{
    size_t mlen = 0;
    const char *m = conn_request_method(c, &mlen);
    size_t ulen = c->url_len > 160 ? 160 : c->url_len;
    if (c->peer[0])
        snprintf(buf, cap, "%.*s %.*s%s from %s:%u", (int)mlen, m, (int)ulen, c->in + c->url_off,
                 ulen < c->url_len ? "..." : "", c->peer, c->peer_port);
    else
        snprintf(buf, cap, "%.*s %.*s%s from %s", (int)mlen, m, (int)ulen, c->in + c->url_off,
                 ulen < c->url_len ? "..." : "", c->lst && c->lst->is_unix ? "unix" : "-");
}

void guard_call_begin(conn *c)
{
    if (!g_timeout_ms) return;
    slot *s = my_slot();
    if (!s) return;
    describe(c, s->desc, sizeof(s->desc));
    s->fd = c->fd;
    atomic_store(&s->start_ms, now_ms());
}

static void end(void)
{
    slot *s = t_slot;
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->start_ms, 0);
    if (s->fired) {
        s->fired = 0;
        atomic_fetch_sub(&g_stuck, 1);
    }
    pthread_mutex_unlock(&s->mu);
}

void guard_call_end(void)
{
    if (g_timeout_ms) end();
}

void guard_loop_begin(void)
{
    if (!g_timeout_ms) return;
    slot *s = my_slot();
    if (!s) return;
    s->fd = -1;
    snprintf(s->desc, sizeof(s->desc), "the event loop");
    atomic_store(&s->start_ms, now_ms());
}

void guard_loop_end(void)
{
    if (g_timeout_ms) end();
}

int guard_on(void)
{
    return g_timeout_ms != 0;
}

void guard_asgi_check(conn *c, int64_t now)
{
    if (now - c->asgi_since_ms < g_timeout_ms) return;
    asgi_task *t = (asgi_task *)c->ax; /* the exchange's first member (asgi_exchange.c) */
    c->asgi_since_ms = 0;              /* once */
    if (t->done) return;               /* the app has ended: the response is being written */
    char desc[DESC_LEN];
    describe(c, desc, sizeof(desc));
    host_log(WSGI_LOG_ERROR,
             "worker %d: timeout: %s still in the ASGI app after %d s: cancelling it",
             (int)getpid(), desc, g_timeout_ms / 1000);
    asgi_conn_cancel(t->ac);
}

unsigned guard_stuck(void)
{
    return atomic_load(&g_stuck);
}

void guard_request_done(void)
{
    if (!g_max_requests) return;
    if (atomic_fetch_add(&g_requests, 1) + 1 == g_max_requests) {
        host_log(WSGI_LOG_INFO, "worker %d: %llu requests served: asking for a replacement",
                 (int)getpid(), (unsigned long long)g_max_requests);
        prefork_worker_retire("max requests", 0);
    }
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, res = 0;
    int n = fscanf(f, "%lu %lu", &size, &res);
    fclose(f);
    return n == 2 ? (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

static void check_slots(void)
{
    int64_t now = now_ms();
    int n = atomic_load(&n_slots);
    if (n > MAX_SLOTS) n = MAX_SLOTS;
    for (int k = 0; k < n; k++) {
        slot *s = &slots[k];
        int64_t start = atomic_load(&s->start_ms);
        if (!start || now - start < g_timeout_ms) continue;
        pthread_mutex_lock(&s->mu);
        if (s->fired || atomic_load(&s->start_ms) != start) {
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        s->fired = 1;
        atomic_fetch_add(&g_stuck, 1);
        char desc[DESC_LEN];
        memcpy(desc, s->desc, sizeof(desc));
        int is_loop = s->fd < 0;
        host_log(WSGI_LOG_ERROR,
                 "worker %d: timeout: %s still in the app after %d s (thread 0x%lx): %s, "
                 "replacing the worker; its Python stack follows",
                 (int)getpid(), desc, g_timeout_ms / 1000, (unsigned long)s->thread,
                 is_loop ? "the event loop is blocked" : "closing its connection");
        /* faulthandler writes straight to fd 2: what host_log buffered goes first. */
        fflush(NULL);
        if (g_dump_sig) pthread_kill(s->thread, g_dump_sig);
        /* The call keeps its socket until it returns (the mutex keeps it from returning now):
         * shutting it down ends the client's wait and makes the app's writes fail. */
        if (!is_loop) shutdown(s->fd, SHUT_RDWR);
        pthread_mutex_unlock(&s->mu);
        prefork_worker_retire(is_loop ? "event loop blocked" : "timeout", g_inline || is_loop);
    }
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    int64_t next_mem = 0;
    int mem_logged = 0;
    while (!atomic_load(&g_stop)) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        if (g_timeout_ms) check_slots();
        if (g_max_rss && !mem_logged && now_ms() >= next_mem) {
            next_mem = now_ms() + 1000;
            uint64_t rss = rss_bytes();
            if (rss > g_max_rss) {
                host_log(WSGI_LOG_WARNING,
                         "worker %d: resident memory %llu MiB over --max-worker-memory %llu: "
                         "asking for a replacement",
                         (int)getpid(), (unsigned long long)(rss >> 20),
                         (unsigned long long)(g_max_rss >> 20));
                prefork_worker_retire("max worker memory", 0);
                mem_logged = 1;
            }
        }
    }
    return NULL;
}

int guard_start(const epoll_options *o, int inline_app)
{
    const proc_options *p = &o->proc;
    g_inline = inline_app;
    if (p->max_requests) {
        uint64_t jitter = 0;
        if (p->max_requests_jitter) {
            unsigned seed = (unsigned)getpid() ^ (unsigned)time(NULL);
            jitter = (uint64_t)rand_r(&seed) % (p->max_requests_jitter + 1);
        }
        g_max_requests = p->max_requests + jitter;
    }
    g_max_rss = p->max_worker_memory << 20;
    g_timeout_ms = (int)p->timeout * 1000;
    if (g_timeout_ms) {
        /* The signal that makes faulthandler dump the stacks, from the thread it is sent to. */
        g_dump_sig = SIGRTMIN + 2;
        if (host_py_register_stack_dump(g_dump_sig) != 0) g_dump_sig = 0;
    }
    if (!g_timeout_ms && !g_max_rss) return 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&g_thread, NULL, watchdog_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        host_log(WSGI_LOG_ERROR, "cannot start the watchdog thread: %s", strerror(e));
        g_timeout_ms = 0;
        return -1;
    }
    g_running = 1;
    return 0;
}

void guard_stop(void)
{
    if (!g_running) return;
    atomic_store(&g_stop, 1);
    pthread_join(g_thread, NULL);
    g_running = 0;
}
