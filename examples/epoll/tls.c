/* TLS with OpenSSL: the worker's context (tls.h) and the TLS half of the connection I/O layer
 * (conn.h: conn_recv(), conn_sendv(), conn_sendfile(), the handshake, close_notify).
 *
 * Non-blocking throughout: OpenSSL's WANT_READ / WANT_WRITE become EAGAIN for the callers, which
 * already wait for the socket on EAGAIN; the handshake is a connection state of its own (CONN_TLS)
 * driven by epoll events. Writes use SSL_MODE_ENABLE_PARTIAL_WRITE, so one SSL_write sends at most
 * one record (16 KiB) and returns what it took: small queued pieces are gathered into a per-thread
 * bounce buffer first (one record rather than one per piece), a file is pread into it (no
 * sendfile through user-space TLS). SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets the retry of a
 * half-written record come from another buffer holding the same bytes; tls_wpend makes sure it is
 * at least as long. Reads loop until the caller's buffer is full or the socket is drained: then
 * only a full buffer can leave decrypted bytes behind in OpenSSL, which server.c checks before it
 * waits for EPOLLIN (epoll cannot see them). */
#include "tls.h"
#include "conn.h"
#include "host_log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* The most plaintext one TLS record carries, and so one SSL_write in partial-write mode. */
#define TLS_RECORD 16384

struct tls_ctx {
    SSL_CTX *ctx;
};

/* Why path cannot be used by this process, if it cannot even read it (a worker that dropped its
 * privileges, say): a hint to add to OpenSSL's reason, or "". */
static const char *unreadable(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (access(path, R_OK) != 0 && errno == EACCES)
        snprintf(buf, cap, " (not readable by uid %d, which this process runs as)", (int)geteuid());
    return buf;
}

/* OpenSSL's first queued error as text (the queue is cleared). */
static const char *ssl_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, cap, "%s", errno ? strerror(errno) : "no reason given");
    } else {
        ERR_error_string_n(e, buf, cap);
    }
    ERR_clear_error();
    return buf;
}

/* ---- the context ----------------------------------------------------------------------------- */

int tls_enabled(const epoll_options *o)
{
    return o->certfile != NULL;
}

/* ALPN: we speak HTTP/1.1 (WebSocket included); a client offering only h2 goes on without ALPN. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

tls_ctx *tls_ctx_new(const epoll_options *o)
{
    char why[256];
    tls_ctx *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    ERR_clear_error();
    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        host_log(WSGI_LOG_ERROR, "TLS: cannot create a context: %s", ssl_reason(why, sizeof(why)));
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* No renegotiation (TLS 1.2): a read never has to write, a write never has to read. A peer
     * that closes without close_notify ends the stream like EOF, as browsers and curl do. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* RELEASE_BUFFERS: an idle keep-alive connection keeps no 2 x 16 KiB record buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_dh_auto(ctx, 1);
    /* Sessions resume within one worker (its cache, its ticket keys). */
    static const unsigned char sid[] = "libwsgi-epoll";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    char hint[96];
    if (SSL_CTX_use_certificate_chain_file(ctx, o->certfile) != 1) {
        host_log(WSGI_LOG_ERROR, "TLS: --certfile %s: %s%s", o->certfile,
                 ssl_reason(why, sizeof(why)), unreadable(o->certfile, hint, sizeof(hint)));
        goto fail;
    }
    const char *key = o->keyfile ? o->keyfile : o->certfile;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        host_log(WSGI_LOG_ERROR, "TLS: %s %s: %s%s",
                 o->keyfile ? "--keyfile" : "the key in --certfile", key,
                 ssl_reason(why, sizeof(why)), unreadable(key, hint, sizeof(hint)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        host_log(WSGI_LOG_ERROR, "TLS: the key %s does not match the certificate %s: %s", key,
                 o->certfile, ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (o->ssl_ciphers && SSL_CTX_set_cipher_list(ctx, o->ssl_ciphers) != 1) {
        host_log(WSGI_LOG_ERROR, "TLS: --ssl-ciphers '%s': %s", o->ssl_ciphers,
                 ssl_reason(why, sizeof(why)));
        goto fail;
    }
    if (o->ca_certs) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca_certs, NULL) != 1) {
            host_log(WSGI_LOG_ERROR, "TLS: --ca-certs %s: %s", o->ca_certs,
                     ssl_reason(why, sizeof(why)));
            goto fail;
        }
        /* The CAs named in the CertificateRequest, so a client picks a certificate they issued. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_certs);
        if (names) SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
    }
    int mode = SSL_VERIFY_NONE;
    if (o->cert_reqs == TLS_CERT_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    else if (o->cert_reqs == TLS_CERT_REQUIRED)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return t;
fail:
    tls_ctx_free(t);
    return NULL;
}

void tls_ctx_free(tls_ctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    free(t);
}

int tls_check(const epoll_options *o)
{
    tls_ctx *t = tls_ctx_new(o);
    if (!t) return -1;
    tls_ctx_free(t);
    return 0;
}

/* ---- a connection ---------------------------------------------------------------------------- */

int tls_conn_start(conn *c, tls_ctx *t)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl || SSL_set_fd(ssl, c->fd) != 1) {
        char why[256];
        host_log(WSGI_LOG_ERROR, "TLS: cannot set up a connection: %s",
                 ssl_reason(why, sizeof(why)));
        SSL_free(ssl);
        return -1;
    }
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    return 0;
}

