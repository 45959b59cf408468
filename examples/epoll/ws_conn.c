/* One WebSocket connection with an ASGI app (RFC 6455; include/libwsgi/asgi.h): the opening
 * handshake's checks, the app's decision (101, or a denial over HTTP), framing with wslay on the
 * non-blocking socket, liveness pings and the closing handshake. The connection stays with the
 * loop thread in CONN_WS from the upgrade request to the end, in three phases:
 *
 *  - connecting: the head passed the checks and asgi_websocket_dispatch() started the app; nothing
 *    is answered until it decides, within --timeout-request (else 503). Only the client going away
 *    is watched (EPOLLRDHUP).
 *  - denying: the app answered over HTTP (websocket.close before the accept: 403, or its
 *    websocket.http.response): the response goes out through the exchange's response callbacks
 *    and the output queue, then the connection closes.
 *  - open: on_ws_accept queued the 101 and made a wslay server context. wslay reads frames into
 *    its own 4 KiB buffer (the HTTP buffers are given back) from rbuf, one recv of up to 64 KiB
 *    shared by the worker's WebSockets (see recv_cb), reassembles fragments, answers pings,
 *    checks masking, opcodes, close codes and --ws-max-size, and echoes the client's Close; it
 *    gets text messages as binary ones (mark_kind), whose UTF-8 the library checks instead.
 *    Whole messages go to asgi_conn_ws_message(), after inflating (ws_deflate.c) when
 *    permessage-deflate was agreed; ASGI_PAUSE stops reading the socket until on_read_resume.
 *    The app's messages are copied into wslay's queue (compressed first if agreed); when more than
 *    WS_OUT_HWM bytes wait for the socket (WS_MSG_COST more per message), the app's send() is held
 *    until EPOLLOUT drains them.
 *
 * Like the HTTP exchange, the callbacks only queue and mark (asgi_host.c runs progress() after the
 * loop turn), and a connection that ends while its app still runs leaves the task detached until
 * on_done. The app hears of the end once, through asgi_conn_ws_closed(): the client's Close code
 * (1005 without one), the code we closed with for a client that broke the protocol (1002, 1007,
 * 1009) or at shutdown (1001), and 1006 for a connection lost without a Close, including a client
 * that stopped answering pings. Timers (server.c's lists): --ws-ping-interval between pings,
 * --ws-ping-timeout for the pong, WS_CLOSE_MS for the client's Close once ours is sent;
 * --timeout-request bounds the handshake, and a client that stops reading while pings are off or
 * suspended (they are while the app holds reading paused: the client is not the slow one) or while
 * messages still go out ahead of our Close. A client that pings without reading stops being read
 * once 64 KiB of pongs wait. */
#include "conn.h"
#include "host_log.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <wslay/wslay.h>

/* Bytes of outgoing messages a connection may hold before the app's send() waits. */
#define WS_OUT_HWM (64 * 1024)
/* What a queued message costs beyond its payload (wslay's message and queue entry), so that a
 * flood of empty messages is held back too. */
#define WS_MSG_COST 64
/* At most this many reads (of up to 4 KiB, wslay's buffer) per readiness event (fairness). */
#define READS_PER_EVENT 16

enum ws_phase { WS_CONNECTING, WS_DENYING, WS_OPEN };

struct ws_conn {
    asgi_task t; /* first: the callbacks' user_data */
    enum ws_phase phase;
    wslay_event_context_ptr ctx; /* open */
    ws_pmd pmd;                  /* permessage-deflate, if agreed */
    char accept[29];             /* Sec-WebSocket-Accept */
    int timer;                   /* the TL_* list we last put the connection in */
    int reads;                   /* recv budget left in this event */
    uint64_t fr_left;            /* bytes of the current frame not yet given to wslay */
    int eof, io_error;           /* seen by the recv/send callbacks */
    int closing;                 /* our Close is decided (app, shutdown, or a failure) */
    int close_due;               /* ... but waits for the messages queued before it */
    int close_code;
    char *close_reason; /* malloc'd while close_due */
    size_t close_reason_len;
    int failed;         /* we closed for a protocol error: no Close to wait for */
    int raw_close_sent; /* the 1002 Close went out around wslay (see read_frames) */
    int ping_out;       /* a ping is unanswered */
    size_t pong_bytes;  /* pongs queued since the output last drained (a ping flood's cost) */
    unsigned ping_seq;
    int reported; /* asgi_conn_ws_closed() called */
    int logged;   /* access log line written */
    int shrunk;   /* the HTTP buffers are given back */
    /* A frame header wslay handed to send_cb with more to come: it leaves with the payload in one
     * sendmsg (or alone, from write_out, if none follows). */
    uint8_t hdr[16];
    size_t hdr_len;
    /* The client's Close frame being read (its payload is at most 125 bytes): its reason is
     * checked here, whatever pieces it arrives in (see on_frame_chunk_cb). */
    int in_close;
    size_t close_in_len, close_in_want;
    uint8_t close_in[125];
    /* Which of the data messages handed to wslay and not yet received whole were text, oldest
     * first, one bit each (see mark_kind): at most one begun earlier plus those beginning in one
     * 4 KiB read, whose frames take 6 bytes at least. */
    uint8_t kinds[(1 + 4096 / 6 + 7) / 8 + 1];
    unsigned k_head, k_len;
};

/* What recv_cb read from a socket, shared by every connection: WebSockets live on the loop thread
 * only. One recv of up to 64 KiB serves wslay's 4 KiB reads; what a connection leaves in it when
 * wslay stops reading is moved to that connection's own buffer (read_frames). */
static struct {
    uint8_t buf[64 * 1024];
    size_t off, len;
    ws_conn *owner;
} rbuf;

static const char *peer(const conn *c)
{
    return c->peer[0] ? c->peer : "unix";
}

/* The app learns how the connection ended (once; the library ignores later calls anyway). */
static void report(ws_conn *ws, int code, const char *reason, size_t reason_len)
{
    if (ws->reported) return;
    ws->reported = 1;
    int rc = asgi_conn_ws_closed(ws->t.ac, code, reason, reason_len);
    if (rc != WSGI_OK)
        host_log(WSGI_LOG_ERROR, "asgi_conn_ws_closed: %s: %s", wsgi_strerror(rc), wsgi_errmsg());
}

