/* Start-up and shut-down of the embedded runtime and the app for one host process (in a prefork
 * server: one worker, after fork). */
#ifndef WSGI_HOST_APP_H
#define WSGI_HOST_APP_H

#include "host_cli.h"

/* Exit status of a worker whose runtime or app could not be started: the prefork master stops
 * instead of restarting it forever (gunicorn's "worker failed to boot"). */
#define HOST_EXIT_BOOT_FAILED 3

/* Create the runtime (log to stderr, --chdir, --pythonpath, the working directory on sys.path like
 * gunicorn) and load the app. server_software is SERVER_SOFTWARE. 0, or -1 after logging why. */
int host_app_start(const host_options *o, const char *server_software, wsgi_runtime **rt,
                   wsgi_app **app);

/* Free both (either may be NULL). */
void host_app_stop(wsgi_runtime *rt, wsgi_app *app);

#endif
