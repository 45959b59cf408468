/* The main function of both servers (libwsgi-epoll, libwsgi-scgi; they differ only in how a
 * request arrives: see http_conn.c): parse the command line, reserve the listening addresses (or
 * take the inherited socket), then either serve in this process (--workers 1) or become the
 * prefork master of N workers. Each worker loads Python and the app itself, after fork, before it
 * starts listening, so a connection that is accepted always finds the app ready. Serving in this
 * process, SIGHUP ends in an exec of this program (reexec.c), which starts here again with the
 * listening sockets of the previous image. */
#include "access_log.h"
#include "cli.h"
#include "guard.h"
#include "host_app.h"
#include "host_asgi.h"
#include "host_log.h"
#include "listen.h"
#include "host_py.h"
#include "prefork.h"
#include "pyexe.h"
#include "reexec.h"
#include "sd_notify.h"
#include "server.h"
#include "server_main.h"
#include "tls.h"
#include "version.h"

#include <fcntl.h>
#include <http_parser.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>

/* worker_main(): SIGHUP in a server without a master, the app stopped: execute this program
 * again (reexec.c). Not an exit status. */
#define WORKER_REEXEC (-100)

typedef struct worker_ctx {
    const epoll_options *opt;
    listener *ls;
    size_t n_ls;
    int prefork;
    /* --preload: loaded in the master, inherited by every worker. */
    wsgi_runtime *rt;
    wsgi_app *app;
} worker_ctx;

/* Block these signals in the calling thread (0: none). */
static void block_signals(int a, int b, int c, int d)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {a, b, c, d};
    for (size_t k = 0; k < sizeof(sigs) / sizeof(*sigs); k++)
        if (sigs[k]) sigaddset(&set, sigs[k]);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int worker_main(void *arg, unsigned index)
{
    worker_ctx *w = arg;
    const epoll_options *o = w->opt;
    int prefork = w->prefork;
    /* observe.c: the access log's SIGUSR1 handler as early as possible (the master forwards it). */
    if (o->host.access_log) access_log_handle_sigusr1();
    /* Without a master, gunicorn's operator signals would stop (SIGTTIN, SIGTTOU) or kill (SIGUSR2,
     * SIGUSR1 without an access log) a server still importing its app (a first start, or the new
     * image of a SIGHUP reload): blocked until server_run()'s handlers take them (it unblocks what
     * it installs, and logs them). Threads the app starts meanwhile keep them blocked. */
    if (!prefork) block_signals(SIGTTIN, SIGTTOU, SIGUSR2, o->host.access_log ? 0 : SIGUSR1);

    wsgi_runtime *rt = w->rt;
    wsgi_app *app = w->app;
    char software[64];
    snprintf(software, sizeof(software), "%s/%s", o->name, EPOLL_SERVER_VERSION);
    if (!app && host_app_start(&o->host, software, &rt, &app) != 0) return HOST_EXIT_BOOT_FAILED;
    obs_worker_start(rt, index); /* observe.c: the request observer, the metrics slot */
    /* TLS: the worker's own context, loaded now from the files as they are (so the workers a
     * reload starts read renewed certificates), before it listens; a file it cannot read (after
     * a privilege drop, say) is a failed boot, not a worker to restart again and again. */
    tls_ctx *tls = NULL;
    if (tls_enabled(o) && !(tls = tls_ctx_new(o))) {
        host_app_stop(rt, app);
        return HOST_EXIT_BOOT_FAILED;
    }
    /* An ASGI app's lifespan runs in each worker, before it listens: a startup failure is a
     * failed boot (the master stops instead of restarting it). */
    int asgi = wsgi_app_interface(app) == WSGI_INTERFACE_ASGI;
    if (asgi && host_asgi_startup(app, o->lifespan_timeout) != 0) {
        tls_ctx_free(tls);
        host_app_stop(rt, app);
        return HOST_EXIT_BOOT_FAILED;
    }
    /* Once listening, a client (or a supervisor) may take the server as up and stop it: a stop
     * signal must then wait for the event loop's handlers (host_signals_open() unblocks what it
     * installs) instead of killing the worker by its default action. A prefork worker starts with
     * them blocked already (prefork.c). Without a master SIGHUP is one of them (a reload,
     * reexec.h): a supervisor that reloads as soon as the server is up must not kill it. */
    if (!prefork) block_signals(SIGTERM, SIGINT, SIGQUIT, SIGHUP);
    for (size_t k = 0; k < w->n_ls; k++) {
        if (listen_open(&w->ls[k], prefork, o->backlog) != 0) {
            if (asgi) host_asgi_shutdown(app);
            tls_ctx_free(tls);
            host_app_stop(rt, app);
            return HOST_EXIT_BOOT_FAILED;
        }
    }
    /* --max-requests, --max-worker-memory, --timeout (guard.c); then tell the master (a
     * replacement it waits for is up) or systemd (no master) that connections are served. */
    guard_start(o, asgi || o->host.threads == 0);
    if (prefork_is_worker()) {
        prefork_worker_ready();
    } else {
        /* A reload's bridge tells its parent; a re-executed server stops the bridge. */
        reexec_ready();
        if (!reexec_is_bridge()) sd_notify_send("READY=1");
    }
    int r = server_run(o, app, tls, w->ls, w->n_ls);
    int reexec = r > 0 && (r & SERVER_REEXEC);
    if (!prefork_is_worker() && !reexec_is_bridge() && !reexec) sd_notify_send("STOPPING=1");
    if (r > 0 && (r & SERVER_BUSY)) {
        /* App threads are still running Python: leave without finalizing under them (an exec
         * ends them too). */
        if (reexec) return WORKER_REEXEC;
        fflush(NULL);
        _exit(0);
    }
    /* In-flight requests (and ASGI apps still running after their response) are done. */
    guard_stop();
    tls_ctx_free(tls);
    if (asgi) host_asgi_shutdown(app);
    host_app_stop(rt, app);
    if (reexec) return WORKER_REEXEC;
    host_log(WSGI_LOG_INFO, "worker %d: exiting", (int)getpid());
    return r == 0 ? 0 : 1;
}

