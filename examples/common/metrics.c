/* The shared counters of metrics.h and the scrape process that serves them. Each worker process
 * claims a slot of its own and only adds to it (relaxed atomics: a scrape needs no consistency
 * between counters beyond each one's own value); the scrape process sums the slots. The region
 * is a shared memory file (memfd) mapped before any fork, so the master, every worker (restarted,
 * replacing or added ones too) and the scrape process see the same pages; its descriptor also
 * lets a one-process server that executes itself again on SIGHUP (reexec.c) map the same
 * counters and keep its scrape process (the new image takes over its own pid's slot).
 *
 * A slot belongs to a process, not to a worker index: a replacement runs beside the worker it
 * replaces, SIGTTIN adds workers beyond --workers. The counters of a process that is gone stay
 * in the sums (its slot is taken again by a later process, which adds to them); its gauges do not
 * (a process killed in the middle of requests never counts them out): the scrape sums the gauges
 * of live owners only. */
#include "metrics.h"
#include "host_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <time.h>
#include <poll.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* Latency buckets (seconds), Prometheus' defaults; the last one is +Inf. */
static const double bucket_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define N_BUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]) + 1)
static const char *const outcome_names[] = {"ok", "app_exception", "invalid_response",
                                            "client_gone", "internal"};
#define N_OUTCOMES 5
static const char *const reason_names[] = {"exited", "killed", "max_requests", "timeout",
                                           "memory", "reload", "other"};
#define N_REASONS 7

typedef struct slot {
    _Atomic int32_t owner;        /* the pid counting here (0: never taken) */
    _Atomic uint32_t index;       /* its worker index (libwsgi_workers counts distinct live ones) */
    _Atomic uint64_t by_class[6]; /* no status, 1xx .. 5xx */
    _Atomic uint64_t rejected[6]; /* answered by the server itself, same classes */
    _Atomic uint64_t outcomes[N_OUTCOMES];
    _Atomic uint64_t buckets[N_BUCKETS]; /* not cumulative: summed at render */
    _Atomic uint64_t latency_us_sum;
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic int64_t in_flight, conns, websockets;
} slot;

typedef struct region {
    unsigned cap;             /* slots mapped */
    _Atomic unsigned n_slots; /* slots ever taken: [0, n_slots) */
    _Atomic uint64_t restarts[N_REASONS];
    slot slots[];
} region;

static region *reg;
static slot *mine;
static int region_fd = -1;
static pid_t scraper = -1;

int metrics_enabled(void)
{
    return reg != NULL;
}

static int parse_hostport(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1]) return -1;
    char host[256];
    size_t hl = (size_t)(colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= sizeof(host)) return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai) return -1;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

/* The scrape process's clients: a request is read by poll() beside the others, so a slow or
 * silent client cannot hold the scrapes behind it up; each has SCRAPE_MS from its accept to send
 * its request, then is answered (or dropped). */
#define SCRAPE_CLIENTS 16
#define SCRAPE_MS      5000

typedef struct scrape_client {
    int fd;
    int64_t deadline_ms;
    size_t n;
    char req[4096];
} scrape_client;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Answer @req (the request head read so far) and close. The answer is small: written with a
 * send timeout, so a client that does not read is dropped after a few seconds. */
