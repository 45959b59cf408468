/* In-process microbenchmark of the WSGI path: env_build + call + iter_next + free per request,
 * no sockets. Prints requests/second; a benchmark, not a test.
 * Usage: bench_wsgi [APPS_DIR [SPEC [N]]]   (defaults: examples/apps hello:app 200000) */
#define _POSIX_C_SOURCE 200809L
#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t total;

static int on_start(void *ud, const wsgi_response_head *h)
{
    (void)ud;
    total += h->n_headers;
    return 0;
}

static int on_body(void *ud, const char *d, size_t n)
{
    (void)ud;
    (void)d;
    total += n;
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : LIBWSGI_EXAMPLE_APPS;
    const char *spec = argc > 2 ? argv[2] : "hello:app";
    long n = argc > 3 ? atol(argv[3]) : 200000;
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = &dir;
    ro.n_python_path = 1;
    wsgi_runtime *rt;
    wsgi_app *app;
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = spec;
    if (wsgi_runtime_new(&ro, &rt) || wsgi_app_new(rt, &ao, &app)) {
        fprintf(stderr, "setup failed: %s\n", wsgi_errmsg());
        return 1;
    }
    wsgi_header hs[] = {
        {"Host", 4, "localhost:8000", 14},
        {"User-Agent", 10, "wrk/4.2", 7},
        {"Accept", 6, "*/*", 3},
        {"Accept-Encoding", 15, "gzip, deflate", 13},
        {"Connection", 10, "keep-alive", 10},
    };
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = "GET";
    req.method_len = 3;
    req.target = "/hello?name=world";
    req.target_len = strlen(req.target);
    req.headers = hs;
    req.n_headers = 5;
    req.client_addr = "127.0.0.1";
    req.client_port = 51234;
    req.server_name = "127.0.0.1";
    req.server_port = 8000;
    wsgi_response_handler h = {sizeof h, on_start, on_body, NULL};
    double t0 = now();
    for (long i = 0; i < n; i++) {
        wsgi_env *env;
        wsgi_response *resp;
        if (wsgi_env_build(app, &req, &env) || wsgi_call(env, &h, NULL, &resp)) return 1;
        while (wsgi_iter_next(resp) == 1) {
        }
        wsgi_response_free(resp);
    }
    double dt = now() - t0;
    printf("%s: %ld requests in %.3f s: %.0f req/s, %.2f us/request\n", spec, n, dt, n / dt,
           dt * 1e6 / n);
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return total ? 0 : 1;
}
