/* --proxy-headers: the client, scheme and host a trusted proxy forwarded (X-Forwarded-For /
 * -Proto / -Host, else RFC 7239 Forwarded) replace the connection's own in the request the app
 * sees. Only when the connection's peer is in --forwarded-allow-ips; like uvicorn, the client is
 * the right-most address of the chain that is not itself a trusted proxy.
 *
 * A proxy passes on the headers it does not set, so the kind it does not use comes from the
 * client. The X-Forwarded-* kind (uvicorn's, gunicorn's; what nginx, HAProxy and most proxies
 * set) decides whenever one of them is present; Forwarded only when none is. */
#include "conn.h"
#include "obs.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct net {
    int family;
    unsigned char addr[16];
    unsigned bits;
} net;

static struct {
    int all; /* '*' */
    net *nets;
    size_t n;
} trust;

static int parse_addr(const char *s, size_t n, net *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf)) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        return 0;
    }
    return -1;
}

int proxy_trust_parse(const char *list)
{
    free(trust.nets);
    trust.nets = NULL;
    trust.n = trust.all = 0;
    size_t cap = 1; /* entries: at most one more than the separators (',' or ' ') */
    for (const char *p = list; *p; p++)
        cap += *p == ',' || *p == ' ';
    trust.nets = calloc(cap, sizeof(net));
    if (!trust.nets) return -1;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        size_t n = (size_t)(e - p);
        if (n == 1 && *p == '*') {
            trust.all = 1;
        } else {
            const char *slash = memchr(p, '/', n);
            net *t = &trust.nets[trust.n];
            if (parse_addr(p, slash ? (size_t)(slash - p) : n, t) != 0) {
                fprintf(stderr,
                        "error: --forwarded-allow-ips: '%.*s' is not an IP address or "
                        "network\n",
                        (int)n, p);
                return -1;
            }
            unsigned maxbits = t->family == AF_INET ? 32 : 128;
            t->bits = maxbits;
            if (slash) {
                char *end;
                unsigned long b = strtoul(slash + 1, &end, 10);
                if (end != e || b > maxbits || end == slash + 1) {
                    fprintf(stderr, "error: --forwarded-allow-ips: bad prefix in '%.*s'\n", (int)n,
                            p);
                    return -1;
                }
                t->bits = (unsigned)b;
            }
            trust.n++;
        }
        p = e;
    }
    return 0;
}

static int in_net(const net *t, const net *a)
{
    if (t->family != a->family) return 0;
    unsigned full = t->bits / 8, rest = t->bits % 8;
    if (memcmp(t->addr, a->addr, full) != 0) return 0;
    if (!rest) return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (t->addr[full] & mask) == (a->addr[full] & mask);
}

