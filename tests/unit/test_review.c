/*
 * test_review.c - regression tests for bugs found in a review of lib/. Each test fails against
 * the library as reviewed; the apps are in apps/review_apps.py.
 *
 * Tests whose failure mode is a crash run the scenario in a fork()ed child (no cmocka calls in
 * the child), so one crash does not take the rest of the binary with it.
 */
#include <signal.h>
#include <sys/wait.h>

#include "asgi_harness.h"

#define APPS "review_apps:"

/* ---- helpers ------------------------------------------------------------------------------- */

/* Runs @fn in a child process; the test fails unless the child exits 0 (not killed). */
static void run_in_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka catches these to longjmp back into its runner: the child must just die. */
        int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        _exit(fn(arg));
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st)) print_error("child killed by signal %d\n", WTERMSIG(st));
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
        print_error("child exited with %d\n", WEXITSTATUS(st));
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* A cmocka-free ASGI GET / for use in a child: 0 if the app completed with @body. */
static int child_asgi_get(wsgi_app *app, const char *body)
{
    ah_rec rec;
    ah_rec_init(&rec);
    th_req r;
    th_req_init(&r, "GET", "/");
    asgi_handler h = ah_handler(&rec);
    asgi_conn *c = NULL;
    int rc = 0;
    if (asgi_dispatch(app, &r.req, &h, &rec, &c) != 0) rc = 10;
    int fd = asgi_loop_fd(th_rt);
    for (int i = 0; rc == 0 && i < 1000 && !rec.done_calls; i++) {
        int t = asgi_loop_timeout(th_rt);
        struct pollfd p = {fd, POLLIN, 0};
        (void)poll(&p, 1, t < 0 ? 1000 : t);
        if (asgi_loop_run(th_rt) != 0) rc = 11;
    }
    asgi_conn_free(c);
    if (rc == 0 && rec.done_calls != 1) rc = 12;
    if (rc == 0 && rec.done_result != 0) rc = 13;
    if (rc == 0 && strcmp(rec.body, body) != 0) rc = 14;
    ah_rec_free(&rec); /* the child ends with _exit: valgrind would count it as lost */
    return rc;
}

static int child_mutate_headers(void *arg)
{
    return child_asgi_get(arg, "survived");
}

/* WSGI GET @target on @spec, returning the body as an integer. */
static long wsgi_get_long(const char *spec)
{
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(spec, "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    long v = strtol(rec.body, NULL, 10);
    th_rec_free(&rec);
    return v;
}

/* ---- WSGI ---------------------------------------------------------------------------------- */

/* response.c wsgi_iter_next: `resp->held = chunk;` overwrites the reference write() stored in
 * resp->held (lw_response_deliver_locked) while the generator ran: the written bytes leak. */
static void test_write_inside_generator_does_not_leak(void **state)
{
    (void)state;
    long before = wsgi_get_long(APPS "wdata_refs");
    for (int i = 0; i < 5; i++) {
        th_rec rec;
        th_result res;
        th_rec_init(&rec);
        th_get(APPS "write_in_gen", "/", &rec, &res);
        th_assert_ok(&rec, &res, 200, NULL);
        assert_int_equal(rec.body_len, 1000 + 4);
        th_rec_free(&rec);
    }
    long after = wsgi_get_long(APPS "wdata_refs");
    if (after != before) print_error("refcount of the written bytes: %ld -> %ld\n", before, after);
    assert_int_equal(after, before);
}

/* ---- ASGI send() ---------------------------------------------------------------------------- */

/* asgi_conn.c lw_hdrs_parse: n is read once from PySequence_Fast(headers), which is the app's own
 * list; converting a pair can run Python code that shrinks the list, then
 * PySequence_Fast_GET_ITEM(seq, i) reads past it (NULL ob_item after clear(): SIGSEGV). */
static void test_headers_list_mutated_while_parsed(void **state)
{
    (void)state;
    wsgi_app *app = th_app(APPS "mutate_headers");
    run_in_child(child_mutate_headers, app);
}

/* asgi_conn.c lw_ac_start: when the dict lookup of "headers" raises, lw_hdrs_parse() is skipped
 * but lw_hdrs_free(&h) still runs on the uninitialised h (PyMem_Free / Py_CLEAR of garbage). */
static void test_headers_lookup_error(void **state)
{
    (void)state;
    wsgi_app *app = th_app(APPS "headers_lookup_fails");
    run_in_child(child_mutate_headers, app);
}

/* asgi_conn.c lw_ac_start: PyObject_IsTrue(trailers) == -1 is ignored; on_start runs and send()
 * returns a value with the ValueError still set (SystemError). The bad event must be rejected
 * before the head like every other invalid http.response.start: a 500. */
static void test_trailers_flag_bool_raises(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_trailers = 1;
    ah_get(APPS "bad_trailers_flag", "/", &rec);
    if (rec.status != 500) print_error("status %d, events \"%s\"\n", rec.status, rec.events);
    ah_assert_500(&rec, WSGI_ERR_APP);
    ah_rec_free(&rec);
}

/* asgi_conn.c lw_ac_receive: a cancelled receive() future stays in c->recv_waiter, so the next
 * receive() raises "receive() awaited twice at the same time" (and a body fed meanwhile is
 * handed to the cancelled future and lost). */
static void test_receive_after_cancelled_receive(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    th_req r;
    th_req_init(&r, "POST", "/");
    r.req.content_length = 5;
    th_req_header(&r, "Content-Length", "5");
    asgi_conn *c = ah_dispatch(th_app(APPS "cancel_receive"), &r, &rec);
    ah_settle();
    assert_rc(asgi_conn_feed(c, "hello", 5, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(c);
    ah_assert_ok(&rec, 200, "hello");
    ah_rec_free(&rec);
}

/* asgi_conn.c lw_ac_send: a cancelled paused send() future stays in c->send_waiter, so every
 * later send() raises "send() called before the previous send() completed". */
static void test_send_after_cancelled_send(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    rec.pause_body_at = 1;
    ah_get(APPS "cancel_send", "/", &rec);
    ah_assert_ok(&rec, 200, "ab");
    ah_rec_free(&rec);
}

/* ---- lifespan ------------------------------------------------------------------------------- */

/* asgi_loop.c asgi_lifespan_startup: PyUnicode_AsUTF8() of a failure message that cannot be
 * encoded fails, and its UnicodeEncodeError is left set when the GIL is released: the next
 * libwsgi call that runs Python fails (here asgi_loop_run: SystemError). */
static void test_lifespan_failed_message_not_utf8(void **state)
{
    (void)state;
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = APPS "lifespan_fail_surrogate";
    wsgi_app *app = th_app_with(&opts);
    assert_rc(asgi_lifespan_startup(app), WSGI_ERR_APP);
    size_t mark = th_log_mark();
    int rc = asgi_loop_run(th_rt);
    if (rc != 0) th_log_dump(mark);
    assert_rc(rc, WSGI_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_inside_generator_does_not_leak),
        cmocka_unit_test(test_headers_list_mutated_while_parsed),
        cmocka_unit_test(test_headers_lookup_error),
        cmocka_unit_test(test_trailers_flag_bool_raises),
        cmocka_unit_test(test_receive_after_cancelled_receive),
        cmocka_unit_test(test_send_after_cancelled_send),
        cmocka_unit_test(test_lifespan_failed_message_not_utf8),
    };
    return cmocka_run_group_tests_name("review", tests, th_group_setup, th_group_teardown);
}
