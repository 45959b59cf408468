/* What the servers do to be seen and to sit behind a proxy (issue 13): the options
 * (--access-logfile, --access-logformat, --metrics-bind, --check-config, --proxy-headers,
 * --forwarded-allow-ips, --root-path), the access log and metrics fed by libwsgi's request
 * observer (observe.c), and the forwarded headers (proxy_headers.c). */
#ifndef EPOLL_OBS_H
#define EPOLL_OBS_H

#include "host_cli.h"

#include <libwsgi/libwsgi.h>

typedef struct obs_options {
    const char *access_logfile;      /* --access-logfile FILE ('-': stderr) */
    const char *access_logformat;    /* --access-logformat FORMAT (gunicorn's atoms) */
    const char *metrics_bind;        /* --metrics-bind HOST:PORT */
    int check_config;                /* --check-config */
    int proxy_headers;               /* --proxy-headers */
    const char *forwarded_allow_ips; /* --forwarded-allow-ips LIST (default 127.0.0.1, or
                                        $FORWARDED_ALLOW_IPS) */
} obs_options;

void obs_options_init(obs_options *o);
/* One of the options above (or --root-path, which goes to h): 1 consumed, 0 not ours, -1 error
 * (message printed). */
int obs_cli_option(obs_options *o, host_options *h, int argc, char **argv, int *i);
/* Check the values (trusted address list, log format). 0 or -1 (message printed). */
int obs_cli_validate(obs_options *o, host_options *h);
/* The --help lines. */
const char *obs_cli_help(void);

/* Before workers fork (server_main): open the access log, make the metrics region and start
 * its scrape process. 0 or -1 (message printed). */
int obs_setup(const obs_options *o, const host_options *h);
/* In each worker once the app is loaded: the observer on its runtime, its metrics slot, the
 * SIGUSR1 handler that reopens the access log. */
void obs_worker_start(wsgi_runtime *rt, unsigned index);
/* Master exit. */
void obs_shutdown(void);

/* proxy_headers.c: parse the trusted list. 0 or -1 (message printed). */
int proxy_trust_parse(const char *list);
/* Whether the peer address (text; "" for a unix socket) is trusted. */
int proxy_trusted(const char *peer);

#endif
