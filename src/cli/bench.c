/* netgpt bench — speed and memory measured against this machine's own limits, in one run.
 *
 * Models are made in place with deterministic random weights (nothing to download), in the
 * GPT-2 124M shape by default. Every figure is printed beside the limit it is judged by:
 * decode tok/s as a share of the bandwidth floor (weight bytes per token / measured read
 * bandwidth), prefill as a share of the measured f32 FMA peak. The fast kernels' output is
 * checked against the portable path before anything is timed. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/kernels.h"

static const char HELP[] =
    "usage: netgpt bench [options]\n"
    "\n"
    "Measures this machine's memory-read bandwidth and f32 compute peak, then decode and prefill\n"
    "speed of a GPT-2 124M-shaped model with random weights for each type.\n"
    "\n"
    "  --types LIST    comma-separated weight types (default f32,f16,bf16)\n"
    "  --n-gen N       tokens generated in the decode test (default 128)\n"
    "  --n-prompt N    prompt tokens in the prefill test (default 128)\n"
    "  --layers N      override the number of layers (default 12; fewer for a quick run)\n"
    "  -t, --threads N threads (default: all cores)\n"
    "  --json          print the results as one JSON object on stdout\n";

typedef struct {
    ng_type type;
    double weight_bytes, decode_tps, decode_floor_pct, prefill_tps, prefill_gflops, prefill_peak_pct, max_diff;
} bench_row;

/* FLOPs of a forward over n tokens starting at pos (matmuls + attention). */
static double forward_flops(const ng_hparams *hp, int n, int pos) {
    double E = hp->n_embd, F = hp->n_ff, per_tok = 2.0 * hp->n_layer * (4 * E * E + 2 * E * F) + 2.0 * E * hp->n_vocab;
    double att = 0;
    for (int i = 0; i < n; i++) att += 4.0 * hp->n_layer * E * (pos + i + 1);
    return per_tok * n + att;
}

/* Largest |fast - portable| of the last-token logits for a short prompt. */
static double validate(const ng_model *m) {
    int toks[8];
    for (int i = 0; i < 8; i++) toks[i] = (i * 7919 + 13) % m->hp.n_vocab;
    float *a = xmalloc((size_t)m->hp.n_vocab * sizeof *a), *b = xmalloc((size_t)m->hp.n_vocab * sizeof *b);
    ng_error err;
    ng_state *s = ng_state_new(m, 16, 8);
    if (ng_forward(m, s, toks, 8, a, 0, &err)) ng_die("bench: %s", err.msg);
    ng_kernel_force_portable(1);
    ng_state_reset(s);
    if (ng_forward(m, s, toks, 8, b, 0, &err)) ng_die("bench: %s", err.msg);
    ng_kernel_force_portable(0);
    double d = 0, mag = 0;
    for (int i = 0; i < m->hp.n_vocab; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        mag = fmax(mag, fabs((double)b[i]));
    }
    ng_state_free(s);
    free(a);
    free(b);
    if (!(d <= 1e-3 * (1 + mag))) ng_die("bench: fast kernels disagree with the portable path (max diff %g)", d);
    return d;
}

static void run_type(const ng_hparams *hp, ng_type t, int n_prompt, int n_gen, double bw, double peak, bench_row *r) {
    r->type = t;
    ng_log("  %-5s making weights...", ng_type_name(t));
    ng_model *m = ng_model_random(hp, t, 42);
    r->weight_bytes = (double)ng_model_weight_bytes(m);
    r->max_diff = validate(m);
    ng_log(" validated (max diff %.2g); prefill...", r->max_diff);
    int n_ctx = n_prompt + n_gen + 1 < hp->n_ctx ? n_prompt + n_gen + 1 : hp->n_ctx;
    ng_state *s = ng_state_new(m, n_ctx, n_prompt);
    int *toks = xmalloc((size_t)(n_prompt + n_gen) * sizeof *toks);
    for (int i = 0; i < n_prompt + n_gen; i++) toks[i] = (i * 7919 + 13) % hp->n_vocab;
    float *logits = xmalloc((size_t)hp->n_vocab * sizeof *logits);
    ng_error err;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        ng_state_reset(s);
        double t0 = ng_time();
        if (ng_forward(m, s, toks, n_prompt, logits, 0, &err)) ng_die("bench: %s", err.msg);
        best = fmin(best, ng_time() - t0);
    }
    r->prefill_tps = n_prompt / best;
    r->prefill_gflops = forward_flops(hp, n_prompt, 0) / best / 1e9;
    r->prefill_peak_pct = 100.0 * r->prefill_gflops * 1e9 / peak;
    ng_log(" decode...");
    /* decode continues after the prompt, one token per forward */
    double t0 = ng_time();
    for (int i = 0; i < n_gen; i++)
        if (ng_forward(m, s, &toks[n_prompt + i], 1, logits, 0, &err)) ng_die("bench: %s", err.msg);
    double dt = ng_time() - t0;
    r->decode_tps = n_gen / dt;
    double kv_bytes = 2.0 * hp->n_layer * hp->n_embd * 4.0 * (n_prompt + n_gen / 2.0); /* mean cache read */
    r->decode_floor_pct = 100.0 * ((r->weight_bytes + kv_bytes) / bw) / (dt / n_gen);
    ng_log(" done\n");
    free(logits);
    free(toks);
    ng_state_free(s);
    ng_model_free(m);
}

