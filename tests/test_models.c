/* The shipped default models (models/, made by `make models`): they load, carry the real
 * vocabularies (known token ids), stay within the size budget, and the edge's completion model
 * (the base with its LoRA adapter, and the fully fine-tuned model, each that is shipped) does
 * its job on held-out cities — the facts of the context stated, none invented — so a change
 * that breaks the forward pass, LoRA, the tokenizers or the prompt format fails here. Skipped
 * when models/ is absent (a checkout without the model files). */
#include "test.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "core/util.h"
#include "edge/complete.h"
#include "edge/score.h"
#include "model/lora.h"
#include "model/model.h"
#include "tokenizer/chat.h"

#define EDGE "models/edge-gpt2.gguf"
#define ADAPTER "models/edge-completion.gguf"
#define CLOUD "models/cloud-llama.gguf"
#define EDGE_FULL "models/edge-gpt2-completion.gguf" /* the base fully fine-tuned */
#define MAX_BYTES 20000000L /* 20 MB per file */
#define MAX_EDGE_PPL 1100 /* measured 832.5 (an untrained model: ~50,000) */
#define MAX_CLOUD_PPL 45 /* measured 34.5 (untrained: ~32,000) */
#define MIN_STATED 0.95 /* share of the facts stated (measured 104 of 104, adapter and full) */
#define MAX_INVENTED 2   /* invented mentions in the 12 records */
#define MIN_REQUESTS 11  /* records of the 12 whose prompt states the request (measured 12) */

static void expect_ids(const ng_model *m, const char *text, const int *want, int n_want) {
    int n;
    int *ids = tok_encode(m->tok, text, strlen(text), &n);
    int ok = n == n_want;
    for (int i = 0; ok && i < n; i++) ok = ids[i] == want[i];
    CHECK(ok, "%s: '%s' gives %d ids (first %d), want %d (first %d)", m->path, text, n, n ? ids[0] : -1, n_want,
          want[0]);
    free(ids);
}

static void test_files(void) {
    if (!t_exists(EDGE) || !t_exists(CLOUD)) SKIP("models/ has not the default models");
    const char *files[] = {EDGE, ADAPTER, EDGE_FULL, CLOUD};
    for (int i = 0; i < 4; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0) continue;
        CHECK(st.st_size <= MAX_BYTES, "%s: %lld bytes, over 20 MB", files[i], (long long)st.st_size);
    }
    ng_error err;
    ng_model *e = ng_model_load(EDGE, &err), *c = ng_model_load(CLOUD, &err);
    REQUIRE(e && c, "load: %s", err.msg);
    CHECK(e->hp.arch == NG_ARCH_GPT2 && e->hp.n_vocab == 50257 && e->tok, "edge: arch %d, vocabulary %d", e->hp.arch,
          e->hp.n_vocab);
    CHECK(c->hp.arch == NG_ARCH_LLAMA && c->hp.n_vocab == 32000 && c->tok, "cloud: arch %d, vocabulary %d", c->hp.arch,
          c->hp.n_vocab);
    /* ids as gpt-3-encoder and llama-tokenizer-js give them */
    if (e->tok) expect_ids(e, "Hello world, coffee near me", (int[]){15496, 995, 11, 6891, 1474, 502}, 6);
    if (c->tok) expect_ids(c, "Hello world", (int[]){15043, 3186}, 2);
    ng_model_free(e);
    ng_model_free(c);
}

/* Mean negative log-likelihood per predicted token of text under m (one window from an empty
 * cache, BOS first where the tokenizer adds one): the check that the trained weights still
 * compute what they learned. */
static double mean_nll(const ng_model *m, const char *text) {
    int n;
    int *ids = tok_encode(m->tok, text, strlen(text), &n);
    int bos = tok_add_bos(m->tok), T = n + bos < m->hp.n_ctx ? n + bos : m->hp.n_ctx;
    int *toks = xmalloc((size_t)(n + 1) * sizeof *toks);
    if (bos) toks[0] = tok_bos(m->tok);
    memcpy(toks + bos, ids, (size_t)n * sizeof *ids);
    int V = m->hp.n_vocab;
    float *lg = xmalloc((size_t)T * V * sizeof *lg);
    ng_state *s = ng_state_new(m, T, T);
    ng_error err;
    double nll = 0;
    if (ng_forward(m, s, toks, T, lg, 1, &err) != NG_OK) {
        CHECK(0, "forward: %s", err.msg);
        nll = INFINITY;
    }
    for (int t = 0; t + 1 < T && isfinite(nll); t++) {
        const float *r = lg + (size_t)t * V;
        double mx = r[0], z = 0;
        for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
        for (int v = 0; v < V; v++) z += exp(r[v] - mx);
        nll += mx + log(z) - r[toks[t + 1]];
    }
    ng_state_free(s);
    free(lg), free(toks), free(ids);
    return nll / (T - 1);
}

/* Held-out English for the edge base (tests/testdata/models/heldout.txt, ~1000 tokens of the
 * held-out split) and held-out answer conversations for the cloud (answers.jsonl, in the chat
 * template it was trained in): perplexities near what the model cards report, far below an
 * untrained model's (about the vocabulary size). */
