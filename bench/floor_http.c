/* The floor for a keep-alive HTTP/1.1 "hello world" on this machine: a single-threaded epoll
 * server in C that answers every request head with the same fixed response (the headers
 * libwsgi-epoll sends for bench/apps' hello app: Date, Server, Content-Type, Content-Length, and
 * the 14-byte body), without parsing more than finding each head's end and without Python. What
 * it costs per request is what the kernel's TCP and epoll cost, so a Python server's requests per
 * CPU-second can be at most this; bench/peers.py prints it as the "floor" row of the hello
 * workloads. Not a server: no request validation, no bodies, GET only.
 *
 *   floor_http PORT      (listens on 127.0.0.1:PORT until SIGTERM/SIGINT)
 */
#define _GNU_SOURCE /* accept4, memmem */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct client {
    int fd;
    size_t len;
    char buf[8192];
} client;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static char resp[256];
static size_t resp_len;
static time_t resp_time;

/* The response, with a Date refreshed once a second (as libwsgi-epoll does). */
static void make_response(void)
{
    time_t now = time(NULL);
    if (resp_len && now == resp_time) return;
    resp_time = now;
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    resp_len = (size_t)snprintf(resp, sizeof resp,
                                "HTTP/1.1 200 OK\r\nDate: %s\r\nServer: floor_http\r\n"
                                "Content-Type: text/plain\r\nContent-Length: 14\r\n\r\n"
                                "Hello, World!\n",
                                date);
}

/* Answer every complete head in the buffer with one send. 0, or -1 to close. */
static int serve(client *c)
{
    size_t pos = 0, n = 0;
    for (;;) {
        char *end = memmem(c->buf + pos, c->len - pos, "\r\n\r\n", 4);
        if (!end) break;
        pos = (size_t)(end - c->buf) + 4;
        n++;
    }
    if (!n) return c->len == sizeof c->buf ? -1 : 0;
    memmove(c->buf, c->buf + pos, c->len - pos);
    c->len -= pos;
    make_response();
    char out[sizeof resp * 16];
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        if (o + resp_len > sizeof out) {
            if (send(c->fd, out, o, MSG_NOSIGNAL) != (ssize_t)o) return -1;
            o = 0;
        }
        memcpy(out + o, resp, resp_len);
        o += resp_len;
    }
    /* A small response to a client that reads: the socket takes it whole. */
    return send(c->fd, out, o, MSG_NOSIGNAL) == (ssize_t)o ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: floor_http PORT\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(argv[1])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int k = 0; k < n; k++) {
            client *c = evs[k].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    client *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0 || (c->len += (size_t)r, serve(c) < 0)) {
                close(c->fd);
                free(c);
            }
        }
    }
    return 0;
}
