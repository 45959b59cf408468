/*
 * test_wsgi_env.c - the PEP 3333 environ built from a wsgi_request: CGI keys, HTTP_* mapping,
 * latin-1 decoding, SCRIPT_NAME, wsgi.* keys, host overrides, invalid host input, and the
 * wsgi.errors stream.
 *
 * The app env_apps:dump sends the whole environ back (str values as hex of their latin-1
 * encoding), so each assertion sees the exact type and code points the app saw.
 */
#include "harness.h"

#define DUMP "env_apps:dump"

typedef struct env_entry {
    char type[64];
    char value[16384]; /* decoded bytes for str, repr() text otherwise; NUL-terminated */
    size_t value_len;
} env_entry;

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Finds @key in the dump; 1 if present. */
static int env_find(const th_rec *rec, const char *key, env_entry *e)
{
    size_t klen = strlen(key);
    const char *p = rec->body;
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '\t') {
            const char *type = p + klen + 1;
            const char *tab = memchr(type, '\t', len - klen - 1);
            assert_non_null(tab);
            snprintf(e->type, sizeof e->type, "%.*s", (int)(tab - type), type);
            const char *text = tab + 1;
            size_t tlen = len - (size_t)(text - p);
            if (strcmp(e->type, "str") == 0) {
                assert_true(tlen % 2 == 0 && tlen / 2 < sizeof e->value);
                for (size_t i = 0; i < tlen / 2; i++)
                    e->value[i] = (char)(hexval(text[2 * i]) * 16 + hexval(text[2 * i + 1]));
                e->value_len = tlen / 2;
            } else {
                assert_true(tlen < sizeof e->value);
                memcpy(e->value, text, tlen);
                e->value_len = tlen;
            }
            e->value[e->value_len] = '\0';
            return 1;
        }
        p = eol ? eol + 1 : NULL;
    }
    return 0;
}

static void assert_env_bytes(const th_rec *rec, const char *key, const char *expected, size_t len)
{
    env_entry e;
    if (!env_find(rec, key, &e)) {
        print_error("environ has no key %s\n", key);
        fail();
    }
    if (strcmp(e.type, "str") != 0 || e.value_len != len || memcmp(e.value, expected, len) != 0) {
        print_error("environ[%s]: type %s, value \"%s\" (%zu bytes); expected str \"%.*s\" (%zu)\n",
                    key, e.type, e.value, e.value_len, (int)len, expected, len);
        fail();
    }
}

#define assert_env_str(rec, key, expected) assert_env_bytes(rec, key, expected, strlen(expected))

static void assert_env_repr(const th_rec *rec, const char *key, const char *type, const char *repr)
{
    env_entry e;
    if (!env_find(rec, key, &e)) {
        print_error("environ has no key %s\n", key);
        fail();
    }
    if (strcmp(e.type, type) != 0 || (repr && strcmp(e.value, repr) != 0)) {
        print_error("environ[%s]: %s %s; expected %s %s\n", key, e.type, e.value, type,
                    repr ? repr : "(any)");
        fail();
    }
}

static void assert_env_present(const th_rec *rec, const char *key)
{
    env_entry e;
    if (!env_find(rec, key, &e)) {
        print_error("environ has no key %s\n", key);
        fail();
    }
}

static void assert_env_absent(const th_rec *rec, const char *key)
{
    env_entry e;
    if (env_find(rec, key, &e)) {
        print_error("environ[%s] should be absent, is %s %s\n", key, e.type, e.value);
        fail();
    }
}

/* PEP 3333: keys and CGI values are native strings; here every str must be exactly str and
 * latin-1 (the dump marks anything else). */
static void assert_env_all_latin1_str(const th_rec *rec)
{
    assert_null(strstr(rec->body, "str!non-latin-1"));
    for (const char *p = rec->body; p && *p;) {
        if (*p == '!') {
            print_error("environ has a key that is not str: %.80s\n", p);
            fail();
        }
        const char *eol = strchr(p, '\n');
        p = eol ? eol + 1 : NULL;
    }
}

static size_t env_count_prefix(const th_rec *rec, const char *prefix)
{
    size_t n = 0, plen = strlen(prefix);
    for (const char *p = rec->body; p && *p;) {
        if (strncmp(p, prefix, plen) == 0) n++;
        const char *eol = strchr(p, '\n');
        p = eol ? eol + 1 : NULL;
    }
    return n;
}

/* Runs @r through @app (the dump) and checks the response came back whole. */
static void run_dump(wsgi_app *app, th_req *r, th_rec *rec)
{
    th_result res;
    th_rec_init(rec);
    th_run(app, r, rec, &res);
    assert_rc(res.build_rc, WSGI_OK);
    assert_rc(res.call_rc, WSGI_OK);
    th_assert_ok(rec, &res, 200, NULL);
    assert_non_null(rec->body);
    assert_env_all_latin1_str(rec);
    assert_env_repr(rec, "@environ-type", "dict", "");
}

static wsgi_app *app_with(const char *script_name, unsigned flags, const char *software)
{
    wsgi_app_options opts;
    wsgi_app_options_init(&opts);
    opts.spec = DUMP;
    opts.script_name = script_name;
    opts.flags = flags;
    opts.server_software = software;
    return th_app_with(&opts);
}

