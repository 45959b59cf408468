/* wsgi.input, a Python type written in C. It reads either from a body the host buffered (no copy
 * until the app asks for bytes) or from the host's streaming read callback through a bounded
 * buffer, so a chunked or huge body is never held whole. Reads stop at Content-Length. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define LW_INPUT_BUFSIZE 65536

struct lw_input {
    PyObject_HEAD const char *data; /* buffered body, or `own` for streaming */
    char *own;         /* streaming buffer (LW_INPUT_BUFSIZE), allocated on first read */
    size_t start, end; /* unread bytes are data[start..end) */
    wsgi_body_read_cb read_cb;
    void *read_ud;
    int64_t remaining; /* bytes the source may still deliver; -1 = until the source ends */
    uint64_t received; /* taken from the host (the observer's bytes_in) */
    int eof, failed, detached;
};

/* Input objects of finished requests that nothing else refers to, for the next requests.
 * GIL-guarded; emptied by wsgi_runtime_free. */
#define LW_INPUT_POOL 16
static lw_input *lw_input_pool[LW_INPUT_POOL];
static int lw_input_pool_n;

lw_input *lw_input_new(const wsgi_request *req)
{
    lw_input *in = lw_input_pool_n > 0 ? lw_input_pool[--lw_input_pool_n]
                                       : PyObject_New(lw_input, &lw_InputType);
    if (!in) return NULL;
    in->own = NULL;
    in->start = 0;
    in->eof = in->failed = in->detached = 0;
    in->read_cb = NULL;
    in->read_ud = NULL;
    in->received = 0;
    if (req->body || !req->body_read) {
        /* Buffered (or no body at all): the whole source is already "in the buffer". */
        size_t n = req->body ? req->body_len : 0;
        if (req->content_length >= 0 && (uint64_t)req->content_length < n)
            n = (size_t)req->content_length;
        in->data = req->body;
        in->end = n;
        in->received = n;
        in->remaining = 0;
        in->eof = 1;
    } else {
        in->data = NULL;
        in->end = 0;
        in->read_cb = req->body_read;
        in->read_ud = req->body_user_data;
        in->remaining = (req->flags & WSGI_REQUEST_CHUNKED) ? -1 : req->content_length;
        if (in->remaining == 0) in->eof = 1;
    }
    return in;
}

uint64_t lw_input_received(const lw_input *in)
{
    return in ? in->received : 0;
}

void lw_input_detach(lw_input *in)
{
    if (!in) return;
    in->detached = 1;
    in->data = NULL;
    in->start = in->end = 0;
    in->read_cb = NULL;
    in->eof = 1;
}

void lw_input_release(lw_input *in)
{
    if (!in) return;
    lw_input_detach(in);
    if (Py_REFCNT(in) == 1 && lw_input_pool_n < LW_INPUT_POOL) {
        free(in->own);
        in->own = NULL;
        lw_input_pool[lw_input_pool_n++] = in;
        return;
    }
    Py_DECREF(in);
}

void lw_input_pool_clear(void)
{
    while (lw_input_pool_n > 0)
        Py_DECREF(lw_input_pool[--lw_input_pool_n]);
}

int lw_input_idle(const lw_input *in)
{
    return !in || (in->start >= in->end && (!in->read_cb || in->eof));
}

static void lw_input_dealloc(lw_input *in)
{
    free(in->own);
    PyObject_Free(in);
}

static int lw_input_check(lw_input *in)
{
    if (in->detached) {
        PyErr_SetString(PyExc_ValueError, "wsgi.input used after its request ended");
        return -1;
    }
    if (in->failed) {
        PyErr_SetString(PyExc_OSError, "reading the request body failed");
        return -1;
    }
    return 0;
}

/* Ask the host for up to `len` bytes into `dst` (GIL released). Returns bytes read, 0 at the end
 * of the body, -1 with OSError set. */
