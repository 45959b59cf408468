/**
 * @file asgi.h
 * @brief ASGI 3 over HTTP and lifespan, driven by the host's own event loop.
 *
 * libwsgi runs ASGI apps on one asyncio loop per runtime that the **host drives**: it nests
 * asgi_loop_fd() in its own epoll set, sleeps at most asgi_loop_timeout() milliseconds, and calls
 * asgi_loop_run() for one non-blocking turn when the fd is readable or the timeout expires. There
 * is no hidden thread. Every asgi_* function except asgi_loop_wakeup() must be called from one
 * thread, the loop thread (the first thread that calls an asgi_* function).
 *
 * @code
 *   asgi_lifespan_startup(app);                       // before serving
 *   epoll_ctl(ep, EPOLL_CTL_ADD, asgi_loop_fd(rt), EPOLLIN);
 *   for (;;) {
 *       int n = epoll_wait(ep, evs, 64, asgi_loop_timeout(rt));
 *       ... for each client socket: parse, then asgi_dispatch(app, &req, &h, conn, &c),
 *           asgi_conn_feed(c, body, len, more), asgi_conn_disconnect(c) ...
 *       if (loop_fd_was_readable || asgi_loop_timeout(rt) == 0)
 *           asgi_loop_run(rt);                       // the app runs here; callbacks fire here
 *   }
 * @endcode
 *
 * Callbacks run on the loop thread, inside asgi_loop_run() (or asgi_conn_*, or asgi_dispatch() with
 * asgi_loop_set_eager()), with the GIL released. They must not block.
 */
#ifndef LIBWSGI_ASGI_H
#define LIBWSGI_ASGI_H

#include <libwsgi/common.h>
#include <libwsgi/runtime.h>
#include <libwsgi/wsgi.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * @brief A callback's answer meaning "accepted, but hold the app's send() until
 * asgi_conn_resume()"; asgi_conn_feed() and asgi_conn_ws_message() return it to mean "stop reading
 * until on_read_resume".
 * @since 0.1.0
 */
#define ASGI_PAUSE 1

/** @brief One ASGI connection (an HTTP request/response cycle). Opaque. @since 0.1.0 */
typedef struct asgi_conn asgi_conn;

/**
 * @brief Host callbacks for an ASGI connection. Called on the loop thread without the GIL.
 *
 * on_start, on_body and on_done are required. Return 0 to continue, ::ASGI_PAUSE to keep the
 * app's send() pending until asgi_conn_resume() (backpressure), or a negative value if the client
 * is gone (the app's send() raises OSError and receive() reports http.disconnect).
 * @since 0.1.0
 */
