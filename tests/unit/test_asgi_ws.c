/*
 * test_asgi_ws.c - ASGI WebSocket (spec 2.5) through asgi_websocket_dispatch: the websocket scope,
 * every event in order and out of order, every invalid event, the denial paths (403 and the
 * websocket.http.response extension), the end of the app's task (1000 / 1011), backpressure both
 * ways, disconnects and the host API's argument and state checks.
 */
#include "asgi_harness.h"

#define APPS   "asgi_ws_apps:"
#define REPORT APPS "report"

/* ---- a recording WebSocket host: ah_rec for the HTTP side (denials), plus the ws callbacks --- */

typedef struct ws_rec {
    ah_rec r; /* first: the ah_* callbacks take the same user_data */
    int accepts;
    char subprotocol[64];
    int has_subprotocol;
    ah_hdr accept_headers[8];
    size_t n_accept_headers;
    char msgs[8192]; /* each message as "t:<text>|" or "b:<len>|" */
    size_t msgs_len;
    int n_msgs;
    int closes;
    int close_code;
    char close_reason[128];
    int send_rc; /* on_ws_send returns this */
    char *prev;  /* the previous message's pointer and a copy: must still be readable */
    char *prev_copy;
    size_t prev_len;
    int prev_ok; /* 1 while every previous message was intact at the next on_ws_send */
    void (*close_hook)(struct ws_rec *); /* called by on_ws_close before it reads the reason */
    int hook_fds[2];                     /* for close_hook: write to [0], then read from [1] */
} ws_rec;

static void ws_ev(ws_rec *w, char ev)
{
    ah_rec_event(&w->r, ev);
}

static int ws_on_accept(void *ud, const char *sp, size_t sp_len, const wsgi_header *h, size_t n)
{
    ws_rec *w = ud;
    ws_ev(w, 'A');
    w->accepts++;
    w->has_subprotocol = sp != NULL;
    if (sp) snprintf(w->subprotocol, sizeof w->subprotocol, "%.*s", (int)sp_len, sp);
    ah_copy_headers(w->accept_headers, &w->n_accept_headers, h, n < 8 ? n : 8);
    return 0;
}

static int ws_on_send(void *ud, int binary, const char *data, size_t len)
{
    ws_rec *w = ud;
    ws_ev(w, 'M');
    if (w->prev && memcmp(w->prev, w->prev_copy, w->prev_len) != 0) w->prev_ok = 0;
    free(w->prev_copy);
    w->prev = (char *)data;
    w->prev_copy = malloc(len ? len : 1);
    memcpy(w->prev_copy, data, len);
    w->prev_len = len;
    w->n_msgs++;
    size_t room = sizeof w->msgs - w->msgs_len;
    int k = binary ? snprintf(w->msgs + w->msgs_len, room, "b:%zu|", len)
                   : snprintf(w->msgs + w->msgs_len, room, "t:%.*s|", (int)len, data);
    if (k > 0 && (size_t)k < room) w->msgs_len += (size_t)k;
    return w->send_rc;
}

static int ws_on_close(void *ud, int code, const char *reason, size_t len)
{
    ws_rec *w = ud;
    ws_ev(w, 'C');
    if (w->close_hook) w->close_hook(w);
    w->closes++;
    w->close_code = code;
    snprintf(w->close_reason, sizeof w->close_reason, "%.*s", (int)len, reason);
    return 0;
}

static void ws_rec_init(ws_rec *w)
{
    memset(w, 0, sizeof *w);
    ah_rec_init(&w->r);
    w->prev_ok = 1;
}

static void ws_rec_free(ws_rec *w)
{
    ah_rec_free(&w->r);
    ah_hdrs_free(w->accept_headers, &w->n_accept_headers);
    free(w->prev_copy);
}

static asgi_handler ws_handler(ws_rec *w)
{
    asgi_handler h = ah_handler(&w->r);
    h.on_ws_accept = ws_on_accept;
    h.on_ws_send = ws_on_send;
    h.on_ws_close = ws_on_close;
    return h;
}

