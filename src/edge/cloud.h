/* cloud — the edge's client for the cloud tier: one OpenAI-style streaming request (SSE) over
 * libcurl, with the text deltas handed to a callback as they arrive, exact byte counts of what
 * went up and came down, time to first token, and the faults told apart (unreachable, timeout,
 * HTTP error status, stream cut before [DONE]). A circuit breaker lets the edge stop trying a
 * failing cloud for a while.
 *
 * Thread-safe: each call uses its own curl handle; call cloud_global_init once at start-up. */
#ifndef NG_CLOUD_H
#define NG_CLOUD_H

#include <pthread.h>
#include <stddef.h>

typedef struct {
    const char *url;     /* base URL, e.g. "http://127.0.0.1:8080" (path /v1/chat/completions is added) */
    const char *api_key; /* Bearer token, or NULL */
    double connect_timeout_s; /* to connect */
    double idle_timeout_s;    /* with no byte arriving (also bounds the time to the first byte) */
    double total_timeout_s;   /* for the whole answer */
} cloud_cfg;

/* Gets each piece of answer text; returns nonzero to stop the transfer (the client went away). */
typedef int (*cloud_delta_fn)(void *ud, const char *text, size_t n);

typedef enum { CLOUD_OK = 0, CLOUD_UNREACHABLE, CLOUD_TIMEOUT, CLOUD_HTTP_ERROR, CLOUD_CUT, CLOUD_ABORTED } cloud_status;

typedef struct {
    cloud_status status;
    int http_status;
    char error[256];
    double ttft_s, total_s; /* from the start of the request */
    size_t uplink_bytes, downlink_bytes; /* on the wire at the HTTP level: headers + body */
    int prompt_tokens, completion_tokens; /* from the final usage chunk, when the cloud sent one */
    char finish_reason[32];
} cloud_result;

void cloud_global_init(void);
const char *cloud_status_name(cloud_status s);

/* POSTs body (a chat-completions request with "stream": true) and streams the answer. Returns
 * the status (also in res). */
cloud_status cloud_chat_stream(const cloud_cfg *c, const char *body, cloud_delta_fn fn, void *ud, cloud_result *res);

/* Circuit breaker: after `threshold` consecutive failures the cloud is skipped for cooldown_s
 * seconds, then one request is let through to probe it. */
typedef struct {
    pthread_mutex_t mu;
    int threshold, failures;
    double cooldown_s, open_until;
} cloud_breaker;

void cloud_breaker_init(cloud_breaker *b, int threshold, double cooldown_s);
/* 1 when a request may go to the cloud now. */
int cloud_breaker_allow(cloud_breaker *b, double now);
void cloud_breaker_report(cloud_breaker *b, int ok, double now);
/* 1 while the breaker keeps the cloud out. */
int cloud_breaker_open(cloud_breaker *b, double now);

#endif
