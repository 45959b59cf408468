/* The launcher of pyexe.h: decide whether to run inside the Python executable, and execute it. */
#include "pyexe.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int inside;
static const char *self_path = "/proc/self/exe";

void pyexe_set_inside(const char *self)
{
    inside = 1;
    if (self && *self) self_path = self;
}

int pyexe_inside(void)
{
    return inside;
}

const char *pyexe_self(void)
{
    return self_path;
}

#if LIBWSGI_PYEXE
/* The module: LIBWSGI_HOST_MODULE (tests), else in the build tree when this program is the build
 * tree's, else installed, relative to the program (so any --prefix or DESTDIR layout works). */
static int find_module(const char *self, char *out, size_t cap)
{
    const char *env = getenv("LIBWSGI_HOST_MODULE");
    int n;
    if (env && *env)
        n = snprintf(out, cap, "%s", env);
    else if (strncmp(self, LIBWSGI_PYEXE_BUILD_DIR "/", strlen(LIBWSGI_PYEXE_BUILD_DIR) + 1) == 0)
        n = snprintf(out, cap, "%s", LIBWSGI_PYEXE_BUILD_MODULE);
    else {
        const char *slash = strrchr(self, '/');
        n = snprintf(out, cap, "%.*s/%s", (int)(slash - self), self, LIBWSGI_PYEXE_REL_MODULE);
    }
    return n > 0 && (size_t)n < cap && access(out, R_OK) == 0 ? 0 : -1;
}

static int ignored(int sig)
{
    struct sigaction sa;
    return sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN;
}
#endif

void pyexe_launch(int argc, char **argv, server_program prog)
{
#if LIBWSGI_PYEXE
    if (inside) return;
    const char *off = getenv("LIBWSGI_EMBEDDED");
    if (off && *off && strcmp(off, "0") != 0) return;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0 || (size_t)n >= sizeof(self) - 1) return;
    self[n] = '\0';
    char module[PATH_MAX + 64];
    if (find_module(self, module, sizeof(module)) != 0) return;
    if (access(LIBWSGI_PYTHON_EXECUTABLE, X_OK) != 0) return;

    /* What the module puts back once python3 started: the dispositions python3 changes (it
     * ignores SIGPIPE and SIGXFSZ, handles SIGINT) and the process name (comm). */
    char sigign[4];
    snprintf(sigign, sizeof(sigign), "%d",
             ignored(SIGINT) | ignored(SIGPIPE) << 1 | ignored(SIGXFSZ) << 2);
    char comm[17] = "";
    prctl(PR_GET_NAME, comm, 0, 0, 0);
    /* The embedded interpreter never calls setlocale(): LC_ALL=C makes python3 leave the C locale
     * (and its ASCII encodings) in place too, and not coerce it (PEP 538); the module then puts
     * the variable back as it was ("-": unset). */
    const char *lc = getenv("LC_ALL");
    char *lc_arg = malloc(lc ? strlen(lc) + 2 : 2);
    if (!lc_arg) return;
    if (lc)
        sprintf(lc_arg, "=%s", lc);
    else
        strcpy(lc_arg, "-");
    char **nargv = calloc((size_t)argc + PYEXE_ARGV_FIXED + 1, sizeof(*nargv));
    if (!nargv) {
        free(lc_arg);
        return;
    }
    /* The loader leaves nothing of its own in __main__ (main() removes m). */
    static const char loader[] =
        "import importlib.util as u;"
        "s=u.spec_from_file_location('_libwsgi_host',__import__('sys').argv[1]);"
        "m=u.module_from_spec(s);del u;s.loader.exec_module(m);del s;m.main(globals())";
    size_t k = 0;
    nargv[k++] = LIBWSGI_PYTHON_EXECUTABLE;
    nargv[k++] = "-I";
    nargv[k++] = "-X";
    nargv[k++] = "utf8=0";
    nargv[k++] = "-c";
    nargv[k++] = (char *)loader;
    nargv[k++] = module;
    nargv[k++] = sigign;
    nargv[k++] = prog == PROG_SCGI ? "scgi" : "epoll";
    nargv[k++] = comm;
    nargv[k++] = self;
    nargv[k++] = lc_arg;
    for (int i = 0; i < argc; i++)
        nargv[k++] = argv[i];
    nargv[k] = NULL;
    if (setenv("LC_ALL", "C", 1) == 0) execv(LIBWSGI_PYTHON_EXECUTABLE, nargv);
    /* Not executed: the embedded interpreter, with the environment as it was. */
    int e = errno;
    if (lc)
        setenv("LC_ALL", lc, 1);
    else
        unsetenv("LC_ALL");
    fprintf(stderr, "warning: cannot execute %s (%s): running on the embedded interpreter\n",
            LIBWSGI_PYTHON_EXECUTABLE, strerror(e));
    free(nargv);
    free(lc_arg);
#else
    (void)argc;
    (void)argv;
    (void)prog;
#endif
}
