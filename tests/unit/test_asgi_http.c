/*
 * test_asgi_http.c - one ASGI HTTP connection: receive() (buffered, empty and streamed bodies,
 * waiting after the body, http.disconnect), asgi_conn_feed() and its ASGI_PAUSE / on_read_resume
 * flow control, send() (head, streamed body, trailers, pathsend), every invalid event (catchable
 * by the app; a 500 or a cut when not caught), app failures, send backpressure, disconnects and
 * asgi_conn_free() while the app still runs.
 *
 * Apps are in apps/asgi_http_apps.py. They note what they observe in a module-level dict that
 * the test reads back through a later request (asgi_http_apps:report).
 */
#include "asgi_harness.h"

#define APPS   "asgi_http_apps:"
#define REPORT APPS "report"

/* ---- helpers ------------------------------------------------------------------------------- */

/* A fresh note key for each use, so tests never see each other's notes. */
static const char *new_key(char *buf, size_t cap)
{
    static int n;
    snprintf(buf, cap, "k%d", ++n);
    return buf;
}

/* What the apps noted under @key, one line per note. */
static void notes(const char *key, char *out, size_t cap)
{
    char target[128];
    snprintf(target, sizeof target, "/%s", key);
    ah_get_body(REPORT, target, out, cap);
}

#define assert_notes(key, expected)                                                                \
    do {                                                                                           \
        char notes_[16384];                                                                        \
        notes((key), notes_, sizeof notes_);                                                       \
        if (strcmp(notes_, (expected)) != 0)                                                       \
            print_error("notes[%s]:\n%s\n-- expected:\n%s\n", (key), notes_, (expected));          \
        assert_string_equal(notes_, (expected));                                                   \
    } while (0)

/* A request whose body the host streams with asgi_conn_feed (@content_length >= 0), or chunked
 * (@content_length == -1). */
static void stream_req(th_req *r, const char *target, int64_t content_length)
{
    th_req_init(r, "POST", target);
    r->req.content_length = content_length;
    if (content_length < 0) {
        r->req.flags |= WSGI_REQUEST_CHUNKED;
        th_req_header(r, "Transfer-Encoding", "chunked");
    } else {
        snprintf(r->content_length, sizeof r->content_length, "%lld", (long long)content_length);
        th_req_header(r, "Content-Length", r->content_length);
    }
}

/* Runs the script app: @messages is a Python list literal of ASGI messages. */
static void run_script(const char *key, int catch, const char *messages, ah_rec *rec)
{
    char target[128];
    snprintf(target, sizeof target, "/?key=%s%s", key, catch ? "&catch" : "");
    th_req r;
    th_req_init(&r, "POST", target);
    th_req_body(&r, messages, strlen(messages));
    ah_run(th_app(APPS "script"), &r, rec);
}

#define START "{'type': 'http.response.start', 'status': 200, 'headers': []}"
#define START_CL(n)                                                                                \
    "{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'" n "')]}"
#define START_TR     "{'type': 'http.response.start', 'status': 200, 'headers': [], 'trailers': True}"
#define BODY(b)      "{'type': 'http.response.body', 'body': " b "}"
#define BODY_MORE(b) "{'type': 'http.response.body', 'body': " b ", 'more_body': True}"
#define TRAILERS(h)  "{'type': 'http.response.trailers', 'headers': " h "}"
#define TRAILERS_MORE(h)                                                                           \
    "{'type': 'http.response.trailers', 'headers': " h ", 'more_trailers': True}"

/* Deterministic body bytes for streamed uploads. */
static void fill_pattern(unsigned char *p, size_t n, uint64_t offset)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ull;
        p[i] = (unsigned char)(x >> 56);
    }
}

/* ---- receive() ------------------------------------------------------------------------------ */

static void test_buffered_body_is_one_event(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "POST", target);
    th_req_body(&r, "hello body", 10);
    ah_rec rec;
    ah_rec_init(&rec);
    ah_run(th_app(APPS "echo"), &r, &rec);
    ah_assert_ok(&rec, 200, "hello body");
    assert_string_equal(rec.events, "SbD");
    assert_int_equal(rec.head_content_length, 10);
    assert_notes(key, "http.request/bytes/10/False keys=body,more_body,type");
    ah_rec_free(&rec);
}

static void test_no_body_is_one_empty_event(void **state)
{
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        char key[32], target[64];
        new_key(key, sizeof key);
        snprintf(target, sizeof target, "/?key=%s", key);
        th_req r;
        th_req_init(&r, "GET", target);
        if (variant == 1) { /* Content-Length: 0, nothing to feed */
            r.req.content_length = 0;
            th_req_header(&r, "Content-Length", "0");
        } else if (variant == 2) { /* an empty buffered body */
            th_req_body(&r, "", 0);
        }
        ah_rec rec;
        ah_rec_init(&rec);
        ah_run(th_app(APPS "echo"), &r, &rec);
        ah_assert_ok(&rec, 200, "");
        assert_string_equal(rec.events, "SbD");
        assert_notes(key, "http.request/bytes/0/False keys=body,more_body,type");
        ah_rec_free(&rec);
    }
}

/* Feeds "hello", " wor", "ld" to the echo app while it waits (chunked when @content_length is
 * -1, else that Content-Length), reading the app's notes before the last piece: @before is what
 * it has received by then, @after everything. */
