/* The WSGI response pump: wsgi_call() runs app(environ, start_response); wsgi_iter_next() pulls
 * one chunk per call and hands it to the host. Owns the rules that span both: the head is
 * committed at the first non-empty chunk, Content-Length is enforced, failures become a 500 before
 * the head and a cut after it, and close() is called exactly once on every path.
 *
 * Callbacks always run with the GIL released. wsgi_iter_next() holds the GIL once per call: it
 * decides what to deliver under the GIL, then releases it and calls the host. */
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The response sent for an app failure before anything was sent (also used by ASGI). */
extern const char lw_500_body[];
extern const wsgi_response_head lw_500_head;
const char lw_500_body[] = "Internal Server Error\n";
static const wsgi_header lw_500_headers[] = {
    {"Content-Type", 12, "text/plain; charset=utf-8", 25},
    {"Content-Length", 14, "22", 2},
};
const wsgi_response_head lw_500_head = {500, "500 Internal Server Error", 25, lw_500_headers,
                                        2,   sizeof lw_500_body - 1,      0};

void lw_response_fail(wsgi_response *resp, int code, const char *fmt, ...)
{
    if (resp->error) return;
    resp->error = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(resp->errmsg, sizeof resp->errmsg, fmt, ap);
    va_end(ap);
    lw_log(code == WSGI_ERR_CALLBACK ? WSGI_LOG_INFO : WSGI_LOG_ERROR, "%s", resp->errmsg);
}

/* Record an app failure from the current Python exception (logged with its traceback). */
static void lw_response_fail_exc(wsgi_response *resp, int code, const char *what)
{
    if (resp->error) {
        lw_log_exception(what, NULL, 0);
        return;
    }
    resp->error = code;
    resp->exc = code == WSGI_ERR_APP;
    lw_log_exception(what, resp->errmsg, sizeof resp->errmsg);
}

/* Call the iterable's close() once (GIL held). Exact lists and tuples have none. */
static void lw_close_locked(wsgi_response *resp)
{
    if (resp->closed) return;
    resp->closed = 1;
    if (!resp->result || resp->mode == LW_MODE_SEQ) return;
    PyObject *close;
    int has = lw_getattr_opt(resp->result, lw_rt->s.close, &close);
    if (has <= 0) {
        if (has < 0) lw_log_exception("looking up the iterable's close()", NULL, 0);
        return;
    }
    PyObject *r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (r)
        Py_DECREF(r);
    else
        lw_response_fail_exc(resp, WSGI_ERR_APP, "the iterable's close() raised");
}

/* Point a head's fields at the validated status/headers (str objects the response holds, so the
 * pointers stay valid without the GIL). `hs` must have room for every header. */
