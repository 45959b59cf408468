/* Command-line options every example host shares (the app, the runtime, processes and threads) and
 * the small helpers each host uses to parse its own options the same way. */
#ifndef WSGI_HOST_CLI_H
#define WSGI_HOST_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <libwsgi/libwsgi.h>

#define HOST_MAX_PYTHONPATH 32

typedef struct host_options {
    const char *app_spec;                         /* --app module:callable (required) */
    wsgi_interface interface;                     /* --interface auto|wsgi|asgi */
    const char *chdir;                            /* --chdir DIR */
    const char *python_path[HOST_MAX_PYTHONPATH]; /* --pythonpath DIR (repeatable) */
    size_t n_python_path;
    unsigned workers;          /* --workers N (1 = no master process) */
    unsigned threads;          /* --threads N (0 = call the app on the event loop thread) */
    int access_log;            /* --access-log */
    unsigned graceful_timeout; /* --graceful-timeout S */
    int log_level;             /* --log-level debug|info|warning|error */
    const char *root_path;     /* --root-path PATH: the app's mount point (parsed by the epoll
                                  servers' obs options), or NULL */
} host_options;

/* Defaults: interface auto, 1 worker, 4 threads, graceful timeout 30 s, log level info. */
void host_options_init(host_options *o);

/* If argv[*i] is one of the shared options, consume it (and its value: "--opt V" or "--opt=V"),
 * advance *i past it and return 1. Return 0 if it is not a shared option, -1 (message printed to
 * stderr) if its value is missing or invalid. */
int host_cli_common(host_options *o, int argc, char **argv, int *i);

/* Check what only the whole command line can tell (e.g. --app given). 0 or -1 (message printed). */
int host_cli_validate(const host_options *o);

/* The --help lines for the shared options. */
const char *host_cli_common_help(void);

/* Option helpers for host-specific options. host_cli_match() returns 1 if argv[*i] is --name or
 * --name=..., storing the value (from "=" or the next argument, advancing *i) in *value when
 * takes_value; -1 if the value is missing; 0 if it is another option. */
int host_cli_match(const char *name, int takes_value, int argc, char **argv, int *i,
                   const char **value);
/* Parse an unsigned decimal number (with optional k/m/g suffix when allow_suffix) into *out,
 * checking [min, max]. 0 or -1 (message printed, naming the option). */
int host_cli_uint(const char *opt, const char *s, uint64_t min, uint64_t max, int allow_suffix,
                  uint64_t *out);

#endif
