/* LD_PRELOAD fault injection for test_tls.py: write() to a socket of exactly LIBWSGI_SHIM_LEN
 * bytes fails with EAGAIN the first LIBWSGI_SHIM_TIMES times in the process, as a full socket
 * buffer would make it fail, while the socket stays writable (so epoll reports EPOLLOUT at once
 * and a retry on it succeeds). With LIBWSGI_SHIM_LEN the size of a TLS 1.3 close_notify record
 * (24 bytes), that is the alert OpenSSL's SSL_shutdown() could not write: loopback buffers are
 * too large to fill deterministically. Each failure is counted in LIBWSGI_SHIM_LOG (one byte
 * appended per failure) so the test can see it happened. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static atomic_long left;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    const char *t = getenv("LIBWSGI_SHIM_TIMES");
    atomic_store(&left, t ? atol(t) : 1);
}

/* Takes one of the failures left, if any. */
static int take_failure(void)
{
    long v = atomic_load(&left);
    while (v > 0 && !atomic_compare_exchange_weak(&left, &v, v - 1)) {
    }
    return v > 0;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    pthread_once(&once, init);
    const char *len = getenv("LIBWSGI_SHIM_LEN");
    struct stat st;
    if (len && (size_t)atol(len) == n && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
        take_failure()) {
        const char *log = getenv("LIBWSGI_SHIM_LOG");
        int lfd = log ? open(log, O_WRONLY | O_APPEND | O_CREAT, 0600) : -1;
        if (lfd >= 0) {
            real_write(lfd, "x", 1);
            close(lfd);
        }
        errno = EAGAIN;
        return -1;
    }
    return real_write(fd, buf, n);
}
