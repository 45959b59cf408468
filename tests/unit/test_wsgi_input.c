/*
 * test_wsgi_input.c - wsgi.input over a buffered body and over a streaming host callback:
 * read/readline/readlines/iteration semantics, end of body, Content-Length limits, read errors,
 * and reading after wsgi_call has returned.
 *
 * The app input_apps:script runs the operations named in the query string and returns the
 * repr() of each result on its own line, e.g. "read=3&readline" -> "b'lin'\nb'e one\\n'".
 */
#include "harness.h"

#define LINES "line one\nline two\nlast"

/* A streaming body source that hands out at most @per_call bytes per call. */
typedef struct stream_src {
    const char *data;
    size_t len, pos;
    size_t per_call;
    int fail_at; /* this call (1-based) returns an error; 0: never */
    int calls;
    int zero_len_requests; /* the library asked for 0 bytes */
    int calls_after_end;   /* asked again after it was told the body ended */
    int ended;
    th_nested *nested; /* run this request on another thread during the first call */
} stream_src;

static int stream_read(void *user_data, char *buf, size_t len, size_t *nread)
{
    stream_src *s = user_data;
    s->calls++;
    *nread = 0;
    if (s->nested && s->calls == 1) th_nested_request(s->nested);
    if (len == 0) s->zero_len_requests++;
    if (s->ended) s->calls_after_end++;
    if (s->fail_at && s->calls == s->fail_at) return -1;
    size_t n = s->len - s->pos;
    if (n > len) n = len;
    if (n > s->per_call) n = s->per_call;
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    *nread = n;
    if (n == 0) s->ended = 1;
    return 0;
}

static void stream_init(stream_src *s, const char *data, size_t len, size_t per_call)
{
    memset(s, 0, sizeof *s);
    s->data = data;
    s->len = len;
    s->per_call = per_call;
}

/* A chunked upload: no Content-Length, the body ends where the source says so. */
static void req_chunked(th_req *r, const char *target, stream_src *s)
{
    th_req_init(r, "POST", target);
    th_req_header(r, "Transfer-Encoding", "chunked");
    r->req.flags |= WSGI_REQUEST_CHUNKED;
    r->req.content_length = -1;
    r->req.body_read = stream_read;
    r->req.body_user_data = s;
}

/* Runs @r on the app and checks the body is @expected. */
static void expect_body(const char *spec, th_req *r, const char *expected)
{
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_run(th_app(spec), r, &rec, &res);
    assert_rc(res.build_rc, WSGI_OK);
    assert_rc(res.call_rc, WSGI_OK);
    if (res.final_rc != 0 || res.resp_error != 0)
        print_error("target %.*s\n", (int)r->req.target_len, r->req.target);
    th_assert_ok(&rec, &res, 200, expected);
    th_rec_free(&rec);
}

/* "/?ops" run on a buffered body. */
static void buffered_script(const char *body, const char *ops, const char *expected)
{
    char target[512];
    snprintf(target, sizeof target, "/?%s", ops);
    th_req r;
    th_req_init(&r, "POST", target);
    if (body) th_req_body(&r, body, strlen(body));
    expect_body("input_apps:script", &r, expected);
}

/* "/?ops" run on a chunked streaming body handed out @per_call bytes at a time. */
static void stream_script(const char *body, size_t per_call, const char *ops, const char *expected,
                          stream_src *s)
{
    char target[512];
    snprintf(target, sizeof target, "/?%s", ops);
    th_req r;
    stream_init(s, body, strlen(body), per_call);
    req_chunked(&r, target, s);
    expect_body("input_apps:script", &r, expected);
    assert_int_equal(s->zero_len_requests, 0);
}

static void test_read_all(void **state)
{
    (void)state;
    buffered_script(LINES, "read&read&read=5&readline",
                    "b'line one\\nline two\\nlast'\nb''\nb''\nb''");
}

static void test_read_n(void **state)
{
    (void)state;
    buffered_script(LINES, "read=3&read=6&read=100&read=1&read=0",
                    "b'lin'\nb'e one\\n'\nb'line two\\nlast'\nb''\nb''");
}

static void test_read_minus_one_and_none(void **state)
{
    (void)state;
    buffered_script(LINES, "read=2&read=-1&read=-1", "b'li'\nb'ne one\\nline two\\nlast'\nb''");
    buffered_script(LINES, "read=None&read=None", "b'line one\\nline two\\nlast'\nb''");
}

static void test_readline(void **state)
{
    (void)state;
    buffered_script(LINES, "readline&readline=4&readline&readline&readline",
                    "b'line one\\n'\nb'line'\nb' two\\n'\nb'last'\nb''");
    buffered_script(LINES, "readline=-1&readline=100&readline",
                    "b'line one\\n'\nb'line two\\n'\nb'last'");
}

static void test_readlines(void **state)
{
    (void)state;
    buffered_script(LINES, "readlines&read&readlines",
                    "[b'line one\\n', b'line two\\n', b'last']\nb''\n[]");
    buffered_script(LINES, "read=5&readlines", "b'line '\n[b'one\\n', b'line two\\n', b'last']");
}

