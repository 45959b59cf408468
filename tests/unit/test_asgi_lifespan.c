/*
 * test_asgi_lifespan.c - asgi_lifespan_startup/shutdown: complete, failed (with its message),
 * unsupported (auto mode: the app raised on the lifespan scope, serving goes on), errors during
 * shutdown, repeated and missing calls, non-ASGI apps, and the lifespan state that each request
 * scope receives as a shallow copy.
 *
 * Startup runs once per loaded app, so every test loads its own app object from the factory
 * asgi_lifespan_apps:make(mode).
 */
#include "asgi_harness.h"

static wsgi_app *load(const char *mode)
{
    char spec[128];
    snprintf(spec, sizeof spec, "asgi_lifespan_apps:make('%s')", mode);
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = spec;
    wsgi_app *app = th_app_with(&opts);
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_ASGI);
    return app;
}

/* GET @target on @app; 200 expected; the body is copied into @out. */
static void get(wsgi_app *app, const char *target, char *out, size_t cap)
{
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    ah_run(app, &r, &rec);
    ah_assert_ok(&rec, 200, NULL);
    snprintf(out, cap, "%s", rec.body);
    ah_rec_free(&rec);
}

#define assert_get(app, target, expected)                                                          \
    do {                                                                                           \
        char body_[4096];                                                                          \
        get((app), (target), body_, sizeof body_);                                                 \
        if (strcmp(body_, (expected)) != 0)                                                        \
            print_error("GET %s: \"%s\"\n  expected \"%s\"\n", (target), body_, (expected));       \
        assert_string_equal(body_, (expected));                                                    \
    } while (0)

static int group_setup(void **state)
{
    if (th_group_setup(state) != 0) return -1;
    /* The main thread becomes the loop thread before any test runs. */
    return asgi_loop_fd(th_rt) >= 0 ? 0 : -1;
}

static void test_startup_and_shutdown_complete(void **state)
{
    (void)state;
    wsgi_app *app = load("complete");
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    assert_string_equal(wsgi_errmsg(), "");
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    /* The lifespan task now waits for shutdown: nothing is scheduled. */
    assert_int_equal(ah_settle(), -1);
    assert_get(app, "/notes", "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup");

    /* Each request sees the state written during startup, as a shallow copy: top-level changes
     * made by one request are not seen by the next, changes inside nested objects are. */
    assert_get(app, "/state", "{'items': ['startup'], 'name': 'lifespan-complete'}");
    assert_get(app, "/state", "{'items': ['startup', 'request'], 'name': 'lifespan-complete'}");
    assert_get(app, "/state",
               "{'items': ['startup', 'request', 'request'], 'name': 'lifespan-complete'}");

    mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    assert_get(app, "/notes",
               "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup\n"
               "lifespan.shutdown\nafter shutdown.complete");
    ah_drive_idle();
}

static void test_startup_failed(void **state)
{
    (void)state;
    wsgi_app *app = load("startup_failed");
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_startup(app), WSGI_ERR_APP);
    assert_str_contains(wsgi_errmsg(), "libwsgi-test: database unreachable");
    if (th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test: database unreachable") == 0)
        th_log_dump(mark);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test: database unreachable") > 0);
    /* Startup ran (and failed): it does not run again. */
    assert_rc(asgi_lifespan_startup(app), WSGI_ERR_STATE);
    assert_get(app, "/notes", "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup");
    ah_drive_idle();
}

/* Auto mode: an app that raises on the lifespan scope does not speak lifespan; that is not an
 * error (no ERROR log), and requests are served normally with an empty state. */
static void test_lifespan_unsupported(void **state)
{
    (void)state;
    wsgi_app *app = load("unsupported");
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_startup(app), ASGI_LIFESPAN_UNSUPPORTED);
    if (th_log_count(mark, WSGI_LOG_ERROR, NULL) != 0) th_log_dump(mark);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    assert_true(th_log_count(mark, -1, "libwsgi-test: only http") > 0);
    assert_get(app, "/", "ok");
    assert_get(app, "/state", "{}");
    assert_get(app, "/state", "{}");
    assert_rc(asgi_lifespan_startup(app), WSGI_ERR_STATE);
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    assert_get(app, "/", "ok");
    ah_drive_idle();
}

static void test_shutdown_failed(void **state)
{
    (void)state;
    wsgi_app *app = load("shutdown_failed");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_ERR_APP);
    assert_str_contains(wsgi_errmsg(), "libwsgi-test: flush failed");
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test: flush failed") > 0);
    ah_drive_idle();
}

static void test_raise_in_shutdown(void **state)
{
    (void)state;
    wsgi_app *app = load("raise_in_shutdown");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_ERR_APP);
    assert_str_contains(wsgi_errmsg(), "libwsgi-test: shutdown exploded");
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test: shutdown exploded") > 0);
    ah_drive_idle();
}

static void test_startup_twice(void **state)
{
    (void)state;
    wsgi_app *app = load("twice");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    assert_rc(asgi_lifespan_startup(app), WSGI_ERR_STATE);
    assert_true(wsgi_errmsg()[0] != '\0');
    /* The refused second call sent nothing to the app. */
    assert_get(app, "/notes", "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup");
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    ah_drive_idle();
}

static void test_shutdown_without_startup(void **state)
{
    (void)state;
    wsgi_app *app = load("never_started");
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    assert_string_equal(wsgi_errmsg(), "");
    /* The app never saw a lifespan scope. */
    assert_get(app, "/notes", "");
    assert_get(app, "/state", "{}");
}

/* The app may return from the lifespan scope right after startup.complete. */
static void test_app_returns_after_startup(void **state)
{
    (void)state;
    wsgi_app *app = load("return_early");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    assert_get(app, "/state", "{'items': ['startup'], 'name': 'lifespan-return_early'}");
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    ah_drive_idle();
}