static void lw_fill_head(wsgi_response *resp, wsgi_response_head *head, wsgi_header *hs)
{
    Py_ssize_t n = PyTuple_GET_SIZE(resp->headers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(resp->headers, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        hs[i].name = (const char *)PyUnicode_DATA(name);
        hs[i].name_len = (size_t)PyUnicode_GET_LENGTH(name);
        hs[i].value = (const char *)PyUnicode_DATA(value);
        hs[i].value_len = (size_t)PyUnicode_GET_LENGTH(value);
    }
    head->status = resp->status_code;
    head->status_line = (const char *)PyUnicode_DATA(resp->status);
    head->status_line_len = (size_t)PyUnicode_GET_LENGTH(resp->status);
    head->headers = hs;
    head->n_headers = (size_t)n;
    head->content_length = resp->content_length;
    head->flags = 0;
}

/* Headers storage: on the stack for ordinary responses. */
#define LW_STACK_HEADERS 32
typedef struct lw_headbuf {
    wsgi_response_head head;
    wsgi_header stack[LW_STACK_HEADERS];
    wsgi_header *heap;
    int pending; /* prepared here, on_start still to call */
} lw_headbuf;

static int lw_headbuf_fill(wsgi_response *resp, lw_headbuf *b)
{
    Py_ssize_t n = PyTuple_GET_SIZE(resp->headers);
    b->heap = NULL;
    wsgi_header *hs = b->stack;
    if (n > LW_STACK_HEADERS) {
        /* malloc, not PyMem: it is freed after the GIL was released */
        if (!(b->heap = malloc((size_t)n * sizeof *hs))) return -1;
        hs = b->heap;
    }
    lw_fill_head(resp, &b->head, hs);
    return 0;
}

static int lw_cb_start(wsgi_response *resp, const wsgi_response_head *head)
{
    resp->status_sent = head->status;
    resp->in_cb++;
    int r = resp->h.on_start(resp->ud, head);
    resp->in_cb--;
    return r < 0 || resp->free_pending ? -1 : 0;
}

/* GIL held: if the head is not committed yet, point b at it and mark it committed; the caller
 * calls lw_head_deliver() once it has released the GIL. -1 when out of memory. */
static int lw_head_prepare(wsgi_response *resp, lw_headbuf *b)
{
    b->pending = !resp->started;
    b->heap = NULL;
    if (b->pending && lw_headbuf_fill(resp, b) < 0) return -1;
    resp->started = 1;
    return 0;
}

/* GIL released: on_start for a prepared head. 0, or -1 if the host refused it. */
static int lw_head_deliver(wsgi_response *resp, lw_headbuf *b)
{
    if (!b->pending) return 0;
    int r = lw_cb_start(resp, &b->head);
    free(b->heap);
    b->pending = 0;
    return r;
}

static int lw_cb_body(wsgi_response *resp, const char *p, size_t n)
{
    resp->bytes_out += n;
    resp->in_cb++;
    int r = resp->h.on_body(resp->ud, p, n);
    resp->in_cb--;
    return r < 0 || resp->free_pending ? -1 : 0;
}

static int lw_cb_sendfile(wsgi_response *resp, int fd, int64_t off, int64_t count)
{
    resp->bytes_out += (uint64_t)count;
    resp->in_cb++;
    int r = resp->h.on_sendfile(resp->ud, fd, off, count);
    resp->in_cb--;
    return r < 0 || resp->free_pending ? -1 : 0;
}

/* How much of an n-byte chunk Content-Length still allows. */
static size_t lw_allowed(wsgi_response *resp, size_t n)
{
    if (resp->content_length < 0) return n;
    int64_t left = resp->content_length - resp->sent;
    if ((int64_t)n > left) {
        lw_log(WSGI_LOG_WARNING, "response body longer than its Content-Length %lld: truncated",
               (long long)resp->content_length);
        return left > 0 ? (size_t)left : 0;
    }
    return n;
}

/* At the end of the body: fewer bytes than the declared Content-Length is a broken response the
 * host must cut, except where HTTP has no body at all (HEAD, 1xx, 204, 304: the Content-Length
 * then describes the entity, which is what frameworks send). Returns 1 if it recorded a failure. */
static int lw_check_short_body(wsgi_response *resp)
{
    int code = resp->status_code;
    if (resp->content_length < 0 || resp->sent >= resp->content_length || resp->head_request ||
        code < 200 || code == 204 || code == 304)
        return 0;
    lw_response_fail(resp, WSGI_ERR_APP,
                     "response body shorter than its Content-Length (%lld of %lld bytes)",
                     (long long)resp->sent, (long long)resp->content_length);
    return 1;
}

/* Keep a delivered chunk alive (steals it). Within one libwsgi call the previous chunk stays too,
 * so a host that queued its pointer can still copy it when the next on_body arrives (write()
 * may deliver several chunks in one call); both go at the next call. GIL held. */
static void lw_hold(wsgi_response *resp, PyObject *chunk)
{
    Py_XSETREF(resp->held[1], resp->held[0]);
    resp->held[0] = chunk;
}

static void lw_release_held(wsgi_response *resp)
{
    Py_CLEAR(resp->held[0]);
    Py_CLEAR(resp->held[1]);
}

static int lw_cl_reached(const wsgi_response *resp)
{
    return resp->content_length >= 0 && resp->sent >= resp->content_length;
}

int lw_response_commit(wsgi_response *resp)
{
    lw_headbuf b;
    if (lw_head_prepare(resp, &b) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    PyThreadState *save = PyEval_SaveThread();
    int r = lw_head_deliver(resp, &b);
    PyEval_RestoreThread(save);
    if (r < 0) {
        lw_response_fail(resp, WSGI_ERR_CALLBACK, "host on_start failed: response cut");
        return -1;
    }
    return 0;
}

int lw_response_deliver_locked(wsgi_response *resp, PyObject *bytes)
{
    size_t n = lw_allowed(resp, (size_t)PyBytes_GET_SIZE(bytes));
    if (n == 0) return 0;
    lw_hold(resp, Py_NewRef(bytes));
    resp->sent += (int64_t)n;
    PyThreadState *save = PyEval_SaveThread();
    int r = lw_cb_body(resp, PyBytes_AS_STRING(bytes), n);
    PyEval_RestoreThread(save);
    if (r < 0) {
        lw_response_fail(resp, WSGI_ERR_CALLBACK, "host on_body failed: response cut");
        return -1;
    }
    return 0;
}

/* A wsgi.file_wrapper over a regular file becomes a sendfile request. Returns 1 if it does. */
static int lw_sendfile_prepare(wsgi_response *resp)
{
    lw_file_wrapper *fw = (lw_file_wrapper *)resp->result;
    if (!fw->filelike) return 0;
    PyObject *r = PyObject_CallMethodNoArgs(fw->filelike, lw_rt->s.fileno);
    long fd = r && PyLong_Check(r) ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    PyErr_Clear(); /* no fileno(): not a real file, iterate instead */
    struct stat st;
    if (fd < 0 || fd > INT32_MAX || fstat((int)fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    /* The logical position (a buffered file may have read ahead of the OS offset). */
    int64_t off = -1;
    r = PyObject_CallMethodNoArgs(fw->filelike, lw_rt->s.tell);
    if (r && PyLong_Check(r)) off = PyLong_AsLongLong(r);
    Py_XDECREF(r);
    PyErr_Clear();
    if (off < 0) off = lseek((int)fd, 0, SEEK_CUR);
    if (off < 0) return 0;
    resp->sf_fd = (int)fd;
    resp->sf_offset = off;
    resp->sf_count = st.st_size > off ? st.st_size - off : 0;
    return 1;
}

/* The memory of a response drained last (lw_responses_drain), for the next one: saves a free and
 * a malloc per request. Taken and given back atomically: wsgi_call allocates before it has the
 * GIL. */
static _Atomic(wsgi_response *) lw_spare;

/* A zeroed response (errmsg only terminated: it is most of the struct). */
static wsgi_response *lw_resp_alloc(void)
{
    wsgi_response *resp = atomic_exchange_explicit(&lw_spare, NULL, memory_order_acquire);
    if (!resp && !(resp = malloc(sizeof *resp))) return NULL;
    memset(resp, 0, offsetof(wsgi_response, errmsg));
    resp->errmsg[0] = '\0';
    return resp;
}

/* Free a response's memory, or keep it as the spare. */
static void lw_resp_dispose(wsgi_response *resp)
{
    wsgi_response *none = NULL;
    if (!atomic_compare_exchange_strong_explicit(&lw_spare, &none, resp, memory_order_release,
                                                 memory_order_relaxed))
        free(resp);
}

void lw_responses_free_spare(void)
{
    free(atomic_exchange_explicit(&lw_spare, NULL, memory_order_acquire));
}

/* Release the GIL taken for resp, first noting whether its wsgi.input can still reach the host
 * (read under the GIL, so that wsgi_response_free() can decide without it). */
static void lw_resp_release(wsgi_response *resp, lw_gil *g)
{
    resp->input_idle = (unsigned)lw_input_idle(resp->input);
    lw_gil_release(g);
}

/* A list or tuple of bytes is the whole body, known before the head is sent: when the app gave no
 * Content-Length, add one (PEP 3333, "Handling the Content-Length Header": "if the iterable has
 * len() of 1, the server can automatically determine content length"; all items bytes is the
 * same case). The host can then frame the body by length: an HTTP/1.0 keep-alive client keeps
 * its connection, an HTTP/1.1 one gets no chunked framing. Not for a status without a body
 * (1xx, 204, 304; 205 has no content either, RFC 9110 15.3.6), an empty body (a HEAD answered
 * with no items must not claim 0), a head already sent by write(), or an app that set
 * Transfer-Encoding itself. GIL held. */
static void lw_seq_add_length(wsgi_response *resp, PyObject *seq, Py_ssize_t n)
{
    int code = resp->status_code;
    if (resp->started || resp->content_length >= 0 || code < 200 || code == 204 || code == 205 ||
        code == 304)
        return;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *c = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(c)) return; /* reported when it is reached */
        total += PyBytes_GET_SIZE(c);
    }
    if (total == 0) return;
    Py_ssize_t nh = PyTuple_GET_SIZE(resp->headers);
    for (Py_ssize_t i = 0; i < nh; i++) {
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(resp->headers, i), 0);
        if (PyUnicode_GET_LENGTH(name) == 17 && PyUnicode_KIND(name) == PyUnicode_1BYTE_KIND &&
            strncasecmp((const char *)PyUnicode_DATA(name), "Transfer-Encoding", 17) == 0)
            return;
    }
    /* The same lengths come back (the same page, request after request): keep the last item. */
    lw_env_cache *ec = &lw_rt->ec;
    PyObject *item = NULL;
    if (ec->cl_item && ec->cl_item_n == total) {
        item = Py_NewRef(ec->cl_item);
    } else {
        char digits[24];
        int nd = snprintf(digits, sizeof digits, "%lld", (long long)total);
        PyObject *value = PyUnicode_FromStringAndSize(digits, nd);
        item = value ? PyTuple_Pack(2, lw_rt->s.Content_Length, value) : NULL;
        Py_XDECREF(value);
        if (item) {
            Py_XSETREF(ec->cl_item, Py_NewRef(item));
            ec->cl_item_n = total;
        }
    }
    PyObject *headers = item ? PyTuple_New(nh + 1) : NULL;
    if (!headers) {
        Py_XDECREF(item);
        PyErr_Clear(); /* out of memory: the body goes out without a length, as before */
        return;
    }
    for (Py_ssize_t i = 0; i < nh; i++)
        PyTuple_SET_ITEM(headers, i, Py_NewRef(PyTuple_GET_ITEM(resp->headers, i)));
    PyTuple_SET_ITEM(headers, nh, item);
    Py_SETREF(resp->headers, headers);
    resp->content_length = total;
}

/* GIL held, in wsgi_call: take the first item of an exact list/tuple now, so that the first
 * wsgi_iter_next() delivers it without taking the GIL, and a one-item body (the usual
 * `return [body]`) needs no GIL after wsgi_call() at all. Only when nothing about it can fail or
 * be logged later than it would have been: bytes, not empty, start_response called, within
 * Content-Length, and if it is the last item, not shorter than Content-Length. */
static void lw_seq_prefetch(wsgi_response *resp)
{
    PyObject *seq = resp->result;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0 || !resp->status || resp->error || resp->done) return;
    lw_seq_add_length(resp, seq, n);
    PyObject *chunk = PySequence_Fast_GET_ITEM(seq, 0);
    if (!PyBytes_Check(chunk)) return;
    size_t len = (size_t)PyBytes_GET_SIZE(chunk);
    int64_t cl = resp->content_length, after = resp->sent + (int64_t)len;
    if (len == 0 || (cl >= 0 && after > cl)) return;
    int last = n == 1 || (cl >= 0 && after == cl);
    int code = resp->status_code;
    if (last && cl >= 0 && after < cl && !resp->head_request && code >= 200 && code != 204 &&
        code != 304)
        return; /* short body: reported where it always is */
    lw_hold(resp, Py_NewRef(chunk));
    resp->seq_idx = 1;
    resp->sent = after;
    resp->pre = 1;
    resp->pre_len = len;
    resp->pre_last = last;
    resp->head_locked = 1;
    if (last) resp->closed = 1; /* an exact list/tuple has no close() */
}