/* The listening socket the parent passed: --fd N, or for libwsgi-scgi without --bind the socket
 * lighttpd's bin-path puts on fd 0. fd 0 is moved up and /dev/null put in its place before
 * Python starts (Python and the app may read stdin). 0 or -1 (message printed). */
static int take_inherited(epoll_options *o, listener *l)
{
    static char spec[160];
    int fd = o->inherit_fd;
    if (fd < 0) {
        int acc = 0;
        socklen_t len = sizeof(acc);
        if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc) {
            fprintf(stderr, "error: no --bind, and fd 0 is not a listening socket (lighttpd's "
                            "bin-path passes one there): give --bind HOST:PORT or unix:PATH\n");
            return -1;
        }
        fd = 0;
    }
    snprintf(spec, sizeof(spec), "fd %d", fd);
    if (listen_inherit(fd, spec, l) != 0) return -1;
    /* Name it by its address in the logs: "unix:PATH (fd 0)", "127.0.0.1:9000 (fd 0)". */
    listen_name(l, fd, spec, sizeof(spec));
    if (fd <= 2) {
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (moved < 0 || null < 0 || dup3(null, fd, 0) < 0) {
            fprintf(stderr, "error: cannot move the inherited socket off fd %d: %s\n", fd,
                    strerror(errno));
            return -1;
        }
        close(null);
        l->reserved_fd = moved;
    }
    return 0;
}

/* --check-config (gunicorn's): the command line parsed, the addresses, the access log and the
 * TLS files checked, the app imported; nothing listens. 0 if all is well, else 1 (the error
 * logged). */
