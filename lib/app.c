/* Loading an application from a "module:attr" spec (via the bootstrap code), mapping load failures
 * to error codes, and the per-app environ template. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

LIBWSGI_API void wsgi_app_options_init(wsgi_app_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
}

/* Keys that are the same for every request of this app. */
static PyObject *lw_environ_template(wsgi_runtime *rt, wsgi_app *app, const char *software)
{
    lw_strings *s = &rt->s;
    PyObject *t = PyDict_New();
    if (!t) return NULL;
    PyObject *version = Py_BuildValue("(ii)", 1, 0);
    PyObject *sw = PyUnicode_DecodeLatin1(software, (Py_ssize_t)strlen(software), NULL);
    int bad = !version || !sw;
    bad = bad || PyDict_SetItem(t, s->wsgi_version, version) < 0;
    bad = bad || PyDict_SetItem(t, s->SERVER_SOFTWARE, sw) < 0;
    bad = bad || PyDict_SetItem(t, s->SCRIPT_NAME, app->script_name) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_url_scheme, s->http) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_errors, rt->errors_stream) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_file_wrapper, (PyObject *)&lw_FileWrapperType) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_input_terminated, Py_True) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_multithread,
                                (app->flags & WSGI_APP_MULTITHREAD) ? Py_True : Py_False) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_multiprocess,
                                (app->flags & WSGI_APP_MULTIPROCESS) ? Py_True : Py_False) < 0;
    bad = bad || PyDict_SetItem(t, s->wsgi_run_once,
                                (app->flags & WSGI_APP_RUN_ONCE) ? Py_True : Py_False) < 0;
    /* The keys every request sets, with placeholders: the copy then replaces values instead of
     * growing. Then a few throw-away keys, deleted again, so that the template's hash table (and
     * every copy of it, which PyDict_Copy clones as is) has room for the client's address and a
     * typical set of HTTP_* headers without a resize per request. Only speed depends on this. */
    PyObject *always[] = {s->REQUEST_METHOD, s->PATH_INFO,   s->QUERY_STRING,
                          s->RAW_URI,        s->REQUEST_URI, s->SERVER_PROTOCOL,
                          s->SERVER_NAME,    s->SERVER_PORT, s->wsgi_input};
    for (size_t i = 0; !bad && i < sizeof always / sizeof always[0]; i++)
        bad = PyDict_SetItem(t, always[i], s->empty) < 0;
    /* A dict of n (11..21) keys made without deletions has 32 slots of which 21 usable: the
     * (22 - n)th insertion grows it to 64 (42 usable); deletions do not shrink it. */
    Py_ssize_t n0 = bad ? 0 : PyDict_Size(t);
    for (Py_ssize_t i = 0; !bad && i < 22 - n0; i++) {
        PyObject *k = PyUnicode_FromFormat("libwsgi.reserved.%zd", i);
        bad = !k || PyDict_SetItem(t, k, Py_None) < 0 || PyDict_DelItem(t, k) < 0;
        Py_XDECREF(k);
    }
    Py_XDECREF(version);
    Py_XDECREF(sw);
    if (bad) Py_CLEAR(t);
    return t;
}

