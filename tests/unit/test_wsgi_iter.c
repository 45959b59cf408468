/*
 * test_wsgi_iter.c - pulling the response: one chunk per wsgi_iter_next, on_start exactly once
 * before any body, no empty chunks, lifetime of the data pointer, every kind of iterable, close()
 * exactly once on every path (end, app error, host error, abort, free from a callback),
 * Content-Length enforcement, recursion detection, and callbacks running without the GIL.
 */
#include "harness.h"

#define IT(name) "iter_apps:" name

/* A counter kept by iter_apps (e.g. "c1.close"), read with a second request. */
static long count_of(const char *key)
{
    char target[128];
    snprintf(target, sizeof target, "/?%s", key);
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(IT("count"), target, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    long n = strtol(rec.body, NULL, 10);
    th_rec_free(&rec);
    return n;
}

static void get(const char *spec, const char *target, th_rec *rec, th_result *res)
{
    th_rec_init(rec);
    th_get(spec, target, rec, res);
}

/* wsgi_call only; the caller drives the response. */
static wsgi_response *start(const char *spec, const char *target, th_rec *rec)
{
    th_req r;
    th_req_init(&r, "GET", target);
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app(spec), &r.req, &env), WSGI_OK);
    wsgi_response_handler h = th_handler(rec);
    wsgi_response *resp = NULL;
    assert_rc(wsgi_call(env, &h, rec, &resp), WSGI_OK);
    assert_non_null(resp);
    rec->resp = resp;
    return resp;
}

static void test_list_tuple_generator(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("as_list"), "/?chunks=a,bc,def", &rec, &res);
    th_assert_ok(&rec, &res, 200, "abcdef");
    th_rec_free(&rec);

    get(IT("as_tuple"), "/?chunks=a,bc,def", &rec, &res);
    th_assert_ok(&rec, &res, 200, "abcdef");
    th_rec_free(&rec);

    get(IT("as_generator"), "/?name=gen1&n=5&size=3", &rec, &res);
    th_assert_ok(&rec, &res, 200, "AAABBBCCCDDDEEE");
    th_rec_free(&rec);
    assert_int_equal(count_of("gen1.finally"), 1);
}

static void test_custom_iterable_closed_once(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=done&chunks=a,b", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);
    assert_int_equal(count_of("done.next"), 2);
    assert_int_equal(count_of("done.close"), 1);
}

static void test_empty_chunks_never_delivered(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=empties&chunks=,a,,,b,", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ab");
    assert_int_equal(rec.body_calls, 2);
    th_rec_free(&rec);
}

static void test_empty_body(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {IT("closing"), "/?name=nobody"},
        {IT("as_list"), "/"},
        {IT("as_list"), "/?chunks=,,"},
        {IT("as_generator"), "/?n=0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_rec rec;
        th_result res;
        get(cases[i][0], cases[i][1], &rec, &res);
        th_assert_ok(&rec, &res, 200, "");
        assert_int_equal(rec.body_calls, 0);
        th_rec_free(&rec);
    }
    assert_int_equal(count_of("nobody.close"), 1);
}

/* One chunk per call: the host pulls at its own pace (backpressure). */
static void test_one_chunk_per_call(void **state)
{
    (void)state;
    th_rec rec;
    th_rec_init(&rec);
    wsgi_response *resp = start(IT("closing"), "/?name=steps&chunks=a,b,c", &rec);
    assert_int_equal(rec.starts, 0);
    assert_int_equal(wsgi_response_started(resp), 0);

    assert_rc(wsgi_iter_next(resp), 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(wsgi_response_started(resp), 1);
    assert_string_equal(rec.body, "a");
    assert_rc(wsgi_iter_next(resp), 1);
    assert_string_equal(rec.body, "ab");
    assert_rc(wsgi_iter_next(resp), 1);
    assert_string_equal(rec.body, "abc");
    assert_rc(wsgi_iter_next(resp), 0);
    assert_rc(wsgi_iter_next(resp), 0);
    assert_rc(wsgi_iter_next(resp), 0);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.body_calls, 3);
    assert_rc(wsgi_response_error(resp), 0);
    assert_string_equal(wsgi_response_errmsg(resp), "");
    wsgi_response_free(resp);
    th_assert_well_formed(&rec);
    th_rec_free(&rec);
    assert_int_equal(count_of("steps.close"), 1);
}