static Py_ssize_t lw_input_pull(lw_input *in, char *dst, size_t len)
{
    if (in->eof) return 0;
    if (in->remaining >= 0 && (uint64_t)in->remaining < len) len = (size_t)in->remaining;
    if (len == 0) {
        in->eof = 1;
        return 0;
    }
    size_t got = 0;
    int rc;
    PyThreadState *save = PyEval_SaveThread();
    rc = in->read_cb(in->read_ud, dst, len, &got);
    PyEval_RestoreThread(save);
    if (rc < 0 || got > len) {
        in->failed = 1;
        lw_log(WSGI_LOG_WARNING, "request body read callback failed (%d)", rc);
        PyErr_SetString(PyExc_OSError, "reading the request body failed");
        return -1;
    }
    if (got == 0) {
        in->eof = 1;
        if (in->remaining > 0) {
            /* The client sent less than its Content-Length: the body is truncated. */
            in->failed = 1;
            PyErr_Format(PyExc_OSError, "request body ended %lld bytes early",
                         (long long)in->remaining);
            return -1;
        }
        return 0;
    }
    in->received += got;
    if (in->remaining > 0) {
        in->remaining -= (int64_t)got;
        if (in->remaining == 0) in->eof = 1;
    }
    return (Py_ssize_t)got;
}

/* Refill the streaming buffer when it is empty. Returns bytes now available, 0 at EOF, -1 error. */
static Py_ssize_t lw_input_fill(lw_input *in)
{
    if (in->start < in->end) return (Py_ssize_t)(in->end - in->start);
    if (in->eof || !in->read_cb) return 0;
    if (!in->own) {
        in->own = malloc(LW_INPUT_BUFSIZE);
        if (!in->own) {
            PyErr_NoMemory();
            return -1;
        }
        in->data = in->own;
    }
    in->start = in->end = 0;
    Py_ssize_t n = lw_input_pull(in, in->own, LW_INPUT_BUFSIZE);
    if (n > 0) in->end = (size_t)n;
    return n;
}

/* size: -1 for "all", else the maximum. */
static PyObject *lw_input_read_impl(lw_input *in, Py_ssize_t size)
{
    if (lw_input_check(in) < 0) return NULL;
    size_t avail = in->end - in->start;
    if (size >= 0 && (size_t)size <= avail) {
        /* No buffer yet (a streamed body, nothing read): only size 0 gets here. */
        PyObject *r = PyBytes_FromStringAndSize(in->data ? in->data + in->start : "", size);
        if (r) in->start += (size_t)size;
        return r;
    }
    if (in->eof && size < 0) {
        PyObject *r =
            PyBytes_FromStringAndSize(in->data ? in->data + in->start : "", (Py_ssize_t)avail);
        if (r) in->start = in->end;
        return r;
    }
    /* Needs the streaming source: grow a bytes object and read straight into it. */
    size_t cap = size >= 0 ? (size_t)size : (avail > 0 ? avail * 2 : LW_INPUT_BUFSIZE);
    /* Exact when Content-Length is known, but never trust a declared length for the first
     * allocation: a client may announce gigabytes and send nothing. */
    if (size < 0 && in->remaining > 0)
        cap = avail + (size_t)(in->remaining < (1 << 20) ? in->remaining : (1 << 20));
    if (size >= 0 && cap > (size_t)avail + (1u << 20)) cap = avail + (1u << 20);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (!out) return NULL;
    char *o = PyBytes_AS_STRING(out);
    size_t used = 0;
    if (avail) {
        size_t take = avail < cap ? avail : cap;
        memcpy(o, in->data + in->start, take);
        in->start += take;
        used = take;
    }
    while (size < 0 || used < (size_t)size) {
        if (used == cap) {
            size_t ncap = cap * 2;
            if (size >= 0 && ncap > (size_t)size) ncap = (size_t)size;
            if (lw_bytes_resize(&out, (Py_ssize_t)ncap) < 0) return NULL;
            o = PyBytes_AS_STRING(out);
            cap = ncap;
        }
        Py_ssize_t n = lw_input_pull(in, o + used, cap - used);
        if (n < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (n == 0) break;
        used += (size_t)n;
    }
    if (used != cap && lw_bytes_resize(&out, (Py_ssize_t)used) < 0) return NULL;
    return out;
}

static int lw_size_arg(PyObject *arg, Py_ssize_t *size)
{
    *size = -1;
    if (!arg || arg == Py_None) return 0;
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "size must be an integer or None, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *size = PyLong_AsSsize_t(arg);
    if (*size == -1 && PyErr_Occurred()) return -1;
    if (*size < 0) *size = -1;
    return 0;
}

static PyObject *lw_input_read(lw_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "read() takes at most 1 argument");
        return NULL;
    }
    Py_ssize_t size;
    if (lw_size_arg(nargs ? args[0] : NULL, &size) < 0) return NULL;
    return lw_input_read_impl(in, size);
}

