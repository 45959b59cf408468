/*
 * test_errors.c - the common.h contract and argument checking: wsgi_strerror for every code,
 * wsgi_errmsg (set on failure, cleared on success, per thread), NULL and invalid arguments to
 * every public function, recursive-call detection, per-response errors, log-level filtering,
 * and the version query.
 *
 * This binary's runtime logs at WSGI_LOG_ERROR only, to check that less severe lines are dropped.
 */
#include "harness.h"

#include <limits.h>

static int group_setup(void **state)
{
    (void)state;
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    opts.log_level = WSGI_LOG_ERROR;
    return th_runtime_start(&opts);
}

static const int all_codes[] = {
    WSGI_OK,
    WSGI_ERR_INVAL,
    WSGI_ERR_NOMEM,
    WSGI_ERR_STATE,
    WSGI_ERR_RECURSIVE,
    WSGI_ERR_PYTHON,
    WSGI_ERR_APP_SPEC,
    WSGI_ERR_MODULE_NOT_FOUND,
    WSGI_ERR_IMPORT,
    WSGI_ERR_ATTRIBUTE,
    WSGI_ERR_NOT_CALLABLE,
    WSGI_ERR_INTERFACE,
    WSGI_ERR_APP,
    WSGI_ERR_NO_START_RESPONSE,
    WSGI_ERR_BAD_STATUS,
    WSGI_ERR_BAD_HEADER,
    WSGI_ERR_BAD_ITERABLE,
    WSGI_ERR_BAD_CHUNK,
    WSGI_ERR_CALLBACK,
    WSGI_ERR_IO,
    WSGI_ERR_TOO_LARGE,
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

static void test_strerror_every_code(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CODES; i++) {
        const char *s = wsgi_strerror(all_codes[i]);
        assert_non_null(s);
        if (s[0] == '\0' || strcmp(s, "unknown error") == 0)
            print_error("wsgi_strerror(%d) = \"%s\"\n", all_codes[i], s);
        assert_true(s[0] != '\0');
        assert_string_not_equal(s, "unknown error");
        /* Each code has its own words. */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, wsgi_strerror(all_codes[j]));
    }
}

static void test_strerror_unknown_codes(void **state)
{
    (void)state;
    static const int unknown[] = {-6,   -9, -16, -19,   -26,     -29,    -33,
                                  -999, 1,  2,   12345, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = wsgi_strerror(unknown[i]);
        assert_non_null(s);
        assert_string_equal(s, "unknown error");
    }
}

static void test_errmsg_set_on_failure_cleared_on_success(void **state)
{
    (void)state;
    assert_non_null(wsgi_errmsg());
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), NULL, &env), WSGI_ERR_INVAL);
    assert_true(wsgi_errmsg()[0] != '\0');

    th_req r;
    th_req_init(&r, "GET", "/");
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), &r.req, &env), WSGI_OK);
    assert_string_equal(wsgi_errmsg(), "");
    wsgi_env_free(env);
}

typedef struct thread_msgs {
    char at_start[256];
    char after_failure[256];
    int rc;
} thread_msgs;

static void *errmsg_thread(void *arg)
{
    thread_msgs *t = arg;
    snprintf(t->at_start, sizeof t->at_start, "%s", wsgi_errmsg());
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = "libwsgi_no_such_module_in_thread";
    wsgi_app *app = NULL;
    t->rc = wsgi_app_new(th_rt, &opts, &app);
    snprintf(t->after_failure, sizeof t->after_failure, "%s", wsgi_errmsg());
    return NULL;
}

/* The runtime and apps are shared, so the last message lives per thread. */
static void test_errmsg_is_per_thread(void **state)
{
    (void)state;
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), NULL, &env), WSGI_ERR_INVAL);
    char mine[1024];
    snprintf(mine, sizeof mine, "%s", wsgi_errmsg());
    assert_true(mine[0] != '\0');

    thread_msgs t;
    memset(&t, 0, sizeof t);
    th_run_thread(errmsg_thread, &t);
    assert_string_equal(t.at_start, "");
    assert_rc(t.rc, WSGI_ERR_MODULE_NOT_FOUND);
    assert_true(t.after_failure[0] != '\0');
    assert_string_equal(wsgi_errmsg(), mine);
}

static void test_runtime_new_invalid(void **state)
{
    (void)state;
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    assert_rc(wsgi_runtime_new(&opts, NULL), WSGI_ERR_INVAL);

    wsgi_runtime *rt = (wsgi_runtime *)&opts;
    opts.struct_size = 0;
    assert_rc(wsgi_runtime_new(&opts, &rt), WSGI_ERR_INVAL);
    assert_null(rt);
    assert_true(wsgi_errmsg()[0] != '\0');

    rt = (wsgi_runtime *)&opts;
    opts.struct_size = offsetof(wsgi_runtime_options, python_home);
    assert_rc(wsgi_runtime_new(&opts, &rt), WSGI_ERR_INVAL);
    assert_null(rt);

    /* NULL options mean defaults; with a runtime already running that is a state error. */
    rt = (wsgi_runtime *)&opts;
    assert_rc(wsgi_runtime_new(NULL, &rt), WSGI_ERR_STATE);
    assert_null(rt);
}

