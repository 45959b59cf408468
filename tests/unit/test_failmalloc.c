/*
 * test_failmalloc.c - out of memory on every allocation of every public path (nghttp2's failmalloc
 * idea): a scenario (runtime creation, app creation with lifespan, a WSGI request of each kind, an
 * ASGI request streamed both ways with trailers, a WebSocket session) is run again and again,
 * with the Nth allocation failing in run N, until a run meets no failure. Every run must give a
 * clean result — a documented error code, a 500, or a cut response — never a crash, a hang or a
 * callback out of order (one exception: asyncio itself may lose a task when an allocation fails
 * between its steps; see asgi_finish); and whole sweeps must not leak (C allocations counted
 * exactly, Python's allocated blocks within a tolerance). Large scenarios fail every Kth
 * allocation (at most FM_POINTS points per sweep).
 *
 * Two sources of failure, swept separately:
 *  - C: libwsgi's own malloc/calloc/realloc/strdup/strndup. This binary links the library's
 *    objects directly with -Wl,--wrap for those functions, so that only the library's calls come
 *    here (this file's own, and the harness's, go to the real functions; see the macros below).
 *    No hook in the library itself.
 *  - Python: the PYMEM_DOMAIN_MEM and PYMEM_DOMAIN_OBJ allocators, wrapped with
 *    PyMem_SetAllocator once the interpreter runs (the raw domain stays: it is what Python uses
 *    for itself outside the GIL, and its failures are mostly fatal by design).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>

/* The real allocator for this file and the harness; the library's calls are the wrapped ones. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
#define malloc  __real_malloc
#define calloc  __real_calloc
#define realloc __real_realloc
#define free    __real_free
#define strdup  __real_strdup
#define strndup __real_strndup

#include "asgi_harness.h"
#include "cpython_oom.h"

#undef malloc
#undef calloc
#undef realloc
#undef free
#undef strdup
#undef strndup

/* ---- the failing allocators ------------------------------------------------------------------ */

enum { FM_OFF, FM_C, FM_PY };

static struct {
    int mode;             /* which allocations count: FM_C or FM_PY */
    long count;           /* allocations counted since fm_arm */
    long fail_at;         /* the one that fails (1-based) */
    int failed;           /* it happened */
    long c_live;          /* the library's live C allocations (always counted) */
    int mode_swept;       /* the kind of the sweep under way (fm.mode is off between calls) */
    long lost_by_asyncio; /* ASGI requests whose task asyncio lost (see asgi_finish) */
} fm;

static int fm_fail_now(int kind)
{
    if (fm.mode != kind) return 0;
    if (++fm.count != fm.fail_at) return 0;
    fm.failed = 1;
    return 1;
}

static void fm_arm(int kind, long n)
{
    fm.count = 0;
    fm.fail_at = n;
    fm.failed = 0;
    fm.mode = kind;
}

static void fm_disarm(void)
{
    fm.mode = FM_OFF;
}

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n)
{
    void *p = fm_fail_now(FM_C) ? NULL : __real_malloc(n);
    if (p) fm.c_live++;
    return p;
}

void *__wrap_calloc(size_t k, size_t n)
{
    void *p = fm_fail_now(FM_C) ? NULL : __real_calloc(k, n);
    if (p) fm.c_live++;
    return p;
}

void *__wrap_realloc(void *old, size_t n)
{
    void *p = fm_fail_now(FM_C) ? NULL : __real_realloc(old, n);
    if (p && !old) fm.c_live++;
    return p;
}

void __wrap_free(void *p)
{
    if (p) fm.c_live--;
    __real_free(p);
}

char *__wrap_strdup(const char *s)
{
    char *p = fm_fail_now(FM_C) ? NULL : __real_strdup(s);
    if (p) fm.c_live++;
    return p;
}

char *__wrap_strndup(const char *s, size_t n)
{
    char *p = fm_fail_now(FM_C) ? NULL : __real_strndup(s, n);
    if (p) fm.c_live++;
    return p;
}

static PyMemAllocatorEx fm_py_orig[2]; /* PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ */

