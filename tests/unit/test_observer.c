/*
 * test_observer.c - the request observer (observer.h): one on_request_done per request with the
 * right status, outcome class, error, byte counts and times, for WSGI (list, generator, streamed
 * body, exceptions before and after the head, invalid responses, a client gone, a response freed
 * early) and ASGI (HTTP, WebSocket open / close); nothing reported without an observer.
 */
#include "asgi_harness.h"

#include <time.h>

#define APPS "obs_apps:"

/* What the observer saw, since the last obs_reset(). */
#define OBS_MAX 16
static struct {
    int done_calls;
    wsgi_request_outcome last;
    char errmsg[512];
    int ws_opens, ws_closes, ws_close_code;
    void *ws_ud;
    char order[64]; /* O open, C close, R request done */
    size_t n_order;
    int bad_data; /* observer_data was not ours */
} obs;
static int obs_tag;
int setup_observer_again(void);

static void obs_mark(char c)
{
    if (obs.n_order + 1 < sizeof obs.order) {
        obs.order[obs.n_order++] = c;
        obs.order[obs.n_order] = '\0';
    }
}

static void on_done(void *data, const wsgi_request_outcome *o)
{
    if (data != &obs_tag) obs.bad_data++;
    obs.done_calls++;
    obs.last = *o;
    snprintf(obs.errmsg, sizeof obs.errmsg, "%s", o->errmsg ? o->errmsg : "(null)");
    obs.last.errmsg = obs.errmsg;
    obs_mark('R');
}

static void on_ws_open(void *data, void *ud)
{
    if (data != &obs_tag) obs.bad_data++;
    obs.ws_opens++;
    obs.ws_ud = ud;
    obs_mark('O');
}

static void on_ws_close(void *data, void *ud, int code)
{
    if (data != &obs_tag) obs.bad_data++;
    obs.ws_closes++;
    obs.ws_close_code = code;
    obs.ws_ud = ud;
    obs_mark('C');
}