LIBWSGI_API int wsgi_call(wsgi_env *env, const wsgi_response_handler *handler, void *user_data,
                          wsgi_response **out)
{
    lw_clear_error();
    if (out) *out = NULL;
    if (!env) return lw_fail(WSGI_ERR_INVAL, "env is NULL");
    if (!out || !handler || !handler->on_start || !handler->on_body ||
        handler->struct_size < offsetof(wsgi_response_handler, on_body) + sizeof(void *)) {
        wsgi_env_free(env);
        return lw_fail(WSGI_ERR_INVAL, "out or handler is NULL, or on_start/on_body missing");
    }
    wsgi_response *resp = lw_resp_alloc();
    if (!resp) {
        wsgi_env_free(env);
        return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    memcpy(&resp->h, handler,
           handler->struct_size < sizeof resp->h ? handler->struct_size : sizeof resp->h);
    resp->h.struct_size = sizeof resp->h;
    resp->ud = user_data;
    resp->content_length = -1;
    resp->sf_fd = -1;
    if (LW_UNLIKELY(env->app->rt->observing)) {
        resp->observe = 1;
        lw_obs_begin(&resp->obs_t, NULL, env->req.arrival_ns);
    }

    lw_gil g;
    int rc = lw_gil_acquire(&g);
    if (rc) {
        free(resp);
        wsgi_env_free(env);
        return lw_fail(rc, "no Python thread state");
    }
    lw_responses_drain();
    wsgi_app *app = env->app;
    resp->app = app;
    resp->head_request = env->head_request;
    int built = lw_env_materialize(env, &resp->environ, &resp->input);
    wsgi_env_free(env);
    if (built < 0) {
        char msg[512];
        lw_log_exception("building environ", msg, sizeof msg);
        lw_resp_release(resp, &g);
        free(resp);
        return lw_fail(WSGI_ERR_NOMEM, "%s", msg);
    }
    resp->sr = lw_start_response_new(resp);
    if (!resp->sr) {
        lw_response_fail_exc(resp, WSGI_ERR_NOMEM, "creating start_response");
        goto done;
    }
    PyObject *args[2] = {resp->environ, (PyObject *)resp->sr};
    PyObject *result = PyObject_Vectorcall(app->callable, args, 2, NULL);
    if (!result) {
        lw_response_fail_exc(resp, resp->pending_err ? resp->pending_err : WSGI_ERR_APP,
                             "application raised");
        goto done;
    }
    resp->result = result;
    if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
        resp->mode = LW_MODE_SEQ;
        lw_seq_prefetch(resp);
    } else if (Py_IS_TYPE(result, &lw_FileWrapperType) && resp->h.on_sendfile &&
               lw_sendfile_prepare(resp)) {
        resp->mode = LW_MODE_SENDFILE;
    } else if (!(resp->iter = PyObject_GetIter(result))) {
        lw_response_fail_exc(resp, WSGI_ERR_BAD_ITERABLE, "application returned a non-iterable");
    }
    if (resp->error) lw_close_locked(resp); /* e.g. write() failed but the app returned anyway */
done:
    lw_resp_release(resp, &g);
    *out = resp;
    return 0;
}