static void feed_three_pieces(int64_t content_length, const char *before, const char *after)
{
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    stream_req(&r, target, content_length);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    assert_int_equal(ah_settle(), -1); /* the app waits for the body */
    assert_rc(asgi_conn_feed(conn, "hello", 5, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_feed(conn, " wor", 4, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_int_equal(rec.starts, 0);
    assert_notes(key, before);
    assert_rc(asgi_conn_feed(conn, "ld", 2, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "hello world");
    assert_notes(key, after);
    ah_rec_free(&rec);
}

/* Chunked: pieces fed while the app waits arrive one event each, more_body True until the last. */
static void test_streamed_body_pieces(void **state)
{
    (void)state;
    feed_three_pieces(-1,
                      "http.request/bytes/5/True keys=body,more_body,type\n"
                      "http.request/bytes/4/True keys=body,more_body,type",
                      "http.request/bytes/5/True keys=body,more_body,type\n"
                      "http.request/bytes/4/True keys=body,more_body,type\n"
                      "http.request/bytes/2/False keys=body,more_body,type");
}

/* A Content-Length body that fits in the library's 256 KiB is gathered: the app, waiting, gets
 * nothing until the last piece, then the whole body in one event (copied once, no join). */
static void test_content_length_body_is_gathered_whole(void **state)
{
    (void)state;
    feed_three_pieces(11, "", "http.request/bytes/11/False keys=body,more_body,type");
}

/* Gathering never holds more than is announced: more bytes than the Content-Length are refused
 * (WSGI_ERR_INVAL, nothing queued); a body that ends short (more = 0 early) is delivered as far as
 * it came; one larger than 256 KiB is streamed piece by piece as before. */
static void test_gathered_body_limits(void **state)
{
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        char key[32], target[64];
        new_key(key, sizeof key);
        snprintf(target, sizeof target, "/?key=%s", key);
        th_req r;
        stream_req(&r, target, variant == 2 ? 300000 : 6);
        ah_rec rec;
        ah_rec_init(&rec);
        asgi_conn *conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
        assert_int_equal(ah_settle(), -1);
        if (variant == 0) {
            assert_rc(asgi_conn_feed(conn, "abcdefg", 7, 1), WSGI_ERR_INVAL);
            assert_rc(asgi_conn_feed(conn, "abc", 3, 1), 0);
            assert_rc(asgi_conn_feed(conn, "defg", 4, 1), WSGI_ERR_INVAL);
            assert_non_null(strstr(wsgi_errmsg(), "Content-Length"));
            assert_rc(asgi_conn_feed(conn, "def", 3, 0), 0);
            ah_drive_done(&rec);
            ah_assert_ok(&rec, 200, "abcdef");
            assert_notes(key, "http.request/bytes/6/False keys=body,more_body,type");
        } else if (variant == 1) {
            assert_rc(asgi_conn_feed(conn, "abc", 3, 1), 0);
            assert_int_equal(ah_settle(), -1);
            assert_rc(asgi_conn_feed(conn, "d", 1, 0), 0);
            ah_drive_done(&rec);
            ah_assert_ok(&rec, 200, "abcd");
            assert_notes(key, "http.request/bytes/4/False keys=body,more_body,type");
        } else {
            assert_rc(asgi_conn_feed(conn, "abc", 3, 1), 0);
            assert_int_equal(ah_settle(), -1);
            char *rest = calloc(1, 300000 - 3);
            assert_non_null(rest);
            assert_rc(asgi_conn_feed(conn, rest, 300000 - 3, 0), 0);
            free(rest);
            ah_drive_done(&rec);
            assert_int_equal(rec.status, 200);
            assert_notes(key, "http.request/bytes/3/True keys=body,more_body,type\n"
                              "http.request/bytes/299997/False keys=body,more_body,type");
        }
        asgi_conn_free(conn);
        ah_rec_free(&rec);
    }
}

/* Chunked: the end is an empty feed with more = 0, which is an empty final event. Pieces fed
 * before the app first runs may be coalesced; the bytes must be exact either way. */
static void test_chunked_body_and_coalescing(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    stream_req(&r, target, -1);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    /* Before the app ran: queued. */
    assert_rc(asgi_conn_feed(conn, "abc", 3, 1), 0);
    assert_rc(asgi_conn_feed(conn, "", 0, 1), 0);
    assert_rc(asgi_conn_feed(conn, NULL, 0, 1), 0);
    assert_rc(asgi_conn_feed(conn, "def", 3, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_feed(conn, "gh", 2, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_feed(conn, NULL, 0, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "abcdefgh");
    char got[4096];
    notes(key, got, sizeof got);
    /* Whatever the coalescing, the last event ends the body and only it does; none is empty
     * but the last. */
    const char *expect_coalesced = "http.request/bytes/6/True keys=body,more_body,type\n"
                                   "http.request/bytes/2/True keys=body,more_body,type\n"
                                   "http.request/bytes/0/False keys=body,more_body,type";
    const char *expect_split = "http.request/bytes/3/True keys=body,more_body,type\n"
                               "http.request/bytes/3/True keys=body,more_body,type\n"
                               "http.request/bytes/2/True keys=body,more_body,type\n"
                               "http.request/bytes/0/False keys=body,more_body,type";
    if (strcmp(got, expect_coalesced) != 0 && strcmp(got, expect_split) != 0)
        print_error("events:\n%s\n", got);
    assert_true(strcmp(got, expect_coalesced) == 0 || strcmp(got, expect_split) == 0);
    ah_rec_free(&rec);
}

/* After the body, receive() blocks without spinning (nothing scheduled: timeout -1) until the
 * client disconnects; then http.disconnect, every time; send() raises OSError. */
static void test_receive_waits_until_disconnect(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "POST", target);
    th_req_body(&r, "xy", 2);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "wait_after_body"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_notes(key, "body=b'xy'\nwaiting");
    /* Still waiting after other traffic, and still nothing scheduled. */
    assert_int_equal(ah_settle(), -1);
    assert_int_equal(rec.n_events, 0);
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK); /* idempotent */
    ah_drive_done(&rec);
    /* Disconnected before anything was sent: no 500 is delivered, the result is an error. */
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "D");
    assert_true(rec.done_result < 0);
    assert_true(asgi_conn_error(conn) < 0);
    assert_true(asgi_conn_errmsg(conn)[0] != '\0');
    asgi_conn_free(conn);
    assert_notes(key, "body=b'xy'\nwaiting\nthen http.disconnect keys=type\n"
                      "again http.disconnect keys=type\nsend OSError: client disconnected");
    ah_rec_free(&rec);
}

/* receive() awaited by several tasks at once: a fed piece goes to the oldest call still waiting
 * (one cancelled meanwhile is skipped and loses nothing), the next piece to the next; the
 * disconnect then wakes the last one, and later calls get it too. (Once raised RuntimeError.) */
static void test_receive_from_several_tasks(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    stream_req(&r, target, -1); /* chunked: one event per piece */
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "receive_together"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_notes(key, "waiting");
    assert_rc(asgi_conn_feed(conn, "ab", 2, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_feed(conn, "cd", 2, 1), 0);
    assert_int_equal(ah_settle(), -1);
    assert_notes(key, "waiting\n"
                      "a got http.request/bytes/2/True keys=body,more_body,type\n"
                      "b got http.request/bytes/2/True keys=body,more_body,type");
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    assert_notes(key, "waiting\n"
                      "a got http.request/bytes/2/True keys=body,more_body,type\n"
                      "b got http.request/bytes/2/True keys=body,more_body,type\n"
                      "c got http.disconnect keys=type\n"
                      "then http.disconnect keys=type");
    ah_rec_free(&rec);
}

/* A task waiting in receive() while the response is sent gets http.disconnect once the
 * response is complete, not before. */
static void test_receive_disconnect_after_response(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    ah_run(th_app(APPS "watch_then_respond"), &r, &rec);
    ah_assert_ok(&rec, 200, "partial end");
    assert_string_equal(rec.events, "SBbD");
    assert_notes(key, "watcher waiting\nwatcher done before end: False\n"
                      "watcher got http.disconnect\nfinished");
    ah_rec_free(&rec);
}

/* asgi_conn_client_closed(): the client has the whole response (say to HEAD) and closed while
 * the app, an endless stream, waits in receive() for the disconnect: receive() returns
 * http.disconnect, and send() still works, so the app ends its response normally. */
static void test_client_closed_after_the_whole_response(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "HEAD", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "stream_until_disconnect"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_notes(key, "streaming");
    assert_rc(asgi_conn_client_closed(conn), WSGI_OK);
    assert_rc(asgi_conn_client_closed(conn), WSGI_OK); /* idempotent */
    assert_rc(asgi_conn_client_closed(NULL), WSGI_ERR_INVAL);
    ah_drive_done(&rec);
    assert_notes(key, "streaming\ngot http.disconnect keys=type\nfinal send ok");
    assert_int_equal(rec.done_result, 0);
    assert_int_equal(asgi_conn_error(conn), 0);
    asgi_conn_free(conn);
    ah_rec_free(&rec);
}

static void test_feed_after_body_ended(void **state)
{
    (void)state;
    /* No body at all. */
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    assert_rc(asgi_conn_feed(conn, "x", 1, 0), WSGI_ERR_STATE);
    assert_rc(asgi_conn_feed(conn, NULL, 0, 0), WSGI_ERR_STATE);
    ah_drive_done(&rec);
    assert_rc(asgi_conn_feed(conn, "x", 1, 1), WSGI_ERR_STATE);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "");
    ah_rec_free(&rec);

    /* A buffered body. */
    th_req_init(&r, "POST", "/");
    th_req_body(&r, "abc", 3);
    ah_rec_init(&rec);
    conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    assert_rc(asgi_conn_feed(conn, "d", 1, 0), WSGI_ERR_STATE);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "abc");
    ah_rec_free(&rec);

    /* A streamed body after its last piece; invalid arguments. */
    stream_req(&r, "/", 3);
    ah_rec_init(&rec);
    conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    assert_rc(asgi_conn_feed(conn, NULL, 2, 1), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_feed(NULL, "a", 1, 1), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_feed(conn, "abc", 3, 0), 0);
    assert_rc(asgi_conn_feed(conn, "d", 1, 0), WSGI_ERR_STATE);
    assert_true(wsgi_errmsg()[0] != '\0');
    assert_rc(asgi_conn_feed(conn, NULL, 0, 0), WSGI_ERR_STATE);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "abc");
    ah_rec_free(&rec);
}

#define PIECE (64 * 1024)
#define LIMIT (256 * 1024)

/* Unread body >= 256 KiB: feed answers ASGI_PAUSE; on_read_resume fires once the app read it. */
static void test_feed_pause_and_read_resume(void **state)
{
    (void)state;
    ah_set_eager(0); /* the body is fed before the app's first step */
    static unsigned char piece[PIECE];
    const size_t total = 8 * PIECE;
    th_req r;
    stream_req(&r, "/", (int64_t)total);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_read_resume = 1;
    asgi_conn *conn = ah_dispatch(th_app(APPS "count"), &r, &rec);
    uint32_t adler = 1;
    size_t fed = 0;
    /* The app has not run yet: everything fed stays unread. */
    for (int i = 0; i < 4; i++) {
        fill_pattern(piece, PIECE, fed);
        adler = ah_adler32(adler, piece, PIECE);
        int rc = asgi_conn_feed(conn, (const char *)piece, PIECE, 1);
        fed += PIECE;
        assert_rc(rc, fed >= LIMIT ? ASGI_PAUSE : 0);
    }
    assert_int_equal(rec.read_resumes, 0);
    /* Stay paused: the host does not read until on_read_resume. */
    ah_settle();
    assert_int_equal(rec.read_resumes, 1);
    assert_string_equal(rec.events, "R");
    assert_int_equal(ah_settle(), -1); /* the app waits for more */
    /* Resumed: the app waits in receive(), so each piece is taken at once. */
    while (fed < total) {
        fill_pattern(piece, PIECE, fed);
        adler = ah_adler32(adler, piece, PIECE);
        int more = fed + PIECE < total;
        assert_rc(asgi_conn_feed(conn, (const char *)piece, PIECE, more), 0);
        fed += PIECE;
        if (more) assert_int_equal(ah_settle(), -1);
    }
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    assert_int_equal(rec.read_resumes, 1);
    char expected[256];
    snprintf(expected, sizeof expected, "bytes=%zu events=5 largest=%d adler=%08x end=complete",
             total, LIMIT, adler);
    ah_assert_ok(&rec, 200, expected);
    ah_rec_free(&rec);
}

/* 20 MiB in 64 KiB pieces, honouring ASGI_PAUSE / on_read_resume like a host would: the app sees
 * every byte in order, and no receive() event ever carries more than limit + one piece (the
 * unread buffer is bounded). */
static void test_large_streamed_upload(void **state)
{
    (void)state;
    static unsigned char piece[PIECE];
    const size_t total = 20u * 1024 * 1024;
    th_req r;
    stream_req(&r, "/", (int64_t)total);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_read_resume = 1;
    asgi_conn *conn = ah_dispatch(th_app(APPS "count"), &r, &rec);
    uint32_t adler = 1;
    size_t fed = 0;
    int pauses = 0, feeds = 0;
    while (fed < total) {
        size_t n = total - fed < PIECE ? total - fed : PIECE;
        fill_pattern(piece, n, fed);
        adler = ah_adler32(adler, piece, n);
        int more = fed + n < total;
        int rc = asgi_conn_feed(conn, (const char *)piece, n, more);
        feeds++;
        fed += n;
        assert_true(rc == 0 || rc == ASGI_PAUSE);
        if (rc == ASGI_PAUSE) {
            pauses++;
            /* Stop reading until the app consumed the buffer. */
            while (rec.read_resumes < pauses)
                assert_int_equal(ah_turn(), 0);
        } else if (feeds % 7 == 0) {
            ah_settle(); /* sometimes the loop runs between reads, sometimes not */
        }
    }
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    assert_true(pauses > 0);
    assert_int_equal(rec.read_resumes, pauses);
    ah_assert_ok(&rec, 200, NULL);
    unsigned long long bytes = 0, largest = 0;
    unsigned got_adler = 0;
    char end[64];
    int fields = sscanf(rec.body, "bytes=%llu events=%*d largest=%llu adler=%x end=%63s", &bytes,
                        &largest, &got_adler, end);
    if (fields != 4) print_error("app answered \"%s\"\n", rec.body);
    assert_int_equal(fields, 4);
    assert_int_equal(bytes, total);
    assert_int_equal(got_adler, adler);
    assert_string_equal(end, "complete");
    if (largest > LIMIT + PIECE) print_error("an event carried %llu bytes\n", largest);
    assert_true(largest <= LIMIT + PIECE);
    ah_rec_free(&rec);
}

/* on_read_resume is optional: without it the host just gets ASGI_PAUSE and may resume at will. */
static void test_pause_without_read_resume_callback(void **state)
{
    (void)state;
    ah_set_eager(0); /* the whole body is fed before the app's first step */
    static unsigned char piece[PIECE];
    const size_t total = 5 * PIECE;
    th_req r;
    stream_req(&r, "/", (int64_t)total);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "count"), &r, &rec);
    uint32_t adler = 1;
    size_t fed = 0;
    int last = 0;
    while (fed < total) {
        fill_pattern(piece, PIECE, fed);
        adler = ah_adler32(adler, piece, PIECE);
        last = asgi_conn_feed(conn, (const char *)piece, PIECE, fed + PIECE < total);
        fed += PIECE;
    }
    assert_rc(last, ASGI_PAUSE);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    char expected[256];
    snprintf(expected, sizeof expected, "bytes=%zu events=1 largest=%zu adler=%08x end=complete",
             total, total, adler);
    ah_assert_ok(&rec, 200, expected);
    ah_rec_free(&rec);
}

