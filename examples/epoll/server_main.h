/* The main function shared by libwsgi-epoll and libwsgi-scgi (server_main.c). */
#ifndef EPOLL_SERVER_MAIN_H
#define EPOLL_SERVER_MAIN_H

#include "cli.h"

/* Run the program: parse argv, listen, serve until told to stop. Returns main's exit status. */
int server_main(int argc, char **argv, server_program prog);

#endif
