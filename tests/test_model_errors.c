/* Model files that are wrong in a way the format parser cannot see — a missing tensor, a
 * wrong shape, inconsistent hyperparameters, a bad config.json — are rejected with a message
 * that names the file and the problem, and nothing leaks or crashes. */
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

#include "model/model.h"

#define BASE "build/tmp/err-base.gguf"

/* Copies BASE to dst, leaving out tensor `skip`, replacing tensor `reshape`'s shape by a
 * transposed one, and setting key `key` (u32) to `value` when key is not NULL. */
static int rewrite(const char *dst, const char *skip, const char *reshape, const char *key, uint32_t value) {
    ng_error err;
    gguf_ctx *g = gguf_open(BASE, &err);
    if (!g) return fprintf(stderr, "%s\n", err.msg), NG_ERR;
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kv(w, g, NULL);
    if (key) gguf_set_u32(w, key, value);
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const ng_tensor *t = gguf_tensor(g, i);
        if (skip && !strcmp(t->name, skip)) continue;
        int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
        if (reshape && !strcmp(t->name, reshape)) ne[0] = t->ne[1], ne[1] = t->ne[0];
        gguf_add_tensor(w, t->name, t->type, t->n_dims, ne, t->data);
    }
    int rc = gguf_write(w, dst, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    gguf_writer_free(w);
    gguf_close(g);
    return rc;
}

static void expect_error(const char *path, const char *needle) {
    ng_error err = {{0}};
    ng_model *m = ng_model_load(path, &err);
    CHECK(m == NULL, "%s loaded", path);
    if (m) ng_model_free(m);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", path, err.msg, needle);
}

static void test_setup(void) {
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    ng_error err;
    ng_model *m = ng_model_load("tests/testdata/gpt2-tiny-a", &err);
    REQUIRE(m, "%s", err.msg);
    REQUIRE(ng_model_save_gguf(m, BASE, NG_F16, &err) == NG_OK, "%s", err.msg);
    ng_model_free(m);
}

static void test_gguf_defects(void) {
    REQUIRE(rewrite("build/tmp/err-missing.gguf", "blk.1.ffn_down.bias", NULL, NULL, 0) == NG_OK, "write");
    expect_error("build/tmp/err-missing.gguf", "missing tensor 'blk.1.ffn_down.bias'");
    REQUIRE(rewrite("build/tmp/err-shape.gguf", NULL, "blk.0.attn_qkv.weight", NULL, 0) == NG_OK, "write");
    expect_error("build/tmp/err-shape.gguf", "'blk.0.attn_qkv.weight' has shape");
    REQUIRE(rewrite("build/tmp/err-heads.gguf", NULL, NULL, "gpt2.attention.head_count", 5) == NG_OK, "write");
    expect_error("build/tmp/err-heads.gguf", "not a multiple of n_head");
    REQUIRE(rewrite("build/tmp/err-layers.gguf", NULL, NULL, "gpt2.block_count", 3) == NG_OK, "write");
    expect_error("build/tmp/err-layers.gguf", "missing tensor 'blk.2.");
    REQUIRE(rewrite("build/tmp/err-ctx.gguf", NULL, NULL, "gpt2.context_length", 4096) == NG_OK, "write");
    expect_error("build/tmp/err-ctx.gguf", "'position_embd.weight' has shape");
}

static void test_gguf_arch(void) {
    ng_error err;
    gguf_ctx *g = gguf_open(BASE, &err);
    REQUIRE(g, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kv(w, g, NULL);
    gguf_set_str(w, "general.architecture", "mamba");
    REQUIRE(gguf_write(w, "build/tmp/err-arch.gguf", &err) == NG_OK, "%s", err.msg);
    gguf_writer_free(w);
    gguf_close(g);
    expect_error("build/tmp/err-arch.gguf", "architecture 'mamba' is not supported");
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_hf_config_defects(void) {
    const char *d = "build/tmp/err-hf";
    mkdir(d, 0755);
    /* the weights of gpt2-tiny-a, linked in, with broken configs */
    unlink("build/tmp/err-hf/model.safetensors");
    REQUIRE(symlink("../../../tests/testdata/gpt2-tiny-a/model.safetensors", "build/tmp/err-hf/model.safetensors") == 0,
            "symlink");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64,");
    expect_error(d, "config.json: not a JSON object");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"bert\"}");
    expect_error(d, "model_type \"bert\" is not supported");
    write_text("build/tmp/err-hf/config.json",
               "{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_head\": 4, \"vocab_size\": 320, \"n_positions\": 96}");
    expect_error(d, "missing key \"n_embd\"");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": \"64\", \"n_layer\": 2, "
                                               "\"n_head\": 4, \"vocab_size\": 320, \"n_positions\": 96}");
    expect_error(d, "\"n_embd\" must be a non-negative integer");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 2, "
                                               "\"n_head\": 4, \"vocab_size\": 999, \"n_positions\": 96}");
    expect_error(d, "'token_embd.weight' has shape");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 2, "
                                               "\"n_head\": 4, \"vocab_size\": 320, \"n_positions\": 96, "
                                               "\"activation_function\": \"relu\"}");
    expect_error(d, "activation_function \"relu\"");
    write_text("build/tmp/err-hf/config.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64, \"n_layer\": 2, "
                                               "\"n_head\": 4, \"vocab_size\": 320, \"n_positions\": 96}");
    write_text("build/tmp/err-hf/vocab.json", "{\"a\": 0,");
    write_text("build/tmp/err-hf/merges.txt", "#version: 0.2\n");
    expect_error(d, "vocab.json");
    unlink("build/tmp/err-hf/vocab.json");
    unlink("build/tmp/err-hf/merges.txt");
    ng_error err;
    ng_model *m = ng_model_load(d, &err);
    CHECK(m != NULL, "valid config rejected: %s", err.msg);
    ng_model_free(m);
    expect_error("build/tmp/no-such-model", "no-such-model");
}

int main(void) {
    RUN(test_setup);
    RUN(test_gguf_defects);
    RUN(test_gguf_arch);
    RUN(test_hf_config_defects);
    TEST_EXIT();
}
