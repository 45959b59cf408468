/* The embedded interpreter: start an isolated CPython (or adopt the host's), apply paths, load the
 * bootstrap code, and finalize on free. There is at most one runtime per process. */
#include "internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const char lw_boot_py[];

wsgi_runtime *lw_rt;
static unsigned lw_generation;

LIBWSGI_API unsigned libwsgi_version_num(void)
{
    return LIBWSGI_VERSION_NUM;
}

LIBWSGI_API const char *libwsgi_version(void)
{
    return LIBWSGI_VERSION;
}

LIBWSGI_API void wsgi_runtime_options_init(wsgi_runtime_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    opts->log_level = WSGI_LOG_INFO;
}

static int lw_intern_all(lw_strings *s)
{
#define I(field, text)                                                                             \
    do {                                                                                           \
        if (!(s->field = PyUnicode_InternFromString(text))) return -1;                             \
    } while (0)
    I(REQUEST_METHOD, "REQUEST_METHOD");
    I(SCRIPT_NAME, "SCRIPT_NAME");
    I(PATH_INFO, "PATH_INFO");
    I(QUERY_STRING, "QUERY_STRING");
    I(RAW_URI, "RAW_URI");
    I(REQUEST_URI, "REQUEST_URI");
    I(SERVER_NAME, "SERVER_NAME");
    I(SERVER_PORT, "SERVER_PORT");
    I(SERVER_PROTOCOL, "SERVER_PROTOCOL");
    I(SERVER_SOFTWARE, "SERVER_SOFTWARE");
    I(REMOTE_ADDR, "REMOTE_ADDR");
    I(REMOTE_PORT, "REMOTE_PORT");
    I(CONTENT_TYPE, "CONTENT_TYPE");
    I(CONTENT_LENGTH, "CONTENT_LENGTH");
    I(HTTPS, "HTTPS");
    I(wsgi_version, "wsgi.version");
    I(wsgi_url_scheme, "wsgi.url_scheme");
    I(wsgi_input, "wsgi.input");
    I(wsgi_errors, "wsgi.errors");
    I(wsgi_multithread, "wsgi.multithread");
    I(wsgi_multiprocess, "wsgi.multiprocess");
    I(wsgi_run_once, "wsgi.run_once");
    I(wsgi_input_terminated, "wsgi.input_terminated");
    I(wsgi_file_wrapper, "wsgi.file_wrapper");
    I(http, "http");
    I(https, "https");
    I(on, "on");
    I(empty, "");
    I(http10, "HTTP/1.0");
    I(http11, "HTTP/1.1");
    I(port80, "80");
    I(port443, "443");
    I(localhost, "localhost");
    I(close, "close");
    I(read, "read");
    I(fileno, "fileno");
    I(tell, "tell");
    I(comma_sp, ", ");
    I(semi_sp, "; ");
    I(Content_Length, "Content-Length");
#undef I
    return 0;
}

static void lw_strings_clear(lw_strings *s)
{
    PyObject **p = (PyObject **)s;
    for (size_t i = 0; i < sizeof *s / sizeof(PyObject *); i++)
        Py_CLEAR(p[i]);
}

/* Drop every Python object the runtime holds (GIL held). */
static void lw_runtime_clear(wsgi_runtime *rt)
{
    lw_asgi_loop_free(rt);
    Py_CLEAR(rt->boot);
    Py_CLEAR(rt->load_app);
    Py_CLEAR(rt->LoadError);
    Py_CLEAR(rt->format_exc);
    Py_CLEAR(rt->errors_stream);
    lw_env_cache_clear(&rt->ec);
    lw_strings_clear(&rt->s);
}

/* Prepend the option's directories to sys.path (first entry ends up first). */
static int lw_apply_sys_path(const wsgi_runtime_options *o)
{
    if (!o || !o->n_python_path) return 0;
    if (!o->python_path)
        return lw_fail(WSGI_ERR_INVAL, "python_path is NULL with n_python_path > 0");
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    if (!path || !PyList_Check(path)) return lw_fail(WSGI_ERR_PYTHON, "sys.path is not a list");
    for (size_t i = o->n_python_path; i-- > 0;) {
        if (!o->python_path[i]) continue;
        PyObject *dir = PyUnicode_DecodeFSDefault(o->python_path[i]);
        if (!dir || PyList_Insert(path, 0, dir) < 0) {
            Py_XDECREF(dir);
            lw_log_exception("sys.path", NULL, 0);
            return lw_fail(WSGI_ERR_PYTHON, "cannot add %s to sys.path", o->python_path[i]);
        }
        Py_DECREF(dir);
    }
    return 0;
}

