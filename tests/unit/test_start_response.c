/*
 * test_start_response.c - start_response and write() to the letter of PEP 3333: status and
 * header validation, exc_info before and after the head is committed, write() during wsgi_call,
 * apps that misbehave (no start_response, non-iterables, str chunks, exceptions), the synthesized
 * 500, and the response head handed to on_start.
 */
#include "harness.h"

#define SR(name) "sr_apps:" name

static void get(const char *spec, const char *target, th_rec *rec, th_result *res)
{
    th_rec_init(rec);
    th_get(spec, target, rec, res);
}

static void expect_500(const char *spec, const char *target, int error)
{
    th_rec rec;
    th_result res;
    get(spec, target, &rec, &res);
    if (res.resp_error != error || rec.status != 500)
        print_error("%s %s: status %d, error %d (%s)\n", spec, target, rec.status, res.resp_error,
                    wsgi_strerror(res.resp_error));
    th_assert_500(&rec, &res, error);
    assert_null(strstr(rec.body, "must not be sent"));
    assert_null(th_rec_header(&rec, "X-Injected"));
    th_rec_free(&rec);
}

static void expect_ok(const char *spec, const char *target, int status, const char *body)
{
    th_rec rec;
    th_result res;
    get(spec, target, &rec, &res);
    if (rec.status != status || !rec.body || strcmp(rec.body, body) != 0)
        print_error("%s %s: status %d body \"%s\"\n", spec, target, rec.status,
                    rec.body ? rec.body : "");
    assert_int_equal(rec.status, status);
    assert_rc(res.final_rc, 0);
    th_assert_well_formed(&rec);
    assert_string_equal(rec.body, body);
    th_rec_free(&rec);
}

static const char *const bad_status_cases[] = {
    "short", "two_digits", "letters", "crlf", "lf", "nul", "bytes", "int", "none", "non_latin1",
};

static const char *const bad_header_cases[] = {
    "tuple_not_list",  "dict",        "none",
    "item_list",       "item_3tuple", "item_1tuple",
    "item_str",        "name_bytes",  "value_bytes",
    "value_int",       "name_empty",  "name_space",
    "name_colon",      "name_cr",     "name_lf",
    "name_nul",        "name_paren",  "name_latin1",
    "name_non_latin1", "value_cr",    "value_lf",
    "value_splitting", "value_nul",   "value_non_latin1",
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void test_bad_status_gives_500(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(bad_status_cases); i++) {
        char target[64];
        snprintf(target, sizeof target, "/?%s", bad_status_cases[i]);
        expect_500(SR("bad_status"), target, WSGI_ERR_BAD_STATUS);
    }
}

/* The exception is raised at the bad call, so an app can catch it and answer properly. */
static void test_bad_status_raises_at_the_call(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(bad_status_cases); i++) {
        char target[64];
        snprintf(target, sizeof target, "/?%s", bad_status_cases[i]);
        expect_ok(SR("bad_status_caught"), target, 200, "recovered");
    }
}

static void test_bad_headers_give_500(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(bad_header_cases); i++) {
        char target[64];
        snprintf(target, sizeof target, "/?%s", bad_header_cases[i]);
        expect_500(SR("bad_headers"), target, WSGI_ERR_BAD_HEADER);
    }
}

static void test_bad_headers_raise_at_the_call(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_OF(bad_header_cases); i++) {
        char target[64];
        snprintf(target, sizeof target, "/?%s", bad_header_cases[i]);
        expect_ok(SR("bad_headers_caught"), target, 200, "recovered");
    }
}

static void test_second_call_without_exc_info(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("second_call"), "/", &rec, &res);
    th_assert_500(&rec, &res, WSGI_ERR_APP);
    assert_null(th_rec_header(&rec, "X-First"));
    assert_null(th_rec_header(&rec, "X-Second"));
    th_rec_free(&rec);

    get(SR("second_call_caught"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "first kept");
    assert_string_equal(th_rec_header(&rec, "X-First"), "1");
    assert_null(th_rec_header(&rec, "X-Second"));
    th_rec_free(&rec);
}

static void test_exc_info_replaces_head_before_body(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("exc_info_before_body"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 500, "error page");
    assert_string_equal(rec.status_line, "500 Oops");
    assert_string_equal(th_rec_header(&rec, "X-Second"), "2");
    assert_null(th_rec_header(&rec, "X-First"));
    th_rec_free(&rec);
}