/* Deliver the synthesized 500 (no GIL needed) or report the cut. */
static int lw_finish_failed(wsgi_response *resp)
{
    resp->done = 1;
    if (resp->started) return resp->final_rc = resp->error;
    resp->started = 1;
    if (lw_cb_start(resp, &lw_500_head) < 0 ||
        lw_cb_body(resp, lw_500_body, sizeof lw_500_body - 1) < 0)
        return resp->final_rc = WSGI_ERR_CALLBACK;
    return resp->final_rc = 0;
}

static void lw_response_destroy(wsgi_response *resp);

/* Every exit of wsgi_iter_next goes through here: a free requested from a callback happens now. */
static int lw_iter_return(wsgi_response *resp, int rc)
{
    if (resp->free_pending) {
        lw_response_destroy(resp);
        return WSGI_ERR_CALLBACK;
    }
    return rc;
}

/* The host callback failed after we released the GIL: close the iterable and report the cut. */
static int lw_callback_failed(wsgi_response *resp, const char *which)
{
    lw_gil g;
    if (lw_gil_acquire(&g) == 0) {
        lw_response_fail(resp, WSGI_ERR_CALLBACK, "host %s failed: response cut", which);
        lw_close_locked(resp);
        lw_resp_release(resp, &g);
    }
    resp->done = 1;
    resp->final_rc = WSGI_ERR_CALLBACK;
    return lw_iter_return(resp, WSGI_ERR_CALLBACK);
}