static void *fm_py_malloc(void *ctx, size_t n)
{
    PyMemAllocatorEx *o = ctx;
    return fm_fail_now(FM_PY) ? NULL : o->malloc(o->ctx, n);
}

static void *fm_py_calloc(void *ctx, size_t k, size_t n)
{
    PyMemAllocatorEx *o = ctx;
    return fm_fail_now(FM_PY) ? NULL : o->calloc(o->ctx, k, n);
}

static void *fm_py_realloc(void *ctx, void *p, size_t n)
{
    PyMemAllocatorEx *o = ctx;
    return fm_fail_now(FM_PY) ? NULL : o->realloc(o->ctx, p, n);
}

static void fm_py_free(void *ctx, void *p)
{
    PyMemAllocatorEx *o = ctx;
    o->free(o->ctx, p);
}

/* Wraps Python's allocators (the interpreter runs; no thread is in Python: the GIL is free). */
static void fm_py_install(void)
{
    static const PyMemAllocatorDomain domains[2] = {PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int i = 0; i < 2; i++) {
        PyMem_GetAllocator(domains[i], &fm_py_orig[i]);
        PyMemAllocatorEx a = {&fm_py_orig[i], fm_py_malloc, fm_py_calloc, fm_py_realloc,
                              fm_py_free};
        PyMem_SetAllocator(domains[i], &a);
    }
}

/* ---- outcomes ----------------------------------------------------------------------------------
 */

/* A result a public function may give when memory runs out: success, or one of its documented
 * error codes for it (the app's failure: a MemoryError raised in the app or in the library's
 * Python calls). Never a crash, a hang, or a code outside the enum. */
static void assert_clean_rc(const char *what, long n, int rc, const int *allowed)
{
    if (rc == WSGI_OK) return;
    for (const int *a = allowed; *a; a++)
        if (rc == *a) return;
    print_error("%s, allocation %ld failing: rc %d (%s): %s\n", what, n, rc, wsgi_strerror(rc),
                wsgi_errmsg());
    fail();
}

static const int rc_build[] = {WSGI_ERR_NOMEM, WSGI_ERR_PYTHON, 0};
static const int rc_call[] = {WSGI_ERR_NOMEM, WSGI_ERR_PYTHON, WSGI_ERR_APP, 0};
static const int rc_app_new[] = {
    WSGI_ERR_NOMEM,        WSGI_ERR_PYTHON,    WSGI_ERR_IMPORT,           WSGI_ERR_ATTRIBUTE,
    WSGI_ERR_NOT_CALLABLE, WSGI_ERR_INTERFACE, WSGI_ERR_MODULE_NOT_FOUND, 0};
static const int rc_lifespan[] = {WSGI_ERR_NOMEM, WSGI_ERR_PYTHON, WSGI_ERR_APP,
                                  ASGI_LIFESPAN_UNSUPPORTED, 0};
static const int rc_feed[] = {WSGI_ERR_NOMEM, WSGI_ERR_PYTHON, WSGI_ERR_STATE, ASGI_PAUSE, 0};

/* What a host sees of a response must be in order whatever failed: at most one head, no body
 * before it. */
typedef struct fm_sink {
    int starts, bodies, body_before_start, status, done, done_result;
} fm_sink;

static int fm_on_start(void *ud, const wsgi_response_head *h)
{
    fm_sink *s = ud;
    s->starts++;
    s->status = h->status;
    return 0;
}

static int fm_on_body(void *ud, const char *d, size_t n)
{
    fm_sink *s = ud;
    (void)d;
    (void)n;
    if (!s->starts) s->body_before_start++;
    s->bodies++;
    return 0;
}

static int fm_on_sendfile(void *ud, int fd, int64_t off, int64_t count)
{
    fm_sink *s = ud;
    (void)fd;
    (void)off;
    (void)count;
    if (!s->starts) s->body_before_start++;
    return 0;
}

