#include "cli/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "model/lora.h"

void cli_opts_init(cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1; /* not given: each command picks its default */
    o->sp = ng_sampler_defaults();
}

static void usage_error(const char *fmt, const char *a, const char *b) {
    fputs("netgpt: ", stderr);
    fprintf(stderr, fmt, a, b);
    fputs("\n", stderr);
    exit(2);
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) usage_error("option %s needs a value%s", argv[*i], "");
    return argv[++*i];
}

long cli_long(const char *flag, const char *s, long min, long max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "netgpt: %s: '%s' is not an integer in [%ld, %ld]\n", flag, s, min, max);
        exit(2);
    }
    return v;
}

double cli_double(const char *flag, const char *s, double min, double max) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "netgpt: %s: '%s' is not a number in [%g, %g]\n", flag, s, min, max);
        exit(2);
    }
    return v;
}

int cli_common_flag(int argc, char **argv, int *i, cli_opts *o) {
    const char *a = argv[*i];
#define IS(x) (strcmp(a, x) == 0)
    if (IS("-m") || IS("--model")) o->model = cli_value(argc, argv, i);
    else if (IS("-p") || IS("--prompt")) o->prompt = cli_value(argc, argv, i);
    else if (IS("-n") || IS("--n-predict")) o->n_predict = (int)cli_long(a, cli_value(argc, argv, i), 0, 1 << 24);
    else if (IS("-t") || IS("--threads")) o->threads = (int)cli_long(a, cli_value(argc, argv, i), 0, 1024);
    else if (IS("--ctx")) o->ctx = (int)cli_long(a, cli_value(argc, argv, i), 0, 1 << 24);
    else if (IS("--temp")) o->sp.temp = (float)cli_double(a, cli_value(argc, argv, i), 0, 100);
    else if (IS("--top-k")) o->sp.top_k = (int)cli_long(a, cli_value(argc, argv, i), 0, 1 << 24);
    else if (IS("--top-p")) o->sp.top_p = (float)cli_double(a, cli_value(argc, argv, i), 0, 1);
    else if (IS("--min-p")) o->sp.min_p = (float)cli_double(a, cli_value(argc, argv, i), 0, 1);
    else if (IS("--repeat-penalty")) o->sp.repeat_penalty = (float)cli_double(a, cli_value(argc, argv, i), 0.01, 100);
    else if (IS("--repeat-last-n")) o->sp.repeat_last_n = (int)cli_long(a, cli_value(argc, argv, i), 0, 1 << 20);
    else if (IS("--seed")) o->sp.seed = (uint64_t)cli_long(a, cli_value(argc, argv, i), 0, 0x7fffffffffffffffL), o->seed_set = 1;
    else if (IS("--json")) o->json = 1;
    else if (IS("--no-mmap")) ng_model_set_mmap(0);
    else if (IS("--no-bf16-dot")) ng_kernel_set_bf16_dot(0);
    else if (IS("--no-int8-gemm")) ng_kernel_set_int8_gemm(0);
    else if (IS("--bf16-attention"))
        ng_kernel_set_bf16_attention(1);
    else if (IS("--no-avx-vnni")) ng_kernel_set_avx_vnni(0);
    else if (IS("--kernels")) {
        const char *v = cli_value(argc, argv, i);
        if (ng_kernel_set_path(v) != 0)
            usage_error("--kernels: '%s' is not avx512, avx2 or portable, or this CPU cannot run it%s", v, "");
    }
    else if (IS("--kv-type")) {
        const char *v = cli_value(argc, argv, i);
        int t = ng_type_parse(v);
        if (t < 0 || ng_set_kv_type((ng_type)t) != 0) usage_error("--kv-type: '%s' is not f32 or f16%s", v, "");
    }
    else if (IS("--lora")) {
        if (o->n_lora == (int)(sizeof o->lora / sizeof o->lora[0])) usage_error("too many --lora adapters%s%s", "", "");
        o->lora[o->n_lora++] = cli_value(argc, argv, i);
    }
    else if (IS("-v") || IS("--verbose")) ng_verbose = 2;
    else if (IS("-q") || IS("--quiet")) ng_verbose = 0;
    else return 0;
#undef IS
    return 1;
}

void cli_positional(cli_opts *o, const char *arg, const char *cmd) {
    if (arg[0] == '-' && arg[1] != 0) usage_error("%s: unknown option '%s' (see --help)", cmd, arg);
    if (o->n_pos == (int)(sizeof o->pos / sizeof o->pos[0])) usage_error("%s: too many arguments%s", cmd, "");
    o->pos[o->n_pos++] = arg;
}

ng_model *cli_load_model(const cli_opts *o) {
    ng_set_threads(o->threads);
    if (!o->model) {
        fprintf(stderr, "netgpt: no model given (-m MODEL.gguf or a Hugging Face model folder)\n");
        exit(2);
    }
    ng_error err;
    double t0 = ng_time();
    ng_model *m = ng_model_load(o->model, &err);
    if (!m) ng_die("%s", err.msg);
    ng_debug("loaded %s in %.2f s\n", o->model, ng_time() - t0);
    return m;
}

ng_lora *cli_load_lora(const cli_opts *o, const ng_model *m) {
    if (o->n_lora == 0) return NULL;
    ng_lora *list[8];
    ng_error err;
    for (int i = 0; i < o->n_lora; i++) {
        char *path;
        float scale;
        if (ng_lora_parse_arg(o->lora[i], &path, &scale, &err)) ng_die("%s", err.msg);
        if (!(list[i] = ng_lora_load(m, path, scale, &err))) ng_die("%s", err.msg);
        ng_debug("adapter %s (scale %g, rank up to %d)\n", path, scale, list[i]->rank_max);
        free(path);
    }
    if (o->n_lora == 1) return list[0];
    ng_lora *c = ng_lora_combine(list, o->n_lora);
    for (int i = 0; i < o->n_lora; i++) ng_lora_free(list[i]);
    if (!c) ng_die("the --lora adapters together exceed rank %d", NG_LORA_MAX_RANK);
    return c;
}
