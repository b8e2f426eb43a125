/* test_jsonc — JSON-constrained decoding (src/sample/jsonc.c): a table of grammar and schema
 * cases fed byte by byte, schema errors, random documents built from schemas, and a simulated
 * decode loop over the real GPT-2 vocabulary whose every EOS-ended output must parse with cJSON
 * and validate. Run from the repository root. JSONC_BENCH=1 also prints jsonc_mask timings
 * (never checked: tests check correctness, not speed). */
#include "sample/jsonc.h"

#include <cjson/cJSON.h>
#include <stdint.h>

#include "test.h"

enum { COMPLETE = -1, PREFIX = -2 };

typedef struct {
    const char *schema; /* NULL: any JSON object */
    const char *text;
    int expect; /* COMPLETE, PREFIX, or the index of the first rejected byte */
} jcase;

#define S_PERSON                                                                                                      \
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":4},"            \
    "\"age\":{\"type\":\"integer\"},\"nick\":{\"type\":\"string\"}},\"required\":[\"name\",\"age\"],"                  \
    "\"additionalProperties\":false}"
#define S_OPEN "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\",\"b\"]}"
#define S_NUM "{\"type\":\"number\"}"
#define S_INT "{\"type\":\"integer\"}"
#define S_STR "{\"type\":\"string\"}"
#define S_ENUM "{\"enum\":[1,12,\"red\",\"re\\\"d\",null,[1,2],{\"k\":true}]}"
#define S_ARR "{\"type\":\"array\",\"items\":{\"type\":[\"integer\",\"null\"]},\"minItems\":1,\"maxItems\":2}"
#define S_CONST "{\"type\":\"object\",\"properties\":{\"v\":{\"const\":\"x\"}},\"additionalProperties\":false}"
#define S_BOOL "{\"type\":[\"boolean\",\"null\"]}"

