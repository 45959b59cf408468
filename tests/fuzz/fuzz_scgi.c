/* libFuzzer target: the SCGI and uwsgi request-head parsers of libwsgi-scgi
 * (examples/lighttpd/scgi_parse.c) and their mapping to a wsgi_request.
 *
 * Input: 5 bytes of settings (accepted protocols, max_vars, max_header_bytes, max_content_length,
 * a seed for the split points), then the connection's bytes. The bytes are parsed twice, in one
 * piece and in pieces of pseudo-random sizes (1 byte up to all of it) drawn from the seed, and both
 * runs must agree on everything, as scgi_parse.h promises. A complete head is then mapped with
 * buffers of the documented sizes, and every span of the wsgi_request must lie in the head or the
 * scratch buffer. Any disagreement aborts (a crash for libFuzzer). */
#include "fuzz_input.h"
#include "scgi_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VARS 64

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_scgi: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct run {
    scgi_parser p;
    scgi_var_pos slots[MAX_VARS];
    scgi_result rc;
    size_t used; /* bytes consumed: the head on SCGI_HEAD_DONE */
} run;

/* Feeds data in pieces: sizes from the xorshift state *seed, or all at once when seed is NULL. */
static void parse(run *r, const scgi_limits *lim, unsigned accept, const uint8_t *data, size_t len,
                  uint32_t *seed)
{
    CHECK(scgi_parser_init(&r->p, lim, r->slots, accept) == 0);
    r->rc = SCGI_NEED_MORE;
    r->used = 0;
    size_t off = 0;
    while (off < len && r->rc == SCGI_NEED_MORE) {
        size_t n = len - off;
        if (seed) {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            /* Mostly small pieces, where split-state bugs live, sometimes the rest. */
            size_t cap = (*seed & 3) ? 1 + (*seed >> 8) % 8 : len;
            if (n > cap) n = cap;
        }
        size_t consumed = (size_t)-1;
        r->rc = scgi_parser_feed(&r->p, (const char *)data + off, n, &consumed);
        CHECK(consumed <= n);
        if (r->rc == SCGI_NEED_MORE) CHECK(consumed == n);
        if (r->rc == SCGI_IS_HTTP) CHECK(consumed == 0);
        r->used += consumed;
        off += n;
    }
    if (r->rc == SCGI_NEED_MORE) {
        r->rc = scgi_parser_eof(&r->p);
        CHECK(r->rc == SCGI_ERROR && scgi_parser_status(&r->p) == 400);
    }
    /* A finished parser repeats its result. */
    size_t consumed = 1;
    CHECK(scgi_parser_feed(&r->p, "x", 1, &consumed) == r->rc);
    if (r->rc == SCGI_ERROR) {
        int st = scgi_parser_status(&r->p);
        CHECK(st == 400 || st == 413 || st == 431);
        CHECK(scgi_parser_error(&r->p)[0] != '\0');
    } else {
        CHECK(scgi_parser_status(&r->p) == 0);
    }
}

static int within(const char *s, size_t n, const char *base, size_t cap)
{
    return s >= base && n <= cap && (size_t)(s - base) <= cap - n;
}

static int in_bufs(const char *s, size_t n, const char *head, size_t head_len, const char *scratch,
                   size_t scratch_cap)
{
    return within(s, n, head, head_len) || within(s, n, scratch, scratch_cap);
}