/* One line including its b"\n", at most `limit` bytes (-1: no limit). */
static PyObject *lw_input_readline_impl(lw_input *in, Py_ssize_t limit)
{
    if (lw_input_check(in) < 0) return NULL;
    /* Not even a refill: on a streamed body that would wait for the client for nothing. */
    if (limit == 0) return PyBytes_FromStringAndSize("", 0);
    PyObject *acc = NULL; /* only when a line spans refills */
    for (;;) {
        Py_ssize_t avail = lw_input_fill(in);
        if (avail < 0) {
            Py_XDECREF(acc);
            return NULL;
        }
        if (avail == 0) break;
        Py_ssize_t have = acc ? PyBytes_GET_SIZE(acc) : 0;
        size_t want = (size_t)avail;
        if (limit >= 0 && (size_t)(limit - have) < want) want = (size_t)(limit - have);
        const char *p = in->data + in->start;
        const char *nl = memchr(p, '\n', want);
        size_t take = nl ? (size_t)(nl - p) + 1 : want;
        PyObject *piece = PyBytes_FromStringAndSize(p, (Py_ssize_t)take);
        if (!piece) {
            Py_XDECREF(acc);
            return NULL;
        }
        in->start += take;
        if (acc) {
            PyBytes_ConcatAndDel(&acc, piece);
            if (!acc) return NULL;
        } else {
            acc = piece;
        }
        if (nl || (limit >= 0 && PyBytes_GET_SIZE(acc) >= limit)) break;
    }
    return acc ? acc : PyBytes_FromStringAndSize("", 0);
}

static PyObject *lw_input_readline(lw_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "readline() takes at most 1 argument");
        return NULL;
    }
    Py_ssize_t size;
    if (lw_size_arg(nargs ? args[0] : NULL, &size) < 0) return NULL;
    return lw_input_readline_impl(in, size);
}

static PyObject *lw_input_readlines(lw_input *in, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "readlines() takes at most 1 argument");
        return NULL;
    }
    Py_ssize_t hint;
    if (lw_size_arg(nargs ? args[0] : NULL, &hint) < 0) return NULL;
    PyObject *lines = PyList_New(0);
    if (!lines) return NULL;
    Py_ssize_t total = 0;
    for (;;) {
        PyObject *line = lw_input_readline_impl(in, -1);
        if (!line) {
            Py_DECREF(lines);
            return NULL;
        }
        Py_ssize_t n = PyBytes_GET_SIZE(line);
        if (n == 0) {
            Py_DECREF(line);
            break;
        }
        int r = PyList_Append(lines, line);
        Py_DECREF(line);
        if (r < 0) {
            Py_DECREF(lines);
            return NULL;
        }
        total += n;
        if (hint > 0 && total >= hint) break;
    }
    return lines;
}

static PyObject *lw_input_iternext(lw_input *in)
{
    PyObject *line = lw_input_readline_impl(in, -1);
    if (line && PyBytes_GET_SIZE(line) == 0) {
        Py_DECREF(line);
        return NULL; /* StopIteration */
    }
    return line;
}

static PyMethodDef lw_input_methods[] = {
    {"read", (PyCFunction)(void (*)(void))lw_input_read, METH_FASTCALL,
     "read(size=-1) -> bytes: up to size bytes, all remaining when size is -1/None, b'' at the "
     "end."},
    {"readline", (PyCFunction)(void (*)(void))lw_input_readline, METH_FASTCALL,
     "readline(size=-1) -> bytes: one line including b'\\n', at most size bytes."},
    {"readlines", (PyCFunction)(void (*)(void))lw_input_readlines, METH_FASTCALL,
     "readlines(hint=-1) -> list of lines, stopping once hint bytes were read."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject lw_InputType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.Input",
    .tp_basicsize = sizeof(lw_input),
    .tp_dealloc = (destructor)lw_input_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.input: the request body as a read-only binary stream.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)lw_input_iternext,
    .tp_methods = lw_input_methods,
};
