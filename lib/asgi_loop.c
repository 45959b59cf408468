/* The host-driven asyncio loop behind ASGI: created on first use from boot.make_loop(), exposed as
 * an fd + timeout + "one turn" call, woken from any thread through an eventfd. Also runs the
 * lifespan protocol (boot.Lifespan) to completion at startup and shutdown. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* boot code logs through this (level, message). */
static PyObject *lw_py_log(PyObject *self, PyObject *args)
{
    (void)self;
    int level;
    const char *msg;
    if (!PyArg_ParseTuple(args, "is", &level, &msg)) return NULL;
    lw_log(level, "%s", msg);
    Py_RETURN_NONE;
}
static PyMethodDef lw_py_log_def = {"log", lw_py_log, METH_VARARGS, "log(level, message)"};

static int lw_asgi_strings_init(wsgi_runtime *rt)
{
    lw_asgi_strings *a = calloc(1, sizeof *a);
    if (!a) {
        PyErr_NoMemory();
        return -1;
    }
    rt->as = a;
#define I(field, text)                                                                             \
    do {                                                                                           \
        if (!(a->field = PyUnicode_InternFromString(text))) return -1;                             \
    } while (0)
    I(type, "type");
    I(asgi, "asgi");
    I(http, "http");
    I(http_version, "http_version");
    I(method, "method");
    I(scheme, "scheme");
    I(path, "path");
    I(raw_path, "raw_path");
    I(query_string, "query_string");
    I(root_path, "root_path");
    I(headers, "headers");
    I(client, "client");
    I(server, "server");
    I(state, "state");
    I(extensions, "extensions");
    I(body, "body");
    I(more_body, "more_body");
    I(status, "status");
    I(trailers, "trailers");
    I(more_trailers, "more_trailers");
    I(http_request, "http.request");
    I(http_disconnect, "http.disconnect");
    I(resp_start, "http.response.start");
    I(resp_body, "http.response.body");
    I(resp_trailers, "http.response.trailers");
    I(resp_pathsend, "http.response.pathsend");
    I(ext_trailers, "http.response.trailers");
    I(ext_pathsend, "http.response.pathsend");
    I(v10, "1.0");
    I(v11, "1.1");
    I(v2, "2");
    I(https, "https");
    I(websocket, "websocket");
    I(ws, "ws");
    I(wss, "wss");
    I(subprotocols, "subprotocols");
    I(subprotocol, "subprotocol");
    I(text, "text");
    I(bytes, "bytes");
    I(code, "code");
    I(reason, "reason");
    I(ws_connect, "websocket.connect");
    I(ws_receive, "websocket.receive");
    I(ws_disconnect, "websocket.disconnect");
    I(ws_accept, "websocket.accept");
    I(ws_send, "websocket.send");
    I(ws_close, "websocket.close");
    I(ws_resp_start, "websocket.http.response.start");
    I(ws_resp_body, "websocket.http.response.body");
    I(ext_ws_response, "websocket.http.response");
#undef I
    return 0;
}

static void lw_asgi_strings_free(wsgi_runtime *rt)
{
    if (!rt->as) return;
    PyObject **p = (PyObject **)rt->as;
    for (size_t i = 0; i < sizeof *rt->as / sizeof(PyObject *); i++)
        Py_CLEAR(p[i]);
    free(rt->as);
    rt->as = NULL;
}

