/* A WebSocket echo load client: N connections on one epoll thread, each in a closed loop (send one
 * masked text message of SIZE bytes, wait for its echo, send the next). Counts echoes for DURATION
 * seconds after a warm-up and prints messages/s and the p50/p99 round-trip latency.
 * A benchmark, not a test (bench/ws_echo_vs_uvicorn.sh runs it against two servers).
 *
 * Usage: ws_echo_load [-c CONNECTIONS] [-d SECONDS] [-w WARMUP_SECONDS] [-s SIZE] [-p PATH] HOST PORT
 *        (defaults: 64 connections, 10 s, 2 s warm-up, 64 bytes, path /)
 *
 * The handshake offers no extension (so no permessage-deflate on either server) and does not check
 * Sec-WebSocket-Accept beyond the 101 status: no libcrypto. Each connection masks its payload once
 * with its own key and resends the same frame: the server still unmasks every byte. Server pings
 * are answered; a Close or a protocol surprise counts as an error and ends that connection.
 * Output: a human line and a machine one ("RESULT msgs_per_s=... p50_us=... p99_us=... ...").
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum state { HANDSHAKE, OPEN, DEAD };

typedef struct conn {
    int fd;
    enum state state;
    unsigned char *frame; /* the masked message, prebuilt */
    size_t frame_len;
    size_t sent;          /* bytes of the current outgoing data already written */
    unsigned char *out;   /* pending control frames (pongs) go before the next message */
    size_t out_len, out_cap;
    unsigned char *in;    /* received bytes not parsed yet: in[0..in_len) */
    size_t in_len, in_cap;
    uint64_t t_sent;      /* when the current message went out (ns) */
    int waiting;          /* a message is out, its echo not back yet */
    int want_out;         /* EPOLLOUT armed */
} conn;

static size_t msg_size = 64;
static const char *path = "/";
static long n_errors;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("malloc");
    return p;
}

/* latencies in microseconds, kept only during the measurement */
static uint32_t *lat;
static size_t lat_len, lat_cap;
static int measuring;
static long n_msgs;

static void record(uint64_t ns)
{
    if (!measuring) return;
    n_msgs++;
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) die("realloc");
    }
    uint64_t us = ns / 1000;
    lat[lat_len++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static size_t frame_header(unsigned char *h, int opcode, size_t len, const unsigned char mask[4])
{
    size_t n = 0;
    h[n++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[n++] = (unsigned char)(0x80 | len);
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    memcpy(h + n, mask, 4);
    return n + 4;
}

static void build_message(conn *c)
{
    unsigned char mask[4];
    for (int i = 0; i < 4; i++) mask[i] = (unsigned char)(rand() & 0xff);
    c->frame = xmalloc(14 + msg_size);
    size_t h = frame_header(c->frame, 0x1, msg_size, mask);
    for (size_t i = 0; i < msg_size; i++) c->frame[h + i] = (unsigned char)('a' + i % 26) ^ mask[i & 3];
    c->frame_len = h + msg_size;
}

static void queue_pong(conn *c, const unsigned char *payload, size_t len)
{
    unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    if (c->out_len + 14 + len > c->out_cap) {
        c->out_cap = (c->out_len + 14 + len) * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die("realloc");
    }
    size_t h = frame_header(c->out + c->out_len, 0xA, len, mask);
    for (size_t i = 0; i < len; i++) c->out[c->out_len + h + i] = payload[i] ^ mask[i & 3];
    c->out_len += h + len;
}

static void kill_conn(int ep, conn *c, const char *why)
{
    if (c->state == DEAD) return;
    if (why) {
        n_errors++;
        if (n_errors <= 5) fprintf(stderr, "ws_echo_load: connection %d: %s\n", c->fd, why);
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
}

static void set_out(int ep, conn *c, int on)
{
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Write pending pongs, then the rest of the current message. */
static void flush(int ep, conn *c)
{
    while (c->out_len) {
        ssize_t k = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN) {
                set_out(ep, c, 1);
                return;
            }
            kill_conn(ep, c, "send failed");
            return;
        }
        memmove(c->out, c->out + k, c->out_len - (size_t)k);
        c->out_len -= (size_t)k;
    }
    while (c->waiting && c->sent < c->frame_len) {
        ssize_t k = send(c->fd, c->frame + c->sent, c->frame_len - c->sent, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN) {
                set_out(ep, c, 1);
                return;
            }
            kill_conn(ep, c, "send failed");
            return;
        }
        c->sent += (size_t)k;
    }
    set_out(ep, c, 0);
}

static void send_next(int ep, conn *c)
{
    c->waiting = 1;
    c->sent = 0;
    c->t_sent = now_ns();
    flush(ep, c);
}

static void handshake_request(conn *c)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path);
    c->out_len = 0;
    if (c->out_cap < (size_t)n) {
        c->out_cap = (size_t)n;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die("realloc");
    }
    memcpy(c->out, req, (size_t)n);
    c->out_len = (size_t)n;
}

