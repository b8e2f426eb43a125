/* The edge's context block and template baseline on known answers (the format the completion
 * adapter is trained on), references filled as the training data's builder fills them, and
 * model-written completion running end to end. */
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>

#include "edge/complete.h"
#include "model/model.h"
#include "tokenizer/chat.h"

static edge_context sample(void) {
    edge_context c = {.place = "Lyon, France", .cell = "L-12", .local_time = "Tuesday 18:40", .language = "en",
                      .prefs = "prefers vegetarian food"};
    edge_poi p[3] = {{"cafe", "Starbucks", 350}, {"restaurant", "Paul", 420}, {"cafe", "Columbus Café", 1250}};
    memcpy(c.poi, p, sizeof p);
    c.n_poi = 3;
    c.recent[0] = (edge_poi){"bakery", "Paul", 0};
    snprintf(c.recent_when[0], sizeof c.recent_when[0], "yesterday");
    c.n_recent = 1;
    return c;
}

static void test_context_block(void) {
    edge_context c = sample();
    char *b = edge_context_block(&c, "find me a coffee");
    const char *want = "[context]\nplace: Lyon, France (cell L-12)\ntime: Tuesday 18:40 local\n"
                       "nearby cafe: Starbucks 350 m, Columbus Café 1.2 km\nnearby restaurant: Paul 420 m\n"
                       "user: prefers vegetarian food; language en; recent: Paul (bakery) yesterday\n"
                       "[request]\nfind me a coffee";
    CHECK(!strcmp(b, want), "\n got  [%s]\n want [%s]", b, want);
    free(b);
    c.n_poi = 0, c.n_recent = 0, c.prefs[0] = 0, c.language[0] = 0, c.cell[0] = 0;
    b = edge_context_block(&c, "hi");
    CHECK(!strcmp(b, "[context]\nplace: Lyon, France\ntime: Tuesday 18:40 local\n[request]\nhi"), "[%s]", b);
    free(b);
}

static void test_template(void) {
    edge_context c = sample();
    char *t = edge_template_fill(&c, "Find me a coffee");
    const char *want = "Find me a coffee. I am in Lyon, France and it is Tuesday 18:40 local time. Nearby cafe "
                       "options: Starbucks (350 m), Columbus Café (1.2 km). Nearby restaurant options: Paul (420 m). "
                       "My preferences: prefers vegetarian food.";
    CHECK(!strcmp(t, want), "\n got  [%s]\n want [%s]", t, want);
    free(t);
}

/* edge_fill_refs against fillRefs of tools/data/pairs/common.js (tests/testdata/pairs_refs, made
 * by tools/data/pairs/make_refs_fixture.js): the referenced prompts of 150 validation records
 * fill back to the records' prompts, and probes (references without a value, malformed ones,
 * braces that are text, non-ASCII around them) give the same text and the same count of
 * unresolved references. */
static void test_fill_refs(void) {
    FILE *f = fopen("tests/testdata/pairs_refs/refs.jsonl", "rb");
    REQUIRE(f, "tests/testdata/pairs_refs/refs.jsonl");
    char *line = NULL;
    size_t cap = 0;
    int n = 0, bad = 0, with_unresolved = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *js = cJSON_Parse(line);
        const cJSON *block = cJSON_GetObjectItemCaseSensitive(js, "block"),
                    *text = cJSON_GetObjectItemCaseSensitive(js, "text"),
                    *want = cJSON_GetObjectItemCaseSensitive(js, "filled"),
                    *unres = cJSON_GetObjectItemCaseSensitive(js, "unresolved");
        REQUIRE(cJSON_IsString(block) && cJSON_IsString(text) && cJSON_IsString(want) && cJSON_IsNumber(unres),
                "fixture line %d", n + 1);
        int u = -1;
        char *got = edge_fill_refs(block->valuestring, text->valuestring, &u);
        if ((strcmp(got, want->valuestring) || u != unres->valueint) && bad++ < 3)
            CHECK(0, "case %d:\n text [%s]\n got  [%s] %d unresolved\n want [%s] %d", n + 1, text->valuestring, got, u,
                  want->valuestring, unres->valueint);
        with_unresolved += u > 0;
        free(got);
        cJSON_Delete(js);
        n++;
    }
    free(line);
    fclose(f);
    CHECK(n == 175 && with_unresolved == 14, "%d cases, %d with unresolved references", n, with_unresolved);
    CHECK(!bad, "%d of %d cases differ", bad, n);
    /* the edge's own block: its km distances, its cell, a language outside the data's twelve */
    edge_context c = sample();
    snprintf(c.language, sizeof c.language, "ko");
    char *b = edge_context_block(&c, "coffee?");
    int u = -1;
    char *t = edge_fill_refs(b, "{place}, {day} {time}: {poi2} ({dist2}), {poi3} {dist3}; in {language}. {prefs}.", &u);
    CHECK(!strcmp(t, "Lyon, France, Tuesday 18:40: Columbus Café (1.2 km), Paul 420 m; in Korean. prefers vegetarian "
                     "food.") && u == 0, "[%s] %d", t, u);
    free(t), free(b);
    /* the request: the concise prompt, up to a second "[request]" line */
    t = edge_fill_refs("[context]\nplace: Lyon, France\n[request]\ncoffee?\nnow\n[request]\nmore", "{request}", &u);
    CHECK(!strcmp(t, "coffee?\nnow") && u == 0, "[%s] %d", t, u);
    free(t);
    t = edge_fill_refs("[request]\ncoffee?", "{request}", &u); /* the block's first line is no request line */
    CHECK(!strcmp(t, "{request}") && u == 1, "[%s] %d", t, u);
    free(t);
    /* no preferences: the user line's language and recent visits are not {prefs} */
    c.prefs[0] = 0;
    b = edge_context_block(&c, "coffee?");
    t = edge_fill_refs(b, "{prefs} {language}", &u);
    CHECK(!strcmp(t, "{prefs} Korean") && u == 1, "[%s] %d", t, u);
    free(t), free(b);
}