/* Run lib/boot.py in a fresh module namespace and pick up its helpers. */
static int lw_boot(wsgi_runtime *rt)
{
    PyObject *mod = PyModule_New("_libwsgi_boot");
    if (!mod) goto fail;
    PyObject *ns = PyModule_GetDict(mod); /* borrowed */
    if (PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0) goto fail;
    PyObject *code = Py_CompileString(lw_boot_py, "<libwsgi boot>", Py_file_input);
    if (!code) goto fail;
    PyObject *r = PyEval_EvalCode(code, ns, ns);
    Py_DECREF(code);
    if (!r) goto fail;
    Py_DECREF(r);
    rt->boot = mod;
    rt->load_app = PyDict_GetItemString(ns, "load_app");
    rt->LoadError = PyDict_GetItemString(ns, "LoadError");
    rt->format_exc = PyDict_GetItemString(ns, "format_exc");
    if (!rt->load_app || !rt->LoadError || !rt->format_exc) goto fail;
    Py_INCREF(rt->load_app);
    Py_INCREF(rt->LoadError);
    Py_INCREF(rt->format_exc);
    return 0;
fail:
    if (PyErr_Occurred()) lw_log_exception("libwsgi bootstrap failed", NULL, 0);
    Py_XDECREF(mod);
    rt->boot = NULL;
    return lw_fail(WSGI_ERR_PYTHON, "libwsgi bootstrap code failed to run");
}

static int lw_start_python(const wsgi_runtime_options *o)
{
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = (o && (o->flags & WSGI_RUNTIME_PYTHON_SIGNALS)) ? 1 : 0;
    config.parse_argv = 0;
    config.buffered_stdio = 1;
#ifdef LIBWSGI_PROFILE_HASH_SEED
    /* Profiling builds only: str hashes (and so dict probe sequences) the same in every run, so
     * two callgrind runs give comparable instruction counts. */
    config.use_hash_seed = 1;
    config.hash_seed = LIBWSGI_PROFILE_HASH_SEED;
#endif

    /* Pin the executable so getpath never searches PATH (where a pyenv shim may come first) and
     * finds a virtualenv's pyvenv.cfg when one is given. */
    char exe[4096];
    if (o && o->virtualenv)
        snprintf(exe, sizeof exe, "%s/bin/python3", o->virtualenv);
    else
        snprintf(exe, sizeof exe, "%s", LIBWSGI_PYTHON_EXECUTABLE);
    PyStatus st = PyConfig_SetBytesString(&config, &config.executable, exe);
    if (!PyStatus_Exception(st) && o && o->python_home)
        st = PyConfig_SetBytesString(&config, &config.home, o->python_home);
    if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st)) {
        return lw_fail(WSGI_ERR_PYTHON, "Python failed to start: %s%s%s", st.func ? st.func : "",
                       st.func ? ": " : "", st.err_msg ? st.err_msg : "unknown error");
    }
    return 0;
}

