/**
 * @file observer.h
 * @brief The request observer (::wsgi_observer): one callback per finished request and per
 * WebSocket opened or closed, so that a host gets access logs and metrics without measuring them
 * itself.
 *
 * Set once per runtime with wsgi_runtime_set_observer(). With no observer set, the library does
 * no extra work per request (not even a clock read).
 *
 * Every request that wsgi_call(), asgi_dispatch() or asgi_websocket_dispatch() accepted (returned
 * ::WSGI_OK for) produces exactly one wsgi_observer::on_request_done, before the host's handle is
 * released:
 *  - WSGI: inside wsgi_response_free() (also when the host frees a response before its end);
 *  - ASGI: when the app's task ends (just before the handler's on_done), or inside asgi_conn_free()
 *    if the host lets go first (the app may keep running detached; it is not reported again).
 *
 * A WebSocket (asgi_websocket_dispatch()) additionally reports wsgi_observer::on_websocket_open
 * when the app accepts it, and wsgi_observer::on_websocket_close once, with the first close code
 * known: the app's (websocket.close, or 1000 / 1011 when its task ends), the host's
 * (asgi_conn_ws_closed()), or 1006 when the host frees the connection without either.
 *
 * @par Threading
 * The callbacks run on the thread that finishes the request — the thread calling
 * wsgi_response_free() for WSGI, the ASGI loop thread for ASGI — so with several host threads they
 * run concurrently and must be thread-safe. They are called without the GIL held.
 * @par Re-entrancy
 * A callback must not call any libwsgi function (it may run inside one, holding its state); it
 * should only record or queue what it is given. The pointers it receives are borrowed for the
 * duration of the call.
 */
#ifndef LIBWSGI_OBSERVER_H
#define LIBWSGI_OBSERVER_H

#include <libwsgi/common.h>
#include <libwsgi/runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief How a request ended, in classes a log or a metric can count.
 * Derived from wsgi_request_outcome::error. Values only grow: treat unknown ones as
 * ::WSGI_OUTCOME_INTERNAL.
 * @since 0.4.0
 */
typedef enum wsgi_outcome_class {
    /** The response was complete (whatever its status, including an app's own 500). */
    WSGI_OUTCOME_OK = 0,
    /** The application raised an exception: a 500 replaced the response, or it was cut after
     *  the head. */
    WSGI_OUTCOME_APP_EXCEPTION = 1,
    /** The application broke the protocol without raising: no start_response, a status, header
     *  or chunk that is not valid, a body shorter than its Content-Length, an ASGI app that
     *  returned without completing its response (while the client was still there). */
    WSGI_OUTCOME_INVALID_RESPONSE = 2,
    /** The client went away: a host callback failed, the host reported a disconnect, or it freed
     *  the request before its end. */
    WSGI_OUTCOME_CLIENT_GONE = 3,
    /** Out of memory, or the interpreter could not be used. */
    WSGI_OUTCOME_INTERNAL = 4,
} wsgi_outcome_class;

/**
 * @brief What the library knows about one finished request, given to
 * wsgi_observer::on_request_done. Read-only; fields are only ever appended (check
 * @c struct_size before reading a field added after 0.4.0).
 * @since 0.4.0
 */
typedef struct wsgi_request_outcome {
    size_t struct_size;         /**< sizeof(wsgi_request_outcome) of the library. */
    void *user_data;            /**< The user_data the host gave wsgi_call() / asgi_dispatch() /
                                     asgi_websocket_dispatch() for this request. */
    wsgi_interface interface;   /**< ::WSGI_INTERFACE_WSGI or ::WSGI_INTERFACE_ASGI. */
    int websocket;              /**< 1 for asgi_websocket_dispatch(), else 0. */
    int status;                 /**< The status of the head delivered to on_start (the library's
                                     500 included; 101 for an accepted WebSocket), 0 if none. */
    wsgi_outcome_class outcome; /**< How it ended. */
    int error;                  /**< The request's first failure (a negative ::wsgi_error, as
                                     wsgi_response_error() / asgi_conn_error()), 0 if none. */
    const char *errmsg;         /**< Its message, "" if none. */
    uint64_t bytes_in;  /**< Request body bytes taken from the host: a buffered body whole, what
                             wsgi_body_read_cb delivered, what asgi_conn_feed() got; for a
                             WebSocket the bytes of the client's messages. */
    uint64_t bytes_out; /**< Response body bytes delivered to on_body / on_sendfile (the library's
                             500 included); for a WebSocket the bytes of the app's messages. */
    int64_t queue_ns;   /**< From wsgi_request::arrival_ns to wsgi_call() / asgi_dispatch(), or
                             -1 if the host did not set an arrival time. */
    int64_t app_ns;     /**< From wsgi_call() / the dispatch to the request's end: the response
                             freed (WSGI) or the task ended (ASGI). For a WebSocket, its whole
                             life. */
} wsgi_request_outcome;

/**
 * @brief The observer's callbacks. All are optional (NULL: not called). Fields are only ever
 * appended; set @c struct_size to sizeof(wsgi_observer).
 * @since 0.4.0
 */
typedef struct wsgi_observer {
    size_t struct_size; /**< sizeof(wsgi_observer). */
    /** A request ended (see observer.h for when). @p observer_data is the pointer given to
     *  wsgi_runtime_set_observer(). */
    void (*on_request_done)(void *observer_data, const wsgi_request_outcome *outcome);
    /** The app accepted the WebSocket of the request whose user_data is @p request_user_data. */
    void (*on_websocket_open)(void *observer_data, void *request_user_data);
    /** That WebSocket closed with @p code (the first close code known). */
    void (*on_websocket_close)(void *observer_data, void *request_user_data, int code);
} wsgi_observer;

/**
 * @brief Set (or with NULL remove) the runtime's request observer.
 *
 * The callback table is copied. Requests started before the call may or may not be reported.
 * @param[in] rt The runtime.
 * @param[in] obs The callbacks, or NULL to remove the observer.
 * @param[in] observer_data Passed as the first argument of every callback.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL @p rt is NULL, or @p obs has a @c struct_size too small for its first
 *         callback.
 * @since 0.4.0
 * @par Thread safety
 * Call while no request of the runtime is in flight (typically right after wsgi_runtime_new(),
 * before serving): the table is read without a lock by the threads finishing requests.
 */
LIBWSGI_API int wsgi_runtime_set_observer(wsgi_runtime *rt, const wsgi_observer *obs,
                                          void *observer_data);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_OBSERVER_H */
