/* The prefork master of prefork.h. The master does not load Python (unless --preload): each worker
 * creates its own runtime after fork. It sleeps in poll() on its signal pipe, the workers' control
 * pipe (8-byte messages: "ready", "replace me") and, with --reload, an inotify fd.
 *
 * Workers live in slots 0..n-1. A slot has its current worker and, while it is being replaced, the
 * next one (booting); the current one is stopped only when the next one says it is ready, so a
 * slot never stops serving; with the listening socket shared by all workers (listen.c) the
 * connections queued while a worker exits go to the others. A worker that dies within a second of
 * its start is restarted after a one second pause so that a crashing app cannot make the master
 * fork in a tight loop. */
#include "prefork.h"
#include "host_app.h"
#include "host_log.h"
#include "host_signals.h"
#include "metrics.h"
#include "reload_watch.h"
#include "sd_notify.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MSG_READY = 1, MSG_RETIRE = 2 };

/* The worker -> master message: one write of 8 bytes, atomic on a pipe (< PIPE_BUF). */
typedef struct ctl_msg {
    int32_t pid;
    uint8_t type;
    uint8_t blocked;
    uint8_t reason; /* index into retire_reasons */
    uint8_t pad;
} ctl_msg;

static const char *const retire_reasons[] = {"asked", "max requests", "max worker memory",
                                             "timeout", "event loop blocked"};
/* The same, as metrics.c names restart reasons. */
static const char *const retire_metrics[] = {"other", "max_requests", "memory", "timeout",
                                             "timeout"};

enum { ROLE_CUR, ROLE_NEXT, ROLE_OLD };

typedef struct wproc {
    pid_t pid;
    unsigned slot;
    int role;
    int ready;
    int retiring; /* asked for a replacement */
    int blocked;  /* ... and cannot stop gracefully */
    int reason;   /* ... why (retire_reasons) */
    unsigned gen; /* the reload generation it was forked for */
    int64_t started_ms;
    int64_t kill_ms; /* stopped gracefully: killed if still running then (0: not) */
} wproc;

/* The worker side. */
static int ctl_fd = -1; /* write end of the control pipe in a worker */
static int retired;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int prefork_is_worker(void)
{
    return ctl_fd >= 0;
}

static void ctl_send(int type, int blocked, int reason)
{
    if (ctl_fd < 0) return;
    ctl_msg m = {.pid = (int32_t)getpid(),
                 .type = (uint8_t)type,
                 .blocked = (uint8_t)blocked,
                 .reason = (uint8_t)reason};
    ssize_t w = write(ctl_fd, &m, sizeof(m));
    (void)w;
}

void prefork_worker_ready(void)
{
    ctl_send(MSG_READY, 0, 0);
}

void prefork_worker_retire(const char *reason, int blocked)
{
    if (__atomic_exchange_n(&retired, 1, __ATOMIC_SEQ_CST)) return;
    int r = 0;
    for (int k = 1; k < (int)(sizeof(retire_reasons) / sizeof(*retire_reasons)); k++)
        if (reason && strcmp(reason, retire_reasons[k]) == 0) r = k;
    ctl_send(MSG_RETIRE, blocked, r);
}

/* ---- the master ---- */

typedef struct master {
    const prefork_config *cfg;
    prefork_worker_fn fn;
    void *arg;
    int ctl[2];
    wproc *ps;
    size_t n_ps, cap_ps;
    unsigned n_slots;
    int64_t *restart_at; /* per slot: when to start a worker for an empty slot (0: now) */
    unsigned cap_slots;
    unsigned gen;  /* bumped by each reload */
    int reloading; /* a reload's new workers are booting */
    int notified;  /* READY=1 sent */
    int served;    /* a worker was ready once: a boot failure no longer stops everything */
} master;

/* SIGUSR2 only to survive it (gunicorn's binary upgrade, which libwsgi has not). */
static const int master_signals[] = {SIGCHLD, SIGTERM, SIGINT,  SIGQUIT, SIGHUP,
                                     SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};

static wproc *find(master *m, pid_t pid)
{
    for (size_t k = 0; k < m->n_ps; k++)
        if (m->ps[k].pid == pid) return &m->ps[k];
    return NULL;
}

