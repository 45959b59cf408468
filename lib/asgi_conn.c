/* One ASGI HTTP connection: the receive() and send() callables, the request-body queue fed by the
 * host, response-event validation and ordering, backpressure in both directions, and what happens
 * when the app's task ends (500 before the head, a cut after it).
 *
 * The connection is a Python object; the host's asgi_conn* is one strong reference to it, and the
 * app's receive/send/done callbacks hold others, so a host free while the app still runs only
 * detaches the host. Callbacks run with the GIL released, on the loop thread. */
#include "asgi_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* asgi_conn_errmsg()'s buffer. */
#define LW_AC_ERRMSG_MAX 512

/* Unread request body above which asgi_conn_feed() asks the host to stop reading. */
#define LW_ASGI_BODY_LIMIT (256 * 1024)

extern const char lw_500_body[];
extern const wsgi_response_head lw_500_head;
int lw_check_request(const wsgi_request *req);

/* ---- a ready awaitable: `await` returns its value without a Future or a loop turn ---------- */
typedef struct lw_ready {
    PyObject_HEAD PyObject *value;
} lw_ready;

static PyObject *lw_ready_none; /* shared: an awaitable that returns None holds no state */

void lw_ac_cache_clear(void)
{
    Py_CLEAR(lw_ready_none);
}

PyObject *lw_ready_new(PyObject *value) /* steals value */
{
    if (!value && lw_ready_none) return Py_NewRef(lw_ready_none);
    lw_ready *r = PyObject_New(lw_ready, &lw_ReadyType);
    if (!r) {
        Py_XDECREF(value);
        return NULL;
    }
    r->value = value;
    if (!value) lw_ready_none = Py_NewRef(r);
    return (PyObject *)r;
}

static void lw_ready_dealloc(lw_ready *r)
{
    Py_XDECREF(r->value);
    PyObject_Free(r);
}

static PySendResult lw_ready_send(lw_ready *r, PyObject *arg, PyObject **result)
{
    (void)arg;
    *result = Py_NewRef(r->value ? r->value : Py_None);
    return PYGEN_RETURN;
}

static PyObject *lw_ready_iternext(lw_ready *r)
{
    if (!r->value || r->value == Py_None) return NULL;
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, r->value);
    if (stop) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

static PyAsyncMethods lw_ready_async = {
    .am_await = PyObject_SelfIter,
    .am_send = (sendfunc)lw_ready_send,
};

PyTypeObject lw_ReadyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.Ready",
    .tp_basicsize = sizeof(lw_ready),
    .tp_dealloc = (destructor)lw_ready_dealloc,
    .tp_as_async = &lw_ready_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An already-completed awaitable returned by receive()/send().",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)lw_ready_iternext,
};

/* ---- helpers -------------------------------------------------------------------------------- */

void lw_ac_observe_done(lw_asgi_conn *c, int gil, int ended)
{
    lw_ac_obs *ob = c->obs;
    if (!ob || ob->observed || !c->attached) return;
    ob->observed = 1;
    wsgi_runtime *rt = c->app->rt;
    if (!rt->obs.on_request_done) return;
    int complete = ended && (c->kind == LW_AC_WS ? c->wstate != WS_CONNECTING || c->rstate == R_DONE
                                                 : c->rstate == R_DONE);
    wsgi_request_outcome o = {
        .user_data = c->ud,
        .interface = WSGI_INTERFACE_ASGI,
        .websocket = c->kind == LW_AC_WS,
        .status = ob->status_sent,
        .outcome = lw_outcome_class(c->error, ob->exc, complete),
        .error = c->error,
        .errmsg = c->errmsg,
        .bytes_in = ob->bytes_in,
        .bytes_out = c->sent > 0 ? (uint64_t)c->sent : 0,
    };
    PyThreadState *save = gil ? PyEval_SaveThread() : NULL;
    lw_obs_report(rt, &o, &ob->t);
    if (save) PyEval_RestoreThread(save);
}

void lw_ac_observe_ws(lw_asgi_conn *c, int open, int code, int gil)
{
    lw_ac_obs *ob = c->obs;
    if (!ob || !c->attached) return;
    wsgi_runtime *rt = c->app->rt;
    if (open) {
        if (ob->ws_open_seen) return;
        ob->ws_open_seen = 1;
        if (!rt->obs.on_websocket_open) return;
    } else {
        if (!ob->ws_open_seen || ob->ws_close_seen) return;
        ob->ws_close_seen = 1;
        if (!rt->obs.on_websocket_close) return;
    }
    PyThreadState *save = gil ? PyEval_SaveThread() : NULL;
    if (open)
        rt->obs.on_websocket_open(rt->obs_data, c->ud);
    else
        rt->obs.on_websocket_close(rt->obs_data, c->ud, code);
    if (save) PyEval_RestoreThread(save);
}

void lw_ac_fail(lw_asgi_conn *c, int code, const char *fmt, ...)
{
    if (c->error) return;
    c->error = code;
    va_list ap;
    va_start(ap, fmt);
    if (!c->errmsg && !(c->errmsg = malloc(LW_AC_ERRMSG_MAX))) {
        va_end(ap);
        return; /* the code is recorded; the message is lost */
    }
    vsnprintf(c->errmsg, LW_AC_ERRMSG_MAX, fmt, ap);
    va_end(ap);
}