/* ---- send(): valid responses ---------------------------------------------------------------- */

static void test_response_head(void **state)
{
    (void)state;
    char key[32];
    ah_rec rec;
    ah_rec_init(&rec);
    run_script(new_key(key, sizeof key), 0,
               "[{'type': 'http.response.start', 'status': 404, 'headers': [(b'content-type', "
               "b'text/plain'), [b'x-dup', b'1'], (b'x-dup', b'2'), (b'set-cookie', b'a=b; "
               "Path=/')]}, " BODY("b'nope'") "]",
               &rec);
    ah_assert_ok(&rec, 404, "nope");
    assert_string_equal(rec.status_line, "404 Not Found");
    assert_int_equal(rec.status_line_len, strlen("404 Not Found"));
    /* The app's four, then the content-length of its one-event body (test_length_added). */
    assert_int_equal(rec.n_headers, 5);
    assert_string_equal(rec.headers[0].name, "content-type");
    assert_string_equal(rec.headers[0].value, "text/plain");
    assert_string_equal(rec.headers[1].name, "x-dup");
    assert_string_equal(rec.headers[1].value, "1");
    assert_string_equal(rec.headers[2].name, "x-dup");
    assert_string_equal(rec.headers[2].value, "2");
    assert_string_equal(rec.headers[3].value, "a=b; Path=/");
    assert_string_equal(rec.headers[4].name, "content-length");
    assert_string_equal(rec.headers[4].value, "4");
    assert_int_equal(rec.head_content_length, 4);
    assert_int_equal(rec.head_flags, 0);
    ah_rec_free(&rec);

    /* 200 OK with a Content-Length header (any case), no headers key at all, other codes. */
    static const struct {
        const char *script;
        int status;
        const char *line;
        int64_t cl;
    } cases[] = {
        {"[" START_CL("5") ", " BODY("b'hello'") "]", 200, "200 OK", 5},
        {"[{'type': 'http.response.start', 'status': 201, 'headers': [(b'Content-Length', "
         "b'2')]}, " BODY("b'ok'") "]",
         201, "201 Created", 2},
        {"[{'type': 'http.response.start', 'status': 204}, {'type': 'http.response.body'}]", 204,
         "204 No Content", -1},
        {"[{'type': 'http.response.start', 'status': 503, 'headers': []}, " BODY("b''") "]", 503,
         "503 Service Unavailable", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ah_rec_init(&rec);
        run_script(new_key(key, sizeof key), 0, cases[i].script, &rec);
        ah_assert_ok(&rec, cases[i].status, NULL);
        assert_string_equal(rec.status_line, cases[i].line);
        assert_int_equal(rec.head_content_length, cases[i].cl);
        assert_string_equal(rec.events, "SbD");
        ah_rec_free(&rec);
    }

    /* A code without a standard reason phrase still starts with the code. */
    ah_rec_init(&rec);
    run_script(new_key(key, sizeof key), 0,
               "[{'type': 'http.response.start', 'status': 599, 'headers': []}, " BODY("b''") "]",
               &rec);
    ah_assert_ok(&rec, 599, "");
    assert_true(strncmp(rec.status_line, "599", 3) == 0);
    ah_rec_free(&rec);
}

/* A response whose whole body is its first body event (more_body False) without an app
 * content-length gets one, as a WSGI list body does (docs/asgi.md): the host frames it by length.
 * Not for a streamed body, an empty one (a HEAD answered with b''), 204/304, trailers, or an
 * app that set transfer-encoding. Header counts 0..5 cover the spare slot lw_hdrs_parse keeps
 * both on its stack array and on the heap. */
static void test_length_added(void **state)
{
    (void)state;
    static const struct {
        const char *script;
        const char *want; /* the content-length header, or NULL for none */
        int status;
    } cases[] = {
        {"[{'type': 'http.response.start', 'status': 200}, " BODY("b'hello'") "]", "5", 200},
        {"[{'type': 'http.response.start', 'status': 200, 'headers': [(b'a', b'1'), (b'b', "
         "b'2'), (b'c', b'3')]}, " BODY("b'hey'") "]",
         "3", 200},
        {"[{'type': 'http.response.start', 'status': 200, 'headers': [(b'a', b'1'), (b'b', "
         "b'2'), (b'c', b'3'), (b'd', b'4')]}, " BODY("b'hey'") "]",
         "3", 200},
        {"[{'type': 'http.response.start', 'status': 404, 'headers': [(b'a', b'1'), (b'b', "
         "b'2'), (b'c', b'3'), (b'd', b'4'), (b'e', b'5')]}, " BODY("b'gone'") "]",
         "4", 404},
        {"[" START ", " BODY_MORE("b'a'") ", " BODY("b'b'") "]", NULL, 200},
        {"[" START ", " BODY("b''") "]", NULL, 200},
        {"[{'type': 'http.response.start', 'status': 204}, " BODY("b'x'") "]", NULL, 204},
        {"[{'type': 'http.response.start', 'status': 304}, " BODY("b'x'") "]", NULL, 304},
        {"[{'type': 'http.response.start', 'status': 205}, " BODY("b'x'") "]", NULL, 205},
        {"[{'type': 'http.response.start', 'status': 200, 'headers': [(b'transfer-encoding', "
         "b'chunked')]}, " BODY("b'x'") "]",
         NULL, 200},
        /* the app's own, given twice: once to the host (RFC 9110 5.3: no list field) */
        {"[{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', "
         "b'1'), (b'x', b'y'), (b'Content-Length', b'1')]}, " BODY("b'x'") "]",
         "1", 200},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[32];
        ah_rec rec;
        ah_rec_init(&rec);
        run_script(new_key(key, sizeof key), 0, cases[i].script, &rec);
        assert_int_equal(rec.status, cases[i].status);
        const char *cl = NULL;
        int n_cl = 0;
        for (size_t h = 0; h < rec.n_headers; h++)
            if (strcasecmp(rec.headers[h].name, "content-length") == 0)
                cl = rec.headers[h].value, n_cl++;
        assert_true(n_cl <= 1);
        if ((cl == NULL) != (cases[i].want == NULL))
            print_error("case %zu: content-length %s\n", i, cl ? cl : "(none)");
        if (cases[i].want) {
            assert_non_null(cl);
            assert_string_equal(cl, cases[i].want);
            assert_int_equal(rec.head_content_length, atoll(cases[i].want));
        } else {
            assert_null(cl);
            assert_int_equal(rec.head_content_length, -1);
        }
        ah_rec_free(&rec);
    }
}

/* A code without a standard reason phrase: the status line is "599 ", with the space, as a WSGI
 * app's "599 " is. A host writes "HTTP/1.1 " + status_line, and RFC 9112 section 4 (status-line =
 * HTTP-version SP status-code SP [ reason-phrase ]) says a server MUST send that space even when
 * the reason phrase is absent. */
static void test_status_line_without_reason_keeps_its_space(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *line;
    } cases[] = {{599, "599 "}, {299, "299 "}, {999, "999 "}, {200, "200 OK"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char script[256], key[32];
        snprintf(script, sizeof script,
                 "[{'type': 'http.response.start', 'status': %d, 'headers': []}, " BODY("b''") "]",
                 cases[i].status);
        ah_rec rec;
        ah_rec_init(&rec);
        run_script(new_key(key, sizeof key), 0, script, &rec);
        ah_assert_ok(&rec, cases[i].status, "");
        assert_string_equal(rec.status_line, cases[i].line);
        assert_int_equal(rec.status_line_len, strlen(cases[i].line));
        ah_rec_free(&rec);
    }
}

static void test_streamed_response_body(void **state)
{
    (void)state;
    char key[32];
    ah_rec rec;
    ah_rec_init(&rec);
    new_key(key, sizeof key);
    run_script(key, 0,
               "[" START ", " BODY_MORE("b'a'") ", " BODY_MORE("b''") ", " BODY_MORE(
                   "b'bc'") ", {'type': 'http.response.body', 'more_body': True}, " BODY("b''") "]",
               &rec);
    ah_assert_ok(&rec, 200, "abc");
    /* Empty non-final bodies are not delivered; the empty final one is. */
    assert_string_equal(rec.events, "SBBbD");
    assert_notes(key, "ok\nok\nok\nok\nok\nok\nend");
    ah_rec_free(&rec);

    /* A final body with data; 'body' and 'more_body' both optional. */
    ah_rec_init(&rec);
    run_script(new_key(key, sizeof key), 0,
               "[" START ", {'type': 'http.response.body', 'body': b'xyz'}]", &rec);
    ah_assert_ok(&rec, 200, "xyz");
    assert_string_equal(rec.events, "SbD");
    ah_rec_free(&rec);

    /* Content-Length respected across chunks. */
    ah_rec_init(&rec);
    run_script(
        new_key(key, sizeof key), 0,
        "[" START_CL("6") ", " BODY_MORE("b'abc'") ", " BODY_MORE("b'de'") ", " BODY("b'f'") "]",
        &rec);
    ah_assert_ok(&rec, 200, "abcdef");
    assert_string_equal(rec.events, "SBBbD");
    assert_int_equal(rec.head_content_length, 6);
    ah_rec_free(&rec);
}

static void test_trailers(void **state)
{
    (void)state;
    char key[32];
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_trailers = 1;
    new_key(key, sizeof key);
    run_script(key, 0,
               "[" START_TR ", " BODY_MORE("b'data'") ", " BODY("b''") ", " TRAILERS_MORE(
                   "[(b'x-checksum', b'abc')]") ", " TRAILERS("[(b'x-more', b'1')]") "]",
               &rec);
    ah_assert_ok(&rec, 200, "data");
    assert_true(rec.head_flags & WSGI_HEAD_TRAILERS);
    assert_string_equal(rec.events, "SBbTtD");
    assert_int_equal(rec.n_trailers, 2);
    assert_string_equal(rec.trailers[0].name, "x-checksum");
    assert_string_equal(rec.trailers[0].value, "abc");
    assert_string_equal(rec.trailers[1].name, "x-more");
    assert_string_equal(rec.trailers[1].value, "1");
    ah_rec_free(&rec);

    /* trailers=False (or absent) with an on_trailers handler: no flag, no trailers expected. */
    ah_rec_init(&rec);
    rec.with_trailers = 1;
    run_script(new_key(key, sizeof key), 0, "[" START ", " BODY("b'x'") "]", &rec);
    ah_assert_ok(&rec, 200, "x");
    assert_int_equal(rec.head_flags, 0);
    ah_rec_free(&rec);

    /* trailers=True but the host has no on_trailers: the extension is not offered, the flag is
     * not set, and the response ends with the body. */
    ah_rec_init(&rec);
    run_script(new_key(key, sizeof key), 0, "[" START_TR ", " BODY("b'x'") "]", &rec);
    ah_assert_ok(&rec, 200, "x");
    assert_int_equal(rec.head_flags, 0);
    assert_string_equal(rec.events, "SbD");
    ah_rec_free(&rec);
}

/* Out-of-order trailers raise inside the app, which can catch them. */
static void test_trailers_order_enforced(void **state)
{
    (void)state;
    static const struct {
        const char *script;
        const char *notes;
        const char *events;
    } cases[] = {
        /* trailers before the body ended */
        {"[" START_TR ", " TRAILERS("[]") ", " BODY("b'a'") ", " TRAILERS("[]") "]",
         "ok\nRuntimeError\nok\nok\nend", "SbtD"},
        /* trailers not announced */
        {"[" START ", " BODY("b'a'") ", " TRAILERS("[]") "]", "ok\nok\nRuntimeError\nend", "SbD"},
        /* body after the trailers */
        {"[" START_TR ", " BODY("b'a'") ", " TRAILERS("[]") ", " BODY("b'b'") "]",
         "ok\nok\nok\nRuntimeError\nend", "SbtD"},
        /* trailers after the final trailers */
        {"[" START_TR ", " BODY("b'a'") ", " TRAILERS("[]") ", " TRAILERS("[]") "]",
         "ok\nok\nok\nRuntimeError\nend", "SbtD"},
        /* bad trailer headers */
        {"[" START_TR
         ", " BODY("b'a'") ", " TRAILERS("[(b'x', b'a\\nb')]") ", " TRAILERS("[(b'x', b'ok')]") "]",
         "ok\nok\nValueError\nok\nend", "SbtD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[32], got[4096];
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_trailers = 1;
        new_key(key, sizeof key);
        run_script(key, 1, cases[i].script, &rec);
        ah_assert_ok(&rec, 200, "a");
        notes(key, got, sizeof got);
        /* Keep only the exception class of each line. */
        char *p = got;
        char compact[4096] = "";
        while (p && *p) {
            char *eol = strchr(p, '\n');
            if (eol) *eol = '\0';
            char *colon = strchr(p, ':');
            if (colon) *colon = '\0';
            strcat(compact, p);
            if (eol) strcat(compact, "\n");
            p = eol ? eol + 1 : NULL;
        }
        if (strcmp(compact, cases[i].notes) != 0 || strcmp(rec.events, cases[i].events) != 0)
            print_error("case %zu: notes\n%s\nevents %s\n", i, compact, rec.events);
        assert_string_equal(compact, cases[i].notes);
        assert_string_equal(rec.events, cases[i].events);
        ah_rec_free(&rec);
    }

    /* Trailers announced but never sent: the response is incomplete (cut). */
    char key[32];
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_trailers = 1;
    size_t mark = th_log_mark();
    run_script(new_key(key, sizeof key), 0, "[" START_TR ", " BODY("b'a'") "]", &rec);
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "SbD");
    assert_true(rec.done_result < 0);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, NULL) > 0);
    ah_rec_free(&rec);
}

