/* fuzz_safetensors — libFuzzer harness for the safetensors reader (st_open_mem on the raw
 * input). Accepted files must be safe to use: every tensor byte and metadata value is read.
 *
 * Build and run from the repository root (clang 14):
 *   mkdir -p build/fuzz/st_corpus build/fuzz/st_seeds
 *   NG_TEST_KEEP=build/fuzz/st_seeds ./build/t_st >/dev/null   # valid seed files from the tests
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -Isrc -o build/fuzz/fuzz_safetensors tests/fuzz/fuzz_safetensors.c src/formats/safetensors.c \
 *       src/core/util.c src/core/dtype.c -lcjson -lm
 *   ./build/fuzz/fuzz_safetensors -max_total_time=60 -max_len=8192 build/fuzz/st_corpus build/fuzz/st_seeds
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ng_error err;
    st_file *f = st_open_mem(data, size, "fuzz", &err);
    if (!f) {
        if (!err.msg[0]) __builtin_trap(); /* a rejection must say why */
        return 0;
    }
    volatile uint64_t sink = 0;
    for (int i = 0; i < st_n_tensors(f); i++) {
        const ng_tensor *t = st_tensor(f, i);
        if (st_find(f, t->name) != i) __builtin_trap();
        if (ng_tensor_nelem(t) < 0) __builtin_trap();
        const uint8_t *p = t->data;
        for (size_t j = 0; j < t->nbytes; j++) sink += p[j];
    }
    const char *m = st_metadata(f, "format");
    if (m) sink += strlen(m);
    st_close(f);
    (void)sink;
    return 0;
}
