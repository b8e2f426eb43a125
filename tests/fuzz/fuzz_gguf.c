/* fuzz_gguf — libFuzzer harness for the GGUF reader (gguf_open_mem on the raw input).
 * Accepted files must be safe to use: every getter is called and every tensor byte read.
 *
 * Build and run from the repository root (clang 14):
 *   mkdir -p build/fuzz/gguf_corpus build/fuzz/gguf_seeds
 *   NG_TEST_KEEP=build/fuzz/gguf_seeds ./build/t_gguf >/dev/null   # valid seed files from the tests
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -Isrc -o build/fuzz/fuzz_gguf tests/fuzz/fuzz_gguf.c src/formats/gguf.c src/core/util.c
 * src/core/dtype.c -lcjson -lm
 *   ./build/fuzz/fuzz_gguf -max_total_time=60 -max_len=8192 build/fuzz/gguf_corpus build/fuzz/gguf_seeds */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "formats/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ng_error err;
    gguf_ctx *g = gguf_open_mem(data, size, "fuzz", &err);
    if (!g) {
        if (!err.msg[0]) __builtin_trap(); /* a rejection must say why */
        return 0;
    }
    volatile uint64_t sink = 0;
    for (int i = 0; i < gguf_n_kv(g); i++) {
        const char *k = gguf_key(g, i);
        if (gguf_find_key(g, k) != i) __builtin_trap();
        uint32_t u;
        int64_t v;
        float f;
        int b;
        gguf_vtype t;
        uint64_t n = 0;
        sink += (uint64_t)gguf_get_u32(g, k, &u, &err) + (uint64_t)gguf_get_i64(g, k, &v, &err);
        sink += (uint64_t)gguf_get_f32(g, k, &f, &err) + (uint64_t)gguf_get_bool(g, k, &b, &err);
        sink += gguf_kv_type(g, i) + gguf_arr_type(g, i) + gguf_arr_n(g, i);
        const char *s = gguf_get_str(g, k);
        if (s) sink += strlen(s);
        const ng_str *ss = gguf_get_arr_str(g, k, &n);
        for (uint64_t j = 0; ss && j < n; j++) sink += ss[j].n ? (uint8_t)ss[j].s[ss[j].n - 1] : 0;
        const uint8_t *d = gguf_get_arr_data(g, k, &t, &n);
        if (d && n) sink += d[0];
        if (gguf_get_scalar(g, k, &t)) sink++;
    }
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const ng_tensor *t = gguf_tensor(g, i);
        if (gguf_find_tensor(g, t->name) != i) __builtin_trap();
        const uint8_t *p = t->data;
        for (size_t j = 0; j < t->nbytes; j++) sink += p[j];
    }
    gguf_close(g);
    (void)sink;
    return 0;
}
