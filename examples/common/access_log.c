/* gunicorn's access log format language (the atoms of its --access-logformat documentation), the
 * line renderer and the log file with its reopening on SIGUSR1. The format is parsed once into a
 * list of literal pieces and atoms; each line is built in one buffer and written with one
 * write(2) to an O_APPEND descriptor, so lines from threads and workers never interleave. */
#include "access_log.h"
#include "host_log.h"
#include "host_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum atom_kind {
    A_LITERAL,
    A_REMOTE,   /* h */
    A_DASH,     /* l */
    A_USER,     /* u */
    A_TIME,     /* t */
    A_REQLINE,  /* r */
    A_METHOD,   /* m */
    A_PATH,     /* U */
    A_QUERY,    /* q */
    A_PROTO,    /* H */
    A_STATUS,   /* s */
    A_BYTES,    /* B */
    A_BYTES_D,  /* b */
    A_REFERER,  /* f */
    A_AGENT,    /* a */
    A_SECS,     /* T */
    A_MICROS,   /* D */
    A_MILLIS,   /* M */
    A_DSECS,    /* L */
    A_PID,      /* p */
    A_REQ_HDR,  /* {name}i */
    A_RESP_HDR, /* {name}o */
    A_TARGET,   /* {RAW_URI}e: the target as sent */
    A_ENV,      /* {name}e of a key a line cannot know: "-" */
} atom_kind;

typedef struct piece {
    atom_kind kind;
    const char *text; /* A_LITERAL: the text */
    size_t len;
    int index; /* A_REQ_HDR / A_RESP_HDR: position in the header list */
} piece;

static struct {
    int enabled;
    piece *pieces;
    size_t n;
    char *store; /* the texts the pieces point into */
    const char *req_names[ACCESS_LOG_MAX_HEADERS];
    size_t n_req;
    const char *resp_names[ACCESS_LOG_MAX_HEADERS];
    size_t n_resp;
    const char *path; /* NULL: stderr */
    int fd;
    pthread_mutex_t reopen_mu;
} al = {.fd = -1, .reopen_mu = PTHREAD_MUTEX_INITIALIZER};

static volatile sig_atomic_t reopen_pending;

static int name_index(const char **names, size_t *n, const char *name)
{
    for (size_t k = 0; k < *n; k++)
        if (strcmp(names[k], name) == 0) return (int)k;
    if (*n == ACCESS_LOG_MAX_HEADERS) return -1;
    names[*n] = name;
    return (int)(*n)++;
}

/* %({KEY}e)s names a key of the request's WSGI environ, as in gunicorn (its atoms hold every
 * environ key; not the process environment, whatever its documentation's "environment variable"
 * suggests). The keys a log line knows without the app's environ: a header (HTTP_*,
 * CONTENT_TYPE, CONTENT_LENGTH) is that request header (returns 1, key rewritten in place to the
 * header's lowercase name); REQUEST_METHOD, PATH_INFO, QUERY_STRING, SERVER_PROTOCOL, REMOTE_ADDR
 * and RAW_URI the matching atom; any other key logs "-". key is uppercase. */