static void free_io(ws_conn *ws)
{
    if (rbuf.owner == ws) rbuf.owner = NULL;
    free(ws->close_reason);
    ws->close_reason = NULL;
    if (ws->ctx) {
        wslay_event_context_free(ws->ctx);
        ws->ctx = NULL;
    }
    ws_pmd_free(&ws->pmd);
}

static void ws_progress(conn *c);

/* The memory wslay holds for messages waiting for the socket. */
static size_t out_cost(wslay_event_context_ptr ctx)
{
    return wslay_event_get_queued_msg_length(ctx) +
           WS_MSG_COST * wslay_event_get_queued_msg_count(ctx);
}

static void ws_destroy(asgi_task *t)
{
    ws_conn *ws = (ws_conn *)t;
    free_io(ws);
    free(ws);
}

static const asgi_task_ops ws_ops = {.progress = ws_progress, .destroy = ws_destroy};

/* The connection is done with the WebSocket. */
static void release(conn *c)
{
    ws_conn *ws = c->ws;
    c->ws = NULL;
    free_io(ws);
    asgi_task_detach(&ws->t);
}

void ws_conn_drop(conn *c)
{
    ws_conn *ws = c->ws;
    if (ws->phase == WS_OPEN) {
        report(ws, 1006, NULL, 0);
    } else {
        asgi_conn_disconnect(ws->t.ac);
        if (c->status && !ws->logged) conn_access_log(c);
    }
    release(c);
}

/* ---- the opening handshake (RFC 6455 4.2.1) ----------------------------------------------------
 */

static const wsgi_header *header(const wsgi_request *req, const char *name, int *count)
{
    const wsgi_header *found = NULL;
    *count = 0;
    size_t n = strlen(name);
    for (size_t k = 0; k < req->n_headers; k++) {
        const wsgi_header *h = &req->headers[k];
        if (h->name_len == n && strncasecmp(h->name, name, n) == 0) {
            found = h;
            (*count)++;
        }
    }
    return found;
}

