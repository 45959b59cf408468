/* Where a request becomes an ASGI http or websocket scope (spec 2.5): decoded path, raw bytes,
 * lowercased header names with order and duplicates kept, client/server, state copy, extensions,
 * and for WebSocket the subprotocols offered in Sec-WebSocket-Protocol. */
#include "asgi_conn.h"

#include <stdlib.h>
#include <string.h>

/* ---- caches -------------------------------------------------------------------------------
 * A keep-alive client (or a load generator, or a proxy) sends the same method, path, headers and
 * address request after request. The immutable objects of the last scope (str, bytes, the header
 * (name, value) tuples, the client/server tuples) are reused when the bytes are the same, as
 * environ.c does for WSGI; what an app may mutate (the scope, its headers list, asgi, state,
 * extensions) is always new. One runtime per process: one cache, cleared with the loop (GIL). */

#define LW_SC_RAW_MAX 256 /* longer inputs are not cached */
#define LW_SC_PAIRS   32  /* header positions cached */

typedef struct lw_sc_slot {
    size_t len; /* 0 with obj NULL: empty slot */
    char raw[LW_SC_RAW_MAX];
    PyObject *obj, *obj2; /* what raw became (obj2: a second object of the same input) */
    unsigned port;
} lw_sc_slot;

/* The scope's keys whose values are immutable and made per request (see lw_asgi_scope). */
enum {
    SV_HTTP_VERSION,
    SV_METHOD,
    SV_SCHEME,
    SV_PATH,
    SV_RAW_PATH,
    SV_QUERY,
    SV_ROOT,
    SV_CLIENT,
    SV_SERVER,
    SV_N
};

static struct {
    /* http, websocket scopes: every key, in order, with the constant values, the last request's
     * immutable ones (lastv: the same objects, borrowed from it) and None for the mutable ones */
    PyObject *templ[2];
    PyObject *lastv[2][SV_N];
    lw_sc_slot method, path, query, client, server;
    lw_sc_slot pairs[LW_SC_PAIRS]; /* raw = name as received, then the trimmed value */
} lw_sc;

void lw_asgi_scope_cache_clear(void)
{
    lw_sc_slot *slots[] = {&lw_sc.method, &lw_sc.path, &lw_sc.query, &lw_sc.client, &lw_sc.server};
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        Py_CLEAR(slots[i]->obj);
        Py_CLEAR(slots[i]->obj2);
        slots[i]->len = 0;
    }
    for (size_t i = 0; i < LW_SC_PAIRS; i++) {
        Py_CLEAR(lw_sc.pairs[i].obj);
        lw_sc.pairs[i].len = 0;
    }
    Py_CLEAR(lw_sc.templ[0]);
    Py_CLEAR(lw_sc.templ[1]);
    memset(lw_sc.lastv, 0, sizeof lw_sc.lastv);
}

/* The slot holds the objects made from exactly these bytes (and port). */
static inline int lw_sc_hit(const lw_sc_slot *sl, const char *p, size_t n, unsigned port)
{
    return sl->obj && sl->len == n && sl->port == port && memcmp(sl->raw, p, n) == 0;
}

/* Remember @obj (and @obj2) as made from these bytes (new references taken); not cached if long. */
static inline void lw_sc_keep(lw_sc_slot *sl, const char *p, size_t n, unsigned port, PyObject *obj,
                              PyObject *obj2)
{
    Py_CLEAR(sl->obj);
    Py_CLEAR(sl->obj2);
    sl->len = 0;
    if (n > LW_SC_RAW_MAX) return;
    memcpy(sl->raw, p, n);
    sl->len = n;
    sl->port = port;
    sl->obj = Py_NewRef(obj);
    sl->obj2 = Py_XNewRef(obj2);
}

/* path: percent-decoded, then UTF-8 decoded (invalid sequences replaced, as uvicorn does). */
static PyObject *lw_decoded_path(const char *p, size_t n)
{
    if (!memchr(p, '%', n)) return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
    char *d = malloc(n);
    if (!d) return PyErr_NoMemory();
    size_t o = lw_pct_decode(p, n, d);
    PyObject *s = PyUnicode_DecodeUTF8(d, (Py_ssize_t)o, "replace");
    free(d);
    return s;
}

/* (host, port), or None without a host; new reference. The host is UTF-8 decoded with invalid
 * sequences replaced, as the path is: a server name or address with other bytes (from a Host
 * header or SCGI's SERVER_NAME) must not fail the request. */
