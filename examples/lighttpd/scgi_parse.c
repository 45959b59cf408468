/* The request-head parsers of libwsgi-scgi (issue 11): SCGI and uwsgi as lighttpd's mod_scgi
 * sends them, the first-byte protocol detection, and the CGI variables -> wsgi_request mapping.
 *
 * What lighttpd 1.4 sends (src/mod_scgi.c, scgi_create_env(), and src/http_cgi.c,
 * http_cgi_headers(), in the lighttpd1.4 repository):
 *  - SCGI (scgi.protocol = "scgi", https://python.ca/scgi/protocol.txt): a netstring
 *    "<decimal length>:" + "NAME\0VALUE\0" pairs + ","; the length is buffer_append_int() of the
 *    payload size, so plain decimal without leading zeros. http_cgi_headers() emits
 *    CONTENT_LENGTH first ("CONTENT_LENGTH must be first for SCGI"), as li_itostrn() of the
 *    request body length; scgi_create_env() appends "SCGI" = "1" last. The body follows the ','.
 *  - uwsgi (scgi.protocol = "uwsgi", https://uwsgi-docs.readthedocs.io/en/latest/Protocol.html):
 *    a 4-byte header made as htole16(len) << 8 in a uint32 written little-endian, i.e.
 *    modifier1 = 0, datasize = len (uint16 LE), modifier2 = 0; lighttpd answers 431 itself when
 *    the vars exceed 65535 bytes. Each var is uint16-LE key length, key, uint16-LE value length,
 *    value (scgi_env_add_uwsgi()); no "SCGI" var. The body follows the vars.
 *  - Variable names: REQUEST_METHOD, REQUEST_URI (the original target), QUERY_STRING,
 *    SCRIPT_NAME, PATH_INFO (only when lighttpd split one off), SERVER_PROTOCOL (from
 *    get_http_version_name(): "HTTP/1.0", "HTTP/1.1", "HTTP/2.0"), REQUEST_SCHEME, HTTPS = "on"
 *    for https, SERVER_PORT, SERVER_ADDR, SERVER_NAME, REMOTE_ADDR, REMOTE_PORT, then one
 *    HTTP_<NAME> per request header (buffer_copy_string_encoded_cgi_varnames(): upper-cased,
 *    every byte other than a letter or digit turned into '_'; Content-Type becomes CONTENT_TYPE
 *    without the HTTP_ prefix; Content-Length stays as HTTP_CONTENT_LENGTH next to
 *    CONTENT_LENGTH), then setenv.add-environment variables.
 *  - A chunked request body reaches an SCGI backend only once complete (gw_backend.c answers 411
 *    when asked to stream it), so CONTENT_LENGTH is always a known, non-negative number.
 *
 * Parsing is a byte-exact state machine: names and values are found with memchr / length fields
 * bounded by both the bytes fed and the declared head size, so nothing past either is read. */
#include "scgi_parse.h"

#include <string.h>
#include <strings.h>

enum {
    S_START,
    S_NS_LEN, /* SCGI: netstring length digits */
    S_NAME,   /* SCGI: a name up to its NUL */
    S_VALUE,  /* SCGI: a value up to its NUL */
    S_COMMA,  /* SCGI: the netstring's ',' */
    S_U_HDR,  /* uwsgi: the 4-byte packet header */
    S_U_KLEN, /* uwsgi: a key length */
    S_U_KEY,
    S_U_VLEN, /* uwsgi: a value length */
    S_U_VAL,
    S_DONE,
    S_HTTP,
    S_ERROR,
};

/* Names the parser itself must recognise, as bits of scgi_parser.match / special / seen. */
#define SP_CL   1u /* CONTENT_LENGTH */
#define SP_SCGI 2u /* SCGI */
static const char *const sp_name[] = {"", "CONTENT_LENGTH", "SCGI"};
static const uint32_t sp_len[] = {0, 14, 4};

#define MAX_HEAD_CAP (16u * 1024 * 1024)

