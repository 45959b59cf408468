/* A fixed pool of threads running jobs in FIFO order. Jobs are intrusive (embedded in the caller's
 * object), so submitting never allocates and never fails. */
#ifndef WSGI_HOST_POOL_H
#define WSGI_HOST_POOL_H

typedef struct host_job host_job;
struct host_job {
    host_job *next;             /* owned by the pool while queued */
    void (*run)(host_job *job); /* called on a pool thread */
};

typedef struct host_pool host_pool;

/* Start n (> 0) threads, each with every signal blocked. 0, or -1 with errno set. */
int host_pool_new(unsigned n, host_pool **out);

/* Queue a job; any thread. */
void host_pool_submit(host_pool *p, host_job *job);

/* Let the threads finish the queued jobs, join them and free the pool. */
void host_pool_free(host_pool *p);

/* Number of jobs queued or running (a hint for logging and tests). */
unsigned host_pool_busy(host_pool *p);

#endif