static void ws_req(th_req *r, const char *target)
{
    th_req_init(r, "GET", target);
    th_req_header(r, "Host", "example.org");
    th_req_header(r, "Upgrade", "websocket");
    th_req_header(r, "Connection", "Upgrade");
    th_req_header(r, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    th_req_header(r, "Sec-WebSocket-Version", "13");
}

static asgi_conn *ws_dispatch(const char *app, const th_req *r, ws_rec *w)
{
    asgi_handler h = ws_handler(w);
    asgi_conn *c = NULL;
    int rc = asgi_websocket_dispatch(th_app(app), &r->req, &h, w, &c);
    if (rc) print_error("asgi_websocket_dispatch: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
    assert_rc(rc, WSGI_OK);
    assert_non_null(c);
    return c;
}

static const char *new_key(char *buf, size_t cap)
{
    static int n;
    snprintf(buf, cap, "w%d", ++n);
    return buf;
}

#define assert_notes(key, expected)                                                                \
    do {                                                                                           \
        char notes_[16384], t_[128];                                                               \
        snprintf(t_, sizeof t_, "/%s", (key));                                                     \
        ah_get_body(REPORT, t_, notes_, sizeof notes_);                                            \
        if (strcmp(notes_, (expected)) != 0)                                                       \
            print_error("notes[%s]:\n%s\n-- expected:\n%s\n", (key), notes_, (expected));          \
        assert_string_equal(notes_, (expected));                                                   \
    } while (0)

/* The script app with @steps (a Python list literal) as its x-script header. */
static asgi_conn *run_steps(const char *key, int catch, const char *steps, ws_rec *w, th_req *r)
{
    char target[128];
    snprintf(target, sizeof target, "/ws?key=%s%s", key, catch ? "&catch" : "");
    ws_req(r, target);
    th_req_header(r, "Sec-WebSocket-Protocol", "chat.v1");
    th_req_header(r, "X-Script", steps);
    return ws_dispatch(APPS "script", r, w);
}

static int pred_events(void *arg)
{
    ws_rec *w = arg;
    return w->r.done_calls > 0 || strchr(w->r.events, 'A') != NULL;
}

static int pred_resumed(void *arg)
{
    ws_rec *w = arg;
    return w->r.done_calls > 0 || w->r.read_resumes > 0;
}

#define CONNECT "'recv'"
#define ACCEPT  "{'type': 'websocket.accept'}"
#define CLOSE   "{'type': 'websocket.close'}"

/* ---- scope -------------------------------------------------------------------------------- */

static void test_scope(void **state)
{
    (void)state;
    char key[32], target[128];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/chat/r%%C3%%A9/?key=%s&x=1", key);
    th_req r;
    ws_req(&r, target);
    th_req_header(&r, "Sec-WebSocket-Protocol", "chat.v2, chat.v1 ,,");
    th_req_header(&r, "sec-websocket-protocol", "mqtt");
    r.req.client_addr = "10.1.2.3";
    r.req.client_port = 4444;
    r.req.server_name = "127.0.0.1";
    r.req.server_port = 8080;
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "scope_dump", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    char want[2048];
    snprintf(want, sizeof want,
             "type='websocket'\n"
             "scheme='ws'\n"
             "path='/chat/r\xc3\xa9/'\n"
             "raw_path=b'/chat/r%%C3%%A9/'\n"
             "query_string=b'key=%s&x=1'\n"
             "root_path=''\n"
             "http_version='1.1'\n"
             "subprotocols=['chat.v2', 'chat.v1', 'mqtt']\n"
             "asgi={'version': '3.0', 'spec_version': '2.5'}\n"
             "extensions={'websocket.http.response': {}}\n"
             "client=('10.1.2.3', 4444)\n"
             "server=('127.0.0.1', 8080)\n"
             "state={}\n"
             "headers=[(b'host', b'example.org'), (b'upgrade', b'websocket'), (b'connection', "
             "b'Upgrade'), (b'sec-websocket-key', b'dGhlIHNhbXBsZSBub25jZQ=='), "
             "(b'sec-websocket-version', b'13'), (b'sec-websocket-protocol', b'chat.v2, chat.v1 "
             ",,'), (b'sec-websocket-protocol', b'mqtt')]\n"
             "other=[]",
             key);
    assert_notes(key, want);
    /* websocket.close before the accept: the handshake is denied with 403. */
    assert_int_equal(w.r.status, 403);
    assert_string_equal(w.r.events, "SbD");
    assert_int_equal(w.r.done_result, 0);
    ws_rec_free(&w);

    /* wss over https, no subprotocols offered: an empty list. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    ws_req(&r, target);
    r.req.scheme = "https";
    ws_rec_init(&w);
    c = ws_dispatch(APPS "scope_dump", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    char got[4096];
    snprintf(target, sizeof target, "/%s", key);
    ah_get_body(REPORT, target, got, sizeof got);
    assert_str_contains(got, "scheme='wss'\n");
    assert_str_contains(got, "subprotocols=[]\n");
    ws_rec_free(&w);
}

/* ---- a whole conversation ------------------------------------------------------------------ */

static void test_echo_and_client_close(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "echo", &r, &w);
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(w.r.events, "A");
    assert_int_equal(w.has_subprotocol, 0);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "h\xc3\xa9llo", 6), 0);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_BINARY, "\0\1\2", 3), 0);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, NULL, 0), 0);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_BINARY, NULL, 0), 0);
    assert_int_equal(ah_settle(), -1);
    assert_string_equal(w.msgs, "t:h\xc3\xa9llo|b:3|t:|b:0|");
    assert_int_equal(w.prev_ok, 1);
    assert_rc(asgi_conn_ws_closed(c, 1001, "going \xff", 7), WSGI_OK);
    ah_drive_done(&w.r);
    assert_int_equal(w.r.done_result, 0);
    assert_int_equal(w.closes, 0); /* the client closed: nothing more to send */
    /* Later reports change nothing. */
    assert_rc(asgi_conn_ws_closed(c, 1000, NULL, 0), WSGI_OK);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "x", 1), WSGI_ERR_STATE);
    asgi_conn_free(c);
    assert_notes(
        key, "websocket.disconnect code=1001 reason='going \xef\xbf\xbd' keys=code,reason,type\n"
             "late send OSError");
    ws_rec_free(&w);
}