static int env_atom(piece *pc, char *key)
{
    static const struct {
        const char *key;
        atom_kind kind;
    } known[] = {{"REQUEST_METHOD", A_METHOD}, {"PATH_INFO", A_PATH},     {"QUERY_STRING", A_QUERY},
                 {"SERVER_PROTOCOL", A_PROTO}, {"REMOTE_ADDR", A_REMOTE}, {"RAW_URI", A_TARGET}};
    for (size_t k = 0; k < sizeof(known) / sizeof(*known); k++) {
        if (strcmp(key, known[k].key) == 0) {
            pc->kind = known[k].kind;
            return 0;
        }
    }
    const char *hdr = NULL;
    if (strcmp(key, "CONTENT_TYPE") == 0 || strcmp(key, "CONTENT_LENGTH") == 0)
        hdr = key;
    else if (strncmp(key, "HTTP_", 5) == 0 && key[5] && strcmp(key, "HTTP_CONTENT_TYPE") != 0 &&
             strcmp(key, "HTTP_CONTENT_LENGTH") != 0)
        hdr = key + 5; /* the WSGI environ has no HTTP_CONTENT_*: those are CONTENT_* */
    if (!hdr) {
        pc->kind = A_ENV;
        return 0;
    }
    char *d = key;
    for (const char *s = hdr; *s; s++)
        *d++ = *s == '_' ? '-' : (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
    *d = '\0';
    return 1;
}

static int compile(const char *fmt)
{
    size_t flen = strlen(fmt);
    al.pieces = calloc(flen + 3, sizeof(piece));
    al.store = malloc(flen + 1);
    if (!al.pieces || !al.store) return -1;
    char *st = al.store;
    /* f and a are the first two request headers. */
    al.req_names[al.n_req++] = "referer";
    al.req_names[al.n_req++] = "user-agent";
    const char *p = fmt;
    while (*p) {
        /* The literal up to the next atom, read left to right as Python's % operator does:
         * "%%" is a "%" (so "%%(h)s" is the text "%(h)s", not an atom). */
        char *text = st;
        while (*p && !(p[0] == '%' && p[1] == '(')) {
            if (p[0] == '%' && p[1] == '%') p++;
            *st++ = *p++;
        }
        if (st != text) {
            piece *lit = &al.pieces[al.n++];
            lit->kind = A_LITERAL;
            lit->text = text;
            lit->len = (size_t)(st - text);
        }
        if (!*p) break;
        const char *end = strstr(p, ")s");
        if (!end) {
            fprintf(stderr, "error: --access-logformat: '%s' is not closed by ')s'\n", p);
            return -1;
        }
        const char *a = p + 2;
        size_t alen = (size_t)(end - a);
        piece *pc = &al.pieces[al.n++];
        if (alen >= 3 && a[0] == '{' && memchr(a, '}', alen)) {
            const char *close = memchr(a, '}', alen);
            size_t nlen = (size_t)(close - a - 1);
            char kind = close + 1 < end ? close[1] : 0;
            if (close + 2 != end || nlen == 0 || (kind != 'i' && kind != 'o' && kind != 'e')) {
                fprintf(stderr, "error: --access-logformat: bad atom '%.*s'\n", (int)(end + 2 - p),
                        p);
                return -1;
            }
            char *name = st;
            for (size_t k = 0; k < nlen; k++) {
                char ch = a[1 + k];
                /* Headers by lowercase name; environ keys case-insensitively too (gunicorn
                 * lowercases both its keys and the atom). */
                *st++ = kind == 'e' ? (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch)
                                    : (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            }
            *st++ = '\0';
            if (kind == 'e' && env_atom(pc, name)) kind = 'i'; /* HTTP_*: name is the header's */
            if (kind == 'e') {
                /* env_atom() set the piece */
            } else {
                pc->kind = kind == 'i' ? A_REQ_HDR : A_RESP_HDR;
                pc->index = kind == 'i' ? name_index(al.req_names, &al.n_req, name)
                                        : name_index(al.resp_names, &al.n_resp, name);
                if (pc->index < 0) {
                    fprintf(stderr, "error: --access-logformat: more than %d headers\n",
                            ACCESS_LOG_MAX_HEADERS);
                    return -1;
                }
            }
        } else if (alen == 1) {
            static const char letters[] = "hlutrmUqHsBbfaTDMLp";
            static const atom_kind kinds[] = {A_REMOTE, A_DASH,    A_USER,    A_TIME,  A_REQLINE,
                                              A_METHOD, A_PATH,    A_QUERY,   A_PROTO, A_STATUS,
                                              A_BYTES,  A_BYTES_D, A_REFERER, A_AGENT, A_SECS,
                                              A_MICROS, A_MILLIS,  A_DSECS,   A_PID};
            const char *hit = strchr(letters, a[0]);
            if (!hit || !a[0]) {
                fprintf(stderr, "error: --access-logformat: unknown atom '%%(%c)s'\n", a[0]);
                return -1;
            }
            pc->kind = kinds[hit - letters];
        } else {
            fprintf(stderr, "error: --access-logformat: unknown atom '%.*s'\n", (int)(end + 2 - p),
                    p);
            return -1;
        }
        p = end + 2;
    }
    return 0;
}

static int open_file(void)
{
    if (!al.path) {
        al.fd = STDERR_FILENO;
        return 0;
    }
    int fd = open(al.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (al.fd > STDERR_FILENO) {
        /* Replace in place: threads writing meanwhile use the old file or the new one. */
        dup3(fd, al.fd, O_CLOEXEC);
        close(fd);
    } else {
        al.fd = fd;
    }
    return 0;
}

int access_log_setup(const char *fmt, const char *path)
{
    if (compile(fmt ? fmt : ACCESS_LOG_DEFAULT_FORMAT) != 0) return -1;
    al.path = path && strcmp(path, "-") != 0 ? path : NULL;
    if (open_file() != 0) {
        fprintf(stderr, "error: --access-logfile %s: %s\n", al.path, strerror(errno));
        return -1;
    }
    al.enabled = 1;
    return 0;
}

int access_log_enabled(void)
{
    return al.enabled;
}

size_t access_log_request_headers(const char *const **names)
{
    *names = al.req_names;
    return al.n_req;
}

size_t access_log_response_headers(const char *const **names)
{
    *names = al.resp_names;
    return al.n_resp;
}

static void on_sigusr1(int sig)
{
    (void)sig;
    reopen_pending = 1;
}

void access_log_handle_sigusr1(void)
{
    host_signals_handle(SIGUSR1, on_sigusr1);
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef struct out {
    char *p;
    size_t n, cap;
} out;

static void put(out *o, const char *s, size_t n)
{
    if (n > o->cap - o->n) n = o->cap - o->n;
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

/* Request bytes, escaped the way gunicorn's lines stay one line: quotes, backslashes and control
 * bytes as \xHH. NULL or empty: "-". */
static void put_byte(out *o, unsigned char ch)
{
    static const char hex[] = "0123456789abcdef";
    if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') {
        char e[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
        put(o, e, 4);
    } else {
        o->p[o->n++] = (char)ch;
    }
}

static void put_field(out *o, const char *s, size_t n)
{
    if (!s || n == 0) {
        put(o, "-", 1);
        return;
    }
    for (size_t k = 0; k < n && o->n + 4 < o->cap; k++)
        put_byte(o, (unsigned char)s[k]);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* %(U)s: the path percent-decoded, as gunicorn logs PATH_INFO (escaped like put_field). */
static void put_path(out *o, const char *s, size_t n)
{
    if (!s || n == 0) {
        put(o, "-", 1);
        return;
    }
    for (size_t k = 0; k < n && o->n + 4 < o->cap; k++) {
        int hi, lo;
        if (s[k] == '%' && k + 2 < n && (hi = hexval(s[k + 1])) >= 0 &&
            (lo = hexval(s[k + 2])) >= 0) {
            put_byte(o, (unsigned char)(hi * 16 + lo));
            k += 2;
        } else {
            put_byte(o, (unsigned char)s[k]);
        }
    }
}

static void putf(out *o, const char *fmt, ...) HOST_PRINTF(2, 3);
static void putf(out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
    va_end(ap);
    if (k > 0) o->n += (size_t)k < o->cap - o->n ? (size_t)k : o->cap - o->n - 1;
}

static void reopen(void)
{
    if (open_file() != 0)
        host_log(WSGI_LOG_ERROR, "cannot reopen the access log %s: %s", al.path, strerror(errno));
}

void access_log_worker_start(void)
{
    if (!al.enabled || !al.path) return;
    struct stat have, named;
    if (fstat(al.fd, &have) == 0 && stat(al.path, &named) == 0 && have.st_dev == named.st_dev &&
        have.st_ino == named.st_ino)
        return;
    pthread_mutex_lock(&al.reopen_mu);
    reopen();
    pthread_mutex_unlock(&al.reopen_mu);
}

void access_log_write(const access_record *r)
{
    if (!al.enabled) return;
    if (reopen_pending) {
        pthread_mutex_lock(&al.reopen_mu);
        if (reopen_pending) {
            reopen_pending = 0;
            reopen();
        }
        pthread_mutex_unlock(&al.reopen_mu);
    }
    char buf[8192];
    out o = {buf, 0, sizeof(buf) - 1};
    const char *qm = r->target ? memchr(r->target, '?', r->target_len) : NULL;
    size_t path_len = qm ? (size_t)(qm - r->target) : r->target_len;
    for (size_t k = 0; k < al.n; k++) {
        const piece *pc = &al.pieces[k];
        switch (pc->kind) {
        case A_LITERAL: put(&o, pc->text, pc->len); break;
        case A_REMOTE: put_field(&o, r->remote, r->remote ? strlen(r->remote) : 0); break;
        case A_DASH: put(&o, "-", 1); break;
        case A_USER: put_field(&o, r->user, r->user_len); break;
        case A_TIME: {
            char ts[64];
            time_t now = time(NULL);
            struct tm tm;
            localtime_r(&now, &tm);
            size_t n = strftime(ts, sizeof(ts), "[%d/%b/%Y:%H:%M:%S %z]", &tm);
            put(&o, ts, n);
            break;
        }
        case A_REQLINE:
            if (!r->method) {
                put(&o, "-", 1);
                break;
            }
            put_field(&o, r->method, r->method_len);
            put(&o, " ", 1);
            put_field(&o, r->target, r->target_len);
            putf(&o, " HTTP/%d.%d", r->http_major % 10, r->http_minor % 10);
            break;
        case A_METHOD: put_field(&o, r->method, r->method_len); break;
        case A_PATH: put_path(&o, r->target, path_len); break;
        case A_QUERY:
            /* gunicorn: the query string, empty when there is none. */
            if (qm) put_field(&o, qm + 1, r->target_len - path_len - 1);
            break;
        case A_PROTO:
            if (r->method)
                putf(&o, "HTTP/%d.%d", r->http_major % 10, r->http_minor % 10);
            else
                put(&o, "-", 1);
            break;
        case A_STATUS:
            if (r->status)
                putf(&o, "%d", r->status);
            else
                put(&o, "-", 1);
            break;
        case A_BYTES: putf(&o, "%llu", (unsigned long long)r->body_bytes); break;
        case A_BYTES_D:
            if (r->body_bytes)
                putf(&o, "%llu", (unsigned long long)r->body_bytes);
            else
                put(&o, "-", 1);
            break;
        case A_REFERER: put_field(&o, r->req_values[0], r->req_lens[0]); break;
        case A_AGENT: put_field(&o, r->req_values[1], r->req_lens[1]); break;
        case A_SECS: putf(&o, "%lld", (long long)(r->duration_us / 1000000)); break;
        case A_MICROS: putf(&o, "%lld", (long long)r->duration_us); break;
        case A_MILLIS: putf(&o, "%lld", (long long)(r->duration_us / 1000)); break;
        case A_DSECS:
            putf(&o, "%lld.%06lld", (long long)(r->duration_us / 1000000),
                 (long long)(r->duration_us % 1000000));
            break;
        case A_PID: putf(&o, "<%d>", (int)getpid()); break;
        case A_REQ_HDR: put_field(&o, r->req_values[pc->index], r->req_lens[pc->index]); break;
        case A_RESP_HDR: put_field(&o, r->resp_values[pc->index], r->resp_lens[pc->index]); break;
        case A_TARGET: put_field(&o, r->target, r->target_len); break;
        case A_ENV: put(&o, "-", 1); break;
        }
    }
    buf[o.n++] = '\n';
    const char *p = buf;
    size_t n = o.n;
    while (n > 0) {
        ssize_t w = write(al.fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}
