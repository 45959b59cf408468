/* In-process microbenchmark of the ASGI path: asgi_dispatch + loop turns until on_done, no sockets.
 * Prints requests/second; a benchmark, not a test.
 * Usage: bench_asgi [APPS_DIR [SPEC [N [BATCH]]]]  (defaults: bench/apps hello_asgi:app 100000 1)
 * BATCH > 1 dispatches that many requests before running the loop (a busy server's shape). */
#define _POSIX_C_SOURCE 200809L
#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long done;
static size_t total;

static int on_start(void *ud, const wsgi_response_head *h)
{
    (void)ud;
    total += h->n_headers;
    return 0;
}

static int on_body(void *ud, const char *d, size_t n, int more)
{
    (void)ud;
    (void)d;
    (void)more;
    total += n;
    return 0;
}

static void on_done(void *ud, int result)
{
    (void)ud;
    if (result == 0) done++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : LIBWSGI_BENCH_APPS;
    const char *spec = argc > 2 ? argv[2] : "hello_asgi:app";
    long n = argc > 3 ? atol(argv[3]) : 100000;
    long batch = argc > 4 ? atol(argv[4]) : 1;
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
    };
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = "GET";
    req.method_len = 3;
    req.target = "/hello?name=world";
    req.target_len = strlen(req.target);
    req.headers = hs;
    req.n_headers = 3;
    req.client_addr = "127.0.0.1";
    req.client_port = 51234;
    asgi_handler h = {sizeof h, on_start, on_body, NULL, NULL, NULL, on_done};
    asgi_conn **conns = calloc((size_t)batch, sizeof *conns);
    double t0 = now();
    for (long i = 0; i < n; i += batch) {
        long b = batch < n - i ? batch : n - i;
        for (long j = 0; j < b; j++)
            if (asgi_dispatch(app, &req, &h, NULL, &conns[j])) return 1;
        while (asgi_loop_timeout(rt) == 0) asgi_loop_run(rt);
        for (long j = 0; j < b; j++) asgi_conn_free(conns[j]);
    }
    double dt = now() - t0;
    printf("%s (batch %ld): %ld requests in %.3f s: %.0f req/s, %.2f us/request (%ld complete)\n",
           spec, batch, n, dt, n / dt, dt * 1e6 / n, done);
    free(conns);
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return done == n ? 0 : 1;
}