static int is_b64(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* Sec-WebSocket-Key must be 16 bytes in base64: 22 characters and "==". */
static int key_valid(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=') return 0;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(k[i])) return 0;
    unsigned char raw[18];
    return EVP_DecodeBlock(raw, (const unsigned char *)k, 24) == 18;
}

/* Sec-WebSocket-Accept: base64(SHA-1(key + the RFC's GUID)), into out[29]. */
static int accept_key(const char *key, size_t n, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char buf[24 + sizeof(guid)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    memcpy(buf, key, n);
    memcpy(buf + n, guid, sizeof(guid) - 1);
    if (!EVP_Digest(buf, n + sizeof(guid) - 1, md, &md_len, EVP_sha1(), NULL) || md_len != 20)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28 ? 0 : -1;
}

/* 0 if the head is a valid opening handshake (out's accept key and deflate filled), else the
 * status to answer: 426 for another WebSocket version, 400 for the rest. */
static int check_handshake(conn *c, const wsgi_request *req, ws_conn *out)
{
    if (req->http_major != 1 || req->http_minor < 1) return 400;
    if (req->method_len != 3 || memcmp(req->method, "GET", 3) != 0) return 400;
    if (c->chunked || c->content_length > 0) return 400; /* a body: not a handshake */
    int n;
    if (!header(req, "host", &n) || n != 1) return 400;
    if (!conn_header_has_token(c, "connection", "upgrade")) return 400;
    const wsgi_header *key = header(req, "sec-websocket-key", &n);
    if (!key || n != 1 || !key_valid(key->value, key->value_len)) return 400;
    const wsgi_header *ver = header(req, "sec-websocket-version", &n);
    if (!ver || n != 1 || ver->value_len != 2 || memcmp(ver->value, "13", 2) != 0) return 426;
    if (accept_key(key->value, key->value_len, out->accept) < 0) return 500;
    if (server_options(c->srv)->ws_per_message_deflate)
        ws_pmd_negotiate(&out->pmd, req->headers, req->n_headers);
    return 0;
}

/* ---- wslay's I/O callbacks (inside wslay_event_recv / wslay_event_send) ------------------------
 */

static int rbuf_spill(conn *c);
static void fail(ws_conn *ws, int code, const char *why);

/* The frame head at @p (@avail bytes there): its length in *hl and its payload's in *plen, or 0 if
 * it is not all there. */
static int frame_head(const uint8_t *p, size_t avail, size_t *hl, uint64_t *plen)
{
    if (avail < 2) return 0;
    uint64_t n = p[1] & 0x7f;
    size_t h = 2 + ((p[1] & 0x80) ? 4 : 0) + (n == 126 ? 2 : n == 127 ? 8 : 0);
    if (avail < h) return 0;
    if (n >= 126) {
        size_t nb = n == 126 ? 2 : 8;
        n = 0;
        for (size_t k = 0; k < nb; k++)
            n = n << 8 | p[2 + k];
    }
    *hl = h;
    *plen = n;
    return 1;
}

/* A data frame's head wslay is about to read (@h, in the bytes handed to it): text is made binary.
 * wslay checks the UTF-8 of text messages one byte at a time (a DFA in wslay_event_recv, which no
 * option turns off): a third of the CPU of a worker echoing 4 KiB text messages (bench/README.md,
 * session 9). The library checks it anyway, when it makes the app's str (Python's strict UTF-8
 * decoder: asgi_conn_ws_message() answers WSGI_ERR_INVAL, and on_message fails the connection
 * with 1007, as wslay did; at the message's end rather than at the first bad fragment, which RFC
 * 6455 8.1 allows). So the first frame of a text message is handed to wslay as binary, and kinds
 * remembers it was text, in order, for on_msg_recv_cb (was_text). Continuation and control frames
 * (a Close's reason) are left as they are, for wslay. */
static void mark_kind(ws_conn *ws, uint8_t *h)
{
    unsigned op = *h & 0x0f;
    if ((op != WSLAY_TEXT_FRAME && op != WSLAY_BINARY_FRAME) || ws->k_len >= sizeof(ws->kinds) * 8)
        return;
    unsigned bit = (ws->k_head + ws->k_len++) % (sizeof(ws->kinds) * 8);
    if (op == WSLAY_TEXT_FRAME) {
        ws->kinds[bit / 8] |= (uint8_t)(1u << (bit % 8));
        *h = (uint8_t)((*h & 0xf0) | WSLAY_BINARY_FRAME);
    } else {
        ws->kinds[bit / 8] &= (uint8_t) ~(1u << (bit % 8));
    }
}

/* Whether the frame head at @p (@avail bytes there, at least 2) is one wslay's frame parser
 * refuses: a control frame (opcode 8..15) fragmented or longer than 125 bytes (RFC 6455 5.5), or
 * a length not in its shortest form (5.2). wslay 1.1.1 answers those with a Close without a code,
 * where the RFC asks for 1002 (7.4.1), so the gate stops in front of them (recv_cb fails the
 * connection with 1002 instead). 0 while the bytes do not tell yet. */
static int head_malformed(const uint8_t *p, size_t avail)
{
    unsigned n7 = p[1] & 0x7f;
    if ((p[0] & 0x08) && (n7 > 125 || !(p[0] & 0x80))) return 1;
    size_t hl;
    uint64_t plen;
    if (n7 < 126 || !frame_head(p, avail, &hl, &plen)) return 0;
    return n7 == 126 ? plen < 126 : (plen < 65536 || plen >> 63);
}

/* How many of the next @m bytes of the client's stream (at @p) wslay may have now: never a frame
 * header or a control frame in part. wslay 1.1.1 checks a Close's code and reason in each piece it
 * reads, as if every piece began with the code: a valid Close cut by the network inside its
 * reason was failed with 1007. A control frame is at most 131 bytes, so holding it back until it
 * is whole costs nothing; data frames go through in any pieces. *left: the bytes of the current
 * frame still to come after those (@fr_left before). 0 if one incomplete header or control frame
 * starts the bytes. A malformed head (head_malformed) is never let through: the bytes stop in
 * front of it, and *bad is set. With @mark (the bytes are wslay's copy), each data frame's head
 * let through is passed to mark_kind. */
static size_t frame_gate(ws_conn *mark, uint64_t fr_left, uint8_t *p, size_t m, uint64_t *left,
                         int *bad)
{
    size_t pos = 0;
    *bad = 0;
    while (pos < m) {
        if (fr_left) {
            size_t take = fr_left < m - pos ? (size_t)fr_left : m - pos;
            pos += take;
            fr_left -= take;
            continue;
        }
        size_t hl;
        uint64_t plen;
        if (m - pos >= 2 && head_malformed(p + pos, m - pos)) {
            *bad = 1;
            break;
        }
        if (!frame_head(p + pos, m - pos, &hl, &plen)) break;
        /* opcode 8..15: a control frame, whole (at most 125 bytes: head_malformed) */
        if (p[pos] & 0x08) {
            if (m - pos < hl + plen) break;
        } else if (mark) {
            mark_kind(mark, p + pos);
        }
        pos += hl;
        fr_left = plen;
    }
    *left = fr_left;
    return pos;
}

/* Whether the data message wslay has just received whole began as text (mark_kind). */
static int was_text(ws_conn *ws)
{
    if (!ws->k_len) return 0;
    unsigned bit = ws->k_head;
    ws->k_head = (ws->k_head + 1) % (sizeof(ws->kinds) * 8);
    ws->k_len--;
    return (ws->kinds[bit / 8] >> (bit % 8)) & 1;
}

/* Whether c->in holds bytes wslay can take now (or a malformed frame head, for recv_cb to
 * refuse): not only the start of a frame head or control frame that waits for its end (which
 * comes from the socket: EPOLLIN tells). */
static int in_ready(const ws_conn *ws, const conn *c)
{
    size_t have = c->in_len - c->in_parsed;
    if (!have) return 0;
    uint64_t left;
    int bad;
    return frame_gate(NULL, ws->fr_left, (uint8_t *)c->in + c->in_parsed, have, &left, &bad) > 0 ||
           bad;
}

/* One recv for recv_cb: into rbuf (@into_in 0) or onto the end of c->in (1, where an incomplete
 * frame head or control frame waits for the rest). 0, or -1 with wslay's error set. */
static int recv_some(ws_conn *ws, conn *c, int into_in)
{
    wslay_event_context_ptr ctx = ws->ctx;
    if (ws->reads <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    ws->reads--;
    uint8_t *dst = rbuf.buf;
    size_t cap = sizeof(rbuf.buf);
    if (into_in) {
        size_t have = c->in_len - c->in_parsed;
        if (have && c->in_parsed) memmove(c->in, c->in + c->in_parsed, have);
        c->in_len = have;
        c->in_parsed = 0;
        if (conn_in_reserve(c, have + 4096) < 0) {
            ws->io_error = 1;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        dst = (uint8_t *)c->in + have;
        cap = c->in_cap - have;
    }
    ssize_t n = conn_recv(c, dst, cap);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            ws->reads = 0; /* drained: wait for EPOLLIN */
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        if (n == 0)
            ws->eof = 1;
        else
            ws->io_error = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    /* A short read has most likely drained the socket: EPOLLIN says if not (level-triggered),
     * which saves the recv that would only return EAGAIN. */
    if ((size_t)n < cap) ws->reads = 0;
    if (into_in) {
        c->in_len += (size_t)n;
    } else {
        rbuf.owner = ws;
        rbuf.off = 0;
        rbuf.len = (size_t)n;
    }
    return 0;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user_data)
{
    ws_conn *ws = user_data;
    conn *c = ws->t.c;
    (void)flags;
    if (ws->t.read_paused || ws->pong_bytes > WS_OUT_HWM) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    for (;;) {
        const uint8_t *src;
        size_t have;
        int in_in = c->in_parsed < c->in_len;
        if (in_in) {
            /* Frames the client sent right behind its handshake, read with the head, what was
             * left in rbuf when wslay last stopped reading, or an incomplete frame head or
             * control frame that waits for its end. */
            src = (const uint8_t *)c->in + c->in_parsed;
            have = c->in_len - c->in_parsed;
        } else {
            if ((rbuf.owner != ws || rbuf.off == rbuf.len) && recv_some(ws, c, 0) < 0) return -1;
            src = rbuf.buf + rbuf.off;
            have = rbuf.len - rbuf.off;
        }
        size_t m = have < len ? have : len;
        uint64_t left;
        int bad;
        memcpy(buf, src, m); /* wslay's copy, marked (frame_gate) */
        size_t n = frame_gate(ws, ws->fr_left, buf, m, &left, &bad);
        if (n == 0 && bad) {
            /* A malformed frame head comes next (head_malformed): fail with 1002 here, as for
             * any other protocol error, through wslay's queue (after the app's messages queued
             * already; a queued pong is dropped), instead of wslay's Close without a code. */
            fail(ws, 1002, "malformed frame head");
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        if (n == 0 && m < have) {
            /* Room for less than a whole frame head or control frame (at most 131 bytes): wslay
             * 1.1 never asks for less than 4 KiB - 13 (its input buffer, less an unread piece of a
             * head, which the gate never leaves), so only another wslay gets here. Handing part
             * would bring back the 1007 for a valid Close: fail the connection, told. */
            host_log(WSGI_LOG_ERROR,
                     "WebSocket from %s: wslay asked for %zu bytes, less than a "
                     "frame head or control frame: closing",
                     peer(c), len);
            ws->io_error = 1;
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        if (n == 0) {
            /* Wait for the rest in c->in: rbuf is shared and refilled whole. */
            if (!in_in && rbuf_spill(c) < 0) {
                ws->io_error = 1;
                wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
                return -1;
            }
            if (recv_some(ws, c, 1) < 0) return -1;
            continue;
        }
        ws->fr_left = left;
        if (in_in) {
            c->in_parsed += n;
            if (c->in_parsed == c->in_len && ws->shrunk) {
                free(c->in);
                c->in = NULL;
                c->in_cap = c->in_len = c->in_parsed = 0;
            }
        } else {
            rbuf.off += n;
        }
        return (ssize_t)n;
    }
}

/* wslay stopped reading (would block, paused, closing): keep what it left of rbuf. 0, or -1 if
 * out of memory. */
static int rbuf_spill(conn *c)
{
    ws_conn *ws = c->ws;
    if (rbuf.owner != ws) return 0;
    rbuf.owner = NULL;
    size_t left = rbuf.len - rbuf.off;
    if (!left) return 0;
    size_t have = c->in_len - c->in_parsed;
    if (have && c->in_parsed) memmove(c->in, c->in + c->in_parsed, have);
    c->in_len = have;
    c->in_parsed = 0;
    if (conn_in_reserve(c, have + left) < 0) return -1;
    memcpy(c->in + have, rbuf.buf + rbuf.off, left);
    c->in_len = have + left;
    return 0;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user_data)
{
    ws_conn *ws = user_data;
    /* wslay writes a frame's header, then its payload: keep the header for the payload's call. */
    if ((flags & WSLAY_MSG_MORE) && !ws->hdr_len && len <= sizeof(ws->hdr)) {
        memcpy(ws->hdr, data, len);
        ws->hdr_len = len;
        return (ssize_t)len;
    }
    struct iovec iov[2];
    int k = 0;
    if (ws->hdr_len) iov[k++] = (struct iovec){.iov_base = ws->hdr, .iov_len = ws->hdr_len};
    iov[k++] = (struct iovec){.iov_base = (void *)data, .iov_len = len};
    int f = (flags & WSLAY_MSG_MORE) ? MSG_MORE : 0;
    for (;;) {
        ssize_t n = conn_sendv(ws->t.c, iov, k, f);
        if (n >= 0) {
            if ((size_t)n < ws->hdr_len) {
                memmove(ws->hdr, ws->hdr + n, ws->hdr_len - (size_t)n);
                ws->hdr_len -= (size_t)n;
                n = 0;
            } else {
                n -= (ssize_t)ws->hdr_len;
                ws->hdr_len = 0;
            }
            if (n > 0) return n;
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
            return -1;
        }
        ws->io_error = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
}

/* A header kept by send_cb whose payload did not follow: send it alone. 0, or -1 on error. */
static int hdr_flush(ws_conn *ws)
{
    while (ws->hdr_len) {
        struct iovec iov = {.iov_base = ws->hdr, .iov_len = ws->hdr_len};
        ssize_t n = conn_sendv(ws->t.c, &iov, 1, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        memmove(ws->hdr, ws->hdr + n, ws->hdr_len - (size_t)n);
        ws->hdr_len -= (size_t)n;
    }
    return 0;
}

/* Close because the client broke the protocol (or we cannot go on): our Close with code, no more
 * reading, and the app learns the code now. */
static void fail(ws_conn *ws, int code, const char *why)
{
    host_log(WSGI_LOG_DEBUG, "WebSocket from %s: %s: closing with %d", peer(ws->t.c), why, code);
    wslay_event_queue_close(ws->ctx, (uint16_t)code, NULL, 0);
    wslay_event_shutdown_read(ws->ctx);
    ws->closing = 1;
    ws->failed = 1;
    report(ws, code, NULL, 0);
}

static void on_message(ws_conn *ws, const struct wslay_event_on_msg_recv_arg *arg, int text)
{
    if (ws->closing) return; /* after our Close: dropped (docs/asgi.md) */
    const char *data = (const char *)arg->msg;
    size_t len = arg->msg_length;
    char *plain = NULL;
    if (wslay_get_rsv1(arg->rsv)) {
        uint64_t max = server_options(ws->t.c->srv)->ws_max_size;
        int r = ws_pmd_inflate(&ws->pmd, arg->msg, arg->msg_length, max, &plain, &len);
        if (r == WS_PMD_TOO_BIG) {
            fail(ws, 1009, "message too big once inflated");
            return;
        }
        if (r < 0) {
            fail(ws, r == WS_PMD_BAD ? 1007 : 1011, "cannot inflate a message");
            return;
        }
        data = plain;
    }
    int type = text ? ASGI_WS_TEXT : ASGI_WS_BINARY;
    int r = asgi_conn_ws_message(ws->t.ac, type, data, len);
    free(plain);
    if (r == ASGI_PAUSE)
        ws->t.read_paused = 1;
    else if (r == WSGI_ERR_INVAL)
        fail(ws, 1007, "text message is not UTF-8");
    else if (r == WSGI_ERR_NOMEM)
        fail(ws, 1011, "out of memory");
    /* WSGI_ERR_STATE: the app has closed; the message is dropped. */
}

/* wslay takes a Close frame with a 1-byte payload for one without a code: it is a protocol error
 * (RFC 6455 5.5.1), refused here, before wslay queues its answer. */
static void on_frame_start_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_start_arg *arg,
                              void *user_data)
{
    ws_conn *ws = user_data;
    (void)ctx;
    ws->in_close = arg->opcode == WSLAY_CONNECTION_CLOSE;
    ws->close_in_len = 0;
    ws->close_in_want = (size_t)arg->payload_length;
    if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1 && !ws->closing)
        fail(ws, 1002, "Close frame with a 1-byte payload");
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            k = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            k = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        if (n - i <= k) return 0;
        for (unsigned j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += k + 1;
    }
    return 1;
}

/* The client's Close, gathered here whole (whatever pieces it arrives in) before wslay echoes it:
 *  - A reason that is not UTF-8 fails the connection with 1007 (RFC 6455 8.1). wslay checks the
 *    reason itself, but per piece read from the socket, skipping the first two bytes of every
 *    piece as if each began with the code: a reason that arrives in several pieces passed
 *    unchecked (found by tests/fuzz/fuzz_server_ws), and was echoed to the client and given to
 *    the app. This sees the whole payload.
 *  - 1012-1014 (Service Restart, Try Again Later, Bad Gateway: registered with IANA after RFC
 *    6455, and codes an app may send) are unknown to wslay 1.1.1, which fails the connection with
 *    1002 once the frame ends. The echo is queued here first (unless our Close was queued
 *    already), so wslay's 1002 finds a Close queued and goes nowhere (wslay stops reading all the
 *    same), and the app hears the code and reason. */
static void on_frame_chunk_cb(wslay_event_context_ptr ctx,
                              const struct wslay_event_on_frame_recv_chunk_arg *arg,
                              void *user_data)
{
    ws_conn *ws = user_data;
    if (!ws->in_close) return;
    size_t n = arg->data_length;
    if (n > sizeof(ws->close_in) - ws->close_in_len) n = sizeof(ws->close_in) - ws->close_in_len;
    memcpy(ws->close_in + ws->close_in_len, arg->data, n);
    ws->close_in_len += n;
    if (ws->close_in_len != ws->close_in_want || ws->close_in_len < 2) return;
    const uint8_t *reason = ws->close_in + 2;
    size_t reason_len = ws->close_in_len - 2;
    if (!utf8_valid(reason, reason_len)) {
        if (!ws->closing) fail(ws, 1007, "Close reason is not UTF-8");
        return;
    }
    unsigned code = (unsigned)ws->close_in[0] << 8 | ws->close_in[1];
    if (code < 1012 || code > 1014) return;
    wslay_event_queue_close(ctx, (uint16_t)code, reason, reason_len);
    ws->closing = 1;
    report(ws, (int)code, (const char *)reason, reason_len);
}

static void on_msg_recv_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_msg_recv_arg *arg, void *user_data)
{
    ws_conn *ws = user_data;
    (void)ctx;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME: on_message(ws, arg, 1); break; /* not from this wslay (mark_kind) */
    case WSLAY_BINARY_FRAME: on_message(ws, arg, was_text(ws)); break;
    case WSLAY_CONNECTION_CLOSE: {
        /* wslay has queued the echo (unless our own Close went first). */
        size_t n = arg->status_code && arg->msg_length > 2 ? arg->msg_length - 2 : 0;
        report(ws, arg->status_code ? arg->status_code : 1005,
               n ? (const char *)arg->msg + 2 : NULL, n);
        break;
    }
    case WSLAY_PONG: ws->ping_out = 0; break;
    case WSLAY_PING:
        /* wslay has queued the pong. A client that pings without reading would make us queue
         * pongs without end: reading stops while too many wait (see open_progress). */
        ws->pong_bytes += arg->msg_length + WS_MSG_COST;
        break;
    default: break;
    }
}

/* Read what the socket has, through wslay. 0, or -1 if the connection was closed. */
static int read_frames(conn *c)
{
    ws_conn *ws = c->ws;
    wslay_event_context_ptr ctx = ws->ctx;
    ws->reads = READS_PER_EVENT;
    int r = wslay_event_recv(ctx);
    if (rbuf_spill(c) < 0) {
        host_log(WSGI_LOG_ERROR, "WebSocket from %s: out of memory", peer(c));
        report(ws, 1011, NULL, 0);
        server_conn_close(c);
        return -1;
    }
    if (r == 0) {
        /* wslay may have failed the connection itself (a protocol error: 1002; text that is not
         * UTF-8: 1007; a message over --ws-max-size: 1009): it stopped reading and queued its
         * Close; the app hears the code once it is sent. */
        if (!ws->closing && !wslay_event_get_read_enabled(ctx) &&
            !wslay_event_get_close_received(ctx)) {
            host_log(WSGI_LOG_DEBUG, "WebSocket from %s: invalid frame or message: closing",
                     peer(c));
            ws->closing = 1;
            ws->failed = 1;
        }
        return 0;
    }
    if (ws->eof || ws->io_error) {
        host_log(WSGI_LOG_DEBUG, "WebSocket from %s: connection lost without a Close frame",
                 peer(c));
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return -1;
    }
    if (r == WSLAY_ERR_CALLBACK_FAILURE) {
        /* A frame wslay's parser refused that the gate let through (it stops at those it knows
         * of: head_malformed): wslay queued a Close without a code. If nothing else is on its way
         * out, send the 1002 the RFC asks for ourselves instead. */
        int was_closing = ws->closing;
        report(ws, 1002, NULL, 0);
        ws->closing = 1;
        ws->failed = 1;
        if (!was_closing && wslay_event_get_queued_msg_count(ctx) == 1 && !out_pending(c)) {
            static const char close_1002[4] = {(char)0x88, 0x02, 0x03, (char)0xea};
            wslay_event_shutdown_write(ctx);
            struct iovec iov = {.iov_base = (void *)close_1002, .iov_len = 4};
            if (conn_sendv(c, &iov, 1, 0) == 4) ws->raw_close_sent = 1;
        }
        host_log(WSGI_LOG_DEBUG, "WebSocket from %s: malformed frame: closing with 1002", peer(c));
        if (!ws->raw_close_sent && !wslay_event_get_write_enabled(ctx)) {
            server_conn_close(c);
            return -1;
        }
        return 0;
    }
    host_log(WSGI_LOG_ERROR, "WebSocket from %s: wslay_event_recv: %d", peer(c), r); /* no memory */
    report(ws, 1011, NULL, 0);
    server_conn_close(c);
    return -1;
}

/* Write the 101 (if still queued), then wslay's frames, then a Close that waited for them. 0, or
 * -1 on a write error. */
static int write_out(conn *c)
{
    ws_conn *ws = c->ws;
    if (out_pending(c) && out_flush(c) == OUT_ERR) return -1;
    if (out_pending(c)) return 0;
    if (wslay_event_want_write(ws->ctx) && wslay_event_send(ws->ctx) != 0) return -1;
    if (hdr_flush(ws) < 0) return -1;
    if (ws->close_due && !wslay_event_want_write(ws->ctx)) {
        ws->close_due = 0;
        /* Fails only if wslay is closing already (the client's Close came first). */
        wslay_event_queue_close(ws->ctx, (uint16_t)ws->close_code,
                                (const uint8_t *)ws->close_reason, ws->close_reason_len);
        free(ws->close_reason);
        ws->close_reason = NULL;
        if (wslay_event_send(ws->ctx) != 0) return -1;
        if (hdr_flush(ws) < 0) return -1;
    }
    return 0;
}

static int blocked(const conn *c)
{
    return out_pending(c) || c->ws->hdr_len || wslay_event_want_write(c->ws->ctx);
}

/* Our Close (the app's, or 1001 at shutdown), sent after the messages queued before it (wslay
 * would send a control frame ahead of them, and nothing after it); then the client's Close is
 * awaited for WS_CLOSE_MS. 0, or -1 if out of memory. */
static int start_close(ws_conn *ws, int code, const char *reason, size_t reason_len)
{
    if (ws->closing) return 0;
    ws->closing = 1;
    ws->close_due = 1;
    ws->close_code = code;
    if (reason_len) {
        ws->close_reason = malloc(reason_len);
        if (!ws->close_reason) return -1;
        memcpy(ws->close_reason, reason, reason_len);
        ws->close_reason_len = reason_len;
    }
    return 0;
}

/* The HTTP state is over: give back the request's buffers (a WebSocket may stay open for days). */
static void shrink(conn *c)
{
    if (c->in_parsed < c->in_len || out_pending(c)) return;
    free(c->in);
    c->in = NULL;
    c->in_cap = c->in_len = c->in_parsed = 0;
    free(c->hdrs);
    c->hdrs = NULL;
    c->hdrs_cap = c->n_hdrs = 0;
    free(c->hdr_ptrs);
    c->hdr_ptrs = NULL;
    c->hdr_ptrs_cap = 0;
    conn_access_free(c);
    free(c->outq);
    c->outq = NULL;
    c->oq_cap = c->oq_head = c->oq_len = 0;
    free(c->scratch);
    c->scratch = NULL;
    c->sc_cap = c->sc_len = 0;
    c->ws->shrunk = 1;
}

static void set_timer(conn *c, int list)
{
    ws_conn *ws = c->ws;
    /* The ping and close clocks run from when they start, not from the last event. */
    if (list == ws->timer && list != TL_REQUEST) return;
    ws->timer = list;
    server_conn_timer(c, list);
}

/* The closing handshake is over (or the client broke the protocol): close the TCP connection,
 * server first (RFC 6455 7.1.1), discarding what the client still sends. */
static void finish(conn *c)
{
    report(c->ws, 1006, NULL, 0); /* if the app has not heard of the end yet */
    release(c);
    c->keep_alive = 0;
    server_conn_done(c);
}

static void open_progress(conn *c)
{
    ws_conn *ws = c->ws;
    wslay_event_context_ptr ctx = ws->ctx;
    const epoll_options *o = server_options(c->srv);
    if (ws->t.gone) {
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return;
    }
    if (!ws->logged) {
        conn_access_log(c);
        ws->logged = 1;
    }
    if (server_draining(c->srv) && !ws->closing) {
        start_close(ws, 1001, NULL, 0);
        report(ws, 1001, NULL, 0);
    }
    if (in_ready(ws, c) && !ws->t.read_paused && wslay_event_get_read_enabled(ctx) &&
        read_frames(c) < 0)
        return;
    if (write_out(c) < 0) {
        host_log(WSGI_LOG_DEBUG, "WebSocket to %s: write failed", peer(c));
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return;
    }
    if (!ws->shrunk) shrink(c);
    if (!wslay_event_want_write(ctx)) ws->pong_bytes = 0;
    int close_sent = wslay_event_get_close_sent(ctx) || ws->raw_close_sent;
    /* wslay's own failures: the app learns the code once the Close is out. */
    if (ws->failed && close_sent)
        report(ws, ws->raw_close_sent ? 1002 : wslay_event_get_status_code_sent(ctx), NULL, 0);
    if (ws->t.out_paused && !out_pending(c) && out_cost(ctx) <= WS_OUT_HWM / 2) {
        ws->t.out_paused = 0;
        asgi_conn_resume(ws->t.ac);
    }
    int reading = wslay_event_get_read_enabled(ctx) && !ws->raw_close_sent;
    if (close_sent && (!reading || wslay_event_get_close_received(ctx))) {
        finish(c);
        return;
    }
    int out = blocked(c);
    int list = TL_NONE;
    if (ws->close_due)
        list = TL_REQUEST; /* messages before our Close: as long as the client reads them */
    else if (ws->closing)
        list = TL_WS_CLOSE;
    else if (ws->t.read_paused || !o->ws_ping_interval)
        list = out ? TL_REQUEST : TL_NONE; /* no pings: still bound a client that stops reading */
    else
        list = ws->ping_out ? TL_WS_PONG : TL_WS_PING;
    set_timer(c, list);
    unsigned ev = out ? EPOLLOUT : 0;
    if (reading && !ws->t.read_paused && ws->pong_bytes <= WS_OUT_HWM) {
        ev |= EPOLLIN;
        /* Frames already out of the socket (left in rbuf when reading stopped for the pongs, or
         * behind the handshake) wait in c->in, and EPOLLIN will not announce them: come back
         * through EPOLLOUT (everything went out, so the socket has room) and read them then,
         * after the other connections' events. Not for a frame head or control frame there in
         * part: its end is still in the socket, and EPOLLOUT, always ready, would have the loop
         * read the socket for nothing at every turn until it comes. */
        if (in_ready(ws, c)) ev |= EPOLLOUT;
    }
    server_conn_arm(c, ev);
}

/* connecting, denying: the exchange's way through an HTTP response, then close. */
static void http_progress(conn *c)
{
    ws_conn *ws = c->ws;
    if (ws->t.gone) {
        server_conn_close(c);
        return;
    }
    if (c->started) ws->phase = WS_DENYING;
    if (out_pending(c) && out_flush(c) == OUT_ERR) {
        server_conn_close(c);
        return;
    }
    int pending = out_pending(c);
    if (!pending && ws->t.out_paused) {
        ws->t.out_paused = 0;
        asgi_conn_resume(ws->t.ac);
    }
    if (!pending && (ws->t.complete || ws->t.cut)) {
        if (ws->t.cut)
            host_log(WSGI_LOG_DEBUG, "response to %s cut: the app failed after the head", peer(c));
        conn_access_log(c);
        ws->logged = 1;
        asgi_conn_disconnect(
            ws->t.ac); /* the connection closes: a receive() after the denial ends */
        release(c);
        c->keep_alive = 0;
        server_conn_done(c);
        return;
    }
    if (ws->t.done && !c->started) {
        server_conn_close(c); /* cannot happen: the library answers 403 first */
        return;
    }
    /* The handshake is bounded from the upgrade request on; a denial from each write. */
    set_timer(c, TL_REQUEST);
    server_conn_arm(c, (pending ? EPOLLOUT : 0) | EPOLLRDHUP);
}

static void ws_progress(conn *c)
{
    if (c->ws->phase == WS_OPEN)
        open_progress(c);
    else
        http_progress(c);
}

/* ---- the app's callbacks (inside asgi_loop_run; they only queue and mark) ------------------- */

static int cb_gone(ws_conn *ws)
{
    ws->t.gone = 1;
    asgi_task_enqueue(&ws->t);
    return -1;
}

static int cb_accept(void *user_data, const char *subprotocol, size_t subprotocol_len,
                     const wsgi_header *headers, size_t n_headers)
{
    ws_conn *ws = user_data;
    conn *c = ws->t.c;
    if (!c || ws->t.gone || ws->phase != WS_CONNECTING) return -1;
    static const struct wslay_event_callbacks cbs = {
        .recv_callback = recv_cb,
        .send_callback = send_cb,
        .on_frame_recv_start_callback = on_frame_start_cb,
        .on_frame_recv_chunk_callback = on_frame_chunk_cb,
        .on_msg_recv_callback = on_msg_recv_cb,
    };
    if (wslay_event_context_server_init(&ws->ctx, &cbs, ws) != 0) return cb_gone(ws);
    wslay_event_config_set_max_recv_msg_length(ws->ctx, server_options(c->srv)->ws_max_size);
    if (ws->pmd.on) wslay_event_config_set_allowed_rsv_bits(ws->ctx, WSLAY_RSV1_BIT);
    char ext[160];
    wsgi_header ours[5] = {
        {.name = "Upgrade", .name_len = 7, .value = "websocket", .value_len = 9},
        {.name = "Connection", .name_len = 10, .value = "Upgrade", .value_len = 7},
        {.name = "Sec-WebSocket-Accept", .name_len = 20, .value = ws->accept, .value_len = 28},
    };
    size_t n = 3;
    if (subprotocol) {
        ours[n++] = (wsgi_header){.name = "Sec-WebSocket-Protocol",
                                  .name_len = 22,
                                  .value = subprotocol,
                                  .value_len = subprotocol_len};
    }
    if (ws->pmd.on) {
        size_t len = ws_pmd_answer(&ws->pmd, ext, sizeof(ext));
        ours[n++] = (wsgi_header){
            .name = "Sec-WebSocket-Extensions", .name_len = 24, .value = ext, .value_len = len};
    }
    if (conn_queue_switch(c, ours, n, headers, n_headers) < 0) return cb_gone(ws);
    ws->phase = WS_OPEN;
    asgi_task_enqueue(&ws->t);
    return 0;
}

static int cb_send(void *user_data, int binary, const char *data, size_t len)
{
    ws_conn *ws = user_data;
    conn *c = ws->t.c;
    if (!c || ws->t.gone || ws->phase != WS_OPEN || ws->closing) return -1;
    struct wslay_event_msg m = {.opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME,
                                .msg = (const uint8_t *)data,
                                .msg_length = len};
    uint8_t rsv = WSLAY_RSV_NONE;
    char *z = NULL;
    if (ws->pmd.on) {
        size_t z_len;
        if (ws_pmd_compress(&ws->pmd, data, len, &z, &z_len) < 0) return cb_gone(ws);
        m.msg = (const uint8_t *)z;
        m.msg_length = z_len;
        rsv = WSLAY_RSV1_BIT;
    }
    int r = wslay_event_queue_msg_ex(ws->ctx, &m, rsv); /* copies */
    free(z);
    if (r != 0) return -1; /* closing: the app's send() raises */
    asgi_task_enqueue(&ws->t);
    if (out_cost(ws->ctx) <= WS_OUT_HWM) return 0;
    /* Over the mark: write now, and hold the app's send() if the socket does not take enough. */
    if (write_out(c) < 0) return cb_gone(ws);
    if (out_cost(ws->ctx) <= WS_OUT_HWM) return 0;
    ws->t.out_paused = 1;
    return ASGI_PAUSE;
}

static int cb_close(void *user_data, int code, const char *reason, size_t reason_len)
{
    ws_conn *ws = user_data;
    conn *c = ws->t.c;
    if (!c || ws->phase != WS_OPEN) return -1;
    if (start_close(ws, code, reason, reason_len) < 0) return cb_gone(ws);
    asgi_task_enqueue(&ws->t);
    return 0;
}

static const asgi_handler ws_handler = {
    .struct_size = sizeof(asgi_handler),
    .on_start = asgi_response_on_start,
    .on_body = asgi_response_on_body,
    .on_read_resume = asgi_task_on_read_resume,
    .on_done = asgi_task_on_done,
    .on_ws_accept = cb_accept,
    .on_ws_send = cb_send,
    .on_ws_close = cb_close,
};

/* ---- the server's entry points ------------------------------------------------------------------
 */

void ws_conn_start(conn *c)
{
    ws_conn *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        server_conn_reply_error(c, 503);
        return;
    }
    wsgi_request req;
    int st = conn_end_head(c) < 0 ? 400 : 0;
    conn_fill_request(c, &req);
    if (!st) st = check_handshake(c, &req, ws);
    if (!st && server_draining(c->srv)) st = 503;
    if (st) {
        host_log(WSGI_LOG_DEBUG, "WebSocket handshake from %s refused (%d)", peer(c), st);
        free(ws);
        server_conn_reply_error(c, st);
        return;
    }
    asgi_task_init(&ws->t, &ws_ops, c);
    ws->phase = WS_CONNECTING;
    ws->timer = TL_NONE;
    c->ws = ws;
    c->state = CONN_WS;
    c->keep_alive = 0;
    conn_obs_dispatch(c, 0);
    int rc = asgi_websocket_dispatch(server_app(c->srv), &req, &ws_handler, &ws->t, &ws->t.ac);
    if (rc != WSGI_OK) {
        conn_obs_dispatch(c, rc);
        int status = rc == WSGI_ERR_INVAL ? 400 : 500;
        host_log(status == 400 ? WSGI_LOG_DEBUG : WSGI_LOG_ERROR, "asgi_websocket_dispatch: %s: %s",
                 wsgi_strerror(rc), wsgi_errmsg());
        c->ws = NULL;
        free(ws);
        server_conn_reply_error(c, status);
        return;
    }
    /* The app runs at the next loop turn; the queue then arms the socket. */
    asgi_task_enqueue(&ws->t);
}

void ws_conn_event(conn *c, unsigned events)
{
    ws_conn *ws = c->ws;
    if (ws->phase != WS_OPEN) {
        if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            host_log(WSGI_LOG_DEBUG, "client %s closed the connection", peer(c));
            server_conn_close(c);
            return;
        }
        http_progress(c);
        return;
    }
    if (events & EPOLLERR) {
        host_log(WSGI_LOG_DEBUG, "WebSocket from %s: connection reset", peer(c));
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP)) && !ws->t.read_paused &&
        wslay_event_get_read_enabled(ws->ctx) && read_frames(c) < 0)
        return;
    open_progress(c);
}