static void test_basic_get(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/hello/world?x=1&y=2");
    th_req_header(&r, "Host", "example.com");
    th_req_header(&r, "User-Agent", "unit/1");
    run_dump(th_app(DUMP), &r, &rec);

    assert_env_str(&rec, "REQUEST_METHOD", "GET");
    assert_env_str(&rec, "SCRIPT_NAME", "");
    assert_env_str(&rec, "PATH_INFO", "/hello/world");
    assert_env_str(&rec, "QUERY_STRING", "x=1&y=2");
    assert_env_str(&rec, "RAW_URI", "/hello/world?x=1&y=2");
    assert_env_str(&rec, "REQUEST_URI", "/hello/world?x=1&y=2");
    assert_env_str(&rec, "SERVER_NAME", "localhost");
    assert_env_str(&rec, "SERVER_PORT", "80");
    assert_env_str(&rec, "SERVER_PROTOCOL", "HTTP/1.1");
    assert_env_str(&rec, "SERVER_SOFTWARE", "libwsgi/" LIBWSGI_VERSION);
    assert_env_str(&rec, "HTTP_HOST", "example.com");
    assert_env_str(&rec, "HTTP_USER_AGENT", "unit/1");
    assert_env_absent(&rec, "CONTENT_LENGTH");
    assert_env_absent(&rec, "HTTP_CONTENT_LENGTH");
    assert_env_repr(&rec, "wsgi.version", "tuple", "(1, 0)");
    assert_env_str(&rec, "wsgi.url_scheme", "http");
    assert_env_repr(&rec, "wsgi.input_terminated", "bool", "True");
    assert_env_repr(&rec, "wsgi.multithread", "bool", "False");
    assert_env_repr(&rec, "wsgi.multiprocess", "bool", "False");
    assert_env_repr(&rec, "wsgi.run_once", "bool", "False");
    assert_env_present(&rec, "wsgi.input");
    assert_env_present(&rec, "wsgi.errors");
    assert_env_present(&rec, "wsgi.file_wrapper");
    th_rec_free(&rec);
}

static void test_any_method_passes_through(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "PROPFIND", "/dav");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "REQUEST_METHOD", "PROPFIND");
    th_rec_free(&rec);
}

static void test_empty_query_string(void **state)
{
    (void)state;
    static const char *const targets[] = {"/p", "/p?"};
    for (size_t i = 0; i < 2; i++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "GET", targets[i]);
        run_dump(th_app(DUMP), &r, &rec);
        assert_env_str(&rec, "PATH_INFO", "/p");
        assert_env_str(&rec, "QUERY_STRING", "");
        assert_env_str(&rec, "RAW_URI", targets[i]);
        th_rec_free(&rec);
    }
}

/* PATH_INFO is percent-decoded, then each byte becomes one code point (latin-1); the query is
 * left exactly as received. */
static void test_path_percent_decoded_as_latin1(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/a%20b/%C3%A9?q=%20%C3%A9+x&r=%2F");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/a b/\xc3\xa9");
    assert_env_str(&rec, "QUERY_STRING", "q=%20%C3%A9+x&r=%2F");
    assert_env_str(&rec, "RAW_URI", "/a%20b/%C3%A9?q=%20%C3%A9+x&r=%2F");
    assert_env_str(&rec, "REQUEST_URI", "/a%20b/%C3%A9?q=%20%C3%A9+x&r=%2F");
    th_rec_free(&rec);
}

/* Invalid escapes are not an error: they stay as they are (as urllib.parse.unquote does). */
static void test_malformed_percent_escapes_kept(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/a%zz/b%4/%");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/a%zz/b%4/%");
    th_rec_free(&rec);
}

static void test_raw_high_bytes_in_target(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/caf\xe9?k=\xff");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/caf\xe9");
    assert_env_str(&rec, "QUERY_STRING", "k=\xff");
    th_rec_free(&rec);
}

static void test_absolute_form_target(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "http://example.com/p?q=1");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/p");
    assert_env_str(&rec, "QUERY_STRING", "q=1");
    assert_env_str(&rec, "RAW_URI", "http://example.com/p?q=1");
    assert_env_str(&rec, "REQUEST_URI", "http://example.com/p?q=1");
    th_rec_free(&rec);

    /* An empty path is "/" (RFC 9110 4.2.3; the origin-form would have been "/", RFC 9112
     * 3.2.1), as ASGI's scope path is. */
    static const char *const empty[][2] = {{"http://example.com", ""},
                                           {"http://example.com?q=1", "q=1"},
                                           {"http://example.com:8080?", ""}};
    for (size_t i = 0; i < 3; i++) {
        th_req_init(&r, "GET", empty[i][0]);
        run_dump(th_app(DUMP), &r, &rec);
        assert_env_str(&rec, "PATH_INFO", "/");
        assert_env_str(&rec, "QUERY_STRING", empty[i][1]);
        assert_env_str(&rec, "RAW_URI", empty[i][0]);
        th_rec_free(&rec);
    }
}

static void test_https(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    r.req.scheme = "https";
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTPS", "on");
    assert_env_str(&rec, "wsgi.url_scheme", "https");
    assert_env_str(&rec, "SERVER_PORT", "443");
    th_rec_free(&rec);
}

static void test_server_and_client_address(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    r.req.server_name = "example.org";
    r.req.server_port = 8080;
    r.req.client_addr = "192.0.2.7";
    r.req.client_port = 54321;
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "SERVER_NAME", "example.org");
    assert_env_str(&rec, "SERVER_PORT", "8080");
    assert_env_str(&rec, "REMOTE_ADDR", "192.0.2.7");
    assert_env_str(&rec, "REMOTE_PORT", "54321");
    th_rec_free(&rec);
}

/* RFC 3875 4.1.14: SERVER_NAME is a hostname, an IPv4 address or "[" IPv6 "]": a server on an
 * IPv6 address gives it bracketed, else the URL of PEP 3333's reconstruction (Flask's request.url
 * for a request without Host) is "http://::1:8080/"; the next request on an IPv4 name and the
 * one after it (a reused layout) get theirs unchanged. */