int scgi_parser_init(scgi_parser *p, const scgi_limits *limits, scgi_var_pos *slots,
                     unsigned accept)
{
    if (!p || !limits || !slots || limits->max_vars == 0) return -1;
    memset(p, 0, sizeof *p);
    p->vars = slots;
    p->max_vars = limits->max_vars;
    size_t mh = limits->max_header_bytes ? limits->max_header_bytes : 65535;
    p->max_head = mh > MAX_HEAD_CAP ? MAX_HEAD_CAP : (uint32_t)mh;
    p->max_cl = limits->max_content_length > 0 ? limits->max_content_length : INT64_MAX;
    p->accept = accept ? accept : SCGI_ACCEPT_ALL;
    p->state = S_START;
    p->content_length = -1;
    return 0;
}

static scgi_result fail(scgi_parser *p, int status, const char *why)
{
    p->state = S_ERROR;
    p->status = status;
    p->error = why;
    return SCGI_ERROR;
}

static scgi_result sticky(const scgi_parser *p)
{
    switch (p->state) {
    case S_DONE: return SCGI_HEAD_DONE;
    case S_HTTP: return SCGI_IS_HTTP;
    case S_ERROR: return SCGI_ERROR;
    default: return SCGI_NEED_MORE;
    }
}

/* A new variable starts at p->pos: reserve its slot. */
static int var_begin(scgi_parser *p)
{
    if (p->n_vars >= p->max_vars) return 0;
    p->vars[p->n_vars].name_off = p->pos;
    p->cur_len = 0;
    p->match = p->proto == SCGI_PROTO_SCGI ? (SP_CL | SP_SCGI) : SP_CL;
    p->special = 0;
    return 1;
}

/* @p n more bytes of the current name: drop the special names they do not continue. */
static void name_bytes(scgi_parser *p, const char *s, uint32_t n)
{
    for (unsigned b = 1; b <= SP_SCGI; b <<= 1) {
        if (!(p->match & b)) continue;
        if (p->cur_len + n > sp_len[b] || memcmp(s, sp_name[b] + p->cur_len, n) != 0)
            p->match &= ~b;
    }
    p->cur_len += n;
}

/* The current name is complete (p->cur_len bytes, starting at its slot's name_off). */
static scgi_result name_end(scgi_parser *p)
{
    scgi_var_pos *v = &p->vars[p->n_vars];
    v->name_len = p->cur_len;
    if (p->cur_len == 0) return fail(p, 400, "empty variable name");
    unsigned sp = 0;
    for (unsigned b = 1; b <= SP_SCGI; b <<= 1)
        if ((p->match & b) && p->cur_len == sp_len[b]) sp = b;
    if (p->proto == SCGI_PROTO_SCGI && p->n_vars == 0 && sp != SP_CL)
        return fail(p, 400, "SCGI: CONTENT_LENGTH is not the first variable");
    if (sp & p->seen)
        return fail(p, 400, sp == SP_CL ? "duplicate CONTENT_LENGTH" : "duplicate SCGI variable");
    p->seen |= sp;
    p->special = sp;
    p->cur_len = 0;
    return SCGI_NEED_MORE;
}

/* @p n more bytes of the current value. */
static scgi_result value_bytes(scgi_parser *p, const char *s, uint32_t n)
{
    if (p->special == SP_CL) {
        int64_t cl = p->cur_len ? p->content_length : 0;
        for (uint32_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c < '0' || c > '9') return fail(p, 400, "CONTENT_LENGTH is not a decimal number");
            int d = c - '0';
            if (cl > (INT64_MAX - d) / 10) return fail(p, 413, "CONTENT_LENGTH is too large");
            cl = cl * 10 + d;
        }
        p->content_length = cl;
    } else if (p->special == SP_SCGI) {
        if (p->cur_len + n > 1 || s[0] != '1') return fail(p, 400, "SCGI variable is not \"1\"");
    }
    p->cur_len += n;
    return SCGI_NEED_MORE;
}

