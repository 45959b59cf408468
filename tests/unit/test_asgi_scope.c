/*
 * test_asgi_scope.c - the ASGI http scope built by asgi_dispatch (HTTP spec 2.5): every key with
 * its exact type and value, percent/UTF-8 decoding of path, raw bytes, header normalisation,
 * client/server, per-request copies of state/asgi/extensions, extensions offered according to
 * the handler, invalid requests, and ASGI/WSGI interface detection.
 *
 * The app asgi_scope_apps:dump sends back one line per scope key: KEY \t TYPE \t canon(VALUE),
 * where canon is repr() with sorted dict keys, so tuples, lists, bytes and str stay distinct.
 */
#include "asgi_harness.h"

#define DUMP "asgi_scope_apps:dump"

/* The "TYPE\tVALUE" part of @key's line in the dump, copied into @out; 0 if absent. */
static int scope_find(const ah_rec *rec, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    const char *p = rec->body;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '\t') {
            snprintf(out, cap, "%.*s", (int)(len - klen - 1), p + klen + 1);
            return 1;
        }
        p = eol ? eol + 1 : NULL;
    }
    return 0;
}

static size_t scope_lines(const ah_rec *rec)
{
    size_t n = rec->body_len ? 1 : 0;
    for (const char *p = rec->body; p && *p; p++)
        n += *p == '\n';
    return n;
}

static void assert_scope(const ah_rec *rec, const char *key, const char *type, const char *canon)
{
    char got[8192], want[8192];
    snprintf(want, sizeof want, "%s\t%s", type, canon);
    if (!scope_find(rec, key, got, sizeof got)) {
        print_error("scope has no key \"%s\"; dump:\n%s\n", key, rec->body);
        fail();
    }
    if (strcmp(got, want) != 0) {
        print_error("scope[\"%s\"] is  %s\n          expected %s\n", key, got, want);
        fail();
    }
}

/* Dispatches @r to the dump app @app with @rec's handler and checks a clean 200. */
static void dump_scope(wsgi_app *app, th_req *r, ah_rec *rec)
{
    ah_run(app, r, rec);
    ah_assert_ok(rec, 200, NULL);
}

/* The keys of the HTTP connection scope, and nothing else. */
static void assert_scope_keys(const ah_rec *rec)
{
    static const char *const keys[] = {
        "type",         "asgi",      "http_version", "method", "scheme", "path",  "raw_path",
        "query_string", "root_path", "headers",      "client", "server", "state", "extensions",
    };
    char buf[8192];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!scope_find(rec, keys[i], buf, sizeof buf)) print_error("missing key %s\n", keys[i]);
        assert_true(scope_find(rec, keys[i], buf, sizeof buf));
    }
    assert_scope(rec, "@scope-type", "dict", "");
    if (scope_lines(rec) != sizeof keys / sizeof keys[0] + 1)
        print_error("unexpected scope keys:\n%s\n", rec->body);
    assert_int_equal(scope_lines(rec), sizeof keys / sizeof keys[0] + 1);
}

static void test_full_scope(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/a%20b/%C3%A9?x=%20y&z=%C3%A9");
    th_req_header(&r, "Host", "example.com");
    th_req_header(&r, "X-Dup", "one");
    th_req_header(&r, "Accept", "  text/html \t");
    th_req_header(&r, "x-dup", "two");
    th_req_header(&r, "X-DUP", "three");
    r.req.client_addr = "203.0.113.7";
    r.req.client_port = 54321;
    r.req.server_name = "srv.example";
    r.req.server_port = 8080;
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);

    assert_scope_keys(&rec);
    assert_scope(&rec, "type", "str", "'http'");
    assert_scope(&rec, "asgi", "dict", "{'spec_version': '2.5', 'version': '3.0'}");
    assert_scope(&rec, "http_version", "str", "'1.1'");
    assert_scope(&rec, "method", "str", "'GET'");
    assert_scope(&rec, "scheme", "str", "'http'");
    assert_scope(&rec, "path", "str", "'/a b/\xc3\xa9'");
    assert_scope(&rec, "raw_path", "bytes", "b'/a%20b/%C3%A9'");
    assert_scope(&rec, "query_string", "bytes", "b'x=%20y&z=%C3%A9'");
    assert_scope(&rec, "root_path", "str", "''");
    assert_scope(&rec, "headers", "list",
                 "[(b'host', b'example.com'), (b'x-dup', b'one'), (b'accept', b'text/html'), "
                 "(b'x-dup', b'two'), (b'x-dup', b'three')]");
    assert_scope(&rec, "client", "tuple", "('203.0.113.7', 54321)");
    assert_scope(&rec, "server", "tuple", "('srv.example', 8080)");
    assert_scope(&rec, "state", "dict", "{}");
    assert_scope(&rec, "extensions", "dict", "{}");
    ah_rec_free(&rec);
}

