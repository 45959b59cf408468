/*
 * test_asgi_task.c - what an app sees of its task whichever way it starts (this binary runs in
 * both modes, see asgi_harness.h): asyncio.current_task() is one real Task before and after its
 * first real wait, contextvars are per request, a request that blocks can be cancelled, timeouts
 * work (asyncio.timeout in the first step included), an exception before or after the first wait
 * is a 500 (a cut after the head) with on_done once, async generators are finalized by the loop,
 * anyio's cancel scopes work. Then what is specific to eager start (asgi_loop_set_eager): an app
 * that never waits is complete when asgi_dispatch returns, with nothing left for a loop turn; the
 * host may free the connection from on_done inside asgi_dispatch; the loop cannot be re-entered
 * from a callback; a dispatch from a callback starts at the next turn.
 *
 * Apps are in apps/asgi_task_apps.py.
 */
#include "asgi_harness.h"

#define APPS   "asgi_task_apps:"
#define REPORT APPS "report"

static const char *new_key(char *buf, size_t cap)
{
    static int n;
    snprintf(buf, cap, "e%d", ++n);
    return buf;
}

#define assert_notes(key, expected)                                                                \
    do {                                                                                           \
        char target_[128], notes_[4096];                                                           \
        snprintf(target_, sizeof target_, "/%s", (key));                                           \
        ah_get_body(REPORT, target_, notes_, sizeof notes_);                                       \
        if (strcmp(notes_, (expected)) != 0)                                                       \
            print_error("notes[%s]:\n%s\n-- expected:\n%s\n", (key), notes_, (expected));          \
        assert_string_equal(notes_, (expected));                                                   \
    } while (0)

static asgi_conn *start(const char *app, const char *key, const char *extra, ah_rec *rec, th_req *r)
{
    char target[256];
    snprintf(target, sizeof target, "/?key=%s%s", key, extra ? extra : "");
    th_req_init(r, "GET", target);
    return ah_dispatch(th_app(app), r, rec);
}

/* ---- semantics, either mode ----------------------------------------------------------------- */

static void test_current_task_identity(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "identity", key, NULL, &rec, &r);
    if (ah_env_eager()) {
        /* The first step ran inside asgi_dispatch, up to the future resolved by the next turn. */
        assert_int_equal(rec.n_events, 0);
        assert_int_equal(asgi_loop_timeout(th_rt), 0);
        assert_notes(key, "task Task, a Task True, running True, registered True, coro True");
    }
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "ok");
    assert_notes(key, "task Task, a Task True, running True, registered True, coro True\n"
                      "after a future: same True\n"
                      "after sleep(0): same True\n"
                      "after a timer: same True, done False");
    ah_rec_free(&rec);
}

static void test_contextvars_per_request(void **state)
{
    (void)state;
    char ka[32], kb[32], kc[32];
    new_key(ka, sizeof ka);
    new_key(kb, sizeof kb);
    new_key(kc, sizeof kc);
    th_req ra, rb, rc;
    ah_rec a, b, c;
    ah_rec_init(&a);
    ah_rec_init(&b);
    ah_rec_init(&c);
    /* Both wait at once; each sets its own value before the wait. */
    asgi_conn *ca = start(APPS "ctxvar", ka, "&value=a", &a, &ra);
    asgi_conn *cb = start(APPS "ctxvar", kb, "&value=b", &b, &rb);
    ah_drive_done(&a);
    ah_drive_done(&b);
    asgi_conn_free(ca);
    asgi_conn_free(cb);
    ah_assert_ok(&a, 200, "a");
    ah_assert_ok(&b, 200, "b");
    /* And nothing of theirs is left on the loop thread for the next one. */
    asgi_conn *cc = start(APPS "ctxvar", kc, "&value=c", &c, &rc);
    ah_drive_done(&c);
    asgi_conn_free(cc);
    ah_assert_ok(&c, 200, "c");
    assert_notes(ka, "start unset\nafter a wait a");
    assert_notes(kb, "start unset\nafter a wait b");
    assert_notes(kc, "start unset\nafter a wait c");
    ah_rec_free(&a);
    ah_rec_free(&b);
    ah_rec_free(&c);
}

/* A request that blocks is cancelled by another request: the CancelledError reaches it at its
 * wait, and it ends as a cancelled task that had not responded (a 500). */