static void test_free_functions_accept_null(void **state)
{
    (void)state;
    wsgi_runtime_free(NULL);
    wsgi_app_free(NULL);
    wsgi_env_free(NULL);
    wsgi_response_free(NULL);
}

/* Not documented either way; a NULL must at least not crash the host. */
static void test_init_functions_accept_null(void **state)
{
    (void)state;
    wsgi_runtime_options_init(NULL);
    wsgi_app_options_init(NULL);
    wsgi_request_init(NULL);
}

static void test_app_new_invalid(void **state)
{
    (void)state;
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = "err_apps:ok";
    wsgi_app *app;

    app = (wsgi_app *)&opts;
    assert_rc(wsgi_app_new(NULL, &opts, &app), WSGI_ERR_INVAL);
    assert_null(app);
    assert_true(wsgi_errmsg()[0] != '\0');

    app = (wsgi_app *)&opts;
    assert_rc(wsgi_app_new(th_rt, NULL, &app), WSGI_ERR_INVAL);
    assert_null(app);

    assert_rc(wsgi_app_new(th_rt, &opts, NULL), WSGI_ERR_INVAL);

    app = (wsgi_app *)&opts;
    opts.spec = NULL;
    assert_rc(wsgi_app_new(th_rt, &opts, &app), WSGI_ERR_INVAL);
    assert_null(app);
    assert_true(wsgi_errmsg()[0] != '\0');
}

static void test_getters_with_null(void **state)
{
    (void)state;
    assert_null(wsgi_app_runtime(NULL));
    (void)wsgi_app_interface(NULL);
    assert_rc(wsgi_response_error(NULL), WSGI_ERR_INVAL);
    assert_non_null(wsgi_response_errmsg(NULL));
    assert_int_equal(wsgi_response_started(NULL), 0);
    assert_rc(wsgi_iter_next(NULL), WSGI_ERR_INVAL);
}

static void test_env_build_invalid(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env;

    env = (wsgi_env *)&r;
    assert_rc(wsgi_env_build(NULL, &r.req, &env), WSGI_ERR_INVAL);
    assert_null(env);
    assert_true(wsgi_errmsg()[0] != '\0');

    env = (wsgi_env *)&r;
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), NULL, &env), WSGI_ERR_INVAL);
    assert_null(env);

    assert_rc(wsgi_env_build(th_app("err_apps:ok"), &r.req, NULL), WSGI_ERR_INVAL);
}

static void test_env_set_invalid(void **state)
{
    (void)state;
    assert_rc(wsgi_env_set(NULL, "K", 1, "v", 1), WSGI_ERR_INVAL);

    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), &r.req, &env), WSGI_OK);
    assert_rc(wsgi_env_set(env, NULL, 1, "v", 1), WSGI_ERR_INVAL);
    assert_rc(wsgi_env_set(env, "K", 0, "v", 1), WSGI_ERR_INVAL);
    assert_rc(wsgi_env_set(env, "K", 1, NULL, 3), WSGI_ERR_INVAL);

    /* The environ is still good after the refused calls. */
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    memset(&res, 0, sizeof res);
    th_call_drain(env, &rec, &res);
    assert_rc(res.call_rc, WSGI_OK);
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);
}

static wsgi_env *new_env(void)
{
    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app("err_apps:ok"), &r.req, &env), WSGI_OK);
    return env;
}

/* wsgi_call consumes the env in every case, so each refused call gets a fresh one. */
static void test_call_invalid(void **state)
{
    (void)state;
    th_rec rec;
    th_rec_init(&rec);
    wsgi_response_handler h = th_handler(&rec);
    wsgi_response *resp;

    resp = (wsgi_response *)&rec;
    assert_rc(wsgi_call(NULL, &h, &rec, &resp), WSGI_ERR_INVAL);
    assert_null(resp);

    resp = (wsgi_response *)&rec;
    assert_rc(wsgi_call(new_env(), NULL, &rec, &resp), WSGI_ERR_INVAL);
    assert_null(resp);

    assert_rc(wsgi_call(new_env(), &h, &rec, NULL), WSGI_ERR_INVAL);

    wsgi_response_handler no_start = h;
    no_start.on_start = NULL;
    resp = (wsgi_response *)&rec;
    assert_rc(wsgi_call(new_env(), &no_start, &rec, &resp), WSGI_ERR_INVAL);
    assert_null(resp);

    wsgi_response_handler no_body = h;
    no_body.on_body = NULL;
    resp = (wsgi_response *)&rec;
    assert_rc(wsgi_call(new_env(), &no_body, &rec, &resp), WSGI_ERR_INVAL);
    assert_null(resp);

    /* None of the refused calls ran the app or called back. */
    assert_int_equal(rec.starts, 0);
    assert_int_equal(rec.body_calls, 0);

    /* user_data may be NULL: it is only passed through. (on_start/on_body are not reached
     * here, the response is freed before the first pull.) */
    resp = NULL;
    assert_rc(wsgi_call(new_env(), &h, NULL, &resp), WSGI_OK);
    wsgi_response_free(resp);
    th_rec_free(&rec);
}