/* The data handed to on_body stays readable until the next call on the response, so a host can
 * queue it without copying. Each chunk here is a fresh bytes object the app drops at once. */
static void test_data_valid_until_next_call(void **state)
{
    (void)state;
    th_rec rec;
    th_rec_init(&rec);
    wsgi_response *resp = start(IT("as_generator"), "/?name=fresh&n=6&size=3000", &rec);
    char expected[3000];
    int chunks = 0, rc;
    while ((rc = wsgi_iter_next(resp)) == 1) {
        if (rec.body_calls == chunks) continue;
        assert_int_equal(rec.body_calls, chunks + 1);
        assert_int_equal(rec.last_len, sizeof expected);
        memset(expected, 'A' + chunks, sizeof expected);
        assert_memory_equal(rec.last_data, expected, sizeof expected);
        chunks++;
    }
    assert_rc(rc, 0);
    assert_int_equal(chunks, 6);
    wsgi_response_free(resp);
    th_rec_free(&rec);
}

static void test_many_small_chunks(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("as_generator"), "/?name=many&n=2000&size=7", &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.body_len, 2000 * 7);
    for (size_t i = 0; i < 2000; i++)
        assert_int_equal(rec.body[i * 7], 'A' + (int)(i % 26));
    th_rec_free(&rec);
}

static void test_close_once_on_error_mid_iteration(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=midfail&chunks=a,b&fail_at=1", &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_APP);
    assert_rc(res.resp_error, WSGI_ERR_APP);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "a");
    th_rec_free(&rec);
    assert_int_equal(count_of("midfail.close"), 1);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "iter_apps failure in __next__") > 0);
}

static void test_close_once_on_error_before_first_chunk(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=firstfail&chunks=a,b&fail_at=0", &rec, &res);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    th_rec_free(&rec);
    assert_int_equal(count_of("firstfail.close"), 1);
}

static void test_close_once_when_on_body_fails(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.fail_body_at = 1;
    th_get(IT("closing"), "/?name=hostfail&chunks=a,b,c", &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_CALLBACK);
    assert_rc(res.resp_error, WSGI_ERR_CALLBACK);
    assert_int_equal(rec.body_calls, 1);
    th_rec_free(&rec);
    assert_int_equal(count_of("hostfail.next"), 1);
    assert_int_equal(count_of("hostfail.close"), 1);
}

static void test_close_once_when_on_start_fails(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.fail_start = 1;
    th_get(IT("closing"), "/?name=startfail&chunks=a,b", &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_CALLBACK);
    assert_rc(res.resp_error, WSGI_ERR_CALLBACK);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.body_calls, 0);
    th_rec_free(&rec);
    assert_int_equal(count_of("startfail.close"), 1);
}

static void test_close_once_on_abort(void **state)
{
    (void)state;
    th_rec rec;
    th_rec_init(&rec);
    wsgi_response *resp = start(IT("closing"), "/?name=abort1&chunks=a,b,c", &rec);
    assert_rc(wsgi_iter_next(resp), 1);
    wsgi_response_free(resp);
    th_rec_free(&rec);
    assert_int_equal(count_of("abort1.close"), 1);
    assert_int_equal(count_of("abort1.next"), 1);

    /* Freed before the first pull. */
    th_rec_init(&rec);
    resp = start(IT("closing"), "/?name=abort0&chunks=a,b,c", &rec);
    wsgi_response_free(resp);
    assert_int_equal(rec.starts, 0);
    th_rec_free(&rec);
    assert_int_equal(count_of("abort0.close"), 1);
    assert_int_equal(count_of("abort0.next"), 0);

    /* A generator is closed too (its finally block runs). */
    th_rec_init(&rec);
    resp = start(IT("as_generator"), "/?name=abortgen&n=10", &rec);
    assert_rc(wsgi_iter_next(resp), 1);
    wsgi_response_free(resp);
    th_rec_free(&rec);
    assert_int_equal(count_of("abortgen.finally"), 1);
    assert_int_equal(count_of("abortgen.next"), 1);
}

static void test_close_that_raises(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=closeraise&chunks=a,b&close_raises=1", &rec, &res);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "ab");
    th_rec_free(&rec);
    assert_int_equal(count_of("closeraise.close"), 1);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "iter_apps failure in close") > 0);
}

