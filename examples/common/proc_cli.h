/* The process-management options of the prefork servers (gunicorn's names): worker recycling
 * (--max-requests, --max-worker-memory), the stuck-request watchdog (--timeout), --preload,
 * --reload, the listening model (--reuse-port), --pid and the privileges to drop after binding. */
#ifndef WSGI_HOST_PROC_CLI_H
#define WSGI_HOST_PROC_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_MAX_RELOAD_DIRS 16

typedef struct proc_options {
    uint64_t max_requests;        /* --max-requests N: replace a worker after N requests (0: off) */
    uint64_t max_requests_jitter; /* --max-requests-jitter J: + random 0..J per worker */
    uint64_t max_worker_memory;   /* --max-worker-memory MiB: replace a worker above it (0: off) */
    unsigned timeout;             /* --timeout S: a request stuck in the app restarts (0: off) */
    int preload;                  /* --preload: load the app in the master before forking */
    int reload;                   /* --reload: restart the workers when a .py file changes */
    const char *reload_dirs[PROC_MAX_RELOAD_DIRS]; /* --reload-dir DIR (repeatable) */
    size_t n_reload_dirs;
    int reuse_port;       /* --reuse-port: one SO_REUSEPORT socket per worker */
    const char *pid_file; /* --pid FILE */
    const char *user;     /* --user NAME|UID: after binding */
    const char *group;    /* --group NAME|GID */
    int umask;            /* --umask OCTAL (-1: unchanged) */
} proc_options;

void proc_options_init(proc_options *o);

/* Like host_cli_common(): 1 if argv[*i] was one of these options (consumed), 0 if not, -1 on a
 * bad value (message printed). */
int proc_cli_parse(proc_options *o, int argc, char **argv, int *i);

/* Whole-command-line checks (e.g. --reload with --preload). 0 or -1 (message printed). */
int proc_cli_validate(const proc_options *o);

/* Whether these options need the prefork master even with one worker (replacing a worker needs
 * someone to start the new one). */
int proc_needs_master(const proc_options *o);

/* The --help lines. */
const char *proc_cli_help(void);

/* Apply --umask (before binding). */
void proc_apply_umask(const proc_options *o);

/* Drop to --group / --user (after binding, before loading the app). 0, or -1 (message printed). */
int proc_drop_privileges(const proc_options *o);

#endif