int lw_streq(PyObject *a, PyObject *interned)
{
    if (a == interned) return 1;
    if (!PyUnicode_Check(a)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    int kind = PyUnicode_KIND(a);
    return n == PyUnicode_GET_LENGTH(interned) && kind == PyUnicode_KIND(interned) &&
           memcmp(PyUnicode_DATA(a), PyUnicode_DATA(interned), (size_t)n * (size_t)kind) == 0;
}

/* A waiter the app cancelled (wait_for timeout, task group) is done: forget it, so neither a later
 * receive()/send() is refused nor body bytes are handed to a future nobody awaits. */
void lw_drop_done(PyObject **waiter)
{
    if (!*waiter) return;
    PyObject *done = PyObject_CallMethod(*waiter, "done", NULL);
    int is_done = done ? PyObject_IsTrue(done) : 1;
    Py_XDECREF(done);
    PyErr_Clear();
    if (is_done) Py_CLEAR(*waiter);
}

/* Resolve a pending future unless the app cancelled it. Steals value. If that fails (no memory
 * for the call or for scheduling the awaiting task's wake-up), the future is cancelled instead:
 * the app then sees CancelledError and its request ends, rather than waiting for good on a future
 * nobody holds any more. */
void lw_future_set(PyObject *fut, PyObject *value, int is_exception)
{
    PyObject *done = PyObject_CallMethod(fut, "done", NULL);
    int is_done = done ? PyObject_IsTrue(done) : 0;
    Py_XDECREF(done);
    PyErr_Clear();
    if (is_done != 1) {
        PyObject *r =
            PyObject_CallMethod(fut, is_exception ? "set_exception" : "set_result", "O", value);
        if (!r) {
            lw_log_exception("resolving an ASGI future", NULL, 0);
            r = PyObject_CallMethod(fut, "cancel", NULL);
            if (!r) lw_log_exception("cancelling an ASGI future", NULL, 0);
        }
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_DECREF(value);
}

static PyObject *lw_ev_request(PyObject *body, int more) /* steals body */
{
    lw_asgi_strings *a = lw_rt->as;
    PyObject *ev = PyDict_New();
    if (!ev || PyDict_SetItem(ev, a->type, a->http_request) < 0 ||
        PyDict_SetItem(ev, a->body, body) < 0 ||
        PyDict_SetItem(ev, a->more_body, more ? Py_True : Py_False) < 0)
        Py_CLEAR(ev);
    Py_DECREF(body);
    return ev;
}

static PyObject *lw_ev_disconnect(void)
{
    PyObject *ev = PyDict_New();
    if (ev && PyDict_SetItem(ev, lw_rt->as->type, lw_rt->as->http_disconnect) < 0) Py_CLEAR(ev);
    return ev;
}

/* All queued body chunks as one bytes object. */
static PyObject *lw_ac_take_body(lw_asgi_conn *c)
{
    Py_ssize_t n = PyList_GET_SIZE(c->body);
    PyObject *out;
    if (n == 1) {
        out = Py_NewRef(PyList_GET_ITEM(c->body, 0));
    } else {
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c->buffered);
        if (!out) return NULL;
        char *p = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *b = PyList_GET_ITEM(c->body, i);
            memcpy(p, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
            p += PyBytes_GET_SIZE(b);
        }
    }
    if (PyList_SetSlice(c->body, 0, n, NULL) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    c->buffered = 0;
    return out;
}

/* The next receive() event, or NULL without an exception when the app must wait. */
static PyObject *lw_ac_next_event(lw_asgi_conn *c)
{
    if (c->kind == LW_AC_WS) return lw_ws_next_event(c);
    /* After the response, http.disconnect even if the request was never read (the spec: "if
     * receive is called after a response has been sent"; uvicorn answers the same). */
    if (c->disconnected || c->client_closed || c->rstate == R_DONE) return lw_ev_disconnect();
    if (lw_ac_queued(c) > 0) {
        PyObject *body = lw_ac_take_body(c);
        if (!body) return NULL;
        int more = c->body_more;
        if (!more) c->body_final_sent = 1;
        PyObject *ev = lw_ev_request(body, more);
        if (ev && c->read_paused) {
            c->read_paused = 0;
            if (c->h.on_read_resume) LW_AC_CALL(c, (c->h.on_read_resume(c->ud), 0));
        }
        return ev;
    }
    if (!c->body_more && !c->body_final_sent) {
        c->body_final_sent = 1;
        return lw_ev_request(PyBytes_FromStringAndSize("", 0), 0);
    }
    return NULL;
}

/* The oldest receive() still waiting (its future in recv_waiter), or NULL: futures the app
 * cancelled meanwhile are dropped, and the next of recv_more moves up. */
static PyObject *lw_ac_next_waiter(lw_asgi_conn *c)
{
    lw_drop_done(&c->recv_waiter);
    while (!c->recv_waiter && c->recv_more && PyList_GET_SIZE(c->recv_more) > 0) {
        c->recv_waiter = Py_NewRef(PyList_GET_ITEM(c->recv_more, 0));
        if (PyList_SetSlice(c->recv_more, 0, 1, NULL) < 0) {
            lw_log_exception("ASGI receive", NULL, 0);
            break;
        }
        lw_drop_done(&c->recv_waiter);
    }
    return c->recv_waiter;
}

/* Something changed (body fed, disconnect, response done): complete the pending receive() calls,
 * oldest first, one event each, for as long as there are events (a disconnect is one for every
 * call: each waiting task learns of it). */
void lw_ac_wake_receiver(lw_asgi_conn *c)
{
    while (lw_ac_next_waiter(c)) {
        PyObject *ev = lw_ac_next_event(c);
        if (!ev) {
            if (PyErr_Occurred()) lw_log_exception("ASGI receive", NULL, 0);
            return;
        }
        PyObject *fut = c->recv_waiter;
        c->recv_waiter = NULL;
        lw_future_set(fut, ev, 0);
        Py_DECREF(fut);
    }
}

static void lw_ac_fail_sender(lw_asgi_conn *c)
{
    if (!c->send_waiter) return;
    PyObject *fut = c->send_waiter;
    c->send_waiter = NULL;
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "s", "client disconnected");
    if (exc)
        lw_future_set(fut, exc, 1);
    else
        PyErr_Clear();
    Py_DECREF(fut);
}

void lw_ac_disconnect(lw_asgi_conn *c)
{
    if (c->disconnected) return;
    c->disconnected = 1;
    if (!c->close_code) c->close_code = 1006; /* WebSocket: lost without a Close frame */
    lw_ac_wake_receiver(c);
    lw_ac_fail_sender(c);
}

/* ---- receive() ------------------------------------------------------------------------------ */

static PyObject *lw_ac_receive(PyObject *self, PyObject *unused)
{
    (void)unused;
    lw_asgi_conn *c = (lw_asgi_conn *)self;
    /* Another task's receive() still waiting: this one waits behind it (an event ready now would
     * have been given to that one already). */
    if (!lw_ac_next_waiter(c)) {
        PyObject *ev = lw_ac_next_event(c);
        if (ev) return lw_ready_new(ev);
        if (PyErr_Occurred()) return NULL;
    }
    PyObject *fut = PyObject_CallNoArgs(lw_rt->create_future);
    if (!fut) return NULL;
    if (!c->recv_waiter) {
        c->recv_waiter = fut;
        return Py_NewRef(fut);
    }
    if ((!c->recv_more && !(c->recv_more = PyList_New(0))) ||
        PyList_Append(c->recv_more, fut) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    return fut;
}

/* ---- send() --------------------------------------------------------------------------------- */

/* Back to the lw_hdrs_init() state: the connection's held head is parsed again into the same
 * lw_hdrs after a refused http.response.start, so nothing of that one (its Content-Length) stays.
 */
void lw_hdrs_free(lw_hdrs *h)
{
    if (h->v != h->stack) PyMem_Free(h->v);
    h->v = h->stack;
    h->n = 0;
    h->cl = -1;
    Py_CLEAR(h->keep);
}

void lw_hdrs_init(lw_hdrs *h)
{
    h->v = h->stack;
    h->n = 0;
    h->cl = -1;
    h->keep = NULL;
}

/* ASCII case-insensitive equality with a lowercase literal. */
static inline int lw_ieq(const char *p, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if ((ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch) != lower[i]) return 0;
    }
    return 1;
}

int lw_hdrs_parse(PyObject *headers, lw_hdrs *h, const char *what)
{
    if (!headers || headers == Py_None) return 0;
    /* Tuples, not the app's lists: converting a pair may run app code, and the pointers handed
     * to the host must outlive anything the app does to its own lists. keep is the tuple of the
     * pairs (which holds the pairs that are tuples already), or a list of it and the pairs that
     * had to be converted. */
    PyObject *seq = PySequence_Tuple(headers);
    if (!seq) return -1;
    h->keep = seq;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    /* One spare entry: the content-length lw_ac_add_length() may add. */
    if ((size_t)n >= sizeof h->stack / sizeof h->stack[0] &&
        !(h->v = PyMem_Malloc(((size_t)n + 1) * sizeof *h->v))) {
        h->v = h->stack;
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(seq, i);
        if (!PyTuple_CheckExact(pair)) {
            if (!PyList_Check(h->keep)) {
                PyObject *l = PyList_New(1);
                if (!l) return -1;
                PyList_SET_ITEM(l, 0, seq); /* the reference h->keep had */
                h->keep = l;
            }
            pair = PySequence_Tuple(pair);
            if (!pair) return -1;
            int r = PyList_Append(h->keep, pair);
            Py_DECREF(pair);
            if (r < 0) return -1;
        }
        if (PyTuple_GET_SIZE(pair) != 2) {
            PyErr_Format(PyExc_ValueError, "%s header %zd must be a [name, value] pair", what, i);
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
        if (!PyBytes_Check(name) || !PyBytes_Check(value)) {
            PyErr_Format(PyExc_TypeError, "%s header %zd name and value must be bytes", what, i);
            return -1;
        }
        const char *np = PyBytes_AS_STRING(name), *vp = PyBytes_AS_STRING(value);
        size_t nl = (size_t)PyBytes_GET_SIZE(name), vl = (size_t)PyBytes_GET_SIZE(value);
        if (!lw_is_token(np, nl)) {
            PyErr_Format(PyExc_ValueError, "invalid %s header name %R", what, name);
            return -1;
        }
        for (size_t j = 0; j < vl; j++) {
            unsigned char ch = (unsigned char)vp[j];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                PyErr_Format(PyExc_ValueError,
                             "%s header %R has a control character (CR/LF/NUL) in its value", what,
                             name);
                return -1;
            }
        }
        if (nl == 14 && lw_ieq(np, "content-length", 14)) {
            int64_t x = 0;
            size_t j = 0;
            while (j < vl && (vp[j] == ' ' || vp[j] == '\t'))
                j++;
            size_t digits = 0;
            for (; j < vl && vp[j] >= '0' && vp[j] <= '9' && digits < 18; j++, digits++)
                x = x * 10 + (vp[j] - '0');
            while (j < vl && (vp[j] == ' ' || vp[j] == '\t'))
                j++;
            if (!digits || j != vl || (h->cl >= 0 && h->cl != x)) {
                PyErr_Format(PyExc_ValueError, "invalid Content-Length %R", value);
                return -1;
            }
            /* A repeat that agrees reaches the host once: Content-Length is no list, and a
             * sender MUST NOT generate several field lines of it (RFC 9110 5.3). */
            if (h->cl >= 0) continue;
            h->cl = x;
        }
        h->v[h->n].name = np;
        h->v[h->n].name_len = nl;
        h->v[h->n].value = vp;
        h->v[h->n].value_len = vl;
        h->n++;
    }
    return 0;
}

/* d.get(key) as a borrowed reference, NULL when missing (no exception). */
static PyObject *lw_get(PyObject *d, PyObject *key)
{
    PyObject *v = PyDict_GetItemWithError(d, key);
    return v;
}

int lw_ac_result(lw_asgi_conn *c, int r, const char *which)
{
    if (r < 0) {
        lw_ac_fail(c, WSGI_ERR_CALLBACK, "host %s failed: client gone", which);
        lw_ac_disconnect(c);
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return -1;
    }
    return r == ASGI_PAUSE ? ASGI_PAUSE : 0;
}

int lw_ac_start(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->rstate != R_START) {
        PyErr_SetString(PyExc_RuntimeError, "unexpected ASGI message 'http.response.start': "
                                            "the response has already started");
        return -1;
    }
    PyObject *status = lw_get(msg, a->status);
    if (!status || !PyLong_Check(status)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "http.response.start 'status' must be an int");
        return -1;
    }
    long code = PyLong_AsLong(status);
    if (code < 100 || code > 999) {
        PyErr_Format(PyExc_ValueError, "invalid HTTP status %R", status);
        return -1;
    }
    PyObject *tr = lw_get(msg, a->trailers);
    int trailers = tr ? PyObject_IsTrue(tr) : 0;
    if (trailers < 0 || (!tr && PyErr_Occurred())) return -1;
    trailers = trailers && c->h.on_trailers && c->kind == LW_AC_HTTP; /* else ignored */
    PyObject *hv = lw_get(msg, a->headers);
    if (PyErr_Occurred() || lw_hdrs_parse(hv, &c->head_h, "response") < 0) {
        lw_hdrs_free(&c->head_h);
        return -1;
    }
    /* Held until the first body event: the ASGI spec forbids sending the head before it. */
    /* "404 Not Found": the code (100..999), a space and its standard reason; "599 " for a code
     * without one (RFC 9112 4: the space is sent even when the reason phrase is absent). */
    const char *reason = lw_reason_phrase((int)code);
    size_t rl = strlen(reason);
    if (rl > sizeof c->head_line - 5) rl = sizeof c->head_line - 5;
    c->head_line[0] = (char)('0' + code / 100);
    c->head_line[1] = (char)('0' + code / 10 % 10);
    c->head_line[2] = (char)('0' + code % 10);
    c->head_line[3] = ' ';
    memcpy(c->head_line + 4, reason, rl);
    c->head_line_len = 4 + rl;
    c->head_line[c->head_line_len] = '\0';
    c->head_status = (int)code;
    c->head_pending = 1;
    c->rstate = R_BODY;
    c->trailers = trailers;
    c->cl = c->head_h.cl;
    return 0;
}

