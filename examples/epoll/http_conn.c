/* Request parsing for libwsgi-epoll: http_parser callbacks, the request-smuggling and size checks
 * http_parser does not do itself, the request body source, and header lookups for the WebSocket
 * handshake (checked by ws_conn.c).
 *
 * How bodies reach the app without being buffered whole:
 *  - no body, or Content-Length <= BODY_BUFFER_MAX: the loop reads the whole message before the
 *    app is called, and wsgi.input reads from the connection buffer (wsgi_request.body);
 *  - chunked, or a larger Content-Length: the app is called as soon as the head is complete and
 *    the thread that runs the app reads the socket itself, inside wsgi.input's read
 *    (conn_body_read). It owns the connection for the whole call, so no hand-off with the loop is
 *    needed: it polls the socket (bounded by --timeout-request) and parses what arrives with the
 *    same http_parser. A Content-Length body is received straight into the app's buffer (the
 *    bytes object wsgi.input.read() returns) and parsed in place, never past its end; a chunked
 *    one goes through the input buffer and the parser copies the de-chunked bytes.
 *    With --threads 0 that thread is the loop thread, which is then blocked while an upload is in
 *    progress: use app threads (the default) for apps that take large or slow uploads.
 *  - ASGI apps (BODY_FEED): the loop reads the socket as data arrives and the parser hands each
 *    de-chunked piece to c->body_sink (asgi_conn_feed), straight from the input buffer.
 * The parser is fed at most as many input bytes as the caller's buffer has room for (the body is
 * never longer than the bytes it came in), so nothing needs to be held back between calls.
 *
 * libwsgi-scgi (options.scgi_accept != 0): a connection's first byte says what it speaks
 * (scgi_parse.c): an SCGI netstring or a uwsgi packet from lighttpd's mod_scgi, or plain HTTP/1.1
 * from mod_proxy (WebSocket), which then goes through http_parser like libwsgi-epoll's. An SCGI /
 * uwsgi head is parsed by scgi_parse.c, its CGI variables mapped to the wsgi_request by
 * scgi_map_request() (conn_fill_request); its body is exactly CONTENT_LENGTH bytes, and to read
 * it through the very same paths (buffered, streamed into wsgi.input, fed to ASGI, drained)
 * http_parser is first given a made-up head "PUT / HTTP/1.1" with that Content-Length (c->synth:
 * the callbacks ignore it), after which it frames the body bytes as it does for HTTP. A request
 * with no body (Content-Length 0, most of them) is complete at once, without the made-up head. */
#include "conn.h"
#include "host_log.h"
#include "scgi_parse.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen == n && strncasecmp(a, lit, n) == 0;
}

static int is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Trim optional whitespace around a header value. */
static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/* The states of chunk_framing() (c->ck_state). */
enum {
    CK_HEAD_LF, /* the head's last LF, which the parser paused before (checked with the head) */
    CK_SIZE0,   /* the first digit of a chunk size */
    CK_SIZE,
    CK_BWS, /* blanks after the size: ';' or the CR next */
    CK_EXT, /* a chunk extension, up to the CR */
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER, /* the start of a line of the trailer section */
    CK_FIELD,
    CK_FIELD_LF,
    CK_END_LF,
    CK_END,
};

int conn_in_reserve(conn *c, size_t want)
{
    if (c->in_cap >= want) return 0;
    size_t cap = c->in_cap ? c->in_cap : IN_BUF_SIZE;
    while (cap < want)
        cap *= 2;
    char *p = realloc(c->in, cap);
    if (!p) return -1;
    c->in = p;
    c->in_cap = cap;
    return 0;
}

/* ---- http_parser callbacks ------------------------------------------------------------------ */

static int on_url(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->synth) return 0;
    if (c->url_len == 0) c->url_off = (size_t)(at - c->in);
    c->url_len += len;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->head_done || c->synth) return 0; /* a chunked body's trailer: ignored */
    if (c->hdr_state != 1) {
        if (c->n_hdrs == server_max_headers(c->srv)) {
            c->err_status = 431;
            return -1;
        }
        if (c->n_hdrs == c->hdrs_cap) {
            size_t cap = c->hdrs_cap ? c->hdrs_cap * 2 : 16;
            hdr_span *h = realloc(c->hdrs, cap * sizeof(*h));
            if (!h) {
                c->err_status = 503;
                return -1;
            }
            c->hdrs = h;
            c->hdrs_cap = cap;
        }
        hdr_span *h = &c->hdrs[c->n_hdrs++];
        h->name_off = (size_t)(at - c->in);
        h->name_len = 0;
        h->value_off = h->name_off;
        h->value_len = 0;
        c->hdr_state = 1;
    }
    c->hdrs[c->n_hdrs - 1].name_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (c->head_done || c->synth) return 0;
    hdr_span *h = &c->hdrs[c->n_hdrs - 1];
    if (c->hdr_state != 2) {
        h->value_off = (size_t)(at - c->in);
        h->value_len = 0;
        c->hdr_state = 2;
    }
    h->value_len += len;
    return 0;
}

/* RFC 3986 unreserved / sub-delims, and '%' of pct-encoded: what a reg-name and the inside of an
 * IPvFuture literal are made of (pct-encoded is not checked further: a name is compared, never
 * decoded, by the hosts and apps that use it). */
static int is_host_char(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return 1;
    return ch && strchr("-._~!$&'()*+,;=%", ch) != NULL;
}

/* RFC 9112 3.2: Host = uri-host [ ":" port ], uri-host = IP-literal / IPv4address / reg-name
 * (RFC 3986 3.2.2), port = *DIGIT; empty is allowed (a target without an authority). The value
 * has no surrounding OWS. An IP-literal ("[...]") is an IPvFuture ("v" ...: its characters only)
 * or an IPv6 address (hex digits, ':' and '.'; not parsed further), which may end in an RFC 6874
 * zone id ("%25" then unreserved or pct-encoded). */
