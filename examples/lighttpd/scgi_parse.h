/**
 * @file scgi_parse.h
 * @brief Incremental parsers for the request heads lighttpd's mod_scgi sends (SCGI and uwsgi), the
 *        first-byte protocol detection of libwsgi-scgi, and the mapping of the CGI variables to a
 *        wsgi_request (issue 11).
 *
 * A push parser in the style of nghttp2 / wslay: the caller owns every buffer, the parser
 * allocates nothing and never reads a byte twice. Feed it the bytes of a connection as they
 * arrive:
 * @code
 *   scgi_var_pos slots[64];
 *   scgi_limits lim = {.max_header_bytes = 65535, .max_vars = 64};
 *   scgi_parser p;
 *   scgi_parser_init(&p, &lim, slots, SCGI_ACCEPT_ALL);
 *   for (;;) {
 *       n = read(fd, buf + have, cap - have);          // the head stays contiguous in buf
 *       if (n == 0) { scgi_parser_eof(&p); break; }     // truncated: SCGI_ERROR, status 400
 *       rc = scgi_parser_feed(&p, buf + have, n, &used); have += n;
 *       if (rc != SCGI_NEED_MORE) break;
 *   }
 *   // SCGI_HEAD_DONE: buf[scgi_parser_head_len(&p) .. have) are the first body bytes.
 *   // SCGI_IS_HTTP:   nothing consumed; hand buf to the HTTP parser (mod_proxy, WebSocket).
 *   // SCGI_ERROR:     answer scgi_parser_status(&p) (400 / 413 / 431) and close.
 * @endcode
 *
 * Variables are recorded as offsets from the first byte fed, in the caller's ::scgi_var_pos
 * array, so the buffer may move between calls (realloc, compaction); only when reading them
 * (scgi_parser_var(), scgi_map_request()) must the whole head be contiguous at @c head.
 *
 * One request per connection: lighttpd opens a new backend connection for each request over
 * SCGI and uwsgi. scgi_parser_init() again to reuse the struct.
 */
#ifndef LIBWSGI_SCGI_PARSE_H
#define LIBWSGI_SCGI_PARSE_H

#include <libwsgi/libwsgi.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief The protocol of a connection, decided by its first byte. */
typedef enum scgi_proto {
    SCGI_PROTO_UNKNOWN = 0, /**< Nothing fed yet. */
    SCGI_PROTO_SCGI,        /**< First byte a digit: an SCGI netstring. */
    SCGI_PROTO_UWSGI,       /**< First byte 0x00: a uwsgi packet with modifier1 0 (WSGI). */
    SCGI_PROTO_HTTP,        /**< First byte an ASCII letter: a plain HTTP/1.x request line. */
} scgi_proto;

/** @brief Which protocols a parser accepts (scgi_parser_init()); others are a 400. */
enum scgi_accept {
    SCGI_ACCEPT_SCGI = 1u << 0,  /**< SCGI netstrings. */
    SCGI_ACCEPT_UWSGI = 1u << 1, /**< uwsgi packets. */
    SCGI_ACCEPT_HTTP = 1u << 2,  /**< Plain HTTP (reported as ::SCGI_IS_HTTP, not parsed). */
    SCGI_ACCEPT_ALL = 7u,        /**< All three, told apart by the first byte. */
};

/** @brief Results of scgi_parser_feed(). Once not ::SCGI_NEED_MORE, every later call repeats it. */
typedef enum scgi_result {
    SCGI_ERROR = -1, /**< Malformed or too large: see scgi_parser_status(), scgi_parser_error(). */
    SCGI_NEED_MORE = 0, /**< All bytes consumed; the head is not complete yet. */
    SCGI_HEAD_DONE = 1, /**< The head is complete; bytes after it were not consumed (the body). */
    SCGI_IS_HTTP = 2,   /**< The connection speaks plain HTTP; nothing was consumed. */
} scgi_result;

/** @brief Limits of one parser. */
typedef struct scgi_limits {
    /** Largest head: the SCGI netstring's payload length, or the uwsgi datasize (at most 65535 by
     *  the protocol). Longer is a 431. 0 means 65535; at most 16 MiB. */
    size_t max_header_bytes;
    /** Most variables (name/value pairs); more is a 431. Also the number of entries of the
     *  ::scgi_var_pos array given to scgi_parser_init(). Must be > 0. */
    size_t max_vars;
    /** Largest CONTENT_LENGTH accepted; larger is a 413. 0: no limit (INT64_MAX). */
    int64_t max_content_length;
} scgi_limits;

/** @brief Where one variable lies in the head: offsets from the first byte fed. */
typedef struct scgi_var_pos {
    uint32_t name_off;  /**< Offset of the name. */
    uint32_t name_len;  /**< Length of the name (> 0). */
    uint32_t value_off; /**< Offset of the value. */
    uint32_t value_len; /**< Length of the value. */
} scgi_var_pos;

