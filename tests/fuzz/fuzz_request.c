/* libFuzzer target: a wsgi_request with arbitrary bytes in every field, through wsgi_env_build(),
 * wsgi_env_set() and wsgi_call() (the environ dict), asgi_dispatch() (the http scope) and
 * asgi_websocket_dispatch() (the websocket scope). Python starts once, in LLVMFuzzerInitialize;
 * the apps (apps/fuzz_apps.py) check the environ / scope they get and answer "ok" or
 * "bad: <what>". Aborts (a crash for libFuzzer) when a call the request was valid for fails, when
 * an app answers anything but "ok", or when a response or connection does not end.
 *
 * Input layout (fuzz_input.h readers; missing bytes read as 0): two flag bytes, the HTTP version,
 * ports, request flags and content length, then length-prefixed method, target, scheme, server
 * name, client address, headers, extra environ keys and wsgi_env_set() pairs; the rest is the
 * body. Every field is copied into a buffer of its own exact size, so that AddressSanitizer sees a
 * read past any one of them. */
#include "fuzz_input.h"

#include <libwsgi/libwsgi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_APPS_DIR
#error "FUZZ_APPS_DIR must be defined by the build (absolute path of tests/fuzz/apps)"
#endif

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_request: check failed: %s (line %d)\n", #cond, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_HEADERS 48
#define MAX_EXTRA   6
#define MAX_SETS    4
#define MAX_TURNS   200
#define MAX_ALLOCS  (8 + 2 * (MAX_HEADERS + MAX_EXTRA + MAX_SETS))

static wsgi_runtime *rt;
static wsgi_app *wsgi_a, *asgi_a;

/* ---- the request, built from the input --------------------------------------------------- */

typedef struct fz_req {
    wsgi_request req;
    wsgi_header headers[MAX_HEADERS], extra[MAX_EXTRA], sets[MAX_SETS];
    size_t n_sets;
    void *allocs[MAX_ALLOCS];
    size_t n_allocs;
} fz_req;

/* A copy of the next span in a buffer of its own (NULL for an empty span when @p null_ok). */
static const char *field(fz_req *r, fz_in *in, size_t *len, int nul, int null_ok)
{
    size_t n = fz_u8(in);
    if (n == 255) n = fz_u16(in); /* long fields: targets, header values */
    const uint8_t *p = fz_bytes(in, n, len);
    if (!*len && null_ok) return NULL;
    char *c = malloc(*len + (nul ? 1 : 0) + (*len || nul ? 0 : 1));
    CHECK(c && r->n_allocs < MAX_ALLOCS);
    r->allocs[r->n_allocs++] = c;
    memcpy(c, p, *len);
    if (nul) c[*len] = '\0';
    return c;
}

static void pairs(fz_req *r, fz_in *in, wsgi_header *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i].name = field(r, in, &out[i].name_len, 0, 0);
        out[i].value = field(r, in, &out[i].value_len, 0, 0);
    }
}

static void build(fz_req *r, fz_in *in)
{
    memset(r, 0, sizeof *r);
    wsgi_request *q = &r->req;
    wsgi_request_init(q);
    unsigned f = fz_u8(in), g = fz_u8(in);
    q->http_major = (int)(fz_u8(in) % 4);
    q->http_minor = (int)(fz_u8(in) % 4);
    q->server_port = fz_u16(in);
    if (g & 1) q->server_port |= (unsigned)fz_u16(in) << 16;
    q->client_port = fz_u16(in);
    if (g & 2) q->client_port |= (unsigned)fz_u16(in) << 16;
    q->flags = fz_u8(in);
    switch ((f >> 4) & 3) {
    case 0: q->content_length = -1; break;
    case 1: q->content_length = fz_u16(in); break;
    case 2: q->content_length = (int64_t)fz_u16(in) << 40; break; /* huge */
    default: q->content_length = -1 - (int64_t)fz_u8(in); break;  /* negative */
    }
    size_t n;
    q->method = field(r, in, &q->method_len, 0, g & 4);
    q->target = field(r, in, &q->target_len, 0, g & 4);
    const char *s = field(r, in, &n, 1, 0);
    q->scheme = f & 1 ? s : NULL;
    s = field(r, in, &n, 1, 0);
    q->server_name = f & 2 ? s : NULL;
    s = field(r, in, &n, 1, 0);
    q->client_addr = f & 4 ? s : NULL;
    q->n_headers = fz_u8(in) % (MAX_HEADERS + 1);
    pairs(r, in, r->headers, q->n_headers);
    q->headers = q->n_headers || (g & 8) ? r->headers : NULL;
    q->n_extra_environ = fz_u8(in) % (MAX_EXTRA + 1);
    pairs(r, in, r->extra, q->n_extra_environ);
    q->extra_environ = q->n_extra_environ || (g & 16) ? r->extra : NULL;
    r->n_sets = fz_u8(in) % (MAX_SETS + 1);
    pairs(r, in, r->sets, r->n_sets);
    /* A NULL pointer with a length (the API must refuse it, not read it). */
    if ((g & 32) && q->n_headers) r->headers[q->n_headers - 1].value = NULL;
    if (f & 8) {
        size_t blen;
        const uint8_t *b = fz_bytes(in, in->left, &blen);
        char *body = malloc(blen ? blen : 1);
        CHECK(body && r->n_allocs < MAX_ALLOCS);
        r->allocs[r->n_allocs++] = body;
        memcpy(body, b, blen);
        q->body = body;
        q->body_len = blen;
    }
}