/* The held head, as on_start gets it. */
static wsgi_response_head lw_ac_head(const lw_asgi_conn *c)
{
    return (wsgi_response_head){.status = c->head_status,
                                .status_line = c->head_line,
                                .status_line_len = c->head_line_len,
                                .headers = c->head_h.v,
                                .n_headers = c->head_h.n,
                                .content_length = c->head_h.cl,
                                .flags = c->trailers ? WSGI_HEAD_TRAILERS : 0u};
}

/* Deliver the held head (on_start) right before the first body event. 0, ASGI_PAUSE or -1. */
static int lw_ac_commit_head(lw_asgi_conn *c)
{
    c->head_pending = 0;
    wsgi_response_head head = lw_ac_head(c);
    if (c->obs) c->obs->status_sent = head.status;
    int r = LW_AC_CALL(c, c->h.on_start(c->ud, &head));
    lw_hdrs_free(&c->head_h);
    return lw_ac_result(c, r, "on_start");
}

static void lw_ac_body_ended(lw_asgi_conn *c)
{
    c->rstate = c->trailers ? R_TRAILERS : R_DONE;
    if (c->kind == LW_AC_WS) c->wstate = WS_CLOSED; /* a denial response: the end */
    if (c->rstate == R_DONE) lw_ac_wake_receiver(c);
}

/* Keep @body (a new reference) as the current one: the previous body stays valid through this
 * on_body, so a host that still has it queued (e.g. the app cancelled the paused send() and sent
 * again) can copy it now. The new one is held before the oldest is released: that may run app
 * code (a __del__), which may drop the message's own reference to body. */
static void lw_ac_hold(lw_asgi_conn *c, PyObject *body)
{
    PyObject *oldest = c->held[1];
    c->held[1] = c->held[0];
    c->held[0] = body;
    Py_XDECREF(oldest);
}

/* The whole body is this one event (the head is still held, no more_body): when the app gave no
 * content-length, add one, as for a WSGI list body (docs/asgi.md, "Content-Length"): the host
 * frames the body by length (an HTTP/1.0 keep-alive client keeps its connection, HTTP/1.1 needs
 * no chunked framing). Not for an empty body (a HEAD answered with b"" must not claim 0), a
 * status without a body (1xx, 204, 205, 304), trailers, or an app that set transfer-encoding.
 * @digits (24 bytes) holds the value; it must live until on_start returns. */
static void lw_ac_add_length(lw_asgi_conn *c, size_t len, char *digits)
{
    lw_hdrs *h = &c->head_h;
    int code = c->head_status;
    if (h->cl >= 0 || len == 0 || c->trailers || code < 200 || code == 204 || code == 205 ||
        code == 304)
        return;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].name_len == 17 && lw_ieq(h->v[i].name, "transfer-encoding", 17)) return;
    /* lw_hdrs_parse left room for one more */
    int nd = snprintf(digits, 24, "%zu", len);
    h->v[h->n++] = (wsgi_header){"content-length", 14, digits, (size_t)nd};
    h->cl = (int64_t)len;
}

/* The first body event with the head held: on_start and on_body in one stretch without the GIL
 * (one release instead of two). The state is what the two separate steps leave, including when
 * on_start fails (nothing went out: the body did not end). Takes @body's reference. */
static int lw_ac_head_and_body(lw_asgi_conn *c, PyObject *body, size_t len, int more)
{
    c->head_pending = 0;
    char digits[24];
    if (!more) lw_ac_add_length(c, len, digits);
    wsgi_response_head head = lw_ac_head(c);
    if (c->obs) c->obs->status_sent = head.status;
    lw_rstate rstate = c->rstate;
    lw_wsstate wstate = c->wstate;
    c->sent += (int64_t)len;
    lw_ac_hold(c, body);
    if (!more) lw_ac_body_ended(c);
    const char *data = body ? PyBytes_AS_STRING(body) : "";
    int hr = -1, r = -1;
    if (c->attached) {
        PyThreadState *save = PyEval_SaveThread();
        hr = c->h.on_start(c->ud, &head);
        if (hr >= 0 && c->attached) r = c->h.on_body(c->ud, data, len, more);
        PyEval_RestoreThread(save);
    }
    lw_hdrs_free(&c->head_h);
    if (hr < 0) {
        c->rstate = rstate;
        c->wstate = wstate;
        c->sent -= (int64_t)len;
        return lw_ac_result(c, hr, "on_start");
    }
    hr = hr == ASGI_PAUSE ? ASGI_PAUSE : 0;
    r = lw_ac_result(c, r, "on_body");
    return r < 0 ? r : (r > hr ? r : hr);
}