/** @brief Parser state. Allocated by the caller; the fields are private. */
typedef struct scgi_parser {
    scgi_var_pos *vars;        /* the caller's array, max_vars entries */
    size_t max_vars, n_vars;   /* n_vars: completed variables */
    uint32_t max_head;         /* limits.max_header_bytes */
    int64_t max_cl;            /* limits.max_content_length */
    unsigned accept;           /* enum scgi_accept */
    scgi_proto proto;          /* decided by the first byte */
    int state;                 /* private enum in scgi_parse.c */
    uint32_t pos;              /* offset of the next byte */
    uint32_t head_len;         /* SCGI payload length / uwsgi datasize */
    uint32_t remaining;        /* bytes of the payload / datasize not yet consumed */
    uint32_t cur_len;          /* bytes of the current name or value seen so far */
    uint32_t field_len;        /* uwsgi: length of the current key or value */
    unsigned char tmp[4];      /* uwsgi: a header or length field split across feeds */
    unsigned tmp_n, ns_digits; /* bytes in tmp; digits of the netstring length */
    unsigned match;            /* special names the current name may still be */
    unsigned special;          /* the special name of the current variable, or 0 */
    unsigned seen;             /* special names seen */
    int64_t content_length;    /* CONTENT_LENGTH, -1 until known */
    int status;                /* HTTP status for an error, 0 otherwise */
    const char *error;         /* static reason, NULL if none */
} scgi_parser;

/**
 * @brief Initialise @p p.
 * @param[out] p The parser.
 * @param[in] limits Limits (copied).
 * @param[in] slots Storage for limits->max_vars variable positions; must outlive the parser.
 * @param[in] accept Bitwise OR of ::scgi_accept; 0 means ::SCGI_ACCEPT_ALL.
 * @return 0, or -1 for a NULL argument or max_vars 0.
 */
int scgi_parser_init(scgi_parser *p, const scgi_limits *limits, scgi_var_pos *slots,
                     unsigned accept);

/**
 * @brief Feed the next bytes of the connection.
 *
 * Only head bytes are consumed: on ::SCGI_HEAD_DONE, @p data + *consumed is the first body byte.
 * Bytes may be fed in pieces of any size down to one byte; the results are the same.
 * @param[in,out] p The parser.
 * @param[in] data Bytes (may be NULL when @p len is 0).
 * @param[in] len Number of bytes.
 * @param[out] consumed Bytes of @p data that belong to the head (may be NULL).
 * @return A ::scgi_result.
 */
scgi_result scgi_parser_feed(scgi_parser *p, const char *data, size_t len, size_t *consumed);

/**
 * @brief The peer closed the connection (or the caller gives up): a head not yet complete is an
 *        error ("truncated request head", 400).
 * @param[in,out] p The parser.
 * @return The parser's result after that (::SCGI_ERROR unless the head was complete or HTTP).
 */
scgi_result scgi_parser_eof(scgi_parser *p);

/** @brief The protocol, once the first byte was fed. */
scgi_proto scgi_parser_protocol(const scgi_parser *p);

/** @brief HTTP status to answer after ::SCGI_ERROR (400, 413 or 431), 0 otherwise. */
int scgi_parser_status(const scgi_parser *p);

/** @brief Static English reason of the error, "" if none; never NULL. */
const char *scgi_parser_error(const scgi_parser *p);

/** @brief Bytes of the complete head including its framing (netstring length, ':' and ',';
 *         uwsgi's 4-byte header): the offset of the first body byte. 0 before ::SCGI_HEAD_DONE. */
size_t scgi_parser_head_len(const scgi_parser *p);

/** @brief CONTENT_LENGTH (0 when a uwsgi packet has none or an empty one), -1 before
 *         ::SCGI_HEAD_DONE. Exactly that many body bytes follow the head. */
int64_t scgi_parser_content_length(const scgi_parser *p);

/** @brief Number of variables; complete only after ::SCGI_HEAD_DONE. */
size_t scgi_parser_nvars(const scgi_parser *p);

/**
 * @brief Variable @p i as spans into @p head (not copied, not NUL-terminated).
 * @param[in] p The parser.
 * @param[in] head Where the first byte fed now is; the head must be contiguous there.
 * @param[in] i Index, < scgi_parser_nvars().
 * @param[out] out name/value spans.
 * @return 0, or -1 if @p i is out of range.
 */
int scgi_parser_var(const scgi_parser *p, const char *head, size_t i, wsgi_header *out);

