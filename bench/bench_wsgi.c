/* In-process microbenchmark of the WSGI path: env_build + call + iter_next + free per request,
 * no sockets. Prints requests/second; a benchmark, not a test.
 * Usage: bench_wsgi [APPS_DIR [SPEC [N]]]   (defaults: examples/apps hello:app 200000)
 *
 * Besides the wall time of all N requests it prints the process CPU time per request (less
 * disturbed by other processes on a shared machine) and the best of 10 equal rounds (the floor
 * the code reaches when nothing else interferes). */
#include "bench_common.h"

#define ROUNDS 10

static size_t total;

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

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

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : LIBWSGI_EXAMPLE_APPS;
    const char *spec = argc > 2 ? argv[2] : "hello:app";
    long n = argc > 3 ? atol(argv[3]) : 200000;
    wsgi_runtime *rt;
    wsgi_app *app;
    if (bench_setup(dir, spec, &rt, &app) < 0) return 1;
    wsgi_request req;
    bench_request(&req);
    wsgi_response_handler h = {sizeof h, on_start, on_body, NULL};
    double t0 = bench_now(), c0 = cpu_now(), best = 0;
    long done = 0;
    for (int round = 0; round < ROUNDS; round++) {
        long m = (n - done) / (ROUNDS - round);
        double r0 = bench_now();
        for (long i = 0; i < m; i++) {
            wsgi_env *env;
            wsgi_response *resp;
            if (wsgi_env_build(app, &req, &env) || wsgi_call(env, &h, NULL, &resp)) return 1;
            while (wsgi_iter_next(resp) == 1) {
            }
            wsgi_response_free(resp);
        }
        double per = m ? (bench_now() - r0) / m : 0;
        if (m && (!best || per < best)) best = per;
        done += m;
    }
    double dt = bench_now() - t0, cpu = cpu_now() - c0;
    printf("%s: %ld requests in %.3f s: %.0f req/s, %.2f us/request; cpu %.2f us/request; best of "
           "%d rounds %.2f us/request\n",
           spec, n, dt, n / dt, dt * 1e6 / n, cpu * 1e6 / n, ROUNDS, best * 1e6);
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    return total ? 0 : 1;
}
