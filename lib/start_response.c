/* The start_response and write callables handed to a WSGI app, and the validation of what the app
 * gives them: status line, header list (no response splitting), exc_info rules of PEP 3333. */
#include "internal.h"

#include <stddef.h>
#include <string.h>

struct lw_start_response {
    PyObject_HEAD wsgi_response *resp; /* NULL once the response is freed: calls then raise */
    vectorcallfunc vectorcall;         /* lw_sr_vectorcall: no argument tuple per call */
    PyObject *write; /* the write callable start_response returns, made once; it refers to this
                      * object, so the pair is a cycle that lw_start_response_release breaks */
};

static PyObject *lw_sr_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames);

static PyObject *lw_write(PyObject *self, PyObject *data);
static PyMethodDef lw_write_def = {"write", (PyCFunction)lw_write, METH_O,
                                   "write(data: bytes): send data now (legacy PEP 3333 API)."};

/* Header names already validated, by identity: apps pass the same str constants request after
 * request. The cache holds a reference to each, so an address is never another object's while
 * it is cached. Direct-mapped, GIL-guarded, emptied by wsgi_runtime_free. */
#define LW_NAME_CACHE 32
static PyObject *lw_names[LW_NAME_CACHE];
static unsigned char lw_name_is_cl[LW_NAME_CACHE];

/* start_response objects (with their write callable) of finished responses that nothing else
 * refers to, for the next responses: an object and a bound method less to make and free per
 * request. GIL-guarded; emptied by wsgi_runtime_free. */
#define LW_SR_POOL 16
static lw_start_response *lw_sr_pool[LW_SR_POOL];
static int lw_sr_pool_n;

lw_start_response *lw_start_response_new(wsgi_response *resp)
{
    lw_start_response *sr;
    if (lw_sr_pool_n > 0) {
        sr = lw_sr_pool[--lw_sr_pool_n];
    } else {
        if (!(sr = PyObject_New(lw_start_response, &lw_StartResponseType))) return NULL;
        sr->vectorcall = lw_sr_vectorcall;
        sr->write = NULL;
    }
    sr->resp = resp;
    return sr;
}

void lw_start_response_detach(lw_start_response *sr)
{
    if (sr) sr->resp = NULL;
}

/* Drop the response's reference (GIL held, detached). If the app kept neither start_response
 * nor write, the pair goes back to the pool; else the cycle is broken and the app's references
 * decide when they go. */
void lw_start_response_release(lw_start_response *sr)
{
    if (!sr) return;
    sr->resp = NULL;
    int ours = sr->write ? Py_REFCNT(sr) == 2 && Py_REFCNT(sr->write) == 1 : Py_REFCNT(sr) == 1;
    if (ours && lw_sr_pool_n < LW_SR_POOL) {
        lw_sr_pool[lw_sr_pool_n++] = sr;
        return;
    }
    Py_CLEAR(sr->write);
    Py_DECREF(sr);
}

void lw_start_response_pool_clear(void)
{
    for (size_t i = 0; i < LW_NAME_CACHE; i++)
        Py_CLEAR(lw_names[i]);
    while (lw_sr_pool_n > 0) {
        lw_start_response *sr = lw_sr_pool[--lw_sr_pool_n];
        Py_CLEAR(sr->write);
        Py_DECREF(sr);
    }
}

static void lw_sr_dealloc(lw_start_response *sr)
{
    Py_XDECREF(sr->write); /* NULL here: a write callable keeps its start_response alive */
    PyObject_Free(sr);
}

/* A latin-1 str's bytes without copying (PEP 393 one-byte kind); NULL if it has wider chars. */
static const char *lw_latin1_view(PyObject *s, Py_ssize_t *len)
{
    if (lw_unicode_ready(s) < 0) return NULL;
    if (PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND) return NULL;
    *len = PyUnicode_GET_LENGTH(s);
    return (const char *)PyUnicode_DATA(s);
}

/* Reject a status; returns 0 if valid, else -1 with an exception set. */
static int lw_check_status(PyObject *status, int *code)
{
    if (!PyUnicode_Check(status)) {
        PyErr_Format(PyExc_TypeError, "status must be str, not %.100s", Py_TYPE(status)->tp_name);
        return -1;
    }
    Py_ssize_t n = 0;
    const char *p = lw_latin1_view(status, &n);
    if (!p) {
        PyErr_SetString(PyExc_ValueError, "status must be latin-1 text");
        return -1;
    }
    if (n < 4 || p[3] != ' ' || p[0] < '1' || p[0] > '9' || p[1] < '0' || p[1] > '9' ||
        p[2] < '0' || p[2] > '9') {
        PyErr_Format(PyExc_ValueError, "status must look like '200 OK', got %R", status);
        return -1;
    }
    for (Py_ssize_t i = 4; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            PyErr_Format(PyExc_ValueError, "status contains a control character: %R", status);
            return -1;
        }
    }
    *code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    return 0;
}

static int lw_parse_content_length(const char *v, Py_ssize_t n, int64_t *out)
{
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18) return -1;
    int64_t x = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    *out = x;
    return 0;
}

