/* Parsing of the command-line options shared by the example hosts. No getopt: each host parses its
 * own options with the same helpers, and both accept "--opt value" and "--opt=value". */
#include "host_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void host_options_init(host_options *o)
{
    memset(o, 0, sizeof(*o));
    o->interface = WSGI_INTERFACE_AUTO;
    o->workers = 1;
    o->threads = 4;
    o->graceful_timeout = 30;
    o->log_level = WSGI_LOG_INFO;
}

int host_cli_match(const char *name, int takes_value, int argc, char **argv, int *i,
                   const char **value)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '\0') {
        if (!takes_value) {
            (*i)++;
            return 1;
        }
        if (*i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", name);
            return -1;
        }
        *value = argv[*i + 1];
        *i += 2;
        return 1;
    }
    if (arg[n] == '=' && takes_value) {
        *value = arg + n + 1;
        (*i)++;
        return 1;
    }
    return 0;
}

int host_cli_uint(const char *opt, const char *s, uint64_t min, uint64_t max, int allow_suffix,
                  uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) goto bad;
    uint64_t mult = 1;
    if (allow_suffix && *end) {
        switch (*end) {
        case 'k':
        case 'K': mult = 1024ull; break;
        case 'm':
        case 'M': mult = 1024ull * 1024; break;
        case 'g':
        case 'G': mult = 1024ull * 1024 * 1024; break;
        default: goto bad;
        }
        end++;
    }
    if (*end) goto bad;
    if (v > UINT64_MAX / mult) goto bad;
    v *= mult;
    if (v < min || v > max) {
        fprintf(stderr, "error: %s must be between %llu and %llu\n", opt, (unsigned long long)min,
                (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
bad:
    fprintf(stderr, "error: %s: '%s' is not a valid number\n", opt, s);
    return -1;
}

int host_cli_common(host_options *o, int argc, char **argv, int *i)
{
    const char *v = NULL;
    uint64_t n;
    int r;

    if ((r = host_cli_match("--app", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->app_spec = v;
        return r;
    }
    if ((r = host_cli_match("--interface", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return r;
        if (strcmp(v, "auto") == 0)
            o->interface = WSGI_INTERFACE_AUTO;
        else if (strcmp(v, "wsgi") == 0)
            o->interface = WSGI_INTERFACE_WSGI;
        else if (strcmp(v, "asgi") == 0)
            o->interface = WSGI_INTERFACE_ASGI;
        else {
            fprintf(stderr, "error: --interface must be auto, wsgi or asgi (got '%s')\n", v);
            return -1;
        }
        return 1;
    }
    if ((r = host_cli_match("--chdir", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->chdir = v;
        return r;
    }
    if ((r = host_cli_match("--pythonpath", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return r;
        if (o->n_python_path == HOST_MAX_PYTHONPATH) {
            fprintf(stderr, "error: at most %d --pythonpath options\n", HOST_MAX_PYTHONPATH);
            return -1;
        }
        o->python_path[o->n_python_path++] = v;
        return 1;
    }
    if ((r = host_cli_match("--workers", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--workers", v, 1, 1024, 0, &n) < 0) return -1;
        o->workers = (unsigned)n;
        return 1;
    }
    if ((r = host_cli_match("--threads", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--threads", v, 0, 1024, 0, &n) < 0) return -1;
        o->threads = (unsigned)n;
        return 1;
    }
    if ((r = host_cli_match("--graceful-timeout", 1, argc, argv, i, &v)) != 0) {
        if (r < 0 || host_cli_uint("--graceful-timeout", v, 0, 86400, 0, &n) < 0) return -1;
        o->graceful_timeout = (unsigned)n;
        return 1;
    }
    if ((r = host_cli_match("--access-log", 0, argc, argv, i, &v)) != 0) {
        o->access_log = 1;
        return r;
    }
    if ((r = host_cli_match("--log-level", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return r;
        if (strcmp(v, "debug") == 0)
            o->log_level = WSGI_LOG_DEBUG;
        else if (strcmp(v, "info") == 0)
            o->log_level = WSGI_LOG_INFO;
        else if (strcmp(v, "warning") == 0)
            o->log_level = WSGI_LOG_WARNING;
        else if (strcmp(v, "error") == 0)
            o->log_level = WSGI_LOG_ERROR;
        else {
            fprintf(stderr, "error: --log-level must be debug, info, warning or error\n");
            return -1;
        }
        return 1;
    }
    return 0;
}

int host_cli_validate(const host_options *o)
{
    if (!o->app_spec || !*o->app_spec) {
        fprintf(stderr, "error: --app module:callable is required (try --help)\n");
        return -1;
    }
    return 0;
}

const char *host_cli_common_help(void)
{
    return "  --app MODULE:CALLABLE   the application, gunicorn syntax (required)\n"
           "  --interface auto|wsgi|asgi\n"
           "                          interface of the app (default auto: detected)\n"
           "  --chdir DIR             change to DIR before loading the app\n"
           "  --pythonpath DIR        prepend DIR to sys.path (repeatable)\n"
           "  --workers N             worker processes (default 1: no master process)\n"
           "  --threads N             threads running a WSGI app per worker (default 4;\n"
           "                          0: call the app on the event loop thread; ASGI\n"
           "                          apps always run in the event loop thread)\n"
           "  --graceful-timeout S    time in-flight requests get on SIGTERM (default 30)\n"
           "  --access-log            log one line per request to stderr\n"
           "  --log-level LEVEL       debug, info, warning or error (default info)\n";
}
