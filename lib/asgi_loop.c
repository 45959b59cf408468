/* The host-driven asyncio loop behind ASGI: created on first use from boot.make_loop(), exposed as
 * an fd + timeout + "one turn" call, woken from any thread through an eventfd. Also runs the
 * lifespan protocol (boot.Lifespan) to completion at startup and shutdown. */
#include "asgi_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* boot code logs through this (level, message). */
static PyObject *lw_py_log(PyObject *self, PyObject *args)
{
    (void)self;
    int level;
    const char *msg;
    if (!PyArg_ParseTuple(args, "is", &level, &msg)) return NULL;
    lw_log(level, "%s", msg);
    Py_RETURN_NONE;
}
static PyMethodDef lw_py_log_def = {"log", lw_py_log, METH_VARARGS, "log(level, message)"};

static int lw_asgi_strings_init(wsgi_runtime *rt)
{
    lw_asgi_strings *a = calloc(1, sizeof *a);
    if (!a) {
        PyErr_NoMemory();
        return -1;
    }
    rt->as = a;
#define I(field, text)                                                                             \
    do {                                                                                           \
        if (!(a->field = PyUnicode_InternFromString(text))) return -1;                             \
    } while (0)
    I(type, "type");
    I(asgi, "asgi");
    I(http, "http");
    I(http_version, "http_version");
    I(method, "method");
    I(scheme, "scheme");
    I(path, "path");
    I(raw_path, "raw_path");
    I(query_string, "query_string");
    I(root_path, "root_path");
    I(headers, "headers");
    I(client, "client");
    I(server, "server");
    I(state, "state");
    I(extensions, "extensions");
    I(body, "body");
    I(more_body, "more_body");
    I(status, "status");
    I(trailers, "trailers");
    I(more_trailers, "more_trailers");
    I(http_request, "http.request");
    I(http_disconnect, "http.disconnect");
    I(resp_start, "http.response.start");
    I(resp_body, "http.response.body");
    I(resp_trailers, "http.response.trailers");
    I(resp_pathsend, "http.response.pathsend");
    I(ext_trailers, "http.response.trailers");
    I(ext_pathsend, "http.response.pathsend");
    I(v10, "1.0");
    I(v11, "1.1");
    I(v2, "2");
    I(https, "https");
    I(websocket, "websocket");
    I(ws, "ws");
    I(wss, "wss");
    I(subprotocols, "subprotocols");
    I(subprotocol, "subprotocol");
    I(text, "text");
    I(bytes, "bytes");
    I(code, "code");
    I(reason, "reason");
    I(ws_connect, "websocket.connect");
    I(ws_receive, "websocket.receive");
    I(ws_disconnect, "websocket.disconnect");
    I(ws_accept, "websocket.accept");
    I(ws_send, "websocket.send");
    I(ws_close, "websocket.close");
    I(ws_resp_start, "websocket.http.response.start");
    I(ws_resp_body, "websocket.http.response.body");
    I(ext_ws_response, "websocket.http.response");
#undef I
    return 0;
}

static void lw_asgi_strings_free(wsgi_runtime *rt)
{
    if (!rt->as) return;
    PyObject **p = (PyObject **)rt->as;
    for (size_t i = 0; i < sizeof *rt->as / sizeof(PyObject *); i++)
        Py_CLEAR(p[i]);
    free(rt->as);
    rt->as = NULL;
}

/* ---- eager start: a request's first step inside asgi_dispatch (asgi_loop_set_eager) ----------
 *
 * Python 3.12's eager_task_factory is the model: a real asyncio.Task whose first step runs at once,
 * synchronously, instead of at the next loop turn. Python 3.11 has no such option, so the step is
 * caught where Task.__init__ schedules it: for the length of the Task() call the loop's call_soon
 * is overridden in the loop's instance __dict__ by a C function that keeps the step callback and
 * its context instead of scheduling them (anything else it is given goes to the real call_soon).
 * The step then runs inside that context with the loop marked running on this thread, as
 * run_forever would: asyncio.get_running_loop(), current_task() (the Task itself: its step enters
 * and leaves it), contextvars, cancellation and timeouts are the Task's own. A probe at loop
 * creation checks that this works on the running Python; if not, dispatch starts tasks the deferred
 * way.
 *
 * One runtime per process, so one instance; reset with the loop. GIL held for every access. */
static struct {
    int on;                        /* asgi_loop_set_eager(rt, 1) */
    int usable;                    /* the probe worked on this Python */
    PyObject *loop_dict;           /* the loop's __dict__: call_soon is overridden there briefly */
    PyObject *catcher;             /* the C function put there */
    PyObject *task_type;           /* asyncio.Task */
    PyObject *task_kwnames;        /* ("loop", "name") */
    unsigned long long task_count; /* eager tasks are named "asgi-<n>" */
    PyTypeObject *step_type;       /* the type of the callback Task.__init__ schedules */
    PyObject *current_task;        /* asyncio.current_task */
    PyObject *get_running, *set_running; /* asyncio._get_running_loop / _set_running_loop */
    PyObject *get_hooks, *set_hooks;     /* sys.get_asyncgen_hooks / set_asyncgen_hooks */
    PyObject *hooks_kwnames;             /* ("firstiter", "finalizer") */
    PyObject *hooks[2];                  /* the loop's _asyncgen_firstiter_hook, _finalizer_hook */
    PyObject *old_hooks;                 /* what lw_eager_hooks(1) replaced */
    PyObject *thread_id;                 /* threading.get_ident() of the loop thread */
    PyObject *s_call_soon, *s_thread_id, *s_context, *s_ready, *s_scheduled, *s_debug, *s_get_debug,
        *s_stopping, *s_self, *s_task_factory, *context_kwnames;
    PyObject *run_asgi;   /* boot.run_asgi (not eager start's, but cached with the loop here) */
    PyObject *run_once;   /* loop._run_once (bound), NULL: turns go through run_forever */
    int running;          /* the loop is marked running on the loop thread (lw_running_enter) */
    int catching;         /* inside the Task() call */
    unsigned catch_calls; /* call_soon calls the catcher saw during it */
    PyObject *step, *ctx; /* what the catcher kept */
    /* type(loop).call_soon bound to the loop: what the loop's __dict__ holds between Task() calls
     * (see lw_eager_task), and the function it binds */
    PyObject *call_soon_bound, *call_soon_func;
    /* Lazy tasks (see below): on when usable and not turned off by LIBWSGI_ASGI_LAZY_TASKS=0 */
    int lazy_on;
    PyObject *cancelled_error;         /* asyncio.CancelledError */
    PyObject *enter_task, *leave_task; /* asyncio.tasks._enter_task / _leave_task */
    PyObject *task_kwnames_ctx;        /* ("loop", "name", "context") */
    PyObject *boot_dict, *s_lazy_task; /* boot's globals, where _lazy_task is set */
    struct {
        int active;           /* a coroutine is being driven without a Task (lw_lazy_drive) */
        int entered;          /* its Task, made meanwhile, was entered as the loop's current task */
        PyObject *coro, *ctx; /* borrowed for the drive */
        PyObject **slot;      /* where the Task goes once made (the connection's) */
        const lw_lazy_host *host; /* whose coroutine it is */
        PyObject *task, *step,
            *resume; /* once made: the Task, its caught first step, the resumer */
    } lz;
} lw_eg;

/* loop.call_soon while a Task is being created: keep its first step, pass anything else on. */
static PyObject *lw_eg_catch(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    (void)self;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *ctx = NULL;
    if (lw_eg.catching) lw_eg.catch_calls++;
    int other = 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (lw_streq(PyTuple_GET_ITEM(kwnames, i), lw_eg.s_context))
            ctx = args[nargs + i];
        else
            other = 1;
    }
    if (lw_eg.catching && !lw_eg.step && nargs == 1 && !other && ctx &&
        (!lw_eg.step_type || Py_TYPE(args[0]) == lw_eg.step_type)) {
        lw_eg.step = Py_NewRef(args[0]);
        lw_eg.ctx = Py_NewRef(ctx);
        Py_RETURN_NONE; /* Task.__init__ drops the handle */
    }
    /* type(loop).call_soon(loop, *args, **kwargs) */
    PyObject *fn = PyObject_GetAttr((PyObject *)Py_TYPE(lw_rt->loop), lw_eg.s_call_soon);
    if (!fn) return NULL;
    PyObject *small[8], **stack = small;
    size_t n = (size_t)(nargs + nkw) + 1;
    if (n > sizeof small / sizeof small[0] && !(stack = PyMem_Malloc(n * sizeof *stack))) {
        Py_DECREF(fn);
        return PyErr_NoMemory();
    }
    stack[0] = lw_rt->loop;
    memcpy(stack + 1, args, (n - 1) * sizeof *stack);
    PyObject *r = PyObject_Vectorcall(fn, stack, (size_t)nargs + 1, kwnames);
    if (stack != small) PyMem_Free(stack);
    Py_DECREF(fn);
    return r;
}
static PyMethodDef lw_eg_catch_def = {"call_soon", (PyCFunction)(void (*)(void))lw_eg_catch,
                                      METH_FASTCALL | METH_KEYWORDS, NULL};

