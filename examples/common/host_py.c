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

int host_py_running(void)
{
    return Py_IsInitialized();
}

static int python_exe;

void host_py_set_python_exe(void)
{
    python_exe = 1;
}

int host_py_python_exe(void)
{
    return python_exe;
}

/* A fresh instance of the _signal module (kept for good: the records may refer to it). */
static PyObject *signal_ns;

void host_py_runtime_starts(void)
{
    if (!python_exe || !Py_IsInitialized()) return;
    struct sigaction sigint;
    sigaction(SIGINT, NULL, &sigint);
    PyGILState_STATE g = PyGILState_Ensure();
    /* Executing another instance of _signal reads every disposition from the kernel into the
     * records (SIG_DFL, SIG_IGN, None for a handler of the host's), exactly as a fresh
     * interpreter's start does; over SIG_DFL it installs its SIGINT handler, which libwsgi's
     * runtime would put back to SIG_DFL, the record staying signal.default_int_handler. */
    static const char code[] = "import importlib.util as u\n"
                               "s = u.find_spec('_signal')\n"
                               "m = u.module_from_spec(s)\n"
                               "s.loader.exec_module(m)\n"
                               "if m.getsignal(m.SIGINT) is m.default_int_handler:\n"
                               "    import signal\n"
                               "    signal.signal(signal.SIGINT, signal.default_int_handler)\n";
    PyObject *ns = PyDict_New();
    PyObject *r = NULL;
    if (ns && PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) == 0)
        r = PyRun_String(code, Py_file_input, ns, ns);
    if (r) {
        Py_DECREF(r);
        Py_XSETREF(signal_ns, ns);
    } else {
        PyErr_Clear();
        Py_XDECREF(ns);
        host_log(WSGI_LOG_WARNING, "signal.getsignal() may not tell the host's dispositions");
    }
    sigaction(SIGINT, &sigint, NULL);
    PyGILState_Release(g);
}

void host_py_runtime_stopped(void)
{
    if (!python_exe || !Py_IsInitialized()) return;
    PyGILState_Ensure();
    Py_FinalizeEx(); /* the thread state goes with the interpreter: nothing to release */
}