/**
 * @brief The first variable named @p name (exact, case-sensitive).
 * @param[in] p The parser.
 * @param[in] head As for scgi_parser_var().
 * @param[in] name NUL-terminated name.
 * @param[out] value Its value span (may be NULL).
 * @param[out] value_len Its length (may be NULL).
 * @return 1 if found, 0 if not.
 */
int scgi_parser_find(const scgi_parser *p, const char *head, const char *name, const char **value,
                     size_t *value_len);

/**
 * @brief Storage the caller lends to scgi_map_request(). With headers_cap >= nvars,
 *        extra_cap >= nvars + 1 and scratch_cap >= scgi_parser_head_len() + 2 it always suffices.
 */
typedef struct scgi_map_buffers {
    wsgi_header *headers; /**< Request headers (wsgi_request::headers). */
    size_t headers_cap;   /**< Entries of @c headers. */
    wsgi_header *extra;   /**< The other CGI variables (wsgi_request::extra_environ). */
    size_t extra_cap;     /**< Entries of @c extra. */
    char *scratch;        /**< Header names and the NUL-terminated server name / client address. */
    size_t scratch_cap;   /**< Bytes of @c scratch. */
} scgi_map_buffers;

/** @brief What scgi_map_request() found besides the wsgi_request; spans into the head, NULL when
 *         the variable was absent. */
typedef struct scgi_cgi {
    const char *script_name; /**< SCRIPT_NAME as lighttpd split it. */
    size_t script_name_len;  /**< Length of @c script_name. */
    const char *path_info;   /**< PATH_INFO (decoded, as lighttpd gives it). */
    size_t path_info_len;    /**< Length of @c path_info. */
    const char *query;       /**< QUERY_STRING. */
    size_t query_len;        /**< Length of @c query. */
    int https;               /**< HTTPS=on (or REQUEST_SCHEME=https). */
} scgi_cgi;

/**
 * @brief Fill @p req from the CGI variables of a complete head.
 *
 * - method: REQUEST_METHOD; target: REQUEST_URI (both required: 400 otherwise);
 * - http_major/minor: SERVER_PROTOCOL "HTTP/1.0", "HTTP/1.1", "HTTP/2.0" (lighttpd's names), also
 *   "HTTP/2" and "HTTP/3"; absent: HTTP/1.0; anything else is a 400;
 * - scheme "https" when HTTPS is "on" (any case) or "1", or REQUEST_SCHEME is "https";
 * - server_name / server_port: SERVER_NAME / SERVER_PORT; client_addr / client_port:
 *   REMOTE_ADDR / REMOTE_PORT (empty values: absent; a port that is not 0..65535 is a 400);
 * - headers: each HTTP_FOO_BAR becomes "foo-bar" (libwsgi maps names to HTTP_* / lowercase
 *   itself and drops names containing '_', so the '_' must go back to '-'); HTTP_CONTENT_LENGTH and
 *   HTTP_CONTENT_TYPE are dropped for CONTENT_LENGTH / CONTENT_TYPE, which become the
 *   Content-Length (when > 0 or when the client sent one) and Content-Type (when not empty)
 *   headers; names with bytes other than letters, digits, '_' and '-' are dropped;
 * - content_length: CONTENT_LENGTH as parsed;
 * - extra_environ: every other variable verbatim (SCRIPT_NAME, PATH_INFO, QUERY_STRING,
 *   DOCUMENT_ROOT, SERVER_SOFTWARE, ...), so the app sees lighttpd's split of SCRIPT_NAME /
 *   PATH_INFO; PATH_INFO "" is added when SCRIPT_NAME is given without PATH_INFO.
 * The body fields are left for the caller. Of a variable this function reads that is repeated
 * (SCGI forbids it) the first one wins, also in the environ: the repeats of SCRIPT_NAME,
 * PATH_INFO, QUERY_STRING and REQUEST_SCHEME are not passed on. Other repeated names are passed
 * on as given (the environ keeps the last); repeated HTTP_* variables are repeated headers.
 *
 * @param[in] p A parser that returned ::SCGI_HEAD_DONE.
 * @param[in] head As for scgi_parser_var(); must stay in place while @p req is used.
 * @param[in] bufs Storage for headers, extra variables and scratch (see ::scgi_map_buffers).
 * @param[out] req Initialised with wsgi_request_init() and filled.
 * @param[out] cgi Path variables as given (may be NULL).
 * @param[out] err Static reason on failure (may be NULL).
 * @return 0 on success; 400 for a request lacking or garbling what an HTTP request needs; -1 if
 *         the parser is not done or @p bufs is too small.
 */
int scgi_map_request(const scgi_parser *p, const char *head, const scgi_map_buffers *bufs,
                     wsgi_request *req, scgi_cgi *cgi, const char **err);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_SCGI_PARSE_H */
