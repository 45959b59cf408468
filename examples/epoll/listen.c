/* Listening sockets (see listen.h). Why one shared accept queue by default rather than one
 * SO_REUSEPORT socket per worker: the kernel hashes a connection to a per-worker socket by its
 * addresses and ports, blind to how busy the worker is, so a worker held by slow requests keeps
 * getting new connections that wait behind them while another worker idles; with a shared
 * queue, EPOLLEXCLUSIVE wakes one of the workers waiting in epoll_wait, and a busy worker is not
 * waiting (bench/spread.py: p99 of fast requests several times lower, see bench/README.md). It
 * also keeps the queue when a worker exits (max-requests, reload). unix sockets have no
 * SO_REUSEPORT: they are always shared. */
#include "listen.h"
#include "host_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int listen_parse(const char *spec, listener *l)
{
    memset(l, 0, sizeof(*l));
    l->spec = spec;
    l->reserved_fd = -1;
    l->fd = -1;
    if (strncmp(spec, "unix:", 5) == 0) {
        const char *path = spec + 5;
        struct sockaddr_un *sun = (struct sockaddr_un *)&l->addr;
        if (!*path || strlen(path) >= sizeof(sun->sun_path)) {
            fprintf(stderr, "error: --bind %s: bad unix socket path\n", spec);
            return -1;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, path);
        l->addr_len = (socklen_t)sizeof(*sun);
        l->is_unix = 1;
        snprintf(l->host, sizeof(l->host), "localhost");
        return 0;
    }
    char host[64];
    const char *colon;
    const char *port_s;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof(host)) goto bad;
        memcpy(host, spec + 1, (size_t)(end - spec - 1));
        host[end - spec - 1] = '\0';
        port_s = end + 2;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof(host)) goto bad;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = '\0';
        port_s = colon + 1;
    }
    char *end;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535) goto bad;
    if (!*host || strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "%s", *host ? "127.0.0.1" : "0.0.0.0");
    struct sockaddr_in *sin = (struct sockaddr_in *)&l->addr;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->addr;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        l->addr_len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        l->addr_len = sizeof(*sin6);
    } else {
        fprintf(stderr, "error: --bind %s: '%s' is not a numeric IPv4/IPv6 address\n", spec, host);
        return -1;
    }
    snprintf(l->host, sizeof(l->host), "%s", host);
    l->port = (unsigned)port;
    return 0;
bad:
    fprintf(stderr, "error: --bind '%s': expected HOST:PORT, [IPV6]:PORT or unix:PATH\n", spec);
    return -1;
}

static int tcp_socket(const listener *l, int reuseport)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) goto fail;
    if (l->addr.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) != 0) goto fail;
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

int listen_inherit(int fd, const char *spec, listener *l)
{
    memset(l, 0, sizeof(*l));
    l->spec = spec;
    l->fd = -1;
    l->reserved_fd = -1;
    int acc = 0, type = 0;
    socklen_t len = sizeof(acc);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t){sizeof(type)}) != 0 ||
        type != SOCK_STREAM) {
        fprintf(stderr, "error: %s: fd %d is not a listening stream socket\n", spec, fd);
        return -1;
    }
    len = sizeof(l->addr);
    if (getsockname(fd, (struct sockaddr *)&l->addr, &len) != 0) {
        fprintf(stderr, "error: %s: getsockname: %s\n", spec, strerror(errno));
        return -1;
    }
    l->addr_len = len;
    if (l->addr.ss_family == AF_UNIX) {
        l->is_unix = 1;
        snprintf(l->host, sizeof(l->host), "localhost");
    } else if (l->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&l->addr;
        inet_ntop(AF_INET, &a->sin_addr, l->host, sizeof(l->host));
        l->port = ntohs(a->sin_port);
    } else if (l->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&l->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, l->host, sizeof(l->host));
        l->port = ntohs(a->sin6_port);
    } else {
        fprintf(stderr, "error: %s: fd %d: unsupported address family\n", spec, fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        fprintf(stderr, "error: %s: fcntl: %s\n", spec, strerror(errno));
        return -1;
    }
    l->reserved_fd = fd;
    l->inherited = 1;
    return 0;
}

void listen_name(const listener *l, int fd, char *buf, size_t cap)
{
    if (l->is_unix)
        snprintf(buf, cap, "unix:%s (fd %d)", ((const struct sockaddr_un *)&l->addr)->sun_path, fd);
    else
        snprintf(buf, cap, "%s%s%s:%u (fd %d)", strchr(l->host, ':') ? "[" : "", l->host,
                 strchr(l->host, ':') ? "]" : "", l->port, fd);
}

int listen_reserve(listener *l, int prefork, int reuse_port, int backlog)
{
    if (l->inherited) return 0;
    l->per_worker = prefork && reuse_port && !l->is_unix;
    if (l->is_unix) {
        const char *path = ((struct sockaddr_un *)&l->addr)->sun_path;
        struct stat st;
        /* A stale socket file from a previous run would make bind fail; anything else we leave. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
        /* Bound now, listening once a worker has its app (listen_open). */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (const struct sockaddr *)&l->addr, l->addr_len) != 0) {
            fprintf(stderr, "error: cannot listen on %s: %s\n", l->spec, strerror(errno));
            if (fd >= 0) close(fd);
            return -1;
        }
        l->reserved_fd = fd;
        return 0;
    }
    (void)backlog; /* a TCP socket listens once a worker is ready for it (listen_open) */
    int fd = tcp_socket(l, l->per_worker);
    if (fd < 0) {
        fprintf(stderr, "error: cannot bind %s: %s\n", l->spec, strerror(errno));
        return -1;
    }
    if (l->port == 0) {
        /* Port 0: every worker must use the port the master got. */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
            memcpy(&l->addr, &ss, len);
            l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    l->reserved_fd = fd;
    return 0;
}

int listen_open(listener *l, int prefork, int backlog)
{
    if (l->inherited) {
        l->fd = l->reserved_fd;
        l->shared = prefork;
        return 0;
    }
    if (!l->per_worker) {
        /* The master's socket (shared when prefork): the first worker with its app loaded makes
         * it listen (so a connection that is accepted always finds an app), the others' listen()
         * is a no-op. It keeps listening while workers come and go; the master closes it when it
         * stops. */
        if (listen(l->reserved_fd, backlog) != 0) {
            host_log(WSGI_LOG_ERROR, "cannot listen on %s: %s", l->spec, strerror(errno));
            return -1;
        }
        l->fd = l->reserved_fd;
        l->shared = prefork;
        return 0;
    }
    int fd = tcp_socket(l, 1);
    if (fd < 0 || listen(fd, backlog) != 0) {
        host_log(WSGI_LOG_ERROR, "cannot listen on %s: %s", l->spec, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    /* The master's socket stays bound in the master only. */
    close(l->reserved_fd);
    l->reserved_fd = -1;
    l->fd = fd;
    return 0;
}

void listen_close(listener *l, int unlink_path)
{
    if (l->fd >= 0) close(l->fd);
    if (l->reserved_fd >= 0 && l->reserved_fd != l->fd) close(l->reserved_fd);
    l->fd = l->reserved_fd = -1;
    if (unlink_path && l->is_unix && !l->inherited)
        unlink(((struct sockaddr_un *)&l->addr)->sun_path);
}