static void release(fz_req *r)
{
    for (size_t i = 0; i < r->n_allocs; i++)
        free(r->allocs[i]);
}

/* ---- WSGI --------------------------------------------------------------------------------- */

typedef struct rec {
    int starts, done, accepted, ws_sends, ws_closes;
    int status;
    char body[512];
    size_t body_len;
} rec;

static int w_start(void *ud, const wsgi_response_head *h)
{
    rec *r = ud;
    r->starts++;
    r->status = h->status;
    return 0;
}

static int w_body(void *ud, const char *data, size_t len)
{
    rec *r = ud;
    size_t n = len < sizeof r->body - 1 - r->body_len ? len : sizeof r->body - 1 - r->body_len;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

static void expect_ok(const rec *r, const char *what)
{
    if (r->status == 200 && r->body_len == 2 && memcmp(r->body, "ok", 2) == 0) return;
    fprintf(stderr, "fuzz_request: %s: status %d, body \"%s\"\n", what, r->status, r->body);
    abort();
}

static void run_wsgi(fz_req *r)
{
    wsgi_env *env = NULL;
    int rc = wsgi_env_build(wsgi_a, &r->req, &env);
    if (rc != WSGI_OK && rc != WSGI_ERR_INVAL) {
        fprintf(stderr, "fuzz_request: wsgi_env_build: %d (%s)\n", rc, wsgi_errmsg());
        abort();
    }
    if (rc != WSGI_OK) {
        CHECK(env == NULL);
        return;
    }
    for (size_t i = 0; i < r->n_sets; i++) {
        const wsgi_header *h = &r->sets[i];
        rc = wsgi_env_set(env, h->name, h->name_len, h->value, h->value_len);
        CHECK(rc == WSGI_OK || (rc == WSGI_ERR_INVAL && h->name_len == 0));
    }
    static const wsgi_response_handler wh = {
        .struct_size = sizeof wh, .on_start = w_start, .on_body = w_body};
    rec out = {0};
    wsgi_response *resp = NULL;
    CHECK(wsgi_call(env, &wh, &out, &resp) == WSGI_OK && resp);
    int turns = 0;
    while ((rc = wsgi_iter_next(resp)) == 1)
        CHECK(++turns < MAX_TURNS);
    CHECK(rc == 0 && out.starts == 1);
    wsgi_response_free(resp);
    /* wsgi_env_set() may put any bytes in any key, PATH_INFO or wsgi.url_scheme included: the
     * app's checks hold only for what libwsgi computed. */
    if (!r->n_sets) expect_ok(&out, "WSGI");
}

/* ---- ASGI --------------------------------------------------------------------------------- */

static int a_body(void *ud, const char *data, size_t len, int more)
{
    (void)more;
    return w_body(ud, data, len);
}

static void a_done(void *ud, int result)
{
    rec *r = ud;
    CHECK(result == 0);
    r->done++;
}

static int a_accept(void *ud, const char *sp, size_t sp_len, const wsgi_header *h, size_t n)
{
    (void)sp, (void)sp_len, (void)h, (void)n;
    ((rec *)ud)->accepted++;
    return 0;
}

static int a_ws_send(void *ud, int binary, const char *data, size_t len)
{
    rec *r = ud;
    if (r->ws_sends++ == 0) {
        r->status = binary ? 200 : 0; /* the app's verdict comes first, as bytes */
        w_body(ud, data, len);
    }
    return 0;
}

static int a_ws_close(void *ud, int code, const char *reason, size_t len)
{
    (void)code, (void)reason, (void)len;
    ((rec *)ud)->ws_closes++;
    return 0;
}

static const asgi_handler ah = {.struct_size = sizeof ah,
                                .on_start = w_start,
                                .on_body = a_body,
                                .on_done = a_done,
                                .on_ws_accept = a_accept,
                                .on_ws_send = a_ws_send,
                                .on_ws_close = a_ws_close};

/* Loop turns until @p done is set (or, with done NULL, while work is ready). */
static void drive(const int *done)
{
    for (int i = 0; i < MAX_TURNS; i++) {
        if (done && *done) return;
        if (!done && asgi_loop_timeout(rt) != 0) return;
        CHECK(asgi_loop_run(rt) == WSGI_OK);
    }
    CHECK(!"the ASGI task did not finish");
}

static void run_asgi(fz_req *r, int ws, const uint8_t *msg, size_t msg_len)
{
    rec out = {0};
    asgi_conn *c = NULL;
    int rc = ws ? asgi_websocket_dispatch(asgi_a, &r->req, &ah, &out, &c)
                : asgi_dispatch(asgi_a, &r->req, &ah, &out, &c);
    if (rc != WSGI_OK && rc != WSGI_ERR_INVAL) {
        fprintf(stderr, "fuzz_request: asgi_%sdispatch: %d (%s)\n", ws ? "websocket_" : "", rc,
                wsgi_errmsg());
        abort();
    }
    if (rc != WSGI_OK) {
        CHECK(c == NULL);
        return;
    }
    if (!ws) {
        /* A body to come (asgi_conn.c: no buffered body, and a Content-Length or chunked): end
         * it, empty. */
        if (!r->req.body && (r->req.content_length > 0 || (r->req.flags & WSGI_REQUEST_CHUNKED)))
            CHECK(asgi_conn_feed(c, NULL, 0, 0) == WSGI_OK);
        drive(&out.done);
        CHECK(out.starts == 1);
        expect_ok(&out, "ASGI http");
    } else {
        drive(&out.ws_sends);
        CHECK(out.accepted == 1);
        expect_ok(&out, "ASGI websocket");
        /* The rest of the body as one text and one binary message, echoed by the app. */
        rc = asgi_conn_ws_message(c, ASGI_WS_TEXT, (const char *)msg, msg_len);
        CHECK(rc == WSGI_OK || rc == ASGI_PAUSE || rc == WSGI_ERR_INVAL);
        rc = asgi_conn_ws_message(c, ASGI_WS_BINARY, (const char *)msg, msg_len);
        CHECK(rc == WSGI_OK || rc == ASGI_PAUSE);
        drive(NULL);
        CHECK(asgi_conn_ws_closed(c, 1000, "", 0) == WSGI_OK);
        drive(&out.done);
    }
    asgi_conn_free(c);
}

/* ---- libFuzzer ----------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void quiet_log(void *ud, int level, const char *msg, size_t len)
{
    (void)ud, (void)level, (void)msg, (void)len;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const path[] = {FUZZ_APPS_DIR};
    wsgi_runtime_options o;
    wsgi_runtime_options_init(&o);
    o.python_path = path;
    o.n_python_path = 1;
    o.log = getenv("FUZZ_VERBOSE") ? NULL : quiet_log;
    CHECK(wsgi_runtime_new(&o, &rt) == WSGI_OK);
    wsgi_app_options a;
    wsgi_app_options_init(&a);
    a.spec = "fuzz_apps:wsgi_app";
    CHECK(wsgi_app_new(rt, &a, &wsgi_a) == WSGI_OK);
    a.spec = "fuzz_apps:asgi_app";
    CHECK(wsgi_app_new(rt, &a, &asgi_a) == WSGI_OK);
    CHECK(asgi_loop_set_eager(rt, 1) == WSGI_OK); /* as libwsgi-epoll runs ASGI apps */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    unsigned which = fz_u8(&in);
    fz_req *r = malloc(sizeof *r);
    CHECK(r);
    build(r, &in);
    if (which % 3 == 0) run_wsgi(r);
    if (which % 3 == 1) run_asgi(r, 0, NULL, 0);
    if (which % 3 == 2) run_asgi(r, 1, (const uint8_t *)r->req.body, r->req.body_len);
    release(r);
    free(r);
    return 0;
}
