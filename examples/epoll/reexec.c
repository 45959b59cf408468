/* The graceful reload of a server without a master (reexec.h): the bridge process, the
 * re-execution with the listening sockets inherited, and the hand-over between them.
 *
 * Why a bridge and an exec rather than a master forked on the first SIGHUP: the process already
 * holds an initialised interpreter, app threads and the app's own state, so it cannot become a
 * clean master, and a master born late would change the pid that systemd (MAINPID) and --pid
 * know. Exec keeps the pid and starts from nothing; the bridge serves the new code while the old
 * requests finish and the exec'd process boots, so nobody waits on a long request or a slow
 * import, and a bridge that fails to import is the dry run that keeps a broken app from
 * replacing a working one. */
#include "reexec.h"
#include "host_log.h"
#include "host_signals.h"
#include "metrics.h"
#include "prefork.h"
#include "pyexe.h"
#include "sd_notify.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ENV_LISTENERS "LIBWSGI_REEXEC_LISTENERS"
#define ENV_READY     "LIBWSGI_REEXEC_READY"
#define ENV_BRIDGES   "LIBWSGI_REEXEC_BRIDGES"
#define ENV_METRICS   "LIBWSGI_REEXEC_METRICS"
#define MAX_BRIDGES   16

extern char **environ;

static char **saved_argv;
static char flags[EPOLL_MAX_BINDS + 1]; /* handed-over sockets: 'o' / 'i' each, from fd 3 */
static int resumed;
static int bridge;                 /* this process is a bridge */
static int ready_fd = -1;          /* ... which tells its parent through this pipe that it serves */
static int metrics_fd = -1;        /* handed-over metrics region */
static int metrics_owner = -1;     /* ... and its scrape process */
static pid_t bridges[MAX_BRIDGES]; /* started by this process (or by the one it was exec'd from) */
static int n_bridges;
static int watch_fd = -1; /* the booting bridge's ready pipe (read end) */
static pid_t booting;     /* ... and its pid */
static int placed;        /* a failed exec left the listening sockets at fds 3.. */
/* The working directory this program was started in: a bridge and a re-executed image start
 * there, so that relative paths of the command line (--chdir app, --pid, --certfile, ...) name
 * what they named at the start, not what they name from the app's directory (--chdir). */
static int start_dir = -1;

/* The signals a new image (bridge or re-executed) starts with blocked: the stop signals and
 * SIGHUP wait for its loop's handlers (server_main.c blocks them the same way once it listens). */
static void boot_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGQUIT);
    sigaddset(set, SIGHUP);
}

/* The working directory as a descriptor above those place_fds() fills (so that a failed exec
 * leaves it as it was), or -1. */
static int open_cwd(void)
{
    int fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fd >= 3 + EPOLL_MAX_BINDS + 2) return fd;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 3 + EPOLL_MAX_BINDS + 2);
    close(fd);
    return high;
}

void reexec_enter_start_dir(void)
{
    if (start_dir >= 0 && fchdir(start_dir) != 0)
        host_log(WSGI_LOG_WARNING, "cannot return to the start directory: %s", strerror(errno));
}

static int parse_fd(const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || n < 3 || n > 1 << 20 || fcntl((int)n, F_GETFD) < 0) return -1;
    fcntl((int)n, F_SETFD, FD_CLOEXEC); /* not for the app's children */
    return (int)n;
}

void reexec_init(char **argv)
{
    saved_argv = argv;
    start_dir = open_cwd();
    const char *v = getenv(ENV_LISTENERS);
    if (v && *v && strlen(v) <= EPOLL_MAX_BINDS && strspn(v, "oi") == strlen(v)) {
        snprintf(flags, sizeof(flags), "%s", v);
        resumed = 1;
    }
    if (resumed && (v = getenv(ENV_READY))) bridge = (ready_fd = parse_fd(v)) >= 0;
    if (resumed && (v = getenv(ENV_BRIDGES))) {
        for (char *end; *v && n_bridges < MAX_BRIDGES; v = *end ? end + 1 : end) {
            long p = strtol(v, &end, 10);
            if (end == v) break;
            if (p > 1) bridges[n_bridges++] = (pid_t)p;
        }
    }
    if (resumed && (v = getenv(ENV_METRICS))) {
        char *end;
        metrics_fd = parse_fd(v);
        metrics_owner = (int)strtol((end = strchr(v, ',')) ? end + 1 : "-1", NULL, 10);
    }
    unsetenv(ENV_LISTENERS);
    unsetenv(ENV_READY);
    unsetenv(ENV_BRIDGES);
    unsetenv(ENV_METRICS);
    if (bridge) {
        /* The bridge: SIGHUP is the parent's business; systemd hears only the main process. */
        host_signals_ignore(SIGHUP);
        unsetenv("NOTIFY_SOCKET");
    }
}