static int lw_eager_hooks(int install);
static void lw_running_leave(void);

/* With the loop: eager start ends with it (a new runtime's loop starts without). */
static void lw_eager_free(void)
{
    lw_running_leave(); /* loop.close() refuses a running loop */
    if (lw_eg.boot_dict && lw_eg.s_lazy_task &&
        PyDict_SetItem(lw_eg.boot_dict, lw_eg.s_lazy_task, Py_None) < 0)
        PyErr_Clear();
    lw_eg.boot_dict = NULL; /* borrowed */
    if (lw_eg.loop_dict && lw_eg.s_get_debug &&
        PyDict_DelItem(lw_eg.loop_dict, lw_eg.s_get_debug) <
            0) /* breaks loop -> get_debug -> loop */
        PyErr_Clear();
    if (lw_eg.loop_dict && lw_eg.call_soon_bound) { /* the same for call_soon, if still ours */
        PyObject *cur = PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_call_soon);
        if (cur == lw_eg.call_soon_bound && PyDict_DelItem(lw_eg.loop_dict, lw_eg.s_call_soon) < 0)
            PyErr_Clear();
        PyErr_Clear();
    }
    if (lw_eg.old_hooks && lw_rt && lw_rt->loop &&
        pthread_equal(lw_rt->loop_thread, pthread_self()) && lw_eager_hooks(0) < 0)
        lw_log_exception("restoring the async generator hooks", NULL, 0);
    PyObject **objs[] = {&lw_eg.loop_dict,
                         &lw_eg.catcher,
                         &lw_eg.task_type,
                         &lw_eg.task_kwnames,
                         &lw_eg.current_task,
                         &lw_eg.get_running,
                         &lw_eg.set_running,
                         &lw_eg.get_hooks,
                         &lw_eg.set_hooks,
                         &lw_eg.hooks_kwnames,
                         &lw_eg.hooks[0],
                         &lw_eg.hooks[1],
                         &lw_eg.old_hooks,
                         &lw_eg.thread_id,
                         &lw_eg.s_call_soon,
                         &lw_eg.s_thread_id,
                         &lw_eg.s_context,
                         &lw_eg.s_ready,
                         &lw_eg.s_scheduled,
                         &lw_eg.s_debug,
                         &lw_eg.s_get_debug,
                         &lw_eg.s_stopping,
                         &lw_eg.s_task_factory,
                         &lw_eg.step,
                         &lw_eg.ctx,
                         &lw_eg.run_asgi,
                         &lw_eg.run_once,
                         &lw_eg.s_self,
                         &lw_eg.context_kwnames,
                         &lw_eg.call_soon_bound,
                         &lw_eg.call_soon_func,
                         &lw_eg.cancelled_error,
                         &lw_eg.enter_task,
                         &lw_eg.leave_task,
                         &lw_eg.task_kwnames_ctx,
                         &lw_eg.s_lazy_task};
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++)
        Py_CLEAR(*objs[i]);
    memset(&lw_eg, 0, sizeof lw_eg);
}

/* ---- the loop's running state on the loop thread ---------------------------------------------
 *
 * What run_forever sets up for each run - the running loop (asyncio.get_running_loop(),
 * current_task() without a loop), the loop's thread (loop.is_running()), the async generator
 * hooks - is set up once, at the first turn or eager start, and stays: the loop runs on the loop
 * thread for as long as the host drives it, as it would inside one long run_forever. Each set-up
 * costs a getpid() (asyncio's running-loop holder records the pid), which on a virtual machine is
 * a microsecond; per request or per turn it was the most expensive thing a turn did. Left before
 * what needs the loop stopped (the lifespan's run_until_complete, a run_forever turn on a Python
 * without _run_once, closing the loop). */

static void lw_running_leave(void)
{
    if (!lw_eg.running) return;
    lw_exc_saved exc;
    LW_EXC_SAVE(exc);
    lw_eg.running = 0;
    PyObject *r = NULL;
    if (PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_thread_id, Py_None) == 0 &&
        pthread_equal(lw_rt->loop_thread, pthread_self()))
        r = PyObject_CallOneArg(lw_eg.set_running, Py_None);
    else if (!PyErr_Occurred())
        r = Py_NewRef(Py_None); /* another thread frees the runtime: not its running loop */
    if (!r) lw_log_exception("leaving the loop's running state", NULL, 0);
    Py_XDECREF(r);
    LW_EXC_RESTORE(exc);
}

/* 0 (the loop runs here now), or -1 (logged, or another loop runs on this thread: a host that
 * embeds Python may call from inside a loop of its own). */
static int lw_running_enter(void)
{
    if (lw_eg.running) return 0;
    if (!lw_eg.loop_dict) return -1;
    PyObject *running = PyObject_CallNoArgs(lw_eg.get_running);
    int free_ = running == Py_None;
    Py_XDECREF(running);
    PyErr_Clear();
    if (!free_) return -1;
    PyObject *r = PyObject_CallOneArg(lw_eg.set_running, lw_rt->loop);
    if (!r) goto fail;
    Py_DECREF(r);
    lw_eg.running = 1;
    if (PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_thread_id, lw_eg.thread_id) < 0 ||
        lw_eager_hooks(1) < 0) {
        lw_running_leave();
        goto fail;
    }
    return 0;
fail:
    lw_log_exception("marking the loop running", NULL, 0);
    return -1;
}

/* Whether the next task may start eagerly (lw_eager_enabled() said it is on): 0 yes (the loop
 * runs here), -1 no (another task is in the middle of a step, or the loop cannot be marked
 * running). */
int lw_eager_begin(void)
{
    wsgi_runtime *rt = lw_rt;
    if (lw_eg.lz.active) return -1; /* a request runs without its Task: the next one waits */
    /* A task factory (loop.set_task_factory: monitoring tools) makes every Task: eager and lazy
     * start make theirs themselves, so the request starts the deferred way, through
     * loop.create_task. */
    PyObject *factory =
        lw_eg.loop_dict ? PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_task_factory) : NULL;
    if (factory && factory != Py_None) return -1;
    PyErr_Clear();
    if (rt->loop_turn) {
        /* Inside a turn or an eager step (a dispatch from a callback): a task may be in the
         * middle of its step, which another task's step cannot interrupt. */
        PyObject *cur = PyObject_CallOneArg(lw_eg.current_task, rt->loop);
        int st = cur == Py_None ? 0 : -1;
        Py_XDECREF(cur);
        PyErr_Clear();
        return st;
    }
    return lw_running_enter();
}

/* The loop's async generator hooks on the loop thread, installed with the running state: an
 * async generator first iterated in an eager step or a turn is finalized by the loop. The hooks
 * that were there before are put back when the loop is freed. */
static int lw_eager_hooks(int install)
{
    if (install && !lw_eg.old_hooks) {
        if (!(lw_eg.old_hooks = PyObject_CallNoArgs(lw_eg.get_hooks))) return -1;
        PyObject *r = PyObject_Vectorcall(lw_eg.set_hooks, lw_eg.hooks, 0, lw_eg.hooks_kwnames);
        Py_XDECREF(r);
        if (!r) Py_CLEAR(lw_eg.old_hooks);
        return r ? 0 : -1;
    }
    if (!install && lw_eg.old_hooks) {
        PyObject *r = PyObject_Call(lw_eg.set_hooks, lw_eg.old_hooks, NULL);
        Py_XDECREF(r);
        Py_CLEAR(lw_eg.old_hooks);
        return r ? 0 : -1;
    }
    return 0;
}

/* One turn: loop._run_once() with the loop marked running (as inside run_forever), made
 * non-blocking by _stopping (what loop.stop() sets: the turn's select() polls with a zero timeout),
 * which is cleared again as run_forever clears it. 1 done (r: its result), 0 not available. */
static int lw_turn_run_once(PyObject **r)
{
    if (!lw_eg.run_once || lw_running_enter() < 0) return 0;
    if (PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_stopping, Py_True) < 0) {
        *r = NULL;
        return 1;
    }
    *r = PyObject_CallNoArgs(lw_eg.run_once);
    lw_exc_saved exc;
    LW_EXC_SAVE(exc);
    if (PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_stopping, Py_False) < 0)
        lw_log_exception("clearing loop._stopping", NULL, 0);
    LW_EXC_RESTORE(exc);
    return 1;
}

