/* permessage-deflate (RFC 7692) for ws_conn.c: choosing the first offer of Sec-WebSocket-Extensions
 * we can honour and writing the answer, compressing a message (raw deflate, sync flush, without the
 * 00 00 ff ff tail) and inflating one within the --ws-max-size limit, so that a small compressed
 * message cannot inflate into a large one.
 *
 * Memory: a zlib stream is made on the first message in its direction, not at the handshake (an
 * idle connection holds none), and with no_context_takeover it is reset after each message. The
 * deflate stream uses memLevel 5 (the websockets library's choice): with a 15-bit window it holds
 * about 144 KiB instead of zlib's default 256 KiB, for a slightly lower ratio; an inflate stream
 * holds about 40 KiB. */
#define ZLIB_CONST
#include "conn.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* ---- negotiation ------------------------------------------------------------------------------
 */

typedef struct lexer {
    const char *p, *end;
} lexer;

static void skip_ows(lexer *lx)
{
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t'))
        lx->p++;
}

static int is_tchar(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return 1;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* A token; its length (0: none). */
static size_t token(lexer *lx, const char **tok)
{
    *tok = lx->p;
    while (lx->p < lx->end && is_tchar((unsigned char)*lx->p))
        lx->p++;
    return (size_t)(lx->p - *tok);
}

/* A parameter value: a token or a quoted string (RFC 7692 7.1: its content must be a token),
 * copied into buf. Its length, or -1 if malformed or too long for buf. */
static int value(lexer *lx, char *buf, size_t cap)
{
    size_t n = 0;
    if (lx->p < lx->end && *lx->p == '"') {
        lx->p++;
        for (;;) {
            if (lx->p == lx->end) return -1;
            char ch = *lx->p++;
            if (ch == '"') break;
            if (ch == '\\') {
                if (lx->p == lx->end) return -1;
                ch = *lx->p++;
            }
            if (n + 1 >= cap) return -1;
            buf[n++] = ch;
        }
    } else {
        const char *t;
        n = token(lx, &t);
        if (n == 0 || n >= cap) return -1;
        memcpy(buf, t, n);
    }
    buf[n] = 0;
    return (int)n;
}

static int ieq(const char *a, size_t alen, const char *lit)
{
    return alen == strlen(lit) && strncasecmp(a, lit, alen) == 0;
}

/* A window size parameter: 8..15, digits only, no leading zero. -1 if invalid. */
static int window_bits(const char *v)
{
    if (v[0] >= '8' && v[0] <= '9' && !v[1]) return v[0] - '0';
    if (v[0] == '1' && v[1] >= '0' && v[1] <= '5' && !v[2]) return 10 + v[1] - '0';
    return -1;
}

enum { P_SERVER_NO_CTX = 1, P_CLIENT_NO_CTX = 2, P_SERVER_BITS = 4, P_CLIENT_BITS = 8 };

/* Parse one element of the list at lx (up to the next top-level comma) into *p. Returns 1 if it is
 * a permessage-deflate offer we accept, 0 if not (another extension, parameters we cannot honour),
 * -1 if the header is malformed (the rest of it cannot be trusted). */
static int offer(lexer *lx, ws_pmd *p)
{
    const char *name;
    size_t name_len = token(lx, &name);
    if (name_len == 0) return -1;
    int ours = ieq(name, name_len, "permessage-deflate"), ok = ours, seen = 0;
    ws_pmd o = {.on = 1, .server_bits = 15, .client_bits = 15};
    for (;;) {
        skip_ows(lx);
        if (lx->p == lx->end || *lx->p == ',') break;
        if (*lx->p != ';') return -1;
        lx->p++;
        skip_ows(lx);
        const char *pn;
        size_t pn_len = token(lx, &pn);
        if (pn_len == 0) return -1;
        skip_ows(lx);
        char v[16];
        int has_value = 0;
        if (lx->p < lx->end && *lx->p == '=') {
            lx->p++;
            skip_ows(lx);
            if (value(lx, v, sizeof(v)) < 0) {
                /* A value we cannot hold: not a window size, so not an offer we take; skip it. */
                if (!ours) return -1;
                ok = 0;
                while (lx->p < lx->end && *lx->p != ';' && *lx->p != ',')
                    lx->p++;
                continue;
            }
            has_value = 1;
        }
        if (!ours) continue;
        int bit;
        if (ieq(pn, pn_len, "server_no_context_takeover")) {
            bit = P_SERVER_NO_CTX;
            ok &= !has_value;
            o.server_no_ctx = 1;
        } else if (ieq(pn, pn_len, "client_no_context_takeover")) {
            bit = P_CLIENT_NO_CTX;
            ok &= !has_value;
            o.client_no_ctx = 1;
        } else if (ieq(pn, pn_len, "server_max_window_bits")) {
            /* zlib's raw deflate has no 8-bit window: decline an offer that requires it. */
            bit = P_SERVER_BITS;
            int b = has_value ? window_bits(v) : -1;
            ok &= b >= 9;
            o.server_bits = (unsigned char)(b > 0 ? b : 15);
            o.server_bits_set = 1;
        } else if (ieq(pn, pn_len, "client_max_window_bits")) {
            /* Without a value: the client could use a smaller window; it keeps 15 (not echoed). */
            bit = P_CLIENT_BITS;
            int b = has_value ? window_bits(v) : 15;
            ok &= b >= 8;
            o.client_bits = (unsigned char)(b > 0 ? b : 15);
            o.client_bits_set = has_value;
        } else {
            ok = 0; /* a parameter we do not know */
            continue;
        }
        ok &= !(seen & bit); /* RFC 7692 7.1: a repeated parameter declines the offer */
        seen |= bit;
    }
    if (!ok) return 0;
    *p = o;
    return 1;
}

int ws_pmd_negotiate(ws_pmd *p, const wsgi_header *h, size_t n)
{
    memset(p, 0, sizeof(*p));
    for (size_t k = 0; k < n; k++) {
        if (!ieq(h[k].name, h[k].name_len, "sec-websocket-extensions")) continue;
        lexer lx = {h[k].value, h[k].value + h[k].value_len};
        for (;;) {
            skip_ows(&lx);
            if (lx.p == lx.end) break;
            if (*lx.p == ',') {
                lx.p++;
                continue;
            }
            int r = offer(&lx, p);
            if (r > 0) return 1;
            if (r < 0) break;
        }
    }
    memset(p, 0, sizeof(*p));
    return 0;
}

size_t ws_pmd_answer(const ws_pmd *p, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "permessage-deflate%s%s",
                     p->server_no_ctx ? "; server_no_context_takeover" : "",
                     p->client_no_ctx ? "; client_no_context_takeover" : "");
    if (n > 0 && (size_t)n < cap && p->server_bits_set)
        n += snprintf(buf + n, cap - (size_t)n, "; server_max_window_bits=%d", p->server_bits);
    if (n > 0 && (size_t)n < cap && p->client_bits_set)
        n += snprintf(buf + n, cap - (size_t)n, "; client_max_window_bits=%d", p->client_bits);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- messages ----------------------------------------------------------------------------------
 */

static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};

