/* libFuzzer target: arbitrary bytes on a connection to the real server. libwsgi-epoll's and
 * libwsgi-scgi's own code (examples/epoll: server_run(), its loop, timers and connection state
 * machine, http_conn.c's parsing, the WSGI app threads and the ASGI exchange, response_writer.c,
 * the access log and --proxy-headers) runs in this process, five servers with different options
 * on abstract unix sockets (server_harness.c); each input is one client connection to one of them:
 * its bytes written in pieces of pseudo-random sizes while the answer is read, then a half-close,
 * then the answer read to the end. The apps (apps/fuzz_server_apps.py) pick a response path by the
 * first letter of the request path.
 *
 * Checks: no crash or sanitizer report; the server closes the connection once the client has
 * half-closed (FUZZ_SERVER_HANG_MS, else a hang); the apps' checks of the environ and scope (an
 * os.abort() in the app); and what came back is well framed: an HTTP answer parses with
 * http_parser as a sequence of responses, one per request (HEAD and 1xx known), nothing after a
 * response that closes the connection; an SCGI / uwsgi answer starts with a CGI Status line.
 *
 * Input: the server (first byte, modulo the number of servers), a split seed (second byte), then
 * the connection's bytes. */
#include "fuzz_input.h"
#include "server_harness.h"

#include <http_parser.h>
#include <string.h>

static const fzs_config configs[] = {
    /* 0: WSGI on the loop thread, small limits */
    {"epoll-wsgi-inline", 0, 0,
     "--threads 0 --max-header-size 1024 --max-body-size 300 --timeout-request 60 "
     "--timeout-keepalive 60"},
    /* 1: WSGI, two app threads (the team) */
    {"epoll-wsgi-threads", 0, 0, "--threads 2 --timeout-request 60 --timeout-keepalive 60"},
    /* 2: SCGI, uwsgi or HTTP by the first byte */
    {"scgi-auto-wsgi", 1, 0,
     "--threads 1 --x-sendfile --max-body-size 5000 --timeout-request 60 --timeout-keepalive 60"},
    /* 3: SCGI only */
    {"scgi-only-wsgi", 1, 0,
     "--threads 0 --protocol scgi --max-header-size 512 --timeout-request 60"},
    /* 4: ASGI; SCGI, uwsgi or HTTP */
    {"scgi-auto-asgi", 1, 1,
     "--max-header-size 4096 --max-body-size 3000 --timeout-request 60 --timeout-keepalive 60"},
};
#define N_CONFIGS (sizeof(configs) / sizeof(configs[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fzs_start(configs, N_CONFIGS);
    return 0;
}

/* ---- the requests, as http_parser reads them (their methods) -------------------------------- */

#define MAX_REQS 256

typedef struct reqs {
    unsigned char method[MAX_REQS];
    size_t n;
} reqs;

static int on_req_headers(http_parser *p)
{
    reqs *r = p->data;
    if (r->n < MAX_REQS) r->method[r->n++] = (unsigned char)p->method;
    return 0;
}

/* The methods of the requests the server reads, in order, as far as http_parser can tell them
 * (it stops at an error or an upgrade; the server answers an error and closes there too). */
static void parse_requests(const uint8_t *data, size_t len, reqs *r)
{
    static http_parser_settings st = {.on_headers_complete = on_req_headers};
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = r;
    http_parser_execute(&p, &st, (const char *)data, len);
}

/* ---- the responses -------------------------------------------------------------------------- */

typedef struct resps {
    const reqs *rq;
    size_t next; /* the request the next final response answers */
    int stop;    /* the rest cannot be checked (an upgrade, an unknown request's answer) */
} resps;

static int on_resp_headers(http_parser *p)
{
    resps *r = p->data;
    unsigned st = p->status_code;
    if (st >= 100 && st < 200 && st != 101) return 0; /* interim (100 Continue): no body */
    if (st == 101 || r->next >= r->rq->n) {
        r->stop = 1;
        http_parser_pause(p, 1);
        return 1;
    }
    int head = r->rq->method[r->next++] == HTTP_HEAD;
    if (head && !http_should_keep_alive(p)) {
        /* The server's own error answers keep their body for HEAD too, and close: stop here. */
        r->stop = 1;
        http_parser_pause(p, 1);
    }
    /* 1: no body follows, whatever Content-Length says (it describes the resource for HEAD and
     * 304; a 204 must have none, and http_parser would frame by it, which is the check). */
    return head || st == 304;
}

static void check_http(const uint8_t *in, size_t in_len, const fzs_buf *out)
{
    reqs rq = {.n = 0};
    parse_requests(in, in_len, &rq);
    resps rs = {.rq = &rq};
    static http_parser_settings st = {.on_headers_complete = on_resp_headers};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &rs;
    size_t used = http_parser_execute(&p, &st, (const char *)out->p, out->len);
    enum http_errno e = HTTP_PARSER_ERRNO(&p);
    if (rs.stop || p.upgrade || e == HPE_OK) return; /* an unfinished last response: cut short */
    fprintf(stderr,
            "fuzz_server: the answer is not a well-framed sequence of HTTP responses: %s at "
            "byte %zu of %zu (response %zu of %zu requests)\n---\n%.*s\n---\n",
            http_errno_name(e), used, out->len, rs.next, rq.n,
            (int)(out->len < 2000 ? out->len : 2000), (const char *)out->p);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    size_t k = fz_u8(&in) % N_CONFIGS;
    uint32_t seed = fz_u8(&in) * 2654435761u + 1;
    int fd = fzs_connect(k);
    fzs_buf out = {0};
    fzs_send(fd, in.p, in.left, &seed, &out);
    fzs_finish(fd, &out);
    if (out.len && !out.truncated) {
        if (out.len >= 8 && memcmp(out.p, "Status: ", 8) == 0) {
            /* SCGI / uwsgi: one CGI-style answer, then the server closes. */
            FZS_CHECK(configs[k].scgi);
            FZS_CHECK(memmem(out.p, out.len, "\r\n\r\n", 4) != NULL);
        } else {
            FZS_CHECK(out.len < 5 || memcmp(out.p, "HTTP/", 5) == 0);
            check_http(in.p, in.left, &out);
        }
    }
    fzs_buf_free(&out);
    return 0;
}