static void test_accept_subprotocol_and_headers(void **state)
{
    (void)state;
    char key[32];
    th_req r;
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = run_steps(new_key(key, sizeof key), 0,
                             "[" CONNECT ", {'type': 'websocket.accept', 'subprotocol': 'chat.v1', "
                             "'headers': [(b'x-a', b'1'), [b'Set-Cookie', b'b=2']]}, "
                             "{'type': 'websocket.close', 'code': 4001, 'reason': 'bye \u00e9'}]",
                             &w, &r);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "ACD");
    assert_int_equal(w.has_subprotocol, 1);
    assert_string_equal(w.subprotocol, "chat.v1");
    assert_int_equal(w.n_accept_headers, 2);
    assert_string_equal(w.accept_headers[0].name, "x-a");
    assert_string_equal(w.accept_headers[1].value, "b=2");
    assert_int_equal(w.close_code, 4001);
    assert_string_equal(w.close_reason, "bye \xc3\xa9");
    assert_int_equal(w.r.done_result, 0);
    assert_notes(key, "websocket.connect keys=type\nok\nok\nend");
    ws_rec_free(&w);
}

/* App code runs while the accept headers are converted (a generator): the subprotocol the
 * library validated must stay alive until on_ws_accept, whatever the app does to its message. */
static void test_accept_subprotocol_outlives_app_code(void **state)
{
    (void)state;
    th_req r;
    ws_req(&r, "/?n=600");
    static char offer[601];
    memset(offer, 'x', 600);
    th_req_header(&r, "Sec-WebSocket-Protocol", offer);
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "accept_mutating", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "ACD");
    assert_int_equal(w.has_subprotocol, 1);
    char want[64];
    memset(want, 'x', sizeof want - 1);
    want[sizeof want - 1] = '\0';
    assert_string_equal(w.subprotocol, want);
    assert_string_equal(w.accept_headers[0].name, "x-a");
    ws_rec_free(&w);
}

/* The same for a denial response's body: more_body's truth test is app code, run after the body
 * was looked up; the bytes handed to on_body must still be the message's. */
static void test_denial_body_outlives_app_code(void **state)
{
    (void)state;
    th_req r;
    ws_req(&r, "/?n=600");
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "deny_mutating", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "SbD");
    assert_int_equal(w.r.status, 401);
    assert_null(strchr(w.r.body, 'y'));
    assert_true(w.r.body_len == 0 || strspn(w.r.body, "x") == 600);
    ws_rec_free(&w);
}

/* Releasing the message before the previous one can run app code (a bytes subclass's __del__)
 * that drops the current message's payload: the library must hold the new one first. */
static void test_sent_message_outlives_app_code(void **state)
{
    (void)state;
    th_req r;
    ws_req(&r, "/?n=600");
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "send_dropper", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "AMMMCD");
    assert_string_equal(w.msgs, "b:1|b:1|b:600|");
    char xs[600];
    memset(xs, 'x', sizeof xs);
    assert_int_equal(w.prev_len, sizeof xs);
    assert_memory_equal(w.prev_copy, xs, sizeof xs);
    ws_rec_free(&w);
}

/* Callbacks run without the GIL, so another Python thread may change the app's message while
 * on_ws_close reads the reason it was handed: the library must hold it, not borrow it. */
static void close_hook_race(ws_rec *w)
{
    char b;
    assert_int_equal(write(w->hook_fds[0], "g", 1), 1); /* the app's thread replaces the reason */
    assert_int_equal(read(w->hook_fds[1], &b, 1), 1);   /* ... and says it did */
}

static void test_close_reason_outlives_other_threads(void **state)
{
    (void)state;
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    char target[128];
    snprintf(target, sizeof target, "/?n=120&go=%d&done=%d", go[0], done[1]);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    w.close_hook = close_hook_race;
    w.hook_fds[0] = go[1];
    w.hook_fds[1] = done[0];
    asgi_conn *c = ws_dispatch(APPS "close_raced", &r, &w);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "ACD");
    assert_int_equal(w.close_code, 4000);
    char want[121];
    memset(want, 'x', 120);
    want[120] = '\0';
    assert_string_equal(w.close_reason, want);
    for (int i = 0; i < 2; i++) {
        close(go[i]);
        close(done[i]);
    }
    ws_rec_free(&w);
}

/* ---- the end of the app's task ------------------------------------------------------------- */

