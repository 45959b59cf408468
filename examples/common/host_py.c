/* host_py.h: the only host file that includes Python.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "host_py.h"
#include "host_log.h"

int host_py_register_stack_dump(int signo)
{
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -1;
    PyObject *mod = PyImport_ImportModule("faulthandler");
    PyObject *r = NULL;
    if (mod) {
        PyObject *fn = PyObject_GetAttrString(mod, "register");
        PyObject *args = Py_BuildValue("(ii)", signo, 2);
        PyObject *kw = Py_BuildValue("{sOsO}", "all_threads", Py_True, "chain", Py_False);
        if (fn && args && kw) r = PyObject_Call(fn, args, kw);
        Py_XDECREF(fn);
        Py_XDECREF(args);
        Py_XDECREF(kw);
        Py_DECREF(mod);
    }
    if (r) {
        rc = 0;
        Py_DECREF(r);
    } else {
        PyErr_Clear();
        host_log(WSGI_LOG_WARNING, "faulthandler.register failed: no stack dumps on --timeout");
    }
    PyGILState_Release(g);
    return rc;
}

static PyGILState_STATE fork_gil;

void host_py_before_fork(void)
{
    fork_gil = PyGILState_Ensure();
    PyOS_BeforeFork();
}

void host_py_after_fork(int child)
{
    if (child)
        PyOS_AfterFork_Child();
    else
        PyOS_AfterFork_Parent();
    PyGILState_Release(fork_gil);
}
