/* TLS for libwsgi-epoll (--certfile, --keyfile, --ca-certs, --cert-reqs, --ssl-ciphers): the
 * worker's OpenSSL context. The per-connection side (handshake, reads and writes) is the I/O
 * layer declared in conn.h and implemented in tls.c.
 *
 * The context is made in each worker after fork, before it listens (server_main.c: worker_main(),
 * then handed to server_run()), so every new worker reads the certificate and key files again: a
 * reload that starts new workers (SIGHUP) picks up renewed certificates. The master only checks
 * the files once before forking (tls_check()). */
#ifndef EPOLL_TLS_H
#define EPOLL_TLS_H

#include "cli.h"

typedef struct tls_ctx tls_ctx;

/* Whether the options ask for TLS (--certfile given). */
int tls_enabled(const epoll_options *o);
/* Load the certificate chain, the key, the client CA list and the cipher list into a new context.
 * NULL on failure (logged, with OpenSSL's reason). Thread: any; the context is then shared by
 * every thread of the worker (OpenSSL's SSL_CTX is thread-safe once configured). */
tls_ctx *tls_ctx_new(const epoll_options *o);
void tls_ctx_free(tls_ctx *t);
/* tls_ctx_new() then tls_ctx_free(): tell a bad file at start-up, before any worker is forked.
 * 0 or -1 (logged). */
int tls_check(const epoll_options *o);

#endif