int cmd_bench(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *types = "f32,f16,bf16";
    int n_gen = 128, n_prompt = 128, layers = 12;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "--types")) types = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--n-gen")) n_gen = (int)cli_long(a, cli_value(argc, argv, &i), 1, 4096);
        else if (!strcmp(a, "--n-prompt")) n_prompt = (int)cli_long(a, cli_value(argc, argv, &i), 1, 512);
        else if (!strcmp(a, "--layers")) layers = (int)cli_long(a, cli_value(argc, argv, &i), 1, 48);
        else cli_positional(&o, a, "bench");
    }
    ng_set_threads(o.threads);
    int threads = ng_threads();
    ng_hparams hp = {.arch = NG_ARCH_GPT2, .n_vocab = 50257, .n_ctx = 1024, .n_embd = 768, .n_head = 12, .n_head_kv = 12,
                     .n_layer = layers, .n_ff = 3072, .norm_eps = 1e-5f};
    ng_type list[8];
    int n_types = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", types);
    for (char *tk = strtok(buf, ","); tk; tk = strtok(NULL, ",")) {
        int t = ng_type_parse(tk);
        if (t != NG_F32 && t != NG_F16 && t != NG_BF16) {
            fprintf(stderr, "netgpt bench: --types: '%s' is not one of f32, f16, bf16\n", tk);
            return 2;
        }
        if (n_types < 8) list[n_types++] = (ng_type)t;
    }
    ng_log("netgpt bench: GPT-2 124M shape (%d layers), %d threads, kernels: %s\n", layers, threads, ng_kernel_path());
    ng_log("measuring memory-read bandwidth and f32 FMA peak...\n");
    double bw = ng_measure_read_bandwidth(threads), peak = ng_measure_peak_flops(threads);
    ng_log("  read bandwidth %.1f GB/s, f32 peak %.1f GFLOP/s\n", bw / 1e9, peak / 1e9);
    bench_row rows[8];
    for (int i = 0; i < n_types; i++) run_type(&hp, list[i], n_prompt, n_gen, bw, peak, &rows[i]);
    double rss = (double)ng_peak_rss();
    if (o.json) {
        printf("{\"model\":\"gpt2-124m-shape\",\"layers\":%d,\"threads\":%d,\"kernels\":\"%s\",\"read_bandwidth_gbs\":%.2f,"
               "\"peak_gflops\":%.1f,\"peak_rss_mb\":%.1f,\"n_prompt\":%d,\"n_gen\":%d,\"results\":[",
               layers, threads, ng_kernel_path(), bw / 1e9, peak / 1e9, rss / 1e6, n_prompt, n_gen);
        for (int i = 0; i < n_types; i++)
            printf("%s{\"type\":\"%s\",\"weight_mb\":%.1f,\"decode_tok_s\":%.2f,\"decode_pct_of_bandwidth_floor\":%.1f,"
                   "\"prefill_tok_s\":%.1f,\"prefill_gflops\":%.1f,\"prefill_pct_of_peak\":%.1f}",
                   i ? "," : "", ng_type_name(rows[i].type), rows[i].weight_bytes / 1e6, rows[i].decode_tps,
                   rows[i].decode_floor_pct, rows[i].prefill_tps, rows[i].prefill_gflops, rows[i].prefill_peak_pct);
        printf("]}\n");
    } else {
        printf("\nmachine: read bandwidth %.1f GB/s, f32 FMA peak %.1f GFLOP/s, %d threads, kernels %s\n", bw / 1e9,
               peak / 1e9, threads, ng_kernel_path());
        printf("%-6s %10s %12s %16s %13s %15s %10s\n", "type", "weights", "decode tok/s", "% of bw floor",
               "prefill tok/s", "prefill GFLOP/s", "% of peak");
        for (int i = 0; i < n_types; i++)
            printf("%-6s %8.1f MB %12.1f %15.1f%% %13.1f %15.1f %9.1f%%\n", ng_type_name(rows[i].type),
                   rows[i].weight_bytes / 1e6, rows[i].decode_tps, rows[i].decode_floor_pct, rows[i].prefill_tps,
                   rows[i].prefill_gflops, rows[i].prefill_peak_pct);
        printf("peak RSS %.1f MB (decode %d tokens after a %d-token prompt)\n", rss / 1e6, n_gen, n_prompt);
    }
    return 0;
}
