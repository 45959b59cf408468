/*
 * asgi_harness.h - shared by the ASGI unit test binaries: a recording asgi_handler, a loop driver
 * that waits only through poll() on asgi_loop_fd() with asgi_loop_timeout() (never sleeps), and
 * helpers to run a request end to end and to read notes an app left in its module.
 *
 * Everything is prefixed ah_ (harness.h's helpers are th_). The main thread is the loop thread:
 * every binary makes its first asgi_* call from it.
 */
#ifndef LIBWSGI_TEST_ASGI_HARNESS_H
#define LIBWSGI_TEST_ASGI_HARNESS_H

#include <fcntl.h>
#include <poll.h>

#include "harness.h"

/* A turn bound so that a library that never finishes fails instead of hanging. */
#define AH_MAX_TURNS 10000
/* How long the driver waits on the loop fd when asgi_loop_timeout() says "nothing scheduled"
 * before declaring the loop stalled. Only a guard against hangs: a correct library always
 * produces an fd event or a timer before this. */
#define AH_STALL_MS 20000

#define AH_MAX_EVENTS  4096
#define AH_MAX_HEADERS 64

typedef struct ah_hdr {
    char *name, *value; /* NUL-terminated copies */
    size_t name_len, value_len;
} ah_hdr;

typedef struct ah_rec ah_rec;
struct ah_rec {
    /* Behaviour, set by the test before asgi_dispatch. */
    int with_trailers;    /* offer on_trailers */
    int with_sendfile;    /* offer on_sendfile */
    int with_read_resume; /* offer on_read_resume */
    int start_rc;         /* on_start returns this (0, ASGI_PAUSE or negative) */
    int pause_body_at;    /* the n-th on_body (1-based) returns ASGI_PAUSE; 0: never */
    int fail_body_at;     /* the n-th on_body (1-based) returns -1; 0: never */
    int (*start_hook)(ah_rec *, const wsgi_response_head *); /* called, result ignored */
    int (*body_hook)(ah_rec *, const char *, size_t, int);   /* its result is returned */
    void (*done_hook)(ah_rec *, int);
    void *hook_data;
    int freed; /* set by the test once it called asgi_conn_free: later callbacks are counted */

    /* What the host saw. */
    char events[AH_MAX_EVENTS + 1]; /* S start, B body more=1, b final body, T trailers more=1,
                                       t final trailers, F sendfile, R read resume, D done */
    size_t n_events;
    int events_overflow;
    int starts;
    int status;
    char status_line[256];
    size_t status_line_len;
    ah_hdr headers[AH_MAX_HEADERS];
    size_t n_headers;
    int64_t head_content_length;
    unsigned head_flags;
    char *body; /* NUL-terminated; includes bytes read from on_sendfile's fd */
    size_t body_len, body_cap;
    int body_calls;
    int empty_more_bodies;  /* on_body(len 0, more 1): the header forbids it */
    int bodies_after_final; /* on_body/on_sendfile after the body ended */
    int body_ended;
    int body_before_start;
    int trailers_calls;
    ah_hdr trailers[AH_MAX_HEADERS];
    size_t n_trailers;
    int sendfile_calls;
    int sf_fd;
    int64_t sf_offset, sf_count;
    int sendfile_bad; /* not a regular file, bad range, or unreadable */
    int read_resumes;
    int done_calls;
    int done_result;
    int after_free;   /* callbacks after asgi_conn_free: must stay 0 */
    int wrong_thread; /* callbacks that did not run on the loop thread */
    pthread_t loop_thread;
};

static inline void ah_rec_init(ah_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->head_content_length = -2; /* "on_start never called" */
    rec->done_result = 99;         /* "on_done never called" */
    rec->sf_fd = -1;
    rec->body = calloc(1, 64);
    if (rec->body == NULL) abort();
    rec->body_cap = 64;
    rec->loop_thread = pthread_self();
}

static inline void ah_hdrs_free(ah_hdr *h, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    *n = 0;
}

static inline void ah_rec_free(ah_rec *rec)
{
    ah_hdrs_free(rec->headers, &rec->n_headers);
    ah_hdrs_free(rec->trailers, &rec->n_trailers);
    free(rec->body);
    rec->body = NULL;
}

static inline void ah_rec_event(ah_rec *rec, char ev)
{
    if (rec->freed) rec->after_free++;
    if (!pthread_equal(rec->loop_thread, pthread_self())) rec->wrong_thread++;
    if (rec->n_events < AH_MAX_EVENTS) {
        rec->events[rec->n_events++] = ev;
        rec->events[rec->n_events] = '\0';
    } else {
        rec->events_overflow = 1;
    }
}

