/* The prefork master: runs N worker processes, restarts any that dies, and stops them all
 * gracefully on SIGTERM/SIGINT (immediately on SIGQUIT). */
#ifndef WSGI_HOST_PREFORK_H
#define WSGI_HOST_PREFORK_H

/* Runs in each child right after fork; returns the child's exit status. index is 0..n-1 (a
 * restarted worker keeps the index of the one it replaces). */
typedef int (*prefork_worker_fn)(void *arg, unsigned index);

/* Become the master of n workers until told to stop. A worker exiting with HOST_EXIT_BOOT_FAILED
 * (host_app.h) makes the master stop everything and return that status. On SIGTERM/SIGINT each
 * worker gets SIGTERM and grace_seconds (+5) to finish before SIGKILL. Returns the exit status. */
int prefork_run(unsigned n, prefork_worker_fn fn, void *arg, unsigned grace_seconds);

#endif