static const jcase cases[] = {
    /* json_object: any object, every grammar corner inside */
    {NULL, "{}", COMPLETE},
    {NULL, " {\"a\" : [1, -0, 0.5, 1e+10, 2E-3, -12.25e7, true, false, null, {}, []]} ", COMPLETE},
    {NULL, "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\ude00 caf\xc3\xa9 \xf0\x9f\x98\x80\"}", COMPLETE},
    {NULL, "{\"a\":1", PREFIX},
    {NULL, "[]", 0},           /* json_object needs an object */
    {NULL, "{\"a\":01}", 6},   /* leading zero */
    {NULL, "{\"a\":1.}", 7},   /* fraction needs a digit */
    {NULL, "{\"a\":.5}", 5},
    {NULL, "{\"a\":+1}", 5},
    {NULL, "{\"a\":NaN}", 5},
    {NULL, "{\"a\":1e}", 7},
    {NULL, "{\"a\":1e+}", 8},
    {NULL, "{\"a\":-}", 6},
    {NULL, "{\"a\":tru}", 8},
    {NULL, "{\"a\":truex}", 9},
    {NULL, "{\"a\":nul1}", 8},
    {NULL, "{\"a\":1,}", 7},    /* trailing comma */
    {NULL, "{\"a\" 1}", 5},     /* missing colon */
    {NULL, "{a:1}", 1},         /* unquoted key */
    {NULL, "{\"a\":[1,]}", 8},
    {NULL, "{\"a\":\"x\ty\"}", 7}, /* raw control character */
    {NULL, "{\"a\":\"\\x\"}", 7},   /* unknown escape */
    {NULL, "{\"a\":\"\\u00G0\"}", 10},
    {NULL, "{\"a\":\"\\u0000\"}", 11},     /* U+0000 cannot live in a C string */
    {NULL, "{\"a\":\"\\uDC00\"}", 9},      /* lone low surrogate: rejected at its second digit */
    {NULL, "{\"a\":\"\\uD800x\"}", 12},    /* high surrogate without its low half */
    {NULL, "{\"a\":\"\\uD800\\u0041\"}", 14},
    {NULL, "{\"a\":\"\\uD800\\n\"}", 13},
    {NULL, "{\"a\":\"\xc3\x28\"}", 7},    /* bad continuation */
    {NULL, "{\"a\":\"\xc0\xaf\"}", 6},    /* overlong */
    {NULL, "{\"a\":\"\xe0\x80\x80\"}", 7}, /* overlong 3-byte */
    {NULL, "{\"a\":\"\xed\xa0\x80\"}", 7}, /* UTF-8 surrogate */
    {NULL, "{\"a\":\"\xf4\x90\x80\x80\"}", 7}, /* above U+10FFFF */
    {NULL, "{\"a\":\"\xff\"}", 6},
    {NULL, "{\"a\":\"\xe2\x82", PREFIX},
    {NULL, "{   }", 3},          /* at most two whitespace bytes in a row */
    {NULL, "{ \n\"a\":1}", COMPLETE},
    {NULL, "{\"a\": \n 1}", 7},
    {NULL, "{} x", 3},
    {NULL, "{}   ", 4},
    {NULL, "{\"a\":123456789012345678901234567890123}", 37}, /* numbers are capped at 32 bytes */
    /* scalars at the top */
    {S_NUM, "-0", COMPLETE},
    {S_NUM, "0.5", COMPLETE},
    {S_NUM, "1e+10", COMPLETE},
    {S_NUM, "1E5 ", COMPLETE},
    {S_NUM, "12", COMPLETE},
    {S_NUM, "1.", PREFIX},
    {S_NUM, "\"1\"", 0},
    {S_NUM, "00", 1},
    {S_INT, "-0", COMPLETE},
    {S_INT, "42", COMPLETE},
    {S_INT, "4.0", 1},
    {S_INT, "4e2", 1},
    {S_STR, "\"\"", COMPLETE},
    {S_STR, "\"ab\"x", 4},
    {S_STR, "1", 0},
    {S_BOOL, "true", COMPLETE},
    {S_BOOL, "null", COMPLETE},
    {S_BOOL, "1", 0},
    {S_BOOL, "\"true\"", 0},
    /* properties, required, additionalProperties: false, min/maxLength */
    {S_PERSON, "{\"name\":\"ab\",\"age\":3}", COMPLETE},
    {S_PERSON, "{\"age\":-3, \"name\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\",\"nick\":\"\"}", COMPLETE},
    {S_PERSON, "{\"name\":\"ab\"}", 12},          /* "age" is required */
    {S_PERSON, "{\"nam\"", 5},                    /* not a property name */
    {S_PERSON, "{\"nx", 3},
    {S_PERSON, "{\"name\":\"\"", 9},              /* minLength 1 */
    {S_PERSON, "{\"name\":\"abcde\"", 13},        /* maxLength 4 */
    {S_PERSON, "{\"name\":\"a\\u0062cd\\n", 18},  /* an escape counts one character */
    {S_PERSON, "{\"name\":\"a\",\"name\"", 14},   /* a property twice: refused once only \"nick\" could follow */
    {S_PERSON, "{\"name\":\"a\",\"age\":1,\"nick\":\"\",", 29}, /* no property left to name */
    {S_PERSON, "{\"age\":1.5", 8},
    {S_PERSON, "{\"n\\u0061me\"", 3},             /* keys of listed properties are typed plainly */
    {S_PERSON, "[", 0},
    /* additionalProperties absent: other keys allowed, required names not listed still required */
    {S_OPEN, "{\"a\":1,\"b\":[{}],\"zz\":null}", COMPLETE},
    {S_OPEN, "{\"a\":1,\"zz\":null}", 16},
    {S_OPEN, "{\"a\":1,\"a\"", 9},
    {S_OPEN, "{\"b\\u0061\":1", 4}, /* no \\u in keys where properties are listed */
    {S_OPEN, "{\"b\\\"\\n\":1,\"a\":1,\"b\":2}", COMPLETE},
    {"{\"type\":\"object\"}", "{\"b\\u0061\\/\":1}", COMPLETE},
    {S_OPEN, "{\"ab\":1, \"a\" :\"x\"", 14},
    /* enum / const: the exact serializations */
    {S_ENUM, "1", COMPLETE},
    {S_ENUM, "12", COMPLETE},
    {S_ENUM, "13", 1},
    {S_ENUM, "\"red\"", COMPLETE},
    {S_ENUM, "\"re\\\"d\"", COMPLETE},
    {S_ENUM, "\"rex", 3},
    {S_ENUM, "null", COMPLETE},
    {S_ENUM, "[1,2]", COMPLETE},
    {S_ENUM, "[1, 2]", 3},
    {S_ENUM, "{\"k\":true}", COMPLETE},
    {S_ENUM, "true", 0},
    {S_CONST, "{\"v\":\"x\"}", COMPLETE},
    {S_CONST, "{}", COMPLETE},
    {S_CONST, "{\"v\":\"y\"}", 6},
    {S_CONST, "{\"v\": \"x\" }", COMPLETE},
    /* arrays: items, minItems, maxItems */
    {S_ARR, "[1]", COMPLETE},
    {S_ARR, "[null, 2]", COMPLETE},
    {S_ARR, "[]", 1},
    {S_ARR, "[1,2,", 4},
    {S_ARR, "[1.5]", 2},
    {S_ARR, "[\"a\"]", 1},
    {"{\"type\":\"array\",\"maxItems\":0}", "[ ]", COMPLETE},
    {"{\"type\":\"array\",\"maxItems\":0}", "[1", 1},
    {"{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":0}}}", "[[\"\",\"\"],[]]", COMPLETE},
    {"{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":0}}}", "7", COMPLETE},
    {"true", "\"any\"", COMPLETE},
    {"{}", "[{\"a\":[null]}]", COMPLETE},
};

