/* Parsing of the process-management options (proc_cli.h) and the privilege drop. */
#include "proc_cli.h"
#include "host_cli.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void proc_options_init(proc_options *o)
{
    memset(o, 0, sizeof(*o));
    o->umask = -1;
}

int proc_cli_parse(proc_options *o, int argc, char **argv, int *i)
{
    const char *v = NULL;
    uint64_t n;
    int r;
    if ((r = host_cli_match("--max-requests", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--max-requests", v, 0, UINT32_MAX, 0, &n) < 0) return -1;
        o->max_requests = n;
        return 1;
    }
    if ((r = host_cli_match("--max-requests-jitter", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--max-requests-jitter", v, 0, UINT32_MAX, 0, &n) < 0) return -1;
        o->max_requests_jitter = n;
        return 1;
    }
    if ((r = host_cli_match("--max-worker-memory", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--max-worker-memory", v, 0, 1u << 30, 0, &n) < 0) return -1;
        o->max_worker_memory = n;
        return 1;
    }
    if ((r = host_cli_match("--timeout", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--timeout", v, 0, 86400, 0, &n) < 0) return -1;
        o->timeout = (unsigned)n;
        return 1;
    }
    if ((r = host_cli_match("--preload", 0, argc, argv, i, &v)) != 0) {
        o->preload = 1;
        return 1;
    }
    if ((r = host_cli_match("--reload-dir", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return -1;
        if (o->n_reload_dirs == PROC_MAX_RELOAD_DIRS) {
            fprintf(stderr, "error: at most %d --reload-dir options\n", PROC_MAX_RELOAD_DIRS);
            return -1;
        }
        o->reload_dirs[o->n_reload_dirs++] = v;
        return 1;
    }
    if ((r = host_cli_match("--reload", 0, argc, argv, i, &v)) != 0) {
        o->reload = 1;
        return 1;
    }
    if ((r = host_cli_match("--reuse-port", 0, argc, argv, i, &v)) != 0) {
        o->reuse_port = 1;
        return 1;
    }
    if ((r = host_cli_match("--pid", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return -1;
        o->pid_file = v;
        return 1;
    }
    if ((r = host_cli_match("--user", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return -1;
        o->user = v;
        return 1;
    }
    if ((r = host_cli_match("--group", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return -1;
        o->group = v;
        return 1;
    }
    if ((r = host_cli_match("--umask", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return -1;
        char *end;
        errno = 0;
        long m = strtol(v, &end, 8);
        if (errno || !*v || *end || m < 0 || m > 0777) {
            fprintf(stderr, "error: --umask: '%s' is not an octal mode (e.g. 027)\n", v);
            return -1;
        }
        o->umask = (int)m;
        return 1;
    }
    return 0;
}

int proc_cli_validate(const proc_options *o)
{
    if (o->reload && o->preload) {
        fprintf(stderr, "error: --reload and --preload exclude each other (a preloaded app is not "
                        "imported again by new workers)\n");
        return -1;
    }
    if (o->n_reload_dirs && !o->reload) {
        fprintf(stderr, "error: --reload-dir needs --reload\n");
        return -1;
    }
    return 0;
}

int proc_needs_master(const proc_options *o)
{
    return o->max_requests || o->max_worker_memory || o->timeout || o->preload || o->reload;
}

const char *proc_cli_help(void)
{
    return "  --max-requests N        replace a worker after N requests (default 0: never);\n"
           "                          the new one is up before the old one stops\n"
           "  --max-requests-jitter J add a random 0..J to --max-requests per worker\n"
           "  --max-worker-memory MIB replace a worker whose resident memory exceeds MIB\n"
           "  --timeout S             a request still in the app after S seconds: log it\n"
           "                          with its Python stack, close it, replace the worker\n"
           "                          (ASGI: cancel its task; default 0: never)\n"
           "  --preload               load the app in the master before forking workers\n"
           "  --reload                restart the workers when a .py file of the app's\n"
           "                          directories changes (development)\n"
           "  --reload-dir DIR        also watch DIR with --reload (repeatable)\n"
           "  --reuse-port            one SO_REUSEPORT socket per worker instead of one\n"
           "                          shared listening socket\n"
           "  --pid FILE              write the master's process id to FILE\n"
           "  --user USER             switch to this user after binding\n"
           "  --group GROUP           switch to this group after binding\n"
           "  --umask MODE            file mode creation mask, octal (e.g. 027)\n";
}

void proc_apply_umask(const proc_options *o)
{
    if (o->umask >= 0) umask((mode_t)o->umask);
}

/* A name or a number. */
static int lookup_id(const char *s, int is_group, unsigned *id, gid_t *user_gid)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (*s && !*end && !errno) {
        *id = (unsigned)n;
        if (!is_group && user_gid) {
            struct passwd *pw = getpwuid((uid_t)n);
            *user_gid = pw ? pw->pw_gid : (gid_t)n;
        }
        return 0;
    }
    if (is_group) {
        struct group *gr = getgrnam(s);
        if (!gr) return -1;
        *id = gr->gr_gid;
    } else {
        struct passwd *pw = getpwnam(s);
        if (!pw) return -1;
        *id = pw->pw_uid;
        if (user_gid) *user_gid = pw->pw_gid;
    }
    return 0;
}

int proc_drop_privileges(const proc_options *o)
{
    if (!o->user && !o->group) return 0;
    unsigned uid = 0, gid = 0;
    gid_t user_gid = 0;
    if (o->user && lookup_id(o->user, 0, &uid, &user_gid) != 0) {
        fprintf(stderr, "error: --user %s: no such user\n", o->user);
        return -1;
    }
    if (o->group && lookup_id(o->group, 1, &gid, NULL) != 0) {
        fprintf(stderr, "error: --group %s: no such group\n", o->group);
        return -1;
    }
    if (!o->group) gid = user_gid;
    /* Group first: once the user changes, changing groups is no longer allowed. */
    if (getegid() != (gid_t)gid || geteuid() == 0) {
        if (geteuid() == 0) {
            int r = 0;
            if (o->user) {
                struct passwd *pw = getpwuid((uid_t)uid);
                r = pw ? initgroups(pw->pw_name, (gid_t)gid) : setgroups(1, &(gid_t){gid});
            } else {
                r = setgroups(1, &(gid_t){gid});
            }
            if (r != 0) {
                fprintf(stderr, "error: setgroups: %s\n", strerror(errno));
                return -1;
            }
        }
        if (setgid((gid_t)gid) != 0) {
            fprintf(stderr, "error: --group: setgid(%u): %s\n", gid, strerror(errno));
            return -1;
        }
    }
    if (o->user && setuid((uid_t)uid) != 0) {
        fprintf(stderr, "error: --user: setuid(%u): %s\n", uid, strerror(errno));
        return -1;
    }
    return 0;
}
