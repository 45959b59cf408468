/* Listening addresses: parsing "HOST:PORT" / "[V6]:PORT" / "unix:PATH", reserving them in the
 * master and opening the accepting sockets in each worker. Two models for prefork TCP: one
 * listening socket made in the master and shared by every worker (the default; each worker's
 * epoll waits on it with EPOLLEXCLUSIVE, so a connection goes to a worker that is waiting, i.e.
 * not busy), or with --reuse-port one SO_REUSEPORT socket per worker (the kernel hashes each new
 * connection to a worker, busy or not). bench/README.md has the measurements. */
#ifndef EPOLL_LISTEN_H
#define EPOLL_LISTEN_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct listener {
    const char *spec; /* as given on the command line */
    int is_unix;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char host[64];   /* SERVER_NAME: the bound address ("localhost" for unix) */
    unsigned port;   /* SERVER_PORT (0 for unix sockets: the library then uses 80) */
    int reserved_fd; /* bound in the master (TCP: not listening) */
    int fd;          /* the accepting socket of this process (non-blocking) */
    int shared;      /* fd is shared by several processes (unix socket in prefork) */
    int inherited;   /* an already listening socket given by the parent (--fd, lighttpd) */
    int per_worker;  /* --reuse-port: each worker binds its own SO_REUSEPORT socket */
} listener;

/* Parse spec into l (no socket yet). 0, or -1 with a message on stderr. */
int listen_parse(const char *spec, listener *l);

/* l describes the listening socket fd inherited from the parent (--fd N; lighttpd's bin-path
 * passes it on fd 0, which the caller has moved to fd first). Every worker accepts on it (shared,
 * EPOLLEXCLUSIVE); it is made non-blocking and close-on-exec, and its path is never unlinked (the
 * parent owns it). 0, or -1 with a message on stderr when fd is not a listening stream socket. */
int listen_inherit(int fd, const char *spec, listener *l);

/* Name an inherited socket by its address for the logs: "unix:PATH (fd N)", "HOST:PORT (fd N)".
 * l->spec is not changed: point it at buf. */
void listen_name(const listener *l, int fd, char *buf, size_t cap);

/* Master side, before any fork. TCP prefork with reuse_port: bind with SO_REUSEPORT, so that each
 * worker can bind its own socket to the same port; the master's socket never listens, it only
 * holds the port. Otherwise bind (TCP and unix); the first worker to have its app loaded makes it
 * listen (listen_open), so a connection is never accepted before an app can answer it. The workers
 * inherit the socket and share its accept queue, so a worker that exits leaves the connections
 * queued to the others. 0, or -1 with a message on stderr. */
int listen_reserve(listener *l, int prefork, int reuse_port, int backlog);

/* Worker side: make l->fd the socket to accept on. TCP prefork with --reuse-port: a new
 * SO_REUSEPORT socket; otherwise the reserved one (shared when prefork: EPOLLEXCLUSIVE).
 * 0, or -1 (logged). */
int listen_open(listener *l, int prefork, int backlog);

/* Close the sockets of this process (unix: the master also unlinks the path). */
void listen_close(listener *l, int unlink_path);

#endif