static void test_task_end(void **state)
{
    (void)state;
    static const struct {
        const char *steps;
        const char *events;
        int status;     /* HTTP denial status, 0 if accepted */
        int close_code; /* after the accept, 0 if none */
        int error;      /* 1: on_done negative and a traceback logged; 2: WSGI_ERR_APP, no
                           traceback */
    } cases[] = {
        {"[" CONNECT ", " CLOSE "]", "SbD", 403, 0, 0},
        {"[" CONNECT ", 'return']", "SbD", 403, 0, 0},
        {"['return']", "SbD", 403, 0, 0},
        {"[" CONNECT ", 'raise']", "SbD", 500, 0, 1},
        {"[" CONNECT ", " ACCEPT ", 'return']", "ACD", 0, 1000, 0},
        {"[" CONNECT ", " ACCEPT ", 'raise']", "ACD", 0, 1011, 1},
        {"[" CONNECT ", " ACCEPT ", {'type': 'websocket.close', 'code': 3000}, 'raise']", "ACD", 0,
         3000, 0},
        /* The denial extension: the head is held until the first body event. */
        {"[" CONNECT ", {'type': 'websocket.http.response.start', 'status': 401, 'headers': "
         "[(b'www-authenticate', b'Basic')]}, {'type': 'websocket.http.response.body', 'body': "
         "b'no', 'more_body': True}, {'type': 'websocket.http.response.body', 'body': b'pe'}]",
         "SBbD", 401, 0, 0},
        {"[" CONNECT ", {'type': 'websocket.http.response.start', 'status': 401, 'headers': []}, "
         "'raise']",
         "SbD", 500, 0, 1},
        /* A denial response started and never given its body: an app error, as on HTTP (the held
         * head is replaced by a 500), not a quiet 403. */
        {"[" CONNECT ", {'type': 'websocket.http.response.start', 'status': 401, 'headers': []}, "
         "'return']",
         "SbD", 500, 0, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[32];
        th_req r;
        ws_rec w;
        ws_rec_init(&w);
        size_t mark = th_log_mark();
        asgi_conn *c = run_steps(new_key(key, sizeof key), 0, cases[i].steps, &w, &r);
        ah_drive_done(&w.r);
        asgi_conn_free(c);
        print_message("case %zu: events %s status %d close %d done %d\n", i, w.r.events, w.r.status,
                      w.close_code, w.r.done_result);
        ah_assert_sane(&w.r);
        assert_string_equal(w.r.events, cases[i].events);
        assert_int_equal(w.r.status, cases[i].status);
        assert_int_equal(w.close_code, cases[i].close_code);
        if (cases[i].status == 401) {
            assert_string_equal(w.r.body, "nope");
            assert_string_equal(ah_rec_header(&w.r, "www-authenticate"), "Basic");
        }
        if (cases[i].error == 2) {
            assert_rc(w.r.done_result, WSGI_ERR_APP);
            assert_true(th_log_count(mark, WSGI_LOG_ERROR, "without a body event") > 0);
        } else if (cases[i].error) {
            assert_true(w.r.done_result < 0);
            assert_true(th_log_count(mark, WSGI_LOG_ERROR, "Traceback") > 0);
        } else {
            assert_rc(w.r.done_result, 0);
        }
        ws_rec_free(&w);
    }
}

/* ---- invalid events ------------------------------------------------------------------------ */

static void test_invalid_events(void **state)
{
    (void)state;
    static const struct {
        const char *prefix; /* sent first, each noted "ok" */
        const char *bad;
        const char *exc;
    } cases[] = {
        {"", "{'type': 'websocket.send', 'text': 'x'}", "RuntimeError"},
        {ACCEPT ", ", ACCEPT, "RuntimeError"},
        {ACCEPT ", ", "{'type': 'websocket.send', 'text': 'x', 'bytes': b'x'}", "ValueError"},
        {ACCEPT ", ", "{'type': 'websocket.send'}", "ValueError"},
        {ACCEPT ", ", "{'type': 'websocket.send', 'text': None, 'bytes': None}", "ValueError"},
        {ACCEPT ", ", "{'type': 'websocket.send', 'text': b'x'}", "TypeError"},
        {ACCEPT ", ", "{'type': 'websocket.send', 'bytes': 'x'}", "TypeError"},
        {ACCEPT ", ", "{'type': 'websocket.send', 'text': '\\ud800'}", "UnicodeEncodeError"},
        {ACCEPT ", " CLOSE ", ", "{'type': 'websocket.send', 'text': 'x'}", "RuntimeError"},
        {ACCEPT ", " CLOSE ", ", CLOSE, "RuntimeError"},
        {ACCEPT ", " CLOSE ", ", ACCEPT, "RuntimeError"},
        {ACCEPT ", ", "{'type': 'websocket.close', 'code': 1006}", "ValueError"},
        {ACCEPT ", ", "{'type': 'websocket.close', 'code': 999}", "ValueError"},
        {ACCEPT ", ", "{'type': 'websocket.close', 'code': '1000'}", "TypeError"},
        {ACCEPT ", ", "{'type': 'websocket.close', 'reason': b'x'}", "TypeError"},
        {ACCEPT ", ",
         "{'type': 'websocket.close', 'reason': "
         "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'}",
         "ValueError"},
        {"", "{'type': 'websocket.accept', 'subprotocol': 5}", "TypeError"},
        {"", "{'type': 'websocket.accept', 'subprotocol': 'a b'}", "ValueError"},
        /* RFC 6455 4.2.2: only one the client offered (run_steps offers chat.v1) */
        {"", "{'type': 'websocket.accept', 'subprotocol': 'chat.v2'}", "ValueError"},
        {"", "{'type': 'websocket.accept', 'headers': [(b'sec-websocket-protocol', b'x')]}",
         "ValueError"},
        {"", "{'type': 'websocket.accept', 'headers': [('x', 'y')]}", "TypeError"},
        {"", "{'type': 'websocket.accept', 'headers': [(b'x', b'a\\r\\nb')]}", "ValueError"},
        {"", "{'type': 'http.response.start', 'status': 200}", "RuntimeError"},
        {"", "{'type': 'websocket.http.response.body', 'body': b''}", "RuntimeError"},
        {ACCEPT ", ", "{'type': 'websocket.http.response.start', 'status': 200}", "RuntimeError"},
        {"{'type': 'websocket.http.response.start', 'status': 200}, ", ACCEPT, "RuntimeError"},
        {"{'type': 'websocket.http.response.start', 'status': 200}, ", CLOSE, "RuntimeError"},
        {"", "{'type': 'websocket.http.response.start', 'status': 'x'}", "TypeError"},
        {"", "{'type': 'websocket.receive', 'text': 'x'}", "RuntimeError"},
        {"", "{'type': 5}", "TypeError"},
        {"", "['websocket.accept']", "TypeError"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char steps[1024], key[32], got[4096], want[256];
        snprintf(steps, sizeof steps, "[" CONNECT ", %s%s, " CLOSE "]", cases[i].prefix,
                 cases[i].bad);
        th_req r;
        ws_rec w;
        ws_rec_init(&w);
        asgi_conn *c = run_steps(new_key(key, sizeof key), 1, steps, &w, &r);
        ah_drive_done(&w.r);
        asgi_conn_free(c);
        char t[64];
        snprintf(t, sizeof t, "/%s", key);
        ah_get_body(REPORT, t, got, sizeof got);
        size_t n_ok = 0;
        for (const char *p = cases[i].prefix; (p = strstr(p, "'type'")) != NULL; p++)
            n_ok++;
        snprintf(want, sizeof want, "websocket.connect keys=type\n");
        for (size_t k = 0; k < n_ok; k++)
            strcat(want, "ok\n");
        strcat(want, cases[i].exc);
        strcat(want, ": ");
        if (strncmp(got, want, strlen(want)) != 0)
            print_error("case %zu (%s): notes\n%s\n-- expected to start with\n%s\n", i,
                        cases[i].bad, got, want);
        assert_true(strncmp(got, want, strlen(want)) == 0);
        assert_non_null(strstr(got, "\nend"));
        ah_assert_sane(&w.r);
        ws_rec_free(&w);
    }
}

/* ---- backpressure -------------------------------------------------------------------------- */

static void test_incoming_queue_is_bounded(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    w.r.with_read_resume = 1;
    asgi_conn *c = ws_dispatch(APPS "accept_then_wait", &r, &w);
    ah_drive_until(pred_events, &w, AH_MAX_TURNS);
    assert_string_equal(w.r.events, "A");
    int paused_at = 0;
    for (int i = 1; i <= 40; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%d", i);
        int rc = asgi_conn_ws_message(c, ASGI_WS_TEXT, m, (size_t)n);
        assert_true(rc == 0 || rc == ASGI_PAUSE);
        if (rc == ASGI_PAUSE && !paused_at) paused_at = i;
    }
    assert_int_equal(paused_at, 32); /* 32 messages waiting: stop reading */
    assert_int_equal(w.r.read_resumes, 0);
    /* One big message pauses at once as well (1 MiB not yet received). */
    char *big = calloc(1, 1 << 20);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_BINARY, big, 1 << 20), ASGI_PAUSE);
    free(big);
    char go[64];
    snprintf(go, sizeof go, "/%s", key);
    ah_rec g;
    ah_rec_init(&g);
    ah_get(APPS "go", go, &g);
    ah_rec_free(&g);
    /* The app polls for the go every millisecond (asyncio.sleep): drive its timers until it has
     * taken half the queue (ah_settle() alone returned while its timer was pending when the go
     * came back in less than a millisecond, and the test failed on a fast machine). */
    ah_drive_until(pred_resumed, &w, AH_MAX_TURNS);
    assert_int_equal(ah_settle() == 0, 0);
    assert_int_equal(w.r.read_resumes, 1); /* once, when the queue had drained */
    assert_rc(asgi_conn_ws_closed(c, 1000, "", 0), 0);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    char got[16384];
    snprintf(go, sizeof go, "/%s", key);
    ah_get_body(REPORT, go, got, sizeof got);
    /* Every message in order, then the disconnect. */
    const char *p = got;
    for (int i = 1; i <= 40; i++) {
        char want[64];
        snprintf(want, sizeof want, "websocket.receive text='m%d' keys=text,type\n", i);
        assert_true(strncmp(p, want, strlen(want)) == 0);
        p += strlen(want);
    }
    assert_non_null(strstr(p, "websocket.receive bytes=<1048576 bytes> keys=bytes,type\n"));
    assert_non_null(strstr(p, "websocket.disconnect code=1000 reason='' keys=code,reason,type"));
    ws_rec_free(&w);
}

