/* Private to asgi_conn.c (HTTP) and asgi_ws.c (WebSocket): the ASGI connection object both
 * protocols share, and the helpers they both use (ready awaitables, futures, header validation,
 * the held response head, the callback wrapper). Never installed. */
#ifndef LIBWSGI_ASGI_CONN_H
#define LIBWSGI_ASGI_CONN_H

#include "internal.h"

typedef enum { R_START, R_BODY, R_TRAILERS, R_DONE } lw_rstate;
typedef enum { LW_AC_HTTP, LW_AC_WS } lw_ac_kind;
/* WebSocket: before websocket.accept (or a denial), accepted, closed by the app or denied. */
typedef enum { WS_CONNECTING, WS_OPEN, WS_CLOSED } lw_wsstate;

/* Validated response headers as C pairs pointing into bytes objects kept alive by `keep`. */
typedef struct lw_hdrs {
    wsgi_header stack[4]; /* more are allocated */
    wsgi_header *v;
    size_t n;
    PyObject *keep; /* list of the sequences the pointers live in */
    int64_t cl;
} lw_hdrs;

/* What the observer needs of a connection, allocated only when the runtime has one. */
typedef struct lw_ac_obs {
    int status_sent; /* the status given to on_start (101 for an accepted WebSocket) */
    unsigned char observed, exc, ws_open_seen, ws_close_seen;
    uint64_t bytes_in; /* body bytes (HTTP) or message bytes (WebSocket) from the host */
    lw_obs_times t;
} lw_ac_obs;

/* Kept under 512 bytes: Python's small-object allocator serves it (larger objects come from
 * malloc). Pointers first, then the ints, then the small arrays. */
typedef struct lw_asgi_conn {
    PyObject_HEAD wsgi_app *app;
    asgi_handler h;
    void *ud;
    PyObject *task;
    PyObject *done_cb; /* the task's done callback, removed once run_asgi reported the end */
    /* incoming: HTTP body chunks, or WebSocket receive events, not yet received by the app */
    PyObject *body;  /* list of bytes (HTTP) or of event dicts (WebSocket); NULL: empty */
    size_t buffered; /* their total size in bytes */
    /* HTTP: a fed Content-Length body of at most LW_ASGI_BODY_LIMIT is gathered here, in the
     * bytes object the app gets, and queued whole when complete (asgi_conn_feed); until then
     * buffered counts its bytes (nothing else is queued meanwhile) */
    PyObject *gather;
    PyObject *recv_waiter; /* the future of the oldest receive() still waiting, or NULL */
    PyObject *recv_more;   /* list of the futures of receive() calls awaited meanwhile (several
                            * tasks receiving at once: starlette's is_disconnected() while its
                            * StreamingResponse listens for the disconnect), oldest first; NULL
                            * until there is one */
    /* response */
    int64_t cl, sent;
    PyObject *send_waiter;
    PyObject *held[2];      /* the current and the previous body: the host may still read both */
    PyObject *close_reason; /* WebSocket: str, for websocket.disconnect */
    PyObject *offered;      /* WebSocket: tuple of the subprotocols the client offered */
    struct lw_asgi_conn *free_next; /* on the list of connections freed without the GIL */
    char *errmsg;                   /* malloc'd with the first failure, else NULL */
    size_t head_line_len;
    lw_ac_kind kind;
    /* a Content-Length body of at most LW_ASGI_BODY_LIMIT: its length until the first piece is fed
     * (then it is gathered unless that piece is all of it); else 0 */
    uint32_t gather_cl;
    lw_rstate rstate;
    int sf_fd;
    /* http.response.start, validated, held until the first body event (ASGI spec) */
    int head_pending;
    int head_status;
    /* WebSocket */
    lw_wsstate wstate;
    int close_code; /* for websocket.disconnect */
    int done_result;
    int error;
    /* Flags, as bytes to keep the object small. eager_step: inside its first step, run by
     * asgi_dispatch (eager start); done_owed: ended in that step, asgi_dispatch calls
     * on_done(done_result) after it. head_request: the request's method is HEAD (its response
     * has no body). client_closed: asgi_conn_client_closed(), the client has the whole response
     * and went; receive() reports http.disconnect, send() still works. */
    unsigned char trailers, connect_sent, disconnected, done, eager_step, done_owed, head_request,
        client_closed;
    /* attached: the host still holds its handle, callbacks may fire. body_more: the host may feed
     * more. read_paused: feed answered ASGI_PAUSE, on_read_resume is owed. */
    unsigned char attached, body_more, body_final_sent, read_paused;
    struct lw_ac_obs *obs; /* the observer's record (observer.h), NULL unless observing */
    char head_line[40];    /* "404 Not Found": the longest standard one is 35 bytes */
    lw_hdrs head_h;
} lw_asgi_conn;

/* The queue in c->body, made on first use (most requests never queue anything). */
static inline Py_ssize_t lw_ac_queued(const lw_asgi_conn *c)
{
    return c->body ? PyList_GET_SIZE(c->body) : 0;
}
static inline int lw_ac_queue(lw_asgi_conn *c, PyObject *item)
{
    if (!c->body && !(c->body = PyList_New(0))) return -1;
    return PyList_Append(c->body, item);
}

/* Callback wrappers: GIL released, skipped (-1) once the host detached. */
#define LW_AC_CALL(c, expr)                                                                        \
    ({                                                                                             \
        int r_ = -1;                                                                               \
        if ((c)->attached) {                                                                       \
            PyThreadState *save_ = PyEval_SaveThread();                                            \
            r_ = (expr);                                                                           \
            PyEval_RestoreThread(save_);                                                           \
        }                                                                                          \
        r_;                                                                                        \
    })

