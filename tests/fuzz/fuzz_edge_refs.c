/* fuzz_edge_refs — libFuzzer harness for the edge's reference filling (edge_fill_refs in
 * src/edge/complete.c), which parses a context block and the text a completion model wrote:
 * the input is a block and a text split at the first 0xff byte (a block alone is also filled
 * into a text of every reference). Aborts unless a text without "{" comes back unchanged and the
 * count of unresolved references is at most the number of "{" in the text. Owner: edge.
 *
 * Build and run from the repository root (make fuzz does the same for every harness):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp -Isrc \
 *       -o build/fuzz/fuzz_edge_refs tests/fuzz/fuzz_edge_refs.c LIB_SRC -lcjson -lm  (LIB_SRC: src/ less
 * src/cli/)
 *   ./build/fuzz/fuzz_edge_refs -max_total_time=60 -max_len=8192 build/fuzz/corpus-fuzz_edge_refs
 */
#include "edge/complete.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz_split.h"

static const char *const every =
    "{place} {day} {time} {language} {prefs} {request} {poi1} {dist1} {poi2} {dist2} {poi3} {dist3} "
    "{poi12} {dist12} {poi99} {x} {poi0";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char *block, *text;
    fuzz_split(data, size, every, &block, &text);
    int unresolved = -1;
    char *out = edge_fill_refs(block, text, &unresolved);
    int braces = 0;
    for (const char *p = text; *p; p++) braces += *p == '{';
    if (!out || unresolved < 0 || unresolved > braces) abort();
    if (!strchr(text, '{') && strcmp(out, text)) abort();
    free(out), free(text), free(block);
    return 0;
}
