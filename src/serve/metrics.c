#include "serve/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* Upper bounds in seconds: from a fast decode step (1 ms) to a long queue wait (30 s). */
static const double BUCKETS[METRICS_N_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25,  0.5,    1,     2.5,  5,     10,  30};

void metrics_init(serve_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void metrics_free(serve_metrics *m) { pthread_mutex_destroy(&m->mu); }

void metrics_request(serve_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < METRICS_N_STATUS && m->status_code[i] && m->status_code[i] != status) i++;
    /* more distinct codes than slots cannot happen with the codes the server sends; the last
     * slot absorbs them rather than growing */
    if (i == METRICS_N_STATUS) i = METRICS_N_STATUS - 1;
    else m->status_code[i] = status;
    m->status_count[i]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(serve_metrics *m, int prompt, int cached, int generated) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += (uint64_t)prompt;
    m->cached_prompt_tokens += (uint64_t)cached;
    m->generated_tokens += (uint64_t)generated;
    pthread_mutex_unlock(&m->mu);
}

static void observe(serve_metrics *m, metrics_hist *h, double s) {
    int b = 0;
    while (b < METRICS_N_BUCKETS && s > BUCKETS[b]) b++;
    pthread_mutex_lock(&m->mu);
    h->counts[b]++;
    h->sum += s;
    h->n++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_ttft(serve_metrics *m, double seconds) { observe(m, &m->ttft, seconds); }
void metrics_token_latency(serve_metrics *m, double seconds) { observe(m, &m->per_token, seconds); }

static void render_hist(ng_buf *b, const char *name, const char *help, const metrics_hist *h) {
    ng_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_N_BUCKETS; i++) {
        cum += h->counts[i];
        ng_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, BUCKETS[i], (unsigned long long)cum);
    }
    cum += h->counts[METRICS_N_BUCKETS];
    ng_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name,
              h->sum, name, (unsigned long long)h->n);
}

char *metrics_render(serve_metrics *m, const metrics_gauges *g) {
    ng_buf b;
    ng_buf_init(&b);
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    ng_buf_printf(&b, "# HELP netgpt_requests_total HTTP requests to /v1 by status code.\n"
                  "# TYPE netgpt_requests_total counter\n");
    for (int i = 0; i < METRICS_N_STATUS && m->status_code[i]; i++)
        ng_buf_printf(&b, "netgpt_requests_total{status=\"%d\"} %llu\n", m->status_code[i],
                  (unsigned long long)m->status_count[i]);
    ng_buf_printf(&b,
              "# HELP netgpt_prompt_tokens_total Prompt tokens of admitted requests.\n"
              "# TYPE netgpt_prompt_tokens_total counter\nnetgpt_prompt_tokens_total %llu\n"
              "# HELP netgpt_prompt_tokens_cached_total Prompt tokens reused from the prefix cache.\n"
              "# TYPE netgpt_prompt_tokens_cached_total counter\nnetgpt_prompt_tokens_cached_total %llu\n"
              "# HELP netgpt_generated_tokens_total Tokens generated.\n"
              "# TYPE netgpt_generated_tokens_total counter\nnetgpt_generated_tokens_total %llu\n",
              (unsigned long long)m->prompt_tokens, (unsigned long long)m->cached_prompt_tokens,
              (unsigned long long)m->generated_tokens);
    render_hist(&b, "netgpt_time_to_first_token_seconds", "Time from request arrival to its first token.", &m->ttft);
    render_hist(&b, "netgpt_time_per_output_token_seconds", "Time between consecutive tokens of a stream.",
                &m->per_token);
    pthread_mutex_unlock(&m->mu);
    ng_buf_printf(&b,
              "# HELP netgpt_queue_depth Requests waiting for a slot.\n# TYPE netgpt_queue_depth gauge\n"
              "netgpt_queue_depth %d\n"
              "# HELP netgpt_slots_busy Sequences being generated.\n# TYPE netgpt_slots_busy gauge\n"
              "netgpt_slots_busy %d\n"
              "# HELP netgpt_slots_total Sequence slots (--parallel).\n# TYPE netgpt_slots_total gauge\n"
              "netgpt_slots_total %d\n"
              "# HELP netgpt_adapters_loaded LoRA adapters loaded.\n# TYPE netgpt_adapters_loaded gauge\n"
              "netgpt_adapters_loaded %d\n",
              g->queue_depth, g->busy_slots, g->n_slots, g->adapters);
    return b.s;
}