/* A temporary file with @len pattern bytes; its absolute path is written to @path. */
static void make_file(char *path, size_t cap, size_t len)
{
    snprintf(path, cap, "/tmp/libwsgi-asgi-pathsend-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unsigned char buf[4096];
    for (size_t off = 0; off < len; off += sizeof buf) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        fill_pattern(buf, n, off + 7);
        assert_int_equal(write(fd, buf, n), (ssize_t)n);
    }
    close(fd);
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0) n++;
    return n;
}

static void test_pathsend(void **state)
{
    (void)state;
    char path[64];
    const size_t len = 300 * 1000 + 17;
    make_file(path, sizeof path, len);
    char script[512], key[32];

    /* With and without a matching Content-Length. */
    for (int with_cl = 0; with_cl < 2; with_cl++) {
        snprintf(script, sizeof script,
                 "[{'type': 'http.response.start', 'status': 200, 'headers': %s}, "
                 "{'type': 'http.response.pathsend', 'path': '%s'}]",
                 with_cl ? "[(b'content-length', b'300017')]" : "[]", path);
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_sendfile = 1;
        new_key(key, sizeof key);
        run_script(key, 0, script, &rec);
        ah_assert_ok(&rec, 200, NULL);
        assert_string_equal(rec.events, "SFD");
        assert_int_equal(rec.sendfile_calls, 1);
        assert_int_equal(rec.sf_offset, 0);
        assert_int_equal(rec.sf_count, (int64_t)len);
        assert_int_equal(rec.body_len, len);
        unsigned char *expected = malloc(len);
        assert_non_null(expected);
        fill_pattern(expected, len, 7);
        assert_memory_equal(rec.body, expected, len);
        free(expected);
        assert_notes(key, "ok\nok\nend");
        ah_rec_free(&rec);
    }

    /* The fd is the library's: closed once the connection is freed (no fd leak). */
    ah_drive_idle();
    int before = count_fds();
    snprintf(script, sizeof script, "[" START ", {'type': 'http.response.pathsend', 'path': '%s'}]",
             path);
    for (int i = 0; i < 20; i++) {
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_sendfile = 1;
        run_script(new_key(key, sizeof key), 0, script, &rec);
        ah_assert_ok(&rec, 200, NULL);
        assert_int_equal(rec.body_len, len);
        ah_rec_free(&rec);
    }
    ah_drive_idle();
    int after = count_fds();
    if (after != before) print_error("open fds: %d before, %d after 20 pathsends\n", before, after);
    assert_int_equal(after, before);
    unlink(path);
}