/* asyncio.Task(coro, loop=loop) with its first step caught: *step and *ctx are set (new
 * references) when it was, else the task was scheduled the usual way. NULL on error. */
PyObject *lw_eager_task(PyObject *coro, PyObject *context, PyObject **step, PyObject **ctx)
{
    *step = *ctx = NULL;
    /* A name of our own: Python 3.11 formats "Task-<n>" with PyUnicode_FromFormat, which costs
     * more than the rest of Task.__init__'s own work. */
    char nb[32] = "asgi-", digits[24];
    unsigned long long k = ++lw_eg.task_count;
    size_t nd = 0, nl = 5;
    do
        digits[nd++] = (char)('0' + k % 10);
    while ((k /= 10) != 0);
    while (nd)
        nb[nl++] = digits[--nd];
    PyObject *name = PyUnicode_FromStringAndSize(nb, (Py_ssize_t)nl);
    if (!name) return NULL;
    /* The catcher goes into the loop's __dict__ for the Task() call. Between calls the entry holds
     * type(loop).call_soon bound to the loop, which is what the attribute lookup would find
     * anyway: replacing a value costs less than inserting and deleting a key of the instance's
     * (shared-key) dict each time. Someone (an app, a monitoring library) that put its own
     * call_soon on the loop instance is left alone, and this Task starts the deferred way,
     * through it. */
    PyObject *cur = PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_call_soon);
    int ours = !cur || cur == lw_eg.call_soon_bound;
    if (!cur && PyErr_Occurred()) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *restore = NULL; /* what goes back after the call: NULL deletes the entry */
    if (ours) {
        /* The class's call_soon now (a class patched since still counts), bound if a function. */
        PyObject *fn = PyObject_GetAttr((PyObject *)Py_TYPE(lw_rt->loop), lw_eg.s_call_soon);
        if (fn && PyFunction_Check(fn) && fn != lw_eg.call_soon_func) {
            PyObject *bound = PyMethod_New(fn, lw_rt->loop);
            if (bound) {
                Py_XSETREF(lw_eg.call_soon_bound, bound);
                Py_XSETREF(lw_eg.call_soon_func, Py_NewRef(fn));
            }
        }
        if (fn && PyFunction_Check(fn) && fn == lw_eg.call_soon_func)
            restore = lw_eg.call_soon_bound;
        Py_XDECREF(fn);
        if (PyErr_Occurred() ||
            PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_call_soon, lw_eg.catcher) < 0) {
            Py_DECREF(name);
            return NULL;
        }
    }
    lw_eg.catching = ours;
    lw_eg.catch_calls = 0;
    PyObject *argv[4] = {coro, lw_rt->loop, name, context};
    PyObject *task = PyObject_Vectorcall(lw_eg.task_type, argv, 1,
                                         context ? lw_eg.task_kwnames_ctx : lw_eg.task_kwnames);
    lw_eg.catching = 0;
    Py_DECREF(name);
    if (ours) {
        lw_exc_saved exc;
        LW_EXC_SAVE(exc);
        if ((restore ? PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_call_soon, restore)
                     : PyDict_DelItem(lw_eg.loop_dict, lw_eg.s_call_soon)) < 0)
            lw_log_exception("restoring loop.call_soon", NULL, 0);
        LW_EXC_RESTORE(exc);
    }
    *step = lw_eg.step;
    *ctx = lw_eg.ctx;
    lw_eg.step = lw_eg.ctx = NULL;
    if (!task) {
        Py_CLEAR(*step);
        Py_CLEAR(*ctx);
        return NULL;
    }
    if (*step && lw_eg.step_type && lw_eg.catch_calls != 1) {
        /* Another Task created meanwhile (by a finalizer the allocations ran) would have had its
         * step caught instead, and ours scheduled: then schedule that one as it asked, and ours
         * starts the deferred way. (With one call_soon during the call, the caught step is the
         * one our Task.__init__ made.) */
        PyObject *owner = PyObject_GetAttr(*step, lw_eg.s_self);
        if (owner != task) {
            PyErr_Clear();
            PyObject *fn = PyObject_GetAttr((PyObject *)Py_TYPE(lw_rt->loop), lw_eg.s_call_soon);
            PyObject *sargs[3] = {lw_rt->loop, *step, *ctx};
            PyObject *r = fn ? PyObject_Vectorcall(fn, sargs, 2, lw_eg.context_kwnames) : NULL;
            if (!r)
                lw_log_exception("scheduling a task created during another's creation", NULL, 0);
            Py_XDECREF(r);
            Py_XDECREF(fn);
            Py_CLEAR(*step);
            Py_CLEAR(*ctx);
        }
        Py_XDECREF(owner);
    }
    return task;
}

/* Run a caught first step now, in the task's context, as a loop turn would (asgi_loop_run and the
 * lifespan calls are refused meanwhile). A failure of the step machinery itself is logged. */
void lw_eager_step(PyObject *step, PyObject *ctx)
{
    wsgi_runtime *rt = lw_rt;
    int turn = rt->loop_turn;
    rt->loop_turn = 1;
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        r = PyObject_CallNoArgs(step);
        lw_exc_saved exc;
        LW_EXC_SAVE(exc);
        if (PyContext_Exit(ctx) < 0) PyErr_Clear();
        LW_EXC_RESTORE(exc);
    }
    rt->loop_turn = turn;
    if (!r) lw_log_exception("the first step of an ASGI task", NULL, 0);
    Py_XDECREF(r);
}

/* ---- lazy tasks: a request's coroutine runs without a Task until it needs one -----------------
 *
 * A Task costs more than the rest of a small request (Task.__init__ registers it in asyncio's
 * WeakSet of all tasks, its deallocation runs that set's Python callback: about a third of an ASGI
 * hello world's instructions). So asgi_dispatch calls the app and drives its coroutine itself
 * (lw_lazy_drive: coro.send(None) in a copy of the context, the loop marked running, as a Task's
 * step would), and a request that never waits ends there, Task-less, its end reported from C. A
 * Task is made when the coroutine needs one:
 *
 * - it waits (yields a future, or None for sleep(0)): Task(resumer) in the same context, where the
 *   resumer (lw_resume, a C coroutine-like object) hands what the coroutine yielded to the Task in
 *   its first step (run now, eagerly) and then delegates every send and throw to the coroutine,
 *   reporting its end: from there on the request is an ordinary Task;
 * - it asks for it: asyncio.current_task() / all_tasks() (boot's wrappers call lw_lazy_hook when
 *   the loop has no current task; asyncio.timeout, TaskGroup, anyio, sniffio all go through
 *   them), or the host cancels it (asgi_conn_cancel): the Task is made then, and entered as the
 *   loop's current task for the rest of the drive, so every later call sees the same object;
 *   when the drive ends, the resumer is told how (returned, raised, or waiting on what).
 *
 * The context, the running loop, current_task(), cancellation and timeouts are therefore those of
 * a Task wherever the app can observe them (tests/unit/test_asgi_task.c). */

int lw_lazy_enabled(void)
{
    return lw_eg.lazy_on && lw_eager_enabled();
}

/* The coroutine of a Task made for a lazily started request. Until the Task's first step it only
 * knows what the drive told it (state); then it is the request's coroutine for the Task: send and
 * throw go through, and the end is reported (when the coroutine is the app's own). Looks like that
 * coroutine to introspection (cr_frame, cr_await, cr_code, __qualname__: Task repr, get_stack,
 * boot.task_stack). Registered as a collections.abc.Coroutine (Python 3.12's Task takes nothing
 * else). GC-tracked: the app's frames may hold its Task. */
enum { LR_UNKNOWN, LR_RETURNED, LR_RAISED, LR_WAITS, LR_RUNNING, LR_DONE };
typedef struct {
    PyObject_HEAD PyObject *coro; /* the request's coroutine (NULL until the app's call returns) */
    PyObject *value;   /* until the first step: the result, the exception, or what it waits on */
    PyObject *pending; /* thrown into the coroutine at the next send (a cancel that came early) */
    PyObject *owner;   /* the connection whose end it reports (the app's own coroutine), or NULL */
    void (*report)(PyObject *owner, PyObject *exc);
    int state;
} lw_resume;

static PyTypeObject lw_ResumeType;

