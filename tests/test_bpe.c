/* test_bpe — GPT-2 byte-level BPE (src/tokenizer/bpe.c) against the `gpt-3-encoder` npm
 * package: tests/testdata/gpt2_bpe_cases.txt (made by tools/reference/bpe_fixture.js) holds
 * one case a line, "HEX_OF_UTF8_TEXT<TAB>id id ...", and tests/testdata/gpt2/ the vocabulary.
 * Also: byte-exact round trips (random bytes, invalid UTF-8 included), every id decodes, and
 * malformed vocabulary/merges files give errors. Owner: tokenizer. */
#include "test.h"
#include "tok_cases.h"
#include "tokenizer/bpe.h"

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#define VOCAB TESTDATA("gpt2/encoder.json")
#define MERGES TESTDATA("gpt2/vocab.bpe")
#define CASES TESTDATA("gpt2_bpe_cases.txt")

static bpe *g_bpe;
static tok_case *g_cases;
static int g_n_cases;

static bool load_cases(void) { return tok_cases_load(CASES, &g_cases, &g_n_cases); }

static void test_load_gpt2(void) {
    ng_error err = {{0}};
    g_bpe = bpe_load_files(VOCAB, MERGES, &err);
    REQUIRE(g_bpe, "%s", err.msg);
    CHECK(bpe_n_vocab(g_bpe) == 50257, "n_vocab %d", bpe_n_vocab(g_bpe));
    CHECK(bpe_token_id(g_bpe, "\xc4\xa0the", 5) == 262, "id of Ġthe is %d",
          bpe_token_id(g_bpe, "\xc4\xa0the", 5));
    CHECK(bpe_token_id(g_bpe, "<|endoftext|>", 13) == 50256, "<|endoftext|>");
    CHECK(bpe_token_id(g_bpe, "!", 1) == 0, "'!'");
    CHECK(bpe_token_id(g_bpe, "no such token here", 18) == -1, "missing token");
    bool parsed = load_cases(); /* not inside REQUIRE, which evaluates its condition twice */
    REQUIRE(parsed, "cannot parse the fixture");
    CHECK(g_n_cases >= 1000, "only %d fixture cases", g_n_cases);
}

static void test_fixture_encode(void) {
    if (!g_bpe || !g_n_cases) SKIP("vocabulary or fixture did not load");
    int bad = 0;
    for (int k = 0; k < g_n_cases; k++) {
        const tok_case *c = &g_cases[k];
        int n;
        int *ids = bpe_encode(g_bpe, c->text, c->len, &n);
        bool same = n == c->n_ids && memcmp(ids, c->ids, (size_t)n * sizeof *ids) == 0;
        if (!same && ++bad <= 5) {
            fprintf(stderr, "case %d: ", k + 1);
            print_escaped(c->text, c->len);
            fputc('\n', stderr);
            print_ids("expected", c->ids, c->n_ids);
            print_ids("got     ", ids, n);
        }
        free(ids);
    }
    CHECK(bad == 0, "%d of %d fixture cases differ from gpt-3-encoder", bad, g_n_cases);
}

static bool round_trips(const char *s, size_t n) {
    int n_ids;
    int *ids = bpe_encode(g_bpe, s, n, &n_ids);
    size_t len = 0;
    ng_error err = {{0}};
    char *back = bpe_decode(g_bpe, ids, n_ids, &len, &err);
    bool ok = back && len == n && memcmp(back, s, n) == 0;
    free(ids);
    free(back);
    return ok;
}