static void test_pathsend_errors(void **state)
{
    (void)state;
    char path[64];
    make_file(path, sizeof path, 10);
    static const struct {
        const char *fmt; /* %s: the file's path */
        const char *exc;
    } cases[] = {
        {"{'type': 'http.response.pathsend', 'path': 'relative/file.txt'}", "ValueError"},
        {"{'type': 'http.response.pathsend', 'path': '/nonexistent/libwsgi/file'}",
         "FileNotFoundError"},
        {"{'type': 'http.response.pathsend', 'path': '/tmp'}", "IsADirectoryError"},
        {"{'type': 'http.response.pathsend', 'path': b'%s'}", "TypeError"},
        {"{'type': 'http.response.pathsend'}", "TypeError"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char bad[256], script[1024], key[32], got[4096], want[256];
        snprintf(bad, sizeof bad, cases[i].fmt, path);
        /* Caught: the app goes on and completes with pathsend of a good file. */
        snprintf(script, sizeof script,
                 "[" START ", %s, {'type': 'http.response.pathsend', 'path': '%s'}]", bad, path);
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_sendfile = 1;
        new_key(key, sizeof key);
        run_script(key, 1, script, &rec);
        ah_assert_ok(&rec, 200, NULL);
        assert_string_equal(rec.events, "SFD");
        assert_int_equal(rec.body_len, 10);
        notes(key, got, sizeof got);
        snprintf(want, sizeof want, "ok\n%s: ", cases[i].exc);
        if (strncmp(got, want, strlen(want)) != 0) print_error("case %zu: notes\n%s\n", i, got);
        assert_true(strncmp(got, want, strlen(want)) == 0);
        ah_rec_free(&rec);

        /* Not caught: the head is still held (it goes out with the first body event, as the
         * ASGI spec requires), so nothing was sent and the client gets a clean 500. */
        snprintf(script, sizeof script, "[" START ", %s]", bad);
        ah_rec_init(&rec);
        rec.with_sendfile = 1;
        size_t mark = th_log_mark();
        run_script(new_key(key, sizeof key), 0, script, &rec);
        ah_assert_500(&rec, WSGI_ERR_APP);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, cases[i].exc) > 0);
        ah_rec_free(&rec);
    }

    /* Ordering: pathsend before start, after body bytes, twice, body after it; Content-Length
     * mismatch; and pathsend when the host offers no on_sendfile. */
    char script[1024], key[32], got[4096];
    static const char *const order[] = {
        "[%s, " START ", " BODY("b''") "]",
        "[" START ", " BODY_MORE("b'x'") ", %s, " BODY("b''") "]",
        "[" START ", " BODY_MORE("b''") ", %s]", /* an empty chunk sent nothing: allowed */
        "[" START_CL("3") ", %s, " BODY("b'abc'") "]",
    };
    const char *order_notes[] = {"RuntimeError", "ok\nok\nRuntimeError", "ok\nok\nok",
                                 "ok\nRuntimeError"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        char ps[128];
        snprintf(ps, sizeof ps, "{'type': 'http.response.pathsend', 'path': '%s'}", path);
        snprintf(script, sizeof script, order[i], ps);
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_sendfile = 1;
        new_key(key, sizeof key);
        run_script(key, 1, script, &rec);
        notes(key, got, sizeof got);
        if (strncmp(got, order_notes[i], strlen(order_notes[i])) != 0)
            print_error("order case %zu: notes\n%s\n", i, got);
        assert_true(strncmp(got, order_notes[i], strlen(order_notes[i])) == 0);
        ah_assert_sane(&rec);
        assert_int_equal(rec.done_calls, 1);
        ah_rec_free(&rec);
    }

    /* A second message after pathsend ended the body. */
    snprintf(script, sizeof script,
             "[" START ", {'type': 'http.response.pathsend', 'path': '%s'}, " BODY("b'x'") "]",
             path);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_sendfile = 1;
    new_key(key, sizeof key);
    run_script(key, 1, script, &rec);
    ah_assert_ok(&rec, 200, NULL);
    assert_string_equal(rec.events, "SFD");
    notes(key, got, sizeof got);
    assert_true(strncmp(got, "ok\nok\nRuntimeError: ", 20) == 0);
    ah_rec_free(&rec);

    /* No on_sendfile: pathsend is an unknown message. */
    snprintf(script, sizeof script,
             "[" START ", {'type': 'http.response.pathsend', 'path': '%s'}, " BODY("b'x'") "]",
             path);
    ah_rec_init(&rec);
    new_key(key, sizeof key);
    run_script(key, 1, script, &rec);
    ah_assert_ok(&rec, 200, "x");
    notes(key, got, sizeof got);
    assert_true(strncmp(got, "ok\nRuntimeError: ", 17) == 0);
    ah_rec_free(&rec);
    unlink(path);
}

/* A FIFO is not a file to send: refused with OSError like a directory, and at once. Opened
 * without O_NONBLOCK, open() would wait for a writer on the loop thread, for good (this test then
 * hangs until ctest's timeout). */
static void test_pathsend_to_a_fifo(void **state)
{
    (void)state;
    char dir[64], fifo[96], script[512], key[32], got[4096];
    snprintf(dir, sizeof dir, "/tmp/libwsgi-asgi-fifo-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    snprintf(script, sizeof script,
             "[" START ", {'type': 'http.response.pathsend', 'path': '%s'}, " BODY("b'ok'") "]",
             fifo);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.with_sendfile = 1;
    new_key(key, sizeof key);
    run_script(key, 1, script, &rec);
    ah_assert_ok(&rec, 200, "ok");
    assert_int_equal(rec.sendfile_calls, 0);
    notes(key, got, sizeof got);
    if (strncmp(got, "ok\nOSError: ", 12) != 0) print_error("notes\n%s\n", got);
    assert_true(strncmp(got, "ok\nOSError: ", 12) == 0);
    ah_rec_free(&rec);
    unlink(fifo);
    rmdir(dir);
}

/* ---- send(): invalid events ----------------------------------------------------------------- */

typedef struct bad_event {
    const char *name;
    const char *prefix; /* valid messages before the bad one ("" or "m, m, ") */
    const char *bad;
    const char *suffix; /* valid messages completing the response after it (", m") */
    const char *exc;    /* the exception class the app sees */
    const char *body;   /* the body when caught */
} bad_event;

static const bad_event bad_events[] = {
    {"body before start", "", BODY("b'x'"), ", " START ", " BODY("b'ok'"), "RuntimeError", "ok"},
    {"start twice", START ", ", START, ", " BODY("b'ok'"), "RuntimeError", "ok"},
    {"body after the final body", START ", " BODY("b'ok'") ", ", BODY("b'x'"), "", "RuntimeError",
     "ok"},
    {"start after the final body", START ", " BODY("b'ok'") ", ", START, "", "RuntimeError", "ok"},
    {"unknown type", "", "{'type': 'http.response.bogus'}", ", " START ", " BODY("b'ok'"),
     "RuntimeError", "ok"},
    {"websocket type on http", START ", ", "{'type': 'websocket.send', 'text': 'x'}",
     ", " BODY("b'ok'"), "RuntimeError", "ok"},
    {"non-dict message", "", "'http.response.start'", ", " START ", " BODY("b'ok'"), "TypeError",
     "ok"},
    {"list message", "", "[('type', 'http.response.start')]", ", " START ", " BODY("b'ok'"),
     "TypeError", "ok"},
    {"missing type", "", "{'status': 200}", ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"type not str", "", "{'type': b'http.response.start', 'status': 200}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"status is a str", "", "{'type': 'http.response.start', 'status': '200'}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"status is a float", "", "{'type': 'http.response.start', 'status': 200.0}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"status missing", "", "{'type': 'http.response.start'}", ", " START ", " BODY("b'ok'"),
     "TypeError", "ok"},
    {"status 99", "", "{'type': 'http.response.start', 'status': 99}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"status 1000", "", "{'type': 'http.response.start', 'status': 1000}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"status -200", "", "{'type': 'http.response.start', 'status': -200}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"status huge", "", "{'type': 'http.response.start', 'status': 1180591620717411303424}",
     ", " START ", " BODY("b'ok'"), "Error", "ok"},
    {"header name str", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [('content-type', b'x')]}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"header value str", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', 'x')]}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"header value CRLF", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a', b'a\\r\\nx-b: c')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header value LF", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a', b'a\\nb')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header value CR", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a', b'a\\rb')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header value NUL", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a', b'a\\x00b')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header name with space", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'bad name', b'v')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header name with colon", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a:', b'v')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"empty header name", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'', b'v')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"header not a pair", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'x-a',)]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"headers not iterable", "", "{'type': 'http.response.start', 'status': 200, 'headers': 5}",
     ", " START ", " BODY("b'ok'"), "TypeError", "ok"},
    {"bad content-length", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'1x')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"conflicting content-lengths", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'2'), "
     "(b'content-length', b'3')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    /* The refused start's Content-Length must not stick to the next one. */
    {"content-length then a bad header", "",
     "{'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'5'), "
     "(b'bad name', b'v')]}",
     ", " START ", " BODY("b'ok'"), "ValueError", "ok"},
    {"body is a str", START ", ", "{'type': 'http.response.body', 'body': 'text'}",
     ", " BODY("b'ok'"), "TypeError", "ok"},
    {"body is None", START ", ", "{'type': 'http.response.body', 'body': None}", ", " BODY("b'ok'"),
     "TypeError", "ok"},
    {"body is a memoryview-like list", START ", ", "{'type': 'http.response.body', 'body': [1]}",
     ", " BODY("b'ok'"), "TypeError", "ok"},
    {"longer than Content-Length", START_CL("2") ", ", BODY("b'okk'"), ", " BODY("b'ok'"),
     "RuntimeError", "ok"},
    {"longer than Content-Length across chunks", START_CL("2") ", " BODY_MORE("b'o'") ", ",
     BODY_MORE("b'kk'"), ", " BODY("b'k'"), "RuntimeError", "ok"},
    {"shorter than Content-Length", START_CL("2") ", ", BODY("b'o'"), ", " BODY("b'ok'"),
     "RuntimeError", "ok"},
};

