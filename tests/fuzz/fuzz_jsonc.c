/* fuzz_jsonc — libFuzzer harness for JSON-constrained decoding (src/sample/jsonc.c): feeds
 * arbitrary bytes, in chunks whose sizes the input picks, to a recognizer for a fixed schema and
 * aborts unless jsonc_try agrees with jsonc_feed, a refused chunk leaves the state as it was,
 * and every complete document parses with cJSON and passes jsonc_validate. Owner: jsonc.
 *
 * Build and run from the repository root (make fuzz does the same for every harness):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp -Isrc \
 *       -o build/fuzz/fuzz_jsonc tests/fuzz/fuzz_jsonc.c LIB_SRC -lcjson -lm  (LIB_SRC: src/ less src/cli/)
 *   ./build/fuzz/fuzz_jsonc -max_total_time=60 -max_len=8192 build/fuzz/corpus-fuzz_jsonc
 */
#include "sample/jsonc.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char *const schema =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":6},\"n\":{\"type\":\"integer\"},"
    "\"x\":{\"type\":[\"number\",\"null\"]},\"e\":{\"enum\":[\"a\",1,12,[true],{\"k\":null}]},"
    "\"l\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1,\"maxItems\":3},"
    "\"o\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"}},\"required\":[\"a\"]},\"any\":{}},"
    "\"required\":[\"name\",\"n\"],\"additionalProperties\":false}";

static jsonc *g_proto, *g_any;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    ng_error err = {{0}};
    g_proto = jsonc_new(schema, &err);
    g_any = jsonc_new(NULL, &err);
    if (!g_proto || !g_any) {
        fprintf(stderr, "fuzz_jsonc: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    jsonc *c = jsonc_clone(data[0] & 1 ? g_any : g_proto);
    unsigned chunk = (data[0] >> 1) % 7 + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    char *accepted = malloc(n + 1);
    size_t na = 0;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < chunk ? n - i : chunk;
        int t = jsonc_try(c, p + i, k);
        jsonc *before = jsonc_clone(c);
        int f = jsonc_feed(c, p + i, k);
        if (t != (f == NG_OK)) abort();
        if (f == NG_OK) {
            memcpy(accepted + na, p + i, k);
            na += k;
        } else if (jsonc_complete(c) != jsonc_complete(before) || jsonc_try(c, "", 0) != 1) {
            abort();
        }
        jsonc_free(before);
        if (jsonc_complete(c)) {
            cJSON *v = cJSON_ParseWithLength(accepted, na);
            if (!v || !jsonc_validate(c, accepted, na)) abort();
            cJSON_Delete(v);
        }
        /* a refused chunk: skip one byte and go on with the rest */
        i += f == NG_OK ? k : 1;
    }
    free(accepted);
    jsonc_free(c);
    return 0;
}
