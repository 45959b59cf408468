/*
 * test_asgi_loop.c - the host-driven asyncio loop: asgi_loop_fd (stable, close-on-exec),
 * asgi_loop_timeout (0 with ready work, -1 when idle - which boot.loop_timeout's 10 ms fallback
 * never returns - and the delay of the nearest timer otherwise), asgi_loop_run (non-blocking,
 * refused from callbacks and other threads), asgi_loop_wakeup (any thread, no GIL), and apps that
 * do their own asyncio I/O: sleep, call_later, run_in_executor, sockets.
 *
 * The loop is only ever waited on through poll() on its fd with its timeout; no test sleeps.
 */
#include "asgi_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define APPS "asgi_loop_apps:"

static int loop_fd(void)
{
    int fd = asgi_loop_fd(th_rt);
    assert_true(fd >= 0);
    return fd;
}

static asgi_conn *get_start(const char *spec, const char *target, ah_rec *rec, th_req *r)
{
    th_req_init(r, "GET", target);
    return ah_dispatch(th_app(spec), r, rec);
}

/* ---- before the loop exists ----------------------------------------------------------------- */

/* Must run first: no asgi_* call has created the loop yet. */
static void test_wakeup_before_loop_exists(void **state)
{
    (void)state;
    assert_rc(asgi_loop_wakeup(th_rt), WSGI_ERR_STATE);
    assert_rc(asgi_loop_wakeup(NULL), WSGI_ERR_STATE);
}

/* ---- fd and timeout ------------------------------------------------------------------------- */

static void test_loop_fd_is_stable(void **state)
{
    (void)state;
    int fd = loop_fd();
    assert_int_equal(asgi_loop_fd(th_rt), fd);
    int flags = fcntl(fd, F_GETFD);
    assert_true(flags >= 0);
    assert_true(flags & FD_CLOEXEC); /* not leaked into the host's child processes */
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(APPS "hello", "/", &rec);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
    assert_int_equal(asgi_loop_fd(th_rt), fd);
    assert_true(asgi_loop_fd(NULL) < 0);
    assert_true(asgi_loop_timeout(NULL) < -1);
    assert_true(asgi_loop_run(NULL) < 0);
}

/* Idle: -1 (wait for the fd only). boot.loop_timeout falls back to a 10 ms tick when asyncio's
 * internals are missing; -1 proves that fallback is not what runs on this Python. */
static void test_idle_loop(void **state)
{
    (void)state;
    int fd = loop_fd();
    assert_int_equal(ah_settle(), -1);
    assert_int_equal(asgi_loop_timeout(th_rt), -1);
    assert_false(ah_fd_readable(fd));
    /* A turn on an idle loop returns at once and changes nothing. */
    for (int i = 0; i < 3; i++)
        assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    assert_int_equal(asgi_loop_timeout(th_rt), -1);
    assert_false(ah_fd_readable(fd));
}

static void test_timeout_zero_after_dispatch(void **state)
{
    (void)state;
    ah_set_eager(0); /* test_asgi_eager checks the eager start's "no turn needed" */
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "hello", "/", &rec, &r);
    assert_int_equal(asgi_loop_timeout(th_rt), 0); /* the task is ready to run */
    assert_int_equal(rec.n_events, 0);             /* but runs only in asgi_loop_run */
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "hello");
    assert_int_equal(ah_settle(), -1);
    ah_rec_free(&rec);
}

/* Eager start of an app that answers at once but leaves work scheduled (a background task):
 * asgi_loop_timeout() is 0 right after the dispatch and after the free (libwsgi remembers the
 * answer it read while the dispatch held the GIL: it must be read after the app's step), -1 once
 * a turn has run the work, and 0 again after the next such dispatch. */