/* Caught: the exception reaches the app's own code, which goes on and completes the response. */
static void test_invalid_events_are_catchable(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_events / sizeof bad_events[0]; i++) {
        const bad_event *b = &bad_events[i];
        char script[2048], key[32], got[8192], want[256];
        snprintf(script, sizeof script, "[%s%s%s]", b->prefix, b->bad, b->suffix);
        ah_rec rec;
        ah_rec_init(&rec);
        new_key(key, sizeof key);
        run_script(key, 1, script, &rec);
        print_message("case: %s\n", b->name);
        ah_assert_ok(&rec, 200, b->body);
        notes(key, got, sizeof got);
        /* One "ok" per prefix message, then the exception. */
        size_t n_prefix = 0;
        for (const char *p = b->prefix; (p = strstr(p, "'type'")) != NULL; p++)
            n_prefix++;
        want[0] = '\0';
        for (size_t k = 0; k < n_prefix; k++)
            strcat(want, "ok\n");
        /* The exception's class name ends with b->exc (e.g. "ValueError"). */
        const char *line = got + strlen(want);
        const char *colon = strchr(line, ':');
        size_t elen = strlen(b->exc);
        int class_ok = colon != NULL && (size_t)(colon - line) >= elen &&
                       strncmp(colon - elen, b->exc, elen) == 0 &&
                       memchr(line, '\n', (size_t)(colon - line)) == NULL;
        if (strncmp(got, want, strlen(want)) != 0 || !class_ok || strstr(got, "\nend") == NULL)
            print_error("case \"%s\": notes\n%s\n-- expected %s after %zu ok\n", b->name, got,
                        b->exc, n_prefix);
        assert_true(strncmp(got, want, strlen(want)) == 0);
        assert_true(class_ok);
        assert_non_null(strstr(got, "\nend"));
        ah_rec_free(&rec);
    }
}

/* A Content-Length on a response that has no body in HTTP (a HEAD request's, a 204, a 304)
 * describes the entity, not the bytes sent: the empty body is complete (Starlette's FileResponse
 * answers HEAD so; WSGI allows it too). A 200 to GET with the same head is short. */
static void test_bodyless_responses_keep_their_content_length(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        int status;
    } cases[] = {{"HEAD", 200}, {"GET", 204}, {"GET", 304}, {"HEAD", 404}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char script[512], key[32], target[128];
        snprintf(script, sizeof script,
                 "[{'type': 'http.response.start', 'status': %d, 'headers': [(b'content-length', "
                 "b'5')]}, " BODY("b''") "]",
                 cases[i].status);
        snprintf(target, sizeof target, "/?key=%s", new_key(key, sizeof key));
        th_req r;
        th_req_init(&r, cases[i].method, target);
        th_req_body(&r, script, strlen(script));
        ah_rec rec;
        ah_rec_init(&rec);
        print_message("case: %s -> %d with Content-Length: 5\n", cases[i].method, cases[i].status);
        ah_run(th_app(APPS "script"), &r, &rec);
        ah_assert_ok(&rec, cases[i].status, "");
        ah_rec_free(&rec);
    }
    /* The same head to a GET with a 200: 3 bytes short, a broken response. */
    ah_rec rec;
    ah_rec_init(&rec);
    char key[32];
    run_script(new_key(key, sizeof key), 0, "[" START_CL("5") ", " BODY("b'abc'") "]", &rec);
    assert_true(rec.done_result < 0);
    ah_rec_free(&rec);
}

/* Not caught: a 500 if nothing was sent yet, else a cut (on_done negative, no 500), except when
 * the response was already complete (on_done 0). The traceback is logged at ERROR. */
static void test_invalid_events_uncaught(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_events / sizeof bad_events[0]; i++) {
        const bad_event *b = &bad_events[i];
        char script[2048], key[32];
        snprintf(script, sizeof script, "[%s%s]", b->prefix, b->bad);
        ah_rec rec;
        ah_rec_init(&rec);
        size_t mark = th_log_mark();
        run_script(new_key(key, sizeof key), 0, script, &rec);
        print_message("case: %s -> events %s, on_done(%d)\n", b->name, rec.events, rec.done_result);
        ah_assert_sane(&rec);
        if (b->prefix[0] == '\0' || !strstr(b->prefix, "http.response.body")) {
            /* Nothing sent yet (a start alone is held until the first body event): 500. */
            ah_assert_500(&rec, WSGI_ERR_APP);
        } else if (strstr(b->name, "after the final body")) {
            assert_int_equal(rec.status, 200);
            assert_string_equal(rec.events, "SbD");
            assert_rc(rec.done_result, 0);
        } else {
            assert_int_equal(rec.status, 200);
            assert_int_equal(rec.starts, 1);
            assert_true(strchr(rec.events, 'b') == NULL);
            assert_true(rec.done_result < 0);
        }
        if (th_log_count(mark, WSGI_LOG_ERROR, "Traceback") == 0) th_log_dump(mark);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, b->exc) > 0);
        ah_rec_free(&rec);
    }
}

/* ---- app failures --------------------------------------------------------------------------- */

static void run_failing(const char *spec, ah_rec *rec, int *conn_error, char *errmsg, size_t cap)
{
    th_req r;
    th_req_init(&r, "GET", "/");
    asgi_conn *conn = ah_dispatch(th_app(spec), &r, rec);
    ah_drive_done(rec);
    *conn_error = asgi_conn_error(conn);
    snprintf(errmsg, cap, "%s", asgi_conn_errmsg(conn));
    asgi_conn_free(conn);
}

static void test_app_raises_before_start(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *needle;
    } cases[] = {
        {APPS "raise_before_start", "libwsgi-test asgi failure before start"},
        {APPS "raise_immediately", "libwsgi-test raised before any await"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ah_rec rec;
        ah_rec_init(&rec);
        size_t mark = th_log_mark();
        int err;
        char msg[1024];
        run_failing(cases[i].spec, &rec, &err, msg, sizeof msg);
        ah_assert_500(&rec, WSGI_ERR_APP);
        assert_rc(err, WSGI_ERR_APP);
        assert_str_contains(msg, cases[i].needle);
        if (th_log_count(mark, WSGI_LOG_ERROR, "Traceback") == 0) th_log_dump(mark);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, cases[i].needle) > 0);
        ah_rec_free(&rec);
    }
}

/* ASGI HTTP spec: the server must not send the response until the first http.response.body
 * event. The head is held: on_start comes with the first on_body, and an app that fails in
 * between gets a clean 500 because nothing was sent. */
static void test_head_held_until_first_body(void **state)
{
    (void)state;
    th_req r;
    stream_req(&r, "/", 4);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "start_then_read"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(rec.events, ""); /* start sent by the app, nothing delivered */
    assert_rc(asgi_conn_feed(conn, "abcd", 4, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 201, "abcd");
    assert_string_equal(rec.events, "SbD");
    assert_string_equal(ah_rec_header(&rec, "x-held"), "1");
    ah_rec_free(&rec);

    stream_req(&r, "/?raise", 4);
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    conn = ah_dispatch(th_app(APPS "start_then_read"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(rec.events, "");
    assert_rc(asgi_conn_feed(conn, "abcd", 4, 0), 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_null(ah_rec_header(&rec, "x-held"));
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "before any body") > 0);
    ah_rec_free(&rec);

    /* The client leaves while the head is held: nothing is sent (no 500 either), and that is a
     * disconnect, logged at INFO, not an application error. */
    stream_req(&r, "/", 4);
    ah_rec_init(&rec);
    mark = th_log_mark();
    conn = ah_dispatch(th_app(APPS "start_then_read"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    assert_string_equal(rec.events, "D");
    assert_rc(rec.done_result, WSGI_ERR_CALLBACK);
    if (th_log_count(mark, WSGI_LOG_ERROR, NULL) != 0) th_log_dump(mark);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    ah_rec_free(&rec);
}

/* Releasing the body before the previous one can run app code (a bytes subclass's __del__) that
 * drops the current message's body: the library must hold the new one first. */
static void test_body_outlives_app_code(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(APPS "body_dropper", "/?n=600", &rec);
    char want[603] = "ab";
    memset(want + 2, 'x', 600);
    want[602] = '\0';
    ah_assert_ok(&rec, 200, want);
    ah_rec_free(&rec);
}

/* The held head's on_start runs without the GIL right before the first body's on_body: another
 * Python thread may change the app's message meanwhile, so the body must be held, not borrowed. */
static int start_hook_race(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    const int *fds = rec->hook_data;
    char b;
    assert_int_equal(write(fds[0], "g", 1), 1); /* the app's thread replaces the body */
    assert_int_equal(read(fds[1], &b, 1), 1);   /* ... and says it did */
    return 0;
}

static void test_body_outlives_other_threads(void **state)
{
    (void)state;
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    int fds[2] = {go[1], done[0]};
    char target[128];
    snprintf(target, sizeof target, "/?n=600&go=%d&done=%d", go[0], done[1]);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = start_hook_race;
    rec.hook_data = fds;
    ah_get(APPS "body_raced", target, &rec);
    char want[601];
    memset(want, 'x', 600);
    want[600] = '\0';
    ah_assert_ok(&rec, 200, want);
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(done[i]);
    }
    ah_rec_free(&rec);
}

static void test_app_returns_without_response(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    int err;
    char msg[1024];
    run_failing(APPS "no_response", &rec, &err, msg, sizeof msg);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_rc(err, WSGI_ERR_APP);
    assert_true(msg[0] != '\0');
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, NULL) > 0);
    ah_rec_free(&rec);

    /* A start but no body event: the head was held, never sent, so a clean 500 replaces it. */
    ah_rec_init(&rec);
    run_failing(APPS "start_only", &rec, &err, msg, sizeof msg);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_rc(err, WSGI_ERR_APP);
    ah_rec_free(&rec);
}

static void test_app_raises_after_start(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    int err;
    char msg[1024];
    run_failing(APPS "raise_after_start", &rec, &err, msg, sizeof msg);
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "SBD");
    assert_string_equal(rec.body, "half");
    assert_rc(rec.done_result, WSGI_ERR_APP);
    assert_rc(err, WSGI_ERR_APP);
    assert_str_contains(msg, "libwsgi-test asgi failure after start");
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
    ah_rec_free(&rec);
}

