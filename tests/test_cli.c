/* The netgpt binary (sanitizer build) end to end: help, convert, tokenize, generate and their
 * errors, checked against the reference fixtures. */
#include "test.h"

#include <cjson/cJSON.h>

#include "core/kernels.h"
#include "core/util.h"
#include "edge/complete.h"
#include "model/model.h"
#include "tokenizer/chat.h"

#include <sys/stat.h>
#include <sys/wait.h>

#define BIN "build/san/netgpt"

/* Runs a shell command; stdout goes to *out (malloc'd), stderr to *err. Returns exit status. */
static int run(const char *cmd, char **out, char **err) {
    char full[2048];
    snprintf(full, sizeof full, "%s >build/tmp/cli.out 2>build/tmp/cli.err", cmd);
    int st = system(full);
    size_t n;
    ng_error e;
    char *o = ng_read_file("build/tmp/cli.out", &n, &e), *r = ng_read_file("build/tmp/cli.err", &n, &e);
    if (out) *out = o;
    else free(o);
    if (err) *err = r;
    else free(r);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void setup(void) {
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
}

static void test_help(void) {
    const char *cmds[] = {"--help", "generate --help", "tokenize --help", "convert --help", "merge --help",
                          "bench --help", "train --help", "serve --help", "edge --help", "edge-db --help",
                          "quantize --help", "eval --help", "init --help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char c[256], *out;
        snprintf(c, sizeof c, BIN " %s", cmds[i]);
        int rc = run(c, &out, NULL);
        CHECK(rc == 0 && strstr(out, "usage: netgpt"), "'%s' -> %d", cmds[i], rc);
        free(out);
    }
    char *err;
    CHECK(run(BIN " frobnicate", NULL, &err) == 2 && strstr(err, "unknown command"), "unknown command");
    free(err);
    CHECK(run(BIN " generate --bogus", NULL, &err) == 2 && strstr(err, "--bogus"), "unknown flag");
    free(err);
    CHECK(run(BIN " generate -m x -n abc", NULL, &err) == 2 && strstr(err, "-n"), "bad number");
    free(err);
    CHECK(run(BIN " bench --shape llama-3b", NULL, &err) == 2 && strstr(err, "llama-3b"), "bad bench shape");
    free(err);
    CHECK(run(BIN " bench -m model.gguf", NULL, &err) == 2 && strstr(err, "--shape"), "bench takes no model file");
    free(err);
}

/* The real GPT-2 vocabulary: known ids (the same as the gpt-3-encoder package gives). */
static void test_tokenize(void) {
    char *out;
    int rc = run(BIN " tokenize -m tests/testdata/gpt2 'Hello world'", &out, NULL);
    CHECK(rc == 0 && strcmp(out, "15496 995\n") == 0, "tokenize: rc %d out '%s'", rc, out ? out : "");
    free(out);
    rc = run(BIN " tokenize -m tests/testdata/gpt2 --decode 15496 995", &out, NULL);
    CHECK(rc == 0 && strcmp(out, "Hello world\n") == 0, "decode: rc %d out '%s'", rc, out ? out : "");
    free(out);
    /* LLaMA's SentencePiece: BOS, the leading space, known ids */
    rc = run(BIN " tokenize -m tests/testdata/llama-vocab/tokenizer.gguf 'Hello world'", &out, NULL);
    CHECK(rc == 0 && strcmp(out, "1 15043 3186\n") == 0, "llama tokenize: rc %d out '%s'", rc, out ? out : "");
    free(out);
    rc = run(BIN " tokenize -m tests/testdata/llama-vocab/tokenizer.gguf --decode 15043 3186", &out, NULL);
    CHECK(rc == 0 && strcmp(out, " Hello world\n") == 0, "llama decode: rc %d out '%s'", rc, out ? out : "");
    free(out);
    char *err;
    rc = run(BIN " tokenize -m tests/testdata/gpt2 --decode 99999999", NULL, &err);
    CHECK(rc == 1 && strstr(err, "out of range"), "bad id: rc %d", rc);
    free(err);
}

static int *read_ids(const char *path, int *n) {
    size_t nb;
    ng_error e;
    int *ids = (int *)ng_read_file(path, &nb, &e);
    *n = ids ? (int)(nb / 4) : 0;
    return ids;
}

/* convert to GGUF f16, then greedy generate from the reference prompt: the reference's ids. */
static void test_convert_generate(void) {
    char *err, *out;
    int rc = run(BIN " convert -m tests/testdata/gpt2-tiny-b -o build/tmp/cli-b.gguf --type f16", NULL, &err);
    REQUIRE(rc == 0, "convert: %d %s", rc, err);
    free(err);
    int np, ng;
    int *prompt = read_ids("tests/testdata/gpt2-tiny-b/greedy_prompt.i32", &np);
    int *want = read_ids("tests/testdata/gpt2-tiny-b/greedy_ids.i32", &ng);
    REQUIRE(prompt && want, "fixtures");
    char cmd[1024] = BIN " generate -m build/tmp/cli-b.gguf --temp 0 --ids -n 64 --prompt-ids '";
    char want_s[1024] = "";
    for (int i = 0; i < np; i++) snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%d", i ? " " : "", prompt[i]);
    strcat(cmd, "'");
    for (int i = 0; i < ng; i++)
        snprintf(want_s + strlen(want_s), sizeof want_s - strlen(want_s), "%s%d", i ? " " : "", want[i]);
    strcat(want_s, "\n");
    rc = run(cmd, &out, &err);
    CHECK(rc == 0 && strcmp(out, want_s) == 0, "greedy ids: rc %d\n got  %s want %s%s", rc, out, want_s, err);
    CHECK(strstr(err, "tok/s"), "no timings on stderr: %s", err);
    free(out);
    free(err);

    /* keys and values cached as f16: the same greedy ids; a type that cannot be cached refused */
    char c16[1200];
    snprintf(c16, sizeof c16, "%s --kv-type f16", cmd);
    rc = run(c16, &out, &err);
    CHECK(rc == 0 && strcmp(out, want_s) == 0, "--kv-type f16 greedy ids: rc %d\n got  %s want %s%s", rc, out, want_s, err);
    free(out);
    free(err);
    rc = run(BIN " generate -m build/tmp/cli-b.gguf --prompt-ids '1 2' -n 2 --kv-type q4_0", NULL, &err);
    CHECK(rc == 2 && strstr(err, "--kv-type"), "--kv-type q4_0: rc %d %s", rc, err);
    free(err);

    /* the same seed gives the same sample; another seed another one */
    char c2[1200], *a, *b, *c;
    snprintf(c2, sizeof c2, "%s", cmd);
    char *t = strstr(c2, "--temp 0");
    memcpy(t, "--temp 1", 8);
    strcat(c2, " --seed 5");
    run(c2, &a, NULL);
    run(c2, &b, NULL);
    c2[strlen(c2) - 1] = '6';
    run(c2, &c, NULL);
    CHECK(a && b && c && strcmp(a, b) == 0 && strlen(a) > 10, "same seed, different output:\n%s\n%s",
          a ? a : "(no output)", b ? b : "(no output)");
    CHECK(a && c && strcmp(a, c) != 0, "different seeds, same output: %s", a ? a : "(no output)");
    free(a), free(b), free(c);

    /* prompt + -n beyond the context: a clear error, not a truncation */
    rc = run(BIN " generate -m build/tmp/cli-b.gguf --prompt-ids '1 2 3' --ids -n 126", NULL, &err);
    CHECK(rc == 1 && strstr(err, "context of 128"), "overflow: rc %d %s", rc, err);
    free(err);
    free(prompt);
    free(want);
}

/* --lora at run time and `merge` give the same greedy ids; both differ from the base. */
static void test_lora_merge(void) {
    char *err, *base, *runtime, *merged;
    const char *gen = BIN " generate --prompt-ids '1 2 3 4' --ids -n 12 --temp 0 -q -m ";
    char cmd[1024];
    int rc = run(BIN " merge -m tests/testdata/llama-tiny-a --lora tests/testdata/lora/llama-tiny-a -o "
                     "build/tmp/cli-merged.gguf --type f32",
                 NULL, &err);
    REQUIRE(rc == 0, "merge: %s", err);
    free(err);
    snprintf(cmd, sizeof cmd, "%stests/testdata/llama-tiny-a", gen);
    run(cmd, &base, NULL);
    snprintf(cmd, sizeof cmd, "%stests/testdata/llama-tiny-a --lora tests/testdata/lora/llama-tiny-a:1", gen);
    run(cmd, &runtime, NULL);
    snprintf(cmd, sizeof cmd, "%sbuild/tmp/cli-merged.gguf", gen);
    run(cmd, &merged, NULL);
    CHECK(runtime && merged && strlen(runtime) > 10 && strcmp(runtime, merged) == 0, "run time '%s' vs merged '%s'",
          runtime ? runtime : "(no output)", merged ? merged : "(no output)");
    CHECK(base && runtime && strcmp(base, runtime) != 0, "the adapter changed nothing");
    free(base), free(runtime), free(merged);
    rc = run(BIN " generate -m tests/testdata/gpt2-tiny-a --lora tests/testdata/lora/llama-tiny-a --prompt-ids 1 --ids -n 4",
             NULL, &err);
    CHECK(rc == 1 && strstr(err, "not a LoRA matrix"), "mismatched adapter: rc %d %s", rc, err);
    free(err);
}

/* eval --pairs writes, per record, what the edge's completion gives (edge_complete_block, whose
 * decoding rules tests/test_edge_complete.c checks); with --beams 1 what its greedy decoding
 * gives, which begins as plain greedy decoding of the record's Alpaca prompt does: its first 3
 * tokens, before the rule against repeated 3-token runs can act (this model has no references),
 * against `generate --prompt-ids` on the same prompt, tokenized here. */
static void test_eval_pairs(void) {
    char *err, *out;
    int rc = run(BIN " init --arch gpt2 --tokenizer tests/testdata/gpt2 --n-embd 32 --n-layer 1 --n-head 2 --ctx 256 "
                     "--seed 3 -o build/tmp/pairs-m.gguf",
                 NULL, &err);
    REQUIRE(rc == 0, "init: %s", err);
    free(err);
    const char *ins[2] = {"[context]\nplace: Lyon, France\ntime: Tuesday 18:40 local\n[request]\ndinner?",
                          "[context]\nplace: Kyoto, Japan\n[request]\nwhere to buy a \"bento\""};
    FILE *f = fopen("build/tmp/pairs.jsonl", "wb");
    fprintf(f, "{\"instruction\":\"[context]\\nplace: Lyon, France\\ntime: Tuesday 18:40 local\\n[request]\\ndinner?\","
               "\"output\":\"x\"}\n\n{\"instruction\":\"[context]\\nplace: Kyoto, Japan\\n[request]\\nwhere to buy a "
               "\\\"bento\\\"\"}\n{\"instruction\":\"third\"}\n");
    fclose(f);
    rc = run(BIN " eval -m build/tmp/pairs-m.gguf --pairs build/tmp/pairs.jsonl --limit 2 -n 10 -o build/tmp/pred.jsonl",
             &out, &err);
    REQUIRE(rc == 0 && strstr(out, "2 records"), "eval --pairs: rc %d %s %s", rc, out, err);
    free(out), free(err);
    rc = run(BIN " eval -m build/tmp/pairs-m.gguf --pairs build/tmp/pairs.jsonl --limit 2 -n 10 --beams 1 "
                 "-o build/tmp/pred1.jsonl",
             &out, &err);
    REQUIRE(rc == 0 && strstr(out, "2 records"), "eval --pairs --beams 1: rc %d %s %s", rc, out, err);
    free(out), free(err);
    size_t n;
    ng_error e;
    char *pred = ng_read_file("build/tmp/pred.jsonl", &n, &e), *pred1 = ng_read_file("build/tmp/pred1.jsonl", &n, &e);
    REQUIRE(pred && pred1, "%s", e.msg);
    ng_model *m = ng_model_load("build/tmp/pairs-m.gguf", &e);
    REQUIRE(m && m->tok, "load: %s", e.msg);
    char *line = pred, *line1 = pred1;
    for (int r = 0; r < 2; r++) {
        char *prompt = chat_alpaca_prompt(ins[r], "");
        int np;
        int *ids = tok_encode(m->tok, prompt, strlen(prompt), &np);
        char cmd[4096];
        snprintf(cmd, sizeof cmd, BIN " generate -m build/tmp/pairs-m.gguf --temp 0 --ids -q -n 10 --prompt-ids '");
        for (int i = 0; i < np; i++) snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%d", i ? " " : "", ids[i]);
        strcat(cmd, "'");
        rc = run(cmd, &out, NULL);
        CHECK(rc == 0, "generate: %d", rc);
        ng_buf want;
        ng_buf_init(&want);
        int k = 0;
        for (char *p = out; rc == 0 && *p && k < 3; k++) {
            char *end;
            long id = strtol(p, &end, 10);
            if (end == p) break;
            p = end;
            if (id == tok_eos(m->tok)) break;
            size_t len;
            const char *piece = tok_piece(m->tok, (int)id, &len);
            ng_buf_add(&want, piece, len);
            if (want.n >= 2 && !strcmp(want.s + want.n - 2, "\n\n")) break;
        }
        char *edge[2] = {edge_complete_block(m, NULL, ins[r], 10, &e), edge_complete_search(m, NULL, ins[r], 10, 1, &e)};
        REQUIRE(edge[0] && edge[1], "edge_complete_search: %s", e.msg);
        for (int g = 0; g < 2; g++) {
            char **l = g ? &line1 : &line, *nl = strchr(*l, '\n');
            REQUIRE(nl, "record %d: no line", r);
            *nl = 0;
            cJSON *js = cJSON_Parse(*l);
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(js, "output");
            CHECK(cJSON_IsString(o) && !strcmp(o->valuestring, edge[g]), "record %d%s: '%s', the edge's completion gives '%s'",
                  r, g ? " (greedy)" : "", cJSON_IsString(o) ? o->valuestring : "?", edge[g]);
            cJSON_Delete(js);
            *l = nl + 1;
        }
        CHECK(want.n >= 3 && !strncmp(edge[1], want.s, want.n), "record %d: '%s' does not begin as greedy decoding '%s'",
              r, edge[1], want.s ? want.s : "");
        free(edge[0]), free(edge[1]), free(want.s), free(out), free(ids), free(prompt);
    }
    CHECK(*line == 0 && *line1 == 0, "more than --limit records: %s", line);
    free(pred), free(pred1);
    ng_model_free(m);

    /* errors: no -o; a record without an instruction names its line */
    CHECK(run(BIN " eval -m build/tmp/pairs-m.gguf --pairs build/tmp/pairs.jsonl", NULL, &err) == 1 &&
              strstr(err, "-o"),
          "no -o: %s", err);
    free(err);
    f = fopen("build/tmp/pairs-bad.jsonl", "wb");
    fputs("{\"instruction\":\"a\"}\n{\"output\":\"b\"}\n", f);
    fclose(f);
    rc = run(BIN " eval -m build/tmp/pairs-m.gguf --pairs build/tmp/pairs-bad.jsonl -n 2 -o build/tmp/pred.jsonl",
             NULL, &err);
    CHECK(rc == 1 && strstr(err, "pairs-bad.jsonl:2"), "bad record: rc %d %s", rc, err);
    free(err);
}

/* eval --score: the counts of the JS scorer (tests/testdata/pairs_score/expected.json) for
 * each prediction file of the fixtures; --limit scores the first records only. */
static void test_eval_score(void) {
    size_t n;
    ng_error e;
    char *exp_s = ng_read_file("tests/testdata/pairs_score/expected.json", &n, &e);
    REQUIRE(exp_s, "%s", e.msg);
    cJSON *exp = cJSON_Parse(exp_s);
    REQUIRE(cJSON_IsObject(exp), "expected.json");
    const char *keys[] = {"records", "facts", "stated", "mentions", "invented"};
    int files = 0;
    for (const cJSON *f = exp->child; f; f = f->next) {
        if (!cJSON_IsObject(f) || !cJSON_GetObjectItemCaseSensitive(f, "stated")) continue;
        char cmd[512], *out, *err;
        snprintf(cmd, sizeof cmd,
                 BIN " eval --score tests/testdata/pairs_score/%s --facts tests/testdata/pairs_score/facts.jsonl --json",
                 f->string);
        int rc = run(cmd, &out, &err);
        cJSON *got = cJSON_Parse(out);
        CHECK(rc == 0 && got, "%s: rc %d %s", f->string, rc, err);
        for (size_t k = 0; got && k < sizeof keys / sizeof keys[0]; k++) {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(got, keys[k]),
                        *b = cJSON_GetObjectItemCaseSensitive(f, keys[k]);
            CHECK(cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble == b->valuedouble, "%s: %s %g, want %g",
                  f->string, keys[k], a ? a->valuedouble : -1, b ? b->valuedouble : -1);
        }
        cJSON_Delete(got);
        free(out), free(err);
        files++;
    }
    CHECK(files >= 5, "%d prediction files in expected.json", files);
    /* --limit 3: the first three records' counts */
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(exp, "reference.jsonl");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(ref, "per_record");
    char *out;
    int rc = run(BIN " eval --score tests/testdata/pairs_score/reference.jsonl --facts tests/testdata/pairs_score/facts.jsonl "
                     "--limit 3 --json",
                 &out, NULL);
    cJSON *got = cJSON_Parse(out);
    double facts = 0;
    for (int i = 0; i < 3 && cJSON_GetArraySize(pr) >= 3; i++) facts += cJSON_GetArrayItem(cJSON_GetArrayItem(pr, i), 0)->valuedouble;
    const cJSON *gf = cJSON_GetObjectItemCaseSensitive(got, "facts"), *gr = cJSON_GetObjectItemCaseSensitive(got, "records");
    CHECK(rc == 0 && cJSON_IsNumber(gf) && gf->valuedouble == facts && gr && gr->valueint == 3,
          "--limit 3: %s (want %g facts)", out, facts);
    cJSON_Delete(got), free(out);
    char *err;
    CHECK(run(BIN " eval --score tests/testdata/pairs_score/reference.jsonl", NULL, &err) == 1 && strstr(err, "--facts"),
          "--score without --facts: %s", err);
    free(err);
    cJSON_Delete(exp);
    free(exp_s);
}

/* bench --batch: the batched decode runs (ng_forward_multi over 3 sequences, quantized weights
 * on the integer batch path) and reports both rates and their ratio in the JSON. Speeds are not
 * judged here: only that the figures exist, are positive and agree with each other. */
static void test_bench_batch(void) {
    char *out = NULL, *err = NULL;
    int rc = run(BIN " bench --layers 1 --types q8_0 --n-gen 4 --n-prompt 8 --batch 3 --json", &out, &err);
    CHECK(rc == 0, "bench --batch exited %d: %s", rc, err);
    cJSON *js = cJSON_Parse(out);
    cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItem(js, "results"), 0);
    double b = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "batch"));
    double t1 = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "batch1_tok_s"));
    double tn = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "batch_tok_s"));
    double sp = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "batch_speedup"));
    CHECK(b == 3 && t1 > 0 && tn > 0, "batch fields: %s", out);
    double dm = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "decode_tok_s"));
    double da = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "decode_mean_tok_s"));
    CHECK(dm > 0 && da > 0, "decode median / mean tok/s: %s", out);
    CHECK(fabs(sp - tn / t1) < 0.01, "speedup %.3f is not %.2f / %.2f", sp, tn, t1);
    cJSON_Delete(js);
    free(out), free(err);
    CHECK(run(BIN " bench --batch 1", NULL, &err) == 2 && strstr(err, "--batch"), "bench --batch 1 accepted");
    free(err);
}

