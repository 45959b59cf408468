/*
 * test_file_wrapper.c - wsgi.file_wrapper: a real regular file becomes on_sendfile(fd, offset,
 * count) from the file's current position and within Content-Length; without on_sendfile, or for
 * objects that are not files, the content comes through on_body in blocks of the requested size;
 * and the wrapped file is closed exactly once on every path.
 *
 * The recording handler reads each sendfile range with pread() inside the callback and appends
 * it to the body, so every test compares the bytes the host would have sent with the file.
 */
#include "harness.h"

#include <fcntl.h>
#include <limits.h>

#define FILE_SIZE ((1u << 20) + 123)

static char dir[64]; /* "/tmp/libwsgi-test-fw-XXXXXX" */
static char big_path[PATH_MAX], empty_path[PATH_MAX];
static char *content; /* what big_path holds */

static int group_setup(void **state)
{
    char tmpl[] = "/tmp/libwsgi-test-fw-XXXXXX";
    if (mkdtemp(tmpl) == NULL) return -1;
    snprintf(dir, sizeof dir, "%s", tmpl);
    snprintf(big_path, sizeof big_path, "%s/big.bin", dir);
    snprintf(empty_path, sizeof empty_path, "%s/empty.bin", dir);
    content = malloc(FILE_SIZE);
    if (content == NULL) return -1;
    uint32_t x = 0xc0ffee;
    for (size_t i = 0; i < FILE_SIZE; i++) {
        x = x * 1664525u + 1013904223u;
        content[i] = (char)(x >> 24);
    }
    int fd = open(big_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, content, FILE_SIZE) != (ssize_t)FILE_SIZE || close(fd) != 0) return -1;
    fd = open(empty_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || close(fd) != 0) return -1;
    return th_group_setup(state);
}

static int group_teardown(void **state)
{
    th_group_teardown(state);
    unlink(big_path);
    unlink(empty_path);
    rmdir(dir);
    free(content);
    return 0;
}

/* GET fw_apps:serve with "path=<big file>&" + @query. */
static void serve(const char *query, const char *path, th_rec *rec, th_result *res)
{
    char target[PATH_MAX + 256];
    snprintf(target, sizeof target, "/?path=%s&%s", path ? path : big_path, query);
    th_get("fw_apps:serve", target, rec, res);
}