static void test_timeout_after_eager_dispatch_with_work_left(void **state)
{
    (void)state;
    ah_set_eager(1);
    for (int i = 0; i < 2; i++) {
        th_req r;
        ah_rec rec;
        ah_rec_init(&rec);
        asgi_conn *conn = get_start(APPS "spawn_background", "/", &rec, &r);
        assert_int_equal(asgi_loop_timeout(th_rt), 0);
        assert_int_equal(asgi_loop_timeout(th_rt), 0);
        asgi_conn_free(conn);
        assert_int_equal(asgi_loop_timeout(th_rt), 0);
        assert_rc(asgi_loop_run(th_rt), WSGI_OK);
        assert_int_equal(asgi_loop_timeout(th_rt), -1);
        assert_int_equal(asgi_loop_timeout(th_rt), -1);
        ah_assert_ok(&rec, 200, "spawned");
        ah_rec_free(&rec);
    }
}

/* Pending asyncio.sleep / call_later: a positive delay no longer than requested; the driver
 * then needs only a few turns (the loop is not spun). The delays are long compared with the
 * few microseconds between the app scheduling its timer and the test reading the timeout, so
 * the timer cannot have expired already; nothing asserts how long anything took. */
static void test_timeout_tracks_timers(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *target, *body;
        int ms;
    } cases[] = {
        {APPS "sleeper", "/?ms=200", "slept 200", 200},
        {APPS "call_later", "/?ms=150", "later 150", 150},
        {APPS "sleeper", "/?ms=100", "slept 100", 100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        ah_rec rec;
        ah_rec_init(&rec);
        asgi_conn *conn = get_start(cases[i].spec, cases[i].target, &rec, &r);
        int t = ah_settle();
        if (!(t > 0 && t <= cases[i].ms))
            print_error("%s: asgi_loop_timeout %d, expected 1..%d\n", cases[i].target, t,
                        cases[i].ms);
        assert_true(t > 0 && t <= cases[i].ms);
        assert_int_equal(rec.n_events, 0);
        int turns = ah_drive_done(&rec);
        if (turns > 50) print_error("%d turns for one timer: the loop is being spun\n", turns);
        assert_true(turns <= 50);
        asgi_conn_free(conn);
        ah_assert_ok(&rec, 200, cases[i].body);
        assert_int_equal(ah_settle(), -1);
        ah_rec_free(&rec);
    }
}

/* With several timers pending the timeout is that of the nearest one. */
static void test_timeout_nearest_timer(void **state)
{
    (void)state;
    th_req r1, r2;
    ah_rec far, near;
    ah_rec_init(&far);
    ah_rec_init(&near);
    asgi_conn *c1 = get_start(APPS "sleeper", "/?ms=600", &far, &r1);
    asgi_conn *c2 = get_start(APPS "sleeper", "/?ms=120", &near, &r2);
    int t = ah_settle();
    assert_true(t > 0 && t <= 120);
    ah_drive_done(&near);
    assert_int_equal(far.n_events, 0);
    t = ah_settle();
    assert_true(t > 0 && t <= 600);
    ah_drive_done(&far);
    asgi_conn_free(c1);
    asgi_conn_free(c2);
    ah_assert_ok(&near, 200, "slept 120");
    ah_assert_ok(&far, 200, "slept 600");
    ah_rec_free(&far);
    ah_rec_free(&near);
}

/* A timer that was cancelled is not scheduled work: an app blocked in receive() after
 * asyncio.wait_for() finished early (its timeout handle cancelled) leaves the loop idle (-1),
 * not waking the host when the dead timer would have fired. */
static void test_cancelled_timers_do_not_count(void **state)
{
    (void)state;
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "wait_for_then_receive", "/?key=wf", &rec, &r);
    int t = ah_settle();
    assert_int_equal(rec.n_events, 0);
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    if (t != -1)
        print_error("asgi_loop_timeout is %d while the only timers left are cancelled ones\n", t);
    assert_int_equal(t, -1);
    ah_rec_free(&rec);
}

/* ---- asyncio work inside apps --------------------------------------------------------------- */

/* The executor thread finishes through the loop's self-pipe: nothing is scheduled meanwhile
 * (-1), and the fd wakes the host. */
static void test_run_in_executor(void **state)
{
    (void)state;
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "executor", "/", &rec, &r);
    assert_int_equal(ah_settle(), -1);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "executor other_thread=True set=True");
    ah_rec_free(&rec);
}