int conn_valid_host(const char *v, size_t n)
{
    size_t i = 0;
    if (n && v[0] == '[') {
        int future = n > 1 && (v[1] == 'v' || v[1] == 'V'), zone = 0;
        for (i = 1; i < n && v[i] != ']'; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (future || zone) {
                if (!is_host_char(ch) && (ch != ':' || zone)) return 0;
            } else if (ch == '%' && n - i > 3 && v[i + 1] == '2' && v[i + 2] == '5') {
                zone = 1;
                i += 2;
            } else if (!isxdigit(ch) && ch != ':' && ch != '.') {
                return 0;
            }
        }
        if (i == n || i == 1) return 0; /* no "]", or "[]" */
        i++;
    } else {
        while (i < n && v[i] != ':') {
            if (!is_host_char((unsigned char)v[i])) return 0;
            i++;
        }
    }
    if (i == n) return 1;
    if (v[i] != ':') return 0; /* something after "]" */
    for (i++; i < n; i++)
        if (v[i] < '0' || v[i] > '9') return 0;
    return 1;
}

/* The authority of an absolute-form target (scheme "://" authority [path-abempty] ["?" query],
 * RFC 9112 3.2.2): 1 and its span, or 0 for any other form. */
static int target_authority(const char *t, size_t n, const char **a, size_t *alen)
{
    if (n == 0 || t[0] == '/' || (n == 1 && t[0] == '*')) return 0;
    const char *sep = NULL;
    for (size_t j = 0; j + 2 < n; j++)
        if (t[j] == ':' && t[j + 1] == '/' && t[j + 2] == '/') {
            sep = t + j;
            break;
        }
    if (!sep) return 0;
    size_t i = (size_t)(sep - t) + 3, start = i;
    while (i < n && t[i] != '/' && t[i] != '?')
        i++;
    *a = t + start;
    *alen = i - start;
    return 1;
}

/* Transfer-Encoding of a request: 0 if it is exactly "chunked", else the status to answer. RFC 9112
 * 6.3: a request whose final coding is not chunked has no reliable length (400, and close), nor has
 * one that applies chunked twice; chunked after a coding we cannot decode ("gzip, chunked"): 501 */
static int check_te(const char *te, size_t te_len)
{
    int n_codings = 0, n_chunked = 0, last_chunked = 0;
    const char *end = te + te_len;
    while (te < end) {
        const char *comma = memchr(te, ',', (size_t)(end - te));
        const char *tok = te;
        size_t tok_len = (size_t)((comma ? comma : end) - te);
        te = comma ? comma + 1 : end;
        trim(&tok, &tok_len);
        if (tok_len == 0) continue; /* an empty list element */
        n_codings++;
        last_chunked = ieq(tok, tok_len, "chunked");
        n_chunked += last_chunked;
    }
    if (!last_chunked || n_chunked > 1) return 400;
    return n_codings > 1 ? 501 : 0;
}

/* Expect = #expectation (RFC 9110 10.1.1), its empty elements ignored (a recipient MUST accept
 * them, 5.6.1.2): 1 if it holds 100-continue only, 0 if nothing, -1 if an expectation we do not
 * meet (417). */
static int check_expect(const char *v, size_t n)
{
    const char *end = v + n;
    int cont = 0;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *tok = v;
        size_t tok_len = (size_t)((comma ? comma : end) - v);
        v = comma ? comma + 1 : end;
        trim(&tok, &tok_len);
        if (tok_len == 0) continue;
        if (!ieq(tok, tok_len, "100-continue")) return -1;
        cont = 1;
    }
    return cont;
}

/* The checks of RFC 9112 that http_parser leaves to us. Returns 0 or the status to answer; with
 * 0, c->keep_alive says whether the request lets the connection persist (RFC 9112 9.3). */