int lw_ac_body(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->rstate != R_BODY) {
        PyErr_Format(PyExc_RuntimeError, "unexpected ASGI message 'http.response.body': %s",
                     c->rstate == R_START ? "http.response.start was not sent"
                                          : "the response body has already ended");
        return -1;
    }
    /* more_body first: its truth test is app code, which may change the message, and body is a
     * borrowed reference used until the callback returns. */
    PyObject *mb = lw_get(msg, a->more_body);
    if (!mb && PyErr_Occurred()) return -1;
    int more = mb ? PyObject_IsTrue(mb) : 0;
    if (more < 0) return -1;
    PyObject *body = lw_get(msg, a->body);
    if (!body && PyErr_Occurred()) return -1;
    if (body && !PyBytes_Check(body)) {
        PyErr_Format(PyExc_TypeError, "http.response.body 'body' must be bytes, not %.100s",
                     Py_TYPE(body)->tp_name);
        return -1;
    }
    size_t len = body ? (size_t)PyBytes_GET_SIZE(body) : 0;
    if (c->cl >= 0 && c->sent + (int64_t)len > c->cl) {
        PyErr_SetString(PyExc_RuntimeError, "response content longer than Content-Length");
        return -1;
    }
    /* Short is broken, except where HTTP has no body at all (HEAD, 1xx, 204, 304): the
     * Content-Length then describes the entity, as frameworks send it. */
    if (!more && c->cl >= 0 && c->sent + (int64_t)len < c->cl && !c->head_request &&
        c->head_status >= 200 && c->head_status != 204 && c->head_status != 304) {
        PyErr_SetString(PyExc_RuntimeError, "response content shorter than Content-Length");
        return -1;
    }
    /* Ours from here: the held head's on_start runs without the GIL, when another Python thread
     * may change the message. */
    Py_XINCREF(body);
    if (c->head_pending && !(len == 0 && more)) return lw_ac_head_and_body(c, body, len, more);
    int hr = c->head_pending ? lw_ac_commit_head(c) : 0;
    if (hr < 0 || (len == 0 && more)) {
        Py_XDECREF(body);
        return hr;
    }
    c->sent += (int64_t)len;
    lw_ac_hold(c, body);
    if (!more) lw_ac_body_ended(c);
    int r = LW_AC_CALL(c, c->h.on_body(c->ud, body ? PyBytes_AS_STRING(body) : "", len, more));
    r = lw_ac_result(c, r, "on_body");
    return r < 0 ? r : (r > hr ? r : hr);
}

static int lw_ac_trailers(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->rstate != R_TRAILERS) {
        PyErr_SetString(PyExc_RuntimeError,
                        "unexpected ASGI message 'http.response.trailers': trailers were not "
                        "announced in http.response.start or the body has not ended");
        return -1;
    }
    PyObject *mt = lw_get(msg, a->more_trailers);
    int more = mt ? PyObject_IsTrue(mt) : 0;
    if (more < 0 || (!mt && PyErr_Occurred())) return -1;
    lw_hdrs h;
    lw_hdrs_init(&h);
    PyObject *hv = lw_get(msg, a->headers);
    if (PyErr_Occurred() || lw_hdrs_parse(hv, &h, "trailer") < 0) {
        lw_hdrs_free(&h);
        return -1;
    }
    if (!more) {
        c->rstate = R_DONE;
        lw_ac_wake_receiver(c);
    }
    int r = LW_AC_CALL(c, c->h.on_trailers(c->ud, h.v, h.n, more));
    lw_hdrs_free(&h);
    return lw_ac_result(c, r, "on_trailers");
}

static int lw_ac_pathsend(lw_asgi_conn *c, PyObject *msg)
{
    if (c->rstate != R_BODY || c->sent > 0) {
        PyErr_SetString(PyExc_RuntimeError, "unexpected ASGI message 'http.response.pathsend': it "
                                            "must follow http.response.start, with no body");
        return -1;
    }
    PyObject *path;
    int has = lw_dict_getref_str(msg, "path", &path);
    if (has < 0) return -1;
    if (!has || !PyUnicode_Check(path)) {
        Py_XDECREF(path);
        PyErr_SetString(PyExc_TypeError, "http.response.pathsend 'path' must be a str");
        return -1;
    }
    PyObject *fs = NULL;
    if (!PyUnicode_FSConverter(path, &fs)) { /* rejects embedded NULs */
        Py_DECREF(path);
        return -1;
    }
    const char *p = PyBytes_AS_STRING(fs);
    if (p[0] != '/') {
        Py_DECREF(fs);
        PyErr_Format(PyExc_ValueError, "http.response.pathsend 'path' must be absolute: %R", path);
        Py_DECREF(path);
        return -1;
    }
    /* O_NONBLOCK: a FIFO (refused below, as anything but a regular file) would otherwise block
     * the loop thread in open() until a writer came; a regular file's reads ignore it. */
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    int statted = fd >= 0 && fstat(fd, &st) == 0;
    if (!statted || !S_ISREG(st.st_mode)) {
        if (fd >= 0) {
            int e = errno;
            close(fd);
            /* EINVAL: a FIFO, device, socket; else fstat's error */
            errno = !statted ? e : S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        }
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(fs);
        Py_DECREF(path);
        return -1;
    }
    Py_DECREF(fs);
    Py_DECREF(path);
    if (c->cl >= 0 && c->cl != st.st_size) {
        close(fd);
        PyErr_Format(PyExc_RuntimeError, "pathsend file is %lld bytes but Content-Length is %lld",
                     (long long)st.st_size, (long long)c->cl);
        return -1;
    }
    if (c->sf_fd >= 0) close(c->sf_fd);
    c->sf_fd = fd;
    int hr = 0;
    if (c->head_pending && (hr = lw_ac_commit_head(c)) < 0) return -1;
    c->sent = st.st_size;
    lw_ac_body_ended(c);
    int r = LW_AC_CALL(c, c->h.on_sendfile(c->ud, fd, 0, (int64_t)st.st_size));
    r = lw_ac_result(c, r, "on_sendfile");
    return r < 0 ? r : (r > hr ? r : hr);
}

/* Deliver one message (type already checked): -1 (exception set), 0 or ASGI_PAUSE. */
static int lw_ac_send_now(lw_asgi_conn *c, PyObject *type, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->disconnected || !c->attached) {
        PyErr_SetString(PyExc_OSError, "client disconnected");
        return -1;
    }
    if (c->kind == LW_AC_WS) return lw_ws_send(c, type, msg);
    if (lw_streq(type, a->resp_body)) return lw_ac_body(c, msg);
    if (lw_streq(type, a->resp_start)) return lw_ac_start(c, msg);
    if (c->h.on_trailers && lw_streq(type, a->resp_trailers)) return lw_ac_trailers(c, msg);
    if (c->h.on_sendfile && lw_streq(type, a->resp_pathsend)) return lw_ac_pathsend(c, msg);
    PyErr_Format(PyExc_RuntimeError, "unexpected ASGI message type %R", type);
    return -1;
}

/* The message's type, borrowed; NULL with an exception if it is not a dict with a str type. */
static PyObject *lw_ac_msg_type(PyObject *msg)
{
    if (!PyDict_Check(msg)) {
        PyErr_Format(PyExc_TypeError, "ASGI message must be a dict, not %.100s",
                     Py_TYPE(msg)->tp_name);
        return NULL;
    }
    PyObject *type = lw_get(msg, lw_rt->as->type);
    if (!type || !PyUnicode_Check(type)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "ASGI message 'type' must be a str");
        return NULL;
    }
    return type;
}