static void test_content_length_enforced(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("closing"), "/?name=cl1&cl=5&chunks=hello%20world", &rec, &res);
    th_assert_ok(&rec, &res, 200, "hello");
    assert_int_equal(rec.head_content_length, 5);
    th_rec_free(&rec);
    assert_int_equal(count_of("cl1.close"), 1);

    /* The iteration stops once Content-Length bytes went out: the third chunk is never pulled. */
    get(IT("closing"), "/?name=cl2&cl=5&chunks=hel,lo,!!", &rec, &res);
    th_assert_ok(&rec, &res, 200, "hello");
    th_rec_free(&rec);
    assert_int_equal(count_of("cl2.next"), 2);
    assert_int_equal(count_of("cl2.close"), 1);
}

/* A declared Content-Length with no body is correct where HTTP has no body (HEAD, 204, 304) and a
 * broken, cut response everywhere else. */
static void test_bodiless_content_length(void **state)
{
    (void)state;
    static const struct {
        const char *method, *target;
        int status, final_rc;
    } cases[] = {
        {"HEAD", "/", 200, 0},
        {"GET", "/?status=304%20Not%20Modified", 304, 0},
        {"GET", "/?status=204%20No%20Content", 204, 0},
        {"GET", "/", 200, WSGI_ERR_APP},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        th_rec rec;
        th_result res;
        th_req_init(&r, cases[i].method, cases[i].target);
        th_rec_init(&rec);
        th_run(th_app(IT("bodiless")), &r, &rec, &res);
        th_assert_well_formed(&rec);
        assert_int_equal(rec.status, cases[i].status);
        assert_int_equal(rec.head_content_length, 100);
        assert_int_equal(rec.body_len, 0);
        assert_rc(res.final_rc, cases[i].final_rc);
        assert_rc(res.resp_error, cases[i].final_rc);
        th_rec_free(&rec);
    }
}

/* An exact list or tuple: its first item is taken while wsgi_call holds the GIL, so a one-item
 * body is delivered by one wsgi_iter_next that needs no GIL (and returns 0 at once). Whatever the
 * shape, the host sees the same callbacks and results as with any other iterable. */
static void test_sequence_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *query;
        int status;
        const char *body;
        int final_rc, iter_calls;
    } cases[] = {
        {"kind=list&chunks=hello", 200, "hello", 0, 1},
        {"kind=tuple&chunks=hello", 200, "hello", 0, 1},
        {"kind=list&chunks=hello&cl=5", 200, "hello", 0, 1},
        {"kind=tuple&chunks=he,llo", 200, "hello", 0, 2},
        {"kind=list&chunks=he,,llo", 200, "hello", 0, 3},
        {"kind=list&chunks=,hello", 200, "hello", 0, 2},             /* an empty first item */
        {"kind=list&chunks=", 200, "", 0, 2},                        /* [b""] */
        {"kind=tuple", 200, "", 0, 1},                               /* () */
        {"kind=list&chunks=hello%20world&cl=5", 200, "hello", 0, 1}, /* truncated */
        {"kind=tuple&chunks=hel,lo,!!&cl=5", 200, "hello", 0, 2},    /* ends at Content-Length */
        {"kind=list&chunks=hello,more&cl=5", 200, "hello", 0, 1},    /* the first item is all */
        {"kind=list&chunks=hel&cl=5", 200, "hel", WSGI_ERR_APP, 1},  /* short: cut */
        {"kind=list&chunks=hel,lo&cl=9", 200, "hello", WSGI_ERR_APP, 2},
        {"kind=list&chunks=hello&str_at=0", 500, NULL, 0, 1},                /* str first: 500 */
        {"kind=tuple&chunks=a,b&str_at=1", 200, "a", WSGI_ERR_BAD_CHUNK, 2}, /* str later: cut */
        {"kind=list&chunks=abc&cl=9&status=204%20No%20Content", 204, "abc", 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char target[160];
        snprintf(target, sizeof target, "/?%s", cases[i].query);
        th_rec rec;
        th_result res;
        get(IT("seq"), target, &rec, &res);
        if (res.final_rc != cases[i].final_rc || res.iter_calls != cases[i].iter_calls ||
            rec.status != cases[i].status)
            print_error("case %s: final_rc %d, %d calls, status %d\n", cases[i].query, res.final_rc,
                        res.iter_calls, rec.status);
        th_assert_well_formed(&rec);
        assert_int_equal(res.starts_after_call, 0);
        assert_int_equal(res.started_after_call, 0);
        assert_int_equal(rec.status, cases[i].status);
        if (cases[i].body) assert_string_equal(rec.body, cases[i].body);
        assert_rc(res.final_rc, cases[i].final_rc);
        assert_rc(res.again_rc, cases[i].final_rc);
        assert_int_equal(res.iter_calls, cases[i].iter_calls);
        if (cases[i].status == 500) assert_rc(res.resp_error, WSGI_ERR_BAD_CHUNK);
        th_rec_free(&rec);
    }
}

