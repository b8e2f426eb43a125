/* body — a request body as libmicrohttpd hands it over in pieces, bounded, and the address a
 * server listens on: shared by the cloud server (serve/http.c) and the edge server
 * (edge/edge.c). */
#ifndef NG_SERVE_BODY_H
#define NG_SERVE_BODY_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/util.h"

typedef struct {
    char *body; /* NUL-terminated; NULL until a byte arrives or once too big */
    size_t len, cap;
    int too_big; /* the body passed max: what came is dropped, the request gets a 413 */
} http_body;

/* Appends n bytes, unless the body would pass max bytes: then all of it is dropped and too_big
 * set (later pieces are ignored). */
void http_body_add(http_body *b, const char *data, size_t n, size_t max);

/* The flags and address (MHD_OPTION_SOCK_ADDR) of a libmicrohttpd daemon that serves each
 * connection on a thread of its own on host, an IPv4 or IPv6 literal, at port. NG_ERR (err
 * names the host) when host is neither. */
int http_listen_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags, ng_error *err);

#endif
