/*
 * harness.h - shared by every unit test binary: the one runtime of the process, a log recorder,
 * a request builder and a recording response handler.
 *
 * Header-only (static inline) so that each test area stays a single .c file and ctest entry.
 * Everything is prefixed th_ so that test code can tell harness from library at a glance.
 */
#ifndef LIBWSGI_TEST_HARNESS_H
#define LIBWSGI_TEST_HARNESS_H

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include <libwsgi/libwsgi.h>

#ifndef TEST_APPS_DIR
#error "TEST_APPS_DIR must be defined by the build (absolute path of tests/unit/apps)"
#endif

/* cmocka prints negative codes as huge unsigned numbers; this names them instead. */
#define assert_rc(actual, expected)                                                                \
    do {                                                                                           \
        int th_a_ = (actual), th_e_ = (expected);                                                  \
        if (th_a_ != th_e_) {                                                                      \
            print_error("%s returned %d (%s), expected %d (%s); wsgi_errmsg: \"%s\"\n", #actual,   \
                        th_a_, wsgi_strerror(th_a_), th_e_, wsgi_strerror(th_e_), wsgi_errmsg());  \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

#define assert_str_contains(haystack, needle)                                                      \
    do {                                                                                           \
        const char *th_h_ = (haystack), *th_n_ = (needle);                                         \
        if (th_h_ == NULL || strstr(th_h_, th_n_) == NULL) {                                       \
            print_error("\"%s\" does not contain \"%s\"\n", th_h_ ? th_h_ : "(null)", th_n_);      \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------------------------ */
/* Log recorder. The library may log from any thread, so every access takes the mutex.        */

typedef struct th_log_line {
    int level;
    char *msg;
} th_log_line;

static struct {
    pthread_mutex_t mu;
    th_log_line *lines;
    size_t n, cap;
    int bad; /* lines that broke the callback contract (len, NUL, level, user_data) */
} th_log = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0};

static inline void th_log_cb(void *user_data, int level, const char *msg, size_t len)
{
    pthread_mutex_lock(&th_log.mu);
    if (user_data != (void *)&th_log || msg == NULL || strlen(msg) != len ||
        (level != WSGI_LOG_ERROR && level != WSGI_LOG_WARNING && level != WSGI_LOG_INFO &&
         level != WSGI_LOG_DEBUG))
        th_log.bad++;
    if (th_log.n == th_log.cap) {
        size_t cap = th_log.cap ? th_log.cap * 2 : 256;
        th_log_line *p = realloc(th_log.lines, cap * sizeof *p);
        if (p == NULL) abort();
        th_log.lines = p;
        th_log.cap = cap;
    }
    th_log.lines[th_log.n].level = level;
    th_log.lines[th_log.n].msg = strdup(msg ? msg : "");
    th_log.n++;
    pthread_mutex_unlock(&th_log.mu);
}

/* Position to search from, so a test only looks at lines its own actions produced. */
static inline size_t th_log_mark(void)
{
    pthread_mutex_lock(&th_log.mu);
    size_t n = th_log.n;
    pthread_mutex_unlock(&th_log.mu);
    return n;
}

/* Number of lines since @from at @level (-1: any level) containing @needle (NULL: any text). */
static inline size_t th_log_count(size_t from, int level, const char *needle)
{
    size_t count = 0;
    pthread_mutex_lock(&th_log.mu);
    for (size_t i = from; i < th_log.n; i++) {
        if (level != -1 && th_log.lines[i].level != level) continue;
        if (needle != NULL && strstr(th_log.lines[i].msg, needle) == NULL) continue;
        count++;
    }
    pthread_mutex_unlock(&th_log.mu);
    return count;
}

static inline int th_log_bad(void)
{
    pthread_mutex_lock(&th_log.mu);
    int bad = th_log.bad;
    pthread_mutex_unlock(&th_log.mu);
    return bad;
}

static inline void th_log_dump(size_t from)
{
    pthread_mutex_lock(&th_log.mu);
    for (size_t i = from; i < th_log.n; i++)
        print_message("  log[%d] %s\n", th_log.lines[i].level, th_log.lines[i].msg);
    pthread_mutex_unlock(&th_log.mu);
}

static inline void th_log_free(void)
{
    pthread_mutex_lock(&th_log.mu);
    for (size_t i = 0; i < th_log.n; i++)
        free(th_log.lines[i].msg);
    free(th_log.lines);
    th_log.lines = NULL;
    th_log.n = th_log.cap = 0;
    pthread_mutex_unlock(&th_log.mu);
}

/* ------------------------------------------------------------------------------------------ */
/* The runtime. Python cannot be re-initialised reliably, so each binary creates exactly one   */
/* in its group setup and frees it in the group teardown.                                     */

static wsgi_runtime *th_rt;

static inline void th_runtime_options(wsgi_runtime_options *opts)
{
    static const char *const path[] = {TEST_APPS_DIR};
    wsgi_runtime_options_init(opts);
    opts->python_path = path;
    opts->n_python_path = 1;
    opts->log = th_log_cb;
    opts->log_user_data = &th_log;
    opts->log_level = WSGI_LOG_DEBUG;
}

static inline int th_runtime_start(const wsgi_runtime_options *opts)
{
    int rc = wsgi_runtime_new(opts, &th_rt);
    if (rc != WSGI_OK) {
        print_error("wsgi_runtime_new: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        th_log_dump(0);
        return -1;
    }
    return 0;
}

static inline int th_group_setup(void **state)
{
    (void)state;
    wsgi_runtime_options opts;
    th_runtime_options(&opts);
    return th_runtime_start(&opts);
}

/* Apps are loaded once and kept until the teardown; the table is shared by test threads. */
static struct {
    pthread_mutex_t mu;
    struct {
        char *spec; /* NULL for apps loaded with non-default options (never reused) */
        wsgi_app *app;
    } apps[128];
    size_t n;
} th_apps = {PTHREAD_MUTEX_INITIALIZER, {{NULL, NULL}}, 0};

static inline wsgi_app *th_app_register(const char *spec, wsgi_app *app)
{
    pthread_mutex_lock(&th_apps.mu);
    if (th_apps.n == sizeof th_apps.apps / sizeof th_apps.apps[0]) abort();
    th_apps.apps[th_apps.n].spec = spec ? strdup(spec) : NULL;
    th_apps.apps[th_apps.n].app = app;
    th_apps.n++;
    pthread_mutex_unlock(&th_apps.mu);
    return app;
}

/* Loads an app with non-default options; it is freed by the teardown. */
static inline wsgi_app *th_app_with(const wsgi_app_options *opts)
{
    wsgi_app *app = NULL;
    int rc = wsgi_app_new(th_rt, opts, &app);
    if (rc != WSGI_OK) {
        print_error("wsgi_app_new(\"%s\"): %s: %s\n", opts->spec, wsgi_strerror(rc), wsgi_errmsg());
        fail();
    }
    assert_non_null(app);
    return th_app_register(NULL, app);
}

/* Loads (or reuses) the app @spec with default options. */
static inline wsgi_app *th_app(const char *spec)
{
    pthread_mutex_lock(&th_apps.mu);
    for (size_t i = 0; i < th_apps.n; i++) {
        if (th_apps.apps[i].spec && strcmp(th_apps.apps[i].spec, spec) == 0) {
            wsgi_app *app = th_apps.apps[i].app;
            pthread_mutex_unlock(&th_apps.mu);
            return app;
        }
    }
    pthread_mutex_unlock(&th_apps.mu);
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = spec;
    wsgi_app *app = NULL;
    int rc = wsgi_app_new(th_rt, &opts, &app);
    if (rc != WSGI_OK) {
        print_error("wsgi_app_new(\"%s\"): %s: %s\n", spec, wsgi_strerror(rc), wsgi_errmsg());
        fail();
    }
    assert_non_null(app);
    return th_app_register(spec, app);
}

static inline int th_group_teardown(void **state)
{
    (void)state;
    pthread_mutex_lock(&th_apps.mu);
    for (size_t i = 0; i < th_apps.n; i++) {
        wsgi_app_free(th_apps.apps[i].app);
        free(th_apps.apps[i].spec);
    }
    th_apps.n = 0;
    pthread_mutex_unlock(&th_apps.mu);
    wsgi_runtime_free(th_rt);
    th_rt = NULL;
    th_log_free();
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Requests. A th_req owns the arrays its wsgi_request points into: never copy one by value.   */

#define TH_MAX_REQ_HEADERS 32

typedef struct th_req {
    wsgi_request req;
    wsgi_header headers[TH_MAX_REQ_HEADERS];
    wsgi_header extra[TH_MAX_REQ_HEADERS];
    char content_length[32];
} th_req;

static inline void th_req_init(th_req *r, const char *method, const char *target)
{
    memset(r, 0, sizeof *r);
    wsgi_request_init(&r->req);
    r->req.method = method;
    r->req.method_len = strlen(method);
    r->req.target = target;
    r->req.target_len = strlen(target);
    r->req.http_major = 1;
    r->req.http_minor = 1;
    r->req.headers = r->headers;
    r->req.extra_environ = r->extra;
}

static inline void th_req_header_n(th_req *r, const char *name, const char *value, size_t value_len)
{
    assert_true(r->req.n_headers < TH_MAX_REQ_HEADERS);
    wsgi_header *h = &r->headers[r->req.n_headers++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = value_len;
}

static inline void th_req_header(th_req *r, const char *name, const char *value)
{
    th_req_header_n(r, name, value, strlen(value));
}

static inline void th_req_extra(th_req *r, const char *name, const char *value)
{
    assert_true(r->req.n_extra_environ < TH_MAX_REQ_HEADERS);
    wsgi_header *h = &r->extra[r->req.n_extra_environ++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

/* A fully buffered body with its Content-Length header, as a host would pass it. */
static inline void th_req_body(th_req *r, const char *body, size_t len)
{
    r->req.body = body;
    r->req.body_len = len;
    r->req.content_length = (int64_t)len;
    snprintf(r->content_length, sizeof r->content_length, "%zu", len);
    th_req_header(r, "Content-Length", r->content_length);
}

/* ------------------------------------------------------------------------------------------ */
/* Recording response handler.                                                                */

#define TH_MAX_RESP_HEADERS 256
#define TH_MAX_SENDFILE     64

typedef struct th_rec th_rec;
struct th_rec {
    /* Behaviour, set by the test before the call. */
    int with_sendfile; /* offer on_sendfile */
    int fail_start;    /* on_start returns -1 */
    int fail_body_at;  /* the n-th on_body (1-based) returns -1; 0: never */
    int fail_sendfile; /* on_sendfile returns -1 */
    int (*start_hook)(th_rec *, const wsgi_response_head *); /* its result is returned */
    int (*body_hook)(th_rec *, const char *, size_t);        /* its result is returned */
    void *hook_data;
    wsgi_response *resp; /* the response being received, for hooks */

    /* What the host saw. */
    int starts;
    int status;
    char status_line[512];
    size_t status_line_len;
    struct {
        char *name, *value; /* NUL-terminated copies */
        size_t name_len, value_len;
    } headers[TH_MAX_RESP_HEADERS];
    size_t n_headers;
    int64_t head_content_length;
    char *body; /* NUL-terminated; includes bytes delivered through on_sendfile */
    size_t body_len, body_cap;
    int body_calls;
    int empty_body_calls;
    int body_before_start;
    size_t max_chunk;
    const char *last_data; /* borrowed pointer of the last on_body, to check its lifetime */
    size_t last_len;
    int sendfile_calls;
    int sendfile_bad; /* bad fd, non-regular file, count <= 0, or the range could not be read */
    int sf_fd[TH_MAX_SENDFILE];
    int64_t sf_offset[TH_MAX_SENDFILE], sf_count[TH_MAX_SENDFILE];
};

static inline void th_rec_init(th_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->head_content_length = -2; /* "on_start never called" */
    rec->body = calloc(1, 64);     /* never NULL, always NUL-terminated */
    if (rec->body == NULL) abort();
    rec->body_cap = 64;
}

static inline void th_rec_free(th_rec *rec)
{
    for (size_t i = 0; i < rec->n_headers; i++) {
        free(rec->headers[i].name);
        free(rec->headers[i].value);
    }
    free(rec->body);
    rec->body = NULL;
    rec->n_headers = 0;
}

static inline void th_rec_append(th_rec *rec, const char *data, size_t len)
{
    if (rec->body_len + len + 1 > rec->body_cap) {
        size_t cap = rec->body_cap ? rec->body_cap : 4096;
        while (cap < rec->body_len + len + 1)
            cap *= 2;
        char *p = realloc(rec->body, cap);
        if (p == NULL) abort();
        rec->body = p;
        rec->body_cap = cap;
    }
    memcpy(rec->body + rec->body_len, data, len);
    rec->body_len += len;
    rec->body[rec->body_len] = '\0';
}

static inline char *th_memdup0(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL) abort();
    if (len) memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

static inline int th_on_start(void *user_data, const wsgi_response_head *head)
{
    th_rec *rec = user_data;
    rec->starts++;
    rec->status = head->status;
    rec->status_line_len = head->status_line_len;
    if (head->status_line_len < sizeof rec->status_line) {
        memcpy(rec->status_line, head->status_line, head->status_line_len);
        rec->status_line[head->status_line_len] = '\0';
    }
    for (size_t i = 0; i < rec->n_headers; i++) {
        free(rec->headers[i].name);
        free(rec->headers[i].value);
    }
    rec->n_headers = 0;
    for (size_t i = 0; i < head->n_headers && i < TH_MAX_RESP_HEADERS; i++) {
        rec->headers[i].name = th_memdup0(head->headers[i].name, head->headers[i].name_len);
        rec->headers[i].name_len = head->headers[i].name_len;
        rec->headers[i].value = th_memdup0(head->headers[i].value, head->headers[i].value_len);
        rec->headers[i].value_len = head->headers[i].value_len;
        rec->n_headers++;
    }
    rec->head_content_length = head->content_length;
    if (rec->start_hook) return rec->start_hook(rec, head);
    return rec->fail_start ? -1 : 0;
}

static inline int th_on_body(void *user_data, const char *data, size_t len)
{
    th_rec *rec = user_data;
    rec->body_calls++;
    if (len == 0) rec->empty_body_calls++;
    if (rec->starts == 0) rec->body_before_start++;
    if (len > rec->max_chunk) rec->max_chunk = len;
    rec->last_data = data;
    rec->last_len = len;
    th_rec_append(rec, data, len);
    if (rec->body_hook) return rec->body_hook(rec, data, len);
    return rec->fail_body_at == rec->body_calls ? -1 : 0;
}

static inline int th_on_sendfile(void *user_data, int fd, int64_t offset, int64_t count)
{
    th_rec *rec = user_data;
    if (rec->sendfile_calls < TH_MAX_SENDFILE) {
        rec->sf_fd[rec->sendfile_calls] = fd;
        rec->sf_offset[rec->sendfile_calls] = offset;
        rec->sf_count[rec->sendfile_calls] = count;
    }
    rec->sendfile_calls++;
    if (rec->starts == 0) rec->body_before_start++;
    struct stat st;
    if (fd < 0 || offset < 0 || count <= 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rec->sendfile_bad++;
        return rec->fail_sendfile ? -1 : 0;
    }
    /* Read the range the way sendfile(2) would, so the body can be compared with the file. */
    char buf[65536];
    int64_t done = 0;
    while (done < count) {
        size_t want = (size_t)(count - done) < sizeof buf ? (size_t)(count - done) : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
        if (n <= 0) {
            rec->sendfile_bad++;
            break;
        }
        th_rec_append(rec, buf, (size_t)n);
        done += n;
    }
    return rec->fail_sendfile ? -1 : 0;
}

static inline wsgi_response_handler th_handler(const th_rec *rec)
{
    wsgi_response_handler h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    h.on_start = th_on_start;
    h.on_body = th_on_body;
    h.on_sendfile = rec->with_sendfile ? th_on_sendfile : NULL;
    return h;
}

/* The value of the first response header named @name (case-insensitive), or NULL. */
static inline const char *th_rec_header(const th_rec *rec, const char *name)
{
    for (size_t i = 0; i < rec->n_headers; i++)
        if (strcasecmp(rec->headers[i].name, name) == 0) return rec->headers[i].value;
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Running a request end to end.                                                              */

typedef struct th_result {
    int build_rc;
    int call_rc;
    int final_rc;          /* the first wsgi_iter_next result that was not 1 */
    int again_rc;          /* one more wsgi_iter_next after final_rc */
    int iter_calls;        /* wsgi_iter_next calls up to and including final_rc */
    int starts_after_call; /* on_start calls that happened inside wsgi_call (write()) */
    size_t body_after_call;
    int started_after_call; /* wsgi_response_started() right after wsgi_call */
    int resp_error;
    char resp_errmsg[4096];
} th_result;

/* Bound on wsgi_iter_next calls, so that a library that never ends fails instead of hanging. */
#define TH_MAX_ITER 4000000

/* wsgi_call + iterate to the end + wsgi_response_free. @env is consumed. */
static inline void th_call_drain(wsgi_env *env, th_rec *rec, th_result *res)
{
    wsgi_response_handler h = th_handler(rec);
    wsgi_response *resp = NULL;
    res->call_rc = wsgi_call(env, &h, rec, &resp);
    if (res->call_rc != WSGI_OK) return;
    rec->resp = resp;
    res->starts_after_call = rec->starts;
    res->body_after_call = rec->body_len;
    res->started_after_call = wsgi_response_started(resp);
    int rc, n = 0;
    do {
        rc = wsgi_iter_next(resp);
        n++;
    } while (rc == 1 && n < TH_MAX_ITER);
    res->final_rc = rc;
    res->iter_calls = n;
    res->again_rc = wsgi_iter_next(resp);
    res->resp_error = wsgi_response_error(resp);
    const char *msg = wsgi_response_errmsg(resp);
    snprintf(res->resp_errmsg, sizeof res->resp_errmsg, "%s", msg ? msg : "(null)");
    wsgi_response_free(resp);
    rec->resp = NULL;
}

static inline void th_run(wsgi_app *app, th_req *r, th_rec *rec, th_result *res)
{
    memset(res, 0, sizeof *res);
    res->call_rc = res->final_rc = res->again_rc = 99;
    wsgi_env *env = NULL;
    res->build_rc = wsgi_env_build(app, &r->req, &env);
    if (res->build_rc != WSGI_OK) {
        print_error("wsgi_env_build: %s: %s\n", wsgi_strerror(res->build_rc), wsgi_errmsg());
        return;
    }
    th_call_drain(env, rec, res);
}

/* GET @target on the app @spec; the request must build and call. */
static inline void th_get(const char *spec, const char *target, th_rec *rec, th_result *res)
{
    th_req r;
    th_req_init(&r, "GET", target);
    th_run(th_app(spec), &r, rec, res);
    assert_rc(res->build_rc, WSGI_OK);
    assert_rc(res->call_rc, WSGI_OK);
}

/* Invariants every received response must satisfy, whatever the app did. */
static inline void th_assert_well_formed(const th_rec *rec)
{
    assert_int_equal(rec->starts, 1);
    assert_int_equal(rec->empty_body_calls, 0);
    assert_int_equal(rec->body_before_start, 0);
    assert_int_equal(rec->sendfile_bad, 0);
}

/* A complete, successful response. */
static inline void th_assert_ok(const th_rec *rec, const th_result *res, int status,
                                const char *body)
{
    if (res->final_rc != 0 || res->resp_error != 0) {
        print_error("final_rc=%d (%s) resp_error=%d (%s) errmsg=\"%s\"\n", res->final_rc,
                    wsgi_strerror(res->final_rc), res->resp_error, wsgi_strerror(res->resp_error),
                    res->resp_errmsg);
        th_log_dump(0);
    }
    assert_rc(res->final_rc, 0);
    assert_rc(res->again_rc, 0);
    assert_rc(res->resp_error, 0);
    th_assert_well_formed(rec);
    assert_int_equal(rec->status, status);
    if (body != NULL) {
        assert_non_null(rec->body);
        assert_int_equal(rec->body_len, strlen(body));
        assert_string_equal(rec->body, body);
    }
}

/* The 500 the library synthesizes when the app failed before anything was sent. */
static inline void th_assert_500(const th_rec *rec, const th_result *res, int expected_error)
{
    assert_rc(res->final_rc, 0);
    assert_rc(res->resp_error, expected_error);
    assert_true(res->resp_errmsg[0] != '\0');
    th_assert_well_formed(rec);
    assert_int_equal(rec->status, 500);
    assert_true(strncmp(rec->status_line, "500", 3) == 0);
    assert_non_null(th_rec_header(rec, "Content-Type"));
    const char *cl = th_rec_header(rec, "Content-Length");
    assert_non_null(cl);
    assert_true(rec->body_len > 0);
    assert_int_equal(strtoull(cl, NULL, 10), rec->body_len);
    assert_true(rec->head_content_length == -1 ||
                rec->head_content_length == (int64_t)rec->body_len);
}

/* ------------------------------------------------------------------------------------------ */
/* Threads.                                                                                   */

static inline void th_run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
}

/* A complete GET on a fresh pthread while the caller waits. Used inside host callbacks: if the
 * library held the GIL while calling back, this would never return (the test then times out). */
typedef struct th_nested {
    const char *spec;
    const char *target;
    int status;
    int final_rc;
    char body[256];
} th_nested;

static inline void *th_nested_thread(void *arg)
{
    th_nested *n = arg;
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    wsgi_app *app = NULL;
    /* The app is looked up in the cache only; loading from a callback is not what is tested. */
    pthread_mutex_lock(&th_apps.mu);
    for (size_t i = 0; i < th_apps.n; i++)
        if (th_apps.apps[i].spec && strcmp(th_apps.apps[i].spec, n->spec) == 0)
            app = th_apps.apps[i].app;
    pthread_mutex_unlock(&th_apps.mu);
    n->status = -1;
    n->final_rc = 99;
    if (app == NULL) return NULL;
    th_req r;
    memset(&r, 0, sizeof r);
    wsgi_request_init(&r.req);
    r.req.method = "GET";
    r.req.method_len = 3;
    r.req.target = n->target;
    r.req.target_len = strlen(n->target);
    r.req.http_major = r.req.http_minor = 1;
    th_rec rec;
    th_rec_init(&rec);
    wsgi_env *env = NULL;
    if (wsgi_env_build(app, &r.req, &env) != WSGI_OK) return NULL;
    wsgi_response_handler h = th_handler(&rec);
    wsgi_response *resp = NULL;
    if (wsgi_call(env, &h, &rec, &resp) != WSGI_OK) return NULL;
    int rc;
    while ((rc = wsgi_iter_next(resp)) == 1)
        ;
    wsgi_response_free(resp);
    n->final_rc = rc;
    n->status = rec.status;
    snprintf(n->body, sizeof n->body, "%s", rec.body ? rec.body : "");
    th_rec_free(&rec);
    return NULL;
}

static inline void th_nested_request(th_nested *n)
{
    pthread_t t;
    if (pthread_create(&t, NULL, th_nested_thread, n) == 0) pthread_join(t, NULL);
}

#endif /* LIBWSGI_TEST_HARNESS_H */