/* The iterable is exhausted (GIL held): commit an empty-bodied head if needed and close. */
static int lw_iter_end_locked(wsgi_response *resp, lw_gil *g)
{
    if (!resp->status) {
        lw_response_fail(resp, WSGI_ERR_NO_START_RESPONSE,
                         "application returned without calling start_response");
        lw_close_locked(resp);
        lw_resp_release(resp, g);
        return lw_iter_return(resp, lw_finish_failed(resp));
    }
    lw_close_locked(resp);
    int short_body = lw_check_short_body(resp);
    lw_headbuf b;
    int oom = lw_head_prepare(resp, &b) < 0;
    lw_resp_release(resp, g);
    resp->done = 1;
    resp->final_rc = short_body ? WSGI_ERR_APP : 0;
    if (oom) return lw_callback_failed(resp, "head allocation");
    if (lw_head_deliver(resp, &b) < 0) return lw_callback_failed(resp, "on_start");
    return lw_iter_return(resp, resp->final_rc);
}

/* wsgi_iter_next for a prefetched chunk: no GIL. The head's fields point into str objects the
 * response owns and nobody may change any more (head_locked). */
static int lw_deliver_prefetched(wsgi_response *resp)
{
    resp->pre = 0;
    lw_headbuf b;
    b.pending = !resp->started;
    b.heap = NULL;
    if (b.pending && lw_headbuf_fill(resp, &b) < 0)
        return lw_callback_failed(resp, "head allocation");
    resp->started = 1;
    if (lw_head_deliver(resp, &b) < 0) return lw_callback_failed(resp, "on_start");
    if (lw_cb_body(resp, PyBytes_AS_STRING(resp->held[0]), resp->pre_len) < 0)
        return lw_callback_failed(resp, "on_body");
    if (resp->pre_last) {
        resp->done = 1;
        resp->final_rc = 0;
        return lw_iter_return(resp, 0);
    }
    return lw_iter_return(resp, 1);
}