static int check_head(conn *c)
{
    int n_cl = 0, n_te = 0, n_host = 0, opt_close = 0, opt_keep_alive = 0;
    /* http_parser takes "GET /" (no version) for HTTP/0.9: not a request we serve. */
    if (c->parser.http_major != 1) return c->parser.http_major == 0 ? 400 : 505;
    const char *te = NULL;
    size_t te_len = 0;
    for (size_t k = 0; k < c->n_hdrs; k++) {
        const hdr_span *h = &c->hdrs[k];
        const char *name = c->in + h->name_off;
        const char *value = c->in + h->value_off;
        size_t vlen = h->value_len;
        if (h->name_len == 0) return 400;
        for (size_t i = 0; i < h->name_len; i++)
            if (!is_tchar((unsigned char)name[i])) return 400;
        /* No CR, LF, NUL or other controls in values (this also refuses obs-fold). */
        for (size_t i = 0; i < vlen; i++) {
            unsigned char ch = (unsigned char)value[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 400;
        }
        if (ieq(name, h->name_len, "content-length")) {
            n_cl++;
        } else if (ieq(name, h->name_len, "transfer-encoding")) {
            n_te++;
            te = value;
            te_len = vlen;
        } else if (ieq(name, h->name_len, "host")) {
            n_host++;
            /* A Host that is not a host is a 400 (RFC 9112 3.2 MUST): apps build their absolute
             * URLs from it. */
            trim(&value, &vlen);
            if (!conn_valid_host(value, vlen)) return 400;
        } else if (ieq(name, h->name_len, "connection")) {
            /* Read here, not by http_parser, which misses an option after an empty list element
             * (", close", "keep-alive,,close") or before a trailing HTAB: a recipient MUST accept
             * both (RFC 9110 5.6.1.2, RFC 9112 5.1), and a request pipelined after a "close"
             * MUST NOT be processed (RFC 9112 9.6). */
            opt_close |= conn_token_in_list(value, vlen, "close");
            opt_keep_alive |= conn_token_in_list(value, vlen, "keep-alive");
        } else if (ieq(name, h->name_len, "expect")) {
            int e = check_expect(value, vlen);
            if (e < 0) return 417;
            if (e && c->parser.http_major == 1 && c->parser.http_minor >= 1) c->expect_continue = 1;
        }
    }
    /* Request smuggling: a message whose length two parties could read differently. */
    if (n_cl > 1 || (n_cl && n_te) || n_te > 1) return 400;
    if (n_te) {
        int st = check_te(te, te_len);
        if (st) return st;
        /* Exactly chunked: tell http_parser (it reads its flags after this callback), which
         * takes "chunked" only when followed by nothing but spaces, and refuses the request
         * otherwise. A recipient MUST accept empty list elements ("chunked,", ", chunked": RFC
         * 9110 5.6.1.2), and OWS around a field value (a trailing HTAB) is not part of it (RFC
         * 9112 5.1). */
        c->parser.flags |= F_CHUNKED;
    }
    if (c->parser.http_major == 1 && c->parser.http_minor >= 1 && n_host != 1) return 400;
    if (n_host > 1) return 400;
    if (c->url_len == 0) return 400;
    /* No whitespace or control in the target: http_parser built without HTTP_PARSER_STRICT
     * takes HTAB and FF there, where a front end may end the target (RFC 9112 3). */
    for (size_t i = 0; i < c->url_len; i++) {
        unsigned char ch = (unsigned char)c->in[c->url_off + i];
        if (ch <= ' ' || ch == 0x7f) return 400;
    }
    /* RFC 9112 3.2: no fragment in a request-target (http_parser takes one); it would reach the
     * app inside PATH_INFO / QUERY_STRING. An invalid request-line is a 400 (section 3). */
    if (memchr(c->in + c->url_off, '#', c->url_len)) return 400;
    /* An absolute-form target's authority stands for Host (fill_http()): the same rule, and
     * no userinfo (RFC 9110 4.2.4); an http or https URI with an empty host ("http:///p",
     * "http://:80/p") is invalid, a recipient MUST reject it (RFC 9110 4.2.1, 4.2.2). */
    const char *auth, *t = c->in + c->url_off;
    size_t auth_len;
    if (target_authority(t, c->url_len, &auth, &auth_len)) {
        if (!conn_valid_host(auth, auth_len)) return 400;
        size_t scheme_len = (size_t)(auth - 3 - t);
        if ((ieq(t, scheme_len, "http") || ieq(t, scheme_len, "https")) &&
            (auth_len == 0 || auth[0] == ':'))
            return 400;
    }
    /* An origin server, not a tunnel: a method it does not implement (RFC 9110 9.1, 9.3.6). */
    if (c->parser.method == HTTP_CONNECT) return 501;
    /* RFC 9112 9.3: a "close" option ends the connection after the response, in either version;
     * else HTTP/1.1 persists, HTTP/1.0 only with "keep-alive". */
    c->keep_alive = !opt_close && (c->parser.http_minor >= 1 || opt_keep_alive);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    if (c->synth) return 0; /* SCGI: the made-up head that frames the body (scgi_head()) */
    c->head_done = 1;
    int st = check_head(c);
    if (st) {
        c->err_status = st;
        return -1;
    }
    c->http_major = p->http_major;
    c->http_minor = p->http_minor;
    c->is_head = p->method == HTTP_HEAD;
    if (p->upgrade) c->keep_alive = 0; /* c->keep_alive: check_head() */
    c->chunked = (p->flags & F_CHUNKED) != 0;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > INT64_MAX) {
        c->err_status = 413; /* http_parser takes lengths up to ~2^64: more than we can count */
        return -1;
    }
    c->content_length = (p->flags & F_CONTENTLENGTH) ? (int64_t)p->content_length : -1;
    if (c->chunked) c->content_length = -1;
    /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing: close after this request. */
    if (c->chunked && p->http_minor == 0) c->keep_alive = 0;
    /* Stop here: the caller decides how the body is read. */
    http_parser_pause(p, 1);
    return 0;
}

static int over_limit(conn *c, uint64_t more)
{
    uint64_t max = server_max_body(c->srv);
    /* A chunk size can be close to 2^64: compare without adding to it. */
    return max && (more > max || c->body_received > max - more);
}