static void test_server_name_ipv6_bracketed(void **state)
{
    (void)state;
    const char *names[][2] = {{"::1", "[::1]"},
                              {"192.0.2.1", "192.0.2.1"},
                              {"2001:db8::7", "[2001:db8::7]"},
                              {"[::2]", "[::2]"},
                              {"2001:db8::7", "[2001:db8::7]"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "GET", "/");
        r.req.server_name = names[k][0];
        r.req.server_port = 8080;
        run_dump(th_app(DUMP), &r, &rec);
        assert_env_str(&rec, "SERVER_NAME", names[k][1]);
        th_rec_free(&rec);
    }
}

/* A unix-socket peer has no address: the request still works (absent or "" both fine). */
static void test_no_client_address(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    r.req.client_addr = NULL;
    r.req.client_port = 0;
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/");
    th_rec_free(&rec);
}

static void test_http_1_0(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    r.req.http_minor = 0;
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "SERVER_PROTOCOL", "HTTP/1.0");
    th_rec_free(&rec);
}

static void test_content_type_and_length(void **state)
{
    (void)state;
    static const char *const type_names[] = {"Content-Type", "content-type"};
    for (size_t i = 0; i < 2; i++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "POST", "/submit");
        th_req_header(&r, type_names[i], "application/json");
        th_req_body(&r, "{\"a\": 1}", 8);
        run_dump(th_app(DUMP), &r, &rec);
        assert_env_str(&rec, "CONTENT_TYPE", "application/json");
        assert_env_str(&rec, "CONTENT_LENGTH", "8");
        assert_env_absent(&rec, "HTTP_CONTENT_TYPE");
        assert_env_absent(&rec, "HTTP_CONTENT_LENGTH");
        th_rec_free(&rec);
    }
}

static void test_http_header_names(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X-Custom-Header", "v1");
    th_req_header(&r, "x-lower-case", "v2");
    th_req_header(&r, "ACCEPT", "text/html");
    th_req_header(&r, "X-Empty", "");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTP_X_EMPTY", "");
    assert_env_str(&rec, "HTTP_X_CUSTOM_HEADER", "v1");
    assert_env_str(&rec, "HTTP_X_LOWER_CASE", "v2");
    assert_env_str(&rec, "HTTP_ACCEPT", "text/html");
    th_rec_free(&rec);
}

static void test_repeated_headers_joined_in_order(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "Accept", "text/html");
    th_req_header(&r, "Cookie", "a=1");
    th_req_header(&r, "X-Between", "x");
    th_req_header(&r, "accept", "application/json");
    th_req_header(&r, "Cookie", "b=2");
    th_req_header(&r, "Cookie", "c=3");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTP_ACCEPT", "text/html, application/json");
    /* Cookie lines are joined with "; ": with ", " a cookie parser (http.cookies, Django,
     * Werkzeug: split on ';') would read one cookie a = "1, b=2, c=3" and lose b and c. */
    assert_env_str(&rec, "HTTP_COOKIE", "a=1; b=2; c=3");
    assert_env_str(&rec, "HTTP_X_BETWEEN", "x");
    th_rec_free(&rec);
}

/* "X_Forwarded_For" would map to the same key as "X-Forwarded-For": a client could spoof a
 * header set by a trusted proxy. Such names are dropped, whatever their position. */
static void test_underscore_headers_cannot_spoof(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X_Forwarded_For", "evil-before");
    th_req_header(&r, "X-Forwarded-For", "good");
    th_req_header(&r, "X_Forwarded_For", "evil-after");
    th_req_header(&r, "X_Real_Ip", "evil-alone");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTP_X_FORWARDED_FOR", "good");
    assert_env_absent(&rec, "HTTP_X_REAL_IP");
    th_rec_free(&rec);
}

static void test_invalid_header_names_dropped(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "Bad Name", "space");
    th_req_header(&r, "X(Paren)", "paren");
    th_req_header(&r,
                  "X\x01"
                  "Ctl",
                  "control");
    th_req_header(&r, "X\xe9High", "high byte");
    th_req_header(&r, "Good", "kept");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTP_GOOD", "kept");
    assert_int_equal(env_count_prefix(&rec, "HTTP_"), 1);
    th_rec_free(&rec);
}

static void test_latin1_header_values(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X-Latin", "caf\xe9 \xff\x80");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "HTTP_X_LATIN", "caf\xe9 \xff\x80");
    th_rec_free(&rec);
}