/* Whether a 14-byte header name is "Content-Length" in any case (ASCII only: PyOS_strnicmp goes
 * through the C locale's tolower() per byte, which showed in profiles). */
static int lw_is_content_length(const char *p)
{
    static const char want[14] = "content-length";
    for (int i = 0; i < 14; i++)
        if (i == 7 ? p[i] != '-' : (p[i] | 0x20) != want[i]) return 0; /* letters: any case */
    return 1;
}

/* Whether a header value has a byte that may not appear in one: controls other than tab, DEL.
 * Eight bytes at a time; a word that may hold one is looked at byte by byte. */
static int lw_has_ctl(const unsigned char *p, Py_ssize_t n)
{
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, d;
        memcpy(&x, p + i, 8);
        d = x ^ (0x7f * ones);
        if (!(((x - 0x20 * ones) & ~x & highs) | ((d - ones) & ~d & highs))) continue;
        break; /* some byte < 0x20 (maybe a tab) or 0x7f: check them one by one */
    }
    for (; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) return 1;
    return 0;
}

/* 1 if the name is Content-Length, 0 if another valid name, -1 if not a token. */
static int lw_name_checked(PyObject *name, const char *np, Py_ssize_t nl)
{
    size_t slot = ((uintptr_t)name >> 4) % LW_NAME_CACHE;
    if (lw_names[slot] == name) return lw_name_is_cl[slot];
    if (!lw_is_token(np, (size_t)nl)) return -1;
    int is_cl = nl == 14 && lw_is_content_length(np);
    if (PyUnicode_CheckExact(name)) {
        Py_XSETREF(lw_names[slot], Py_NewRef(name));
        lw_name_is_cl[slot] = (unsigned char)is_cl;
    }
    return is_cl;
}

/* Validate the header list; returns a tuple of the (name, value) tuples and the Content-Length.
 * The copy protects against the app mutating its list before the headers are committed. */
static PyObject *lw_check_headers(PyObject *headers, int64_t *content_length)
{
    if (!PyList_Check(headers)) {
        PyErr_Format(PyExc_TypeError, "response_headers must be a list, not %.100s",
                     Py_TYPE(headers)->tp_name);
        return NULL;
    }
    PyObject *copy = PyList_AsTuple(headers);
    if (!copy) return NULL;
    *content_length = -1;
    Py_ssize_t count = PyTuple_GET_SIZE(copy), repeats = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(copy, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "response header %zd must be a (name, value) tuple, not %R", i, item);
            goto fail;
        }
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        if (!PyUnicode_Check(name) || !PyUnicode_Check(value)) {
            PyErr_Format(PyExc_TypeError, "response header %zd name and value must be str: %R", i,
                         item);
            goto fail;
        }
        Py_ssize_t nl = 0, vl = 0;
        const char *np = lw_latin1_view(name, &nl), *vp = lw_latin1_view(value, &vl);
        if (!np || !vp) {
            PyErr_Format(PyExc_ValueError, "response header %zd is not latin-1: %R", i, item);
            goto fail;
        }
        int is_cl = lw_name_checked(name, np, nl);
        if (is_cl < 0) {
            PyErr_Format(PyExc_ValueError, "invalid response header name %R", name);
            goto fail;
        }
        if (lw_has_ctl((const unsigned char *)vp, vl)) {
            PyErr_Format(PyExc_ValueError,
                         "response header %R has a control character (CR/LF/NUL) in its value",
                         name);
            goto fail;
        }
        if (is_cl) {
            int64_t cl;
            if (lw_parse_content_length(vp, vl, &cl) < 0 ||
                (*content_length >= 0 && *content_length != cl)) {
                PyErr_Format(PyExc_ValueError, "invalid Content-Length %R", value);
                goto fail;
            }
            if (*content_length >= 0) repeats++;
            *content_length = cl;
        }
    }
    if (repeats) {
        /* Content-Length is no list: a sender must not repeat it (RFC 9110 5.3). Keep the first. */
        PyObject *once = PyTuple_New(count - repeats);
        if (!once) goto fail;
        int seen = 0;
        for (Py_ssize_t i = 0, o = 0; i < count; i++) {
            PyObject *item = PyTuple_GET_ITEM(copy, i);
            Py_ssize_t nl = 0;
            const char *np = lw_latin1_view(PyTuple_GET_ITEM(item, 0), &nl); /* checked above */
            if (nl == 14 && lw_is_content_length(np) && seen++) continue;
            PyTuple_SET_ITEM(once, o++, Py_NewRef(item));
        }
        Py_SETREF(copy, once);
    }
    return copy;
fail:
    Py_DECREF(copy);
    return NULL;
}