static void obs_reset(void)
{
    memset(&obs, 0, sizeof obs);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int setup(void **state)
{
    if (th_group_setup(state) != 0) return -1;
    wsgi_observer o = {.struct_size = sizeof o,
                       .on_request_done = on_done,
                       .on_websocket_open = on_ws_open,
                       .on_websocket_close = on_ws_close};
    return wsgi_runtime_set_observer(th_rt, &o, &obs_tag) == WSGI_OK ? 0 : -1;
}

#define assert_outcome(status_, class_, error_, in_, out_)                                         \
    do {                                                                                           \
        assert_int_equal(obs.done_calls, 1);                                                       \
        assert_int_equal(obs.bad_data, 0);                                                         \
        assert_int_equal(obs.last.struct_size, sizeof(wsgi_request_outcome));                      \
        assert_int_equal(obs.last.status, (status_));                                              \
        assert_int_equal(obs.last.outcome, (class_));                                              \
        assert_rc(obs.last.error, (error_));                                                       \
        assert_int_equal(obs.last.bytes_in, (in_));                                                \
        assert_int_equal(obs.last.bytes_out, (out_));                                              \
        assert_true(obs.last.app_ns >= 0);                                                         \
    } while (0)

/* ---- WSGI ---------------------------------------------------------------------------------- */

static void test_wsgi_list(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_get(APPS "wsgi_list", "/", &rec, &res);
    assert_outcome(200, WSGI_OUTCOME_OK, 0, 0, 5);
    assert_ptr_equal(obs.last.user_data, &rec);
    assert_int_equal(obs.last.interface, WSGI_INTERFACE_WSGI);
    assert_int_equal(obs.last.websocket, 0);
    assert_int_equal(obs.last.queue_ns, -1); /* no arrival time */
    assert_string_equal(obs.errmsg, "");
    th_rec_free(&rec);
}

static void test_wsgi_queue_time(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_req r;
    th_req_init(&r, "GET", "/");
    int64_t before = now_ns();
    r.req.arrival_ns = before - 2000000000; /* it arrived two seconds ago */
    th_run(th_app(APPS "wsgi_list"), &r, &rec, &res);
    int64_t after = now_ns();
    assert_int_equal(obs.done_calls, 1);
    assert_true(obs.last.queue_ns >= 2000000000);
    assert_true(obs.last.queue_ns <= after - r.req.arrival_ns);
    assert_true(obs.last.app_ns <= after - before);
    th_rec_free(&rec);
}

static void test_wsgi_generator_and_body(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_req r;
    th_req_init(&r, "POST", "/");
    th_req_body(&r, "1234567", 7);
    th_run(th_app(APPS "wsgi_gen"), &r, &rec, &res);
    assert_string_equal(rec.body, "ab1234567cde");
    assert_outcome(201, WSGI_OUTCOME_OK, 0, 7, 12);
    th_rec_free(&rec);
}

typedef struct stream_src {
    const char *data;
    size_t len, off;
} stream_src;

static int stream_read(void *ud, char *buf, size_t len, size_t *nread)
{
    stream_src *s = ud;
    size_t n = s->len - s->off;
    if (n > 3) n = 3; /* a few bytes at a time */
    if (n > len) n = len;
    memcpy(buf, s->data + s->off, n);
    s->off += n;
    *nread = n;
    return 0;
}

static void test_wsgi_streamed_body(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_req r;
    th_req_init(&r, "POST", "/");
    stream_src src = {"streamed body", 13, 0};
    r.req.flags |= WSGI_REQUEST_CHUNKED;
    r.req.body_read = stream_read;
    r.req.body_user_data = &src;
    th_run(th_app(APPS "wsgi_gen"), &r, &rec, &res);
    assert_string_equal(rec.body, "abstreamed bodycde");
    assert_outcome(201, WSGI_OUTCOME_OK, 0, 13, 18);
    th_rec_free(&rec);
}

static void test_wsgi_exception_before_head(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_get(APPS "wsgi_raise", "/", &rec, &res);
    assert_int_equal(rec.status, 500);
    assert_outcome(500, WSGI_OUTCOME_APP_EXCEPTION, WSGI_ERR_APP, 0, rec.body_len);
    assert_str_contains(obs.errmsg, "boom before the head");
    th_rec_free(&rec);
}

static void test_wsgi_exception_after_head(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_get(APPS "wsgi_raise_late", "/", &rec, &res);
    assert_int_equal(rec.status, 200);
    assert_outcome(200, WSGI_OUTCOME_APP_EXCEPTION, WSGI_ERR_APP, 0, 4);
    th_rec_free(&rec);
}

static void test_wsgi_invalid_responses(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_get(APPS "wsgi_str", "/", &rec, &res);
    assert_outcome(500, WSGI_OUTCOME_INVALID_RESPONSE, WSGI_ERR_BAD_CHUNK, 0, rec.body_len);
    th_rec_free(&rec);

    obs_reset();
    th_rec_init(&rec);
    th_get(APPS "wsgi_no_start", "/", &rec, &res);
    assert_outcome(500, WSGI_OUTCOME_INVALID_RESPONSE, WSGI_ERR_NO_START_RESPONSE, 0, rec.body_len);
    th_rec_free(&rec);
}

static void test_wsgi_client_gone(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    rec.fail_body_at = 1;
    th_result res;
    th_get(APPS "wsgi_gen", "/", &rec, &res);
    assert_outcome(201, WSGI_OUTCOME_CLIENT_GONE, WSGI_ERR_CALLBACK, 0, 2);
    th_rec_free(&rec);
}

static void test_wsgi_freed_early(void **state)
{
    (void)state;
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app(APPS "wsgi_gen"), &r.req, &env), WSGI_OK);
    wsgi_response_handler h = th_handler(&rec);
    wsgi_response *resp = NULL;
    assert_rc(wsgi_call(env, &h, &rec, &resp), WSGI_OK);
    assert_rc(wsgi_iter_next(resp), 1); /* "ab" */
    assert_int_equal(obs.done_calls, 0);
    wsgi_response_free(resp);
    assert_outcome(201, WSGI_OUTCOME_CLIENT_GONE, 0, 0, 2);
    th_rec_free(&rec);
}