static void test_fixture_roundtrip(void) {
    if (!g_bpe || !g_n_cases) SKIP("vocabulary or fixture did not load");
    int bad = 0;
    for (int k = 0; k < g_n_cases; k++) {
        if (!round_trips(g_cases[k].text, g_cases[k].len) && ++bad <= 5) {
            fprintf(stderr, "case %d does not round-trip: ", k + 1);
            print_escaped(g_cases[k].text, g_cases[k].len);
            fputc('\n', stderr);
        }
    }
    CHECK(bad == 0, "%d fixture cases do not round-trip", bad);
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rng_next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

/* Random byte strings: pure noise, and mixtures of valid UTF-8 pieces with broken ones
 * (lone continuation bytes, truncated sequences, overlongs, surrogates, > U+10FFFF). */
static void test_random_roundtrip(void) {
    if (!g_bpe) SKIP("vocabulary did not load");
    /* clang-format off */
    static const char *parts[] = {
        " ", "  ", "\n", "\t", "a", "the", " the", "'s", "'", "1", "42", ".", ",", "!",
        "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", "\xe2\x80\xa8", "\xc2\xa0",
        "\x80", "\xff", "\xfe", "\xc2", "\xc3", "\xe6\x97", "\xf0\x9f\x98", /* broken */
        "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",                  /* overlong, surrogate, too big */
    };
    /* clang-format on */
    int n_parts = (int)(sizeof parts / sizeof parts[0]), bad = 0;
    char buf[512];
    for (int k = 0; k < 3000; k++) {
        size_t n = 0, want = rng_next() % 300;
        while (n < want) {
            if (k % 2) {
                buf[n++] = (char)(rng_next() & 0xFF);
            } else {
                const char *p = parts[rng_next() % (uint32_t)n_parts];
                size_t m = strlen(p);
                if (n + m > sizeof buf) break;
                memcpy(buf + n, p, m);
                n += m;
            }
        }
        if (!round_trips(buf, n) && ++bad <= 5) {
            fprintf(stderr, "random case %d does not round-trip: ", k);
            print_escaped(buf, n);
            fputc('\n', stderr);
        }
    }
    CHECK(bad == 0, "%d random byte strings do not round-trip", bad);
    CHECK(round_trips("", 0), "empty string");
    CHECK(round_trips("a\0b", 3), "embedded NUL");
}

/* An invalid byte is one "other" code point: it splits like punctuation. */
static void test_invalid_utf8_pieces(void) {
    if (!g_bpe) SKIP("vocabulary did not load");
    static const char *const whole[] = {"x\xff!y", "\xc3(", " \x80z", "a\xed\xa0\x80\x62"};
    static const char *const split[][3] = {
        {"x", "\xff!", "y"}, {"\xc3(", "", ""}, {" \x80", "z", ""}, {"a", "\xed\xa0\x80", "b"}};
    for (int k = 0; k < 4; k++) {
        int n, m, total = 0;
        int *ids = bpe_encode(g_bpe, whole[k], strlen(whole[k]), &n);
        int expect[64];
        for (int j = 0; j < 3; j++) {
            int *part = bpe_encode(g_bpe, split[k][j], strlen(split[k][j]), &m);
            for (int i = 0; i < m && total < 64; i++) expect[total++] = part[i];
            free(part);
        }
        CHECK(n == total && memcmp(ids, expect, (size_t)n * sizeof *ids) == 0, "invalid UTF-8 case %d", k);
        free(ids);
    }
}

static void test_every_id_decodes(void) {
    if (!g_bpe) SKIP("vocabulary did not load");
    int nv = bpe_n_vocab(g_bpe), bad = 0;
    for (int id = 0; id < nv; id++) {
        size_t len = 0;
        const char *s = bpe_token_bytes(g_bpe, id, &len);
        if (!s || len == 0) bad++;
    }
    CHECK(bad == 0, "%d ids have no bytes", bad);
    size_t len = 0;
    CHECK(bpe_token_bytes(g_bpe, -1, &len) == NULL, "id -1");
    CHECK(bpe_token_bytes(g_bpe, nv, &len) == NULL, "id n_vocab");
    const char *s = bpe_token_bytes(g_bpe, 262, &len);
    CHECK(s && len == 4 && memcmp(s, " the", 4) == 0, "id 262 is \" the\"");
    s = bpe_token_bytes(g_bpe, 50256, &len);
    CHECK(s && len == 13 && memcmp(s, "<|endoftext|>", 13) == 0, "id 50256");
    /* Every byte alone encodes to one token that decodes to that byte. */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int n;
        int *ids = bpe_encode(g_bpe, &c, 1, &n);
        s = n == 1 ? bpe_token_bytes(g_bpe, ids[0], &len) : NULL;
        CHECK(s && len == 1 && s[0] == c, "byte 0x%02x", b);
        free(ids);
    }
    ng_error err = {{0}};
    int ids[2] = {464, nv};
    CHECK(bpe_decode(g_bpe, ids, 2, &len, &err) == NULL && strstr(err.msg, "position 1"), "bad id: %s",
          err.msg);
}