static int on_chunk_header(http_parser *p)
{
    conn *c = p->data;
    /* Refuse an oversized chunk before reading it. */
    if (over_limit(c, p->content_length)) {
        c->body_error = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    if (over_limit(c, len)) {
        c->body_error = 413;
        return -1;
    }
    c->body_received += len;
    if (c->body_mode == BODY_DISCARD) return 0;
    if (c->body_mode == BODY_FEED) return c->body_sink(c, at, len) < 0 ? -1 : 0;
    if (c->body_mode == BODY_STREAM) {
        /* Cannot overflow: we never feed more input than dst has room for. Received straight
         * into dst (conn_body_read), the bytes are already where they belong. */
        if (at != c->dst + c->dst_len) memmove(c->dst + c->dst_len, at, len);
        c->dst_len += len;
    } else {
        if (c->body_len == 0) c->body_off = (size_t)(at - c->in);
        c->body_len += len;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    c->msg_done = 1;
    /* Keep a pipelined next request in the buffer until this one is answered. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings conn_parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- driving the parser -------------------------------------------------------------------- */

int conn_can_drain(const conn *c)
{
    if (c->msg_done) return 1;
    /* The client waits for our 100 Continue before sending the body: there is nothing to drain,
     * and it would not know where its body ends and a next request begins. */
    if (c->expect_continue && !c->continue_sent) return 0;
    if (c->content_length >= 0 && (uint64_t)c->content_length - c->body_received > DRAIN_MAX)
        return 0;
    return 1;
}

void conn_request_begin(conn *c)
{
    size_t left = c->in_len - c->in_parsed;
    if (left && c->in_parsed) memmove(c->in, c->in + c->in_parsed, left);
    c->in_len = left;
    c->in_parsed = 0;
    /* Give back the memory of a large buffered body. */
    if (c->in_cap > 4 * IN_BUF_SIZE && left <= IN_BUF_SIZE) {
        char *p = realloc(c->in, IN_BUF_SIZE);
        if (p) {
            c->in = p;
            c->in_cap = IN_BUF_SIZE;
        }
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->n_hdrs = 0;
    c->hdr_state = 0;
    c->url_off = c->url_len = 0;
    c->head_done = c->msg_done = 0;
    c->err_status = 0;
    c->content_length = -1;
    c->chunked = 0;
    c->ck_state = CK_HEAD_LF;
    c->ck_left = 0;
    c->ck_ext = 0;
    c->expect_continue = c->continue_sent = 0;
    c->keep_alive = 0;
    c->is_head = 0;
    c->http_major = 1;
    c->http_minor = 1;
    c->body_mode = BODY_NONE;
    c->body_off = c->body_len = 0;
    c->body_received = 0;
    c->dst = NULL;
    c->dst_cap = c->dst_len = 0;
    c->body_error = 0;
    c->body_sink = NULL;
    conn_access_free(c);
    c->fwd_peer[0] = '\0'; /* a proxy's next request may be another client's */
    c->resp = NULL;
    c->in_call = 0;
    c->obs_app = 0;
    c->started = 0;
    c->status = 0;
    c->framing = FRAME_NONE;
    c->resp_cl = -1;
    c->body_bytes = 0;
    c->swallow = 0;
    c->resp_done = 0;
    c->cut = 0;
    c->abort_requested = 0;
}

int conn_head_too_large(const conn *c)
{
    /* Still in the request line: its target is what is too long (RFC 9112 3). */
    return c->proto_known && c->proto == CPROTO_HTTP && c->n_hdrs == 0 && !c->head_done ? 414 : 431;
}

/* http_parser knows a fixed set of methods and refuses any other at its first byte that differs.
 * An origin server SHOULD answer a method it does not recognise with 501 (RFC 9110 9.1; methods
 * are case-sensitive), and an invalid request line with 400 (RFC 9112 3): 501 for a whole
 * request line "method SP request-target SP HTTP/1.d" with a token for its method (the target
 * checked as check_head() does), 400 for anything else, and 0 while the buffered bytes are the
 * start of such a line (a token, then SP and more without a LF yet). A token longer than
 * METHOD_MAX is a method longer than any we implement: 501 at once (RFC 9112 3), so that the
 * bytes rescanned at each arrival (conn_parse_head()) are the target's only, with memchr. */
#define METHOD_MAX 32 /* none of http_parser's methods is longer than 11 */
static int unknown_method_status(const conn *c)
{
    const char *p = c->in, *end = c->in + c->in_len;
    while (p < end && (*p == '\r' || *p == '\n')) /* the empty lines http_parser skips */
        p++;
    const char *m = p;
    while (p < end && is_tchar((unsigned char)*p))
        if (++p - m > METHOD_MAX) return 501;
    if (p == end) return 0;
    if (p == m || *p != ' ') return 400;
    const char *t = p + 1, *lf = memchr(t, '\n', (size_t)(end - t));
    if (!lf) return 0;
    if (lf > t && lf[-1] == '\r') lf--;
    /* The target runs to the version's SP: " HTTP/1.d" ends the line. */
    if (lf - t < 10 || memcmp(lf - 9, " HTTP/1.", 8) != 0 || lf[-1] < '0' || lf[-1] > '9')
        return 400;
    for (const char *q = t; q < lf - 9; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f || *q == '#') return 400;
    return 501;
}

static int status_for_errno(const conn *c, enum http_errno e)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW: return conn_head_too_large(c);
    case HPE_INVALID_METHOD: return unknown_method_status(c);
    default: return 400;
    }
}

static int hexval(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch |= 0x20;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The chunked framing of a request body, checked on the bytes http_parser consumed (it was given
 * them first: it decides where the body ends). Built without HTTP_PARSER_STRICT, it takes any two
 * bytes after chunk-data for the CRLF and any byte after the CR of a chunk-size line or of the
 * trailer section for the LF, and ignores whatever follows a chunk size up to the CR: a front
 * end that reads "5\r\nhelloXX0\r\n\r\n" otherwise sees another message than we do (RFC 9112
 * 7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF). Whitespace before the CR of a
 * size line, and a line of the trailer section ended by LF alone (2.2), are taken. Chunk
 * extensions are no body bytes (--max-body-size does not count them) and http_parser bounds
 * each chunk-size line only (--max-header-size, 431), not their sum: past --max-header-size in
 * all, the request is refused (413; RFC 9112 7.1.1: a server ought to limit their total length
 * and answer a 4xx). 0 or -1 (err_status set, or 400). */

static int chunk_framing(conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    int st = c->ck_state;
    while (p < end) {
        unsigned char ch = (unsigned char)*p;
        if (st == CK_DATA) {
            size_t k = (size_t)(end - p);
            if ((uint64_t)k > c->ck_left) k = (size_t)c->ck_left;
            c->ck_left -= k;
            p += k;
            if (c->ck_left == 0) st = CK_DATA_CR;
            continue;
        }
        p++;
        switch (st) {
        case CK_HEAD_LF: st = CK_SIZE0; break;
        case CK_SIZE0:
        case CK_SIZE:
            if (hexval(ch) >= 0) {
                /* http_parser refuses a size past 2^64 before we see it */
                c->ck_left = (c->ck_left << 4) | (uint64_t)hexval(ch);
                st = CK_SIZE;
            } else if (st == CK_SIZE && (ch == ' ' || ch == '\t')) {
                st = CK_BWS;
            } else if (st == CK_SIZE && ch == ';') {
                st = CK_EXT;
            } else if (st == CK_SIZE && ch == '\r') {
                st = CK_SIZE_LF;
            } else {
                return -1;
            }
            break;
        case CK_BWS:
            if (++c->ck_ext > server_max_header(c->srv)) {
                c->err_status = 413;
                return -1;
            }
            if (ch == ';')
                st = CK_EXT;
            else if (ch == '\r')
                st = CK_SIZE_LF;
            else if (ch != ' ' && ch != '\t')
                return -1;
            break;
        case CK_EXT:
            if (++c->ck_ext > server_max_header(c->srv)) {
                c->err_status = 413;
                return -1;
            }
            if (ch == '\r')
                st = CK_SIZE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return -1;
            break;
        case CK_SIZE_LF:
            if (ch != '\n') return -1;
            st = c->ck_left ? CK_DATA : CK_TRAILER;
            break;
        case CK_DATA_CR:
            if (ch != '\r') return -1;
            st = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n') return -1;
            st = CK_SIZE0;
            break;
        case CK_TRAILER: st = ch == '\r' ? CK_END_LF : ch == '\n' ? CK_END : CK_FIELD; break;
        case CK_FIELD:
            if (ch == '\r')
                st = CK_FIELD_LF;
            else if (ch == '\n')
                st = CK_TRAILER;
            break;
        case CK_FIELD_LF:
            if (ch != '\n') return -1;
            st = CK_TRAILER;
            break;
        case CK_END_LF:
            if (ch != '\n') return -1;
            st = CK_END;
            break;
        default: break; /* CK_END: the parser stops at the message's end */
        }
    }
    c->ck_state = st;
    return 0;
}

/* Parse n bytes at p (the input buffer, or the app's buffer for a body read straight into it);
 * returns how many were used, or -1 (err_status set). */
static ssize_t parse(conn *c, const char *p, size_t n)
{
    int chunked_body = c->chunked; /* set by on_headers_complete: these bytes are its body's */
    size_t used = http_parser_execute(&c->parser, &conn_parser_settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if ((e == HPE_OK || e == HPE_PAUSED) && chunked_body && chunk_framing(c, p, used) < 0) {
        if (!c->err_status) c->err_status = 400;
        host_log(WSGI_LOG_DEBUG, "bad request from %s: malformed chunked framing (%d)",
                 c->peer[0] ? c->peer : "unix", c->err_status);
        return -1;
    }
    if (e == HPE_OK || e == HPE_PAUSED) {
        /* An upgrade (or CONNECT) stops the parser early: what follows is not HTTP. */
        if (used < n && e == HPE_OK && c->parser.upgrade) {
            c->msg_done = 1;
            c->keep_alive = 0;
        }
        return (ssize_t)used;
    }
    if (c->body_error)
        c->err_status = c->body_error;
    else if (!c->err_status)
        c->err_status = status_for_errno(c, e);
    if (c->err_status) /* else a request line still to come: conn_parse_head() */
        host_log(WSGI_LOG_DEBUG, "bad request from %s: %s (%d)", c->peer[0] ? c->peer : "unix",
                 http_errno_description(e), c->err_status);
    return -1;
}

static int feed(conn *c, size_t n)
{
    ssize_t used = parse(c, c->in + c->in_parsed, n);
    if (used < 0) return -1;
    c->in_parsed += (size_t)used;
    return 0;
}

/* ---- SCGI and uwsgi (libwsgi-scgi) --------------------------------------------------------- */

/* lighttpd sends about 20 CGI variables besides one HTTP_* per request header. */
#define SCGI_EXTRA_VARS 64
/* What a connection kept for the next one may keep of its SCGI head's storage. */
#define SCGI_KEEP_SCRATCH 4096
#define SCGI_KEEP_VARS    64
enum { PARSE_HTTP = 2 }; /* scgi_head(): the connection speaks plain HTTP */

struct scgi_front {
    scgi_parser p;
    wsgi_header *headers, *extra; /* scgi_map_request()'s storage, n_cap entries each */
    size_t n_cap;
    char *scratch;
    size_t scratch_cap;
    size_t method_off, method_len; /* REQUEST_METHOD in conn.in */
    int parsing;                   /* p is this connection's (not a closed one's: conn_keep) */
    scgi_var_pos slots[];          /* --max-headers + SCGI_EXTRA_VARS */
};

void conn_scgi_method(const conn *c, const char **m, size_t *len)
{
    *m = c->in + c->sf->method_off;
    *len = c->sf->method_len;
}

int conn_scgi_param(const conn *c, const char *name, const char **value, size_t *len)
{
    return scgi_parser_find(&c->sf->p, c->in, name, value, len);
}

void conn_set_nodelay(conn *c)
{
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void conn_front_recycle(conn *c)
{
    if (!c->sf) return;
    /* The storage of a usual head is kept; a large one's goes (a kept connection's memory stays
     * small: server.c conn_keep). */
    if (c->sf->scratch_cap > SCGI_KEEP_SCRATCH || c->sf->n_cap > SCGI_KEEP_VARS)
        conn_front_free(c);
    else
        c->sf->parsing = 0;
}

void conn_front_free(conn *c)
{
    if (!c->sf) return;
    free(c->sf->headers);
    free(c->sf->extra);
    free(c->sf->scratch);
    free(c->sf);
    c->sf = NULL;
}

/* The wsgi_request of a complete SCGI / uwsgi head (pointers into conn.in and sf's storage). 0,
 * 400 (the variables do not make a request), or -1 (out of memory). */
static int scgi_map(conn *c, wsgi_request *req, const char **err)
{
    scgi_front *f = c->sf;
    size_t nv = scgi_parser_nvars(&f->p) + 1;
    size_t sc = scgi_parser_head_len(&f->p) + 2;
    if (f->n_cap < nv) {
        wsgi_header *h = realloc(f->headers, nv * sizeof(*h));
        if (h) f->headers = h;
        wsgi_header *x = h ? realloc(f->extra, nv * sizeof(*x)) : NULL;
        if (!x) return -1;
        f->extra = x;
        f->n_cap = nv;
    }
    if (f->scratch_cap < sc) {
        char *p = realloc(f->scratch, sc);
        if (!p) return -1;
        f->scratch = p;
        f->scratch_cap = sc;
    }
    scgi_map_buffers b = {f->headers, f->n_cap, f->extra, f->n_cap, f->scratch, f->scratch_cap};
    return scgi_map_request(&f->p, c->in, &b, req, NULL, err);
}

/* SCGI or uwsgi, as the parser found (SCGI when it could not tell). */
static conn_proto gateway_proto(const scgi_parser *p)
{
    return scgi_parser_protocol(p) == SCGI_PROTO_UWSGI ? CPROTO_UWSGI : CPROTO_SCGI;
}

/* A body of exactly CONTENT_LENGTH (> 0) bytes: let http_parser frame it as it frames a
 * Content-Length body (see the top), fed a made-up head first. 0 or -1 (err_status set). */
static int scgi_frame_body(conn *c)
{
    static const char pre[] = "PUT / HTTP/1.1\r\nContent-Length: ";
    char head[sizeof pre + 32], digits[24];
    size_t nd = 0;
    for (uint64_t v = (uint64_t)c->content_length; v; v /= 10)
        digits[nd++] = (char)('0' + v % 10);
    size_t n = sizeof pre - 1;
    memcpy(head, pre, n);
    while (nd)
        head[n++] = digits[--nd];
    memcpy(head + n, "\r\n\r\n", 4);
    n += 4;
    c->synth = 1;
    size_t u = http_parser_execute(&c->parser, &conn_parser_settings, head, n);
    c->synth = 0;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (u != n || (e != HPE_OK && e != HPE_PAUSED)) {
        c->err_status = 500;
        host_log(WSGI_LOG_ERROR, "SCGI body framing: %s", http_errno_description(e));
        return -1;
    }
    return 0;
}

/* The first request of a libwsgi-scgi connection: parse an SCGI / uwsgi head. PARSE_MORE,
 * PARSE_DONE, PARSE_ERROR (err_status set), or PARSE_HTTP (nothing consumed). */
static int scgi_head(conn *c)
{
    unsigned acc = server_options(c->srv)->scgi_accept;
    size_t max_vars = server_max_headers(c->srv) + SCGI_EXTRA_VARS;
    if (!c->sf) {
        c->sf = calloc(1, sizeof(*c->sf) + max_vars * sizeof(scgi_var_pos));
        if (!c->sf) {
            c->err_status = 503;
            return PARSE_ERROR;
        }
    }
    if (!c->sf->parsing) {
        c->sf->parsing = 1;
        uint64_t max_body = server_max_body(c->srv);
        scgi_limits lim = {
            .max_header_bytes = server_max_header(c->srv),
            .max_vars = max_vars,
            .max_content_length = max_body && max_body < INT64_MAX ? (int64_t)max_body : 0,
        };
        unsigned a = ((acc & PROTO_ACCEPT_SCGI) ? SCGI_ACCEPT_SCGI : 0) |
                     ((acc & PROTO_ACCEPT_UWSGI) ? SCGI_ACCEPT_UWSGI : 0) |
                     ((acc & PROTO_ACCEPT_HTTP) ? SCGI_ACCEPT_HTTP : 0);
        scgi_parser_init(&c->sf->p, &lim, c->sf->slots, a);
    }
    scgi_front *f = c->sf;
    size_t used = 0;
    scgi_result r = scgi_parser_feed(&f->p, c->in + c->in_parsed, c->in_len - c->in_parsed, &used);
    c->in_parsed += used;
    /* Known from the first byte: an error before the head is complete (a 408, a 431) is then
     * answered in the gateway's protocol. */
    scgi_proto pp = scgi_parser_protocol(&f->p);
    if (pp == SCGI_PROTO_SCGI || pp == SCGI_PROTO_UWSGI) c->proto = gateway_proto(&f->p);
    if (r == SCGI_NEED_MORE) return PARSE_MORE;
    c->proto_known = 1;
    if (r == SCGI_IS_HTTP) {
        conn_front_free(c);
        c->proto = CPROTO_HTTP;
        if (!c->lst->is_unix) conn_set_nodelay(c);
        return PARSE_HTTP;
    }
    c->proto = gateway_proto(&f->p); /* also when the first byte was refused: answer CGI-style */
    const char *err = NULL;
    wsgi_request req;
    int st = r == SCGI_HEAD_DONE ? scgi_map(c, &req, &err) : scgi_parser_status(&f->p);
    if (r == SCGI_ERROR) err = scgi_parser_error(&f->p);
    if (st != 0) {
        c->err_status = st > 0 ? st : 503;
        host_log(WSGI_LOG_WARNING, "bad %s request: %s (%d)",
                 c->proto == CPROTO_UWSGI ? "uwsgi" : "SCGI", err ? err : "out of memory",
                 c->err_status);
        return PARSE_ERROR;
    }
    c->http_major = req.http_major;
    c->http_minor = req.http_minor;
    c->is_head = req.method_len == 4 && memcmp(req.method, "HEAD", 4) == 0;
    c->keep_alive = 0; /* lighttpd opens a connection per SCGI / uwsgi request */
    c->content_length = scgi_parser_content_length(&f->p);
    c->url_off = (size_t)(req.target - c->in);
    c->url_len = req.target_len;
    f->method_off = (size_t)(req.method - c->in);
    f->method_len = req.method_len;
    /* The client is lighttpd's (REMOTE_ADDR), not the gateway at the socket's other end: logs
     * name it. */
    if (req.client_addr && strlen(req.client_addr) < sizeof(c->peer)) {
        memcpy(c->peer, req.client_addr, strlen(req.client_addr) + 1);
        c->peer_port = req.client_port;
    }
    c->head_done = 1;
    if (c->content_length == 0) {
        /* No body: the request is complete, as on_message_complete() would have found at the
         * end of a made-up head with Content-Length: 0 (the parser is at the start of a next
         * message either way). */
        c->msg_done = 1;
    } else if (scgi_frame_body(c) < 0) {
        return PARSE_ERROR;
    }
    http_parser_pause(&c->parser, 1); /* as after an HTTP head: conn_choose_body() resumes */
    return PARSE_DONE;
}

int conn_head_eof(conn *c)
{
    if (c->proto_known || !c->sf || !c->sf->parsing || c->in_len == 0) return 0;
    scgi_parser_eof(&c->sf->p);
    c->proto_known = 1;
    c->proto = gateway_proto(&c->sf->p);
    c->err_status = scgi_parser_status(&c->sf->p) ? scgi_parser_status(&c->sf->p) : 400;
    host_log(WSGI_LOG_WARNING, "bad %s request: %s (%d)",
             c->proto == CPROTO_UWSGI ? "uwsgi" : "SCGI", scgi_parser_error(&c->sf->p),
             c->err_status);
    return c->err_status;
}

/* What Debian's http_parser, built without HTTP_PARSER_STRICT, lets through in a head: a CR
 * followed by anything but LF (it takes the next byte for the LF, so "X-A:\rZHost: y" is two
 * fields to it and one malformed one to a stricter peer; RFC 9112 2.2: a bare CR is invalid), and
 * an HTTP-name other than "HTTP" (it checks the "H" only). The head is c->in[0, end], end being
 * the byte the parser took for its last LF (not consumed yet: the parser pauses before it). */
static int check_head_bytes(const conn *c, size_t end)
{
    const char *p = c->in, *stop = c->in + end + 1;
    for (const char *cr = memchr(p, '\r', (size_t)(stop - p)); cr;
         cr = memchr(cr + 1, '\r', (size_t)(stop - cr - 1)))
        if (cr + 1 == stop || cr[1] != '\n') return 400;
    /* The request line, after the empty lines http_parser skips: "... HTTP/d.d" CRLF. */
    while (p < stop && (*p == '\r' || *p == '\n'))
        p++;
    const char *lf = memchr(p, '\n', (size_t)(stop - p));
    if (!lf) return 400;
    if (lf > p && lf[-1] == '\r') lf--;
    if (lf - p < 8 || memcmp(lf - 8, "HTTP/", 5) != 0) return 400;
    return 0;
}

int conn_parse_head(conn *c)
{
    if (!c->proto_known) {
        if (!server_options(c->srv)->scgi_accept) {
            c->proto_known = 1; /* libwsgi-epoll: HTTP only */
        } else {
            int r = scgi_head(c);
            if (r != PARSE_HTTP) return r;
        }
    }
    size_t avail = c->in_len - c->in_parsed;
    if (avail && feed(c, avail) < 0) {
        if (c->err_status) return PARSE_ERROR;
        /* A method http_parser does not know, its request line not complete yet: parse it
         * again from its start when more has come (unknown_method_status()). Nothing was
         * recorded before the method, and the empty lines before it are dropped (not rescanned
         * at each arrival); the buffer's limit still ends an endless line (414). */
        size_t skip = 0;
        while (skip < c->in_len && (c->in[skip] == '\r' || c->in[skip] == '\n'))
            skip++;
        if (skip) memmove(c->in, c->in + skip, c->in_len - skip);
        c->in_len -= skip;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        c->in_parsed = 0;
        return PARSE_MORE;
    }
    if (c->head_done) {
        c->err_status = check_head_bytes(c, c->in_parsed);
        if (c->err_status) {
            host_log(WSGI_LOG_DEBUG, "bad request from %s: a bare CR or no HTTP-name (400)",
                     c->peer[0] ? c->peer : "unix");
            return PARSE_ERROR;
        }
        return PARSE_DONE;
    }
    if (c->in_parsed > server_max_header(c->srv)) {
        c->err_status = conn_head_too_large(c);
        return PARSE_ERROR;
    }
    return PARSE_MORE;
}

int conn_choose_body(conn *c)
{
    uint64_t max = server_max_body(c->srv);
    if (c->chunked) {
        c->body_mode = BODY_STREAM;
    } else if (c->content_length > 0) {
        if (max && (uint64_t)c->content_length > max) return 413;
        c->body_mode = c->content_length <= BODY_BUFFER_MAX ? BODY_BUFFERED : BODY_STREAM;
    } else {
        c->body_mode = BODY_NONE;
    }
    http_parser_pause(&c->parser, 0);
    return 0;
}

int conn_parse_body(conn *c)
{
    size_t avail = c->in_len - c->in_parsed;
    if (avail && feed(c, avail) < 0) return PARSE_ERROR;
    return c->msg_done ? PARSE_DONE : PARSE_MORE;
}

/* A read on the app thread. With TLS, while a generator reads the body the loop may be writing
 * this connection's output (exchange_late_flush), and one SSL object must not be used by two
 * threads at once: the read holds the output queue like a callback does (never across poll:
 * conn_recv does not block). A read that returns EAGAIN leaves nothing decrypted in OpenSSL, so
 * polling the socket afterwards is right. */
static ssize_t body_recv(conn *c, void *buf, size_t len)
{
    if (!c->ssl) return conn_recv(c, buf, len);
    conn_out_lock(c);
    ssize_t r = conn_recv(c, buf, len);
    int e = errno;
    conn_out_unlock(c);
    errno = e;
    return r;
}

int conn_body_read(void *user_data, char *buf, size_t len, size_t *nread)
{
    conn *c = user_data;
    *nread = 0;
    if (c->msg_done) return 0;
    if (c->body_error || c->err_status) return -1;
    if (c->expect_continue && !c->continue_sent && !c->started) {
        /* The app wants the body: now tell the client to send it. Not once the final head is
         * queued (c->started: the app reads after its response began): a 100 is interim, it
         * would land inside the response (RFC 9110 15.2). The client, which has its final
         * status, may send the body anyway; if it does not, the read times out, and a body left
         * unread is not drained (conn_can_drain: the connection closes). */
        c->continue_sent = 1;
        conn_out_lock(c); /* a generator reading the body: the loop may be writing (conn.h) */
        int bad = conn_queue_status(c, 100) < 0 ||
                  out_flush_blocking(c, server_timeout_ms(c->srv)) != OUT_DONE;
        conn_out_unlock(c);
        if (bad) {
            c->body_error = 400;
            return -1;
        }
    }
    c->dst = buf;
    c->dst_cap = len;
    c->dst_len = 0;
    while (c->dst_len == 0 && !c->msg_done) {
        size_t avail = c->in_len - c->in_parsed;
        if (avail) {
            size_t n = avail < len ? avail : len;
            if (feed(c, n) < 0) {
                if (!c->body_error) c->body_error = c->err_status ? c->err_status : 400;
                c->dst = NULL;
                return -1;
            }
            continue;
        }
        /* Everything buffered is parsed (the head is no longer needed): refill from the start. */
        c->in_parsed = c->in_len = 0;
        ssize_t r;
        if (c->content_length >= 0) {
            /* A body of known length: receive straight into the app's buffer (into the bytes
             * object wsgi.input returns), never past the body's end (a pipelined request may
             * follow), and parse it there. */
            uint64_t left = (uint64_t)c->content_length - c->body_received;
            size_t want = len < left ? len : (size_t)left;
            r = body_recv(c, buf, want);
            if (r > 0) {
                if (parse(c, buf, (size_t)r) != r) {
                    if (!c->body_error) c->body_error = c->err_status ? c->err_status : 400;
                    c->dst = NULL;
                    return -1;
                }
                continue;
            }
        } else {
            if (conn_in_reserve(c, IN_BUF_SIZE) < 0) {
                c->body_error = 503;
                return -1;
            }
            r = body_recv(c, c->in, c->in_cap);
            if (r > 0) {
                c->in_len = (size_t)r;
                continue;
            }
        }
        if (r == 0) {
            host_log(WSGI_LOG_DEBUG, "client closed the connection in the middle of a body");
            c->body_error = 400;
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            c->body_error = 400;
            return -1;
        }
        /* Before waiting for the client, write what the response has queued (the app reads
         * after its response began): the client may wait for it before it sends more, and with
         * --threads 0 nobody else writes while the app runs. */
        int more = 0;
        if (c->started) {
            conn_out_lock(c);
            int f = out_pending(c) ? out_flush(c) : OUT_DONE;
            conn_out_unlock(c);
            if (f == OUT_ERR) {
                c->body_error = 400;
                c->dst = NULL;
                return -1;
            }
            more = f == OUT_AGAIN;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN | (more ? POLLOUT : 0)};
        int pr = poll(&pfd, 1, server_timeout_ms(c->srv));
        if (pr == 0) {
            host_log(WSGI_LOG_DEBUG, "timed out waiting for the request body");
            c->body_error = 408;
            return -1;
        }
        if (pr < 0 && errno != EINTR) {
            c->body_error = 400;
            return -1;
        }
    }
    *nread = c->dst_len;
    c->dst = NULL;
    return 0;
}

int conn_token_in_list(const char *v, size_t n, const char *tok)
{
    const char *end = v + n;
    while (v < end) {
        const char *comma = memchr(v, ',', (size_t)(end - v));
        const char *t = v;
        size_t t_len = (size_t)((comma ? comma : end) - v);
        v = comma ? comma + 1 : end;
        trim(&t, &t_len);
        if (ieq(t, t_len, tok)) return 1;
    }
    return 0;
}

int conn_header_has_token(const conn *c, const char *name, const char *tok)
{
    for (size_t k = 0; k < c->n_hdrs; k++) {
        const hdr_span *h = &c->hdrs[k];
        if (ieq(c->in + h->name_off, h->name_len, name) &&
            conn_token_in_list(c->in + h->value_off, h->value_len, tok))
            return 1;
    }
    return 0;
}

int conn_upgrade_websocket(const conn *c)
{
    return conn_header_has_token(c, "upgrade", "websocket");
}

int conn_end_head(conn *c)
{
    http_parser_pause(&c->parser, 0);
    if (conn_parse_body(c) == PARSE_ERROR) return -1;
    return c->msg_done ? 0 : -1;
}

/* The request of an HTTP head. */
static void fill_http(conn *c, wsgi_request *req)
{
    wsgi_request_init(req);
    if (c->hdr_ptrs_cap < c->n_hdrs + 1) { /* + 1: a Host from an absolute-form target */
        wsgi_header *h = realloc(c->hdr_ptrs, (c->n_hdrs + 1) * sizeof(*h));
        if (h) {
            c->hdr_ptrs = h;
            c->hdr_ptrs_cap = c->n_hdrs + 1;
        }
    }
    size_t n = c->hdr_ptrs_cap < c->n_hdrs ? c->hdr_ptrs_cap : c->n_hdrs;
    const char *auth = NULL;
    size_t auth_len = 0;
    /* RFC 9112 3.2.2: the host of an absolute-form target is its authority; a Host field sent
     * with it is ignored (replaced: HTTP_HOST, the scope's host header), or added when none was
     * sent (HTTP/1.0). */
    int absolute = target_authority(c->in + c->url_off, c->url_len, &auth, &auth_len);
    int host_seen = 0;
    for (size_t k = 0; k < n; k++) {
        const hdr_span *s = &c->hdrs[k];
        c->hdr_ptrs[k].name = c->in + s->name_off;
        c->hdr_ptrs[k].name_len = s->name_len;
        c->hdr_ptrs[k].value = c->in + s->value_off;
        c->hdr_ptrs[k].value_len = s->value_len;
        trim(&c->hdr_ptrs[k].value, &c->hdr_ptrs[k].value_len);
        if (absolute && ieq(c->hdr_ptrs[k].name, s->name_len, "host")) {
            c->hdr_ptrs[k].value = auth;
            c->hdr_ptrs[k].value_len = auth_len;
            host_seen = 1;
        }
    }
    if (absolute && !host_seen && auth_len && n < c->hdr_ptrs_cap) {
        c->hdr_ptrs[n].name = "Host";
        c->hdr_ptrs[n].name_len = 4;
        c->hdr_ptrs[n].value = auth;
        c->hdr_ptrs[n].value_len = auth_len;
        n++;
    }
    const char *m = http_method_str((enum http_method)c->parser.method);
    req->method = m;
    req->method_len = strlen(m);
    req->target = c->in + c->url_off;
    req->target_len = c->url_len;
    req->http_major = c->http_major;
    req->http_minor = c->http_minor;
    req->headers = c->hdr_ptrs;
    req->n_headers = n;
    req->scheme = c->ssl ? "https" : "http"; /* HTTPS=on, wss in an ASGI scope */
    req->server_name = c->lst->host;
    req->server_port = c->lst->port;
    req->client_addr = c->peer[0] ? c->peer : NULL;
    req->client_port = c->peer_port;
    req->content_length = c->content_length;
    if (c->chunked) req->flags |= WSGI_REQUEST_CHUNKED;
    if (c->lst->is_unix) req->flags |= WSGI_REQUEST_UNIX_SOCKET;
}

void conn_fill_request(conn *c, wsgi_request *req)
{
    if (c->proto != CPROTO_HTTP) {
        /* Checked by scgi_head() already, with the same storage: cannot fail now. */
        if (scgi_map(c, req, NULL) != 0) wsgi_request_init(req);
    } else {
        fill_http(c, req);
    }
    switch (c->body_mode) {
    case BODY_NONE:
    case BODY_DISCARD:
        req->body = "";
        req->body_len = 0;
        break;
    case BODY_BUFFERED:
        req->body = c->body_len ? c->in + c->body_off : "";
        req->body_len = c->body_len;
        break;
    case BODY_STREAM:
        req->body = NULL;
        req->body_read = conn_body_read;
        req->body_user_data = c;
        break;
    case BODY_FEED: req->body = NULL; break; /* fed by asgi_exchange.c */
    }
    conn_obs_fill(c, req);
}

/* The request's method, for log lines outside the access log (guard.c). */
const char *conn_request_method(const conn *c, size_t *len)
{
    const char *m;
    if (c->proto != CPROTO_HTTP && c->sf && c->sf->parsing) {
        m = c->in + c->sf->method_off;
        *len = c->sf->method_len;
    } else {
        m = http_method_str((enum http_method)c->parser.method);
        *len = strlen(m);
    }
    return m;
}
