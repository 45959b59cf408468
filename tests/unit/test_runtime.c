/*
 * test_runtime.c - the embedded interpreter: options, isolation, sys.path and chdir, logging,
 * signal dispositions, one runtime per process, and Python thread states per host thread.
 */
#include "harness.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>

#define IGNORED_PYTHONPATH "/tmp/libwsgi-test-pythonpath-must-be-ignored"

static char chdir_target[PATH_MAX]; /* a fresh temporary directory */
static struct sigaction sigint_before, sigpipe_before;

static int group_setup(void **state)
{
    (void)state;
    /* An isolated interpreter ignores PYTHON* variables: plant one to prove it. */
    setenv("PYTHONPATH", IGNORED_PYTHONPATH, 1);
    /* Python would replace a default SIGINT disposition with its own handler. */
    signal(SIGINT, SIG_DFL);
    sigaction(SIGINT, NULL, &sigint_before);
    sigaction(SIGPIPE, NULL, &sigpipe_before);

    char tmpl[] = "/tmp/libwsgi-test-runtime-XXXXXX";
    if (mkdtemp(tmpl) == NULL || realpath(tmpl, chdir_target) == NULL) return -1;

    static const char *const path[] = {TEST_APPS_DIR, TEST_APPS_DIR "/extra"};
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    opts.python_path = path;
    opts.n_python_path = 2;
    opts.chdir = chdir_target;
    return th_runtime_start(&opts);
}

static int group_teardown(void **state)
{
    th_group_teardown(state);
    rmdir(chdir_target);
    return 0;
}

/* GET on the app and return its body (static storage), asserting a clean 200. */
static const char *body_of(const char *spec, const char *target)
{
    static char body[65536];
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(spec, target, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    snprintf(body, sizeof body, "%s", rec.body ? rec.body : "");
    th_rec_free(&rec);
    return body;
}

static void test_options_init_defaults(void **state)
{
    (void)state;
    wsgi_runtime_options opts;
    memset(&opts, 0xa5, sizeof opts);
    wsgi_runtime_options_init(&opts);
    assert_int_equal(opts.struct_size, sizeof opts);
    assert_null(opts.python_home);
    assert_null(opts.virtualenv);
    assert_null(opts.python_path);
    assert_int_equal(opts.n_python_path, 0);
    assert_null(opts.chdir);
    assert_null(opts.log);
    assert_null(opts.log_user_data);
    assert_int_equal(opts.log_level, WSGI_LOG_INFO);
    assert_int_equal(opts.flags, 0);
}

static void test_second_runtime_is_refused(void **state)
{
    (void)state;
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    wsgi_runtime *second = (wsgi_runtime *)&opts; /* must be overwritten with NULL */
    assert_rc(wsgi_runtime_new(&opts, &second), WSGI_ERR_STATE);
    assert_null(second);
    /* The first runtime is unharmed. */
    assert_string_equal(body_of("extra_marker", "/"), "extra path");
}

static void test_isolated_config(void **state)
{
    (void)state;
    assert_string_equal(body_of("rt_probe:flags", "/"),
                        "isolated=1 ignore_environment=1 no_user_site=1");
    assert_null(strstr(body_of("rt_probe:sys_path", "/"), IGNORED_PYTHONPATH));
}

static void test_python_path_prepended_in_order(void **state)
{
    (void)state;
    const char *path = body_of("rt_probe:sys_path", "/");
    assert_true(strncmp(path, TEST_APPS_DIR "\n" TEST_APPS_DIR "/extra\n",
                        strlen(TEST_APPS_DIR "\n" TEST_APPS_DIR "/extra\n")) == 0);
    /* The second entry is usable, not just listed. */
    assert_string_equal(body_of("extra_marker", "/"), "extra path");
}

static void test_chdir_applied(void **state)
{
    (void)state;
    assert_string_equal(body_of("rt_probe:cwd", "/"), chdir_target);
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_string_equal(cwd, chdir_target);
}

static void test_log_lines_are_well_formed(void **state)
{
    (void)state;
    body_of("rt_probe:errors", "/");
    /* Start-up and app loading are life-cycle events, logged at INFO. */
    assert_true(th_log_count(0, WSGI_LOG_INFO, NULL) > 0);
    assert_true(th_log_count(0, -1, NULL) > 0);
    assert_int_equal(th_log_bad(), 0);
}

static void test_app_traceback_logged_at_error(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("rt_probe:fail", "/", &rec, &res);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    th_rec_free(&rec);
    if (th_log_count(mark, WSGI_LOG_ERROR, "rt_probe failure marker") == 0) th_log_dump(mark);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "rt_probe failure marker") > 0);
    assert_int_equal(th_log_bad(), 0);
}