static void test_exc_info_after_empty_chunk_still_replaces(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("exc_info_after_empty_chunk"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 503, "retry later");
    assert_string_equal(rec.status_line, "503 Later");
    assert_string_equal(th_rec_header(&rec, "X-Second"), "2");
    assert_null(th_rec_header(&rec, "X-First"));
    th_rec_free(&rec);
}

/* After the head went out, start_response(exc_info) re-raises: the response is cut. */
static void test_exc_info_after_body_cuts_response(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    get(SR("exc_info_after_body"), "/", &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_APP);
    assert_rc(res.resp_error, WSGI_ERR_APP);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "part one");
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "original error after the body started") > 0);
    th_rec_free(&rec);
}

static void test_exc_info_after_write_cuts_response(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("exc_info_after_write"), "/", &rec, &res);
    assert_int_equal(res.starts_after_call, 1);
    assert_rc(res.final_rc, WSGI_ERR_APP);
    assert_rc(res.resp_error, WSGI_ERR_APP);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "written");
    th_rec_free(&rec);
}

/* exc_info that is no sys.exc_info() tuple (e.g. (None, None, None), what sys.exc_info() gives
 * outside an except block) after the head went out: start_response raises an error (PEP 3333:
 * "must raise an error"), a TypeError the app can catch, instead of handing the malformed tuple
 * to PyErr_Restore (which crashed the process). */
static void test_exc_info_malformed_after_body_raises(void **state)
{
    (void)state;
    static const char *const cases[] = {"none", "ints", "bad_traceback", "not_a_class"};
    for (size_t i = 0; i < N_OF(cases); i++) {
        char target[64];
        snprintf(target, sizeof target, "/?%s", cases[i]);
        expect_ok(SR("exc_info_malformed_after_body"), target, 200, "part one;raised TypeError");
    }
}

/* write() commits the head and delivers its data while wsgi_call is still running. */
static void test_write_delivers_during_call(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("writer"), "/", &rec, &res);
    assert_int_equal(res.starts_after_call, 1);
    assert_int_equal(res.started_after_call, 1);
    assert_int_equal(res.body_after_call, strlen("hello "));
    th_assert_ok(&rec, &res, 200, "hello world");
    th_rec_free(&rec);

    get(SR("writer_only"), "/", &rec, &res);
    assert_int_equal(res.body_after_call, strlen("all written"));
    th_assert_ok(&rec, &res, 200, "all written");
    th_rec_free(&rec);
}

static void test_write_rejects_str(void **state)
{
    (void)state;
    expect_ok(SR("writer_str_caught"), "/", 200, "raised");
}

static void test_no_start_response(void **state)
{
    (void)state;
    expect_500(SR("no_start"), "/", WSGI_ERR_NO_START_RESPONSE);
    expect_500(SR("no_start_empty"), "/", WSGI_ERR_NO_START_RESPONSE);
    expect_500(SR("lazy_no_start"), "/", WSGI_ERR_NO_START_RESPONSE);
}

/* A generator app calls start_response only when first iterated; that is allowed. */
static void test_start_response_on_first_iteration(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("lazy_start"), "/", &rec, &res);
    assert_int_equal(res.starts_after_call, 0);
    assert_int_equal(res.started_after_call, 0);
    th_assert_ok(&rec, &res, 200, "lazy");
    th_rec_free(&rec);
}

static void test_non_iterable_result(void **state)
{
    (void)state;
    expect_500(SR("returns_none"), "/", WSGI_ERR_BAD_ITERABLE);
    expect_500(SR("returns_int"), "/", WSGI_ERR_BAD_ITERABLE);
}

static void test_str_chunk_before_head(void **state)
{
    (void)state;
    expect_500(SR("str_chunk"), "/", WSGI_ERR_BAD_CHUNK);
    expect_500(SR("str_body"), "/", WSGI_ERR_BAD_CHUNK);
}

static void test_str_chunk_after_bytes_cuts(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("str_after_bytes"), "/", &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_BAD_CHUNK);
    assert_rc(res.resp_error, WSGI_ERR_BAD_CHUNK);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "bytes first");
    th_rec_free(&rec);
}

