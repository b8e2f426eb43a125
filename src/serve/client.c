#include "serve/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"

int http_send(const char *host, int port, const char *method, const char *path, const char *extra_headers,
              const char *body, size_t body_len) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) goto err;
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s%s%s", method, path, host, port,
                     extra_headers ? extra_headers : "", body ? "Content-Type: application/json\r\n" : "", "");
    if (n < 0 || (size_t)n >= sizeof head - 64) goto err;
    if (body) n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)n, body ? body_len : 0};
    for (int i = 0; i < 2; i++)
        for (size_t off = 0; off < lens[i];) {
            ssize_t k = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
            /* the server may answer (413) and close before it has read a large body */
            if (k < 0 && (errno == EPIPE || errno == ECONNRESET)) return fd;
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) goto err;
            off += (size_t)k;
        }
    return fd;
err:
    close(fd);
    return -1;
}

long http_read_raw(int fd, char *buf, size_t cap, double deadline) {
    for (;;) {
        double left = deadline - ng_time();
        if (left <= 0) return -1;
        struct pollfd p = {fd, POLLIN, 0};
        int k = poll(&p, 1, (int)(left * 1000) + 1);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        ssize_t n = recv(fd, buf, cap, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == ECONNRESET) return 0;
        return n < 0 ? -1 : (long)n;
    }
}

long http_dechunk(char *b, size_t n) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        if (in >= n) return -1;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = memmem(b + in, n - in, "\r\n", 2);
        if (!crlf || end == b + in) return -1;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0) break;
        if (in + sz + 2 > n) return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
    b[out] = 0;
    return (long)out;
}

int http_read_all(int fd, http_resp *r, double deadline) {
    memset(r, 0, sizeof *r);
    size_t len = 0, cap = 4096;
    char *buf = xmalloc(cap + 1);
    long k;
    while ((k = http_read_raw(fd, buf + len, cap - len, deadline)) > 0) {
        len += (size_t)k;
        if (len == cap) buf = xrealloc(buf, (cap *= 2) + 1);
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (k < 0 || !sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        r->status = 0;
        return NG_ERR;
    }
    size_t hlen = (size_t)(sep - buf);
    r->head = xmalloc(hlen + 1);
    memcpy(r->head, buf, hlen);
    r->head[hlen] = 0;
    size_t blen = len - hlen - 4;
    r->body = xmalloc(blen + 1);
    memcpy(r->body, sep + 4, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    free(buf);
    if (strcasestr(r->head, "transfer-encoding: chunked")) {
        long n = http_dechunk(r->body, r->body_len);
        if (n < 0) return NG_ERR;
        r->body_len = (size_t)n;
    }
    return NG_OK;
}

int http_request(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, http_resp *r, double timeout_s) {
    int fd = http_send(host, port, method, path, extra_headers, body, body ? strlen(body) : 0);
    if (fd < 0) {
        memset(r, 0, sizeof *r);
        return NG_ERR;
    }
    return http_read_all(fd, r, ng_time() + timeout_s);
}

void http_resp_free(http_resp *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}
