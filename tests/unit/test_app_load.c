/*
 * test_app_load.c - resolving gunicorn/uvicorn-style app specs: modules, packages, dotted
 * attributes, factories with literal arguments, every load error, and interface detection.
 */
#include "harness.h"

static int load(const char *spec, wsgi_interface interface, wsgi_app **out)
{
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = spec;
    opts.interface = interface;
    return wsgi_app_new(th_rt, &opts, out);
}

/* Loads @spec, checks that the call reported success cleanly, and returns the body of a GET. */
static void assert_loads_and_serves(const char *spec, const char *expected_body)
{
    wsgi_app *app = NULL;
    int rc = load(spec, WSGI_INTERFACE_AUTO, &app);
    if (rc != WSGI_OK) print_error("spec \"%s\"\n", spec);
    assert_rc(rc, WSGI_OK);
    assert_non_null(app);
    assert_string_equal(wsgi_errmsg(), "");
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_WSGI);
    th_app_register(NULL, app);

    th_req r;
    th_rec rec;
    th_result res;
    th_req_init(&r, "GET", "/");
    th_rec_init(&rec);
    th_run(app, &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, expected_body);
    th_rec_free(&rec);
}

/* A failed load: the code, out set to NULL, a message, and an ERROR log line containing each of
 * @needles (NULL-terminated list; may be empty). */
static void assert_load_fails(const char *spec, int expected, const char *const *needles)
{
    size_t mark = th_log_mark();
    wsgi_app *app = (wsgi_app *)&mark; /* must be overwritten with NULL */
    int rc = load(spec, WSGI_INTERFACE_AUTO, &app);
    if (rc != expected) print_error("spec \"%s\"\n", spec);
    assert_rc(rc, expected);
    assert_null(app);
    if (wsgi_errmsg()[0] == '\0') print_error("spec \"%s\": empty wsgi_errmsg()\n", spec);
    assert_true(wsgi_errmsg()[0] != '\0');
    if (th_log_count(mark, WSGI_LOG_ERROR, NULL) == 0)
        print_error("spec \"%s\": nothing logged at WSGI_LOG_ERROR\n", spec);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, NULL) > 0);
    for (size_t i = 0; needles && needles[i]; i++) {
        if (th_log_count(mark, WSGI_LOG_ERROR, needles[i]) == 0) {
            print_error("spec \"%s\": no ERROR log line contains \"%s\"; log:\n", spec, needles[i]);
            th_log_dump(mark);
        }
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, needles[i]) > 0);
    }
}

static void test_options_init_defaults(void **state)
{
    (void)state;
    wsgi_app_options opts;
    memset(&opts, 0xa5, sizeof opts);
    wsgi_app_options_init(&opts);
    assert_int_equal(opts.struct_size, sizeof opts);
    assert_null(opts.spec);
    assert_int_equal(opts.interface, WSGI_INTERFACE_AUTO);
    assert_int_equal(opts.flags, 0);
    assert_null(opts.script_name);
    assert_null(opts.server_software);
}

static void test_module_alone_means_application(void **state)
{
    (void)state;
    /* A failure first: the following success must leave no stale message behind. */
    assert_load_fails("libwsgi_no_such_module", WSGI_ERR_MODULE_NOT_FOUND, NULL);
    assert_loads_and_serves("la_simple", "la_simple.application");
}

static void test_module_and_attribute(void **state)
{
    (void)state;
    assert_loads_and_serves("la_simple:other", "la_simple.other");
    assert_loads_and_serves("la_simple:application", "la_simple.application");
}

static void test_dotted_attribute_path(void **state)
{
    (void)state;
    assert_loads_and_serves("la_simple:holder.inner.app", "la_simple.holder.inner.app");
}

static void test_module_in_package(void **state)
{
    (void)state;
    assert_loads_and_serves("la_pkg.sub.views", "la_pkg.sub.views.application");
    assert_loads_and_serves("la_pkg.sub.views:obj.app", "la_pkg.sub.views.obj.app");
}

static void test_factory_call(void **state)
{
    (void)state;
    assert_loads_and_serves("la_simple:factory()", "((), {})");
    assert_loads_and_serves("la_simple:factory(1, name='x')", "((1,), {'name': 'x'})");
    assert_loads_and_serves("la_simple:factory('a', 2.5, None, True, [1, 2], flag=False)",
                            "(('a', 2.5, None, True, [1, 2]), {'flag': False})");
}

static void test_malformed_specs(void **state)
{
    (void)state;
    static const char *const specs[] = {
        "",
        ":application",
        "la_simple:",
        "la_simple:1bad",
        "la_simple:f(x y)",
        "la_simple:holder..app",
        "la_simple:holder.",
        "la_simple:.holder",
        "la_simple:factory(",
        "la_simple:factory(1))",
        /* Arguments are literals, like gunicorn: a spec never runs arbitrary code. */
        "la_simple:factory(x)",
        "la_simple:factory(open('/etc/passwd'))",
        "la_simple:factory(__import__('os').getpid())",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++)
        assert_load_fails(specs[i], WSGI_ERR_APP_SPEC, NULL);
}