static int check_config(const epoll_options *o)
{
    for (size_t k = 0; k < o->n_binds; k++) {
        listener l;
        if (listen_parse(o->binds[k], &l) != 0) return 1;
    }
    if (tls_enabled(o) && tls_check(o) != 0) return 1;
    if (o->host.access_log && access_log_setup(o->obs.access_logformat, o->obs.access_logfile) != 0)
        return 1;
    wsgi_runtime *rt = NULL;
    wsgi_app *app = NULL;
    if (host_app_start(&o->host, o->name, &rt, &app) != 0) return 1;
    int asgi = wsgi_app_interface(app) == WSGI_INTERFACE_ASGI;
    host_app_stop(rt, app);
    printf("%s: configuration OK ('%s' is a%s app)\n", o->name, o->host.app_spec,
           asgi ? "n ASGI" : " WSGI");
    return 0;
}

/* The files a worker opens after it has changed to --chdir's directory (the TLS files, loaded
 * after the app) or opens again there (the access log, on SIGUSR1) are named from the start
 * directory, where the master checked them: relative paths made absolute now. (--pid and unix
 * socket paths, used at exit, are unlinked from the start directory: reexec_enter_start_dir().) */
static void absolute_paths(epoll_options *o)
{
    static char bufs[4][PATH_MAX];
    const char **paths[] = {&o->certfile, &o->keyfile, &o->ca_certs, &o->obs.access_logfile};
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) return;
    for (size_t k = 0; k < sizeof(paths) / sizeof(*paths); k++) {
        const char *p = *paths[k];
        if (!p || p[0] == '/' || strcmp(p, "-") == 0) continue;
        if ((size_t)snprintf(bufs[k], sizeof(bufs[k]), "%s/%s", cwd, p) < sizeof(bufs[k]))
            *paths[k] = bufs[k];
    }
}

/* ---- processes and deploys: socket activation, --pid, --preload, --reload ---- */

/* systemd's sockets (LISTEN_FDS, from fd 3). 0 or -1 (message printed). */
static int take_activated(const epoll_options *o, listener *ls)
{
    static char specs[EPOLL_MAX_BINDS][32];
    for (int k = 0; k < o->listen_fds; k++) {
        snprintf(specs[k], sizeof(specs[k]), "LISTEN_FDS fd %d", 3 + k);
        if (listen_inherit(3 + k, specs[k], &ls[k]) != 0) return -1;
    }
    return 0;
}

