/* The access log and the metrics of both servers, fed by libwsgi's request observer
 * (wsgi_runtime_set_observer): the observer reports each request the app served (status, bytes,
 * times, how it ended) on the thread that finishes it; the log line is written when the
 * connection is done with the response (conn_access_log), from the observer's report when it came
 * first and from the connection's own record otherwise (an error the server answered itself, or
 * an ASGI app still running after its response). Also the options and start-up of obs.h. */
#include "access_log.h"
#include "conn.h"
#include "host_log.h"
#include "metrics.h"
#include "obs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- options -------------------------------------------------------------------------------- */

void obs_options_init(obs_options *o)
{
    memset(o, 0, sizeof(*o));
}

int obs_cli_option(obs_options *o, host_options *h, int argc, char **argv, int *i)
{
    const char *v = NULL;
    int r;
    if ((r = host_cli_match("--access-logfile", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->access_logfile = v, h->access_log = 1;
        return r;
    }
    if ((r = host_cli_match("--access-logformat", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->access_logformat = v, h->access_log = 1;
        return r;
    }
    if ((r = host_cli_match("--metrics-bind", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->metrics_bind = v;
        return r;
    }
    if ((r = host_cli_match("--check-config", 0, argc, argv, i, &v)) != 0) {
        o->check_config = 1;
        return r;
    }
    if ((r = host_cli_match("--proxy-headers", 0, argc, argv, i, &v)) != 0) {
        o->proxy_headers = 1;
        return r;
    }
    if ((r = host_cli_match("--forwarded-allow-ips", 1, argc, argv, i, &v)) != 0) {
        if (r > 0) o->forwarded_allow_ips = v;
        return r;
    }
    if ((r = host_cli_match("--root-path", 1, argc, argv, i, &v)) != 0) {
        if (r < 0) return r;
        if (v[0] && (v[0] != '/' || v[strlen(v) - 1] == '/')) {
            fprintf(stderr,
                    "error: --root-path must start with '/' and not end with one (got "
                    "'%s')\n",
                    v);
            return -1;
        }
        h->root_path = v;
        return 1;
    }
    return 0;
}

int obs_cli_validate(obs_options *o, host_options *h)
{
    (void)h;
    if (!o->forwarded_allow_ips) {
        const char *env = getenv("FORWARDED_ALLOW_IPS");
        o->forwarded_allow_ips = env && *env ? env : "127.0.0.1";
    }
    return proxy_trust_parse(o->forwarded_allow_ips);
}

const char *obs_cli_help(void)
{
    return "  --access-logfile FILE   write the access log to FILE ('-': stderr), reopened\n"
           "                          on SIGUSR1 (logrotate); implies --access-log\n"
           "  --access-logformat FORMAT\n"
           "                          gunicorn's access log format (default: the combined\n"
           "                          format plus the request time in seconds, %(L)s)\n"
           "  --metrics-bind HOST:PORT\n"
           "                          serve Prometheus metrics at http://HOST:PORT/metrics\n"
           "                          (summed over the workers)\n"
           "  --check-config          check the options and import the app, then exit\n"
           "                          (0 if both are fine)\n"
           "  --proxy-headers         take the client address, scheme and host from\n"
           "                          Forwarded / X-Forwarded-For, -Proto, -Host\n"
           "  --forwarded-allow-ips LIST\n"
           "                          the proxies trusted with those headers: addresses\n"
           "                          or networks, comma-separated, '*' for any (default\n"
           "                          $FORWARDED_ALLOW_IPS or 127.0.0.1)\n"
           "  --root-path PATH        the app is mounted at PATH (SCRIPT_NAME, root_path)\n";
}

/* ---- start-up ------------------------------------------------------------------------------- */

static int proxy_on;

int obs_setup(const obs_options *o, const host_options *h)
{
    proxy_on = o->proxy_headers;
    if (h->access_log && access_log_setup(o->access_logformat, o->access_logfile) != 0) return -1;
    if (o->metrics_bind && metrics_setup(o->metrics_bind, h->workers) != 0) return -1;
    return 0;
}

void obs_shutdown(void)
{
    metrics_shutdown();
}

/* The per-request record of the access log, one malloc'd block in conn.alog: offsets into the
 * bytes that follow it (the head's bytes do not live until the response ends), and what the
 * observer reported. */
typedef struct alog_rec {
    size_t method_off, method_len, target_off, target_len, user_off, user_len;
    size_t n_req, n_resp;
    size_t req_off[ACCESS_LOG_MAX_HEADERS], req_len[ACCESS_LOG_MAX_HEADERS];
    char *resp; /* response header values (malloc'd), at resp_off / resp_len */
    size_t resp_off[ACCESS_LOG_MAX_HEADERS], resp_len[ACCESS_LOG_MAX_HEADERS];
    int ob_have, ob_status;
    uint64_t ob_bytes;
    char bytes[];
} alog_rec;

static void on_request_done(void *data, const wsgi_request_outcome *o)
{
    (void)data;
    int64_t latency = o->app_ns + (o->queue_ns > 0 ? o->queue_ns : 0);
    metrics_request_done(o->status, o->outcome, latency, o->bytes_in, o->bytes_out);
    /* WSGI: the connection itself; ASGI: its task (NULL connection once it moved on). */
    conn *c = o->interface == WSGI_INTERFACE_WSGI ? o->user_data : ((asgi_task *)o->user_data)->c;
    if (!c || !c->alog || o->websocket) return;
    alog_rec *r = c->alog;
    r->ob_have = 1;
    r->ob_status = o->status;
    r->ob_bytes = o->bytes_out;
}

static void on_ws_open(void *data, void *ud)
{
    (void)data, (void)ud;
    metrics_websocket_open(1);
}

static void on_ws_close(void *data, void *ud, int code)
{
    (void)data, (void)ud, (void)code;
    metrics_websocket_open(-1);
}

void obs_worker_start(wsgi_runtime *rt, unsigned index)
{
    metrics_worker_attach(index);
    if (access_log_enabled()) access_log_handle_sigusr1();
    access_log_worker_start(); /* the master's descriptor may name a rotated file */
    if (!metrics_enabled() && !access_log_enabled()) return; /* no observer: no cost */
    static const wsgi_observer obs = {.struct_size = sizeof(wsgi_observer),
                                      .on_request_done = on_request_done,
                                      .on_websocket_open = on_ws_open,
                                      .on_websocket_close = on_ws_close};
    if (wsgi_runtime_set_observer(rt, &obs, NULL) != WSGI_OK)
        host_log(WSGI_LOG_ERROR, "wsgi_runtime_set_observer: %s", wsgi_errmsg());
}

/* ---- per request ---------------------------------------------------------------------------- */

static int ieq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* The user name of an Authorization: Basic header (gunicorn's %(u)s), decoded into out. */
static size_t basic_user(const char *v, size_t n, char *out, size_t cap)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n < 6 || strncasecmp(v, "basic ", 6) != 0) return 0;
    v += 6, n -= 6;
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t k = 0; k < n && o < cap; k++) {
        const char *p = v[k] ? strchr(b64, v[k]) : NULL;
        if (!p) break;
        acc = (acc << 6) | (unsigned)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char ch = (char)((acc >> bits) & 0xff);
            if (ch == ':') return o;
            out[o++] = ch;
        }
    }
    return 0; /* no ':': not user:password */
}

void conn_access_prepare(conn *c)
{
    c->arrival_ns = server_now_us() * 1000;
    if (!access_log_enabled()) return;
    const char *const *names;
    size_t n_names = access_log_request_headers(&names);
    const char *vals[ACCESS_LOG_MAX_HEADERS] = {0};
    size_t lens[ACCESS_LOG_MAX_HEADERS] = {0};
    const char *m, *auth = NULL;
    size_t mlen, auth_len = 0;
    if (c->proto != CPROTO_HTTP) {
        conn_scgi_method(c, &m, &mlen);
        for (size_t k = 0; k < n_names; k++) {
            char key[80] = "HTTP_";
            size_t kl = 5;
            for (const char *p = names[k]; *p && kl < sizeof(key) - 1; p++)
                key[kl++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
            key[kl] = '\0';
            conn_scgi_param(c, key, &vals[k], &lens[k]);
        }
        conn_scgi_param(c, "HTTP_AUTHORIZATION", &auth, &auth_len);
    } else {
        m = http_method_str((enum http_method)c->parser.method);
        mlen = strlen(m);
        for (size_t j = 0; j < c->n_hdrs; j++) {
            const hdr_span *h = &c->hdrs[j];
            const char *name = c->in + h->name_off;
            if (ieq(name, h->name_len, "authorization")) {
                auth = c->in + h->value_off;
                auth_len = h->value_len;
            }
            for (size_t k = 0; k < n_names; k++) {
                if (!vals[k] && ieq(name, h->name_len, names[k])) {
                    vals[k] = c->in + h->value_off;
                    lens[k] = h->value_len;
                }
            }
        }
    }
    char user[128];
    size_t ulen = auth ? basic_user(auth, auth_len, user, sizeof(user)) : 0;
    size_t total = mlen + c->url_len + ulen;
    for (size_t k = 0; k < n_names; k++)
        total += lens[k];
    free(c->alog);
    alog_rec *r = c->alog = calloc(1, sizeof(alog_rec) + total + 1);
    if (!r) return;
    char *o = r->bytes;
#define KEEP(off, len, src, n)                                                                     \
    do {                                                                                           \
        (off) = (size_t)(o - r->bytes);                                                            \
        (len) = (n);                                                                               \
        if (n) memcpy(o, (src), (n));                                                              \
        o += (n);                                                                                  \
    } while (0)
    KEEP(r->method_off, r->method_len, m, mlen);
    KEEP(r->target_off, r->target_len, c->in + c->url_off, c->url_len);
    KEEP(r->user_off, r->user_len, user, ulen);
    r->n_req = n_names;
    for (size_t k = 0; k < n_names; k++)
        KEEP(r->req_off[k], r->req_len[k], vals[k], lens[k]);
#undef KEEP
}

void conn_access_head(conn *c, const wsgi_response_head *h)
{
    alog_rec *r = c->alog;
    const char *const *names;
    size_t n = access_log_response_headers(&names);
    if (!r || !n) return;
    size_t total = 0;
    const char *vals[ACCESS_LOG_MAX_HEADERS] = {0};
    size_t lens[ACCESS_LOG_MAX_HEADERS] = {0};
    for (size_t k = 0; k < n; k++)
        for (size_t j = 0; j < h->n_headers; j++)
            if (!vals[k] && ieq(h->headers[j].name, h->headers[j].name_len, names[k])) {
                vals[k] = h->headers[j].value;
                lens[k] = h->headers[j].value_len;
                total += lens[k];
            }
    free(r->resp);
    r->resp = malloc(total + 1);
    if (!r->resp) return;
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        r->resp_off[k] = o;
        r->resp_len[k] = lens[k];
        if (lens[k]) memcpy(r->resp + o, vals[k], lens[k]);
        o += lens[k];
    }
    r->n_resp = n;
}

void conn_access_free(conn *c)
{
    alog_rec *r = c->alog;
    if (r) free(r->resp);
    free(c->alog);
    c->alog = NULL;
}

void conn_access_log(conn *c)
{
    alog_rec *r = c->alog;
    if (!server_access_log(c->srv)) return;
    access_record a = {0};
    a.remote = c->fwd_peer[0] ? c->fwd_peer : c->peer[0] ? c->peer : NULL;
    if (!r) { /* the server answered a head it could not parse: only what the connection knows */
        a.status = c->status;
        a.body_bytes = c->body_bytes;
        access_log_write(&a);
        return;
    }
    a.method = r->bytes + r->method_off;
    a.method_len = r->method_len;
    a.target = r->bytes + r->target_off;
    a.target_len = r->target_len;
    a.user = r->user_len ? r->bytes + r->user_off : NULL;
    a.user_len = r->user_len;
    a.http_major = c->http_major;
    a.http_minor = c->http_minor;
    /* The status that went on the wire (the server's own answer when it answered first, as a
     * 413 for a body over the limit while the app was reading it: the app's resulting 500 never
     * left); what the observer saw of the app otherwise. */
    a.status = c->status ? c->status : r->ob_have ? r->ob_status : 0;
    a.body_bytes = c->body_bytes; /* what went on the wire (none for HEAD), as gunicorn logs */
    a.duration_us = c->arrival_ns ? server_now_us() - c->arrival_ns / 1000 : 0;
    for (size_t k = 0; k < r->n_req; k++) {
        a.req_values[k] = r->req_len[k] ? r->bytes + r->req_off[k] : NULL;
        a.req_lens[k] = r->req_len[k];
    }
    for (size_t k = 0; k < r->n_resp && r->resp; k++) {
        a.resp_values[k] = r->resp_len[k] ? r->resp + r->resp_off[k] : NULL;
        a.resp_lens[k] = r->resp_len[k];
    }
    access_log_write(&a);
}

void conn_obs_fill(conn *c, wsgi_request *req)
{
    req->arrival_ns = c->arrival_ns;
    if (proxy_on && c->proto == CPROTO_HTTP) conn_proxy_apply(c, req);
}

void conn_obs_dispatch(conn *c, int rc)
{
    c->obs_app = rc >= 0;
    if (rc < 0)
        metrics_request_refused();
    else
        metrics_request_begin();
}