/* The current value is complete: the variable is recorded. */
static scgi_result value_end(scgi_parser *p, uint32_t value_off)
{
    if (p->special == SP_CL) {
        if (p->cur_len == 0) {
            /* uWSGI itself reads an empty CONTENT_LENGTH as 0 (nginx's uwsgi_params sends
             * $content_length, empty without a body); the SCGI spec requires a number. */
            if (p->proto == SCGI_PROTO_SCGI) return fail(p, 400, "CONTENT_LENGTH is empty");
            p->content_length = 0;
        }
        if (p->content_length > p->max_cl)
            return fail(p, 413, "CONTENT_LENGTH exceeds the body size limit");
    } else if (p->special == SP_SCGI && p->cur_len != 1) {
        return fail(p, 400, "SCGI variable is not \"1\"");
    }
    scgi_var_pos *v = &p->vars[p->n_vars++];
    v->value_off = value_off;
    v->value_len = p->cur_len;
    p->cur_len = 0;
    return SCGI_NEED_MORE;
}

static scgi_result scgi_head_end(scgi_parser *p)
{
    if (!(p->seen & SP_CL)) return fail(p, 400, "CONTENT_LENGTH is missing");
    if (!(p->seen & SP_SCGI)) return fail(p, 400, "SCGI variable is missing");
    p->state = S_DONE;
    return SCGI_HEAD_DONE;
}

static scgi_result uwsgi_head_end(scgi_parser *p)
{
    if (!(p->seen & SP_CL)) p->content_length = 0; /* as uWSGI does */
    p->state = S_DONE;
    return SCGI_HEAD_DONE;
}

/* Enter a uwsgi length field (S_U_KLEN or S_U_VLEN). Its 2 bytes must fit in the vars: known from
 * datasize now, not when a byte past the vars arrives, which a peer that sent its whole packet
 * and no body never sends (it would wait for the answer until a timeout). */
static scgi_result uwsgi_length_next(scgi_parser *p, int state)
{
    if (p->remaining < 2) return fail(p, 400, "uwsgi vars end inside a length field");
    p->state = state;
    return SCGI_NEED_MORE;
}

/* A uwsgi value is complete: the variable is recorded; the vars may be complete too. */
static scgi_result uwsgi_var_end(scgi_parser *p)
{
    scgi_result rc = value_end(p, p->vars[p->n_vars].value_off);
    if (rc != SCGI_NEED_MORE) return rc;
    if (p->remaining == 0) return uwsgi_head_end(p);
    return uwsgi_length_next(p, S_U_KLEN);
}

#define TOO_MANY_VARS "too many variables"

static uint32_t le16(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8;
}

/* The rest of the uwsgi vars, all of them in @p d (at a key length field, p->remaining bytes):
 * walked var by var instead of through a state per field (the usual case: lighttpd writes the
 * whole packet at once). The same checks and errors as the states S_U_KLEN to S_U_VAL, in the
 * same order. *@p used: the bytes consumed, also on an error. */
static scgi_result uwsgi_vars_whole(scgi_parser *p, const unsigned char *d, size_t *used)
{
    const unsigned char *start = d;
    scgi_result rc = SCGI_NEED_MORE;
    while (rc == SCGI_NEED_MORE) {
        /* p->remaining >= 2 here: checked on entering each length field (uwsgi_length_next) */
        if (!var_begin(p)) {
            rc = fail(p, 431, TOO_MANY_VARS);
            break;
        }
        uint32_t kl = le16(d);
        d += 2, p->pos += 2, p->remaining -= 2;
        if (kl > p->remaining) {
            rc = fail(p, 400, "uwsgi key length runs past the vars");
            break;
        }
        if (kl == 0) {
            rc = fail(p, 400, "empty variable name");
            break;
        }
        p->vars[p->n_vars].name_off = p->pos;
        name_bytes(p, (const char *)d, kl);
        d += kl, p->pos += kl, p->remaining -= kl;
        if ((rc = name_end(p)) != SCGI_NEED_MORE) break;
        if ((rc = uwsgi_length_next(p, S_U_VLEN)) != SCGI_NEED_MORE) break;
        uint32_t vl = le16(d);
        d += 2, p->pos += 2, p->remaining -= 2;
        if (vl > p->remaining) {
            rc = fail(p, 400, "uwsgi value length runs past the vars");
            break;
        }
        p->vars[p->n_vars].value_off = p->pos;
        p->state = S_U_VAL;
        if (vl && (rc = value_bytes(p, (const char *)d, vl)) != SCGI_NEED_MORE) break;
        d += vl, p->pos += vl, p->remaining -= vl;
        rc = uwsgi_var_end(p); /* S_U_KLEN again, the head's end, or an error */
    }
    *used = (size_t)(d - start);
    return rc;
}

