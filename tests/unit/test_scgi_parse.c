/* Unit tests of examples/lighttpd/scgi_parse.c, the request-head parsers of libwsgi-scgi
 * (issue 11): protocol detection by the first byte, SCGI netstrings and uwsgi packets as
 * lighttpd's mod_scgi sends them, every malformed or oversized head giving a clear error and an
 * HTTP status, and the mapping of the CGI variables to a wsgi_request (checked end to end through
 * wsgi_env_build() and an app that dumps its environ).
 *
 * Every input is parsed twice: fed whole from a buffer allocated to its exact size, and fed one
 * byte at a time, each byte from its own 1-byte allocation, so that AddressSanitizer catches any
 * read past what was fed. Both ways must give the same result, status, reason, consumed count and
 * variables. */
#include "harness.h"

#include "scgi_parse.h"

typedef struct kv {
    const char *name, *value;
} kv;

/* ---- building requests -------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_str(buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* An SCGI request: "<len>:" NAME\0VALUE\0... "," body. */
static buf scgi_req(const kv *vars, size_t n, const char *body)
{
    buf pay = {0}, out = {0};
    for (size_t i = 0; i < n; i++) {
        buf_add(&pay, vars[i].name, strlen(vars[i].name) + 1);
        buf_add(&pay, vars[i].value, strlen(vars[i].value) + 1);
    }
    char num[32];
    snprintf(num, sizeof num, "%zu:", pay.len);
    buf_str(&out, num);
    buf_add(&out, pay.p, pay.len);
    buf_str(&out, ",");
    if (body) buf_str(&out, body);
    free(pay.p);
    return out;
}

static void le16(buf *b, size_t v)
{
    unsigned char x[2] = {(unsigned char)(v & 0xff), (unsigned char)(v >> 8)};
    buf_add(b, x, 2);
}

/* A uwsgi request: {0, datasize LE, 0}, then (keylen LE, key, vallen LE, value)..., body. */
static buf uwsgi_req(const kv *vars, size_t n, const char *body)
{
    buf pay = {0}, out = {0};
    for (size_t i = 0; i < n; i++) {
        le16(&pay, strlen(vars[i].name));
        buf_str(&pay, vars[i].name);
        le16(&pay, strlen(vars[i].value));
        buf_str(&pay, vars[i].value);
    }
    unsigned char h[4] = {0, (unsigned char)(pay.len & 0xff), (unsigned char)(pay.len >> 8), 0};
    buf_add(&out, h, 4);
    buf_add(&out, pay.p, pay.len);
    if (body) buf_str(&out, body);
    free(pay.p);
    return out;
}

/* What lighttpd 1.4's http_cgi_headers() sends for "GET /app/items?x=1 HTTP/1.1" under
 * scgi.server = ("/app" => ...), in its order (see scgi_parse.c). */
static const kv lighttpd_get[] = {
    {"CONTENT_LENGTH", "0"},
    {"QUERY_STRING", "x=1"},
    {"REQUEST_URI", "/app/items?x=1"},
    {"REDIRECT_STATUS", "200"},
    {"SCRIPT_NAME", "/app"},
    {"PATH_INFO", "/items"},
    {"PATH_TRANSLATED", "/srv/www/items"},
    {"SCRIPT_FILENAME", "/srv/www/app"},
    {"DOCUMENT_ROOT", "/srv/www"},
    {"REQUEST_METHOD", "GET"},
    {"SERVER_PROTOCOL", "HTTP/1.1"},
    {"SERVER_SOFTWARE", "lighttpd/1.4.69"},
    {"GATEWAY_INTERFACE", "CGI/1.1"},
    {"REQUEST_SCHEME", "http"},
    {"SERVER_PORT", "8080"},
    {"SERVER_ADDR", "127.0.0.1"},
    {"SERVER_NAME", "localhost"},
    {"REMOTE_ADDR", "127.0.0.1"},
    {"REMOTE_PORT", "51234"},
    {"HTTP_HOST", "localhost:8080"},
    {"HTTP_USER_AGENT", "curl/7.88.1"},
    {"HTTP_ACCEPT", "*/*"},
    {"HTTP_X_FORWARDED_FOR", "10.0.0.1"},
    {"SCGI", "1"}, /* scgi_create_env() appends it last; uwsgi has none */
};
#define N_GET (sizeof lighttpd_get / sizeof lighttpd_get[0])

/* "POST /upload HTTP/2.0" over TLS with a body, under scgi.server = ("/" => ...) with
 * fix-root-scriptname: SCRIPT_NAME is empty, PATH_INFO the whole path. */
static const kv lighttpd_post[] = {
    {"CONTENT_LENGTH", "11"},
    {"QUERY_STRING", ""},
    {"REQUEST_URI", "/upload"},
    {"REDIRECT_STATUS", "200"},
    {"SCRIPT_NAME", ""},
    {"PATH_INFO", "/upload"},
    {"SCRIPT_FILENAME", "/srv/www/"},
    {"DOCUMENT_ROOT", "/srv/www"},
    {"REQUEST_METHOD", "POST"},
    {"SERVER_PROTOCOL", "HTTP/2.0"},
    {"SERVER_SOFTWARE", "lighttpd/1.4.69"},
    {"GATEWAY_INTERFACE", "CGI/1.1"},
    {"REQUEST_SCHEME", "https"},
    {"HTTPS", "on"},
    {"SERVER_PORT", "443"},
    {"SERVER_ADDR", "::1"},
    {"SERVER_NAME", "example.org"},
    {"REMOTE_ADDR", "::1"},
    {"REMOTE_PORT", "40000"},
    {"HTTP_HOST", "example.org"},
    {"CONTENT_TYPE", "text/plain"},
    {"HTTP_CONTENT_LENGTH", "11"},
    {"HTTP_ACCEPT_ENCODING", "gzip"},
    {"SCGI", "1"},
};
#define N_POST (sizeof lighttpd_post / sizeof lighttpd_post[0])

/* ---- parsing both ways --------------------------------------------------------------------- */

#define MAX_SLOTS 256

typedef struct outcome {
    scgi_result rc;
    int status;
    const char *error;
    size_t consumed;
    size_t head_len;
    int64_t content_length;
    scgi_proto proto;
    size_t nvars;
    scgi_parser p; /* the parser after the whole feed: its variables are read through it */
    scgi_var_pos slots[MAX_SLOTS];
} outcome;

static scgi_limits limits(size_t max_header_bytes, size_t max_vars)
{
    scgi_limits l = {.max_header_bytes = max_header_bytes, .max_vars = max_vars};
    return l;
}

static void finish(scgi_parser *p, scgi_result rc, size_t consumed, int eof, outcome *o)
{
    if (rc == SCGI_NEED_MORE && eof) rc = scgi_parser_eof(p);
    o->rc = rc;
    o->status = scgi_parser_status(p);
    o->error = scgi_parser_error(p);
    o->consumed = consumed;
    o->head_len = scgi_parser_head_len(p);
    o->content_length = scgi_parser_content_length(p);
    o->proto = scgi_parser_protocol(p);
    o->nvars = scgi_parser_nvars(p);
}

/* Fed whole from an exact-size copy; @p o->slots holds the variables. */
static void parse_whole(const char *in, size_t len, const scgi_limits *lim, unsigned accept,
                        int eof, outcome *o)
{
    assert_true(lim->max_vars <= MAX_SLOTS);
    scgi_parser p;
    assert_int_equal(scgi_parser_init(&p, lim, o->slots, accept), 0);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, in, len);
    size_t used = 99;
    scgi_result rc = scgi_parser_feed(&p, copy, len, &used);
    assert_true(used <= len);
    /* results are sticky: feeding again consumes nothing and repeats the result */
    if (rc != SCGI_NEED_MORE) {
        size_t again = 99;
        assert_int_equal(scgi_parser_feed(&p, copy, len, &again), rc);
        assert_int_equal(again, 0);
    }
    free(copy);
    finish(&p, rc, used, eof, o);
    o->p = p;
}