static void test_module_not_found(void **state)
{
    (void)state;
    assert_load_fails("libwsgi_no_such_module", WSGI_ERR_MODULE_NOT_FOUND, NULL);
    assert_load_fails("libwsgi_no_such_module:app", WSGI_ERR_MODULE_NOT_FOUND, NULL);
    assert_load_fails("libwsgi_no_such_pkg.mod:app", WSGI_ERR_MODULE_NOT_FOUND, NULL);
    assert_load_fails("la_pkg.no_such_module:app", WSGI_ERR_MODULE_NOT_FOUND, NULL);
    assert_load_fails("la_pkg.sub.no_such_views", WSGI_ERR_MODULE_NOT_FOUND, NULL);
}

static void test_module_raising_on_import(void **state)
{
    (void)state;
    static const char *const needles[] = {"Traceback", "RuntimeError", "boom", NULL};
    assert_load_fails("la_boom", WSGI_ERR_IMPORT, needles);
    assert_load_fails("la_boom:application", WSGI_ERR_IMPORT, needles);
}

/* The app's own module exists; that something it imports does not is an import error. */
static void test_missing_dependency_is_import_error(void **state)
{
    (void)state;
    static const char *const needles[] = {"Traceback", "libwsgi_test_no_such_dependency", NULL};
    assert_load_fails("la_missing_dep", WSGI_ERR_IMPORT, needles);
}

static void test_missing_attribute(void **state)
{
    (void)state;
    assert_load_fails("la_simple:no_such_attribute", WSGI_ERR_ATTRIBUTE, NULL);
    assert_load_fails("la_simple:holder.nope", WSGI_ERR_ATTRIBUTE, NULL);
    assert_load_fails("la_simple:holder.inner.nope", WSGI_ERR_ATTRIBUTE, NULL);
    assert_load_fails("la_simple:no_such_factory()", WSGI_ERR_ATTRIBUTE, NULL);
}

static void test_factory_that_raises(void **state)
{
    (void)state;
    static const char *const needles[] = {"la_simple factory failed", NULL};
    assert_load_fails("la_simple:failing_factory()", WSGI_ERR_ATTRIBUTE, needles);
}

static void test_not_callable(void **state)
{
    (void)state;
    assert_load_fails("la_simple:not_callable", WSGI_ERR_NOT_CALLABLE, NULL);
    assert_load_fails("la_simple:non_callable_factory()", WSGI_ERR_NOT_CALLABLE, NULL);
}

static void test_interface_detection(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        wsgi_interface expected;
    } cases[] = {
        {"la_asgi:app", WSGI_INTERFACE_ASGI},
        {"la_asgi:instance", WSGI_INTERFACE_ASGI}, /* an object with async __call__ */
        {"la_asgi:wsgi", WSGI_INTERFACE_WSGI},
        {"la_simple", WSGI_INTERFACE_WSGI},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wsgi_app *app = NULL;
        assert_rc(load(cases[i].spec, WSGI_INTERFACE_AUTO, &app), WSGI_OK);
        th_app_register(NULL, app);
        if (wsgi_app_interface(app) != cases[i].expected)
            print_error("spec \"%s\"\n", cases[i].spec);
        assert_int_equal(wsgi_app_interface(app), cases[i].expected);
    }
}

static void test_explicit_wsgi_interface(void **state)
{
    (void)state;
    wsgi_app *app = NULL;
    assert_rc(load("la_simple:other", WSGI_INTERFACE_WSGI, &app), WSGI_OK);
    th_app_register(NULL, app);
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_WSGI);
}

static void test_env_build_refuses_asgi_app(void **state)
{
    (void)state;
    wsgi_app *app = th_app("la_asgi:app");
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_ASGI);
    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env = (wsgi_env *)&r; /* must be overwritten with NULL */
    assert_rc(wsgi_env_build(app, &r.req, &env), WSGI_ERR_INTERFACE);
    assert_null(env);
    assert_true(wsgi_errmsg()[0] != '\0');
}

static void test_app_free_without_use(void **state)
{
    (void)state;
    wsgi_app *app = NULL;
    assert_rc(load("la_simple", WSGI_INTERFACE_AUTO, &app), WSGI_OK);
    assert_ptr_equal(wsgi_app_runtime(app), th_rt);
    wsgi_app_free(app);
    /* Other apps from the same module still work. */
    assert_loads_and_serves("la_simple:other", "la_simple.other");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_init_defaults),
        cmocka_unit_test(test_module_alone_means_application),
        cmocka_unit_test(test_module_and_attribute),
        cmocka_unit_test(test_dotted_attribute_path),
        cmocka_unit_test(test_module_in_package),
        cmocka_unit_test(test_factory_call),
        cmocka_unit_test(test_malformed_specs),
        cmocka_unit_test(test_module_not_found),
        cmocka_unit_test(test_module_raising_on_import),
        cmocka_unit_test(test_missing_dependency_is_import_error),
        cmocka_unit_test(test_missing_attribute),
        cmocka_unit_test(test_factory_that_raises),
        cmocka_unit_test(test_not_callable),
        cmocka_unit_test(test_interface_detection),
        cmocka_unit_test(test_explicit_wsgi_interface),
        cmocka_unit_test(test_env_build_refuses_asgi_app),
        cmocka_unit_test(test_app_free_without_use),
    };
    return cmocka_run_group_tests_name("app_load", tests, th_group_setup, th_group_teardown);
}
