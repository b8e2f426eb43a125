/* test_adapter — LoRA adapters trained by train.c, saved as PEFT and as GGUF LoRA (adapter.c),
 * loaded back by the inference loader (ng_lora_load) and merged (ng_lora_merge): each must give
 * the logits of train_export_model's merged model. Covers GPT-2's fused c_attn (per-slice q/v
 * adapters stacked into one) and LLaMA's q/k RoPE row permutation with grouped-query heads,
 * and trainable tokens (row deltas of the embedding and head: tied in GPT-2, two in LLaMA). */
#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "core/kernels.h"
#include "model/lora.h"
#include "model/model.h"
#include "test.h"
#include "train/adapter.h"
#include "train/train.h"

#define T_LEN 12

/* A few steps of LoRA on random tokens with a large learning rate, so that every B is far
 * from its zero start. */
static train_model *train_a_little(const ng_model *m, unsigned targets, const int *tok_ids, int n_tok_ids,
                                   adamw **opt, float *first, float *last) {
    train_config cfg = {.lora = 1, .lora_rank = 4, .lora_alpha = 8, .lora_targets = targets, .max_B = 2,
                        .max_T = T_LEN, .seed = 7, .tok_ids = tok_ids, .n_tok_ids = n_tok_ids};
    ng_error err = {{0}};
    train_model *tm = train_new(m, &cfg, &err);
    if (!tm) return NULL;
    adamw_config oc = adamw_defaults(6);
    oc.lr = 2e-2f;
    *opt = adamw_new(&oc, tm->n_params);
    int tok[2 * T_LEN], tgt[2 * T_LEN];
    for (int i = 0; i < 2 * T_LEN; i++) tok[i] = (i * 37 + 11) % m->hp.n_vocab, tgt[i] = (i * 53 + 5) % m->hp.n_vocab;
    train_batch b = {2, T_LEN, tok, tgt, NULL};
    for (int s = 0; s < 6; s++) {
        float l = train_step(tm, *opt, &b, 1, &err);
        if (s == 0) *first = l;
        *last = l;
    }
    return tm;
}

/* All logits of a fixed prompt through m (with adapter lo, or none). */
static float *logits_of(const ng_model *m, const ng_lora *lo) {
    int n = T_LEN, ids[T_LEN];
    for (int i = 0; i < n; i++) ids[i] = (i * 29 + 3) % m->hp.n_vocab;
    ng_state *s = ng_state_new(m, n, n);
    s->lora = lo;
    float *out = xmalloc((size_t)n * m->hp.n_vocab * sizeof *out);
    ng_error err = {{0}};
    if (ng_forward(m, s, ids, n, out, 1, &err)) {
        fprintf(stderr, "forward: %s\n", err.msg);
        free(out);
        out = NULL;
    }
    ng_state_free(s);
    return out;
}

/* with_tokens: also train the rows of every third token id below 3 * T_LEN (some in the
 * training batch, some in the prompt logits_of runs, most neither) */