typedef struct tcp_server {
    int listen_fd;
    int port;
    char got[256];
    int ok;
} tcp_server;

static void *tcp_server_thread(void *arg)
{
    tcp_server *s = arg;
    int c = accept(s->listen_fd, NULL, NULL);
    if (c < 0) return NULL;
    size_t n = 0;
    while (n < sizeof s->got - 1) {
        ssize_t k = read(c, s->got + n, 1);
        if (k <= 0) break;
        n++;
        if (s->got[n - 1] == '\n') break;
    }
    s->got[n] = '\0';
    char reply[300];
    int len = snprintf(reply, sizeof reply, "pong:%.*s\n", n ? (int)n - 1 : 0, s->got);
    s->ok = write(c, reply, (size_t)len) == len;
    char drain[16];
    while (read(c, drain, sizeof drain) > 0) /* until the app closes */
        ;
    close(c);
    return NULL;
}

static void test_open_connection(void **state)
{
    (void)state;
    tcp_server s = {.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    assert_true(s.listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s.listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s.listen_fd, 1), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(s.listen_fd, (struct sockaddr *)&a, &al), 0);
    s.port = ntohs(a.sin_port);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, tcp_server_thread, &s), 0);

    char target[64];
    snprintf(target, sizeof target, "/?port=%d", s.port);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "connect", target, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    pthread_join(t, NULL);
    close(s.listen_fd);
    ah_assert_ok(&rec, 200, "got pong:ping from asgi");
    assert_string_equal(s.got, "ping from asgi\n");
    assert_true(s.ok);
    assert_int_equal(ah_settle(), -1);
    ah_rec_free(&rec);
}

static int fd_readable_pred(void *arg)
{
    return ah_fd_readable(*(int *)arg);
}

/* loop.sock_sendall / sock_recv on a socketpair: the test answers between loop turns, on the
 * same thread. */
static void test_socketpair_io(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char target[64];
    snprintf(target, sizeof target, "/?fd=%d", sv[1]);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "sock_pair", target, &rec, &r);
    ah_drive_until(fd_readable_pred, &sv[0], AH_MAX_TURNS);
    char buf[64];
    ssize_t n = read(sv[0], buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, "hello test");
    /* The app waits in sock_recv: nothing scheduled, the fd will wake us. */
    assert_int_equal(ah_settle(), -1);
    assert_int_equal(write(sv[0], "reply", 5), 5);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    close(sv[0]);
    close(sv[1]);
    ah_assert_ok(&rec, 200, "pair reply");
    ah_rec_free(&rec);
}

static void test_many_concurrent_connections(void **state)
{
    (void)state;
    enum { N = 48 };
    static th_req reqs[N];
    static ah_rec recs[N];
    asgi_conn *conns[N];
    char targets[N][64];
    for (int i = 0; i < N; i++) {
        ah_rec_init(&recs[i]);
        const char *spec;
        switch (i % 4) {
        case 0:
            spec = APPS "hello";
            snprintf(targets[i], sizeof targets[i], "/");
            break;
        case 1:
            spec = APPS "sleeper";
            snprintf(targets[i], sizeof targets[i], "/?ms=%d", 1 + i % 7);
            break;
        case 2:
            spec = APPS "gather";
            snprintf(targets[i], sizeof targets[i], "/?n=%d", i);
            break;
        default:
            spec = APPS "call_later";
            snprintf(targets[i], sizeof targets[i], "/?ms=%d", i % 5);
            break;
        }
        conns[i] = get_start(spec, targets[i], &recs[i], &reqs[i]);
    }
    for (int i = 0; i < N; i++)
        ah_drive_done(&recs[i]);
    for (int i = 0; i < N; i++) {
        asgi_conn_free(conns[i]);
        char expected[64];
        switch (i % 4) {
        case 0: snprintf(expected, sizeof expected, "hello"); break;
        case 1: snprintf(expected, sizeof expected, "slept %d", 1 + i % 7); break;
        case 2: snprintf(expected, sizeof expected, "sum %d", i * (i - 1) / 2); break;
        default: snprintf(expected, sizeof expected, "later %d", i % 5); break;
        }
        ah_assert_ok(&recs[i], 200, expected);
        ah_rec_free(&recs[i]);
    }
    assert_int_equal(ah_settle(), -1);
}

