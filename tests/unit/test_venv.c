/* wsgi_runtime_options.virtualenv: the interpreter must use the venv's site-packages (an app that
 * exists only there loads) and not Debian's dist-packages (include-system-site-packages = false).
 * The venv is made by the embedded Python's own interpreter (TEST_PYTHON_EXECUTABLE, Debian's
 * /usr/bin/python3.11 by default) with -m venv at test time, in a temp directory. */
#include "harness.h"

#include <sys/wait.h>

#ifndef TEST_PYTHON_EXECUTABLE
#error "TEST_PYTHON_EXECUTABLE and TEST_PYTHON_VERSION must be defined by the build"
#endif

static char venv[256];

static int make_venv(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/libwsgi-venv-XXXXXX";
    if (!mkdtemp(tmpl)) return -1;
    snprintf(venv, sizeof venv, "%s/env", tmpl);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -m venv --without-pip %s", TEST_PYTHON_EXECUTABLE, venv);
    if (system(cmd) != 0) return -1;
    char path[512];
    snprintf(path, sizeof path,
             "%s/lib/python" TEST_PYTHON_VERSION "/site-packages/venv_only_app.py", venv);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs("import sys\n"
          "def app(environ, start_response):\n"
          "    start_response('200 OK', [])\n"
          "    try:\n"
          "        import flask  # in Debian's dist-packages only\n"
          "        seen = 'system-visible'\n"
          "    except ImportError:\n"
          "        seen = 'isolated'\n"
          "    return [(sys.prefix + ' ' + seen).encode()]\n",
          f);
    fclose(f);
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    opts.virtualenv = venv;
    return th_runtime_start(&opts);
}

static int remove_venv(void **state)
{
    th_group_teardown(state);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%.*s'", (int)(strlen(venv) - 4), venv);
    return system(cmd) == 0 ? 0 : -1;
}

static void t_venv_site_packages(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("venv_only_app:app", "/", &rec, &res);
    th_assert_well_formed(&rec);
    char expected[512];
    snprintf(expected, sizeof expected, "%s isolated", venv);
    assert_string_equal(rec.body, expected);
    th_rec_free(&rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(t_venv_site_packages)};
    return cmocka_run_group_tests(tests, make_venv, remove_venv);
}