/* Fed one byte at a time, each from its own allocation, until the parser stops asking. */
static void parse_bytes(const char *in, size_t len, const scgi_limits *lim, unsigned accept,
                        int eof, outcome *o)
{
    scgi_parser p;
    assert_int_equal(scgi_parser_init(&p, lim, o->slots, accept), 0);
    scgi_result rc = scgi_parser_feed(&p, NULL, 0, NULL); /* an empty feed changes nothing */
    assert_int_equal(rc, SCGI_NEED_MORE);
    size_t total = 0;
    for (size_t i = 0; i < len && rc == SCGI_NEED_MORE; i++) {
        char *one = malloc(1);
        assert_non_null(one);
        one[0] = in[i];
        size_t used = 99;
        rc = scgi_parser_feed(&p, one, 1, &used);
        free(one);
        assert_true(used <= 1);
        total += used;
    }
    finish(&p, rc, total, eof, o);
}

static outcome *ow, *ob; /* whole, bytes: heap, large */

/* Parses @p in both ways, checks they agree and that the result is @p rc / @p status; a reason
 * containing @p why when given. Leaves the outcomes in ow / ob. */
static void check(const char *in, size_t len, const scgi_limits *lim, unsigned accept, int eof,
                  scgi_result rc, int status, const char *why)
{
    parse_whole(in, len, lim, accept, eof, ow);
    parse_bytes(in, len, lim, accept, eof, ob);
    if (ow->rc != rc || ow->status != status) {
        print_error("whole: rc %d status %d (%s); expected rc %d status %d\n", ow->rc, ow->status,
                    ow->error, rc, status);
        fail();
    }
    assert_int_equal(ob->rc, ow->rc);
    assert_int_equal(ob->status, ow->status);
    assert_string_equal(ob->error, ow->error);
    assert_int_equal(ob->proto, ow->proto);
    assert_int_equal(ob->head_len, ow->head_len);
    assert_int_equal(ob->content_length, ow->content_length);
    assert_int_equal(ob->nvars, ow->nvars);
    if (rc != SCGI_ERROR) assert_int_equal(ob->consumed, ow->consumed);
    assert_int_equal(memcmp(ob->slots, ow->slots, ow->nvars * sizeof ow->slots[0]), 0);
    if (why) assert_str_contains(ow->error, why);
    if (rc == SCGI_ERROR) {
        assert_true(strlen(ow->error) > 0);
        assert_true(status == 400 || status == 413 || status == 431);
    } else {
        assert_string_equal(ow->error, "");
    }
    if (rc == SCGI_HEAD_DONE) {
        assert_int_equal(ow->consumed, ow->head_len);
        assert_true(ow->content_length >= 0);
    }
}

#define CHECK_BUF(b, lim, rc, status, why)                                                         \
    check((b).p, (b).len, (lim), SCGI_ACCEPT_ALL, 1, (rc), (status), (why))
#define CHECK_LIT(s, lim, rc, status, why)                                                         \
    check((s), sizeof(s) - 1, (lim), SCGI_ACCEPT_ALL, 1, (rc), (status), (why))

/* The variables of the last whole parse, against @p vars. */
static void assert_vars(const char *head, const kv *vars, size_t n)
{
    assert_int_equal(ow->nvars, n);
    const scgi_parser *p = &ow->p;
    for (size_t i = 0; i < n; i++) {
        wsgi_header h;
        assert_int_equal(scgi_parser_var(p, head, i, &h), 0);
        assert_int_equal(h.name_len, strlen(vars[i].name));
        assert_memory_equal(h.name, vars[i].name, h.name_len);
        assert_int_equal(h.value_len, strlen(vars[i].value));
        if (h.value_len) assert_memory_equal(h.value, vars[i].value, h.value_len);
    }
    wsgi_header h;
    assert_int_equal(scgi_parser_var(p, head, n, &h), -1);
}

/* ---- detection ----------------------------------------------------------------------------- */

static void test_detect(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    check("GET / HTTP/1.1\r\n", 16, &lim, SCGI_ACCEPT_ALL, 0, SCGI_IS_HTTP, 0, NULL);
    assert_int_equal(ow->consumed, 0);
    assert_int_equal(ow->proto, SCGI_PROTO_HTTP);
    check("delete / HTTP/1.1\r\n", 19, &lim, SCGI_ACCEPT_ALL, 0, SCGI_IS_HTTP, 0, NULL);
    check("1", 1, &lim, SCGI_ACCEPT_ALL, 0, SCGI_NEED_MORE, 0, NULL);
    assert_int_equal(ow->proto, SCGI_PROTO_SCGI);
    check("\0", 1, &lim, SCGI_ACCEPT_ALL, 0, SCGI_NEED_MORE, 0, NULL);
    assert_int_equal(ow->proto, SCGI_PROTO_UWSGI);
    /* neither a digit, 0x00 nor a letter */
    CHECK_LIT("\r\nGET / HTTP/1.1", &lim, SCGI_ERROR, 400, "unknown protocol");
    CHECK_LIT("\x16\x03\x01", &lim, SCGI_ERROR, 400, "unknown protocol"); /* TLS */
    CHECK_LIT("\x05", &lim, SCGI_ERROR, 400, "unknown protocol"); /* uwsgi modifier1 5 (PSGI) */
    CHECK_LIT(" 5:", &lim, SCGI_ERROR, 400, "unknown protocol");
    /* a protocol not accepted */
    check("GET /", 5, &lim, SCGI_ACCEPT_SCGI | SCGI_ACCEPT_UWSGI, 1, SCGI_ERROR, 400, "HTTP");
    check("12:", 3, &lim, SCGI_ACCEPT_UWSGI, 1, SCGI_ERROR, 400, "SCGI is not accepted");
    check("\0\0\0\0", 4, &lim, SCGI_ACCEPT_SCGI, 1, SCGI_ERROR, 400, "uwsgi is not accepted");
    /* nothing at all */
    check("", 0, &lim, SCGI_ACCEPT_ALL, 1, SCGI_ERROR, 400, "closed before a request");
}

static void test_init_args(void **state)
{
    (void)state;
    scgi_parser p;
    scgi_var_pos slots[4];
    scgi_limits lim = limits(0, 4), zero = limits(0, 0);
    assert_int_equal(scgi_parser_init(NULL, &lim, slots, 0), -1);
    assert_int_equal(scgi_parser_init(&p, NULL, slots, 0), -1);
    assert_int_equal(scgi_parser_init(&p, &lim, NULL, 0), -1);
    assert_int_equal(scgi_parser_init(&p, &zero, slots, 0), -1);
    assert_int_equal(scgi_parser_init(&p, &lim, slots, 0), 0);
    assert_int_equal(scgi_parser_feed(&p, NULL, 3, NULL), SCGI_ERROR);
    assert_int_equal(scgi_parser_status(&p), 400);
    /* before the head is done there is nothing to read */
    assert_int_equal(scgi_parser_init(&p, &lim, slots, 0), 0);
    assert_int_equal(scgi_parser_head_len(&p), 0);
    assert_int_equal(scgi_parser_content_length(&p), -1);
    assert_int_equal(scgi_parser_status(&p), 0);
    assert_string_equal(scgi_parser_error(&p), "");
    assert_int_equal(scgi_parser_protocol(&p), SCGI_PROTO_UNKNOWN);
}

/* ---- SCGI ---------------------------------------------------------------------------------- */

static void test_scgi_lighttpd_get(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    buf b = scgi_req(lighttpd_get, N_GET, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->proto, SCGI_PROTO_SCGI);
    assert_int_equal(ow->head_len, b.len);
    assert_int_equal(ow->content_length, 0);
    assert_vars(b.p, lighttpd_get, N_GET);
    /* the exact framing: "<len>:" ... "," */
    const char *colon = memchr(b.p, ':', b.len);
    assert_int_equal(strtoul(b.p, NULL, 10), b.len - (size_t)(colon - b.p) - 2);
    assert_int_equal(b.p[b.len - 1], ',');

    /* scgi_parser_find */
    scgi_parser p;
    scgi_var_pos slots[64];
    scgi_parser_init(&p, &lim, slots, 0);
    size_t used;
    assert_int_equal(scgi_parser_feed(&p, b.p, b.len, &used), SCGI_HEAD_DONE);
    const char *v;
    size_t vl;
    assert_int_equal(scgi_parser_find(&p, b.p, "REQUEST_METHOD", &v, &vl), 1);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "GET", 3);
    assert_int_equal(scgi_parser_find(&p, b.p, "HTTP_COOKIE", &v, &vl), 0);
    assert_int_equal(scgi_parser_find(&p, b.p, "SCGI", NULL, NULL), 1);
    free(b.p);
}