scgi_result scgi_parser_feed(scgi_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t i = 0;
    scgi_result rc = SCGI_NEED_MORE;
    if (consumed) *consumed = 0;
    if (!p) return SCGI_ERROR;
    if (!data && len) return fail(p, 400, "NULL data");
    if (p->state == S_DONE || p->state == S_HTTP || p->state == S_ERROR) return sticky(p);

    while (i < len && rc == SCGI_NEED_MORE) {
        const unsigned char c = (unsigned char)data[i];
        switch (p->state) {
        case S_START:
            if (c >= '0' && c <= '9') {
                if (!(p->accept & SCGI_ACCEPT_SCGI)) {
                    rc = fail(p, 400, "SCGI is not accepted here");
                    break;
                }
                p->proto = SCGI_PROTO_SCGI;
                p->state = S_NS_LEN;
                continue; /* the digit is the first of the length */
            }
            if (c == 0) {
                if (!(p->accept & SCGI_ACCEPT_UWSGI)) {
                    rc = fail(p, 400, "uwsgi is not accepted here");
                    break;
                }
                p->proto = SCGI_PROTO_UWSGI;
                p->state = S_U_HDR;
                continue;
            }
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) {
                if (!(p->accept & SCGI_ACCEPT_HTTP)) {
                    rc = fail(p, 400, "plain HTTP is not accepted here");
                    break;
                }
                p->proto = SCGI_PROTO_HTTP;
                p->state = S_HTTP;
                rc = SCGI_IS_HTTP;
                break; /* nothing consumed: the HTTP parser gets the bytes */
            }
            rc = fail(p, 400, "unknown protocol (first byte is not a digit, 0x00 or a letter)");
            break;

        case S_NS_LEN:
            if (c >= '0' && c <= '9') {
                if (p->ns_digits == 1 && p->head_len == 0) {
                    rc = fail(p, 400, "SCGI netstring length has a leading zero");
                    break;
                }
                /* head_len <= 16 MiB before this step, so no overflow */
                p->head_len = p->head_len * 10 + (uint32_t)(c - '0');
                p->ns_digits++;
                if (p->head_len > p->max_head) {
                    rc = fail(p, 431, "SCGI netstring is longer than the header limit");
                    break;
                }
            } else if (c == ':') {
                p->pos++, i++;
                p->remaining = p->head_len;
                if (p->remaining == 0) {
                    p->state = S_COMMA; /* no variables: CONTENT_LENGTH is missing */
                } else {
                    p->state = S_NAME;
                    var_begin(p); /* max_vars > 0: the first slot exists */
                }
                break;
            } else {
                rc = fail(p, 400, "SCGI netstring length is not followed by ':'");
                break;
            }
            p->pos++, i++;
            break;

        case S_NAME:
        case S_VALUE: {
            size_t avail = len - i;
            if (avail > p->remaining) avail = p->remaining;
            const char *seg = data + i;
            const char *nul = memchr(seg, '\0', avail);
            uint32_t n = (uint32_t)(nul ? (size_t)(nul - seg) : avail);
            uint32_t start = p->pos - p->cur_len; /* where this name or value began */
            if (p->state == S_NAME) {
                if (n) name_bytes(p, seg, n);
            } else if (n) {
                rc = value_bytes(p, seg, n);
                if (rc != SCGI_NEED_MORE) break;
            }
            uint32_t step = n + (nul ? 1u : 0u);
            p->pos += step, i += step, p->remaining -= step;
            if (nul) {
                if (p->state == S_NAME) {
                    if ((rc = name_end(p)) != SCGI_NEED_MORE) break;
                    p->state = S_VALUE;
                } else {
                    if ((rc = value_end(p, start)) != SCGI_NEED_MORE) break;
                    p->state = S_NAME;
                    if (p->remaining && !var_begin(p)) {
                        rc = fail(p, 431, TOO_MANY_VARS);
                        break;
                    }
                }
            }
            if (p->remaining == 0) {
                if (p->state == S_NAME && p->cur_len == 0)
                    p->state = S_COMMA;
                else if (p->state == S_VALUE && p->cur_len == 0)
                    rc = fail(p, 400, "SCGI: odd number of strings (a name without a value)");
                else
                    rc = fail(p, 400, "SCGI netstring does not end with a NUL");
            }
            break;
        }

        case S_COMMA:
            if (c != ',') {
                rc = fail(p, 400, "SCGI netstring is not terminated by ','");
                break;
            }
            p->pos++, i++;
            rc = scgi_head_end(p);
            break;

        case S_U_HDR:
            p->tmp[p->tmp_n++] = c;
            p->pos++, i++;
            if (p->tmp_n < 4) break;
            p->tmp_n = 0;
            /* p->tmp[0] is modifier1, 0 (checked in S_START) */
            if (p->tmp[3] != 0) {
                rc = fail(p, 400, "uwsgi modifier2 is not 0");
                break;
            }
            p->head_len = (uint32_t)p->tmp[1] | (uint32_t)p->tmp[2] << 8;
            if (p->head_len > p->max_head) {
                rc = fail(p, 431, "uwsgi vars are longer than the header limit");
                break;
            }
            p->remaining = p->head_len;
            if (p->remaining == 0) {
                rc = uwsgi_head_end(p);
                break;
            }
            rc = uwsgi_length_next(p, S_U_KLEN);
            break;

        case S_U_KLEN:
        case S_U_VLEN:
            if (p->state == S_U_KLEN && p->tmp_n == 0 && len - i >= p->remaining) {
                size_t used = 0;
                rc = uwsgi_vars_whole(p, (const unsigned char *)data + i, &used);
                i += used;
                break;
            }
            if (p->tmp_n == 0) {
                /* remaining >= 2: checked on entering the field (uwsgi_length_next) */
                if (p->state == S_U_KLEN && !var_begin(p)) {
                    rc = fail(p, 431, TOO_MANY_VARS);
                    break;
                }
            }
            p->tmp[p->tmp_n++] = c;
            p->pos++, i++, p->remaining--;
            if (p->tmp_n < 2) break;
            p->tmp_n = 0;
            p->field_len = (uint32_t)p->tmp[0] | (uint32_t)p->tmp[1] << 8;
            p->cur_len = 0;
            if (p->field_len > p->remaining) {
                rc = fail(p, 400,
                          p->state == S_U_KLEN ? "uwsgi key length runs past the vars"
                                               : "uwsgi value length runs past the vars");
                break;
            }
            if (p->state == S_U_KLEN) {
                if (p->field_len == 0) {
                    rc = fail(p, 400, "empty variable name");
                    break;
                }
                p->vars[p->n_vars].name_off = p->pos;
                p->state = S_U_KEY;
            } else {
                p->vars[p->n_vars].value_off = p->pos;
                p->state = S_U_VAL;
                if (p->field_len == 0) rc = uwsgi_var_end(p);
            }
            break;

        case S_U_KEY:
        case S_U_VAL: {
            size_t avail = len - i;
            uint32_t n = p->field_len - p->cur_len;
            if (avail < n) n = (uint32_t)avail;
            if (p->state == S_U_KEY) {
                name_bytes(p, data + i, n);
            } else {
                rc = value_bytes(p, data + i, n);
                if (rc != SCGI_NEED_MORE) break;
            }
            p->pos += n, i += n, p->remaining -= n;
            if (p->cur_len < p->field_len) break;
            if (p->state == S_U_KEY) {
                if ((rc = name_end(p)) == SCGI_NEED_MORE) rc = uwsgi_length_next(p, S_U_VLEN);
            } else {
                rc = uwsgi_var_end(p);
            }
            break;
        }

        default: /* S_DONE, S_HTTP, S_ERROR: left the loop through rc */ rc = sticky(p); break;
        }
    }
    if (consumed) *consumed = i;
    return rc;
}

