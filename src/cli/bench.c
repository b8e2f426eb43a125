/* netgpt bench — speed and memory measured against this machine's own limits, in one run.
 *
 * Models are made in place with deterministic random weights (nothing to download), in real
 * models' shapes (GPT-2 124M, TinyLlama 1.1B, LLaMA 7B). Every figure is printed beside the
 * limit it is judged by: decode tok/s as a share of the bandwidth floor (bytes of weights and
 * KV cache read per token / measured read bandwidth), prefill as a share of the measured f32
 * FMA peak (bf16 weights: of vdpbf16ps's peak, quantized ones: of vpdpbusd's, where the prefill
 * runs on them). The fast kernels' output is checked against the portable path before anything
 * is timed. With --mmap the model is written to a GGUF file and run from the mapping, to show
 * the resident memory is the file's size, not a copy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "cli/bench_train.h"
#include "serve/serve.h"

static const char HELP[] =
    "usage: netgpt bench [options]\n"
    "       netgpt bench serve [options]   load test of netgpt serve over loopback (see --help)\n"
    "       netgpt bench train [options]   training step time and memory (see --help)\n"
    "\n"
    "Measures this machine's memory-read bandwidth and f32 compute peak, then decode and prefill\n"
    "speed of models with random weights in real models' shapes, for each weight type.\n"
    "\n"
    "  --shape NAME    gpt2-124m (default), tinyllama-1.1b, llama-7b, or all\n"
    "  --types LIST    comma-separated weight types (default f32,f16,bf16,q8_0,q4_0; also q6_k,\n"
    "                  q4_k, the k-quants of common downloads; types whose weights would not\n"
    "                  fit in memory are skipped)\n"
    "  --n-gen N       tokens generated in the decode test (default 128; 64 for 1.1B, 16 for 7B)\n"
    "  --n-prompt N    prompt tokens in the prefill test (default 128; 512 for LLaMA shapes)\n"
    "  --layers N      override the number of layers (fewer for a quick run)\n"
    "  --mmap          write each model to a GGUF file, run it memory-mapped, report RSS vs size\n"
    "  --batch N       also decode N sequences in one batch (as netgpt serve does) and report the\n"
    "                  aggregate tok/s beside one sequence decoded the same way (ratio = speedup)\n"
    "  --kv-type T     f32 (default) or f16: the type of the cached keys and values\n"
    "  --no-bf16-dot   bf16 prefill with f32 products (by default it uses AVX512-BF16 where\n"
    "                  the CPU has it, and is judged by that instruction's measured peak)\n"
    "  --no-int8-gemm  q8_0 / q4_0 prefill on the integer GEMV (by default an int8 GEMM on\n"
    "                  AVX-512 VNNI, or AVX-VNNI on the AVX2 path, where the CPU has it; either\n"
    "                  way judged by the measured peak of the integer instructions that ran)\n"
    "  --bf16-attention  quantized prefill's attention in bf16 where the CPU has AVX512-BF16\n"
    "                  (default f32: see README)\n"
    "  --kernels P     run the avx2 or portable kernels on a CPU that has better (what a\n"
    "                  smaller machine's kernels do here; the f32 peak is then that path's)\n"
    "  --no-avx-vnni   on the AVX2 path, the integer dot products on vpmaddubsw + vpmaddwd even\n"
    "                  where the CPU has AVX-VNNI (Alder Lake and later, Zen 5)\n"
    "  --profile       after the timed runs, one more decode run that times its parts: the\n"
    "                  matrix products (and the rate they read the weights at), attention, the rest\n"
    "  -t, --threads N threads (default: all cores)\n"
    "  --json          print the results as one JSON object on stdout\n"
    "\n"
    "On a machine shared with other work, OMP_WAIT_POLICY=passive keeps threads from spinning\n"
    "against each other (it costs some speed on an idle machine).\n";

typedef struct {
    const char *name;
    ng_hparams hp;
    int n_gen, n_prompt;
} bench_model;

static const bench_model MODELS[] = {
    {"gpt2-124m",
     {.arch = NG_ARCH_GPT2, .n_vocab = 50257, .n_ctx = 1024, .n_embd = 768, .n_head = 12, .n_head_kv = 12,
      .n_layer = 12, .n_ff = 3072, .norm_eps = 1e-5f},
     128, 128},
    {"tinyllama-1.1b",
     {.arch = NG_ARCH_LLAMA, .n_vocab = 32000, .n_ctx = 2048, .n_embd = 2048, .n_head = 32, .n_head_kv = 4,
      .n_layer = 22, .n_ff = 5632, .norm_eps = 1e-5f, .rope_theta = 10000, .rope_scale = 1},
     64, 512},
    {"llama-7b",
     {.arch = NG_ARCH_LLAMA, .n_vocab = 32000, .n_ctx = 4096, .n_embd = 4096, .n_head = 32, .n_head_kv = 32,
      .n_layer = 32, .n_ff = 11008, .norm_eps = 1e-5f, .rope_theta = 10000, .rope_scale = 1},
     16, 512},
};
#define N_MODELS (int)(sizeof MODELS / sizeof MODELS[0])
#define PREFILL_RUNS 12 /* at most, where they are short (run_one) */

