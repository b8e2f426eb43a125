/* body — see body.h. */
#include "serve/body.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

int http_listen_addr(const char *host, int port, struct sockaddr_storage *ss, unsigned *flags, ng_error *err) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    *flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *flags |= MHD_USE_IPv6;
    } else {
        return ng_error_set(err, "--host '%s' is not an IPv4 or IPv6 address", host);
    }
    return NG_OK;
}

void http_body_add(http_body *b, const char *data, size_t n, size_t max) {
    if (!b->too_big && b->len + n > max) {
        b->too_big = 1;
        free(b->body);
        b->body = NULL;
        b->len = 0;
    }
    if (b->too_big) return;
    if (b->len + n + 1 > b->cap) b->body = xrealloc(b->body, b->cap = (b->len + n) * 2 + 1);
    memcpy(b->body + b->len, data, n);
    b->len += n;
    b->body[b->len] = 0;
}
