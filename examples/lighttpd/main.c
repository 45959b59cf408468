/* libwsgi-scgi: the backend lighttpd talks to, through mod_scgi (SCGI or the uwsgi protocol) and
 * mod_proxy (HTTP/1.1, for WebSocket). The server is libwsgi-epoll's (examples/epoll, built as the
 * private library wsgi_http_server); only how a request arrives differs: each connection's first
 * byte says which protocol it speaks (http_conn.c, scgi_parse.c). */
#include "server_main.h"

int main(int argc, char **argv)
{
    return server_main(argc, argv, PROG_SCGI);
}