typedef struct {
    const char *model;
    ng_type type;
    int n_gen, n_prompt, skipped;
    const char *peak_kind; /* the peak prefill is judged by: "f32", "bf16" or "int8" */
    double weight_bytes, decode_tps, decode_floor_pct, prefill_tps, prefill_gflops, prefill_peak_pct, max_diff;
    double decode_mean_tps; /* n_gen over the fastest run's time: hiccups included */
    double file_mb, rss_mb;
    double floor_bw;               /* the read bandwidth the decode floor was judged by */
    double batch1_tps, batchn_tps; /* --batch: one sequence, and N, decoded by ng_forward_multi */
    double step_s, matmul_s, attention_s, rest_s; /* --profile: per decode step */
    double matmul_gbs, attention_gbs;           /* --profile: weights / KV bytes over their time */
    double kv_bytes;                      /* the KV cache read per decode step, on average */
} bench_row;

/* FLOPs of a forward over n tokens starting at pos: the matrix products, attention, and the
 * output layer for the last token (the only logits a prefill computes; counting it for every
 * token had put GPT-2 124M's prefill GFLOP/s 45% too high). */
static double forward_flops(const ng_hparams *hp, int n, int pos) {
    double E = hp->n_embd, F = hp->n_ff, KV = ng_kv_dim(hp);
    double mats = hp->arch == NG_ARCH_GPT2 ? 4 * E * E + 2 * E * F : 2 * E * E + 2 * E * KV + 3 * E * F;
    double per_tok = 2.0 * hp->n_layer * mats, att = 0;
    for (int i = 0; i < n; i++) att += 4.0 * hp->n_layer * E * (pos + i + 1);
    return per_tok * n + 2.0 * E * hp->n_vocab + att; /* the output layer for the last token only */
}

/* Largest |difference| of the last token's logits for an n-token prompt (n <= 32) run as the
 * kernels stand and again after toggle(1), which toggle(0) undoes; the second run's largest
 * |logit| in *mag. */
static double logits_delta(const ng_model *m, int n, void (*toggle)(int), double *mag) {
    int toks[32], V = m->hp.n_vocab;
    if (n > 32) n = 32;
    for (int i = 0; i < n; i++) toks[i] = (i * 7919 + 13) % V;
    float *a = xmalloc((size_t)V * sizeof *a), *b = xmalloc((size_t)V * sizeof *b);
    ng_error err;
    ng_state *s = ng_state_new(m, 2 * n, n);
    if (ng_forward(m, s, toks, n, a, 0, &err)) ng_die("bench: %s", err.msg);
    toggle(1);
    ng_state_reset(s);
    if (ng_forward(m, s, toks, n, b, 0, &err)) ng_die("bench: %s", err.msg);
    toggle(0);
    double d = 0;
    *mag = 0;
    for (int i = 0; i < V; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        *mag = fmax(*mag, fabs((double)b[i]));
    }
    ng_state_free(s);
    free(a);
    free(b);
    return d;
}

static void bf16_dot_off(int on) { ng_kernel_set_bf16_dot(!on); }
static void int8_gemm_off(int on) { ng_kernel_set_int8_gemm(!on); }
static void bf16_attention_off(int on) { ng_kernel_set_bf16_attention(!on); }

