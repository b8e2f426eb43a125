/* netgpt convert — write a model (Hugging Face folder or GGUF) as GGUF with a chosen type. */
#include <string.h>

#include "cli/cli.h"

static const char HELP[] =
    "usage: netgpt convert -m MODEL -o OUT.gguf [--type TYPE]\n"
    "       netgpt convert MODEL OUT.gguf [--type TYPE]\n"
    "       netgpt convert --from llama2c CHECKPOINT.bin [--tokenizer TOKENIZER.bin] -o OUT.gguf\n"
    "\n"
    "Writes MODEL (a Hugging Face folder with config.json + model.safetensors[.index.json], a\n"
    "GGUF file, or a llama2.c checkpoint) as GGUF v3 with llama.cpp's tensor names and metadata,\n"
    "tokenizer included.\n"
    "\n"
    "  -o, --out PATH    output file\n"
    "  --from FORMAT     the input's format when it cannot be told from the path: llama2c\n"
    "  --tokenizer PATH  llama2.c tokenizer.bin to include (with --from llama2c)\n"
    "      --type TYPE   type of the weight matrices: f32, f16 (default), bf16; norms and\n"
    "                    biases stay f32\n";

int cmd_convert(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *out = NULL, *type = "f16", *from = NULL, *tokenizer = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--type") || !strcmp(a, "--outtype")) type = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--from")) from = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--tokenizer")) tokenizer = cli_value(argc, argv, &i);
        else cli_positional(&o, a, "convert");
    }
    if (!o.model && o.n_pos > 0) o.model = o.pos[0];
    if (!out && o.n_pos > (o.model == o.pos[0] ? 1 : 0)) out = o.pos[o.n_pos - 1];
    if (!o.model || !out) {
        fputs(HELP, stderr);
        return 2;
    }
    int t = ng_type_parse(type);
    if (t != NG_F32 && t != NG_F16 && t != NG_BF16) {
        fprintf(stderr, "netgpt convert: --type '%s' is not one of f32, f16, bf16\n", type);
        return 2;
    }
    if (from && strcmp(from, "llama2c") != 0) {
        fprintf(stderr, "netgpt convert: --from '%s' is not a known format (llama2c)\n", from);
        return 2;
    }
    double t0 = ng_time();
    ng_error err;
    ng_model *m;
    if (from) {
        if (!(m = ng_model_load_llama2c(o.model, tokenizer, &err))) ng_die("%s", err.msg);
    } else {
        m = cli_load_model(&o);
    }
    if (ng_model_save_gguf(m, out, (ng_type)t, &err)) ng_die("%s", err.msg);
    ng_log("wrote %s (%s, %d layers, n_embd %d, vocab %d%s) in %.2f s\n", out, ng_type_name((ng_type)t),
           m->hp.n_layer, m->hp.n_embd, m->hp.n_vocab, m->tok ? ", with tokenizer" : ", no tokenizer",
           ng_time() - t0);
    ng_model_free(m);
    return 0;
}