static void test_cancel_blocked_request(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "blocker", key, NULL, &rec, &r);
    assert_int_equal(ah_settle(), -1); /* blocked, nothing scheduled */
    assert_int_equal(rec.n_events, 0);
    ah_rec other;
    ah_rec_init(&other);
    char target[64];
    snprintf(target, sizeof target, "/?key=%s", key);
    ah_get(APPS "canceller", target, &other);
    ah_assert_ok(&other, 200, "cancelled");
    ah_drive_done(&rec);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_rc(asgi_conn_error(conn), WSGI_ERR_APP);
    assert_non_null(strstr(asgi_conn_errmsg(conn), "cancelled"));
    asgi_conn_free(conn);
    assert_notes(key, "cancel() -> True\ncancelled");
    ah_rec_free(&other);
    ah_rec_free(&rec);
}

static void test_timeouts_in_the_app(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "timeouts", key, NULL, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 504, "timed out");
    assert_notes(key, "timeout: TimeoutError\nwait_for: TimeoutError\nunexpired timeout: fine");
    assert_int_equal(ah_settle(), -1); /* no timer left behind */
    ah_rec_free(&rec);
}

static void test_exception_before_first_wait(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "raise_at_once"), &r, &rec);
    if (ah_env_eager()) {
        /* Answered and ended inside asgi_dispatch. */
        assert_string_equal(rec.events, "SbD");
        assert_int_equal(asgi_loop_timeout(th_rt), -1);
    }
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test raised before any wait"), 1);
    ah_rec_free(&rec);
}

static void test_exception_after_first_wait(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "raise_after_wait"), &r, &rec);
    assert_int_equal(rec.n_events, 0); /* waiting for its timer, either way */
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test raised after a wait"), 1);
    ah_rec_free(&rec);
}

static void test_exception_after_the_head(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "raise_after_start"), &r, &rec);
    if (ah_env_eager()) assert_string_equal(rec.events, "SB"); /* the first step sent them */
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "SBD");
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "part");
    assert_rc(rec.done_result, WSGI_ERR_APP); /* cut */
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test raised after the head"), 1);
    ah_rec_free(&rec);
}

static void test_async_generator_finalized(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "agen_left_open", key, NULL, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "ok");
    ah_drive_idle(); /* the finalizer's aclose() task */
    assert_notes(key, "first item 1\nagen closed by the loop");
    ah_rec_free(&rec);
}

static void test_anyio_cancel_scopes(void **state)
{
    (void)state;
    /* anyio is Debian's python3-anyio: scripts/python-matrix.sh runs the unit tests against other
     * Pythons (the standard library only) and says so with LIBWSGI_TEST_STDLIB_ONLY=1. */
    if (getenv("LIBWSGI_TEST_STDLIB_ONLY")) skip();
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "anyio_scopes", key, NULL, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "ok");
    assert_notes(key, "cancel scope: cancelled True\nmove_on_after: True\ntask group: done");
    ah_rec_free(&rec);
}

static void test_loop_stop_in_app(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "stop_loop", key, NULL, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "stopped");
    assert_notes(key, "after stop(): running True");
    assert_int_equal(ah_settle(), -1);
    ah_rec_free(&rec);
}

/* The lifespan runs the loop to completion itself (run_until_complete): after requests and
 * turns have run, and before more. */
static void test_lifespan_between_requests(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(APPS "hello", "/", &rec);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
    wsgi_app *app = th_app(APPS "with_lifespan");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    ah_rec_init(&rec);
    ah_get(APPS "with_lifespan", "/", &rec);
    ah_assert_ok(&rec, 200, "yes");
    ah_rec_free(&rec);
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    ah_rec_init(&rec);
    ah_get(APPS "hello", "/", &rec);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
}

/* ---- eager start only ----------------------------------------------------------------------- */

/* Runs @setup (it puts something on the loop), three requests to @each (@each_body: their
 * body, or NULL), then @setup with "&undo=1" (it takes it away and notes what it saw), all
 * under @key, each driven to its end. */
static void around_three_requests(const char *setup, const char *each, const char *each_body,
                                  const char *key)
{
    for (int i = 0; i < 5; i++) {
        int edge = i == 0 || i == 4;
        ah_rec rec;
        th_req r;
        ah_rec_init(&rec);
        asgi_conn *conn = start(edge ? setup : each, key, i == 4 ? "&undo=1" : NULL, &rec, &r);
        ah_drive_done(&rec);
        asgi_conn_free(conn);
        ah_assert_ok(&rec, 200, edge ? "ok" : each_body);
        ah_rec_free(&rec);
    }
}