/* Everything the library has to say goes to the log callback, never to fd 1 or 2. */
static void test_library_never_prints(void **state)
{
    (void)state;
    /* Load everything first so that the redirected section only calls the library. */
    wsgi_app *fail_app = th_app("rt_probe:fail");
    wsgi_app *errors_app = th_app("rt_probe:errors");

    char path[] = "/tmp/libwsgi-test-output-XXXXXX";
    int out = mkstemp(path);
    assert_true(out >= 0);
    unlink(path);
    fflush(stdout);
    fflush(stderr);
    int saved1 = dup(1), saved2 = dup(2);
    dup2(out, 1);
    dup2(out, 2);

    th_rec rec1, rec2;
    th_result res1, res2;
    th_rec_init(&rec1);
    th_rec_init(&rec2);
    th_req r1, r2;
    th_req_init(&r1, "GET", "/");
    th_req_init(&r2, "GET", "/");
    th_run(fail_app, &r1, &rec1, &res1);
    th_run(errors_app, &r2, &rec2, &res2);
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    wsgi_app *bad = NULL;
    opts.spec = "la_boom";
    int rc_boom = wsgi_app_new(th_rt, &opts, &bad);
    opts.spec = "rt_probe:no_such_attribute";
    int rc_attr = wsgi_app_new(th_rt, &opts, &bad);

    fflush(stdout);
    fflush(stderr);
    dup2(saved1, 1);
    dup2(saved2, 2);
    close(saved1);
    close(saved2);

    off_t size = lseek(out, 0, SEEK_END);
    if (size > 0) {
        char buf[4096] = {0};
        if (pread(out, buf, sizeof buf - 1, 0) < 0) buf[0] = '\0';
        print_error("the library wrote to stdout/stderr:\n%s\n", buf);
    }
    close(out);
    assert_int_equal(size, 0);
    th_assert_500(&rec1, &res1, WSGI_ERR_APP);
    th_assert_ok(&rec2, &res2, 200, "ok");
    assert_rc(rc_boom, WSGI_ERR_IMPORT);
    assert_rc(rc_attr, WSGI_ERR_ATTRIBUTE);
    th_rec_free(&rec1);
    th_rec_free(&rec2);
}

static void test_signal_dispositions_untouched(void **state)
{
    (void)state;
    body_of("rt_probe:flags", "/");
    struct sigaction sigint_now, sigpipe_now;
    sigaction(SIGINT, NULL, &sigint_now);
    sigaction(SIGPIPE, NULL, &sigpipe_now);
    /* CPython installs its SIGINT handler whenever the signal module is first imported (e.g.
     * by asyncio), even with install_signal_handlers = 0: the library must undo that. */
    if (sigint_now.sa_handler != sigint_before.sa_handler)
        print_error("SIGINT handler changed from %p to %p\n", (void *)sigint_before.sa_handler,
                    (void *)sigint_now.sa_handler);
    if (sigpipe_now.sa_handler != sigpipe_before.sa_handler)
        print_error("SIGPIPE handler changed from %p to %p\n", (void *)sigpipe_before.sa_handler,
                    (void *)sigpipe_now.sa_handler);
    assert_true(sigint_now.sa_handler == sigint_before.sa_handler);
    assert_true(sigpipe_now.sa_handler == sigpipe_before.sa_handler);
}

static void test_app_runtime(void **state)
{
    (void)state;
    wsgi_app *app = th_app("rt_probe:flags");
    assert_ptr_equal(wsgi_app_runtime(app), th_rt);
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_WSGI);
}

/* --- Python thread states per host thread ------------------------------------------------- */

/* Splits "value|ident" as returned by rt_probe:tlocal. */
static void split_tlocal(const char *body, char *value, size_t cap, unsigned long long *ident)
{
    const char *bar = strrchr(body, '|');
    assert_non_null(bar);
    snprintf(value, cap, "%.*s", (int)(bar - body), body);
    *ident = strtoull(bar + 1, NULL, 10);
}

static void test_thread_local_survives_on_same_thread(void **state)
{
    (void)state;
    char value[64];
    unsigned long long id1, id2;
    split_tlocal(body_of("rt_probe:tlocal", "/?main-1"), value, sizeof value, &id1);
    split_tlocal(body_of("rt_probe:tlocal", "/"), value, sizeof value, &id2);
    assert_string_equal(value, "main-1");
    assert_true(id1 == id2);
}

typedef struct pair_ctx {
    pthread_barrier_t *set_done, *peek_done;
    th_nested first, peek, again;
} pair_ctx;

static void *setter_thread(void *arg)
{
    pair_ctx *c = arg;
    th_nested_thread(&c->first);
    pthread_barrier_wait(c->set_done);
    pthread_barrier_wait(c->peek_done);
    th_nested_thread(&c->again);
    return NULL;
}

static void *peeker_thread(void *arg)
{
    pair_ctx *c = arg;
    pthread_barrier_wait(c->set_done);
    th_nested_thread(&c->peek);
    pthread_barrier_wait(c->peek_done);
    return NULL;
}

/* Two live host threads: a value set by a request on one is not seen on the other, and is still
 * there for the next request on the first. */
