/* Private declarations shared by the library's files: the runtime/app/env/response structs, the
 * Python types written in C, and the GIL, error and logging helpers. Never installed. */
#ifndef LIBWSGI_INTERNAL_H
#define LIBWSGI_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pycompat.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#include <libwsgi/libwsgi.h>

#if defined(__GNUC__)
#define LW_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define LW_LIKELY(x)    __builtin_expect(!!(x), 1)
#define LW_UNLIKELY(x)  __builtin_expect(!!(x), 0)
#else
#define LW_PRINTF(a, b)
#define LW_LIKELY(x)   (x)
#define LW_UNLIKELY(x) (x)
#endif

/* Interned str constants used on hot paths (created once at runtime start). */
typedef struct lw_strings {
    PyObject *REQUEST_METHOD, *SCRIPT_NAME, *PATH_INFO, *QUERY_STRING, *RAW_URI, *REQUEST_URI,
        *SERVER_NAME, *SERVER_PORT, *SERVER_PROTOCOL, *SERVER_SOFTWARE, *REMOTE_ADDR, *REMOTE_PORT,
        *CONTENT_TYPE, *CONTENT_LENGTH, *HTTPS, *wsgi_version, *wsgi_url_scheme, *wsgi_input,
        *wsgi_errors, *wsgi_multithread, *wsgi_multiprocess, *wsgi_run_once, *wsgi_input_terminated,
        *wsgi_file_wrapper;
    PyObject *http, *https, *on, *empty, *http10, *http11, *port80, *port443, *localhost;
    PyObject *close, *read, *fileno, *tell, *comma_sp, *semi_sp, *Content_Length;
} lw_strings;

/* Per-runtime caches of environ keys and values (environ.c), guarded by the GIL. A keep-alive
 * client sends the same headers, host, port and address request after request: the str objects of
 * the previous request are reused when the bytes are the same (str is immutable, so sharing one
 * between environs is invisible to apps). Bounded: fixed slots, replaced on a miss. */
#define LW_HKEY_SLOTS    128
#define LW_HKEY_NAME_MAX 32
typedef struct lw_hkey {
    unsigned char len;           /* 0: empty slot */
    unsigned hits;               /* uses since it was filled: the less used of two is replaced */
    char name[LW_HKEY_NAME_MAX]; /* lowercased header name */
    PyObject *key;               /* "HTTP_..." (or CONTENT_TYPE / CONTENT_LENGTH) */
    PyObject *last;              /* the value of the last header with this name */
} lw_hkey;
typedef struct lw_env_cache {
    lw_hkey hkeys[LW_HKEY_SLOTS];
    PyObject *method, *server_name, *remote_addr, *uri, *path, *query;
    PyObject *server_port, *remote_port;
    unsigned server_port_n, remote_port_n;
    /* The ("Content-Length", "<n>") item response.c last added to a list body's head. */
    PyObject *cl_item;
    int64_t cl_item_n;
} lw_env_cache;
void lw_env_cache_clear(lw_env_cache *c); /* GIL held */

struct wsgi_runtime {
    int adopted;    /* the host started Python; we never finalize it */
    unsigned flags; /* wsgi_runtime_flags */
    unsigned gen;   /* generation, so stale per-thread state from an older runtime is ignored */
    wsgi_log_cb log;
    void *log_user_data;
    int log_level;
    PyInterpreterState *interp;
    PyThreadState *main_tstate; /* the creating thread's state (not owned when adopted) */
    PyObject *boot;             /* namespace of the embedded bootstrap Python code */
    PyObject *load_app;         /* boot.load_app(spec) -> (app, is_asgi) */
    PyObject *LoadError;        /* boot.LoadError (has .code) */
    PyObject *format_exc;       /* boot.format_exc(type, value, tb) -> str */
    PyObject *errors_stream;    /* the shared wsgi.errors object */
    lw_strings s;
    lw_env_cache ec;
    int n_apps;