/* Hand zlib the next piece of [*in, *in + *left) (avail_in is an unsigned int). */
static void next_in(z_stream *z, const unsigned char **in, size_t *left)
{
    if (z->avail_in || !*left) return;
    size_t n = *left > UINT_MAX ? UINT_MAX : *left;
    z->next_in = *in;
    z->avail_in = (uInt)n;
    *in += n;
    *left -= n;
}

static int grow(char **buf, size_t *cap, size_t want)
{
    char *b = realloc(*buf, want);
    if (!b) return -1;
    *buf = b;
    *cap = want;
    return 0;
}

int ws_pmd_compress(ws_pmd *p, const char *data, size_t len, char **out, size_t *out_len)
{
    z_stream *z = p->zd;
    if (!z) {
        z = calloc(1, sizeof(*z));
        if (!z) return -1;
        if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -(int)p->server_bits, 5,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return -1;
        }
        p->zd = z;
    }
    size_t cap = (size_t)deflateBound(z, (uLong)len) + 16, used = 0;
    char *buf = malloc(cap);
    if (!buf) return -1;
    const unsigned char *in = (const unsigned char *)data;
    size_t left = len;
    for (;;) {
        next_in(z, &in, &left);
        if (used == cap && grow(&buf, &cap, cap * 2) < 0) goto fail;
        size_t room = cap - used > UINT_MAX ? UINT_MAX : cap - used;
        z->next_out = (Bytef *)buf + used;
        z->avail_out = (uInt)room;
        if (deflate(z, Z_SYNC_FLUSH) == Z_STREAM_ERROR) goto fail;
        used += room - z->avail_out;
        /* Done when all input is in and the flush did not fill the output. */
        if (!z->avail_in && !left && z->avail_out) break;
    }
    /* RFC 7692 7.2.1: the sync flush's empty stored block is not sent. What remains of an empty
     * message may be nothing (the stream was flushed already), which the client could not inflate
     * (00 00 ff ff alone is no block): send one 0x00 byte instead (7.2.3.6). */
    if (used >= 4 && memcmp(buf + used - 4, tail, 4) == 0) used -= 4;
    if (used == 0) buf[used++] = 0x00;
    if (p->server_no_ctx) deflateReset(z);
    *out = buf;
    *out_len = used;
    return 0;
