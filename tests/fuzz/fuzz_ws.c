/* libFuzzer target: WebSocket frames from a client, as libwsgi-epoll reads them after the
 * handshake (examples/epoll/ws_conn.c): a wslay server context configured as the server does
 * (maximum message size, RSV1 allowed only when permessage-deflate was agreed), fed the bytes in
 * pieces of pseudo-random sizes with WOULDBLOCK in between as from a non-blocking socket, its
 * output drained; whole messages inflated by the server's ws_deflate.c within the size limit, and
 * an inflated message compressed again (the server's way of sending) and inflated by a peer with
 * the mirrored parameters, which must give back the same bytes. The permessage-deflate offer
 * comes from the input too and goes through ws_pmd_negotiate() / ws_pmd_answer().
 *
 * What this does not reach: ws_conn.c's own wslay callbacks and read_frames() are static and
 * bound to the server's connection, timers and socket; fuzz_server_ws drives them (and the
 * library's side of each message, and the app) through a real connection to the server, slower
 * and less deterministic than this target; see tests/fuzz/README.md for the entry point that
 * would let them be fuzzed directly. The library's side of a message (asgi_conn_ws_message():
 * UTF-8 checks, the queue, the app) is also fuzzed by fuzz_request.
 *
 * Input: a flag byte, the Sec-WebSocket-Extensions value (length-prefixed), a split seed, then
 * the frames. */
#include "conn.h"
#include "fuzz_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_ws: check failed: %s (line %d)\n", #cond, __LINE__);             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fz_ws {
    const uint8_t *data;
    size_t len, off, piece; /* piece: bytes the "socket" has until the next WOULDBLOCK */
    uint32_t seed;
    int eof, failed, closed, compressed;
    uint64_t max;
    ws_pmd pmd;
} fz_ws;

static uint32_t next_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user_data)
{
    fz_ws *w = user_data;
    (void)flags;
    if (w->off == w->len) {
        w->eof = 1; /* the client closed the connection */
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (!w->piece) {
        w->piece = 1 + next_rand(&w->seed) % 64; /* the next read, after this WOULDBLOCK */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = w->len - w->off;
    if (n > w->piece) n = w->piece;
    if (n > len) n = len;
    memcpy(buf, w->data + w->off, n);
    w->off += n;
    w->piece -= n;
    return (ssize_t)n;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    (void)ctx, (void)data, (void)flags, (void)user_data;
    return (ssize_t)len; /* the client reads everything */
}

/* As ws_conn.c: a Close frame with a 1-byte payload is a protocol error. */
static void on_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg,
                              void *user_data)
{
    fz_ws *w = user_data;
    (void)ctx;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1) w->failed = 1;
}

/* The server compresses what the app sends; a client with the mirrored parameters must inflate
 * it back to the same bytes. */
static void round_trip(fz_ws *w, const char *msg, size_t len)
{
    char *z = NULL, *back = NULL;
    size_t zlen = 0, blen = 0;
    if (ws_pmd_compress(&w->pmd, msg, len, &z, &zlen) != 0) return; /* out of memory only */
    ws_pmd peer = {.on = 1,
                   .client_no_ctx = 1,
                   .client_bits = w->pmd.server_bits,
                   .server_bits = w->pmd.server_bits};
    int r = ws_pmd_inflate(&peer, (const unsigned char *)z, zlen, len + 1, &back, &blen);
    /* With context takeover the peer would need the whole history: only the first message,
     * whose stream starts fresh, is checked then. */
    if (w->pmd.server_no_ctx || !w->compressed) {
        CHECK(r == 0);
        CHECK(blen == len && (len == 0 || memcmp(back, msg, len) == 0));
    }
    w->compressed = 1;
    free(back);
    free(z);
    ws_pmd_free(&peer);
}

static void on_msg_recv_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_msg_recv_arg *arg, void *user_data)
{
    fz_ws *w = user_data;
    (void)ctx;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        w->closed = 1;
        return;
    }
    if (arg->opcode != WSLAY_TEXT_FRAME && arg->opcode != WSLAY_BINARY_FRAME) return;
    CHECK(arg->msg_length <= w->max);
    if (!wslay_get_rsv1(arg->rsv)) return;
    CHECK(w->pmd.on); /* wslay refuses RSV1 unless allowed */
    char *plain = NULL;
    size_t len = 0;
    int r = ws_pmd_inflate(&w->pmd, arg->msg, arg->msg_length, w->max, &plain, &len);
    CHECK(r == 0 || r == WS_PMD_TOO_BIG || r == WS_PMD_BAD);
    if (r != 0) {
        w->failed = 1;
        return;
    }
    CHECK(len <= w->max);
    round_trip(w, plain, len);
    free(plain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    unsigned f = fz_u8(&in);
    fz_ws w = {.max = (f & 3) == 0 ? 16 : (f & 3) == 1 ? 1024 : 64 * 1024};
    /* One or two Sec-WebSocket-Extensions headers, and one of another name. */
    wsgi_header h[3];
    size_t nh = 0, n;
    const uint8_t *v = fz_span8(&in, &n);
    h[nh++] = (wsgi_header){.name = "Sec-WebSocket-Extensions",
                            .name_len = 24,
                            .value = (const char *)v,
                            .value_len = n};
    if (f & 4)
        h[nh++] = (wsgi_header){.name = "X-Other", .name_len = 7, .value = "a", .value_len = 1};
    if (f & 8) {
        v = fz_span8(&in, &n);
        h[nh++] = (wsgi_header){.name = "sec-websocket-extensions",
                                .name_len = 24,
                                .value = (const char *)v,
                                .value_len = n};
    }
    int agreed = ws_pmd_negotiate(&w.pmd, h, nh);
    CHECK(agreed == 0 || agreed == 1);
    CHECK(agreed == w.pmd.on);
    if (agreed) {
        char answer[160];
        size_t alen = ws_pmd_answer(&w.pmd, answer, sizeof answer);
        CHECK(alen > 0 && alen < sizeof answer);
        CHECK(w.pmd.server_bits >= 9 && w.pmd.server_bits <= 15);
        CHECK(w.pmd.client_bits >= 8 && w.pmd.client_bits <= 15);
    }
    w.seed = fz_u8(&in) * 2654435761u + 1;
    w.data = in.p;
    w.len = in.left;
    w.piece = 1 + next_rand(&w.seed) % 64;

    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start_cb,
        .on_msg_recv_callback = on_msg_recv_cb,
    };
    wslay_event_context_ptr ctx;
    CHECK(wslay_event_context_server_init(&ctx, &cbs, &w) == 0);
    wslay_event_config_set_max_recv_msg_length(ctx, w.max);
    if (w.pmd.on) wslay_event_config_set_allowed_rsv_bits(ctx, WSLAY_RSV1_BIT);
    /* Read until the input is used up or wslay stops reading; drain its output (pongs, the
     * Close) after each read, as the server does on EPOLLOUT. */
    for (int turns = 0; turns < 100000; turns++) {
        int r = wslay_event_recv(ctx);
        if (wslay_event_want_write(ctx)) wslay_event_send(ctx);
        if (r != 0 || w.eof || w.failed || !wslay_event_get_read_enabled(ctx)) break;
        CHECK(turns < 99999);
    }
    wslay_event_context_free(ctx);
    ws_pmd_free(&w.pmd);
    return 0;
}