/* bench --json with weights of type `type` and a prompt of n tokens, with and without `flag`:
 * where this CPU runs the fast instruction (has), the prefill is judged by its measured peak
 * ("prefill_peak": kind, peak_key > 0); with the flag (a common flag every model command takes)
 * it is off, and then, as on other CPUs, the f32 peak judges the prefill (and the bf16 peak is
 * not measured; the int8 one is wherever the path has integer dot products: the integer GEMV's
 * too). */
static void bench_peak_kind(const char *type, int n, const char *flag, const char *peak_key,
                            const char *kind_on, int has, int has_off) {
    for (int off = 0; off < 2; off++) {
        char cmd[256], *out = NULL, *err = NULL;
        snprintf(cmd, sizeof cmd, BIN " bench --layers 1 --types %s --n-gen 2 --n-prompt %d --json%s%s", type, n,
                 off ? " " : "", off ? flag : "");
        int rc = run(cmd, &out, &err);
        CHECK(rc == 0, "bench exited %d: %s", rc, err);
        cJSON *js = cJSON_Parse(out);
        cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItem(js, "results"), 0);
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(r, "prefill_peak"));
        double pk = cJSON_GetNumberValue(cJSON_GetObjectItem(js, peak_key));
        int on = off ? has_off : has;
        /* off: the int8 peak is still measured where the path has integer dot products */
        int int8_off = !strcmp(peak_key, "peak_int8_gops") && (has || !strcmp(ng_kernel_path(), "avx2"));
        int pk_ok = on ? pk > 0 : (pk > 0) == int8_off;
        CHECK(kind && !strcmp(kind, on ? kind_on : "f32") && pk_ok,
              "%s: instruction %d, %s %d: prefill judged by '%s', %s %g", type, has, flag, off, kind ? kind : "?",
              peak_key, pk);
        cJSON_Delete(js);
        free(out), free(err);
    }
}