/* ---- wakeup --------------------------------------------------------------------------------- */

typedef struct waker {
    int rc;
    int count;
} waker;

static void *waker_thread(void *arg)
{
    waker *w = arg;
    for (int i = 0; i < w->count; i++)
        w->rc |= asgi_loop_wakeup(th_rt);
    return NULL;
}

static void test_wakeup_from_another_thread(void **state)
{
    (void)state;
    int fd = loop_fd();
    assert_int_equal(ah_settle(), -1);
    assert_false(ah_fd_readable(fd));

    waker w = {0, 1};
    th_run_thread(waker_thread, &w);
    assert_rc(w.rc, WSGI_OK);
    assert_true(ah_fd_readable(fd));
    assert_rc(asgi_loop_run(th_rt), WSGI_OK); /* drains the wakeup */
    assert_false(ah_fd_readable(fd));
    assert_int_equal(asgi_loop_timeout(th_rt), -1);

    /* Several wakeups coalesce into one readable state, drained by one turn. */
    w.count = 5;
    th_run_thread(waker_thread, &w);
    assert_rc(w.rc, WSGI_OK);
    assert_true(ah_fd_readable(fd));
    assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    assert_false(ah_fd_readable(fd));

    /* A host blocked in poll() with timeout -1 is woken by another thread. */
    w.count = 1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, waker_thread, &w), 0);
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    do {
        n = poll(&p, 1, AH_STALL_MS);
    } while (n < 0 && errno == EINTR);
    pthread_join(t, NULL);
    assert_int_equal(n, 1);
    assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    assert_false(ah_fd_readable(fd));
    assert_int_equal(asgi_loop_timeout(th_rt), -1);
}

static int cached_loop_fd = -1;

typedef struct gil_helper {
    int ready_r, go_w;
    int wake_rc;
    int readable;
    int saw_ready;
} gil_helper;

static void *gil_helper_thread(void *arg)
{
    gil_helper *g = arg;
    g->wake_rc = 99;
    struct pollfd p = {g->ready_r, POLLIN, 0};
    if (poll(&p, 1, 30000) != 1) return NULL; /* the app never signalled: fails the test */
    char c;
    g->saw_ready = read(g->ready_r, &c, 1) == 1;
    /* The app now holds the GIL, blocked in poll(): wakeup must not need it. */
    g->wake_rc = asgi_loop_wakeup(th_rt);
    g->readable = ah_fd_readable(cached_loop_fd);
    (void)!write(g->go_w, "g", 1);
    return NULL;
}

static void test_wakeup_without_gil(void **state)
{
    (void)state;
    int ready[2], go[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    assert_int_equal(pipe2(go, O_CLOEXEC), 0);
    cached_loop_fd = loop_fd();
    gil_helper g = {.ready_r = ready[0], .go_w = go[1]};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, gil_helper_thread, &g), 0);
    char target[64];
    snprintf(target, sizeof target, "/?ready_fd=%d&go_fd=%d", ready[1], go[0]);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = get_start(APPS "hold_gil", target, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    pthread_join(t, NULL);
    ah_assert_ok(&rec, 200, "released");
    assert_true(g.saw_ready);
    assert_rc(g.wake_rc, WSGI_OK);
    assert_true(g.readable);
    for (int i = 0; i < 2; i++) {
        close(ready[i]);
        close(go[i]);
    }
    ah_drive_idle();
    ah_rec_free(&rec);
}

/* ---- refused calls: recursion and other threads --------------------------------------------- */

typedef struct in_callback {
    int run_rc;
    int dispatch_rc;
    asgi_conn *dispatched;
    ah_rec nested;
    th_req req;
} in_callback;