scgi_result scgi_parser_eof(scgi_parser *p)
{
    if (!p) return SCGI_ERROR;
    if (p->state == S_DONE || p->state == S_HTTP || p->state == S_ERROR) return sticky(p);
    if (p->state == S_START) return fail(p, 400, "connection closed before a request");
    return fail(p, 400, "truncated request head");
}

scgi_proto scgi_parser_protocol(const scgi_parser *p)
{
    return p->proto;
}

int scgi_parser_status(const scgi_parser *p)
{
    return p->state == S_ERROR ? p->status : 0;
}

const char *scgi_parser_error(const scgi_parser *p)
{
    return p->state == S_ERROR && p->error ? p->error : "";
}

size_t scgi_parser_head_len(const scgi_parser *p)
{
    return p->state == S_DONE ? p->pos : 0;
}

int64_t scgi_parser_content_length(const scgi_parser *p)
{
    return p->state == S_DONE ? p->content_length : -1;
}

size_t scgi_parser_nvars(const scgi_parser *p)
{
    return p->n_vars;
}

int scgi_parser_var(const scgi_parser *p, const char *head, size_t i, wsgi_header *out)
{
    if (!p || !head || !out || i >= p->n_vars) return -1;
    const scgi_var_pos *v = &p->vars[i];
    out->name = head + v->name_off;
    out->name_len = v->name_len;
    out->value = head + v->value_off;
    out->value_len = v->value_len;
    return 0;
}