void ws_conn_timeout(conn *c)
{
    ws_conn *ws = c->ws;
    int list = ws->timer;
    ws->timer = TL_NONE; /* server.c took it off the list */
    if (ws->phase == WS_CONNECTING) {
        host_log(WSGI_LOG_WARNING, "WebSocket from %s: the app did not accept or deny in time",
                 peer(c));
        asgi_conn_disconnect(ws->t.ac);
        release(c);
        server_conn_reply_error(c, 503);
        return;
    }
    if (ws->phase == WS_DENYING) {
        host_log(WSGI_LOG_DEBUG, "client %s stopped reading: dropping the response", peer(c));
        server_conn_close(c);
        return;
    }
    switch (list) {
    case TL_WS_PING: {
        unsigned char payload[4];
        unsigned seq = ++ws->ping_seq;
        memcpy(payload, &seq, sizeof(payload));
        struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = payload, .msg_length = 4};
        if (wslay_event_queue_msg(ws->ctx, &m) == 0 && server_options(c->srv)->ws_ping_timeout)
            ws->ping_out = 1;
        break;
    }
    case TL_WS_PONG:
        host_log(WSGI_LOG_DEBUG, "WebSocket from %s: no pong within %us: closing", peer(c),
                 server_options(c->srv)->ws_ping_timeout);
        report(ws, 1006, NULL, 0);
        /* Best effort: the client is probably not listening. */
        wslay_event_queue_close(ws->ctx, 1011, (const uint8_t *)"keepalive ping timeout", 22);
        write_out(c);
        server_conn_close(c);
        return;
    case TL_WS_CLOSE:
        host_log(WSGI_LOG_DEBUG, "WebSocket from %s: no Close frame in answer to ours", peer(c));
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return;
    case TL_REQUEST:
        host_log(WSGI_LOG_DEBUG, "WebSocket to %s: the client stopped reading", peer(c));
        report(ws, 1006, NULL, 0);
        server_conn_close(c);
        return;
    default: break;
    }
    open_progress(c);
}

void ws_conn_shutdown(conn *c)
{
    /* A handshake still waiting for the app is answered first; an accept then closes with 1001. */
    if (c->ws->phase == WS_OPEN) open_progress(c);
}