/* Exits unless an n-token prompt's logits with the products toggle(1) selects are within 15% of
 * the largest logit of those as the kernels stand; what names the disagreement. */
static void check_toggle(const ng_model *m, int n, void (*toggle)(int), const char *what) {
    double mag, d = logits_delta(m, n, toggle, &mag);
    if (!(d <= 0.15 * (1 + mag))) ng_die("bench: %s (max diff %g, bound %g)", what, d, 0.15 * (1 + mag));
}

/* Largest |fast - portable| of the last-token logits for a short prompt; exits on disagreement.
 * With bf16 weights on AVX512-BF16, a 16-token prompt (the GEMM; 8 tokens run the GEMV) with the
 * bf16 products against f32 products on the same path as well: they differ by the activations'
 * rounding to bf16, a few % of the largest logit at most. With q8_0 / q4_0 weights where the
 * int8 GEMM runs, a 24-token prompt (64 on the AVX2 path, whose GEMM starts at more rows) with it
 * against the integer GEMV (both round the activations to 8 bits; they differ by the order of
 * float sums, grown by the next layers' rounding); where the prompt's attention runs in bf16, the
 * same prompt with it against f32 attention. */
static double validate(const ng_model *m) {
    double mag, d = logits_delta(m, 8, ng_kernel_force_portable, &mag);
    /* The fast quantized paths round the activations to 8 bits as well (the portable path does
     * not), and the difference grows with depth: a looser bound than for float weights. A broken
     * kernel gives differences of the logits' own size. */
    int quant = ng_type_block(ng_model_wtype(m)) > 1;
    double bound = (quant ? 0.15 : 2e-3) * (1 + mag);
    if (!(d <= bound))
        ng_die("bench: fast kernels disagree with the portable path (max diff %g, bound %g)", d, bound);
    if (ng_model_wtype(m) == NG_BF16 && ng_kernel_bf16_dot())
        check_toggle(m, 16, bf16_dot_off, "the bf16 products disagree with f32 products");
    ng_type base = ng_type_base(ng_model_wtype(m));
    int rows = ng_kernel_int8_gemm(base, 24) ? 24 : 64;
    if ((base == NG_Q8_0 || base == NG_Q4_0) && ng_kernel_int8_gemm(base, rows))
        check_toggle(m, rows, int8_gemm_off, "the int8 GEMM disagrees with the integer GEMV");
    if (ng_kernel_bf16_attention(ng_head_dim(&m->hp)) && ng_kernel_int8_rows(m->layers[0].out_w->type, rows))
        check_toggle(m, rows, bf16_attention_off, "the bf16 attention disagrees with f32 attention");
    return d;
}

/* A note under the table when some row's prefill was judged by the peak of kind. */
static void footnote(const bench_row *rows, int n, const char *kind, const char *fmt, const char *on, double peak) {
    for (int i = 0; i < n; i++)
        if (!rows[i].skipped && !strcmp(rows[i].peak_kind, kind)) {
            printf(fmt, on, peak / 1e9);
            return;
        }
}

static double current_rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

#define BATCH_PREFIX 32 /* tokens each sequence holds before the batched decode is timed */

/* Aggregate decode tok/s of n sequences stepped together by ng_forward_multi (one token each per
 * step, the serve scheduler's decode step), each starting from its own BATCH_PREFIX tokens. */