/* The owner (who hears the end) is set once the coroutine waits (lw_lazy_drive). */
static PyObject *lw_resume_new(PyObject *coro, void (*report)(PyObject *, PyObject *))
{
    lw_resume *r = PyObject_GC_New(lw_resume, &lw_ResumeType);
    if (!r) return NULL;
    r->coro = Py_XNewRef(coro);
    r->value = r->pending = NULL;
    r->owner = NULL;
    r->report = report;
    r->state = LR_UNKNOWN;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static int lw_resume_traverse(lw_resume *r, visitproc visit, void *arg)
{
    Py_VISIT(r->coro);
    Py_VISIT(r->value);
    Py_VISIT(r->pending);
    Py_VISIT(r->owner);
    return 0;
}

static int lw_resume_clear(lw_resume *r)
{
    Py_CLEAR(r->coro);
    Py_CLEAR(r->value);
    Py_CLEAR(r->pending);
    Py_CLEAR(r->owner);
    return 0;
}

static void lw_resume_dealloc(lw_resume *r)
{
    PyObject_GC_UnTrack(r);
    lw_resume_clear(r);
    PyObject_GC_Del(r);
}

/* The end of a request whose coroutine is the app's own (no run_asgi around it): reported from C
 * as run_asgi would (KeyboardInterrupt and SystemExit, which asyncio lets escape the loop, as a
 * RuntimeError caused by them). @exc: None if it returned. */
static void lw_lazy_report(PyObject *owner, void (*report)(PyObject *, PyObject *), PyObject *exc)
{
    PyObject *err = NULL;
    if (exc != Py_None && (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
                           PyErr_GivenExceptionMatches(exc, PyExc_SystemExit))) {
        err = PyObject_CallFunction(PyExc_RuntimeError, "s",
                                    PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
                                        ? "ASGI app raised SystemExit"
                                        : "ASGI app raised KeyboardInterrupt");
        if (err) PyException_SetCause(err, Py_NewRef(exc));
        PyErr_Clear();
    }
    report(owner, err ? err : exc);
    Py_XDECREF(err);
}

/* The coroutine ended (sr: RETURN or ERROR, *res its value or NULL): reported if it is the app's,
 * which then ends the Task with None, as run_asgi's body does. A GeneratorExit is reported too:
 * out of send() or throw() it is the app's own (closing the Task's coroutine, lw_resume_close,
 * reports nothing). */
static PySendResult lw_resume_end(lw_resume *r, PySendResult sr, PyObject **res)
{
    r->state = LR_DONE;
    if (!r->owner) return sr;
    PyObject *owner = r->owner;
    r->owner = NULL;
    if (sr == PYGEN_RETURN) {
        lw_lazy_report(owner, r->report, Py_None);
    } else {
        lw_exc_saved e;
        LW_EXC_SAVE(e);
        PyErr_NormalizeException(&e.t, &e.v, &e.tb);
        if (e.v && e.tb) PyException_SetTraceback(e.v, e.tb);
        lw_lazy_report(owner, r->report, e.v ? e.v : Py_None);
        Py_XDECREF(e.t);
        Py_XDECREF(e.v);
        Py_XDECREF(e.tb);
    }
    Py_DECREF(owner);
    Py_XSETREF(*res, Py_NewRef(Py_None));
    return PYGEN_RETURN;
}

/* A method call's outcome as a send result (NULL + StopIteration: returned). */
static PySendResult lw_as_send_result(PyObject *r, PyObject **res)
{
    if (r) {
        *res = r;
        return PYGEN_NEXT;
    }
    if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
        lw_exc_saved e;
        LW_EXC_SAVE(e);
        PyErr_NormalizeException(&e.t, &e.v, &e.tb);
        PyObject *v = e.v ? PyObject_GetAttrString(e.v, "value") : NULL;
        Py_XDECREF(e.t);
        Py_XDECREF(e.v);
        Py_XDECREF(e.tb);
        if (!v) {
            *res = NULL;
            return PYGEN_ERROR;
        }
        *res = v;
        return PYGEN_RETURN;
    }
    *res = NULL;
    return PYGEN_ERROR;
}

