/* bench_train — `netgpt bench train` (see bench_train.h). */
#include "cli/bench_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/kernels.h"
#include "train/train.h"

static const char HELP[] =
    "usage: netgpt bench train [--layers N] [--only a|b] [--json] [-t N]\n"
    "\n"
    "  (a) GPT-2 124M shape (random weights), full fine-tuning at B=4, T=64: forward time, full\n"
    "      step time (forward, backward, AdamW) and their ratio (a good trainer is close to 3x)\n"
    "  (b) LLaMA-7B shape (4096 wide, 11008 FFN, 32 heads, 32000 vocabulary), LoRA rank 8 on q,v\n"
    "      over a frozen q4_0 base (f16 when this build has no q4_0 matmul), B=1, T=256: one step,\n"
    "      peak RSS and the memory by part\n"
    "\n"
    "      --layers N   use N layers instead of 12 / 32 (quick runs)\n"
    "      --only a|b   run one of the two\n"
    "      --json       one JSON object on stdout\n"
    "  -t, --threads N  threads (default: all cores)\n";

typedef struct {
    int ok;
    double fwd_s, step_s, loss, grad_norm, peak_rss;
    double mem_base, mem_params, mem_grads, mem_adam, mem_acts, mem_logits;
    size_t n_params;
    const char *wtype;
    int layers;
} result;

static double median3(double a, double b, double c) {
    return a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
}

/* One model, one config: validate (finite loss, non-zero gradient norm), then time. */
static result run_case(const ng_hparams *hp, ng_type wt, const train_config *cfg, int timed_forwards) {
    result r = {0};
    r.wtype = ng_type_name(wt);
    r.layers = hp->n_layer;
    ng_model *m = ng_model_random(hp, wt, 1);
    ng_error err = {{0}};
    train_model *tm = train_new(m, cfg, &err);
    if (!tm) {
        fprintf(stderr, "bench train: %s\n", err.msg);
        ng_model_free(m);
        return r;
    }
    int B = cfg->max_B, T = cfg->max_T, N = B * T;
    int *tok = xmalloc((size_t)N * sizeof *tok), *tgt = xmalloc((size_t)N * sizeof *tgt);
    for (int i = 0; i < N; i++) tok[i] = (int)((i * 7919u + 13) % (unsigned)hp->n_vocab), tgt[i] = (int)((i * 104729u + 5) % (unsigned)hp->n_vocab);
    train_batch b = {B, T, tok, tgt, NULL};
    adamw_config oc = adamw_defaults(100);
    adamw *opt = adamw_new(&oc, tm->n_params);
    /* validation */
    train_zero_grad(tm);
    r.loss = train_forward(tm, &b, &err);
    train_backward(tm, 1.0f);
    r.grad_norm = train_clip_grad(tm, 0);
    r.ok = isfinite(r.loss) && isfinite(r.grad_norm) && r.grad_norm > 0;
    if (!r.ok) fprintf(stderr, "bench train: invalid result (loss %g, gradient norm %g); not timed\n", r.loss, r.grad_norm);
    if (r.ok) {
        double t[3] = {0, 0, 0};
        for (int i = 0; i < timed_forwards && i < 3; i++) {
            double t0 = ng_time();
            train_forward(tm, &b, &err);
            t[i] = ng_time() - t0;
        }
        r.fwd_s = timed_forwards >= 3 ? median3(t[0], t[1], t[2]) : t[0];
        for (int i = 0; i < timed_forwards && i < 3; i++) {
            double t0 = ng_time();
            float l = train_step(tm, opt, &b, 1, &err);
            t[i] = ng_time() - t0;
            if (!isfinite(l)) r.ok = 0;
        }
        r.step_s = timed_forwards >= 3 ? median3(t[0], t[1], t[2]) : t[0];
    }
    r.n_params = tm->n_params;
    r.mem_base = cfg->lora ? (double)ng_model_weight_bytes(m) : (double)tm->n_params * 4;
    r.mem_params = (double)tm->n_params * 4;
    r.mem_grads = (double)tm->n_params * 4;
    r.mem_adam = (double)tm->n_params * 8;
    r.mem_logits = (double)N * hp->n_vocab * 4;
    r.mem_acts = (double)tm->n_mem * 4 - r.mem_logits;
    r.peak_rss = (double)ng_peak_rss();
    adamw_free(opt);
    free(tok), free(tgt);
    train_free(tm);
    ng_model_free(m);
    return r;
}

