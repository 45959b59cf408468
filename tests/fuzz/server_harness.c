/* The servers and the client of server_harness.h. Several servers share the process (and its one
 * Python): each has its own options, listener, thread and loop, as a libwsgi-epoll worker has, and
 * they share what a worker process shares (the access log, --proxy-headers, http_parser's header
 * limit, the signal pipe: the last server started owns it; the harness never signals). */
#include "server_harness.h"

#include "cli.h"
#include "host_asgi.h"
#include "host_log.h"
#include "listen.h"
#include "obs.h"
#include "server.h"

#include <errno.h>
#include <http_parser.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 8

typedef struct fzs_server {
    const fzs_config *cfg;
    epoll_options opt;
    wsgi_app *app;
    listener ls;
    struct sockaddr_un addr;
    socklen_t addr_len;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready; /* 1: serving (lifespan done), -1: failed */
} fzs_server;

static fzs_server servers[MAX_SERVERS];
static size_t n_servers;
static int hang_ms = 10000;
static int show; /* FUZZ_SERVER_SHOW=1: print each answer (replaying an input by hand) */

static void *server_thread(void *arg)
{
    fzs_server *s = arg;
    int ok = 1;
    /* The ASGI app's loop thread is this one: its lifespan runs here, as in a worker. */
    if (s->cfg->asgi && host_asgi_startup(s->app, s->opt.lifespan_timeout) != 0) ok = 0;
    pthread_mutex_lock(&s->mu);
    s->ready = ok ? 1 : -1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (!ok) return NULL;
    int r = server_run(&s->opt, s->app, NULL, &s->ls, 1);
    /* Only a signal stops a server (SIGINT, SIGTERM: the process is being stopped). */
    fprintf(stderr, "fuzz server %s: server_run returned %d; exiting\n", s->cfg->name, r);
    _exit(r == 0 ? 0 : 1);
}

static void listen_abstract(fzs_server *s, size_t k)
{
    memset(&s->ls, 0, sizeof(s->ls));
    memset(&s->addr, 0, sizeof(s->addr));
    s->addr.sun_family = AF_UNIX;
    /* An abstract socket: nothing to remove afterwards, unique per process. */
    int n = snprintf(s->addr.sun_path + 1, sizeof(s->addr.sun_path) - 1, "libwsgi-fuzz-%d-%zu",
                     (int)getpid(), k);
    s->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FZS_CHECK(fd >= 0);
    FZS_CHECK(bind(fd, (struct sockaddr *)&s->addr, s->addr_len) == 0);
    FZS_CHECK(listen(fd, 1024) == 0);
    s->ls.spec = s->cfg->name;
    s->ls.is_unix = 1;
    memcpy(&s->ls.addr, &s->addr, sizeof(s->addr));
    s->ls.addr_len = s->addr_len;
    snprintf(s->ls.host, sizeof(s->ls.host), "localhost");
    s->ls.reserved_fd = -1;
    s->ls.fd = fd;
}

/* The server answers a request (HTTP, or SCGI for libwsgi-scgi): its loop runs (and has taken the
 * signal pipe: the next server may be started). */
static void probe(size_t k)
{
    static const char http[] = "GET /probe HTTP/1.0\r\nHost: fuzz\r\n\r\n";
    static const char vars[] = "CONTENT_LENGTH\0"
                               "0\0SCGI\0"
                               "1\0REQUEST_METHOD\0GET\0"
                               "REQUEST_URI\0/probe\0";
    char scgi[128];
    int n = snprintf(scgi, sizeof(scgi), "%zu:", sizeof(vars) - 1);
    memcpy(scgi + n, vars, sizeof(vars) - 1);
    n += (int)sizeof(vars) - 1;
    scgi[n++] = ',';
    int is_scgi = servers[k].cfg->scgi;
    const char *want = is_scgi ? "Status: 200" : "HTTP/1.1 200";
    int fd = fzs_connect(k);
    fzs_buf out = {0};
    uint32_t seed = 1;
    if (is_scgi)
        fzs_send(fd, (const uint8_t *)scgi, (size_t)n, &seed, &out);
    else
        fzs_send(fd, (const uint8_t *)http, sizeof(http) - 1, &seed, &out);
    fzs_finish(fd, &out);
    if (out.len < strlen(want) || memcmp(out.p, want, strlen(want)) != 0) {
        fprintf(stderr, "fuzz server %s does not answer a GET: '%.*s'\n", servers[k].cfg->name,
                (int)(out.len < 200 ? out.len : 200), out.p ? (const char *)out.p : "");
        abort();
    }
    fzs_buf_free(&out);
}

