/* A host as a library user writes it, built outside the source tree against an installed libwsgi
 * (tests/packaging/check_installed.sh): load APP_DIR/pkg_app.py, serve one GET request and print
 * the response. Also checks that the headers and the library it runs against are the same release.
 *
 * Usage: host APP_DIR */
#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <string.h>

static int on_start(void *ud, const wsgi_response_head *head)
{
    (void)ud;
    printf("HTTP/1.1 %.*s\r\n", (int)head->status_line_len, head->status_line);
    for (size_t i = 0; i < head->n_headers; i++)
        printf("%.*s: %.*s\r\n", (int)head->headers[i].name_len, head->headers[i].name,
               (int)head->headers[i].value_len, head->headers[i].value);
    printf("\r\n");
    return 0;
}

static int on_body(void *ud, const char *data, size_t len)
{
    (void)ud;
    return fwrite(data, 1, len, stdout) == len ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s APP_DIR\n", argv[0]);
        return 2;
    }
    if (libwsgi_version_num() != LIBWSGI_VERSION_NUM) {
        fprintf(stderr, "headers %s, library %s\n", LIBWSGI_VERSION, libwsgi_version());
        return 1;
    }
    const char *dir = argv[1];
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = &dir;
    ro.n_python_path = 1;
    wsgi_runtime *rt;
    int rc = wsgi_runtime_new(&ro, &rt);
    if (rc) {
        fprintf(stderr, "runtime: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        return 1;
    }
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = "pkg_app:app";
    wsgi_app *app;
    if ((rc = wsgi_app_new(rt, &ao, &app)) != 0) {
        fprintf(stderr, "app: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        wsgi_runtime_free(rt);
        return 1;
    }

    static const char target[] = "/installed?from=host";
    wsgi_header headers[] = {{"Host", 4, "localhost", 9}};
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = "GET";
    req.method_len = 3;
    req.target = target;
    req.target_len = strlen(target);
    req.headers = headers;
    req.n_headers = 1;
    wsgi_response_handler h = {sizeof h, on_start, on_body, NULL};
    wsgi_env *env;
    wsgi_response *resp;
    if ((rc = wsgi_env_build(app, &req, &env)) == 0 &&
        (rc = wsgi_call(env, &h, NULL, &resp)) == 0) {
        while ((rc = wsgi_iter_next(resp)) == 1) {
        }
        wsgi_response_free(resp);
    }
    if (rc < 0) fprintf(stderr, "request: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return rc < 0 ? 1 : 0;
}