static inline void ah_rec_append(ah_rec *rec, const char *data, size_t len)
{
    if (rec->body_len + len + 1 > rec->body_cap) {
        size_t cap = rec->body_cap;
        while (cap < rec->body_len + len + 1)
            cap *= 2;
        char *p = realloc(rec->body, cap);
        if (p == NULL) abort();
        rec->body = p;
        rec->body_cap = cap;
    }
    if (len) memcpy(rec->body + rec->body_len, data, len);
    rec->body_len += len;
    rec->body[rec->body_len] = '\0';
}

static inline void ah_copy_headers(ah_hdr *dst, size_t *n, const wsgi_header *src, size_t count)
{
    ah_hdrs_free(dst, n);
    for (size_t i = 0; i < count && i < AH_MAX_HEADERS; i++) {
        dst[i].name = th_memdup0(src[i].name, src[i].name_len);
        dst[i].name_len = src[i].name_len;
        dst[i].value = th_memdup0(src[i].value, src[i].value_len);
        dst[i].value_len = src[i].value_len;
        (*n)++;
    }
}

static inline int ah_on_start(void *user_data, const wsgi_response_head *head)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, 'S');
    rec->starts++;
    rec->status = head->status;
    rec->status_line_len = head->status_line_len;
    snprintf(rec->status_line, sizeof rec->status_line, "%.*s", (int)head->status_line_len,
             head->status_line);
    ah_copy_headers(rec->headers, &rec->n_headers, head->headers, head->n_headers);
    rec->head_content_length = head->content_length;
    rec->head_flags = head->flags;
    if (rec->start_hook) rec->start_hook(rec, head);
    return rec->start_rc;
}

static inline int ah_on_body(void *user_data, const char *data, size_t len, int more)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, more ? 'B' : 'b');
    if (rec->starts == 0) rec->body_before_start++;
    if (len == 0 && more) rec->empty_more_bodies++;
    if (rec->body_ended) rec->bodies_after_final++;
    if (!more) rec->body_ended = 1;
    rec->body_calls++;
    ah_rec_append(rec, data, len);
    if (rec->body_hook) return rec->body_hook(rec, data, len, more);
    if (rec->fail_body_at == rec->body_calls) return -1;
    if (rec->pause_body_at == rec->body_calls) return ASGI_PAUSE;
    return 0;
}

static inline int ah_on_trailers(void *user_data, const wsgi_header *headers, size_t n, int more)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, more ? 'T' : 't');
    rec->trailers_calls++;
    /* Accumulate across calls (more_trailers), so keep what came before. */
    for (size_t i = 0; i < n && rec->n_trailers < AH_MAX_HEADERS; i++) {
        ah_hdr *h = &rec->trailers[rec->n_trailers++];
        h->name = th_memdup0(headers[i].name, headers[i].name_len);
        h->name_len = headers[i].name_len;
        h->value = th_memdup0(headers[i].value, headers[i].value_len);
        h->value_len = headers[i].value_len;
    }
    return 0;
}

static inline int ah_on_sendfile(void *user_data, int fd, int64_t offset, int64_t count)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, 'F');
    if (rec->starts == 0) rec->body_before_start++;
    if (rec->body_ended) rec->bodies_after_final++;
    rec->body_ended = 1; /* pathsend ends the body */
    rec->sendfile_calls++;
    rec->sf_fd = fd;
    rec->sf_offset = offset;
    rec->sf_count = count;
    struct stat st;
    if (fd < 0 || offset < 0 || count < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        offset + count > st.st_size) {
        rec->sendfile_bad++;
        return 0;
    }
    char buf[65536];
    int64_t done = 0;
    while (done < count) {
        size_t want = (size_t)(count - done) < sizeof buf ? (size_t)(count - done) : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
        if (n <= 0) {
            rec->sendfile_bad++;
            break;
        }
        ah_rec_append(rec, buf, (size_t)n);
        done += n;
    }
    return 0;
}

static inline void ah_on_read_resume(void *user_data)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, 'R');
    rec->read_resumes++;
}

static inline void ah_on_done(void *user_data, int result)
{
    ah_rec *rec = user_data;
    ah_rec_event(rec, 'D');
    rec->done_calls++;
    rec->done_result = result;
    if (rec->done_hook) rec->done_hook(rec, result);
}

static inline asgi_handler ah_handler(const ah_rec *rec)
{
    asgi_handler h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    h.on_start = ah_on_start;
    h.on_body = ah_on_body;
    h.on_trailers = rec->with_trailers ? ah_on_trailers : NULL;
    h.on_sendfile = rec->with_sendfile ? ah_on_sendfile : NULL;
    h.on_read_resume = rec->with_read_resume ? ah_on_read_resume : NULL;
    h.on_done = ah_on_done;
    return h;
}