/* Create the loop on first use; the calling thread becomes the loop thread. GIL held. */
int lw_asgi_loop_ensure(wsgi_runtime *rt)
{
    if (rt->loop) return 0;
    int rc = WSGI_ERR_PYTHON;
    PyObject *ns = PyModule_GetDict(rt->boot);
    PyObject *make_loop = PyDict_GetItemString(ns, "make_loop");
    rt->run_once = Py_XNewRef(PyDict_GetItemString(ns, "run_once"));
    rt->loop_timeout_fn = Py_XNewRef(PyDict_GetItemString(ns, "loop_timeout"));
    rt->lifespan_cls = Py_XNewRef(PyDict_GetItemString(ns, "Lifespan"));
    if (!make_loop || !rt->run_once || !rt->loop_timeout_fn || !rt->lifespan_cls) {
        rc = lw_fail(WSGI_ERR_PYTHON, "boot code lacks the ASGI loop helpers");
        goto fail;
    }
    if (lw_asgi_strings_init(rt) < 0 || lw_asgi_types_ready() < 0) {
        lw_log_exception("ASGI setup", NULL, 0);
        rc = lw_fail(WSGI_ERR_PYTHON, "cannot initialise ASGI support");
        goto fail;
    }
    rt->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->wake_fd < 0) {
        rc = lw_fail(WSGI_ERR_PYTHON, "eventfd: %s", strerror(errno));
        goto fail;
    }
    PyObject *r = PyObject_CallFunction(make_loop, "i", rt->wake_fd);
    if (!r) {
        char msg[512];
        lw_log_exception("creating the asyncio loop", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_PYTHON, "%s", msg);
        goto fail;
    }
    rt->loop = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    rt->loop_fd = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
    Py_DECREF(r);
    rt->create_future = PyObject_GetAttrString(rt->loop, "create_future");
    rt->create_task = PyObject_GetAttrString(rt->loop, "create_task");
    rt->asgi_version = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.5");
    if (!rt->create_future || !rt->create_task || !rt->asgi_version) {
        lw_log_exception("ASGI loop", NULL, 0);
        rc = lw_fail(WSGI_ERR_PYTHON, "cannot initialise the asyncio loop");
        goto fail;
    }
    rt->loop_thread = pthread_self();
    lw_log(WSGI_LOG_DEBUG, "asyncio loop created (fd %d)", rt->loop_fd);
    return 0;
fail:
    lw_asgi_loop_free(rt); /* nothing half-built survives: the next call starts over */
    return rc;
}

/* Called by wsgi_runtime_free with the GIL held. */
void lw_asgi_loop_free(wsgi_runtime *rt)
{
    if (rt->loop) {
        PyObject *r = PyObject_CallMethod(rt->loop, "close", NULL);
        if (!r) lw_log_exception("closing the asyncio loop", NULL, 0);
        Py_XDECREF(r);
    }
    Py_CLEAR(rt->loop);
    Py_CLEAR(rt->run_once);
    Py_CLEAR(rt->loop_timeout_fn);
    Py_CLEAR(rt->create_future);
    Py_CLEAR(rt->create_task);
    Py_CLEAR(rt->lifespan_cls);
    Py_CLEAR(rt->asgi_version);
    lw_asgi_strings_free(rt);
    if (rt->wake_fd >= 0) close(rt->wake_fd);
    rt->wake_fd = rt->loop_fd = -1;
}

int lw_asgi_enter(wsgi_runtime *rt, lw_gil *g)
{
    lw_clear_error();
    if (!rt || rt != lw_rt) return lw_fail(WSGI_ERR_INVAL, "runtime is NULL or not live");
    if (rt->loop && !pthread_equal(rt->loop_thread, pthread_self()))
        return lw_fail(WSGI_ERR_STATE, "asgi_* called from a thread other than the loop thread");
    int rc = lw_gil_acquire(g);
    if (rc) return lw_fail(rc, "no Python thread state");
    if ((rc = lw_asgi_loop_ensure(rt)) != 0) lw_gil_release(g);
    return rc;
}

LIBWSGI_API int asgi_loop_fd(wsgi_runtime *rt)
{
    if (rt && rt == lw_rt && rt->loop && pthread_equal(rt->loop_thread, pthread_self()))
        return rt->loop_fd;
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc;
    lw_gil_release(&g);
    return rt->loop_fd;
}

LIBWSGI_API int asgi_loop_timeout(wsgi_runtime *rt)
{
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc < -1 ? rc : WSGI_ERR_STATE;
    PyObject *r = PyObject_CallOneArg(rt->loop_timeout_fn, rt->loop);
    long ms = r ? PyLong_AsLong(r) : 0;
    Py_XDECREF(r);
    if (PyErr_Occurred()) {
        lw_log_exception("computing the loop timeout", NULL, 0);
        ms = 0;
    }
    lw_gil_release(&g);
    if (ms > INT32_MAX) ms = INT32_MAX;
    return (int)ms;
}