void fzs_start(const fzs_config *configs, size_t n)
{
    FZS_CHECK(n <= MAX_SERVERS && n_servers == 0);
    const char *env = getenv("FUZZ_SERVER_LOG");
    int level = env ? atoi(env) : 2; /* 2: below WSGI_LOG_ERROR */
    host_log_set_level(level);
    env = getenv("FUZZ_SERVER_HANG_MS");
    if (env && atoi(env) > 0) hang_ms = atoi(env);
    show = getenv("FUZZ_SERVER_SHOW") != NULL;
    signal(SIGPIPE, SIG_IGN);

    /* What a worker process sets up once for all its listeners: the access log (with request and
     * response headers, so that their copies are made) and --proxy-headers (unix-socket peers are
     * trusted: every request's forwarded headers are applied). */
    static obs_options obs;
    static host_options host;
    obs_options_init(&obs);
    host_options_init(&host);
    obs.proxy_headers = 1;
    obs.access_logfile = "/dev/null";
    obs.access_logformat = "%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s \"%(f)s\" \"%(a)s\" "
                           "%(m)s %(U)s %(q)s %(H)s %(B)s %(L)s %({x-forwarded-for}i)s "
                           "%({content-type}o)s %({content-length}o)s";
    host.access_log = 1;
    FZS_CHECK(obs_setup(&obs, &host) == 0);

    const char *path[] = {FUZZ_APPS_DIR};
    wsgi_runtime_options ro;
    wsgi_runtime_options_init(&ro);
    ro.python_path = path;
    ro.n_python_path = 1;
    ro.log = host_log_cb;
    ro.log_level = level < WSGI_LOG_ERROR ? WSGI_LOG_ERROR : level;
    wsgi_runtime *rt;
    int rc = wsgi_runtime_new(&ro, &rt);
    if (rc != WSGI_OK) {
        fprintf(stderr, "wsgi_runtime_new: %s: %s\n", wsgi_strerror(rc), wsgi_errmsg());
        abort();
    }
    wsgi_app *apps[2] = {NULL, NULL};
    static const char *const specs[2] = {"fuzz_server_apps:wsgi_app", "fuzz_server_apps:asgi_app"};
    size_t max_header = 0;
    int asgi_seen = 0;
    for (size_t k = 0; k < n; k++) {
        fzs_server *s = &servers[k];
        s->cfg = &configs[k];
        int a = configs[k].asgi != 0;
        FZS_CHECK(!(a && asgi_seen)); /* one asyncio loop, one thread */
        asgi_seen |= a;
        char *argv[32];
        int argc = 0;
        argv[argc++] = (char *)"fuzz";
        argv[argc++] = (char *)"--app";
        argv[argc++] = (char *)specs[a];
        /* Kept for the process: the options point into it. */
        char *words = strdup(configs[k].args ? configs[k].args : "");
        FZS_CHECK(words);
        for (char *save = NULL, *w = strtok_r(words, " ", &save); w;
             w = strtok_r(NULL, " ", &save)) {
            FZS_CHECK(argc < 31);
            argv[argc++] = w;
        }
        argv[argc] = NULL;
        if (epoll_cli_parse(argc, argv, configs[k].scgi ? PROG_SCGI : PROG_EPOLL, &s->opt) != 0) {
            fprintf(stderr, "fuzz server %s: bad options\n", configs[k].name);
            abort();
        }
        s->opt.host.access_log = 1;
        if (s->opt.max_header_size > max_header) max_header = s->opt.max_header_size;
        if (!apps[a]) {
            wsgi_app_options ao;
            wsgi_app_options_init(&ao);
            ao.spec = specs[a];
            ao.interface = a ? WSGI_INTERFACE_ASGI : WSGI_INTERFACE_WSGI;
            ao.flags = WSGI_APP_MULTITHREAD;
            ao.server_software = "libwsgi-fuzz";
            rc = wsgi_app_new(rt, &ao, &apps[a]);
            if (rc != WSGI_OK) {
                fprintf(stderr, "wsgi_app_new %s: %s: %s\n", specs[a], wsgi_strerror(rc),
                        wsgi_errmsg());
                abort();
            }
        }
        s->app = apps[a];
    }
    /* Process-wide in http_parser (server_main() sets it the same way). */
    http_parser_set_max_header_size((uint32_t)max_header);

    for (size_t k = 0; k < n; k++) {
        fzs_server *s = &servers[k];
        listen_abstract(s, k);
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        n_servers = k + 1;
        FZS_CHECK(pthread_create(&s->thread, NULL, server_thread, s) == 0);
        pthread_mutex_lock(&s->mu);
        while (!s->ready)
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        if (s->ready < 0) {
            fprintf(stderr, "fuzz server %s: the lifespan startup failed\n", s->cfg->name);
            abort();
        }
        /* One at a time: each takes the process's signal pipe over when its loop starts. */
        probe(k);
    }
}

