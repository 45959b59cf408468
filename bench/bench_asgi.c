/* In-process microbenchmark of the ASGI path: asgi_dispatch + loop turns until on_done, no sockets.
 * Prints requests/second; a benchmark, not a test.
 * Usage: bench_asgi [APPS_DIR [SPEC [N [BATCH [START]]]]]
 *   defaults: bench/apps hello_asgi:app 100000 1 eager
 * BATCH > 1 dispatches that many requests before running the loop (a busy server's shape).
 * START is "eager" (asgi_loop_set_eager: the app's first step runs inside asgi_dispatch, as in
 * libwsgi-epoll) or "deferred" (tasks start at the next asgi_loop_run). Loop turns are run only
 * while asgi_loop_timeout() says work is ready, as a host does; their count is printed. */
#include "bench_common.h"

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

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : LIBWSGI_BENCH_APPS;
    const char *spec = argc > 2 ? argv[2] : "hello_asgi:app";
    long n = argc > 3 ? atol(argv[3]) : 100000;
    long batch = argc > 4 ? atol(argv[4]) : 1;
    const char *start = argc > 5 ? argv[5] : "eager";
    wsgi_runtime *rt;
    wsgi_app *app;
    if (bench_setup(dir, spec, &rt, &app) < 0) return 1;
    wsgi_request req;
    bench_request(&req);
    asgi_handler h = {.struct_size = sizeof h, .on_start = on_start, .on_body = on_body, .on_done = on_done};
    if (strcmp(start, "eager") == 0 && asgi_loop_set_eager(wsgi_app_runtime(app), 1) != 0) {
        fprintf(stderr, "asgi_loop_set_eager: %s\n", wsgi_errmsg());
        return 1;
    }
    asgi_conn **conns = calloc((size_t)batch, sizeof *conns);
    long turns = 0;
    double t0 = bench_now();
    for (long i = 0; i < n; i += batch) {
        long b = batch < n - i ? batch : n - i;
        for (long j = 0; j < b; j++)
            if (asgi_dispatch(app, &req, &h, NULL, &conns[j])) return 1;
        while (asgi_loop_timeout(rt) == 0) {
            asgi_loop_run(rt);
            turns++;
        }
        for (long j = 0; j < b; j++)
            asgi_conn_free(conns[j]);
    }
    double dt = bench_now() - t0;
    printf("%s (batch %ld, %s): %ld requests in %.3f s: %.0f req/s, %.2f us/request (%ld complete, "
           "%ld loop turns)\n",
           spec, batch, start, n, dt, n / dt, dt * 1e6 / n, done, turns);
    free(conns);
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return done == n ? 0 : 1;
}
