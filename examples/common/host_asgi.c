/* The lifespan calls of host_asgi.h. */
#include "host_asgi.h"
#include "host_log.h"

#include "host_app.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

/* The watchdog of a lifespan startup: exits the process if the startup has not returned by the
 * deadline. Hypercorn's startup_timeout does the same (60 s by default); uvicorn waits forever. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    unsigned timeout_s;
} wd = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += wd.timeout_s;
    pthread_mutex_lock(&wd.mu);
    int r = 0;
    while (!wd.done && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&wd.cv, &wd.mu, &deadline);
    if (!wd.done) {
        host_log(WSGI_LOG_ERROR,
                 "worker %d: ASGI lifespan startup did not complete within %u s "
                 "(--lifespan-timeout): exiting",
                 (int)getpid(), wd.timeout_s);
        _exit(HOST_EXIT_BOOT_FAILED);
    }
    pthread_mutex_unlock(&wd.mu);
    return NULL;
}

int host_asgi_startup(wsgi_app *app, unsigned timeout_s)
{
    pthread_t t;
    int watched = 0;
    if (timeout_s) {
        wd.done = 0;
        wd.timeout_s = timeout_s;
        watched = pthread_create(&t, NULL, watchdog, NULL) == 0;
        if (!watched)
            host_log(WSGI_LOG_WARNING, "cannot start the lifespan watchdog: no startup timeout");
    }
    int rc = asgi_lifespan_startup(app);
    if (watched) {
        pthread_mutex_lock(&wd.mu);
        wd.done = 1;
        pthread_cond_signal(&wd.cv);
        pthread_mutex_unlock(&wd.mu);
        pthread_join(t, NULL);
    }
    if (rc == WSGI_OK) {
        host_log(WSGI_LOG_DEBUG, "worker %d: ASGI lifespan startup complete", (int)getpid());
        return 0;
    }
    if (rc == ASGI_LIFESPAN_UNSUPPORTED) {
        host_log(WSGI_LOG_INFO, "worker %d: the app does not support the ASGI lifespan protocol",
                 (int)getpid());
        return 0;
    }
    host_log(WSGI_LOG_ERROR, "worker %d: ASGI lifespan startup failed: %s: %s", (int)getpid(),
             wsgi_strerror(rc), wsgi_errmsg());
    return -1;
}

void host_asgi_shutdown(wsgi_app *app)
{
    int rc = asgi_lifespan_shutdown(app);
    if (rc == WSGI_OK)
        host_log(WSGI_LOG_DEBUG, "worker %d: ASGI lifespan shutdown complete", (int)getpid());
    else
        host_log(WSGI_LOG_ERROR, "worker %d: ASGI lifespan shutdown failed: %s: %s", (int)getpid(),
                 wsgi_strerror(rc), wsgi_errmsg());
}