static PySendResult lw_resume_am_send(lw_resume *r, PyObject *arg, PyObject **res)
{
    *res = NULL;
    switch (r->state) {
    case LR_RUNNING: {
        PySendResult sr;
        if (r->pending) { /* a cancel the Task asked for before its first wait: now, as it would */
            PyObject *exc = r->pending;
            r->pending = NULL;
            sr = lw_as_send_result(PyObject_CallMethod(r->coro, "throw", "O", exc), res);
            Py_DECREF(exc);
        } else {
            sr = PyIter_Send(r->coro, arg, res);
        }
        return sr == PYGEN_NEXT ? sr : lw_resume_end(r, sr, res);
    }
    case LR_WAITS: /* the Task's first step: it now waits on what the coroutine waits on */
        r->state = LR_RUNNING;
        *res = r->value;
        r->value = NULL;
        return PYGEN_NEXT;
    case LR_RETURNED:
        r->state = LR_DONE;
        *res = r->value ? r->value : Py_NewRef(Py_None);
        r->value = NULL;
        return PYGEN_RETURN;
    case LR_RAISED:
        r->state = LR_DONE;
        PyErr_SetObject((PyObject *)Py_TYPE(r->value), r->value);
        Py_CLEAR(r->value);
        return PYGEN_ERROR;
    case LR_UNKNOWN:
        PyErr_SetString(PyExc_RuntimeError, "an ASGI request's task stepped before libwsgi "
                                            "handed its coroutine over");
        return PYGEN_ERROR;
    default:
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
}

/* A send result as a coroutine method's: the yielded value, or NULL with StopIteration(value) or
 * the exception set. */
static PyObject *lw_send_result_obj(PySendResult sr, PyObject *res)
{
    if (sr == PYGEN_NEXT) return res;
    if (sr == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, res);
        Py_DECREF(res);
        if (stop) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

/* send(value), as a coroutine's */
static PyObject *lw_resume_send(lw_resume *r, PyObject *arg)
{
    PyObject *res = NULL;
    PySendResult sr = lw_resume_am_send(r, arg, &res);
    return lw_send_result_obj(sr, res);
}

/* throw(exc) / throw(type[, value[, tb]]), as a coroutine's: what the Task does to cancel it. */
static PyObject *lw_resume_throw(lw_resume *r, PyObject *args)
{
    PyObject *typ, *val = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb)) return NULL;
    PyObject *exc;
    if (PyExceptionInstance_Check(typ)) {
        exc = Py_NewRef(typ);
    } else {
        PyErr_SetObject(typ, val ? val : Py_None);
        lw_exc_saved e;
        LW_EXC_SAVE(e);
        PyErr_NormalizeException(&e.t, &e.v, &e.tb);
        Py_XDECREF(e.t);
        Py_XDECREF(e.tb);
        if (!e.v) return NULL;
        exc = e.v;
    }
    PyObject *res = NULL;
    PySendResult sr;
    switch (r->state) {
    case LR_WAITS: {
        /* Thrown in by the Task's first step: it was cancelled before it ever ran (_must_cancel).
         * A Task in that state cancels what the coroutine waits on and waits for it to end; if
         * that cannot be cancelled (done, or a bare yield), it throws CancelledError in at its
         * next step. Hand the awaited object to the Task so that it does just that. */
        PyObject *waited = r->value;
        r->value = NULL;
        r->state = LR_RUNNING;
        if (PyErr_GivenExceptionMatches(exc, PyExc_GeneratorExit)) {
            Py_XDECREF(waited);
            PyObject *c = PyObject_CallMethod(r->coro, "close", NULL);
            Py_XDECREF(c);
            r->state = LR_DONE;
            Py_CLEAR(r->owner);
            if (c) PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
            return NULL;
        }
        int cancelled = 0;
        if (waited && waited != Py_None && lw_eg.cancelled_error &&
            PyErr_GivenExceptionMatches(exc, lw_eg.cancelled_error)) {
            PyObject *blocking = PyObject_GetAttrString(waited, "_asyncio_future_blocking");
            if (blocking && blocking != Py_None) {
                PyObject *a = PyObject_GetAttrString(exc, "args");
                PyObject *msg = a && PyTuple_Check(a) && PyTuple_GET_SIZE(a) > 0
                                    ? PyTuple_GET_ITEM(a, 0)
                                    : Py_None;
                PyObject *c = PyObject_CallMethod(waited, "cancel", "O", msg);
                cancelled = c == Py_True;
                Py_XDECREF(c);
                Py_XDECREF(a);
            }
            Py_XDECREF(blocking);
            PyErr_Clear();
        }
        if (!cancelled) r->pending = Py_NewRef(exc);
        Py_DECREF(exc);
        return waited ? waited : Py_NewRef(Py_None); /* the Task waits on it */
    }
    case LR_RUNNING:
        sr = lw_as_send_result(PyObject_CallMethod(r->coro, "throw", "O", exc), &res);
        break;
    case LR_RAISED: /* its coroutine had ended: the Task ends with what was thrown */
    case LR_RETURNED:
    default:
        r->state = LR_DONE;
        Py_CLEAR(r->value);
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(exc);
    if (sr != PYGEN_NEXT) sr = lw_resume_end(r, sr, &res);
    return lw_send_result_obj(sr, res);
}

static PyObject *lw_resume_close(lw_resume *r, PyObject *unused)
{
    (void)unused;
    if (r->state == LR_DONE) Py_RETURN_NONE;
    r->state = LR_DONE;
    Py_CLEAR(r->value);
    Py_CLEAR(r->pending);
    Py_CLEAR(r->owner);
    if (!r->coro) Py_RETURN_NONE;
    return PyObject_CallMethod(r->coro, "close", NULL);
}

/* Introspection: the request's coroutine's own attributes. */
static PyObject *lw_resume_attr(lw_resume *r, void *name)
{
    if (!r->coro) Py_RETURN_NONE;
    return PyObject_GetAttrString(r->coro, (const char *)name);
}

static PyMethodDef lw_resume_methods[] = {
    {"send", (PyCFunction)lw_resume_send, METH_O, NULL},
    {"throw", (PyCFunction)lw_resume_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)lw_resume_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef lw_resume_getset[] = {
    {"cr_frame", (getter)lw_resume_attr, NULL, NULL, "cr_frame"},
    {"cr_await", (getter)lw_resume_attr, NULL, NULL, "cr_await"},
    {"cr_code", (getter)lw_resume_attr, NULL, NULL, "cr_code"},
    {"cr_running", (getter)lw_resume_attr, NULL, NULL, "cr_running"},
    {"__name__", (getter)lw_resume_attr, NULL, NULL, "__name__"},
    {"__qualname__", (getter)lw_resume_attr, NULL, NULL, "__qualname__"},
    {NULL, NULL, NULL, NULL, NULL}};

static PyAsyncMethods lw_resume_async = {.am_send = (sendfunc)lw_resume_am_send};

static PyTypeObject lw_ResumeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libwsgi.LazyTaskCoroutine",
    .tp_basicsize = sizeof(lw_resume),
    .tp_dealloc = (destructor)lw_resume_dealloc,
    .tp_as_async = &lw_resume_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The coroutine of an ASGI request's Task made after the request started (libwsgi's "
              "lazy tasks): the request's own coroutine, handed over.",
    .tp_traverse = (traverseproc)lw_resume_traverse,
    .tp_clear = (inquiry)lw_resume_clear,
    .tp_methods = lw_resume_methods,
    .tp_getset = lw_resume_getset,
};

/* Make the Task for the coroutine being driven: Task(resumer, context=the drive's) with its first
 * step caught. 0, or -1 with an exception set. */
static int lw_lazy_make(void)
{
    const lw_lazy_host *h = lw_eg.lz.host;
    /* (coro: NULL when asked for during the app's call; the owner, for a coroutine that waits, is
     * set when the drive ends) */
    PyObject *r = lw_resume_new(lw_eg.lz.coro, h->report);
    PyObject *step = NULL, *ctx = NULL;
    PyObject *task = r ? lw_eager_task(r, lw_eg.lz.ctx, &step, &ctx) : NULL;
    Py_XDECREF(ctx);
    if (!task) {
        Py_XDECREF(r);
        Py_XDECREF(step);
        return -1;
    }
    lw_eg.lz.task = task;
    lw_eg.lz.step = step; /* NULL: scheduled the usual way (someone's call_soon), runs next turn */
    lw_eg.lz.resume = r;
    if (lw_eg.lz.slot) Py_XSETREF(*lw_eg.lz.slot, Py_NewRef(task));
    return 0;
}

/* boot._lazy_task(loop): the Task of the coroutine being driven on this thread for @loop, made and
 * entered now if need be; None when there is none. */
static PyObject *lw_lazy_hook(PyObject *self, PyObject *loop)
{
    (void)self;
    if (!lw_eg.lz.active || !lw_rt || loop != lw_rt->loop ||
        !pthread_equal(lw_rt->loop_thread, pthread_self()))
        Py_RETURN_NONE;
    if (!lw_eg.lz.task && lw_lazy_make() < 0) return NULL;
    if (!lw_eg.lz.entered) {
        PyObject *a[2] = {loop, lw_eg.lz.task};
        PyObject *r = PyObject_Vectorcall(lw_eg.enter_task, a, 2, NULL);
        if (!r) return NULL;
        Py_DECREF(r);
        lw_eg.lz.entered = 1;
    }
    return Py_NewRef(lw_eg.lz.task);
}
static PyMethodDef lw_lazy_hook_def = {"_lazy_task", lw_lazy_hook, METH_O, NULL};

PyObject *lw_lazy_task_of(PyObject **slot)
{
    if (!lw_eg.lz.active || lw_eg.lz.slot != slot) return NULL;
    PyObject *t = lw_lazy_hook(NULL, lw_rt->loop);
    Py_XDECREF(t); /* lw_eg.lz.task holds it */
    return t == Py_None ? NULL : t;
}

int lw_lazy_drive(PyObject *fn, PyObject *const *args, const lw_lazy_host *h)
{
    wsgi_runtime *rt = lw_rt;
    PyObject *ctx = PyContext_CopyCurrent();
    if (!ctx) return -1;
    lw_eg.lz.active = 1;
    lw_eg.lz.entered = 0;
    lw_eg.lz.coro = NULL; /* until the app's call returned it: no Task can be made before */
    lw_eg.lz.ctx = ctx;
    lw_eg.lz.slot = h->slot;
    lw_eg.lz.host = h;
    lw_eg.lz.task = lw_eg.lz.step = lw_eg.lz.resume = NULL;
    int turn = rt->loop_turn;
    rt->loop_turn = 1; /* asgi_loop_run and the lifespan calls are refused meanwhile */
    PyObject *coro = NULL, *val = NULL;
    int own = 0; /* coro is the app's coroutine: its end is reported here (else run_asgi's) */
    PySendResult sr = PYGEN_ERROR;
    if (PyContext_Enter(ctx) == 0) {
        PyObject *aw = PyObject_Vectorcall(fn, args, 3, NULL);
        if (aw && PyCoro_CheckExact(aw)) {
            coro = aw;
            own = 1;
        } else if (aw) {
            /* Not a coroutine (an awaitable object, or something that is not awaitable, which
             * the await in run_asgi reports as the TypeError it raises). */
            PyObject *report = h->report_callable(h->owner);
            PyObject *ra[6] = {Py_None, Py_None, Py_None, Py_None, report, aw};
            coro = report ? PyObject_Vectorcall(lw_eg.run_asgi, ra, 6, NULL) : NULL;
            Py_XDECREF(report);
            Py_DECREF(aw);
        } else {
            own = 1; /* the app's call raised: reported below, as run_asgi would */
        }
        lw_eg.lz.coro = coro;
        if (coro) sr = PyIter_Send(coro, Py_None, &val);
        lw_exc_saved exc;
        LW_EXC_SAVE(exc);
        if (PyContext_Exit(ctx) < 0) PyErr_Clear();
        LW_EXC_RESTORE(exc);
    }
    PyObject *exc = NULL; /* what the coroutine (or the app's call) raised */
    if (sr == PYGEN_ERROR && PyErr_Occurred()) {
        lw_exc_saved e;
        LW_EXC_SAVE(e);
        PyErr_NormalizeException(&e.t, &e.v, &e.tb);
        if (e.v && e.tb) PyException_SetTraceback(e.v, e.tb);
        exc = e.v;
        Py_XDECREF(e.t);
        Py_XDECREF(e.tb);
    }
    int rc = 0;
    if (own && sr != PYGEN_NEXT && (coro || exc)) {
        /* Reported in the step, as run_asgi does: its Task (if one was made) is still current
         * and another dispatch from the callbacks waits for a turn. The resumer, if made, has
         * no owner: it only ends its Task. */
        lw_lazy_report(h->owner, h->report, sr == PYGEN_RETURN || !exc ? Py_None : exc);
    } else if (!own && sr == PYGEN_ERROR) {
        rc = -1; /* run_asgi failed (or could not be made): the caller ends the request */
    }
    if (lw_eg.lz.entered) {
        lw_exc_saved e;
        LW_EXC_SAVE(e);
        PyObject *a[2] = {rt->loop, lw_eg.lz.task};
        PyObject *r = PyObject_Vectorcall(lw_eg.leave_task, a, 2, NULL);
        if (!r) lw_log_exception("leaving an ASGI request's task", NULL, 0);
        Py_XDECREF(r);
        LW_EXC_RESTORE(e);
    }
    lw_eg.lz.active = 0;
    rt->loop_turn = turn;
    if (!lw_eg.lz.task && sr != PYGEN_NEXT) { /* ended without needing a Task: the fast path */
        Py_XDECREF(val);
        if (rc < 0) {
            if (exc)
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            else if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "the ASGI coroutine could not be made");
        }
        Py_XDECREF(exc);
        Py_XDECREF(coro);
        Py_DECREF(ctx);
        lw_eg.lz.coro = NULL;
        return rc;
    }
    /* A Task takes over: made now if the coroutine waits, else told how the step ended. */
    if (!lw_eg.lz.task && lw_lazy_make() < 0) {
        /* Nothing can resume it: close it (its finally blocks run) and fail the request. */
        Py_XDECREF(val);
        lw_exc_saved e2;
        LW_EXC_SAVE(e2);
        PyObject *r = PyObject_CallMethod(coro, "close", NULL);
        if (!r) lw_log_exception("closing an ASGI coroutine that could not get a task", NULL, 0);
        Py_XDECREF(r);
        LW_EXC_RESTORE(e2);
        Py_XDECREF(exc);
        Py_XDECREF(coro);
        Py_DECREF(ctx);
        lw_eg.lz.coro = NULL;
        return -1;
    }
    lw_eg.lz.coro = NULL;
    PyObject *task = lw_eg.lz.task, *step = lw_eg.lz.step;
    lw_resume *res = (lw_resume *)lw_eg.lz.resume;
    lw_eg.lz.task = lw_eg.lz.step = lw_eg.lz.resume = NULL;
    lw_eg.lz.slot = NULL;
    /* The resumer learns how the drive ended: waiting on val; returned (the app's own coroutine's
     * end was reported above: its Task then just ends, as run_asgi's does); or run_asgi raised. */
    if (!res->coro && coro) res->coro = Py_NewRef(coro); /* made during the app's call */
    if (sr == PYGEN_NEXT) {
        res->state = LR_WAITS;
        res->value = val ? val : Py_NewRef(Py_None);
        if (own && !res->owner) res->owner = Py_NewRef(h->owner); /* reports the end */
    } else if (sr == PYGEN_ERROR && !own) {
        res->state = LR_RAISED;
        res->value = exc ? Py_NewRef(exc) : PyObject_CallNoArgs(PyExc_RuntimeError);
        Py_XDECREF(val);
    } else {
        res->state = LR_RETURNED;
        res->value = own || !val ? Py_NewRef(Py_None) : val;
        if (own) Py_XDECREF(val);
    }
    if (step) {
        lw_eager_step(step, ctx); /* the Task's first step: it takes over now */
        Py_DECREF(step);
    }
    if (rc < 0 && exc) PyErr_SetObject((PyObject *)Py_TYPE(exc), exc); /* for the caller */
    Py_XDECREF(exc);
    Py_XDECREF(coro);
    Py_DECREF((PyObject *)res);
    Py_DECREF(task);
    Py_DECREF(ctx);
    return rc;
}