    /* ASGI: the host-driven asyncio loop (asgi_loop.c), created on first use. */
    PyObject *loop;
    PyObject *run_once, *loop_timeout_fn, *create_future, *create_task, *lifespan_cls;
    PyObject *asgi_version; /* {"version": "3.0", "spec_version": "2.5"} template */
    int loop_fd, wake_fd;
    pthread_t loop_thread;
    int loop_turn; /* inside asgi_loop_run / lifespan: re-entry is refused */
    struct lw_asgi_strings *as;
    /* GIL acquisitions through libwsgi (lw_gil_acquire; only GIL holders write it, so a plain
     * load and store), and asgi_loop_timeout()'s last answer from the loop's state (lt_valid),
     * which holds while the count is still lt_runs: no Python ran since (asgi_loop.c) */
    _Atomic unsigned long py_runs;
    unsigned long lt_runs;
    int lt_ms, lt_valid;

    /* The request observer (observer.c); observing: at least one callback is set. */
    wsgi_observer obs;
    void *obs_data;
    int observing;
};

struct wsgi_app {
    wsgi_runtime *rt;
    PyObject *callable;
    wsgi_interface iface;
    unsigned flags;
    PyObject *environ_template; /* constant keys, copied per request */
    PyObject *script_name;      /* str */
    size_t script_name_len;     /* in bytes (latin-1) */
    char *script_name_c;
    PyObject *lifespan;       /* boot.Lifespan instance once startup ran */
    PyObject *state;          /* lifespan state dict, copied into each request scope */
    struct lw_shapes *shapes; /* environ layouts of recent requests (environ.c), GIL-guarded */
};

/* The process's runtime (at most one). */
extern wsgi_runtime *lw_rt;

/* ---- GIL (gil.c) ------------------------------------------------------------------------ */
typedef struct lw_gil {
    PyThreadState *ts; /* state restored, or NULL if the caller already held the GIL */
} lw_gil;
int lw_gil_acquire(lw_gil *g); /* 0, or WSGI_ERR_PYTHON if no runtime / no thread state */
void lw_gil_release(lw_gil *g);
void lw_threads_init(wsgi_runtime *rt);
void lw_threads_fini(wsgi_runtime *rt);
/* Adopt the calling thread's current state as its cached state (runtime start). */
void lw_threads_set_current(PyThreadState *ts);

/* ---- errors and logging (errors.c) ------------------------------------------------------- */
int lw_fail(int code, const char *fmt, ...) LW_PRINTF(2, 3); /* sets wsgi_errmsg(); returns code */
void lw_clear_error(void);
void lw_log(int level, const char *fmt, ...) LW_PRINTF(2, 3); /* any thread, GIL or not */
void lw_logv(int level, const char *fmt, va_list ap);
/* With the GIL and a Python exception set: logs "<what>:\n<traceback>" at ERROR, clears the
 * exception, and writes the exception's one-line summary into msg (may be NULL). */
void lw_log_exception(const char *what, char *msg, size_t msg_size);

/* Percent-decoding into a buffer of at least n bytes; returns the decoded length (environ.c). */
size_t lw_pct_decode(const char *src, size_t n, char *dst);
/* RFC 9110 token (header name, method) check (environ.c). */
int lw_is_token(const char *p, size_t n);

/* ---- the request observer (observer.c) ---------------------------------------------------- */
typedef struct lw_obs_times {
    int64_t start_ns; /* wsgi_call / asgi dispatch (CLOCK_MONOTONIC) */
    int64_t queue_ns; /* from the host's arrival time to start_ns, -1 unknown */
} lw_obs_times;
int64_t lw_now_ns(void);
/* wsgi_request::arrival_ns if the caller's struct_size covers it, else 0. */
int64_t lw_request_arrival(const wsgi_request *req);
/* The request starts now: from req's arrival time (or arrival_ns when req is NULL). */
void lw_obs_begin(lw_obs_times *t, const wsgi_request *req_or_null, int64_t arrival_ns);
/* exception: the failure was a Python exception of the app; complete: the response ended. */
wsgi_outcome_class lw_outcome_class(int error, int exception, int complete);
/* Fill in struct_size, the times, a NULL errmsg, and call on_request_done. No GIL held. */
void lw_obs_report(const wsgi_runtime *rt, wsgi_request_outcome *o, const lw_obs_times *t);

