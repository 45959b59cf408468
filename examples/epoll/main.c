/* libwsgi-epoll: the HTTP/1.1 server. Everything but this line is shared with libwsgi-scgi
 * (examples/lighttpd), which differs only in how a request arrives (server_main.c, http_conn.c). */
#include "server_main.h"

int main(int argc, char **argv)
{
    return server_main(argc, argv, PROG_EPOLL);
}