static void assert_sane(const char *what, long n, const fm_sink *s)
{
    if (s->starts > 1 || s->body_before_start) {
        print_error("%s, allocation %ld failing: %d heads, %d bodies before the head\n", what, n,
                    s->starts, s->body_before_start);
        fail();
    }
}

/* ---- scenarios ---------------------------------------------------------------------------------
 */

static wsgi_app *fm_wsgi_app, *fm_asgi_app;

/* One WSGI request on @path; every step may fail cleanly. */
static void wsgi_once(const char *path, long n)
{
    static const char body[] = "first line\nthe rest of the body";
    th_req r;
    th_req_init(&r, "POST", path);
    th_req_header(&r, "Host", "example.org");
    th_req_header(&r, "X-Custom", "value");
    th_req_body(&r, body, sizeof body - 1);
    wsgi_response_handler h = {sizeof h, fm_on_start, fm_on_body, fm_on_sendfile};
    fm_sink s;
    memset(&s, 0, sizeof s);
    wsgi_env *env = NULL;
    int rc = wsgi_env_build(fm_wsgi_app, &r.req, &env);
    assert_clean_rc("wsgi_env_build", n, rc, rc_build);
    if (rc) return;
    rc = wsgi_env_set(env, "X_EXTRA", 7, "v", 1);
    assert_clean_rc("wsgi_env_set", n, rc, rc_build);
    wsgi_response *resp = NULL;
    rc = wsgi_call(env, &h, &s, &resp);
    assert_clean_rc("wsgi_call", n, rc, rc_call);
    if (rc) return;
    int k = 0;
    while ((rc = wsgi_iter_next(resp)) == 1)
        assert_true(++k < 10000);
    if (rc < 0 && wsgi_strerror(rc) == NULL) fail();
    assert_sane(path, n, &s);
    /* The response ends complete (maybe a 500) or cut, with a reason when it is not complete. */
    if (rc < 0) assert_true(wsgi_response_error(resp) < 0);
    wsgi_response_free(resp);
}

static void sc_wsgi_list(long n)
{
    wsgi_once("/list", n);
}
static void sc_wsgi_gen(long n)
{
    wsgi_once("/gen", n);
}
static void sc_wsgi_input(long n)
{
    wsgi_once("/input", n);
}
static void sc_wsgi_raise(long n)
{
    wsgi_once("/raise", n);
}
static void sc_wsgi_file(long n)
{
    wsgi_once("/file", n);
}

/* ah_turn / ah_settle, except that a turn may fail cleanly (the loop's own allocations fail too).
 */
static const int rc_loop[] = {WSGI_ERR_NOMEM, WSGI_ERR_PYTHON, 0};

static int fm_turn(long n, int wait)
{
    int t = asgi_loop_timeout(th_rt);
    if (t < -1) {
        assert_clean_rc("asgi_loop_timeout", n, t, rc_loop);
        t = 0;
    }
    if (!wait && t != 0 && !ah_fd_readable(asgi_loop_fd(th_rt))) return 1; /* settled */
    struct pollfd p = {asgi_loop_fd(th_rt), POLLIN, 0};
    int k;
    /* Nothing scheduled and the fd quiet is a stall at once: every input of these scenarios was
     * given before the loop is driven to the end, and no other thread wakes the loop. */
    do {
        k = poll(&p, 1, t < 0 ? 0 : t);
    } while (k < 0 && errno == EINTR);
    if (k == 0 && t < 0) return -1;
    assert_clean_rc("asgi_loop_run", n, asgi_loop_run(th_rt), rc_loop);
    return 0;
}

static void fm_settle(long n)
{
    for (int i = 0; i < AH_MAX_TURNS; i++)
        if (fm_turn(n, 0) != 0) return;
    fail_msg("allocation %ld failing: the loop always has ready work", n);
}

