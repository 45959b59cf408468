/* Per-host-thread Python thread states and GIL acquisition.
 *
 * Each host thread that calls into libwsgi gets one PyThreadState, created on first use and kept
 * for the life of the thread (so threading.local survives across requests), deleted by a pthread
 * key destructor when the thread exits. The GIL is taken once per public call, never per callback.
 * A thread that already has a Python state (the host embeds Python itself) keeps using it. */
#include "internal.h"

static pthread_key_t lw_ts_key;
static pthread_once_t lw_ts_once = PTHREAD_ONCE_INIT;

typedef struct lw_tls {
    PyThreadState *ts;
    unsigned gen; /* runtime generation the state belongs to */
    int owned;    /* created by us: delete at thread exit */
} lw_tls;

static _Thread_local lw_tls lw_tl;

/* Thread exit: drop the state we created, if its runtime is still the live one. */
static void lw_ts_destructor(void *p)
{
    (void)p;
    wsgi_runtime *rt = lw_rt;
    if (!lw_tl.ts || !lw_tl.owned || !rt || lw_tl.gen != rt->gen || !Py_IsInitialized()) return;
    PyEval_RestoreThread(lw_tl.ts);
    PyThreadState_Clear(lw_tl.ts);
    PyThreadState_DeleteCurrent();
    lw_tl.ts = NULL;
}

static void lw_ts_key_create(void)
{
    (void)pthread_key_create(&lw_ts_key, lw_ts_destructor);
}

void lw_threads_init(wsgi_runtime *rt)
{
    (void)rt;
    pthread_once(&lw_ts_once, lw_ts_key_create);
}

void lw_threads_fini(wsgi_runtime *rt)
{
    (void)rt;
    lw_tl.ts = NULL;
}

void lw_threads_set_current(PyThreadState *ts)
{
    lw_tl.ts = ts;
    lw_tl.gen = lw_rt ? lw_rt->gen : 0;
    lw_tl.owned = 0;
}

static PyThreadState *lw_thread_state(wsgi_runtime *rt)
{
    if (LW_LIKELY(lw_tl.ts && lw_tl.gen == rt->gen)) return lw_tl.ts;
    /* A state the host made for this thread (it embeds Python too) is used but never cached: the
     * host may delete it at any time, and a cached pointer would then dangle. */
    PyThreadState *ts = PyGILState_GetThisThreadState();
    if (ts) return ts;
    ts = PyThreadState_New(rt->interp);
    if (!ts) return NULL;
    /* Non-NULL value so the destructor runs at thread exit. */
    pthread_setspecific(lw_ts_key, ts);
    lw_tl.ts = ts;
    lw_tl.gen = rt->gen;
    lw_tl.owned = 1;
    return ts;
}

int lw_gil_acquire(lw_gil *g)
{
    wsgi_runtime *rt = lw_rt;
    g->ts = NULL;
    if (LW_UNLIKELY(!rt)) return WSGI_ERR_PYTHON;
    if (!PyGILState_Check()) { /* else already ours: nested or a Python-embedding host */
        PyThreadState *ts = lw_thread_state(rt);
        if (!ts) return WSGI_ERR_PYTHON;
        PyEval_RestoreThread(ts);
        g->ts = ts;
    }
    /* Python may run now: asgi_loop_timeout()'s remembered answer is stale (GIL held). */
    atomic_store_explicit(&rt->py_runs,
                          atomic_load_explicit(&rt->py_runs, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return 0;
}

void lw_gil_release(lw_gil *g)
{
    if (g->ts) {
        PyEval_SaveThread();
        g->ts = NULL;
    }
}