static void answer(int fd, const char *req)
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static char body[1 << 16];
    size_t blen = 0;
    int ok = strncmp(req, "GET /metrics", 12) == 0 || strncmp(req, "GET / ", 6) == 0 ||
             strncmp(req, "HEAD /metrics", 13) == 0;
    if (ok) blen = metrics_render(body, sizeof(body));
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      ok ? "200 OK" : "404 Not Found", blen);
    if (write(fd, head, (size_t)hn) == hn && strncmp(req, "HEAD", 4) != 0) {
        size_t off = 0;
        while (off < blen) {
            ssize_t w = write(fd, body + off, blen - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void scrape_loop(int lfd)
{
    static scrape_client cl[SCRAPE_CLIENTS];
    size_t n = 0;
    for (;;) {
        struct pollfd pfd[SCRAPE_CLIENTS + 1];
        int64_t now = mono_ms(), wait = -1;
        for (size_t k = 0; k < n; k++) {
            pfd[k] = (struct pollfd){.fd = cl[k].fd, .events = POLLIN};
            int64_t left = cl[k].deadline_ms - now;
            if (wait < 0 || left < wait) wait = left < 0 ? 0 : left;
        }
        /* At the limit of clients, new ones wait in the listen queue. */
        pfd[n] = (struct pollfd){.fd = n < SCRAPE_CLIENTS ? lfd : -1, .events = POLLIN};
        if (poll(pfd, n + 1, (int)wait) < 0 && errno != EINTR) _exit(1);
        now = mono_ms();
        for (size_t k = 0; k < n;) {
            scrape_client *c = &cl[k];
            int done = 0;
            if (pfd[k].revents) {
                ssize_t r = read(c->fd, c->req + c->n, sizeof(c->req) - 1 - c->n);
                if (r > 0) {
                    c->n += (size_t)r;
                    c->req[c->n] = '\0';
                    done = strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n") ||
                           c->n == sizeof(c->req) - 1;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    done = 1; /* answered with what came: a 404 unless it was a scrape */
                }
            }
            if (!done && now >= c->deadline_ms) done = 1;
            if (done) {
                c->req[c->n] = '\0';
                answer(c->fd, c->req);
                cl[k] = cl[--n];
                pfd[k] = pfd[n]; /* the moved client's events are looked at in its new place */
                continue;
            }
            k++;
        }
        if (n < SCRAPE_CLIENTS) { /* non-blocking: EAGAIN when nobody waits */
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0) {
                cl[n].fd = c;
                cl[n].n = 0;
                cl[n].req[0] = '\0';
                cl[n].deadline_ms = now + SCRAPE_MS;
                n++;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                       errno != ECONNABORTED) {
                _exit(1);
            }
        }
    }
}

int metrics_setup(const char *bind_spec, unsigned n_workers)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_hostport(bind_spec, &ss, &sl) != 0) {
        fprintf(stderr, "error: --metrics-bind: expected HOST:PORT, got '%s'\n", bind_spec);
        return -1;
    }
    /* Room for every worker twice (each beside its replacement), and for workers SIGTTIN adds;
     * slots of processes that are gone are taken again. */
    unsigned cap = 2 * n_workers + 64;
    if (reg) return 0; /* adopted from the image this process was executed by (metrics_adopt) */
    size_t size = sizeof(region) + cap * sizeof(slot);
    int mfd = memfd_create("libwsgi-metrics", MFD_CLOEXEC);
    void *p = MAP_FAILED;
    if (mfd >= 0 && ftruncate(mfd, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "error: --metrics-bind: shared memory: %s\n", strerror(errno));
        if (mfd >= 0) close(mfd);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 64) != 0) {
        fprintf(stderr, "error: --metrics-bind %s: %s\n", bind_spec, strerror(errno));
        if (fd >= 0) close(fd);
        munmap(p, size);
        close(mfd);
        return -1;
    }
    reg = p;
    reg->cap = cap;
    region_fd = mfd;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "error: --metrics-bind: fork: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        /* The scrape process: it dies with the master. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(0);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGUSR1, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) _exit(1);
        scrape_loop(fd);
    }
    close(fd);
    scraper = pid;
    host_log(WSGI_LOG_INFO, "metrics on http://%s/metrics (pid %d)", bind_spec, (int)pid);
    return 0;
}

int metrics_region_fd(void)
{
    return region_fd;
}

int metrics_scraper_pid(void)
{
    return (int)scraper;
}

int metrics_adopt(int fd, int scraper_pid)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(region)) return -1;
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -1;
    region *r = p;
    if (sizeof(region) + (size_t)r->cap * sizeof(slot) > (size_t)st.st_size) {
        munmap(p, (size_t)st.st_size);
        return -1;
    }
    reg = r;
    region_fd = fd;
    scraper = scraper_pid > 0 ? (pid_t)scraper_pid : -1;
    return 0;
}

void metrics_shutdown(void)
{
    if (scraper > 0) {
        kill(scraper, SIGTERM);
        waitpid(scraper, NULL, 0);
        scraper = -1;
    }
}

