/* The prefork master: runs N worker processes, replaces any that dies, replaces a worker that asks
 * for it (max requests, memory, a stuck request) with a new one that is ready before the old one
 * stops, reloads on SIGHUP (and on --reload's file changes), adds / removes a worker on SIGTTIN /
 * SIGTTOU, tells systemd (sd_notify) and stops them all gracefully on SIGTERM/SIGINT
 * (immediately on SIGQUIT). */
#ifndef WSGI_HOST_PREFORK_H
#define WSGI_HOST_PREFORK_H

#include <stddef.h>

/* Runs in each child right after fork; returns the child's exit status. index is the worker's slot
 * (a replacement keeps the slot of the one it replaces). The worker calls prefork_worker_ready()
 * once it accepts connections. */
typedef int (*prefork_worker_fn)(void *arg, unsigned index);

typedef struct prefork_config {
    unsigned workers;               /* how many to start */
    unsigned grace_seconds;         /* --graceful-timeout: a stopped worker gets this (+5) */
    const char *const *reload_dirs; /* --reload: watch these (NULL: no watching) */
    size_t n_reload_dirs;
    /* --preload: around each fork (may be NULL); child is 0 in the master, 1 in the new worker. */
    void (*before_fork)(void *arg);
    void (*after_fork)(void *arg, int child);
    /* When the master begins to stop (may be NULL): close its listening sockets, so that the
     * last worker to stop accepting closes them for good. */
    void (*on_stop)(void *arg);
} prefork_config;

/* Become the master until told to stop. A worker exiting with HOST_EXIT_BOOT_FAILED (host_app.h)
 * before any worker was ever ready (the server's start) makes the master stop everything and
 * return that status; a replacement (reload, recycling) that fails to boot leaves the old worker
 * serving, and a worker of an empty slot that fails to boot once the server has served is
 * retried every second while the others serve. Returns the exit status. */
int prefork_run(const prefork_config *cfg, prefork_worker_fn fn, void *arg);

/* ---- in a worker ---- */

/* Whether this process is a worker of a prefork master. */
int prefork_is_worker(void);

/* Tell the master this worker accepts connections (a replacement it waits for is up). */
void prefork_worker_ready(void);

/* Ask the master for a replacement (once per worker: later calls do nothing). The master starts
 * a new worker in this one's slot and, when that one is ready, stops this one: SIGTERM (graceful),
 * or SIGKILL when blocked is set (this worker's event loop is stuck in the app: it could not act
 * on SIGTERM). reason is logged by the master. Async-signal-safe (one write to a pipe), callable
 * from any thread. */
void prefork_worker_retire(const char *reason, int blocked);

#endif
