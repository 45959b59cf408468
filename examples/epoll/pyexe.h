/* Running libwsgi-epoll / libwsgi-scgi inside the Python executable they were built for
 * (LIBWSGI_PYTHON_EXE_HOSTS): the program is a launcher that executes
 *
 *   PYEXE -I -X utf8=0 -c LOADER MODULE SIGIGN PROG COMM SELF LC_ALL ARGV...
 *
 * (same pid), where LOADER imports the extension module MODULE (_libwsgi_host.so: the same server
 * built as a module, host_module.c) from its path and calls its main(), which runs server_main()
 * on the executable's interpreter. Debian's python3 is built with PGO and LTO; libpython3.11.a,
 * which the embedded servers link, only with PGO: the same app code runs ~11 % faster there.
 * Everything else (sys.path, sys.flags, the locale, signals, the exit status, finalization) is
 * made the same as the embedded interpreter's: see docs/architecture.md. */
#ifndef EPOLL_PYEXE_H
#define EPOLL_PYEXE_H

#include "cli.h"

/* Entries of the Python executable's argv before the launcher's own argv (PYEXE .. LC_ALL). */
#define PYEXE_ARGV_FIXED 12

/* First thing in server_main(): unless disabled (LIBWSGI_EMBEDDED=1, a missing module or
 * executable, a build without the option), execute the Python executable as above. Returns only
 * when the server is to run here, on the embedded interpreter (or already runs in the module). */
void pyexe_launch(int argc, char **argv, server_program prog);

/* host_module.c, before server_main(): the server runs inside the Python executable; self is the
 * launcher's path (what a SIGHUP reload executes instead of /proc/self/exe). */
void pyexe_set_inside(const char *self);
/* The server runs inside the Python executable (the module), not on an embedded interpreter. */
int pyexe_inside(void);
/* What a reload executes: the launcher's path inside the Python executable, else /proc/self/exe. */
const char *pyexe_self(void);

#endif