/* A callable forced to the ASGI interface that does not return an awaitable: a 500. */
static void test_non_awaitable_app(void **state)
{
    (void)state;
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = APPS "not_a_coroutine_result";
    opts.interface = WSGI_INTERFACE_ASGI;
    wsgi_app *app = th_app_with(&opts);
    assert_int_equal(wsgi_app_interface(app), WSGI_INTERFACE_ASGI);
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    size_t mark = th_log_mark();
    ah_run(app, &r, &rec);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "TypeError") > 0);
    ah_rec_free(&rec);
}

static int body_ended(void *arg)
{
    return ((ah_rec *)arg)->body_ended;
}

/* A task cancelled before it responded is a failed request: a 500. */
static void test_cancelled_task(void **state)
{
    (void)state;
    ah_rec rec;
    ah_rec_init(&rec);
    int err;
    char msg[1024];
    run_failing(APPS "cancel_self", &rec, &err, msg, sizeof msg);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_rc(err, WSGI_ERR_APP);
    ah_rec_free(&rec);
}

/* asgi_conn_cancel(): the stack of the waiting task is logged, the app sees CancelledError at its
 * await and the host gets a 500 and on_done with an error; on an ended task it does nothing. */
static void test_cancel_a_waiting_task(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "await_forever"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_notes(key, "waiting");
    size_t mark = th_log_mark();
    assert_rc(asgi_conn_cancel(conn), WSGI_OK);
    assert_true(th_log_count(mark, WSGI_LOG_ERROR, "in await_forever") >= 1);
    ah_drive_done(&rec);
    ah_assert_500(&rec, WSGI_ERR_APP);
    assert_notes(key, "waiting\ncancelled");
    assert_rc(asgi_conn_cancel(conn), WSGI_OK); /* ended: nothing to do */
    assert_rc(asgi_conn_cancel(NULL), WSGI_ERR_INVAL);
    asgi_conn_free(conn);
    ah_rec_free(&rec);
}

/* A task cancelled before its first step never runs the app (nor the code that reports its end
 * from inside the task): the done callback must still answer 500 and call on_done. And a request
 * that never blocks is complete after one loop turn, with nothing scheduled after it. */
static void test_task_cancelled_before_it_ran(void **state)
{
    (void)state;
    ah_set_eager(0); /* an eager task runs inside asgi_dispatch: nothing can cancel it before */
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec first, second;
    ah_rec_init(&first);
    ah_rec_init(&second);
    asgi_conn *a = ah_dispatch(th_app(APPS "cancel_others"), &r, &first);
    asgi_conn *b = ah_dispatch(th_app(APPS "echo"), &r, &second);
    ah_drive_done(&first);
    ah_drive_done(&second);
    asgi_conn_free(a);
    asgi_conn_free(b);
    assert_rc(first.done_result, 0);
    assert_int_equal(first.status, 204);
    ah_assert_500(&second, WSGI_ERR_APP);
    ah_rec_free(&first);
    ah_rec_free(&second);

    ah_rec one;
    ah_rec_init(&one);
    asgi_conn *c = ah_dispatch(th_app(APPS "echo"), &r, &one);
    assert_int_equal(asgi_loop_timeout(th_rt), 0);
    assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    assert_int_equal(one.done_calls, 1); /* answered and ended in that one turn */
    ah_assert_ok(&one, 200, "");
    assert_int_equal(asgi_loop_timeout(th_rt), -1); /* and nothing left to run */
    asgi_conn_free(c);
    ah_rec_free(&one);
}

/* SystemExit / KeyboardInterrupt raised by a request handler fail that request (a 500 and
 * on_done(WSGI_ERR_APP)); they must not escape asgi_loop_run() into the host's loop. */
static void test_base_exceptions_in_app(void **state)
{
    (void)state;
    static const char *const specs[] = {APPS "system_exit", APPS "keyboard_interrupt"};
    int loop_failures = 0;
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        th_req r;
        th_req_init(&r, "GET", "/");
        ah_rec rec;
        ah_rec_init(&rec);
        size_t mark = th_log_mark();
        asgi_conn *conn = ah_dispatch(th_app(specs[i]), &r, &rec);
        int bad_rc = 0, turns = 0;
        while (rec.done_calls == 0 && turns++ < 100) {
            int rc = asgi_loop_run(th_rt);
            if (rc != WSGI_OK && bad_rc == 0) bad_rc = rc;
        }
        asgi_conn_free(conn);
        ah_drive_idle();
        print_message("%s: first failing asgi_loop_run: %d (%s), events \"%s\"\n", specs[i], bad_rc,
                      wsgi_strerror(bad_rc), rec.events);
        if (bad_rc != WSGI_OK) loop_failures++;
        ah_assert_500(&rec, WSGI_ERR_APP);
        assert_true(th_log_count(mark, WSGI_LOG_ERROR, "libwsgi-test") > 0);
        ah_rec_free(&rec);
    }
    assert_int_equal(loop_failures, 0);
}

/* on_done reports the end of the task, which may come after the response completed. */
static void test_done_after_background_work(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "background_after_response"), &r, &rec);
    ah_drive_until(body_ended, &rec, AH_MAX_TURNS);
    assert_int_equal(rec.done_calls, 0);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "done early");
    assert_string_equal(rec.events, "SbD");
    assert_notes(key, "responded\nbackground finished");
    ah_rec_free(&rec);
}

/* ---- backpressure --------------------------------------------------------------------------- */

static int always_pause(ah_rec *rec, const char *data, size_t len, int more)
{
    (void)rec;
    (void)data;
    (void)len;
    (void)more;
    return ASGI_PAUSE;
}

static void test_send_pause_holds_the_app(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s&n=5", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.pause_body_at = 2;
    asgi_conn *conn = ah_dispatch(th_app(APPS "stream"), &r, &rec);
    /* The app blocks in the send() the host paused: nothing scheduled, no progress. */
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(rec.events, "SBB");
    assert_notes(key, "2"); /* start and body 0 completed; body 1 is pending */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ah_settle(), -1);
        assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    }
    assert_string_equal(rec.events, "SBB");
    assert_notes(key, "2");
    assert_rc(asgi_conn_resume(conn), WSGI_OK);
    assert_rc(asgi_conn_resume(conn), WSGI_OK); /* nothing paused: fine */
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "0;1;2;3;4;");
    assert_string_equal(rec.events, "SBBBBBbD");
    assert_notes(key, "done");
    ah_rec_free(&rec);

    /* Pausing at on_start (which comes with the first body) holds the send() of that body. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s&n=2", key);
    th_req_init(&r, "GET", target);
    ah_rec_init(&rec);
    rec.start_rc = ASGI_PAUSE;
    conn = ah_dispatch(th_app(APPS "stream"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(rec.events, "SB");
    assert_notes(key, "1");
    rec.start_rc = 0;
    assert_rc(asgi_conn_resume(conn), WSGI_OK);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "0;1;");
    ah_rec_free(&rec);

    /* Pausing on every body: the app advances one send per resume. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s&n=3", key);
    th_req_init(&r, "GET", target);
    ah_rec_init(&rec);
    rec.body_hook = always_pause;
    conn = ah_dispatch(th_app(APPS "stream"), &r, &rec);
    for (int i = 1; i <= 4; i++) {
        assert_int_equal(ah_settle(), -1);
        assert_int_equal(rec.body_calls, i);
        assert_rc(asgi_conn_resume(conn), WSGI_OK);
    }
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "0;1;2;");
    ah_rec_free(&rec);
}

/* A send() held by ASGI_PAUSE ends with OSError when the client goes away (disconnect) or the
 * host frees the connection; after a free no callback fires. */
static void test_paused_send_and_disconnect(void **state)
{
    (void)state;
    for (int use_free = 0; use_free < 2; use_free++) {
        char key[32], target[64];
        new_key(key, sizeof key);
        snprintf(target, sizeof target, "/?key=%s&n=5", key);
        th_req r;
        th_req_init(&r, "GET", target);
        ah_rec rec;
        ah_rec_init(&rec);
        rec.pause_body_at = 2;
        asgi_conn *conn = ah_dispatch(th_app(APPS "stream"), &r, &rec);
        assert_int_equal(ah_settle(), -1);
        assert_string_equal(rec.events, "SBB");
        size_t mark = th_log_mark();
        if (use_free) {
            asgi_conn_free(conn);
            rec.freed = 1;
            ah_drive_idle();
            assert_string_equal(rec.events, "SBB");
            assert_int_equal(rec.after_free, 0);
        } else {
            assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
            ah_drive_done(&rec);
            asgi_conn_free(conn);
            ah_assert_sane(&rec);
            assert_string_equal(rec.events, "SBBD");
            assert_true(rec.done_result < 0);
        }
        /* The stream app does not catch: its pending send raised OSError and ended it. That is a
         * disconnect, logged as one, not an application traceback. */
        assert_notes(key, "2");
        assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
        assert_int_equal(th_log_count(mark, WSGI_LOG_INFO, "disconnect"), 1);
        ah_rec_free(&rec);
    }
}

/* on_body answering -1: the app's send() raises OSError (each time), receive() reports
 * http.disconnect, no further body callback; the result is an error. */
