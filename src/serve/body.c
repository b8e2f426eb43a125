/* body — see body.h. */
#include "serve/body.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

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