static void test_http10_https_no_client(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "POST", "/submit");
    r.req.http_minor = 0;
    r.req.scheme = "https";
    /* client_addr NULL (e.g. a unix socket), server_name/port defaults */
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "http_version", "str", "'1.0'");
    assert_scope(&rec, "method", "str", "'POST'");
    assert_scope(&rec, "scheme", "str", "'https'");
    assert_scope(&rec, "client", "NoneType", "None");
    assert_scope(&rec, "server", "tuple", "('localhost', 443)");
    assert_scope(&rec, "headers", "list", "[]");
    assert_scope(&rec, "query_string", "bytes", "b''");
    ah_rec_free(&rec);
}

static void test_http2_version(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/h2");
    r.req.http_major = 2;
    r.req.http_minor = 0;
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "http_version", "str", "'2'");
    ah_rec_free(&rec);
}

/* WSGI_REQUEST_UNIX_SOCKET: no port to give, so server is None; the next request (TCP again)
 * gets its tuple back although the scope template kept None. */
static void test_server_unix_socket(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/u");
    r.req.server_name = "localhost";
    r.req.flags |= WSGI_REQUEST_UNIX_SOCKET;
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "server", "NoneType", "None");
    assert_scope(&rec, "client", "NoneType", "None");
    ah_rec_free(&rec);
    r.req.flags &= ~(unsigned)WSGI_REQUEST_UNIX_SOCKET;
    r.req.server_port = 8000;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "server", "tuple", "('localhost', 8000)");
    ah_rec_free(&rec);
}

static void test_server_defaults_http(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "DELETE", "/");
    r.req.scheme = "http";
    r.req.client_addr = "::1";
    r.req.client_port = 4444;
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "method", "str", "'DELETE'");
    assert_scope(&rec, "scheme", "str", "'http'");
    assert_scope(&rec, "server", "tuple", "('localhost', 80)");
    assert_scope(&rec, "client", "tuple", "('::1', 4444)");
    assert_scope(&rec, "path", "str", "'/'");
    assert_scope(&rec, "raw_path", "bytes", "b'/'");
    ah_rec_free(&rec);
}

static void test_extension_method_passes_through(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "PROPFIND", "/dav");
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "method", "str", "'PROPFIND'");
    ah_rec_free(&rec);
}

/* The scope-dumping app mounted at @script_name (wsgi_app_options::script_name). */
static wsgi_app *dump_mounted_at(const char *script_name)
{
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = DUMP;
    opts.script_name = script_name;
    return th_app_with(&opts);
}

/* root_path is the mount point; path is the full request path (ASGI: "PATH_INFO can be derived
 * from path and root_path"), decoded, with %2F decoded too while raw_path keeps it. */
static void test_root_path_from_script_name(void **state)
{
    (void)state;
    wsgi_app *app = dump_mounted_at("/mount");
    th_req r;
    th_req_init(&r, "GET", "/mount/x%2Fy?q");
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "'/mount'");
    assert_scope(&rec, "path", "str", "'/mount/x/y'");
    assert_scope(&rec, "raw_path", "bytes", "b'/mount/x%2Fy'");
    assert_scope(&rec, "query_string", "bytes", "b'q'");
    ah_rec_free(&rec);
}

/* A gateway that splits the path itself (lighttpd's SCGI: SCRIPT_NAME / PATH_INFO among the CGI
 * variables, REQUEST_URI whole) passes SCRIPT_NAME in extra_environ: it becomes root_path, over
 * the app's own mount point; path stays the whole path; other extra variables do not show. */
