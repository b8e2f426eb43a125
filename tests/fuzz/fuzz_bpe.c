/* fuzz_bpe — libFuzzer harness for the GPT-2 BPE tokenizer (src/tokenizer/bpe.c): encodes
 * arbitrary bytes with the real GPT-2 vocabulary and aborts unless every id is in range and
 * decoding gives back exactly the input bytes. Owner: tokenizer.
 *
 * Build and run from the repository root (it loads tests/testdata/gpt2/):
 *   mkdir -p build tests/fuzz/corpus-bpe
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp -Isrc \
 *       -o build/fuzz_bpe tests/fuzz/fuzz_bpe.c src/tokenizer/bpe.c src/core/util.c -lcjson -lm
 *   ./build/fuzz_bpe -max_total_time=60 -max_len=4096 tests/fuzz/corpus-bpe
 */
#include "tokenizer/bpe.h"

#include <stdlib.h>
#include <string.h>

static bpe *g_bpe;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ng_error err = {{0}};
    g_bpe = bpe_load_files("tests/testdata/gpt2/encoder.json", "tests/testdata/gpt2/vocab.bpe", &err);
    if (!g_bpe) {
        fprintf(stderr, "fuzz_bpe: %s (run from the repository root)\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    int n;
    int *ids = bpe_encode(g_bpe, (const char *)data, size, &n);
    if (n < 0 || (size_t)n > size) abort(); /* every token holds at least one byte */
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= bpe_n_vocab(g_bpe)) abort();
    }
    size_t len = 0;
    ng_error err = {{0}};
    char *back = bpe_decode(g_bpe, ids, n, &len, &err);
    if (!back || len != size || (size && memcmp(back, data, size) != 0)) abort();
    free(back);
    free(ids);
    return 0;
}
