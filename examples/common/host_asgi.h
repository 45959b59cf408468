/* The ASGI lifespan protocol around one host process's serving (in a prefork server: in each
 * worker), with the logging every host wants. All on the thread that will drive the app's loop. */
#ifndef WSGI_HOST_ASGI_H
#define WSGI_HOST_ASGI_H

#include <libwsgi/libwsgi.h>

/* lifespan.startup before serving. 0 when the app completed it or does not speak lifespan (logged
 * at info, like uvicorn's --lifespan auto); -1 when it failed (its message logged): the process
 * must not serve (exit with HOST_EXIT_BOOT_FAILED). A startup still running after timeout_s seconds
 * (0: no limit) is a failed boot too: logged, and the process exits with HOST_EXIT_BOOT_FAILED
 * at once (from a watchdog thread: the app's loop is stuck in it and cannot be interrupted). */
int host_asgi_startup(wsgi_app *app, unsigned timeout_s);

/* lifespan.shutdown after the last request; a failure is logged. */
void host_asgi_shutdown(wsgi_app *app);

#endif