static void check_model(const char *model_dir, unsigned targets, int with_tokens, const char *tag) {
    ng_error err = {{0}};
    ng_model *m = ng_model_load(model_dir, &err);
    REQUIRE(m, "%s", err.msg);
    adamw *opt = NULL;
    float first = 0, last = 0;
    int ids[T_LEN], n_ids = with_tokens ? T_LEN : 0;
    for (int i = 0; i < T_LEN; i++) ids[i] = 3 * i + 2;
    train_model *tm = train_a_little(m, targets, ids, n_ids, &opt, &first, &last);
    REQUIRE(tm, "train_new failed");
    CHECK(isfinite(last) && last < first, "%s: loss %g -> %g", tag, first, last);
    ng_model *merged = train_export_model(tm);
    size_t nl = (size_t)T_LEN * m->hp.n_vocab;
    float *want = logits_of(merged, NULL), *base = logits_of(m, NULL);
    REQUIRE(want && base, "forward failed");
    CHECK(t_max_abs_diff(want, base, nl) > 1e-3, "%s: the adapter changes nothing", tag);

    char dir[256], gg[256];
    mkdir("build", 0755), mkdir("build/tmp", 0755);
    snprintf(dir, sizeof dir, "build/tmp/adapter-%s", tag);
    snprintf(gg, sizeof gg, "build/tmp/adapter-%s.gguf", tag);
    mkdir(dir, 0755);
    CHECK(adapter_save_peft(tm, dir, model_dir, &err) == NG_OK, "%s", err.msg);
    CHECK(adapter_save_gguf(tm, gg, model_dir, &err) == NG_OK, "%s", err.msg);
    const char *paths[2] = {dir, gg};
    for (int i = 0; i < 2; i++) {
        ng_lora *lo = ng_lora_load(m, paths[i], 1.0f, &err);
        CHECK(lo, "%s: %s", paths[i], err.msg);
        if (!lo) continue;
        float *got = logits_of(m, lo);
        double d = got ? t_max_abs_diff(got, want, nl) : INFINITY;
        CHECK(d <= 1e-4, "%s: base + adapter vs merged export: max diff %g", paths[i], d);
        /* what `netgpt merge` does: bake the adapter into a freshly loaded base */
        ng_model *m2 = ng_model_load(model_dir, &err);
        CHECK(m2 && ng_lora_merge(m2, lo, &err) == NG_OK, "%s: merge: %s", paths[i], err.msg);
        float *mg = m2 ? logits_of(m2, NULL) : NULL;
        d = mg ? t_max_abs_diff(mg, want, nl) : INFINITY;
        CHECK(d <= 1e-4, "%s: merged adapter vs merged export: max diff %g", paths[i], d);
        free(mg), free(got);
        ng_model_free(m2);
        ng_lora_free(lo);
    }
    /* the config says what PEFT needs to rebuild the modules */
    char p[300];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    char *text = ng_read_file(p, NULL, &err);
    cJSON *c = text ? cJSON_Parse(text) : NULL;
    CHECK(c, "%s unreadable", p);
    if (c) {
        CHECK(cJSON_GetObjectItem(c, "r")->valueint == 4 && cJSON_GetObjectItem(c, "lora_alpha")->valuedouble == 8,
              "r / lora_alpha");
        CHECK(!strcmp(cJSON_GetObjectItem(c, "peft_type")->valuestring, "LORA") &&
                  !strcmp(cJSON_GetObjectItem(c, "task_type")->valuestring, "CAUSAL_LM"),
              "peft_type / task_type");
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(c, "fan_in_fan_out")) == (m->hp.arch == NG_ARCH_GPT2), "fan_in_fan_out");
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(c, "target_modules")) > 0, "target_modules");
        const cJSON *ti = cJSON_GetObjectItem(c, "trainable_token_indices");
        const cJSON *emb = cJSON_GetObjectItem(ti, m->hp.arch == NG_ARCH_GPT2 ? "wte" : "embed_tokens");
        CHECK(with_tokens ? cJSON_GetArraySize(emb) == n_ids && cJSON_GetArrayItem(emb, 1)->valueint == ids[1] : !ti,
              "%s: trainable_token_indices", tag);
        CHECK(!with_tokens || !cJSON_GetObjectItem(ti, "lm_head") == (m->output == m->tok_embd),
              "%s: an lm_head list exactly when the head is untied", tag);
    }
    if (with_tokens) { /* two adapters at half scale are the adapter at full scale, token rows too */
        ng_lora *h = ng_lora_load(m, gg, 0.5f, &err), *pair[2] = {h, h};
        ng_lora *both = h ? ng_lora_combine(pair, 2) : NULL;
        CHECK(both && both->n_tok == n_ids, "%s: combined adapter: %d token rows", tag, both ? both->n_tok : -1);
        float *got = both ? logits_of(m, both) : NULL;
        double d = got ? t_max_abs_diff(got, want, nl) : INFINITY;
        CHECK(d <= 1e-4, "%s: two half-scale adapters combined vs merged export: max diff %g", tag, d);
        free(got);
        ng_lora_free(both), ng_lora_free(h);
    }
    cJSON_Delete(c);
    free(text);
    free(want), free(base);
    ng_model_free(merged);
    adamw_free(opt);
    train_free(tm);
    ng_model_free(m);
}

/* GPT-2: q and v slices of the fused qkv (k untrained: zero rows in the stacked B), o, up, down */
static void test_gpt2_adapters(void) {
    check_model(TESTDATA("gpt2-tiny-a"), LORA_Q | LORA_V | LORA_O | LORA_UP | LORA_DOWN, 0, "gpt2");
}

/* trainable tokens: GPT-2's tied head moves with the embedding rows; LLaMA's head has its own */
static void test_gpt2_tokens(void) { check_model(TESTDATA("gpt2-tiny-a"), LORA_Q | LORA_V, 1, "gpt2-tokens"); }
static void test_llama_tokens(void) { check_model(TESTDATA("llama-tiny-a"), LORA_Q | LORA_V, 1, "llama-tokens"); }

/* GPT-2 with all three slices (rank 3r) */
static void test_gpt2_qkv_all(void) { check_model(TESTDATA("gpt2-tiny-a"), LORA_Q | LORA_K | LORA_V, 0, "gpt2-qkv"); }

/* LLaMA (8 heads, 4 KV heads): every target, q/k rows permuted back for PEFT */
static void test_llama_adapters(void) { check_model(TESTDATA("llama-tiny-a"), LORA_ALL, 0, "llama"); }

/* A PEFT adapter whose trainable_token_indices do not fit its deltas or the model is refused
 * with a message naming the problem. */