static double batch_decode(const ng_model *m, int n, int n_gen) {
    const ng_hparams *hp = &m->hp;
    int n_ctx = BATCH_PREFIX + n_gen + 1, rows = n > BATCH_PREFIX ? n : BATCH_PREFIX; /* rows per step at most */
    ng_state *work = ng_state_new(m, n_ctx, rows);
    ng_state **seqs = xmalloc((size_t)n * sizeof *seqs);
    int *n_tok = xmalloc((size_t)n * sizeof *n_tok), *toks = xmalloc((size_t)rows * sizeof *toks);
    float *logits = xmalloc((size_t)n * hp->n_vocab * sizeof *logits);
    ng_error err;
    for (int i = 0; i < n; i++) {
        seqs[i] = ng_state_new(m, n_ctx, 0);
        n_tok[i] = BATCH_PREFIX;
        for (int j = 0; j < BATCH_PREFIX; j++) toks[j] = (i * 131 + j * 7919 + 13) % hp->n_vocab;
        if (ng_forward_multi(m, work, &seqs[i], &n_tok[i], 1, toks, logits, &err)) ng_die("bench: %s", err.msg);
        n_tok[i] = 1;
    }
    double t0 = ng_time();
    for (int g = 0; g < n_gen; g++) {
        for (int i = 0; i < n; i++) toks[i] = (i * 31 + g * 7 + 5) % hp->n_vocab;
        if (ng_forward_multi(m, work, seqs, n_tok, n, toks, logits, &err)) ng_die("bench: %s", err.msg);
    }
    double tps = (double)n * n_gen / (ng_time() - t0);
    for (int i = 0; i < n; i++) ng_state_free(seqs[i]);
    free(seqs), free(n_tok), free(toks), free(logits);
    ng_state_free(work);
    return tps;
}

/* --profile: one more prefill and decode of n_gen tokens, timing the decode's parts. */
static void profile_decode(const ng_model *m, ng_state *s, const int *toks, int n_prompt, int n_gen, float *logits,
                           bench_row *r) {
    ng_error err;
    ng_profile p = {0, 0};
    ng_state_reset(s);
    if (ng_forward(m, s, toks, n_prompt, logits, 0, &err)) ng_die("bench: %s", err.msg);
    ng_profile_set(&p);
    double t0 = ng_time();
    for (int i = 0; i < n_gen; i++)
        if (ng_forward(m, s, &toks[n_prompt + i], 1, logits, 0, &err)) ng_die("bench: %s", err.msg);
    r->step_s = (ng_time() - t0) / n_gen;
    ng_profile_set(NULL);
    r->matmul_s = p.matmul / n_gen, r->attention_s = p.attention / n_gen;
    r->rest_s = r->step_s - r->matmul_s - r->attention_s;
    r->matmul_gbs = r->weight_bytes / r->matmul_s / 1e9, r->attention_gbs = r->kv_bytes / r->attention_s / 1e9;
}