/* A send() made while an earlier one is held (ASGI_PAUSE) waits its turn, as under uvicorn,
 * hypercorn or daphne (apps send from several tasks: a broadcast, a heartbeat): its future gets a
 * done callback on the held one, which delivers the message then (lw_ac_send_turn). */
static PyMethodDef lw_ac_send_turn_def;

/* The raised exception as an object (cleared), to hand to a future. */
static PyObject *lw_take_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value ? value : PyObject_CallNoArgs(PyExc_MemoryError);
}

static int lw_ac_send_queue(lw_asgi_conn *c, PyObject *turn)
{
    PyObject *cb = PyCFunction_New(&lw_ac_send_turn_def, turn);
    PyObject *r = cb ? PyObject_CallMethod(c->send_waiter, "add_done_callback", "O", cb) : NULL;
    Py_XDECREF(cb);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* turn: (conn, message, future the app awaits). The send it waited for is done: deliver. */
static PyObject *lw_ac_send_turn(PyObject *turn, PyObject *unused)
{
    (void)unused;
    lw_asgi_conn *c = (lw_asgi_conn *)PyTuple_GET_ITEM(turn, 0);
    PyObject *msg = PyTuple_GET_ITEM(turn, 1), *fut = PyTuple_GET_ITEM(turn, 2);
    PyObject *done = PyObject_CallMethod(fut, "done", NULL);
    int skip = !done || PyObject_IsTrue(done); /* the app cancelled it: nothing is sent */
    Py_XDECREF(done);
    PyErr_Clear();
    if (skip) Py_RETURN_NONE;
    lw_drop_done(&c->send_waiter);
    if (c->send_waiter) {
        /* Another message went out before this one and is held in turn: wait for it. */
        if (lw_ac_send_queue(c, turn) < 0) {
            PyObject *exc = lw_take_exception();
            if (exc) lw_future_set(fut, exc, 1);
            PyErr_Clear();
        }
        Py_RETURN_NONE;
    }
    PyObject *type = lw_ac_msg_type(msg);
    int r = type ? lw_ac_send_now(c, type, msg) : -1;
    if (r < 0) {
        PyObject *exc = lw_take_exception();
        if (exc) lw_future_set(fut, exc, 1);
        PyErr_Clear();
    } else if (r == ASGI_PAUSE && !c->disconnected) {
        c->send_waiter = Py_NewRef(fut); /* resolved by asgi_conn_resume() */
    } else {
        lw_future_set(fut, Py_NewRef(Py_None), 0);
    }
    Py_RETURN_NONE;
}

static PyMethodDef lw_ac_send_turn_def = {"_send_turn", lw_ac_send_turn, METH_O, NULL};

static PyObject *lw_ac_send(PyObject *self, PyObject *msg)
{
    lw_asgi_conn *c = (lw_asgi_conn *)self;
    PyObject *type = lw_ac_msg_type(msg);
    if (!type) return NULL;
    lw_drop_done(&c->send_waiter);
    if (c->send_waiter) {
        PyObject *fut = PyObject_CallNoArgs(lw_rt->create_future);
        PyObject *turn = fut ? PyTuple_Pack(3, self, msg, fut) : NULL;
        int rc = turn ? lw_ac_send_queue(c, turn) : -1;
        Py_XDECREF(turn);
        if (rc < 0) Py_CLEAR(fut);
        return fut;
    }
    int r = lw_ac_send_now(c, type, msg);
    if (r < 0) return NULL;
    if (r == ASGI_PAUSE && !c->disconnected) {
        c->send_waiter = PyObject_CallNoArgs(lw_rt->create_future);
        return Py_XNewRef(c->send_waiter);
    }
    return lw_ready_new(NULL);
}

/* ---- the end of the app's task -------------------------------------------------------------- */

/* The app returned without @p what ("sending a response", "completing the response"): an app
 * error, or, once the client is gone (disconnected or closed), only how such a request ends. */
static void lw_ac_unfinished(lw_asgi_conn *c, const char *what)
{
    int gone = c->disconnected || c->client_closed;
    lw_log(gone ? WSGI_LOG_INFO : WSGI_LOG_ERROR, "ASGI app returned without %s%s", what,
           gone ? " (client disconnected)" : "");
    lw_ac_fail(c, gone ? WSGI_ERR_CALLBACK : WSGI_ERR_APP, "ASGI app returned without %s", what);
}

/* How the app ended: @cancelled, or @exc (None: it returned). Logs, records, and answers what
 * the protocol still owes (500, 403, a Close), then on_done. Once per connection. */
static void lw_ac_end(lw_asgi_conn *c, int cancelled, PyObject *exc)
{
    if (c->done) return;
    int result = 0;
    if (cancelled) {
        result = WSGI_ERR_APP;
        if (!c->error && c->obs) c->obs->exc = 1;
        lw_ac_fail(c, WSGI_ERR_APP, "ASGI app task was cancelled");
    } else {
        if (exc && exc != Py_None && c->disconnected &&
            PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
            /* send() raised because the client left and the app let it propagate: that is how
             * a disconnect ends most apps, not an application error worth a traceback. */
            lw_log(WSGI_LOG_INFO, "ASGI app ended by the client's disconnect");
            result = WSGI_ERR_CALLBACK;
            lw_ac_fail(c, WSGI_ERR_CALLBACK, "client disconnected");
        } else if (exc && exc != Py_None) {
            PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc),
                          PyException_GetTraceback(exc));
            char msg[512];
            lw_log_exception("Exception in ASGI application", msg, sizeof msg);
            result = WSGI_ERR_APP;
            if (!c->error && c->obs) c->obs->exc = 1;
            lw_ac_fail(c, WSGI_ERR_APP, "%s", msg);
        }
    }
    PyErr_Clear();

    if (c->kind == LW_AC_WS) {
        result = lw_ws_task_end(c, result);
    } else if (c->rstate == R_DONE) {
        result = 0; /* the response was complete; a later failure was only logged */
    } else if (c->rstate == R_START || c->head_pending) {
        /* After http.disconnect there is nobody to respond to: not an app error. */
        if (!result) lw_ac_unfinished(c, "sending a response");
        result = c->error ? c->error : WSGI_ERR_APP;
        /* After a disconnect nothing is sent: no 500 replaces the head, and no app error. */
        if (c->head_pending && c->rstate == R_BODY && !c->disconnected)
            lw_log(WSGI_LOG_ERROR, "ASGI app ended after http.response.start without a body "
                                   "event: the held head is replaced by a 500");
        if (!c->disconnected) lw_ac_fixed_response(c, &lw_500_head, lw_500_body);
    } else {
        /* After a disconnect this is how a stream ends (Starlette's StreamingResponse sees
         * http.disconnect, cancels its generator and returns): not an app error either. */
        if (!result) lw_ac_unfinished(c, "completing the response");
        result = c->error ? c->error : WSGI_ERR_APP;
    }
    if (LW_UNLIKELY(c->obs)) {
        lw_ac_observe_ws(c, 0, c->close_code ? c->close_code : 1006, 1);
        lw_ac_observe_done(c, 1, 1);
    }
    c->done = 1;
    if (c->eager_step) {
        /* Ending inside its own eager step: asgi_dispatch calls on_done once it has let go of
         * the GIL (one release fewer). */
        c->done_owed = 1;
        c->done_result = result;
        return;
    }
    LW_AC_CALL(c, (c->h.on_done(c->ud, result), 0));
}

/* run_asgi's last step (boot.py), still inside the task: report(None) if the app returned, else
 * report(exception). The end is delivered now, so a request that never blocks is complete after
 * one loop turn; the task's done callback (the safety net for a task cancelled before its first
 * step, which never reaches this) is removed so that finishing schedules nothing. */
