/* --reload: inotify watches on directories of Python files (the app's directory, --pythonpath
 * entries, --reload-dir), recursively, for the prefork master; a change to a .py file there is a
 * reason to start new workers. Like uvicorn's --reload, which also watches *.py under its
 * directories rather than asking the interpreter (the master never loads the app). */
#ifndef WSGI_HOST_RELOAD_WATCH_H
#define WSGI_HOST_RELOAD_WATCH_H

#include <stddef.h>

/* Watch the n directories and their subdirectories (skipping hidden ones, __pycache__ and
 * site-packages / dist-packages trees; at most 4096 directories). Returns the inotify fd
 * (non-blocking) or -1 (logged). */
int reload_watch_open(const char *const *dirs, size_t n);

/* Drain the fd's events: 1 if a .py file was written, created, moved or deleted (the first one is
 * logged), else 0. New subdirectories are watched as they appear. */
int reload_watch_read(int fd);

void reload_watch_close(int fd);

#endif
