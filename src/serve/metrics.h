/* metrics — the server's counters and latency histograms, rendered in the Prometheus text
 * exposition format for GET /metrics.
 *
 * Thread-safe: HTTP handler threads and the scheduler thread update one serve_metrics under
 * its mutex; gauges (queue depth, busy slots, adapters) are read from their owners at render
 * time and passed in. Histograms have fixed buckets (seconds), so memory never grows. */
#ifndef NG_SERVE_METRICS_H
#define NG_SERVE_METRICS_H

#include <pthread.h>
#include <stdint.h>

#define METRICS_N_BUCKETS 14
#define METRICS_N_STATUS 12

typedef struct {
    uint64_t counts[METRICS_N_BUCKETS + 1]; /* per bucket, the last one +Inf (not cumulative) */
    double sum;
    uint64_t n;
} metrics_hist;

typedef struct {
    pthread_mutex_t mu;
    int status_code[METRICS_N_STATUS];
    uint64_t status_count[METRICS_N_STATUS];
    uint64_t prompt_tokens, generated_tokens, cached_prompt_tokens;
    metrics_hist ttft, per_token;
} serve_metrics;

typedef struct {
    int queue_depth, busy_slots, n_slots, adapters;
} metrics_gauges;

void metrics_init(serve_metrics *m);
void metrics_free(serve_metrics *m);
/* One finished HTTP request on /v1 with its status. */
void metrics_request(serve_metrics *m, int status);
void metrics_tokens(serve_metrics *m, int prompt, int cached, int generated);
void metrics_ttft(serve_metrics *m, double seconds);
void metrics_token_latency(serve_metrics *m, double seconds);
/* The exposition text (malloc'd). */
char *metrics_render(serve_metrics *m, const metrics_gauges *g);

#endif