static void test_root_path_from_extra_environ(void **state)
{
    (void)state;
    wsgi_app *app = dump_mounted_at("/mount");
    th_req r;
    th_req_init(&r, "GET", "/lt/app/x?q");
    th_req_extra(&r, "PATH_INFO", "/x");
    th_req_extra(&r, "SCRIPT_NAME", "/lt/app");
    th_req_extra(&r, "DOCUMENT_ROOT", "/srv");
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "'/lt/app'");
    assert_scope(&rec, "path", "str", "'/lt/app/x'");
    assert_scope(&rec, "query_string", "bytes", "b'q'");
    char got[256];
    assert_false(scope_find(&rec, "DOCUMENT_ROOT", got, sizeof got));
    ah_rec_free(&rec);
    /* An empty SCRIPT_NAME (an app mounted at the root) is the root. */
    th_req_init(&r, "GET", "/x");
    th_req_extra(&r, "SCRIPT_NAME", "");
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "''");
    ah_rec_free(&rec);
}

/* root_path is a str decoded as path is (UTF-8), so that a mount point with non-ASCII characters
 * stays the prefix of path: "/caf\xc3\xa9" (UTF-8 bytes, from wsgi_app_options::script_name or a
 * gateway's SCRIPT_NAME) is "/caf\u00e9", as in the path "/caf%C3%A9/x". asgiref's WSGI adapter
 * makes SCRIPT_NAME of it with .encode("utf8").decode("latin1"), as it does PATH_INFO of path: a
 * latin-1 decoded root_path ("/caf\u00c3\u00a9") would no longer match. */
static void test_root_path_is_utf8_like_path(void **state)
{
    (void)state;
    wsgi_app *app = dump_mounted_at("/caf\xc3\xa9");
    th_req r;
    th_req_init(&r, "GET", "/caf%C3%A9/x");
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "'/caf\xc3\xa9'");
    assert_scope(&rec, "path", "str", "'/caf\xc3\xa9/x'");
    ah_rec_free(&rec);
    /* From a gateway's SCRIPT_NAME: the same; invalid UTF-8 replaced, as in path. */
    th_req_init(&r, "GET", "/caf%C3%A9/x");
    th_req_extra(&r, "SCRIPT_NAME", "/caf\xc3\xa9");
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "'/caf\xc3\xa9'");
    ah_rec_free(&rec);
    th_req_init(&r, "GET", "/x");
    th_req_extra(&r, "SCRIPT_NAME", "/a\xff");
    ah_rec_init(&rec);
    dump_scope(app, &r, &rec);
    assert_scope(&rec, "root_path", "str", "'/a\xef\xbf\xbd'");
    ah_rec_free(&rec);
}