static void test_token_errors(void) {
    ng_error err = {{0}};
    ng_model *m = ng_model_load(TESTDATA("gpt2-tiny-a"), &err);
    REQUIRE(m, "%s", err.msg);
    int ids[4] = {1, 5, 9, 13};
    adamw *opt = NULL;
    float first = 0, last = 0;
    train_model *tm = train_a_little(m, LORA_Q, ids, 4, &opt, &first, &last);
    REQUIRE(tm, "train_new");
    const char *dir = "build/tmp/adapter-tokerr";
    mkdir("build", 0755), mkdir("build/tmp", 0755), mkdir(dir, 0755);
    REQUIRE(adapter_save_peft(tm, dir, "gpt2-tiny-a", &err) == NG_OK, "%s", err.msg);
    static const struct {
        const char *list, *want;
    } cases[] = {
        {"[1, 5, 9, 99999]", "outside the vocabulary"},
        {"[1, 5, 5, 13]", "listed twice"},
        {"[1, 5, 9]", "do not fit"},
        {"[1, 5, 9, \"x\"]", "not a token id"},
        {"{\"wte\": [1, 5, 9, 13], \"transformer.wte\": [1, 5, 9, 13]}", "two lists"},
        {"null", "without the list"},
        {"[1, 5, 9, 13]", NULL},
    };
    char path[300];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    char *orig = ng_read_file(path, NULL, &err);
    REQUIRE(orig, "%s", err.msg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *c = cJSON_Parse(orig);
        cJSON_ReplaceItemInObject(c, "trainable_token_indices", cJSON_Parse(cases[i].list));
        char *text = cJSON_Print(c);
        FILE *f = fopen(path, "w");
        REQUIRE(f, "%s", path);
        fputs(text, f);
        fclose(f);
        free(text);
        cJSON_Delete(c);
        ng_lora *lo = ng_lora_load(m, dir, 1.0f, &err);
        if (cases[i].want) CHECK(!lo && strstr(err.msg, cases[i].want), "%s: %s", cases[i].list, lo ? "loaded" : err.msg);
        else CHECK(lo && lo->n_tok == 4, "%s: %s", cases[i].list, lo ? "wrong rows" : err.msg);
        ng_lora_free(lo);
    }
    free(orig);
    adamw_free(opt);
    train_free(tm);
    ng_model_free(m);
}

/* Full fine-tuning has no adapters: saving one is an error, not an empty file. */
static void test_full_has_no_adapter(void) {
    ng_error err = {{0}};
    ng_model *m = ng_model_load(TESTDATA("gpt2-tiny-a"), &err);
    REQUIRE(m, "%s", err.msg);
    train_config cfg = {.max_B = 1, .max_T = 4, .seed = 1};
    train_model *tm = train_new(m, &cfg, &err);
    REQUIRE(tm, "%s", err.msg);
    CHECK(adapter_save_gguf(tm, "build/tmp/none.gguf", NULL, &err) == NG_ERR && strstr(err.msg, "full"), "%s", err.msg);
    train_free(tm);
    ng_model_free(m);
}

/* QLoRA: a q8_0 frozen base learns through its adapters; the saved adapter on the quantized
 * base matches the export (dequantized base + merged adapter) up to the kernels' rounding. */
static void test_qlora_q8_0(void) {
    if (!ng_matmul_supported(NG_Q8_0)) SKIP("q8_0 matmul kernels not available in this build");
    ng_hparams hp = {NG_ARCH_LLAMA, 256, 64, 64, 4, 2, 2, 128, 1e-5f, 10000.0f, 1.0f};
    ng_model *m = ng_model_random(&hp, NG_Q8_0, 3);
    REQUIRE(m, "ng_model_random q8_0");
    adamw *opt = NULL;
    float first = 0, last = 0;
    train_model *tm = train_a_little(m, LORA_Q | LORA_V, NULL, 0, &opt, &first, &last);
    REQUIRE(tm, "train_new on a q8_0 base");
    CHECK(isfinite(last) && last < first, "q8_0 LoRA loss %g -> %g", first, last);
    ng_error err = {{0}};
    mkdir("build/tmp/adapter-q8", 0755);
    CHECK(adapter_save_peft(tm, "build/tmp/adapter-q8", "random-q8_0", &err) == NG_OK, "%s", err.msg);
    ng_lora *lo = ng_lora_load(m, "build/tmp/adapter-q8", 1.0f, &err);
    CHECK(lo, "%s", err.msg);
    ng_model *merged = train_export_model(tm);
    float *want = logits_of(merged, NULL), *got = lo ? logits_of(m, lo) : NULL;
    double d = want && got ? t_max_abs_diff(got, want, (size_t)T_LEN * hp.n_vocab) : INFINITY;
    CHECK(d <= 5e-2, "q8_0 base + adapter vs dequantized merged export: max diff %g", d);
    free(want), free(got);
    ng_lora_free(lo);
    ng_model_free(merged);
    adamw_free(opt);
    train_free(tm);
    ng_model_free(m);
}

int main(void) {
    ng_set_threads(2);
    RUN(test_gpt2_adapters);
    RUN(test_gpt2_qkv_all);
    RUN(test_llama_adapters);
    RUN(test_gpt2_tokens);
    RUN(test_llama_tokens);
    RUN(test_token_errors);
    RUN(test_full_has_no_adapter);
    RUN(test_qlora_q8_0);
    TEST_EXIT();
}
