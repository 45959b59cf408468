/* Where a request becomes a WSGI environ: a copy of the app's template plus the per-request CGI
 * keys, HTTP_* headers, wsgi.input and the host's extra keys. All str values are latin-1 decoded
 * from the wire bytes, as PEP 3333 requires.
 *
 * wsgi_env_build() needs no Python: it validates the request and copies its wire data, and the
 * environ is made when wsgi_call() holds the GIL anyway (one GIL acquisition less per request).
 *
 * The environ of a request is a copy of a "shape": a private dict per app and request layout
 * (the same header names in the same order, the same optional parts), holding the values of the
 * last request of that layout. A keep-alive client sends request after request of one layout
 * with mostly the same bytes, so only the values that differ are replaced before the copy, and a
 * request costs one dict copy instead of a dozen insertions. The copy holds exactly this
 * request's values (every one is compared); str is immutable, so sharing them is invisible. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

LIBWSGI_API void wsgi_request_init(wsgi_request *req)
{
    if (!req) return;
    memset(req, 0, sizeof *req);
    req->struct_size = sizeof *req;
    req->content_length = -1;
    req->http_major = 1;
    req->http_minor = 1;
}

static PyObject *lw_latin1(const char *p, size_t n)
{
    return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

/* ---- the per-runtime caches (see lw_env_cache in internal.h) --------------------------------- */

/* Whether str @v holds exactly the latin-1 decoding of p[:n]. */
static int lw_same_latin1(PyObject *v, const char *p, size_t n)
{
    return PyUnicode_GET_LENGTH(v) == (Py_ssize_t)n && PyUnicode_KIND(v) == PyUnicode_1BYTE_KIND &&
           memcmp(PyUnicode_1BYTE_DATA(v), p, n) == 0;
}

/* latin1(p[:n]) as a new reference, reusing *slot when it holds the same text (else replacing it).
 * Only short values are kept. */
static PyObject *lw_cached_latin1(PyObject **slot, const char *p, size_t n)
{
    if (*slot && lw_same_latin1(*slot, p, n)) return Py_NewRef(*slot);
    PyObject *v = lw_latin1(p, n);
    if (v && n <= 256) Py_XSETREF(*slot, Py_NewRef(v));
    return v;
}

/* A port as str: PyUnicode_FromFormat would run the whole printf machinery for 1-5 digits, once
 * per request on a server whose clients' ports interleave. */
static PyObject *lw_port_str(unsigned port)
{
    char buf[12];
    size_t n = sizeof(buf);
    do {
        buf[--n] = (char)('0' + port % 10);
        port /= 10;
    } while (port && n);
    return lw_latin1(buf + n, sizeof(buf) - n);
}

static PyObject *lw_cached_port(PyObject **slot, unsigned *num, unsigned port)
{
    if (*slot && *num == port) return Py_NewRef(*slot);
    PyObject *v = lw_port_str(port);
    if (v) {
        Py_XSETREF(*slot, Py_NewRef(v));
        *num = port;
    }
    return v;
}

void lw_env_cache_clear(lw_env_cache *c)
{
    for (size_t i = 0; i < LW_HKEY_SLOTS; i++) {
        Py_CLEAR(c->hkeys[i].key);
        Py_CLEAR(c->hkeys[i].last);
        c->hkeys[i].len = 0;
    }
    Py_CLEAR(c->cl_item);
    Py_CLEAR(c->method);
    Py_CLEAR(c->server_name);
    Py_CLEAR(c->remote_addr);
    Py_CLEAR(c->uri);
    Py_CLEAR(c->path);
    Py_CLEAR(c->query);
    Py_CLEAR(c->server_port);
    Py_CLEAR(c->remote_port);
}

static int lw_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode src into dst (dst has room for n bytes); returns the decoded length. Invalid
 * escapes are kept literally, as every mainstream server does. */
size_t lw_pct_decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '%' && i + 2 < n) {
            int hi = lw_hexval((unsigned char)src[i + 1]),
                lo = lw_hexval((unsigned char)src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                dst[o++] = (char)(hi << 4 | lo);
                i += 2;
                continue;
            }
        }
        dst[o++] = src[i];
    }
    return o;
}

/* RFC 9110 token characters, the only ones allowed in a header name. */
static const unsigned char lw_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int lw_is_token(const char *p, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!lw_tchar[(unsigned char)p[i]]) return 0;
    return 1;
}

static int lw_ieq(const char *a, size_t an, const char *lit)
{
    size_t n = strlen(lit);
    if (an != n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i]) return 0;
    }
    return 1;
}