/* ---- Python types (input.c, log_stream.c, file_wrapper.c, start_response.c) ---------------- */
extern PyTypeObject lw_InputType;
extern PyTypeObject lw_ErrorsType;
extern PyTypeObject lw_FileWrapperType;
extern PyTypeObject lw_StartResponseType;
int lw_types_ready(void);

typedef struct lw_input lw_input;
lw_input *lw_input_new(const wsgi_request *req);
void lw_input_detach(lw_input *in); /* the body source is gone: reads raise ValueError */
/* GIL held: detach and drop the response's reference; back to a pool if nothing else has one. */
void lw_input_release(lw_input *in);
void lw_input_pool_clear(void); /* GIL held: wsgi_runtime_free */
/* GIL held: 1 if no read can reach the host's body any more (nothing buffered is left unread and
 * the source has ended or there is none). Once true it stays true. */
int lw_input_idle(const lw_input *in);
/* Body bytes taken from the host so far (a buffered body counts whole). */
uint64_t lw_input_received(const lw_input *in);

PyObject *lw_errors_new(void);

typedef struct lw_file_wrapper {
    PyObject_HEAD PyObject *filelike;
    Py_ssize_t blksize;
    int closed;
} lw_file_wrapper;

/* ---- response (start_response.c, response.c) ---------------------------------------------- */
typedef struct lw_start_response lw_start_response;

/* A request between wsgi_env_build() (no GIL: the host's wire data copied into this block) and
 * wsgi_call(), which makes the environ from it under the GIL it takes anyway. */
struct wsgi_env {
    size_t cap; /* bytes allocated for the block */
    wsgi_app *app;
    int head_request;        /* HEAD: a Content-Length without a body is correct */
    wsgi_request req;        /* wire data points into this block; the body source is the host's */
    const char *bytes;       /* the copied bytes: method, target, headers, addresses, extras */
    size_t image_len;        /* of them, those before the extras */
    unsigned present;        /* 1 scheme, 2 server_name, 4 client_addr: not NULL */
    struct lw_env_set *sets; /* wsgi_env_set() calls, applied in order after the build */
    struct lw_env_set **sets_tail;
};
/* GIL held: the environ and wsgi.input of env (new references); -1 with an exception set. */
int lw_env_materialize(wsgi_env *env, PyObject **environ_out, lw_input **input_out);
/* GIL held: drop the app's environ layouts (wsgi_app_free). */
void lw_shapes_free(wsgi_app *app);
void lw_env_free_spare(void); /* wsgi_runtime_free */

typedef enum lw_mode {
    LW_MODE_ITER = 0, /* generic iterator */
    LW_MODE_SEQ,      /* exact list or tuple: index without an iterator */
    LW_MODE_SENDFILE, /* wsgi.file_wrapper over a regular file, host has on_sendfile */
} lw_mode;

struct wsgi_response {
    wsgi_app *app;
    wsgi_response_handler h;
    void *ud;
    PyObject *environ;
    lw_input *input;
    lw_start_response *sr;

    /* set by start_response (not yet committed) */
    PyObject *status;  /* str */
    PyObject *headers; /* tuple of (name, value) str tuples, validated */
    int status_code;
    int64_t content_length; /* -1 if none */
    int pending_err;        /* code of a start_response rejection the app has not recovered from */

    /* iteration */
    PyObject *result; /* what the app returned */
    PyObject *iter;
    Py_ssize_t seq_idx;
    lw_mode mode;
    int sf_fd;
    int64_t sf_offset, sf_count;
    PyObject *held[2]; /* the current and the previous chunk: the host may still read both */

