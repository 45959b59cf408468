/* Where a request becomes a WSGI environ: a copy of the app's template plus the per-request CGI
 * keys, HTTP_* headers, wsgi.input and the host's extra keys. All str values are latin-1 decoded
 * from the wire bytes, as PEP 3333 requires. */
#include "internal.h"

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

static PyObject *lw_cached_port(PyObject **slot, unsigned *num, unsigned port)
{
    if (*slot && *num == port) return Py_NewRef(*slot);
    PyObject *v = PyUnicode_FromFormat("%u", port);
    if (v) {
        Py_XSETREF(*slot, Py_NewRef(v));
        *num = port;
    }
    return v;
}

/* Set d[key] = v, stealing v; -1 on error (v NULL: an error is set). */
static int lw_set_steal(PyObject *d, PyObject *key, PyObject *v)
{
    if (!v) return -1;
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r;
}

void lw_env_cache_clear(lw_env_cache *c)
{
    for (size_t i = 0; i < LW_HKEY_SLOTS; i++) {
        Py_CLEAR(c->hkeys[i].key);
        Py_CLEAR(c->hkeys[i].last);
        c->hkeys[i].len = 0;
    }
    Py_CLEAR(c->method);
    Py_CLEAR(c->server_name);
    Py_CLEAR(c->remote_addr);
    Py_CLEAR(c->uri);
    Py_CLEAR(c->path);
    Py_CLEAR(c->query);
    Py_CLEAR(c->server_port);
    Py_CLEAR(c->remote_port);
}

