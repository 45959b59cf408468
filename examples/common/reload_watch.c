/* The inotify watcher of reload_watch.h. */
#include "reload_watch.h"
#include "host_log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIRS 4096
#define WATCH_MASK                                                                                 \
    (IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR)

/* wd -> directory path (wds are small increasing integers). */
static char **paths;
static int n_paths;
static int n_dirs;

static int skip_dir(const char *name)
{
    return name[0] == '.' || strcmp(name, "__pycache__") == 0 ||
           strcmp(name, "site-packages") == 0 || strcmp(name, "dist-packages") == 0 ||
           strcmp(name, "node_modules") == 0;
}

static void add_tree(int fd, const char *dir, int depth)
{
    if (n_dirs >= MAX_DIRS || depth > 16) return;
    int wd = inotify_add_watch(fd, dir, WATCH_MASK);
    if (wd < 0) {
        host_log(WSGI_LOG_WARNING, "--reload: cannot watch %s: %s", dir, strerror(errno));
        return;
    }
    if (wd >= n_paths) {
        int n = wd + 64;
        char **p = realloc(paths, (size_t)n * sizeof(*p));
        if (!p) return;
        memset(p + n_paths, 0, (size_t)(n - n_paths) * sizeof(*p));
        paths = p;
        n_paths = n;
    }
    if (paths[wd]) return; /* already watched (a directory given twice) */
    paths[wd] = strdup(dir);
    if (++n_dirs == MAX_DIRS)
        host_log(WSGI_LOG_WARNING, "--reload: watching the first %d directories only", MAX_DIRS);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (skip_dir(e->d_name)) continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >= (int)sizeof(sub)) continue;
        struct stat st;
        if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) add_tree(fd, sub, depth + 1);
    }
    closedir(d);
}

int reload_watch_open(const char *const *dirs, size_t n)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
        host_log(WSGI_LOG_ERROR, "--reload: inotify: %s", strerror(errno));
        return -1;
    }
    for (size_t k = 0; k < n; k++)
        add_tree(fd, dirs[k], 0);
    host_log(WSGI_LOG_INFO, "--reload: watching *.py in %d directories", n_dirs);
    return fd;
}

static int is_py(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".py") == 0 && name[0] != '.';
}

int reload_watch_read(int fd)
{
    int changed = 0;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r <= 0) break;
        for (char *p = buf; p < buf + r;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            const char *dir = ev->wd >= 0 && ev->wd < n_paths ? paths[ev->wd] : NULL;
            if (!ev->len || !dir) continue;
            if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
                !skip_dir(ev->name)) {
                char sub[PATH_MAX];
                if (snprintf(sub, sizeof(sub), "%s/%s", dir, ev->name) < (int)sizeof(sub))
                    add_tree(fd, sub, 0);
                continue;
            }
            if (!(ev->mask & IN_ISDIR) && is_py(ev->name)) {
                if (!changed)
                    host_log(WSGI_LOG_INFO, "--reload: %s/%s changed: restarting the workers", dir,
                             ev->name);
                changed = 1;
            }
        }
    }
    return changed;
}

void reload_watch_close(int fd)
{
    if (fd >= 0) close(fd);
    for (int k = 0; k < n_paths; k++)
        free(paths[k]);
    free(paths);
    paths = NULL;
    n_paths = n_dirs = 0;
}
