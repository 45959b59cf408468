/**
 * @file wsgi.h
 * @brief The request struct the host fills, and the PEP 3333 contract: environ, call, iteration.
 *
 * Life of a WSGI request:
 * @code
 *   wsgi_env *env;  wsgi_response *resp;
 *   wsgi_env_build(app, &req, &env);          // environ from the parsed request
 *   wsgi_call(env, &handler, conn, &resp);     // app(environ, start_response); consumes env
 *   while ((rc = wsgi_iter_next(resp)) == 1)   // one chunk per call, when the socket can take it
 *       wait_until_writable(conn);
 *   wsgi_response_free(resp);                  // calls the iterable's close() if not yet called
 * @endcode
 *
 * Threads: an env or response is used by one thread at a time, but may move between threads
 * (e.g. built on the event loop, called on a worker). Every function that needs Python takes the
 * GIL itself; wsgi_env_build(), wsgi_env_set() and wsgi_env_free() need none (they copy the
 * request; the environ dict is made inside wsgi_call()). Host callbacks always run with the GIL
 * released, so they may block.
 */
#ifndef LIBWSGI_WSGI_H
#define LIBWSGI_WSGI_H

#include <libwsgi/common.h>
#include <libwsgi/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief Streaming body source: read up to @p len bytes of the request body into @p buf.
 *
 * Called without the GIL, from the thread running the app, whenever the app reads wsgi.input and
 * the buffer is empty. It may block until data arrives. The host de-chunks Transfer-Encoding
 * itself.
 *
 * @param[in] body_user_data wsgi_request::body_user_data.
 * @param[out] buf Where to put the bytes: the library's buffer, valid during the call only.
 * @param[in] len Capacity of @p buf (> 0).
 * @param[out] nread Bytes stored; 0 means the body has ended.
 * @return 0 on success, negative on error (the app's read() raises OSError).
 * @since 0.1.0
 */
typedef int (*wsgi_body_read_cb)(void *body_user_data, char *buf, size_t len, size_t *nread);

/** @brief Flags for wsgi_request::flags. @since 0.1.0 */
enum wsgi_request_flags {
    /** The body is chunked (no Content-Length): it ends where the body source says so. */
    WSGI_REQUEST_CHUNKED = 1u << 0,
    /** The connection came through a unix domain socket, which has no port. ASGI: the scope's
     *  @c server is None (the spec's "[path, None] or None"; @c server_name and @c server_port
     *  are not used for it). WSGI: no change, SERVER_NAME and SERVER_PORT come from
     *  @c server_name and @c server_port as for TCP (PEP 3333 requires both).
     *  @since 0.5.0 */
    WSGI_REQUEST_UNIX_SOCKET = 1u << 1,
};

/**
 * @brief A parsed HTTP request, filled by the host. Plain data; everything is borrowed.
 *
 * Initialise with wsgi_request_init(). Wire data (method, target, headers) are pointer + length and
 * need not be NUL-terminated; address strings are NUL-terminated. All pointers are only read during
 * wsgi_env_build() / asgi_dispatch(), except the body source (@c body, @c body_read,
 * @c body_user_data), which must stay valid until the response is freed.
 * Fields are only ever appended; @c struct_size says which the host knows.
 * @since 0.1.0
 */
typedef struct wsgi_request {
    size_t struct_size;         /**< sizeof(wsgi_request), set by wsgi_request_init(). */
    const char *method;         /**< Request method, e.g. "GET". */
    size_t method_len;          /**< Length of @c method. */
    const char *target;         /**< Raw request-target as received: "/path?query" (origin form) or
                                     "http://host/path?query" (absolute form). */
    size_t target_len;          /**< Length of @c target. */
    int http_major;             /**< HTTP major version (1). */
    int http_minor;             /**< HTTP minor version (0 or 1). */
    const wsgi_header *headers; /**< Request headers in arrival order, duplicates kept. */
    size_t n_headers;           /**< Number of @c headers. */
    const char *scheme;         /**< "http" or "https"; NULL means "http". */
    const char *server_name; /**< Server host name or address (SERVER_NAME, an IPv6 address put in
                                  brackets, RFC 3875 4.1.14); NULL: "localhost". */
    unsigned server_port;    /**< Server port (SERVER_PORT); 0: 80 or 443 from the scheme. */
    const char *client_addr; /**< Peer address (REMOTE_ADDR); NULL for none (unix sockets). */
    unsigned client_port;    /**< Peer port (REMOTE_PORT); 0 for none. */
    int64_t content_length;  /**< Body length from Content-Length, or -1 if there is none. */
    unsigned flags;          /**< Bitwise OR of ::wsgi_request_flags. */
    const char *body;        /**< Fully buffered body, or NULL to use @c body_read. */
    size_t body_len;         /**< Length of @c body. */
    wsgi_body_read_cb body_read;      /**< Streaming body source (used when @c body is NULL). */
    void *body_user_data;             /**< Passed to @c body_read. */
    const wsgi_header *extra_environ; /**< Extra environ keys set verbatim as latin-1 str (e.g. SCGI
                                           or TLS variables); they override computed keys. */
    size_t n_extra_environ;           /**< Number of @c extra_environ. */
    int64_t arrival_ns; /**< When the request arrived (CLOCK_MONOTONIC in nanoseconds: its first
                             byte, or its complete head), for the observer's
                             wsgi_request_outcome::queue_ns; 0: unknown. @since 0.4.0 */
} wsgi_request;

/**
 * @brief Zero @p req, then set struct_size, content_length = -1 and HTTP/1.1.
 * @param[out] req The request to initialise.
 * @since 0.1.0
 * @par Thread safety
 * Any thread: it only fills @p req.
 */
LIBWSGI_API void wsgi_request_init(wsgi_request *req);

/** @brief A WSGI environ under construction. Opaque. @since 0.1.0 */
typedef struct wsgi_env wsgi_env;

/** @brief A running WSGI response. Opaque. @since 0.1.0 */
typedef struct wsgi_response wsgi_response;

/**
 * @brief Build the PEP 3333 environ for @p req.
 *
 * Keys: REQUEST_METHOD, SCRIPT_NAME (the app's mount point), PATH_INFO (percent-decoded, latin-1),
 * QUERY_STRING (raw), RAW_URI and REQUEST_URI (raw target), SERVER_NAME, SERVER_PORT,
 * SERVER_PROTOCOL, SERVER_SOFTWARE, REMOTE_ADDR and REMOTE_PORT (left out when client_addr is NULL
 * or client_port 0), CONTENT_TYPE and CONTENT_LENGTH (from the request's headers, left out when
 * absent; wsgi_request::content_length only bounds wsgi.input),
 * HTTP_* (repeated headers joined by ", ", Cookie by "; "; names containing "_" or invalid bytes
 * are dropped so they cannot spoof a "-" header), HTTPS ("on" for https), wsgi.version,
 * wsgi.url_scheme, wsgi.input, wsgi.input_terminated (True), wsgi.errors, wsgi.multithread,
 * wsgi.multiprocess, wsgi.run_once, wsgi.file_wrapper; then @c extra_environ.
 *
 * The request is validated and its wire data copied; the Python dict itself is made by
 * wsgi_call(), under the GIL that call takes anyway, so this function does not take the GIL.
 *
 * @param[in] app A WSGI app.
 * @param[in] req The request; only borrowed during the call, except its body source.
 * @param[out] out The environ on success, NULL on failure.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL A NULL argument, a missing or non-token method, a missing target or one
 *         that is neither origin form ("/..."), absolute form ("scheme://...") nor "*", or a NULL
 *         pointer with a non-zero length.
 * @retval WSGI_ERR_INTERFACE @p app is an ASGI app.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * Any thread, concurrently, also for the same app; takes no GIL (it only validates and copies the
 * request).
 */
LIBWSGI_API int wsgi_env_build(wsgi_app *app, const wsgi_request *req, wsgi_env **out);

/**
 * @brief Set one environ key to a latin-1 str value (adds or replaces); name and value are copied.
 *
 * Keys set this way are applied when wsgi_call() makes the environ, after every computed key and
 * after wsgi_request::extra_environ, in call order.
 * @param[in] env The environ.
 * @param[in] name Key bytes (decoded as latin-1).
 * @param[in] name_len Length of @p name (> 0).
 * @param[in] value Value bytes (decoded as latin-1).
 * @param[in] value_len Length of @p value.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL A NULL pointer or empty name.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * One thread at a time per env (an env may move between threads); takes no GIL.
 */
LIBWSGI_API int wsgi_env_set(wsgi_env *env, const char *name, size_t name_len, const char *value,
                             size_t value_len);

/**
 * @brief Free an environ that was not passed to wsgi_call().
 * @param[in] env The environ or NULL.
 * @since 0.1.0
 * @par Thread safety
 * One thread at a time per env; takes no GIL.
 */
LIBWSGI_API void wsgi_env_free(wsgi_env *env);

/** @brief The response head handed to wsgi_response_handler::on_start. Borrowed for the call.
 * @since 0.1.0 */
typedef struct wsgi_response_head {
    int status;              /**< Status code, 100..999. */
    const char *status_line; /**< The status as the app gave it, e.g. "200 OK" (latin-1). */
    size_t status_line_len;  /**< Length of @c status_line. */
    const wsgi_header
        *headers;     /**< Headers in the app's order (validated: token names, no CR/LF/NUL). */
    size_t n_headers; /**< Number of @c headers. */
    int64_t content_length; /**< The app's Content-Length, or (since 0.7.0) the one libwsgi
                                 added for a body known whole before the head (a WSGI list or
                                 tuple of bytes, an ASGI body in one event: docs/wsgi.md and
                                 docs/asgi.md, "Content-Length"; it is then the last of @c
                                 headers), or -1. */
    unsigned flags;         /**< Bitwise OR of ::wsgi_head_flags. */
} wsgi_response_head;

/** @brief Flags for wsgi_response_head::flags. @since 0.1.0 */
enum wsgi_head_flags {
    /** Trailers follow the body (ASGI http.response.trailers): the host must use chunked framing
     *  and wait for asgi_handler::on_trailers before ending the response. */
    WSGI_HEAD_TRAILERS = 1u << 0,
};

/**
 * @brief Host callbacks that receive the response. Called without the GIL; may block.
 *
 * Each returns 0 to continue or a negative value to abort (the connection is gone): the response is
 * then cut, the app's write() raises OSError, and the iterable's close() is called.
 * @since 0.1.0
 */
typedef struct wsgi_response_handler {
    size_t struct_size; /**< sizeof(wsgi_response_handler). */
    /** The status and headers, exactly once, before the first body byte. */
    int (*on_start)(void *user_data, const wsgi_response_head *head);
    /** A body chunk (never empty). @p data stays valid until the next libwsgi call on the
     *  response (wsgi_iter_next() / wsgi_response_free()), so a chunk can be queued without
     *  copying. The app's legacy write() may deliver several chunks within one call (during
     *  wsgi_call(), or from a generator during wsgi_iter_next()); of those only the current and
     *  the previous one are kept, so when an on_body arrives while an earlier chunk of the same
     *  call is still queued, the host must copy (or finish writing) that earlier chunk now.
     *  Holding them all would make memory unbounded for a write()-heavy app. */
    int (*on_body)(void *user_data, const char *data, size_t len);
    /** Optional: send @p count bytes of @p fd from @p offset (wsgi.file_wrapper over a regular
     * file). The fd stays open until the next libwsgi call on the response. When NULL, the file is
     * read and passed to on_body instead. */
    int (*on_sendfile)(void *user_data, int fd, int64_t offset, int64_t count);
} wsgi_response_handler;

/**
 * @brief Call the app: app(environ, start_response). Consumes @p env in every case.
 *
 * Callbacks fire during this call only if the app uses the legacy write() callable. If the app
 * raises, returns a non-iterable or never calls start_response, the error is logged with its
 * traceback and recorded in the response (wsgi_response_error()); wsgi_iter_next() then delivers a
 * 500 response if nothing was sent yet.
 *
 * @param[in] env The environ (ownership passes to the library).
 * @param[in] handler Callbacks; copied, need not outlive the call. on_start and on_body are
 * required.
 * @param[in] user_data Passed to every callback.
 * @param[out] out The response on success (also when the app failed), NULL otherwise.
 * @retval WSGI_OK A response was created; see wsgi_response_error() for app failures.
 * @retval WSGI_ERR_INVAL A NULL argument or missing required callback.
 * @retval WSGI_ERR_NOMEM Out of memory (also while making the environ dict).
 * @since 0.1.0
 * @par Thread safety
 * Any thread, one at a time per env; the response it makes may then move to another thread. Takes
 * the GIL once (the calling thread's cached Python thread state, created on its first call); the
 * callbacks fired by the app's write() run on the calling thread without the GIL.
 */
LIBWSGI_API int wsgi_call(wsgi_env *env, const wsgi_response_handler *handler, void *user_data,
                          wsgi_response **out);

/**
 * @brief Pull the next chunk of the response and deliver it through the handler.
 *
 * The first call that has something to deliver (a non-empty chunk, or the end of the iterable)
 * calls on_start first. A Content-Length given by the app is enforced: a longer body is truncated
 * and the iteration stops. When the response ends (or fails) the iterable's close() is called.
 *
 * @param[in] resp The response.
 * @retval 1 A chunk was delivered (or skipped because empty); call again when ready for more.
 * @retval 0 The response is complete (including a 500 delivered for an app failure); further calls
 *         return 0. The call that delivers the last item of a list or tuple already returns 0.
 * @retval WSGI_ERR_APP After the head was sent, the app raised (also while a wrapped file was
 *         read), or the body ended shorter than its Content-Length: cut the connection.
 * @retval WSGI_ERR_BAD_CHUNK The app yielded a non-bytes chunk after the head was sent: cut.
 * @retval WSGI_ERR_CALLBACK A host callback returned an error.
 * @retval WSGI_ERR_RECURSIVE Called from inside one of this response's callbacks.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @retval WSGI_ERR_INVAL @p resp is NULL.
 * @since 0.1.0
 * @par Thread safety
 * One thread at a time per response, which may be a different thread for each call; the callbacks
 * run on the calling thread without the GIL. Takes the GIL only when there is Python work (not for
 * a first list/tuple item taken by wsgi_call(), nor for the 500 of a failed app).
 */
LIBWSGI_API int wsgi_iter_next(wsgi_response *resp);

/**
 * @brief The first app or host failure recorded on the response, 0 if none.
 * @param[in] resp The response.
 * @return 0 or a negative ::wsgi_error.
 * @since 0.1.0
 * @par Thread safety
 * The thread using the response, also from inside its callbacks; takes no GIL.
 */
LIBWSGI_API int wsgi_response_error(const wsgi_response *resp);

/**
 * @brief The message that goes with wsgi_response_error().
 * @param[in] resp The response.
 * @return NUL-terminated text valid until the next call on @p resp; "" if none; never NULL.
 * @since 0.1.0
 * @par Thread safety
 * The thread using the response, also from inside its callbacks; takes no GIL.
 */
LIBWSGI_API const char *wsgi_response_errmsg(const wsgi_response *resp);

/**
 * @brief Whether on_start has been called (the head is committed).
 * @param[in] resp The response.
 * @return 1 or 0.
 * @since 0.1.0
 * @par Thread safety
 * The thread using the response, also from inside its callbacks; takes no GIL.
 */
LIBWSGI_API int wsgi_response_started(const wsgi_response *resp);

/**
 * @brief Free the response, calling the iterable's close() if it was not called yet (abort).
 *
 * A response that has ended, whose wsgi.input can no longer read the request body, is freed
 * without taking the GIL: its Python objects (the environ, the iterable) are released by the next
 * libwsgi call that takes the GIL anyway, before any app code runs (see docs/threading.md). The
 * host may reuse or free the body source as soon as this returns, in every case.
 *
 * May be called from inside one of the response's callbacks: the free then happens when the
 * callback returns and the running libwsgi call returns ::WSGI_ERR_CALLBACK.
 * @param[in] resp The response or NULL.
 * @since 0.1.0
 * @par Thread safety
 * One thread at a time per response (any thread), also from inside the response's own callbacks
 * (the free is then deferred).
 */
LIBWSGI_API void wsgi_response_free(wsgi_response *resp);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_WSGI_H */