/* Set d[key] = latin1(p[:n]), consuming nothing; -1 on error. */
static int lw_set_latin1(PyObject *d, PyObject *key, const char *p, size_t n)
{
    PyObject *v = lw_latin1(p, n);
    if (!v) return -1;
    int r = PyDict_SetItem(d, key, v);
    Py_DECREF(v);
    return r;
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

/* Add one request header to the environ, joining repeats with ", ". */
static int lw_add_header(wsgi_runtime *rt, PyObject *env, const wsgi_header *h)
{
    const char *name = h->name, *val = h->value;
    size_t nlen = h->name_len, vlen = h->value_len;
    /* An '_' in a name would map onto the same key as '-' (X_Forwarded_For vs X-Forwarded-For):
     * drop such headers rather than let them spoof a proxy's header. Same for non-token names. */
    if (!lw_is_token(name, nlen) || memchr(name, '_', nlen)) {
        lw_log(WSGI_LOG_DEBUG, "dropping request header %.*s (not a token or contains '_')",
               (int)(nlen > 64 ? 64 : nlen), name);
        return 0;
    }
    while (vlen && (val[0] == ' ' || val[0] == '\t'))
        val++, vlen--;
    while (vlen && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
        vlen--;

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
    if (old) {
        /* Repeated header: "a, b" in arrival order (RFC 9110 §5.3). */
        PyObject *v = lw_latin1(val, vlen);
        PyObject *joined = NULL;
        if (v) {
            PyObject *parts[3] = {old, rt->s.comma_sp, v};
            PyObject *tup = PyTuple_Pack(3, parts[0], parts[1], parts[2]);
            if (tup) {
                joined = PyUnicode_Join(rt->s.empty, tup);
                Py_DECREF(tup);
            }
            Py_DECREF(v);
        }
        r = joined ? PyDict_SetItem(env, key, joined) : -1;
        Py_XDECREF(joined);
    } else if (PyErr_Occurred()) {
        r = -1;
    } else if (slot) {
        r = lw_set_steal(env, key, lw_cached_latin1(&slot->last, val, vlen));
    } else {
        r = lw_set_latin1(env, key, val, vlen);
    }
    Py_DECREF(key);
    return r;
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
    return 0;
}

static int lw_set_path(wsgi_app *app, PyObject *env, const char *path, size_t plen)
{
    wsgi_runtime *rt = app->rt;
    char stackbuf[1024];
    char *dec = plen <= sizeof stackbuf ? stackbuf : malloc(plen ? plen : 1);
    if (!dec) {
        PyErr_NoMemory();
        return -1;
    }
    size_t dlen = lw_pct_decode(path, plen, dec);
    const char *p = dec;
    /* Mounted app: SCRIPT_NAME is the mount point, PATH_INFO the rest (only on a '/' boundary). */
    size_t sl = app->script_name_len;
    if (sl && dlen >= sl && memcmp(p, app->script_name_c, sl) == 0 && (dlen == sl || p[sl] == '/'))
        p += sl, dlen -= sl;
    int r = dlen == 0 ? PyDict_SetItem(env, rt->s.PATH_INFO, rt->s.empty)
                      : lw_set_steal(env, rt->s.PATH_INFO, lw_cached_latin1(&rt->ec.path, p, dlen));
    if (dec != stackbuf) free(dec);
    return r;
}


static int lw_fill(wsgi_app *app, const wsgi_request *req, PyObject *env, lw_input *input)
{
    wsgi_runtime *rt = app->rt;
    lw_strings *s = &rt->s;
    const char *path, *query;
    size_t plen, qlen;
    lw_split_target(req->target, req->target_len, &path, &plen, &query, &qlen);

    lw_env_cache *ec = &rt->ec;
    if (lw_set_steal(env, s->REQUEST_METHOD,
                     lw_cached_latin1(&ec->method, req->method, req->method_len)) < 0)
        return -1;
    if (lw_set_path(app, env, path, plen) < 0) return -1;
    if (query && qlen) {
        if (lw_set_steal(env, s->QUERY_STRING, lw_cached_latin1(&ec->query, query, qlen)) < 0)
            return -1;
    } else if (PyDict_SetItem(env, s->QUERY_STRING, s->empty) < 0) {
        return -1;
    }
    PyObject *uri = lw_cached_latin1(&ec->uri, req->target, req->target_len);
    if (!uri) return -1;
    int bad =
        PyDict_SetItem(env, s->RAW_URI, uri) < 0 || PyDict_SetItem(env, s->REQUEST_URI, uri) < 0;
    Py_DECREF(uri);
    if (bad) return -1;

    PyObject *proto;
    if (req->http_major == 1 && req->http_minor == 1)
        proto = Py_NewRef(s->http11);
    else if (req->http_major == 1 && req->http_minor == 0)
        proto = Py_NewRef(s->http10);
    else
        proto = PyUnicode_FromFormat("HTTP/%d.%d", req->http_major, req->http_minor);
    if (!proto) return -1;
    bad = PyDict_SetItem(env, s->SERVER_PROTOCOL, proto) < 0;
    Py_DECREF(proto);
    if (bad) return -1;

    int https = req->scheme && strcmp(req->scheme, "https") == 0;
    if (https) {
        if (PyDict_SetItem(env, s->wsgi_url_scheme, s->https) < 0) return -1;
        if (PyDict_SetItem(env, s->HTTPS, s->on) < 0) return -1;
    } else if (req->scheme && strcmp(req->scheme, "http") != 0) {
        if (lw_set_latin1(env, s->wsgi_url_scheme, req->scheme, strlen(req->scheme)) < 0) return -1;
    }
    if (req->server_name) {
        if (lw_set_steal(env, s->SERVER_NAME,
                         lw_cached_latin1(&ec->server_name, req->server_name,
                                          strlen(req->server_name))) < 0)
            return -1;
    } else if (PyDict_SetItem(env, s->SERVER_NAME, s->localhost) < 0) {
        return -1;
    }
    if (req->server_port) {
        if (lw_set_steal(env, s->SERVER_PORT,
                         lw_cached_port(&ec->server_port, &ec->server_port_n, req->server_port)) <
            0)
            return -1;
    } else if (PyDict_SetItem(env, s->SERVER_PORT, https ? s->port443 : s->port80) < 0) {
        return -1;
    }
    if (req->client_addr) {
        if (lw_set_steal(env, s->REMOTE_ADDR,
                         lw_cached_latin1(&ec->remote_addr, req->client_addr,
                                          strlen(req->client_addr))) < 0)
            return -1;
        if (req->client_port &&
            lw_set_steal(env, s->REMOTE_PORT,
                         lw_cached_port(&ec->remote_port, &ec->remote_port_n, req->client_port)) <
                0)
            return -1;
    }

    for (size_t i = 0; i < req->n_headers; i++)
        if (lw_add_header(rt, env, &req->headers[i]) < 0) return -1;

    if (PyDict_SetItem(env, s->wsgi_input, (PyObject *)input) < 0) return -1;

    if (req->struct_size >= offsetof(wsgi_request, n_extra_environ) + sizeof(size_t)) {
        for (size_t i = 0; i < req->n_extra_environ; i++) {
            const wsgi_header *x = &req->extra_environ[i];
            PyObject *k = lw_latin1(x->name, x->name_len);
            PyObject *v = k ? lw_latin1(x->value, x->value_len) : NULL;
            int r = v ? PyDict_SetItem(env, k, v) : -1;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (r < 0) return -1;
        }
    }
    return 0;
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
    if (lw_split_target(req->target, req->target_len, &p, &pl, &q, &ql) < 0)
        return lw_fail(WSGI_ERR_INVAL, "request target is neither a path nor an absolute URI");
    return 0;
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

    wsgi_env *env = malloc(sizeof *env);
    if (!env) return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    lw_gil g;
    if ((rc = lw_gil_acquire(&g)) != 0) {
        free(env);
        return lw_fail(rc, "no Python thread state");
    }
    env->app = app;
    env->head_request = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    env->input = lw_input_new(req);
    env->environ = env->input ? PyDict_Copy(app->environ_template) : NULL;
    if (!env->environ || lw_fill(app, req, env->environ, env->input) < 0) {
        char msg[512];
        lw_log_exception("building environ", msg, sizeof msg);
        Py_CLEAR(env->environ);
        if (env->input) {
            lw_input_detach(env->input);
            Py_CLEAR(env->input);
        }
        lw_gil_release(&g);
        free(env);
        return lw_fail(WSGI_ERR_NOMEM, "%s", msg);
    }
    lw_gil_release(&g);
    *out = env;
    return 0;
}

LIBWSGI_API int wsgi_env_set(wsgi_env *env, const char *name, size_t name_len, const char *value,
                             size_t value_len)
{
    lw_clear_error();
    if (!env || !name || !name_len || (!value && value_len))
        return lw_fail(WSGI_ERR_INVAL, "wsgi_env_set: NULL env/name, empty name or NULL value");
    lw_gil g;
    int rc = lw_gil_acquire(&g);
    if (rc) return lw_fail(rc, "no Python thread state");
    PyObject *k = lw_latin1(name, name_len);
    PyObject *v = k ? lw_latin1(value ? value : "", value_len) : NULL;
    if (!v || PyDict_SetItem(env->environ, k, v) < 0) {
        PyErr_Clear();
        rc = lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    Py_XDECREF(k);
    Py_XDECREF(v);
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API void wsgi_env_free(wsgi_env *env)
{
    if (!env) return;
    lw_gil g;
    if (lw_gil_acquire(&g) == 0) {
        lw_input_detach(env->input);
        Py_CLEAR(env->input);
        Py_CLEAR(env->environ);
        lw_gil_release(&g);
    }
    free(env);
}