/* A HEAD answered with a list: Content-Length without the body is right. */
static void test_sequence_head(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_result res;
    th_req_init(&r, "HEAD", "/?kind=list&chunks=abc&cl=9");
    th_rec_init(&rec);
    th_run(th_app(IT("seq")), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, "abc");
    assert_int_equal(res.iter_calls, 1);
    th_rec_free(&rec);
}

/* A prefetched response freed before wsgi_iter_next: nothing delivered, nothing leaked. */
static void test_sequence_freed_before_iteration(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        th_rec rec;
        th_rec_init(&rec);
        wsgi_response *resp =
            start(IT("seq"), i == 2 ? "/?kind=tuple&chunks=a,b" : "/?chunks=a", &rec);
        if (i == 1) assert_rc(wsgi_iter_next(resp), 0);
        wsgi_response_free(resp);
        assert_int_equal(rec.starts, i == 1 ? 1 : 0);
        th_rec_free(&rec);
    }
}

/* A generator of one chunk: delivered, then closed exactly once. */
static void test_one_chunk_generator(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(IT("as_generator"), "/?name=gen_one&n=1&size=5", &rec, &res);
    th_assert_ok(&rec, &res, 200, "AAAAA");
    th_rec_free(&rec);
    assert_int_equal(count_of("gen_one.next"), 1);
    assert_int_equal(count_of("gen_one.finally"), 1);
}

/* A finished response is freed without the GIL: its Python objects are released by the next
 * call that takes the GIL, before any app code runs. Also when many are freed in a row (the
 * queue is bounded: a free that finds it full releases them all). */
