/* Shared by the in-process benchmarks: clock, runtime + app set-up, and the request they replay
 * (what wrk sends: a GET with five headers). */
#ifndef LIBWSGI_BENCH_COMMON_H
#define LIBWSGI_BENCH_COMMON_H

#define _POSIX_C_SOURCE 200809L
#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Start the runtime with `dir` on sys.path and load `spec`; prints why and returns -1 on failure.
 */
static int bench_setup(const char *dir, const char *spec, wsgi_runtime **rt, wsgi_app **app)
{
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = &dir;
    ro.n_python_path = 1;
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = spec;
    if (wsgi_runtime_new(&ro, rt) || wsgi_app_new(*rt, &ao, app)) {
        fprintf(stderr, "setup failed: %s\n", wsgi_errmsg());
        return -1;
    }
    return 0;
}

static const wsgi_header bench_headers[] = {
    {"Host", 4, "localhost:8000", 14},
    {"User-Agent", 10, "wrk/4.2", 7},
    {"Accept", 6, "*/*", 3},
    {"Accept-Encoding", 15, "gzip, deflate", 13},
    {"Connection", 10, "keep-alive", 10},
};

static void bench_request(wsgi_request *req)
{
    wsgi_request_init(req);
    req->method = "GET";
    req->method_len = 3;
    req->target = "/hello?name=world";
    req->target_len = strlen(req->target);
    req->headers = bench_headers;
    req->n_headers = sizeof bench_headers / sizeof bench_headers[0];
    req->client_addr = "127.0.0.1";
    req->client_port = 51234;
    req->server_name = "127.0.0.1";
    req->server_port = 8000;
}

#endif
