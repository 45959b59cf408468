/* The prefork master of prefork.h. The master never loads Python: each worker creates its own
 * runtime after fork (an interpreter does not survive fork with threads). The master sleeps in
 * poll() on its signal pipe; SIGCHLD drives reaping and restarts. A worker that dies within a
 * second of its start is restarted after a one second pause so that a crashing app cannot make the
 * master fork in a tight loop. */
#include "prefork.h"
#include "host_app.h"
#include "host_log.h"
#include "host_signals.h"
#include "metrics.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct worker {
    pid_t pid;          /* 0: not running */
    int64_t started_ms; /* when it was forked */
    int64_t restart_at; /* when a dead worker is due to be restarted (0: now) */
} worker;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const int master_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};

static pid_t spawn(worker *w, unsigned index, prefork_worker_fn fn, void *arg)
{
    pid_t master = getpid();
    /* A stop signal must never meet the child between fork and its own handlers (it would die of
     * the default action mid-boot): the child starts with them blocked and host_signals_open()
     * unblocks what it installs, so a signal sent meanwhile waits and is handled. */
    sigset_t stop, old;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGQUIT);
    sigaddset(&stop, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop, &old);
    pid_t pid = fork();
    if (pid != 0) sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        host_log(WSGI_LOG_ERROR, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        host_signals_close();
        /* Die with the master, whatever kills it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != master) _exit(0);
        int status = fn(arg, index);
        _exit(status);
    }
    w->pid = pid;
    w->started_ms = now_ms();
    w->restart_at = 0;
    host_log(WSGI_LOG_INFO, "booted worker %u with pid %d", index, (int)pid);
    return pid;
}

static void signal_all(worker *ws, unsigned n, int sig)
{
    for (unsigned k = 0; k < n; k++)
        if (ws[k].pid > 0) kill(ws[k].pid, sig);
}

static unsigned running(const worker *ws, unsigned n)
{
    unsigned r = 0;
    for (unsigned k = 0; k < n; k++)
        r += ws[k].pid > 0;
    return r;
}

int prefork_run(unsigned n, prefork_worker_fn fn, void *arg, unsigned grace_seconds)
{
    worker *ws = calloc(n, sizeof(*ws));
    if (!ws) return 1;
    int sfd = host_signals_open(master_signals, (int)(sizeof(master_signals) / sizeof(int)));
    if (sfd < 0) {
        host_log(WSGI_LOG_ERROR, "cannot install signal handlers: %s", strerror(errno));
        free(ws);
        return 1;
    }
    host_log(WSGI_LOG_INFO, "master %d starting %u workers", (int)getpid(), n);
    int exit_status = 0;
    int stopping = 0;
    int64_t kill_at = 0;
    for (unsigned k = 0; k < n; k++)
        spawn(&ws[k], k, fn, arg);

    for (;;) {
        /* Restart dead workers that are due, and work out how long to sleep. */
        int64_t now = now_ms();
        int timeout = -1;
        if (!stopping) {
            for (unsigned k = 0; k < n; k++) {
                if (ws[k].pid != 0) continue;
                if (ws[k].restart_at <= now) {
                    if (spawn(&ws[k], k, fn, arg) < 0) ws[k].restart_at = now + 1000;
                }
                if (ws[k].pid == 0) {
                    int64_t d = ws[k].restart_at - now;
                    if (timeout < 0 || d < timeout) timeout = (int)(d < 0 ? 0 : d);
                }
            }
        } else {
            if (running(ws, n) == 0) break;
            int64_t d = kill_at - now;
            if (d <= 0) {
                host_log(WSGI_LOG_WARNING, "graceful timeout expired: killing %u workers",
                         running(ws, n));
                signal_all(ws, n, SIGKILL);
                kill_at = now + 3600 * 1000;
                d = 1000;
            }
            timeout = (int)d;
        }

        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout);
        if (pr < 0 && errno != EINTR) {
            host_log(WSGI_LOG_ERROR, "poll: %s", strerror(errno));
            break;
        }
        uint64_t sigs = host_signals_read(sfd);
        /* logrotate: the workers reopen their access log (access_log.c). */
        if (sigs & (1ull << SIGUSR1)) signal_all(ws, n, SIGUSR1);

        if (sigs & ((1ull << SIGTERM) | (1ull << SIGINT) | (1ull << SIGQUIT))) {
            int quick = (sigs & (1ull << SIGQUIT)) != 0;
            if (!stopping)
                host_log(WSGI_LOG_INFO, "master %d: shutting down%s", (int)getpid(),
                         quick ? " now" : " gracefully");
            if (!stopping || quick) signal_all(ws, n, quick ? SIGQUIT : SIGTERM);
            if (!stopping) kill_at = now_ms() + (int64_t)(grace_seconds + 5) * 1000;
            stopping = 1;
        }

        /* Reap whatever died, whether or not SIGCHLD was seen (signals coalesce). */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) break;
            for (unsigned k = 0; k < n; k++) {
                if (ws[k].pid != pid) continue;
                ws[k].pid = 0;
                if (stopping) {
                    host_log(WSGI_LOG_INFO, "worker %u (pid %d) exited", k, (int)pid);
                    break;
                }
                if (WIFEXITED(status) && WEXITSTATUS(status) == HOST_EXIT_BOOT_FAILED) {
                    host_log(WSGI_LOG_ERROR, "worker %u (pid %d) failed to boot: shutting down", k,
                             (int)pid);
                    exit_status = HOST_EXIT_BOOT_FAILED;
                    stopping = 1;
                    signal_all(ws, n, SIGTERM);
                    kill_at = now_ms() + (int64_t)(grace_seconds + 5) * 1000;
                    break;
                }
                if (WIFSIGNALED(status))
                    host_log(WSGI_LOG_ERROR, "worker %u (pid %d) was killed by signal %d", k,
                             (int)pid, WTERMSIG(status));
                else
                    host_log(WSGI_LOG_ERROR, "worker %u (pid %d) exited with status %d", k,
                             (int)pid, WEXITSTATUS(status));
                metrics_worker_restart(k, WIFSIGNALED(status) ? "killed" : "exited");
                int64_t lived = now_ms() - ws[k].started_ms;
                ws[k].restart_at = lived < 1000 ? now_ms() + 1000 : 0;
                break;
            }
        }
    }
    host_signals_close();
    free(ws);
    host_log(WSGI_LOG_INFO, "master %d: stopped", (int)getpid());
    return exit_status;
}
