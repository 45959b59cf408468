/* One ASGI WebSocket connection (spec 2.5): the websocket.* events on top of the connection object
 * of asgi_conn.c. The host does the handshake and the framing (RFC 6455); here are the state
 * machine of the app's side (connect → accept or denial → messages → close), the bounded queue of
 * incoming messages, the validation of every event the app sends, and what the end of the app's
 * task means for the client (403 — 500 if it raised — before the accept, a Close frame with 1000 or
 * 1011 after it).
 *
 * The denial response of the websocket.http.response extension is an HTTP response: it goes
 * through asgi_conn.c's start/body code and the host's on_start/on_body, like http.response.*. */
#include "asgi_conn.h"

#include <string.h>

/* Incoming messages not yet received by the app above which the host is asked to stop reading. */
#define LW_WS_QUEUE_MSGS  32
#define LW_WS_QUEUE_BYTES (1024 * 1024)

static const wsgi_header lw_403_headers[] = {
    {"Content-Type", 12, "text/plain; charset=utf-8", 25},
    {"Content-Length", 14, "10", 2},
};
static const char lw_403_body[] = "Forbidden\n";
static const wsgi_response_head lw_403_head = {403, "403 Forbidden",        13, lw_403_headers,
                                               2,   sizeof lw_403_body - 1, 0};

extern const char lw_500_body[];
extern const wsgi_response_head lw_500_head;

/* {"type": type} plus up to two more keys (stolen values). */
static PyObject *lw_ws_event(PyObject *type, PyObject *k1, PyObject *v1, PyObject *k2, PyObject *v2)
{
    PyObject *ev = PyDict_New();
    int bad = !ev || PyDict_SetItem(ev, lw_rt->as->type, type) < 0;
    if (k1) bad = bad || !v1 || PyDict_SetItem(ev, k1, v1) < 0;
    if (k2) bad = bad || !v2 || PyDict_SetItem(ev, k2, v2) < 0;
    Py_XDECREF(v1);
    Py_XDECREF(v2);
    if (bad) Py_CLEAR(ev);
    return ev;
}

PyObject *lw_ws_next_event(lw_asgi_conn *c)
{
    lw_asgi_strings *a = lw_rt->as;
    if (!c->connect_sent) {
        c->connect_sent = 1;
        return lw_ws_event(a->ws_connect, NULL, NULL, NULL, NULL);
    }
    /* Messages that arrived before the disconnect are still delivered, in order. */
    if (lw_ac_queued(c) > 0) {
        PyObject *ev = Py_NewRef(PyList_GET_ITEM(c->body, 0));
        if (PyList_SetSlice(c->body, 0, 1, NULL) < 0) {
            Py_DECREF(ev);
            return NULL;
        }
        PyObject *data = PyDict_GetItemWithError(ev, a->bytes);
        if (!data) data = PyDict_GetItemWithError(ev, a->text);
        size_t sz = 0;
        if (data && PyBytes_Check(data)) sz = (size_t)PyBytes_GET_SIZE(data);
        if (data && PyUnicode_Check(data)) sz = (size_t)PyUnicode_GET_LENGTH(data);
        c->buffered = c->buffered > sz ? c->buffered - sz : 0;
        if (lw_ac_queued(c) == 0) c->buffered = 0;
        if (c->read_paused && lw_ac_queued(c) <= LW_WS_QUEUE_MSGS / 2 &&
            c->buffered <= LW_WS_QUEUE_BYTES / 2) {
            c->read_paused = 0;
            if (c->h.on_read_resume) LW_AC_CALL(c, (c->h.on_read_resume(c->ud), 0));
        }
        return ev;
    }
    if (c->disconnected)
        return lw_ws_event(a->ws_disconnect, a->code, PyLong_FromLong(c->close_code), a->reason,
                           c->close_reason ? Py_NewRef(c->close_reason)
                                           : PyUnicode_FromStringAndSize("", 0));
    return NULL;
}

/* ---- send() --------------------------------------------------------------------------------- */