static void run_one(const bench_model *bm, const ng_hparams *hp, ng_type t, int n_prompt, int n_gen, int use_mmap,
                    int batch, int profile, double peak, bench_row *r) {
    ng_log("  %-15s %-5s making weights...", bm->name, ng_type_name(t));
    double t0 = ng_time();
    ng_model *m = ng_model_random(hp, t, 42);
    ng_log(" %.1f s;", ng_time() - t0);
    r->weight_bytes = (double)ng_model_weight_bytes(m);
    if (use_mmap) { /* through a file: what users run */
        char path[256];
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof path, "%s/netgpt-bench-%d.gguf", dir, (int)getpid());
        ng_error err;
        if (ng_model_save_gguf(m, path, t, &err)) ng_die("bench: %s", err.msg);
        ng_model_free(m);
        if (!(m = ng_model_load(path, &err))) ng_die("bench: %s", err.msg);
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        r->file_mb = (double)ftell(f) / 1e6;
        fclose(f);
        unlink(path); /* the mapping keeps the data until the model is freed */
        ng_log(" written and mapped (%.0f MB);", r->file_mb);
    }
    r->max_diff = validate(m);
    ng_log(" validated (max diff %.2g);", r->max_diff);
    int n_ctx = n_prompt + n_gen + 1 < hp->n_ctx ? n_prompt + n_gen + 1 : hp->n_ctx;
    ng_state *s = ng_state_new(m, n_ctx, n_prompt);
    int *toks = xmalloc((size_t)(n_prompt + n_gen) * sizeof *toks);
    for (int i = 0; i < n_prompt + n_gen; i++) toks[i] = (i * 7919 + 13) % hp->n_vocab;
    float *logits = xmalloc((size_t)hp->n_vocab * sizeof *logits);
    ng_error err;
    double best = 1e30, dt = 1e30, flops = forward_flops(hp, n_prompt, 0);
    int reps = flops > 2e12 ? 1 : 3;
    double *steps = xmalloc((size_t)n_gen * sizeof *steps), step = 1e30;
    /* Each repetition prefills the prompt and then decodes n_gen tokens after it, each step
     * timed; the read bandwidth is measured before the first and after each. The decode figure
     * is the fastest run's median step (other work only ever slows a run down): the bandwidth
     * is the best of its passes, and a shared machine stalls now and then (on one 2-core VM, a
     * step in 10-20 took 1.5-3x the others, and a bandwidth probe between steps read 15-40 GB/s
     * instead of 65), so a mean would judge those stalls against a measurement that excludes
     * them. That run is judged by the higher of the two measurements around it: the bandwidth
     * also moves from minute to minute (42 to 85 GB/s within an hour there), so a floor from
     * another moment of the run would judge the decode by a machine it did not run on, and the
     * lower of the two would flatter it. The fastest run's mean (tokens over its time) is
     * reported beside it. */
    ng_log(" bandwidth...");
    double bw_prev = ng_measure_read_bandwidth(ng_threads());
    for (int rep = 0; rep < reps; rep++) {
        ng_log(" prefill...");
        ng_state_reset(s);
        double t1 = ng_time();
        if (ng_forward(m, s, toks, n_prompt, logits, 0, &err)) ng_die("bench: %s", err.msg);
        best = fmin(best, ng_time() - t1);
        ng_log(" decode...");
        t1 = ng_time();
        for (int i = 0; i < n_gen; i++) {
            double ts = ng_time();
            if (ng_forward(m, s, &toks[n_prompt + i], 1, logits, 0, &err)) ng_die("bench: %s", err.msg);
            steps[i] = ng_time() - ts;
        }
        dt = fmin(dt, ng_time() - t1);
        double bw_next = ng_measure_read_bandwidth(ng_threads());
        ng_sort_doubles(steps, (size_t)n_gen);
        double med = n_gen % 2 ? steps[n_gen / 2] : (steps[n_gen / 2 - 1] + steps[n_gen / 2]) / 2;
        if (med < step) step = med, r->floor_bw = fmax(bw_prev, bw_next);
        bw_prev = bw_next;
    }
    /* A short prefill is run again, up to PREFILL_RUNS in all and about a second more: on a
     * shared 2-core VM the best of 3 GPT-2 124M prefills (128 tokens, ~30 ms each) moved by
     * 10-15% from one bench run to the next (q8_0 35.1% and 46.4% of the peak within minutes) */
    double spent = 0;
    for (int rep = reps; rep < PREFILL_RUNS && spent < 1.0; rep++) {
        ng_state_reset(s);
        double t1 = ng_time();
        if (ng_forward(m, s, toks, n_prompt, logits, 0, &err)) ng_die("bench: %s", err.msg);
        double d = ng_time() - t1;
        spent += d;
        best = fmin(best, d);
    }
    r->prefill_tps = n_prompt / best;
    r->prefill_gflops = flops / best / 1e9;
    r->prefill_peak_pct = 100.0 * r->prefill_gflops * 1e9 / peak;
    r->decode_tps = 1 / step;
    r->decode_mean_tps = n_gen / dt;
    double kv_bytes = 2.0 * hp->n_layer * ng_kv_dim(hp) * (double)ng_type_size(s->kv_type) *
                      (n_prompt + n_gen / 2.0); /* mean cache read */
    r->decode_floor_pct = 100.0 * ((r->weight_bytes + kv_bytes) / r->floor_bw) / step;
    r->kv_bytes = kv_bytes;
    if (use_mmap) r->rss_mb = current_rss_mb();
    if (profile) {
        ng_log(" profile...");
        profile_decode(m, s, toks, n_prompt, n_gen, logits, r);
    }
    if (batch) {
        ng_log(" batch of 1 and %d...", batch);
        r->batch1_tps = batch_decode(m, 1, n_gen);
        r->batchn_tps = batch_decode(m, batch, n_gen);
    }
    ng_log(" done\n");
    free(logits);
    free(toks);
    free(steps);
    ng_state_free(s);
    ng_model_free(m);
}