/* An app (or a monitoring library) that wraps call_soon on the loop instance keeps its wrapper,
 * and the wrapper sees the loop's work: eager start must not drop or bypass it (it overrides
 * call_soon on the instance for the length of each Task() call). */
static void test_instance_call_soon_patch_survives(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    /* requests created while the patch is in place */
    around_three_requests(APPS "patch_call_soon", APPS "identity", "ok", key);
    char expected[1024];
    snprintf(expected, sizeof expected, "%s",
             "task Task, a Task True, running True, registered True, coro True\n"
             "after a future: same True\n"
             "after sleep(0): same True\n"
             "after a timer: same True, done False\n");
    char all[4096] = "";
    for (int i = 0; i < 3; i++)
        strcat(all, expected);
    strcat(all, "still patched True, calls seen True");
    assert_notes(key, all);
}

/* A task factory set on the loop (monitoring tools: Sentry's AsyncioIntegration) makes every
 * request's Task, whatever the start mode: eager and lazy start make their Task themselves, so
 * with a factory in place a request starts the deferred way, through loop.create_task. */
static void test_task_factory_makes_request_tasks(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    around_three_requests(APPS "set_task_factory", APPS "hello", NULL, key);
    assert_notes(key, "request tasks made by the factory: 4"); /* 3 hellos and the undo */
}

/* An app that never waits is complete when asgi_dispatch returns: no loop turn is asked for. */
static void test_eager_needs_no_turn(void **state)
{
    (void)state;
    ah_set_eager(1);
    for (int i = 0; i < 64; i++) {
        th_req r;
        th_req_init(&r, "GET", "/");
        ah_rec rec;
        ah_rec_init(&rec);
        asgi_conn *conn = ah_dispatch(th_app(APPS "hello"), &r, &rec);
        ah_assert_ok(&rec, 200, "hello");
        assert_string_equal(rec.events, "SbD");
        assert_int_equal(asgi_loop_timeout(th_rt), -1);
        asgi_conn_free(conn);
        ah_rec_free(&rec);
    }
    /* A dispatch made with eager start off waits for its turn. */
    ah_set_eager(0);
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "hello"), &r, &rec);
    assert_int_equal(rec.n_events, 0);
    assert_int_equal(asgi_loop_timeout(th_rt), 0);
    assert_int_equal(ah_drive_done(&rec), 1);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
}

/* The handle is written before the first callback: a host that keeps it where `out` points can
 * free it from on_done, inside asgi_dispatch. */
static void free_via_out(ah_rec *rec, int result)
{
    (void)result;
    asgi_conn **slot = rec->hook_data;
    assert_non_null(*slot);
    asgi_conn_free(*slot);
    *slot = NULL;
    rec->freed = 1;
}

static void test_eager_free_from_on_done(void **state)
{
    (void)state;
    ah_set_eager(1);
    asgi_conn *slot = NULL;
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    rec.done_hook = free_via_out;
    rec.hook_data = &slot;
    asgi_handler h = ah_handler(&rec);
    assert_rc(asgi_dispatch(th_app(APPS "hello"), &r.req, &h, &rec, &slot), WSGI_OK);
    assert_null(slot); /* freed from on_done, before asgi_dispatch returned */
    ah_drive_idle();
    ah_assert_ok(&rec, 200, "hello");
    assert_int_equal(rec.after_free, 0);
    ah_rec_free(&rec);
}

typedef struct in_step {
    int run_rc, lifespan_rc;
    ah_rec nested;
    th_req req;
    asgi_conn *dispatched;
    int dispatch_rc, nested_events_at_return;
} in_step;

static int reenter_from_start(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    in_step *s = rec->hook_data;
    s->run_rc = asgi_loop_run(th_rt);
    s->lifespan_rc = asgi_lifespan_startup(th_app(APPS "hello"));
    asgi_handler h = ah_handler(&s->nested);
    th_req_init(&s->req, "GET", "/");
    s->dispatch_rc =
        asgi_dispatch(th_app(APPS "hello"), &s->req.req, &h, &s->nested, &s->dispatched);
    s->nested_events_at_return = (int)s->nested.n_events;
    return 0;
}

/* Inside an eager step the loop counts as running: asgi_loop_run and the lifespan are refused,
 * and a dispatch (another task cannot start while this one is in its step) starts at the next
 * turn. */