typedef struct asgi_handler {
    size_t struct_size; /**< sizeof(asgi_handler). */
    /** http.response.start, delivered only when the first http.response.body (or pathsend)
     *  event arrives, right before its on_body / on_sendfile, as the ASGI spec requires (so an app
     *  that fails between the two still gets a clean 500, and head and first chunk can leave in
     *  one write). head->status_line is the code with its standard reason ("404 Not Found"),
     *  or the code and a space for one without ("599 ": RFC 9112 keeps the space);
     *  head->flags has ::WSGI_HEAD_TRAILERS when the app announced trailers. */
    int (*on_start)(void *user_data, const wsgi_response_head *head);
    /** http.response.body: @p len may be 0 only when @p more is 0 (end of body). @p data stays
     *  valid until the on_body after the next one, or asgi_conn_free(): a host that still has
     *  it queued when the next on_body arrives (the app may cancel a paused send() and send
     *  again) must copy it then. */
    int (*on_body)(void *user_data, const char *data, size_t len, int more);
    /** Optional http.response.trailers (@p headers borrowed for the call); when NULL the extension
     *  is not offered in the scope. */
    int (*on_trailers)(void *user_data, const wsgi_header *headers, size_t n_headers, int more);
    /** Optional http.response.pathsend: send @p count bytes of @p fd from @p offset; this ends
     *  the body. The fd stays open until asgi_conn_free(). When NULL the extension is not offered.
     */
    int (*on_sendfile)(void *user_data, int fd, int64_t offset, int64_t count);
    /** Optional: the buffered request body was consumed after asgi_conn_feed() returned
     *  ::ASGI_PAUSE; the host may read from the client again. */
    void (*on_read_resume)(void *user_data);
    /** The app's task finished. @p result is 0 if the response was complete, or a negative
     *  ::wsgi_error: if nothing had been sent a 500 was delivered first; otherwise the response is
     *  incomplete and the host must cut the connection. Called exactly once. */
    void (*on_done)(void *user_data, int result);

    /* ---- WebSocket (asgi_websocket_dispatch() only; @since 0.2.0) ---------------------------
     * The host does the RFC 6455 handshake and framing; the library sees whole messages. A
     * WebSocket connection that is denied answers over HTTP through on_start/on_body above (403,
     * or the app's own response with the websocket.http.response extension). */

    /** websocket.accept: complete the handshake (101 Switching Protocols). @p subprotocol is the
     *  app's choice, always one the client offered (RFC 6455 4.2.2; UTF-8, not NUL-terminated),
     *  or NULL for none; @p headers are the app's extra
     *  response headers (validated like HTTP ones; never Sec-WebSocket-Protocol). Borrowed for
     *  the call. @since 0.2.0 */
    int (*on_ws_accept)(void *user_data, const char *subprotocol, size_t subprotocol_len,
                        const wsgi_header *headers, size_t n_headers);
    /** websocket.send: one whole message, @p binary 0 for text (valid UTF-8) or 1 for bytes;
     *  @p len may be 0. @p data stays valid until the on_ws_send after the next one, or
     *  asgi_conn_free(): a host that still has it queued when the next on_ws_send arrives must copy
     *  it then. ::ASGI_PAUSE holds the app's send() until asgi_conn_resume(). @since 0.2.0 */
    int (*on_ws_send)(void *user_data, int binary, const char *data, size_t len);
    /** websocket.close after the accept, or the end of the app's task after the accept (1000 if
     *  it returned, 1011 if it raised): send a Close frame with @p code and @p reason (UTF-8, at
     *  most 123 bytes, not NUL-terminated) and close. Called at most once. @since 0.2.0 */
    int (*on_ws_close)(void *user_data, int code, const char *reason, size_t reason_len);
} asgi_handler;

/**
 * @brief Build the http scope for @p req and start the app's task on the runtime's loop.
 *
 * The app starts running at the next asgi_loop_run(), or inside this call with
 * asgi_loop_set_eager() (its callbacks may then fire before it returns). A fully buffered body
 * (req->body, copied) is delivered as one http.request event; a request with neither a body, a
 * positive content_length nor ::WSGI_REQUEST_CHUNKED gets one empty http.request; otherwise the
 * host feeds the body with asgi_conn_feed(). wsgi_request::body_read is not used by ASGI, nor
 * is wsgi_request::extra_environ but for `SCRIPT_NAME` (below). May be called from inside a
 * callback (e.g. the next pipelined request from on_done).
 *
 * The scope's `root_path` is the app's wsgi_app_options::script_name, or the value of a
 * `SCRIPT_NAME` entry of wsgi_request::extra_environ when there is one (a gateway such as
 * lighttpd's SCGI that splits the path itself; `path` stays the whole path of the target). Other
 * extra_environ entries are not used by ASGI.
 *
 * @param[in] app An ASGI app.
 * @param[in] req The request (borrowed during the call only).
 * @param[in] handler Callbacks, copied.
 * @param[in] user_data Passed to the callbacks.
 * @param[out] out The connection, to be freed with asgi_conn_free().
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL A NULL argument, missing required callback or an invalid request.
 * @retval WSGI_ERR_INTERFACE @p app is not an ASGI app.
 * @retval WSGI_ERR_STATE Called from a thread other than the loop thread.
 * @retval WSGI_ERR_PYTHON The event loop could not be created.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only (see asgi.h); also from inside an ASGI callback (e.g. the next pipelined
 * request from on_done).
 */
