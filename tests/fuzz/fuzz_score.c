/* fuzz_score — libFuzzer harness for the fact check of `netgpt eval` (edge_score_add in
 * src/edge/score.c), which parses a line of a facts file and scans the prompt written for it:
 * the input is a facts line and a prompt split at the first 0xff byte (without one, the prompt is
 * a fixed text that names a few facts). The scorer holds tests/testdata/pairs_score/vocab.json.
 * Aborts unless a failed record leaves the counts untouched and a scored one counts one record,
 * at most as many stated facts as facts, invented mentions as mentions, and requests stated as
 * requests (at most one). Owner: edge.
 *
 * Build and run from the repository root (make fuzz does the same for every harness):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fopenmp=libgomp -Isrc \
 *       -o build/fuzz/fuzz_score tests/fuzz/fuzz_score.c LIB_SRC -lcjson -lm  (LIB_SRC: src/ less src/cli/)
 *   ./build/fuzz/fuzz_score -max_total_time=60 -max_len=8192 build/fuzz/corpus-fuzz_score
 */
#include "edge/score.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz_split.h"

static const char *const prompt = "I am in Lyon, France on Tuesday at 18:40. Aldi (350 m away) and Lidl at 1.2 km. "
                                  "Please recommend a cafe. Reply in German.";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static edge_scorer *sc;
    ng_error err;
    if (!sc && !(sc = edge_scorer_load("tests/testdata/pairs_score/vocab.json", &err))) abort();
    char *facts, *text;
    fuzz_split(data, size, prompt, &facts, &text);
    edge_score acc = {0};
    if (edge_score_add(sc, facts, text, &acc, &err) != NG_OK) {
        if (acc.records || acc.facts || acc.mentions || acc.requests || !err.msg[0]) abort();
    } else if (acc.records != 1 || acc.stated > acc.facts || acc.invented > acc.mentions || acc.requests > 1 ||
               acc.requests_stated > acc.requests || acc.records_with_invented != (acc.invented > 0) ||
               acc.leaks > 1) {
        abort();
    }
    free(facts), free(text);
    return 0;
}