LIBWSGI_API int wsgi_iter_next(wsgi_response *resp)
{
    if (!resp) return lw_fail(WSGI_ERR_INVAL, "response is NULL");
    if (resp->in_cb) return WSGI_ERR_RECURSIVE;
    if (resp->done) return resp->final_rc;
    if (resp->pre) return lw_deliver_prefetched(resp);
    if (resp->error) return lw_iter_return(resp, lw_finish_failed(resp));

    lw_gil g;
    if (lw_gil_acquire(&g) != 0) return WSGI_ERR_PYTHON;
    lw_responses_drain();
    lw_release_held(resp);

    if (lw_cl_reached(resp) && resp->started) return lw_iter_end_locked(resp, &g);

    if (resp->mode == LW_MODE_SENDFILE) {
        if (resp->sf_sent) return lw_iter_end_locked(resp, &g);
        if (!resp->status) return lw_iter_end_locked(resp, &g); /* no start_response */
        int64_t count = resp->sf_count;
        if (resp->content_length >= 0 && count > resp->content_length - resp->sent)
            count = resp->content_length - resp->sent;
        lw_headbuf b;
        if (lw_head_prepare(resp, &b) < 0) {
            lw_resp_release(resp, &g);
            return lw_callback_failed(resp, "head allocation");
        }
        resp->sf_sent = 1;
        resp->sent += count;
        lw_resp_release(resp, &g);
        if (lw_head_deliver(resp, &b) < 0) return lw_callback_failed(resp, "on_start");
        if (count > 0 && lw_cb_sendfile(resp, resp->sf_fd, resp->sf_offset, count) < 0)
            return lw_callback_failed(resp, "on_sendfile");
        return lw_iter_return(resp, 1);
    }

    PyObject *chunk;
    if (resp->mode == LW_MODE_SEQ) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(resp->result);
        if (resp->seq_idx >= n) return lw_iter_end_locked(resp, &g);
        chunk = Py_NewRef(PySequence_Fast_GET_ITEM(resp->result, resp->seq_idx));
        resp->seq_idx++;
    } else {
        chunk = PyIter_Next(resp->iter);
        if (!chunk) {
            if (!PyErr_Occurred()) return lw_iter_end_locked(resp, &g);
            lw_response_fail_exc(resp, WSGI_ERR_APP, "application raised while iterating");
            goto failed;
        }
    }
    if (!PyBytes_Check(chunk)) {
        lw_response_fail(resp, WSGI_ERR_BAD_CHUNK,
                         "application yielded %.100s, not bytes (PEP 3333 requires bytes)",
                         Py_TYPE(chunk)->tp_name);
        Py_DECREF(chunk);
        goto failed;
    }
    if (resp->error) { /* write() inside a generator failed, or its callback did */
        Py_DECREF(chunk);
        goto failed;
    }
    size_t len = (size_t)PyBytes_GET_SIZE(chunk);
    if (len == 0) { /* skipped; the head is not committed by an empty chunk */
        Py_DECREF(chunk);
        lw_resp_release(resp, &g);
        return lw_iter_return(resp, 1);
    }
    if (!resp->status) {
        Py_DECREF(chunk);
        lw_response_fail(resp, WSGI_ERR_NO_START_RESPONSE,
                         "application yielded data before calling start_response");
        goto failed;
    }
    len = lw_allowed(resp, len);
    lw_hold(resp, chunk); /* write() inside a generator may have delivered some already */
    lw_headbuf b;
    if (lw_head_prepare(resp, &b) < 0) {
        lw_resp_release(resp, &g);
        return lw_callback_failed(resp, "head allocation");
    }
    resp->sent += (int64_t)len;
    /* A fully delivered exact list needs no further call: it has no close() to run. */
    int last = resp->mode == LW_MODE_SEQ &&
               (resp->seq_idx >= PySequence_Fast_GET_SIZE(resp->result) || lw_cl_reached(resp));
    if (last) {
        resp->closed = 1;
        lw_check_short_body(resp);
    }
    lw_resp_release(resp, &g);
    if (lw_head_deliver(resp, &b) < 0) return lw_callback_failed(resp, "on_start");
    if (len > 0 && lw_cb_body(resp, PyBytes_AS_STRING(chunk), len) < 0)
        return lw_callback_failed(resp, "on_body");
    if (last) {
        resp->done = 1;
        resp->final_rc = resp->error ? resp->error : 0;
        return lw_iter_return(resp, resp->final_rc);
    }
    return lw_iter_return(resp, 1);