LIBWSGI_API int asgi_dispatch(wsgi_app *app, const wsgi_request *req, const asgi_handler *handler,
                              void *user_data, asgi_conn **out);

/** @brief asgi_conn_ws_message(): a text message (UTF-8). @since 0.2.0 */
#define ASGI_WS_TEXT 0
/** @brief asgi_conn_ws_message(): a binary message. @since 0.2.0 */
#define ASGI_WS_BINARY 1

/**
 * @brief Start a WebSocket connection: build the websocket scope for the upgrade request @p req
 * and start the app's task; its first receive() returns websocket.connect.
 *
 * The host has checked that @p req is a valid RFC 6455 opening handshake (GET, Upgrade,
 * Connection, Sec-WebSocket-Key, Sec-WebSocket-Version) and answers nothing until the app decides:
 *  - websocket.accept → on_ws_accept(): the host sends 101 and starts framing; from then on it
 *    passes each whole client message to asgi_conn_ws_message(), sends what on_ws_send() gives it,
 *    and reports the end with asgi_conn_ws_closed();
 *  - websocket.close, or the app returning, before the accept → on_start() with 403 Forbidden and
 *    its on_body(): the handshake is denied over HTTP; an app that raises before the accept gets
 *    the 500 an HTTP app would (and on_done(::WSGI_ERR_APP));
 *  - websocket.http.response.start / .body (the websocket.http.response extension, always
 *    offered) → on_start() / on_body() exactly as for an HTTP response (the head comes with the
 *    first body event), then the connection ends.
 *
 * The scope has `scheme` "ws" ("wss" when req->scheme is "https"), `subprotocols` parsed from every
 * Sec-WebSocket-Protocol header, `spec_version` "2.5". req->body must be empty.
 *
 * @param[in] app An ASGI app.
 * @param[in] req The upgrade request (borrowed during the call only).
 * @param[in] handler Callbacks, copied: on_start, on_body, on_done, on_ws_accept, on_ws_send and
 *            on_ws_close are required (struct_size must cover them).
 * @param[in] user_data Passed to the callbacks.
 * @param[out] out The connection, to be freed with asgi_conn_free().
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL A NULL argument, a missing callback, a request with a body, or an invalid
 *         request.
 * @retval WSGI_ERR_INTERFACE @p app is not an ASGI app.
 * @retval WSGI_ERR_STATE Called from a thread other than the loop thread.
 * @retval WSGI_ERR_PYTHON The event loop could not be created.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.2.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_websocket_dispatch(wsgi_app *app, const wsgi_request *req,
                                        const asgi_handler *handler, void *user_data,
                                        asgi_conn **out);

/**
 * @brief A whole message arrived from the WebSocket client: the app's receive() returns it as
 * websocket.receive (`text` for ::ASGI_WS_TEXT, `bytes` for ::ASGI_WS_BINARY).
 *
 * Messages wait in a bounded queue: when it holds 32 messages or 1 MiB not yet received by the
 * app, the call answers ::ASGI_PAUSE (the message is still accepted) and the host stops reading
 * from the client until on_read_resume (the app has taken half of them, or has closed: what comes
 * after its websocket.close is dropped, and the client's answering Close must be read).
 *
 * @param[in] conn A connection from asgi_websocket_dispatch(), accepted.
 * @param[in] type ::ASGI_WS_TEXT or ::ASGI_WS_BINARY.
 * @param[in] data The message (copied), may be NULL when @p len is 0.
 * @param[in] len Its length.
 * @retval 0 Queued.
 * @retval ASGI_PAUSE Queued; stop reading until on_read_resume.
 * @retval WSGI_ERR_INVAL NULL conn, NULL data with len > 0, a bad @p type, or a text message that
 *         is not valid UTF-8 (the host closes with 1007).
 * @retval WSGI_ERR_STATE Not a WebSocket connection, not accepted, or already closed; or not the
 *         loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.2.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_ws_message(asgi_conn *conn, int type, const char *data, size_t len);

/**
 * @brief The WebSocket connection ended: the app's receive() returns websocket.disconnect with
 * @p code and @p reason (after the messages still queued), and send() raises OSError.
 *
 * Use the code of the client's Close frame (1005 if it had none), 1006 for a connection lost
 * without a Close frame, or the code the host closed with (1002, 1007, 1009, a ping timeout…).
 * asgi_conn_disconnect() on a WebSocket connection is this call with 1006. Later calls are no-ops.
 *
 * @param[in] conn A connection from asgi_websocket_dispatch().
 * @param[in] code The close code.
 * @param[in] reason UTF-8 reason (copied; invalid bytes are replaced), may be NULL.
 * @param[in] reason_len Its length.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_INVAL NULL conn, NULL reason with reason_len > 0.
 * @retval WSGI_ERR_STATE Not a WebSocket connection, or not the loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @since 0.2.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_ws_closed(asgi_conn *conn, int code, const char *reason,
                                    size_t reason_len);

/**
 * @brief Feed request body bytes (already de-chunked) to the app's receive().
 *
 * A body with a Content-Length of at most 256 KiB (wsgi_request::content_length, not chunked) is
 * gathered (since 0.6.1): the app gets it whole, in one `http.request` event, after the last
 * piece (copied once, into the bytes object the app gets); other bodies arrive as they are fed.
 * @param[in] conn The connection.
 * @param[in] data Body bytes (copied), may be NULL when @p len is 0.
 * @param[in] len Number of bytes.
 * @param[in] more 1 if more body follows, 0 if this is the end of the body.
 * @retval 0 Accepted.
 * @retval ASGI_PAUSE Accepted, but the unread body exceeds the buffer limit: stop reading from the
 *         client until on_read_resume.
 * @retval WSGI_ERR_STATE The body already ended, or not the loop thread.
 * @retval WSGI_ERR_INVAL NULL conn, or NULL data with len > 0, or, for a body being gathered,
 *         more bytes than are left of its Content-Length (since 0.6.1; nothing of them is taken).
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @retval WSGI_ERR_NOMEM Out of memory.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_feed(asgi_conn *conn, const char *data, size_t len, int more);

/**
 * @brief The client went away: receive() returns http.disconnect and send() raises OSError.
 * @param[in] conn The connection.
 * @retval WSGI_OK Success (also if already disconnected).
 * @retval WSGI_ERR_INVAL NULL conn.
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_disconnect(asgi_conn *conn);

/**
 * @brief The client closed the connection after it had received the whole response (a bodyless
 * response to HEAD, every byte of a declared Content-Length) while the app has not finished it:
 * receive() returns http.disconnect from now on, so an app that waits for the disconnect (an
 * endless event stream, Starlette's StreamingResponse) ends, but send() keeps working, so an app
 * that still sends its final events (Quart's last empty body, Starlette's FileResponse streaming
 * the file even for HEAD) ends normally; the host drops what the callbacks give it. On a WebSocket
 * connection it is asgi_conn_disconnect().
 * @param[in] conn The connection.
 * @retval WSGI_OK Success (also if called before).
 * @retval WSGI_ERR_INVAL NULL conn.
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @since 0.5.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_client_closed(asgi_conn *conn);

/**
 * @brief Let a send() that a callback paused complete (the host drained its output).
 * @param[in] conn The connection.
 * @retval WSGI_OK Success (also if nothing was paused).
 * @retval WSGI_ERR_INVAL NULL conn.
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only; also from inside an ASGI callback.
 */