static PyObject *lw_ac_report(PyObject *self, PyObject *exc)
{
    lw_asgi_conn *c = (lw_asgi_conn *)self;
    int cancelled = 0;
    if (exc != Py_None) {
        PyObject *asyncio = PyImport_ImportModule("asyncio");
        PyObject *ce = asyncio ? PyObject_GetAttrString(asyncio, "CancelledError") : NULL;
        cancelled = ce && PyErr_GivenExceptionMatches(exc, ce);
        Py_XDECREF(ce);
        Py_XDECREF(asyncio);
        PyErr_Clear();
    }
    lw_ac_end(c, cancelled, exc);
    if (c->task && c->done_cb) {
        PyObject *r = PyObject_CallMethod(c->task, "remove_done_callback", "O", c->done_cb);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    Py_CLEAR(c->done_cb);
    Py_CLEAR(c->task); /* breaks task -> callback -> conn -> task */
    Py_RETURN_NONE;
}

/* The task's done callback: only reached when run_asgi could not report (cancelled before it
 * ever ran). */
static PyObject *lw_ac_task_done(PyObject *self, PyObject *task)
{
    lw_asgi_conn *c = (lw_asgi_conn *)self;
    Py_CLEAR(c->task);
    Py_CLEAR(c->done_cb);
    if (!c->done) {
        PyObject *cancelled = PyObject_CallMethod(task, "cancelled", NULL);
        int is_cancelled = cancelled && PyObject_IsTrue(cancelled) == 1;
        PyObject *exc = !is_cancelled ? PyObject_CallMethod(task, "exception", NULL) : NULL;
        PyErr_Clear();
        lw_ac_end(c, is_cancelled, exc ? exc : Py_None);
        Py_XDECREF(exc);
        Py_XDECREF(cancelled);
    }
    Py_RETURN_NONE;
}

void lw_ac_fixed_response(lw_asgi_conn *c, const wsgi_response_head *head, const char *body)
{
    c->head_pending = 0;
    lw_hdrs_free(&c->head_h);
    c->rstate = R_DONE;
    if (c->obs) c->obs->status_sent = head->status;
    int r = LW_AC_CALL(c, c->h.on_start(c->ud, head));
    if (r >= 0) LW_AC_CALL(c, c->h.on_body(c->ud, body, (size_t)head->content_length, 0));
    if (r >= 0) c->sent += head->content_length;
}

static PyMethodDef lw_ac_receive_def = {"receive", lw_ac_receive, METH_NOARGS,
                                        "await receive() -> the next ASGI event"};
static PyMethodDef lw_ac_send_def = {"send", lw_ac_send, METH_O, "await send(message)"};
static PyMethodDef lw_ac_done_def = {"_task_done", lw_ac_task_done, METH_O, NULL};
static PyMethodDef lw_ac_report_def = {"_report", lw_ac_report, METH_O, NULL};

/* For lazy tasks (lw_lazy_host): report() as a Python callable, and called from C. */
static PyObject *lw_ac_reporter(PyObject *c)
{
    return PyCFunction_New(&lw_ac_report_def, c);
}
static void lw_ac_report_c(PyObject *c, PyObject *exc)
{
    PyObject *r = lw_ac_report(c, exc);
    if (!r) lw_log_exception("reporting the end of an ASGI app", NULL, 0);
    Py_XDECREF(r);
}

static void lw_ac_dealloc(lw_asgi_conn *c)
{
    Py_XDECREF(c->task);
    Py_XDECREF(c->done_cb);
    Py_XDECREF(c->body);
    Py_XDECREF(c->gather);
    Py_XDECREF(c->recv_waiter);
    Py_XDECREF(c->recv_more);
    Py_XDECREF(c->send_waiter);
    Py_XDECREF(c->held[0]);
    Py_XDECREF(c->held[1]);
    Py_XDECREF(c->close_reason);
    Py_XDECREF(c->offered);
    lw_hdrs_free(&c->head_h);
    if (c->sf_fd >= 0) close(c->sf_fd);
    free(c->errmsg);
    free(c->obs);
    PyObject_Free(c);
}

PyTypeObject lw_AsgiConnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.AsgiConnection",
    .tp_basicsize = sizeof(lw_asgi_conn),
    .tp_dealloc = (destructor)lw_ac_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The server side of one ASGI HTTP connection.",
};

int lw_asgi_types_ready(void)
{
    return PyType_Ready(&lw_AsgiConnType) < 0 || PyType_Ready(&lw_ReadyType) < 0 ? -1 : 0;
}

/* ---- public API ----------------------------------------------------------------------------- */

/* The end of asgi_dispatch once the app's first step ran inside it (@c: the reference taken
 * for that step, or NULL if none ran): on_done if the app ended in it, the GIL given back. */
static int lw_ac_dispatched(lw_asgi_conn *c, lw_gil *g, const asgi_handler *hc, void *user_data)
{
    int done_owed = 0, done_result = 0;
    if (c) {
        /* The app ended in its first step: on_done is owed, unless the host let go meanwhile
         * (then it keeps its reference until this call returns, and nothing dereferences c). */
        done_owed = c->done_owed && c->attached;
        done_result = c->done_result;
        c->done_owed = 0;
        Py_DECREF(c);
    }
    /* What the next asgi_loop_timeout() will ask, while the GIL is held anyway (an app that did
     * not wait has scheduled nothing: -1 then, without taking the GIL again). */
    lw_loop_timeout_note(g->ts == NULL);
    if (!done_owed) {
        lw_gil_release(g);
        return 0;
    }
    if (g->ts) {
        lw_gil_release(g);
        hc->on_done(user_data, done_result);
    } else { /* the caller holds the GIL: callbacks still run without it */
        PyThreadState *save = PyEval_SaveThread();
        hc->on_done(user_data, done_result);
        PyEval_RestoreThread(save);
    }
    return 0;
}