/* PEP 3333 lets the server ignore the hint; either way no line is split or lost. */
static void test_readlines_hint(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_result res;
    th_req_init(&r, "POST", "/?readlines=2&read");
    th_req_body(&r, "a\nbb\nccc\n", 9);
    th_rec_init(&rec);
    th_run(th_app("input_apps:script"), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    static const char *const allowed[] = {
        "[b'a\\n']\nb'bb\\nccc\\n'",           /* stop once the hint is reached */
        "[b'a\\n', b'bb\\n']\nb'ccc\\n'",      /* stop once the hint is exceeded (io) */
        "[b'a\\n', b'bb\\n', b'ccc\\n']\nb''", /* hint ignored */
    };
    int ok = 0;
    for (size_t i = 0; i < 3; i++)
        ok |= strcmp(rec.body, allowed[i]) == 0;
    if (!ok) print_error("readlines(2) then read() gave:\n%s\n", rec.body);
    assert_true(ok);
    th_rec_free(&rec);
}

static void test_iteration(void **state)
{
    (void)state;
    buffered_script(LINES, "iter&iter", "[b'line one\\n', b'line two\\n', b'last']\n[]");
    buffered_script(LINES, "readline&iter&read", "b'line one\\n'\n[b'line two\\n', b'last']\nb''");
}

static void test_no_body(void **state)
{
    (void)state;
    char target[] = "/?read&read=10&readline&readlines&iter";
    th_req r;
    th_req_init(&r, "GET", target);
    expect_body("input_apps:script", &r, "b''\nb''\nb''\n[]\n[]");
}

static void test_stream_read_all(void **state)
{
    (void)state;
    stream_src s;
    stream_script(LINES, 3, "read&read&read=4", "b'line one\\nline two\\nlast'\nb''\nb''", &s);
    assert_true(s.calls > 1);
    /* Once the source said "end", it is not asked again. */
    assert_int_equal(s.calls_after_end, 0);
}

/* A source that hands out 3 bytes per call: lines still come out whole. */
static void test_stream_readline_small_pieces(void **state)
{
    (void)state;
    stream_src s;
    stream_script(LINES, 3, "readline&readline&readline&readline",
                  "b'line one\\n'\nb'line two\\n'\nb'last'\nb''", &s);
    stream_script(LINES, 1, "readline=4&readline&readlines",
                  "b'line'\nb' one\\n'\n[b'line two\\n', b'last']", &s);
    stream_script(LINES, 3, "iter", "[b'line one\\n', b'line two\\n', b'last']", &s);
}

/* A line much longer than any piece or internal buffer still comes out whole. */
static void test_stream_long_line(void **state)
{
    (void)state;
    size_t n = 200000;
    char *body = malloc(n + 8);
    assert_non_null(body);
    memset(body, 'a', n);
    memcpy(body + n, "\ntail", 6);
    stream_src s;
    stream_script(body, 4096, "len_readline&readline&readline", "200001\nb'tail'\nb''", &s);
    free(body);
}

/* read(n) is file-like: it returns n bytes unless the body ends first, however the source
 * splits it. */
static void test_stream_read_n_is_not_short(void **state)
{
    (void)state;
    stream_src s;
    stream_script(LINES, 3, "read=5&read=10&read=100&read=5",
                  "b'line '\nb'one\\nline t'\nb'wo\\nlast'\nb''", &s);
}

/* read(0) and readline(0) before anything was read from a streamed body (no buffer yet): empty,
 * without asking the source, and the body is still whole afterwards. (UBSan once caught NULL + 0
 * in read(0) here.) */
static void test_stream_read_zero_first(void **state)
{
    (void)state;
    stream_src s;
    stream_script(LINES, 3, "read=0&readline=0&read", "b''\nb''\nb'line one\\nline two\\nlast'",
                  &s);
    /* Alone, neither asks the source: with libwsgi-epoll that would wait for the client's body
     * (and send it 100 Continue) for an answer that is b'' anyway, as io's readline(0) is. */
    stream_script(LINES, 3, "read=0&readline=0", "b''\nb''", &s);
    assert_int_equal(s.calls, 0);
}

/* With a Content-Length, the body ends there even if the source would give more. */
static void test_stream_stops_at_content_length(void **state)
{
    (void)state;
    static const char data[] = "hello worldEXTRA BYTES";
    static const struct {
        const char *target, *expected;
    } cases[] = {
        {"/?read&read", "b'hello world'\nb''"},
        {"/?read=100&read=1", "b'hello world'\nb''"},
        {"/?read=6&read=100", "b'hello '\nb'world'"},
        {"/?readline&readline", "b'hello world'\nb''"},
        {"/?readlines", "[b'hello world']"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        stream_src s;
        stream_init(&s, data, strlen(data), 4);
        th_req r;
        th_req_init(&r, "POST", cases[i].target);
        th_req_header(&r, "Content-Length", "11");
        r.req.content_length = 11;
        r.req.body_read = stream_read;
        r.req.body_user_data = &s;
        expect_body("input_apps:script", &r, cases[i].expected);
    }
}

static void test_content_length_zero_is_empty_body(void **state)
{
    (void)state;
    stream_src s;
    stream_init(&s, "EXTRA", 5, 5);
    th_req r;
    th_req_init(&r, "POST", "/?read&read=3&readline");
    th_req_header(&r, "Content-Length", "0");
    r.req.content_length = 0;
    r.req.body_read = stream_read;
    r.req.body_user_data = &s;
    expect_body("input_apps:script", &r, "b''\nb''\nb''");
}

static void test_stream_error_raises_oserror(void **state)
{
    (void)state;
    stream_src s;
    th_req r;
    stream_init(&s, LINES, strlen(LINES), 3);
    s.fail_at = 1;
    req_chunked(&r, "/?read", &s);
    expect_body("input_apps:script", &r, "EXC:OSError");

    /* Failing after part of the body was read. */
    stream_init(&s, LINES, strlen(LINES), 3);
    s.fail_at = 3;
    req_chunked(&r, "/?read", &s);
    expect_body("input_apps:script", &r, "EXC:OSError");
}

static void test_stream_error_uncaught_gives_500(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    stream_src s;
    th_req r;
    th_rec rec;
    th_result res;
    stream_init(&s, LINES, strlen(LINES), 3);
    s.fail_at = 1;
    req_chunked(&r, "/", &s);
    th_rec_init(&rec);
    th_run(th_app("input_apps:read_uncaught"), &r, &rec, &res);
    assert_rc(res.call_rc, WSGI_OK);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
    th_rec_free(&rec);
}

static char *make_blob(size_t len)
{
    char *p = malloc(len);
    assert_non_null(p);
    uint32_t x = 0x12345678u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (char)(x >> 16);
    }
    return p;
}

static void test_large_stream_echo(void **state)
{
    (void)state;
    size_t len = (1u << 20) + 123;
    char *blob = make_blob(len);
    stream_src s;
    stream_init(&s, blob, len, 4096);
    th_req r;
    req_chunked(&r, "/", &s);
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_run(th_app("input_apps:echo"), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.body_len, len);
    assert_memory_equal(rec.body, blob, len);
    assert_int_equal(s.zero_len_requests, 0);
    th_rec_free(&rec);
    free(blob);
}

/* The body source stays in use until wsgi_response_free: a generator may read the body while
 * it is iterated, after wsgi_call has returned. */
static void test_body_read_during_iteration(void **state)
{
    (void)state;
    size_t len = 100003;
    char *blob = make_blob(len);
    th_rec rec;
    th_result res;

    th_req r;
    th_req_init(&r, "POST", "/");
    th_req_body(&r, blob, len);
    th_rec_init(&rec);
    th_run(th_app("input_apps:echo_lazy"), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.body_len, len);
    assert_memory_equal(rec.body, blob, len);
    assert_int_equal(res.body_after_call, 0);
    th_rec_free(&rec);

    stream_src s;
    stream_init(&s, blob, len, 1000);
    req_chunked(&r, "/", &s);
    th_rec_init(&rec);
    th_run(th_app("input_apps:echo_lazy"), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.body_len, len);
    assert_memory_equal(rec.body, blob, len);
    th_rec_free(&rec);
    free(blob);
}

/* The source is called without the GIL: another thread can run a whole request meanwhile. */
static void test_body_source_called_without_gil(void **state)
{
    (void)state;
    th_app("input_apps:script");
    th_nested nested = {.spec = "input_apps:script", .target = "/?read"};
    stream_src s;
    stream_init(&s, LINES, strlen(LINES), 100);
    s.nested = &nested;
    th_req r;
    req_chunked(&r, "/?read", &s);
    expect_body("input_apps:script", &r, "b'line one\\nline two\\nlast'");
    assert_int_equal(nested.status, 200);
    assert_int_equal(nested.final_rc, 0);
    assert_string_equal(nested.body, "b''");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_all),
        cmocka_unit_test(test_read_n),
        cmocka_unit_test(test_read_minus_one_and_none),
        cmocka_unit_test(test_readline),
        cmocka_unit_test(test_readlines),
        cmocka_unit_test(test_readlines_hint),
        cmocka_unit_test(test_iteration),
        cmocka_unit_test(test_no_body),
        cmocka_unit_test(test_stream_read_all),
        cmocka_unit_test(test_stream_readline_small_pieces),
        cmocka_unit_test(test_stream_long_line),
        cmocka_unit_test(test_stream_read_n_is_not_short),
        cmocka_unit_test(test_stream_read_zero_first),
        cmocka_unit_test(test_stream_stops_at_content_length),
        cmocka_unit_test(test_content_length_zero_is_empty_body),
        cmocka_unit_test(test_stream_error_raises_oserror),
        cmocka_unit_test(test_stream_error_uncaught_gives_500),
        cmocka_unit_test(test_large_stream_echo),
        cmocka_unit_test(test_body_read_during_iteration),
        cmocka_unit_test(test_body_source_called_without_gil),
    };
    return cmocka_run_group_tests_name("wsgi_input", tests, th_group_setup, th_group_teardown);
}