/* A lifespan loop without a return after shutdown.complete waits in receive() for an event that
 * will never come: shutdown ends there (no 30 s wait for the task, as uvicorn does not wait), the
 * task is cancelled where it waits, and that cancellation is not reported as the app's error. */
static void test_receive_after_shutdown_complete(void **state)
{
    (void)state;
    wsgi_app *app = load("loop_on");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    ah_drive_idle();
    if (th_log_count(mark, WSGI_LOG_WARNING, NULL) != 0) th_log_dump(mark);
    assert_int_equal(th_log_count(mark, WSGI_LOG_WARNING, NULL), 0);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    assert_get(app, "/notes",
               "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup\n"
               "lifespan.shutdown\nafter shutdown.complete\ncancelled in receive()");
}

/* An app that answers startup only and, given lifespan.shutdown, calls receive() again would make
 * the shutdown wait for good (a worker that never exits on SIGTERM): no event will ever come, so
 * the app is taken to have ended there, as if it had returned without answering (which counts as
 * complete), and its task is cancelled. */
static void test_shutdown_not_answered_but_waiting(void **state)
{
    (void)state;
    wsgi_app *app = load("ignore_shutdown");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    size_t mark = th_log_mark();
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    ah_drive_idle();
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    assert_true(th_log_count(mark, WSGI_LOG_WARNING, "lifespan.shutdown") > 0);
    assert_get(app, "/notes",
               "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup\n"
               "lifespan.shutdown\ncancelled in receive()");
}

/* Startup and shutdown that wait on timers and a worker thread: the library drives the loop
 * until each phase completes. */
static void test_lifespan_awaiting_io(void **state)
{
    (void)state;
    wsgi_app *app = load("slow");
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    assert_get(app, "/state", "{'items': ['startup'], 'name': 'lifespan-slow'}");
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    assert_get(app, "/notes",
               "scope type=lifespan asgi.version=3.0 state=dict\nlifespan.startup\n"
               "lifespan.shutdown\nafter shutdown.complete");
    ah_drive_idle();
}

static void test_refused_calls(void **state)
{
    (void)state;
    wsgi_app *wsgi = th_app("asgi_lifespan_apps:wsgi");
    assert_int_equal(wsgi_app_interface(wsgi), WSGI_INTERFACE_WSGI);
    assert_rc(asgi_lifespan_startup(wsgi), WSGI_ERR_INTERFACE);
    assert_true(wsgi_errmsg()[0] != '\0');
    assert_rc(asgi_lifespan_shutdown(wsgi), WSGI_ERR_INTERFACE);
    assert_true(wsgi_errmsg()[0] != '\0');
    assert_rc(asgi_lifespan_startup(NULL), WSGI_ERR_INVAL);
    assert_rc(asgi_lifespan_shutdown(NULL), WSGI_ERR_INVAL);
}

typedef struct thread_call {
    wsgi_app *app;
    int startup_rc, shutdown_rc;
} thread_call;

static void *lifespan_thread(void *arg)
{
    thread_call *t = arg;
    t->startup_rc = asgi_lifespan_startup(t->app);
    t->shutdown_rc = asgi_lifespan_shutdown(t->app);
    return NULL;
}

static void test_other_thread_refused(void **state)
{
    (void)state;
    wsgi_app *app = load("other_thread");
    thread_call t = {app, 99, 99};
    th_run_thread(lifespan_thread, &t);
    assert_rc(t.startup_rc, WSGI_ERR_STATE);
    assert_rc(t.shutdown_rc, WSGI_ERR_STATE);
    /* The refused calls did nothing: startup still works from the loop thread. */
    assert_rc(asgi_lifespan_startup(app), WSGI_OK);
    assert_rc(asgi_lifespan_shutdown(app), WSGI_OK);
    ah_drive_idle();
}

/* From inside a host callback (during a loop turn), lifespan calls are refused. */
static int startup_in_callback(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    thread_call *t = rec->hook_data;
    t->startup_rc = asgi_lifespan_startup(t->app);
    t->shutdown_rc = asgi_lifespan_shutdown(t->app);
    return 0;
}

static void test_lifespan_from_callback_refused(void **state)
{
    (void)state;
    wsgi_app *target = load("from_callback");
    thread_call t = {target, 99, 99};
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = startup_in_callback;
    rec.hook_data = &t;
    ah_run(load("from_callback_host"), &r, &rec);
    ah_assert_ok(&rec, 200, "ok");
    assert_rc(t.startup_rc, WSGI_ERR_RECURSIVE);
    assert_rc(t.shutdown_rc, WSGI_ERR_RECURSIVE);
    ah_rec_free(&rec);
    assert_rc(asgi_lifespan_startup(target), WSGI_OK);
    assert_rc(asgi_lifespan_shutdown(target), WSGI_OK);
    ah_drive_idle();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_startup_and_shutdown_complete),
        ah_unit_test(test_startup_failed),
        ah_unit_test(test_lifespan_unsupported),
        ah_unit_test(test_shutdown_failed),
        ah_unit_test(test_raise_in_shutdown),
        ah_unit_test(test_startup_twice),
        ah_unit_test(test_shutdown_without_startup),
        ah_unit_test(test_app_returns_after_startup),
        ah_unit_test(test_receive_after_shutdown_complete),
        ah_unit_test(test_shutdown_not_answered_but_waiting),
        ah_unit_test(test_lifespan_awaiting_io),
        ah_unit_test(test_refused_calls),
        ah_unit_test(test_other_thread_refused),
        ah_unit_test(test_lifespan_from_callback_refused),
    };
    return cmocka_run_group_tests_name("asgi_lifespan", tests, group_setup, th_group_teardown);
}