/* Reading paused on a full queue, then the app closes (or returns) without receiving: what the
 * client still sends is dropped from then on, so the host must read again (on_read_resume) to see
 * the client's answering Close; otherwise the closing handshake cannot complete. */
static void test_read_resumes_when_the_app_closes(void **state)
{
    (void)state;
    for (int ret = 0; ret < 2; ret++) {
        char key[32], target[64];
        new_key(key, sizeof key);
        snprintf(target, sizeof target, "/?key=%s%s", key, ret ? "&return" : "");
        th_req r;
        ws_req(&r, target);
        ws_rec w;
        ws_rec_init(&w);
        w.r.with_read_resume = 1;
        asgi_conn *c = ws_dispatch(APPS "accept_then_close", &r, &w);
        ah_drive_until(pred_events, &w, AH_MAX_TURNS);
        int rc = 0;
        for (int i = 1; i <= 32; i++)
            rc = asgi_conn_ws_message(c, ASGI_WS_TEXT, "m", 1);
        assert_rc(rc, ASGI_PAUSE); /* the host stops reading */
        char go[64];
        snprintf(go, sizeof go, "/%s", key);
        ah_rec g;
        ah_rec_init(&g);
        ah_get(APPS "go", go, &g);
        ah_rec_free(&g);
        ah_drive_done(&w.r);
        assert_int_equal(w.closes, 1);
        assert_int_equal(w.close_code, ret ? 1000 : 4000);
        assert_int_equal(w.r.read_resumes, 1);
        assert_non_null(strchr(w.r.events, 'R'));
        /* Reading again: what comes now is dropped, and never pauses. */
        for (int i = 0; i < 40; i++)
            assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "m", 1), WSGI_ERR_STATE);
        assert_rc(asgi_conn_ws_closed(c, 4000, "", 0), WSGI_OK);
        asgi_conn_free(c);
        assert_notes(key, "closed");
        ws_rec_free(&w);
    }
}

