/* The few things a host does with CPython directly, next to libwsgi (public CPython API only):
 * arm faulthandler for the --timeout stack dumps, and keep the interpreter consistent across
 * fork() with --preload (PyOS_BeforeFork / PyOS_AfterFork_*, as os.fork() does). The runtime must
 * exist (libwsgi started it) and the calling thread must not hold the GIL. */
#ifndef WSGI_HOST_PY_H
#define WSGI_HOST_PY_H

/* faulthandler.register(signo, file=2, all_threads=True): signo sent to a thread then writes every
 * thread's Python stack to stderr, that thread marked "Current thread". 0, or -1 (logged). */
int host_py_register_stack_dump(int signo);

/* Around fork() in a process whose interpreter is running (the --preload master). */
void host_py_before_fork(void);
void host_py_after_fork(int child);

#endif