static void test_perplexity(void) {
    if (!t_exists(EDGE) || !t_exists(CLOUD)) SKIP("models/ has not the default models");
    ng_error err;
    ng_model *e = ng_model_load(EDGE, &err), *c = ng_model_load(CLOUD, &err);
    REQUIRE(e && c, "load: %s", err.msg);
    size_t len;
    char *text = ng_read_file("tests/testdata/models/heldout.txt", &len, &err);
    REQUIRE(text, "%s", err.msg);
    /* windows of the model's context, as netgpt eval cuts them */
    double sum = 0;
    int windows = 0;
    char *p = text;
    while (*p) {
        char *end = strstr(p, "\n\n");
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char save = p[n];
        p[n] = 0;
        sum += mean_nll(e, p), windows++;
        p[n] = save;
        p += n;
        while (*p == '\n') p++;
    }
    double edge_ppl = exp(sum / windows);
    free(text);
    char *ans = ng_read_file("tests/testdata/models/answers.jsonl", &len, &err);
    REQUIRE(ans, "%s", err.msg);
    sum = 0;
    int convs = 0;
    for (char *line = strtok(ans, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *js = cJSON_Parse(line);
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(js, "instruction"),
                    *out = cJSON_GetObjectItemCaseSensitive(js, "output");
        REQUIRE(cJSON_IsString(in) && cJSON_IsString(out), "answers fixture");
        ng_chat_msg msgs[2] = {{"user", in->valuestring}, {"assistant", out->valuestring}};
        char *conv = chat_apply(CHAT_LLAMA2, msgs, 2, 0);
        sum += mean_nll(c, conv), convs++;
        free(conv);
        cJSON_Delete(js);
    }
    free(ans);
    double cloud_ppl = exp(sum / convs);
    printf("edge base: held-out paragraphs PPL %.1f; cloud: %d held-out answer conversations PPL %.2f\n", edge_ppl,
           convs, cloud_ppl);
    CHECK(edge_ppl < MAX_EDGE_PPL, "edge base perplexity %.1f (at most %d)", edge_ppl, MAX_EDGE_PPL);
    CHECK(cloud_ppl < MAX_CLOUD_PPL, "cloud answer perplexity %.2f (at most %d)", cloud_ppl, MAX_CLOUD_PPL);
    ng_model_free(e);
    ng_model_free(c);
}

/* A completion model (model_path, with adapter_path or NULL) on held-out test records
 * (tests/testdata/models: 12 records of the pairs test split, cities never seen in training),
 * scored by src/edge/score.c. */
static void check_completion(const char *model_path, const char *adapter_path) {
    int lora = adapter_path != NULL;
    ng_error err;
    ng_model *m = ng_model_load(model_path, &err);
    REQUIRE(m, "%s", err.msg);
    ng_lora *a = lora ? ng_lora_load(m, adapter_path, 1.0f, &err) : NULL;
    REQUIRE(!lora || a, "%s", err.msg);
    edge_scorer *sc = edge_scorer_load("tests/testdata/pairs_score/vocab.json", &err);
    REQUIRE(sc, "%s", err.msg);
    FILE *fp = fopen("tests/testdata/models/pairs.jsonl", "rb"), *ff = fopen("tests/testdata/models/facts.jsonl", "rb");
    REQUIRE(fp && ff, "fixtures");
    char *lp = NULL, *lf = NULL;
    size_t cp = 0, cf = 0;
    edge_score s = {0};
    while (getline(&lp, &cp, fp) > 0 && getline(&lf, &cf, ff) > 0) {
        cJSON *js = cJSON_Parse(lp);
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(js, "instruction");
        REQUIRE(cJSON_IsString(ins), "fixture line");
        char *text = edge_complete_block(m, a, ins->valuestring, 128, &err);
        CHECK(text, "completion: %s", err.msg);
        CHECK(edge_score_add(sc, lf, text ? text : "", &s, &err) == NG_OK, "score: %s", err.msg);
        if (ng_verbose > 1) fprintf(stderr, "%s\n", text ? text : "");
        free(text);
        cJSON_Delete(js);
    }
    double stated = (double)s.stated / (double)(s.facts ? s.facts : 1);
    printf("%s: edge completion on %ld held-out records: %ld of %ld facts stated (%.1f%%), %ld of %ld mentions "
           "invented, %ld of %ld requests stated\n",
           lora ? adapter_path : model_path, s.records, s.stated, s.facts, 100 * stated, s.invented, s.mentions,
           s.requests_stated, s.requests);
    CHECK(s.records == 12, "%ld records scored", s.records);
    CHECK(stated >= MIN_STATED, "facts stated %.3f, below %.2f", stated, MIN_STATED);
    CHECK(s.invented <= MAX_INVENTED, "%ld invented mentions (at most %d)", s.invented, MAX_INVENTED);
    CHECK(s.requests == 12 && s.requests_stated >= MIN_REQUESTS, "%ld of %ld requests stated (at least %d)",
          s.requests_stated, s.requests, MIN_REQUESTS);
    free(lp), free(lf);
    fclose(fp), fclose(ff);
    edge_scorer_free(sc);
    ng_lora_free(a);
    ng_model_free(m);
}

/* Each completion model models/ ships: the base with its LoRA adapter, the fully fine-tuned one. */
static void test_edge_completion(void) {
    int lora = t_exists(EDGE) && t_exists(ADAPTER), full = t_exists(EDGE_FULL);
    if (!lora && !full) SKIP("models/ has no edge completion model");
    if (lora) check_completion(EDGE, ADAPTER);
    if (full) check_completion(EDGE_FULL, NULL);
}

int main(void) {
    RUN(test_files);
    RUN(test_perplexity);
    RUN(test_edge_completion);
    TEST_EXIT();
}
