/* SIGHUP in a server without a master (one process: --workers 1 and no option that needs one):
 * a graceful reload that keeps the process id. The process starts a copy of itself, the
 * *bridge*, on the same listening sockets; the bridge imports the app afresh and serves. Once it
 * does, this process stops accepting (its sockets stay open: the kernel queues connections, none
 * is refused), finishes its in-flight requests within --graceful-timeout (WebSockets get 1001),
 * then executes itself again (same pid, same command line, from the directory it was started in,
 * as the bridge: relative paths keep their meaning) with the sockets inherited; when that
 * one serves, it stops the bridge, which finishes its own requests and exits. A bridge that
 * cannot boot (a syntax error) leaves the old process serving the old code.
 *
 * What crosses exec is in the environment, read and removed before the app starts:
 *   LIBWSGI_REEXEC_LISTENERS=oi..  the listening sockets, from fd 3, one letter each: o = bound by
 *                                  this server (--bind: a unix socket's path is unlinked at exit),
 *                                  i = inherited (--fd, systemd, lighttpd: never unlinked);
 *   LIBWSGI_REEXEC_READY=FD        (the bridge) the pipe that tells the parent it serves;
 *   LIBWSGI_REEXEC_BRIDGES=PID,..  (the re-executed server) the bridges to stop once it serves;
 *   LIBWSGI_REEXEC_METRICS=FD,PID  the --metrics-bind counters (metrics.c) and scrape process. */
#ifndef EPOLL_REEXEC_H
#define EPOLL_REEXEC_H

#include "cli.h"
#include "listen.h"

#include <stddef.h>

/* First thing in server_main(): keep argv for the exec, take and remove the variables above.
 * A bridge ignores SIGHUP from then on and never speaks to systemd (NOTIFY_SOCKET removed). */
void reexec_init(char **argv);

/* Back to the directory this program was started in (--chdir and the app may have left it), so
 * that the relative paths of the command line (--pid, --bind unix:PATH) name at exit what they
 * named at the start. */
void reexec_enter_start_dir(void);

/* This process was started by a reload (a bridge or a re-executed server): its listening
 * sockets, pid file, privileges and metrics come from the previous one. */
int reexec_resumed(void);
/* This process is a bridge (it serves until the re-executed server stops it). */
int reexec_is_bridge(void);

/* The listening sockets handed over (fds 3..): described into ls (at most EPOLL_MAX_BINDS),
 * named after o's --bind options where they were bound from them. The number taken (0: not
 * resumed), or -1 (message printed). */
int reexec_take_listeners(const epoll_options *o, listener *ls);

/* The metrics region handed over, mapped again (metrics_adopt()); nothing when not resumed. */
void reexec_take_metrics(void);

/* The process serves: a bridge tells its parent; a re-executed server stops the bridges. */
void reexec_ready(void);

/* ---- in the serving loop (server.c) ---- */

/* Whether SIGHUP reloads by re-execution here: a server without a master that is no bridge. */
int reexec_enabled(void);

/* SIGHUP: start the bridge on the n sockets ls (their accepting fds). Returns a descriptor that
 * becomes readable once the bridge serves or has failed (then call reexec_bridge_status()), or
 * -1 when no reload was started (one is under way, or fork failed: logged). */
int reexec_start(const listener *ls, size_t n);

/* After the descriptor of reexec_start() was readable: 1 the bridge serves (the descriptor is
 * closed: drain, then reexec_exec()), -1 it failed to boot (logged, READY=1 sent again, the
 * descriptor closed: keep serving), 0 nothing yet. */
int reexec_bridge_status(void);

/* A stop signal during a reload: the bridge is stopped too (SIGTERM). */
void reexec_stop_bridges(void);

/* SIGCHLD: reap the bridges that exited (only those: the app's children are its own). */
void reexec_reap(void);

/* Execute this program again, same pid and command line, on the n listening sockets ls: does
 * not return, unless a stop signal arrived since server_run() returned (still in the pipe of
 * host_signals.h: the bridges are stopped, STOPPING=1 sent; returns 1: exit) or exec failed (-1,
 * logged). */
int reexec_exec(const listener *ls, size_t n);

/* After a failed exec, or when the re-executed server could not boot while a bridge serves:
 * keep this process (the pid systemd and --pid know) until the bridge exits, forwarding stop
 * signals to it; SIGHUP tries the exec again. Returns the exit status, or -1 when no bridge
 * serves (the caller exits as before). ls NULL: a re-executed server that failed before it took
 * its listening sockets, which are still at fds 3.. as handed over (reexec_exec() too). */
int reexec_supervise(const listener *ls, size_t n);

#endif