/* Feeds text byte by byte, checking jsonc_try against jsonc_feed; returns the first rejected
 * index, or COMPLETE / PREFIX. */
static int feed_all(jsonc *c, const char *text, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int t = jsonc_try(c, text + i, 1);
        int f = jsonc_feed(c, text + i, 1);
        CHECK(t == (f == NG_OK), "try %d and feed %d disagree at byte %zu of %s", t, f, i, text);
        if (f != NG_OK) return (int)i;
    }
    return jsonc_complete(c) ? COMPLETE : PREFIX;
}

/* The document parses with cJSON and validates by the tree walk. */
static int parses(const jsonc *c, const char *text, size_t n) {
    cJSON *v = cJSON_ParseWithLength(text, n);
    if (!v) return 0;
    cJSON_Delete(v);
    return jsonc_validate(c, text, n);
}

static void test_grammar_table(void) {
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const jcase *tc = &cases[k];
        ng_error err = {{0}};
        jsonc *c = jsonc_new(tc->schema, &err);
        REQUIRE(c, "case %zu: %s", k, err.msg);
        size_t n = strlen(tc->text);
        int got = feed_all(c, tc->text, n);
        CHECK(got == tc->expect, "case %zu %s: got %d, want %d", k, tc->text, got, tc->expect);
        if (tc->expect == COMPLETE) {
            CHECK(parses(c, tc->text, n), "case %zu %s: accepted but cJSON / validator disagree", k, tc->text);
            jsonc *fresh = jsonc_new(tc->schema, &err);
            CHECK(jsonc_try(fresh, tc->text, n) && jsonc_feed(fresh, tc->text, n) == NG_OK && jsonc_complete(fresh),
                  "case %zu: whole-text feed differs", k);
            jsonc_free(fresh);
        } else if (tc->expect >= 0) {
            /* a rejected byte leaves the state as it was: the prefix is still live */
            jsonc *fresh = jsonc_new(tc->schema, &err);
            CHECK(jsonc_feed(fresh, tc->text, (size_t)tc->expect + 1) == NG_ERR, "case %zu: whole feed accepted", k);
            CHECK(jsonc_feed(fresh, tc->text, (size_t)tc->expect) == NG_OK, "case %zu: prefix refused", k);
            jsonc_free(fresh);
        }
        jsonc_free(c);
    }
}