static int pred_sent(void *arg)
{
    ws_rec *w = arg;
    return w->n_msgs > 0 || w->r.done_calls > 0;
}

static void test_send_pause_holds_the_app(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s&n=3", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    w.send_rc = ASGI_PAUSE;
    asgi_conn *c = ws_dispatch(APPS "sender", &r, &w);
    ah_drive_until(pred_sent, &w, AH_MAX_TURNS);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(ah_settle(), -1);
        assert_int_equal(w.n_msgs, i); /* held: the next send() waits for the resume */
        assert_true(w.prev_ok);
        assert_rc(asgi_conn_resume(c), WSGI_OK);
    }
    ah_drive_done(&w.r);
    assert_string_equal(w.msgs, "b:100000|b:100000|b:100000|");
    assert_int_equal(w.close_code, 1000);
    assert_int_equal(w.r.done_result, 0);
    asgi_conn_free(c);
    assert_notes(key, "sent 0\nsent 1\nsent 2");
    ws_rec_free(&w);

    /* A paused send() and then the client goes away: it raises OSError. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s&n=3", key);
    ws_req(&r, target);
    ws_rec_init(&w);
    w.send_rc = ASGI_PAUSE;
    c = ws_dispatch(APPS "sender", &r, &w);
    ah_drive_until(pred_sent, &w, AH_MAX_TURNS);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_disconnect(c), WSGI_OK);
    ah_drive_done(&w.r);
    assert_true(w.r.done_result < 0);
    assert_int_equal(w.closes, 0);
    asgi_conn_free(c);
    assert_notes(key, "");
    ws_rec_free(&w);
}

/* send() from several tasks at once (uvicorn, hypercorn and daphne accept it): while one is held
 * by ASGI_PAUSE the others wait their turn instead of raising, and each message goes out once,
 * in the order of the calls. */
static void test_concurrent_sends_wait_their_turn(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    w.send_rc = ASGI_PAUSE;
    asgi_conn *c = ws_dispatch(APPS "concurrent_senders", &r, &w);
    ah_drive_until(pred_sent, &w, AH_MAX_TURNS);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(ah_settle(), -1);
        assert_int_equal(w.n_msgs, i); /* one at a time: the next waits for the resume */
        assert_rc(asgi_conn_resume(c), WSGI_OK);
    }
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.msgs, "t:m1|t:m2|t:m3|");
    assert_int_equal(w.r.done_result, 0);
    assert_notes(key, "sent 1\nsent 2\nsent 3");
    ws_rec_free(&w);

    /* The client leaves while they wait: each raises OSError, nothing more is delivered. */
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    ws_req(&r, target);
    ws_rec_init(&w);
    w.send_rc = ASGI_PAUSE;
    c = ws_dispatch(APPS "concurrent_senders", &r, &w);
    ah_drive_until(pred_sent, &w, AH_MAX_TURNS);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_ws_closed(c, 1001, NULL, 0), WSGI_OK);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_int_equal(w.n_msgs, 1);
    assert_notes(key, "1 OSError: client disconnected\n2 OSError: client disconnected\n"
                      "3 OSError: client disconnected");
    ws_rec_free(&w);
}