static void test_thread_local_not_shared_between_threads(void **state)
{
    (void)state;
    th_app("rt_probe:tlocal");
    pthread_barrier_t b1, b2;
    pthread_barrier_init(&b1, NULL, 2);
    pthread_barrier_init(&b2, NULL, 2);
    pair_ctx c;
    memset(&c, 0, sizeof c);
    c.set_done = &b1;
    c.peek_done = &b2;
    c.first = (th_nested){.spec = "rt_probe:tlocal", .target = "/?thread-a"};
    c.peek = (th_nested){.spec = "rt_probe:tlocal", .target = "/"};
    c.again = (th_nested){.spec = "rt_probe:tlocal", .target = "/"};
    pthread_t a, b;
    assert_int_equal(pthread_create(&a, NULL, setter_thread, &c), 0);
    assert_int_equal(pthread_create(&b, NULL, peeker_thread, &c), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&b1);
    pthread_barrier_destroy(&b2);

    char value[64];
    unsigned long long ida, idpeek, idagain;
    assert_int_equal(c.first.status, 200);
    assert_int_equal(c.peek.status, 200);
    assert_int_equal(c.again.status, 200);
    split_tlocal(c.first.body, value, sizeof value, &ida);
    assert_string_equal(value, "<none>");
    split_tlocal(c.peek.body, value, sizeof value, &idpeek);
    assert_string_equal(value, "<none>");
    split_tlocal(c.again.body, value, sizeof value, &idagain);
    assert_string_equal(value, "thread-a");
    assert_true(ida == idagain);
    assert_true(ida != idpeek);
}

/* A thread that starts after another ended must not inherit the dead thread's Python state,
 * even if the system reuses its pthread_t. */
static void test_new_thread_gets_fresh_state(void **state)
{
    (void)state;
    th_app("rt_probe:tlocal");
    th_nested first = {.spec = "rt_probe:tlocal", .target = "/?finished-thread"};
    th_nested later = {.spec = "rt_probe:tlocal", .target = "/"};
    th_run_thread(th_nested_thread, &first);
    th_run_thread(th_nested_thread, &later);
    assert_int_equal(first.status, 200);
    assert_int_equal(later.status, 200);
    char value[64];
    unsigned long long id;
    split_tlocal(later.body, value, sizeof value, &id);
    assert_string_equal(value, "<none>");
}

#define N_WORKERS 4
#define N_ROUNDS  25

typedef struct worker_ctx {
    int index;
    int failures;
    char first_failure[512];
} worker_ctx;

static void *worker_thread(void *arg)
{
    worker_ctx *w = arg;
    unsigned long long ident = 0;
    char previous[64] = "<none>";
    for (int round = 0; round < N_ROUNDS; round++) {
        char target[64], expected[128];
        snprintf(target, sizeof target, "/?w%d-r%d", w->index, round);
        th_nested n = {.spec = "rt_probe:tlocal", .target = target};
        th_nested_thread(&n);
        char *bar = strrchr(n.body, '|');
        unsigned long long id = bar ? strtoull(bar + 1, NULL, 10) : 0;
        snprintf(expected, sizeof expected, "%s|", previous);
        int ok = n.status == 200 && n.final_rc == 0 && bar != NULL &&
                 strncmp(n.body, expected, strlen(expected)) == 0 && (round == 0 || id == ident);
        if (!ok && w->failures++ == 0)
            snprintf(w->first_failure, sizeof w->first_failure,
                     "worker %d round %d: status %d rc %d body \"%s\", expected prefix \"%s\"",
                     w->index, round, n.status, n.final_rc, n.body, expected);
        ident = id;
        snprintf(previous, sizeof previous, "w%d-r%d", w->index, round);
    }
    return NULL;
}

/* Host threads calling in at the same time each keep their own Python thread state. */
static void test_concurrent_host_threads(void **state)
{
    (void)state;
    th_app("rt_probe:tlocal");
    pthread_t t[N_WORKERS];
    worker_ctx w[N_WORKERS];
    for (int i = 0; i < N_WORKERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].index = i;
        assert_int_equal(pthread_create(&t[i], NULL, worker_thread, &w[i]), 0);
    }
    for (int i = 0; i < N_WORKERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N_WORKERS; i++) {
        if (w[i].failures) print_error("%s\n", w[i].first_failure);
        assert_int_equal(w[i].failures, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_init_defaults),
        cmocka_unit_test(test_second_runtime_is_refused),
        cmocka_unit_test(test_isolated_config),
        cmocka_unit_test(test_python_path_prepended_in_order),
        cmocka_unit_test(test_chdir_applied),
        cmocka_unit_test(test_log_lines_are_well_formed),
        cmocka_unit_test(test_app_traceback_logged_at_error),
        cmocka_unit_test(test_library_never_prints),
        cmocka_unit_test(test_signal_dispositions_untouched),
        cmocka_unit_test(test_app_runtime),
        cmocka_unit_test(test_thread_local_survives_on_same_thread),
        cmocka_unit_test(test_thread_local_not_shared_between_threads),
        cmocka_unit_test(test_new_thread_gets_fresh_state),
        cmocka_unit_test(test_concurrent_host_threads),
    };
    return cmocka_run_group_tests_name("runtime", tests, group_setup, group_teardown);
}
