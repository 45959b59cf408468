/* wsgi.file_wrapper, a Python type written in C. Iterating it reads blksize blocks (the fallback);
 * response.c recognises it and hands a regular file to the host as a sendfile request instead. */
#include "internal.h"

#include <structmember.h>

static int lw_fw_init(lw_file_wrapper *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"filelike", "blksize", NULL};
    PyObject *filelike;
    Py_ssize_t blksize = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|n:file_wrapper", kwlist, &filelike, &blksize))
        return -1;
    if (blksize <= 0) {
        PyErr_SetString(PyExc_ValueError, "blksize must be positive");
        return -1;
    }
    Py_XSETREF(self->filelike, Py_NewRef(filelike));
    self->blksize = blksize;
    self->closed = 0;
    return 0;
}

static void lw_fw_dealloc(lw_file_wrapper *self)
{
    Py_XDECREF(self->filelike);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *lw_fw_iternext(lw_file_wrapper *self)
{
    if (!self->filelike || self->closed) return NULL;
    PyObject *chunk = PyObject_CallMethod(self->filelike, "read", "n", self->blksize);
    if (!chunk) return NULL;
    if (PyBytes_Check(chunk) && PyBytes_GET_SIZE(chunk) == 0) {
        Py_DECREF(chunk);
        return NULL; /* StopIteration */
    }
    return chunk; /* a non-bytes chunk is reported by the response as the app's error */
}

static PyObject *lw_fw_close(lw_file_wrapper *self, PyObject *unused)
{
    (void)unused;
    if (self->closed || !self->filelike) Py_RETURN_NONE;
    self->closed = 1;
    PyObject *close;
    int has = lw_getattr_opt_str(self->filelike, "close", &close);
    if (has < 0) return NULL;
    if (has == 0) Py_RETURN_NONE;
    PyObject *r = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (!r) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef lw_fw_methods[] = {
    {"close", (PyCFunction)lw_fw_close, METH_NOARGS, "close(): close the wrapped file (once)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lw_fw_members[] = {
    {"filelike", T_OBJECT, offsetof(lw_file_wrapper, filelike), READONLY, "the wrapped file"},
    {"blksize", T_PYSSIZET, offsetof(lw_file_wrapper, blksize), READONLY, "block size"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject lw_FileWrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.FileWrapper",
    .tp_basicsize = sizeof(lw_file_wrapper),
    .tp_dealloc = (destructor)lw_fw_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wsgi.file_wrapper(filelike, blksize=8192): serve a file, by sendfile when possible.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)lw_fw_iternext,
    .tp_methods = lw_fw_methods,
    .tp_members = lw_fw_members,
    .tp_init = (initproc)lw_fw_init,
    .tp_new = PyType_GenericNew,
};

int lw_types_ready(void)
{
    if (PyType_Ready(&lw_InputType) < 0 || PyType_Ready(&lw_ErrorsType) < 0 ||
        PyType_Ready(&lw_FileWrapperType) < 0 || PyType_Ready(&lw_StartResponseType) < 0)
        return -1;
    return 0;
}