/* bf16 weights: the prefill runs on AVX512-BF16's vdpbf16ps where the CPU has it. */
static void test_bench_bf16(void) {
    bench_peak_kind("bf16", 16, "--no-bf16-dot", "peak_bf16_gflops", "bf16", ng_kernel_bf16_dot(), 0);
}

/* q8_0 / q4_0 weights: a prompt of 24 tokens runs on the int8 GEMM (AVX-512 VNNI's vpdpbusd)
 * where the CPU has it, and with --no-int8-gemm on the integer GEMV where the path has one for
 * that many rows: either way judged by the int8 peak, on the f32 GEMM by the f32 peak. */
static void test_bench_int8(void) {
    ng_type wt = ng_matmul_native(NG_Q4_0);
    int gemv = (ng_kernel_set_int8_gemm(0), ng_kernel_int8_rows(wt, 24));
    ng_kernel_set_int8_gemm(1);
    bench_peak_kind("q4_0", 24, "--no-int8-gemm", "peak_int8_gops", "int8", ng_kernel_int8_rows(wt, 24),
                    gemv);
}

/* --kernels avx2 (where this CPU runs AVX2): q4_0 weights, rearranged into kernel order, take
 * integer dot products for a prompt of 80 tokens (the int8 GEMM with AVX-VNNI, the integer GEMV
 * without), judged by the int8 peak of their instructions; bench says whether AVX-VNNI ran, and
 * --no-avx-vnni turns it off. An unknown path is refused. */
