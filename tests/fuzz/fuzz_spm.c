/* fuzz_spm — libFuzzer harness for the LLaMA SentencePiece tokenizer (src/tokenizer/spm.c):
 * encodes arbitrary bytes with the committed LLaMA 32k vocabulary
 * (tests/testdata/llama-vocab/tokenizer.gguf) and aborts unless every id is in range and
 * decoding gives back exactly the input, with each "▁" (U+2581) read as the space it shares a
 * piece with. Invalid UTF-8 included: byte fallback makes every byte string round-trip. The
 * first input byte picks the options (BOS, dummy-prefix space). Owner: tokenizer.
 *
 * `make fuzz` builds and runs it from the repository root (with all of src/); by hand:
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       -o build/fuzz/fuzz_spm tests/fuzz/fuzz_spm.c src/tokenizer/spm.c src/formats/gguf.c \
 *       src/core/util.c src/core/dtype.c -lcjson -lm
 *   ./build/fuzz/fuzz_spm -max_total_time=60 -max_len=8192 build/fuzz/corpus-fuzz_spm
 */
#include "formats/gguf.h"
#include "tokenizer/spm.h"

#include <stdlib.h>
#include <string.h>

static gguf_ctx *g_gguf;
static spm *g_spm;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ng_error err = {{0}};
    g_gguf = gguf_open("tests/testdata/llama-vocab/tokenizer.gguf", &err);
    if (g_gguf) g_spm = spm_from_gguf(g_gguf, &err);
    if (!g_spm) {
        fprintf(stderr, "fuzz_spm: %s (run from the repository root)\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size == 0) return 0;
    int add_bos = data[0] & 1, add_space = (data[0] >> 1) & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    int n;
    int *ids = spm_encode(g_spm, text, len, add_bos, add_space, &n);
    if (!ids || n < 0 || (size_t)n > 3 * len + 2) abort();
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= spm_n_vocab(g_spm)) abort();
    }
    size_t back_len = 0;
    ng_error err = {{0}};
    char *back = spm_decode(g_spm, ids, n, add_space, &back_len, &err);
    if (!back) abort();
    /* the input with "▁" as " " */
    char *want = malloc(len + 1);
    size_t m = 0;
    for (size_t i = 0; i < len;) {
        if (len - i >= 3 && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            want[m++] = ' ';
            i += 3;
        } else {
            want[m++] = text[i++];
        }
    }
    if (back_len != m || (m && memcmp(back, want, m) != 0)) abort();
    free(want);
    free(back);
    free(ids);
    return 0;
}