static void test_on_body_failure_disconnects(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    rec.fail_body_at = 1;
    asgi_conn *conn = ah_dispatch(th_app(APPS "client_gone"), &r, &rec);
    ah_drive_done(&rec);
    assert_true(asgi_conn_error(conn) < 0);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "SBD");
    assert_true(rec.done_result < 0);
    assert_notes(key, "send 0 OSError\nsend 1 OSError\nsend 2 OSError\nreceive http.disconnect");
    ah_rec_free(&rec);

    /* on_start answering -1: the app's send(start) raises OSError; uncaught here: no 500. */
    ah_rec_init(&rec);
    rec.start_rc = -1;
    conn = ah_dispatch(th_app(APPS "client_gone"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    assert_string_equal(rec.events, "SD");
    assert_true(rec.done_result < 0);
    ah_rec_free(&rec);
}

/* ---- disconnect and free -------------------------------------------------------------------- */

static int two_bodies(void *arg)
{
    return ((ah_rec *)arg)->body_calls >= 2;
}

static void test_disconnect_while_streaming(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "slow_stream"), &r, &rec);
    ah_drive_until(two_bodies, &rec, AH_MAX_TURNS);
    int bodies = rec.body_calls;
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    ah_drive_done(&rec);
    /* A host may resume and disconnect a finished connection harmlessly. */
    assert_rc(asgi_conn_resume(conn), WSGI_OK);
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    assert_int_equal(rec.body_calls, bodies);
    assert_true(rec.done_result < 0);
    char got[1024], want[1024];
    notes(key, got, sizeof got);
    snprintf(want, sizeof want, "send %d OSError\nreceive http.disconnect", bodies);
    assert_string_equal(got, want);
    ah_rec_free(&rec);
}

/* Most apps let send()'s OSError propagate once the client is gone: the task ends with
 * on_done(WSGI_ERR_CALLBACK), logged as a disconnect, not as an application traceback. */
static void test_disconnect_oserror_is_not_an_app_error(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "stream_until_gone"), &r, &rec);
    ah_drive_until(two_bodies, &rec, AH_MAX_TURNS);
    size_t mark = th_log_mark();
    assert_rc(asgi_conn_disconnect(conn), WSGI_OK);
    ah_drive_done(&rec);
    assert_rc(rec.done_result, WSGI_ERR_CALLBACK);
    assert_rc(asgi_conn_error(conn), WSGI_ERR_CALLBACK);
    assert_int_equal(th_log_count(mark, WSGI_LOG_ERROR, NULL), 0);
    assert_int_equal(th_log_count(mark, WSGI_LOG_INFO, "disconnect"), 1);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    ah_rec_free(&rec);
}

/* A host pauses send() while it still has the chunk queued by pointer; the app cancels that send
 * and sends again. At the next on_body the paused chunk must still be readable, so the host can
 * copy it (ASan flags a released one in the sanitizer pass; the bytes are compared here too). */
typedef struct prev_body {
    const char *ptr;
    size_t len;
    char first;
    int ok, checked;
} prev_body;

static int pause_first_check_previous(ah_rec *rec, const char *data, size_t len, int more)
{
    (void)more;
    prev_body *p = rec->hook_data;
    if (p->ptr) {
        for (size_t i = 0; i < p->len; i++)
            if (p->ptr[i] != p->first) p->ok = 0;
        p->checked++;
    }
    p->ptr = data;
    p->len = len;
    p->first = len ? data[0] : 0;
    return rec->body_calls == 1 ? ASGI_PAUSE : 0;
}

static void test_paused_chunk_valid_after_cancelled_send(void **state)
{
    (void)state;
    prev_body p = {NULL, 0, 0, 1, 0};
    ah_rec rec;
    ah_rec_init(&rec);
    rec.body_hook = pause_first_check_previous;
    rec.hook_data = &p;
    th_req r;
    th_req_init(&r, "GET", "/");
    asgi_conn *conn = ah_dispatch(th_app(APPS "cancel_paused_send"), &r, &rec);
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_sane(&rec);
    assert_int_equal(rec.body_calls, 2);
    assert_int_equal(p.checked, 1);
    assert_true(p.ok);
    ah_rec_free(&rec);
}

static void test_free_while_app_runs(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    th_req_init(&r, "GET", target);
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "detached"), &r, &rec);
    ah_drive_until(ah_pred_started, &rec, AH_MAX_TURNS);
    assert_string_equal(rec.events, "S");
    asgi_conn_free(conn);
    rec.freed = 1;
    ah_drive_idle(); /* the detached task's timers run to the end */
    assert_int_equal(rec.after_free, 0);
    assert_int_equal(rec.done_calls, 0);
    assert_string_equal(rec.events, "S");
    assert_notes(key, "started\nsend OSError\nreceive http.disconnect\nfinished");
    ah_rec_free(&rec);

    /* Freed while the app awaits a streamed body. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    stream_req(&r, target, 100);
    ah_rec_init(&rec);
    conn = ah_dispatch(th_app(APPS "detached_receiving"), &r, &rec);
    assert_int_equal(ah_settle(), -1);
    asgi_conn_free(conn);
    rec.freed = 1;
    ah_drive_idle();
    assert_int_equal(rec.after_free, 0);
    assert_int_equal(rec.n_events, 0);
    assert_notes(key, "waiting\ngot http.disconnect keys=type\nfinished");
    ah_rec_free(&rec);

    /* Freed before the app ever ran (only possible when tasks start at the next turn). */
    ah_set_eager(0);
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req_init(&r, "GET", target);
    ah_rec_init(&rec);
    conn = ah_dispatch(th_app(APPS "detached"), &r, &rec);
    asgi_conn_free(conn);
    rec.freed = 1;
    ah_drive_idle();
    assert_int_equal(rec.n_events, 0);
    assert_notes(key, "start OSError\nsend OSError\nreceive http.disconnect\nfinished");
    ah_rec_free(&rec);

    asgi_conn_free(NULL);
}

/* ---- callbacks ------------------------------------------------------------------------------ */

/* Callbacks run on the loop thread without the GIL: a WSGI request completed on another thread
 * from inside on_start would deadlock otherwise. */
static int start_nested(ah_rec *rec, const wsgi_response_head *head)
{
    (void)head;
    th_nested *n = rec->hook_data;
    th_nested_request(n);
    return 0;
}

static void test_callbacks_run_without_gil(void **state)
{
    (void)state;
    th_app("la_simple"); /* cached for the nested thread */
    th_nested n = {.spec = "la_simple", .target = "/"};
    char key[32];
    ah_rec rec;
    ah_rec_init(&rec);
    rec.start_hook = start_nested;
    rec.hook_data = &n;
    run_script(new_key(key, sizeof key), 0, "[" START ", " BODY("b'x'") "]", &rec);
    ah_assert_ok(&rec, 200, "x");
    assert_int_equal(n.status, 200);
    assert_rc(n.final_rc, 0);
    assert_string_equal(n.body, "la_simple.application");
    ah_rec_free(&rec);
}

static void test_conn_error_clean(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(th_app(APPS "echo"), &r, &rec);
    ah_drive_done(&rec);
    assert_rc(asgi_conn_error(conn), 0);
    assert_string_equal(asgi_conn_errmsg(conn), "");
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, "");
    assert_true(asgi_conn_error(NULL) < 0);
    assert_non_null(asgi_conn_errmsg(NULL));
    assert_rc(asgi_conn_disconnect(NULL), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_resume(NULL), WSGI_ERR_INVAL);
    ah_rec_free(&rec);
    assert_int_equal(th_log_bad(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_buffered_body_is_one_event),
        ah_unit_test(test_no_body_is_one_empty_event),
        ah_unit_test(test_streamed_body_pieces),
        ah_unit_test(test_content_length_body_is_gathered_whole),
        ah_unit_test(test_gathered_body_limits),
        ah_unit_test(test_chunked_body_and_coalescing),
        ah_unit_test(test_receive_waits_until_disconnect),
        ah_unit_test(test_receive_disconnect_after_response),
        ah_unit_test(test_receive_from_several_tasks),
        ah_unit_test(test_client_closed_after_the_whole_response),
        ah_unit_test(test_feed_after_body_ended),
        ah_unit_test(test_feed_pause_and_read_resume),
        ah_unit_test(test_large_streamed_upload),
        ah_unit_test(test_pause_without_read_resume_callback),
        ah_unit_test(test_response_head),
        ah_unit_test(test_length_added),
        ah_unit_test(test_status_line_without_reason_keeps_its_space),
        ah_unit_test(test_streamed_response_body),
        ah_unit_test(test_trailers),
        ah_unit_test(test_trailers_order_enforced),
        ah_unit_test(test_pathsend),
        ah_unit_test(test_pathsend_errors),
        ah_unit_test(test_pathsend_to_a_fifo),
        ah_unit_test(test_invalid_events_are_catchable),
        ah_unit_test(test_invalid_events_uncaught),
        ah_unit_test(test_bodyless_responses_keep_their_content_length),
        ah_unit_test(test_app_raises_before_start),
        ah_unit_test(test_head_held_until_first_body),
        ah_unit_test(test_body_outlives_app_code),
        ah_unit_test(test_body_outlives_other_threads),
        ah_unit_test(test_app_returns_without_response),
        ah_unit_test(test_app_raises_after_start),
        ah_unit_test(test_non_awaitable_app),
        ah_unit_test(test_cancelled_task),
        ah_unit_test(test_task_cancelled_before_it_ran),
        ah_unit_test(test_cancel_a_waiting_task),
        ah_unit_test(test_base_exceptions_in_app),
        ah_unit_test(test_done_after_background_work),
        ah_unit_test(test_send_pause_holds_the_app),
        ah_unit_test(test_paused_send_and_disconnect),
        ah_unit_test(test_on_body_failure_disconnects),
        ah_unit_test(test_disconnect_while_streaming),
        ah_unit_test(test_disconnect_oserror_is_not_an_app_error),
        ah_unit_test(test_paused_chunk_valid_after_cancelled_send),
        ah_unit_test(test_free_while_app_runs),
        ah_unit_test(test_callbacks_run_without_gil),
        ah_unit_test(test_conn_error_clean),
    };
    return cmocka_run_group_tests_name("asgi_http", tests, th_group_setup, th_group_teardown);
}
