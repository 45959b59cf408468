/**
 * @file runtime.h
 * @brief The embedded Python interpreter (::wsgi_runtime) and loaded applications (::wsgi_app).
 *
 * A process has at most one runtime. Create it once (in a prefork server: in each worker, after
 * fork), load one or more apps from it, and free it at exit.
 */
#ifndef LIBWSGI_RUNTIME_H
#define LIBWSGI_RUNTIME_H

#include <libwsgi/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief The embedded interpreter. Opaque. @since 0.1.0 */
typedef struct wsgi_runtime wsgi_runtime;

/** @brief A loaded Python application. Opaque. @since 0.1.0 */
typedef struct wsgi_app wsgi_app;

/** @brief Flags for wsgi_runtime_options::flags. @since 0.1.0 */
enum wsgi_runtime_flags {
    /** Let Python install its signal handlers (SIGINT → KeyboardInterrupt). Off by default: the
     *  host owns signals. Ignored when adopting an interpreter. */
    WSGI_RUNTIME_PYTHON_SIGNALS = 1u << 0,
    /** Do not finalize the interpreter in wsgi_runtime_free() (useful before _exit in a child). */
    WSGI_RUNTIME_NO_FINALIZE = 1u << 1,
};

/**
 * @brief Options for wsgi_runtime_new(). Initialise with wsgi_runtime_options_init(), then set
 * fields.
 *
 * All strings are copied by wsgi_runtime_new(); they need not outlive the call. New fields are only
 * ever appended; @c struct_size tells the library which fields the caller knows.
 * @since 0.1.0
 */
typedef struct wsgi_runtime_options {
    size_t struct_size;      /**< sizeof(wsgi_runtime_options), set by the init function. */
    const char *python_home; /**< PYTHONHOME equivalent, or NULL for the build-time Python. */
    const char *virtualenv;  /**< A virtualenv directory whose site-packages are used, or NULL. */
    const char *const *python_path; /**< Directories prepended to sys.path, in this order. */
    size_t n_python_path;           /**< Number of entries in @c python_path. */
    const char *chdir;   /**< Working directory to change to before anything is imported. */
    wsgi_log_cb log;     /**< Log callback, or NULL to discard log lines. */
    void *log_user_data; /**< Passed to @c log. */
    int log_level;       /**< Most verbose level delivered (default ::WSGI_LOG_INFO). */
    unsigned flags;      /**< Bitwise OR of ::wsgi_runtime_flags. */
} wsgi_runtime_options;

/**
 * @brief Fill @p opts with defaults (all NULL/0, log level ::WSGI_LOG_INFO) and set struct_size.
 * @param[out] opts The options to initialise.
 * @since 0.1.0
 * @par Thread safety
 * Any thread: it only fills @p opts.
 */
LIBWSGI_API void wsgi_runtime_options_init(wsgi_runtime_options *opts);

/**
 * @brief Start (or adopt) the process's Python interpreter.
 *
 * If the host already initialised Python (Py_IsInitialized()), the runtime adopts that interpreter:
 * python_home/virtualenv are ignored, python_path and chdir still apply, and wsgi_runtime_free()
 * will not finalize it. Otherwise an isolated interpreter is started (no PYTHON* environment
 * variables, no user site, no Python signal handlers unless ::WSGI_RUNTIME_PYTHON_SIGNALS). The GIL
 * is released before this function returns.
 *
 * @param[in] opts Options, or NULL for defaults.
 * @param[out] out The new runtime on success, NULL on failure.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL @p out is NULL, @p opts->struct_size is too small, python_path is NULL
 *         with a count, or chdir failed.
 * @retval WSGI_ERR_STATE A runtime already exists in this process.
 * @retval WSGI_ERR_PYTHON The interpreter failed to start or a path could not be applied
 *         (the reason is logged and available from wsgi_errmsg()).
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * call from one thread; the thread becomes the interpreter's main thread.
 */
LIBWSGI_API int wsgi_runtime_new(const wsgi_runtime_options *opts, wsgi_runtime **out);

/**
 * @brief Free the runtime: drop cached thread states and finalize the interpreter (unless adopted
 * or ::WSGI_RUNTIME_NO_FINALIZE). All apps must have been freed first.
 * @param[in] rt The runtime, or NULL (no-op).
 * @since 0.1.0
 * @par Thread safety
 * call from the thread that created it, with no other thread inside libwsgi.
 */
LIBWSGI_API void wsgi_runtime_free(wsgi_runtime *rt);

