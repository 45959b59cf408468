/* The shared counters of metrics.h and the scrape process that serves them. Workers only add to
 * their own slot (relaxed atomics: a scrape needs no consistency between counters beyond each
 * one's own value); the scrape process sums the slots. The region is a shared memory file
 * (memfd), mapped before any fork, so the master, every worker (restarted ones too) and the scrape
 * process see the same pages; its descriptor also lets a single-process server that re-executes
 * itself on SIGHUP (reexec.c) map the same counters again and keep its scrape process. */
#include "metrics.h"
#include "host_log.h"

#include <arpa/inet.h>
#include <errno.h>
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
    _Atomic uint64_t by_class[6]; /* no status, 1xx .. 5xx */
    _Atomic uint64_t rejected[6]; /* answered by the server itself, same classes */
    _Atomic uint64_t outcomes[N_OUTCOMES];
    _Atomic uint64_t buckets[N_BUCKETS]; /* not cumulative: summed at render */
    _Atomic uint64_t latency_us_sum;
    _Atomic uint64_t bytes_in, bytes_out;
    _Atomic int64_t in_flight, conns, websockets;
} slot;

typedef struct region {
    _Atomic unsigned n_slots; /* grows (SIGTTIN beyond the slots made so far), never shrinks */
    _Atomic unsigned workers; /* the libwsgi_workers gauge */
    _Atomic uint64_t restarts[N_REASONS];
    slot slots[];
} region;

static region *reg;
static unsigned mapped; /* slots this process has mapped (another may have grown the region) */
static slot *mine;
static pid_t scraper = -1;
static int region_fd = -1;

static size_t region_size(unsigned n)
{
    return sizeof(region) + (size_t)n * sizeof(slot);
}

/* Map the slots another process added (the scrape process, after the master grew the region). */
static void remap(void)
{
    unsigned n = atomic_load(&reg->n_slots);
    if (n <= mapped || region_fd < 0) return;
    void *p = mremap(reg, region_size(mapped), region_size(n), MREMAP_MAYMOVE);
    if (p == MAP_FAILED) return;
    reg = p;
    mapped = n;
}

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

static void serve_one(int fd)
{
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[4096];
    size_t n = 0;
    while (n < sizeof(req) - 1) {
        ssize_t r = read(fd, req + n, sizeof(req) - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        req[n] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    req[n] = '\0';
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

int metrics_setup(const char *bind_spec, unsigned n_workers)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_hostport(bind_spec, &ss, &sl) != 0) {
        fprintf(stderr, "error: --metrics-bind: expected HOST:PORT, got '%s'\n", bind_spec);
        return -1;
    }
    if (reg) return 0; /* adopted from the process this one was executed by (metrics_adopt) */
    size_t size = region_size(n_workers);
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
    region_fd = mfd;
    mapped = n_workers;
    reg->n_slots = n_workers;
    reg->workers = n_workers;
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
        for (;;) {
            int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                _exit(1);
            }
            serve_one(c);
        }
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
    reg = p;
    mapped = (unsigned)(((size_t)st.st_size - sizeof(region)) / sizeof(slot));
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

void metrics_worker_attach(unsigned index)
{
    if (reg) remap();
    if (reg && index < mapped) mine = &reg->slots[index];
}

void metrics_workers(unsigned n)
{
    if (!reg) return;
    if (n > mapped) {
        /* Grow the file, then this mapping; workers forked from now on inherit it, the scrape
         * process maps the new slots at its next scrape (remap). Double, so that SIGTTIN after
         * SIGTTIN does not remap each time. */
        unsigned cap = n > 2 * mapped ? n : 2 * mapped;
        void *p = MAP_FAILED;
        if (ftruncate(region_fd, (off_t)region_size(cap)) == 0)
            p = mremap(reg, region_size(mapped), region_size(cap), MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            host_log(WSGI_LOG_ERROR, "metrics: cannot grow to %u worker slots: %s", cap,
                     strerror(errno));
        } else {
            reg = p;
            mapped = cap;
            atomic_store(&reg->n_slots, cap);
        }
    }
    atomic_store(&reg->workers, n);
}

void metrics_worker_restart(unsigned index, const char *reason)
{
    if (!reg) return;
    size_t r = N_REASONS - 1;
    for (size_t k = 0; k + 1 < N_REASONS; k++)
        if (reason && strcmp(reason, reason_names[k]) == 0) r = k;
    atomic_fetch_add_explicit(&reg->restarts[r], 1, memory_order_relaxed);
    if (index < mapped) {
        slot *s = &reg->slots[index];
        atomic_store(&s->in_flight, 0);
        atomic_store(&s->conns, 0);
        atomic_store(&s->websockets, 0);
    }
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

/* Over the slots mapped when the scrape began (another may be added meanwhile). */
#define SUM(field)                                                                                 \
    ({                                                                                             \
        uint64_t t_ = 0;                                                                           \
        for (unsigned w_ = 0; w_ < mapped; w_++)                                                   \
            t_ += (uint64_t)atomic_load_explicit(&reg->slots[w_].field, memory_order_relaxed);     \
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
    remap();
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
        (long long)SUM(in_flight));
    OUT("# HELP libwsgi_connections_open Client connections open now.\n"
        "# TYPE libwsgi_connections_open gauge\n"
        "libwsgi_connections_open %lld\n",
        (long long)SUM(conns));
    OUT("# HELP libwsgi_websockets_open WebSockets open now.\n"
        "# TYPE libwsgi_websockets_open gauge\n"
        "libwsgi_websockets_open %lld\n",
        (long long)SUM(websockets));
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
    OUT("# HELP libwsgi_workers Worker processes.\n# TYPE libwsgi_workers gauge\n"
        "libwsgi_workers %u\n",
        atomic_load(&reg->workers));
#undef OUT
    return o < cap ? o : cap;
}
