/*
 * test_validator.c - PEP 3333 conformance as the standard library checks it: apps wrapped in
 * wsgiref.validate.validator must run through the C API without any validator complaint (an
 * AssertionError or WSGIWarning becomes an app error, checks in __del__ are collected by
 * val_apps:problems), with the right status and body.
 */
#include "harness.h"

#define VAL(name) "val_apps:" name

/* Unraisable validator errors collected so far ("" if none). */
static void assert_no_problems(void)
{
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(VAL("problems"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    if (rec.body_len) print_error("validator problems:\n%s\n", rec.body);
    assert_int_equal(rec.body_len, 0);
    th_rec_free(&rec);
}

/* Runs @r on @app; the validator must be satisfied and the response complete. */
static void expect_valid(wsgi_app *app, th_req *r, th_rec *rec, int status, const char *body)
{
    size_t mark = th_log_mark();
    th_result res;
    th_run(app, r, rec, &res);
    assert_rc(res.build_rc, WSGI_OK);
    assert_rc(res.call_rc, WSGI_OK);
    if (res.resp_error != 0 || th_log_count(mark, WSGI_LOG_ERROR, NULL) > 0) {
        print_error("response error %d (%s): %s\n", res.resp_error, wsgi_strerror(res.resp_error),
                    res.resp_errmsg);
        th_log_dump(mark);
    }
    assert_rc(res.resp_error, 0);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    th_assert_ok(rec, &res, status, body);
    assert_no_problems();
}

static void get_valid(const char *spec, const char *target, int status, const char *body)
{
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", target);
    th_rec_init(&rec);
    expect_valid(th_app(spec), &r, &rec, status, body);
    th_rec_free(&rec);
}

static void test_get(void **state)
{
    (void)state;
    get_valid(VAL("hello"), "/some/path?x=1&y=%20", 200, "hello /some/path x=1&y=%20");
    get_valid(VAL("hello"), "/", 200, "hello / ");

    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/secure");
    r.req.scheme = "https";
    r.req.http_minor = 0;
    r.req.client_addr = "203.0.113.9";
    r.req.client_port = 4242;
    th_req_header(&r, "Host", "example.com");
    th_req_header(&r, "Accept", "text/plain");
    th_req_header(&r, "Accept", "text/html");
    th_rec_init(&rec);
    expect_valid(th_app(VAL("hello")), &r, &rec, 200, "hello /secure ");
    th_rec_free(&rec);
}

static void test_get_with_script_name(void **state)
{
    (void)state;
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = VAL("hello");
    opts.script_name = "/mnt";
    wsgi_app *app = th_app_with(&opts);
    static const char *const targets[][2] = {
        {"/mnt/x", "hello /x "},
        {"/mnt", "hello  "},
    };
    for (size_t i = 0; i < 2; i++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "GET", targets[i][0]);
        th_rec_init(&rec);
        expect_valid(app, &r, &rec, 200, targets[i][1]);
        th_rec_free(&rec);
    }
}

static void test_post_buffered_body(void **state)
{
    (void)state;
    static const char body[] = "name=value&x=1";
    th_req r;
    th_rec rec;
    th_req_init(&r, "POST", "/form");
    th_req_header(&r, "Content-Type", "application/x-www-form-urlencoded");
    th_req_body(&r, body, strlen(body));
    th_rec_init(&rec);
    expect_valid(th_app(VAL("post_echo")), &r, &rec, 200, "got: name=value&x=1");
    assert_string_equal(th_rec_header(&rec, "Content-Type"), "application/x-www-form-urlencoded");
    th_rec_free(&rec);
}

typedef struct stream_src {
    const char *data;
    size_t len, pos;
} stream_src;

static int stream_read(void *user_data, char *buf, size_t len, size_t *nread)
{
    stream_src *s = user_data;
    size_t n = s->len - s->pos;
    if (n > len) n = len;
    if (n > 3) n = 3;
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    *nread = n;
    return 0;
}

static void test_post_streamed_chunked_body(void **state)
{
    (void)state;
    static const char body[] = "a chunked upload, handed over three bytes at a time";
    stream_src s = {body, strlen(body), 0};
    th_req r;
    th_rec rec;
    th_req_init(&r, "POST", "/upload");
    th_req_header(&r, "Transfer-Encoding", "chunked");
    r.req.flags = WSGI_REQUEST_CHUNKED;
    r.req.content_length = -1;
    r.req.body_read = stream_read;
    r.req.body_user_data = &s;
    th_rec_init(&rec);
    expect_valid(th_app(VAL("chunked_echo")), &r, &rec, 200, body);
    th_rec_free(&rec);
}

static void test_readline_and_iteration(void **state)
{
    (void)state;
    static const char body[] = "first\nsecond line\nthird\n";
    th_req r;
    th_rec rec;
    th_req_init(&r, "POST", "/");
    th_req_body(&r, body, strlen(body));
    th_rec_init(&rec);
    expect_valid(th_app(VAL("lines")), &r, &rec, 200,
                 "[b'first\\n', b'seco', [b'nd line\\n', b'third\\n']]");
    th_rec_free(&rec);

    th_req_init(&r, "POST", "/");
    th_req_body(&r, body, strlen(body));
    th_rec_init(&rec);
    expect_valid(th_app(VAL("iterate_input")), &r, &rec, 200, "3 lines");
    th_rec_free(&rec);
}

static void test_write_callable(void **state)
{
    (void)state;
    get_valid(VAL("writer"), "/", 200, "written, then returned");
}

static void test_file_wrapper(void **state)
{
    (void)state;
    char path[] = "/tmp/libwsgi-test-validator-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = 50000;
    char *data = malloc(len + 1);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)('a' + i % 26);
    data[len] = '\0';
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);

    char target[256];
    snprintf(target, sizeof target, "/?path=%s", path);
    for (int with_sendfile = 0; with_sendfile < 2; with_sendfile++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "GET", target);
        th_rec_init(&rec);
        rec.with_sendfile = with_sendfile;
        expect_valid(th_app(VAL("file")), &r, &rec, 200, data);
        th_rec_free(&rec);
    }
    unlink(path);
    free(data);
}