/* Trim the optional whitespace around a header value (RFC 9110 §5.5). */
static void lw_trim(const char **val, size_t *vlen)
{
    const char *v = *val;
    size_t n = *vlen;
    while (n && (v[0] == ' ' || v[0] == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *val = v;
    *vlen = n;
}

/* What lw_add_header() did with a header. */
enum { LW_HDR_NEW = 0, LW_HDR_JOINED = 1, LW_HDR_DROPPED = 2 };

/* Add one request header to the environ, joining repeats with ", " (Cookie with "; "). Returns
 * -1 on error, or an LW_HDR_* code; for LW_HDR_NEW, *key_out and *val_out are the key and value
 * now in env (borrowed). */
static int lw_add_header(wsgi_runtime *rt, PyObject *env, const wsgi_header *h, PyObject **key_out,
                         PyObject **val_out)
{
    const char *name = h->name, *val = h->value;
    size_t nlen = h->name_len, vlen = h->value_len;
    /* An '_' in a name would map onto the same key as '-' (X_Forwarded_For vs X-Forwarded-For):
     * drop such headers rather than let them spoof a proxy's header. Same for non-token names. */
    if (!lw_is_token(name, nlen) || memchr(name, '_', nlen)) {
        lw_log(WSGI_LOG_DEBUG, "dropping request header %.*s (not a token or contains '_')",
               (int)(nlen > 64 ? 64 : nlen), name);
        return LW_HDR_DROPPED;
    }
    lw_trim(&val, &vlen);

    /* The key, from the cache when this name was seen before (lowercased, FNV-1a hashed). */
    lw_hkey *slot = NULL;
    if (nlen <= LW_HKEY_NAME_MAX) {
        char low[LW_HKEY_NAME_MAX];
        uint32_t hsh = 2166136261u;
        for (size_t i = 0; i < nlen; i++) {
            char c = name[i];
            low[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
            hsh = (hsh ^ (unsigned char)low[i]) * 16777619u;
        }
        /* Two candidate slots (two-choice hashing): a name is in one of them or in neither. */
        lw_hkey *a = &rt->ec.hkeys[hsh % LW_HKEY_SLOTS];
        lw_hkey *b = &rt->ec.hkeys[(hsh >> 16) % LW_HKEY_SLOTS];
        if (a->len == nlen && memcmp(a->name, low, nlen) == 0) {
            slot = a;
        } else if (b->len == nlen && memcmp(b->name, low, nlen) == 0) {
            slot = b;
        } else {
            /* A miss: this name takes over the emptier or less used slot (bounded cache). */
            slot = !a->len ? a : !b->len ? b : a->hits <= b->hits ? a : b;
            Py_CLEAR(slot->key);
            Py_CLEAR(slot->last);
            slot->len = 0;
            slot->hits = 0;
            memcpy(slot->name, low, nlen);
        }
        slot->hits++;
    }
    PyObject *key;
    if (slot && slot->len) {
        key = Py_NewRef(slot->key);
    } else if (lw_ieq(name, nlen, "content-type")) {
        key = Py_NewRef(rt->s.CONTENT_TYPE);
    } else if (lw_ieq(name, nlen, "content-length")) {
        key = Py_NewRef(rt->s.CONTENT_LENGTH);
    } else {
        char stackbuf[128];
        char *k = nlen + 5 <= sizeof stackbuf ? stackbuf : malloc(nlen + 5);
        if (!k) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(k, "HTTP_", 5);
        for (size_t i = 0; i < nlen; i++) {
            char c = name[i];
            k[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        }
        key = PyUnicode_FromStringAndSize(k, (Py_ssize_t)nlen + 5); /* ASCII: tokens only */
        if (k != stackbuf) free(k);
        if (!key) return -1;
        PyUnicode_InternInPlace(&key);
    }
    if (slot && !slot->len) {
        slot->key = Py_NewRef(key);
        slot->len = (unsigned char)nlen;
    }
    PyObject *old = PyDict_GetItemWithError(env, key); /* borrowed */
    int r;
    PyObject *v = NULL;
    if (old) {
        /* Repeated header: "a, b" in arrival order (RFC 9110 §5.3). Cookie is not a list
         * header: "a=1, b=2" would read as one cookie a = "1, b=2" (lost b), so its lines are
         * joined with "; ", the same semantics as one line (RFC 3875 §4.1.18, RFC 6265 §4.2.1;
         * as HTTP/2 recombines them, RFC 9113 §8.2.3, and lighttpd passes them to CGI). */
        v = lw_latin1(val, vlen);
        PyObject *joined = NULL;
        if (v) {
            PyObject *sep = lw_ieq(name, nlen, "cookie") ? rt->s.semi_sp : rt->s.comma_sp;
            PyObject *parts[3] = {old, sep, v};
            PyObject *tup = PyTuple_Pack(3, parts[0], parts[1], parts[2]);
            if (tup) {
                joined = PyUnicode_Join(rt->s.empty, tup);
                Py_DECREF(tup);
            }
            Py_DECREF(v);
        }
        r = joined ? PyDict_SetItem(env, key, joined) : -1;
        Py_XDECREF(joined);
        Py_DECREF(key);
        return r < 0 ? -1 : LW_HDR_JOINED;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return -1;
    }
    v = slot ? lw_cached_latin1(&slot->last, val, vlen) : lw_latin1(val, vlen);
    r = v ? PyDict_SetItem(env, key, v) : -1;
    /* Both stay alive in env: the key is interned and env holds the value. */
    *key_out = key;
    *val_out = v;
    Py_DECREF(key);
    Py_XDECREF(v);
    return r < 0 ? -1 : LW_HDR_NEW;
}

/* Split the request-target into the path and the query; absolute form loses scheme+authority. */
static int lw_split_target(const char *t, size_t n, const char **path, size_t *plen,
                           const char **query, size_t *qlen)
{
    size_t i = 0;
    if (n >= 1 && t[0] == '/') {
        i = 0;
    } else if (n == 1 && t[0] == '*') {
        *path = t, *plen = 1, *query = NULL, *qlen = 0;
        return 0;
    } else {
        /* absolute-form: scheme "://" authority [path] */
        const char *sep = NULL;
        for (size_t j = 0; j + 2 < n; j++)
            if (t[j] == ':' && t[j + 1] == '/' && t[j + 2] == '/') {
                sep = t + j;
                break;
            }
        if (!sep) return -1;
        i = (size_t)(sep - t) + 3;
        while (i < n && t[i] != '/' && t[i] != '?')
            i++;
    }
    const char *q = memchr(t + i, '?', n - i);
    size_t end = q ? (size_t)(q - t) : n;
    *path = t + i;
    *plen = end - i;
    *query = q ? q + 1 : NULL;
    *qlen = q ? n - end - 1 : 0;
    /* absolute-form without a path ("http://h", "http://h?q"): the path is "/" (RFC 9110 4.2.3:
     * an empty path is equivalent to "/"; the origin-form would have been "/", RFC 9112 3.2.1) */
    if (*plen == 0) *path = "/", *plen = 1;
    return 0;
}

/* ---- the request's values, computed once ---------------------------------------------------- */

enum { LW_SCHEME_HTTP = 0, LW_SCHEME_HTTPS = 1, LW_SCHEME_OTHER = 2 };

/* Which optional parts a request has: with the header names, what makes two requests the same
 * layout (the same keys in the same order). */
enum {
    LW_HAS_SERVER_NAME = 1 << 2, /* bits 0-1: LW_SCHEME_* */
    LW_HAS_SERVER_PORT = 1 << 3,
    LW_HAS_CLIENT_ADDR = 1 << 4,
    LW_HAS_CLIENT_PORT = 1 << 5,
};

typedef struct lw_view {
    const wsgi_request *req;
    const char *path; /* percent-decoded, SCRIPT_NAME stripped */
    size_t path_len;
    const char *query; /* "" when absent */
    size_t query_len;
    size_t scheme_len, server_name_len, client_addr_len;
    const char *server_name; /* req->server_name, or sn_buf: an IPv6 address in brackets */
    char sn_buf[64];
    unsigned flags; /* LW_SCHEME_* | LW_HAS_* */
    char *heap;     /* the decoded path when it did not fit `stack` */
    char stack[1024];
} lw_view;

static int lw_view_init(wsgi_app *app, const wsgi_request *req, lw_view *v)
{
    v->req = req;
    v->heap = NULL;
    const char *path, *query;
    size_t plen, qlen;
    lw_split_target(req->target, req->target_len, &path, &plen, &query, &qlen);
    char *dec = v->stack;
    if (plen > sizeof v->stack) {
        if (!(dec = v->heap = malloc(plen))) {
            PyErr_NoMemory();
            return -1;
        }
    }
    size_t dlen = lw_pct_decode(path, plen, dec);
    /* Mounted app: SCRIPT_NAME is the mount point, PATH_INFO the rest (only on a '/' boundary). */
    size_t sl = app->script_name_len;
    if (sl && dlen >= sl && memcmp(dec, app->script_name_c, sl) == 0 &&
        (dlen == sl || dec[sl] == '/'))
        dec += sl, dlen -= sl;
    v->path = dec;
    v->path_len = dlen;
    v->query = query && qlen ? query : "";
    v->query_len = query ? qlen : 0;
    unsigned f = LW_SCHEME_HTTP;
    v->scheme_len = 0;
    if (req->scheme && strcmp(req->scheme, "https") == 0) {
        f = LW_SCHEME_HTTPS;
    } else if (req->scheme && strcmp(req->scheme, "http") != 0) {
        f = LW_SCHEME_OTHER;
        v->scheme_len = strlen(req->scheme);
    }
    v->server_name_len = req->server_name ? strlen(req->server_name) : 0;
    /* RFC 3875 4.1.14: SERVER_NAME is "[" IPv6address "]" for an IPv6 address, so that PEP 3333's
     * URL reconstruction (scheme://SERVER_NAME:SERVER_PORT) gives a URL. */
    v->server_name = req->server_name;
    if (req->server_name && req->server_name[0] != '[' &&
        memchr(req->server_name, ':', v->server_name_len) &&
        v->server_name_len + 2 <= sizeof v->sn_buf) {
        v->sn_buf[0] = '[';
        memcpy(v->sn_buf + 1, req->server_name, v->server_name_len);
        v->sn_buf[v->server_name_len + 1] = ']';
        v->server_name = v->sn_buf;
        v->server_name_len += 2;
    }
    v->client_addr_len = req->client_addr ? strlen(req->client_addr) : 0;
    if (req->server_name) f |= LW_HAS_SERVER_NAME;
    if (req->server_port) f |= LW_HAS_SERVER_PORT;
    if (req->client_addr) f |= LW_HAS_CLIENT_ADDR;
    if (req->client_addr && req->client_port) f |= LW_HAS_CLIENT_PORT;
    v->flags = f;
    return 0;
}

static void lw_view_free(lw_view *v)
{
    free(v->heap);
}

/* ---- shapes ------------------------------------------------------------------------------------
 */

#define LW_SHAPES            4    /* layouts kept per app */
#define LW_SHAPE_SEEN        16   /* layouts seen once, by hash: a shape is made at the second */
#define LW_SHAPE_MAX_HEADERS 64   /* larger requests are built in full */
#define LW_SHAPE_MAX_NAMES   2048 /* bytes of header names */
#define LW_SHAPE_MAX_IMAGE   8192 /* bytes of a request kept to recognise it the next time */

typedef struct lw_shape {
    PyObject *dict;     /* the template plus the last request's values; never handed out */
    unsigned long used; /* clock of its last use: the least recently used is replaced */
    unsigned flags;     /* lw_view.flags */
    int major, minor;
    int busy;    /* being copied: PyDict_Copy may run the GC, and with it other threads */
    int complex; /* a header was dropped or repeated: requests of this layout are built in full */
    size_t n_headers;
    /* The values in dict (borrowed: dict holds them), compared with the next request's bytes. */
    PyObject *method, *path, *query, *uri, *scheme, *server_name, *client_addr;
    unsigned server_port, client_port;
    PyObject **hkey, **hval;      /* per header */
    size_t *name_len, *value_len; /* per header (value_len: of the request in image) */
    char *names;                  /* the header names, as sent, one after the other */
    /* The last request of this layout byte for byte (wsgi_env.bytes up to image_len, with the
     * lengths and numbers that delimit and complete it): the same request again needs no
     * comparison value by value. image_len 0: none. */
    char *image;
    size_t image_len, image_cap, method_len, target_len;
    unsigned present, req_server_port, req_client_port;
} lw_shape;

typedef struct lw_shapes {
    lw_shape s[LW_SHAPES];
    unsigned long clock;
    uint32_t seen[LW_SHAPE_SEEN];
} lw_shapes;

static void lw_shape_clear(lw_shape *sh)
{
    Py_CLEAR(sh->dict);
    free(sh->hkey); /* the one allocation behind hkey, hval, name_len, value_len and names */
    free(sh->image);
    memset(sh, 0, sizeof *sh);
}

/* Whether env is byte for byte the request the shape's dict was last brought up to. */
static int lw_shape_same(const lw_shape *sh, const wsgi_env *env)
{
    const wsgi_request *r = &env->req;
    if (!sh->image_len || sh->image_len != env->image_len || sh->present != env->present ||
        sh->n_headers != r->n_headers || sh->method_len != r->method_len ||
        sh->target_len != r->target_len || sh->req_server_port != r->server_port ||
        sh->req_client_port != r->client_port || sh->major != r->http_major ||
        sh->minor != r->http_minor)
        return 0;
    for (size_t i = 0; i < r->n_headers; i++)
        if (sh->name_len[i] != r->headers[i].name_len ||
            sh->value_len[i] != r->headers[i].value_len)
            return 0;
    return memcmp(sh->image, env->bytes, env->image_len) == 0;
}

/* Remember env as the request the shape's dict now holds (nothing if it is large or memory is
 * short: the next request is then compared value by value). */
static void lw_shape_note(lw_shape *sh, const wsgi_env *env)
{
    const wsgi_request *r = &env->req;
    sh->image_len = 0;
    if (sh->complex || env->image_len > LW_SHAPE_MAX_IMAGE) return;
    if (sh->image_cap < env->image_len) {
        char *p = realloc(sh->image, env->image_len);
        if (!p) return;
        sh->image = p;
        sh->image_cap = env->image_len;
    }
    memcpy(sh->image, env->bytes, env->image_len);
    for (size_t i = 0; i < r->n_headers; i++)
        sh->value_len[i] = r->headers[i].value_len;
    sh->method_len = r->method_len;
    sh->target_len = r->target_len;
    sh->present = env->present;
    sh->req_server_port = r->server_port;
    sh->req_client_port = r->client_port;
    sh->image_len = env->image_len;
}

void lw_shapes_free(wsgi_app *app)
{
    if (!app->shapes) return;
    for (size_t i = 0; i < LW_SHAPES; i++)
        lw_shape_clear(&app->shapes->s[i]);
    free(app->shapes);
    app->shapes = NULL;
}

static int lw_shape_matches(const lw_shape *sh, const lw_view *v)
{
    const wsgi_request *r = v->req;
    if (!sh->dict || sh->flags != v->flags || sh->n_headers != r->n_headers ||
        sh->major != r->http_major || sh->minor != r->http_minor)
        return 0;
    const char *names = sh->names;
    for (size_t i = 0; i < r->n_headers; i++) {
        size_t n = r->headers[i].name_len;
        if (sh->name_len[i] != n || (n && memcmp(names, r->headers[i].name, n) != 0)) return 0;
        names += n;
    }
    return 1;
}

/* FNV-1a over a request's layout. */
static uint32_t lw_layout_hash(const lw_view *v)
{
    const wsgi_request *r = v->req;
    uint32_t h = 2166136261u;
    h = (h ^ v->flags) * 16777619u;
    h = (h ^ (uint32_t)r->n_headers) * 16777619u;
    h = (h ^ (uint32_t)r->http_minor) * 16777619u;
    for (size_t i = 0; i < r->n_headers; i++) {
        const unsigned char *p = (const unsigned char *)r->headers[i].name;
        for (size_t j = 0; j < r->headers[i].name_len; j++)
            h = (h ^ p[j]) * 16777619u;
        h = (h ^ 0xffu) * 16777619u;
    }
    return h;
}

/* The record of a new shape for v's layout (no dict yet); 0, or -1 if the layout is too large
 * to keep or memory is short (then the request is built in full). */
static int lw_shape_alloc(lw_shape *sh, const lw_view *v)
{
    const wsgi_request *r = v->req;
    size_t n = r->n_headers, names = 0;
    memset(sh, 0, sizeof *sh);
    if (n > LW_SHAPE_MAX_HEADERS) return -1;
    for (size_t i = 0; i < n; i++)
        names += r->headers[i].name_len;
    if (names > LW_SHAPE_MAX_NAMES) return -1;
    char *mem = malloc(n * (2 * sizeof(PyObject *) + 2 * sizeof(size_t)) + names + 1);
    if (!mem) return -1;
    sh->hkey = (PyObject **)mem;
    sh->hval = sh->hkey + n;
    sh->name_len = (size_t *)(sh->hval + n);
    sh->value_len = sh->name_len + n;
    sh->names = (char *)(sh->value_len + n);
    char *o = sh->names;
    for (size_t i = 0; i < n; i++) {
        sh->name_len[i] = r->headers[i].name_len;
        if (sh->name_len[i]) memcpy(o, r->headers[i].name, sh->name_len[i]);
        o += sh->name_len[i];
    }
    sh->n_headers = n;
    sh->flags = v->flags;
    sh->major = r->http_major;
    sh->minor = r->http_minor;
    return 0;
}

/* d[key] = latin1(p[:n]) unless *cur already holds exactly that text; *cur then follows. */
static int lw_shape_set(PyObject *d, PyObject *key, PyObject **cur, const char *p, size_t n)
{
    if (lw_same_latin1(*cur, p, n)) return 0;
    PyObject *v = lw_latin1(p, n);
    if (!v) return -1;
    int r = PyDict_SetItem(d, key, v);
    if (r == 0) *cur = v; /* d holds it */
    Py_DECREF(v);
    return r;
}

static int lw_shape_set_port(PyObject *d, PyObject *key, unsigned *cur, unsigned port)
{
    if (*cur == port) return 0;
    PyObject *v = lw_port_str(port);
    if (!v) return -1;
    int r = PyDict_SetItem(d, key, v);
    if (r == 0) *cur = port;
    Py_DECREF(v);
    return r;
}

/* Bring a shape's values up to this request's (same layout). No Python code runs here: the
 * values are str, the keys interned str that are all present already. */
static int lw_shape_update(wsgi_runtime *rt, lw_shape *sh, const lw_view *v)
{
    lw_strings *s = &rt->s;
    const wsgi_request *r = v->req;
    PyObject *d = sh->dict;
    if (lw_shape_set(d, s->REQUEST_METHOD, &sh->method, r->method, r->method_len) < 0 ||
        lw_shape_set(d, s->PATH_INFO, &sh->path, v->path, v->path_len) < 0 ||
        lw_shape_set(d, s->QUERY_STRING, &sh->query, v->query, v->query_len) < 0)
        return -1;
    if (!lw_same_latin1(sh->uri, r->target, r->target_len)) {
        PyObject *uri = lw_latin1(r->target, r->target_len);
        if (!uri) return -1;
        int bad =
            PyDict_SetItem(d, s->RAW_URI, uri) < 0 || PyDict_SetItem(d, s->REQUEST_URI, uri) < 0;
        if (!bad) sh->uri = uri;
        Py_DECREF(uri);
        if (bad) {
            /* RAW_URI may hold the new value and REQUEST_URI the old: rebuild this shape. */
            sh->complex = 1;
            return -1;
        }
    }
    if ((v->flags & 3) == LW_SCHEME_OTHER &&
        lw_shape_set(d, s->wsgi_url_scheme, &sh->scheme, r->scheme, v->scheme_len) < 0)
        return -1;
    if ((v->flags & LW_HAS_SERVER_NAME) &&
        lw_shape_set(d, s->SERVER_NAME, &sh->server_name, v->server_name, v->server_name_len) < 0)
        return -1;
    if ((v->flags & LW_HAS_SERVER_PORT) &&
        lw_shape_set_port(d, s->SERVER_PORT, &sh->server_port, r->server_port) < 0)
        return -1;
    if ((v->flags & LW_HAS_CLIENT_ADDR) &&
        lw_shape_set(d, s->REMOTE_ADDR, &sh->client_addr, r->client_addr, v->client_addr_len) < 0)
        return -1;
    if ((v->flags & LW_HAS_CLIENT_PORT) &&
        lw_shape_set_port(d, s->REMOTE_PORT, &sh->client_port, r->client_port) < 0)
        return -1;
    for (size_t i = 0; i < r->n_headers; i++) {
        const char *val = r->headers[i].value;
        size_t vlen = r->headers[i].value_len;
        lw_trim(&val, &vlen);
        if (lw_shape_set(d, sh->hkey[i], &sh->hval[i], val, vlen) < 0) return -1;
    }
    return 0;
}

/* ---- building in full ------------------------------------------------------------------------ */

/* Set the per-request keys in d, a copy of the template. With sh, note there the values (and
 * whether the layout can be reused: no header dropped or repeated). */
static int lw_fill(wsgi_app *app, const lw_view *v, PyObject *d, lw_shape *sh)
{
    wsgi_runtime *rt = app->rt;
    lw_strings *s = &rt->s;
    lw_env_cache *ec = &rt->ec;
    const wsgi_request *req = v->req;
    PyObject *x;
    lw_shape dummy;
    if (!sh) sh = &dummy;

#define LW_SET(key, expr, rec)                                                                     \
    do {                                                                                           \
        if (!(x = (expr))) return -1;                                                              \
        int bad_ = PyDict_SetItem(d, (key), x) < 0;                                                \
        (rec) = x; /* borrowed: d holds it */                                                      \
        Py_DECREF(x);                                                                              \
        if (bad_) return -1;                                                                       \
    } while (0)

    LW_SET(s->REQUEST_METHOD, lw_cached_latin1(&ec->method, req->method, req->method_len),
           sh->method);
    LW_SET(s->PATH_INFO,
           v->path_len ? lw_cached_latin1(&ec->path, v->path, v->path_len) : Py_NewRef(s->empty),
           sh->path);
    LW_SET(s->QUERY_STRING,
           v->query_len ? lw_cached_latin1(&ec->query, v->query, v->query_len)
                        : Py_NewRef(s->empty),
           sh->query);
    LW_SET(s->RAW_URI, lw_cached_latin1(&ec->uri, req->target, req->target_len), sh->uri);
    if (PyDict_SetItem(d, s->REQUEST_URI, sh->uri) < 0) return -1;

    if (req->http_major == 1 && req->http_minor == 1)
        x = Py_NewRef(s->http11);
    else if (req->http_major == 1 && req->http_minor == 0)
        x = Py_NewRef(s->http10);
    else
        x = PyUnicode_FromFormat("HTTP/%d.%d", req->http_major, req->http_minor);
    if (!x) return -1;
    int bad = PyDict_SetItem(d, s->SERVER_PROTOCOL, x) < 0;
    Py_DECREF(x);
    if (bad) return -1;

    unsigned scheme = v->flags & 3;
    if (scheme == LW_SCHEME_HTTPS) {
        if (PyDict_SetItem(d, s->wsgi_url_scheme, s->https) < 0) return -1;
        if (PyDict_SetItem(d, s->HTTPS, s->on) < 0) return -1;
    } else if (scheme == LW_SCHEME_OTHER) {
        LW_SET(s->wsgi_url_scheme, lw_latin1(req->scheme, v->scheme_len), sh->scheme);
    }
    if (req->server_name) {
        LW_SET(s->SERVER_NAME,
               lw_cached_latin1(&ec->server_name, v->server_name, v->server_name_len),
               sh->server_name);
    } else if (PyDict_SetItem(d, s->SERVER_NAME, s->localhost) < 0) {
        return -1;
    }
    if (req->server_port) {
        LW_SET(s->SERVER_PORT,
               lw_cached_port(&ec->server_port, &ec->server_port_n, req->server_port), x);
        sh->server_port = req->server_port;
    } else if (PyDict_SetItem(d, s->SERVER_PORT,
                              scheme == LW_SCHEME_HTTPS ? s->port443 : s->port80) < 0) {
        return -1;
    }
    if (req->client_addr) {
        LW_SET(s->REMOTE_ADDR,
               lw_cached_latin1(&ec->remote_addr, req->client_addr, v->client_addr_len),
               sh->client_addr);
        if (req->client_port) {
            LW_SET(s->REMOTE_PORT,
                   lw_cached_port(&ec->remote_port, &ec->remote_port_n, req->client_port), x);
            sh->client_port = req->client_port;
        }
    }
#undef LW_SET

    for (size_t i = 0; i < req->n_headers; i++) {
        PyObject *key = NULL, *val = NULL;
        int r = lw_add_header(rt, d, &req->headers[i], &key, &val);
        if (r < 0) return -1;
        if (r != LW_HDR_NEW) sh->complex = 1;
        if (sh != &dummy) {
            sh->hkey[i] = key;
            sh->hval[i] = val;
        }
    }
    return 0;
}

/* Copy a shape's dict; no other thread may change it meanwhile (the copy may run the GC). */
static PyObject *lw_shape_copy(lw_shape *sh)
{
    sh->busy = 1;
    PyObject *d = PyDict_Copy(sh->dict);
    sh->busy = 0;
    return d;
}

/* lw_environ_new() for a request that is not its shape's last one. */
static PyObject *lw_environ_layout(wsgi_app *app, lw_shapes *ss, const lw_view *v,
                                   const wsgi_env *env)
{
    lw_shape *sh = NULL;
    for (size_t i = 0; i < LW_SHAPES && !sh; i++)
        if (lw_shape_matches(&ss->s[i], v)) sh = &ss->s[i];
    if (sh) {
        sh->used = ++ss->clock;
        if (!sh->complex && !sh->busy) {
            sh->busy = 1;
            if (lw_shape_update(app->rt, sh, v) < 0) {
                sh->busy = 0;
                sh->image_len = 0; /* partly updated: no request's image */
                return NULL;
            }
            lw_shape_note(sh, env);
            PyObject *d = PyDict_Copy(sh->dict);
            sh->busy = 0;
            return d;
        }
    } else {
        /* A layout seen for the first time is built in full: a shape is made the second time. */
        uint32_t h = lw_layout_hash(v);
        uint32_t *seen = &ss->seen[h % LW_SHAPE_SEEN];
        if (*seen == h) {
            lw_shape fresh;
            if (lw_shape_alloc(&fresh, v) == 0) {
                PyObject *d = PyDict_Copy(app->environ_template);
                if (!d || lw_fill(app, v, d, &fresh) < 0) {
                    Py_XDECREF(d);
                    lw_shape_clear(&fresh);
                    return NULL;
                }
                fresh.dict = d;
                /* The copy above may have run other threads: place the shape only now, into
                 * the least recently used slot not being copied. */
                lw_shape *slot = NULL;
                for (size_t i = 0; i < LW_SHAPES; i++) {
                    lw_shape *c = &ss->s[i];
                    if (!c->busy && (!slot || !c->dict || (slot->dict && c->used < slot->used)))
                        slot = c;
                }
                if (!slot) { /* all busy: this request's dict is its environ */
                    free(fresh.hkey);
                    return d;
                }
                lw_shape_clear(slot);
                *slot = fresh;
                slot->used = ++ss->clock;
                if (slot->complex) return PyDict_Copy(slot->dict);
                lw_shape_note(slot, env);
                return lw_shape_copy(slot);
            }
        }
        *seen = h;
    }
    PyObject *d = PyDict_Copy(app->environ_template);
    if (d && lw_fill(app, v, d, NULL) < 0) Py_CLEAR(d);
    return d;
}

/* The environ of a request, without wsgi.input and extra_environ: a copy of its layout's shape,
 * or built in full. GIL held. */
static PyObject *lw_environ_new(wsgi_app *app, const wsgi_env *env)
{
    lw_shapes *ss = app->shapes;
    if (!ss && !(ss = app->shapes = calloc(1, sizeof *ss))) return PyErr_NoMemory();
    /* A keep-alive client repeating its last request: the shape is already right. */
    for (size_t i = 0; i < LW_SHAPES; i++) {
        lw_shape *sh = &ss->s[i];
        if (!sh->busy && lw_shape_same(sh, env)) {
            sh->used = ++ss->clock;
            return lw_shape_copy(sh);
        }
    }
    lw_view v;
    if (lw_view_init(app, &env->req, &v) < 0) return NULL;
    PyObject *d = lw_environ_layout(app, ss, &v, env);
    lw_view_free(&v);
    return d;
}

/* Reject what would crash or mislead: NULL pointers with lengths, missing method/target.
 * Shared with asgi_dispatch(). */
int lw_check_request(const wsgi_request *req);
int lw_check_request(const wsgi_request *req)
{
    if (req->struct_size < offsetof(wsgi_request, body_user_data) + sizeof(void *))
        return lw_fail(WSGI_ERR_INVAL,
                       "wsgi_request.struct_size %zu is too small (use wsgi_request_init)",
                       req->struct_size);
    if (!req->method || req->method_len == 0)
        return lw_fail(WSGI_ERR_INVAL, "request method is missing");
    if (!lw_is_token(req->method, req->method_len))
        return lw_fail(WSGI_ERR_INVAL, "request method is not a token");
    if (!req->target || req->target_len == 0)
        return lw_fail(WSGI_ERR_INVAL, "request target is missing");
    if (req->n_headers && !req->headers)
        return lw_fail(WSGI_ERR_INVAL, "headers is NULL with n_headers = %zu", req->n_headers);
    for (size_t i = 0; i < req->n_headers; i++) {
        const wsgi_header *h = &req->headers[i];
        if ((!h->name && h->name_len) || (!h->value && h->value_len))
            return lw_fail(WSGI_ERR_INVAL, "header %zu has a NULL pointer with a length", i);
        if (!h->name) return lw_fail(WSGI_ERR_INVAL, "header %zu has no name", i);
    }
    if (req->struct_size >= offsetof(wsgi_request, n_extra_environ) + sizeof(size_t)) {
        if (req->n_extra_environ && !req->extra_environ)
            return lw_fail(WSGI_ERR_INVAL, "extra_environ is NULL with n_extra_environ > 0");
        for (size_t i = 0; i < req->n_extra_environ; i++) {
            const wsgi_header *h = &req->extra_environ[i];
            if (!h->name || !h->name_len || (!h->value && h->value_len))
                return lw_fail(WSGI_ERR_INVAL, "extra_environ %zu is invalid", i);
        }
    }
    if (!req->body && req->body_len)
        return lw_fail(WSGI_ERR_INVAL, "body is NULL with body_len = %zu", req->body_len);
    if (req->content_length < -1) return lw_fail(WSGI_ERR_INVAL, "content_length is negative");
    const char *p, *q;
    size_t pl, ql;
    if (req->target[0] != '/' && /* origin form always splits */
        lw_split_target(req->target, req->target_len, &p, &pl, &q, &ql) < 0)
        return lw_fail(WSGI_ERR_INVAL, "request target is neither a path nor an absolute URI");
    return 0;
}

/* A wsgi_env_set() call, kept until the environ is made. */
typedef struct lw_env_set {
    struct lw_env_set *next;
    size_t name_len, value_len;
    char data[]; /* name, then value */
} lw_env_set;

/* Copy n bytes to *p and advance it; returns where they went. Header names and values are
 * short: up to 16 bytes are moved with two overlapping loads and stores instead of a memcpy call
 * (a dozen per request). */
static const char *lw_copy(char **p, const char *src, size_t n)
{
    char *dst = *p;
    *p += n;
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else if (n > 0 && n < 4) {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    } else if (n) {
        memcpy(dst, src, n);
    }
    return dst;
}

/* A NUL-terminated string of length n (without the NUL), or NULL. */
static const char *lw_copy_str(char **p, const char *src, size_t n)
{
    return src ? lw_copy(p, src, n + 1) : NULL;
}

/* The block of the last env freed, for the next one if it is large enough: saves a malloc and a
 * free per request. One slot, taken and given back atomically (any thread, no GIL). */
#define LW_ENV_SPARE_MAX 4096
static _Atomic(wsgi_env *) lw_env_spare;

static wsgi_env *lw_env_alloc(size_t size)
{
    wsgi_env *env = atomic_exchange_explicit(&lw_env_spare, NULL, memory_order_acquire);
    if (env && env->cap < size) {
        free(env);
        env = NULL;
    }
    if (!env && (env = malloc(size))) env->cap = size;
    return env;
}

static void lw_env_dispose(wsgi_env *env)
{
    wsgi_env *none = NULL;
    if (env->cap > LW_ENV_SPARE_MAX ||
        !atomic_compare_exchange_strong_explicit(&lw_env_spare, &none, env, memory_order_release,
                                                 memory_order_relaxed))
        free(env);
}

void lw_env_free_spare(void)
{
    free(atomic_exchange_explicit(&lw_env_spare, NULL, memory_order_acquire));
}

LIBWSGI_API int wsgi_env_build(wsgi_app *app, const wsgi_request *req, wsgi_env **out)
{
    lw_clear_error();
    if (!out) return lw_fail(WSGI_ERR_INVAL, "out is NULL");
    *out = NULL;
    if (!app || !req) return lw_fail(WSGI_ERR_INVAL, "app or request is NULL");
    if (app->iface != WSGI_INTERFACE_WSGI)
        return lw_fail(WSGI_ERR_INTERFACE, "wsgi_env_build on an app that is not WSGI");
    int rc = lw_check_request(req);
    if (rc) return rc;

    /* The wire data is only borrowed for this call: copy it, in one block with the env. */
    size_t nh = req->n_headers;
    size_t nx = req->struct_size >= offsetof(wsgi_request, n_extra_environ) + sizeof(size_t)
                    ? req->n_extra_environ
                    : 0;
    size_t bytes = req->method_len + req->target_len;
    for (size_t i = 0; i < nh; i++)
        bytes += req->headers[i].name_len + req->headers[i].value_len;
    for (size_t i = 0; i < nx; i++)
        bytes += req->extra_environ[i].name_len + req->extra_environ[i].value_len;
    size_t scheme_len = req->scheme ? strlen(req->scheme) : 0;
    size_t server_name_len = req->server_name ? strlen(req->server_name) : 0;
    size_t client_addr_len = req->client_addr ? strlen(req->client_addr) : 0;
    bytes += (req->scheme ? scheme_len + 1 : 0) + (req->server_name ? server_name_len + 1 : 0) +
             (req->client_addr ? client_addr_len + 1 : 0);
    wsgi_env *env = lw_env_alloc(sizeof *env + (nh + nx) * sizeof(wsgi_header) + bytes);
    if (!env) return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    wsgi_header *hs = (wsgi_header *)(env + 1);
    char *p = (char *)(hs + nh + nx);
    env->app = app;
    env->head_request = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    env->sets = NULL;
    env->sets_tail = &env->sets;
    wsgi_request *r = &env->req;
    /* Every field is set below (no memset): a field appended to wsgi_request must be too. */
    _Static_assert(sizeof(wsgi_request) == offsetof(wsgi_request, arrival_ns) + sizeof(int64_t),
                   "wsgi_env_build sets each wsgi_request field: add the new one");
    r->struct_size = sizeof *r;
    env->bytes = p;
    r->method = lw_copy(&p, req->method, req->method_len);
    r->method_len = req->method_len;
    r->target = lw_copy(&p, req->target, req->target_len);
    r->target_len = req->target_len;
    r->http_major = req->http_major;
    r->http_minor = req->http_minor;
    /* In this order: what makes the environ's shape (compared as one image), then the extras. */
    for (size_t i = 0; i < nh; i++) {
        const wsgi_header *h = &req->headers[i];
        hs[i].name = lw_copy(&p, h->name, h->name_len);
        hs[i].name_len = h->name_len;
        hs[i].value = lw_copy(&p, h->value, h->value_len);
        hs[i].value_len = h->value_len;
    }
    r->scheme = lw_copy_str(&p, req->scheme, scheme_len);
    r->server_name = lw_copy_str(&p, req->server_name, server_name_len);
    r->client_addr = lw_copy_str(&p, req->client_addr, client_addr_len);
    env->image_len = (size_t)(p - env->bytes);
    env->present =
        (req->scheme ? 1u : 0u) | (req->server_name ? 2u : 0u) | (req->client_addr ? 4u : 0u);
    for (size_t i = nh; i < nh + nx; i++) {
        const wsgi_header *h = &req->extra_environ[i - nh];
        hs[i].name = lw_copy(&p, h->name, h->name_len);
        hs[i].name_len = h->name_len;
        hs[i].value = lw_copy(&p, h->value, h->value_len);
        hs[i].value_len = h->value_len;
    }
    r->headers = hs;
    r->n_headers = nh;
    r->extra_environ = hs + nh;
    r->n_extra_environ = nx;
    r->server_port = req->server_port;
    r->client_port = req->client_port;
    /* The body source must outlive the response: kept as it is. */
    r->content_length = req->content_length;
    r->flags = req->flags;
    r->body = req->body;
    r->body_len = req->body_len;
    r->body_read = req->body_read;
    r->body_user_data = req->body_user_data;
    r->arrival_ns = lw_request_arrival(req);
    *out = env;
    return 0;
}

LIBWSGI_API int wsgi_env_set(wsgi_env *env, const char *name, size_t name_len, const char *value,
                             size_t value_len)
{
    lw_clear_error();
    if (!env || !name || !name_len || (!value && value_len))
        return lw_fail(WSGI_ERR_INVAL, "wsgi_env_set: NULL env/name, empty name or NULL value");
    lw_env_set *e = malloc(sizeof *e + name_len + value_len);
    if (!e) return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    e->next = NULL;
    e->name_len = name_len;
    e->value_len = value_len;
    memcpy(e->data, name, name_len);
    if (value_len) memcpy(e->data + name_len, value, value_len);
    *env->sets_tail = e;
    env->sets_tail = &e->next;
    return 0;
}

LIBWSGI_API void wsgi_env_free(wsgi_env *env)
{
    if (!env) return;
    for (lw_env_set *e = env->sets, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    lw_env_dispose(env);
}

/* Set d[latin1(name)] = latin1(value); -1 on error. */
static int lw_set_pair(PyObject *d, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    PyObject *k = lw_latin1(name, name_len);
    PyObject *v = k ? lw_latin1(value, value_len) : NULL;
    int r = v ? PyDict_SetItem(d, k, v) : -1;
    Py_XDECREF(k);
    Py_XDECREF(v);
    return r;
}

int lw_env_materialize(wsgi_env *env, PyObject **environ_out, lw_input **input_out)
{
    wsgi_app *app = env->app;
    const wsgi_request *req = &env->req;
    *environ_out = NULL;
    *input_out = NULL;
    lw_input *in = lw_input_new(req);
    PyObject *d = in ? lw_environ_new(app, env) : NULL;
    int bad = !d || PyDict_SetItem(d, app->rt->s.wsgi_input, (PyObject *)in) < 0;
    for (size_t i = 0; !bad && i < req->n_extra_environ; i++) {
        const wsgi_header *x = &req->extra_environ[i];
        bad = lw_set_pair(d, x->name, x->name_len, x->value, x->value_len) < 0;
    }
    for (lw_env_set *e = env->sets; !bad && e; e = e->next)
        bad = lw_set_pair(d, e->data, e->name_len, e->data + e->name_len, e->value_len) < 0;
    if (bad) {
        Py_XDECREF(d);
        if (in) {
            lw_input_detach(in);
            Py_DECREF(in);
        }
        return -1;
    }
    *environ_out = d;
    *input_out = in;
    return 0;
}