static void test_no_observer_no_report(void **state)
{
    (void)state;
    assert_rc(wsgi_runtime_set_observer(NULL, NULL, NULL), WSGI_ERR_INVAL);
    wsgi_observer tiny = {.struct_size = 1};
    assert_rc(wsgi_runtime_set_observer(th_rt, &tiny, NULL), WSGI_ERR_INVAL);
    assert_rc(wsgi_runtime_set_observer(th_rt, NULL, NULL), WSGI_OK);
    obs_reset();
    th_rec rec;
    th_rec_init(&rec);
    th_result res;
    th_get(APPS "wsgi_list", "/", &rec, &res);
    th_rec_free(&rec);
    ah_rec ar;
    ah_rec_init(&ar);
    ah_get(APPS "asgi_ok", "/", &ar);
    ah_rec_free(&ar);
    assert_int_equal(obs.done_calls, 0);
    /* Only on_request_done, from an older caller that knows one callback. */
    wsgi_observer one = {.struct_size = offsetof(wsgi_observer, on_request_done) + sizeof(void *),
                         .on_request_done = on_done,
                         .on_websocket_open = on_ws_open};
    assert_rc(wsgi_runtime_set_observer(th_rt, &one, &obs_tag), WSGI_OK);
    th_rec_init(&rec);
    th_get(APPS "wsgi_list", "/", &rec, &res);
    th_rec_free(&rec);
    assert_int_equal(obs.done_calls, 1);
    assert_int_equal(setup_observer_again(), 0);
}

/* ---- ASGI ---------------------------------------------------------------------------------- */

static void test_asgi_http(void **state)
{
    (void)state;
    obs_reset();
    ah_rec rec;
    ah_rec_init(&rec);
    th_req r;
    th_req_init(&r, "POST", "/");
    r.req.content_length = 6;
    r.req.arrival_ns = now_ns() - 1000000000;
    asgi_conn *c = ah_dispatch(th_app(APPS "asgi_ok"), &r, &rec);
    assert_rc(asgi_conn_feed(c, "abc", 3, 1), 0);
    assert_rc(asgi_conn_feed(c, "def", 3, 0), 0);
    ah_drive_done(&rec);
    assert_string_equal(rec.body, "got abcdef");
    assert_outcome(202, WSGI_OUTCOME_OK, 0, 6, 10);
    assert_int_equal(obs.last.interface, WSGI_INTERFACE_ASGI);
    assert_ptr_equal(obs.last.user_data, &rec);
    assert_true(obs.last.queue_ns >= 1000000000);
    asgi_conn_free(c);
    assert_int_equal(obs.done_calls, 1);
    ah_rec_free(&rec);

    /* A buffered body counts whole. */
    obs_reset();
    ah_rec_init(&rec);
    th_req_init(&r, "POST", "/");
    th_req_body(&r, "xy", 2);
    ah_run(th_app(APPS "asgi_ok"), &r, &rec);
    assert_outcome(202, WSGI_OUTCOME_OK, 0, 2, 6);
    assert_int_equal(obs.last.queue_ns, -1);
    ah_rec_free(&rec);
}

static void test_asgi_failures(void **state)
{
    (void)state;
    obs_reset();
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(APPS "asgi_raise", "/", &rec);
    assert_int_equal(rec.status, 500);
    assert_outcome(500, WSGI_OUTCOME_APP_EXCEPTION, WSGI_ERR_APP, 0, rec.body_len);
    assert_str_contains(obs.errmsg, "asgi boom");
    ah_rec_free(&rec);

    obs_reset();
    ah_rec_init(&rec);
    ah_get(APPS "asgi_nothing", "/", &rec);
    assert_outcome(500, WSGI_OUTCOME_INVALID_RESPONSE, WSGI_ERR_APP, 0, rec.body_len);
    ah_rec_free(&rec);

    /* The host lets go while the app waits: reported at asgi_conn_free, not again later. */
    obs_reset();
    ah_rec_init(&rec);
    th_req r;
    th_req_init(&r, "POST", "/");
    r.req.content_length = 10;
    asgi_conn *c = ah_dispatch(th_app(APPS "asgi_wait"), &r, &rec);
    assert_rc(asgi_conn_feed(c, "12345", 5, 1), 0);
    ah_settle();
    assert_int_equal(obs.done_calls, 0);
    asgi_conn_free(c);
    assert_outcome(0, WSGI_OUTCOME_CLIENT_GONE, 0, 5, 0);
    ah_drive_idle();
    assert_int_equal(obs.done_calls, 1);
    ah_rec_free(&rec);
}

/* ---- WebSocket ----------------------------------------------------------------------------- */

static int ws_accept(void *ud, const char *sp, size_t sp_len, const wsgi_header *h, size_t n)
{
    (void)sp, (void)sp_len, (void)h, (void)n;
    ah_rec_event(ud, 'A');
    return 0;
}

static int ws_send(void *ud, int binary, const char *data, size_t len)
{
    (void)binary;
    ah_rec_event(ud, 'M');
    ah_rec_append(ud, data, len);
    return 0;
}

static int ws_close(void *ud, int code, const char *reason, size_t len)
{
    (void)code, (void)reason, (void)len;
    ah_rec_event(ud, 'C');
    return 0;
}