    int64_t sent; /* body bytes delivered */
    int head_request;
    unsigned started : 1, closed : 1, done : 1, fail_pending : 1, free_pending : 1, sf_sent : 1;
    /* Prefetched by wsgi_call (GIL held): the first item of an exact list/tuple, held in held[0],
     * delivered by the next wsgi_iter_next without the GIL; pre_last: it ends the response. */
    unsigned pre : 1, pre_last : 1;
    unsigned
        head_locked : 1; /* status/headers final (prefetched): start_response may not change them */
    unsigned input_idle : 1; /* wsgi.input can no longer reach the host (lw_input_idle) */
    size_t pre_len;
    struct wsgi_response *deferred_next; /* in the queue of responses freed without the GIL */
    int in_cb;
    int error;    /* first failure, 0 if none */
    int final_rc; /* what wsgi_iter_next returns once done */
    /* The observer (observer.c): set when the runtime observes requests. */
    unsigned observe : 1, observed : 1, exc : 1; /* exc: error came from an app exception */
    int status_sent;                             /* the status given to on_start */
    uint64_t bytes_out;                          /* given to on_body / on_sendfile */
    lw_obs_times obs_t;
    char errmsg[512];
};

lw_start_response *lw_start_response_new(wsgi_response *resp);
void lw_start_response_detach(lw_start_response *sr);
/* Drop the response's reference (GIL held): back to a pool if the app kept none. */
void lw_start_response_release(lw_start_response *sr);
void lw_start_response_pool_clear(void); /* GIL held: wsgi_runtime_free */
/* Record a failure on the response (first one wins) and log it. */
void lw_response_fail(wsgi_response *resp, int code, const char *fmt, ...) LW_PRINTF(3, 4);
/* Commit status + headers: calls on_start (GIL released around it). 0 or WSGI_ERR_CALLBACK. */
int lw_response_commit(wsgi_response *resp);
/* Deliver one body chunk with the GIL held (write()): released around on_body. */
int lw_response_deliver_locked(wsgi_response *resp, PyObject *bytes);
/* GIL held: finish freeing the responses wsgi_response_free() queued without the GIL. */
void lw_responses_drain(void);
void lw_responses_free_spare(void); /* wsgi_runtime_free, after the drain */

/* ---- ASGI (asgi_loop.c, asgi_scope.c, asgi_conn.c) -------------------------------------- */
typedef struct lw_asgi_strings {
    PyObject *type, *asgi, *http, *http_version, *method, *scheme, *path, *raw_path, *query_string,
        *root_path, *headers, *client, *server, *state, *extensions, *body, *more_body, *status,
        *trailers, *more_trailers, *http_request, *http_disconnect, *resp_start, *resp_body,
        *resp_trailers, *resp_pathsend, *ext_trailers, *ext_pathsend, *v10, *v11, *v2, *https;
    /* WebSocket (asgi_ws.c) */
    PyObject *websocket, *ws, *wss, *subprotocols, *subprotocol, *text, *bytes, *code, *reason,
        *ws_connect, *ws_receive, *ws_disconnect, *ws_accept, *ws_send, *ws_close, *ws_resp_start,
        *ws_resp_body, *ext_ws_response;
} lw_asgi_strings;

/* Loop-thread check + GIL for asgi_* entry points; sets wsgi_errmsg on failure. */
int lw_asgi_enter(wsgi_runtime *rt, lw_gil *g);
int lw_asgi_loop_ensure(wsgi_runtime *rt); /* GIL held */
void lw_asgi_loop_free(wsgi_runtime *rt);  /* GIL held */
/* The scope of @p req: an http scope (trailers/pathsend: extensions offered) or, with websocket
 * set, a websocket scope (subprotocols, ws/wss, the websocket.http.response extension). */
PyObject *lw_asgi_scope(wsgi_app *app, const wsgi_request *req, int trailers, int pathsend,
                        int websocket);
extern PyTypeObject lw_AsgiConnType;
extern PyTypeObject lw_ReadyType;
int lw_asgi_types_ready(void);
/* The HTTP reason phrase for a status code ("" if unknown). */
const char *lw_reason_phrase(int status);

#endif /* LIBWSGI_INTERNAL_H */