/* Map a failed boot.load_app() call to an error code; logs the traceback. */
static int lw_load_failed(wsgi_runtime *rt, const char *spec)
{
    int code = WSGI_ERR_IMPORT;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    char summary[768] = "";
    if (value && PyObject_IsInstance(value, rt->LoadError) == 1) {
        PyObject *c = PyObject_GetAttrString(value, "code");
        if (c && PyLong_Check(c)) code = (int)PyLong_AsLong(c);
        Py_XDECREF(c);
        PyObject *text = PyObject_Str(value);
        const char *u = text ? PyUnicode_AsUTF8(text) : NULL;
        if (u) snprintf(summary, sizeof summary, "%s", u);
        Py_XDECREF(text);
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
    char what[1024];
    snprintf(what, sizeof what, "cannot load app %s", spec);
    char msg[1024];
    lw_log_exception(what, msg, sizeof msg);
    return lw_fail(code, "%s: %s", what, summary[0] ? summary : msg);
}

LIBWSGI_API int wsgi_app_new(wsgi_runtime *rt, const wsgi_app_options *opts, wsgi_app **out)
{
    lw_clear_error();
    if (!out) return lw_fail(WSGI_ERR_INVAL, "out is NULL");
    *out = NULL;
    if (!rt || rt != lw_rt) return lw_fail(WSGI_ERR_INVAL, "runtime is NULL or not live");
    if (!opts || opts->struct_size < offsetof(wsgi_app_options, server_software) + sizeof(char *))
        return lw_fail(WSGI_ERR_INVAL, "options are NULL or struct_size is too small");
    if (!opts->spec) return lw_fail(WSGI_ERR_INVAL, "app spec is NULL");
    if (opts->interface < WSGI_INTERFACE_AUTO || opts->interface > WSGI_INTERFACE_ASGI)
        return lw_fail(WSGI_ERR_INVAL, "unknown interface %d", (int)opts->interface);
    const char *sn = opts->script_name ? opts->script_name : "";
    size_t sn_len = strlen(sn);
    while (sn_len > 0 && sn[sn_len - 1] == '/')
        sn_len--; /* "/app/" mounts like "/app" */
    if (sn_len > 0 && sn[0] != '/')
        return lw_fail(WSGI_ERR_INVAL, "script_name must start with '/': %s", sn);

    wsgi_app *app = calloc(1, sizeof *app);
    if (!app) return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    app->rt = rt;
    app->flags = opts->flags;
    app->script_name_c = strndup(sn, sn_len);
    app->script_name_len = sn_len;
    if (!app->script_name_c) {
        free(app);
        return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    }
    char software[64];
    snprintf(software, sizeof software, "libwsgi/%s", LIBWSGI_VERSION);

    lw_gil g;
    int rc = lw_gil_acquire(&g);
    if (rc) {
        free(app->script_name_c);
        free(app);
        return lw_fail(rc, "no Python thread state");
    }
    PyObject *res = PyObject_CallFunction(rt->load_app, "s", opts->spec);
    if (!res) {
        rc = lw_load_failed(rt, opts->spec);
        goto fail;
    }
    int is_asgi = PyObject_IsTrue(PyTuple_GET_ITEM(res, 1)) == 1; /* a bool from boot.py */
    app->callable = Py_NewRef(PyTuple_GET_ITEM(res, 0));
    Py_DECREF(res);
    app->iface = opts->interface != WSGI_INTERFACE_AUTO ? opts->interface
                 : is_asgi                               ? WSGI_INTERFACE_ASGI
                                                         : WSGI_INTERFACE_WSGI;
    app->script_name = PyUnicode_DecodeLatin1(sn, (Py_ssize_t)sn_len, NULL);
    if (!app->script_name ||
        !(app->environ_template = lw_environ_template(
              rt, app, opts->server_software ? opts->server_software : software))) {
        lw_log_exception("cannot build environ template", NULL, 0);
        rc = lw_fail(WSGI_ERR_NOMEM, "cannot build environ template");
        goto fail;
    }
    rt->n_apps++;
    lw_log(WSGI_LOG_INFO, "loaded %s app %s", app->iface == WSGI_INTERFACE_ASGI ? "ASGI" : "WSGI",
           opts->spec);
    lw_gil_release(&g);
    *out = app;
    return 0;

fail:
    Py_CLEAR(app->callable);
    Py_CLEAR(app->script_name);
    Py_CLEAR(app->environ_template);
    lw_gil_release(&g);
    free(app->script_name_c);
    free(app);
    return rc;
}

LIBWSGI_API void wsgi_app_free(wsgi_app *app)
{
    if (!app) return;
    lw_gil g;
    if (lw_gil_acquire(&g) == 0) {
        lw_responses_drain(); /* freed responses may still hold objects of this app */
        Py_CLEAR(app->callable);
        Py_CLEAR(app->script_name);
        Py_CLEAR(app->environ_template);
        lw_shapes_free(app);
        Py_CLEAR(app->lifespan);
        Py_CLEAR(app->state);
        lw_gil_release(&g);
    }
    if (app->rt == lw_rt && app->rt) app->rt->n_apps--;
    free(app->script_name_c);
    free(app);
}

LIBWSGI_API wsgi_interface wsgi_app_interface(const wsgi_app *app)
{
    return app ? app->iface : WSGI_INTERFACE_AUTO;
}

LIBWSGI_API wsgi_runtime *wsgi_app_runtime(const wsgi_app *app)
{
    return app ? app->rt : NULL;
}