/* The first and last bytes first: most names of the same length differ there (a memcmp call per
 * variable and candidate name was 3 % of libwsgi-scgi's CPU through lighttpd). */
static int name_is(const wsgi_header *h, const char *lit, size_t n)
{
    if (h->name_len != n) return 0;
    if (n == 0) return 1;
    return h->name[0] == lit[0] && h->name[n - 1] == lit[n - 1] && memcmp(h->name, lit, n) == 0;
}
#define NAME_IS(h, lit) name_is((h), lit, sizeof lit - 1)

int scgi_parser_find(const scgi_parser *p, const char *head, const char *name, const char **value,
                     size_t *value_len)
{
    wsgi_header h;
    size_t n = name ? strlen(name) : 0;
    for (size_t i = 0; p && head && name && i < p->n_vars; i++) {
        scgi_parser_var(p, head, i, &h);
        if (name_is(&h, name, n)) {
            if (value) *value = h.value;
            if (value_len) *value_len = h.value_len;
            return 1;
        }
    }
    return 0;
}

/* ---- mapping to wsgi_request ------------------------------------------------------------------
 */

/* A decimal port 0..65535; empty is 0. Returns -1 when malformed. */
static long parse_port(const char *s, size_t n)
{
    long v = 0;
    if (n > 5) return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

/* "HTTP/<d>.<d>" or "HTTP/<d>". */
static int parse_protocol(const char *s, size_t n, int *major, int *minor)
{
    if (n < 6 || memcmp(s, "HTTP/", 5) != 0 || s[5] < '0' || s[5] > '9') return -1;
    if (n == 6) {
        *major = s[5] - '0', *minor = 0;
        return 0;
    }
    if (n == 8 && s[6] == '.' && s[7] >= '0' && s[7] <= '9') {
        *major = s[5] - '0', *minor = s[7] - '0';
        return 0;
    }
    return -1;
}

/* Copy @p n bytes + NUL into the scratch buffer. */
static const char *scratch_cstr(const scgi_map_buffers *b, size_t *used, const char *s, size_t n)
{
    if (b->scratch_cap - *used < n + 1) return NULL;
    char *d = b->scratch + *used;
    memcpy(d, s, n);
    d[n] = '\0';
    *used += n + 1;
    return d;
}

static int fail_map(const char **err, int rc, const char *why)
{
    if (err) *err = why;
    return rc;
}

int scgi_map_request(const scgi_parser *p, const char *head, const scgi_map_buffers *b,
                     wsgi_request *req, scgi_cgi *cgi, const char **err)
{
    scgi_cgi local;
    if (!cgi) cgi = &local;
    if (err) *err = "";
    if (!p || !head || !b || !req || p->state != S_DONE)
        return fail_map(err, -1, "the request head is not complete");
    if ((b->headers_cap && !b->headers) || (b->extra_cap && !b->extra) ||
        (b->scratch_cap && !b->scratch))
        return fail_map(err, -1, "NULL buffer with a capacity");
    wsgi_request_init(req);
    memset(cgi, 0, sizeof *cgi);
    req->http_major = 1, req->http_minor = 0; /* CGI without SERVER_PROTOCOL */
    req->content_length = p->content_length;

    size_t nh = 0, nx = 0, used = 0;
    const wsgi_header *cl = NULL, *ct = NULL;
    int client_sent_cl = 0, have_proto = 0, have_sn = 0, have_pi = 0, have_rs = 0;
    const char *sn = NULL, *ca = NULL;
    size_t sn_len = 0, ca_len = 0;
    int have_sname = 0, have_caddr = 0, have_sport = 0, have_cport = 0, have_https = 0;
    wsgi_header v;
    wsgi_header vars_cl = {0}, vars_ct = {0};

    for (size_t i = 0; i < p->n_vars; i++) {
        scgi_parser_var(p, head, i, &v);
        /* "HTTP_" itself too: a header without a name, dropped below (as an extra variable it
         * would reach the environ as an HTTP_ key that names no header). */
        if (v.name_len >= 5 && v.name[0] == 'H' && memcmp(v.name, "HTTP_", 5) == 0) {
            if (NAME_IS(&v, "HTTP_CONTENT_LENGTH")) {
                client_sent_cl = 1;
                continue;
            }
            if (NAME_IS(&v, "HTTP_CONTENT_TYPE")) continue;
            size_t n = v.name_len - 5;
            const char *s = v.name + 5;
            int ok = n > 0;
            for (size_t k = 0; k < n && ok; k++) {
                char ch = s[k];
                ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                     (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
            }
            if (!ok) continue;
            if (nh >= b->headers_cap) return fail_map(err, -1, "headers buffer too small");
            if (b->scratch_cap - used < n) return fail_map(err, -1, "scratch buffer too small");
            char *d = b->scratch + used;
            for (size_t k = 0; k < n; k++) {
                char ch = s[k];
                d[k] = ch == '_' ? '-' : (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
            }
            used += n;
            b->headers[nh++] = (wsgi_header){d, n, v.value, v.value_len};
            continue;
        }
        if (NAME_IS(&v, "REQUEST_METHOD")) {
            if (!req->method) req->method = v.value, req->method_len = v.value_len;
        } else if (NAME_IS(&v, "REQUEST_URI")) {
            if (!req->target) req->target = v.value, req->target_len = v.value_len;
        } else if (NAME_IS(&v, "SERVER_PROTOCOL")) {
            if (!have_proto &&
                parse_protocol(v.value, v.value_len, &req->http_major, &req->http_minor) != 0)
                return fail_map(err, 400, "SERVER_PROTOCOL is not HTTP/<major>[.<minor>]");
            have_proto = 1;
        } else if (NAME_IS(&v, "HTTPS")) {
            if (!have_https)
                cgi->https |= (v.value_len == 2 && strncasecmp(v.value, "on", 2) == 0) ||
                              (v.value_len == 1 && v.value[0] == '1');
            have_https = 1;
        } else if (NAME_IS(&v, "SERVER_NAME")) {
            if (!have_sname) sn = v.value, sn_len = v.value_len;
            have_sname = 1;
        } else if (NAME_IS(&v, "SERVER_PORT")) {
            long port = parse_port(v.value, v.value_len);
            if (port < 0) return fail_map(err, 400, "SERVER_PORT is not a port number");
            if (!have_sport) req->server_port = (unsigned)port;
            have_sport = 1;
        } else if (NAME_IS(&v, "REMOTE_ADDR")) {
            if (!have_caddr) ca = v.value, ca_len = v.value_len;
            have_caddr = 1;
        } else if (NAME_IS(&v, "REMOTE_PORT")) {
            long port = parse_port(v.value, v.value_len);
            if (port < 0) return fail_map(err, 400, "REMOTE_PORT is not a port number");
            if (!have_cport) req->client_port = (unsigned)port;
            have_cport = 1;
        } else if (NAME_IS(&v, "CONTENT_LENGTH")) {
            vars_cl = v, cl = &vars_cl;
        } else if (NAME_IS(&v, "CONTENT_TYPE")) {
            if (!ct) vars_ct = v, ct = &vars_ct;
        } else {
            /* Everything else reaches the environ as given, if its name is a CGI variable name
             * (letters, digits, '_': all lighttpd sends); others could replace wsgi.* keys. */
            int cgi_name = 1;
            for (size_t k = 0; k < v.name_len && cgi_name; k++) {
                char ch = v.name[k];
                cgi_name = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                           (ch >= '0' && ch <= '9') || ch == '_';
            }
            if (!cgi_name) continue;
            /* A repeated one of these is dropped: the first wins in the environ too (extra
             * variables later in the array replace earlier ones), as in the request (scheme) and
             * in ASGI's root_path (the first SCRIPT_NAME). */
            if (NAME_IS(&v, "SCRIPT_NAME")) {
                if (have_sn) continue;
                have_sn = 1, cgi->script_name = v.value, cgi->script_name_len = v.value_len;
            } else if (NAME_IS(&v, "PATH_INFO")) {
                if (have_pi) continue;
                have_pi = 1, cgi->path_info = v.value, cgi->path_info_len = v.value_len;
            } else if (NAME_IS(&v, "QUERY_STRING")) {
                if (cgi->query) continue;
                cgi->query = v.value, cgi->query_len = v.value_len;
            } else if (NAME_IS(&v, "REQUEST_SCHEME")) {
                if (have_rs) continue;
                have_rs = 1;
                if (v.value_len == 5 && strncasecmp(v.value, "https", 5) == 0) cgi->https = 1;
            }
            if (nx >= b->extra_cap) return fail_map(err, -1, "extra buffer too small");
            b->extra[nx++] = v;
        }
    }

    if (!req->method || req->method_len == 0)
        return fail_map(err, 400, "REQUEST_METHOD is missing");
    if (!req->target || req->target_len == 0) return fail_map(err, 400, "REQUEST_URI is missing");
    if (ct && ct->value_len) {
        if (nh >= b->headers_cap) return fail_map(err, -1, "headers buffer too small");
        b->headers[nh++] = (wsgi_header){"Content-Type", 12, ct->value, ct->value_len};
    }
    if (cl && cl->value_len && (p->content_length > 0 || client_sent_cl)) {
        if (nh >= b->headers_cap) return fail_map(err, -1, "headers buffer too small");
        b->headers[nh++] = (wsgi_header){"Content-Length", 14, cl->value, cl->value_len};
    }
    if (have_sn && !have_pi) {
        if (nx >= b->extra_cap) return fail_map(err, -1, "extra buffer too small");
        b->extra[nx++] = (wsgi_header){"PATH_INFO", 9, "", 0};
    }
    if (sn_len && !(req->server_name = scratch_cstr(b, &used, sn, sn_len)))
        return fail_map(err, -1, "scratch buffer too small");
    if (ca_len && !(req->client_addr = scratch_cstr(b, &used, ca, ca_len)))
        return fail_map(err, -1, "scratch buffer too small");
    req->scheme = cgi->https ? "https" : "http";
    req->headers = nh ? b->headers : NULL;
    req->n_headers = nh;
    req->extra_environ = nx ? b->extra : NULL;
    req->n_extra_environ = nx;
    return 0;
}
