/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to the unix socket
 * named by $NOTIFY_SOCKET ("/path" or "@abstract"). */
#ifndef WSGI_HOST_SD_NOTIFY_H
#define WSGI_HOST_SD_NOTIFY_H

/* Send state (e.g. "READY=1", "STOPPING=1") if $NOTIFY_SOCKET is set. 1 sent, 0 not asked for,
 * -1 failed (errno). Async-signal-unsafe: call it from the main loop. */
int sd_notify_send(const char *state);

/* "RELOADING=1" with MONOTONIC_USEC (Type=notify-reload wants both). */
int sd_notify_reloading(void);

#endif