LIBWSGI_API int asgi_conn_resume(asgi_conn *conn);

/**
 * @brief Release the host's handle. No callback fires after this. If the app is still running it
 * keeps running detached (background work after the response is allowed): its receive() reports
 * http.disconnect and send() raises.
 *
 * The host must not use an fd given to on_sendfile after this call (the library closes it). The
 * connection of a finished app is freed without the GIL: its Python object is released by the
 * next asgi_* call that takes the GIL.
 * @param[in] conn The connection or NULL.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only: called from another thread it does nothing (the connection is leaked). Also
 * from inside the connection's own on_done.
 */
LIBWSGI_API void asgi_conn_free(asgi_conn *conn);

/**
 * @brief Cancel the app's task (a request the host gives up on, e.g. after a deadline): its stack
 * is logged at ::WSGI_LOG_ERROR (where it waits: the whole chain of awaits), then
 * `Task.cancel()` is called, so the app sees `asyncio.CancelledError` at its current `await`
 * in the next loop turn. The end follows as for any app that ends that way: on_done with an
 * error, after a 500 if no response had started, or with the response cut after its head.
 *
 * Only an app that awaits can be cancelled: one blocking the loop thread (`time.sleep`) keeps
 * it until it returns to the loop; a host watching for that needs its own watchdog.
 * @param[in] conn The connection (HTTP or WebSocket).
 * @retval WSGI_OK The task was cancelled, or had already ended (nothing to do).
 * @retval WSGI_ERR_INVAL NULL conn.
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @retval WSGI_ERR_PYTHON The calling thread could not get a Python thread state.
 * @since 0.4.0
 * @par Thread safety
 * The loop thread only; not from inside the connection's own callbacks.
 */
