/**
 * @file common.h
 * @brief Export macro, error codes, log levels and version query shared by every libwsgi header.
 *
 * Include <libwsgi/libwsgi.h> rather than this file directly.
 */
#ifndef LIBWSGI_COMMON_H
#define LIBWSGI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <libwsgi/version.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @brief Marks a symbol as part of the public ABI (everything else is hidden). @since 0.1.0 */
#if defined(LIBWSGI_STATIC)
#define LIBWSGI_API
#elif defined(__GNUC__) || defined(__clang__)
#define LIBWSGI_API __attribute__((visibility("default")))
#else
#define LIBWSGI_API
#endif

/**
 * @brief Result codes. Every fallible function returns 0 (::WSGI_OK) or one of these negative
 * values.
 *
 * Use wsgi_strerror() for a static description, and wsgi_errmsg() (per thread) or
 * wsgi_response_errmsg() (per response) for the message of the last failure.
 * @since 0.1.0
 */
typedef enum wsgi_error {
    WSGI_OK = 0,                     /**< Success. */
    WSGI_ERR_INVAL = -1,             /**< An argument was NULL, out of range or malformed. */
    WSGI_ERR_NOMEM = -2,             /**< Memory allocation failed. */
    WSGI_ERR_STATE = -3,             /**< The object is not in a state that allows this call. */
    WSGI_ERR_RECURSIVE = -4,         /**< Called from inside a callback of the same object. */
    WSGI_ERR_PYTHON = -5,            /**< The Python interpreter could not be started or used. */
    WSGI_ERR_APP_SPEC = -10,         /**< The app spec is not "module:attr" syntax. */
    WSGI_ERR_MODULE_NOT_FOUND = -11, /**< The app's module does not exist. */
    WSGI_ERR_IMPORT = -12,           /**< Importing the app's module raised an exception. */
    WSGI_ERR_ATTRIBUTE = -13,    /**< The module has no such attribute (or the factory failed). */
    WSGI_ERR_NOT_CALLABLE = -14, /**< The app object is not callable. */
    WSGI_ERR_INTERFACE = -15,    /**< The app does not speak the interface asked for. */
    WSGI_ERR_APP = -20,          /**< The application raised an exception. */
    WSGI_ERR_NO_START_RESPONSE = -21, /**< The app returned without calling start_response. */
    WSGI_ERR_BAD_STATUS = -22,        /**< The app gave an invalid status line. */
    WSGI_ERR_BAD_HEADER = -23,        /**< The app gave an invalid response header. */
    WSGI_ERR_BAD_ITERABLE = -24,      /**< The app returned something that is not iterable. */
    WSGI_ERR_BAD_CHUNK = -25, /**< The app yielded something that is not bytes (e.g. str). */
    WSGI_ERR_CALLBACK = -30,  /**< A host callback returned an error; the response was cut. */
    WSGI_ERR_IO = -31,        /**< Reading the body or a file failed (reserved, unused in 0.3). */
    WSGI_ERR_TOO_LARGE = -32, /**< A configured limit was exceeded (reserved, unused in 0.3). */
} wsgi_error;

/** @brief Log levels passed to ::wsgi_log_cb (syslog numbering). @since 0.1.0 */
typedef enum wsgi_log_level {
    WSGI_LOG_ERROR = 3,   /**< The request or app failed; includes Python tracebacks. */
    WSGI_LOG_WARNING = 4, /**< Something was wrong but was handled (also wsgi.errors output). */
    WSGI_LOG_INFO = 6,    /**< Life-cycle events: interpreter started, app loaded. */
    WSGI_LOG_DEBUG = 7,   /**< Detail useful when developing a host. */
} wsgi_log_level;

/**
 * @brief Log callback. Called without the GIL held, possibly from any thread that calls into
 * libwsgi.
 * @param[in] user_data The pointer given with the callback.
 * @param[in] level One of ::wsgi_log_level.
 * @param[in] msg The message, NUL-terminated, without trailing newline (may contain newlines:
 *                tracebacks). Borrowed for the duration of the call.
 * @param[in] len strlen(msg).
 * @since 0.1.0
 */
typedef void (*wsgi_log_cb)(void *user_data, int level, const char *msg, size_t len);

/** @brief One header as a name/value pair of byte strings (not NUL-terminated). @since 0.1.0 */
typedef struct wsgi_header {
    const char *name;  /**< Header name bytes. */
    size_t name_len;   /**< Length of @c name. */
    const char *value; /**< Header value bytes. */
    size_t value_len;  /**< Length of @c value. */
} wsgi_header;

/**
 * @brief Static English description of a result code.
 * @param[in] code A ::wsgi_error value (unknown values give "unknown error").
 * @return A NUL-terminated string with static storage; never NULL.
 * @since 0.1.0
 * @par Thread safety
 * safe from any thread.
 */
LIBWSGI_API const char *wsgi_strerror(int code);

/**
 * @brief Message of the last failed libwsgi call made by the calling thread.
 *
 * Objects shared between threads (runtime, app) cannot hold a "last message" safely, so libwsgi
 * keeps one per thread; responses additionally keep their own (wsgi_response_errmsg()).
 * @return A NUL-terminated string valid until the next libwsgi call in this thread; "" if the last
 *         call succeeded or set no message; never NULL.
 * @since 0.1.0
 * @par Thread safety
 * safe from any thread (thread-local).
 */
LIBWSGI_API const char *wsgi_errmsg(void);

/**
 * @brief The version of the library actually linked, as ::LIBWSGI_VERSION_NUM (0xMMmmpp).
 * @return The runtime version number; compare with ::LIBWSGI_VERSION_NUM to detect a header
 * mismatch.
 * @since 0.1.0
 * @par Thread safety
 * safe from any thread.
 */
LIBWSGI_API unsigned libwsgi_version_num(void);

/**
 * @brief The version of the library actually linked as a string such as "0.1.0".
 * @return A static NUL-terminated string.
 * @since 0.1.0
 * @par Thread safety
 * safe from any thread.
 */
LIBWSGI_API const char *libwsgi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* LIBWSGI_COMMON_H */