static inline const char *ah_rec_header(const ah_rec *rec, const char *name)
{
    for (size_t i = 0; i < rec->n_headers; i++)
        if (strcasecmp(rec->headers[i].name, name) == 0) return rec->headers[i].value;
    return NULL;
}

/* Dispatches @req to @app with @rec's handler; the connection must be created. */
static inline asgi_conn *ah_dispatch(wsgi_app *app, const th_req *r, ah_rec *rec)
{
    asgi_handler h = ah_handler(rec);
    asgi_conn *conn = NULL;
    int rc = asgi_dispatch(app, &r->req, &h, rec, &conn);
    assert_rc(rc, WSGI_OK);
    assert_non_null(conn);
    return conn;
}

/* ------------------------------------------------------------------------------------------ */
/* Start mode. Every ASGI binary runs twice under ctest: as is (tasks start at the next loop   */
/* turn) and with LIBWSGI_TEST_ASGI_EAGER=1 (asgi_loop_set_eager: the app's first step runs    */
/* inside asgi_dispatch). ah_test_setup, every test's setup, applies the binary's mode; a test  */
/* about one mode only switches with ah_set_eager() (the next test's setup switches back).     */

static inline int ah_env_eager(void)
{
    const char *e = getenv("LIBWSGI_TEST_ASGI_EAGER");
    return e != NULL && e[0] == '1';
}

static inline void ah_set_eager(int eager)
{
    assert_rc(asgi_loop_set_eager(th_rt, eager), WSGI_OK);
}

/* Per-test setup (creates the loop, on the main thread: the loop thread). */
static inline int ah_test_setup(void **state)
{
    (void)state;
    int eager = ah_env_eager();
    int rc = asgi_loop_set_eager(th_rt, eager);
    if (rc != WSGI_OK) {
        print_error("asgi_loop_set_eager(%d): %s: %s\n", eager, wsgi_strerror(rc), wsgi_errmsg());
        return -1;
    }
    return 0;
}

#define ah_unit_test(f) cmocka_unit_test_setup(f, ah_test_setup)

/* ------------------------------------------------------------------------------------------ */
/* Driving the loop like a host: poll(loop fd, asgi_loop_timeout()), then one asgi_loop_run.   */

static inline int ah_fd_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    return n > 0;
}

/* One host iteration: wait for the fd or the timeout, then run a turn. Returns 0, or -1 if
 * the loop reported nothing scheduled and its fd stayed quiet for AH_STALL_MS (a stall). */
static inline int ah_turn(void)
{
    int fd = asgi_loop_fd(th_rt);
    assert_true(fd >= 0);
    int t = asgi_loop_timeout(th_rt);
    if (t < -1) {
        print_error("asgi_loop_timeout returned %d (%s): %s\n", t, wsgi_strerror(t), wsgi_errmsg());
        fail();
    }
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    do {
        n = poll(&p, 1, t < 0 ? AH_STALL_MS : t);
    } while (n < 0 && errno == EINTR);
    assert_true(n >= 0);
    if (n == 0 && t < 0) return -1;
    assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    return 0;
}

/* Drives until @pred(@arg) is true; returns the number of turns it took. Fails the test on a
 * stall or after @max_turns. */
static inline int ah_drive_until(int (*pred)(void *), void *arg, int max_turns)
{
    for (int turns = 0;; turns++) {
        if (pred(arg)) return turns;
        if (turns >= max_turns) {
            print_error("condition not reached after %d loop turns\n", turns);
            fail();
        }
        if (ah_turn() < 0) {
            print_error("loop stalled: asgi_loop_timeout() == -1 and the loop fd stayed quiet "
                        "while the condition was not met (after %d turns)\n",
                        turns);
            fail();
        }
    }
}

static inline int ah_pred_done(void *arg)
{
    return ((ah_rec *)arg)->done_calls > 0;
}

static inline int ah_pred_started(void *arg)
{
    return ((ah_rec *)arg)->starts > 0 || ((ah_rec *)arg)->done_calls > 0;
}

/* Drives until on_done fired. Returns the number of turns. */
static inline int ah_drive_done(ah_rec *rec)
{
    int turns = ah_drive_until(ah_pred_done, rec, AH_MAX_TURNS);
    if (rec->done_calls != 1) print_error("on_done called %d times\n", rec->done_calls);
    assert_int_equal(rec->done_calls, 1);
    return turns;
}

/* Runs turns while work is ready now (timeout 0 or fd readable); returns the loop timeout left
 * once the app(s) are blocked: -1 (nothing scheduled) or the delay to the next timer. */