static void test_bench_kernels_avx2(void) {
    char *out = NULL, *err = NULL;
    CHECK(run(BIN " bench --kernels nonsense", NULL, &err) == 2 && strstr(err, "--kernels"), "--kernels nonsense: %s",
          err);
    free(err);
    if (ng_kernel_set_path("avx2") != 0) SKIP("this CPU has no AVX2");
    int vnni = ng_cpu_features()->avxvnni;
    ng_kernel_set_path(NULL);
    for (int off = 0; off < 2; off++) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, BIN " bench --kernels avx2 --layers 1 --types q4_0 --n-gen 2 --n-prompt 80 --json%s",
                 off ? " --no-avx-vnni" : "");
        int rc = run(cmd, &out, &err);
        CHECK(rc == 0, "%s exited %d: %s", cmd, rc, err);
        cJSON *js = cJSON_Parse(out), *r = cJSON_GetArrayItem(cJSON_GetObjectItem(js, "results"), 0);
        const char *kernels = cJSON_GetStringValue(cJSON_GetObjectItem(js, "kernels"));
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(r, "prefill_peak"));
        CHECK(kernels && !strcmp(kernels, "avx2"), "kernels: %s", out);
        CHECK(cJSON_IsBool(cJSON_GetObjectItem(js, "avx_vnni")) &&
                  cJSON_IsTrue(cJSON_GetObjectItem(js, "avx_vnni")) == (vnni && !off),
              "avx_vnni with the CPU's %d, --no-avx-vnni %d: %s", vnni, off, out);
        CHECK(kind && !strcmp(kind, "int8") && cJSON_GetNumberValue(cJSON_GetObjectItem(js, "peak_int8_gops")) > 0,
              "AVX2 q4_0 prefill judged by '%s': %s", kind ? kind : "?", out);
        cJSON_Delete(js);
        free(out), free(err);
    }
}