static void test_eager_step_is_a_turn(void **state)
{
    (void)state;
    ah_set_eager(1);
    static in_step s;
    memset(&s, 0, sizeof s);
    s.run_rc = s.lifespan_rc = s.dispatch_rc = 99;
    ah_rec_init(&s.nested);
    th_app(APPS "hello"); /* loaded outside the callback */
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = reenter_from_start;
    rec.hook_data = &s;
    asgi_conn *conn = ah_dispatch(th_app(APPS "hello"), &r, &rec);
    ah_assert_ok(&rec, 200, "hello"); /* complete inside asgi_dispatch */
    asgi_conn_free(conn);
    assert_rc(s.run_rc, WSGI_ERR_RECURSIVE);
    assert_rc(s.lifespan_rc, WSGI_ERR_RECURSIVE);
    assert_rc(s.dispatch_rc, WSGI_OK);
    assert_non_null(s.dispatched);
    assert_int_equal(s.nested_events_at_return, 0);
    assert_int_equal(s.nested.n_events, 0);
    assert_int_equal(asgi_loop_timeout(th_rt), 0); /* the nested task is ready */
    ah_drive_done(&s.nested);
    asgi_conn_free(s.dispatched);
    ah_assert_ok(&s.nested, 200, "hello");
    ah_rec_free(&s.nested);
    ah_rec_free(&rec);
}

/* ---- lazy tasks: a request that starts eagerly runs without a Task until it needs one ----------
 */

static int ah_env_lazy(void)
{
    const char *e = getenv("LIBWSGI_ASGI_LAZY_TASKS");
    return ah_env_eager() && !(e && strcmp(e, "0") == 0);
}

/* A GET of @app with ?key=KEY@extra, driven to the end: status and body checked. */
static void run_ok(const char *app, const char *key, const char *extra, const char *body)
{
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(app, key, extra, &rec, &r);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, body);
    ah_rec_free(&rec);
}

/* A request that never waits gets no Task: the loop registers none (with lazy tasks), one per
 * request otherwise. One that waits gets one, which current_task() and all_tasks() report. */
static void test_tasks_only_when_needed(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    run_ok(APPS "tasks_made", key, "&start=1", "counting");
    char made[64];
    ah_get_body(APPS "tasks_made", "/", made, sizeof made);
    if (strcmp(made, "unknown") == 0) skip(); /* Python 3.13+: Tasks are not countable */
    for (int i = 0; i < 3; i++)
        run_ok(APPS "hello", key, NULL, "hello");
    run_ok(APPS "tasks_made", key, NULL, ah_env_lazy() ? "0" : "5"); /* these too */
    run_ok(APPS "wait_once", key, NULL, "ok");
    assert_notes(key, "after the wait: a Task True, in all_tasks True");
    run_ok(APPS "tasks_made", key, NULL, ah_env_lazy() ? "1" : "8");
}

/* current_task() asked before any wait, and the request ends without one: the same Task all along,
 * in all_tasks(), and it ends done with the coroutine's result, complete inside asgi_dispatch. */
static void test_task_asked_for_without_waiting(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    th_req r;
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = start(APPS "task_without_wait", key, NULL, &rec, &r);
    if (ah_env_eager()) assert_string_equal(rec.events, "SbD");
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "ok");
    ah_rec_free(&rec);
    run_ok(APPS "task_state", key, NULL, "ok");
    assert_notes(key, "a Task True, same again True, in all_tasks True, done False\n"
                      "done True, cancelled False, result None");
}

/* The task cancelled by the app itself before its first wait: the wait raises CancelledError and
 * what it waited on is cancelled; cancelled and returning without a wait: a complete response,
 * the task ends cancelled. */
static void test_cancel_self_before_first_wait(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    run_ok(APPS "cancel_self_first", key, NULL, "ok");
    assert_notes(key, "cancel() -> True\n"
                      "CancelledError at the first wait, its future cancelled True\n"
                      "then waits normally");
    new_key(key, sizeof key);
    run_ok(APPS "cancel_self_and_return", key, NULL, "ok");
    run_ok(APPS "task_state", key, NULL, "ok");
    assert_notes(key, "done True, cancelled True, result None");
}

/* A first wait on something no Task accepts: RuntimeError thrown into the coroutine. */
static void test_bad_first_yield(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    run_ok(APPS "bad_yield", key, NULL, "ok");
    assert_notes(key, "RuntimeError: Task got bad yield: 5");
}