static int lw_ws_accept(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->wstate != WS_CONNECTING || c->rstate != R_START) {
        PyErr_SetString(PyExc_RuntimeError,
                        c->wstate == WS_OPEN
                            ? "unexpected ASGI message 'websocket.accept': already accepted"
                            : "unexpected ASGI message 'websocket.accept': the connection was "
                              "closed or denied");
        return -1;
    }
    PyObject *sp = PyDict_GetItemWithError(msg, a->subprotocol);
    if (!sp && PyErr_Occurred()) return -1;
    const char *spp = NULL;
    Py_ssize_t spl = 0;
    if (sp && sp != Py_None) {
        if (!PyUnicode_Check(sp)) {
            PyErr_Format(PyExc_TypeError,
                         "websocket.accept 'subprotocol' must be a str or None, "
                         "not %.100s",
                         Py_TYPE(sp)->tp_name);
            return -1;
        }
        if (!(spp = PyUnicode_AsUTF8AndSize(sp, &spl))) return -1;
        if (!lw_is_token(spp, (size_t)spl)) {
            PyErr_Format(PyExc_ValueError, "websocket.accept 'subprotocol' %R is not a token", sp);
            return -1;
        }
        /* RFC 6455 4.2.2: one of the client's values, or its client fails the connection (4.1).
         * PyUnicode_Compare runs no app code (no __eq__ of a str subclass). */
        int offered = 0;
        for (Py_ssize_t i = 0; c->offered && i < PyTuple_GET_SIZE(c->offered) && !offered; i++)
            offered = PyUnicode_Compare(PyTuple_GET_ITEM(c->offered, i), sp) == 0;
        if (!offered) {
            PyErr_Format(PyExc_ValueError,
                         "websocket.accept 'subprotocol' %R was not offered by the client "
                         "(scope['subprotocols'] lists those it offered)",
                         sp);
            return -1;
        }
    }
    /* Converting the headers may run app code (an iterable), which may drop the message's
     * reference to the subprotocol: spp points into it, so keep it until the callback is done. */
    PyObject *sp_keep = spp ? Py_NewRef(sp) : NULL;
    lw_hdrs h;
    lw_hdrs_init(&h);
    PyObject *hv = PyDict_GetItemWithError(msg, a->headers);
    if (PyErr_Occurred() || lw_hdrs_parse(hv, &h, "websocket.accept") < 0) {
        lw_hdrs_free(&h);
        Py_XDECREF(sp_keep);
        return -1;
    }
    for (size_t i = 0; i < h.n; i++) {
        if (h.v[i].name_len == 22 &&
            PyOS_strnicmp(h.v[i].name, "sec-websocket-protocol", 22) == 0) {
            lw_hdrs_free(&h);
            Py_XDECREF(sp_keep);
            PyErr_SetString(PyExc_ValueError, "websocket.accept 'headers' must not contain "
                                              "sec-websocket-protocol: use 'subprotocol'");
            return -1;
        }
    }
    c->wstate = WS_OPEN;
    if (c->obs) c->obs->status_sent = 101;
    int r = LW_AC_CALL(c, c->h.on_ws_accept(c->ud, spp, (size_t)spl, h.v, h.n));
    lw_hdrs_free(&h);
    Py_XDECREF(sp_keep);
    if (r >= 0 && LW_UNLIKELY(c->obs)) lw_ac_observe_ws(c, 1, 0, 1);
    return lw_ac_result(c, r, "on_ws_accept");
}

/* A message's optional key: NULL (missing or None) or the value, borrowed. -1 on error. */
static int lw_ws_opt(PyObject *msg, PyObject *key, PyObject **out)
{
    PyObject *v = PyDict_GetItemWithError(msg, key);
    if (!v && PyErr_Occurred()) return -1;
    *out = v == Py_None ? NULL : v;
    return 0;
}