static wproc *in_slot(master *m, unsigned slot, int role)
{
    for (size_t k = 0; k < m->n_ps; k++)
        if (m->ps[k].slot == slot && m->ps[k].role == role) return &m->ps[k];
    return NULL;
}

static int slots_grow(master *m, unsigned n)
{
    if (n <= m->cap_slots) return 0;
    int64_t *r = realloc(m->restart_at, n * sizeof(*r));
    if (!r) return -1;
    memset(r + m->cap_slots, 0, (n - m->cap_slots) * sizeof(*r));
    m->restart_at = r;
    m->cap_slots = n;
    return 0;
}

static pid_t spawn(master *m, unsigned slot, int role)
{
    if (m->n_ps == m->cap_ps) {
        size_t n = m->cap_ps ? m->cap_ps * 2 : 8;
        wproc *p = realloc(m->ps, n * sizeof(*p));
        if (!p) return -1;
        m->ps = p;
        m->cap_ps = n;
    }
    pid_t master_pid = getpid();
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
    if (m->cfg->before_fork) m->cfg->before_fork(m->arg);
    pid_t pid = fork();
    if (pid != 0) {
        if (m->cfg->after_fork) m->cfg->after_fork(m->arg, 0);
        sigprocmask(SIG_SETMASK, &old, NULL);
    }
    if (pid < 0) {
        host_log(WSGI_LOG_ERROR, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (m->cfg->after_fork) m->cfg->after_fork(m->arg, 1);
        host_signals_close();
        /* SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2 are the master's: a worker ignores them (a
         * terminal's hangup reaches the whole process group). SIGUSR1, which the master forwards
         * for the access log, too until the access log takes it (server_main.c): a worker still
         * booting when logrotate ran was killed by it. */
        host_signals_ignore(SIGHUP);
        host_signals_ignore(SIGTTIN);
        host_signals_ignore(SIGTTOU);
        host_signals_ignore(SIGUSR1);
        host_signals_ignore(SIGUSR2);
        close(m->ctl[0]);
        ctl_fd = m->ctl[1];
        /* Die with the master, whatever kills it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != master_pid) _exit(0);
        int status = m->fn(m->arg, slot);
        _exit(status);
    }
    wproc *w = &m->ps[m->n_ps++];
    memset(w, 0, sizeof(*w));
    w->pid = pid;
    w->slot = slot;
    w->role = role;
    w->gen = m->gen;
    w->started_ms = now_ms();
    m->restart_at[slot] = 0;
    host_log(WSGI_LOG_INFO, "booted worker %u with pid %d%s", slot, (int)pid,
             role == ROLE_NEXT ? " (replacement)" : "");
    return pid;
}

/* A worker stopped gracefully gets --graceful-timeout, and 5 s more, as on SIGTERM to the master:
 * one whose event loop is stuck in the app cannot act on its SIGTERM. */
static void stop_proc(master *m, wproc *w, int sig)
{
    w->role = ROLE_OLD;
    w->kill_ms = sig == SIGKILL ? 0 : now_ms() + (int64_t)(m->cfg->grace_seconds + 5) * 1000;
    kill(w->pid, sig);
}

static void remove_proc(master *m, wproc *w)
{
    *w = m->ps[--m->n_ps];
}

/* Start a replacement for slot unless one is booting already. */
static void replace(master *m, unsigned slot)
{
    if (!in_slot(m, slot, ROLE_NEXT)) spawn(m, slot, ROLE_NEXT);
}

static void begin_reload(master *m, const char *why)
{
    m->gen++;
    host_log(WSGI_LOG_INFO, "master %d: %s: starting %u new workers", (int)getpid(), why,
             m->n_slots);
    sd_notify_reloading();
    m->reloading = 1;
    for (unsigned k = 0; k < m->n_slots; k++)
        replace(m, k);
}

/* A reload is over when no replacement is booting any more (each one is serving, or failed and
 * left its old worker serving). */
static void check_reload_done(master *m)
{
    if (!m->reloading) return;
    for (size_t k = 0; k < m->n_ps; k++)
        if (m->ps[k].role == ROLE_NEXT) return;
    m->reloading = 0;
    host_log(WSGI_LOG_INFO, "master %d: reload done", (int)getpid());
    sd_notify_send("READY=1");
}

static void check_ready(master *m)
{
    if (m->notified) return;
    for (unsigned k = 0; k < m->n_slots; k++) {
        wproc *c = in_slot(m, k, ROLE_CUR);
        if (!c || !c->ready) return;
    }
    m->notified = 1;
    host_log(WSGI_LOG_INFO, "master %d: %u workers ready", (int)getpid(), m->n_slots);
    sd_notify_send("READY=1");
}

static void on_msg(master *m, const ctl_msg *msg)
{
    wproc *w = find(m, msg->pid);
    if (!w || w->role == ROLE_OLD) return;
    if (msg->type == MSG_READY) {
        w->ready = 1;
        m->served = 1;
        if (w->role == ROLE_NEXT) {
            wproc *cur = in_slot(m, w->slot, ROLE_CUR);
            w->role = ROLE_CUR;
            if (cur) {
                host_log(WSGI_LOG_INFO, "worker %u: pid %d replaces pid %d", w->slot, (int)w->pid,
                         (int)cur->pid);
                metrics_worker_replaced(cur->retiring ? retire_metrics[cur->reason] : "reload");
                stop_proc(m, cur, cur->blocked ? SIGKILL : SIGTERM);
            }
            /* A file changed again while it booted: it may have imported the old code. */
            if (w->gen != m->gen) spawn(m, w->slot, ROLE_NEXT);
            check_reload_done(m);
        }
        check_ready(m);
    } else if (msg->type == MSG_RETIRE && w->role == ROLE_CUR && !w->retiring) {
        w->retiring = 1;
        w->blocked = msg->blocked;
        w->reason =
            msg->reason < sizeof(retire_reasons) / sizeof(*retire_reasons) ? msg->reason : 0;
        const char *reason = retire_reasons[w->reason];
        host_log(WSGI_LOG_INFO, "worker %u (pid %d) asks to be replaced (%s)", w->slot, (int)w->pid,
                 reason);
        replace(m, w->slot);
    }
}

static void on_exit_status(master *m, wproc *w, int status, int *stopping, int *exit_status)
{
    unsigned slot = w->slot;
    int role = w->role, ready = w->ready;
    int64_t lived = now_ms() - w->started_ms;
    pid_t pid = w->pid;
    remove_proc(m, w);
    if (role == ROLE_OLD || *stopping) {
        host_log(WSGI_LOG_INFO, "worker %u (pid %d) exited", slot, (int)pid);
        return;
    }
    int boot_failed = WIFEXITED(status) && WEXITSTATUS(status) == HOST_EXIT_BOOT_FAILED;
    if (role == ROLE_NEXT) {
        /* A replacement that did not come up: the worker it was to replace keeps serving. */
        host_log(WSGI_LOG_ERROR,
                 "new worker %u (pid %d) %s before it was ready: the old worker keeps serving",
                 slot, (int)pid, boot_failed ? "failed to boot" : "exited");
        wproc *cur = in_slot(m, slot, ROLE_CUR);
        if (cur) cur->retiring = 0;
        if (!cur && slot < m->n_slots) m->restart_at[slot] = now_ms() + 1000;
        check_reload_done(m);
        return;
    }
    metrics_worker_restart(slot, WIFSIGNALED(status) ? "killed" : "exited");
    if (WIFSIGNALED(status))
        host_log(WSGI_LOG_ERROR, "worker %u (pid %d) was killed by signal %d", slot, (int)pid,
                 WTERMSIG(status));
    else if (!boot_failed)
        host_log(WSGI_LOG_ERROR, "worker %u (pid %d) exited with status %d", slot, (int)pid,
                 WEXITSTATUS(status));
    if (in_slot(m, slot, ROLE_NEXT)) {
        /* Its replacement is booting: it takes the slot over. */
        in_slot(m, slot, ROLE_NEXT)->role = ROLE_CUR;
        check_reload_done(m);
        return;
    }
    if (boot_failed && !ready && !m->served) {
        /* At the start: a broken app exits instead of looping. */
        host_log(WSGI_LOG_ERROR, "worker %u (pid %d) failed to boot: shutting down", slot,
                 (int)pid);
        *exit_status = HOST_EXIT_BOOT_FAILED;
        *stopping = 1;
        return;
    }
    /* Once the server has served (a broken deploy after a SIGHUP, then a worker died or one was
     * added by SIGTTIN): the other workers go on serving; this slot is retried every second. */
    if (boot_failed)
        host_log(WSGI_LOG_ERROR, "worker %u (pid %d) failed to boot: retrying in 1 s", slot,
                 (int)pid);
    if (slot < m->n_slots) m->restart_at[slot] = lived < 1000 || boot_failed ? now_ms() + 1000 : 0;
}

int prefork_run(const prefork_config *cfg, prefork_worker_fn fn, void *arg)
{
    master mm, *m = &mm;
    memset(m, 0, sizeof(*m));
    m->cfg = cfg;
    m->fn = fn;
    m->arg = arg;
    m->n_slots = cfg->workers;
    m->ctl[0] = m->ctl[1] = -1;
    int sfd = host_signals_open(master_signals, (int)(sizeof(master_signals) / sizeof(int)));
    if (sfd < 0 || pipe2(m->ctl, O_CLOEXEC) != 0 || slots_grow(m, m->n_slots) != 0) {
        host_log(WSGI_LOG_ERROR, "cannot set up the master: %s", strerror(errno));
        host_signals_close();
        return 1;
    }
    fcntl(m->ctl[0], F_SETFL, O_NONBLOCK);
    int wfd = -1;
    if (cfg->reload_dirs) wfd = reload_watch_open(cfg->reload_dirs, cfg->n_reload_dirs);
    host_log(WSGI_LOG_INFO, "master %d starting %u workers", (int)getpid(), m->n_slots);
    int exit_status = 0;
    int stopping = 0, stop_signalled = 0;
    int64_t kill_at = 0, reload_at = 0;
    for (unsigned k = 0; k < m->n_slots; k++)
        if (spawn(m, k, ROLE_CUR) < 0) m->restart_at[k] = now_ms() + 1000;

    for (;;) {
        int64_t now = now_ms();
        int timeout = -1;
        if (stopping && !stop_signalled) {
            sd_notify_send("STOPPING=1");
            if (cfg->on_stop) cfg->on_stop(arg);
            for (size_t k = 0; k < m->n_ps; k++)
                kill(m->ps[k].pid, stopping == 2 ? SIGQUIT : SIGTERM);
            kill_at = now + (int64_t)(cfg->grace_seconds + 5) * 1000;
            stop_signalled = 1;
        }
        if (!stopping) {
            /* Start workers for empty slots that are due. */
            for (unsigned k = 0; k < m->n_slots; k++) {
                if (in_slot(m, k, ROLE_CUR) || in_slot(m, k, ROLE_NEXT)) continue;
                if (m->restart_at[k] <= now && spawn(m, k, ROLE_CUR) < 0)
                    m->restart_at[k] = now + 1000;
                if (!in_slot(m, k, ROLE_CUR)) {
                    int64_t d = m->restart_at[k] - now;
                    if (timeout < 0 || d < timeout) timeout = (int)(d < 0 ? 0 : d);
                }
            }
            /* Old workers (reload, replacement, SIGTTOU) still running past their grace. */
            for (size_t k = 0; k < m->n_ps; k++) {
                wproc *w = &m->ps[k];
                if (!w->kill_ms) continue;
                if (now >= w->kill_ms) {
                    host_log(
                        WSGI_LOG_WARNING,
                        "worker %u (pid %d) still running %u s after it was stopped: killing it",
                        w->slot, (int)w->pid, m->cfg->grace_seconds + 5);
                    kill(w->pid, SIGKILL);
                    w->kill_ms = 0;
                } else if (timeout < 0 || w->kill_ms - now < timeout) {
                    timeout = (int)(w->kill_ms - now);
                }
            }
            if (reload_at) {
                if (now >= reload_at) {
                    reload_at = 0;
                    begin_reload(m, "a watched file changed");
                } else {
                    int64_t d = reload_at - now;
                    if (timeout < 0 || d < timeout) timeout = (int)d;
                }
            }
        } else {
            if (m->n_ps == 0) break;
            int64_t d = kill_at - now;
            if (d <= 0) {
                host_log(WSGI_LOG_WARNING, "graceful timeout expired: killing %zu workers",
                         m->n_ps);
                for (size_t k = 0; k < m->n_ps; k++)
                    kill(m->ps[k].pid, SIGKILL);
                kill_at = now + 3600 * 1000;
                d = 1000;
            }
            timeout = (int)d;
        }

        struct pollfd pfd[3] = {{.fd = sfd, .events = POLLIN},
                                {.fd = m->ctl[0], .events = POLLIN},
                                {.fd = wfd, .events = POLLIN}};
        int pr = poll(pfd, wfd >= 0 ? 3 : 2, timeout);
        if (pr < 0 && errno != EINTR) {
            host_log(WSGI_LOG_ERROR, "poll: %s", strerror(errno));
            break;
        }
        uint64_t sigs = host_signals_read(sfd);
        if (sigs & (1ull << SIGUSR2))
            host_log(WSGI_LOG_WARNING,
                     "master %d: SIGUSR2 ignored (gunicorn's binary upgrade: libwsgi reloads on "
                     "SIGHUP)",
                     (int)getpid());
        /* logrotate: the workers reopen their access log (access_log.c). */
        if (sigs & (1ull << SIGUSR1))
            for (size_t k = 0; k < m->n_ps; k++)
                kill(m->ps[k].pid, SIGUSR1);

        if (sigs & ((1ull << SIGTERM) | (1ull << SIGINT) | (1ull << SIGQUIT))) {
            /* A second SIGINT (uvicorn's second Ctrl-C) does not wait for the grace period. */
            int quick = (sigs & (1ull << SIGQUIT)) || (stopping && (sigs & (1ull << SIGINT)));
            if (!stopping)
                host_log(WSGI_LOG_INFO, "master %d: shutting down%s", (int)getpid(),
                         quick ? " now" : " gracefully");
            if (!stopping || (quick && stopping != 2)) {
                stopping = quick ? 2 : 1;
                stop_signalled = 0;
            }
        }
        if (!stopping && (sigs & (1ull << SIGHUP))) begin_reload(m, "SIGHUP");
        if (!stopping && (sigs & (1ull << SIGTTIN))) {
            if (slots_grow(m, m->n_slots + 1) == 0) {
                unsigned k = m->n_slots++;
                host_log(WSGI_LOG_INFO, "master %d: SIGTTIN: %u workers", (int)getpid(),
                         m->n_slots);
                m->restart_at[k] = 0;
                if (spawn(m, k, ROLE_CUR) < 0) m->restart_at[k] = now_ms() + 1000;
            }
        }
        if (!stopping && (sigs & (1ull << SIGTTOU)) && m->n_slots > 1) {
            unsigned k = --m->n_slots;
            host_log(WSGI_LOG_INFO, "master %d: SIGTTOU: %u workers", (int)getpid(), m->n_slots);
            for (size_t j = 0; j < m->n_ps; j++)
                if (m->ps[j].slot == k && m->ps[j].role != ROLE_OLD)
                    stop_proc(m, &m->ps[j], SIGTERM);
            check_reload_done(m);
        }
        if (wfd >= 0 && reload_watch_read(wfd) && !stopping) reload_at = now_ms() + 100;

        ctl_msg msgs[64];
        ssize_t r;
        while ((r = read(m->ctl[0], msgs, sizeof(msgs))) > 0)
            for (ssize_t k = 0; k < r / (ssize_t)sizeof(ctl_msg); k++)
                if (!stopping) on_msg(m, &msgs[k]);

        /* Reap whatever died, whether or not SIGCHLD was seen (signals coalesce). */
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0) break;
            wproc *w = find(m, pid);
            if (w) on_exit_status(m, w, status, &stopping, &exit_status);
        }
    }
    reload_watch_close(wfd);
    host_signals_close();
    close(m->ctl[0]);
    close(m->ctl[1]);
    free(m->ps);
    free(m->restart_at);
    host_log(WSGI_LOG_INFO, "master %d: stopped", (int)getpid());
    return exit_status;
}