static void map(const run *r, const uint8_t *data)
{
    const char *head = (const char *)data;
    size_t head_len = scgi_parser_head_len(&r->p), nvars = scgi_parser_nvars(&r->p);
    CHECK(head_len == r->used && nvars <= MAX_VARS);
    CHECK(scgi_parser_content_length(&r->p) >= 0);
    for (size_t i = 0; i < nvars; i++) {
        wsgi_header h;
        CHECK(scgi_parser_var(&r->p, head, i, &h) == 0);
        CHECK(h.name_len > 0 && within(h.name, h.name_len, head, head_len));
        CHECK(within(h.value, h.value_len, head, head_len));
    }
    wsgi_header hdrs[MAX_VARS], extra[MAX_VARS + 1];
    size_t scratch_cap = head_len + 2;
    char *scratch = malloc(scratch_cap);
    CHECK(scratch);
    scgi_map_buffers b = {.headers = hdrs,
                          .headers_cap = nvars,
                          .extra = extra,
                          .extra_cap = nvars + 1,
                          .scratch = scratch,
                          .scratch_cap = scratch_cap};
    wsgi_request req;
    scgi_cgi cgi;
    const char *err = NULL;
    int rc = scgi_map_request(&r->p, head, &b, &req, &cgi, &err);
    CHECK(rc == 0 || rc == 400); /* the buffers are large enough: never -1 */
    if (rc == 400) CHECK(err && *err);
    if (rc == 0) {
        CHECK(req.method && req.method_len > 0 && req.target && req.target_len > 0);
        CHECK(in_bufs(req.method, req.method_len, head, head_len, scratch, scratch_cap));
        CHECK(in_bufs(req.target, req.target_len, head, head_len, scratch, scratch_cap));
        CHECK(req.n_headers <= nvars && req.n_extra_environ <= nvars + 1);
        for (size_t i = 0; i < req.n_headers; i++) {
            const wsgi_header *h = &req.headers[i];
            /* Content-Type / Content-Length: static names for CONTENT_TYPE / CONTENT_LENGTH. */
            int fixed = (h->name_len == 12 && memcmp(h->name, "Content-Type", 12) == 0) ||
                        (h->name_len == 14 && memcmp(h->name, "Content-Length", 14) == 0);
            CHECK(fixed || in_bufs(h->name, h->name_len, head, head_len, scratch, scratch_cap));
            CHECK(in_bufs(h->value, h->value_len, head, head_len, scratch, scratch_cap));
        }
        for (size_t i = 0; i < req.n_extra_environ; i++) {
            const wsgi_header *h = &req.extra_environ[i];
            /* PATH_INFO "" is added (static strings) when SCRIPT_NAME comes without PATH_INFO. */
            if (h->name_len == 9 && memcmp(h->name, "PATH_INFO", 9) == 0 && h->value_len == 0)
                continue;
            CHECK(in_bufs(h->name, h->name_len, head, head_len, scratch, scratch_cap));
            CHECK(in_bufs(h->value, h->value_len, head, head_len, scratch, scratch_cap));
        }
        const char *z[] = {req.server_name, req.client_addr, req.scheme};
        for (size_t i = 0; i < 3; i++) {
            if (!z[i] || i == 2) continue; /* scheme: a static string */
            size_t n = strnlen(z[i], scratch_cap);
            CHECK(in_bufs(z[i], n + 1, head, head_len, scratch, scratch_cap));
        }
        CHECK(req.client_port <= 65535 && req.server_port <= 65535);
    }
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    unsigned accept = fz_u8(&in) & 7;
    scgi_limits lim = {.max_vars = 1 + fz_u8(&in) % MAX_VARS};
    unsigned mh = fz_u16(&in);
    lim.max_header_bytes = mh & 0x8000 ? 0 : mh; /* 0: the default, 65535 */
    unsigned mc = fz_u8(&in);
    lim.max_content_length = mc & 0x80 ? 0 : (int64_t)mc * 1000;
    uint32_t seed = fz_u8(&in) * 2654435761u + 1;
    const uint8_t *bytes = in.p;
    size_t len = in.left;

    run *whole = malloc(sizeof *whole), *pieces = malloc(sizeof *pieces);
    CHECK(whole && pieces);
    parse(whole, &lim, accept, bytes, len, NULL);
    parse(pieces, &lim, accept, bytes, len, &seed);
    CHECK(whole->rc == pieces->rc);
    CHECK(scgi_parser_protocol(&whole->p) == scgi_parser_protocol(&pieces->p));
    CHECK(scgi_parser_status(&whole->p) == scgi_parser_status(&pieces->p));
    if (whole->rc == SCGI_HEAD_DONE) {
        CHECK(whole->used == pieces->used);
        CHECK(scgi_parser_head_len(&whole->p) == scgi_parser_head_len(&pieces->p));
        CHECK(scgi_parser_content_length(&whole->p) == scgi_parser_content_length(&pieces->p));
        size_t n = scgi_parser_nvars(&whole->p);
        CHECK(n == scgi_parser_nvars(&pieces->p));
        CHECK(memcmp(whole->slots, pieces->slots, n * sizeof whole->slots[0]) == 0);
        map(whole, bytes);
    }
    free(whole);
    free(pieces);
    return 0;
}
