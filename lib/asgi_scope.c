/* Where a request becomes an ASGI http or websocket scope (spec 2.5): decoded path, raw bytes,
 * lowercased header names with order and duplicates kept, client/server, state copy, extensions,
 * and for WebSocket the subprotocols offered in Sec-WebSocket-Protocol. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

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

static PyObject *lw_addr(const char *host, unsigned port)
{
    if (!host) Py_RETURN_NONE;
    return Py_BuildValue("(sI)", host, port);
}

static PyObject *lw_headers_list(const wsgi_request *req)
{
    PyObject *list = PyList_New((Py_ssize_t)req->n_headers);
    if (!list) return NULL;
    char stackbuf[256];
    for (size_t i = 0; i < req->n_headers; i++) {
        const wsgi_header *h = &req->headers[i];
        char *low = h->name_len <= sizeof stackbuf ? stackbuf : malloc(h->name_len);
        if (!low) {
            Py_DECREF(list);
            return PyErr_NoMemory();
        }
        for (size_t j = 0; j < h->name_len; j++) {
            char c = h->name[j];
            low[j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        const char *v = h->value;
        size_t vl = h->value_len;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        PyObject *pair =
            Py_BuildValue("(y#y#)", low, (Py_ssize_t)h->name_len, v ? v : "", (Py_ssize_t)vl);
        if (low != stackbuf) free(low);
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

    PyObject *s = PyDict_New();
    if (!s) return NULL;
    int https = req->scheme && strcmp(req->scheme, "https") == 0;
    PyObject *ext = PyDict_New();
    int bad = !ext;
    if (!bad && trailers) bad = lw_steal(ext, a->ext_trailers, PyDict_New()) < 0;
    if (!bad && pathsend) bad = lw_steal(ext, a->ext_pathsend, PyDict_New()) < 0;
    if (!bad && websocket) bad = lw_steal(ext, a->ext_ws_response, PyDict_New()) < 0;
    bad = bad || PyDict_SetItem(s, a->type, websocket ? a->websocket : a->http) < 0;
    bad = bad || lw_steal(s, a->asgi, PyDict_Copy(rt->asgi_version)) < 0;
    bad = bad || lw_steal(s, a->http_version, lw_http_version(a, req)) < 0;
    if (websocket) {
        bad = bad || PyDict_SetItem(s, a->scheme, https ? a->wss : a->ws) < 0;
        bad = bad || lw_steal(s, a->subprotocols, lw_subprotocols(req)) < 0;
    } else {
        bad = bad ||
              lw_steal(s, a->method,
                       PyUnicode_DecodeLatin1(req->method, (Py_ssize_t)req->method_len, NULL)) < 0;
        bad = bad || PyDict_SetItem(s, a->scheme, https ? a->https : a->http) < 0;
    }
    bad = bad ||
          lw_steal(s, a->path, plen ? lw_decoded_path(path, plen) : PyUnicode_FromString("/")) < 0;
    bad = bad || lw_steal(s, a->raw_path, PyBytes_FromStringAndSize(path, (Py_ssize_t)plen)) < 0;
    bad = bad || lw_steal(s, a->query_string,
                          PyBytes_FromStringAndSize(q ? q + 1 : "",
                                                    q ? (Py_ssize_t)(n - pend - 1) : 0)) < 0;
    bad = bad || PyDict_SetItem(s, a->root_path, app->script_name) < 0;
    bad = bad || lw_steal(s, a->headers, lw_headers_list(req)) < 0;
    bad = bad || lw_steal(s, a->client, lw_addr(req->client_addr, req->client_port)) < 0;
    bad = bad || lw_steal(s, a->server,
                          lw_addr(req->server_name ? req->server_name : "localhost",
                                  req->server_port ? req->server_port
                                  : https          ? 443
                                                   : 80)) < 0;
    bad = bad || lw_steal(s, a->state, app->state ? PyDict_Copy(app->state) : PyDict_New()) < 0;
    bad = bad || PyDict_SetItem(s, a->extensions, ext) < 0;
    Py_XDECREF(ext);
    if (bad) Py_CLEAR(s);
    return s;
}