static void test_script_name(void **state)
{
    (void)state;
    wsgi_app *app = app_with("/mount", 0, NULL);
    static const struct {
        const char *target, *path_info;
    } cases[] = {
        {"/mount/x/y?z=1", "/x/y"},
        {"/mount/a%20b", "/a b"},
        {"/mount", ""},
        {"/elsewhere", "/elsewhere"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_req r;
        th_rec rec;
        th_req_init(&r, "GET", cases[i].target);
        run_dump(app, &r, &rec);
        assert_env_str(&rec, "SCRIPT_NAME", "/mount");
        assert_env_str(&rec, "PATH_INFO", cases[i].path_info);
        th_rec_free(&rec);
    }
}

static void test_app_flags(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    run_dump(app_with(NULL, WSGI_APP_MULTITHREAD | WSGI_APP_RUN_ONCE, NULL), &r, &rec);
    assert_env_repr(&rec, "wsgi.multithread", "bool", "True");
    assert_env_repr(&rec, "wsgi.multiprocess", "bool", "False");
    assert_env_repr(&rec, "wsgi.run_once", "bool", "True");
    th_rec_free(&rec);

    th_req_init(&r, "GET", "/");
    run_dump(app_with("", WSGI_APP_MULTIPROCESS, NULL), &r, &rec);
    assert_env_repr(&rec, "wsgi.multithread", "bool", "False");
    assert_env_repr(&rec, "wsgi.multiprocess", "bool", "True");
    assert_env_repr(&rec, "wsgi.run_once", "bool", "False");
    assert_env_str(&rec, "SCRIPT_NAME", "");
    th_rec_free(&rec);
}

static void test_server_software_option(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    run_dump(app_with(NULL, 0, "MyServer/1.2"), &r, &rec);
    assert_env_str(&rec, "SERVER_SOFTWARE", "MyServer/1.2");
    th_rec_free(&rec);
}

static void test_extra_environ_adds_and_overrides(void **state)
{
    (void)state;
    th_req r;
    th_rec rec;
    th_req_init(&r, "GET", "/");
    th_req_extra(&r, "SCGI", "1");
    th_req_extra(&r, "SERVER_NAME", "override.example");
    th_req_extra(&r, "SSL_CIPHER", "caf\xe9");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "SCGI", "1");
    assert_env_str(&rec, "SERVER_NAME", "override.example");
    assert_env_str(&rec, "SSL_CIPHER", "caf\xe9");
    th_rec_free(&rec);
}

static void test_env_set_adds_and_overrides(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/");
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app(DUMP), &r.req, &env), WSGI_OK);
    assert_rc(wsgi_env_set(env, "HOST_KEY", 8, "host value", 10), WSGI_OK);
    assert_rc(wsgi_env_set(env, "REQUEST_METHOD", 14, "PATCH", 5), WSGI_OK);
    assert_rc(wsgi_env_set(env, "LATIN_\xe9", 7, "\xff\x80", 2), WSGI_OK);
    assert_rc(wsgi_env_set(env, "EMPTY_VALUE", 11, "", 0), WSGI_OK);
    /* Lengths, not NUL terminators, delimit the bytes. */
    assert_rc(wsgi_env_set(env, "CUT_KEYxx", 7, "valuexx", 5), WSGI_OK);

    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    memset(&res, 0, sizeof res);
    th_call_drain(env, &rec, &res);
    assert_rc(res.call_rc, WSGI_OK);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_env_all_latin1_str(&rec);
    assert_env_str(&rec, "HOST_KEY", "host value");
    assert_env_str(&rec, "REQUEST_METHOD", "PATCH");
    assert_env_str(&rec, "LATIN_\xe9", "\xff\x80");
    assert_env_str(&rec, "EMPTY_VALUE", "");
    assert_env_str(&rec, "CUT_KEY", "value");
    th_rec_free(&rec);
}

static void test_env_free_without_call(void **state)
{
    (void)state;
    th_req r;
    th_req_init(&r, "GET", "/unused");
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app(DUMP), &r.req, &env), WSGI_OK);
    assert_non_null(env);
    wsgi_env_free(env);

    th_rec rec;
    th_req_init(&r, "GET", "/after");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/after");
    th_rec_free(&rec);
}

static void assert_build_inval(const char *what, const wsgi_request *req)
{
    wsgi_env *env = (wsgi_env *)&env; /* must be overwritten with NULL */
    int rc = wsgi_env_build(th_app(DUMP), req, &env);
    if (rc != WSGI_ERR_INVAL) print_error("case: %s\n", what);
    assert_rc(rc, WSGI_ERR_INVAL);
    assert_null(env);
    if (wsgi_errmsg()[0] == '\0') print_error("case: %s: empty wsgi_errmsg()\n", what);
    assert_true(wsgi_errmsg()[0] != '\0');
}

static void test_invalid_host_input(void **state)
{
    (void)state;
    th_req r;

    assert_build_inval("NULL request", NULL);

    th_req_init(&r, "GET", "/");
    r.req.method = NULL;
    assert_build_inval("NULL method", &r.req);

    th_req_init(&r, "GET", "/");
    r.req.method_len = 0;
    assert_build_inval("method_len 0", &r.req);

    th_req_init(&r, "GET", "/");
    r.req.target = NULL;
    assert_build_inval("NULL target", &r.req);

    th_req_init(&r, "GET", "/");
    r.req.target_len = 0;
    assert_build_inval("empty target", &r.req);

    th_req_init(&r, "GET", "no-slash");
    assert_build_inval("target that is not a path", &r.req);

    th_req_init(&r, "GET", "/");
    r.req.headers = NULL;
    r.req.n_headers = 2;
    assert_build_inval("NULL headers with n_headers 2", &r.req);

    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X-A", "a");
    r.headers[0].name = NULL;
    assert_build_inval("NULL header name with a length", &r.req);

    th_req_init(&r, "GET", "/");
    th_req_header(&r, "X-A", "a");
    r.headers[0].value = NULL;
    assert_build_inval("NULL header value with a length", &r.req);

    th_req_init(&r, "GET", "/");
    r.req.extra_environ = NULL;
    r.req.n_extra_environ = 1;
    assert_build_inval("NULL extra_environ with n_extra_environ 1", &r.req);

    th_req_init(&r, "POST", "/");
    r.req.body = NULL;
    r.req.body_len = 10;
    r.req.content_length = 10;
    assert_build_inval("NULL body with body_len 10 and no body_read", &r.req);

    /* After all that, a good request still works. */
    th_rec rec;
    th_req_init(&r, "GET", "/still-fine");
    run_dump(th_app(DUMP), &r, &rec);
    assert_env_str(&rec, "PATH_INFO", "/still-fine");
    th_rec_free(&rec);
}