/* loop.get_debug() in C: Future() and Task() call it for every future, and the Python method is a
 * frame for `return self._debug`. Installed in the loop's instance __dict__ at loop creation. */
static PyObject *lw_loop_get_debug(PyObject *loop, PyObject *unused)
{
    (void)unused;
    PyObject *d = lw_eg.loop_dict ? PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_debug) : NULL;
    if (d) return Py_NewRef(d);
    if (PyErr_Occurred()) return NULL;
    return PyObject_GetAttr(loop, lw_eg.s_debug);
}
static PyMethodDef lw_loop_get_debug_def = {"get_debug", lw_loop_get_debug, METH_NOARGS,
                                            "loop.get_debug(), in C (libwsgi)"};

/* Called once the loop exists: gather what eager start needs and probe it. Never fails: eager
 * start is only an optimisation, and without it tasks start at the next turn. */
static void lw_eager_init(wsgi_runtime *rt)
{
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *probe = PyDict_GetItemString(PyModule_GetDict(rt->boot), "eager_probe");
    lw_eg.run_asgi = Py_XNewRef(PyDict_GetItemString(PyModule_GetDict(rt->boot), "run_asgi"));
    /* Turns without run_forever need loop._run_once and loop._stopping (asyncio 3.4 to 3.13). */
    lw_eg.run_once = PyObject_GetAttrString(rt->loop, "_run_once");
    PyObject *stopping = lw_eg.run_once ? PyObject_GetAttrString(rt->loop, "_stopping") : NULL;
    if (!stopping || !PyBool_Check(stopping) || !PyCallable_Check(lw_eg.run_once))
        Py_CLEAR(lw_eg.run_once);
    Py_XDECREF(stopping);
    PyErr_Clear();
    if (!asyncio || !sys || !probe) goto out;
    lw_eg.loop_dict = PyObject_GenericGetDict(rt->loop, NULL);
    lw_eg.catcher = PyCFunction_New(&lw_eg_catch_def, NULL);
    lw_eg.task_type = PyObject_GetAttrString(asyncio, "Task");
    lw_eg.task_kwnames = Py_BuildValue("(ss)", "loop", "name");
    /* asyncio's own current_task (boot wraps the one asyncio hands out: see lazy tasks) */
    lw_eg.current_task =
        Py_XNewRef(PyDict_GetItemString(PyModule_GetDict(rt->boot), "_orig_current_task"));
    if (!lw_eg.current_task) lw_eg.current_task = PyObject_GetAttrString(asyncio, "current_task");
    lw_eg.get_running = PyObject_GetAttrString(asyncio, "_get_running_loop");
    lw_eg.set_running = PyObject_GetAttrString(asyncio, "_set_running_loop");
    lw_eg.get_hooks = PyObject_GetAttrString(sys, "get_asyncgen_hooks");
    lw_eg.set_hooks = PyObject_GetAttrString(sys, "set_asyncgen_hooks");
    lw_eg.hooks_kwnames = Py_BuildValue("(ss)", "firstiter", "finalizer");
    lw_eg.hooks[0] = PyObject_GetAttrString(rt->loop, "_asyncgen_firstiter_hook");
    lw_eg.hooks[1] = PyObject_GetAttrString(rt->loop, "_asyncgen_finalizer_hook");
    lw_eg.thread_id = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    lw_eg.s_call_soon = PyUnicode_InternFromString("call_soon");
    lw_eg.s_thread_id = PyUnicode_InternFromString("_thread_id");
    lw_eg.s_context = PyUnicode_InternFromString("context");
    lw_eg.s_ready = PyUnicode_InternFromString("_ready");
    lw_eg.s_scheduled = PyUnicode_InternFromString("_scheduled");
    lw_eg.s_debug = PyUnicode_InternFromString("_debug");
    lw_eg.s_get_debug = PyUnicode_InternFromString("get_debug");
    lw_eg.s_stopping = PyUnicode_InternFromString("_stopping");
    lw_eg.s_task_factory = PyUnicode_InternFromString("_task_factory");
    lw_eg.s_self = PyUnicode_InternFromString("__self__");
    lw_eg.context_kwnames = Py_BuildValue("(s)", "context");
    if (PyErr_Occurred() || !lw_eg.loop_dict || !PyDict_Check(lw_eg.loop_dict)) goto out;
    PyObject *get_debug = PyCFunction_New(&lw_loop_get_debug_def, rt->loop);
    if (!get_debug || PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_get_debug, get_debug) < 0) {
        Py_XDECREF(get_debug);
        goto out;
    }
    Py_DECREF(get_debug);

    /* The probe: boot.eager_probe() returns the task it ran in. */
    lw_eg.usable = 1;
    int entered = lw_eager_begin();
    PyObject *coro = entered >= 0 ? PyObject_CallNoArgs(probe) : NULL;
    PyObject *step = NULL, *ctx = NULL;
    PyObject *task = coro ? lw_eager_task(coro, NULL, &step, &ctx) : NULL;
    lw_eg.usable = 0;
    if (task && step) {
        lw_eg.step_type = Py_TYPE(step);
        lw_eager_step(step, ctx);
        PyObject *done = PyObject_CallMethod(task, "done", NULL);
        PyObject *res = done == Py_True ? PyObject_CallMethod(task, "result", NULL) : NULL;
        lw_eg.usable = res == task;
        Py_XDECREF(res);
        Py_XDECREF(done);
    }
    if (task && !lw_eg.usable) {
        PyObject *r = PyObject_CallMethod(task, "cancel", NULL); /* scheduled: let it end */
        Py_XDECREF(r);
    }
    Py_XDECREF(step);
    Py_XDECREF(ctx);
    Py_XDECREF(task);
    Py_XDECREF(coro);
    if (lw_eg.usable) {
        PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
        lw_eg.boot_dict = PyModule_GetDict(rt->boot);
        lw_eg.cancelled_error = PyObject_GetAttrString(asyncio, "CancelledError");
        /* The resumer must pass asyncio.iscoroutine() (Task() checks it): a Coroutine. */
        int typed = PyType_Ready(&lw_ResumeType) == 0;
        PyObject *abc = typed ? PyImport_ImportModule("collections.abc") : NULL;
        PyObject *co = abc ? PyObject_GetAttrString(abc, "Coroutine") : NULL;
        PyObject *ok =
            co ? PyObject_CallMethod(co, "register", "O", (PyObject *)&lw_ResumeType) : NULL;
        typed = ok != NULL;
        Py_XDECREF(ok);
        Py_XDECREF(co);
        Py_XDECREF(abc);
        lw_eg.enter_task = tasks ? PyObject_GetAttrString(tasks, "_enter_task") : NULL;
        lw_eg.leave_task = tasks ? PyObject_GetAttrString(tasks, "_leave_task") : NULL;
        lw_eg.task_kwnames_ctx = Py_BuildValue("(sss)", "loop", "name", "context");
        lw_eg.s_lazy_task = PyUnicode_InternFromString("_lazy_task");
        PyObject *hook = PyCFunction_New(&lw_lazy_hook_def, NULL);
        const char *env = getenv("LIBWSGI_ASGI_LAZY_TASKS");
        int off = env && strcmp(env, "0") == 0;
        Py_XDECREF(tasks);
        /* boot's wrappers must be what asyncio hands out (an app or library may have put its own)
         */
        PyObject *cur = PyObject_GetAttrString(asyncio, "current_task");
        PyObject *mine =
            lw_eg.boot_dict ? PyDict_GetItemString(lw_eg.boot_dict, "_orig_current_task") : NULL;
        int wrapped = cur && mine && cur != mine && PyObject_HasAttrString(cur, "__wrapped__");
        Py_XDECREF(cur);
        if (!off && wrapped && typed && hook && lw_eg.cancelled_error && lw_eg.enter_task &&
            lw_eg.leave_task && lw_eg.task_kwnames_ctx && lw_eg.s_lazy_task &&
            PyDict_SetItem(lw_eg.boot_dict, lw_eg.s_lazy_task, hook) == 0)
            lw_eg.lazy_on = 1;
        Py_XDECREF(hook);
        if (!lw_eg.lazy_on)
            lw_log(WSGI_LOG_DEBUG, "ASGI requests start with a Task (lazy tasks are %s)",
                   off ? "off: LIBWSGI_ASGI_LAZY_TASKS=0" : "not available");
    }