static void test_scgi_lighttpd_post_body(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    buf b = scgi_req(lighttpd_post, N_POST, "hello world");
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 11);
    /* the body is not consumed: it starts right after the ',' */
    assert_int_equal(ow->consumed, b.len - 11);
    assert_memory_equal(b.p + ow->consumed, "hello world", 11);
    assert_vars(b.p, lighttpd_post, N_POST);
    free(b.p);

    /* the head in one read, the body split over others: still done at the ',' */
    b = scgi_req(lighttpd_post, N_POST, "hello world");
    scgi_parser p;
    scgi_var_pos slots[64];
    scgi_parser_init(&p, &lim, slots, 0);
    size_t used, head = b.len - 11;
    assert_int_equal(scgi_parser_feed(&p, b.p, head - 1, &used), SCGI_NEED_MORE);
    assert_int_equal(used, head - 1);
    assert_int_equal(scgi_parser_feed(&p, b.p + head - 1, 5, &used), SCGI_HEAD_DONE);
    assert_int_equal(used, 1);
    assert_int_equal(scgi_parser_head_len(&p), head);
    free(b.p);
}

static void test_scgi_minimal(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 8);
    /* the example of the SCGI spec, fed whole and byte by byte */
    static const char spec[] = "70:CONTENT_LENGTH\00027\0SCGI\0001\0REQUEST_METHOD\0POST\0"
                               "REQUEST_URI\0/deepthought\0,What is the answer to life?";
    CHECK_LIT(spec, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 27);
    assert_int_equal(ow->nvars, 4);
    assert_int_equal(sizeof spec - 1 - ow->consumed, 27);
    /* empty values and large CONTENT_LENGTH; leading zeros in CONTENT_LENGTH are a number */
    static const kv vars[] = {
        {"CONTENT_LENGTH", "0009223372036854775807"}, {"E", ""}, {"SCGI", "1"}};
    buf b = scgi_req(vars, 3, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_true(ow->content_length == INT64_MAX);
    assert_vars(b.p, vars, 3);
    free(b.p);
}

static void test_scgi_truncated(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    buf b = scgi_req(lighttpd_get, N_GET, NULL);
    /* every proper prefix needs more, and is a 400 at EOF */
    for (size_t n = 1; n < b.len; n++) {
        check(b.p, n, &lim, SCGI_ACCEPT_ALL, 0, SCGI_NEED_MORE, 0, NULL);
        check(b.p, n, &lim, SCGI_ACCEPT_ALL, 1, SCGI_ERROR, 400, "truncated");
    }
    free(b.p);
}