failed:
    lw_close_locked(resp);
    lw_resp_release(resp, &g);
    return lw_iter_return(resp, lw_finish_failed(resp));
}

LIBWSGI_API int wsgi_response_error(const wsgi_response *resp)
{
    return resp ? resp->error : WSGI_ERR_INVAL;
}

LIBWSGI_API const char *wsgi_response_errmsg(const wsgi_response *resp)
{
    return resp ? resp->errmsg : "";
}

LIBWSGI_API int wsgi_response_started(const wsgi_response *resp)
{
    return resp ? resp->started : 0;
}

/* Close the iterable if needed and drop every Python object of the response; GIL held. */
static void lw_response_clear_locked(wsgi_response *resp)
{
    if (!resp->closed && resp->result)
        lw_log(WSGI_LOG_DEBUG, "response freed before its end: closing the iterable");
    lw_close_locked(resp);
    lw_start_response_detach(resp->sr);
    lw_input_detach(resp->input);
    lw_release_held(resp);
    Py_CLEAR(resp->iter);
    Py_CLEAR(resp->result);
    Py_CLEAR(resp->status);
    Py_CLEAR(resp->headers);
    Py_CLEAR(resp->environ);
    /* Last: the environ may have held the app's references to these. */
    lw_input_release(resp->input);
    resp->input = NULL;
    lw_start_response_release(resp->sr);
    resp->sr = NULL;
}

