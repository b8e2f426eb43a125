/* loadgen — `netgpt bench serve` (also `netgpt serve --bench`): starts the server in this
 * process on a free loopback port and drives it with C concurrent streaming clients over real
 * HTTP, for C = 1, 4, 8, 16. Reports aggregate generated tokens/s and time-to-first-token
 * p50/p99 per level, and, with --lora, the cost of mixing 4 adapters in one batch against one.
 * Every response is checked (status 200, a complete stream with a usage chunk) before any
 * number is reported. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "serve/client.h"
#include "serve/serve.h"

#define LG_HOST "127.0.0.1"

typedef struct {
    int port, n_req, max_tokens, id;
    const char *model; /* NULL: the base */
    int n_models;      /* > 0: request i uses adapter l(i % n_models) */
    double *ttft;      /* (n_req) */
    long tokens;
    int failed;
} lg_client;

static void *lg_run(void *arg) {
    lg_client *c = arg;
    for (int i = 0; i < c->n_req; i++) {
        char model[64] = "", body[512];
        if (c->n_models) snprintf(model, sizeof model, "\"model\":\"l%d\",", (c->id + i) % c->n_models);
        /* distinct prompts, so the prefix cache does not turn this into a cache benchmark */
        snprintf(body, sizeof body,
                 "{%s\"prompt\":\"Request %d of client %d: the network is\",\"max_tokens\":%d,\"temperature\":0.8,"
                 "\"seed\":%d,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                 model, i, c->id, c->max_tokens, c->id * 1000 + i);
        double t0 = ng_time();
        int fd = http_send(LG_HOST, c->port, "POST", "/v1/completions", NULL, body, strlen(body));
        if (fd < 0) {
            c->failed++;
            continue;
        }
        size_t len = 0, cap = 1 << 16;
        char *buf = xmalloc(cap + 1);
        long k;
        c->ttft[i] = -1;
        while ((k = http_read_raw(fd, buf + len, cap - len, t0 + 600)) > 0) {
            len += (size_t)k;
            buf[len] = 0;
            if (c->ttft[i] < 0 && strstr(buf, "\"text\":")) c->ttft[i] = ng_time() - t0;
            if (len == cap) buf = xrealloc(buf, (cap *= 2) + 1);
        }
        close(fd);
        buf[len] = 0;
        const char *u = strstr(buf, "\"completion_tokens\":");
        if (k < 0 || strncmp(buf, "HTTP/1.1 200", 12) || !strstr(buf, "data: [DONE]") || !u || c->ttft[i] < 0) c->failed++;
        else c->tokens += atol(u + 20);
        free(buf);
    }
    return NULL;
}

typedef struct {
    double tok_s, p50, p99;
    long tokens;
    int failed;
} lg_result;

/* The q-quantile of the sorted x[0..n) by nearest rank: the smallest value with at least q n
 * values at or below it (so p50 <= p99 for any n). */
static double nearest_rank(const double *x, int n, double q) {
    int k = (int)ceil(q * n);
    return x[(k < 1 ? 1 : k > n ? n : k) - 1];
}

static lg_result lg_level(int port, int conc, int n_req, int max_tokens, int n_models) {
    lg_client *cs = xcalloc((size_t)conc, sizeof *cs);
    pthread_t *th = xmalloc((size_t)conc * sizeof *th);
    double *ttft = xmalloc((size_t)conc * (size_t)n_req * sizeof *ttft);
    double t0 = ng_time();
    for (int i = 0; i < conc; i++) {
        cs[i] = (lg_client){port, n_req, max_tokens, i, NULL, n_models, ttft + (size_t)i * n_req, 0, 0};
        pthread_create(&th[i], NULL, lg_run, &cs[i]);
    }
    lg_result r = {0};
    for (int i = 0; i < conc; i++) {
        pthread_join(th[i], NULL);
        r.tokens += cs[i].tokens;
        r.failed += cs[i].failed;
    }
    double wall = ng_time() - t0;
    int n = conc * n_req;
    ng_sort_doubles(ttft, (size_t)n);
    r.tok_s = (double)r.tokens / wall;
    r.p50 = nearest_rank(ttft, n, 0.50);
    r.p99 = nearest_rank(ttft, n, 0.99);
    free(cs);
    free(th);
    free(ttft);
    return r;
}

static const char HELP[] =
    "usage: netgpt bench serve -m MODEL [options]   (also: netgpt serve --bench ...)\n"
    "\n"
    "Starts the server in-process on a free 127.0.0.1 port and measures aggregate generated\n"
    "tokens/s and time-to-first-token p50/p99 with 1, 4, 8 and 16 concurrent streaming clients.\n"
    "\n"
    "  -m MODEL          GGUF or Hugging Face folder with a tokenizer\n"
    "  -n N              tokens per request (default 64)\n"
    "  --requests R      requests per client at each level (default 4)\n"
    "  --lora PATH       also measure 8 streams over 4 adapters (PATH at scales 0.5..2) against\n"
    "                    8 streams over one\n"
    "  --batch N         tokens per forward step (default 128)\n"
    "  --mmap            read the weights through the file's mapping (default: copied onto huge\n"
    "                    pages, as netgpt serve does)\n"
    "  -t N              threads (default: all cores)\n";

int serve_bench_main(int argc, char **argv) {
    serve_config cfg;
    serve_config_defaults(&cfg);
    cfg.port = 0;
    cfg.parallel = 16;
    cfg.max_queue = 256;
    int max_tokens = 64, n_req = 4;
    ng_model_set_mmap(0);
    const char *lora = NULL;
    char lora_args[4][1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (!strcmp(a, "--mmap")) {
            ng_model_set_mmap(1);
            continue;
        }
        if (!v) return fprintf(stderr, "netgpt bench serve: %s needs a value\n", a), 2;
        if (!strcmp(a, "-m")) cfg.model_path = v;
        else if (!strcmp(a, "-n")) max_tokens = atoi(v);
        else if (!strcmp(a, "--requests")) n_req = atoi(v);
        else if (!strcmp(a, "--lora")) lora = v;
        else if (!strcmp(a, "--batch")) cfg.n_batch = atoi(v);
        else if (!strcmp(a, "-t")) cfg.threads = atoi(v);
        else return fprintf(stderr, "netgpt bench serve: unknown option '%s'\n", a), 2;
        i++;
    }
    if (!cfg.model_path || max_tokens < 1 || n_req < 1)
        return fprintf(stderr, "netgpt bench serve: -m MODEL is required; -n, --requests >= 1\n"), 2;
    static const char *names[4] = {"l0", "l1", "l2", "l3"};
    if (lora) {
        for (int i = 0; i < 4; i++) {
            snprintf(lora_args[i], sizeof lora_args[i], "%s:%g", lora, 0.5 * (i + 1));
            cfg.lora_name[i] = names[i];
            cfg.lora_arg[i] = lora_args[i];
        }
        cfg.n_lora = 4;
    }
    ng_error err;
    serve_server *s = serve_start(&cfg, &err);
    if (!s || serve_load(s, &err)) {
        fprintf(stderr, "netgpt bench serve: %s\n", err.msg);
        serve_stop(s);
        return 1;
    }
    int port = serve_port(s);
    /* validate: one request must come back complete before anything is timed */
    lg_result w = lg_level(port, 1, 1, max_tokens, 0);
    if (w.failed || w.tokens <= 0) {
        fprintf(stderr, "netgpt bench serve: the validation request failed\n");
        serve_stop(s);
        return 1;
    }
    printf("serve bench: %s, %d tokens per request, %d requests per client, batch %d\n", cfg.model_path, max_tokens,
           n_req, cfg.n_batch);
    printf("%8s %12s %10s %10s %10s\n", "streams", "agg tok/s", "ttft p50", "ttft p99", "x single");
    /* One stream is memory-bound, the others mostly compute-bound: on a machine whose memory
     * bandwidth varies with its neighbours, one stream is run first and again last, and the
     * better run is the baseline of the ratios (the conservative choice). */
    int levels[4] = {1, 4, 8, 16}, rc = 0;
    lg_result res[4];
    for (int l = 0; l < 4; l++) res[l] = lg_level(port, levels[l], n_req, max_tokens, 0);
    lg_result again = lg_level(port, 1, n_req, max_tokens, 0);
    double single = res[0].tok_s > again.tok_s ? res[0].tok_s : again.tok_s;
    for (int l = 0; l < 4; l++) {
        const lg_result *r = &res[l];
        printf("%8d %12.1f %8.1fms %8.1fms %9.2fx%s\n", levels[l], r->tok_s, r->p50 * 1e3, r->p99 * 1e3,
               r->tok_s / single, r->failed ? "  (FAILED requests)" : "");
        if (r->failed) rc = 1;
    }
    printf("1 stream again: %.1f tok/s (ratios are to the better of the two single-stream runs)\n", again.tok_s);
    if (again.failed) rc = 1;
    if (lora) {
        lg_result one = lg_level(port, 8, n_req, max_tokens, 1), four = lg_level(port, 8, n_req, max_tokens, 4);
        printf("8 streams, 1 adapter: %.1f tok/s; 4 adapters mixed: %.1f tok/s (cost %.1f%%)\n", one.tok_s,
               four.tok_s, 100.0 * (1 - four.tok_s / one.tok_s));
        if (one.failed || four.failed) rc = 1;
    }
    serve_stop(s);
    return rc;
}