static void test_scgi_netstring_length(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* leading zeros */
    CHECK_LIT("035:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "leading zero");
    CHECK_LIT("00:", &lim, SCGI_ERROR, 400, "leading zero");
    /* "0:" is a valid netstring, but without CONTENT_LENGTH */
    CHECK_LIT("0:,", &lim, SCGI_ERROR, 400, "CONTENT_LENGTH is missing");
    /* too many digits / larger than any limit / would overflow 32 and 64 bits */
    CHECK_LIT("65536:", &lim, SCGI_ERROR, 431, "header limit");
    CHECK_LIT("99999999999999999999999999:", &lim, SCGI_ERROR, 431, "header limit");
    CHECK_LIT("4294967296:", &lim, SCGI_ERROR, 431, "header limit");
    scgi_limits big = limits((size_t)1 << 40, 64); /* clamped to 16 MiB */
    CHECK_LIT("16777217:", &big, SCGI_ERROR, 431, "header limit");
    CHECK_LIT("16777216:", &big, SCGI_ERROR, 400, "truncated");
    /* missing ':' */
    CHECK_LIT("24CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "':'");
    CHECK_LIT("24;", &lim, SCGI_ERROR, 400, "':'");
    CHECK_LIT("2 4:", &lim, SCGI_ERROR, 400, "':'");
    CHECK_LIT("-24:", &lim, SCGI_ERROR, 400, "unknown protocol");
    CHECK_LIT("24", &lim, SCGI_ERROR, 400, "truncated");
}

static void test_scgi_wrong_lengths(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* correct: 24 bytes of payload */
    CHECK_LIT("24:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_HEAD_DONE, 0, NULL);
    /* one short: the payload ends inside the last value's NUL... */
    CHECK_LIT("23:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "end with a NUL");
    /* ...or inside a name */
    CHECK_LIT("20:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "end with a NUL");
    /* after a name's NUL: an odd number of strings */
    CHECK_LIT("22:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "odd number");
    /* one long: the ',' is taken as payload, then the next byte is not a ',' */
    CHECK_LIT("25:CONTENT_LENGTH\0000\0SCGI\0001\0,,", &lim, SCGI_ERROR, 400, "end with a NUL");
    CHECK_LIT("25:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "end with a NUL");
    CHECK_LIT("26:CONTENT_LENGTH\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "truncated");
    /* the body directly after the payload: no ',' */
    CHECK_LIT("24:CONTENT_LENGTH\0000\0SCGI\0001\0body", &lim, SCGI_ERROR, 400, "','");
    CHECK_LIT("24:CONTENT_LENGTH\0000\0SCGI\0001\0", &lim, SCGI_ERROR, 400, "truncated");
    /* odd number of strings in a well-framed netstring */
    CHECK_LIT("29:CONTENT_LENGTH\0000\0SCGI\0001\0LONE\0,", &lim, SCGI_ERROR, 400, "odd number");
    /* an empty name */
    CHECK_LIT("26:CONTENT_LENGTH\0000\0SCGI\0001\0\0\0,", &lim, SCGI_ERROR, 400, "empty variable");
}

static void test_scgi_content_length(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* missing */
    CHECK_LIT("11:SCGI\0001\0A\0B\0,", &lim, SCGI_ERROR, 400, "not the first");
    /* not first */
    CHECK_LIT("24:SCGI\0001\0CONTENT_LENGTH\0000\0,", &lim, SCGI_ERROR, 400, "not the first");
    /* names that only start like it, or extend it, are other names */
    CHECK_LIT("23:CONTENT_LENGT\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "not the first");
    CHECK_LIT("25:CONTENT_LENGTHX\0000\0SCGI\0001\0,", &lim, SCGI_ERROR, 400, "not the first");
    /* not a number */
    static const char *bad[] = {"", "-1", "+1", " 1", "1 ", "0x10", "1e3", "12a", "\t0", "1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kv vars[] = {{"CONTENT_LENGTH", bad[i]}, {"SCGI", "1"}};
        buf b = scgi_req(vars, 2, NULL);
        CHECK_BUF(b, &lim, SCGI_ERROR, 400, "CONTENT_LENGTH is");
        free(b.p);
    }
    /* overflow */
    kv ovf[] = {{"CONTENT_LENGTH", "9223372036854775808"}, {"SCGI", "1"}};
    buf b = scgi_req(ovf, 2, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 413, "too large");
    free(b.p);
    kv ovf2[] = {{"CONTENT_LENGTH", "99999999999999999999999999999"}, {"SCGI", "1"}};
    b = scgi_req(ovf2, 2, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 413, "too large");
    free(b.p);
    /* over the configured body limit */
    scgi_limits small = lim;
    small.max_content_length = 1000;
    kv big[] = {{"CONTENT_LENGTH", "1001"}, {"SCGI", "1"}};
    b = scgi_req(big, 2, NULL);
    CHECK_BUF(b, &small, SCGI_ERROR, 413, "body size limit");
    free(b.p);
    kv fits[] = {{"CONTENT_LENGTH", "1000"}, {"SCGI", "1"}};
    b = scgi_req(fits, 2, NULL);
    CHECK_BUF(b, &small, SCGI_HEAD_DONE, 0, NULL);
    free(b.p);
    /* twice */
    kv twice[] = {{"CONTENT_LENGTH", "1"}, {"SCGI", "1"}, {"CONTENT_LENGTH", "2"}};
    b = scgi_req(twice, 3, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 400, "duplicate CONTENT_LENGTH");
    free(b.p);
}

static void test_scgi_scgi_var(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    CHECK_LIT("17:CONTENT_LENGTH\0000\0,", &lim, SCGI_ERROR, 400, "SCGI variable is missing");
    static const char *bad[] = {"", "0", "2", "11", "1 ", "one"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kv vars[] = {{"CONTENT_LENGTH", "0"}, {"SCGI", bad[i]}};
        buf b = scgi_req(vars, 2, NULL);
        CHECK_BUF(b, &lim, SCGI_ERROR, 400, "SCGI variable is not");
        free(b.p);
    }
    kv twice[] = {{"CONTENT_LENGTH", "0"}, {"SCGI", "1"}, {"SCGI", "1"}};
    buf b = scgi_req(twice, 3, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 400, "duplicate SCGI");
    free(b.p);
    /* "SCGIX" and "SCG" are ordinary names */
    kv other[] = {{"CONTENT_LENGTH", "0"}, {"SCGIX", "2"}, {"SCG", "3"}, {"SCGI", "1"}};
    b = scgi_req(other, 4, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    free(b.p);
}

static void test_scgi_limits(void **state)
{
    (void)state;
    buf b = scgi_req(lighttpd_get, N_GET, NULL);
    const char *colon = memchr(b.p, ':', b.len);
    size_t payload = b.len - (size_t)(colon - b.p) - 2;
    /* the head exactly at the limit, and one byte over */
    scgi_limits at = limits(payload, 64), over = limits(payload - 1, 64);
    CHECK_BUF(b, &at, SCGI_HEAD_DONE, 0, NULL);
    CHECK_BUF(b, &over, SCGI_ERROR, 431, "header limit");
    /* the variables exactly at the limit, and one over */
    scgi_limits vars_at = limits(0, N_GET), vars_over = limits(0, N_GET - 1);
    CHECK_BUF(b, &vars_at, SCGI_HEAD_DONE, 0, NULL);
    CHECK_BUF(b, &vars_over, SCGI_ERROR, 431, "too many variables");
    free(b.p);

    /* a huge header (one 100 kB cookie) against the default 64 KiB limit */
    size_t n = 100000;
    char *cookie = malloc(n + 1);
    assert_non_null(cookie);
    memset(cookie, 'c', n);
    cookie[n] = '\0';
    kv vars[] = {{"CONTENT_LENGTH", "0"}, {"HTTP_COOKIE", cookie}, {"SCGI", "1"}};
    b = scgi_req(vars, 3, NULL);
    scgi_limits def = limits(0, 64);
    CHECK_BUF(b, &def, SCGI_ERROR, 431, "header limit");
    /* the error comes from the length alone: nothing of the payload was needed */
    check(b.p, 7, &def, SCGI_ACCEPT_ALL, 0, SCGI_ERROR, 431, "header limit");
    scgi_limits large = limits(200000, 64);
    CHECK_BUF(b, &large, SCGI_HEAD_DONE, 0, NULL);
    assert_vars(b.p, vars, 3);
    free(b.p);
    free(cookie);

    /* many small variables */
    kv many[300];
    char names[300][16];
    many[0] = (kv){"CONTENT_LENGTH", "0"};
    for (size_t i = 1; i < 299; i++) {
        snprintf(names[i], sizeof names[i], "HTTP_X%zu", i);
        many[i] = (kv){names[i], "v"};
    }
    many[299] = (kv){"SCGI", "1"};
    b = scgi_req(many, 300, NULL);
    scgi_limits cap = limits(0, 256);
    CHECK_BUF(b, &cap, SCGI_ERROR, 431, "too many variables");
    free(b.p);
}

/* ---- uwsgi --------------------------------------------------------------------------------- */

static void test_uwsgi_lighttpd(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* lighttpd sends the same variables without "SCGI" (the last entry of lighttpd_get) */
    buf b = uwsgi_req(lighttpd_get, N_GET - 1, NULL);
    assert_int_equal((unsigned char)b.p[0], 0); /* modifier1 */
    assert_int_equal((unsigned char)b.p[3], 0); /* modifier2 */
    assert_int_equal((size_t)(unsigned char)b.p[1] | (size_t)(unsigned char)b.p[2] << 8, b.len - 4);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->proto, SCGI_PROTO_UWSGI);
    assert_int_equal(ow->head_len, b.len);
    assert_int_equal(ow->content_length, 0);
    assert_vars(b.p, lighttpd_get, N_GET - 1);
    free(b.p);

    b = uwsgi_req(lighttpd_post, N_POST - 1, "hello world");
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 11);
    assert_int_equal(ow->consumed, b.len - 11);
    assert_memory_equal(b.p + ow->consumed, "hello world", 11);
    assert_vars(b.p, lighttpd_post, N_POST - 1);
    free(b.p);

    /* every proper prefix is truncated */
    b = uwsgi_req(lighttpd_post, N_POST - 1, NULL);
    for (size_t n = 1; n < b.len; n++)
        check(b.p, n, &lim, SCGI_ACCEPT_ALL, 1, SCGI_ERROR, 400, "truncated");
    free(b.p);
}

static void test_uwsgi_content_length(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* not first, absent or empty: all fine for uwsgi (as uWSGI reads them) */
    kv later[] = {{"REQUEST_METHOD", "PUT"}, {"CONTENT_LENGTH", "5"}};
    buf b = uwsgi_req(later, 2, "abcde");
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 5);
    free(b.p);
    kv none[] = {{"REQUEST_METHOD", "GET"}};
    b = uwsgi_req(none, 1, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 0);
    free(b.p);
    kv empty[] = {{"CONTENT_LENGTH", ""}, {"REQUEST_METHOD", "GET"}};
    b = uwsgi_req(empty, 2, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->content_length, 0);
    free(b.p);
    /* a packet with no vars at all */
    CHECK_LIT("\0\0\0\0", &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->nvars, 0);
    /* not a number, overflow, twice */
    kv bad[] = {{"CONTENT_LENGTH", "-5"}};
    b = uwsgi_req(bad, 1, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 400, "not a decimal");
    free(b.p);
    kv ovf[] = {{"CONTENT_LENGTH", "18446744073709551616"}};
    b = uwsgi_req(ovf, 1, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 413, "too large");
    free(b.p);
    kv twice[] = {{"CONTENT_LENGTH", "1"}, {"CONTENT_LENGTH", "1"}};
    b = uwsgi_req(twice, 2, NULL);
    CHECK_BUF(b, &lim, SCGI_ERROR, 400, "duplicate");
    free(b.p);
    /* a "SCGI" var means nothing special in uwsgi */
    kv scgi[] = {{"SCGI", "7"}, {"SCGI", "8"}};
    b = uwsgi_req(scgi, 2, NULL);
    CHECK_BUF(b, &lim, SCGI_HEAD_DONE, 0, NULL);
    free(b.p);
}

static void test_uwsgi_malformed(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    /* modifier2 not 0 */
    CHECK_LIT("\0\0\0\1", &lim, SCGI_ERROR, 400, "modifier2");
    /* datasize longer than the data */
    CHECK_LIT("\0\x10\0\0\x02\0AB\x01\0x", &lim, SCGI_ERROR, 400, "truncated");
    /* datasize larger than the header limit */
    scgi_limits small = limits(100, 64);
    CHECK_LIT("\0\x65\0\0", &small, SCGI_ERROR, 431, "header limit");
    CHECK_LIT("\0\x64\0\0", &small, SCGI_ERROR, 400, "truncated");
    /* a key length running past datasize (6 bytes of vars, key says 5 after its 2) */
    CHECK_LIT("\0\x06\0\0\x05\0ABCD", &lim, SCGI_ERROR, 400, "key length runs past");
    /* a value length running past datasize */
    CHECK_LIT("\0\x07\0\0\x01\0A\x03\0xy", &lim, SCGI_ERROR, 400, "value length runs past");
    /* datasize ending inside a length field */
    CHECK_LIT("\0\x01\0\0\x01", &lim, SCGI_ERROR, 400, "inside a length field");
    CHECK_LIT("\0\x06\0\0\x01\0A\x00\0\x01", &lim, SCGI_ERROR, 400, "inside a length field");
    CHECK_LIT("\0\x04\0\0\x01\0A\x00", &lim, SCGI_ERROR, 400, "inside a length field");
    /* ... known from the datasize alone, without waiting for a byte past the vars that a peer
     * which sent its whole packet (and no body) never sends: no EOF here */
    check("\0\x01\0\0", 4, &lim, SCGI_ACCEPT_ALL, 0, SCGI_ERROR, 400, "inside a length field");
    check("\0\x03\0\0\x01\0A", 7, &lim, SCGI_ACCEPT_ALL, 0, SCGI_ERROR, 400,
          "inside a length field");
    check("\0\x04\0\0\x01\0A", 7, &lim, SCGI_ACCEPT_ALL, 0, SCGI_ERROR, 400,
          "inside a length field");
    check("\0\x06\0\0\x01\0A\0\0", 9, &lim, SCGI_ACCEPT_ALL, 0, SCGI_ERROR, 400,
          "inside a length field");
    /* an empty key */
    CHECK_LIT("\0\x04\0\0\0\0\0\0", &lim, SCGI_ERROR, 400, "empty variable name");
    /* exactly filled: key "A", empty value */
    CHECK_LIT("\0\x05\0\0\x01\0A\0\0", &lim, SCGI_HEAD_DONE, 0, NULL);
    assert_int_equal(ow->nvars, 1);
    assert_int_equal(ow->slots[0].value_len, 0);
    /* too many vars */
    kv three[] = {{"A", "1"}, {"B", "2"}, {"C", "3"}};
    buf b = uwsgi_req(three, 3, NULL);
    scgi_limits two = limits(0, 2), exact = limits(0, 3);
    CHECK_BUF(b, &two, SCGI_ERROR, 431, "too many variables");
    CHECK_BUF(b, &exact, SCGI_HEAD_DONE, 0, NULL);
    free(b.p);
    /* the largest packet the protocol can carry: 65535 bytes of vars */
    size_t n = 65535 - 2 - 11 - 2;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'b', n);
    big[n] = '\0';
    kv bigv[] = {{"HTTP_COOKIE", big}};
    b = uwsgi_req(bigv, 1, NULL);
    assert_int_equal(b.len, 65535 + 4);
    scgi_limits def = limits(0, 64);
    CHECK_BUF(b, &def, SCGI_HEAD_DONE, 0, NULL);
    scgi_limits less = limits(65534, 64);
    CHECK_BUF(b, &less, SCGI_ERROR, 431, "header limit");
    free(b.p);
    free(big);
}

/* ---- mapping to wsgi_request --------------------------------------------------------------- */

typedef struct mapped {
    scgi_parser p;
    scgi_var_pos slots[128];
    wsgi_header headers[128], extra[129];
    char scratch[70000];
    wsgi_request req;
    scgi_cgi cgi;
    const char *err;
    int rc;
} mapped;

static mapped *map_buf(const buf *b)
{
    mapped *m = calloc(1, sizeof *m);
    assert_non_null(m);
    scgi_limits lim = limits(0, 128);
    scgi_parser_init(&m->p, &lim, m->slots, 0);
    size_t used;
    assert_int_equal(scgi_parser_feed(&m->p, b->p, b->len, &used), SCGI_HEAD_DONE);
    scgi_map_buffers mb = {m->headers, scgi_parser_nvars(&m->p),
                           m->extra,   scgi_parser_nvars(&m->p) + 1,
                           m->scratch, scgi_parser_head_len(&m->p) + 2};
    m->rc = scgi_map_request(&m->p, b->p, &mb, &m->req, &m->cgi, &m->err);
    return m;
}

static const wsgi_header *find_h(const wsgi_header *hs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (hs[i].name_len == strlen(name) && memcmp(hs[i].name, name, hs[i].name_len) == 0)
            return &hs[i];
    return NULL;
}

#define assert_span(ptr, len, lit)                                                                 \
    do {                                                                                           \
        assert_non_null(ptr);                                                                      \
        assert_int_equal((len), strlen(lit));                                                      \
        if (strlen(lit)) assert_memory_equal((ptr), (lit), strlen(lit));                           \
    } while (0)

static void assert_header(const mapped *m, const char *name, const char *value)
{
    const wsgi_header *h = find_h(m->req.headers, m->req.n_headers, name);
    if (!h) {
        print_error("no header %s\n", name);
        fail();
    }
    assert_span(h->value, h->value_len, value);
}

static void assert_extra(const mapped *m, const char *name, const char *value)
{
    const wsgi_header *h = find_h(m->req.extra_environ, m->req.n_extra_environ, name);
    if (!h) {
        print_error("no extra_environ %s\n", name);
        fail();
    }
    assert_span(h->value, h->value_len, value);
}

static void test_map_get(void **state)
{
    (void)state;
    for (int proto = 0; proto < 2; proto++) {
        buf b =
            proto ? uwsgi_req(lighttpd_get, N_GET - 1, NULL) : scgi_req(lighttpd_get, N_GET, NULL);
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 0);
        assert_string_equal(m->err, "");
        wsgi_request *r = &m->req;
        assert_int_equal(r->struct_size, sizeof(wsgi_request));
        assert_span(r->method, r->method_len, "GET");
        assert_span(r->target, r->target_len, "/app/items?x=1");
        assert_int_equal(r->http_major, 1);
        assert_int_equal(r->http_minor, 1);
        assert_string_equal(r->scheme, "http");
        assert_string_equal(r->server_name, "localhost");
        assert_int_equal(r->server_port, 8080);
        assert_string_equal(r->client_addr, "127.0.0.1");
        assert_int_equal(r->client_port, 51234);
        assert_int_equal(r->content_length, 0);
        assert_null(r->body);
        /* headers, back to header names; no Content-Length for a GET without one */
        assert_int_equal(r->n_headers, 4);
        assert_header(m, "host", "localhost:8080");
        assert_header(m, "user-agent", "curl/7.88.1");
        assert_header(m, "accept", "*/*");
        assert_header(m, "x-forwarded-for", "10.0.0.1");
        assert_null(find_h(r->headers, r->n_headers, "Content-Length"));
        /* the rest as given */
        assert_extra(m, "SCRIPT_NAME", "/app");
        assert_extra(m, "PATH_INFO", "/items");
        assert_extra(m, "QUERY_STRING", "x=1");
        assert_extra(m, "DOCUMENT_ROOT", "/srv/www");
        assert_extra(m, "SERVER_SOFTWARE", "lighttpd/1.4.69");
        assert_extra(m, "REQUEST_SCHEME", "http");
        assert_null(find_h(r->extra_environ, r->n_extra_environ, "REQUEST_METHOD"));
        assert_null(find_h(r->extra_environ, r->n_extra_environ, "CONTENT_LENGTH"));
        assert_null(find_h(r->extra_environ, r->n_extra_environ, "HTTP_HOST"));
        assert_int_equal(r->n_extra_environ, proto ? 11 : 12); /* + SCGI */
        assert_span(m->cgi.script_name, m->cgi.script_name_len, "/app");
        assert_span(m->cgi.path_info, m->cgi.path_info_len, "/items");
        assert_span(m->cgi.query, m->cgi.query_len, "x=1");
        assert_int_equal(m->cgi.https, 0);
        free(m);
        free(b.p);
    }
}

static void test_map_post_h2_https(void **state)
{
    (void)state;
    for (int proto = 0; proto < 2; proto++) {
        buf b = proto ? uwsgi_req(lighttpd_post, N_POST - 1, "hello world")
                      : scgi_req(lighttpd_post, N_POST, "hello world");
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 0);
        wsgi_request *r = &m->req;
        assert_span(r->method, r->method_len, "POST");
        assert_int_equal(r->http_major, 2);
        assert_int_equal(r->http_minor, 0);
        assert_string_equal(r->scheme, "https");
        assert_int_equal(m->cgi.https, 1);
        assert_string_equal(r->client_addr, "::1");
        assert_int_equal(r->content_length, 11);
        /* CONTENT_TYPE / CONTENT_LENGTH as the real ones; HTTP_CONTENT_LENGTH dropped */
        assert_int_equal(r->n_headers, 4);
        assert_header(m, "host", "example.org");
        assert_header(m, "accept-encoding", "gzip");
        assert_header(m, "Content-Type", "text/plain");
        assert_header(m, "Content-Length", "11");
        assert_null(find_h(r->headers, r->n_headers, "content-length"));
        /* fix-root-scriptname: SCRIPT_NAME "" and PATH_INFO the path */
        assert_extra(m, "SCRIPT_NAME", "");
        assert_extra(m, "PATH_INFO", "/upload");
        free(m);
        free(b.p);
    }
}

static void test_map_variants(void **state)
{
    (void)state;
    /* SCRIPT_NAME without PATH_INFO (a "/" mount without fix-root-scriptname): PATH_INFO "" */
    {
        kv v[] = {{"CONTENT_LENGTH", "0"}, {"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/a/b"},
                  {"SCRIPT_NAME", "/a/b"}, {"HTTPS", "ON"},           {"SCGI", "1"}};
        buf b = scgi_req(v, 6, NULL);
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 0);
        assert_extra(m, "SCRIPT_NAME", "/a/b");
        assert_extra(m, "PATH_INFO", "");
        assert_null(m->cgi.path_info);
        assert_null(m->cgi.query);
        assert_string_equal(m->req.scheme, "https");
        /* no SERVER_PROTOCOL: HTTP/1.0; no addresses */
        assert_int_equal(m->req.http_major, 1);
        assert_int_equal(m->req.http_minor, 0);
        assert_null(m->req.server_name);
        assert_null(m->req.client_addr);
        assert_int_equal(m->req.server_port, 0);
        free(m);
        free(b.p);
    }
    /* HTTP_CONTENT_TYPE dropped, an empty CONTENT_TYPE dropped, Content-Length 0 kept when the
     * client sent one; odd header names; a duplicated variable: the first wins */
    {
        kv v[] = {{"CONTENT_LENGTH", "0"},
                  {"REQUEST_METHOD", "POST"},
                  {"REQUEST_METHOD", "PUT"},
                  {"REQUEST_URI", "/"},
                  {"SERVER_PROTOCOL", "HTTP/1.0"},
                  {"CONTENT_TYPE", ""},
                  {"HTTP_CONTENT_TYPE", "a/b"},
                  {"HTTP_CONTENT_LENGTH", "0"},
                  {"HTTP_X_A1_B", "1"},
                  {"HTTP_X.Y", "dropped"},
                  {"HTTP_", "odd"},
                  {"wsgi.input", "no"},
                  {"REMOTE_ADDR", ""},
                  {"REMOTE_PORT", ""},
                  {"REQUEST_SCHEME", "https"},
                  {"SCGI", "1"}};
        buf b = scgi_req(v, 16, NULL);
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 0);
        assert_span(m->req.method, m->req.method_len, "POST");
        assert_int_equal(m->req.http_minor, 0);
        assert_int_equal(m->req.n_headers, 2);
        assert_header(m, "x-a1-b", "1");
        assert_header(m, "Content-Length", "0");
        assert_null(find_h(m->req.headers, m->req.n_headers, "Content-Type"));
        assert_null(find_h(m->req.extra_environ, m->req.n_extra_environ, "wsgi.input"));
        /* not an environ key HTTP_ that names no header (found by fuzz_server) */
        assert_null(find_h(m->req.extra_environ, m->req.n_extra_environ, "HTTP_"));
        assert_null(m->req.client_addr);
        assert_int_equal(m->req.client_port, 0);
        assert_string_equal(m->req.scheme, "https");
        free(m);
        free(b.p);
    }
    /* HTTP/2 and HTTP/3 spellings */
    static const struct {
        const char *proto;
        int major, minor;
    } versions[] = {{"HTTP/1.0", 1, 0},
                    {"HTTP/1.1", 1, 1},
                    {"HTTP/2.0", 2, 0},
                    {"HTTP/2", 2, 0},
                    {"HTTP/3", 3, 0}};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        kv v[] = {{"CONTENT_LENGTH", "0"},
                  {"REQUEST_METHOD", "GET"},
                  {"REQUEST_URI", "/"},
                  {"SERVER_PROTOCOL", versions[i].proto},
                  {"SCGI", "1"}};
        buf b = scgi_req(v, 5, NULL);
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 0);
        assert_int_equal(m->req.http_major, versions[i].major);
        assert_int_equal(m->req.http_minor, versions[i].minor);
        free(m);
        free(b.p);
    }
}