static int call_run_from_start(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    in_callback *ic = rec->hook_data;
    ic->run_rc = asgi_loop_run(th_rt);
    return 0;
}

static void test_loop_run_from_callback(void **state)
{
    (void)state;
    in_callback ic = {.run_rc = 99};
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = call_run_from_start;
    rec.hook_data = &ic;
    asgi_conn *conn = get_start(APPS "hello", "/", &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "hello");
    assert_rc(ic.run_rc, WSGI_ERR_RECURSIVE);
    ah_rec_free(&rec);
}

static int call_dispatch_from_start(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    in_callback *ic = rec->hook_data;
    asgi_handler h = ah_handler(&ic->nested);
    th_req_init(&ic->req, "GET", "/");
    ic->dispatch_rc =
        asgi_dispatch(th_app(APPS "hello"), &ic->req.req, &h, &ic->nested, &ic->dispatched);
    return 0;
}

/* A host may dispatch from inside a callback (the next pipelined request from on_done or on_body):
 * asgi_dispatch is allowed there and the nested request completes normally. Only re-entering the
 * loop (asgi_loop_run, lifespan) is refused. */
static void test_dispatch_from_callback(void **state)
{
    (void)state;
    static in_callback ic;
    memset(&ic, 0, sizeof ic);
    ic.dispatch_rc = 99;
    ah_rec_init(&ic.nested);
    th_app(APPS "hello"); /* loaded outside the callback */
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = call_dispatch_from_start;
    rec.hook_data = &ic;
    asgi_conn *conn = get_start(APPS "hello", "/", &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "hello");
    if (ic.dispatched) {
        ah_drive_done(&ic.nested);
        asgi_conn_free(ic.dispatched);
    }
    assert_rc(ic.dispatch_rc, WSGI_OK);
    assert_non_null(ic.dispatched);
    ah_assert_ok(&ic.nested, 200, "hello");
    ah_rec_free(&ic.nested);
    ah_rec_free(&rec);
}

/* The natural host pattern: free the connection from its own on_done (and, for a client that
 * went away, from on_body). Nothing fires afterwards, nothing crashes. */
static asgi_conn *self_conn;

static void free_in_done(ah_rec *rec, int result)
{
    (void)result;
    asgi_conn_free(self_conn);
    rec->freed = 1;
}

static int free_in_body(ah_rec *rec, const char *data, size_t len, int more)
{
    (void)data;
    (void)len;
    (void)more;
    asgi_conn_free(self_conn);
    rec->freed = 1;
    return -1;
}

/* Dispatch with &self_conn as asgi_dispatch()'s out: the library sets it before any callback, so
 * a hook can free the connection even from an on_done that runs inside asgi_dispatch() (eager
 * start: the app ends in its first step). (With get_start, self_conn was assigned only after
 * asgi_dispatch returned: in eager mode free_in_done freed nothing and the connection leaked,
 * which valgrind showed once lw_asgi_conn outgrew pymalloc's 512 bytes.) */
static asgi_conn *dispatch_exposed(const char *spec, const char *target, ah_rec *rec, th_req *r)
{
    th_req_init(r, "GET", target);
    asgi_handler h = ah_handler(rec);
    self_conn = NULL;
    assert_rc(asgi_dispatch(th_app(spec), &r->req, &h, rec, &self_conn), WSGI_OK);
    assert_non_null(self_conn);
    return self_conn;
}

static void test_free_from_own_callback(void **state)
{
    (void)state;
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    rec.done_hook = free_in_done;
    self_conn = dispatch_exposed(APPS "hello", "/", &rec, &r);
    ah_drive_done(&rec);
    assert_int_equal(rec.freed, 1);
    ah_drive_idle();
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);

    ah_rec_init(&rec);
    rec.body_hook = free_in_body;
    self_conn = dispatch_exposed(APPS "gather", "/?n=3", &rec, &r);
    ah_drive_until(ah_pred_started, &rec, AH_MAX_TURNS);
    ah_drive_idle();
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "Sb");
    assert_int_equal(rec.after_free, 0);
    ah_rec_free(&rec);

    /* The loop still serves. */
    ah_rec_init(&rec);
    ah_get(APPS "hello", "/", &rec);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
}