/* A GPT-2 whose greedy continuation of an Alpaca prompt is chain[1..n-1], whatever the prompt:
 * its one layer adds nothing (zero weights), and the token embedding (tied to the output head)
 * puts chain[k] at r^k (cos k45, sin k45) in the first two dimensions and every other token at 0,
 * so that after the final layer norm chain[k]'s logits peak at chain[k+1]. chain[0] is the
 * prompt's last token. */
static ng_model *chain_model(const int *chain, int n) {
    ng_hparams hp = {.arch = NG_ARCH_GPT2, .n_vocab = 50257, .n_ctx = 512, .n_embd = 64, .n_head = 4, .n_head_kv = 4,
                     .n_layer = 1, .n_ff = 128, .norm_eps = 1e-5f};
    ng_model *m = ng_model_random(&hp, NG_F32, 1);
    ng_error err;
    m->tok = tok_load("tests/testdata/gpt2", &err);
    if (!m->tok) return m;
    const ng_layer *L = &m->layers[0];
    const ng_tensor *zero[] = {L->qkv_w, L->qkv_b, L->out_w, L->out_b, L->up_w, L->up_b, L->down_w, L->down_b,
                               L->attn_norm_b, L->ffn_norm_b, m->out_norm_b, m->pos_embd, m->tok_embd};
    for (size_t i = 0; i < sizeof zero / sizeof *zero; i++) memset(zero[i]->data, 0, zero[i]->nbytes);
    const ng_tensor *ones[] = {L->attn_norm_w, L->ffn_norm_w, m->out_norm_w};
    for (size_t i = 0; i < sizeof ones / sizeof *ones; i++)
        for (int64_t j = 0; j < ng_tensor_nelem(ones[i]); j++) ((float *)ones[i]->data)[j] = 1;
    for (int k = 0; k < n; k++) {
        float *e = (float *)m->tok_embd->data + (size_t)chain[k] * 64, r = powf(2, (float)k);
        e[0] = r * cosf((float)k * 0.785398f), e[1] = r * sinf((float)k * 0.785398f);
    }
    return m;
}

/* The generation path fills what the model writes, and writes no reference the block cannot
 * fill: "{poi1}" becomes the block's first point of interest; a model that would write "{poi9}"
 * (three points of interest here) gets its best token that keeps the reference fillable ("1": the
 * other tokens' logits tie at 0 and the lowest id wins); one that would stop inside a reference
 * ends before it. (Greedy, as the rules are the same for every beam.) */