static void test_map_errors(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value, *why;
    } cases[] = {
        {"SERVER_PROTOCOL", "HTTP/1.1x", "SERVER_PROTOCOL"},
        {"SERVER_PROTOCOL", "FTP/1.0", "SERVER_PROTOCOL"},
        {"SERVER_PROTOCOL", "HTTP/", "SERVER_PROTOCOL"},
        {"SERVER_PORT", "65536", "SERVER_PORT"},
        {"SERVER_PORT", "80a", "SERVER_PORT"},
        {"SERVER_PORT", "-1", "SERVER_PORT"},
        {"REMOTE_PORT", "1234567", "REMOTE_PORT"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv v[] = {{"CONTENT_LENGTH", "0"},
                  {"REQUEST_METHOD", "GET"},
                  {"REQUEST_URI", "/"},
                  {cases[i].name, cases[i].value},
                  {"SCGI", "1"}};
        buf b = scgi_req(v, 5, NULL);
        mapped *m = map_buf(&b);
        assert_int_equal(m->rc, 400);
        assert_str_contains(m->err, cases[i].why);
        free(m);
        free(b.p);
    }
    kv nometh[] = {{"CONTENT_LENGTH", "0"}, {"REQUEST_URI", "/"}, {"SCGI", "1"}};
    buf b = scgi_req(nometh, 3, NULL);
    mapped *m = map_buf(&b);
    assert_int_equal(m->rc, 400);
    assert_str_contains(m->err, "REQUEST_METHOD");
    free(m);
    free(b.p);
    kv nouri[] = {{"CONTENT_LENGTH", "0"}, {"REQUEST_METHOD", "GET"}, {"SCGI", "1"}};
    b = scgi_req(nouri, 3, NULL);
    m = map_buf(&b);
    assert_int_equal(m->rc, 400);
    assert_str_contains(m->err, "REQUEST_URI");
    free(m);
    free(b.p);

    /* buffers too small, and a parser not done: -1, never an overrun */
    b = scgi_req(lighttpd_get, N_GET, NULL);
    m = map_buf(&b);
    assert_int_equal(m->rc, 0);
    wsgi_request r;
    scgi_map_buffers small = {m->headers, 3, m->extra, 64, m->scratch, sizeof m->scratch};
    assert_int_equal(scgi_map_request(&m->p, b.p, &small, &r, NULL, NULL), -1);
    small = (scgi_map_buffers){m->headers, 64, m->extra, 5, m->scratch, sizeof m->scratch};
    assert_int_equal(scgi_map_request(&m->p, b.p, &small, &r, NULL, NULL), -1);
    small = (scgi_map_buffers){m->headers, 64, m->extra, 64, m->scratch, 20};
    assert_int_equal(scgi_map_request(&m->p, b.p, &small, &r, NULL, NULL), -1);
    small = (scgi_map_buffers){m->headers, 64, m->extra, 64, NULL, 20};
    assert_int_equal(scgi_map_request(&m->p, b.p, &small, &r, NULL, NULL), -1);
    scgi_parser fresh;
    scgi_var_pos slots[4];
    scgi_limits lim = limits(0, 4);
    scgi_parser_init(&fresh, &lim, slots, 0);
    const char *err = NULL;
    small = (scgi_map_buffers){m->headers, 64, m->extra, 64, m->scratch, sizeof m->scratch};
    assert_int_equal(scgi_map_request(&fresh, b.p, &small, &r, NULL, &err), -1);
    assert_str_contains(err, "not complete");
    free(m);
    free(b.p);
}

