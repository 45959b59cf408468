/* Error codes and their text, the per-thread "last error" message, the log callback plumbing
 * and Python traceback formatting. The library never prints: everything goes to the log callback.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char lw_errbuf[1024];

LIBWSGI_API const char *wsgi_strerror(int code)
{
    switch (code) {
    case WSGI_OK: return "success";
    case WSGI_ERR_INVAL: return "invalid argument";
    case WSGI_ERR_NOMEM: return "out of memory";
    case WSGI_ERR_STATE: return "invalid state for this call";
    case WSGI_ERR_RECURSIVE: return "called from inside a callback";
    case WSGI_ERR_PYTHON: return "Python interpreter error";
    case WSGI_ERR_APP_SPEC: return "malformed application spec";
    case WSGI_ERR_MODULE_NOT_FOUND: return "application module not found";
    case WSGI_ERR_IMPORT: return "application module failed to import";
    case WSGI_ERR_ATTRIBUTE: return "application attribute not found";
    case WSGI_ERR_NOT_CALLABLE: return "application object is not callable";
    case WSGI_ERR_INTERFACE: return "application does not speak this interface";
    case WSGI_ERR_APP: return "application raised an exception";
    case WSGI_ERR_NO_START_RESPONSE: return "application did not call start_response";
    case WSGI_ERR_BAD_STATUS: return "invalid response status";
    case WSGI_ERR_BAD_HEADER: return "invalid response header";
    case WSGI_ERR_BAD_ITERABLE: return "application returned a non-iterable";
    case WSGI_ERR_BAD_CHUNK: return "application yielded a non-bytes chunk";
    case WSGI_ERR_CALLBACK: return "host callback failed";
    case WSGI_ERR_IO: return "I/O error";
    case WSGI_ERR_TOO_LARGE: return "limit exceeded";
    default: return "unknown error";
    }
}

LIBWSGI_API const char *wsgi_errmsg(void)
{
    return lw_errbuf;
}

void lw_clear_error(void)
{
    lw_errbuf[0] = '\0';
}

int lw_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lw_errbuf, sizeof lw_errbuf, fmt, ap);
    va_end(ap);
    lw_log(code == WSGI_ERR_NOMEM || code == WSGI_ERR_PYTHON ? WSGI_LOG_ERROR : WSGI_LOG_DEBUG,
           "%s", lw_errbuf);
    return code;
}

/* Deliver a finished line to the host with the GIL released (callbacks never run with it). */
static void lw_emit(int level, const char *msg, size_t len)
{
    wsgi_runtime *rt = lw_rt;
    if (!rt || !rt->log) return;
    PyThreadState *save = NULL;
    if (Py_IsInitialized() && PyGILState_Check()) save = PyEval_SaveThread();
    rt->log(rt->log_user_data, level, msg, len);
    if (save) PyEval_RestoreThread(save);
}

void lw_logv(int level, const char *fmt, va_list ap)
{
    wsgi_runtime *rt = lw_rt;
    if (!rt || !rt->log || level > rt->log_level) return;
    char small[512];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)n < sizeof small) {
        va_end(ap2);
        lw_emit(level, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        va_end(ap2);
        lw_emit(level, small, sizeof small - 1); /* truncated beats nothing */
        return;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    lw_emit(level, big, (size_t)n);
    free(big);
}

void lw_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lw_logv(level, fmt, ap);
    va_end(ap);
}

/* Copy a str's UTF-8 form into a C buffer (replacing what cannot be encoded). */
static void lw_copy_str(PyObject *s, char *out, size_t size)
{
    if (!out || !size) return;
    out[0] = '\0';
    if (!s) return;
    PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "backslashreplace");
    if (!b) {
        PyErr_Clear();
        return;
    }
    snprintf(out, size, "%s", PyBytes_AS_STRING(b));
    Py_DECREF(b);
}

void lw_log_exception(const char *what, char *msg, size_t msg_size)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type) {
        if (msg && msg_size) snprintf(msg, msg_size, "%s", what);
        return;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value) PyException_SetTraceback(value, tb);

    /* One-line summary "ExcType: message" for errmsg. */
    if (msg && msg_size) {
        PyObject *name = PyObject_GetAttrString(type, "__name__");
        if (!name) PyErr_Clear(); /* never call into Python with an exception set */
        PyObject *text = value ? PyObject_Str(value) : NULL;
        if (!text) PyErr_Clear();
        char n[128] = "", t[768] = "";
        lw_copy_str(name, n, sizeof n);
        lw_copy_str(text, t, sizeof t);
        if (t[0])
            snprintf(msg, msg_size, "%s: %s: %s", what, n, t);
        else
            snprintf(msg, msg_size, "%s: %s", what, n);
        Py_XDECREF(name);
        Py_XDECREF(text);
    }

    wsgi_runtime *rt = lw_rt;
    if (rt && rt->log && rt->log_level >= WSGI_LOG_ERROR && rt->format_exc) {
        PyObject *formatted = PyObject_CallFunctionObjArgs(
            rt->format_exc, type, value ? value : Py_None, tb ? tb : Py_None, NULL);
        if (formatted) {
            const char *utf8 = PyUnicode_AsUTF8(formatted);
            if (utf8)
                lw_log(WSGI_LOG_ERROR, "%s:\n%s", what, utf8);
            else
                PyErr_Clear();
            Py_DECREF(formatted);
        } else {
            PyErr_Clear();
            lw_log(WSGI_LOG_ERROR, "%s (traceback unavailable)", what);
        }
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}
