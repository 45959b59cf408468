/* wsgi.errors: a text stream whose complete lines go to the host's log callback at WARNING level.
 * One object serves every request; partial lines wait for their newline or for flush(). */
#include "internal.h"

#include <string.h>

typedef struct lw_errors {
    PyObject_HEAD PyObject *pending; /* str: text after the last newline */
} lw_errors;

PyObject *lw_errors_new(void)
{
    lw_errors *e = PyObject_New(lw_errors, &lw_ErrorsType);
    if (!e) return NULL;
    e->pending = PyUnicode_FromStringAndSize("", 0);
    if (!e->pending) {
        Py_DECREF(e);
        return NULL;
    }
    return (PyObject *)e;
}

static void lw_errors_dealloc(lw_errors *e)
{
    Py_XDECREF(e->pending);
    PyObject_Free(e);
}

static void lw_errors_emit(PyObject *line)
{
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(line, &n);
    if (!u) {
        PyErr_Clear();
        return;
    }
    lw_log(WSGI_LOG_WARNING, "%.*s", (int)n, u);
}

static int lw_errors_write_str(lw_errors *e, PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "wsgi.errors.write() argument must be str, not %.100s",
                     Py_TYPE(s)->tp_name);
        return -1;
    }
    PyObject *text = PyUnicode_Concat(e->pending, s);
    if (!text) return -1;
    /* Take the complete lines and store the rest before logging: emitting releases the GIL, and
     * another thread may write to this shared stream meanwhile. */
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    Py_ssize_t last = PyUnicode_FindChar(text, '\n', 0, len, -1);
    if (last == -2) {
        Py_DECREF(text);
        return -1;
    }
    PyObject *rest = PyUnicode_Substring(text, last + 1, len);
    PyObject *lines = rest && last >= 0 ? PyUnicode_Substring(text, 0, last) : NULL;
    Py_DECREF(text);
    if (!rest || (last >= 0 && !lines)) {
        Py_XDECREF(rest);
        return -1;
    }
    Py_SETREF(e->pending, rest);
    if (!lines) return 0;
    PyObject *nl = PyUnicode_FromStringAndSize("\n", 1);
    PyObject *split = nl ? PyUnicode_Split(lines, nl, -1) : NULL;
    Py_XDECREF(nl);
    Py_DECREF(lines);
    if (!split) return -1;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(split); k++)
        lw_errors_emit(PyList_GET_ITEM(split, k));
    Py_DECREF(split);
    return 0;
}

static PyObject *lw_errors_write(lw_errors *e, PyObject *s)
{
    if (lw_errors_write_str(e, s) < 0) return NULL;
    return PyLong_FromSsize_t(PyUnicode_GET_LENGTH(s));
}

static PyObject *lw_errors_writelines(lw_errors *e, PyObject *seq)
{
    PyObject *it = PyObject_GetIter(seq);
    if (!it) return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        int r = lw_errors_write_str(e, item);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *lw_errors_flush(lw_errors *e, PyObject *unused)
{
    (void)unused;
    if (PyUnicode_GET_LENGTH(e->pending) > 0) {
        PyObject *line = e->pending;
        e->pending = PyUnicode_FromStringAndSize("", 0);
        if (!e->pending) {
            e->pending = line;
            return NULL;
        }
        lw_errors_emit(line);
        Py_DECREF(line);
    }
    Py_RETURN_NONE;
}

static PyMethodDef lw_errors_methods[] = {
    {"write", (PyCFunction)lw_errors_write, METH_O, "write(str): log complete lines."},
    {"writelines", (PyCFunction)lw_errors_writelines, METH_O, "writelines(iterable of str)."},
    {"flush", (PyCFunction)lw_errors_flush, METH_NOARGS, "flush(): log a pending partial line."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject lw_ErrorsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.Errors",
    .tp_basicsize = sizeof(lw_errors),
    .tp_dealloc = (destructor)lw_errors_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.errors: a text stream written to the host's log.",
    .tp_methods = lw_errors_methods,
};