static asgi_conn *ws_dispatch(const char *app, ah_rec *rec)
{
    th_req r;
    th_req_init(&r, "GET", "/ws");
    th_req_header(&r, "Host", "example.org");
    th_req_header(&r, "Upgrade", "websocket");
    th_req_header(&r, "Connection", "Upgrade");
    th_req_header(&r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    th_req_header(&r, "Sec-WebSocket-Version", "13");
    asgi_handler h = ah_handler(rec);
    h.on_ws_accept = ws_accept;
    h.on_ws_send = ws_send;
    h.on_ws_close = ws_close;
    asgi_conn *c = NULL;
    assert_rc(asgi_websocket_dispatch(th_app(app), &r.req, &h, rec, &c), WSGI_OK);
    return c;
}

static void test_ws_echo_client_close(void **state)
{
    (void)state;
    obs_reset();
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *c = ws_dispatch(APPS "ws_echo", &rec);
    ah_settle();
    assert_int_equal(obs.ws_opens, 1);
    assert_ptr_equal(obs.ws_ud, &rec);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "hello", 5), 0);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_BINARY, "\1\2\3", 3), 0);
    ah_settle();
    assert_int_equal(obs.ws_closes, 0);
    assert_rc(asgi_conn_ws_closed(c, 1001, NULL, 0), WSGI_OK);
    assert_int_equal(obs.ws_closes, 1);
    assert_int_equal(obs.ws_close_code, 1001);
    ah_drive_done(&rec);
    assert_outcome(101, WSGI_OUTCOME_OK, 0, 8, 8);
    assert_int_equal(obs.last.websocket, 1);
    assert_string_equal(obs.order, "OCR");
    asgi_conn_free(c);
    assert_int_equal(obs.done_calls, 1);
    assert_int_equal(obs.ws_closes, 1);
    ah_rec_free(&rec);
}

static void test_ws_app_ends_and_denial(void **state)
{
    (void)state;
    obs_reset();
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *c = ws_dispatch(APPS "ws_accept_return", &rec);
    ah_drive_done(&rec);
    assert_int_equal(obs.ws_close_code, 1000);
    assert_string_equal(obs.order, "OCR");
    assert_outcome(101, WSGI_OUTCOME_OK, 0, 0, 3);
    asgi_conn_free(c);
    ah_rec_free(&rec);

    obs_reset();
    ah_rec_init(&rec);
    c = ws_dispatch(APPS "ws_deny", &rec);
    ah_drive_done(&rec);
    assert_string_equal(obs.order, "R"); /* never opened */
    assert_outcome(403, WSGI_OUTCOME_OK, 0, 0, rec.body_len);
    asgi_conn_free(c);
    ah_rec_free(&rec);

    /* The host drops an open WebSocket without a close: 1006. */
    obs_reset();
    ah_rec_init(&rec);
    c = ws_dispatch(APPS "ws_echo", &rec);
    ah_settle();
    asgi_conn_free(c);
    assert_string_equal(obs.order, "OCR");
    assert_int_equal(obs.ws_close_code, 1006);
    assert_int_equal(obs.last.outcome, WSGI_OUTCOME_CLIENT_GONE);
    ah_drive_idle();
    ah_rec_free(&rec);
}

int setup_observer_again(void)
{
    wsgi_observer o = {.struct_size = sizeof o,
                       .on_request_done = on_done,
                       .on_websocket_open = on_ws_open,
                       .on_websocket_close = on_ws_close};
    return wsgi_runtime_set_observer(th_rt, &o, &obs_tag);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_wsgi_list),
        ah_unit_test(test_wsgi_queue_time),
        ah_unit_test(test_wsgi_generator_and_body),
        ah_unit_test(test_wsgi_streamed_body),
        ah_unit_test(test_wsgi_exception_before_head),
        ah_unit_test(test_wsgi_exception_after_head),
        ah_unit_test(test_wsgi_invalid_responses),
        ah_unit_test(test_wsgi_client_gone),
        ah_unit_test(test_wsgi_freed_early),
        ah_unit_test(test_asgi_http),
        ah_unit_test(test_asgi_failures),
        ah_unit_test(test_ws_echo_client_close),
        ah_unit_test(test_ws_app_ends_and_denial),
        ah_unit_test(test_no_observer_no_report),
    };
    return cmocka_run_group_tests(tests, setup, th_group_teardown);
}