static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
        fprintf(stderr, "error: --pid %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void preload_before_fork(void *arg)
{
    (void)arg;
    host_py_before_fork();
}

static void preload_after_fork(void *arg, int child)
{
    (void)arg;
    host_py_after_fork(child);
}

/* The master stops: its copies of the listening sockets go (not unlinked: at exit). */
static void master_on_stop(void *arg)
{
    worker_ctx *w = arg;
    for (size_t k = 0; k < w->n_ls; k++) {
        if (w->ls[k].reserved_fd >= 0) close(w->ls[k].reserved_fd);
        w->ls[k].reserved_fd = -1;
    }
}

/* --reload watches the app's directory (--chdir, else the working directory), the --pythonpath
 * entries and the --reload-dir ones. */
static size_t reload_dirs(const epoll_options *o, const char **dirs, size_t cap)
{
    static char cwd[PATH_MAX];
    size_t n = 0;
    if (o->host.chdir)
        dirs[n++] = o->host.chdir;
    else if (getcwd(cwd, sizeof(cwd)))
        dirs[n++] = cwd;
    for (size_t k = 0; k < o->host.n_python_path && n < cap; k++)
        dirs[n++] = o->host.python_path[k];
    for (size_t k = 0; k < o->proc.n_reload_dirs && n < cap; k++)
        dirs[n++] = o->proc.reload_dirs[k];
    return n;
}

/* A re-executed image (SIGHUP without a master) that fails before it serves, while the reload's
 * bridge does (an access log, a certificate or the privileges that changed since the bridge
 * started): keep the pid around the bridge, as for an app that no longer imports (worker_main),
 * instead of leaving it without anyone to stop it. Its sockets are still at fds 3... */
static int boot_failed(const epoll_options *o, int status)
{
    if (!reexec_resumed() || reexec_is_bridge()) return status;
    int st = reexec_supervise(NULL, 0);
    if (st < 0) return status;
    if (o && o->proc.pid_file) unlink(o->proc.pid_file);
    return st;
}

int server_main(int argc, char **argv, server_program prog)
{
    /* Inside the Python executable unless disabled (pyexe.h): this call then does not return, and
     * server_main() starts again in the module, where it returns at once. */
    pyexe_launch(argc, argv, prog);
    /* A reload's exec (reexec.c) passes its state in the environment: taken before anything
     * (the app must not see it). */
    reexec_init(argv);
    epoll_options o;
    int r = epoll_cli_parse(argc, argv, prog, &o);
    if (r != 0) return r > 0 ? 0 : boot_failed(NULL, 2);
    host_log_set_level(o.host.log_level);
    absolute_paths(&o);
    proc_apply_umask(&o.proc); /* --umask: before any file or socket is made */
    if (o.obs.check_config) return check_config(&o);
    /* observe.c: the access log file, the metrics region and its scrape process, before anything
     * listens or forks. */
    reexec_take_metrics(); /* after a reload's exec: the same counters and scrape process */
    if (obs_setup(&o.obs, &o.host) != 0) return boot_failed(&o, 2);
    signal(SIGPIPE, SIG_IGN);
    /* glibc's adaptive thresholds give the top of the heap back to the kernel once a few MiB
     * are free there, and map large blocks with mmap: a worker whose concurrent requests
     * allocate and free bodies of some hundred KiB then faults the same pages in again and again
     * (20-35 minor faults per 256 KiB ASGI POST echo at 64 connections, and a third of the
     * requests per CPU-second; measured with /proc/PID/stat and wrk). Fixed thresholds: keep up
     * to 32 MiB of free heap (the adaptive scheme's own ceiling is 64 MiB), map only blocks over
     * 1 MiB (given back at once when freed). One arena: glibc gives each thread that calls
     * malloc an arena of its own, and with --threads N the worker's N + 1 threads each kept up to
     * 1.6 MiB there for 10-30 KiB in use (output batches and Python's large objects allocated on
     * one thread, freed on another), so a streaming WSGI worker's RSS crept up for as long as it
     * ran: 20.4 -> 25.0 MiB over 210,000 100-chunk responses (wrk -c64, 5 threads), and +14 % in
     * bench/soak.py's 12 minutes; with one arena 20.7 -> 21.5 MiB, flat after the first seconds.
     * The threads take turns under the GIL anyway, so they hardly contend for it. GLIBC_TUNABLES
     * still wins for malloc tunables. */
    const char *tun = getenv("GLIBC_TUNABLES");
    if (!tun || !strstr(tun, "glibc.malloc.")) {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        mallopt(M_TRIM_THRESHOLD, 32 << 20);
        mallopt(M_ARENA_MAX, 1);
    }
    /* One descriptor per connection: allow as many as the hard limit does. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* http_parser's own head limit (process-wide), so an endless header line stops early. */
    http_parser_set_max_header_size((uint32_t)o.max_header_size);

    /* A bad certificate or key is told now, not by every worker; each worker loads the files
     * again (server_run), so new workers pick up renewed ones. */
    if (tls_enabled(&o) && tls_check(&o) != 0) return boot_failed(&o, 1);

    listener ls[EPOLL_MAX_BINDS];
    size_t n_ls = o.n_binds;
    /* Replacing a worker (recycling, --timeout, --reload, SIGHUP) needs the master. */
    int prefork = o.host.workers > 1 || proc_needs_master(&o.proc);
    /* After a reload's exec: the sockets of the previous image (fds 3..), whatever --bind, --fd
     * or LISTEN_FDS say: nothing is bound again. */
    int handed = reexec_take_listeners(&o, ls);
    if (handed < 0) return boot_failed(&o, 2);
    if (handed > 0) {
        n_ls = (size_t)handed;
    } else if (o.listen_fds > 0) {
        if (take_activated(&o, ls) != 0) return 2;
        n_ls = (size_t)o.listen_fds;
    } else if (n_ls == 0) {
        if (take_inherited(&o, &ls[0]) != 0) return 2;
        n_ls = 1;
    }
    for (size_t k = 0; k < o.n_binds && !handed; k++) {
        if (listen_parse(o.binds[k], &ls[k]) != 0) return 2;
        if (listen_reserve(&ls[k], prefork, o.proc.reuse_port, o.backlog) != 0) return 1;
    }
    /* The pid file before the privileges go (its directory may be root's, as /run is). After a
     * reload's exec it holds this pid already (and a bridge's pid does not belong there). */
    if (o.proc.pid_file && !reexec_resumed() && write_pid_file(o.proc.pid_file) != 0) return 1;
    if (proc_drop_privileges(&o.proc) != 0) return boot_failed(&o, 1);
    host_log(WSGI_LOG_INFO, "%s %s (libwsgi %s) serving %s on %s%s", o.name, EPOLL_SERVER_VERSION,
             libwsgi_version(), o.host.app_spec, ls[0].spec, n_ls > 1 ? " and more" : "");

    worker_ctx w = {.opt = &o, .ls = ls, .n_ls = n_ls, .prefork = prefork};
    int status;
    if (prefork) {
        prefork_config pc = {.workers = o.host.workers,
                             .grace_seconds = o.host.graceful_timeout,
                             .on_stop = master_on_stop};
        const char *dirs[2 + HOST_MAX_PYTHONPATH + PROC_MAX_RELOAD_DIRS];
        if (o.proc.reload) {
            pc.reload_dirs = dirs;
            pc.n_reload_dirs = reload_dirs(&o, dirs, sizeof(dirs) / sizeof(*dirs));
        }
        if (o.proc.preload) {
            char software[64];
            snprintf(software, sizeof(software), "%s/%s", o.name, EPOLL_SERVER_VERSION);
            if (host_app_start(&o.host, software, &w.rt, &w.app) != 0) {
                reexec_enter_start_dir(); /* --chdir: relative unix socket paths */
                for (size_t k = 0; k < n_ls; k++)
                    listen_close(&ls[k], 1);
                return HOST_EXIT_BOOT_FAILED;
            }
        }
        /* An interpreter in the master (--preload, or the Python executable's own) is kept
         * consistent across every fork, as os.fork() does: workers, reload, replacements. */
        if (host_py_running()) {
            pc.before_fork = preload_before_fork;
            pc.after_fork = preload_after_fork;
        }
        status = prefork_run(&pc, worker_main, &w);
        if (w.app) host_app_stop(w.rt, w.app);
    } else {
        status = worker_main(&w, 0);
        /* SIGHUP: this program again, with the sockets (does not return unless exec fails). */
        int exec_failed = 0;
        if (status == WORKER_REEXEC) {
            exec_failed = reexec_exec(ls, n_ls) < 0;
            status = exec_failed ? 1 : 0;
        }
        /* Exec failed, or this re-executed image could not boot while the reload's bridge
         * serves: keep the pid alive around the bridge. */
        if (exec_failed ||
            (status == HOST_EXIT_BOOT_FAILED && reexec_resumed() && !reexec_is_bridge())) {
            int st = reexec_supervise(ls, n_ls);
            if (st >= 0) status = st;
        }
    }
    /* A bridge's sockets and pid file are the main process's. Relative paths are the start
     * directory's, which --chdir (here, or in a --preload master) or the app may have left. */
    reexec_enter_start_dir();
    for (size_t k = 0; k < n_ls; k++)
        listen_close(&ls[k], !reexec_is_bridge());
    if (o.proc.pid_file && !reexec_is_bridge()) unlink(o.proc.pid_file);
    obs_shutdown();
    return status;
}