static int lw_ws_data(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->wstate != WS_OPEN) {
        PyErr_SetString(PyExc_RuntimeError,
                        c->wstate == WS_CONNECTING
                            ? "unexpected ASGI message 'websocket.send': not accepted yet"
                            : "unexpected ASGI message 'websocket.send': after websocket.close");
        return -1;
    }
    PyObject *bytes, *text;
    if (lw_ws_opt(msg, a->bytes, &bytes) < 0 || lw_ws_opt(msg, a->text, &text) < 0) return -1;
    if (!bytes == !text) {
        PyErr_SetString(PyExc_ValueError,
                        "websocket.send needs exactly one of 'bytes' and 'text' that is not None");
        return -1;
    }
    const char *p;
    Py_ssize_t n;
    PyObject *keep;
    if (bytes) {
        if (!PyBytes_Check(bytes)) {
            PyErr_Format(PyExc_TypeError, "websocket.send 'bytes' must be bytes, not %.100s",
                         Py_TYPE(bytes)->tp_name);
            return -1;
        }
        p = PyBytes_AS_STRING(bytes);
        n = PyBytes_GET_SIZE(bytes);
        keep = bytes;
    } else {
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "websocket.send 'text' must be a str, not %.100s",
                         Py_TYPE(text)->tp_name);
            return -1;
        }
        /* The UTF-8 form is cached in the str object: it lives as long as the str we hold. */
        if (!(p = PyUnicode_AsUTF8AndSize(text, &n))) return -1;
        keep = text;
    }
    /* The previous message stays valid through this callback (the host may still queue it). The
     * new one is held before the oldest is released: that may run app code (a __del__), which may
     * drop the message's own reference to keep. */
    PyObject *oldest = c->held[1];
    c->held[1] = c->held[0];
    c->held[0] = Py_NewRef(keep);
    Py_XDECREF(oldest);
    c->sent += n;
    int r =
        LW_AC_CALL(c, c->h.on_ws_send(c->ud, bytes ? ASGI_WS_BINARY : ASGI_WS_TEXT, p, (size_t)n));
    return lw_ac_result(c, r, "on_ws_send");
}

/* Our Close goes out (the app's, or ours at the end of its task): from now on what the client
 * sends is dropped, not queued, so a host that stopped reading on a full queue reads again, to see
 * the client's answering Close (the app may never take what is queued). */
static void lw_ws_closing(lw_asgi_conn *c)
{
    c->wstate = WS_CLOSED;
    if (c->read_paused) {
        c->read_paused = 0;
        if (c->h.on_read_resume) LW_AC_CALL(c, (c->h.on_read_resume(c->ud), 0));
    }
}