/* Loop turns until on_done, bounded: a failed allocation must not lose the end of a request. */
static void asgi_finish(const char *what, long n, asgi_conn *c, ah_rec *rec, int detach)
{
    if (detach) {
        asgi_conn_free(c);
        ah_drive_idle();
        return;
    }
    for (int turns = 0; rec->done_calls == 0; turns++) {
        int stalled = turns > AH_MAX_TURNS || fm_turn(n, 1) < 0;
        if (stalled && fm.mode_swept == FM_PY) {
            /* asyncio itself can lose a task when an allocation fails between two steps of it
             * (a Handle whose call raised MemoryError is only logged: "Exception in callback
             * TaskStepMethWrapper"), and nothing is scheduled any more: CPython's limit, not
             * the library's. The host's request timeout ends it: freeing the connection must
             * be clean (no crash, no leak: the sweep's counts). */
            fm.lost_by_asyncio++;
            if (getenv("FM_DEBUG"))
                print_message("%s: allocation %ld failing: task lost (events \"%s\")\n", what, n,
                              rec->events);
            asgi_conn_free(c);
            return;
        }
        if (stalled) {
            print_error("%s, allocation %ld failing: the request never ended (events \"%s\")\n",
                        what, n, rec->events);
            fail();
        }
    }
    assert_int_equal(rec->done_calls, 1);
    asgi_conn_free(c);
}

static void sc_asgi_http(long n)
{
    th_req r;
    th_req_init(&r, "POST", "/echo?x=1");
    th_req_header(&r, "Host", "example.org");
    r.req.content_length = -1;
    r.req.flags |= WSGI_REQUEST_CHUNKED;
    th_req_header(&r, "Transfer-Encoding", "chunked");
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_trailers = 1;
    asgi_handler h = ah_handler(&rec);
    asgi_conn *c = NULL;
    int rc = asgi_dispatch(fm_asgi_app, &r.req, &h, &rec, &c);
    assert_clean_rc("asgi_dispatch", n, rc, rc_call);
    if (rc == 0) {
        fm_settle(n);
        rc = asgi_conn_feed(c, "0123456789", 10, 1);
        assert_clean_rc("asgi_conn_feed", n, rc, rc_feed);
        fm_settle(n);
        rc = asgi_conn_feed(c, "abcdef", 6, 0);
        assert_clean_rc("asgi_conn_feed", n, rc, rc_feed);
        asgi_finish("asgi http", n, c, &rec, 0);
        assert_int_equal(rec.body_before_start, 0);
        assert_int_equal(rec.bodies_after_final, 0);
        assert_true(rec.starts <= 1);
    }
    ah_rec_free(&rec);
}

static int ws_accept(void *ud, const char *sp, size_t sp_len, const wsgi_header *h, size_t k)
{
    (void)ud;
    (void)sp;
    (void)sp_len;
    (void)h;
    (void)k;
    return 0;
}

static int ws_send(void *ud, int binary, const char *d, size_t len)
{
    (void)ud;
    (void)binary;
    (void)d;
    (void)len;
    return 0;
}

static int ws_close(void *ud, int code, const char *reason, size_t len)
{
    (void)ud;
    (void)code;
    (void)reason;
    (void)len;
    return 0;
}

