/* Signals as file-descriptor events (the self-pipe trick): handlers only write the signal number
 * to a non-blocking pipe; the event loop reads it like any other fd. Unlike signalfd this needs no
 * blocked signal mask, which child processes of the app would otherwise inherit. */
#ifndef WSGI_HOST_SIGNALS_H
#define WSGI_HOST_SIGNALS_H

#include <stdint.h>

/* Install handlers for the n signals in sigs (SA_RESTART) and return the pipe's read end, or -1.
 * Calling it again replaces the previous pipe and handlers (e.g. in a forked worker). The signals
 * are then unblocked in the calling thread: prefork children start with them blocked. */
int host_signals_open(const int *sigs, int n);

/* Drain the pipe: a bit mask with bit (1 << signo) set for each signal received since last time. */
uint64_t host_signals_read(int fd);

/* Drain the pipe of the last host_signals_open() (0 if none is open). */
uint64_t host_signals_take(void);

/* Restore default dispositions for the signals and close the pipe (before fork/exec elsewhere). */
void host_signals_close(void);

/* Ignore @sig in this process with a handler that does nothing, not SIG_IGN: programs the app
 * runs (exec) get the default action back, as SIG_IGN would be inherited (a daemon started by
 * the app would then ignore SIGHUP, say). */
void host_signals_ignore(int sig);

/* Install @handler for @sig (SA_RESTART, nothing else blocked while it runs). */
void host_signals_handle(int sig, void (*handler)(int));

/* Block every signal in the calling thread (for helper threads, so the loop thread gets them). */
void host_signals_block_thread(void);

#endif
