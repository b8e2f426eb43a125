/* body — a request body as libmicrohttpd hands it over in pieces, bounded: shared by the cloud
 * server (serve/http.c) and the edge server (edge/edge.c). */
#ifndef NG_SERVE_BODY_H
#define NG_SERVE_BODY_H

#include <stddef.h>

typedef struct {
    char *body; /* NUL-terminated; NULL until a byte arrives or once too big */
    size_t len, cap;
    int too_big; /* the body passed max: what came is dropped, the request gets a 413 */
} http_body;

/* Appends n bytes, unless the body would pass max bytes: then all of it is dropped and too_big
 * set (later pieces are ignored). */
void http_body_add(http_body *b, const char *data, size_t n, size_t max);

#endif