/* ---- disconnects and freeing --------------------------------------------------------------- */

static void test_abrupt_drop_is_1006(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "echo", &r, &w);
    assert_int_equal(ah_settle(), -1);
    /* A message that arrived before the drop is still received first. */
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "last", 4), 0);
    assert_rc(asgi_conn_disconnect(c), WSGI_OK);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_notes(key, "echo OSError\n"
                      "websocket.disconnect code=1006 reason='' keys=code,reason,type\n"
                      "late send OSError");
    /* Its echo was attempted after the disconnect: it raised, nothing was delivered. */
    assert_int_equal(w.n_msgs, 0);
    ws_rec_free(&w);

    /* Disconnected before the accept: receive() gives websocket.connect then the disconnect. */
    new_key(key, sizeof key);
    th_req r2;
    ws_rec_init(&w);
    c = run_steps(key, 1, "[" CONNECT ", 'recv', " ACCEPT "]", &w, &r2);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_disconnect(c), WSGI_OK);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_string_equal(w.r.events, "D");
    assert_notes(key, "websocket.connect keys=type\n"
                      "websocket.disconnect code=1006 reason='' keys=code,reason,type\n"
                      "OSError: client disconnected\nend");
    ws_rec_free(&w);
}

static void test_free_while_app_runs(void **state)
{
    (void)state;
    char key[32], target[64];
    new_key(key, sizeof key);
    snprintf(target, sizeof target, "/?key=%s", key);
    th_req r;
    ws_req(&r, target);
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "detached", &r, &w);
    ah_drive_until(pred_events, &w, AH_MAX_TURNS);
    asgi_conn_free(c);
    w.r.freed = 1;
    ah_drive_idle();
    assert_int_equal(w.r.after_free, 0);
    assert_string_equal(w.r.events, "A");
    assert_notes(key, "accepted\nwebsocket.disconnect code=1006 reason='' keys=code,reason,type\n"
                      "send OSError\nfinished");
    ws_rec_free(&w);
}

/* ---- the host API's checks ----------------------------------------------------------------- */

static void test_api_checks(void **state)
{
    (void)state;
    ah_set_eager(0); /* "before the accept": the echo app accepts in its first step */
    th_req r;
    ws_req(&r, "/?key=api");
    ws_rec w;
    ws_rec_init(&w);
    asgi_handler h = ws_handler(&w);
    asgi_conn *c = NULL;
    wsgi_app *app = th_app(APPS "echo");
    /* Missing WebSocket callbacks, or a struct_size that does not cover them. */
    asgi_handler bad = h;
    bad.on_ws_send = NULL;
    assert_rc(asgi_websocket_dispatch(app, &r.req, &bad, &w, &c), WSGI_ERR_INVAL);
    bad = h;
    bad.struct_size = offsetof(asgi_handler, on_ws_accept);
    assert_rc(asgi_websocket_dispatch(app, &r.req, &bad, &w, &c), WSGI_ERR_INVAL);
    assert_null(c);
    /* A body. */
    th_req rb;
    ws_req(&rb, "/");
    th_req_body(&rb, "x", 1);
    assert_rc(asgi_websocket_dispatch(app, &rb.req, &h, &w, &c), WSGI_ERR_INVAL);
    assert_rc(asgi_websocket_dispatch(NULL, &r.req, &h, &w, &c), WSGI_ERR_INVAL);
    assert_rc(asgi_websocket_dispatch(app, &r.req, &h, &w, NULL), WSGI_ERR_INVAL);
    /* A WSGI app. */
    assert_rc(asgi_websocket_dispatch(th_app("adopt_app:app"), &r.req, &h, &w, &c),
              WSGI_ERR_INTERFACE);

    assert_rc(asgi_conn_ws_message(NULL, ASGI_WS_TEXT, "x", 1), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_ws_closed(NULL, 1000, NULL, 0), WSGI_ERR_INVAL);

    /* Before the accept: no messages; the body API is not for WebSocket. */
    c = ws_dispatch(APPS "echo", &r, &w);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "x", 1), WSGI_ERR_STATE);
    assert_int_equal(ah_settle(), -1);
    assert_rc(asgi_conn_ws_message(c, 7, "x", 1), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, NULL, 1), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_ws_closed(c, 1000, NULL, 3), WSGI_ERR_INVAL);
    /* Invalid UTF-8 in a text message (the host closes with 1007); overlong, surrogate, cut. */
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "\xc0\xaf", 2), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "\xed\xa0\x80", 3), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_ws_message(c, ASGI_WS_TEXT, "a\xe2\x82", 3), WSGI_ERR_INVAL);
    assert_rc(asgi_conn_feed(c, "x", 1, 0), WSGI_ERR_STATE);
    assert_rc(asgi_conn_ws_closed(c, 1000, NULL, 0), WSGI_OK);
    ah_drive_done(&w.r);
    asgi_conn_free(c);
    assert_int_equal(w.n_msgs, 0); /* nothing invalid reached the app */
    ws_rec_free(&w);

    /* The WebSocket calls on an HTTP connection. */
    ah_rec hr;
    ah_rec_init(&hr);
    th_req g;
    th_req_init(&g, "GET", "/x");
    asgi_conn *hc = ah_dispatch(th_app(REPORT), &g, &hr);
    assert_rc(asgi_conn_ws_message(hc, ASGI_WS_TEXT, "x", 1), WSGI_ERR_STATE);
    assert_rc(asgi_conn_ws_closed(hc, 1000, NULL, 0), WSGI_ERR_STATE);
    ah_drive_done(&hr);
    asgi_conn_free(hc);
    ah_rec_free(&hr);
}