/* ---- mutations ------------------------------------------------------------------------------ */

/* Parses @p in both ways; they must agree, and a complete head must map with buffers of exactly
 * the documented sizes (never -1: they always suffice). */
static void agree(const char *in, size_t len, const scgi_limits *lim)
{
    parse_whole(in, len, lim, SCGI_ACCEPT_ALL, 1, ow);
    parse_bytes(in, len, lim, SCGI_ACCEPT_ALL, 1, ob);
    assert_int_equal(ob->rc, ow->rc);
    assert_int_equal(ob->status, ow->status);
    assert_string_equal(ob->error, ow->error);
    assert_int_equal(ob->nvars, ow->nvars);
    assert_int_equal(ob->head_len, ow->head_len);
    if (ow->rc == SCGI_ERROR)
        assert_true(ow->status == 400 || ow->status == 413 || ow->status == 431);
    if (ow->rc != SCGI_HEAD_DONE) return;
    size_t nv = ow->nvars, sl = ow->head_len + 2;
    wsgi_header *h = malloc((nv ? nv : 1) * sizeof *h), *x = malloc((nv + 1) * sizeof *x);
    char *scratch = malloc(sl);
    char *head = malloc(ow->head_len ? ow->head_len : 1);
    assert_true(h && x && scratch && head);
    memcpy(head, in, ow->head_len);
    scgi_map_buffers mb = {h, nv, x, nv + 1, scratch, sl};
    wsgi_request r;
    const char *err = NULL;
    int rc = scgi_map_request(&ow->p, head, &mb, &r, NULL, &err);
    if (rc != 0 && rc != 400) print_error("scgi_map_request: %d (%s)\n", rc, err);
    assert_true(rc == 0 || rc == 400);
    free(h), free(x), free(scratch), free(head);
}

