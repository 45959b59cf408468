/* The request observer (observer.h): wsgi_runtime_set_observer(), and the helpers response.c,
 * asgi_conn.c and asgi_ws.c use to time a request and report its outcome, its WebSocket opened
 * and closed. Nothing here runs unless the host set an observer. */
#include "internal.h"

#include <string.h>
#include <time.h>

LIBWSGI_API int wsgi_runtime_set_observer(wsgi_runtime *rt, const wsgi_observer *obs,
                                          void *observer_data)
{
    lw_clear_error();
    if (!rt) return lw_fail(WSGI_ERR_INVAL, "runtime is NULL");
    if (!obs) {
        memset(&rt->obs, 0, sizeof rt->obs);
        rt->obs_data = NULL;
        rt->observing = 0;
        return 0;
    }
    if (obs->struct_size < offsetof(wsgi_observer, on_request_done) + sizeof(void *))
        return lw_fail(WSGI_ERR_INVAL, "wsgi_observer.struct_size %zu is too small",
                       obs->struct_size);
    wsgi_observer c = {0};
    memcpy(&c, obs, obs->struct_size < sizeof c ? obs->struct_size : sizeof c);
    c.struct_size = sizeof c;
    rt->obs = c;
    rt->obs_data = observer_data;
    rt->observing = c.on_request_done || c.on_websocket_open || c.on_websocket_close;
    return 0;
}

int64_t lw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lw_request_arrival(const wsgi_request *req)
{
    return req->struct_size >= offsetof(wsgi_request, arrival_ns) + sizeof(int64_t)
               ? req->arrival_ns
               : 0;
}

void lw_obs_begin(lw_obs_times *t, const wsgi_request *req_or_null, int64_t arrival_ns)
{
    t->start_ns = lw_now_ns();
    if (req_or_null) arrival_ns = lw_request_arrival(req_or_null);
    t->queue_ns = arrival_ns > 0 && arrival_ns <= t->start_ns ? t->start_ns - arrival_ns
                  : arrival_ns > 0                            ? 0
                                                              : -1;
}

wsgi_outcome_class lw_outcome_class(int error, int exception, int complete)
{
    switch (error) {
    case 0: return complete ? WSGI_OUTCOME_OK : WSGI_OUTCOME_CLIENT_GONE;
    case WSGI_ERR_APP:
        return exception ? WSGI_OUTCOME_APP_EXCEPTION : WSGI_OUTCOME_INVALID_RESPONSE;
    case WSGI_ERR_NO_START_RESPONSE:
    case WSGI_ERR_BAD_STATUS:
    case WSGI_ERR_BAD_HEADER:
    case WSGI_ERR_BAD_ITERABLE:
    case WSGI_ERR_BAD_CHUNK: return WSGI_OUTCOME_INVALID_RESPONSE;
    case WSGI_ERR_CALLBACK: return WSGI_OUTCOME_CLIENT_GONE;
    default: return WSGI_OUTCOME_INTERNAL;
    }
}

void lw_obs_report(const wsgi_runtime *rt, wsgi_request_outcome *o, const lw_obs_times *t)
{
    if (!rt->obs.on_request_done) return;
    o->struct_size = sizeof *o;
    o->queue_ns = t->queue_ns;
    o->app_ns = lw_now_ns() - t->start_ns;
    if (!o->errmsg) o->errmsg = "";
    rt->obs.on_request_done(rt->obs_data, o);
}