/* Codes an endpoint may put in a Close frame (RFC 6455 7.4; 1004-1006 and 1015 are reserved). */
static int lw_ws_code_ok(long code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

static int lw_ws_close(lw_asgi_conn *c, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (c->wstate == WS_CLOSED || c->rstate != R_START) {
        PyErr_SetString(PyExc_RuntimeError,
                        c->rstate != R_START
                            ? "unexpected ASGI message 'websocket.close': a denial response was "
                              "started"
                            : "unexpected ASGI message 'websocket.close': already closed");
        return -1;
    }
    PyObject *code, *reason;
    if (lw_ws_opt(msg, a->code, &code) < 0 || lw_ws_opt(msg, a->reason, &reason) < 0) return -1;
    long cv = 1000;
    if (code) {
        if (!PyLong_Check(code)) {
            PyErr_Format(PyExc_TypeError, "websocket.close 'code' must be an int, not %.100s",
                         Py_TYPE(code)->tp_name);
            return -1;
        }
        cv = PyLong_AsLong(code);
        if (cv == -1 && PyErr_Occurred()) return -1;
        if (!lw_ws_code_ok(cv)) {
            PyErr_Format(PyExc_ValueError,
                         "websocket.close 'code' %R cannot be sent (RFC 6455 "
                         "7.4: 1000-1003, 1007-1014 or 3000-4999)",
                         code);
            return -1;
        }
    }
    const char *rp = "";
    Py_ssize_t rl = 0;
    if (reason) {
        if (!PyUnicode_Check(reason)) {
            PyErr_Format(PyExc_TypeError, "websocket.close 'reason' must be a str, not %.100s",
                         Py_TYPE(reason)->tp_name);
            return -1;
        }
        if (!(rp = PyUnicode_AsUTF8AndSize(reason, &rl))) return -1;
        if (rl > 123) {
            PyErr_Format(PyExc_ValueError,
                         "websocket.close 'reason' is %zd bytes in UTF-8; a Close frame holds 123",
                         rl);
            return -1;
        }
    }
    if (c->wstate == WS_CONNECTING) {
        /* Before the accept: deny the handshake with 403 (ASGI spec). */
        lw_log(WSGI_LOG_INFO, "ASGI app closed the WebSocket before accepting it: 403");
        lw_ac_fixed_response(c, &lw_403_head, lw_403_body);
        c->wstate = WS_CLOSED;
        return 0;
    }
    /* rp points into reason, borrowed from the message: callbacks run without the GIL, when
     * another thread may change the message, so hold it until they are done. */
    PyObject *reason_keep = Py_XNewRef(reason);
    lw_ws_closing(c);
    if (LW_UNLIKELY(c->obs)) lw_ac_observe_ws(c, 0, (int)cv, 1);
    int r = LW_AC_CALL(c, c->h.on_ws_close(c->ud, (int)cv, rp, (size_t)rl));
    Py_XDECREF(reason_keep);
    return lw_ac_result(c, r, "on_ws_close");
}

int lw_ws_send(lw_asgi_conn *c, PyObject *type, PyObject *msg)
{
    lw_asgi_strings *a = lw_rt->as;
    if (lw_streq(type, a->ws_send)) return lw_ws_data(c, msg);
    if (lw_streq(type, a->ws_accept)) return lw_ws_accept(c, msg);
    if (lw_streq(type, a->ws_close)) return lw_ws_close(c, msg);
    if (lw_streq(type, a->ws_resp_start) || lw_streq(type, a->ws_resp_body)) {
        if (c->wstate != WS_CONNECTING && c->rstate == R_START) {
            PyErr_Format(PyExc_RuntimeError,
                         "unexpected ASGI message %R: the WebSocket was already %s", type,
                         c->wstate == WS_OPEN ? "accepted" : "closed");
            return -1;
        }
        return lw_streq(type, a->ws_resp_start) ? lw_ac_start(c, msg) : lw_ac_body(c, msg);
    }
    PyErr_Format(PyExc_RuntimeError, "unexpected ASGI message type %R on a WebSocket", type);
    return -1;
}

/* ---- the end of the app's task -------------------------------------------------------------- */

int lw_ws_task_end(lw_asgi_conn *c, int result)
{
    if (c->rstate == R_DONE || (c->wstate == WS_CLOSED && c->rstate == R_START)) {
        /* Denied or closed by the app: the protocol is complete; a later error was logged. */
        return 0;
    }
    if (c->wstate == WS_OPEN) {
        /* Accepted and not closed: close for the app, 1011 if it failed (RFC 6455 7.4.1). */
        if (!c->disconnected) {
            int code = result ? 1011 : 1000;
            lw_log(result ? WSGI_LOG_ERROR : WSGI_LOG_DEBUG,
                   "ASGI app ended without closing the WebSocket: closing with %d", code);
            lw_ws_closing(c);
            if (LW_UNLIKELY(c->obs)) lw_ac_observe_ws(c, 0, code, 1);
            LW_AC_CALL(c, c->h.on_ws_close(c->ud, code, "", 0));
        }
        return result;
    }
    /* Before the accept. */
    if (c->rstate == R_BODY && !c->head_pending) {
        /* A denial response was cut half way. */
        if (!result) {
            lw_log(WSGI_LOG_ERROR, "ASGI app returned without completing its denial response");
            lw_ac_fail(c, WSGI_ERR_APP, "ASGI app returned without completing the response");
        }
        return c->error ? c->error : WSGI_ERR_APP;
    }
    /* A denial response started but never given a body: an application error, as on HTTP (the
     * held head is replaced by a 500). */
    if (!result && c->head_pending && !c->disconnected) {
        lw_log(WSGI_LOG_ERROR, "ASGI app ended after websocket.http.response.start without a body "
                               "event: the held head is replaced by a 500");
        lw_ac_fail(c, WSGI_ERR_APP, "ASGI app returned without completing the response");
        result = WSGI_ERR_APP;
    }
    /* Returning without an answer is a denial (403, as for websocket.close); an exception is an
     * application error, answered like one on HTTP: 500, since nothing was sent. */
    if (!result)
        lw_log(WSGI_LOG_INFO, "ASGI app returned without accepting the WebSocket: 403%s",
               c->disconnected ? " (client disconnected)" : "");
    c->wstate = WS_CLOSED;
    if (!c->disconnected)
        lw_ac_fixed_response(c, result ? &lw_500_head : &lw_403_head,
                             result ? lw_500_body : lw_403_body);
    return result;
}

/* ---- public API ----------------------------------------------------------------------------- */

static int lw_ws_enter(asgi_conn *conn, lw_gil *g)
{
    if (!conn) return lw_fail(WSGI_ERR_INVAL, "conn is NULL");
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    int rc = lw_asgi_enter(c->app->rt, g);
    if (rc) return rc;
    if (c->kind != LW_AC_WS) {
        lw_gil_release(g);
        return lw_fail(WSGI_ERR_STATE, "not a WebSocket connection");
    }
    return 0;
}

LIBWSGI_API int asgi_conn_ws_message(asgi_conn *conn, int type, const char *data, size_t len)
{
    if (!data && len) return lw_fail(WSGI_ERR_INVAL, "data is NULL with len > 0");
    if (type != ASGI_WS_TEXT && type != ASGI_WS_BINARY)
        return lw_fail(WSGI_ERR_INVAL, "type must be ASGI_WS_TEXT or ASGI_WS_BINARY");
    if (len > PY_SSIZE_T_MAX) return lw_fail(WSGI_ERR_INVAL, "message too long");
    lw_gil g;
    int rc = lw_ws_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    lw_asgi_strings *a = lw_rt->as;
    if (c->disconnected || c->wstate == WS_CONNECTING || c->done) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_STATE, c->wstate == WS_CONNECTING
                                           ? "the WebSocket is not accepted"
                                           : "the WebSocket connection has ended");
    }
    if (c->wstate == WS_CLOSED) {
        /* The app closed: what the client sent before it saw our Close frame is dropped. */
        lw_gil_release(&g);
        return 0;
    }
    PyObject *v = type == ASGI_WS_TEXT
                      ? PyUnicode_DecodeUTF8(data ? data : "", (Py_ssize_t)len, "strict")
                      : PyBytes_FromStringAndSize(data ? data : "", (Py_ssize_t)len);
    if (!v) {
        int bad_text = PyErr_ExceptionMatches(PyExc_UnicodeDecodeError);
        PyErr_Clear();
        lw_gil_release(&g);
        return bad_text ? lw_fail(WSGI_ERR_INVAL, "text message is not valid UTF-8")
                        : lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    PyObject *ev =
        lw_ws_event(a->ws_receive, type == ASGI_WS_TEXT ? a->text : a->bytes, v, NULL, NULL);
    if (!ev || lw_ac_queue(c, ev) < 0) {
        Py_XDECREF(ev);
        PyErr_Clear();
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    Py_DECREF(ev);
    if (c->obs) c->obs->bytes_in += len;
    /* Counted as the app will see it (characters for text): what next_event subtracts. */
    c->buffered += type == ASGI_WS_TEXT ? (size_t)PyUnicode_GET_LENGTH(v) : len;
    lw_ac_wake_receiver(c);
    if (lw_ac_queued(c) >= LW_WS_QUEUE_MSGS || c->buffered >= LW_WS_QUEUE_BYTES) {
        c->read_paused = 1;
        rc = ASGI_PAUSE;
    }
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_conn_ws_closed(asgi_conn *conn, int code, const char *reason,
                                    size_t reason_len)
{
    if (!reason && reason_len) return lw_fail(WSGI_ERR_INVAL, "reason is NULL with reason_len > 0");
    lw_gil g;
    int rc = lw_ws_enter(conn, &g);
    if (rc) return rc;
    lw_asgi_conn *c = (lw_asgi_conn *)conn;
    if (LW_UNLIKELY(c->obs)) lw_ac_observe_ws(c, 0, code, 1);
    if (!c->disconnected) {
        c->close_code = code;
        Py_XSETREF(c->close_reason,
                   PyUnicode_DecodeUTF8(reason ? reason : "", (Py_ssize_t)reason_len, "replace"));
        PyErr_Clear();
        lw_ac_disconnect(c);
    }
    lw_gil_release(&g);
    return 0;
}