int bench_train_main(int argc, char **argv) {
    int layers = 0, json = 0, threads = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (!strcmp(a, "--layers")) layers = (int)cli_long(a, cli_value(argc, argv, &i), 1, 256);
        else if (!strcmp(a, "--only")) only = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) threads = (int)cli_long(a, cli_value(argc, argv, &i), 0, 1024);
        else {
            fprintf(stderr, "netgpt bench train: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (only && strcmp(only, "a") && strcmp(only, "b")) ng_die("--only '%s': a or b", only);
    ng_set_threads(threads);
    result ra = {0}, rb = {0};
    int run_a = !only || !strcmp(only, "a"), run_b = !only || !strcmp(only, "b");
    if (run_a) {
        ng_hparams hp = {NG_ARCH_GPT2, 50257, 1024, 768, 12, 12, layers ? layers : 12, 3072, 1e-5f, 10000.0f, 1.0f};
        train_config cfg = {.max_B = 4, .max_T = 64, .seed = 1};
        ng_log("bench train (a): GPT-2 124M shape, %d layers, full fine-tuning, B=4 T=64, %d threads\n", hp.n_layer,
               ng_threads());
        ra = run_case(&hp, NG_F32, &cfg, 3);
    }
    if (run_b) {
        ng_type wt = ng_matmul_supported(NG_Q4_0) ? NG_Q4_0 : NG_F16;
        ng_hparams hp = {NG_ARCH_LLAMA, 32000, 4096, 4096, 32, 32, layers ? layers : 32, 11008, 1e-5f, 10000.0f, 1.0f};
        train_config cfg = {.lora = 1, .lora_rank = 8, .lora_alpha = 16, .lora_targets = LORA_Q | LORA_V, .max_B = 1,
                            .max_T = 256, .seed = 1};
        ng_log("bench train (b): LLaMA-7B shape, %d layers, LoRA r=8 q,v on a %s base, B=1 T=256, %d threads\n",
               hp.n_layer, ng_type_name(wt), ng_threads());
        rb = run_case(&hp, wt, &cfg, 1);
    }
    const double GB = 1e9;
    if (json) {
        printf("{\"threads\":%d", ng_threads());
        if (run_a)
            printf(",\"a\":{\"valid\":%s,\"layers\":%d,\"loss\":%.4f,\"forward_s\":%.4f,\"step_s\":%.4f,\"ratio\":%.3f,"
                   "\"tokens_per_s\":%.1f}",
                   ra.ok ? "true" : "false", ra.layers, ra.loss, ra.fwd_s, ra.step_s, ra.fwd_s > 0 ? ra.step_s / ra.fwd_s : 0,
                   ra.step_s > 0 ? 256 / ra.step_s : 0);
        if (run_b)
            printf(",\"b\":{\"valid\":%s,\"layers\":%d,\"base_type\":\"%s\",\"loss\":%.4f,\"step_s\":%.3f,"
                   "\"peak_rss_bytes\":%.0f,\"base_bytes\":%.0f,\"lora_param_bytes\":%.0f,\"lora_grad_bytes\":%.0f,"
                   "\"adamw_bytes\":%.0f,\"activation_bytes\":%.0f,\"logits_bytes\":%.0f}",
                   rb.ok ? "true" : "false", rb.layers, rb.wtype, rb.loss, rb.step_s, rb.peak_rss, rb.mem_base, rb.mem_params,
                   rb.mem_grads, rb.mem_adam, rb.mem_acts, rb.mem_logits);
        printf("}\n");
    } else {
        if (run_a)
            printf("(a) GPT-2 124M shape (%d layers), full FT, B=4 T=64: forward %.3f s, step %.3f s, step/forward %.2fx "
                   "(ideal ~3x), %.0f tok/s%s\n",
                   ra.layers, ra.fwd_s, ra.step_s, ra.fwd_s > 0 ? ra.step_s / ra.fwd_s : 0, ra.step_s > 0 ? 256 / ra.step_s : 0,
                   ra.ok ? "" : "  INVALID");
        if (run_b)
            printf("(b) LLaMA-7B shape (%d layers), LoRA r=8 on %s, B=1 T=256: step %.2f s, peak RSS %.2f GB%s\n"
                   "    base weights %.2f GB | LoRA params %.1f MB + grads %.1f MB + AdamW moments %.1f MB | "
                   "activations %.2f GB | logits %.1f MB\n",
                   rb.layers, rb.wtype, rb.step_s, rb.peak_rss / GB, rb.ok ? "" : "  INVALID", rb.mem_base / GB,
                   rb.mem_params / 1e6, rb.mem_grads / 1e6, rb.mem_adam / 1e6, rb.mem_acts / GB, rb.mem_logits / 1e6);
    }
    return (!run_a || ra.ok) && (!run_b || rb.ok) ? 0 : 1;
}