static void test_model_refs(void) {
    edge_context c = sample();
    char *block = edge_context_block(&c, "coffee?");
    ng_error err;
    /* "\n" (the Alpaca prompt's last token), "{", "po", "i", "1" / "9", "}", end of text */
    ng_model *ok = chain_model((int[]){198, 90, 7501, 72, 16, 92, 50256}, 7),
             *nine = chain_model((int[]){198, 90, 7501, 72, 24, 92, 50256}, 7),
             *cut = chain_model((int[]){198, 464, 90, 7501, 50256}, 5); /* "The", "{", "po", end */
    REQUIRE(ok->tok && nine->tok && cut->tok, "tests/testdata/gpt2");
    /* 5 tokens: the chain's end of text would come before the other references (see below) */
    char *t = edge_complete_search(ok, NULL, block, 5, 1, &err);
    CHECK(t && !strcmp(t, "Starbucks"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t);
    t = edge_complete_search(nine, NULL, block, 5, 1, &err);
    CHECK(t && !strcmp(t, "Starbucks"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t);
    t = edge_complete_search(cut, NULL, block, 3, 1, &err); /* "The{po" at the limit: the open reference goes */
    CHECK(t && !strcmp(t, "The"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t), free(block);
    ng_model_free(ok);
    ng_model_free(nine);
    ng_model_free(cut);
}

/* No run of 3 tokens is written twice: a model whose position embeddings (10x its token
 * embeddings, one axis per token) ask for " on Sunday" over and over after the prompt writes it
 * twice, then its second choice where another " on" would repeat " on Sunday on". */
static void test_model_no_repeat(void) {
    edge_context c = sample();
    ng_error err;
    ng_model *m = chain_model((int[]){198}, 1); /* zero layers' worth of weights, as above */
    REQUIRE(m->tok, "tests/testdata/gpt2");
    char *block = edge_context_block(&c, "plans?"), *prompt = chat_alpaca_prompt(block, "");
    int n;
    free(tok_encode(m->tok, prompt, strlen(prompt), &n));
    const int on = 319, sunday = 3502;
    float *E = m->tok_embd->data, *P = m->pos_embd->data;
    memset(E + 198 * 64, 0, 64 * sizeof(float));
    E[on * 64 + 0] = 1, E[sunday * 64 + 1] = 1;
    for (int p = n - 1; p < n + 8; p++) P[p * 64 + ((p - n + 1) & 1)] = 10; /* " on" after the prompt */
    /* the 5th token would be " on" (" on Sunday on" again): " Sunday" (its input's axis) instead */
    char *t = edge_complete_search(m, NULL, block, 6, 1, &err);
    CHECK(t && !strcmp(t, " on Sunday on Sunday Sunday Sunday"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t), free(prompt), free(block);
    ng_model_free(m);
}

/* A GPT-2 that writes script[0..n) after the prompt of block, token by token by position: its
 * position embeddings point 10x along the next token's own axis, the tokens' embeddings 1x
 * along theirs (so where the script ends, a token asks for itself). */
static ng_model *script_model(const char *block, const int *script, int n) {
    ng_model *m = chain_model((int[]){198}, 1);
    if (!m->tok) return m;
    char *prompt = chat_alpaca_prompt(block, "");
    int np;
    free(tok_encode(m->tok, prompt, strlen(prompt), &np));
    free(prompt);
    float *E = m->tok_embd->data, *P = m->pos_embd->data;
    memset(E + 198 * 64, 0, 64 * sizeof(float));
    int axis_tok[64], n_axis = 0;
    for (int k = 0; k < n; k++) {
        int a = 0;
        while (a < n_axis && axis_tok[a] != script[k]) a++;
        if (a == n_axis) axis_tok[n_axis++] = script[k], E[(size_t)script[k] * 64 + a] = 1;
        P[(size_t)(np - 1 + k) * 64 + a] = 10;
    }
    return m;
}

/* Once the text holds a reference, the end of text (or a line break) waits until every
 * reference the block can fill is written; a text without references ends when the model
 * says. (Greedy.) */
static void test_model_coverage(void) {
    const char *block = "[context]\nnearby cafe: Starbucks 350 m\n[request]\ncoffee?";
    ng_error err;
    /* "{poi1} {dist1} {request}", end of text; then "{poi1}", end of text */
    ng_model *both = script_model(block, (int[]){90, 7501, 72, 16, 92, 1391, 17080, 16, 92, 1391, 25927, 92, 50256}, 13),
             *one = script_model(block, (int[]){90, 7501, 72, 16, 92, 50256}, 6);
    REQUIRE(both->tok && one->tok, "tests/testdata/gpt2");
    char *t = edge_complete_search(both, NULL, block, 16, 1, &err);
    CHECK(t && !strcmp(t, "Starbucks 350 m coffee?"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t);
    t = edge_complete_search(one, NULL, block, 12, 1, &err);
    CHECK(t && !strncmp(t, "Starbucks", 9) && strlen(t) > 9, "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t);
    ng_model *literal = script_model(block, (int[]){464, 50256}, 2); /* "The", end of text */
    t = edge_complete_search(literal, NULL, block, 12, 1, &err);
    CHECK(t && !strcmp(t, "The"), "[%s] %s", t ? t : "(null)", t ? "" : err.msg);
    free(t);
    ng_model_free(literal);
    ng_model_free(both);
    ng_model_free(one);
    /* the user line's preferences: "Note: {prefs}.", end of text */
    const char *user = "[context]\nuser: vegan, travels on foot; language en\n[request]\nlunch?";
    ng_model *prefs = script_model(user, (int[]){6425, 25, 1391, 3866, 9501, 27422, 50256}, 7);
    t = edge_complete_search(prefs, NULL, user, 12, 1, &err);
    /* {language} is not written yet: the end of text waits, and the text goes on past "." */
    CHECK(t && !strncmp(t, "Note: vegan, travels on foot.", 29) && strlen(t) > 29, "[%s] %s", t ? t : "(null)",
          t ? "" : err.msg);
    free(t);
    ng_model_free(prefs);
}

/* Beam search keeps a likelier whole over a greedy first step. The model (zero layers, as
 * above) writes after the prompt " on" (its logit 2.4) before " Sunday" (0.3): position
 * embedding 10 along " on"'s axis, 0.4 along " Sunday"'s, token embeddings " on" 0.3 along its
 * axis, " Sunday" 1 along its axis and 1 along that of "\n\n" (which has 4): after " on" every
 * token is unlikely (" on" again at 2.4 among 50,000 at 0), after " Sunday" the blank line that
 * ends the prompt is near certain. Greedy writes " on" and goes on at about -10.8 a token;
 * the beams end with " Sunday" (mean log-probability about -5.3). */
static void test_model_beams(void) {
    const char *block = "[context]\n[request]\nplans?";
    ng_error err;
    ng_model *m = chain_model((int[]){198}, 1);
    REQUIRE(m->tok, "tests/testdata/gpt2");
    char *prompt = chat_alpaca_prompt(block, "");
    int n;
    free(tok_encode(m->tok, prompt, strlen(prompt), &n));
    free(prompt);
    const int on = 319, sunday = 3502, blank = 628;
    float *E = m->tok_embd->data, *P = m->pos_embd->data;
    memset(E + 198 * 64, 0, 64 * sizeof(float));
    E[on * 64 + 0] = 0.3f, E[sunday * 64 + 1] = 1, E[sunday * 64 + 2] = 1, E[blank * 64 + 2] = 4;
    P[(n - 1) * 64 + 0] = 10, P[(n - 1) * 64 + 1] = 0.4f;
    char *g = edge_complete_search(m, NULL, block, 8, 1, &err), *b = edge_complete_block(m, NULL, block, 8, &err);
    CHECK(g && !strncmp(g, " on", 3), "greedy: [%s]", g ? g : err.msg);
    CHECK(b && !strcmp(b, " Sunday"), "beams: [%s]", b ? b : err.msg);
    free(g), free(b);
    CHECK(!edge_complete_search(m, NULL, block, 8, EDGE_MAX_BEAMS + 1, &err) && strstr(err.msg, "beam"), "%s", err.msg);
    ng_model_free(m);
}

/* A model with the real GPT-2 vocabulary runs the completion path end to end, deterministically. */
static void test_model_completion(void) {
    ng_hparams hp = {.arch = NG_ARCH_GPT2, .n_vocab = 50257, .n_ctx = 512, .n_embd = 64, .n_head = 4, .n_head_kv = 4,
                     .n_layer = 1, .n_ff = 128, .norm_eps = 1e-5f};
    ng_model *m = ng_model_random(&hp, NG_F32, 3);
    ng_error err;
    m->tok = tok_load("tests/testdata/gpt2", &err);
    REQUIRE(m->tok, "%s", err.msg);
    edge_context c = sample();
    char *a = edge_complete(m, NULL, &c, "find me a coffee", 12, EDGE_BEAMS, &err),
         *b = edge_complete(m, NULL, &c, "find me a coffee", 12, EDGE_BEAMS, &err);
    CHECK(a && b && !strcmp(a, b), "not deterministic");
    free(a), free(b);
    hp.n_ctx = 64;
    ng_model *small = ng_model_random(&hp, NG_F32, 3);
    small->tok = tok_load("tests/testdata/gpt2", &err);
    char *c2 = edge_complete(small, NULL, &c, "find me a coffee", 32, 1, &err);
    CHECK(!c2 && strstr(err.msg, "context"), "an overflowing prompt must be an error: %s", err.msg);
    ng_model_free(small);
    ng_model_free(m);
}

int main(void) {
    RUN(test_context_block);
    RUN(test_template);
    RUN(test_fill_refs);
    RUN(test_model_refs);
    RUN(test_model_no_repeat);
    RUN(test_model_coverage);
    RUN(test_model_beams);
    RUN(test_model_completion);
    TEST_EXIT();
}