static void test_schema_errors(void) {
    static const struct {
        const char *schema, *want;
    } bad[] = {
        {"{\"type\":\"string\",\"pattern\":\"a+\"}", "\"pattern\""},
        {"{\"anyOf\":[{}]}", "\"anyOf\""},
        {"{\"$ref\":\"#/x\"}", "\"$ref\""},
        {"{\"type\":\"number\",\"minimum\":1}", "\"minimum\""},
        {"{\"properties\":{\"a\":{\"format\":\"date\"}}}", "/properties/a"},
        {"{\"type\":\"strin\"}", "\"type\""},
        {"{\"type\":[]}", "\"type\""},
        {"{\"items\":[{}]}", "tuple"},
        {"{\"minLength\":-1}", "minLength"},
        {"{\"minItems\":3,\"maxItems\":2}", "minItems"},
        {"{\"type\":\"integer\",\"enum\":[1.5,\"a\"]}", "enum"},
        {"{\"required\":[\"x\"],\"additionalProperties\":false}", "\"x\""},
        {"{\"type\":\"object\",", "not valid JSON"},
        {"[1]", "object"},
        {"{\"properties\":{\"a\\u0001\":{}}}", "control"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ng_error err = {{0}};
        jsonc *c = jsonc_new(bad[k].schema, &err);
        CHECK(!c, "schema %s accepted", bad[k].schema);
        CHECK(strstr(err.msg, bad[k].want), "schema %s: error \"%s\" does not mention %s", bad[k].schema, err.msg, bad[k].want);
        jsonc_free(c);
    }
    /* nesting: 64 levels compile, 65 do not */
    for (int depth = 63; depth <= 64; depth++) {
        char s[2048] = "";
        for (int i = 0; i < depth; i++) strcat(s, "{\"items\":");
        strcat(s, "{}");
        for (int i = 0; i < depth; i++) strcat(s, "}");
        ng_error err = {{0}};
        jsonc *c = jsonc_new(s, &err);
        if (depth == 63) {
            REQUIRE(c, "63 levels refused: %s", err.msg);
            char doc[256] = "";
            for (int i = 0; i < 64; i++) strcat(doc, "[");
            CHECK(jsonc_feed(c, doc, 64) == NG_OK, "64 open arrays refused");
            CHECK(!jsonc_try(c, "[", 1), "a 65th container accepted");
        } else {
            CHECK(!c && strstr(err.msg, "deeper"), "65 levels: %s", err.msg);
        }
        jsonc_free(c);
    }
}

/* ---- random documents generated from a schema --------------------------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static unsigned rnd(uint64_t *s, unsigned n) { return (unsigned)(rng_next(s) % n); }

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void put(sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        b->cap = 2 * (b->n + k + 1);
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

static void ws(sbuf *b, uint64_t *r) {
    static const char *const w[] = {"", "", "", " ", "\n", " \t", "\r\n"};
    put(b, w[rnd(r, 7)]);
}

static unsigned num_or(const cJSON *s, const char *k, unsigned dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, k);
    return cJSON_IsNumber(v) ? (unsigned)v->valuedouble : dflt;
}

static void gen(const cJSON *s, sbuf *b, uint64_t *r, int depth) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(s, "enum"), *k = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (e || k) {
        const cJSON *v = k ? k : cJSON_GetArrayItem(e, (int)rnd(r, (unsigned)cJSON_GetArraySize(e)));
        char *t = cJSON_PrintUnformatted(v);
        put(b, t);
        free(t);
        return;
    }
    const char *types[8];
    int nt = 0;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(ty)) types[nt++] = ty->valuestring;
    else if (cJSON_IsArray(ty))
        for (const cJSON *t = ty->child; t; t = t->next) types[nt++] = t->valuestring;
    else {
        static const char *const all[] = {"object", "array", "string", "number", "integer", "boolean", "null"};
        for (int i = depth > 3 ? 2 : 0; i < 7; i++) types[nt++] = all[i];
    }
    const char *t = types[rnd(r, (unsigned)nt)];
    if (!strcmp(t, "object")) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties"), *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        const cJSON *add = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
        int first = 1;
        put(b, "{");
        for (const cJSON *p = props ? props->child : NULL; p; p = p->next) {
            int needed = 0;
            for (const cJSON *q = req ? req->child : NULL; q; q = q->next) needed |= !strcmp(q->valuestring, p->string);
            if (!needed && rnd(r, 2)) continue;
            if (!first) put(b, ",");
            first = 0;
            ws(b, r);
            put(b, "\"");
            put(b, p->string);
            put(b, "\"");
            ws(b, r);
            put(b, ":");
            ws(b, r);
            gen(p, b, r, depth + 1);
            ws(b, r);
        }
        if (!cJSON_IsFalse(add) && depth < 4 && rnd(r, 2)) {
            if (!first) put(b, ",");
            put(b, rnd(r, 2) ? (props ? "\"x_\xc3\xa9\\n\":" : "\"x_\\u00e9\\n\":") : "\"zz\" : ");
            gen(cJSON_IsObject(add) ? add : NULL, b, r, depth + 1);
        }
        put(b, "}");
    } else if (!strcmp(t, "array")) {
        unsigned lo = num_or(s, "minItems", 0), hi = num_or(s, "maxItems", lo + 3);
        if (hi > lo + 3) hi = lo + 3;
        unsigned n = depth > 4 ? lo : lo + rnd(r, hi - lo + 1);
        put(b, "[");
        for (unsigned i = 0; i < n; i++) {
            if (i) put(b, ",");
            ws(b, r);
            gen(cJSON_GetObjectItemCaseSensitive(s, "items"), b, r, depth + 1);
        }
        put(b, "]");
    } else if (!strcmp(t, "string")) {
        static const char *const chars[] = {"a", "Z", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\uD83D\\uDE00",
                                            "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\\t", "~", "\x7f"};
        unsigned lo = num_or(s, "minLength", 0), hi = num_or(s, "maxLength", lo + 6);
        if (hi > lo + 6) hi = lo + 6;
        unsigned n = lo + rnd(r, hi - lo + 1);
        put(b, "\"");
        for (unsigned i = 0; i < n; i++) put(b, chars[rnd(r, sizeof chars / sizeof chars[0])]);
        put(b, "\"");
    } else if (!strcmp(t, "number")) {
        static const char *const nums[] = {"-0", "0.5", "1e+10", "-12.25E-3", "42", "3.14159", "0e0", "-7"};
        put(b, nums[rnd(r, 8)]);
    } else if (!strcmp(t, "integer")) {
        static const char *const ints[] = {"-0", "0", "7", "-123", "9007199254740993"};
        put(b, ints[rnd(r, 5)]);
    } else if (!strcmp(t, "boolean")) {
        put(b, rnd(r, 2) ? "true" : "false");
    } else {
        put(b, "null");
    }
}

#define S_RICH                                                                                                        \
    "{\"type\":\"object\",\"properties\":{"                                                                          \
    "\"name\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":8},"                                                \
    "\"age\":{\"type\":\"integer\"},\"score\":{\"type\":[\"number\",\"null\"]},"                                    \
    "\"color\":{\"enum\":[\"red\",\"green\",\"r\\u00e9d\",7,null]},\"kind\":{\"const\":\"k\"},"                     \
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":3},\"minItems\":1,\"maxItems\":4}," \
    "\"pos\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},\"y\":{\"type\":\"number\"}},"         \
    "\"required\":[\"x\",\"y\"],\"additionalProperties\":false},"                                                   \
    "\"any\":{},\"ok\":{\"type\":\"boolean\"}},"                                                                      \
    "\"required\":[\"name\",\"age\",\"tags\"],\"additionalProperties\":false}"

static const char *const gen_schemas[] = {
    S_RICH,
    "{\"type\":\"object\"}",
    ("{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},"
     "\"required\":[\"id\"],\"additionalProperties\":{\"type\":\"string\"}},\"maxItems\":3}"),
    "{\"type\":[\"string\",\"number\",\"boolean\",\"null\"],\"maxLength\":5}",
};

static void test_random_documents(void) {
    uint64_t r = 12345;
    for (size_t k = 0; k < sizeof gen_schemas / sizeof gen_schemas[0]; k++) {
        cJSON *s = cJSON_Parse(gen_schemas[k]);
        ng_error err = {{0}};
        jsonc *c = jsonc_new(gen_schemas[k], &err);
        REQUIRE(s && c, "schema %zu: %s", k, err.msg);
        for (int i = 0; i < 300; i++) {
            sbuf b = {0};
            put(&b, "");
            ws(&b, &r);
            gen(s, &b, &r, 0);
            ws(&b, &r);
            jsonc *d = jsonc_clone(c);
            int got = feed_all(d, b.p, b.n);
            CHECK(got == COMPLETE, "schema %zu: generated %s: got %d", k, b.p, got);
            CHECK(parses(d, b.p, b.n), "schema %zu: %s does not parse/validate", k, b.p);
            jsonc_free(d);
            free(b.p);
        }
        jsonc_free(c);
        cJSON_Delete(s);
    }
}

/* ---- a simulated decode loop over the GPT-2 vocabulary ----------------------------------- */

static float rnd_logit(uint64_t *r) { return (float)(rng_next(r) >> 40) / (float)(1 << 24) * 8.0f; }

/* Reference for the mask: whether id may come next, by jsonc_try on its bytes. */
static int ref_allowed(const jsonc *c, const ng_tokenizer *tok, int id, int eos) {
    if (id == eos) return jsonc_complete(c);
    size_t len = 0;
    const char *p = tok_piece(tok, id, &len);
    return p && len && jsonc_try(c, p, len);
}

static int count_finite(const float *x, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += x[i] != -INFINITY;
    return k;
}

static const char *const decode_schemas[] = {
    NULL,
    S_RICH,
    "{\"type\":\"object\",\"properties\":{\"pts\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":"
    "{\"x\":{\"type\":\"number\"},\"y\":{\"type\":[\"integer\",\"null\"]}},\"required\":[\"x\",\"y\"],"
    "\"additionalProperties\":false},\"minItems\":1,\"maxItems\":3},\"meta\":{}},\"required\":[\"pts\"],"
    "\"additionalProperties\":false}",
    "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":5},\"minItems\":2}",
};