static int cancel_from_start(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    asgi_conn **slot = rec->hook_data;
    assert_rc(asgi_conn_cancel(*slot), WSGI_OK);
    return 0;
}

/* The host cancels from a callback of the app's first step (no Task yet with lazy tasks): the
 * request gets one, cancelled, and its next wait raises CancelledError; the response that was
 * started is cut and on_done reports the cancellation. */
static void test_host_cancel_during_first_step(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    asgi_conn *conn = NULL;
    th_req r;
    char target[64];
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = cancel_from_start;
    rec.hook_data = &conn;
    asgi_handler h = ah_handler(&rec);
    assert_rc(asgi_dispatch(th_app(APPS "raise_after_start"), &r.req, &h, &rec, &conn), WSGI_OK);
    ah_drive_done(&rec);
    assert_int_equal(rec.done_calls, 1);
    assert_rc(rec.done_result, WSGI_ERR_APP);
    asgi_conn_free(conn);
    ah_rec_free(&rec);
}

/* A callable forced to the ASGI interface (a plain function: not detected as ASGI). */
static wsgi_app *forced_asgi(const char *spec)
{
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = spec;
    opts.interface = WSGI_INTERFACE_ASGI;
    return th_app_with(&opts);
}

/* An app callable that returns an awaitable object that is not a coroutine is awaited as such (in
 * a Task); one that raises before returning anything is a 500, the exception logged. */
static void test_app_call_not_a_coroutine(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(forced_asgi(APPS "awaitable_object"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "awaited");
    ah_rec_free(&rec);
    assert_notes(key, "awaitable object: in a Task True");
    th_req_init(&r, "GET", "/");
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    conn = ah_dispatch(forced_asgi(APPS "raises_in_call"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test raised in the call") >= 1);
    ah_rec_free(&rec);
}

/* The Task a request gets at its first wait shows the app's coroutine (repr, get_stack, the
 * coroutine's code), and, kept in a local of that coroutine, it is released once the request is
 * done. */
static void test_task_introspection_and_collection(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    run_ok(APPS "introspect_after_wait", key, NULL, "ok");
    ah_drive_idle();
    run_ok(APPS "collected", key, NULL, "ok");
    /* (a Task made before the first step runs run_asgi around the app: its stack is run_asgi's) */
    assert_notes(key, ah_env_lazy() ? "stack has the app True, coro introspect_after_wait, in the "
                                      "repr True\ntask collected True"
                                    : "stack has the app False, coro run_asgi, in the repr True\n"
                                      "task collected True");
}

/* Cancelled before its first wait, which is on a Task or a gather(): what it awaits is cancelled,
 * and the await raises CancelledError once that has ended (as Task.__step does: it cancels its
 * _fut_waiter and waits for it), not at once (a Task's cancel() does not end it). */
static void test_cancel_self_then_await_task(void **state)
{
    (void)state;
    char key[32];
    new_key(key, sizeof key);
    run_ok(APPS "cancel_self_then_await_task", key, NULL, "ok");
    run_ok(APPS "cancel_self_then_await_task", key, "&gather=1", "ok");
    run_ok(APPS "cancel_self_then_sleep0", key, NULL, "ok");
    assert_notes(key, "CancelledError, what it awaited done True\n"
                      "CancelledError, what it awaited done True\n"
                      "CancelledError at sleep(0)");
}

/* An app callable returning None: the TypeError that awaiting None raises, a 500. */
static void test_app_call_returns_none(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    asgi_conn *conn = ah_dispatch(forced_asgi(APPS "returns_none"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "can't be used in 'await' expression") >= 1);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, "not callable"), 0);
    ah_rec_free(&rec);
}

/* A plain-function app (a wrapper) that asks for asyncio.current_task() before it returns its
 * coroutine (or an awaitable object) gets the request's Task, the one the coroutine then runs in
 * (with or without a wait), as when the call is made inside the Task. */
static void test_task_asked_for_in_the_call(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    wsgi_app *app = forced_asgi(APPS "task_in_call");
    static const char *const extra[] = {"", "&wait=1", "&obj=1", "&obj=1&wait=1"};
    for (int i = 0; i < 4; i++) {
        snprintf(target, sizeof target, "/?key=%s%s", key, extra[i]);
        th_req r;
        th_req_init(&r, "GET", target);
        ah_rec rec;
        ah_rec_init(&rec);
        asgi_conn *conn = ah_dispatch(app, &r, &rec);
        ah_drive_done(&rec);
        asgi_conn_free(conn);
        ah_assert_ok(&rec, 200, "ok");
        ah_rec_free(&rec);
    }
    assert_notes(key, "in the call: a Task True\n"
                      "in the coroutine: same True, after a wait True\n"
                      "in the call: a Task True\n"
                      "in the coroutine: same True, after a wait True\n"
                      "in the call: a Task True\n"
                      "in the coroutine: same True, after a wait True\n"
                      "in the call: a Task True\n"
                      "in the coroutine: same True, after a wait True");
}

/* An app that raises GeneratorExit itself, in its first step or after a wait, from its own
 * coroutine or an awaitable object: an application error (a 500 and on_done), whichever way its
 * task started. (GeneratorExit is also what closing a coroutine throws in, which has nobody to
 * report to; an app's own is not that: with a Task from the start, or once a lazily started
 * request had its Task, the request used to end without on_done.) */
static void test_generator_exit_is_an_app_error(void **state)
{
    (void)state;
    static const char *const spec[] = {APPS "raises_generator_exit", APPS "raises_generator_exit",
                                       APPS "raises_generator_exit_obj",
                                       APPS "raises_generator_exit_obj"};
    static const char *const target[] = {"/", "/?wait=1", "/", "/?wait=1"};
    for (int i = 0; i < 4; i++) {
        th_req r;
        th_req_init(&r, "GET", target[i]);
        ah_rec rec;
        ah_rec_init(&rec);
        size_t mark = th_log_mark();
        asgi_conn *conn = ah_dispatch(i < 2 ? th_app(spec[i]) : forced_asgi(spec[i]), &r, &rec);
        ah_drive_done(&rec);
        asgi_conn_free(conn);
        ah_assert_500(&rec, WSGI_ERR_APP);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, "GeneratorExit") >= 1);
        ah_rec_free(&rec);
    }
}