/* Parse what arrived: the 101, then frames. */
static void parse(int ep, conn *c)
{
    size_t pos = 0;
    if (c->state == HANDSHAKE) {
        unsigned char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return;
        if (c->in_len < 12 || memcmp(c->in + 9, "101", 3) != 0) {
            kill_conn(ep, c, "handshake refused");
            return;
        }
        pos = (size_t)(end - c->in) + 4;
        c->state = OPEN;
        send_next(ep, c);
        if (c->state == DEAD) return;
    }
    for (;;) {
        size_t avail = c->in_len - pos;
        if (avail < 2) break;
        unsigned char *p = c->in + pos;
        int opcode = p[0] & 0x0f;
        if (!(p[0] & 0x80) || (p[1] & 0x80)) {
            kill_conn(ep, c, "fragmented or masked frame from the server");
            return;
        }
        uint64_t len = p[1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
            h = 10;
        }
        if (avail < h + len) break;
        if (opcode == 0x1 || opcode == 0x2) {
            if (!c->waiting || len != msg_size) {
                kill_conn(ep, c, "unexpected message");
                return;
            }
            c->waiting = 0;
            record(now_ns() - c->t_sent);
            send_next(ep, c);
            if (c->state == DEAD) return;
        } else if (opcode == 0x9) {
            queue_pong(c, p + h, (size_t)len);
            flush(ep, c);
            if (c->state == DEAD) return;
        } else if (opcode == 0x8) {
            kill_conn(ep, c, "the server closed");
            return;
        }
        pos += h + (size_t)len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void on_readable(int ep, conn *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_cap * 2 + 65536;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) die("realloc");
        }
        ssize_t k = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (k < 0) {
            if (errno == EAGAIN) break;
            kill_conn(ep, c, "recv failed");
            return;
        }
        if (k == 0) {
            kill_conn(ep, c, "the server closed the connection");
            return;
        }
        c->in_len += (size_t)k;
        if ((size_t)k < 65536) break;
    }
    parse(ep, c);
}

static void usage(void)
{
    fprintf(stderr, "usage: ws_echo_load [-c CONNECTIONS] [-d SECONDS] [-w WARMUP] [-s SIZE] [-p PATH] HOST PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int n_conns = 64, opt;
    double duration = 10, warmup = 2;
    while ((opt = getopt(argc, argv, "c:d:w:s:p:")) != -1) {
        switch (opt) {
        case 'c': n_conns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 's': msg_size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'p': path = optarg; break;
        default: usage();
        }
    }
    if (argc - optind != 2 || n_conns <= 0 || duration <= 0) usage();
    const char *host = argv[optind], *port = argv[optind + 1];

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n_conns + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n_conns + 64 ? rl.rlim_max : (rlim_t)n_conns + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "ws_echo_load: %s\n", gai_strerror(gai));
        return 2;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    srand((unsigned)now_ns());
    conn *conns = calloc((size_t)n_conns, sizeof *conns);
    if (!conns) die("calloc");
    for (int i = 0; i < n_conns; i++) {
        conn *c = &conns[i];
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0) die("socket");
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        build_message(c);
        handshake_request(c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        flush(ep, c);
    }
    freeaddrinfo(ai);

    uint64_t start = now_ns();
    uint64_t t_measure = start + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (!measuring && now >= t_measure) measuring = 1;
        if (now >= t_end) break;
        int n = epoll_wait(ep, evs, 256, 10);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state == DEAD) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(ep, c);
            if (c->state != DEAD && (evs[i].events & EPOLLOUT)) flush(ep, c);
        }
    }
    int alive = 0;
    for (int i = 0; i < n_conns; i++) alive += conns[i].state == OPEN;

    qsort(lat, lat_len, sizeof *lat, cmp_u32);
    uint32_t p50 = lat_len ? lat[lat_len / 2] : 0;
    uint32_t p99 = lat_len ? lat[(lat_len * 99) / 100] : 0;
    double rate = (double)n_msgs / duration;
    printf("%d connections, %zu-byte messages, %.0f s: %ld echoes, %.0f msg/s, p50 %u us, p99 %u us, "
           "%ld errors, %d connections open at the end\n",
           n_conns, msg_size, duration, n_msgs, rate, p50, p99, n_errors, alive);
    printf("RESULT msgs_per_s=%.0f p50_us=%u p99_us=%u messages=%ld errors=%ld open=%d\n", rate, p50,
           p99, n_msgs, n_errors, alive);
    return n_errors || alive != n_conns ? 1 : 0;
}
