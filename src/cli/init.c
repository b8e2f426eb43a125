/* netgpt init — a new model with random weights, to be trained from scratch. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/kernels.h"

static const char HELP[] =
    "usage: netgpt init --arch gpt2|llama --tokenizer PATH [shape options] -o OUT.gguf\n"
    "\n"
    "Writes a model of the given shape with small random weights (uniform, deterministic from\n"
    "--seed) and the tokenizer of PATH, ready for `netgpt train --full`.\n"
    "\n"
    "  --arch A          gpt2 (LayerNorm, GELU, learned positions) or llama (RMSNorm, RoPE,\n"
    "                    SwiGLU)\n"
    "  --tokenizer PATH  GGUF file or Hugging Face folder whose tokenizer the model uses (its\n"
    "                    vocabulary size sets the model's)\n"
    "  --n-embd N        width (default 256)\n"
    "  --n-layer N       blocks (default 4)\n"
    "  --n-head N        attention heads (default 4)\n"
    "  --n-head-kv N     LLaMA: key/value heads (default: n-head)\n"
    "  --n-ff N          feed-forward width (default 4*n-embd for gpt2, 8/3*n-embd rounded\n"
    "                    to 32 for llama)\n"
    "  --ctx N           context length (default 512)\n"
    "  --seed S          (default 0)\n"
    "  --type T          f32 (default), f16, bf16\n";

int cmd_init(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *arch = NULL, *tok_path = NULL, *out = NULL, *type = "f32";
    ng_hparams hp = {.n_embd = 256, .n_layer = 4, .n_head = 4, .norm_eps = 1e-5f, .rope_theta = 10000,
                     .rope_scale = 1, .n_ctx = 512};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "--arch")) arch = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--tokenizer")) tok_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--type")) type = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--n-embd")) hp.n_embd = (int)cli_long(a, cli_value(argc, argv, &i), 8, 16384);
        else if (!strcmp(a, "--n-layer")) hp.n_layer = (int)cli_long(a, cli_value(argc, argv, &i), 1, 256);
        else if (!strcmp(a, "--n-head")) hp.n_head = (int)cli_long(a, cli_value(argc, argv, &i), 1, 256);
        else if (!strcmp(a, "--n-head-kv")) hp.n_head_kv = (int)cli_long(a, cli_value(argc, argv, &i), 1, 256);
        else if (!strcmp(a, "--n-ff")) hp.n_ff = (int)cli_long(a, cli_value(argc, argv, &i), 8, 65536);
        else cli_positional(&o, a, "init");
    }
    if (o.ctx) hp.n_ctx = o.ctx;
    if (!arch || !tok_path || !out) {
        fputs(HELP, stderr);
        return 2;
    }
    if (!strcmp(arch, "gpt2")) hp.arch = NG_ARCH_GPT2;
    else if (!strcmp(arch, "llama")) hp.arch = NG_ARCH_LLAMA;
    else ng_die("--arch '%s' is not gpt2 or llama", arch);
    int t = ng_type_parse(type);
    if (t != NG_F32 && t != NG_F16 && t != NG_BF16) ng_die("--type '%s' is not f32, f16 or bf16", type);
    if (hp.n_embd % hp.n_head) ng_die("--n-embd %d is not a multiple of --n-head %d", hp.n_embd, hp.n_head);
    if (!hp.n_head_kv || hp.arch == NG_ARCH_GPT2) hp.n_head_kv = hp.n_head;
    if (hp.n_head % hp.n_head_kv) ng_die("--n-head %d is not a multiple of --n-head-kv %d", hp.n_head, hp.n_head_kv);
    if (!hp.n_ff) hp.n_ff = hp.arch == NG_ARCH_GPT2 ? 4 * hp.n_embd : (8 * hp.n_embd / 3 + 31) / 32 * 32;
    ng_error err;
    ng_tokenizer *tok = tok_load(tok_path, &err);
    if (!tok) ng_die("%s", err.msg);
    hp.n_vocab = tok_n_vocab(tok);
    ng_set_threads(o.threads);
    ng_model *m = ng_model_random(&hp, (ng_type)t, o.sp.seed);
    m->tok = tok;
    free(m->name);
    const char *base = strrchr(out, '/');
    m->name = xstrdup(base ? base + 1 : out);
    if (ng_model_save_gguf(m, out, (ng_type)t, &err)) ng_die("%s", err.msg);
    ng_log("wrote %s: %s, %d layers, n_embd %d, %d heads (%d kv), n_ff %d, vocab %d, ctx %d, %.1f M weights in "
           "matrices\n",
           out, arch, hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.n_ff, hp.n_vocab, hp.n_ctx,
           (double)ng_model_weight_bytes(m) / ng_type_size((ng_type)t) / 1e6);
    ng_model_free(m);
    return 0;
}