int cmd_bench(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "serve")) return serve_bench_main(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "train")) return bench_train_main(argc - 1, argv + 1);
    cli_opts o;
    cli_opts_init(&o);
    const char *types = "f32,f16,bf16,q8_0,q4_0", *model = "gpt2-124m";
    int n_gen = 0, n_prompt = 0, layers = 0, use_mmap = 0, batch = 0, profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            fprintf(stderr, "netgpt bench: models are made in place; choose their shape with --shape\n");
            return 2;
        }
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "--types")) types = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--shape")) model = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--n-gen")) n_gen = (int)cli_long(a, cli_value(argc, argv, &i), 1, 4096);
        else if (!strcmp(a, "--n-prompt")) n_prompt = (int)cli_long(a, cli_value(argc, argv, &i), 1, 2048);
        else if (!strcmp(a, "--layers")) layers = (int)cli_long(a, cli_value(argc, argv, &i), 1, 128);
        else if (!strcmp(a, "--mmap")) use_mmap = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (!strcmp(a, "--batch")) batch = (int)cli_long(a, cli_value(argc, argv, &i), 2, 256);
        else cli_positional(&o, a, "bench");
    }
    ng_type list[8];
    int n_types = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", types);
    for (char *tk = strtok(buf, ","); tk; tk = strtok(NULL, ",")) {
        int t = ng_type_parse(tk);
        if (t < 0 || !ng_type_can_quant((ng_type)t)) {
            fprintf(stderr,
                    "netgpt bench: --types: '%s' is not one of f32, f16, bf16, q8_0, q6_k, q4_k, q4_0\n", tk);
            return 2;
        }
        if (n_types < 8) list[n_types++] = (ng_type)t;
    }
    int which[N_MODELS], n_models = 0;
    for (int i = 0; i < N_MODELS; i++)
        if (!strcmp(model, "all") || !strcmp(model, MODELS[i].name)) which[n_models++] = i;
    if (!n_models) {
        fprintf(stderr, "netgpt bench: --shape '%s' is not one of gpt2-124m, tinyllama-1.1b, llama-7b, all\n", model);
        return 2;
    }
    ng_set_threads(o.threads);
    int threads = ng_threads();
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    ng_log("netgpt bench: %d threads, kernels: %s%s\n", threads, ng_kernel_path(),
           ng_kernel_avx_vnni() ? " with AVX-VNNI" : "");
    ng_log("measuring memory-read bandwidth and f32 FMA peak...\n");
    double bw = ng_measure_read_bandwidth(threads), peak = ng_measure_peak_flops(threads);
    double peak_bf16 = ng_kernel_bf16_dot() ? ng_measure_peak_bf16_flops(threads) : 0;
    double peak_int8 = ng_measure_peak_int8_ops(threads);
    ng_log("  read bandwidth %.1f GB/s, f32 peak %.1f GFLOP/s", bw / 1e9, peak / 1e9);
    if (peak_bf16 > 0) ng_log(", bf16 dot peak %.1f GFLOP/s", peak_bf16 / 1e9);
    if (peak_int8 > 0) ng_log(", int8 dot peak %.1f GOP/s", peak_int8 / 1e9);
    ng_log("\n");

    bench_row rows[N_MODELS * 8];
    int n_rows = 0;
    for (int mi = 0; mi < n_models; mi++) {
        const bench_model *bm = &MODELS[which[mi]];
        ng_hparams hp = bm->hp;
        if (layers) hp.n_layer = layers;
        int ng = n_gen ? n_gen : bm->n_gen, np = n_prompt ? n_prompt : bm->n_prompt;
        for (int ti = 0; ti < n_types; ti++) {
            bench_row *r = &rows[n_rows++];
            memset(r, 0, sizeof *r);
            r->model = bm->name, r->type = list[ti], r->n_gen = ng, r->n_prompt = np;
            /* weights: the matrices at this type + the embedding, with room for activations */
            double params = (double)hp.n_layer * (4.0 * hp.n_embd * hp.n_embd + 3.0 * hp.n_embd * hp.n_ff) +
                            2.0 * hp.n_embd * hp.n_vocab;
            double need = params * (double)ng_type_size(list[ti]) / ng_type_block(list[ti]);
            if (need > 0.7 * ram) {
                ng_log("  %-15s %-5s skipped: needs %.1f GB of %.1f GB memory\n", bm->name, ng_type_name(list[ti]),
                       need / 1e9, ram / 1e9);
                r->skipped = 1;
                continue;
            }
            /* bf16 prefill runs on vdpbf16ps where it can, the quantized types on integer
             * kernels where the path has them for the prompt's rows (the int8 GEMM: q8_0 / q4_0
             * with AVX-512 VNNI or AVX-VNNI, q6_k / q4_k with AVX-512 VNNI; the integer GEMV: q4_0
             * and kernel-order q8_0 on the AVX2 path): judged by that instruction's peak */
            int on_bf16 = list[ti] == NG_BF16 && peak_bf16 > 0;
            ng_type wt = use_mmap ? list[ti] : ng_matmul_native(list[ti]);
            int on_int8 = ng_type_block(list[ti]) > 1 && peak_int8 > 0 && ng_kernel_int8_rows(wt, np);
            r->peak_kind = on_bf16 ? "bf16" : on_int8 ? "int8" : "f32";
            run_one(bm, &hp, list[ti], np, ng, use_mmap, batch, profile,
                    on_bf16 ? peak_bf16 : on_int8 ? peak_int8 : peak, r);
        }
    }
    double rss = (double)ng_peak_rss();
    if (o.json) {
        printf("{\"threads\":%d,\"kernels\":\"%s\",\"avx_vnni\":%s,\"kv_type\":\"%s\","
               "\"read_bandwidth_gbs\":%.2f,\"peak_gflops\":%.1f,\"peak_bf16_gflops\":%.1f,"
               "\"peak_int8_gops\":%.1f,\"peak_rss_mb\":%.1f,\"results\":[",
               threads, ng_kernel_path(), ng_kernel_avx_vnni() ? "true" : "false", ng_type_name(ng_kv_type()),
               bw / 1e9, peak / 1e9, peak_bf16 / 1e9, peak_int8 / 1e9, rss / 1e6);
        int first = 1;
        for (int i = 0; i < n_rows; i++) {
            const bench_row *r = &rows[i];
            if (r->skipped) continue;
            printf("%s{\"model\":\"%s\",\"type\":\"%s\",\"weight_mb\":%.1f,\"n_gen\":%d,\"n_prompt\":%d,"
                   "\"decode_tok_s\":%.2f,\"decode_mean_tok_s\":%.2f,\"decode_pct_of_bandwidth_floor\":%.1f,"
                   "\"floor_bandwidth_gbs\":%.2f,"
                   "\"prefill_tok_s\":%.1f,"
                   "\"prefill_gflops\":%.1f,\"prefill_pct_of_peak\":%.1f,\"prefill_peak\":\"%s\"",
                   first ? "" : ",", r->model, ng_type_name(r->type), r->weight_bytes / 1e6, r->n_gen,
                   r->n_prompt, r->decode_tps, r->decode_mean_tps, r->decode_floor_pct, r->floor_bw / 1e9,
                   r->prefill_tps, r->prefill_gflops, r->prefill_peak_pct, r->peak_kind);
            if (use_mmap) printf(",\"file_mb\":%.1f,\"rss_mb\":%.1f", r->file_mb, r->rss_mb);
            if (batch)
                printf(",\"batch\":%d,\"batch1_tok_s\":%.2f,\"batch_tok_s\":%.2f,\"batch_speedup\":%.2f", batch,
                       r->batch1_tps, r->batchn_tps, r->batchn_tps / r->batch1_tps);
            if (profile)
                printf(",\"profile\":{\"step_ms\":%.4f,\"matmul_ms\":%.4f,\"attention_ms\":%.4f,\"other_ms\":%.4f,"
                       "\"matmul_read_gbs\":%.2f,\"attention_read_gbs\":%.2f}",
                       r->step_s * 1e3, r->matmul_s * 1e3, r->attention_s * 1e3, r->rest_s * 1e3, r->matmul_gbs,
                       r->attention_gbs);
            printf("}");
            first = 0;
        }
        printf("]}\n");
    } else {
        printf("\nmachine: read bandwidth %.1f GB/s, f32 FMA peak %.1f GFLOP/s", bw / 1e9, peak / 1e9);
        if (peak_bf16 > 0) printf(", bf16 dot peak %.1f GFLOP/s", peak_bf16 / 1e9);
        if (peak_int8 > 0) printf(", int8 dot peak %.1f GOP/s", peak_int8 / 1e9);
        printf(", %d threads, kernels %s%s, %s KV cache\n", threads, ng_kernel_path(),
               ng_kernel_avx_vnni() ? " with AVX-VNNI" : "", ng_type_name(ng_kv_type()));
        char bh[64] = "";
        if (batch) snprintf(bh, sizeof bh, "  batch 1 tok/s  batch %-3d tok/s  speedup", batch);
        printf("%-15s %-5s %10s %12s %14s %8s %10s %13s %15s %10s%s%s\n", "model", "type", "weights",
               "decode tok/s", "% of bw floor", "at GB/s", "mean tok/s", "prefill tok/s", "prefill GFLOP/s",
               "% of peak", use_mmap ? "   file MB    RSS MB" : "", bh);
        for (int i = 0; i < n_rows; i++) {
            const bench_row *r = &rows[i];
            if (r->skipped) continue;
            printf("%-15s %-5s %7.0f MB %12.2f %13.1f%% %8.1f %10.2f %13.1f %15.1f %9.1f%%", r->model,
                   ng_type_name(r->type), r->weight_bytes / 1e6, r->decode_tps, r->decode_floor_pct,
                   r->floor_bw / 1e9, r->decode_mean_tps, r->prefill_tps, r->prefill_gflops,
                   r->prefill_peak_pct);
            if (use_mmap) printf(" %9.0f %9.0f", r->file_mb, r->rss_mb);
            if (batch) printf(" %14.2f %15.2f %7.2fx", r->batch1_tps, r->batchn_tps, r->batchn_tps / r->batch1_tps);
            printf("\n");
        }
        printf(
            "(decode tok/s: the fastest run's median step, judged by the higher bandwidth measured around\n"
            " it; mean tok/s: the fastest run's tokens over its time, the machine's stalls included)\n");
        if (profile) {
            printf("\ndecode step, in parts (--profile: one more run of the decode test):\n");
            printf("%-15s %-5s %8s %21s %19s %15s %11s %15s\n", "model", "type", "step ms", "matrix products ms",
                   "weights read GB/s", "attention ms", "KV GB/s", "the rest ms");
            for (int i = 0; i < n_rows; i++) {
                const bench_row *r = &rows[i];
                if (r->skipped) continue;
                printf("%-15s %-5s %8.3f %12.3f (%4.1f%%) %9.1f (%5.1f%%) %7.3f (%4.1f%%) %11.1f %7.3f (%4.1f%%)\n",
                       r->model, ng_type_name(r->type), r->step_s * 1e3, r->matmul_s * 1e3,
                       100 * r->matmul_s / r->step_s, r->matmul_gbs, 100 * r->matmul_gbs * 1e9 / r->floor_bw,
                       r->attention_s * 1e3, 100 * r->attention_s / r->step_s, r->attention_gbs, r->rest_s * 1e3,
                       100 * r->rest_s / r->step_s);
            }
            printf("(weights read GB/s: the weights' bytes over the matrix products' time, and as a share of the\n"
                   "bandwidth the floor was judged by; KV GB/s: the cached keys and values read per step, on\n"
                   "average, over attention's time)\n");
        }
        footnote(rows, n_rows, "bf16", "(bf16 prefill runs on %s: %% of the bf16 dot peak, %.1f GFLOP/s)\n",
                 "AVX512-BF16", peak_bf16);
        const char *on = strcmp(ng_kernel_path(), "avx2") ? "AVX-512 VNNI"
                         : ng_kernel_avx_vnni()             ? "AVX-VNNI (256 bits)"
                                                            : "vpmaddubsw + vpmaddwd";
        footnote(rows, n_rows, "int8",
                 "(quantized prefill runs on %s: %% of the int8 dot peak, %.1f GOP/s; its GOP/s\n"
                 " count the model's multiply-adds as 2 operations, as for the float types)\n",
                 on, peak_int8);
        printf("peak RSS %.1f MB\n", rss / 1e6);
    }
    return 0;
}