static void lw_response_destroy(wsgi_response *resp)
{
    lw_gil g;
    if (lw_gil_acquire(&g) == 0) {
        lw_responses_drain();
        lw_response_clear_locked(resp);
        lw_gil_release(&g);
    }
    lw_resp_dispose(resp);
}

/* Responses freed without the GIL, whose Python objects are released by the next libwsgi call
 * that takes the GIL anyway (wsgi_call, a wsgi_iter_next that needs Python, wsgi_app_free,
 * wsgi_runtime_free). A lock-free stack: pushed by any thread, taken whole by the drain. Bounded:
 * a free that finds LW_DEFER_MAX waiting takes the GIL and releases them all. */
#define LW_DEFER_MAX 64
static _Atomic(wsgi_response *) lw_deferred;
static atomic_int lw_deferred_n;

void lw_responses_drain(void)
{
    if (!atomic_load_explicit(&lw_deferred, memory_order_relaxed)) return;
    wsgi_response *r = atomic_exchange_explicit(&lw_deferred, NULL, memory_order_acquire);
    while (r) {
        wsgi_response *next = r->deferred_next;
        atomic_fetch_sub_explicit(&lw_deferred_n, 1, memory_order_relaxed);
        lw_response_clear_locked(r); /* may run Python code (__del__), and so other threads */
        lw_resp_dispose(r);
        r = next;
    }
}

/* Whether freeing resp needs Python only to drop references: the iterable is closed (or there
 * is none), and wsgi.input can no longer reach the host's body, which may be gone once this
 * returns. Then the references can wait for the next GIL holder. */
static int lw_deferrable(const wsgi_response *resp)
{
    return resp->done && (resp->closed || !resp->result) && resp->input_idle && lw_rt;
}

/* The request is over for the host: tell the observer, once. No GIL held. */
static void lw_response_observe(wsgi_response *resp)
{
    resp->observed = 1;
    int complete = resp->done || (resp->started && resp->content_length >= 0 &&
                                  resp->sent >= resp->content_length && !resp->error);
    wsgi_request_outcome o = {
        .user_data = resp->ud,
        .interface = WSGI_INTERFACE_WSGI,
        .status = resp->status_sent,
        .outcome = lw_outcome_class(resp->error, resp->exc, complete),
        .error = resp->error,
        .errmsg = resp->errmsg,
        .bytes_in = lw_input_received(resp->input),
        .bytes_out = resp->bytes_out,
    };
    lw_obs_report(resp->app->rt, &o, &resp->obs_t);
}

LIBWSGI_API void wsgi_response_free(wsgi_response *resp)
{
    if (!resp) return;
    if (LW_UNLIKELY(resp->observe) && !resp->observed) lw_response_observe(resp);
    if (resp->in_cb) {
        resp->free_pending = 1; /* finished by the libwsgi call that is running the callback */
        return;
    }
    int defer = lw_deferrable(resp);
    if (defer &&
        atomic_fetch_add_explicit(&lw_deferred_n, 1, memory_order_relaxed) < LW_DEFER_MAX) {
        wsgi_response *head = atomic_load_explicit(&lw_deferred, memory_order_relaxed);
        do {
            resp->deferred_next = head;
        } while (!atomic_compare_exchange_weak_explicit(
            &lw_deferred, &head, resp, memory_order_release, memory_order_relaxed));
        return;
    }
    if (defer) atomic_fetch_sub_explicit(&lw_deferred_n, 1, memory_order_relaxed);
    lw_response_destroy(resp); /* takes the GIL: releases the waiting ones too */
}