LIBWSGI_API int asgi_conn_cancel(asgi_conn *conn);

/**
 * @brief The first failure recorded on the connection, 0 if none.
 * @param[in] conn The connection.
 * @return 0 or a negative ::wsgi_error (::WSGI_ERR_INVAL for NULL); the same value on_done got.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread (it reads state only the loop thread changes); takes no GIL.
 */
LIBWSGI_API int asgi_conn_error(const asgi_conn *conn);

/**
 * @brief The message that goes with asgi_conn_error().
 * @param[in] conn The connection.
 * @return NUL-terminated text valid until the next call on @p conn; never NULL.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread (it reads state only the loop thread changes); takes no GIL.
 */
LIBWSGI_API const char *asgi_conn_errmsg(const asgi_conn *conn);

/**
 * @brief The file descriptor of the runtime's event loop (an epoll fd): add it to the host's
 * poll set for reading. Creates the loop on first use.
 * @param[in] rt The runtime.
 * @return The fd (>= 0), or ::WSGI_ERR_STATE from a thread other than the loop thread, or
 *         ::WSGI_ERR_PYTHON if the loop could not be created.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only; the first asgi_* call (this one, typically) makes the calling thread the
 * loop thread.
 */
LIBWSGI_API int asgi_loop_fd(wsgi_runtime *rt);

/**
 * @brief Milliseconds until the loop needs a turn even if its fd stays quiet.
 *
 * The loop's state changes only while Python runs, so an answer of 0 or -1 is remembered until
 * libwsgi next takes the GIL, and given again without taking it. Work scheduled from other
 * threads (`call_soon_threadsafe`, asgi_loop_wakeup()) makes the fd readable instead. A host
 * that runs Python code of its own on the loop thread, outside libwsgi calls, and schedules work
 * on the loop there, wakes it with asgi_loop_wakeup() as another thread would.
 * @param[in] rt The runtime.
 * @return 0 if work is ready now, -1 if nothing is scheduled (wait for the fd only), else the
 *         delay to the next timer (rounded up), or a negative ::wsgi_error below -1.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only.
 */
LIBWSGI_API int asgi_loop_timeout(wsgi_runtime *rt);

/**
 * @brief Run one non-blocking turn of the loop: ready callbacks, expired timers, ready I/O.
 * @param[in] rt The runtime.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @retval WSGI_ERR_RECURSIVE Called from inside a callback.
 * @retval WSGI_ERR_PYTHON The loop raised (logged).
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only, and not from inside an ASGI callback (::WSGI_ERR_RECURSIVE).
 */
LIBWSGI_API int asgi_loop_run(wsgi_runtime *rt);

/**
 * @brief Make the loop fd readable so the loop thread wakes up. Safe from any thread, any time
 * after asgi_loop_fd() returned; does not take the GIL.
 * @param[in] rt The runtime.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_STATE The loop does not exist yet.
 * @since 0.1.0
 * @par Thread safety
 * Any thread, any time after asgi_loop_fd() returned: one write(2) to an eventfd, no lock, no
 * GIL.
 */