int reexec_resumed(void)
{
    return resumed;
}

int reexec_is_bridge(void)
{
    return bridge;
}

int reexec_take_listeners(const epoll_options *o, listener *ls)
{
    static char names[EPOLL_MAX_BINDS][160];
    int n = resumed ? (int)strlen(flags) : 0;
    for (int k = 0; k < n; k++) {
        int own = flags[k] == 'o';
        snprintf(names[k], sizeof(names[k]), "fd %d", 3 + k);
        if (listen_inherit(3 + k, names[k], &ls[k]) != 0) return -1;
        if (own && (size_t)k < o->n_binds)
            ls[k].spec = o->binds[k];
        else
            listen_name(&ls[k], 3 + k, names[k], sizeof(names[k]));
        /* Bound by this server from --bind: its unix path is this server's to unlink at exit. */
        if (own) ls[k].inherited = 0;
    }
    return n;
}

void reexec_take_metrics(void)
{
    if (metrics_fd >= 0 && metrics_adopt(metrics_fd, bridge ? -1 : metrics_owner) != 0)
        host_log(WSGI_LOG_ERROR, "metrics: cannot map the inherited region: %s", strerror(errno));
}

static void reap(int block)
{
    for (int k = 0; k < n_bridges;) {
        pid_t r = waitpid(bridges[k], NULL, block ? 0 : WNOHANG);
        if (r == bridges[k] || (r < 0 && errno == ECHILD))
            bridges[k] = bridges[--n_bridges];
        else
            k++;
    }
}

void reexec_reap(void)
{
    reap(0);
}

void reexec_ready(void)
{
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, "R", 1);
        (void)w;
        close(ready_fd);
        ready_fd = -1;
        return;
    }
    if (bridge) return;
    if (!n_bridges) return;
    for (int k = 0; k < n_bridges; k++) {
        host_log(WSGI_LOG_INFO, "reload done: stopping the bridge process %d", (int)bridges[k]);
        kill(bridges[k], SIGTERM);
    }
    metrics_worker_replaced("reload");
    reap(0); /* one that exited before the exec sends no SIGCHLD to this image */
}

int reexec_enabled(void)
{
    return !prefork_is_worker() && !bridge;
}

static int listener_fd(const listener *l, size_t k)
{
    if (placed) return 3 + (int)k;
    return l->fd >= 0 ? l->fd : l->reserved_fd;
}

/* Move src[0..m) to fds 3.. (inheritable), through copies above them so that no source is
 * overwritten before it is copied. Async-signal-safe (it runs between fork and exec). */
static int place_fds(const int *src, int m)
{
    int high[EPOLL_MAX_BINDS + 2];
    for (int k = 0; k < m; k++)
        if ((high[k] = fcntl(src[k], F_DUPFD_CLOEXEC, 3 + m)) < 0) return -1;
    for (int k = 0; k < m; k++)
        if (dup2(high[k], 3 + k) < 0) return -1;
    for (int k = 0; k < m; k++)
        close(high[k]);
    return 0;
}

/* environ without our variables, plus extra (NULL-terminated). malloc'd array; NULL if out of
 * memory. */
static char **make_env(char **extra)
{
    size_t n = 0, x = 0;
    while (environ[n])
        n++;
    while (extra[x])
        x++;
    char **env = malloc((n + x + 1) * sizeof(*env));
    if (!env) return NULL;
    size_t j = 0;
    for (size_t k = 0; k < n; k++)
        if (strncmp(environ[k], "LIBWSGI_REEXEC_", 15) != 0) env[j++] = environ[k];
    for (size_t k = 0; k < x; k++)
        env[j++] = extra[k];
    env[j] = NULL;
    return env;
}