static inline int ah_settle(void)
{
    int fd = asgi_loop_fd(th_rt);
    for (int i = 0; i < AH_MAX_TURNS; i++) {
        int t = asgi_loop_timeout(th_rt);
        assert_true(t >= -1);
        if (t != 0 && !ah_fd_readable(fd)) return t;
        assert_rc(asgi_loop_run(th_rt), WSGI_OK);
    }
    print_error("the loop always has ready work (spinning)\n");
    fail();
    return 0;
}

/* Drives (timers included) until nothing at all is scheduled and the fd is quiet. */
static inline void ah_drive_idle(void)
{
    for (int i = 0; i < 2000; i++) {
        if (ah_settle() == -1) return;
        assert_int_equal(ah_turn(), 0);
    }
    print_error("the loop never became idle\n");
    fail();
}

/* ------------------------------------------------------------------------------------------ */
/* Requests end to end.                                                                       */

/* Dispatch + drive to on_done + free. */
static inline void ah_run(wsgi_app *app, const th_req *r, ah_rec *rec)
{
    asgi_conn *conn = ah_dispatch(app, r, rec);
    ah_drive_done(rec);
    asgi_conn_free(conn);
}

static inline void ah_get(const char *spec, const char *target, ah_rec *rec)
{
    th_req r;
    th_req_init(&r, "GET", target);
    ah_run(th_app(spec), &r, rec);
}

/* Invariants every delivered response satisfies, whatever the app did. */
static inline void ah_assert_sane(const ah_rec *rec)
{
    assert_int_equal(rec->events_overflow, 0);
    assert_int_equal(rec->empty_more_bodies, 0);
    assert_int_equal(rec->bodies_after_final, 0);
    assert_int_equal(rec->body_before_start, 0);
    assert_int_equal(rec->sendfile_bad, 0);
    assert_int_equal(rec->after_free, 0);
    assert_int_equal(rec->wrong_thread, 0);
    assert_true(rec->starts <= 1);
    assert_true(rec->done_calls <= 1);
    if (rec->done_calls) assert_int_equal(rec->events[rec->n_events - 1], 'D');
}

static inline void ah_assert_ok(const ah_rec *rec, int status, const char *body)
{
    if (rec->done_result != 0) {
        print_error("on_done(%d) (%s), events \"%s\"\n", rec->done_result,
                    wsgi_strerror(rec->done_result), rec->events);
        th_log_dump(0);
    }
    ah_assert_sane(rec);
    assert_int_equal(rec->done_calls, 1);
    assert_rc(rec->done_result, 0);
    assert_int_equal(rec->starts, 1);
    assert_int_equal(rec->status, status);
    if (body != NULL) {
        if (rec->body_len != strlen(body) || strcmp(rec->body, body) != 0)
            print_error("body \"%s\" (%zu bytes), expected \"%s\"\n", rec->body, rec->body_len,
                        body);
        assert_int_equal(rec->body_len, strlen(body));
        assert_string_equal(rec->body, body);
    }
}

/* The 500 the library delivers when the app failed before sending anything. */
static inline void ah_assert_500(const ah_rec *rec, int expected_result)
{
    ah_assert_sane(rec);
    if (strcmp(rec->events, "SbD") != 0) print_error("events \"%s\"\n", rec->events);
    assert_string_equal(rec->events, "SbD");
    assert_int_equal(rec->status, 500);
    assert_string_equal(rec->status_line, "500 Internal Server Error");
    assert_non_null(ah_rec_header(rec, "Content-Type"));
    const char *cl = ah_rec_header(rec, "Content-Length");
    assert_non_null(cl);
    assert_true(rec->body_len > 0);
    assert_int_equal(strtoull(cl, NULL, 10), rec->body_len);
    assert_int_equal(rec->head_content_length, (int64_t)rec->body_len);
    assert_rc(rec->done_result, expected_result);
}

/* The body of GET @target on the app @spec (expected 200), copied into @out. */
static inline void ah_get_body(const char *spec, const char *target, char *out, size_t cap)
{
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(spec, target, &rec);
    ah_assert_ok(&rec, 200, NULL);
    snprintf(out, cap, "%s", rec.body);
    ah_rec_free(&rec);
}

/* Adler-32 (as zlib.adler32), to compare large bodies with what an app saw. */
static inline uint32_t ah_adler32(uint32_t adler, const unsigned char *p, size_t n)
{
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n) {
        size_t k = n < 5552 ? n : 5552;
        n -= k;
        while (k--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return (b << 16) | a;
}

#endif /* LIBWSGI_TEST_ASGI_HARNESS_H */