/* start_response(status, response_headers, exc_info=None) -> write */
static PyObject *lw_sr_call(lw_start_response *sr, PyObject *status, PyObject *headers,
                            PyObject *exc_info)
{
    wsgi_response *resp = sr->resp;
    if (!resp) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called after the response ended");
        return NULL;
    }
    if (exc_info != Py_None) {
        if (!PyTuple_Check(exc_info) || PyTuple_GET_SIZE(exc_info) != 3) {
            PyErr_SetString(PyExc_TypeError, "exc_info must be a (type, value, traceback) tuple");
            return NULL;
        }
        if (resp->started || resp->head_locked) {
            /* Too late to change the head: re-raise so the app aborts (PEP 3333). */
            PyObject *t = PyTuple_GET_ITEM(exc_info, 0), *v = PyTuple_GET_ITEM(exc_info, 1),
                     *tb = PyTuple_GET_ITEM(exc_info, 2);
            /* Not a sys.exc_info() tuple ((None, None, None) outside an except block): still an
             * error, but PyErr_Restore would take it as given and crash on it. */
            if (!PyExceptionClass_Check(t) || (tb != Py_None && !PyTraceBack_Check(tb))) {
                PyErr_SetString(PyExc_TypeError,
                                "start_response called with exc_info after the response head was "
                                "sent, and exc_info is not a sys.exc_info() tuple");
                return NULL;
            }
            PyErr_Restore(Py_NewRef(t), Py_NewRef(v), tb == Py_None ? NULL : Py_NewRef(tb));
            return NULL;
        }
    } else if (resp->status) {
        PyErr_SetString(PyExc_RuntimeError, "start_response called a second time without exc_info");
        return NULL;
    }
    int code;
    if (lw_check_status(status, &code) < 0) {
        resp->pending_err = WSGI_ERR_BAD_STATUS;
        return NULL;
    }
    int64_t cl;
    PyObject *checked = lw_check_headers(headers, &cl);
    if (!checked) {
        resp->pending_err = WSGI_ERR_BAD_HEADER;
        return NULL;
    }
    Py_XSETREF(resp->status, Py_NewRef(status));
    Py_XSETREF(resp->headers, checked);
    resp->status_code = code;
    resp->content_length = cl;
    resp->pending_err = 0;
    if (!sr->write && !(sr->write = PyCFunction_New(&lw_write_def, (PyObject *)sr))) return NULL;
    return Py_NewRef(sr->write);
}

/* start_response(status, response_headers, exc_info=None), by the vectorcall protocol: the
 * arguments are read in place, without the tuple and dict a tp_call would build. */
static PyObject *lw_sr_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    static const char *const names[] = {"status", "response_headers", "exc_info"};
    PyObject *v[3] = {NULL, NULL, NULL};
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n > 3) {
        PyErr_Format(PyExc_TypeError, "start_response() takes at most 3 arguments (%zd given)", n);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        v[i] = args[i];
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, k);
        int slot = -1;
        for (int j = 0; j < 3 && slot < 0; j++)
            if (PyUnicode_CompareWithASCIIString(name, names[j]) == 0) slot = j;
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError,
                         "start_response() got an unexpected keyword argument '%U'", name);
            return NULL;
        }
        if (v[slot]) {
            PyErr_Format(PyExc_TypeError, "start_response() got multiple values for argument '%s'",
                         names[slot]);
            return NULL;
        }
        v[slot] = args[n + k];
    }
    if (!v[0] || !v[1]) {
        PyErr_Format(PyExc_TypeError, "start_response() missing required argument '%s'",
                     v[0] ? names[1] : names[0]);
        return NULL;
    }
    return lw_sr_call((lw_start_response *)self, v[0], v[1], v[2] ? v[2] : Py_None);
}

/* write(data): commit the head if needed and hand data to the host right away. */
static PyObject *lw_write(PyObject *self, PyObject *data)
{
    lw_start_response *sr = (lw_start_response *)self;
    wsgi_response *resp = sr->resp;
    if (!resp) {
        PyErr_SetString(PyExc_RuntimeError, "write() called after the response ended");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_Format(PyExc_TypeError, "write() argument must be bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    if (!resp->status) {
        PyErr_SetString(PyExc_RuntimeError, "write() called before start_response");
        return NULL;
    }
    if (resp->error || resp->done) {
        PyErr_SetString(PyExc_OSError, "the client connection is gone");
        return NULL;
    }
    if (resp->pre) {
        /* Only another thread can get here: the app returned a list whose first item waits for
         * wsgi_iter_next(); data written now would overtake it. */
        PyErr_SetString(PyExc_RuntimeError, "write() called after the application returned");
        return NULL;
    }
    if (!resp->started && lw_response_commit(resp) < 0) goto gone;
    if (PyBytes_GET_SIZE(data) > 0 && lw_response_deliver_locked(resp, data) < 0) goto gone;
    Py_RETURN_NONE;
gone:
    PyErr_SetString(PyExc_OSError, "the client connection is gone");
    return NULL;
}

PyTypeObject lw_StartResponseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.StartResponse",
    .tp_basicsize = sizeof(lw_start_response),
    .tp_dealloc = (destructor)lw_sr_dealloc,
    .tp_vectorcall_offset = offsetof(lw_start_response, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "start_response(status, response_headers, exc_info=None) -> write",
};
