/* _libwsgi_host: libwsgi-epoll / libwsgi-scgi as an extension module of the Python executable
 * they were built for (pyexe.h). The launcher executes python3 with a loader that imports this
 * module and calls main(globals()); main() makes the interpreter look like the embedded one (argv,
 * the locale variable, -X utf8, signal dispositions, the process name), releases the GIL and runs
 * server_main() as the program's main() would. It never returns: the process exits with the
 * server's status, as the embedded program does (the host finalizes Python where the embedded
 * runtime would, host_py_set_python_exe()). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "host_py.h"
#include "pyexe.h"
#include "server_main.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* /proc/self/cmdline: the exact bytes python3 was given (no decoding round trip). NULL on error. */
static char **read_cmdline(int *argc)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        if (len == cap) {
            char *b = realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (!buf) return NULL;
    buf[len] = '\0';
    int n = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0') n++;
    char **v = calloc((size_t)n + 1, sizeof(*v));
    if (!v) {
        free(buf);
        return NULL;
    }
    char *p = buf;
    for (int i = 0; i < n; i++) {
        v[i] = p;
        p += strlen(p) + 1;
    }
    *argc = n;
    return v;
}

/* os.environ["LC_ALL"] back to what the launcher had (it set C for python3's start). */
static int restore_lc_all(const char *saved)
{
    PyObject *os = PyImport_ImportModule("os");
    PyObject *env = os ? PyObject_GetAttrString(os, "environ") : NULL;
    Py_XDECREF(os);
    if (!env) return -1;
    PyObject *r;
    if (saved[0] == '=') {
        PyObject *k = PyUnicode_FromString("LC_ALL");
        PyObject *v = PyUnicode_DecodeFSDefault(saved + 1);
        r = k && v && PyObject_SetItem(env, k, v) == 0 ? Py_None : NULL;
        Py_XINCREF(r);
        Py_XDECREF(k);
        Py_XDECREF(v);
    } else {
        r = PyObject_CallMethod(env, "pop", "sO", "LC_ALL", Py_None);
    }
    Py_DECREF(env);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *host_main(PyObject *self, PyObject *main_globals)
{
    int argc = 0;
    char **cmd = read_cmdline(&argc);
    if (!cmd || argc < PYEXE_ARGV_FIXED + 1) {
        PyErr_SetString(PyExc_RuntimeError, "_libwsgi_host: not started by its launcher");
        return NULL;
    }
    /* PYEXE -I -X utf8=0 -c LOADER MODULE SIGIGN PROG COMM SELF LC_ALL ARGV... */
    int sigign = atoi(cmd[7]);
    server_program prog = strcmp(cmd[8], "scgi") == 0 ? PROG_SCGI : PROG_EPOLL;
    const char *comm = cmd[9];
    const char *launcher = cmd[10];
    const char *lc_all = cmd[11];

    /* What the embedded interpreter has: sys.argv [''], no orig_argv, no -X option, a clean
     * __main__. */
    PyObject *argv = Py_BuildValue("[s]", "");
    PyObject *orig = PyList_New(0);
    int bad = !argv || !orig || PySys_SetObject("argv", argv) < 0 ||
              PySys_SetObject("orig_argv", orig) < 0;
    Py_XDECREF(argv);
    Py_XDECREF(orig);
    PyObject *xopts = PySys_GetXOptions(); /* borrowed */
    if (!bad && xopts && PyDict_GetItemString(xopts, "utf8"))
        bad = PyDict_DelItemString(xopts, "utf8") < 0;
    if (!bad && PyDict_Check(main_globals) && PyDict_GetItemString(main_globals, "m"))
        bad = PyDict_DelItemString(main_globals, "m") < 0;
    /* Nor this module in sys.modules (a single-phase extension is put there on import); it stays
     * alive through the reference main() keeps. */
    Py_INCREF(self);
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    if (!bad && PyDict_GetItemString(modules, "_libwsgi_host"))
        bad = PyDict_DelItemString(modules, "_libwsgi_host") < 0;
    if (bad || restore_lc_all(lc_all) < 0) return NULL;

    /* python3 handles SIGINT and ignores SIGPIPE and SIGXFSZ: back to the launcher's dispositions
     * (ignored ones stay ignored); Python's own records follow in host_py_runtime_starts(). */
    static const int sigs[] = {SIGINT, SIGPIPE, SIGXFSZ};
    for (int k = 0; k < 3; k++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = (sigign >> k) & 1 ? SIG_IGN : SIG_DFL;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[k], &sa, NULL);
    }
    /* ps -o comm, top: the program's name, not python3.11 (threads inherit it). */
    if (*comm) prctl(PR_SET_NAME, comm, 0, 0, 0);

    pyexe_set_inside(launcher);
    host_py_set_python_exe();
    PyEval_SaveThread();
    int status = server_main(argc - PYEXE_ARGV_FIXED, cmd + PYEXE_ARGV_FIXED, prog);
    /* As the embedded program's return from main(): the interpreter was finalized by the host
     * where the embedded runtime is (host_app_stop), or holds nothing of the server's. */
    fflush(NULL);
    exit(status);
}

static PyMethodDef methods[] = {
    {"main", host_main, METH_O,
     "main(globals): run the server of the launcher's command line (never returns)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_libwsgi_host",
    "libwsgi-epoll / libwsgi-scgi inside the Python executable (started by their launcher).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__libwsgi_host(void);

PyMODINIT_FUNC PyInit__libwsgi_host(void)
{
    return PyModule_Create(&module);
}