out:
    if (PyErr_Occurred()) lw_log_exception("probing the eager start of ASGI tasks", NULL, 0);
    if (!lw_eg.usable)
        lw_log(WSGI_LOG_DEBUG, "eager start of ASGI tasks is not available on this Python: "
                               "tasks start at the next loop turn");
    Py_XDECREF(asyncio);
    Py_XDECREF(sys);
}

PyObject *lw_asgi_runner(void)
{
    return lw_eg.run_asgi;
}

int lw_eager_enabled(void)
{
    return lw_eg.on && lw_eg.usable;
}

LIBWSGI_API int asgi_loop_set_eager(wsgi_runtime *rt, int eager)
{
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc;
    if (eager && !lw_eg.usable)
        rc = lw_fail(WSGI_ERR_STATE, "eager start of ASGI tasks is not available on this Python");
    else
        lw_eg.on = eager != 0;
    lw_gil_release(&g);
    return rc;
}

/* Create the loop on first use; the calling thread becomes the loop thread. GIL held. */
int lw_asgi_loop_ensure(wsgi_runtime *rt)
{
    if (rt->loop) return 0;
    int rc = WSGI_ERR_PYTHON;
    PyObject *ns = PyModule_GetDict(rt->boot);
    PyObject *make_loop = PyDict_GetItemString(ns, "make_loop");
    rt->run_once = Py_XNewRef(PyDict_GetItemString(ns, "run_once"));
    rt->loop_timeout_fn = Py_XNewRef(PyDict_GetItemString(ns, "loop_timeout"));
    rt->lifespan_cls = Py_XNewRef(PyDict_GetItemString(ns, "Lifespan"));
    if (!make_loop || !rt->run_once || !rt->loop_timeout_fn || !rt->lifespan_cls) {
        rc = lw_fail(WSGI_ERR_PYTHON, "boot code lacks the ASGI loop helpers");
        goto fail;
    }
    if (lw_asgi_strings_init(rt) < 0 || lw_asgi_types_ready() < 0) {
        lw_log_exception("ASGI setup", NULL, 0);
        rc = lw_fail(WSGI_ERR_PYTHON, "cannot initialise ASGI support");
        goto fail;
    }
    rt->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->wake_fd < 0) {
        rc = lw_fail(WSGI_ERR_PYTHON, "eventfd: %s", strerror(errno));
        goto fail;
    }
    PyObject *r = PyObject_CallFunction(make_loop, "i", rt->wake_fd);
    if (!r) {
        char msg[512];
        lw_log_exception("creating the asyncio loop", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_PYTHON, "%s", msg);
        goto fail;
    }
    rt->loop = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    rt->loop_fd = (int)PyLong_AsLong(PyTuple_GET_ITEM(r, 1));
    Py_DECREF(r);
    rt->create_future = PyObject_GetAttrString(rt->loop, "create_future");
    rt->create_task = PyObject_GetAttrString(rt->loop, "create_task");
    rt->asgi_version = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.5");
    if (!rt->create_future || !rt->create_task || !rt->asgi_version) {
        lw_log_exception("ASGI loop", NULL, 0);
        rc = lw_fail(WSGI_ERR_PYTHON, "cannot initialise the asyncio loop");
        goto fail;
    }
    rt->loop_thread = pthread_self();
    lw_eager_init(rt);
    lw_log(WSGI_LOG_DEBUG, "asyncio loop created (fd %d)", rt->loop_fd);
    return 0;
fail:
    lw_asgi_loop_free(rt); /* nothing half-built survives: the next call starts over */
    return rc;
}

/* Called by wsgi_runtime_free with the GIL held. */
void lw_asgi_loop_free(wsgi_runtime *rt)
{
    lw_ac_drain_frees();
    lw_eager_free();
    lw_asgi_scope_cache_clear();
    lw_ac_cache_clear();
    if (rt->loop) {
        PyObject *r = PyObject_CallMethod(rt->loop, "close", NULL);
        if (!r) lw_log_exception("closing the asyncio loop", NULL, 0);
        Py_XDECREF(r);
    }
    Py_CLEAR(rt->loop);
    Py_CLEAR(rt->run_once);
    Py_CLEAR(rt->loop_timeout_fn);
    Py_CLEAR(rt->create_future);
    Py_CLEAR(rt->create_task);
    Py_CLEAR(rt->lifespan_cls);
    Py_CLEAR(rt->asgi_version);
    lw_asgi_strings_free(rt);
    rt->lt_valid = 0;
    if (rt->wake_fd >= 0) close(rt->wake_fd);
    rt->wake_fd = rt->loop_fd = -1;
}

int lw_asgi_enter(wsgi_runtime *rt, lw_gil *g)
{
    lw_clear_error();
    if (!rt || rt != lw_rt) return lw_fail(WSGI_ERR_INVAL, "runtime is NULL or not live");
    if (rt->loop && !pthread_equal(rt->loop_thread, pthread_self()))
        return lw_fail(WSGI_ERR_STATE, "asgi_* called from a thread other than the loop thread");
    int rc = lw_gil_acquire(g);
    if (rc) return lw_fail(rc, "no Python thread state");
    if ((rc = lw_asgi_loop_ensure(rt)) != 0)
        lw_gil_release(g);
    else
        lw_ac_drain_frees();
    return rc;
}

LIBWSGI_API int asgi_loop_fd(wsgi_runtime *rt)
{
    if (rt && rt == lw_rt && rt->loop && pthread_equal(rt->loop_thread, pthread_self()))
        return rt->loop_fd;
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc;
    lw_gil_release(&g);
    return rt->loop_fd;
}

/* boot.loop_timeout's two common answers, read in C from the same attributes of the loop (its
 * instance __dict__): 0 when callbacks are ready, -1 when no timer is scheduled. Anything else
 * (a timer, attributes not where they were) is left to boot.loop_timeout: returns 0 then. */
static int lw_loop_timeout_fast(long *ms)
{
    if (!lw_eg.loop_dict) return 0;
    PyObject *ready = PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_ready);
    PyObject *sched = ready ? PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_scheduled) : NULL;
    if (!sched || !PyList_Check(sched)) {
        PyErr_Clear();
        return 0;
    }
    Py_ssize_t n = PyObject_Length(ready);
    if (n < 0) {
        PyErr_Clear();
        return 0;
    }
    if (n > 0) {
        *ms = 0;
        return 1;
    }
    if (PyList_GET_SIZE(sched) == 0) {
        *ms = -1;
        return 1;
    }
    return 0;
}