/* Nothing in the environ is limited by a fixed-size buffer. */
static void test_big_request_parts(void **state)
{
    (void)state;
    enum { N_EXTRA = 500, BIG = 65536, PATH = 8000 };
    static wsgi_header headers[N_EXTRA + 1];
    static char names[N_EXTRA][16];
    static char big[BIG], path[PATH + 1];
    memset(big, 'x', sizeof big);
    path[0] = '/';
    memset(path + 1, 'p', PATH - 1);
    path[PATH] = '\0';
    for (size_t i = 0; i < N_EXTRA; i++) {
        snprintf(names[i], sizeof names[i], "X-H-%zu", i);
        headers[i] = (wsgi_header){names[i], strlen(names[i]), "v", 1};
    }
    headers[N_EXTRA] = (wsgi_header){"X-Big", 5, big, sizeof big};

    th_req r;
    th_rec rec;
    th_result res;
    th_req_init(&r, "GET", path);
    r.req.headers = headers;
    r.req.n_headers = N_EXTRA + 1;
    th_rec_init(&rec);
    th_run(th_app("env_apps:big"), &r, &rec, &res);
    th_assert_ok(&rec, &res, 200, "header=65536/True path=8000/True http_keys=500");
    th_rec_free(&rec);
}

/* The runtime reuses the str objects of the previous request for repeated header names, values,
 * addresses and ports (a bounded cache): whatever the sequence, each environ must hold exactly
 * this request's values. Many names (evictions), names differing only in case, values that change
 * from one request to the next, repeated headers, long names (not cached) and latin-1 bytes. */
static void test_value_caches_never_leak_across_requests(void **state)
{
    (void)state;
    wsgi_app *app = th_app(DUMP);
    for (int i = 0; i < 600; i++) {
        char n1[48], v1[32], v2[32], lname[80], addr[32], target[64];
        snprintf(n1, sizeof n1, i % 2 ? "X-Name-%d" : "x-NAME-%d", i % 300);
        snprintf(v1, sizeof v1, "v%d", i % 7);
        snprintf(v2, sizeof v2, "\xe9t\xe9-%d", i % 3);
        snprintf(lname, sizeof lname, "X-A-Rather-Long-Header-Name-Over-32-Bytes-%d", i % 5);
        snprintf(addr, sizeof addr, "10.0.0.%d", i % 4);
        snprintf(target, sizeof target, "/p%d?q=%d", i % 3, i % 2);
        th_req r;
        th_req_init(&r, i % 5 ? "GET" : "POST", target);
        th_req_header(&r, "Host", i % 2 ? "a.example" : "b.example");
        th_req_header(&r, n1, v1);
        th_req_header(&r, "Accept", v2);
        th_req_header(&r, lname, v1);
        if (i % 4 == 0) th_req_header(&r, "accept", "second");
        r.req.client_addr = addr;
        r.req.client_port = (unsigned)(1000 + i % 3);
        r.req.server_port = (unsigned)(8000 + i % 2);
        th_rec rec;
        run_dump(app, &r, &rec);
        char key[64], want[64];
        snprintf(key, sizeof key, "HTTP_X_NAME_%d", i % 300);
        assert_env_str(&rec, key, v1);
        assert_env_str(&rec, "HTTP_HOST", i % 2 ? "a.example" : "b.example");
        if (i % 4 == 0) {
            snprintf(want, sizeof want, "%s, second", v2);
            assert_env_str(&rec, "HTTP_ACCEPT", want);
        } else {
            assert_env_str(&rec, "HTTP_ACCEPT", v2);
        }
        snprintf(key, sizeof key, "HTTP_X_A_RATHER_LONG_HEADER_NAME_OVER_32_BYTES_%d", i % 5);
        assert_env_str(&rec, key, v1);
        assert_env_str(&rec, "REMOTE_ADDR", addr);
        snprintf(want, sizeof want, "%d", 1000 + i % 3);
        assert_env_str(&rec, "REMOTE_PORT", want);
        snprintf(want, sizeof want, "%d", 8000 + i % 2);
        assert_env_str(&rec, "SERVER_PORT", want);
        assert_env_str(&rec, "REQUEST_METHOD", i % 5 ? "GET" : "POST");
        snprintf(want, sizeof want, "/p%d", i % 3);
        assert_env_str(&rec, "PATH_INFO", want);
        snprintf(want, sizeof want, "q=%d", i % 2);
        assert_env_str(&rec, "QUERY_STRING", want);
        assert_env_str(&rec, "RAW_URI", target);
        /* Exactly one key per distinct header name: no stale keys from earlier requests. */
        assert_int_equal(env_count_prefix(&rec, "HTTP_"), 4);
        th_rec_free(&rec);
    }
}

/* wsgi_env_build() copies what it borrows: the host may reuse its buffers (method, target, header
 * names and values, addresses, extra_environ) before wsgi_call(), and wsgi_env_set() keys too. */
