/* LD_PRELOAD interleaving for test_process.py's test_queued_request_runs_when_its_wake_up_was_read
 * (libwsgi-epoll, --threads 1: a team of two threads). One thread is in the app (a blocking
 * request) and the other runs the event loop with no standby, so a request that comes meanwhile is
 * queued. When the app call returns, its thread reports (a write to the loop's eventfd), becomes
 * the standby and, the queue not being empty, wakes the loop again (a second write). The loop runs
 * the queue at the top of its next iteration (run_pending); if the first wake-up had already woken
 * it, that check can come before the thread is the standby, and the read of the eventfd that
 * follows (on_wake) then swallows the second wake-up as well.
 *
 * Once the file LIBWSGI_SHIM_ARM exists, this library makes exactly that happen instead of leaving
 * it to the scheduler: the first eventfd write waits until the loop's thread is inside its read of
 * the eventfd (past its run_pending), and that read waits until the thread that wrote has become
 * the standby (its first nanosleep(): standby() is the only caller of nanosleep in the server).
 * Then, until the queued request has begun (the app creates LIBWSGI_SHIM_MARK), every epoll_wait
 * that may block (a timeout other than 0) is recorded in LIBWSGI_SHIM_LOG as a line "slept": the
 * loop went to sleep with the request still queued although it had a standby to run it. The
 * interleaving itself is recorded as a line "parked", so that the test can see it took place.
 * Every wait is bounded (a guard against a hang if the server does something else). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define GUARD_S 10

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_nanosleep)(const struct timespec *, struct timespec *);
static int (*real_epoll_wait)(int, struct epoll_event *, int, int);
static pthread_once_t once = PTHREAD_ONCE_INIT;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
/* 0: not armed yet; 1: armed; 2: the read is over, watching epoll_wait; 3: done. */
static int phase;
static int reader_parked, reader_arrived, standby_slept;

static void init(void)
{
    real_read = (ssize_t(*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_nanosleep =
        (int (*)(const struct timespec *, struct timespec *))dlsym(RTLD_NEXT, "nanosleep");
    real_epoll_wait = (int (*)(int, struct epoll_event *, int, int))dlsym(RTLD_NEXT, "epoll_wait");
}

static void record(const char *line)
{
    const char *log = getenv("LIBWSGI_SHIM_LOG");
    int fd = log ? open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (fd < 0) return;
    real_write(fd, line, strlen(line));
    close(fd);
}

static int exists(const char *env)
{
    const char *p = getenv(env);
    return p && access(p, F_OK) == 0;
}

static int is_eventfd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) return 0;
    target[n] = 0;
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* Under mu: whether the shim is armed (phase 1), arming it when the file has appeared. */
static int armed(void)
{
    if (phase == 0 && exists("LIBWSGI_SHIM_ARM")) phase = 1;
    return phase == 1;
}

/* Under mu: wait until *flag, GUARD_S at most. */
static void wait_flag(const int *flag)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += GUARD_S;
    while (!*flag && pthread_cond_timedwait(&cv, &mu, &until) != ETIMEDOUT) {
    }
}

ssize_t write(int fd, const void *buf, size_t n)
{
    pthread_once(&once, init);
    ssize_t r = real_write(fd, buf, n);
    if (n != 8 || !getenv("LIBWSGI_SHIM_ARM") || !is_eventfd(fd)) return r;
    pthread_mutex_lock(&mu);
    if (armed() && !reader_parked) wait_flag(&reader_arrived);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t read(int fd, void *buf, size_t n)
{
    pthread_once(&once, init);
    if (n == 8 && getenv("LIBWSGI_SHIM_ARM") && is_eventfd(fd)) {
        pthread_mutex_lock(&mu);
        if (armed()) {
            reader_arrived = reader_parked = 1;
            pthread_cond_broadcast(&cv);
            wait_flag(&standby_slept);
            reader_parked = 0;
            phase = 2;
            if (standby_slept) record("parked\n");
        }
        pthread_mutex_unlock(&mu);
    }
    return real_read(fd, buf, n);
}

int nanosleep(const struct timespec *req, struct timespec *rem)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    if (phase == 1 && reader_parked) {
        standby_slept = 1;
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    return real_nanosleep(req, rem);
}

int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
    pthread_once(&once, init);
    if (timeout != 0) {
        pthread_mutex_lock(&mu);
        if (phase == 2) {
            if (exists("LIBWSGI_SHIM_MARK"))
                phase = 3;
            else
                record("slept\n");
        }
        pthread_mutex_unlock(&mu);
    }
    return real_epoll_wait(epfd, evs, max, timeout);
}