static void test_generator(void **state)
{
    (void)state;
    get_valid(VAL("generator"), "/", 200, "chunk0;chunk1;chunk2;chunk3;chunk4;");
}

static void test_not_found(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/missing");
    th_rec_init(&rec);
    expect_valid(th_app(VAL("not_found")), &r, &rec, 404, "nothing here");
    assert_string_equal(rec.status_line, "404 Not Found");
    assert_string_equal(th_rec_header(&rec, "X-Extra"), "1");
    th_rec_free(&rec);
}

static void test_errors_stream(void **state)
{
    (void)state;
    get_valid(VAL("errors"), "/", 200, "logged");
}

static void test_exc_info(void **state)
{
    (void)state;
    get_valid(VAL("exc_info"), "/", 500, "app error page");
}

/* Negative controls: the harness really sees what the validator objects to. */
static void test_validator_complaints_are_detected(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_req r;
    th_rec rec;
    th_result res;
    th_req_init(&r, "POST", "/");
    th_req_body(&r, "abc", 3);
    th_rec_init(&rec);
    th_run(th_app(VAL("reads_without_size")), &r, &rec, &res);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "AssertionError") > 0);
    th_rec_free(&rec);

    th_rec_init(&rec);
    th_get(VAL("drop_unclosed"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "dropped");
    th_rec_free(&rec);
    th_rec_init(&rec);
    th_get(VAL("problems"), "/", &rec, &res);
    assert_str_contains(rec.body, "garbage collected without being closed");
    th_rec_free(&rec);
    th_rec_init(&rec);
    th_get(VAL("clear_problems"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "cleared");
    th_rec_free(&rec);
    assert_no_problems();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_get_with_script_name),
        cmocka_unit_test(test_post_buffered_body),
        cmocka_unit_test(test_post_streamed_chunked_body),
        cmocka_unit_test(test_readline_and_iteration),
        cmocka_unit_test(test_write_callable),
        cmocka_unit_test(test_file_wrapper),
        cmocka_unit_test(test_generator),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_errors_stream),
        cmocka_unit_test(test_exc_info),
        cmocka_unit_test(test_validator_complaints_are_detected),
    };
    return cmocka_run_group_tests_name("validator", tests, th_group_setup, th_group_teardown);
}