static void test_request_copied_at_build(void **state)
{
    (void)state;
    char *method = strdup("PATCH"), *target = strdup("/copied/p%41th?q=1");
    char *hn = strdup("X-Copied"), *hv = strdup(" copied value "), *host = strdup("Host");
    char *hostv = strdup("copy.example"), *addr = strdup("192.0.2.7"), *sname = strdup("srv");
    char *scheme = strdup("https"), *xn = strdup("SSL_PROTOCOL"), *xv = strdup("TLSv1.3");
    char *sk = strdup("SET_KEY"), *sv = strdup("set value");
    assert_true(method && target && hn && hv && host && hostv && addr && sname && scheme && xn &&
                xv && sk && sv);
    wsgi_header hs[2] = {{host, 4, hostv, strlen(hostv)}, {hn, strlen(hn), hv, strlen(hv)}};
    wsgi_header xs[1] = {{xn, strlen(xn), xv, strlen(xv)}};
    wsgi_request req;
    wsgi_request_init(&req);
    req.method = method;
    req.method_len = strlen(method);
    req.target = target;
    req.target_len = strlen(target);
    req.headers = hs;
    req.n_headers = 2;
    req.extra_environ = xs;
    req.n_extra_environ = 1;
    req.client_addr = addr;
    req.client_port = 4242;
    req.server_name = sname;
    req.server_port = 8443;
    req.scheme = scheme;
    wsgi_env *env = NULL;
    assert_rc(wsgi_env_build(th_app(DUMP), &req, &env), WSGI_OK);
    assert_rc(wsgi_env_set(env, sk, strlen(sk), sv, strlen(sv)), WSGI_OK);
    char *all[] = {method, target, hn, hv, host, hostv, addr, sname, scheme, xn, xv, sk, sv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        memset(all[i], 'Z', strlen(all[i]));
        free(all[i]);
    }
    memset(hs, 0, sizeof hs);
    memset(xs, 0, sizeof xs);
    memset(&req, 0, sizeof req);

    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    memset(&res, 0, sizeof res);
    th_call_drain(env, &rec, &res);
    assert_rc(res.call_rc, WSGI_OK);
    th_assert_ok(&rec, &res, 200, NULL);
    assert_env_str(&rec, "REQUEST_METHOD", "PATCH");
    assert_env_str(&rec, "PATH_INFO", "/copied/pAth");
    assert_env_str(&rec, "QUERY_STRING", "q=1");
    assert_env_str(&rec, "RAW_URI", "/copied/p%41th?q=1");
    assert_env_str(&rec, "HTTP_HOST", "copy.example");
    assert_env_str(&rec, "HTTP_X_COPIED", "copied value");
    assert_env_str(&rec, "REMOTE_ADDR", "192.0.2.7");
    assert_env_str(&rec, "REMOTE_PORT", "4242");
    assert_env_str(&rec, "SERVER_NAME", "srv");
    assert_env_str(&rec, "SERVER_PORT", "8443");
    assert_env_str(&rec, "wsgi.url_scheme", "https");
    assert_env_str(&rec, "HTTPS", "on");
    assert_env_str(&rec, "SSL_PROTOCOL", "TLSv1.3");
    assert_env_str(&rec, "SET_KEY", "set value");
    assert_null(strstr(rec.body, "5a5a5a")); /* no "ZZZ" anywhere */
    th_rec_free(&rec);
}

/* One request of a layout family: which optional parts it has and its header names in order.
 * Values change from request to request so that a reused layout must replace them. */
typedef struct layout {
    const char *scheme; /* NULL, "http", "https", "ftp" */
    int server_name;    /* set server_name */
    int server_port;    /* set server_port */
    int client_addr;    /* set client_addr */
    int client_port;    /* and client_port */
    int minor;          /* HTTP/1.minor */
    const char *names[6];
} layout;

static const layout layouts[] = {
    {NULL, 1, 1, 1, 1, 1, {"Host", "User-Agent", "Accept", "Accept-Encoding", "Connection"}},
    {"https", 1, 1, 1, 1, 1, {"Host", "User-Agent", "Accept", "Accept-Encoding", "Connection"}},
    {NULL, 1, 1, 1, 1, 1, {"Host", "Accept", "User-Agent", "Accept-Encoding", "Connection"}},
    {"ftp", 0, 0, 1, 0, 0, {"Host", "Content-Type", "Content-Length"}},
    {NULL, 1, 0, 0, 0, 1, {"Host", "Cookie", "X-A", "Cookie"}}, /* repeated: joined */
    {"http", 1, 1, 1, 1, 1, {"Host", "X_Dropped", "X-Kept"}},   /* dropped: '_' */
    {NULL, 0, 1, 1, 1, 1, {NULL}},                              /* no headers at all */
    {NULL, 1, 1, 1, 1, 1, {"host", "user-agent", "accept", "accept-encoding", "connection"}},
};