/* An exception set aside while cleaning up. */
typedef struct lw_exc_saved {
    PyObject *t, *v, *tb;
} lw_exc_saved;
#define LW_EXC_SAVE(s)    PyErr_Fetch(&(s).t, &(s).v, &(s).tb)
#define LW_EXC_RESTORE(s) PyErr_Restore((s).t, (s).v, (s).tb)

/* asgi_loop.c: boot.run_asgi (borrowed; NULL if the boot code lacks it) */
PyObject *lw_asgi_runner(void);
/* asgi_loop.c: eager start (asgi_loop_set_eager) */
int lw_eager_enabled(void);
/* 0: start the next task eagerly (the loop is marked running on this thread), -1: the deferred
 * way (another task is in the middle of its step, or the loop cannot be marked running). */
int lw_eager_begin(void);
/* asyncio.Task(coro, loop=loop) with its first step caught in *step, *ctx (new references), or
 * both NULL if it was scheduled the usual way. NULL on error. */
PyObject *lw_eager_task(PyObject *coro, PyObject *context, PyObject **step, PyObject **ctx);
/* Run a caught first step now, in its context (failures of the machinery are logged). */
void lw_eager_step(PyObject *step, PyObject *ctx);
/* asgi_loop.c: lazy tasks (a request's coroutine runs without a Task until it needs one) */
int lw_lazy_enabled(void);
/* The connection a coroutine is driven for (lw_lazy_drive). */
typedef struct lw_lazy_host {
    PyObject *owner;                                /* the connection */
    PyObject **slot;                                /* where its Task goes (new reference) */
    PyObject *(*report_callable)(PyObject *owner);  /* report(exc) for Python (new reference) */
    void (*report)(PyObject *owner, PyObject *exc); /* the same from C; exc None: returned */
} lw_lazy_host;
/* Call @fn(*args[3]) (the app) and drive the coroutine it returns now, without a Task, in a copy
 * of the context, until it ends or waits; its end is reported through @h (at once, or by its Task
 * later). If it waits, or asks for its task meanwhile, it gets a Task, stored in *h->slot. 0, or
 * -1 with a Python exception set when nothing could report (the request must be ended). */
int lw_lazy_drive(PyObject *fn, PyObject *const *args, const lw_lazy_host *h);
/* The Task of the coroutine being driven for @slot, made now if need be (borrowed; NULL: none is
 * driven for it, or making it failed, with an exception set). */
PyObject *lw_lazy_task_of(PyObject **slot);

/* asgi_scope.c: drop the cached scope objects (with the loop; GIL held) */
void lw_asgi_scope_cache_clear(void);

/* asgi_conn.c */
PyObject *lw_ready_new(PyObject *value); /* steals value; an awaitable that returns it at once */
void lw_ac_cache_clear(void);            /* with the loop (GIL held) */
void lw_ac_drain_frees(void);            /* release what asgi_conn_free deferred (GIL held) */
int lw_ac_frees_pending(void);           /* asgi_conn_free deferred some (loop thread) */
void lw_loop_timeout_note(int nested);   /* remember the loop timeout now (GIL held) */
void lw_future_set(PyObject *fut, PyObject *value, int is_exception); /* steals value */
void lw_drop_done(PyObject **waiter);
void lw_ac_fail(lw_asgi_conn *c, int code, const char *fmt, ...) LW_PRINTF(3, 4);
int lw_streq(PyObject *a, PyObject *interned);
void lw_hdrs_init(lw_hdrs *h);
void lw_hdrs_free(lw_hdrs *h);
int lw_hdrs_parse(PyObject *headers, lw_hdrs *h, const char *what);
/* A callback's answer as send()'s: -1 (client gone: OSError set), 0 or ASGI_PAUSE. */
int lw_ac_result(lw_asgi_conn *c, int r, const char *which);
/* http.response.start / websocket.http.response.start: validate and hold. 0 or -1. */
int lw_ac_start(lw_asgi_conn *c, PyObject *msg);
/* http.response.body / websocket.http.response.body (delivers the held head first). */
int lw_ac_body(lw_asgi_conn *c, PyObject *msg);
/* Deliver a fixed response (the 500, the WebSocket 403) when nothing was sent. */
void lw_ac_fixed_response(lw_asgi_conn *c, const wsgi_response_head *head, const char *body);
void lw_ac_wake_receiver(lw_asgi_conn *c);
void lw_ac_disconnect(lw_asgi_conn *c);

/* The observer: the request's outcome (once, while attached; then on_done may follow), and its
 * WebSocket opened / closed (code). gil: the caller holds the GIL (released around the call);
 * ended: the app's task has ended (else the host lets go first). */
void lw_ac_observe_done(lw_asgi_conn *c, int gil, int ended);
void lw_ac_observe_ws(lw_asgi_conn *c, int open, int code, int gil);

/* asgi_ws.c */
PyObject *lw_ws_next_event(lw_asgi_conn *c); /* NULL without exception: wait */
/* send() of a WebSocket connection: -1 (exception set), 0 or ASGI_PAUSE. */
int lw_ws_send(lw_asgi_conn *c, PyObject *type, PyObject *msg);
/* The app's task ended with @p result (0 or an error already recorded): deliver what the
 * protocol owes (403 before the accept, a close after it). Returns the on_done result. */
int lw_ws_task_end(lw_asgi_conn *c, int result);

#endif
