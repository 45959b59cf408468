/**
 * @file libwsgi.h
 * @brief Umbrella header: include this one file to use libwsgi.
 *
 * libwsgi embeds CPython and implements WSGI (PEP 3333) and ASGI 3 for a host server that owns the
 * sockets and parses HTTP. No public header includes Python.h.
 */
#ifndef LIBWSGI_LIBWSGI_H
#define LIBWSGI_LIBWSGI_H

#include <libwsgi/version.h>
#include <libwsgi/common.h>
#include <libwsgi/runtime.h>
#include <libwsgi/wsgi.h>
#include <libwsgi/asgi.h>
#include <libwsgi/observer.h>

#endif /* LIBWSGI_LIBWSGI_H */