static void test_app_exception_gives_500_and_traceback(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    expect_500(SR("raises"), "/", WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "ZeroDivisionError") > 0);

    mark = th_log_mark();
    expect_500(SR("raises_in_generator"), "/", WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "sr_apps generator failure") > 0);
}

static void test_exc_info_none_on_first_call(void **state)
{
    (void)state;
    expect_ok(SR("exc_info_none"), "/", 200, "explicit None");
}

/* start_response takes its three arguments by position or keyword (it is called through the
 * vectorcall protocol) and refuses every other shape with TypeError. */
static void test_keyword_arguments(void **state)
{
    (void)state;
    expect_ok(SR("keyword_arguments"), "/", 200,
              "TypeError: start_response() missing required argument 'status'\n"
              "TypeError: start_response() missing required argument 'response_headers'\n"
              "TypeError: start_response() takes at most 3 arguments (4 given)\n"
              "TypeError: start_response() got an unexpected keyword argument 'headers'\n"
              "TypeError: start_response() got multiple values for argument 'status'\n"
              "TypeError: start_response() missing required argument 'response_headers'");
}

static void test_exception_after_write_cuts(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    get(SR("raise_after_write"), "/", &rec, &res);
    assert_int_equal(res.starts_after_call, 1);
    assert_rc(res.final_rc, WSGI_ERR_APP);
    assert_rc(res.resp_error, WSGI_ERR_APP);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.status, 200);
    assert_string_equal(rec.body, "partial");
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "sr_apps failure after write") > 0);
    th_rec_free(&rec);
}

static void test_write_within_content_length(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("write_beyond_content_length"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "hello");
    assert_int_equal(rec.head_content_length, 5);
    th_rec_free(&rec);
}

static void test_many_response_headers(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("many_headers"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "many");
    assert_int_equal(rec.n_headers, 201); /* the app's 200, then the Content-Length libwsgi adds */
    assert_string_equal(rec.headers[200].name, "Content-Length");
    assert_string_equal(rec.headers[200].value, "4");
    for (size_t i = 0; i < 200; i++) {
        char name[32], value[32];
        snprintf(name, sizeof name, "X-H-%zu", i);
        snprintf(value, sizeof value, "v-%zu", i);
        assert_string_equal(rec.headers[i].name, name);
        assert_string_equal(rec.headers[i].value, value);
    }
    th_rec_free(&rec);
}

/* An app may keep write, start_response and the streams of a finished request. Using them later
 * must fail cleanly: never reach the old (freed) response, never read the old body source. */
static void test_stale_objects_of_finished_request(void **state)
{
    (void)state;
    char *body = strdup("secret body of the first request");
    assert_non_null(body);
    th_req r;
    th_rec first, second;
    th_result res;
    th_req_init(&r, "POST", "/");
    th_req_body(&r, body, strlen(body));
    th_rec_init(&first);
    th_run(th_app(SR("stash")), &r, &first, &res);
    th_assert_ok(&first, &res, 200, "stashed");
    /* The host reuses its buffer once the response is freed. */
    memset(body, 'X', strlen(body));

    th_rec_init(&second);
    th_get(SR("use_stale"), "/", &second, &res);
    th_assert_ok(&second, &res, 200, NULL);
    /* Nothing reached the first response's handler after it was freed. */
    assert_int_equal(first.starts, 1);
    assert_string_equal(first.body, "stashed");
    assert_true(strstr(second.body, "write=raised") || strstr(second.body, "write=returned None"));
    assert_null(strstr(second.body, "start_response=returned"));
    assert_true(strstr(second.body, "input=raised") || strstr(second.body, "input=returned b''"));
    assert_null(strstr(second.body, "XXX"));
    assert_null(strstr(second.body, "secret"));
    th_rec_free(&first);
    th_rec_free(&second);
    free(body);
}

/* start_response with its write callable, and wsgi.input, are reused by later requests only
 * when the app kept none of them: the ones an app keeps stay tied to their finished request
 * (calls raise) and are never handed to another request. */
