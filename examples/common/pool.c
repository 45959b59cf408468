/* The thread pool of pool.h: one mutex, one condition variable, an intrusive FIFO. Contention on
 * the mutex is negligible next to a Python call, which is what every job does. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

struct host_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    host_job *head, *tail;
    unsigned busy;
    int stopping;
    unsigned n;
    pthread_t *threads;
};

static void *pool_main(void *arg)
{
    host_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        host_job *j = p->head;
        if (!j) break; /* stopping and nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->next = NULL;
        j->run(j);
        pthread_mutex_lock(&p->mu);
        p->busy--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int host_pool_new(unsigned n, host_pool **out)
{
    host_pool *p = calloc(1, sizeof(*p));
    if (!p) return -1;
    p->threads = calloc(n, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return -1;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    /* Threads inherit the creator's mask: block everything around creation so that signals are
     * delivered to the event loop thread only. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned k = 0; k < n; k++) {
        int e = pthread_create(&p->threads[k], NULL, pool_main, p);
        if (e != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            p->n = k;
            host_pool_free(p);
            errno = e;
            return -1;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->n = n;
    *out = p;
    return 0;
}

void host_pool_submit(host_pool *p, host_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->busy++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

unsigned host_pool_busy(host_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned b = p->busy;
    pthread_mutex_unlock(&p->mu);
    return b;
}

void host_pool_free(host_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned k = 0; k < p->n; k++)
        pthread_join(p->threads[k], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}
