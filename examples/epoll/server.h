/* One libwsgi-epoll worker process: the epoll loop that accepts connections, reads requests,
 * hands them to the app threads, writes responses as sockets become writable, enforces timeouts
 * and shuts down gracefully on SIGTERM/SIGINT (on SIGHUP without a master: see reexec.h). */
#ifndef EPOLL_SERVER_H
#define EPOLL_SERVER_H

#include "cli.h"
#include "listen.h"
#include "tls.h"

#include <libwsgi/libwsgi.h>

/* server_run()'s result bits. */
enum {
    SERVER_BUSY = 1,  /* requests were still running when the grace period ended (the caller
                       * must then not free the runtime: app threads may still be inside it) */
    SERVER_REEXEC = 2 /* SIGHUP without a master (reexec.h): the bridge serves, this process
                       * stopped accepting but kept its listening sockets open; execute it again */
};

/* Serve app on the (already listening) listeners until told to stop; with tls (the worker's
 * context, borrowed: NULL for plain TCP) every connection starts with a TLS handshake. In a
 * server without a master, SIGHUP starts a reload (reexec.h). Returns 0 after a clean shutdown,
 * SERVER_BUSY and/or SERVER_REEXEC (> 0), or -1 if the server could not start. */
int server_run(const epoll_options *o, wsgi_app *app, tls_ctx *tls, listener *ls, size_t n_ls);

#endif