/* bench --profile: the extra decode run's parts are there, none negative, within the step, and
 * the weights' read rate is their bytes over the products' time. Times are not judged. */
static void test_bench_profile(void) {
    char *out = NULL, *err = NULL;
    int rc = run(BIN " bench --layers 1 --types q8_0,f16 --n-gen 4 --n-prompt 8 --profile --json", &out, &err);
    CHECK(rc == 0, "bench --profile exited %d: %s", rc, err);
    cJSON *js = cJSON_Parse(out), *res = cJSON_GetObjectItem(js, "results");
    CHECK(cJSON_GetArraySize(res) == 2, "results: %s", out);
    for (int i = 0; i < cJSON_GetArraySize(res); i++) {
        cJSON *r = cJSON_GetArrayItem(res, i), *p = cJSON_GetObjectItem(r, "profile");
        double step = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "step_ms"));
        double mm = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "matmul_ms"));
        double att = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "attention_ms"));
        double other = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "other_ms"));
        double gbs = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "matmul_read_gbs"));
        double kvg = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "attention_read_gbs"));
        double mb = cJSON_GetNumberValue(cJSON_GetObjectItem(r, "weight_mb"));
        CHECK(p && step > 0 && mm > 0 && att > 0 && other > -1e-3 && kvg > 0, "profile %d: %s", i, out);
        CHECK(fabs(mm + att + other - step) < 1e-3 * (1 + step), "profile %d parts do not add up: %s", i, out);
        CHECK(fabs(gbs - mb / mm) < 0.02 * gbs, "profile %d: %.2f GB/s is not %.1f MB / %.4f ms", i, gbs, mb, mm);
    }
    cJSON_Delete(js);
    free(out), free(err);
    rc = run(BIN " bench --layers 1 --types q4_0 --n-gen 4 --n-prompt 8 --profile", &out, &err);
    CHECK(rc == 0 && strstr(out, "decode step, in parts") && strstr(out, "weights read GB/s") && strstr(out, "KV GB/s"),
          "text: %s", out);
    free(out), free(err);
}