/* The variables both a bridge and a re-executed server get; fills src with the fds in order
 * (listeners, then metrics). Returns the number of fds. */
static int common_vars(const listener *ls, size_t n, int *src, char **extra, int *x,
                       char (*buf)[64], int for_bridge)
{
    int m = 0;
    char *f = buf[0];
    size_t len = (size_t)snprintf(f, 64, ENV_LISTENERS "=");
    if (!ls) n = strlen(flags); /* still as handed over: fds 3.., described by flags */
    for (size_t k = 0; k < n; k++) {
        f[len++] = ls ? (ls[k].inherited ? 'i' : 'o') : flags[k];
        src[m++] = ls ? listener_fd(&ls[k], k) : 3 + (int)k;
    }
    f[len] = '\0';
    extra[(*x)++] = f;
    int mfd = metrics_region_fd();
    if (mfd < 0 && !ls) mfd = metrics_fd; /* not mapped yet: the region as handed over */
    if (mfd >= 0) {
        /* The bridge maps the counters; the scrape process stays this pid's. */
        snprintf(buf[1], sizeof(buf[1]), ENV_METRICS "=%d,%d", 3 + m,
                 for_bridge ? -1 : metrics_scraper_pid());
        extra[(*x)++] = buf[1];
        src[m++] = mfd;
    }
    return m;
}

int reexec_start(const listener *ls, size_t n)
{
    if (watch_fd >= 0) {
        host_log(WSGI_LOG_WARNING, "SIGHUP: a reload is already under way");
        return -1;
    }
    if (n_bridges == MAX_BRIDGES) reap(0);
    if (n_bridges == MAX_BRIDGES) {
        host_log(WSGI_LOG_WARNING, "SIGHUP: too many bridge processes still running");
        return -1;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        host_log(WSGI_LOG_ERROR, "SIGHUP: pipe: %s", strerror(errno));
        return -1;
    }
    int src[EPOLL_MAX_BINDS + 2];
    char buf[3][64];
    char *extra[4];
    int x = 0;
    int m = common_vars(ls, n, src, extra, &x, buf, 1);
    snprintf(buf[2], sizeof(buf[2]), ENV_READY "=%d", 3 + m);
    extra[x++] = buf[2];
    extra[x] = NULL;
    src[m++] = p[1];
    char **env = make_env(extra);
    if (!env) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    sd_notify_reloading();
    /* Signals stay blocked from fork to exec: the child must not run this process's handlers
     * (they write to its signal pipe); the new program unblocks them once it handles them. */
    sigset_t all, old, boot;
    sigfillset(&all);
    boot_signals(&boot);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid == 0) {
        if ((start_dir < 0 || fchdir(start_dir) == 0) && place_fds(src, m) == 0) {
            sigprocmask(SIG_SETMASK, &boot, NULL);
            execve(pyexe_self(), saved_argv, env);
        }
        _exit(127);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(env);
    close(p[1]);
    if (pid < 0) {
        host_log(WSGI_LOG_ERROR, "SIGHUP: fork: %s", strerror(e));
        close(p[0]);
        sd_notify_send("READY=1");
        return -1;
    }
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    bridges[n_bridges++] = pid;
    booting = pid;
    watch_fd = p[0];
    host_log(WSGI_LOG_INFO,
             "SIGHUP: reloading: started process %d with the app imported afresh; this one serves "
             "until it is ready",
             (int)pid);
    return watch_fd;
}

int reexec_bridge_status(void)
{
    if (watch_fd < 0) return 0;
    char b;
    ssize_t r = read(watch_fd, &b, 1);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    close(watch_fd);
    watch_fd = -1;
    if (r == 1) {
        host_log(WSGI_LOG_INFO,
                 "reload: process %d serves the new code; this one finishes its requests, then "
                 "restarts itself (same pid) with it",
                 (int)booting);
        return 1;
    }
    host_log(WSGI_LOG_ERROR,
             "reload failed: process %d exited before it was ready (its error is above); this "
             "process keeps serving the code it has",
             (int)booting);
    reap(0);
    sd_notify_send("READY=1");
    return -1;
}

void reexec_stop_bridges(void)
{
    if (watch_fd >= 0) {
        close(watch_fd);
        watch_fd = -1;
    }
    for (int k = 0; k < n_bridges; k++)
        kill(bridges[k], SIGTERM);
}

