/* fuzz_lora — libFuzzer harness for the PEFT adapter loader (ng_lora_load on a folder): the
 * adapter is tests/testdata/lora/gpt2-tiny-a plus the row deltas of 4 trainable tokens (written
 * once into build/fuzz/lora-adapter), and the input decides its adapter_config.json: taken as
 * it is when it starts with '{', else built from the bytes (byte 0: the form of
 * trainable_token_indices — absent, null, a list, {"wte": list}, {"wte", "lm_head"}, two lists
 * for one matrix, a string; byte 1: r; byte 2: rsLoRA; then one token id per two bytes, some of
 * them out of range, repeated, negative or not integers), so the fuzzer reaches the loader's
 * checks without having to find JSON first. An empty input is the config that fits. The model
 * is tests/testdata/gpt2-tiny-a.
 * Aborts when a rejection gives no message, or when an accepted adapter's token rows are not
 * ascending ids inside the vocabulary or applying them (embedding, head) misbehaves.
 * Owner: model.
 *
 * Build and run from the repository root (make fuzz does the same for every harness):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp -Isrc \
 *       -o build/fuzz/fuzz_lora tests/fuzz/fuzz_lora.c LIB_SRC -lcjson -lm  (LIB_SRC: src/ less src/cli/)
 *   ./build/fuzz/fuzz_lora -max_total_time=60 -max_len=8192 build/fuzz/corpus-fuzz_lora
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"
#include "model/lora.h"
#include "model/model.h"

#define DIR "build/fuzz/lora-adapter"
#define N_TOK 4

static const char FITS[] = "{\"r\": 4, \"lora_alpha\": 8, \"peft_type\": \"LORA\", "
                           "\"trainable_token_indices\": {\"wte\": [1, 5, 9, 13]}}";

/* The committed adapter's tensors and a (N_TOK, n_embd) token delta, as one safetensors file. */
static int write_adapter(const ng_model *m) {
    ng_error err;
    st_file *src = st_open("tests/testdata/lora/gpt2-tiny-a/adapter_model.safetensors", &err);
    if (!src) return -1;
    int n = st_n_tensors(src);
    ng_tensor *ts = calloc((size_t)n + 1, sizeof *ts);
    for (int i = 0; i < n; i++) ts[i] = *st_tensor(src, i);
    float *delta = malloc((size_t)N_TOK * m->hp.n_embd * sizeof *delta);
    for (int i = 0; i < N_TOK * m->hp.n_embd; i++) delta[i] = (float)((i * 37) % 17 - 8) / 64.0f;
    ng_tensor *d = &ts[n];
    d->name = "base_model.model.transformer.wte.token_adapter.trainable_tokens_delta";
    d->type = NG_F32;
    d->n_dims = 2;
    d->ne[0] = m->hp.n_embd, d->ne[1] = N_TOK, d->ne[2] = d->ne[3] = 1;
    d->data = delta;
    d->nbytes = (size_t)N_TOK * m->hp.n_embd * sizeof(float);
    mkdir("build", 0755), mkdir("build/fuzz", 0755), mkdir(DIR, 0755);
    int rc = st_write(DIR "/adapter_model.safetensors", ts, n + 1, NULL, 0, &err);
    free(delta), free(ts);
    st_close(src);
    return rc;
}

/* A JSON list of the ids the bytes give (two per id): mostly small, some out of range, some
 * negative, some not integers. */
static void write_ids(FILE *f, const unsigned char *p, size_t n) {
    fputc('[', f);
    for (size_t i = 0; i + 1 < n; i += 2) {
        int v = p[i] | p[i + 1] << 8;
        if (i) fputc(',', f);
        if (v % 97 == 0) fprintf(f, "%d.5", v % 300);
        else if (v % 89 == 0) fprintf(f, "%d", -v);
        else fprintf(f, "%d", v % 2 ? v : v % 24);
    }
    fputc(']', f);
}

static void write_config(FILE *f, const unsigned char *d, size_t size) {
    int form = d[0] % 8, r = size > 1 ? d[1] % 9 : 4, rs = size > 2 && d[2] % 2;
    const unsigned char *ids = d + (size > 3 ? 3 : size);
    size_t n = size > 3 ? size - 3 : 0;
    fprintf(f, "{\"r\": %d, \"lora_alpha\": 8, \"use_rslora\": %s", r, rs ? "true" : "false");
    if (form == 1) fputs(", \"trainable_token_indices\": null", f);
    if (form == 2) fputs(", \"trainable_token_indices\": ", f), write_ids(f, ids, n);
    if (form == 3) fputs(", \"trainable_token_indices\": {\"wte\": ", f), write_ids(f, ids, n), fputc('}', f);
    if (form == 4 || form == 5) {
        fprintf(f, ", \"trainable_token_indices\": {\"%s\": ", form == 4 ? "lm_head" : "transformer.wte");
        write_ids(f, ids, n / 2);
        fputs(", \"wte\": ", f);
        write_ids(f, ids + n / 2, n - n / 2);
        fputc('}', f);
    }
    if (form == 6) fputs(", \"trainable_token_indices\": \"wte\"", f);
    fputc('}', f);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static ng_model *m;
    ng_error err;
    if (!m) {
        if (!(m = ng_model_load("tests/testdata/gpt2-tiny-a", &err)) || write_adapter(m) != NG_OK) abort();
    }
    FILE *f = fopen(DIR "/adapter_config.json", "wb");
    if (!f) abort();
    if (!size) fputs(FITS, f);
    else if (data[0] == '{') fwrite(data, 1, size, f);
    else write_config(f, data, size);
    fclose(f);
    ng_lora *lo = ng_lora_load(m, DIR, 1.0f, &err);
    if (!lo) {
        if (!err.msg[0]) abort();
        return 0;
    }
    for (int i = 0; i < lo->n_tok; i++)
        if (lo->tok_ids[i] < 0 || lo->tok_ids[i] >= m->hp.n_vocab || (i && lo->tok_ids[i] <= lo->tok_ids[i - 1]))
            abort();
    if (lo->n_tok && (!lo->tok_embd || lo->tok_out != lo->tok_embd || lo->n_embd != m->hp.n_embd)) abort();
    float *x = calloc((size_t)m->hp.n_embd, sizeof *x), *logits = calloc((size_t)m->hp.n_vocab, sizeof *logits);
    for (int i = 0; i < lo->n_tok; i++) ng_lora_embed(lo, x, lo->tok_ids[i]);
    ng_lora_head(lo, logits, x);
    free(x), free(logits);
    ng_lora_free(lo);
    return 0;
}
