/* LoRA adapters at inference against the reference (tools/reference/make_lora_fixtures.py:
 * base + alpha/r * B A merged in float64): applied at run time, merged into the weights,
 * combined, mixed with the base model in one batch, and rejected when they do not fit. */
#include "test.h"

#include "model/lora.h"
#include "model/model.h"

static const char *MODELS[] = {"gpt2-tiny-a", "llama-tiny-a"};

static float *read_f32(const char *path, size_t *n) {
    ng_error err;
    size_t nb;
    float *d = (float *)ng_read_file(path, &nb, &err);
    *n = nb / 4;
    return d;
}

/* logits of the 64 reference tokens with adapter l (NULL: base) */
static float *logits_with(const ng_model *m, const ng_lora *l, const char *name) {
    char p[256];
    snprintf(p, sizeof p, "tests/testdata/%s/tokens.i32", name);
    size_t n;
    int *toks = (int *)read_f32(p, &n);
    if (!toks) return NULL;
    ng_state *s = ng_state_new(m, 0, 64);
    s->lora = l;
    float *out = xmalloc(n * (size_t)m->hp.n_vocab * sizeof *out);
    ng_error err;
    int rc = ng_forward(m, s, toks, (int)n, out, 1, &err);
    ng_state_free(s);
    free(toks);
    if (rc) free(out);
    return rc ? NULL : out;
}

static void test_runtime_and_merged(void) {
    for (int i = 0; i < 2; i++) {
        char mp[256], lp[256], rp[256];
        snprintf(mp, sizeof mp, "tests/testdata/%s", MODELS[i]);
        snprintf(lp, sizeof lp, "tests/testdata/lora/%s", MODELS[i]);
        snprintf(rp, sizeof rp, "tests/testdata/lora/%s/logits_lora.f32", MODELS[i]);
        ng_error err;
        ng_model *m = ng_model_load(mp, &err);
        REQUIRE(m, "%s", err.msg);
        ng_lora *l = ng_lora_load(m, lp, 1.0f, &err);
        REQUIRE(l, "%s", err.msg);
        size_t nr;
        float *ref = read_f32(rp, &nr), *got = logits_with(m, l, MODELS[i]), *base = logits_with(m, NULL, MODELS[i]);
        REQUIRE(ref && got && base && nr == 64 * (size_t)m->hp.n_vocab, "fixtures");
        double d = t_max_abs_diff(got, ref, nr), moved = t_max_abs_diff(base, ref, nr);
        CHECK(d <= 1e-4, "%s: run-time adapter vs reference: %g", MODELS[i], d);
        CHECK(moved > 0.1, "%s: the adapter should change the logits (moved %g)", MODELS[i], moved);

        /* two halves combined = the whole */
        ng_lora *h1 = ng_lora_load(m, lp, 0.5f, &err), *h2 = ng_lora_load(m, lp, 0.5f, &err);
        REQUIRE(h1 && h2, "%s", err.msg);
        ng_lora *list[2] = {h1, h2}, *both = ng_lora_combine(list, 2);
        float *comb = logits_with(m, both, MODELS[i]);
        CHECK(comb && t_max_abs_diff(comb, ref, nr) <= 1e-4, "%s: combined halves", MODELS[i]);
        free(comb);

        REQUIRE(ng_lora_merge(m, l, &err) == NG_OK, "%s", err.msg);
        float *merged = logits_with(m, NULL, MODELS[i]);
        CHECK(merged && t_max_abs_diff(merged, ref, nr) <= 1e-4, "%s: merged vs reference", MODELS[i]);
        CHECK(merged && t_max_abs_diff(merged, got, nr) <= 1e-4, "%s: merged vs run time", MODELS[i]);
        free(merged);
        free(ref), free(got), free(base);
        ng_lora_free(both), ng_lora_free(h1), ng_lora_free(h2), ng_lora_free(l);
        ng_model_free(m);
    }
}

/* Rows with the adapter and rows without, in one batch: each as when run alone. */
static void test_mixed_batch(void) {
    ng_error err;
    ng_model *m = ng_model_load("tests/testdata/llama-tiny-a", &err);
    REQUIRE(m, "%s", err.msg);
    ng_lora *l = ng_lora_load(m, "tests/testdata/lora/llama-tiny-a", 1.0f, &err);
    REQUIRE(l, "%s", err.msg);
    int V = m->hp.n_vocab, toks[12];
    for (int i = 0; i < 12; i++) toks[i] = (i * 29 + 3) % V;
    ng_state *work = ng_state_new(m, 0, 16), *a = ng_state_new(m, 0, 0), *b = ng_state_new(m, 0, 0);
    a->lora = l;
    ng_state *seqs[2] = {a, b};
    int n_tok[2] = {6, 6};
    float *got = xmalloc(2 * (size_t)V * sizeof *got), *want = xmalloc((size_t)V * sizeof *want);
    REQUIRE(ng_forward_multi(m, work, seqs, n_tok, 2, toks, got, &err) == NG_OK, "%s", err.msg);
    const ng_lora *which[2] = {l, NULL};
    for (int i = 0; i < 2; i++) {
        ng_state *s = ng_state_new(m, 0, 8);
        s->lora = which[i];
        REQUIRE(ng_forward(m, s, toks + 6 * i, 6, want, 0, &err) == NG_OK, "%s", err.msg);
        CHECK(t_max_abs_diff(got + (size_t)i * V, want, (size_t)V) <= 1e-5, "row group %d differs", i);
        ng_state_free(s);
    }
    free(got), free(want);
    ng_state_free(work), ng_state_free(a), ng_state_free(b);
    ng_lora_free(l);
    ng_model_free(m);
}

static void test_errors(void) {
    ng_error err = {{0}};
    ng_model *g = ng_model_load("tests/testdata/gpt2-tiny-b", &err);
    REQUIRE(g, "%s", err.msg);
    /* an adapter made for another model: shapes do not fit */
    ng_lora *l = ng_lora_load(g, "tests/testdata/lora/gpt2-tiny-a", 1.0f, &err);
    CHECK(!l && strstr(err.msg, "do not fit"), "wrong model: %s", err.msg);
    l = ng_lora_load(g, "tests/testdata/lora/llama-tiny-a", 1.0f, &err);
    CHECK(!l && strstr(err.msg, "not a LoRA matrix"), "wrong architecture: %s", err.msg);
    l = ng_lora_load(g, "tests/testdata/no-such-adapter", 1.0f, &err);
    CHECK(!l && strstr(err.msg, "no-such-adapter"), "missing: %s", err.msg);
    l = ng_lora_load(g, "tests/testdata/gpt2-tiny-a/llamacpp-f16.gguf", 1.0f, &err);
    CHECK(!l && strstr(err.msg, "not a LoRA adapter"), "a model is not an adapter: %s", err.msg);
    ng_model_free(g);
    char *path;
    float scale;
    CHECK(ng_lora_parse_arg("dir/adapter:0.5", &path, &scale, &err) == NG_OK && !strcmp(path, "dir/adapter") &&
              scale == 0.5f,
          "PATH:SCALE");
    free(path);
    CHECK(ng_lora_parse_arg("dir/a:b", &path, &scale, &err) == NG_OK && !strcmp(path, "dir/a:b") && scale == 1.0f,
          "a colon that is not a scale");
    free(path);
}

int main(void) {
    RUN(test_runtime_and_merged);
    RUN(test_mixed_batch);
    RUN(test_errors);
    TEST_EXIT();
}