/* Whether process pid exists (a zombie too: its master has not reaped it yet). */
static int alive(int32_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

void metrics_worker_attach(unsigned index)
{
    if (!reg) return;
    int32_t me = (int32_t)getpid();
    slot *s = NULL;
    /* The slot of an earlier image of this process (a one-process reload executes itself
     * again: reexec.c), or one whose owner is gone (its counters stay; its gauges start again
     * from 0)... */
    unsigned n = atomic_load(&reg->n_slots);
    for (unsigned k = 0; k < n && k < reg->cap && !s; k++)
        if (atomic_load(&reg->slots[k].owner) == me) s = &reg->slots[k];
    for (unsigned k = 0; k < n && k < reg->cap && !s; k++) {
        int32_t o = atomic_load(&reg->slots[k].owner);
        /* (0: being taken by the process that counted it in n_slots) */
        if (o != 0 && o != me && !alive(o) &&
            atomic_compare_exchange_strong(&reg->slots[k].owner, &o, me))
            s = &reg->slots[k];
    }
    /* ... or a new one. */
    if (!s) {
        unsigned k = atomic_fetch_add(&reg->n_slots, 1);
        if (k >= reg->cap) {
            atomic_fetch_sub(&reg->n_slots, 1);
            host_log(WSGI_LOG_ERROR, "metrics: no slot left for worker %u: not counted", index);
            return;
        }
        s = &reg->slots[k];
        atomic_store(&s->owner, me);
    }
    atomic_store(&s->in_flight, 0);
    atomic_store(&s->conns, 0);
    atomic_store(&s->websockets, 0);
    atomic_store(&s->index, index);
    mine = s;
}

void metrics_worker_restart(unsigned index, const char *reason)
{
    (void)index; /* its gauges leave the sums with it (metrics_render) */
    metrics_worker_replaced(reason);
}

void metrics_worker_replaced(const char *reason)
{
    if (!reg) return;
    size_t r = N_REASONS - 1;
    for (size_t k = 0; k + 1 < N_REASONS; k++)
        if (reason && strcmp(reason, reason_names[k]) == 0) r = k;
    atomic_fetch_add_explicit(&reg->restarts[r], 1, memory_order_relaxed);
}

void metrics_request_begin(void)
{
    if (mine) atomic_fetch_add_explicit(&mine->in_flight, 1, memory_order_relaxed);
}

void metrics_request_refused(void)
{
    if (mine) atomic_fetch_sub_explicit(&mine->in_flight, 1, memory_order_relaxed);
}

void metrics_request_done(int status, int outcome, int64_t latency_ns, uint64_t bytes_in,
                          uint64_t bytes_out)
{
    slot *s = mine;
    if (!s) return;
    atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    atomic_fetch_add_explicit(&s->by_class[cls], 1, memory_order_relaxed);
    if (outcome < 0 || outcome >= N_OUTCOMES) outcome = N_OUTCOMES - 1;
    atomic_fetch_add_explicit(&s->outcomes[outcome], 1, memory_order_relaxed);
    double secs = latency_ns > 0 ? (double)latency_ns / 1e9 : 0;
    size_t b = 0;
    while (b < N_BUCKETS - 1 && secs > bucket_le[b])
        b++;
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->latency_us_sum,
                              (uint64_t)(latency_ns > 0 ? latency_ns / 1000 : 0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes_in, bytes_in, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->bytes_out, bytes_out, memory_order_relaxed);
}

void metrics_request_rejected(int status)
{
    int cls = status >= 100 && status < 600 ? status / 100 : 0;
    if (mine) atomic_fetch_add_explicit(&mine->rejected[cls], 1, memory_order_relaxed);
}

void metrics_conn_open(int delta)
{
    if (mine) atomic_fetch_add_explicit(&mine->conns, delta, memory_order_relaxed);
}

void metrics_websocket_open(int delta)
{
    if (mine) atomic_fetch_add_explicit(&mine->websockets, delta, memory_order_relaxed);
}

/* A counter summed over every slot taken; a gauge over those of live processes (live[]). */
#define SUM(field)                                                                                 \
    ({                                                                                             \
        uint64_t t_ = 0;                                                                           \
        for (unsigned w_ = 0; w_ < n; w_++)                                                        \
            t_ += (uint64_t)atomic_load_explicit(&reg->slots[w_].field, memory_order_relaxed);     \
        t_;                                                                                        \
    })
#define SUM_LIVE(field)                                                                            \
    ({                                                                                             \
        int64_t t_ = 0;                                                                            \
        for (unsigned w_ = 0; w_ < n; w_++)                                                        \
            if (live[w_]) t_ += atomic_load_explicit(&reg->slots[w_].field, memory_order_relaxed); \
        t_;                                                                                        \
    })

size_t metrics_render(char *buf, size_t cap)
{
    size_t o = 0;
#define OUT(...)                                                                                   \
    do {                                                                                           \
        int k_ = snprintf(buf + o, o < cap ? cap - o : 0, __VA_ARGS__);                            \
        if (k_ > 0) o += (size_t)k_;                                                               \
    } while (0)
    if (!reg) return 0;
    unsigned n = atomic_load(&reg->n_slots);
    if (n > reg->cap) n = reg->cap;
    char *live = calloc(n ? n : 1, 1);
    if (!live) return 0;
    unsigned workers = 0;
    for (unsigned k = 0; k < n; k++) {
        live[k] = (char)alive(atomic_load(&reg->slots[k].owner));
        if (!live[k]) continue;
        /* A worker and its replacement share an index: one worker. */
        unsigned idx = atomic_load(&reg->slots[k].index), j = 0;
        while (j < k && !(live[j] && atomic_load(&reg->slots[j].index) == idx))
            j++;
        workers += j == k;
    }
    static const char *const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    OUT("# HELP libwsgi_requests_total Requests the app served, by status class.\n"
        "# TYPE libwsgi_requests_total counter\n");
    for (int c = 0; c < 6; c++)
        OUT("libwsgi_requests_total{status=\"%s\"} %llu\n", classes[c],
            (unsigned long long)SUM(by_class[c]));
    OUT("# HELP libwsgi_rejected_requests_total Requests the server answered itself with an "
        "error, without the app (malformed or oversized heads and bodies, timeouts, "
        "--limit-concurrency), by status class.\n"
        "# TYPE libwsgi_rejected_requests_total counter\n");
    for (int c = 4; c < 6; c++)
        OUT("libwsgi_rejected_requests_total{status=\"%s\"} %llu\n", classes[c],
            (unsigned long long)SUM(rejected[c]));
    OUT("# HELP libwsgi_request_outcomes_total How requests ended (wsgi_outcome_class).\n"
        "# TYPE libwsgi_request_outcomes_total counter\n");
    for (int c = 0; c < N_OUTCOMES; c++)
        OUT("libwsgi_request_outcomes_total{outcome=\"%s\"} %llu\n", outcome_names[c],
            (unsigned long long)SUM(outcomes[c]));
    OUT("# HELP libwsgi_app_exceptions_total Requests that ended with an exception of the app.\n"
        "# TYPE libwsgi_app_exceptions_total counter\n"
        "libwsgi_app_exceptions_total %llu\n",
        (unsigned long long)SUM(outcomes[1]));
    OUT("# HELP libwsgi_request_duration_seconds Queueing + app time of a request.\n"
        "# TYPE libwsgi_request_duration_seconds histogram\n");
    uint64_t cum = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        cum += SUM(buckets[b]);
        if (b < N_BUCKETS - 1)
            OUT("libwsgi_request_duration_seconds_bucket{le=\"%g\"} %llu\n", bucket_le[b],
                (unsigned long long)cum);
        else
            OUT("libwsgi_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)cum);
    }
    OUT("libwsgi_request_duration_seconds_sum %.6f\n", (double)SUM(latency_us_sum) / 1e6);
    OUT("libwsgi_request_duration_seconds_count %llu\n", (unsigned long long)cum);
    OUT("# HELP libwsgi_requests_in_flight Requests the app is serving now.\n"
        "# TYPE libwsgi_requests_in_flight gauge\n"
        "libwsgi_requests_in_flight %lld\n",
        (long long)SUM_LIVE(in_flight));
    OUT("# HELP libwsgi_connections_open Client connections open now.\n"
        "# TYPE libwsgi_connections_open gauge\n"
        "libwsgi_connections_open %lld\n",
        (long long)SUM_LIVE(conns));
    OUT("# HELP libwsgi_websockets_open WebSockets open now.\n"
        "# TYPE libwsgi_websockets_open gauge\n"
        "libwsgi_websockets_open %lld\n",
        (long long)SUM_LIVE(websockets));
    OUT("# HELP libwsgi_request_body_bytes_total Request body bytes given to the app.\n"
        "# TYPE libwsgi_request_body_bytes_total counter\n"
        "libwsgi_request_body_bytes_total %llu\n",
        (unsigned long long)SUM(bytes_in));
    OUT("# HELP libwsgi_response_body_bytes_total Response body bytes the app produced.\n"
        "# TYPE libwsgi_response_body_bytes_total counter\n"
        "libwsgi_response_body_bytes_total %llu\n",
        (unsigned long long)SUM(bytes_out));
    OUT("# HELP libwsgi_worker_restarts_total Workers replaced, by reason.\n"
        "# TYPE libwsgi_worker_restarts_total counter\n");
    for (int r = 0; r < N_REASONS; r++)
        OUT("libwsgi_worker_restarts_total{reason=\"%s\"} %llu\n", reason_names[r],
            (unsigned long long)atomic_load(&reg->restarts[r]));
    OUT("# HELP libwsgi_workers Workers running.\n# TYPE libwsgi_workers gauge\n"
        "libwsgi_workers %u\n",
        workers);
#undef OUT
    free(live);
    return o < cap ? o : cap;
}