typedef struct other_thread {
    asgi_conn *conn;
    wsgi_app *app;
    int run_rc, timeout_rc, dispatch_rc, feed_rc, disconnect_rc, resume_rc, fd_rc;
    asgi_conn *dispatched;
} other_thread;

static void *other_thread_calls(void *arg)
{
    other_thread *o = arg;
    o->run_rc = asgi_loop_run(th_rt);
    o->timeout_rc = asgi_loop_timeout(th_rt);
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_handler h = ah_handler(&rec);
    o->dispatch_rc = asgi_dispatch(o->app, &r.req, &h, &rec, &o->dispatched);
    o->feed_rc = asgi_conn_feed(o->conn, "abc", 3, 1);
    o->disconnect_rc = asgi_conn_disconnect(o->conn);
    o->resume_rc = asgi_conn_resume(o->conn);
    ah_rec_free(&rec);
    return NULL;
}

static void test_other_thread_refused(void **state)
{
    (void)state;
    char key[] = "/?key=other";
    th_req r;
    th_req_init(&r, "POST", key);
    r.req.content_length = 6;
    th_req_header(&r, "Content-Length", "6");
    ah_rec rec;
    ah_rec_init(&rec);
    wsgi_app *app = th_app("asgi_http_apps:echo");
    asgi_conn *conn = ah_dispatch(app, &r, &rec);
    assert_int_equal(ah_settle(), -1);

    other_thread o = {.conn = conn, .app = app};
    th_run_thread(other_thread_calls, &o);
    assert_rc(o.run_rc, WSGI_ERR_STATE);
    assert_rc(o.timeout_rc, WSGI_ERR_STATE);
    assert_rc(o.dispatch_rc, WSGI_ERR_STATE);
    assert_null(o.dispatched);
    assert_rc(o.feed_rc, WSGI_ERR_STATE);
    assert_rc(o.disconnect_rc, WSGI_ERR_STATE);
    assert_rc(o.resume_rc, WSGI_ERR_STATE);

    /* None of them touched the connection: it completes normally on the loop thread. */
    assert_int_equal(rec.n_events, 0);
    assert_rc(asgi_conn_feed(conn, "abcdef", 6, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "abcdef");
    ah_rec_free(&rec);
}

static void *fd_from_thread(void *arg)
{
    *(int *)arg = asgi_loop_fd(th_rt);
    return NULL;
}

/* asgi.h: "Every asgi_* function except asgi_loop_wakeup() must be called from one thread". */
static void test_loop_fd_from_other_thread(void **state)
{
    (void)state;
    loop_fd();
    int rc = 99;
    th_run_thread(fd_from_thread, &rc);
    assert_rc(rc, WSGI_ERR_STATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wakeup_before_loop_exists), /* no setup: no loop yet */
        ah_unit_test(test_loop_fd_is_stable),
        ah_unit_test(test_idle_loop),
        ah_unit_test(test_timeout_zero_after_dispatch),
        ah_unit_test(test_timeout_after_eager_dispatch_with_work_left),
        ah_unit_test(test_timeout_tracks_timers),
        ah_unit_test(test_timeout_nearest_timer),
        ah_unit_test(test_cancelled_timers_do_not_count),
        ah_unit_test(test_run_in_executor),
        ah_unit_test(test_open_connection),
        ah_unit_test(test_socketpair_io),
        ah_unit_test(test_many_concurrent_connections),
        ah_unit_test(test_wakeup_from_another_thread),
        ah_unit_test(test_wakeup_without_gil),
        ah_unit_test(test_loop_run_from_callback),
        ah_unit_test(test_dispatch_from_callback),
        ah_unit_test(test_free_from_own_callback),
        ah_unit_test(test_other_thread_refused),
        ah_unit_test(test_loop_fd_from_other_thread),
    };
    return cmocka_run_group_tests_name("asgi_loop", tests, th_group_setup, th_group_teardown);
}