/* loop.stop() in a request's step ends that step (a turn, or with eager start the step inside
 * asgi_dispatch) only: the lifespan calls that run the loop next complete (with eager start the
 * stop was left set, and run_until_complete gave up: "Event loop stopped before Future
 * completed"). */
static void test_loop_stop_then_lifespan(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    wsgi_app *app = th_app(APPS "lifespan_after_stop");
    asgi_conn *conn = ah_dispatch(th_app(APPS "stop_no_wait"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "stopped");
    ah_rec_free(&rec);
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    ah_rec_init(&rec);
    th_req_init(&r, "GET", "/");
    conn = ah_dispatch(th_app(APPS "stop_no_wait"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "stopped");
    ah_rec_free(&rec);
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_current_task_identity),
        ah_unit_test(test_instance_call_soon_patch_survives),
        ah_unit_test(test_task_factory_makes_request_tasks),
        ah_unit_test(test_contextvars_per_request),
        ah_unit_test(test_cancel_blocked_request),
        ah_unit_test(test_timeouts_in_the_app),
        ah_unit_test(test_exception_before_first_wait),
        ah_unit_test(test_exception_after_first_wait),
        ah_unit_test(test_exception_after_the_head),
        ah_unit_test(test_async_generator_finalized),
        ah_unit_test(test_anyio_cancel_scopes),
        ah_unit_test(test_loop_stop_in_app),
        ah_unit_test(test_lifespan_between_requests),
        ah_unit_test(test_eager_needs_no_turn),
        ah_unit_test(test_eager_free_from_on_done),
        ah_unit_test(test_eager_step_is_a_turn),
        ah_unit_test(test_tasks_only_when_needed),
        ah_unit_test(test_task_asked_for_without_waiting),
        ah_unit_test(test_cancel_self_before_first_wait),
        ah_unit_test(test_bad_first_yield),
        ah_unit_test(test_host_cancel_during_first_step),
        ah_unit_test(test_app_call_not_a_coroutine),
        ah_unit_test(test_task_introspection_and_collection),
        ah_unit_test(test_cancel_self_then_await_task),
        ah_unit_test(test_app_call_returns_none),
        ah_unit_test(test_task_asked_for_in_the_call),
        ah_unit_test(test_generator_exit_is_an_app_error),
        ah_unit_test(test_loop_stop_then_lifespan),
    };
    return cmocka_run_group_tests_name("asgi_task", tests, th_group_setup, th_group_teardown);
}
