/* A worker's guards (the prefork master acts on what they report): --max-requests (+ jitter) and
 * --max-worker-memory ask for a replacement; --timeout watches every call into a WSGI app and,
 * for an ASGI app, every turn of the event loop, from a watchdog thread: a call still running
 * after S seconds is logged with the request and the thread's Python stack (faulthandler), its
 * connection is shut down, and the worker asks to be replaced. An ASGI request whose task is still
 * running after S seconds (awaiting, not blocking) has its task cancelled instead. */
#ifndef EPOLL_GUARD_H
#define EPOLL_GUARD_H

#include "cli.h"

typedef struct conn conn;

/* In the worker, once the app is loaded: arm what the options ask for (the watchdog thread when
 * --timeout or --max-worker-memory is set). inline_app: the app runs on the event-loop thread
 * (WSGI with --threads 0, or ASGI), so a stuck call also stops the loop. 0, or -1 (logged). */
int guard_start(const epoll_options *o, int inline_app);

/* Stop the watchdog thread (before the runtime goes). */
void guard_stop(void);

/* A response is complete: counts towards --max-requests. Any thread, cheap. */
void guard_request_done(void);

/* Around one call into a WSGI app for c (the app's call, or one step of its iterable), on the
 * thread making it. Nothing but a test when --timeout is off. */
void guard_call_begin(conn *c);
void guard_call_end(void);

/* Around one turn of the event loop (ASGI: where app code runs), on the loop thread. */
void guard_loop_begin(void);
void guard_loop_end(void);

/* Whether --timeout is on. */
int guard_on(void);

/* An ASGI request's app has had c since c->asgi_since_ms: past --timeout, log it and cancel its
 * task (asgi_conn_cancel(): the app sees CancelledError; the worker stays). The loop thread. */
void guard_asgi_check(conn *c, int64_t now_ms);

/* How many connections the watchdog gave up on while their call is still in the app: a worker
 * shutting down does not wait for them. */
unsigned guard_stuck(void);

#endif
