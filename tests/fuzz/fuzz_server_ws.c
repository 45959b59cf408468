/* libFuzzer target: WebSocket frames into the real libwsgi-epoll server (examples/epoll/ws_conn.c
 * with its own wslay callbacks, read_frames(), permessage-deflate (ws_deflate.c), the closing
 * handshake, and the ASGI app behind it; server_harness.c runs the server in this process). Each
 * input is one connection: an opening handshake (the permessage-deflate offer, a subprotocol
 * offer, the path that picks what the app does, extra header lines: all from the input), and once
 * the server answered, frames built from the input (well-formed or not: any header byte, masked or
 * not, compressed or not, fragmented with control frames in between, large announced lengths) or
 * raw bytes, written in pieces of pseudo-random sizes while reading; then a half-close and the
 * answer read to the end. The app (apps/fuzz_server_apps.py: asgi_app) echoes messages, closes
 * on "close...", sends a large message on "big...", fails on "fail...", denies on path /d.
 *
 * Checks: no crash or sanitizer report; the server closes once the client half-closed (else a
 * hang); the app's checks of the scope and events; and what the server sends after its 101 is a
 * valid sequence of server frames: unmasked, no RSV2/RSV3, RSV1 only on the first frame of a
 * message and only with permessage-deflate agreed, known opcodes, control frames short and whole,
 * continuations only inside a message, minimal length encodings, close codes that may be sent,
 * nothing after the Close frame, compressed messages that inflate, text that is UTF-8.
 *
 * Input: a flag byte (bits 0-1: the extension offer: none, a plain one, one with parameters, or
 * from the input; bit 2: offer subprotocols; bits 3-4: the path: /e, /p (accept with the first
 * subprotocol), /d (deny), or from the input; bit 5: extra header lines from the input), a split
 * seed, the offer and path and header lines when they come from the input (each a length byte and
 * bytes), then operations until the input ends: an op byte (bits 0-1: raw bytes, one frame, one
 * message in fragments, one large frame; the rest its parameters, see add_op()) and its data; raw
 * bytes of length 0 are a sync point: the client waits for the server's answer (20 ms at most). */
#include "fuzz_input.h"
#include "server_harness.h"

#include <string.h>
#include <zlib.h>

static const fzs_config configs[] = {
    {"epoll-asgi-ws", 0, 1,
     "--ws-max-size 4096 --max-header-size 8192 --timeout-request 60 --timeout-keepalive 60"}};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fzs_start(configs, 1);
    return 0;
}

/* ---- building what the client sends --------------------------------------------------------- */

#define MAX_SEND (1u << 20)
/* How long the client waits for the answer to its handshake before it sends the frames anyway. */
#define HEAD_WAIT_MS 300

typedef struct obuf {
    uint8_t *p;
    size_t len, cap;
} obuf;

