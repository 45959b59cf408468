/* Name and version of the libwsgi-epoll program (the version follows the library's). */
#ifndef EPOLL_VERSION_H
#define EPOLL_VERSION_H

#include <libwsgi/libwsgi.h>

#define EPOLL_SERVER_NAME    "libwsgi-epoll"
#define EPOLL_SERVER_VERSION LIBWSGI_VERSION

#endif