LIBWSGI_API int wsgi_runtime_new(const wsgi_runtime_options *opts, wsgi_runtime **out)
{
    lw_clear_error();
    if (!out) return lw_fail(WSGI_ERR_INVAL, "out is NULL");
    *out = NULL;
    wsgi_runtime_options defaults;
    if (!opts) {
        wsgi_runtime_options_init(&defaults);
        opts = &defaults;
    }
    if (opts->struct_size < offsetof(wsgi_runtime_options, flags) + sizeof opts->flags)
        return lw_fail(WSGI_ERR_INVAL, "wsgi_runtime_options.struct_size is %zu, expected %zu",
                       opts->struct_size, sizeof *opts);
    if (lw_rt) return lw_fail(WSGI_ERR_STATE, "a runtime already exists in this process");
    if (opts->n_python_path && !opts->python_path)
        return lw_fail(WSGI_ERR_INVAL, "python_path is NULL with n_python_path > 0");

    wsgi_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) return lw_fail(WSGI_ERR_NOMEM, "out of memory");
    rt->flags = opts->flags;
    rt->log = opts->log;
    rt->log_user_data = opts->log_user_data;
    rt->log_level = opts->log_level;
    rt->gen = ++lw_generation;
    rt->loop_fd = rt->wake_fd = -1;
    lw_threads_init(rt);

    if (opts->chdir && chdir(opts->chdir) != 0) {
        free(rt);
        return lw_fail(WSGI_ERR_INVAL, "cannot change directory to %s", opts->chdir);
    }

    /* Importing Python's signal module (asyncio does, in boot.py) installs a SIGINT handler
     * whatever install_signal_handlers says; the host owns signals, so put it back after boot. */
    struct sigaction sigint_before;
    sigaction(SIGINT, NULL, &sigint_before);

    int rc;
    PyGILState_STATE gstate = PyGILState_UNLOCKED;
    if (Py_IsInitialized()) {
        rt->adopted = 1;
        gstate = PyGILState_Ensure();
    } else if ((rc = lw_start_python(opts)) != 0) {
        free(rt);
        return rc;
    }
    lw_rt = rt; /* logging works from here on */
    rt->interp = PyInterpreterState_Get();

    if ((rc = lw_apply_sys_path(opts)) != 0) goto fail;
    if (lw_intern_all(&rt->s) < 0 || lw_types_ready() < 0) {
        lw_log_exception("libwsgi types", NULL, 0);
        rc = lw_fail(WSGI_ERR_PYTHON, "cannot initialise libwsgi's Python types");
        goto fail;
    }
    if ((rc = lw_boot(rt)) != 0) goto fail;
    if (!(rt->errors_stream = lw_errors_new())) {
        PyErr_Clear();
        rc = lw_fail(WSGI_ERR_NOMEM, "cannot create wsgi.errors");
        goto fail;
    }

    if (!rt->adopted && !(rt->flags & WSGI_RUNTIME_PYTHON_SIGNALS))
        sigaction(SIGINT, &sigint_before, NULL);
    lw_log(WSGI_LOG_INFO, "libwsgi %s: %s Python %s", LIBWSGI_VERSION,
           rt->adopted ? "adopted" : "started", Py_GetVersion());
    if (rt->adopted) {
        PyGILState_Release(gstate);
    } else {
        rt->main_tstate = PyEval_SaveThread();
        lw_threads_set_current(rt->main_tstate);
    }
    *out = rt;
    return 0;

fail:
    lw_runtime_clear(rt);
    lw_rt = NULL;
    if (rt->adopted)
        PyGILState_Release(gstate);
    else
        Py_FinalizeEx();
    free(rt);
    return rc;
}

LIBWSGI_API void wsgi_runtime_free(wsgi_runtime *rt)
{
    if (!rt || rt != lw_rt) return;
    if (rt->n_apps > 0)
        lw_log(WSGI_LOG_WARNING, "wsgi_runtime_free: %d app(s) still loaded", rt->n_apps);
    PyGILState_STATE gstate = PyGILState_UNLOCKED;
    if (rt->adopted)
        gstate = PyGILState_Ensure();
    else if (!PyGILState_Check())
        PyEval_RestoreThread(rt->main_tstate);
    lw_responses_drain();
    lw_responses_free_spare();
    lw_env_free_spare();
    lw_start_response_pool_clear();
    lw_input_pool_clear();
    lw_runtime_clear(rt);
    lw_log(WSGI_LOG_INFO, "libwsgi: runtime stopped");
    lw_threads_fini(rt);
    if (rt->adopted) {
        PyGILState_Release(gstate);
    } else if (rt->flags & WSGI_RUNTIME_NO_FINALIZE) {
        PyEval_SaveThread();
    } else {
        lw_rt = NULL; /* no logging through a dying interpreter */
        Py_FinalizeEx();
    }
    lw_rt = NULL;
    free(rt);
}