static void test_decode_gpt2(void) {
    ng_error err = {{0}};
    ng_tokenizer *tok = tok_load(TESTDATA("gpt2"), &err);
    if (!tok) SKIP("no GPT-2 vocabulary: %.200s", err.msg);
    int nv = tok_n_vocab(tok), eos = tok_eos(tok);
    int byte_id[256];
    for (int b = 0; b < 256; b++) byte_id[b] = -1;
    for (int id = 0; id < nv; id++) {
        size_t len;
        const char *p = tok_piece(tok, id, &len);
        if (p && len == 1 && byte_id[(unsigned char)p[0]] < 0) byte_id[(unsigned char)p[0]] = id;
    }
    float *logits = malloc((size_t)nv * sizeof *logits), *full = malloc((size_t)nv * sizeof *full);
    int *live = malloc((size_t)nv * sizeof *live);
    uint64_t r = 2024;
    int nl = 0; /* live: the ids with finite logits this step */
    for (int id = 0; id < nv; id++) logits[id] = full[id] = -INFINITY;
    enum { RUNS = 200, BUDGET = 16, CAP = 400, SUBSET = 500 };
    for (size_t k = 0; k < sizeof decode_schemas / sizeof decode_schemas[0]; k++) {
        jsonc *proto = jsonc_new(decode_schemas[k], &err);
        REQUIRE(proto, "%s", err.msg);
        int ended = 0, compared = 0;
        double t_schema = ng_time();
        long steps = 0;
        for (int run = 0; run < RUNS; run++) {
            jsonc *c = jsonc_clone(proto);
            for (int i = 0; i < nl; i++) logits[live[i]] = full[live[i]] = -INFINITY;
            nl = 0;
            sbuf text = {0};
            put(&text, "");
            int whole_vocab = run == 1; /* one run per schema gives every token a finite logit */
            int step;
            for (step = 0; step < CAP; step++, steps++) {
                /* the "model": random logits over the byte tokens and a random sample of the rest */
                /* both arrays are all -INFINITY but for last step's live ids: clear those */
                for (int i = 0; i < nl; i++) logits[live[i]] = full[live[i]] = -INFINITY;
                nl = 0;
                if (whole_vocab) {
                    for (int id = 0; id < nv; id++) logits[id] = rnd_logit(&r), live[nl++] = id;
                } else {
                    for (int b = 0; b < 256; b++)
                        if (byte_id[b] >= 0) logits[byte_id[b]] = rnd_logit(&r), live[nl++] = byte_id[b];
                    for (int i = 0; i <= SUBSET; i++) {
                        int id = i == SUBSET ? eos : (int)rnd(&r, (unsigned)nv);
                        if (logits[id] == -INFINITY) logits[id] = rnd_logit(&r), live[nl++] = id;
                    }
                }
                if (step >= BUDGET) { /* finish: prefer tokens that close things */
                    logits[eos] += 200;
                    logits[byte_id['}']] += 100, logits[byte_id[']']] += 100;
                    logits[byte_id['"']] += 110; /* inside a string '}' would be text */
                    for (int d = '0'; d <= '9'; d++) logits[byte_id[d]] += 50;
                    logits[byte_id[',']] += 60; /* ends a number that '}' cannot end yet */
                }
                for (int i = 0; i < nl; i++) full[live[i]] = logits[live[i]];
                jsonc_mask(c, tok, full, nv, eos);
                int nfull = 0;
                for (int i = 0; i < nl; i++) nfull += full[live[i]] != -INFINITY;
                CHECK(nfull > 0, "schema %zu run %d: the mask left no token after %s", k, run, text.p);
                if (run % 8 == 0) { /* the mask against jsonc_try, token by token */
                    for (int i = 0; i < nl; i++) {
                        int id = live[i];
                        CHECK((full[id] != -INFINITY) == ref_allowed(c, tok, id, eos), "schema %zu: token %d after %s", k, id, text.p);
                    }
                    compared++;
                }
                float *use = full;
                if (run % 2) { /* mask_top: a subset of the full mask, never empty */
                    jsonc_mask_top(c, tok, logits, nv, eos, 16);
                    int nt = 0;
                    for (int i = 0; i < nl; i++) {
                        int id = live[i];
                        if (logits[id] == -INFINITY) continue;
                        nt++;
                        CHECK(full[id] != -INFINITY, "mask_top kept token %d that the mask refuses", id);
                    }
                    CHECK(nt > 0 && (nt <= 16 || nt == nfull), "mask_top kept %d tokens", nt); /* or fell back */
                    use = logits;
                }
                int best = -1;
                for (int i = 0; i < nl; i++)
                    if (use[live[i]] != -INFINITY && (best < 0 || use[live[i]] > use[best])) best = live[i];
                if (best < 0) break;
                if (best == eos) {
                    ended++;
                    break;
                }
                size_t len;
                const char *p = tok_piece(tok, best, &len);
                REQUIRE(jsonc_feed(c, p, len) == NG_OK, "a masked-in token was refused");
                char piece[256];
                snprintf(piece, sizeof piece, "%.*s", (int)len, p);
                if (len < sizeof piece) put(&text, piece);
            }
            if (getenv("JSONC_SHOW") && run < 3) fprintf(stderr, "run %d (%d steps): %s\n", run, step, text.p);
            if (step < CAP && text.p && jsonc_complete(c)) {
                CHECK(parses(c, text.p, text.n), "schema %zu run %d: %s does not parse/validate", k, run, text.p);
            } else {
                CHECK(0, "schema %zu run %d did not end by EOS within %d tokens: %s", k, run, CAP, text.p);
            }
            free(text.p);
            jsonc_free(c);
        }
        CHECK(ended == RUNS, "schema %zu: %d of %d runs ended by EOS", k, ended, RUNS);
        if (getenv("JSONC_BENCH")) fprintf(stderr, "schema %zu: %.2f s, %ld steps\n", k, ng_time() - t_schema, steps);
        jsonc_free(proto);
        (void)compared;
    }
    if (getenv("JSONC_BENCH")) {
        /* timings: a state inside a string (most tokens pass the first-byte filter) and one
         * after '{' (few do), all 50257 logits finite */
        jsonc *c = jsonc_new(S_RICH, &err);
        const char *states[] = {"{\"name\":\"ab", "{"};
        for (int s = 0; s < 2; s++) {
            jsonc *d = jsonc_clone(c);
            jsonc_feed(d, states[s], strlen(states[s]));
            for (int mode = 0; mode < 2; mode++) {
                int reps = 50;
                double t0 = ng_time();
                for (int i = 0; i < reps; i++) {
                    for (int id = 0; id < nv; id++) logits[id] = (float)((id * 2654435761u) % 1000);
                    if (mode) jsonc_mask_top(d, tok, logits, nv, eos, 40);
                    else jsonc_mask(d, tok, logits, nv, eos);
                }
                double ms = (ng_time() - t0) / reps * 1e3;
                fprintf(stderr, "jsonc bench: %s after '%s': %.3f ms per call (%d finite after)\n",
                        mode ? "jsonc_mask_top(k=40)" : "jsonc_mask", states[s], ms, count_finite(logits, nv));
            }
            jsonc_free(d);
        }
        jsonc_free(c);
    }
    free(logits);
    free(full);
    free(live);
    tok_free(tok);
}

int main(void) {
    RUN(test_grammar_table);
    RUN(test_schema_errors);
    RUN(test_random_documents);
    RUN(test_decode_gpt2);
    TEST_EXIT();
}