static int trusted_n(const char *s, size_t n)
{
    if (trust.all) return 1;
    net a;
    if (parse_addr(s, n, &a) != 0) return 0;
    if (a.family == AF_INET6 && memcmp(a.addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
        /* An IPv4-mapped peer of a dual-stack socket compares as IPv4. */
        memmove(a.addr, a.addr + 12, 4);
        a.family = AF_INET;
    }
    for (size_t k = 0; k < trust.n; k++)
        if (in_net(&trust.nets[k], &a)) return 1;
    return 0;
}

int proxy_trusted(const char *peer)
{
    /* A unix socket can only be reached from this host: the proxy in front of it is trusted. */
    if (!peer || !peer[0]) return 1;
    return trusted_n(peer, strlen(peer));
}

static void trim(const char **p, size_t *n)
{
    while (*n && (**p == ' ' || **p == '\t'))
        (*p)++, (*n)--;
    while (*n && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/* A node of X-Forwarded-For or a for= of Forwarded, reduced to its address: quotes, [brackets]
 * and a :port go. */
static void node_addr(const char **p, size_t *n)
{
    trim(p, n);
    if (*n >= 2 && **p == '"' && (*p)[*n - 1] == '"') (*p)++, *n -= 2;
    if (*n && **p == '[') {
        const char *rb = memchr(*p, ']', *n);
        if (rb) {
            *n = (size_t)(rb - *p - 1);
            (*p)++;
        }
        return;
    }
    const char *colon = memchr(*p, ':', *n);
    if (colon && !memchr(colon + 1, ':', *n - (size_t)(colon - *p) - 1))
        *n = (size_t)(colon - *p); /* a.b.c.d:port (one colon: not IPv6) */
}

typedef struct fwd {
    const char *nodes[32]; /* the client chain, left to right */
    size_t lens[32];
    size_t n;
    const char *proto, *host;
    size_t proto_len, host_len;
} fwd;

static void add_node(fwd *f, const char *p, size_t n)
{
    node_addr(&p, &n);
    if (f->n < 32) {
        f->nodes[f->n] = p;
        f->lens[f->n++] = n;
    } else { /* keep the right-most ones: they are the ones checked */
        memmove(f->nodes, f->nodes + 1, 31 * sizeof(f->nodes[0]));
        memmove(f->lens, f->lens + 1, 31 * sizeof(f->lens[0]));
        f->nodes[31] = p;
        f->lens[31] = n;
    }
}

/* RFC 7239: elements separated by ',', pairs by ';'. proto and host of the last element (the
 * one the trusted peer added). */
static void parse_forwarded(fwd *f, const char *v, size_t n)
{
    const char *end = v + n;
    while (v < end) {
        const char *ee = v;
        int quoted = 0;
        while (ee < end && (quoted || *ee != ',')) {
            if (*ee == '"') quoted = !quoted;
            ee++;
        }
        f->proto = f->host = NULL;
        const char *p = v;
        while (p < ee) {
            const char *pe = p;
            quoted = 0;
            while (pe < ee && (quoted || *pe != ';')) {
                if (*pe == '"') quoted = !quoted;
                pe++;
            }
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            if (eq) {
                const char *k = p, *val = eq + 1;
                size_t kl = (size_t)(eq - p), vl = (size_t)(pe - val);
                trim(&k, &kl);
                trim(&val, &vl);
                if (kl == 3 && strncasecmp(k, "for", 3) == 0) {
                    add_node(f, val, vl);
                } else {
                    if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') val++, vl -= 2;
                    if (kl == 5 && strncasecmp(k, "proto", 5) == 0)
                        f->proto = val, f->proto_len = vl;
                    else if (kl == 4 && strncasecmp(k, "host", 4) == 0)
                        f->host = val, f->host_len = vl;
                }
            }
            p = pe + (pe < ee);
        }
        v = ee + (ee < end);
    }
}

static int ieq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* The last comma-separated value of a header (the one the nearest proxy set). */
static void last_value(const char **p, size_t *n)
{
    const char *c = NULL;
    for (size_t k = *n; k > 0; k--)
        if ((*p)[k - 1] == ',') {
            c = *p + k - 1;
            break;
        }
    if (c) {
        *n -= (size_t)(c + 1 - *p);
        *p = c + 1;
    }
    trim(p, n);
}

void conn_proxy_apply(conn *c, wsgi_request *req);
void conn_proxy_apply(conn *c, wsgi_request *req)
{
    c->fwd_peer[0] = '\0';
    if (!proxy_trusted(c->peer)) return;
    fwd f = {0};
    int have_x = 0;
    wsgi_header *host_hdr = NULL;
    wsgi_header *hs = (wsgi_header *)req->headers; /* conn.hdr_ptrs: the connection's own */
    int have_xff = 0;
    const char *xproto = NULL, *xhost = NULL;
    size_t xproto_len = 0, xhost_len = 0;
    for (size_t k = 0; k < req->n_headers; k++) {
        const wsgi_header *h = &hs[k];
        if (ieq(h->name, h->name_len, "forwarded")) {
            parse_forwarded(&f, h->value, h->value_len);
        } else if (ieq(h->name, h->name_len, "x-forwarded-for")) {
            have_xff = have_x = 1;
        } else if (ieq(h->name, h->name_len, "x-forwarded-proto")) {
            xproto = h->value, xproto_len = h->value_len, have_x = 1;
        } else if (ieq(h->name, h->name_len, "x-forwarded-host")) {
            xhost = h->value, xhost_len = h->value_len, have_x = 1;
        } else if (ieq(h->name, h->name_len, "host")) {
            host_hdr = &hs[k];
        }
    }
    if (have_x) {
        memset(&f, 0, sizeof(f)); /* Forwarded, if any, is the client's */
        /* Every line, in order: the last ones are the nearest proxies' (one that adds a line of
         * its own puts it after all those the client sent); add_node() keeps the right-most. */
        for (size_t k = 0; k < req->n_headers && have_xff; k++) {
            if (!ieq(hs[k].name, hs[k].name_len, "x-forwarded-for")) continue;
            const char *p = hs[k].value, *end = p + hs[k].value_len;
            while (p < end) {
                const char *e = memchr(p, ',', (size_t)(end - p));
                if (!e) e = end;
                add_node(&f, p, (size_t)(e - p));
                p = e + (e < end);
            }
        }
        if (xproto) {
            last_value(&xproto, &xproto_len);
            f.proto = xproto, f.proto_len = xproto_len;
        }
        if (xhost) {
            last_value(&xhost, &xhost_len);
            f.host = xhost, f.host_len = xhost_len;
        }
    }
    if (f.n) {
        /* Right to left: the first address that is not a trusted proxy is the client; if all
         * are, the left-most. */
        size_t pick = 0;
        for (size_t k = f.n; k > 0; k--) {
            if (!trusted_n(f.nodes[k - 1], f.lens[k - 1])) {
                pick = k - 1;
                break;
            }
        }
        net probe;
        if (f.lens[pick] < sizeof(c->fwd_peer) &&
            parse_addr(f.nodes[pick], f.lens[pick], &probe) == 0) {
            memcpy(c->fwd_peer, f.nodes[pick], f.lens[pick]);
            c->fwd_peer[f.lens[pick]] = '\0';
            req->client_addr = c->fwd_peer;
            req->client_port = 0;
        }
    }
    if (f.proto) {
        if (ieq(f.proto, f.proto_len, "https") || ieq(f.proto, f.proto_len, "wss"))
            req->scheme = "https";
        else if (ieq(f.proto, f.proto_len, "http") || ieq(f.proto, f.proto_len, "ws"))
            req->scheme = "http";
    }
    /* Not a host (a client's own X-Forwarded-Host that the proxy passed on): ignored, as Host
     * itself would have been refused (check_head()). */
    if (f.host && f.host_len && host_hdr && conn_valid_host(f.host, f.host_len)) {
        host_hdr->value = f.host;
        host_hdr->value_len = f.host_len;
    }
}