static uint32_t lcg(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return *seed >> 8;
}

/* Deterministic mutations of real requests (a byte changed, inserted or dropped, or the input
 * cut): every one is parsed the same way whole and byte by byte, with a clean result. */
static void test_mutations(void **state)
{
    (void)state;
    scgi_limits lim = limits(0, 64);
    buf base[4] = {scgi_req(lighttpd_get, N_GET, NULL), scgi_req(lighttpd_post, N_POST, "hi"),
                   uwsgi_req(lighttpd_get, N_GET - 1, NULL),
                   uwsgi_req(lighttpd_post, N_POST - 1, "hello world")};
    static const unsigned char special[] = {0, ':', ',', '0', '9', 0xff, 1, 2, 'C', 'S'};
    uint32_t seed = 12345;
    char *m = malloc(base[1].len + base[3].len + 16);
    assert_non_null(m);
    for (int round = 0; round < 400; round++) {
        const buf *b = &base[round % 4];
        size_t len = b->len;
        memcpy(m, b->p, len);
        int edits = 1 + (int)(lcg(&seed) % 3);
        for (int e = 0; e < edits && len > 0; e++) {
            size_t at = lcg(&seed) % len;
            unsigned char v =
                (lcg(&seed) & 1) ? special[lcg(&seed) % sizeof special] : (unsigned char)lcg(&seed);
            switch (lcg(&seed) % 4) {
            case 0: m[at] = (char)v; break;
            case 1: /* insert */
                memmove(m + at + 1, m + at, len - at);
                m[at] = (char)v;
                len++;
                break;
            case 2: /* drop */
                memmove(m + at, m + at + 1, len - at - 1);
                len--;
                break;
            default: len = at; break; /* cut */
            }
        }
        agree(m, len, &lim);
    }
    free(m);
    for (int i = 0; i < 4; i++)
        free(base[i].p);
}

/* ---- the uwsgi fast path (uwsgi_vars_whole) against the byte-wise states -------------------- */

/* Fed in two pieces, split at @p k: the second piece may take the fast path where the first
 * could not (the vars are whole only from there). */
static void parse_split(const char *in, size_t len, size_t k, const scgi_limits *lim, outcome *o)
{
    scgi_parser p;
    assert_int_equal(scgi_parser_init(&p, lim, o->slots, SCGI_ACCEPT_ALL), 0);
    char *a = malloc(k ? k : 1), *b = malloc(len - k ? len - k : 1);
    assert_true(a && b);
    memcpy(a, in, k);
    memcpy(b, in + k, len - k);
    size_t u1 = 0, u2 = 0;
    scgi_result rc = scgi_parser_feed(&p, a, k, &u1);
    if (rc == SCGI_NEED_MORE) rc = scgi_parser_feed(&p, b, len - k, &u2);
    free(a), free(b);
    finish(&p, rc, u1 + u2, 1, o);
    o->p = p;
}

static void same_outcome(const outcome *a, const outcome *b)
{
    assert_int_equal(a->rc, b->rc);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->error, b->error);
    assert_int_equal(a->proto, b->proto);
    assert_int_equal(a->head_len, b->head_len);
    assert_int_equal(a->content_length, b->content_length);
    assert_int_equal(a->nvars, b->nvars);
    assert_int_equal(memcmp(a->slots, b->slots, a->nvars * sizeof a->slots[0]), 0);
    if (a->rc != SCGI_ERROR) assert_int_equal(a->consumed, b->consumed);
}

/* Random uwsgi packets (special and ordinary names, good and bad CONTENT_LENGTH values, key and
 * value lengths past the vars, a datasize shorter or longer than the vars, few variable slots):
 * whole (the fast path), byte by byte (the states) and split at every point agree on everything. */
static void test_uwsgi_fast_path_matches_bytewise(void **state)
{
    (void)state;
    static const char *const names[] = {"CONTENT_LENGTH",
                                        "CONTENT_LENGT",
                                        "CONTENT_LENGTHX",
                                        "REQUEST_METHOD",
                                        "A",
                                        "SCGI",
                                        "HTTP_X_Y",
                                        ""};
    static const char *const values[] = {"",  "0",   "12", "1a", "99999999999999999999",
                                         "1", "GET", "007"};
    outcome *os = malloc(sizeof *os);
    assert_non_null(os);
    uint32_t seed = 777;
    for (int round = 0; round < 4000; round++) {
        buf pay = {0}, out = {0};
        unsigned nv = lcg(&seed) % 7;
        for (unsigned v = 0; v < nv; v++) {
            const char *n = names[lcg(&seed) % 8], *val = values[lcg(&seed) % 8];
            size_t nl = strlen(n), vl = strlen(val), knl = nl, kvl = vl;
            switch (lcg(&seed) % 24) {
            case 0: knl = nl + 1 + lcg(&seed) % 40; break; /* key length past the vars */
            case 1: kvl = vl + 1 + lcg(&seed) % 40; break; /* value length past the vars */
            case 2: knl = nl ? nl - 1 : 0; break;          /* key length one short */
            default: break;
            }
            le16(&pay, knl);
            buf_add(&pay, n, nl);
            le16(&pay, kvl);
            buf_add(&pay, val, vl);
        }
        if (lcg(&seed) % 10 == 0) buf_add(&pay, "\x01", 1); /* a stray byte: no room for a length */
        size_t ds = pay.len;
        switch (lcg(&seed) % 10) {
        case 0: ds = ds > 3 ? ds - 1 - lcg(&seed) % 3 : ds; break; /* datasize short */
        case 1: ds += 1 + lcg(&seed) % 6; break;                   /* datasize long: body in vars */
        default: break;
        }
        unsigned char h[4] = {0, (unsigned char)(ds & 0xff), (unsigned char)(ds >> 8), 0};
        buf_add(&out, h, 4);
        buf_add(&out, pay.p ? pay.p : "", pay.len);
        if (lcg(&seed) & 1)
            buf_str(&out, "\x02\x00"
                          "BODY");
        scgi_limits lim = limits(lcg(&seed) % 3 ? 0 : 8 + lcg(&seed) % 64, 1 + lcg(&seed) % 8);
        parse_whole(out.p, out.len, &lim, SCGI_ACCEPT_ALL, 1, ow);
        parse_bytes(out.p, out.len, &lim, SCGI_ACCEPT_ALL, 1, ob);
        same_outcome(ow, ob);
        for (size_t k = 0; k <= out.len; k++) {
            parse_split(out.p, out.len, k, &lim, os);
            same_outcome(ow, os);
        }
        free(pay.p);
        free(out.p);
    }
    free(os);
}

/* ---- end to end: the environ an app sees ----------------------------------------------------- */