/* ---- reference leaks ---------------------------------------------------------------------- */

static long allocated_blocks(void)
{
    char out[64];
    ah_get_body(APPS "probe", "/", out, sizeof out);
    return strtol(out, NULL, 10);
}

static void leak_once(const char *path, int mode)
{
    th_req r;
    ws_req(&r, path);
    th_req_header(&r, "Sec-WebSocket-Protocol", "p");
    ws_rec w;
    ws_rec_init(&w);
    asgi_conn *c = ws_dispatch(APPS "leak_path", &r, &w);
    assert_int_equal(ah_settle(), -1);
    if (w.accepts) {
        asgi_conn_ws_message(c, ASGI_WS_TEXT, "hello", 5);
        asgi_conn_ws_message(c, ASGI_WS_BINARY, "\1\2", 2);
        if (mode == 1) asgi_conn_ws_message(c, ASGI_WS_TEXT, "close", 5);
        asgi_conn_ws_message(c, ASGI_WS_TEXT, "\xff", 1); /* invalid: refused */
        ah_settle();
        if (mode == 0) asgi_conn_ws_closed(c, 1000, "bye", 3);
        if (mode == 1) asgi_conn_ws_closed(c, 4000, "r", 1); /* the client's answering Close */
        if (mode == 2) asgi_conn_disconnect(c);
    }
    if (mode == 3) {
        asgi_conn_free(c); /* detached: the app finishes on its own */
        ah_drive_idle();
    } else {
        ah_drive_done(&w.r);
        asgi_conn_free(c);
    }
    ws_rec_free(&w);
}

/* Every path thousands of times: the interpreter's allocated blocks must not grow with the count
 * (sys.getallocatedblocks() is exact; no timing involved). */
static void test_leaks_per_path(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        int mode; /* 0 client close, 1 app close, 2 drop, 3 host frees while running */
    } paths[] = {
        {"/echo", 0},     {"/echo", 1},         {"/echo", 2},        {"/echo", 3},    {"/deny", 0},
        {"/response", 0}, {"/raise_before", 0}, {"/raise_after", 0}, {"/invalid", 0},
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        for (int k = 0; k < 100; k++)
            leak_once(paths[i].path, paths[i].mode); /* warm */
        long before = allocated_blocks();
        for (int k = 0; k < 1500; k++)
            leak_once(paths[i].path, paths[i].mode);
        long after = allocated_blocks();
        print_message("%s mode %d: blocks %ld -> %ld\n", paths[i].path, paths[i].mode, before,
                      after);
        /* One leaked object per connection would show as >= 1500 blocks; the exception paths
         * move by up to ~200 between runs on 3.11 and up to ~500 on 3.12 (caches that grow and
         * settle: 502 once in the Python-version matrix), so the bound is half the count. */
        if (after - before > 750) {
            print_error("%s (mode %d): allocated blocks grew by %ld over 1500 connections\n",
                        paths[i].path, paths[i].mode, after - before);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        ah_unit_test(test_scope),
        ah_unit_test(test_echo_and_client_close),
        ah_unit_test(test_accept_subprotocol_and_headers),
        ah_unit_test(test_accept_subprotocol_outlives_app_code),
        ah_unit_test(test_denial_body_outlives_app_code),
        ah_unit_test(test_sent_message_outlives_app_code),
        ah_unit_test(test_close_reason_outlives_other_threads),
        ah_unit_test(test_task_end),
        ah_unit_test(test_invalid_events),
        ah_unit_test(test_incoming_queue_is_bounded),
        ah_unit_test(test_read_resumes_when_the_app_closes),
        ah_unit_test(test_send_pause_holds_the_app),
        ah_unit_test(test_concurrent_sends_wait_their_turn),
        ah_unit_test(test_abrupt_drop_is_1006),
        ah_unit_test(test_free_while_app_runs),
        ah_unit_test(test_api_checks),
        ah_unit_test(test_leaks_per_path),
    };
    return cmocka_run_group_tests(tests, th_group_setup, th_group_teardown);
}
