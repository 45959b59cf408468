/* Runtime and app start-up shared by the hosts. The app's directory handling mirrors gunicorn:
 * --chdir first, then --pythonpath entries, then the (new) working directory on sys.path, so
 * "libwsgi-epoll --app hello:app" finds ./hello.py exactly like "gunicorn hello:app". */
#include "host_app.h"
#include "host_log.h"
#include "host_py.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int host_app_start(const host_options *o, const char *server_software, wsgi_runtime **rt,
                   wsgi_app **app)
{
    *rt = NULL;
    *app = NULL;
    if (o->chdir && chdir(o->chdir) != 0) {
        host_log(WSGI_LOG_ERROR, "cannot change directory to %s: %s", o->chdir, strerror(errno));
        return -1;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) {
        host_log(WSGI_LOG_ERROR, "getcwd: %s", strerror(errno));
        return -1;
    }
    const char *path[HOST_MAX_PYTHONPATH + 1];
    size_t n = 0;
    for (size_t k = 0; k < o->n_python_path; k++)
        path[n++] = o->python_path[k];
    path[n++] = cwd;

    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = path;
    ro.n_python_path = n;
    ro.log = host_log_cb;
    ro.log_user_data = NULL;
    ro.log_level = o->log_level;
    host_py_runtime_starts(); /* inside the Python executable: as a fresh interpreter would */
    int rc = wsgi_runtime_new(&ro, rt);
    if (rc != WSGI_OK) {
        host_log(WSGI_LOG_ERROR, "cannot start Python: %s: %s", wsgi_strerror(rc), wsgi_errmsg());
        host_py_runtime_stopped();
        return -1;
    }

    wsgi_app_options ao;
    wsgi_app_options_init(&ao);
    ao.spec = o->app_spec;
    ao.interface = o->interface;
    ao.flags = 0;
    if (o->threads > 1) ao.flags |= WSGI_APP_MULTITHREAD;
    if (o->workers > 1) ao.flags |= WSGI_APP_MULTIPROCESS;
    ao.server_software = server_software;
    ao.script_name = o->root_path; /* --root-path: SCRIPT_NAME, root_path */
    rc = wsgi_app_new(*rt, &ao, app);
    if (rc != WSGI_OK) {
        host_log(WSGI_LOG_ERROR, "cannot load app '%s': %s: %s", o->app_spec, wsgi_strerror(rc),
                 wsgi_errmsg());
        wsgi_runtime_free(*rt);
        host_py_runtime_stopped();
        *rt = NULL;
        return -1;
    }
    host_log(WSGI_LOG_DEBUG, "'%s' loaded as a%s app", o->app_spec,
             wsgi_app_interface(*app) == WSGI_INTERFACE_ASGI ? "n ASGI" : " WSGI");
    return 0;
}

void host_app_stop(wsgi_runtime *rt, wsgi_app *app)
{
    wsgi_app_free(app);
    wsgi_runtime_free(rt);
    /* Inside the Python executable libwsgi adopted the interpreter and leaves it running: end it
     * here, as the embedded runtime's free does (atexit handlers run now, not at exit). */
    host_py_runtime_stopped();
}
