/* Adopting an interpreter the host already started: wsgi_runtime_new must not start a second
 * one, must work whether or not the host thread holds the GIL, and wsgi_runtime_free must leave
 * the host's interpreter running. This binary includes Python.h because it plays the host that
 * embeds Python itself; the library's headers still never include it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <libwsgi/libwsgi.h>

static char body[256];
static size_t body_len;
static int adopted_logged;

static void log_cb(void *ud, int level, const char *msg, size_t len)
{
    (void)ud;
    (void)level;
    (void)len;
    if (strstr(msg, "adopted")) adopted_logged = 1;
}

static int on_start(void *ud, const wsgi_response_head *h)
{
    (void)ud;
    return h->status == 200 ? 0 : -1;
}

static int on_body(void *ud, const char *d, size_t n)
{
    (void)ud;
    if (body_len + n >= sizeof body) return -1;
    memcpy(body + body_len, d, n);
    body_len += n;
    body[body_len] = '\0';
    return 0;
}

static void run_request(wsgi_app *app)
{
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = "GET";
    req.method_len = 3;
    req.target = "/";
    req.target_len = 1;
    wsgi_response_handler h = {sizeof h, on_start, on_body, NULL};
    wsgi_env *env;
    wsgi_response *resp;
    body_len = 0;
    body[0] = '\0';
    assert_int_equal(wsgi_env_build(app, &req, &env), WSGI_OK);
    assert_int_equal(wsgi_call(env, &h, NULL, &resp), WSGI_OK);
    int rc;
    while ((rc = wsgi_iter_next(resp)) == 1) {
    }
    assert_int_equal(rc, 0);
    wsgi_response_free(resp);
}

static void t_adopt(void **state)
{
    (void)state;
    Py_InitializeEx(0);
    assert_int_equal(PyRun_SimpleString("import sys; sys.host_marker = 'from-host'"), 0);

    static const char *const path[] = {TEST_APPS_DIR};
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = path;
    ro.n_python_path = 1;
    ro.log = log_cb;

    /* The host still holds the GIL here. */
    wsgi_runtime *rt;
    assert_int_equal(wsgi_runtime_new(&ro, &rt), WSGI_OK);
    assert_true(adopted_logged);
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = "adopt_app:app";
    wsgi_app *app;
    assert_int_equal(wsgi_app_new(rt, &ao, &app), WSGI_OK);
    run_request(app);
    assert_string_equal(body, "from-host"); /* same interpreter, not a second one */

    /* And with the GIL released by the host, as a threaded host would run. */
    PyThreadState *ts = PyEval_SaveThread();
    run_request(app);
    assert_string_equal(body, "from-host");
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    PyEval_RestoreThread(ts);

    /* The host's interpreter survives libwsgi. */
    assert_true(Py_IsInitialized());
    assert_int_equal(PyRun_SimpleString("assert sys.host_marker == 'from-host'"), 0);
    assert_int_equal(Py_FinalizeEx(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(t_adopt)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
