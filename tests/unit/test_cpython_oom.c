/*
 * test_cpython_oom.c - CPython on its own, without libwsgi, under the failing allocator of
 * test_failmalloc.c: does the interpreter survive a Python allocation failing at each point of
 * "call a function that raises, then format the exception with traceback.format_exception()"?
 *
 * That is exactly what libwsgi does when a WSGI app raises (lw_log_exception() in lib/errors.c
 * logs the traceback through the boot module's format_exc). The answer decides what
 * test_failmalloc can assert about Python allocation failures:
 *
 *  - Debian's CPython 3.11 (release): survives every point; test_failmalloc sweeps Python's
 *    allocations there and asserts a clean result each time.
 *  - CPython 3.12.1 and 3.13.0 (the version matrix): segfaults by itself, at the 36th / 41st
 *    allocation, in frame_dealloc -> PyObject_GC_Del -> gc_list_remove while a MemoryError's
 *    traceback is cleared: an over-released frame, one of the OOM crashes collected in CPython's
 *    gh-151763 (frame over-decref under allocation failure: OOM-0005 / gh-151818). Inside
 *    test_failmalloc this showed as a crash in lw_log_exception()'s PyErr_Clear() /
 *    Py_XDECREF(value); ASan (with Python's allocator set to malloc) showed the app's
 *    RuntimeError freed by lw_log_exception() and then freed again by CPython's eval loop — the
 *    same interpreter bug, not a reference libwsgi owns twice.
 *  - Debian's debug CPython 3.11 (python3-dbg, the refleak pass): aborts on the interpreter's
 *    own assertions on that path (ceval.c "STACK_LEVEL() == 0", or _Py_CheckSlotResult after
 *    posixmodule.c's stat result is built on with a MemoryError set).
 *
 * So test_failmalloc sweeps Python allocations exactly where this program says the interpreter
 * survives, with the same condition (FM_PYTHON_SURVIVES_OOM). This test asserts that condition:
 * it runs the scenario in a child process and passes when the child's fate is the expected one.
 * When a fixed CPython arrives, this test fails and says so — then the condition is changed and
 * test_failmalloc sweeps that version's Python allocations too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpython_oom.h"

static struct {
    long count, fail_at;
    int armed, failed;
} f;
static PyMemAllocatorEx orig[2];

static int fail_now(void)
{
    if (!f.armed || ++f.count != f.fail_at) return 0;
    f.failed = 1;
    return 1;
}
static void *a_malloc(void *c, size_t n)
{
    PyMemAllocatorEx *o = c;
    return fail_now() ? NULL : o->malloc(o->ctx, n);
}
static void *a_calloc(void *c, size_t k, size_t n)
{
    PyMemAllocatorEx *o = c;
    return fail_now() ? NULL : o->calloc(o->ctx, k, n);
}
static void *a_realloc(void *c, void *p, size_t n)
{
    PyMemAllocatorEx *o = c;
    return fail_now() ? NULL : o->realloc(o->ctx, p, n);
}
static void a_free(void *c, void *p)
{
    PyMemAllocatorEx *o = c;
    o->free(o->ctx, p);
}

/* The scenario, swept three times: returns the number of failure points of the last sweep. */
static long scenario(void)
{
    PyConfig cfg;
    PyConfig_InitIsolatedConfig(&cfg);
    PyStatus st = Py_InitializeFromConfig(&cfg);
    PyConfig_Clear(&cfg);
    if (PyStatus_Exception(st)) return -1;
    PyObject *g = PyDict_New();
    if (!g || PyDict_SetItemString(g, "__builtins__", PyEval_GetBuiltins()) != 0) return -1;
    PyObject *r = PyRun_String("import traceback\n"
                               "def app(environ, start_response):\n"
                               "    raise RuntimeError('failed on purpose')\n"
                               "def fmt(t, v, tb):\n"
                               "    return ''.join(traceback.format_exception(t, v, tb))\n",
                               Py_file_input, g, g);
    if (!r) return -1;
    Py_DECREF(r);
    PyObject *app = PyDict_GetItemString(g, "app"), *fmt = PyDict_GetItemString(g, "fmt");
    static const PyMemAllocatorDomain domains[2] = {PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};
    for (int i = 0; i < 2; i++) {
        PyMem_GetAllocator(domains[i], &orig[i]);
        PyMemAllocatorEx a = {&orig[i], a_malloc, a_calloc, a_realloc, a_free};
        PyMem_SetAllocator(domains[i], &a);
    }
    long points = 0;
    for (int sweep = 0; sweep < 3; sweep++) {
        for (long n = 1;; n++) {
            f.count = 0;
            f.fail_at = n;
            f.failed = 0;
            f.armed = 1;
            /* What wsgi_call() and lw_log_exception() do, in the same order. */
            PyObject *env = PyDict_New();
            PyObject *res = env ? PyObject_CallFunctionObjArgs(app, env, Py_None, NULL) : NULL;
            Py_XDECREF(res);
            Py_XDECREF(env);
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            if (type) {
                PyErr_NormalizeException(&type, &value, &tb);
                if (tb && value) PyException_SetTraceback(value, tb);
                PyObject *s = PyObject_CallFunctionObjArgs(fmt, type, value ? value : Py_None,
                                                           tb ? tb : Py_None, NULL);
                if (s)
                    Py_DECREF(s);
                else
                    PyErr_Clear();
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
            }
            f.armed = 0;
            if (!f.failed) {
                points = n - 1;
                break;
            }
        }
    }
    return points;
}

int main(void)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        /* The interpreter's own fatal-error and assertion messages go to stderr: keep them. */
        long points = scenario();
        fprintf(stderr, "CPython %s: %ld failure points, each survived\n", PY_VERSION, points);
        _exit(points > 0 ? 0 : 3);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 2;
    int survived = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    int expected = FM_PYTHON_SURVIVES_OOM;
    if (WIFSIGNALED(status))
        printf("CPython %s: killed by signal %d under allocation failure\n", PY_VERSION,
               WTERMSIG(status));
    else if (!survived)
        printf("CPython %s: exited with %d under allocation failure\n", PY_VERSION,
               WEXITSTATUS(status));
    if (survived == expected) {
        printf("as expected: CPython %s %s allocation failures on the exception path; "
               "test_failmalloc %s Python's allocations\n",
               PY_VERSION, survived ? "survives" : "does not survive",
               survived ? "sweeps" : "does not sweep");
        return 0;
    }
    printf("UNEXPECTED: CPython %s %s allocation failures on the exception path: change "
           "FM_PYTHON_SURVIVES_OOM in tests/unit/cpython_oom.h so that test_failmalloc %s "
           "Python's allocations on this version\n",
           PY_VERSION, survived ? "now survives" : "no longer survives",
           survived ? "sweeps" : "stops sweeping");
    return 1;
}
