/* Prometheus metrics of the example hosts (--metrics-bind): counters in a shared memory region
 * (a memfd) made before the workers fork, one slot per worker process, updated with atomics by
 * the workers (and by the master for restarts), read and summed by a small scrape process that
 * serves the text format on its own listener (gauges only of the processes still alive). */
#ifndef WSGI_HOST_METRICS_H
#define WSGI_HOST_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Make the region for n workers (and their replacements, and workers SIGTTIN adds) and start the
 * scrape process on bind (HOST:PORT), before anything forks or listens. 0, or -1 (message on
 * stderr). */
int metrics_setup(const char *bind, unsigned n_workers);
/* Whether metrics are on (every update below is a no-op otherwise). */
int metrics_enabled(void);
/* In a worker (or the single process), before it serves: take a slot for this process (worker
 * index: 0, 1, ...). */
void metrics_worker_attach(unsigned index);
/* Master: the worker of index is gone (its gauges leave the sums with it) and will be replaced
 * for reason ("exited", "killed", "max_requests", "timeout", "memory", "reload", ... ; unknown
 * names count as "other"). */
void metrics_worker_restart(unsigned index, const char *reason);
/* Master: a planned replacement (prefork.c: max_requests, memory, timeout, reload, other) whose
 * successor already serves in the same slot: counted like a restart, the slot's gauges kept. */
void metrics_worker_replaced(const char *reason);
/* The region's descriptor (a memfd, close-on-exec; -1 when metrics are off) and the scrape
 * process (-1 when this process did not start it), for a server that executes itself again
 * (reexec.c) and hands both over. */
int metrics_region_fd(void);
int metrics_scraper_pid(void);
/* Instead of metrics_setup() (which then does nothing): map the region of an inherited descriptor
 * (metrics_region_fd() of the image that executed this one). scraper_pid > 0: this process owns
 * that scrape process now (metrics_shutdown() stops it); otherwise it stops none. 0, or -1. */
int metrics_adopt(int fd, int scraper_pid);
/* Stop the scrape process (master exit). */
void metrics_shutdown(void);

/* Worker updates (any thread). A request goes to the app (counted in flight until
 * metrics_request_done(), which the observer calls for it)... */
void metrics_request_begin(void);
/* ... or, after all, was not accepted by the library (no observer report will come for it). */
void metrics_request_refused(void);
/* A request the app served ended: status (0: none), outcome (wsgi_outcome_class), its latency
 * (queueing + app), body bytes. */
void metrics_request_done(int status, int outcome, int64_t latency_ns, uint64_t bytes_in,
                          uint64_t bytes_out);
/* A request the server answered itself with @status (the app never saw it). */
void metrics_request_rejected(int status);
void metrics_conn_open(int delta);      /* +1 accepted, -1 closed */
void metrics_websocket_open(int delta); /* +1 opened, -1 closed */

/* The text exposition of the current values into buf (for the scrape process and tests). Returns
 * its length (truncated to cap). */
size_t metrics_render(char *buf, size_t cap);

#endif