/* GPT-2's byte alphabet, written out independently of bpe.c: the UTF-8 of byte b's symbol. */
static void alphabet_utf8(int b, char out[3]) {
    static int map[256];
    static bool init;
    if (!init) {
        int n = 0;
        for (int i = 0; i < 256; i++) {
            bool keep = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
            map[i] = keep ? i : 256 + n++;
        }
        init = true;
    }
    int cp = map[b];
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

/* A byte-alphabet vocabulary (ids 0..255 = bytes) plus extra tokens. */
static int small_vocab(ng_str *tokens, char store[256][3], const char *const *extra, int n_extra) {
    for (int b = 0; b < 256; b++) {
        alphabet_utf8(b, store[b]);
        tokens[b] = (ng_str){store[b], strlen(store[b])};
    }
    for (int i = 0; i < n_extra; i++) tokens[256 + i] = (ng_str){extra[i], strlen(extra[i])};
    return 256 + n_extra;
}

static void test_new_small(void) {
    ng_str tokens[300];
    char store[256][3];
    static const char *const extra[] = {"aa", "\xc4\xa0t", "\xc4\xa0th", "aaaa", "#,", ",$", "#,$"};
    int n = small_vocab(tokens, store, extra, 7);
    ng_str merges[] = {{"a a", 3}, {"\xc4\xa0 t", 4}, {"\xc4\xa0t h", 5}, {"aa aa", 5},
                       {"# ,", 3}, {", $", 3},        {"# ,$", 4}};
    ng_error err = {{0}};
    bpe *t = bpe_new(tokens, n, merges, 7, &err);
    REQUIRE(t, "%s", err.msg);
    struct {
        const char *text;
        int ids[8], n;
    } cases[] = {
        {"aaa", {256, 'a'}, 2},   /* left to right: (aa)(a) */
        {"aaaaa", {259, 'a'}, 2}, /* all "a a" first, then "aa aa" */
        {" th", {258}, 1},        /* " ?\p{L}+" keeps the space */
        {"  th", {' ', 258}, 2},  /* one space stays with the word */
        {"x's", {'x', '\'', 's'}, 3},
        /* gpt-3-encoder keys merges by "A,B": "#," + "$" has the key "#,,$" of the merge
         * "# ,$", so it merges too (plain BPE would stop at "#," "$") */
        {"#,$", {262}, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int m;
        int *ids = bpe_encode(t, cases[k].text, strlen(cases[k].text), &m);
        /* the single-byte ids are the bytes' alphabet ids, not the bytes: map them */
        int want[8];
        for (int i = 0; i < cases[k].n; i++) {
            int v = cases[k].ids[i];
            want[i] = v < 256 ? bpe_token_id(t, store[v], strlen(store[v])) : v;
        }
        CHECK(m == cases[k].n && memcmp(ids, want, (size_t)m * sizeof *ids) == 0, "small vocab case \"%s\"",
              cases[k].text);
        free(ids);
    }
    bpe_free(t);
}

static void test_new_errors(void) {
    ng_str tokens[300];
    char store[256][3];
    static const char *const extra[] = {"ab"};
    int n = small_vocab(tokens, store, extra, 1);
    ng_error err = {{0}};
    ng_str missing_part[] = {{"a b", 3}, {"a zz", 4}};
    CHECK(!bpe_new(tokens, n, missing_part, 2, &err) && strstr(err.msg, ":2:") && strstr(err.msg, "\"zz\""),
          "merge naming a missing token: %s", err.msg);
    ng_str missing_result[] = {{"b a", 3}};
    CHECK(!bpe_new(tokens, n, missing_result, 1, &err) && strstr(err.msg, "\"ba\" is not a token"),
          "merge whose result is missing: %s", err.msg);
    ng_str one_part[] = {{"ab", 2}};
    CHECK(!bpe_new(tokens, n, one_part, 1, &err) && strstr(err.msg, "two tokens"), "one part: %s", err.msg);
    ng_str three_parts[] = {{"a b c", 5}};
    CHECK(!bpe_new(tokens, n, three_parts, 1, &err) && strstr(err.msg, "two tokens"), "three parts: %s",
          err.msg);
    CHECK(!bpe_new(tokens, 100, NULL, 0, &err) && strstr(err.msg, "byte"), "missing byte tokens: %s",
          err.msg);
    CHECK(!bpe_new(tokens, 0, NULL, 0, &err), "no tokens");
}

/* Writes s to a fresh temporary file; returns its path in buf. */
static const char *temp_file(char buf[64], const char *s) {
    snprintf(buf, 64, "/tmp/netgpt_bpe_XXXXXX");
    int fd = mkstemp(buf);
    if (fd < 0) return NULL;
    size_t n = strlen(s);
    bool ok = write(fd, s, n) == (ssize_t)n;
    close(fd);
    return ok ? buf : NULL;
}

/* JSON for a byte-alphabet vocabulary plus "ab" (id 256), with `tail` appended inside. */
static char *small_vocab_json(const char *tail) {
    size_t cap = 8192, n = 0;
    char *s = xmalloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "{");
    for (int b = 0; b < 256; b++) {
        char u[3];
        alphabet_utf8(b, u);
        bool esc = u[0] == '"' || u[0] == '\\';
        n += (size_t)snprintf(s + n, cap - n, "\"%s%s\": %d, ", esc ? "\\" : "", u, b);
    }
    snprintf(s + n, cap - n, "\"ab\": 256%s}", tail);
    return s;
}

static void test_malformed_files(void) {
    struct {
        const char *vocab_tail; /* NULL: the vocab file holds `vocab_raw` */
        const char *vocab_raw;
        const char *merges;
        const char *expect; /* substring of the error; NULL: must load */
    } cases[] = {
        {"", NULL, "#version: 0.2\na b\n\n", NULL},
        {"", NULL, "a b\n", NULL},
        {"", NULL, "#version: 0.2\r\na b\r\n", NULL},
        {NULL, "{\"a\": 1,", "a b\n", ":1: invalid JSON"},
        {NULL, "{\n\"a\": 0,\n\"b\" 1}", "a b\n", ":3: invalid JSON"},
        {NULL, "[1, 2, 3]", "a b\n", "expected a JSON object"},
        {NULL, "{}", "", "empty"},
        {NULL, "", "", "invalid JSON"},
        {", \"x\": 1.5", NULL, "a b\n", "\"x\": id must be an integer"},
        {", \"x\": -1", NULL, "a b\n", "\"x\": id must be"},
        {", \"x\": \"7\"", NULL, "a b\n", "\"x\": id must be"},
        {", \"x\": 9999", NULL, "a b\n", "\"x\": id must be"},
        {", \"x\": 5", NULL, "a b\n", "id 5 is also given"},
        {", \"x\": null", NULL, "a b\n", "\"x\": id must be"},
        {"", NULL, "#version: 0.2\na b\nb\n", ":3: merge \"b\": expected two tokens"},
        {"", NULL, "a b\nb c d\n", ":2: merge"},
        {"", NULL, "#version: 0.2\n\na b\nab zz\n", ":4: merge \"ab zz\": \"zz\" is not a token"},
        {"", NULL, "b a\n", ":1: merge \"b a\": \"ba\" is not a token"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char vpath[64], mpath[64];
        char *json = cases[k].vocab_tail ? small_vocab_json(cases[k].vocab_tail) : NULL;
        const char *v = temp_file(vpath, json ? json : cases[k].vocab_raw);
        const char *m = temp_file(mpath, cases[k].merges);
        free(json);
        REQUIRE(v && m, "cannot write temporary files");
        ng_error err = {{0}};
        bpe *t = bpe_load_files(v, m, &err);
        if (cases[k].expect) {
            CHECK(!t && strstr(err.msg, cases[k].expect), "case %zu: want error \"%s\", got \"%s\"", k,
                  cases[k].expect, t ? "(loaded)" : err.msg);
            const char *file = strstr(cases[k].expect, "merge") ? m : v;
            CHECK(strstr(err.msg, file), "case %zu: error does not name %s: %s", k, file, err.msg);
        } else {
            CHECK(t && bpe_n_vocab(t) == 257, "case %zu: should load: %s", k, err.msg);
            if (t) {
                int n;
                int *ids = bpe_encode(t, "xab", 3, &n);
                CHECK(n == 2 && ids[1] == 256, "case %zu: merge a+b not applied", k);
                free(ids);
            }
        }
        bpe_free(t);
        unlink(vpath);
        unlink(mpath);
    }
    ng_error err = {{0}};
    CHECK(!bpe_load_files("tests/testdata/no/such/vocab.json", MERGES, &err) &&
              strstr(err.msg, "cannot open"),
          "missing file: %s", err.msg);
}

int main(void) {
    RUN(test_load_gpt2);
    RUN(test_fixture_encode);
    RUN(test_fixture_roundtrip);
    RUN(test_random_roundtrip);
    RUN(test_invalid_utf8_pieces);
    RUN(test_every_id_decodes);
    RUN(test_new_small);
    RUN(test_new_errors);
    RUN(test_malformed_files);
    bpe_free(g_bpe);
    for (int k = 0; k < g_n_cases; k++) {
        free(g_cases[k].text);
        free(g_cases[k].ids);
    }
    free(g_cases);
    TEST_EXIT();
}
