/* host_py.h: the only host file that includes Python.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "host_py.h"
#include "host_log.h"

#include <signal.h>
#include <string.h>

/* Chained after faulthandler's handler (chain=True: it restores this one and raises the signal
 * again in the same thread once the stacks are written): says the dump is done. */
static volatile sig_atomic_t dumped;

static void on_dumped(int signo)
{
    (void)signo;
    dumped = 1;
}

int host_py_stack_dumped(void)
{
    return dumped;
}

int host_py_register_stack_dump(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_dumped;
    sigemptyset(&sa.sa_mask);
    sigaction(signo, &sa, NULL);
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -1;
    PyObject *mod = PyImport_ImportModule("faulthandler");
    PyObject *r = NULL;
    if (mod) {
        PyObject *fn = PyObject_GetAttrString(mod, "register");
        PyObject *args = Py_BuildValue("(ii)", signo, 2);
        PyObject *kw = Py_BuildValue("{sOsO}", "all_threads", Py_True, "chain", Py_True);
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