static void test_freed_responses_release_their_objects(void **state)
{
    (void)state;
    enum { N = 200 };
    for (int i = 0; i < N; i++) {
        th_rec rec;
        th_result res;
        get(IT("tracked"), "/?name=tr1", &rec, &res);
        th_assert_ok(&rec, &res, 200, "tracked");
        th_rec_free(&rec);
    }
    assert_int_equal(count_of("tr1.del"), N);

    static wsgi_response *resps[N];
    static th_rec recs[N];
    for (int i = 0; i < N; i++) {
        th_rec_init(&recs[i]);
        resps[i] = start(IT("tracked"), "/?name=tr2", &recs[i]);
        assert_rc(wsgi_iter_next(resps[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        wsgi_response_free(resps[i]);
        assert_string_equal(recs[i].body, "tracked");
        th_rec_free(&recs[i]);
    }
    assert_int_equal(count_of("tr2.del"), N);
}

/* Several host threads at once, each building, calling, iterating and freeing its own
 * responses: the queue of responses freed without the GIL, the spare blocks and the pools are
 * shared between them, and a shape may be copied by one thread while another waits for the GIL.
 * Every body must be this request's. */
typedef struct conc {
    int id, errors;
    wsgi_app *seq, *gen, *env; /* loaded before the threads start */
} conc;

/* Whether the environ dump has key = the latin-1 bytes of text. */
static int dump_has(const char *body, const char *key, const char *text)
{
    char line[256];
    int o = snprintf(line, sizeof line, "%s\tstr\t", key);
    for (const char *p = text; *p && o < (int)sizeof line - 4; p++)
        o += snprintf(line + o, sizeof line - (size_t)o, "%02x", (unsigned char)*p);
    snprintf(line + o, sizeof line - (size_t)o, "\n");
    return strstr(body, line) != NULL;
}

static void *conc_thread(void *arg)
{
    conc *c = arg;
    for (int i = 0; i < 1500; i++) {
        char target[96], want[64];
        th_req r;
        wsgi_app *app;
        int kind = (i + c->id) % 3;
        if (kind == 0) {
            snprintf(target, sizeof target, "/?kind=list&chunks=t%d-%d", c->id, i);
            snprintf(want, sizeof want, "t%d-%d", c->id, i);
            app = c->seq;
        } else if (kind == 1) {
            snprintf(target, sizeof target, "/?name=conc&n=%d&size=1", 1 + i % 4);
            snprintf(want, sizeof want, "%.*s", 1 + i % 4, "ABCD");
            app = c->gen;
        } else {
            snprintf(target, sizeof target, "/c%d/%d", c->id, i);
            snprintf(want, sizeof want, "%s", "");
            app = c->env;
        }
        th_req_init(&r, "GET", target);
        char addr[32];
        snprintf(addr, sizeof addr, "10.9.%d.%d", c->id, i % 3);
        r.req.client_addr = addr;
        r.req.client_port = (unsigned)(1000 + c->id);
        wsgi_env *e = NULL;
        wsgi_response *resp = NULL;
        th_rec rec;
        th_rec_init(&rec);
        wsgi_response_handler h = th_handler(&rec);
        int rc = wsgi_env_build(app, &r.req, &e);
        if (rc == WSGI_OK) rc = wsgi_call(e, &h, &rec, &resp);
        if (rc == WSGI_OK) {
            do
                rc = wsgi_iter_next(resp);
            while (rc == 1);
        }
        if (resp) wsgi_response_free(resp);
        if (rc != 0 || (kind < 2 && strcmp(rec.body, want) != 0)) {
            c->errors++;
        } else if (kind == 2 && (!dump_has(rec.body, "PATH_INFO", target) ||
                                 !dump_has(rec.body, "REMOTE_ADDR", addr))) {
            c->errors++;
        }
        th_rec_free(&rec);
    }
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    (void)state;
    enum { N = 4 };
    pthread_t t[N];
    conc cs[N];
    for (int i = 0; i < N; i++) {
        cs[i] =
            (conc){i, 0, th_app(IT("seq")), th_app(IT("as_generator")), th_app("env_apps:dump")};
        assert_int_equal(pthread_create(&t[i], NULL, conc_thread, &cs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        if (cs[i].errors) print_error("thread %d: %d wrong responses\n", i, cs[i].errors);
        assert_int_equal(cs[i].errors, 0);
    }
}

/* When the host's on_body fails during write(), the app's write() raises OSError. */
static void test_write_raises_oserror_after_host_failure(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.fail_body_at = 1;
    th_get(IT("writer_host_fail"), "/?name=whf", &rec, &res);
    assert_int_equal(rec.body_calls, 1);
    assert_true(res.final_rc < 0);
    assert_rc(res.resp_error, WSGI_ERR_CALLBACK);
    th_rec_free(&rec);
    assert_int_equal(count_of("whf.OSError"), 1);
    assert_int_equal(count_of("whf.no_exception"), 0);
}

/* The app swallows write()'s OSError and returns an iterable: the response is already cut, but the
 * iterable it returned must still be closed exactly once. */
static void test_iterable_closed_after_write_failure(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/?name=whfs");
    th_rec rec;
    th_rec_init(&rec);
    rec.fail_body_at = 1;
    wsgi_env *env;
    wsgi_response *resp;
    assert_rc(wsgi_env_build(th_app(IT("writer_host_fail_swallow")), &r.req, &env), WSGI_OK);
    wsgi_response_handler h = th_handler(&rec);
    assert_rc(wsgi_call(env, &h, &rec, &resp), WSGI_OK);
    /* Closed when wsgi_call returns, not only later by wsgi_response_free. */
    assert_int_equal(count_of("whfs.close"), 1);
    assert_int_equal(rec.body_calls, 1);
    assert_rc(wsgi_iter_next(resp), WSGI_ERR_CALLBACK);
    wsgi_response_free(resp);
    th_rec_free(&rec);
    assert_int_equal(count_of("whfs.OSError"), 1);
    assert_int_equal(count_of("whfs.close"), 1);
}

/* At every on_body the previous chunk of the same libwsgi call must still be readable through its
 * original pointer (the contract a pointer-queueing host relies on to copy it in time). Reading a
 * released chunk is what ASan flags in the sanitizer pass; here its bytes are also compared. */
typedef struct prev_chunk {
    const char *ptr;
    size_t len;
    char first, ok;
    int checked;
} prev_chunk;

static int check_previous_chunk(th_rec *rec, const char *data, size_t len)
{
    prev_chunk *p = rec->hook_data;
    if (p->ptr) {
        for (size_t i = 0; i < p->len; i++)
            if (p->ptr[i] != p->first) p->ok = 0;
        p->checked++;
    }
    p->ptr = data;
    p->len = len;
    p->first = data[0];
    return 0;
}

static void test_previous_chunk_valid_at_next_on_body(void **state)
{
    (void)state;
    prev_chunk p = {NULL, 0, 0, 1, 0};
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.body_hook = check_previous_chunk;
    rec.hook_data = &p;
    th_get(IT("gen_writes"), "/", &rec, &res);
    th_assert_well_formed(&rec);
    assert_rc(res.final_rc, 0);
    assert_int_equal(rec.body_len, 3 * 300000 + 10);
    assert_int_equal(p.checked, 3);
    assert_true(p.ok);
    th_rec_free(&rec);
}

static int free_in_body(th_rec *rec, const char *data, size_t len)
{
    (void)data;
    (void)len;
    wsgi_response_free(rec->resp);
    *(int *)rec->hook_data = 1;
    return 0;
}

static int free_in_start(th_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    wsgi_response_free(rec->resp);
    *(int *)rec->hook_data = 1;
    return 0;
}

/* A host may free the response from inside its callback (connection gone); the running call
 * then reports WSGI_ERR_CALLBACK and the response is gone afterwards. */
static void test_free_from_inside_callbacks(void **state)
{
    (void)state;
    int freed = 0;
    th_rec rec;
    th_rec_init(&rec);
    rec.body_hook = free_in_body;
    rec.hook_data = &freed;
    wsgi_response *resp = start(IT("closing"), "/?name=freebody&chunks=a,b,c", &rec);
    assert_rc(wsgi_iter_next(resp), WSGI_ERR_CALLBACK);
    assert_int_equal(freed, 1);
    th_rec_free(&rec);
    assert_int_equal(count_of("freebody.close"), 1);

    freed = 0;
    th_rec_init(&rec);
    rec.start_hook = free_in_start;
    rec.hook_data = &freed;
    resp = start(IT("closing"), "/?name=freestart&chunks=a,b,c", &rec);
    assert_rc(wsgi_iter_next(resp), WSGI_ERR_CALLBACK);
    assert_int_equal(freed, 1);
    assert_int_equal(rec.body_calls, 0);
    th_rec_free(&rec);
    assert_int_equal(count_of("freestart.close"), 1);
}

static int recurse_in_body(th_rec *rec, const char *data, size_t len)
{
    (void)data;
    (void)len;
    int *rcs = rec->hook_data;
    if (rec->body_calls <= 2) rcs[rec->body_calls - 1] = wsgi_iter_next(rec->resp);
    return 0;
}

static int recurse_in_start(th_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    *(int *)rec->hook_data = wsgi_iter_next(rec->resp);
    return 0;
}

static void test_iter_next_from_callback_is_recursive(void **state)
{
    (void)state;
    int rcs[2] = {99, 99};
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.body_hook = recurse_in_body;
    rec.hook_data = rcs;
    th_get(IT("closing"), "/?name=recbody&chunks=a,b", &rec, &res);
    assert_rc(rcs[0], WSGI_ERR_RECURSIVE);
    assert_rc(rcs[1], WSGI_ERR_RECURSIVE);
    /* The refused inner call did not disturb the outer one. */
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);

    int rc = 99;
    th_rec_init(&rec);
    rec.start_hook = recurse_in_start;
    rec.hook_data = &rc;
    th_get(IT("closing"), "/?name=recstart&chunks=a,b", &rec, &res);
    assert_rc(rc, WSGI_ERR_RECURSIVE);
    th_assert_ok(&rec, &res, 200, "ab");
    th_rec_free(&rec);
    assert_int_equal(count_of("recstart.close"), 1);
}

static int nested_in_body(th_rec *rec, const char *data, size_t len)
{
    (void)data;
    (void)len;
    if (rec->body_calls == 1) th_nested_request(rec->hook_data);
    return 0;
}

static int nested_in_start(th_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    th_nested_request(rec->hook_data);
    return 0;
}

/* Host callbacks run without the GIL: another thread can serve a whole request meanwhile. */
static void test_callbacks_run_without_gil(void **state)
{
    (void)state;
    th_app(IT("as_list"));
    th_nested nested = {.spec = IT("as_list"), .target = "/?chunks=nested"};
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.body_hook = nested_in_body;
    rec.hook_data = &nested;
    th_get(IT("as_list"), "/?chunks=x,y", &rec, &res);
    th_assert_ok(&rec, &res, 200, "xy");
    th_rec_free(&rec);
    assert_int_equal(nested.status, 200);
    assert_string_equal(nested.body, "nested");

    th_nested nested2 = {.spec = IT("as_list"), .target = "/?chunks=nested2"};
    th_rec_init(&rec);
    rec.start_hook = nested_in_start;
    rec.hook_data = &nested2;
    th_get(IT("as_list"), "/?chunks=x,y", &rec, &res);
    th_assert_ok(&rec, &res, 200, "xy");
    th_rec_free(&rec);
    assert_int_equal(nested2.status, 200);
    assert_string_equal(nested2.body, "nested2");
}

typedef struct mover {
    wsgi_env *env;
    wsgi_response *resp;
    th_rec *rec;
    int call_rc, final_rc;
} mover;

static void *call_thread(void *arg)
{
    mover *m = arg;
    wsgi_response_handler h = th_handler(m->rec);
    m->call_rc = wsgi_call(m->env, &h, m->rec, &m->resp);
    return NULL;
}

static void *iterate_thread(void *arg)
{
    mover *m = arg;
    while ((m->final_rc = wsgi_iter_next(m->resp)) == 1)
        ;
    return NULL;
}

/* An env or response may move between threads (built on the loop, run on a worker). */
static void test_response_moves_between_threads(void **state)
{
    (void)state;
    th_rec rec;
    th_rec_init(&rec);
    mover m = {.rec = &rec, .call_rc = 99, .final_rc = 99};
    th_req r;
    th_req_init(&r, "GET", "/?name=mover&n=4&size=2");
    assert_rc(wsgi_env_build(th_app(IT("as_generator")), &r.req, &m.env), WSGI_OK);
    th_run_thread(call_thread, &m);
    assert_rc(m.call_rc, WSGI_OK);
    th_run_thread(iterate_thread, &m);
    assert_rc(m.final_rc, 0);
    wsgi_response_free(m.resp);
    th_assert_well_formed(&rec);
    assert_string_equal(rec.body, "AABBCCDD");
    th_rec_free(&rec);
    assert_int_equal(count_of("mover.finally"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_tuple_generator),
        cmocka_unit_test(test_custom_iterable_closed_once),
        cmocka_unit_test(test_empty_chunks_never_delivered),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_one_chunk_per_call),
        cmocka_unit_test(test_data_valid_until_next_call),
        cmocka_unit_test(test_many_small_chunks),
        cmocka_unit_test(test_close_once_on_error_mid_iteration),
        cmocka_unit_test(test_close_once_on_error_before_first_chunk),
        cmocka_unit_test(test_close_once_when_on_body_fails),
        cmocka_unit_test(test_close_once_when_on_start_fails),
        cmocka_unit_test(test_close_once_on_abort),
        cmocka_unit_test(test_close_that_raises),
        cmocka_unit_test(test_content_length_enforced),
        cmocka_unit_test(test_bodiless_content_length),
        cmocka_unit_test(test_sequence_bodies),
        cmocka_unit_test(test_sequence_head),
        cmocka_unit_test(test_sequence_freed_before_iteration),
        cmocka_unit_test(test_one_chunk_generator),
        cmocka_unit_test(test_freed_responses_release_their_objects),
        cmocka_unit_test(test_concurrent_requests),
        cmocka_unit_test(test_write_raises_oserror_after_host_failure),
        cmocka_unit_test(test_iterable_closed_after_write_failure),
        cmocka_unit_test(test_previous_chunk_valid_at_next_on_body),
        cmocka_unit_test(test_free_from_inside_callbacks),
        cmocka_unit_test(test_iter_next_from_callback_is_recursive),
        cmocka_unit_test(test_callbacks_run_without_gil),
        cmocka_unit_test(test_response_moves_between_threads),
    };
    return cmocka_run_group_tests_name("wsgi_iter", tests, th_group_setup, th_group_teardown);
}