/** @brief Which server interface an app speaks. @since 0.1.0 */
typedef enum wsgi_interface {
    WSGI_INTERFACE_AUTO = 0, /**< Detect: coroutine function or ASGI-3 class ⇒ ASGI, else WSGI. */
    WSGI_INTERFACE_WSGI = 1, /**< PEP 3333. */
    WSGI_INTERFACE_ASGI = 2, /**< ASGI 3. */
} wsgi_interface;

/** @brief Flags for wsgi_app_options::flags, mirrored into the WSGI environ. @since 0.1.0 */
enum wsgi_app_flags {
    WSGI_APP_MULTITHREAD = 1u << 0,  /**< wsgi.multithread is True. */
    WSGI_APP_MULTIPROCESS = 1u << 1, /**< wsgi.multiprocess is True. */
    WSGI_APP_RUN_ONCE = 1u << 2,     /**< wsgi.run_once is True. */
};

/**
 * @brief Options for wsgi_app_new(). Initialise with wsgi_app_options_init().
 * @since 0.1.0
 */
typedef struct wsgi_app_options {
    size_t struct_size; /**< sizeof(wsgi_app_options), set by the init function. */
    const char *spec; /**< "pkg.module:attr.sub", "module:factory()" or "module:factory(1, x='y')";
                           "module" alone means "module:application". Required. */
    wsgi_interface interface; /**< Interface to use; AUTO detects. */
    unsigned flags;           /**< Bitwise OR of ::wsgi_app_flags. */
    const char *script_name; /**< Mount point (SCRIPT_NAME / root_path), "" or NULL for the root. */
    const char *server_software; /**< SERVER_SOFTWARE value, NULL for "libwsgi/VERSION". */
} wsgi_app_options;

/**
 * @brief Fill @p opts with defaults and set struct_size.
 * @param[out] opts The options to initialise.
 * @since 0.1.0
 * @par Thread safety
 * Any thread: it only fills @p opts.
 */
LIBWSGI_API void wsgi_app_options_init(wsgi_app_options *opts);

/**
 * @brief Import and resolve an application, gunicorn/uvicorn style.
 *
 * On failure the Python traceback is logged at ::WSGI_LOG_ERROR and the message is available from
 * wsgi_errmsg().
 *
 * @param[in] rt The runtime.
 * @param[in] opts Options (spec required). Strings are copied.
 * @param[out] out The loaded app on success, NULL on failure.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL A NULL argument or NULL spec, an unknown interface, or a script_name not
 *         starting with '/'.
 * @retval WSGI_ERR_APP_SPEC The spec is malformed (empty module, bad attribute path, bad call
 * syntax).
 * @retval WSGI_ERR_MODULE_NOT_FOUND The module (or one of its packages) does not exist.
 * @retval WSGI_ERR_IMPORT The module exists but raised while being imported.
 * @retval WSGI_ERR_ATTRIBUTE An attribute on the path is missing, or the factory call raised.
 * @retval WSGI_ERR_NOT_CALLABLE The resolved object is not callable.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * any thread.
 */
LIBWSGI_API int wsgi_app_new(wsgi_runtime *rt, const wsgi_app_options *opts, wsgi_app **out);

/**
 * @brief Free an app. Every env and response built from it must have been freed.
 * @param[in] app The app or NULL.
 * @since 0.1.0
 * @par Thread safety
 * Any thread, once no env or response of the app exists and no other thread uses the app. Takes the
 * GIL.
 */
LIBWSGI_API void wsgi_app_free(wsgi_app *app);

/**
 * @brief The interface the app was loaded as (never ::WSGI_INTERFACE_AUTO: detection is resolved).
 * @param[in] app The app.
 * @return ::WSGI_INTERFACE_WSGI or ::WSGI_INTERFACE_ASGI (::WSGI_INTERFACE_AUTO only for NULL).
 * @since 0.1.0
 * @par Thread safety
 * Any thread, concurrently; takes no GIL.
 */
LIBWSGI_API wsgi_interface wsgi_app_interface(const wsgi_app *app);

/**
 * @brief The runtime an app belongs to.
 * @param[in] app The app.
 * @return The runtime (the host's, as created by wsgi_runtime_new(): not a new object to free),
 *         or NULL for a NULL @p app.
 * @since 0.1.0
 * @par Thread safety
 * Any thread, concurrently; takes no GIL.
 */
LIBWSGI_API wsgi_runtime *wsgi_app_runtime(const wsgi_app *app);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_RUNTIME_H */
