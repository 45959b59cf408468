/* The few things a host does with CPython directly, next to libwsgi (public CPython API only):
 * arm faulthandler for the --timeout stack dumps, and keep the interpreter consistent across
 * fork() with --preload (PyOS_BeforeFork / PyOS_AfterFork_*, as os.fork() does). The runtime must
 * exist (libwsgi started it) and the calling thread must not hold the GIL. */
#ifndef WSGI_HOST_PY_H
#define WSGI_HOST_PY_H

/* faulthandler.register(signo, file=2, all_threads=True): signo sent to a thread then writes every
 * thread's Python stack to stderr, that thread marked "Current thread". 0, or -1 (logged). */
int host_py_register_stack_dump(int signo);
/* Whether a stack dump signalled that way has been written (set by the thread that wrote it). */
int host_py_stack_dumped(void);

/* Around fork() in a process whose interpreter is running (the --preload master, or any master
 * inside the Python executable). */
void host_py_before_fork(void);
void host_py_after_fork(int child);

/* Whether this process has an initialised interpreter (Py_IsInitialized()). */
int host_py_running(void);

/* The server runs inside the Python executable (examples/epoll/pyexe.h): libwsgi adopts its
 * interpreter, so the host does what the embedded runtime does itself: host_py_runtime_starts()
 * before wsgi_runtime_new(), host_py_runtime_stopped() after wsgi_runtime_free(). */
void host_py_set_python_exe(void);
int host_py_python_exe(void);
/* Python's records of the signal dispositions (signal.getsignal()) made what they would be in an
 * interpreter started now, as the embedded one is: SIG_DFL / SIG_IGN as the kernel has them
 * (SIGINT: default_int_handler, the kernel's disposition kept). Main thread, GIL not held. */
void host_py_runtime_starts(void);
/* Py_FinalizeEx(), as the embedded runtime's wsgi_runtime_free() does (atexit handlers, ...). */
void host_py_runtime_stopped(void);

#endif