static void sc_websocket(long n)
{
    th_req r;
    th_req_init(&r, "GET", "/ws");
    th_req_header(&r, "Host", "example.org");
    th_req_header(&r, "Upgrade", "websocket");
    th_req_header(&r, "Connection", "Upgrade");
    th_req_header(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    th_req_header(&r, "Sec-WebSocket-Version", "13");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_handler h = ah_handler(&rec);
    h.on_ws_accept = ws_accept;
    h.on_ws_send = ws_send;
    h.on_ws_close = ws_close;
    asgi_conn *c = NULL;
    int rc = asgi_websocket_dispatch(fm_asgi_app, &r.req, &h, &rec, &c);
    assert_clean_rc("asgi_websocket_dispatch", n, rc, rc_call);
    if (rc == 0) {
        fm_settle(n);
        rc = asgi_conn_ws_message(c, ASGI_WS_TEXT, "hello", 5);
        assert_clean_rc("asgi_conn_ws_message", n, rc, rc_feed);
        rc = asgi_conn_ws_message(c, ASGI_WS_BINARY, "\1\2\3", 3);
        assert_clean_rc("asgi_conn_ws_message", n, rc, rc_feed);
        fm_settle(n);
        rc = asgi_conn_ws_closed(c, 1000, "bye", 3);
        assert_clean_rc("asgi_conn_ws_closed", n, rc, rc_feed);
        asgi_finish("websocket", n, c, &rec, 0);
    }
    ah_rec_free(&rec);
}

static void sc_app_life(long n)
{
    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = "fm_apps:asgi";
    wsgi_app *app = NULL;
    int rc = wsgi_app_new(th_rt, &ao, &app);
    assert_clean_rc("wsgi_app_new (ASGI)", n, rc, rc_app_new);
    if (rc) return;
    rc = asgi_lifespan_startup(app);
    assert_clean_rc("asgi_lifespan_startup", n, rc, rc_lifespan);
    rc = asgi_lifespan_shutdown(app);
    assert_clean_rc("asgi_lifespan_shutdown", n, rc, rc_lifespan);
    wsgi_app_free(app);
    ao.spec = "fm_apps:wsgi";
    rc = wsgi_app_new(th_rt, &ao, &app);
    assert_clean_rc("wsgi_app_new (WSGI)", n, rc, rc_app_new);
    if (rc == 0) wsgi_app_free(app);
}

/* ---- the sweep ---------------------------------------------------------------------------------
 */

static long py_blocks(void)
{
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("fm_apps:probe", "/", &rec, &res);
    long v = strtol(rec.body, NULL, 10);
    th_rec_free(&rec);
    return v;
}

/* At most this many failure points per sweep: a scenario with more allocations (an app's whole
 * life makes thousands in Python) fails every (total / FM_POINTS)th, from the first on. */
#define FM_POINTS 400

/* Runs @sc once with allocations of @kind counted, none failing; returns their number. */
static long count_allocations(int kind, void (*sc)(long))
{
    fm_arm(kind, -1);
    sc(0);
    fm_disarm();
    return fm.count;
}

/* Runs @sc with allocation 1, 1 + stride, ... of @kind failing, then once more with none failing
 * (the count of a run may change once caches settle: the sweep goes on until a run meets no
 * failure). Returns the number of failure points. */
static long sweep_once(int kind, void (*sc)(long), long stride)
{
    fm.mode_swept = kind;
    long points = 0;
    for (long n = 1;; n += stride) {
        fm_arm(kind, n);
        sc(n);
        fm_disarm();
        if (!fm.failed) return points;
        points++;
    }
}

static void sweep_kinds(const char *what, void (*sc)(long), int last_kind)
{
    static const char *const kinds[] = {"", "C", "Python"};
    for (int kind = FM_C; kind <= last_kind; kind++) {
        for (int i = 0; i < 3; i++)
            sc(0); /* warm: imports, caches and pools settle */
        long total = count_allocations(kind, sc);
        long stride = total > FM_POINTS ? total / FM_POINTS : 1;
        /* Three sweeps; the growth of the last two is judged (the first settles the caches the
         * failure paths use: tracebacks, linecache, freelists). A leak on a failure path shows
         * in every sweep. */
        sweep_once(kind, sc, stride);
        long growth_c[2], growth_b[2], points = 0, lost = 0;
        for (int i = 0; i < 2; i++) {
            long b0 = py_blocks(), c0 = fm.c_live;
            fm.lost_by_asyncio = 0;
            points = sweep_once(kind, sc, stride);
            growth_c[i] = fm.c_live - c0;
            growth_b[i] = py_blocks() - b0;
            lost += fm.lost_by_asyncio;
        }
        print_message("%-26s %-6s %5ld allocations, %4ld failure points: C live %+ld %+ld, "
                      "Python blocks %+ld %+ld; tasks lost by asyncio %ld\n",
                      what, kinds[kind], total, points, growth_c[0], growth_c[1], growth_b[0],
                      growth_b[1], lost);
        long gc_ = growth_c[0] < growth_c[1] ? growth_c[0] : growth_c[1];
        long gb = growth_b[0] < growth_b[1] ? growth_b[0] : growth_b[1];
        /* C allocations are counted exactly: any growth is a leak. Python's blocks: judged
         * loosely (up to a quarter block per failure point: the raising WSGI app's sweep grows by
         * ~40 blocks per 194 points, not traced yet to CPython or the library), and not at all
         * for sweeps where asyncio lost tasks (see asgi_finish): what a lost task holds is
         * never released. The refleak pass checks the exact reference count of the normal and
         * error paths. */
        if (gc_ > 0 || (lost == 0 && gb > 32 + points / 4))
            fail_msg("%s (%s): sweeps of %ld failures leaked: C %+ld %+ld allocations, Python "
                     "%+ld %+ld blocks",
                     what, kinds[kind], points, growth_c[0], growth_c[1], growth_b[0], growth_b[1]);
    }
}

static void sweep(const char *what, void (*sc)(long))
{
#if FM_PYTHON_SURVIVES_OOM
    sweep_kinds(what, sc, FM_PY);
#else
    /* CPython itself does not survive a Python allocation failing on the exception path (a
     * raising app's traceback formatted): 3.12 and 3.13 segfault (a frame over-released), the
     * debug 3.11 aborts on its own assertions. test_cpython_oom.c shows it with CPython alone,
     * and fails when a fixed version arrives. Here: C allocations only. */
    sweep_kinds(what, sc, FM_C);
#endif
}

static void test_wsgi_list(void **state)
{
    (void)state;
    sweep("wsgi list", sc_wsgi_list);
}
static void test_wsgi_generator_write(void **state)
{
    (void)state;
    sweep("wsgi generator + write()", sc_wsgi_gen);
}
static void test_wsgi_input_errors(void **state)
{
    (void)state;
    sweep("wsgi input + errors", sc_wsgi_input);
}
static void test_wsgi_raise(void **state)
{
    (void)state;
    sweep("wsgi app raises", sc_wsgi_raise);
}
static void test_wsgi_file_wrapper(void **state)
{
    (void)state;
    sweep("wsgi file_wrapper", sc_wsgi_file);
}
static void test_asgi_http(void **state)
{
    (void)state;
    sweep("asgi http streamed", sc_asgi_http);
}
static void test_websocket(void **state)
{
    (void)state;
    sweep("websocket", sc_websocket);
}
static void test_app_life(void **state)
{
    (void)state;
    /* C allocations only. Python's: asgi_lifespan_startup() runs the loop until the lifespan
     * task answers, and when asyncio loses that task (see asgi_finish) it never returns: a
     * known gap (issue 14), not swept until the library bounds that wait. */
    sweep_kinds("app new/lifespan/free", sc_app_life, FM_C);
}

/* The runtime: its first allocation (before Python starts) failing is WSGI_ERR_NOMEM, and a
 * runtime can be made afterwards. Later failures inside Python's own start-up are fatal by
 * CPython's design, and a failed start after Py_Initialize would need a second Python start in
 * this process, which CPython does not support reliably: not swept. */
static int group_setup(void **state)
{
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    wsgi_runtime *rt = NULL;
    fm_arm(FM_C, 1);
    int rc = wsgi_runtime_new(&opts, &rt);
    fm_disarm();
    if (rc != WSGI_ERR_NOMEM || rt != NULL || !fm.failed) {
        print_error("wsgi_runtime_new with its first allocation failing: %d (%s)\n", rc,
                    wsgi_strerror(rc));
        return -1;
    }
    if (th_group_setup(state) != 0) return -1;
    fm_py_install();
    fm_wsgi_app = th_app("fm_apps:wsgi");
    fm_asgi_app = th_app("fm_apps:asgi");
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_wsgi_list),         ah_unit_test(test_wsgi_generator_write),
        ah_unit_test(test_wsgi_input_errors), ah_unit_test(test_wsgi_raise),
        ah_unit_test(test_wsgi_file_wrapper), ah_unit_test(test_asgi_http),
        ah_unit_test(test_websocket),         ah_unit_test(test_app_life),
    };
    return cmocka_run_group_tests(tests, group_setup, th_group_teardown);
}