LIBWSGI_API int asgi_loop_run(wsgi_runtime *rt)
{
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc;
    if (rt->loop_turn) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_RECURSIVE, "asgi_loop_run called from inside a loop callback");
    }
    rt->loop_turn = 1;
    PyObject *r = PyObject_CallOneArg(rt->run_once, rt->loop);
    rt->loop_turn = 0;
    if (!r) {
        char msg[512];
        lw_log_exception("asyncio loop turn", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_PYTHON, "%s", msg);
    }
    Py_XDECREF(r);
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_loop_wakeup(wsgi_runtime *rt)
{
    if (!rt || rt->wake_fd < 0) return WSGI_ERR_STATE;
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(rt->wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    return 0; /* EAGAIN means the counter is already non-zero: the loop is awake anyway */
}

/* The app's lifespan failure message as UTF-8, never NULL and never leaving an exception set. */
static const char *lw_lifespan_message(PyObject *r)
{
    const char *m = PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : "";
    if (!m) {
        PyErr_Clear();
        m = "(message is not UTF-8 encodable)";
    }
    return m;
}

/* Run coroutine method `name` of the app's Lifespan to completion; returns its result. */
static PyObject *lw_lifespan_run(wsgi_runtime *rt, wsgi_app *app, const char *name)
{
    PyObject *coro = PyObject_CallMethod(app->lifespan, name, NULL);
    if (!coro) return NULL;
    rt->loop_turn = 1;
    PyObject *r = PyObject_CallMethod(rt->loop, "run_until_complete", "O", coro);
    rt->loop_turn = 0;
    Py_DECREF(coro);
    return r;
}

static int lw_lifespan_enter(wsgi_app *app, lw_gil *g)
{
    if (!app) return lw_fail(WSGI_ERR_INVAL, "app is NULL");
    if (app->iface != WSGI_INTERFACE_ASGI)
        return lw_fail(WSGI_ERR_INTERFACE, "lifespan on an app that is not ASGI");
    int rc = lw_asgi_enter(app->rt, g);
    if (rc) return rc;
    if (app->rt->loop_turn) {
        lw_gil_release(g);
        return lw_fail(WSGI_ERR_RECURSIVE, "lifespan called from inside a loop callback");
    }
    return 0;
}

LIBWSGI_API int asgi_lifespan_startup(wsgi_app *app)
{
    lw_gil g;
    int rc = lw_lifespan_enter(app, &g);
    if (rc) return rc;
    wsgi_runtime *rt = app->rt;
    if (app->lifespan) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_STATE, "lifespan startup already ran for this app");
    }
    PyObject *log = PyCFunction_New(&lw_py_log_def, NULL);
    app->lifespan =
        log ? PyObject_CallFunctionObjArgs(rt->lifespan_cls, app->callable, rt->loop, log, NULL)
            : NULL;
    Py_XDECREF(log);
    PyObject *r = app->lifespan ? lw_lifespan_run(rt, app, "startup") : NULL;
    if (!r) {
        char msg[512];
        lw_log_exception("lifespan startup", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_APP, "%s", msg);
    } else if (r == Py_True) {
        rc = 0;
        lw_log(WSGI_LOG_INFO, "lifespan startup complete");
    } else if (r == Py_None) {
        rc = ASGI_LIFESPAN_UNSUPPORTED;
    } else {
        rc = lw_fail(WSGI_ERR_APP, "lifespan startup failed: %s", lw_lifespan_message(r));
        lw_log(WSGI_LOG_ERROR, "%s", wsgi_errmsg());
    }
    Py_XDECREF(r);
    if (app->lifespan && rc >= 0) {
        Py_XSETREF(app->state, PyObject_GetAttrString(app->lifespan, "state"));
        if (!app->state) PyErr_Clear();
    }
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_lifespan_shutdown(wsgi_app *app)
{
    lw_gil g;
    int rc = lw_lifespan_enter(app, &g);
    if (rc) return rc;
    if (!app->lifespan) {
        lw_gil_release(&g);
        return 0;
    }
    PyObject *r = lw_lifespan_run(app->rt, app, "shutdown");
    if (!r) {
        char msg[512];
        lw_log_exception("lifespan shutdown", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_APP, "%s", msg);
    } else if (r != Py_True) {
        rc = lw_fail(WSGI_ERR_APP, "lifespan shutdown failed: %s", lw_lifespan_message(r));
        lw_log(WSGI_LOG_ERROR, "%s", wsgi_errmsg());
    } else {
        lw_log(WSGI_LOG_INFO, "lifespan shutdown complete");
    }
    Py_XDECREF(r);
    Py_CLEAR(app->lifespan);
    lw_gil_release(&g);
    return rc;
}
