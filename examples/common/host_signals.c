/* The self-pipe signal handling of host_signals.h. */
#include "host_signals.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int pipe_fds[2] = {-1, -1};
static int installed[64];
static int n_installed;

static void on_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;
    if (pipe_fds[1] >= 0) {
        ssize_t w = write(pipe_fds[1], &b, 1); /* a full pipe already holds a wake-up */
        (void)w;
    }
    errno = saved;
}

void host_signals_close(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int k = 0; k < n_installed; k++)
        sigaction(installed[k], &sa, NULL);
    n_installed = 0;
    for (int k = 0; k < 2; k++) {
        if (pipe_fds[k] >= 0) close(pipe_fds[k]);
        pipe_fds[k] = -1;
    }
}

int host_signals_open(const int *sigs, int n)
{
    host_signals_close();
    if (pipe2(pipe_fds, O_NONBLOCK | O_CLOEXEC) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigset_t now_handled;
    sigemptyset(&now_handled);
    for (int k = 0; k < n && k < 64; k++) {
        if (sigaction(sigs[k], &sa, NULL) != 0) return -1;
        installed[n_installed++] = sigs[k];
        sigaddset(&now_handled, sigs[k]);
    }
    /* A prefork child starts with these blocked (prefork.c): take any that arrived meanwhile. */
    pthread_sigmask(SIG_UNBLOCK, &now_handled, NULL);
    return pipe_fds[0];
}

uint64_t host_signals_read(int fd)
{
    uint64_t mask = 0;
    unsigned char buf[64];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0) break;
        for (ssize_t k = 0; k < r; k++)
            if (buf[k] < 64) mask |= 1ull << buf[k];
    }
    return mask;
}

uint64_t host_signals_take(void)
{
    return pipe_fds[0] >= 0 ? host_signals_read(pipe_fds[0]) : 0;
}

void host_signals_block_thread(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
}

static void do_nothing(int signo)
{
    (void)signo;
}

void host_signals_handle(int sig, void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

void host_signals_ignore(int sig)
{
    host_signals_handle(sig, do_nothing);
}