/* Remember the fast answer for asgi_loop_timeout() (GIL held): it holds until libwsgi takes the
 * GIL again (py_runs). Not when Python goes on running after this without a new acquisition: in
 * a loop turn or an eager step (a host callback calling in; the GIL comes back through
 * PyEval_RestoreThread, uncounted), or when the caller held the GIL already (@nested). */
static void lw_lt_remember(wsgi_runtime *rt, long ms, int nested)
{
    if (rt->loop_turn || nested) return;
    rt->lt_runs = atomic_load_explicit(&rt->py_runs, memory_order_relaxed);
    rt->lt_ms = (int)ms;
    rt->lt_valid = 1;
}

void lw_loop_timeout_note(int nested)
{
    long ms;
    wsgi_runtime *rt = lw_rt;
    if (rt && rt->loop && lw_loop_timeout_fast(&ms)) lw_lt_remember(rt, ms, nested);
}

/* The loop's state changes only while Python runs: on the loop thread inside libwsgi calls (each
 * takes the GIL through lw_gil_acquire, which counts), and from other threads through
 * call_soon_threadsafe and the like, which make the loop's fd readable as asgi_loop_wakeup()
 * does. So an answer read from the loop's state holds until libwsgi next takes the GIL, and is
 * given without taking it (a GIL round trip and two dict lookups, per turn of the host's loop).
 * Not when connections freed without the GIL wait to be released (that needs it), nor when the
 * caller holds the GIL (it may have run Python itself). */
LIBWSGI_API int asgi_loop_timeout(wsgi_runtime *rt)
{
    if (rt && rt == lw_rt && rt->lt_valid &&
        rt->lt_runs == atomic_load_explicit(&rt->py_runs, memory_order_relaxed) &&
        pthread_equal(rt->loop_thread, pthread_self()) && !lw_ac_frees_pending() &&
        !PyGILState_Check()) {
        lw_clear_error();
        return rt->lt_ms;
    }
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc < -1 ? rc : WSGI_ERR_STATE;
    long ms;
    if (lw_loop_timeout_fast(&ms)) {
        lw_lt_remember(rt, ms, g.ts == NULL);
    } else {
        PyObject *r = PyObject_CallOneArg(rt->loop_timeout_fn, rt->loop);
        ms = r ? PyLong_AsLong(r) : 0;
        Py_XDECREF(r);
        if (PyErr_Occurred()) {
            lw_log_exception("computing the loop timeout", NULL, 0);
            ms = 0;
        }
    }
    lw_gil_release(&g);
    if (ms > INT32_MAX) ms = INT32_MAX;
    return (int)ms;
}

LIBWSGI_API int asgi_loop_run(wsgi_runtime *rt)
{
    lw_gil g;
    int rc = lw_asgi_enter(rt, &g);
    if (rc) return rc;
    if (rt->loop_turn) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_RECURSIVE, "asgi_loop_run called from inside a loop callback");
    }
    rt->loop_turn = 1;
    rt->lt_valid = 0; /* whatever a callback of this turn remembered is out of date */
    PyObject *r;
    if (!lw_turn_run_once(&r)) {
        /* Public API only: call_soon(stop) + run_forever(), which sets the running state up
         * (and takes it down) itself. */
        lw_running_leave();
        r = PyObject_CallOneArg(rt->run_once, rt->loop);
    }
    rt->loop_turn = 0;
    if (!r) {
        char msg[512];
        lw_log_exception("asyncio loop turn", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_PYTHON, "%s", msg);
    }
    Py_XDECREF(r);
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_loop_wakeup(wsgi_runtime *rt)
{
    if (!rt || rt->wake_fd < 0) return WSGI_ERR_STATE;
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(rt->wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    return 0; /* EAGAIN means the counter is already non-zero: the loop is awake anyway */
}

/* The app's lifespan failure message as UTF-8, never NULL and never leaving an exception set. */
static const char *lw_lifespan_message(PyObject *r)
{
    const char *m = PyUnicode_Check(r) ? PyUnicode_AsUTF8(r) : "";
    if (!m) {
        PyErr_Clear();
        m = "(message is not UTF-8 encodable)";
    }
    return m;
}

/* Run coroutine method `name` of the app's Lifespan to completion; returns its result. */
static PyObject *lw_lifespan_run(wsgi_runtime *rt, wsgi_app *app, const char *name)
{
    PyObject *coro = PyObject_CallMethod(app->lifespan, name, NULL);
    if (!coro) return NULL;
    lw_running_leave(); /* run_until_complete sets it up itself */
    /* A loop.stop() from an eager step ended that step: unlike a turn's, nothing cleared it. */
    PyObject *stopping =
        lw_eg.loop_dict ? PyDict_GetItemWithError(lw_eg.loop_dict, lw_eg.s_stopping) : NULL;
    if (stopping == Py_True && PyDict_SetItem(lw_eg.loop_dict, lw_eg.s_stopping, Py_False) < 0)
        lw_log_exception("clearing loop._stopping", NULL, 0);
    PyErr_Clear();
    rt->loop_turn = 1;
    PyObject *r = PyObject_CallMethod(rt->loop, "run_until_complete", "O", coro);
    rt->loop_turn = 0;
    Py_DECREF(coro);
    return r;
}

static int lw_lifespan_enter(wsgi_app *app, lw_gil *g)
{
    if (!app) return lw_fail(WSGI_ERR_INVAL, "app is NULL");
    if (app->iface != WSGI_INTERFACE_ASGI)
        return lw_fail(WSGI_ERR_INTERFACE, "lifespan on an app that is not ASGI");
    int rc = lw_asgi_enter(app->rt, g);
    if (rc) return rc;
    if (app->rt->loop_turn) {
        lw_gil_release(g);
        return lw_fail(WSGI_ERR_RECURSIVE, "lifespan called from inside a loop callback");
    }
    return 0;
}

LIBWSGI_API int asgi_lifespan_startup(wsgi_app *app)
{
    lw_gil g;
    int rc = lw_lifespan_enter(app, &g);
    if (rc) return rc;
    wsgi_runtime *rt = app->rt;
    if (app->lifespan) {
        lw_gil_release(&g);
        return lw_fail(WSGI_ERR_STATE, "lifespan startup already ran for this app");
    }
    PyObject *log = PyCFunction_New(&lw_py_log_def, NULL);
    app->lifespan =
        log ? PyObject_CallFunctionObjArgs(rt->lifespan_cls, app->callable, rt->loop, log, NULL)
            : NULL;
    Py_XDECREF(log);
    PyObject *r = app->lifespan ? lw_lifespan_run(rt, app, "startup") : NULL;
    if (!r) {
        char msg[512];
        lw_log_exception("lifespan startup", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_APP, "%s", msg);
    } else if (r == Py_True) {
        rc = 0;
        lw_log(WSGI_LOG_INFO, "lifespan startup complete");
    } else if (r == Py_None) {
        rc = ASGI_LIFESPAN_UNSUPPORTED;
    } else {
        rc = lw_fail(WSGI_ERR_APP, "lifespan startup failed: %s", lw_lifespan_message(r));
        lw_log(WSGI_LOG_ERROR, "%s", wsgi_errmsg());
    }
    Py_XDECREF(r);
    if (app->lifespan && rc >= 0) {
        PyObject *st;
        if (lw_getattr_opt_str(app->lifespan, "state", &st) < 0) PyErr_Clear();
        Py_XSETREF(app->state, st);
    }
    lw_gil_release(&g);
    return rc;
}

LIBWSGI_API int asgi_lifespan_shutdown(wsgi_app *app)
{
    lw_gil g;
    int rc = lw_lifespan_enter(app, &g);
    if (rc) return rc;
    if (!app->lifespan) {
        lw_gil_release(&g);
        return 0;
    }
    PyObject *r = lw_lifespan_run(app->rt, app, "shutdown");
    if (!r) {
        char msg[512];
        lw_log_exception("lifespan shutdown", msg, sizeof msg);
        rc = lw_fail(WSGI_ERR_APP, "%s", msg);
    } else if (r != Py_True) {
        rc = lw_fail(WSGI_ERR_APP, "lifespan shutdown failed: %s", lw_lifespan_message(r));
        lw_log(WSGI_LOG_ERROR, "%s", wsgi_errmsg());
    } else {
        lw_log(WSGI_LOG_INFO, "lifespan shutdown complete");
    }
    Py_XDECREF(r);
    Py_CLEAR(app->lifespan);
    lw_gil_release(&g);
    return rc;
}