static void test_response_error_and_message(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("err_apps:ok", "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ab");
    assert_string_equal(res.resp_errmsg, "");
    th_rec_free(&rec);

    size_t mark = th_log_mark();
    th_rec_init(&rec);
    th_get("err_apps:raises", "/", &rec, &res);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    assert_true(res.resp_errmsg[0] != '\0');
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "err_apps failure marker") > 0);
    th_rec_free(&rec);
}

static int recurse(th_rec *rec, const char *data, size_t len)
{
    (void)data;
    (void)len;
    *(int *)rec->hook_data = wsgi_iter_next(rec->resp);
    return 0;
}

static void test_recursive_call_detected(void **state)
{
    (void)state;
    int inner = 99;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.body_hook = recurse;
    rec.hook_data = &inner;
    th_get("err_apps:ok", "/", &rec, &res);
    assert_rc(inner, WSGI_ERR_RECURSIVE);
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);
}

static int other_request_inside(th_rec *rec, const char *data, size_t len)
{
    (void)data;
    (void)len;
    if (rec->body_calls != 1) return 0;
    /* A different response, on the same thread, from inside this response's callback. */
    th_nested *n = rec->hook_data;
    th_nested_thread(n);
    return 0;
}

/* WSGI_ERR_RECURSIVE is about the same object: serving another request from inside a callback
 * is not recursion. */
static void test_other_response_inside_callback_allowed(void **state)
{
    (void)state;
    th_app("err_apps:ok");
    th_nested n = {.spec = "err_apps:ok", .target = "/"};
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.body_hook = other_request_inside;
    rec.hook_data = &n;
    th_get("err_apps:ok", "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);
    assert_rc(n.final_rc, 0);
    assert_int_equal(n.status, 200);
    assert_string_equal(n.body, "ab");
}

static void test_log_level_filters(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("err_apps:noisy", "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "noisy");
    th_rec_free(&rec);
    if (th_log_count(0, WSGI_LOG_WARNING, NULL) + th_log_count(0, WSGI_LOG_INFO, NULL) +
            th_log_count(0, WSGI_LOG_DEBUG, NULL) >
        0)
        th_log_dump(0);
    assert_int_equal(th_log_count(0, WSGI_LOG_WARNING, NULL), 0);
    assert_int_equal(th_log_count(0, WSGI_LOG_INFO, NULL), 0);
    assert_int_equal(th_log_count(0, WSGI_LOG_DEBUG, NULL), 0);
    assert_int_equal(th_log_bad(), 0);
}

static void test_version(void **state)
{
    (void)state;
    assert_int_equal(libwsgi_version_num(), LIBWSGI_VERSION_NUM);
    assert_non_null(libwsgi_version());
    assert_string_equal(libwsgi_version(), LIBWSGI_VERSION);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", LIBWSGI_VERSION_MAJOR, LIBWSGI_VERSION_MINOR,
             LIBWSGI_VERSION_PATCH);
    assert_string_equal(libwsgi_version(), expected);
    assert_int_equal(LIBWSGI_VERSION_NUM, (LIBWSGI_VERSION_MAJOR << 16) |
                                              (LIBWSGI_VERSION_MINOR << 8) | LIBWSGI_VERSION_PATCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_every_code),
        cmocka_unit_test(test_strerror_unknown_codes),
        cmocka_unit_test(test_errmsg_set_on_failure_cleared_on_success),
        cmocka_unit_test(test_errmsg_is_per_thread),
        cmocka_unit_test(test_runtime_new_invalid),
        cmocka_unit_test(test_free_functions_accept_null),
        cmocka_unit_test(test_init_functions_accept_null),
        cmocka_unit_test(test_app_new_invalid),
        cmocka_unit_test(test_getters_with_null),
        cmocka_unit_test(test_env_build_invalid),
        cmocka_unit_test(test_env_set_invalid),
        cmocka_unit_test(test_call_invalid),
        cmocka_unit_test(test_response_error_and_message),
        cmocka_unit_test(test_recursive_call_detected),
        cmocka_unit_test(test_other_response_inside_callback_allowed),
        cmocka_unit_test(test_log_level_filters),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests_name("errors", tests, group_setup, th_group_teardown);
}