static void test_absolute_form_target(void **state)
{
    (void)state;
    static const struct {
        const char *target, *path, *raw_path, *query;
    } cases[] = {
        {"http://example.com:8080/p%20q?x=1", "'/p q'", "b'/p%20q'", "b'x=1'"},
        {"https://h.example/only/path", "'/only/path'", "b'/only/path'", "b''"},
        {"http://[2001:db8::1]:80/v6?a=b?c", "'/v6'", "b'/v6'", "b'a=b?c'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        th_req_init(&r, "GET", cases[i].target);
        ah_rec rec;
        ah_rec_init(&rec);
        dump_scope(th_app(DUMP), &r, &rec);
        print_message("target %s\n", cases[i].target);
        assert_scope(&rec, "path", "str", cases[i].path);
        assert_scope(&rec, "raw_path", "bytes", cases[i].raw_path);
        assert_scope(&rec, "query_string", "bytes", cases[i].query);
        ah_rec_free(&rec);
    }
}

static void test_path_decoding_corners(void **state)
{
    (void)state;
    static const struct {
        const char *target, *path, *raw_path, *query;
    } cases[] = {
        /* Invalid UTF-8 after percent-decoding: replaced (U+FFFD), as uvicorn does. */
        {"/x%FFy", "'/x\xef\xbf\xbdy'", "b'/x%FFy'", "b''"},
        /* Malformed escapes stay literal. */
        {"/%zz/%4", "'/%zz/%4'", "b'/%zz/%4'", "b''"},
        /* Raw (unencoded) UTF-8 on the wire is decoded too. */
        {"/caf\xc3\xa9", "'/caf\xc3\xa9'", "b'/caf\\xc3\\xa9'", "b''"},
        /* An empty query is present but empty; a '+' is not a space in a path. */
        {"/a+b?", "'/a+b'", "b'/a+b'", "b''"},
        /* The query string is raw bytes, never decoded. */
        {"/q?%41=%42+c&d", "'/q'", "b'/q'", "b'%41=%42+c&d'"},
        /* %25 decodes to a single '%' that is not decoded again. */
        {"/p%2541", "'/p%41'", "b'/p%2541'", "b''"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        th_req_init(&r, "GET", cases[i].target);
        ah_rec rec;
        ah_rec_init(&rec);
        dump_scope(th_app(DUMP), &r, &rec);
        print_message("target %s\n", cases[i].target);
        assert_scope(&rec, "path", "str", cases[i].path);
        assert_scope(&rec, "raw_path", "bytes", cases[i].raw_path);
        assert_scope(&rec, "query_string", "bytes", cases[i].query);
        ah_rec_free(&rec);
    }
}

/* Header values are bytes as sent (only the surrounding OWS trimmed), including non-ASCII
 * bytes and inner whitespace; names are lowercased bytes. */
static void test_header_bytes(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X-CaSe", "caf\xe9");
    th_req_header(&r, "Cookie", "a=1;  b=2");
    th_req_header(&r, "X-Empty", "");
    th_req_header(&r, "X-Blank", " \t ");
    th_req_header(&r, "Set-Cookie", "\tx=\"q, r\" ");
    th_req_header(&r, "X-UTF8", "\xe2\x82\xac");
    ah_rec rec;
    ah_rec_init(&rec);
    dump_scope(th_app(DUMP), &r, &rec);
    assert_scope(&rec, "headers", "list",
                 "[(b'x-case', b'caf\\xe9'), (b'cookie', b'a=1;  b=2'), (b'x-empty', b''), "
                 "(b'x-blank', b''), (b'set-cookie', b'x=\"q, r\"'), "
                 "(b'x-utf8', b'\\xe2\\x82\\xac')]");
    ah_rec_free(&rec);
}

/* Each request gets its own state dict (without lifespan: empty), asgi dict, extensions and
 * headers list: what one request's app mutates is not seen by the next. */
static void test_scope_objects_are_per_request(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        ah_rec rec;
        ah_rec_init(&rec);
        ah_get("asgi_scope_apps:mutate", "/", &rec);
        ah_assert_ok(&rec, 200, "state={} asgi={'spec_version': '2.5', 'version': '3.0'}");
        ah_rec_free(&rec);
    }
    ah_rec rec;
    ah_rec_init(&rec);
    ah_get(DUMP, "/", &rec);
    ah_assert_ok(&rec, 200, NULL);
    assert_scope(&rec, "extensions", "dict", "{}");
    assert_scope(&rec, "headers", "list", "[]");
    ah_rec_free(&rec);
}

/* The scope is a copy of a template holding the last request's values: one that differs from the
 * request before (and then the same again) must show its own. */
static void test_values_follow_each_request(void **state)
{
    (void)state;
    const char *paths[] = {"/a?x=1", "/b", "/b", "/a?x=1", "/%C3%A9"};
    const char *want[] = {"'/a'", "'/b'", "'/b'", "'/a'", "'/\xc3\xa9'"};
    const char *query[] = {"b'x=1'", "b''", "b''", "b'x=1'", "b''"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        ah_rec rec;
        ah_rec_init(&rec);
        ah_get(DUMP, paths[i], &rec);
        ah_assert_ok(&rec, 200, NULL);
        assert_scope(&rec, "path", "str", want[i]);
        assert_scope(&rec, "query_string", "bytes", query[i]);
        ah_rec_free(&rec);
    }
}

static void test_extensions_follow_handler(void **state)
{
    (void)state;
    static const struct {
        int trailers, sendfile;
        const char *expected;
    } cases[] = {
        {0, 0, "{}"},
        {1, 0, "{'http.response.trailers': {}}"},
        {0, 1, "{'http.response.pathsend': {}}"},
        {1, 1, "{'http.response.pathsend': {}, 'http.response.trailers': {}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        th_req_init(&r, "GET", "/");
        ah_rec rec;
        ah_rec_init(&rec);
        rec.with_trailers = cases[i].trailers;
        rec.with_sendfile = cases[i].sendfile;
        rec.with_read_resume = 1; /* not an extension */
        dump_scope(th_app(DUMP), &r, &rec);
        assert_scope(&rec, "extensions", "dict", cases[i].expected);
        ah_rec_free(&rec);
    }
}

/* ---- refused dispatches -------------------------------------------------------------------- */

static int refused_start(void *ud, const wsgi_response_head *h)
{
    (void)ud;
    (void)h;
    return 0;
}
static int refused_body(void *ud, const char *d, size_t l, int m)
{
    (void)ud;
    (void)d;
    (void)l;
    (void)m;
    return 0;
}
static void refused_done(void *ud, int r)
{
    (void)ud;
    (void)r;
}

static void assert_refused(wsgi_app *app, const wsgi_request *req, const asgi_handler *h,
                           int expected, const char *what)
{
    asgi_conn *conn = (asgi_conn *)&conn; /* must be overwritten with NULL */
    int rc = asgi_dispatch(app, req, h, NULL, &conn);
    if (rc != expected) print_error("case: %s\n", what);
    assert_rc(rc, expected);
    assert_null(conn);
    if (wsgi_errmsg()[0] == '\0') print_error("case %s: empty wsgi_errmsg()\n", what);
    assert_true(wsgi_errmsg()[0] != '\0');
}

static void test_invalid_requests(void **state)
{
    (void)state;
    wsgi_app *app = th_app(DUMP);
    asgi_handler h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    h.on_start = refused_start;
    h.on_body = refused_body;
    h.on_done = refused_done;

    th_req r;
    th_req_init(&r, "GET", "/");
    r.req.method = NULL;
    r.req.method_len = 0;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "no method");

    th_req_init(&r, "GE T", "/");
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "method not a token");

    th_req_init(&r, "GET", "/");
    r.req.target = NULL;
    r.req.target_len = 0;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "no target");

    th_req_init(&r, "GET", "no-slash");
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "target neither origin nor absolute form");

    th_req_init(&r, "GET", "/");
    r.req.n_headers = 2;
    r.req.headers = NULL;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "NULL headers with a count");

    th_req_init(&r, "GET", "/");
    th_req_header_n(&r, "X", NULL, 3);
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "NULL header value with a length");

    th_req_init(&r, "GET", "/");
    r.req.body_len = 4;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "NULL body with a length");

    th_req_init(&r, "GET", "/");
    r.req.content_length = -5;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "negative content_length");

    th_req_init(&r, "GET", "/");
    r.req.struct_size = 8;
    assert_refused(app, &r.req, &h, WSGI_ERR_INVAL, "struct_size too small");

    th_req_init(&r, "GET", "/");
    assert_refused(NULL, &r.req, &h, WSGI_ERR_INVAL, "NULL app");
    assert_refused(app, NULL, &h, WSGI_ERR_INVAL, "NULL request");
    assert_refused(app, &r.req, NULL, WSGI_ERR_INVAL, "NULL handler");
    assert_rc(asgi_dispatch(app, &r.req, &h, NULL, NULL), WSGI_ERR_INVAL);

    asgi_handler bad = h;
    bad.on_start = NULL;
    assert_refused(app, &r.req, &bad, WSGI_ERR_INVAL, "no on_start");
    bad = h;
    bad.on_body = NULL;
    assert_refused(app, &r.req, &bad, WSGI_ERR_INVAL, "no on_body");
    bad = h;
    bad.on_done = NULL;
    assert_refused(app, &r.req, &bad, WSGI_ERR_INVAL, "no on_done");
    bad = h;
    bad.struct_size = 0;
    assert_refused(app, &r.req, &bad, WSGI_ERR_INVAL, "handler struct_size 0");

    /* None of these started anything: the loop has no work. */
    assert_int_equal(ah_settle(), -1);

    /* A valid request right after works, with no stale message. */
    ah_rec rec;
    ah_rec_init(&rec);
    asgi_conn *conn = ah_dispatch(app, &r, &rec);
    assert_string_equal(wsgi_errmsg(), "");
    ah_drive_done(&rec);
    asgi_conn_free(conn);
    ah_assert_ok(&rec, 200, NULL);
    ah_rec_free(&rec);
}

