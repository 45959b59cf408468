/* The libwsgi "hello world": load examples/apps/hello.py, build one GET request in memory, run it
 * through the WSGI app and print the HTTP response to stdout. No sockets: this is the whole API a
 * host server needs, in one page.
 *
 * Usage: libwsgi-minimal [APPS_DIR [SPEC [PATH]]]   (defaults: examples/apps, hello:app, /)
 *
 * tests/packaging/check_installed.sh builds this file against an installed libwsgi (pkg-config,
 * pkg-config --static, CMake's find_package) the way a library user would. */
#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <string.h>

#ifndef LIBWSGI_EXAMPLE_APPS
#define LIBWSGI_EXAMPLE_APPS "examples/apps"
#endif

static void log_to_stderr(void *ud, int level, const char *msg, size_t len)
{
    (void)ud;
    fprintf(stderr, "[libwsgi:%d] %.*s\n", level, (int)len, msg);
}

/* The response arrives through these callbacks; a real server writes to its socket instead. */
static int on_start(void *ud, const wsgi_response_head *head)
{
    FILE *out = ud;
    fprintf(out, "HTTP/1.1 %.*s\r\n", (int)head->status_line_len, head->status_line);
    for (size_t i = 0; i < head->n_headers; i++)
        fprintf(out, "%.*s: %.*s\r\n", (int)head->headers[i].name_len, head->headers[i].name,
                (int)head->headers[i].value_len, head->headers[i].value);
    fputs("\r\n", out);
    return 0;
}

static int on_body(void *ud, const char *data, size_t len)
{
    return fwrite(data, 1, len, ud) == len ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *apps_dir = argc > 1 ? argv[1] : LIBWSGI_EXAMPLE_APPS;
    const char *spec = argc > 2 ? argv[2] : "hello:app";
    const char *path = argc > 3 ? argv[3] : "/";

    /* 0. The headers this was compiled with and the library it runs against are one release. */
    if (libwsgi_version_num() != LIBWSGI_VERSION_NUM) {
        fprintf(stderr, "headers %s, library %s\n", LIBWSGI_VERSION, libwsgi_version());
        return 1;
    }

    /* 1. One interpreter per process. */
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = &apps_dir;
    ro.n_python_path = 1;
    ro.log = log_to_stderr;
    ro.log_level = WSGI_LOG_WARNING;
    wsgi_runtime *rt;
    int rc = wsgi_runtime_new(&ro, &rt);
    if (rc) {
        fprintf(stderr, "runtime: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        return 1;
    }

    /* 2. Load the app, gunicorn-style spec. */
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = spec;
    wsgi_app *app;
    if ((rc = wsgi_app_new(rt, &ao, &app)) != 0) {
        fprintf(stderr, "app: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        wsgi_runtime_free(rt);
        return 1;
    }

    /* 3. A parsed request, as a host's HTTP parser would produce it. */
    wsgi_header headers[] = {{"Host", 4, "localhost", 9}, {"User-Agent", 10, "minimal", 7}};
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = "GET";
    req.method_len = 3;
    req.target = path;
    req.target_len = strlen(path);
    req.headers = headers;
    req.n_headers = 2;
    req.client_addr = "127.0.0.1";
    req.client_port = 40000;

    /* 4. environ → app → pull chunks until done. */
    wsgi_response_handler h = {sizeof h, on_start, on_body, NULL};
    wsgi_env *env;
    wsgi_response *resp;
    if ((rc = wsgi_env_build(app, &req, &env)) == 0 &&
        (rc = wsgi_call(env, &h, stdout, &resp)) == 0) {
        while ((rc = wsgi_iter_next(resp)) == 1) {
        }
        if (rc < 0) fprintf(stderr, "response cut: %s\n", wsgi_response_errmsg(resp));
        wsgi_response_free(resp);
    } else {
        fprintf(stderr, "request: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
    }

    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return rc < 0 ? 1 : 0;
}