static int lw_ac_create(wsgi_app *app, const wsgi_request *req, const asgi_handler *handler,
                        void *user_data, asgi_conn **out, lw_ac_kind kind)
{
    lw_clear_error();
    if (!out) return lw_fail(WSGI_ERR_INVAL, "out is NULL");
    *out = NULL;
    if (!app || !req || !handler) return lw_fail(WSGI_ERR_INVAL, "app, request or handler is NULL");
    if (handler->struct_size < offsetof(asgi_handler, on_done) + sizeof(void *) ||
        !handler->on_start || !handler->on_body || !handler->on_done)
        return lw_fail(WSGI_ERR_INVAL, "handler needs struct_size, on_start, on_body and on_done");
    asgi_handler hc = {0};
    memcpy(&hc, handler, handler->struct_size < sizeof hc ? handler->struct_size : sizeof hc);
    if (kind == LW_AC_WS) {
        if (handler->struct_size < offsetof(asgi_handler, on_ws_close) + sizeof(void *) ||
            !hc.on_ws_accept || !hc.on_ws_send || !hc.on_ws_close)
            return lw_fail(WSGI_ERR_INVAL,
                           "a WebSocket handler needs on_ws_accept, on_ws_send and on_ws_close");
        if ((req->body && req->body_len) || req->content_length > 0 ||
            (req->flags & WSGI_REQUEST_CHUNKED))
            return lw_fail(WSGI_ERR_INVAL, "a WebSocket upgrade request has no body");
        /* Not offered on a WebSocket connection. */
        hc.on_trailers = NULL;
        hc.on_sendfile = NULL;
    } else {
        hc.on_ws_accept = NULL;
        hc.on_ws_send = NULL;
        hc.on_ws_close = NULL;
    }
    if (app->iface != WSGI_INTERFACE_ASGI)
        return lw_fail(WSGI_ERR_INTERFACE, "asgi_dispatch on an app that is not ASGI");
    int rc = lw_check_request(req);
    if (rc) return rc;
    lw_gil g;
    if ((rc = lw_asgi_enter(app->rt, &g)) != 0) return rc;
    wsgi_runtime *rt = app->rt;

    lw_asgi_conn *c = PyObject_New(lw_asgi_conn, &lw_AsgiConnType);
    if (!c) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    c->app = app;
    c->h = hc;
    c->ud = user_data;
    c->kind = kind;
    c->head_pending = c->head_status = 0;
    c->head_line_len = 0;
    lw_hdrs_init(&c->head_h);
    c->wstate = WS_CONNECTING;
    c->connect_sent = 0;
    c->close_code = 0;
    c->close_reason = c->offered = NULL;
    c->attached = 1;
    c->task = c->done_cb = c->recv_waiter = c->recv_more = c->send_waiter = NULL;
    c->held[0] = c->held[1] = NULL;
    c->buffered = 0;
    c->body_final_sent = c->read_paused = 0;
    c->rstate = R_START;
    c->trailers = 0;
    c->cl = -1;
    c->sent = 0;
    c->head_request = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
    c->sf_fd = -1;
    c->disconnected = c->client_closed = c->done = c->error = 0;
    c->eager_step = c->done_owed = c->done_result = 0;
    c->free_next = NULL;
    c->errmsg = NULL;
    c->obs = NULL;
    if (LW_UNLIKELY(rt->observing) && (c->obs = calloc(1, sizeof *c->obs))) {
        c->obs->bytes_in = req->body ? req->body_len : 0;
        lw_obs_begin(&c->obs->t, req, 0);
    }
    c->body = NULL; /* made when something is queued (lw_ac_queue) */
    c->gather = NULL;
    /* A buffered body is one event; no body at all is one empty event; else the host feeds. */
    c->body_more = !req->body && (req->content_length > 0 || (req->flags & WSGI_REQUEST_CHUNKED));
    c->gather_cl = c->body_more && !(req->flags & WSGI_REQUEST_CHUNKED) &&
                           req->content_length <= LW_ASGI_BODY_LIMIT
                       ? (uint32_t)req->content_length
                       : 0;
    int queued = 1;
    if (req->body && req->body_len) {
        PyObject *b = PyBytes_FromStringAndSize(req->body, (Py_ssize_t)req->body_len);
        queued = b && lw_ac_queue(c, b) == 0;
        c->buffered = req->body_len;
        Py_XDECREF(b);
    }
    if (kind == LW_AC_WS) c->body_more = 0, c->body_final_sent = 1;
    PyObject *scope = queued ? lw_asgi_scope(app, req, hc.on_trailers != NULL,
                                             hc.on_sendfile != NULL, kind == LW_AC_WS)
                             : NULL;
    if (scope && kind == LW_AC_WS) {
        /* The app may change its scope: websocket.accept checks its pick against a copy. */
        PyObject *sp = PyDict_GetItemWithError(scope, lw_rt->as->subprotocols);
        c->offered = sp ? PySequence_Tuple(sp) : PyErr_Occurred() ? NULL : PyTuple_New(0);
        if (!c->offered) Py_CLEAR(scope);
    }
    PyObject *receive = scope ? PyCFunction_New(&lw_ac_receive_def, (PyObject *)c) : NULL;
    PyObject *send = receive ? PyCFunction_New(&lw_ac_send_def, (PyObject *)c) : NULL;
    PyObject *coro = NULL, *task = NULL, *done = NULL, *step = NULL, *ctx = NULL;
    int entered = -1, ok = 0;
    if (send && lw_eager_enabled()) entered = lw_eager_begin();
    if (send && entered >= 0 && lw_lazy_enabled()) {
        /* Lazy tasks: the app is called and its coroutine driven now, without a Task. */
        *out = (asgi_conn *)c; /* before any callback: the host may free it from on_done */
        Py_INCREF(c);          /* the host may free its handle meanwhile */
        c->eager_step = 1;
        PyObject *args[3] = {scope, receive, send};
        lw_lazy_host lh = {(PyObject *)c, &c->task, lw_ac_reporter, lw_ac_report_c};
        if (lw_lazy_drive(app->callable, args, &lh) < 0) {
            /* Nothing could report the end (the machinery failed): it ends here, a 500 if
             * nothing was sent. */
            PyObject *exc = lw_take_exception();
            if (!c->done) lw_ac_end(c, 0, exc ? exc : Py_None); /* logs it */
            Py_XDECREF(exc);
            Py_CLEAR(c->task); /* a Task it may have got: nothing left to report through c */
        }
        c->eager_step = 0;
        Py_DECREF(scope);
        Py_DECREF(receive);
        Py_DECREF(send);
        return lw_ac_dispatched(c, &g, &hc, user_data);
    }
    PyObject *report = send ? PyCFunction_New(&lw_ac_report_def, (PyObject *)c) : NULL;
    if (report) {
        PyObject *runner = lw_asgi_runner();
        PyObject *argv[5] = {app->callable, scope, receive, send, report};
        coro = runner ? PyObject_Vectorcall(runner, argv, 5, NULL) : NULL;
        if (!runner) PyErr_SetString(PyExc_RuntimeError, "boot code lacks run_asgi");
    }
    Py_XDECREF(scope);
    Py_XDECREF(receive);
    Py_XDECREF(send);
    Py_XDECREF(report);
    if (coro && entered >= 0)
        task = lw_eager_task(coro, NULL, &step, &ctx); /* its first step caught, to run below */
    else if (coro)
        task = PyObject_CallOneArg(rt->create_task, coro);
    Py_XDECREF(coro);
    if (task && step) {
        ok = 1; /* the first step runs now: nothing can cancel the task before it ran */
    } else if (task) {
        /* Deferred: the done callback is the safety net for a task cancelled before its first
         * step (which never reaches run_asgi's report). */
        done = PyCFunction_New(&lw_ac_done_def, (PyObject *)c);
        PyObject *r = done ? PyObject_CallMethod(task, "add_done_callback", "O", done) : NULL;
        ok = r != NULL;
        Py_XDECREF(r);
    }
    if (!ok) {
        Py_XDECREF(done);
        Py_XDECREF(step);
        Py_XDECREF(ctx);
        char msg[512];
        lw_log_exception("starting the ASGI app", msg, sizeof msg);
        if (task) {
            PyObject *x = PyObject_CallMethod(task, "cancel", NULL);
            Py_XDECREF(x);
            PyErr_Clear();
        }
        Py_XDECREF(task);
        c->attached = 0;
        Py_DECREF(c);
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_NOMEM, "%s", msg);
    }
    c->task = task;
    c->done_cb = done;
    *out = (asgi_conn *)c; /* before any callback: the host may free it from on_done */
    if (!step) return lw_ac_dispatched(NULL, &g, &hc, user_data);
    Py_INCREF(c); /* the host may free its handle during the step */
    c->eager_step = 1;
    lw_eager_step(step, ctx);
    c->eager_step = 0;
    Py_DECREF(step);
    Py_DECREF(ctx);
    return lw_ac_dispatched(c, &g, &hc, user_data);
}

LIBWSGI_API int asgi_dispatch(wsgi_app *app, const wsgi_request *req, const asgi_handler *handler,
                              void *user_data, asgi_conn **out)
{
    return lw_ac_create(app, req, handler, user_data, out, LW_AC_HTTP);
}

LIBWSGI_API int asgi_websocket_dispatch(wsgi_app *app, const wsgi_request *req,
                                        const asgi_handler *handler, void *user_data,
                                        asgi_conn **out)
{
    return lw_ac_create(app, req, handler, user_data, out, LW_AC_WS);
}

/* Entry for the asgi_conn_* calls: loop thread, GIL. */
static int lw_ac_enter(asgi_conn *conn, lw_gil *g)
{
    if (!conn) return lw_fail(WSGI_ERR_INVAL, "conn is NULL");
    return lw_asgi_enter(((lw_asgi_conn *)conn)->app->rt, g);
}