/* bench serve end to end on a tiny model: every level's requests complete (a failed request
 * makes the table say so and the exit status 1), the single stream runs twice. */
static void test_bench_serve(void) {
    char *out = NULL, *err = NULL;
    int rc = run(BIN " bench serve -m tests/testdata/gpt2-tiny-a/llamacpp-f16.gguf -n 4 --requests 2", &out, &err);
    CHECK(rc == 0, "bench serve exited %d: %s", rc, err);
    int rows = 0;
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        int streams;
        double tps, ratio;
        if (sscanf(l, "%d %lf %*fms %*fms %lfx", &streams, &tps, &ratio) == 3 && tps > 0 && ratio > 0) rows++;
    }
    CHECK(rows == 4, "expected 4 level rows:\n%s", out);
    CHECK(strstr(out, "1 stream again: ") && !strstr(out, "FAILED"), "%s", out);
    free(out), free(err);
}

static void test_bad_files(void) {
    char *err;
    FILE *f = fopen("build/tmp/garbage.gguf", "wb");
    fputs("GGUF\x03\x00\x00\x00this is not a model", f);
    fclose(f);
    int rc = run(BIN " generate -m build/tmp/garbage.gguf -p hi", NULL, &err);
    CHECK(rc == 1 && strstr(err, "garbage.gguf"), "garbage: rc %d %s", rc, err);
    free(err);
    rc = run(BIN " generate -m build/tmp/does-not-exist.gguf -p hi", NULL, &err);
    CHECK(rc == 1 && strstr(err, "does-not-exist.gguf"), "missing: rc %d %s", rc, err);
    free(err);
}

int main(void) {
    setup();
    RUN(test_help);
    RUN(test_tokenize);
    RUN(test_convert_generate);
    RUN(test_lora_merge);
    RUN(test_eval_pairs);
    RUN(test_eval_score);
    RUN(test_bench_batch);
    RUN(test_bench_profile);
    RUN(test_bench_bf16);
    RUN(test_bench_int8);
    RUN(test_bench_kernels_avx2);
    RUN(test_bench_serve);
    RUN(test_bad_files);
    TEST_EXIT();
}