static void put(obuf *b, const void *data, size_t n)
{
    if (b->len + n > MAX_SEND) n = MAX_SEND - b->len;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        FZS_CHECK(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void put_str(obuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A client frame: b0 as given (FIN, RSV, opcode), masked with key unless key is NULL, the length
 * in the shortest encoding unless wide (16-bit, or 64-bit for wide == 2). */
static void put_frame(obuf *b, unsigned b0, const uint8_t *key, const uint8_t *payload, size_t n,
                      int wide)
{
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = (uint8_t)b0;
    unsigned m = key ? 0x80 : 0;
    if (n < 126 && !wide) {
        h[hl++] = (uint8_t)(m | n);
    } else if (n < 65536 && wide != 2) {
        h[hl++] = (uint8_t)(m | 126);
        h[hl++] = (uint8_t)(n >> 8);
        h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = (uint8_t)(m | 127);
        for (int k = 7; k >= 0; k--)
            h[hl++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    if (key) {
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    put(b, h, hl);
    size_t at = b->len;
    put(b, payload, n);
    if (key)
        for (size_t k = at; k < b->len; k++)
            b->p[k] ^= key[(k - at) & 3];
}

/* permessage-deflate's compression of one message (a fresh stream: valid for any agreed window
 * and context takeover): raw deflate, sync flush, the final 00 00 ff ff removed. */
static size_t deflate_msg(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    FZS_CHECK(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) ==
              Z_OK);
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    FZS_CHECK(deflate(&z, Z_SYNC_FLUSH) == Z_OK && z.avail_in == 0);
    size_t len = cap - z.avail_out;
    deflateEnd(&z);
    if (len >= 4 && memcmp(out + len - 4, "\0\0\xff\xff", 4) == 0) len -= 4;
    return len;
}

static const uint8_t fixed_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Sync points: where the client stops writing until the server has answered something (up to
 * SYNC_MS), so that the app's answers to a message come before what follows it (a Close). */
#define MAX_SYNC 16
#define SYNC_MS  20
typedef struct syncs {
    size_t at[MAX_SYNC];
    size_t n;
} syncs;

/* One operation of the input. */
static void add_op(fz_in *in, obuf *b, syncs *sy)
{
    unsigned op = fz_u8(in);
    size_t n;
    const uint8_t *p;
    uint8_t z[512];
    switch (op & 3) {
    case 0: /* raw bytes; none: a sync point */
        p = fz_span8(in, &n);
        put(b, p, n);
        /* Not before the first byte nor after the last: nothing to wait for there. */
        if (!n && sy->n < MAX_SYNC && b->len && in->left) sy->at[sy->n++] = b->len;
        break;
    case 1: { /* one frame: its first byte from the input; bit 2 unmasked, bit 3 compressed,
               * bit 4 a 16-bit length, bit 5 the mask key from the input */
        unsigned b0 = fz_u8(in);
        uint8_t key[4];
        memcpy(key, fixed_key, 4);
        if (op & 32)
            for (int k = 0; k < 4; k++)
                key[k] = (uint8_t)fz_u8(in);
        p = fz_span8(in, &n);
        if (op & 8) {
            n = deflate_msg(p, n, z, sizeof(z));
            p = z;
        }
        put_frame(b, b0, (op & 4) ? NULL : key, p, n, (op & 16) ? 1 : 0);
        break;
    }
    case 2: { /* a message in fragments: bit 2 binary, bits 3-4 fragments - 1, bit 5 compressed,
               * bit 6 a ping between fragments, bit 7 a close frame after it */
        p = fz_span8(in, &n);
        if (op & 32) {
            n = deflate_msg(p, n, z, sizeof(z));
            p = z;
        }
        size_t parts = 1 + ((op >> 3) & 3), off = 0;
        for (size_t k = 0; k < parts; k++) {
            size_t len = k + 1 == parts ? n - off : (n - off) / 2;
            unsigned b0 = k == 0 ? ((op & 4) ? 2u : 1u) | ((op & 32) ? 0x40u : 0u) : 0u;
            if (k + 1 == parts) b0 |= 0x80;
            put_frame(b, b0, fixed_key, p + off, len, 0);
            off += len;
            if ((op & 64) && k + 1 < parts) put_frame(b, 0x89, fixed_key, p, n < 8 ? n : 8, 0);
        }
        if (op & 128) {
            static const uint8_t bye[] = {0x03, 0xe8, 'b', 'y', 'e'};
            put_frame(b, 0x88, fixed_key, bye, sizeof(bye), 0);
        }
        break;
    }
    case 3: { /* a large frame: bits 2-3 the opcode (text, binary, ping, continuation), bits
               * 4-5 a length multiplier, bit 6 a 64-bit length, bit 7 FIN off; the byte that
               * fills it from the input */
        static const unsigned ops[4] = {1, 2, 9, 0};
        size_t len = (size_t)fz_u16(in) * (1 + ((op >> 4) & 3));
        unsigned fill = fz_u8(in);
        uint8_t *big = malloc(len ? len : 1);
        FZS_CHECK(big);
        memset(big, (int)fill, len);
        put_frame(b, ops[(op >> 2) & 3] | ((op & 128) ? 0u : 0x80u), fixed_key, big, len,
                  (op & 64) ? 2 : 0);
        free(big);
        break;
    }
    }
}

/* ---- checking what the server sends ---------------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (i + k >= n) return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += k + 1;
    }
    return 1;
}

static int close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "fuzz_server_ws: bad frames from the server: " __VA_ARGS__);               \
        fprintf(stderr, " (at byte %zu of %zu)\n", pos, len);                                      \
        abort();                                                                                   \
    } while (0)

/* The server's frames from s[0], up to len (the last one may be cut short by the close). */
static void check_frames(const uint8_t *s, size_t len, int pmd)
{
    size_t pos = 0;
    int closed = 0, in_msg = 0, text = 0, compressed = 0;
    obuf msg = {0};
    z_stream z;
    int z_on = 0;
    while (pos + 2 <= len) {
        unsigned b0 = s[pos], b1 = s[pos + 1];
        unsigned opcode = b0 & 15, fin = b0 >> 7, rsv1 = (b0 >> 6) & 1;
        if (closed) BAD("a frame after the Close frame");
        if (b1 & 0x80) BAD("a masked frame");
        if (b0 & 0x30) BAD("RSV2/RSV3 set");
        size_t hl = 2;
        uint64_t n = b1 & 0x7f;
        if (n == 126) {
            if (pos + 4 > len) break;
            n = (uint64_t)s[pos + 2] << 8 | s[pos + 3];
            hl = 4;
            if (n < 126) BAD("a 16-bit length of %llu", (unsigned long long)n);
        } else if (n == 127) {
            if (pos + 10 > len) break;
            n = 0;
            for (int k = 0; k < 8; k++)
                n = n << 8 | s[pos + 2 + k];
            hl = 10;
            if (n < 65536 || n >> 63) BAD("a 64-bit length of %llu", (unsigned long long)n);
        }
        if (n > len - pos - hl) break; /* cut short */
        const uint8_t *p = s + pos + hl;
        if (opcode >= 8) {
            if (opcode != 8 && opcode != 9 && opcode != 10) BAD("opcode %u", opcode);
            if (!fin || n > 125 || rsv1)
                BAD("a control frame (fin %u, %llu bytes, rsv1 %u)", fin, (unsigned long long)n,
                    rsv1);
            if (opcode == 8) {
                if (n == 1) BAD("a 1-byte Close payload");
                if (n >= 2 && !close_code_ok((unsigned)p[0] << 8 | p[1]))
                    BAD("close code %u", (unsigned)p[0] << 8 | p[1]);
                if (n > 2 && !utf8_valid(p + 2, n - 2)) BAD("a close reason that is not UTF-8");
                closed = 1;
            }
        } else {
            if (opcode == 1 || opcode == 2) {
                if (in_msg) BAD("a new message inside a fragmented one");
                if (rsv1 && !pmd) BAD("RSV1 without permessage-deflate");
                in_msg = 1;
                text = opcode == 1;
                compressed = rsv1;
                msg.len = 0;
            } else if (opcode == 0) {
                if (!in_msg) BAD("a continuation outside a message");
                if (rsv1) BAD("RSV1 on a continuation");
            } else {
                BAD("opcode %u", opcode);
            }
            put(&msg, p, (size_t)n);
            if (fin) {
                in_msg = 0;
                const uint8_t *m = msg.p;
                size_t mlen = msg.len;
                obuf plain = {0};
                if (compressed) {
                    if (!z_on) {
                        memset(&z, 0, sizeof(z));
                        FZS_CHECK(inflateInit2(&z, -15) == Z_OK);
                        z_on = 1;
                    }
                    put(&msg, "\0\0\xff\xff", 4);
                    z.next_in = msg.p;
                    z.avail_in = (uInt)msg.len;
                    uint8_t chunk[16384];
                    for (;;) {
                        z.next_out = chunk;
                        z.avail_out = sizeof(chunk);
                        int r = inflate(&z, Z_SYNC_FLUSH);
                        if (r != Z_OK && r != Z_BUF_ERROR) BAD("a message that does not inflate");
                        put(&plain, chunk, sizeof(chunk) - z.avail_out);
                        if (z.avail_in == 0 && z.avail_out != 0) break;
                        if (r == Z_BUF_ERROR) BAD("a message that does not inflate");
                    }
                    m = plain.p;
                    mlen = plain.len;
                }
                if (text && !utf8_valid(m, mlen)) BAD("a text message that is not UTF-8");
                free(plain.p);
            }
        }
        pos += hl + (size_t)n;
    }
    if (z_on) inflateEnd(&z);
    free(msg.p);
}

/* ---- one connection -------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    unsigned f = fz_u8(&in);
    uint32_t seed = fz_u8(&in) * 2654435761u + 1;
    obuf hs = {0};
    size_t n;
    const uint8_t *p;
    put_str(&hs, "GET ");
    switch ((f >> 3) & 3) {
    case 0: put_str(&hs, "/echo"); break;
    case 1: put_str(&hs, "/protocol"); break;
    case 2: put_str(&hs, "/deny"); break;
    case 3:
        p = fz_span8(&in, &n);
        put(&hs, p, n);
        break;
    }
    put_str(&hs, " HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n");
    switch (f & 3) {
    case 0: break;
    case 1: put_str(&hs, "Sec-WebSocket-Extensions: permessage-deflate\r\n"); break;
    case 2:
        put_str(&hs, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits; "
                     "server_no_context_takeover; server_max_window_bits=10\r\n");
        break;
    case 3:
        put_str(&hs, "Sec-WebSocket-Extensions: ");
        p = fz_span8(&in, &n);
        put(&hs, p, n);
        put_str(&hs, "\r\n");
        break;
    }
    if (f & 4) put_str(&hs, "Sec-WebSocket-Protocol: chat, superchat\r\n");
    if (f & 32) {
        p = fz_span8(&in, &n);
        put(&hs, p, n);
    }
    put_str(&hs, "\r\n");

    obuf frames = {0};
    syncs sy = {.n = 0};
    while (in.left && frames.len < MAX_SEND)
        add_op(&in, &frames, &sy);

    int fd = fzs_connect(0);
    fzs_buf out = {0};
    /* The frames once the server answered (a head the input left unfinished gets no answer:
     * then they go anyway, as the rest of it). */
    if (fzs_send(fd, hs.p, hs.len, &seed, &out) == 0) {
        fzs_read_until(fd, &out, 0, "\r\n\r\n", HEAD_WAIT_MS);
        size_t from = 0;
        for (size_t k = 0; k <= sy.n && frames.len; k++) {
            size_t to = k < sy.n ? sy.at[k] : frames.len;
            if (fzs_send(fd, frames.p + from, to - from, &seed, &out) != 0) break;
            if (k < sy.n) fzs_wait(fd, &out, out.len, SYNC_MS);
            from = to;
        }
    }
    fzs_finish(fd, &out);
    const uint8_t *end = out.len ? memmem(out.p, out.len, "\r\n\r\n", 4) : NULL;
    if (end && !out.truncated && out.len >= 12 && memcmp(out.p, "HTTP/1.1 101", 12) == 0) {
        size_t head_end = (size_t)(end - out.p) + 4;
        int pmd = memmem(out.p, head_end, "permessage-deflate", 18) != NULL;
        check_frames(out.p + head_end, out.len - head_end, pmd);
    }
    fzs_buf_free(&out);
    free(hs.p);
    free(frames.p);
    return 0;
}