/* ---- the client ----------------------------------------------------------------------------- */

int fzs_connect(size_t k)
{
    FZS_CHECK(k < n_servers);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    FZS_CHECK(fd >= 0);
    /* A unix socket connects at once, or EAGAIN when the backlog is full. */
    for (int tries = 0;; tries++) {
        if (connect(fd, (struct sockaddr *)&servers[k].addr, servers[k].addr_len) == 0) break;
        FZS_CHECK(errno == EAGAIN && tries < hang_ms);
        usleep(1000);
    }
    return fd;
}

void fzs_buf_free(fzs_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One read into out. 1: got bytes, 0: EOF (or reset), -1: nothing yet. */
static int read_some(int fd, fzs_buf *out)
{
    uint8_t tmp[65536];
    ssize_t r = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (r == 0) return 0;
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
        FZS_CHECK(errno == ECONNRESET);
        return 0;
    }
    size_t n = (size_t)r;
    if (out->len + n > FZS_MAX_KEEP) {
        out->truncated = 1;
        n = FZS_MAX_KEEP - out->len;
    }
    if (out->len + n > out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 4096;
        while (cap < out->len + n)
            cap *= 2;
        uint8_t *p = realloc(out->p, cap);
        FZS_CHECK(p);
        out->p = p;
        out->cap = cap;
    }
    memcpy(out->p + out->len, tmp, n);
    out->len += n;
    return 1;
}

static void hang(const char *what, fzs_buf *out)
{
    fprintf(stderr,
            "fuzz server: hang: %s for %d ms (FUZZ_SERVER_HANG_MS); %zu bytes received: '%.*s'\n",
            what, hang_ms, out->len, (int)(out->len < 300 ? out->len : 300),
            out->p ? (const char *)out->p : "");
    abort();
}

int fzs_send(int fd, const uint8_t *data, size_t len, uint32_t *seed, fzs_buf *out)
{
    size_t off = 0;
    while (off < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        int n = poll(&p, 1, hang_ms);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) hang("the server neither reads nor writes", out);
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int r;
            while ((r = read_some(fd, out)) > 0) {
            }
            if (r == 0) return -1; /* the server closed the connection */
        }
        if (!(p.revents & POLLOUT)) continue;
        uint32_t x = fzs_rand(seed);
        size_t piece = (x & 3) ? 1 + (x >> 8) % 16 : 1 + (x >> 8) % 4096;
        if (piece > len - off) piece = len - off;
        ssize_t w = send(fd, data + off, piece, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            FZS_CHECK(errno == EPIPE || errno == ECONNRESET);
            return -1; /* the server shut its reading side down */
        }
        off += (size_t)w;
    }
    return 0;
}

int fzs_read_until(int fd, fzs_buf *out, size_t from, const char *end, int ms)
{
    size_t elen = strlen(end);
    int64_t deadline = now_ms() + ms;
    for (;;) {
        if (out->len >= from + elen && memmem(out->p + from, out->len - from, end, elen)) return 1;
        int r = read_some(fd, out);
        if (r == 0) return 0;
        if (r > 0) continue;
        int64_t left = deadline - now_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, (int)left);
    }
}

void fzs_wait(int fd, fzs_buf *out, size_t had, int ms)
{
    int64_t deadline = now_ms() + ms;
    while (out->len <= had) {
        int r = read_some(fd, out);
        if (r == 0) return;
        if (r > 0) continue;
        int64_t left = deadline - now_ms();
        if (left <= 0) return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, (int)left);
    }
}

void fzs_finish(int fd, fzs_buf *out)
{
    shutdown(fd, SHUT_WR);
    int64_t deadline = now_ms() + hang_ms;
    for (;;) {
        int r = read_some(fd, out);
        if (r == 0) break;
        if (r > 0) continue;
        int64_t left = deadline - now_ms();
        if (left <= 0) hang("the server did not close after the client's half-close", out);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, (int)left);
    }
    close(fd);
    if (show)
        fprintf(stderr, "---- %zu bytes back%s:\n%.*s\n----\n", out->len,
                out->truncated ? " (truncated)" : "", (int)out->len, out->p ? (char *)out->p : "");
}
