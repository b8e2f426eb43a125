/* netgpt quantize — rewrite a GGUF model with its weight matrices in another type. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/quant.h"
#include "formats/gguf.h"

static const char HELP[] =
    "usage: netgpt quantize IN.gguf OUT.gguf TYPE\n"
    "\n"
    "Writes the model IN (a GGUF file or a Hugging Face model folder) as GGUF with its weight\n"
    "matrices in TYPE, tokenizer and metadata kept. Norms and biases stay f32; a matrix whose\n"
    "rows are not a whole number of TYPE's blocks (32 values, 256 for q6_k / q4_k) is written as\n"
    "f16 (as llama.cpp does).\n"
    "Input matrices of any type netgpt reads (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1,\n"
    "q4_k, q5_k, q6_k) are dequantized to f32 first, then converted.\n"
    "\n"
    "A GGUF LoRA adapter (general.type \"adapter\") is written the same way: each tensor whose\n"
    "rows are whole blocks in TYPE (A matrices, trainable-token rows), the others (B matrices of\n"
    "a rank below 32) in f16; --lora loads either.\n"
    "\n"
    "TYPE: q8_0  8-bit, 34 bytes per 32 weights (8.5 bits each), nearly lossless\n"
    "      q6_k  6-bit, 210 bytes per 256 weights (6.56 bits each): 16 int8 scales per block\n"
    "      q4_k  4-bit, 144 bytes per 256 weights (4.5 bits each): 8 sub-blocks, each with a\n"
    "            6-bit scale and minimum fitted by least squares; closer than q4_0 at the same size\n"
    "      q4_0  4-bit, 18 bytes per 32 weights (4.5 bits each)\n"
    "      q4_k_m  q4_k, with q6_k for the output head and for attn_v and ffn_down in the first\n"
    "            and last eighth of the layers and every third layer between (llama.cpp's\n"
    "            Q4_K_M recipe, in kind); an adapter is written as q4_k\n"
    "      f16, bf16, f32\n"
    "\n"
    "  -t, --threads N  threads (default: all cores)\n"
    "  -q, --quiet      no progress on stderr\n";

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
}

/* IN, a GGUF LoRA adapter, with its tensors in type t where their rows are whole blocks of it. */
static int quantize_adapter(gguf_ctx *g, const char *in, const char *out, ng_type t) {
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kv(w, g, NULL);
    int n = gguf_n_tensors(g);
    void **bufs = xcalloc((size_t)(n ? n : 1), sizeof *bufs);
    size_t before = 0, after = 0;
    for (int i = 0; i < n; i++) {
        const ng_tensor *x = gguf_tensor(g, i);
        int64_t rows = x->ne[1] * x->ne[2] * x->ne[3], cols = x->ne[0];
        /* rows that are not whole blocks of t: f16 when t is a block type and x is wider */
        ng_type to = cols % ng_type_block(t) == 0 ? t : ng_type_block(t) > 1 && x->type == NG_F32 ? NG_F16 : x->type;
        before += ng_row_size(x->type, cols) * (size_t)rows;
        if (to != x->type) bufs[i] = ng_convert_rows(x->data, x->type, to, cols, rows);
        after += ng_row_size(to, cols) * (size_t)rows;
        gguf_add_tensor(w, x->name, to, x->n_dims, x->ne, bufs[i] ? bufs[i] : x->data);
    }
    ng_error err;
    int rc = gguf_write(w, out, &err);
    gguf_writer_free(w);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    if (rc) ng_die("%s", err.msg);
    printf("%s -> %s (%s adapter): tensors %.2f MiB -> %.2f MiB\n", in, out, ng_type_name(t), before / 1048576.0,
           after / 1048576.0);
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        cli_positional(&o, a, "quantize");
    }
    if (o.n_pos != 3 || o.model) {
        fputs(HELP, stderr);
        return 2;
    }
    const char *in = o.pos[0], *out = o.pos[1], *type = o.pos[2];
    ng_mix mix = !strcmp(type, "q4_k_m") ? NG_MIX_K_M : NG_MIX_NONE;
    int t = mix == NG_MIX_K_M ? NG_Q4_K : ng_type_parse(type);
    if (t < 0 || !ng_type_can_quant((ng_type)t)) {
        fprintf(stderr,
                "netgpt quantize: type '%s' is not one of q8_0, q6_k, q4_k_m, q4_k, q4_0, f16, bf16, f32\n",
                type);
        return 2;
    }
    ng_error gerr;
    gguf_ctx *g = gguf_open(in, &gerr); /* an adapter is not a model: it has a path of its own */
    if (g) {
        const char *gt = gguf_get_str(g, "general.type");
        int rc = gt && !strcmp(gt, "adapter") ? quantize_adapter(g, in, out, (ng_type)t) : -1;
        gguf_close(g);
        if (rc >= 0) return rc;
    }
    o.model = in;
    double t0 = ng_time();
    ng_log("loading %s...\n", in);
    ng_model *m = cli_load_model(&o);
    size_t before = ng_model_weight_bytes(m);
    ng_log("%s: %d layers, n_embd %d, vocab %d, matrices %s, %.1f MiB of weights; writing %s as %s...\n", in,
           m->hp.n_layer, m->hp.n_embd, m->hp.n_vocab, ng_type_name(ng_model_wtype(m)), before / 1048576.0,
           out, type);
    ng_error err;
    if (ng_model_save_gguf_mix(m, out, (ng_type)t, mix, &err)) ng_die("%s", err.msg);
    ng_model_free(m);
    /* the summary reads the written file back, so it describes what a later load will see */
    ng_model *q = ng_model_load(out, &err);
    if (!q) ng_die("reading back %s: %s", out, err.msg);
    size_t after = ng_model_weight_bytes(q);
    long long fin = file_size(in), fout = file_size(out);
    ng_log("wrote %s in %.2f s\n", out, ng_time() - t0);
    printf("%s -> %s (%s): weights %.2f MiB -> %.2f MiB (%.1f%%)", in, out, type, before / 1048576.0,
           after / 1048576.0, before ? 100.0 * (double)after / (double)before : 0.0);
    if (fin >= 0 && fout >= 0) printf(", file %.2f MiB -> %.2f MiB", fin / 1048576.0, fout / 1048576.0);
    printf("\n");
    ng_model_free(q);
    return 0;
}