/* "<close() calls> <closed>" for the file the app kept under @name. */
static const char *file_state(const char *name)
{
    static char text[64];
    char target[128];
    snprintf(target, sizeof target, "/?%s", name);
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("fw_apps:state", target, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    snprintf(text, sizeof text, "%s", rec.body);
    th_rec_free(&rec);
    return text;
}

static void assert_body_is_file_range(const th_rec *rec, size_t offset, size_t len)
{
    assert_int_equal(rec->body_len, len);
    if (len) assert_memory_equal(rec->body, content + offset, len);
}

static void test_sendfile_whole_file(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=file&name=sf_whole", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.sendfile_calls, 1);
    assert_int_equal(rec.body_calls, 0);
    assert_true(rec.sf_offset[0] == 0);
    assert_true(rec.sf_count[0] == FILE_SIZE);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    th_rec_free(&rec);
    assert_string_equal(file_state("sf_whole"), "0 True");
}

/* The range starts at the file's current position, not at 0. */
static void test_sendfile_from_current_position(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=file&seek=100", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.sendfile_calls, 1);
    assert_true(rec.sf_offset[0] == 100);
    assert_true(rec.sf_count[0] == FILE_SIZE - 100);
    assert_body_is_file_range(&rec, 100, FILE_SIZE - 100);
    th_rec_free(&rec);
}

static void test_sendfile_within_content_length(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=file&cl=1000", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.head_content_length, 1000);
    assert_int_equal(rec.sendfile_calls, 1);
    assert_true(rec.sf_offset[0] == 0);
    assert_true(rec.sf_count[0] == 1000);
    assert_body_is_file_range(&rec, 0, 1000);
    th_rec_free(&rec);

    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=file&seek=100&cl=1000", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.sendfile_calls, 1);
    assert_true(rec.sf_offset[0] == 100);
    assert_true(rec.sf_count[0] == 1000);
    assert_body_is_file_range(&rec, 100, 1000);
    th_rec_free(&rec);
}

static void test_without_sendfile_blocks_through_on_body(void **state)
{
    (void)state;
    static const struct {
        const char *query;
        size_t offset, len;
    } cases[] = {
        {"kind=file", 0, FILE_SIZE},
        {"kind=file&seek=100", 100, FILE_SIZE - 100},
        {"kind=file&cl=1000", 0, 1000},
        {"kind=file&seek=100&cl=1000", 100, 1000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_rec rec;
        th_result res;
        th_rec_init(&rec);
        serve(cases[i].query, NULL, &rec, &res);
        th_assert_ok(&rec, &res, 200, NULL);
        assert_int_equal(rec.sendfile_calls, 0);
        assert_body_is_file_range(&rec, cases[i].offset, cases[i].len);
        th_rec_free(&rec);
    }
}

/* BytesIO has no file descriptor: on_body even when the host offers sendfile. */
static void test_non_file_object_uses_on_body(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=bytesio&name=bio", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.sendfile_calls, 0);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    th_rec_free(&rec);
    assert_string_equal(file_state("bio"), "1 True");
}

/* A pipe has a descriptor but is not a regular file: no sendfile. */
static void test_pipe_uses_on_body(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=pipe&pipe_bytes=60000", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_int_equal(rec.sendfile_calls, 0);
    assert_body_is_file_range(&rec, 0, 60000);
    th_rec_free(&rec);
}

/* A file positioned at its end has nothing left: an empty body, no zero-length sendfile. */
static void test_file_at_eof(void **state)
{
    (void)state;
    char query[64];
    snprintf(query, sizeof query, "kind=file&seek=%u", (unsigned)FILE_SIZE);
    for (int with_sendfile = 0; with_sendfile < 2; with_sendfile++) {
        th_rec rec;
        th_result res;
        th_rec_init(&rec);
        rec.with_sendfile = with_sendfile;
        serve(query, NULL, &rec, &res);
        th_assert_ok(&rec, &res, 200, "");
        assert_int_equal(rec.body_calls, 0);
        th_rec_free(&rec);
    }
}

/* A Content-Length beyond the file never asks the host for bytes the file does not have. */
static void test_sendfile_never_beyond_file(void **state)
{
    (void)state;
    char query[64];
    snprintf(query, sizeof query, "kind=file&cl=%u", (unsigned)FILE_SIZE + 1000);
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve(query, NULL, &rec, &res);
    th_assert_well_formed(&rec);
    assert_int_equal(rec.sendfile_calls, 1);
    assert_true(rec.sf_count[0] == FILE_SIZE);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    th_rec_free(&rec);
}

static void test_custom_block_size(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    serve("kind=file&blksize=1000", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    assert_true(rec.max_chunk <= 1000);
    assert_true((size_t)rec.body_calls >= (FILE_SIZE + 999) / 1000);
    th_rec_free(&rec);

    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=bytesio&blksize=4096", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    assert_true(rec.max_chunk <= 4096);
    assert_true((size_t)rec.body_calls >= (FILE_SIZE + 4095) / 4096);
    th_rec_free(&rec);
}

static void test_file_closed_exactly_once(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;

    th_rec_init(&rec);
    serve("kind=counting&name=close_body", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    th_rec_free(&rec);
    assert_string_equal(file_state("close_body"), "1 True");

    th_rec_init(&rec);
    rec.with_sendfile = 1;
    serve("kind=counting&name=close_sendfile", NULL, &rec, &res);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_body_is_file_range(&rec, 0, FILE_SIZE);
    th_rec_free(&rec);
    assert_string_equal(file_state("close_sendfile"), "1 True");
}

static void test_file_closed_on_abort(void **state)
{
    (void)state;
    char target[PATH_MAX + 256];
    th_rec rec;
    th_req r;
    wsgi_env *env;
    wsgi_response *resp;
    wsgi_response_handler h;

    /* Freed after the first block. */
    th_rec_init(&rec);
    snprintf(target, sizeof target, "/?path=%s&kind=counting&name=abort_mid&blksize=4096",
             big_path);
    th_req_init(&r, "GET", target);
    assert_rc(wsgi_env_build(th_app("fw_apps:serve"), &r.req, &env), WSGI_OK);
    h = th_handler(&rec);
    assert_rc(wsgi_call(env, &h, &rec, &resp), WSGI_OK);
    assert_rc(wsgi_iter_next(resp), 1);
    wsgi_response_free(resp);
    th_rec_free(&rec);
    assert_string_equal(file_state("abort_mid"), "1 True");

    /* Freed before anything was sent, with sendfile offered. */
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    snprintf(target, sizeof target, "/?path=%s&kind=counting&name=abort_first", big_path);
    th_req_init(&r, "GET", target);
    assert_rc(wsgi_env_build(th_app("fw_apps:serve"), &r.req, &env), WSGI_OK);
    h = th_handler(&rec);
    assert_rc(wsgi_call(env, &h, &rec, &resp), WSGI_OK);
    wsgi_response_free(resp);
    assert_int_equal(rec.sendfile_calls, 0);
    th_rec_free(&rec);
    assert_string_equal(file_state("abort_first"), "1 True");
}

static void test_sendfile_failure(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    rec.with_sendfile = 1;
    rec.fail_sendfile = 1;
    serve("kind=counting&name=sf_fail", NULL, &rec, &res);
    assert_rc(res.final_rc, WSGI_ERR_CALLBACK);
    assert_rc(res.resp_error, WSGI_ERR_CALLBACK);
    assert_int_equal(rec.sendfile_calls, 1);
    th_rec_free(&rec);
    assert_string_equal(file_state("sf_fail"), "1 True");
}

static void test_empty_file(void **state)
{
    (void)state;
    for (int with_sendfile = 0; with_sendfile < 2; with_sendfile++) {
        th_rec rec;
        th_result res;
        th_rec_init(&rec);
        rec.with_sendfile = with_sendfile;
        serve("kind=file", empty_path, &rec, &res);
        th_assert_ok(&rec, &res, 200, "");
        assert_int_equal(rec.body_calls, 0);
        th_rec_free(&rec);
    }
}

static void test_wrapper_is_iterable_in_python(void **state)
{
    (void)state;
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("fw_apps:python_iteration", "/", &rec, &res);
    th_assert_ok(&rec, &res, 200,
                 "0123456789012345678901234567890123456789012345678901234567890123456789"
                 "012345678901234567890123456789");
    th_rec_free(&rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sendfile_whole_file),
        cmocka_unit_test(test_sendfile_from_current_position),
        cmocka_unit_test(test_sendfile_within_content_length),
        cmocka_unit_test(test_without_sendfile_blocks_through_on_body),
        cmocka_unit_test(test_non_file_object_uses_on_body),
        cmocka_unit_test(test_pipe_uses_on_body),
        cmocka_unit_test(test_file_at_eof),
        cmocka_unit_test(test_sendfile_never_beyond_file),
        cmocka_unit_test(test_custom_block_size),
        cmocka_unit_test(test_file_closed_exactly_once),
        cmocka_unit_test(test_file_closed_on_abort),
        cmocka_unit_test(test_sendfile_failure),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_wrapper_is_iterable_in_python),
    };
    return cmocka_run_group_tests_name("file_wrapper", tests, group_setup, group_teardown);
}