static const char *peer(const conn *c)
{
    return c->peer[0] ? c->peer : "unix";
}

int tls_conn_handshake(conn *c, unsigned *events)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
        return 0;
    }
    c->tls_dead = 1;
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0) {
        host_log(WSGI_LOG_DEBUG, "TLS handshake with %s: the client closed the connection",
                 peer(c));
    } else {
        char why[256];
        host_log(WSGI_LOG_DEBUG, "TLS handshake with %s failed: %s", peer(c),
                 ssl_reason(why, sizeof(why)));
    }
    ERR_clear_error();
    return -1;
}

/* After SSL_read / SSL_write returned r <= 0: the errno-style result for the caller. */
static ssize_t io_error(conn *c, int r)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0; /* close_notify (or EOF: SSL_OP_IGNORE_UNEXPECTED_EOF) */
    case SSL_ERROR_SYSCALL:
        c->tls_dead = 1;
        if (ERR_peek_error() == 0 && errno == 0) return 0;
        if (errno == 0) errno = EPROTO;
        ERR_clear_error();
        return -1;
    default: {
        c->tls_dead = 1;
        char why[256];
        host_log(WSGI_LOG_DEBUG, "TLS with %s: %s", peer(c), ssl_reason(why, sizeof(why)));
        errno = EPROTO;
        return -1;
    }
    }
}

ssize_t tls_recv(conn *c, void *buf, size_t len)
{
    if (c->tls_dead) {
        errno = EPROTO;
        return -1;
    }
    size_t got = 0;
    while (got < len) {
        ERR_clear_error();
        errno = 0;
        size_t want = len - got > INT32_MAX ? INT32_MAX : len - got;
        int r = SSL_read(c->ssl, (char *)buf + got, (int)want);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        ssize_t x = io_error(c, r);
        /* Bytes already read are returned now; an EOF or error shows again at the next call. */
        if (got) break;
        return x;
    }
    return (ssize_t)got;
}

/* One SSL_write of len bytes at p. */
static ssize_t write_record(conn *c, const void *p, size_t len)
{
    if (c->tls_dead) {
        errno = EPIPE;
        return -1;
    }
    if (len > (1u << 30)) len = 1u << 30; /* partial writes: one record is taken anyway */
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(c->ssl, p, (int)len);
    if (r > 0) {
        c->tls_wpend = 0;
        return r;
    }
    ssize_t x = io_error(c, r);
    if (x < 0 && errno == EAGAIN) {
        /* The record is built and partly sent: its retry must offer at least this much. */
        if (!c->tls_wpend) c->tls_wpend = len < TLS_RECORD ? len : TLS_RECORD;
        return -1;
    }
    if (x == 0) errno = EPIPE;
    c->tls_dead = 1;
    return -1;
}

static __thread char bounce[TLS_RECORD];

ssize_t tls_sendv(conn *c, const struct iovec *iov, int n)
{
    size_t total = 0;
    for (int k = 0; k < n && total < TLS_RECORD; k++)
        total += iov[k].iov_len;
    if (total == 0) return 0;
    if (total < c->tls_wpend) {
        /* Not the bytes of the half-written record (cannot happen with the callers' queues):
         * wait until they are offered again. */
        errno = EAGAIN;
        return -1;
    }
    if (n == 1 || iov[0].iov_len >= TLS_RECORD)
        return write_record(c, iov[0].iov_base, iov[0].iov_len);
    /* Several pieces: gather one record's worth, so small pieces do not each make a record. */
    size_t len = 0;
    for (int k = 0; k < n && len < TLS_RECORD; k++) {
        size_t take = iov[k].iov_len < TLS_RECORD - len ? iov[k].iov_len : TLS_RECORD - len;
        memcpy(bounce + len, iov[k].iov_base, take);
        len += take;
    }
    return write_record(c, bounce, len);
}

ssize_t tls_sendfile(conn *c, int fd, off_t *off, size_t count)
{
    size_t want = count < TLS_RECORD ? count : TLS_RECORD;
    ssize_t got;
    do
        got = pread(fd, bounce, want, *off);
    while (got < 0 && errno == EINTR);
    if (got <= 0) return got; /* 0: the file is shorter than promised (the caller says so) */
    if ((size_t)got < c->tls_wpend) {
        errno = EIO; /* the file shrank under a half-written record */
        return -1;
    }
    ssize_t w = write_record(c, bounce, (size_t)got);
    if (w > 0) *off += w;
    return w;
}

int tls_pending(const conn *c)
{
    return !c->tls_shut && !c->tls_dead && SSL_pending(c->ssl) > 0;
}

int tls_shutdown(conn *c)
{
    if (c->tls_dead) return 1;
    if (c->tls_shut && !c->tls_shut_wait) return 1;
    c->tls_shut = 1;
    c->tls_shut_wait = 0;
    if (!SSL_is_init_finished(c->ssl)) return 1;
    /* Sends close_notify; its answer is not waited for. Called again after WANT_WRITE, OpenSSL
     * writes the alert it still holds (and reads nothing). */
    ERR_clear_error();
    int r = SSL_shutdown(c->ssl);
    int e = r < 0 ? SSL_get_error(c->ssl, r) : SSL_ERROR_NONE;
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_WRITE) {
        c->tls_shut_wait = 1;
        return 0;
    }
    return r >= 0 || e == SSL_ERROR_WANT_READ ? 1 : -1;
}

void tls_free(conn *c)
{
    tls_shutdown(c);
    SSL_free(c->ssl);
    c->ssl = NULL;
}