int reexec_exec(const listener *ls, size_t n)
{
    int src[EPOLL_MAX_BINDS + 2];
    char buf[3][64];
    char *extra[4];
    int x = 0;
    int m = common_vars(ls, n, src, extra, &x, buf, 0);
    char pids[MAX_BRIDGES * 12 + sizeof(ENV_BRIDGES) + 1];
    size_t len = (size_t)snprintf(pids, sizeof(pids), ENV_BRIDGES "=");
    for (int k = 0; k < n_bridges; k++)
        len +=
            (size_t)snprintf(pids + len, sizeof(pids) - len, "%s%d", k ? "," : "", (int)bridges[k]);
    extra[x++] = pids;
    extra[x] = NULL;
    char **env = make_env(extra);
    if (!env) return -1;
    sigset_t all, old, boot;
    sigfillset(&all);
    boot_signals(&boot);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    /* Stopped while the old image finished its requests: stop, with the bridge, no exec. */
    if (host_signals_take() & ((1ull << SIGTERM) | (1ull << SIGINT) | (1ull << SIGQUIT))) {
        host_log(WSGI_LOG_INFO, "reload: a stop signal came meanwhile: stopping");
        sd_notify_send("STOPPING=1");
        reexec_stop_bridges();
        host_signals_close();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        free(env);
        return 1;
    }
    host_log(WSGI_LOG_INFO, "reload: executing %s again (pid %d)", saved_argv[0], (int)getpid());
    fflush(NULL);
    /* From the start directory (a failed exec comes back to the app's). */
    int here = open_cwd();
    if (start_dir >= 0 && fchdir(start_dir) != 0)
        host_log(WSGI_LOG_WARNING, "reload: cannot return to the start directory: %s",
                 strerror(errno));
    if (place_fds(src, m) == 0) {
        placed = 1;
        /* Stop signals arriving from now on wait for the new image's handlers. */
        pthread_sigmask(SIG_SETMASK, &boot, NULL);
        execve(pyexe_self(), saved_argv, env);
    }
    int e = errno;
    if (here >= 0) {
        if (fchdir(here) != 0)
            host_log(WSGI_LOG_WARNING, "reload: cannot return to the app's directory: %s",
                     strerror(errno));
        close(here);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(env);
    host_log(WSGI_LOG_ERROR, "reload: cannot execute %s: %s", pyexe_self(), strerror(e));
    return -1;
}

int reexec_supervise(const listener *ls, size_t n)
{
    reap(0);
    if (!n_bridges) return -1;
    static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGCHLD};
    int sfd = host_signals_open(sigs, (int)(sizeof(sigs) / sizeof(*sigs)));
    if (sfd < 0) return -1;
    /* A bridge that exited before the SIGCHLD handler was in place sent its signal for nothing:
     * look again now that a later one cannot be missed. */
    reap(0);
    if (!n_bridges) {
        host_signals_close();
        host_log(WSGI_LOG_ERROR, "the bridge process exited: stopping");
        return 1;
    }
    host_log(WSGI_LOG_ERROR,
             "the reload's new process %d keeps serving; this process (pid %d) waits for it: "
             "send SIGHUP to try the restart again, SIGTERM to stop",
             (int)bridges[0], (int)getpid());
    sd_notify_send("READY=1");
    int stopping = 0;
    while (n_bridges) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) break;
        uint64_t sigs_seen = host_signals_read(sfd);
        if (sigs_seen & ((1ull << SIGTERM) | (1ull << SIGINT) | (1ull << SIGQUIT))) {
            int sig = (sigs_seen & (1ull << SIGQUIT)) ? SIGQUIT : SIGTERM;
            if (!stopping) sd_notify_send("STOPPING=1");
            stopping = 1;
            for (int k = 0; k < n_bridges; k++)
                kill(bridges[k], sig);
        } else if ((sigs_seen & (1ull << SIGHUP)) && reexec_exec(ls, n) > 0) {
            stopping = 1; /* a stop signal came with the SIGHUP: the bridges were told */
            reap(1);
            break;
        }
        reap(0);
    }
    host_signals_close();
    if (!stopping) host_log(WSGI_LOG_ERROR, "the bridge process exited: stopping");
    return stopping ? 0 : 1;
}