static void header_key(const char *name, char *key, size_t size)
{
    if (strcasecmp(name, "Content-Type") == 0 || strcasecmp(name, "Content-Length") == 0) {
        snprintf(key, size, "%s",
                 strcasecmp(name, "Content-Type") == 0 ? "CONTENT_TYPE" : "CONTENT_LENGTH");
        return;
    }
    size_t o = (size_t)snprintf(key, size, "HTTP_");
    for (const char *p = name; *p && o + 1 < size; p++)
        key[o++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    key[o] = '\0';
}

/* The environ is a copy of the last environ of the same request layout, with the values that
 * differ replaced: whatever the order of layouts and values, each environ holds exactly this
 * request's keys and values. 8 layouts (more than the 4 kept per app, so they are replaced),
 * seen in runs and interleaved; values that change in one field at a time, in many, or not at
 * all; empty values, padded values, latin-1 bytes; a mounted app. */
static void test_layouts_reused_with_exact_values(void **state)
{
    (void)state;
    wsgi_app *apps[2] = {th_app(DUMP), app_with("/mnt", 0, NULL)};
    static const char *const methods[] = {"GET", "POST", "GET", "DELETE"};
    static const char *const targets[] = {"/a?x=1", "/a?x=2", "/b", "/mnt/c%20d?", "/mnt", "/a"};
    static const char *const values[] = {"v", "", "  padded\t", "caf\xe9", "v", "longer value"};
    unsigned seed = 12345;
    for (int i = 0; i < 1500; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned rnd = seed >> 8;
        /* Runs of one layout, then jumps: shapes are made, reused and replaced. */
        size_t li = (i / 7) % 3 == 0 ? rnd % 8 : (unsigned)(i / 5) % 8;
        const layout *L = &layouts[li];
        int vary = (int)(rnd % 4); /* 0: same values as a neighbour; else change some */
        th_req r;
        const char *target = targets[(vary ? rnd >> 3 : (unsigned)i / 50) % 6];
        th_req_init(&r, methods[(vary > 1 ? rnd >> 5 : 0) % 4], target);
        r.req.http_minor = L->minor;
        r.req.scheme = L->scheme;
        char sname[32], addr[32];
        snprintf(sname, sizeof sname, "s%u.example", vary == 3 ? (rnd >> 7) % 3 : 0);
        snprintf(addr, sizeof addr, "10.0.0.%u", vary ? (rnd >> 9) % 3 : 1);
        if (L->server_name) r.req.server_name = sname;
        if (L->server_port) r.req.server_port = 8000 + (vary == 2 ? (rnd >> 11) % 2 : 0);
        if (L->client_addr) r.req.client_addr = addr;
        if (L->client_port) r.req.client_port = 50000 + (vary ? (rnd >> 13) % 3 : 0);
        char vals[6][32];
        size_t nh = 0;
        for (; nh < 6 && L->names[nh]; nh++) {
            unsigned k = vary ? (rnd >> (15 + nh)) % 6 : 0;
            snprintf(vals[nh], sizeof vals[nh], "%s", values[k]);
            th_req_header(&r, L->names[nh], vals[nh]);
        }
        wsgi_app *app = apps[(i / 11) % 2];
        th_rec rec;
        run_dump(app, &r, &rec);

        /* Every expected key with its value; then the count, so there is nothing else. */
        size_t keys = 19; /* template 10 + per request 9 */
        assert_env_str(&rec, "REQUEST_METHOD", r.req.method);
        assert_env_str(&rec, "RAW_URI", target);
        assert_env_str(&rec, "REQUEST_URI", target);
        const char *q = strchr(target, '?');
        assert_env_str(&rec, "QUERY_STRING", q ? q + 1 : "");
        char path[64];
        snprintf(path, sizeof path, "%.*s", (int)(q ? (size_t)(q - target) : strlen(target)),
                 target);
        if (strcmp(path, "/mnt/c%20d") == 0) snprintf(path, sizeof path, "/mnt/c d");
        const char *want_path = path;
        if (app == apps[1] && strncmp(path, "/mnt", 4) == 0) want_path = path + 4;
        assert_env_str(&rec, "PATH_INFO", want_path);
        assert_env_str(&rec, "SERVER_PROTOCOL", L->minor ? "HTTP/1.1" : "HTTP/1.0");
        int https = L->scheme && strcmp(L->scheme, "https") == 0;
        assert_env_str(&rec, "wsgi.url_scheme", L->scheme ? L->scheme : "http");
        if (https) {
            assert_env_str(&rec, "HTTPS", "on");
            keys++;
        } else {
            assert_env_absent(&rec, "HTTPS");
        }
        assert_env_str(&rec, "SERVER_NAME", L->server_name ? sname : "localhost");
        char want[64];
        snprintf(want, sizeof want, "%u", L->server_port ? r.req.server_port : https ? 443u : 80u);
        assert_env_str(&rec, "SERVER_PORT", want);
        if (L->client_addr) {
            assert_env_str(&rec, "REMOTE_ADDR", addr);
            keys++;
        } else {
            assert_env_absent(&rec, "REMOTE_ADDR");
        }
        if (L->client_port) {
            snprintf(want, sizeof want, "%u", r.req.client_port);
            assert_env_str(&rec, "REMOTE_PORT", want);
            keys++;
        } else {
            assert_env_absent(&rec, "REMOTE_PORT");
        }
        for (size_t h = 0; h < nh; h++) {
            if (strchr(L->names[h], '_')) continue; /* dropped */
            char key[64], joined[128] = "";
            header_key(L->names[h], key, sizeof key);
            int first = 1, seen = 0;
            for (size_t j = 0; j < nh; j++) {
                if (strcasecmp(L->names[j], L->names[h]) != 0) continue;
                if (j < h) first = 0;
                /* repeats joined with ", ", Cookie with "; " (environ.c) */
                const char *sep = !seen++                                  ? ""
                                  : strcasecmp(L->names[h], "Cookie") == 0 ? "; "
                                                                           : ", ";
                const char *v = vals[j];
                size_t n = strlen(v);
                while (n && (*v == ' ' || *v == '\t'))
                    v++, n--;
                while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                    n--;
                size_t o = strlen(joined);
                snprintf(joined + o, sizeof joined - o, "%s%.*s", sep, (int)n, v);
            }
            if (!first) continue;
            assert_env_str(&rec, key, joined);
            keys++;
        }
        size_t lines = env_count_prefix(&rec, "");
        if (lines != keys + 1) {
            print_error("request %d (layout %zu): %zu environ keys, expected %zu:\n%s\n", i, li,
                        lines - 1, keys, rec.body);
        }
        assert_int_equal(lines, keys + 1);
        th_rec_free(&rec);
    }
}

/* A request that repeats the previous one of its layout byte for byte reuses that environ as it
 * is. Requests whose copied bytes are the same but that differ in how they are cut (method and
 * target, header values), in which optional parts are set, in a port or in the HTTP version are
 * different requests: each alternates with the base request and must get its own values. */
static void test_same_bytes_different_request(void **state)
{
    (void)state;
    wsgi_app *app = th_app(DUMP);
    for (int variant = 0; variant < 7; variant++) {
        for (int round = 0; round < 3; round++) {
            int v = round == 1 ? variant : -1; /* base, variant, base */
            th_req r;
            th_req_init(&r, v == 5 ? "GETht" : "GET", v == 5 ? "tp://h/p" : "http://h/p");
            th_req_header(&r, "A", v == 4 ? "x" : "xy");
            th_req_header(&r, v == 4 ? "y" : "B", v == 4 ? "Bz" : "z");
            r.req.server_name = v == 3 ? NULL : "http";
            r.req.scheme = v == 3 ? "http" : NULL;
            r.req.server_port = v == 1 ? 8081 : 8080;
            r.req.client_addr = "10.1.1.1";
            r.req.client_port = v == 0 ? 4001 : 4000;
            r.req.http_minor = v == 2 ? 0 : 1;
            th_rec rec;
            run_dump(app, &r, &rec);
            assert_env_str(&rec, "REMOTE_PORT", v == 0 ? "4001" : "4000");
            assert_env_str(&rec, "SERVER_PORT", v == 1 ? "8081" : "8080");
            assert_env_str(&rec, "SERVER_PROTOCOL", v == 2 ? "HTTP/1.0" : "HTTP/1.1");
            assert_env_str(&rec, "SERVER_NAME", v == 3 ? "localhost" : "http");
            assert_env_str(&rec, "HTTP_A", v == 4 ? "x" : "xy");
            if (v == 4) {
                assert_env_str(&rec, "HTTP_Y", "Bz");
                assert_env_absent(&rec, "HTTP_B");
            } else {
                assert_env_str(&rec, "HTTP_B", "z");
                assert_env_absent(&rec, "HTTP_Y");
            }
            assert_env_str(&rec, "REQUEST_METHOD", v == 5 ? "GETht" : "GET");
            assert_env_str(&rec, "RAW_URI", v == 5 ? "tp://h/p" : "http://h/p");
            assert_env_str(&rec, "PATH_INFO", "/p");
            th_rec_free(&rec);
        }
    }
}

static size_t log_exact(size_t from, int level, const char *msg)
{
    size_t n = 0;
    pthread_mutex_lock(&th_log.mu);
    for (size_t i = from; i < th_log.n; i++)
        if (th_log.lines[i].level == level && strcmp(th_log.lines[i].msg, msg) == 0) n++;
    pthread_mutex_unlock(&th_log.mu);
    return n;
}

/* wsgi.errors is a text stream into the log: one WARNING line per text line, partial lines
 * joined, nothing lost at the end. */
static void test_wsgi_errors_to_log(void **state)
{
    (void)state;
    size_t mark = th_log_mark();
    th_rec rec;
    th_result res;
    th_rec_init(&rec);
    th_get("env_apps:errors", "/", &rec, &res);
    th_assert_ok(&rec, &res, 200, "ok");
    th_rec_free(&rec);
    static const char *const lines[] = {"errors-one",  "errors-two",  "errors-three",
                                        "errors-four", "errors-five", "errors-partial",
                                        "errors-tail"};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        if (log_exact(mark, WSGI_LOG_WARNING, lines[i]) != 1) {
            print_error("expected exactly one WARNING log line \"%s\"; log:\n", lines[i]);
            th_log_dump(mark);
        }
        assert_int_equal(log_exact(mark, WSGI_LOG_WARNING, lines[i]), 1);
    }
    assert_int_equal(th_log_count(mark, -1, "errors-par\n"), 0);
    assert_int_equal(log_exact(mark, WSGI_LOG_WARNING, "errors-par"), 0);
    assert_int_equal(th_log_bad(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_get),
        cmocka_unit_test(test_any_method_passes_through),
        cmocka_unit_test(test_empty_query_string),
        cmocka_unit_test(test_path_percent_decoded_as_latin1),
        cmocka_unit_test(test_malformed_percent_escapes_kept),
        cmocka_unit_test(test_raw_high_bytes_in_target),
        cmocka_unit_test(test_absolute_form_target),
        cmocka_unit_test(test_https),
        cmocka_unit_test(test_server_and_client_address),
        cmocka_unit_test(test_server_name_ipv6_bracketed),
        cmocka_unit_test(test_no_client_address),
        cmocka_unit_test(test_http_1_0),
        cmocka_unit_test(test_content_type_and_length),
        cmocka_unit_test(test_http_header_names),
        cmocka_unit_test(test_repeated_headers_joined_in_order),
        cmocka_unit_test(test_underscore_headers_cannot_spoof),
        cmocka_unit_test(test_invalid_header_names_dropped),
        cmocka_unit_test(test_latin1_header_values),
        cmocka_unit_test(test_script_name),
        cmocka_unit_test(test_app_flags),
        cmocka_unit_test(test_server_software_option),
        cmocka_unit_test(test_extra_environ_adds_and_overrides),
        cmocka_unit_test(test_env_set_adds_and_overrides),
        cmocka_unit_test(test_env_free_without_call),
        cmocka_unit_test(test_invalid_host_input),
        cmocka_unit_test(test_big_request_parts),
        cmocka_unit_test(test_value_caches_never_leak_across_requests),
        cmocka_unit_test(test_request_copied_at_build),
        cmocka_unit_test(test_layouts_reused_with_exact_values),
        cmocka_unit_test(test_same_bytes_different_request),
        cmocka_unit_test(test_wsgi_errors_to_log),
    };
    return cmocka_run_group_tests_name("wsgi_env", tests, th_group_setup, th_group_teardown);
}