static void test_kept_callables_never_reused(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(SR("keep_write"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "kept write");
    th_rec_free(&rec);
    th_rec_init(&rec);
    th_get(SR("keep_start_response"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "kept start_response");
    th_rec_free(&rec);
    for (int i = 0; i < 40; i++) { /* cycle the pool */
        th_rec_init(&rec);
        th_get(SR("plain"), "/", &rec, &res);
        th_assert_ok(&rec, &res, 200, "plain");
        th_rec_free(&rec);
    }
    th_rec_init(&rec);
    th_get(SR("check_fresh"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_string_equal(rec.body, "write_is_kept=False\n"
                                  "start_response_is_kept=False\n"
                                  "write_of_kept_start_response=False\n"
                                  "kept_write_of_this=False\n"
                                  "input_is_kept=False\n"
                                  "kept_write=raised\n"
                                  "kept_start_response=raised\n"
                                  "kept_input=raised");
    th_rec_free(&rec);
}

/* Header values are checked eight bytes at a time: a control byte (not tab) or DEL is refused at
 * every position of every length, and nothing else is. Header names are remembered once valid:
 * the same objects, valid or not, keep their verdict. */
static void test_header_bytes_checked(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get(SR("value_bytes_checked"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ok");
    th_rec_free(&rec);
    th_rec_init(&rec);
    th_get(SR("names_checked"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ok");
    th_rec_free(&rec);
}

static void assert_header_at(const th_rec *rec, size_t i, const char *name, const char *value)
{
    assert_true(i < rec->n_headers);
    assert_int_equal(rec->headers[i].name_len, strlen(name));
    assert_string_equal(rec->headers[i].name, name);
    assert_int_equal(rec->headers[i].value_len, strlen(value));
    assert_string_equal(rec->headers[i].value, value);
}

static void test_response_head(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("head"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 404, "not found");
    assert_int_equal(rec.status_line_len, strlen("404 Not Found"));
    assert_string_equal(rec.status_line, "404 Not Found");
    assert_int_equal(rec.n_headers, 5);
    assert_header_at(&rec, 0, "Content-Type", "text/plain");
    assert_header_at(&rec, 1, "Set-Cookie", "a=1");
    assert_header_at(&rec, 2, "X-Latin", "caf\xe9");
    assert_header_at(&rec, 3, "Set-Cookie", "b=2");
    assert_header_at(&rec, 4, "content-length", "9");
    assert_int_equal(rec.head_content_length, 9);
    th_rec_free(&rec);

    get(SR("head_custom_reason"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 599, "x");
    assert_string_equal(rec.status_line, "599 Custom Reason Phrase Here");
    assert_int_equal(rec.head_content_length, 1); /* added: test_length_added_for_known_bodies */
    th_rec_free(&rec);

    get(SR("head_latin1_reason"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "x");
    assert_string_equal(rec.status_line, "200 Tr\xe8s bien");
    th_rec_free(&rec);
}

/* A list or tuple of bytes is the whole body before the head goes out: without an app
 * Content-Length libwsgi adds one with its length (PEP 3333, "Handling the Content-Length
 * Header"), so that the host frames it by length (an HTTP/1.0 keep-alive client keeps its
 * connection). Never for what it cannot know or where HTTP has no body. */
static void test_length_added_for_known_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *method, *query;
        const char *want_cl; /* NULL: no Content-Length header */
        int status;
        const char *body;
    } cases[] = {
        {"GET", "shape=one", "5", 200, "hello"},
        {"GET", "shape=many", "6", 200, "abcdef"},
        {"GET", "shape=tuple", "4", 200, "abcd"},
        {"HEAD", "shape=one", "5", 200, ""}, /* HEAD: the length of the body it would have */
        {"GET", "shape=one&status=404+Not+Found", "5", 404, "hello"},
        {"GET", "shape=empty", NULL, 200, ""},         /* nothing to measure: a HEAD may send [] */
        {"GET", "shape=emptybytes", NULL, 200, ""},    /* the same */
        {"GET", "shape=gen", NULL, 200, "abcd"},       /* not known before it is iterated */
        {"GET", "shape=write", NULL, 200, "abcd"},     /* the head went out with write() */
        {"GET", "shape=one&te=1", NULL, 200, "hello"}, /* the app frames it itself */
        {"GET", "shape=one&status=204+No+Content", NULL, 204, ""},
        {"GET", "shape=one&status=304+Not+Modified", NULL, 304, ""},
        {"GET", "shape=one&status=205+Reset+Content", NULL, 205, ""}, /* no content: 15.3.6 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char target[128];
        snprintf(target, sizeof target, "/?%s", cases[i].query);
        th_req r;
        th_req_init(&r, cases[i].method, target);
        th_rec rec;
        th_result res;
        th_rec_init(&rec);
        th_run(th_app(SR("body_shape")), &r, &rec, &res);
        const char *cl = th_rec_header(&rec, "Content-Length");
        if ((cl == NULL) != (cases[i].want_cl == NULL) ||
            (cl && strcmp(cl, cases[i].want_cl) != 0) || rec.status != cases[i].status)
            print_error("%s %s: status %d, Content-Length %s\n", cases[i].method, target,
                        rec.status, cl ? cl : "(none)");
        assert_int_equal(rec.status, cases[i].status);
        if (cases[i].want_cl) {
            assert_non_null(cl);
            assert_string_equal(cl, cases[i].want_cl);
            assert_int_equal(rec.head_content_length, atoll(cases[i].want_cl));
        } else {
            assert_null(cl);
            assert_true(rec.head_content_length == -1);
        }
        if (cases[i].status != 204 && cases[i].status != 205 && cases[i].status != 304 &&
            strcmp(cases[i].method, "HEAD"))
            th_assert_ok(&rec, &res, cases[i].status, cases[i].body);
        th_rec_free(&rec);
    }
    /* A tuple with a non-bytes item: no length, and the item is refused when it is reached. */
    th_rec rec;
    th_result res;
    get(SR("body_shape"), "/?shape=tuple&mixed=1", &rec, &res);
    assert_null(th_rec_header(&rec, "Content-Length"));
    assert_int_equal(res.resp_error, WSGI_ERR_BAD_CHUNK);
    th_rec_free(&rec);
}

/* Content-Length is no list (RFC 9110 8.6: 1*DIGIT), and RFC 9110 5.3 says a sender MUST NOT
 * generate several field lines of such a field: repeated Content-Length headers that agree
 * reach the host once, the first; ones that disagree are refused. */
static void test_repeated_content_length_sent_once(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    get(SR("repeated_content_length"), "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "hello");
    assert_int_equal(rec.head_content_length, 5);
    assert_int_equal(rec.n_headers, 3);
    assert_header_at(&rec, 0, "Content-Length", "5");
    assert_header_at(&rec, 1, "X-Between", "1");
    assert_header_at(&rec, 2, "Content-Type", "text/plain");
    th_rec_free(&rec);

    expect_500(SR("conflicting_content_length"), "/", WSGI_ERR_BAD_HEADER);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_status_gives_500),
        cmocka_unit_test(test_bad_status_raises_at_the_call),
        cmocka_unit_test(test_bad_headers_give_500),
        cmocka_unit_test(test_bad_headers_raise_at_the_call),
        cmocka_unit_test(test_second_call_without_exc_info),
        cmocka_unit_test(test_exc_info_replaces_head_before_body),
        cmocka_unit_test(test_exc_info_after_empty_chunk_still_replaces),
        cmocka_unit_test(test_exc_info_after_body_cuts_response),
        cmocka_unit_test(test_exc_info_after_write_cuts_response),
        cmocka_unit_test(test_exc_info_malformed_after_body_raises),
        cmocka_unit_test(test_write_delivers_during_call),
        cmocka_unit_test(test_write_rejects_str),
        cmocka_unit_test(test_no_start_response),
        cmocka_unit_test(test_start_response_on_first_iteration),
        cmocka_unit_test(test_non_iterable_result),
        cmocka_unit_test(test_str_chunk_before_head),
        cmocka_unit_test(test_str_chunk_after_bytes_cuts),
        cmocka_unit_test(test_app_exception_gives_500_and_traceback),
        cmocka_unit_test(test_exc_info_none_on_first_call),
        cmocka_unit_test(test_keyword_arguments),
        cmocka_unit_test(test_exception_after_write_cuts),
        cmocka_unit_test(test_write_within_content_length),
        cmocka_unit_test(test_response_head),
        cmocka_unit_test(test_length_added_for_known_bodies),
        cmocka_unit_test(test_repeated_content_length_sent_once),
        cmocka_unit_test(test_many_response_headers),
        cmocka_unit_test(test_stale_objects_of_finished_request),
        cmocka_unit_test(test_kept_callables_never_reused),
        cmocka_unit_test(test_header_bytes_checked),
    };
    return cmocka_run_group_tests_name("start_response", tests, th_group_setup, th_group_teardown);
}