/* The dump app's line for @p key, decoded from hex; NULL if absent. */
static char *env_value(const th_rec *rec, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = rec->body; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len >= klen + 5 && strncmp(p, key, klen) == 0 && strncmp(p + klen, "\tstr\t", 5) == 0) {
            const char *hex = p + klen + 5;
            size_t n = (len - klen - 5) / 2;
            char *out = malloc(n + 1);
            assert_non_null(out);
            for (size_t i = 0; i < n; i++) {
                unsigned x;
                sscanf(hex + 2 * i, "%2x", &x);
                out[i] = (char)x;
            }
            out[n] = '\0';
            return out;
        }
        p = eol ? eol + 1 : NULL;
    }
    return NULL;
}

static void assert_env(const th_rec *rec, const char *key, const char *expected)
{
    char *v = env_value(rec, key);
    if (!expected) {
        if (v) print_error("environ[%s] = \"%s\", expected absent\n", key, v);
        assert_null(v);
        return;
    }
    if (!v || strcmp(v, expected) != 0) {
        print_error("environ[%s] = \"%s\", expected \"%s\"\n", key, v ? v : "(absent)", expected);
        fail();
    }
    free(v);
}

static void run_dump(const buf *b, th_rec *rec)
{
    mapped *m = map_buf(b);
    assert_int_equal(m->rc, 0);
    m->req.body = b->p + scgi_parser_head_len(&m->p);
    m->req.body_len = b->len - scgi_parser_head_len(&m->p);
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app("env_apps:dump"), &m->req, &env), WSGI_OK);
    free(m); /* wsgi_env_build copied the request */
    th_result res;
    memset(&res, 0, sizeof res);
    th_rec_init(rec);
    th_call_drain(env, rec, &res);
    assert_rc(res.call_rc, WSGI_OK);
    assert_int_equal(rec->status, 200);
}

static void test_environ_end_to_end(void **state)
{
    (void)state;
    th_rec rec;
    buf b = scgi_req(lighttpd_get, N_GET, NULL);
    run_dump(&b, &rec);
    assert_env(&rec, "REQUEST_METHOD", "GET");
    assert_env(&rec, "SCRIPT_NAME", "/app");
    assert_env(&rec, "PATH_INFO", "/items");
    assert_env(&rec, "QUERY_STRING", "x=1");
    assert_env(&rec, "REQUEST_URI", "/app/items?x=1");
    assert_env(&rec, "SERVER_PROTOCOL", "HTTP/1.1");
    assert_env(&rec, "SERVER_NAME", "localhost");
    assert_env(&rec, "SERVER_PORT", "8080");
    assert_env(&rec, "REMOTE_ADDR", "127.0.0.1");
    assert_env(&rec, "REMOTE_PORT", "51234");
    assert_env(&rec, "HTTP_HOST", "localhost:8080");
    assert_env(&rec, "HTTP_X_FORWARDED_FOR", "10.0.0.1");
    assert_env(&rec, "HTTP_USER_AGENT", "curl/7.88.1");
    assert_env(&rec, "CONTENT_LENGTH", NULL);
    assert_env(&rec, "SERVER_SOFTWARE", "lighttpd/1.4.69");
    assert_env(&rec, "DOCUMENT_ROOT", "/srv/www");
    assert_env(&rec, "wsgi.url_scheme", "http");
    th_rec_free(&rec);
    free(b.p);

    b = uwsgi_req(lighttpd_post, N_POST - 1, "hello world");
    run_dump(&b, &rec);
    assert_env(&rec, "REQUEST_METHOD", "POST");
    assert_env(&rec, "SCRIPT_NAME", "");
    assert_env(&rec, "PATH_INFO", "/upload");
    assert_env(&rec, "SERVER_PROTOCOL", "HTTP/2.0");
    assert_env(&rec, "wsgi.url_scheme", "https");
    assert_env(&rec, "HTTPS", "on");
    assert_env(&rec, "CONTENT_TYPE", "text/plain");
    assert_env(&rec, "CONTENT_LENGTH", "11");
    assert_env(&rec, "HTTP_CONTENT_LENGTH", NULL);
    assert_env(&rec, "HTTP_CONTENT_TYPE", NULL);
    assert_env(&rec, "HTTP_ACCEPT_ENCODING", "gzip");
    assert_env(&rec, "REMOTE_ADDR", "::1");
    assert_env(&rec, "SERVER_NAME", "example.org");
    assert_env(&rec, "SERVER_PORT", "443");
    th_rec_free(&rec);
    free(b.p);
}

/* SCGI forbids repeated names ("Duplicate names are not allowed in the headers",
 * python.ca/scgi/protocol.txt); a gateway that repeats one anyway gets the documented rule, the
 * first one wins, for the variables that say where the request goes too: SCRIPT_NAME, PATH_INFO,
 * QUERY_STRING and REQUEST_SCHEME reach the environ once, with the values the mapping itself used
 * (scgi_cgi, the scheme; ASGI's root_path is the first SCRIPT_NAME). */
static void test_map_duplicates_first_wins(void **state)
{
    (void)state;
    kv v[] = {{"CONTENT_LENGTH", "0"},
              {"REQUEST_METHOD", "GET"},
              {"REQUEST_URI", "/mnt/x?a=1"},
              {"SCRIPT_NAME", "/mnt"},
              {"PATH_INFO", "/x"},
              {"QUERY_STRING", "a=1"},
              {"REQUEST_SCHEME", "http"},
              {"SCRIPT_NAME", "/other"},
              {"PATH_INFO", "/y"},
              {"QUERY_STRING", "b=2"},
              {"REQUEST_SCHEME", "https"},
              {"SERVER_PROTOCOL", "HTTP/1.1"},
              {"SCGI", "1"}};
    buf b = scgi_req(v, sizeof v / sizeof v[0], NULL);
    mapped *m = map_buf(&b);
    assert_int_equal(m->rc, 0);
    assert_span(m->cgi.script_name, m->cgi.script_name_len, "/mnt");
    assert_span(m->cgi.path_info, m->cgi.path_info_len, "/x");
    assert_span(m->cgi.query, m->cgi.query_len, "a=1");
    assert_string_equal(m->req.scheme, "http");
    static const char *const names[] = {"SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                                        "REQUEST_SCHEME"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n = 0;
        for (size_t i = 0; i < m->req.n_extra_environ; i++)
            n += m->req.extra_environ[i].name_len == strlen(names[k]) &&
                 memcmp(m->req.extra_environ[i].name, names[k], strlen(names[k])) == 0;
        if (n != 1) print_error("%s in extra_environ %zu times\n", names[k], n);
        assert_int_equal(n, 1);
    }
    free(m);

    th_rec rec;
    run_dump(&b, &rec);
    assert_env(&rec, "SCRIPT_NAME", "/mnt");
    assert_env(&rec, "PATH_INFO", "/x");
    assert_env(&rec, "QUERY_STRING", "a=1");
    assert_env(&rec, "REQUEST_SCHEME", "http");
    assert_env(&rec, "wsgi.url_scheme", "http");
    th_rec_free(&rec);
    free(b.p);
}

static int setup(void **state)
{
    ow = calloc(1, sizeof *ow);
    ob = calloc(1, sizeof *ob);
    if (!ow || !ob) return -1;
    return th_group_setup(state);
}

static int teardown(void **state)
{
    free(ow);
    free(ob);
    return th_group_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_init_args),
        cmocka_unit_test(test_scgi_lighttpd_get),
        cmocka_unit_test(test_scgi_lighttpd_post_body),
        cmocka_unit_test(test_scgi_minimal),
        cmocka_unit_test(test_scgi_truncated),
        cmocka_unit_test(test_scgi_netstring_length),
        cmocka_unit_test(test_scgi_wrong_lengths),
        cmocka_unit_test(test_scgi_content_length),
        cmocka_unit_test(test_scgi_scgi_var),
        cmocka_unit_test(test_scgi_limits),
        cmocka_unit_test(test_uwsgi_lighttpd),
        cmocka_unit_test(test_uwsgi_content_length),
        cmocka_unit_test(test_uwsgi_malformed),
        cmocka_unit_test(test_map_get),
        cmocka_unit_test(test_map_post_h2_https),
        cmocka_unit_test(test_map_variants),
        cmocka_unit_test(test_map_errors),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_uwsgi_fast_path_matches_bytewise),
        cmocka_unit_test(test_environ_end_to_end),
        cmocka_unit_test(test_map_duplicates_first_wins),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