/* A fed piece of the body (@len bytes at @data, @more to come): queued as a bytes object of its
 * own, or, for a Content-Length body of at most LW_ASGI_BODY_LIMIT, copied into c->gather, a
 * bytes object of that size made with the first piece and queued when full (or cut short at the
 * body's end, if the host fed less than announced): the app then gets the whole body in one
 * http.request event, in the very bytes object the host's bytes were copied into once, instead
 * of one event per read joined by the app (a copy more, and a wake-up of the app per read). */
static int lw_ac_take_piece(lw_asgi_conn *c, const char *data, size_t len, int more)
{
    if (c->gather_cl) { /* the first piece: the body is gathered unless this is all of it */
        if (len && more && c->gather_cl > len) {
            c->gather = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c->gather_cl);
            if (!c->gather) return -1;
        }
        c->gather_cl = 0;
    }
    if (!c->gather) {
        PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        int r = b ? lw_ac_queue(c, b) : -1;
        Py_XDECREF(b);
        return r;
    }
    size_t have = c->buffered, size = (size_t)PyBytes_GET_SIZE(c->gather);
    if (len) memcpy(PyBytes_AS_STRING(c->gather) + have, data, len);
    have += len;
    if (have < size && more) return 0;
    PyObject *b = c->gather;
    c->gather = NULL;
    if (have < size) { /* the body ended short */
        PyObject *cut = PyBytes_FromStringAndSize(PyBytes_AS_STRING(b), (Py_ssize_t)have);
        Py_DECREF(b);
        if (!(b = cut)) return -1;
    }
    int r = lw_ac_queue(c, b);
    Py_DECREF(b);
    return r;
}

LIBWSGI_API int asgi_conn_feed(asgi_conn *conn, const char *data, size_t len, int more)
{
    if (!data && len) return lw_fail(WSGI_ERR_INVAL, "data is NULL with len > 0");
    lw_gil g;
    int rc = lw_ac_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    if (!c->body_more) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_STATE, "the request body already ended");
    }
    /* A body being gathered (or about to be) takes no more than its Content-Length. */
    size_t left = c->gather      ? (size_t)PyBytes_GET_SIZE(c->gather) - c->buffered
                  : c->gather_cl ? c->gather_cl
                                 : SIZE_MAX;
    if (len > left) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_INVAL,
                       "%zu bytes fed, more than the %zu left of the Content-Length", len, left);
    }
    if (len && c->rstate != R_DONE && !c->disconnected && !c->done) {
        if (lw_ac_take_piece(c, data, len, more) < 0) {
            PyErr_Clear();
            lw_gil_release(&g);
            return lw_fail(WSGI_ERR_NOMEM, "out of memory");
        }
        c->buffered += len;
    } else if (!more && c->gather && lw_ac_take_piece(c, NULL, 0, 0) < 0) {
        PyErr_Clear();
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    if (c->obs) c->obs->bytes_in += len;
    if (!more) c->body_more = 0;
    if (!c->gather) lw_ac_wake_receiver(c); /* a gathered body wakes it when whole */
    if (c->buffered >= LW_ASGI_BODY_LIMIT) {
        c->read_paused = 1;
        rc = ASGI_PAUSE;
    }
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_conn_disconnect(asgi_conn *conn)
{
    lw_gil g;
    int rc = lw_ac_enter(conn, &g);
    if (rc) return rc;
    lw_ac_disconnect((lw_asgi_conn *)conn);
    lw_gil_release(&g);
    return 0;
}

LIBWSGI_API int asgi_conn_client_closed(asgi_conn *conn)
{
    lw_gil g;
    int rc = lw_ac_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    if (c->kind == LW_AC_WS) {
        lw_ac_disconnect(c); /* a WebSocket has no "whole response": the client is gone */
    } else if (!c->client_closed) {
        c->client_closed = 1;
        lw_ac_wake_receiver(c);
    }
    lw_gil_release(&g);
    return 0;
}

LIBWSGI_API int asgi_conn_resume(asgi_conn *conn)
{
    lw_gil g;
    int rc = lw_ac_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    if (c->send_waiter) {
        PyObject *fut = c->send_waiter;
        c->send_waiter = NULL;
        lw_future_set(fut, Py_NewRef(Py_None), 0);
        Py_DECREF(fut);
    }
    lw_gil_release(&g);
    return 0;
}

/* The task's await chain (boot.task_stack), to the log. */
static void lw_ac_log_stack(lw_asgi_conn *c)
{
    PyObject *fn = PyDict_GetItemString(PyModule_GetDict(c->app->rt->boot), "task_stack");
    PyObject *text = fn ? PyObject_CallOneArg(fn, c->task) : NULL;
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    if (t)
        lw_log(WSGI_LOG_ERROR, "cancelling the ASGI app's task: %s", t);
    else
        PyErr_Clear();
    Py_XDECREF(text);
}

LIBWSGI_API int asgi_conn_cancel(asgi_conn *conn)
{
    lw_gil g;
    int rc = lw_ac_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    if (!c->task && !c->done && !lw_lazy_task_of(&c->task))
        PyErr_Clear(); /* (from a callback while it runs without a Task: it gets one now) */
    if (c->task && !c->done) {
        PyObject *done = PyObject_CallMethod(c->task, "done", NULL);
        int ended = !done || PyObject_IsTrue(done) != 0;
        Py_XDECREF(done);
        PyErr_Clear();
        if (!ended) {
            lw_ac_log_stack(c);
            PyObject *r = PyObject_CallMethod(c->task, "cancel", NULL);
            if (!r) PyErr_Clear();
            Py_XDECREF(r);
        }
    }
    lw_gil_release(&g);
    return WSGI_OK;
}

/* Connections the host freed without the GIL, released at the next call that takes it. */
static lw_asgi_conn *lw_ac_free_list;

int lw_ac_frees_pending(void)
{
    return lw_ac_free_list != NULL;
}

void lw_ac_drain_frees(void)
{
    while (lw_ac_free_list) {
        lw_asgi_conn *c = lw_ac_free_list;
        lw_ac_free_list = c->free_next;
        Py_DECREF(c);
    }
}

LIBWSGI_API void asgi_conn_free(asgi_conn *conn)
{
    if (!conn) return;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    wsgi_runtime *rt = c->app->rt;
    if (LW_UNLIKELY(c->obs) && c->attached) {
        /* The host lets go: whatever the app does from now on is not reported. */
        lw_ac_observe_ws(c, 0, c->close_code ? c->close_code : 1006, 0);
        lw_ac_observe_done(c, 0, c->done);
    }
    if (c->done && c->attached && !c->recv_waiter &&
        !(c->recv_more && PyList_GET_SIZE(c->recv_more) > 0) && !c->send_waiter && rt == lw_rt &&
        rt->loop && pthread_equal(rt->loop_thread, pthread_self())) {
        /* The usual end: the app is over and nothing waits on the connection, so detaching it
         * runs no Python (what lw_ac_disconnect would do comes down to these flags); the host's
         * reference is dropped the next time the library holds the GIL. The fields read here
         * change only on the loop thread, which is this one. */
        lw_clear_error();
        c->attached = 0;
        c->disconnected = 1;
        if (!c->close_code) c->close_code = 1006;
        c->free_next = lw_ac_free_list;
        lw_ac_free_list = c;
        return;
    }
    lw_gil g;
    if (lw_ac_enter(conn, &g) != 0) return;
    c->attached = 0;
    lw_ac_disconnect(c);
    Py_DECREF(c);
    lw_gil_release(&g);
}

LIBWSGI_API int asgi_conn_error(const asgi_conn *conn)
{
    return conn ? ((const lw_asgi_conn *)conn)->error : WSGI_ERR_INVAL;
}

LIBWSGI_API const char *asgi_conn_errmsg(const asgi_conn *conn)
{
    const char *m = conn ? ((const lw_asgi_conn *)conn)->errmsg : NULL;
    return m ? m : "";
}