LIBWSGI_API int asgi_loop_wakeup(wsgi_runtime *rt);

/**
 * @brief Start apps eagerly: asgi_dispatch() and asgi_websocket_dispatch() run the app's first step
 * at once, inside the call, instead of at the next asgi_loop_run().
 *
 * The first step runs synchronously (as with Python 3.12's eager_task_factory), in the
 * connection's own copy of the context, with the loop marked running on the loop thread, so
 * asyncio.current_task(), asyncio.get_running_loop(), contextvars, cancellation and timeouts
 * behave as in a loop turn. The connection's asyncio Task is made when it is first needed (at
 * the first real wait, or when current_task(), all_tasks() or asgi_conn_cancel() ask for it): a
 * request that never waits needs none ("lazy tasks", docs/asgi.md; LIBWSGI_ASGI_LAZY_TASKS=0 in
 * the environment makes the Task first, as before 0.6.0). An
 * app that never waits (its receive() has data, its send() is accepted by the host) runs to its
 * end inside asgi_dispatch(): no loop turn is needed, and asgi_loop_timeout() does not ask for one.
 * At its first real wait (I/O, a timer, a receive() with nothing buffered, a paused send()) the
 * task continues on the loop, from where it stopped.
 *
 * What changes for the host: callbacks (on_start, on_body, on_done, on_ws_accept, …) may fire
 * before asgi_dispatch() returns. @p *out is set before the first of them, so a host that keeps
 * the handle where @p out points may free it from on_done as usual (asgi_dispatch() then still
 * returns ::WSGI_OK). A dispatch made while another app's task is being stepped (from inside one
 * of its callbacks) starts the deferred way, at the next turn.
 *
 * Off by default. Takes effect for the next dispatch.
 *
 * @param[in] rt The runtime.
 * @param[in] eager 1 to start apps eagerly, 0 to start them at the next turn.
 * @retval WSGI_OK Success.
 * @retval WSGI_ERR_STATE Not the loop thread, or eager start is not available on this Python
 *         (the probe at loop creation failed; apps then start at the next turn).
 * @retval WSGI_ERR_PYTHON The event loop could not be created.
 * @since 0.3.0
 * @par Thread safety
 * The loop thread only.
 */
LIBWSGI_API int asgi_loop_set_eager(wsgi_runtime *rt, int eager);

/** @brief Lifespan result: the app does not implement the lifespan protocol (auto mode). @since
 * 0.1.0 */
#define ASGI_LIFESPAN_UNSUPPORTED 1

/**
 * @brief Run the lifespan startup of @p app to completion (drives the loop itself; call before
 * serving). The app's scope["state"] dict is kept and shallow-copied into every request scope.
 * @param[in] app An ASGI app.
 * @retval WSGI_OK lifespan.startup.complete.
 * @retval ASGI_LIFESPAN_UNSUPPORTED The app raised before answering: it does not speak lifespan
 *         (like uvicorn's --lifespan auto); serving may go on.
 * @retval WSGI_ERR_APP lifespan.startup.failed; its message is in wsgi_errmsg() and the log.
 * @retval WSGI_ERR_INTERFACE @p app is not an ASGI app.
 * @retval WSGI_ERR_STATE Startup already ran, or not the loop thread.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only, and not from inside an ASGI callback (::WSGI_ERR_RECURSIVE).
 */
LIBWSGI_API int asgi_lifespan_startup(wsgi_app *app);

/**
 * @brief Run the lifespan shutdown of @p app to completion (after the last request).
 * @param[in] app An ASGI app.
 * @retval WSGI_OK lifespan.shutdown.complete, or startup never ran / was unsupported.
 * @retval WSGI_ERR_APP lifespan.shutdown.failed or the app raised; message in wsgi_errmsg().
 * @retval WSGI_ERR_STATE Not the loop thread.
 * @since 0.1.0
 * @par Thread safety
 * The loop thread only, and not from inside an ASGI callback (::WSGI_ERR_RECURSIVE).
 */
LIBWSGI_API int asgi_lifespan_shutdown(wsgi_app *app);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_ASGI_H */