fail:
    free(buf);
    deflateReset(z);
    return -1;
}

int ws_pmd_inflate(ws_pmd *p, const unsigned char *data, size_t len, uint64_t max, char **out,
                   size_t *out_len)
{
    z_stream *z = p->zi;
    if (!z) {
        z = calloc(1, sizeof(*z));
        if (!z) return WS_PMD_NOMEM;
        /* zlib's deflate turns an 8-bit window into 9 (see zlib.h): a larger window is safe. */
        int bits = p->client_bits < 9 ? 9 : p->client_bits;
        if (inflateInit2(z, -bits) != Z_OK) {
            free(z);
            return WS_PMD_NOMEM;
        }
        p->zi = z;
    }
    size_t limit = max > SIZE_MAX - 1 ? SIZE_MAX - 1 : (size_t)max;
    size_t cap = len < 1024 ? 4096 : len * 4, used = 0;
    if (cap > limit + 1) cap = limit + 1;
    char *buf = malloc(cap);
    if (!buf) return WS_PMD_NOMEM;
    int rc = 0;
    /* The message, then the 00 00 ff ff its sender left out (RFC 7692 7.2.2). */
    const unsigned char *parts[2] = {data, tail};
    size_t sizes[2] = {len, 4};
    for (int k = 0; k < 2 && !rc; k++) {
        const unsigned char *in = parts[k];
        size_t left = sizes[k];
        z->avail_in = 0;
        for (;;) {
            next_in(z, &in, &left);
            if (used == cap) {
                if (cap > limit) {
                    rc = WS_PMD_TOO_BIG;
                    break;
                }
                size_t want = cap > (limit + 1) / 2 ? limit + 1 : cap * 2;
                if (grow(&buf, &cap, want) < 0) {
                    rc = WS_PMD_NOMEM;
                    break;
                }
            }
            size_t room = cap - used > UINT_MAX ? UINT_MAX : cap - used;
            z->next_out = (Bytef *)buf + used;
            z->avail_out = (uInt)room;
            int r = inflate(z, Z_SYNC_FLUSH);
            used += room - z->avail_out;
            if (used > limit) {
                rc = WS_PMD_TOO_BIG;
                break;
            }
            if (r == Z_STREAM_END) {
                /* The sender ended the stream (BFINAL): the next message starts a new one. */
                inflateReset(z);
                k = 2;
                break;
            }
            if (r == Z_MEM_ERROR) {
                rc = WS_PMD_NOMEM;
                break;
            }
            if (r != Z_OK && r != Z_BUF_ERROR) {
                rc = WS_PMD_BAD;
                break;
            }
            if (!z->avail_in && !left && z->avail_out) break; /* this part is all in */
            if (r == Z_BUF_ERROR && z->avail_out) {
                rc = WS_PMD_BAD; /* no progress with room to write: cannot happen on good data */
                break;
            }
        }
    }
    if (rc || p->client_no_ctx) inflateReset(z);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = used;
    return 0;
}

void ws_pmd_free(ws_pmd *p)
{
    if (p->zd) {
        deflateEnd(p->zd);
        free(p->zd);
        p->zd = NULL;
    }
    if (p->zi) {
        inflateEnd(p->zi);
        free(p->zi);
        p->zi = NULL;
    }
}
