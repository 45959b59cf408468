/* The lifespan calls of host_asgi.h. */
#include "host_asgi.h"
#include "host_log.h"

#include <unistd.h>

int host_asgi_startup(wsgi_app *app)
{
    int rc = asgi_lifespan_startup(app);
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
