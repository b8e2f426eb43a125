/* netgpt merge — bake LoRA adapters into a base model and write it as GGUF. */
#include <string.h>

#include "cli/cli.h"
#include "model/lora.h"

static const char HELP[] =
    "usage: netgpt merge -m BASE --lora PATH[:SCALE] [--lora ...] -o OUT.gguf [--type TYPE]\n"
    "\n"
    "Adds each adapter's scaled B·A to the base model's matrices and writes the result, so\n"
    "the merged model computes what base + adapters compute at run time, with no run-time cost.\n"
    "\n"
    "  -m, --model PATH       base model (GGUF or Hugging Face folder)\n"
    "      --lora PATH[:SCALE] PEFT folder (adapter_config.json + adapter_model.safetensors) or\n"
    "                         GGUF LoRA; repeatable\n"
    "  -o, --out PATH         output GGUF\n"
    "      --type TYPE        matrix type of the output: f32, f16, bf16 (default: the base's)\n";

int cmd_merge(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *out = NULL, *type = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return fputs(HELP, stdout), 0;
        if (cli_common_flag(argc, argv, &i, &o)) continue;
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--type")) type = cli_value(argc, argv, &i);
        else cli_positional(&o, a, "merge");
    }
    if (!o.model || !out || o.n_lora == 0) {
        fputs(HELP, stderr);
        return 2;
    }
    int t = type ? ng_type_parse(type) : -1;
    if (type && t != NG_F32 && t != NG_F16 && t != NG_BF16) {
        fprintf(stderr, "netgpt merge: --type '%s' is not one of f32, f16, bf16\n", type);
        return 2;
    }
    ng_model *m = cli_load_model(&o);
    ng_lora *l = cli_load_lora(&o, m);
    ng_error err;
    if (ng_lora_merge(m, l, &err)) ng_die("%s", err.msg);
    ng_type wt = t >= 0 ? (ng_type)t : ng_model_wtype(m);
    if (ng_model_save_gguf(m, out, wt, &err)) ng_die("%s", err.msg);
    ng_log("wrote %s (%s, %d adapter%s merged)\n", out, ng_type_name(wt), o.n_lora, o.n_lora > 1 ? "s" : "");
    ng_lora_free(l);
    ng_model_free(m);
    return 0;
}
