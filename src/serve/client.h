/* client — a minimal HTTP/1.1 client for loopback tests and the `bench serve` load generator:
 * one request per connection (Connection: close), chunked bodies decoded, with a deadline.
 * Not a general client: no TLS, no redirects, numeric addresses only.
 * Ownership: http_resp's buffers are malloc'd; free them with http_resp_free. */
#ifndef NG_SERVE_CLIENT_H
#define NG_SERVE_CLIENT_H

#include <stddef.h>

typedef struct {
    int status;   /* 0 when no status line came */
    char *head;   /* status line and headers, NUL-terminated */
    char *body;   /* decoded body, NUL-terminated */
    size_t body_len;
} http_resp;

/* Connects to host:port and sends one request (extra_headers: "Name: value\r\n" lines or NULL).
 * Returns the socket, or -1. */
int http_send(const char *host, int port, const char *method, const char *path, const char *extra_headers,
              const char *body, size_t body_len);
/* Reads at most cap bytes (raw, as they arrive) before the deadline (ng_time seconds): bytes read,
 * 0 at end of stream, -1 on error or timeout. */
long http_read_raw(int fd, char *buf, size_t cap, double deadline);
/* Reads the whole response from fd (and closes it). NG_OK or NG_ERR (timeout, bad framing). */
int http_read_all(int fd, http_resp *r, double deadline);
/* http_send + http_read_all. */
int http_request(const char *host, int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, http_resp *r, double timeout_s);
void http_resp_free(http_resp *r);
/* Decodes a chunked body in place; its new length, or -1 when malformed. */
long http_dechunk(char *b, size_t n);

#endif