static void test_wsgi_app_is_refused(void **state)
{
    (void)state;
    asgi_handler h;
    memset(&h, 0, sizeof h);
    h.struct_size = sizeof h;
    h.on_start = refused_start;
    h.on_body = refused_body;
    h.on_done = refused_done;
    th_req r;
    th_req_init(&r, "GET", "/");
    assert_refused(th_app("asgi_scope_apps:wsgi_function"), &r.req, &h, WSGI_ERR_INTERFACE,
                   "WSGI app");
    /* An ASGI app forced to WSGI is WSGI. */
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = "asgi_scope_apps:async_function";
    opts.interface = WSGI_INTERFACE_WSGI;
    assert_refused(th_app_with(&opts), &r.req, &h, WSGI_ERR_INTERFACE, "forced WSGI");
}

/* ---- interface detection ------------------------------------------------------------------- */

static void test_interface_detection(void **state)
{
    (void)state;
    static const struct {
        const char *spec;
        wsgi_interface expected;
        const char *body; /* what it answers over its interface */
    } cases[] = {
        {"asgi_scope_apps:async_function", WSGI_INTERFACE_ASGI, "async function"},
        {"asgi_scope_apps:asgi3_instance", WSGI_INTERFACE_ASGI, "class instance instance"},
        {"asgi_scope_apps:make_asgi3('made')", WSGI_INTERFACE_ASGI, "class instance made"},
        {"asgi_scope_apps:bound_method", WSGI_INTERFACE_ASGI, "bound method bm"},
        {"asgi_scope_apps:asgi_partial", WSGI_INTERFACE_ASGI, "functools partial"},
        {"asgi_scope_apps:wsgi_function", WSGI_INTERFACE_WSGI, "wsgi function"},
        {"asgi_scope_apps:WsgiClass", WSGI_INTERFACE_WSGI, "wsgi class"},
        {"asgi_scope_apps:sync_instance", WSGI_INTERFACE_WSGI, "sync instance"},
        /* A class, even one whose instances are ASGI 3 apps, is not itself an ASGI 3 app
         * (calling it returns an instance, not an awaitable). */
        {"asgi_scope_apps:Asgi3", WSGI_INTERFACE_WSGI, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wsgi_app *app = th_app(cases[i].spec);
        if (wsgi_app_interface(app) != cases[i].expected)
            print_error("spec \"%s\" detected as %d\n", cases[i].spec, wsgi_app_interface(app));
        assert_int_equal(wsgi_app_interface(app), cases[i].expected);
        if (!cases[i].body) continue;
        if (cases[i].expected == WSGI_INTERFACE_ASGI) {
            ah_rec rec;
            ah_rec_init(&rec);
            ah_get(cases[i].spec, "/", &rec);
            ah_assert_ok(&rec, 200, cases[i].body);
            ah_rec_free(&rec);
        } else {
            th_rec rec;
            th_result res;
            th_rec_init(&rec);
            th_get(cases[i].spec, "/", &rec, &res);
            th_assert_ok(&rec, &res, 200, cases[i].body);
            th_rec_free(&rec);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_full_scope),
        ah_unit_test(test_http10_https_no_client),
        ah_unit_test(test_http2_version),
        ah_unit_test(test_server_defaults_http),
        ah_unit_test(test_server_unix_socket),
        ah_unit_test(test_extension_method_passes_through),
        ah_unit_test(test_root_path_from_script_name),
        ah_unit_test(test_root_path_from_extra_environ),
        ah_unit_test(test_root_path_is_utf8_like_path),
        ah_unit_test(test_absolute_form_target),
        ah_unit_test(test_path_decoding_corners),
        ah_unit_test(test_header_bytes),
        ah_unit_test(test_scope_objects_are_per_request),
        ah_unit_test(test_values_follow_each_request),
        ah_unit_test(test_extensions_follow_handler),
        ah_unit_test(test_invalid_requests),
        ah_unit_test(test_wsgi_app_is_refused),
        ah_unit_test(test_interface_detection),
    };
    return cmocka_run_group_tests_name("asgi_scope", tests, th_group_setup, th_group_teardown);
}