static PyObject *lw_addr(lw_sc_slot *sl, const char *host, unsigned port)
{
    if (!host) Py_RETURN_NONE;
    size_t n = strlen(host);
    if (lw_sc_hit(sl, host, n, port)) return Py_NewRef(sl->obj);
    PyObject *h = PyUnicode_DecodeUTF8(host, (Py_ssize_t)n, "replace");
    PyObject *p = h ? PyLong_FromUnsignedLong(port) : NULL;
    PyObject *t = p ? PyTuple_New(2) : NULL;
    if (!t) {
        Py_XDECREF(h);
        Py_XDECREF(p);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, h);
    PyTuple_SET_ITEM(t, 1, p);
    lw_sc_keep(sl, host, n, port, t, NULL);
    return t;
}

/* One header as (lowercased name, value without surrounding blanks). */
static PyObject *lw_header_pair(size_t i, const wsgi_header *h)
{
    const char *v = h->value ? h->value : "";
    size_t vl = h->value ? h->value_len : 0;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    lw_sc_slot *sl = i < LW_SC_PAIRS ? &lw_sc.pairs[i] : NULL;
    size_t nl = h->name_len, total = nl + vl;
    /* The slot keeps name and value back to back; the split is the name's length (in port). */
    if (sl && sl->obj && sl->len == total && sl->port == nl && memcmp(sl->raw, h->name, nl) == 0 &&
        memcmp(sl->raw + nl, v, vl) == 0)
        return Py_NewRef(sl->obj);
    PyObject *name = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nl);
    if (!name) return NULL;
    char *low = PyBytes_AS_STRING(name);
    for (size_t j = 0; j < nl; j++) {
        char c = h->name[j];
        low[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    PyObject *value = PyBytes_FromStringAndSize(v, (Py_ssize_t)vl);
    PyObject *pair = value ? PyTuple_New(2) : NULL;
    if (!pair) {
        Py_DECREF(name);
        Py_XDECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, value);
    if (sl) {
        Py_CLEAR(sl->obj);
        sl->len = 0;
        if (total <= LW_SC_RAW_MAX) {
            memcpy(sl->raw, h->name, nl);
            memcpy(sl->raw + nl, v, vl);
            sl->len = total;
            sl->port = (unsigned)nl;
            sl->obj = Py_NewRef(pair);
        }
    }
    return pair;
}

static PyObject *lw_headers_list(const wsgi_request *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->n_headers);
    if (!list) return NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        PyObject *pair = lw_header_pair(i, &req->headers[i]);
        if (!pair) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

/* Set d[k] = v, stealing v; -1 on error (v may be NULL: an error is already set). */
static int lw_steal(PyObject *d, PyObject *k, PyObject *v)
{
    if (!v) return -1;
    int r = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return r;
}

static PyObject *lw_http_version(lw_asgi_strings *a, const wsgi_request *req)
{
    if (req->http_major == 1 && req->http_minor == 1) return Py_NewRef(a->v11);
    if (req->http_major == 1 && req->http_minor == 0) return Py_NewRef(a->v10);
    if (req->http_major == 2) return Py_NewRef(a->v2);
    return PyUnicode_FromFormat("%d.%d", req->http_major, req->http_minor);
}

/* The scope's keys in order, with None for what each request sets; type and asgi... constant. */
static PyObject *lw_scope_template(lw_asgi_strings *a, int websocket)
{
    PyObject *t = PyDict_New();
    if (!t) return NULL;
    PyObject *http_keys[] = {a->type,   a->asgi,     a->http_version, a->method,    a->scheme,
                             a->path,   a->raw_path, a->query_string, a->root_path, a->headers,
                             a->client, a->server,   a->state,        a->extensions};
    PyObject *ws_keys[] = {a->type,   a->asgi,     a->http_version, a->scheme,    a->subprotocols,
                           a->path,   a->raw_path, a->query_string, a->root_path, a->headers,
                           a->client, a->server,   a->state,        a->extensions};
    PyObject **keys = websocket ? ws_keys : http_keys;
    for (size_t i = 0; i < sizeof http_keys / sizeof http_keys[0]; i++) {
        if (PyDict_SetItem(t, keys[i], Py_None) < 0) {
            Py_DECREF(t);
            return NULL;
        }
    }
    if (PyDict_SetItem(t, a->type, websocket ? a->websocket : a->http) < 0) Py_CLEAR(t);
    return t;
}

/* Every token of every Sec-WebSocket-Protocol header, in order (RFC 6455 4.1: a comma-separated
 * list; empty elements are skipped). */
static PyObject *lw_subprotocols(const wsgi_request *req)
{
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (size_t i = 0; i < req->n_headers; i++) {
        const wsgi_header *h = &req->headers[i];
        if (h->name_len != 22 || PyOS_strnicmp(h->name, "sec-websocket-protocol", 22) != 0)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *tok = p, *tend = comma ? comma : end;
            p = comma ? comma + 1 : end;
            while (tok < tend && (*tok == ' ' || *tok == '\t'))
                tok++;
            while (tend > tok && (tend[-1] == ' ' || tend[-1] == '\t'))
                tend--;
            if (tok == tend) continue;
            PyObject *t = PyUnicode_DecodeLatin1(tok, tend - tok, NULL);
            if (!t || PyList_Append(list, t) < 0) {
                Py_XDECREF(t);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(t);
        }
    }
    return list;
}

PyObject *lw_asgi_scope(wsgi_app *app, const wsgi_request *req, int trailers, int pathsend,
                        int websocket)
{
    wsgi_runtime *rt = app->rt;
    lw_asgi_strings *a = rt->as;
    const char *t = req->target;
    size_t n = req->target_len, start = 0;
    if (t[0] != '/' && !(n == 1 && t[0] == '*')) {
        /* absolute-form: skip scheme://authority */
        const char *sep = NULL;
        for (size_t j = 0; j + 2 < n; j++)
            if (t[j] == ':' && t[j + 1] == '/' && t[j + 2] == '/') {
                sep = t + j;
                break;
            }
        if (!sep) {
            PyErr_SetString(PyExc_ValueError,
                            "request target is neither a path nor an absolute URI");
            return NULL;
        }
        start = (size_t)(sep - t) + 3;
        while (start < n && t[start] != '/' && t[start] != '?')
            start++;
    }
    const char *q = memchr(t + start, '?', n - start);
    size_t pend = q ? (size_t)(q - t) : n;
    const char *path = t + start;
    size_t plen = pend - start;
    const char *query = q ? q + 1 : "";
    size_t qlen = q ? n - pend - 1 : 0;

    PyObject **templ = &lw_sc.templ[websocket != 0];
    PyObject **lastv = lw_sc.lastv[websocket != 0];
    if (!*templ) {
        if (!(*templ = lw_scope_template(a, websocket))) return NULL;
        memset(lw_sc.lastv[websocket != 0], 0, sizeof lw_sc.lastv[0]);
    }
    int https = req->scheme && strcmp(req->scheme, "https") == 0;
    /* The immutable values, new references (reused objects when the bytes repeat: caches above) */
    PyObject *keys[SV_N] = {a->http_version, websocket ? NULL : a->method,
                            a->scheme,       a->path,
                            a->raw_path,     a->query_string,
                            a->root_path,    a->client,
                            a->server};
    PyObject *vals[SV_N] = {NULL};
    vals[SV_HTTP_VERSION] = lw_http_version(a, req);
    if (websocket) {
        vals[SV_SCHEME] = Py_NewRef(https ? a->wss : a->ws);
    } else {
        vals[SV_SCHEME] = Py_NewRef(https ? a->https : a->http);
        lw_sc_slot *m = &lw_sc.method;
        if (lw_sc_hit(m, req->method, req->method_len, 0)) {
            vals[SV_METHOD] = Py_NewRef(m->obj);
        } else {
            PyObject *v = PyUnicode_DecodeLatin1(req->method, (Py_ssize_t)req->method_len, NULL);
            if (v) lw_sc_keep(m, req->method, req->method_len, 0, v, NULL);
            vals[SV_METHOD] = v;
        }
    }
    /* path and raw_path, from the same bytes */
    lw_sc_slot *ps = &lw_sc.path;
    if (lw_sc_hit(ps, path, plen, 0)) {
        vals[SV_PATH] = Py_NewRef(ps->obj);
        vals[SV_RAW_PATH] = Py_NewRef(ps->obj2);
    } else {
        PyObject *d = plen ? lw_decoded_path(path, plen) : PyUnicode_FromString("/");
        PyObject *r = d ? PyBytes_FromStringAndSize(path, (Py_ssize_t)plen) : NULL;
        if (r) lw_sc_keep(ps, path, plen, 0, d, r);
        vals[SV_PATH] = d;
        vals[SV_RAW_PATH] = r;
    }
    lw_sc_slot *qs = &lw_sc.query;
    if (lw_sc_hit(qs, query, qlen, 0)) {
        vals[SV_QUERY] = Py_NewRef(qs->obj);
    } else {
        PyObject *v = PyBytes_FromStringAndSize(query, (Py_ssize_t)qlen);
        if (v) lw_sc_keep(qs, query, qlen, 0, v, NULL);
        vals[SV_QUERY] = v;
    }
    /* root_path: the app's mount point, unless a gateway that split the path itself (lighttpd's
     * SCGI, CGI-style) passed SCRIPT_NAME among the extra environ variables. */
    const wsgi_header *sn = NULL;
    if (req->struct_size >= offsetof(wsgi_request, n_extra_environ) + sizeof(size_t))
        for (size_t i = 0; i < req->n_extra_environ; i++)
            if (req->extra_environ[i].name_len == 11 &&
                memcmp(req->extra_environ[i].name, "SCRIPT_NAME", 11) == 0) {
                sn = &req->extra_environ[i];
                break;
            }
    /* Decoded as path is (UTF-8, invalid sequences replaced), so that a non-ASCII mount point is
     * still path's prefix; the app's SCRIPT_NAME (latin-1, for WSGI) is the same str when ASCII. */
    if (sn)
        vals[SV_ROOT] = PyUnicode_DecodeUTF8(sn->value, (Py_ssize_t)sn->value_len, "replace");
    else if (PyUnicode_IS_ASCII(app->script_name))
        vals[SV_ROOT] = Py_NewRef(app->script_name);
    else
        vals[SV_ROOT] =
            PyUnicode_DecodeUTF8(app->script_name_c, (Py_ssize_t)app->script_name_len, "replace");
    vals[SV_CLIENT] = lw_addr(&lw_sc.client, req->client_addr, req->client_port);
    /* A unix socket has no port: the spec's server is then [path, None] or None. */
    vals[SV_SERVER] =
        (req->flags & WSGI_REQUEST_UNIX_SOCKET)
            ? Py_NewRef(Py_None)
            : lw_addr(&lw_sc.server, req->server_name ? req->server_name : "localhost",
                      req->server_port ? req->server_port
                      : https          ? 443
                                       : 80);
    /* Into the template where they differ from the last request's (as a rule none, or the
     * client's port), then one copy: fewer dict stores than setting every key of a copy. */
    int bad = 0;
    for (int i = 0; i < SV_N; i++) {
        if (!keys[i]) continue;
        if (!vals[i]) {
            bad = 1;
        } else if (!bad && vals[i] != lastv[i]) {
            if (PyDict_SetItem(*templ, keys[i], vals[i]) < 0)
                bad = 1;
            else
                lastv[i] = vals[i]; /* the template holds it */
        }
    }
    for (int i = 0; i < SV_N; i++)
        Py_XDECREF(vals[i]);
    if (bad) {
        /* The template may hold some of this request's values already: start it over. */
        Py_CLEAR(*templ);
        return NULL;
    }
    PyObject *s = PyDict_Copy(*templ);
    if (!s) return NULL;
    /* What an app may mutate: new for every scope. */
    PyObject *ext = PyDict_New();
    bad = !ext;
    if (!bad && trailers) bad = lw_steal(ext, a->ext_trailers, PyDict_New()) < 0;
    if (!bad && pathsend) bad = lw_steal(ext, a->ext_pathsend, PyDict_New()) < 0;
    if (!bad && websocket) bad = lw_steal(ext, a->ext_ws_response, PyDict_New()) < 0;
    bad = bad || lw_steal(s, a->asgi, PyDict_Copy(rt->asgi_version)) < 0;
    if (websocket) bad = bad || lw_steal(s, a->subprotocols, lw_subprotocols(req)) < 0;
    bad = bad || lw_steal(s, a->headers, lw_headers_list(req)) < 0;
    bad = bad || lw_steal(s, a->state, app->state ? PyDict_Copy(app->state) : PyDict_New()) < 0;
    bad = bad || PyDict_SetItem(s, a->extensions, ext) < 0;
    Py_XDECREF(ext);
    if (bad) Py_CLEAR(s);
    return s;
}
