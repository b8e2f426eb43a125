/* test_spm — LLaMA SentencePiece BPE (src/tokenizer/spm.c) against the `llama-tokenizer-js`
 * npm package. tests/testdata/llama_spm_cases.txt (made by tools/reference/spm_fixture.js)
 * holds a "#" comment line, then one case a line, "HEX_OF_UTF8_TEXT<TAB>id id ...", encoded
 * with BOS and the dummy-prefix space; tests/testdata/llama-vocab/tokenizer.gguf (made by
 * tools/reference/llama_vocab_to_gguf.js) the package's vocabulary with scores derived from
 * its merge ranks. Also: the real LLaMA-2 scores (llama2.c's 32k tokenizer.bin) give the same
 * ids, tok512.bin loads and round-trips (both from ../shared/models, skipped when absent),
 * byte-exact round trips with invalid UTF-8, and malformed files give errors. Owner: tokenizer. */
#include "formats/gguf.h"
#include "test.h"
#include "tok_cases.h"
#include "tokenizer/spm.h"

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#define VOCAB TESTDATA("llama-vocab/tokenizer.gguf")
#define CASES TESTDATA("llama_spm_cases.txt")
#define SPACE_PIECE "\xe2\x96\x81" /* "▁" */

static spm *g_spm;
static gguf_ctx *g_gguf;
static tok_case *g_cases;
static int g_n_cases;

static bool load_cases(void) { return tok_cases_load(CASES, &g_cases, &g_n_cases); }

/* s with every "▁" written as a space: what decoding gives back (the two share one piece). */
static char *spaces_for_marks(const char *s, size_t n, size_t *m) {
    char *d = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        if (n - i >= 3 && memcmp(s + i, SPACE_PIECE, 3) == 0) {
            d[k++] = ' ';
            i += 3;
        } else {
            d[k++] = s[i++];
        }
    }
    d[k] = 0;
    *m = k;
    return d;
}

/* Number of fixture cases whose ids t does not reproduce; prints the first few. */
static int fixture_mismatches(const spm *t, const char *who) {
    int bad = 0;
    for (int k = 0; k < g_n_cases; k++) {
        const tok_case *c = &g_cases[k];
        int n;
        int *ids = spm_encode(t, c->text, c->len, 1, 1, &n);
        bool same = n == c->n_ids && memcmp(ids, c->ids, (size_t)n * sizeof *ids) == 0;
        if (!same && ++bad <= 5) {
            fprintf(stderr, "%s: case %d: ", who, k + 1);
            print_escaped(c->text, c->len);
            fputc('\n', stderr);
            print_ids("expected", c->ids, c->n_ids);
            print_ids("got     ", ids, n);
        }
        free(ids);
    }
    return bad;
}

/* decode(encode(s)) == s, "▁" read as a space; with and without BOS and the dummy space. */
static bool round_trips(const spm *t, const char *s, size_t n, int add_bos, int add_space) {
    int n_ids;
    int *ids = spm_encode(t, s, n, add_bos, add_space, &n_ids);
    size_t len = 0, want_len;
    ng_error err = {{0}};
    char *back = spm_decode(t, ids, n_ids, add_space, &len, &err);
    char *want = spaces_for_marks(s, n, &want_len);
    bool ok = back && len == want_len && memcmp(back, want, len) == 0;
    free(ids);
    free(back);
    free(want);
    return ok;
}

static void test_load_gguf(void) {
    ng_error err = {{0}};
    g_gguf = gguf_open(VOCAB, &err);
    REQUIRE(g_gguf, "%s", err.msg);
    g_spm = spm_from_gguf(g_gguf, &err);
    REQUIRE(g_spm, "%s", err.msg);
    CHECK(spm_n_vocab(g_spm) == 32000, "n_vocab %d", spm_n_vocab(g_spm));
    CHECK(spm_bos(g_spm) == 1 && spm_eos(g_spm) == 2 && spm_unk(g_spm) == 0, "bos %d eos %d unk %d",
          spm_bos(g_spm), spm_eos(g_spm), spm_unk(g_spm));
    CHECK(spm_piece_id(g_spm, SPACE_PIECE, 3) == 29871, "id of \"▁\"");
    CHECK(spm_piece_id(g_spm, SPACE_PIECE "the", 6) == 278, "id of \"▁the\"");
    CHECK(spm_piece_id(g_spm, "<0x0A>", 6) == 13 && spm_type(g_spm, 13) == 6, "<0x0A>");
    CHECK(spm_type(g_spm, 0) == 2 && spm_type(g_spm, 1) == 3 && spm_type(g_spm, 2) == 3 &&
              spm_type(g_spm, 259) == 1,
          "token types");
    CHECK(spm_piece_id(g_spm, "no such piece", 13) == -1, "missing piece");
    size_t len = 0;
    const char *p = spm_piece(g_spm, 278, &len);
    CHECK(p && len == 6 && memcmp(p, SPACE_PIECE "the", 6) == 0, "spm_piece(278)");

    /* the same vocabulary through spm_new directly: same ids for a sentence */
    uint64_t n = 0, n_scores = 0, n_types = 0;
    gguf_vtype ty;
    const ng_str *pieces = gguf_get_arr_str(g_gguf, "tokenizer.ggml.tokens", &n);
    const float *scores = gguf_get_arr_data(g_gguf, "tokenizer.ggml.scores", &ty, &n_scores);
    const int32_t *types = gguf_get_arr_data(g_gguf, "tokenizer.ggml.token_type", &ty, &n_types);
    REQUIRE(pieces && scores && types && n == 32000 && n_scores == n && n_types == n, "tokenizer keys");
    spm *direct = spm_new(pieces, scores, types, (int)n, &err);
    REQUIRE(direct, "%s", err.msg);
    int na, nb;
    static const char hello[] = "Hello world! It's 2024.";
    int *a = spm_encode(g_spm, hello, strlen(hello), 1, 1, &na);
    int *b = spm_encode(direct, hello, strlen(hello), 1, 1, &nb);
    CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0, "spm_new and spm_from_gguf differ");
    /* types NULL: recognised by text, the same ids */
    spm *by_text = spm_new(pieces, scores, NULL, (int)n, &err);
    REQUIRE(by_text, "%s", err.msg);
    for (int id = 0; id < (int)n; id++) {
        if (spm_type(by_text, id) != types[id]) {
            CHECK(0, "piece %d: type by text %d, in the file %d", id, spm_type(by_text, id), types[id]);
            break;
        }
    }
    free(a);
    free(b);
    spm_free(direct);
    spm_free(by_text);

    bool parsed = load_cases(); /* not inside REQUIRE, which evaluates its condition twice */
    REQUIRE(parsed, "cannot parse the fixture");
    CHECK(g_n_cases >= 1000, "only %d fixture cases", g_n_cases);
}

static void test_fixture_encode(void) {
    if (!g_spm || !g_n_cases) SKIP("vocabulary or fixture did not load");
    int bad = fixture_mismatches(g_spm, "llama-vocab");
    CHECK(bad == 0, "%d of %d fixture cases differ from llama-tokenizer-js", bad, g_n_cases);
}

static void test_fixture_roundtrip(void) {
    if (!g_spm || !g_n_cases) SKIP("vocabulary or fixture did not load");
    int bad = 0;
    for (int k = 0; k < g_n_cases; k++) {
        const tok_case *c = &g_cases[k];
        for (int opt = 0; opt < 4; opt++) {
            if (!round_trips(g_spm, c->text, c->len, opt & 1, opt >> 1) && ++bad <= 5) {
                fprintf(stderr, "case %d (bos %d, space %d) does not round-trip: ", k + 1, opt & 1, opt >> 1);
                print_escaped(c->text, c->len);
                fputc('\n', stderr);
            }
        }
    }
    CHECK(bad == 0, "%d fixture encodings do not round-trip", bad);
}

/* The options, the empty text, and the pieces named in the package's README. */
static void test_options(void) {
    if (!g_spm) SKIP("vocabulary did not load");
    struct {
        const char *text;
        int bos, space, ids[8], n;
    } cases[] = {
        {"Hello world!", 1, 1, {1, 15043, 3186, 29991}, 4},
        {"Hello world!", 0, 1, {15043, 3186, 29991}, 3},
        {"Hello", 0, 0, {10994}, 1}, /* "Hello" without "▁": another piece */
        {"", 1, 1, {1}, 1},          /* BOS alone (the package gives []: see spm.c) */
        {"", 0, 1, {0}, 0},
        {"\n", 0, 0, {13}, 1},                           /* newline is no piece: byte fallback <0x0A> */
        {"\xff", 0, 0, {258}, 1},                        /* an invalid byte: its byte piece */
        {"2024", 0, 0, {29906, 29900, 29906, 29946}, 4}, /* digits one by one */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int n;
        int *ids = spm_encode(g_spm, cases[k].text, strlen(cases[k].text), cases[k].bos, cases[k].space, &n);
        bool same = ids && n == cases[k].n && memcmp(ids, cases[k].ids, (size_t)n * sizeof *ids) == 0;
        CHECK(same, "case %zu \"%s\" (bos %d, space %d)", k, cases[k].text, cases[k].bos, cases[k].space);
        if (!same && ids) print_ids("got", ids, n);
        free(ids);
    }
    int n = -1;
    CHECK(spm_encode(g_spm, "x", SPM_MAX_TEXT + 1, 1, 1, &n) == NULL && n == 0, "text over SPM_MAX_TEXT");
}

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static uint32_t rng_next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}

/* Random byte strings: pure noise, and mixtures of valid UTF-8 with broken sequences (lone
 * continuation bytes, truncated sequences, overlongs, surrogates, > U+10FFFF). Byte fallback
 * makes every one of them round-trip; none may crash or give an id out of range. */
static void test_random_roundtrip(void) {
    if (!g_spm) SKIP("vocabulary did not load");
    /* clang-format off */
    static const char *parts[] = {
        " ", "  ", "\n", "\t", "a", "the", " the", "'s", "1", "42", ".", ",", "!", "ing", "<s>",
        "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80", "\xe2\x80\x8d", "\xc2\xa0", "\xe2\x96\x81", "\0",
        "\x80", "\xff", "\xfe", "\xc2", "\xc3", "\xe6\x97", "\xf0\x9f\x98", /* broken */
        "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",                    /* overlong, surrogate, too big */
    };
    /* clang-format on */
    int n_parts = (int)(sizeof parts / sizeof parts[0]), bad = 0, out_of_range = 0;
    char buf[512];
    for (int k = 0; k < 3000; k++) {
        size_t n = 0, want = rng_next() % 300;
        while (n < want) {
            if (k % 2) {
                buf[n++] = (char)(rng_next() & 0xFF);
            } else {
                const char *p = parts[rng_next() % (uint32_t)n_parts];
                size_t m = p[0] ? strlen(p) : 1;
                if (n + m > sizeof buf) break;
                memcpy(buf + n, p, m);
                n += m;
            }
        }
        int opt = k % 4;
        if (!round_trips(g_spm, buf, n, opt & 1, opt >> 1) && ++bad <= 5) {
            fprintf(stderr, "random case %d does not round-trip: ", k);
            print_escaped(buf, n);
            fputc('\n', stderr);
        }
        int n_ids;
        int *ids = spm_encode(g_spm, buf, n, 1, 1, &n_ids);
        for (int i = 0; i < n_ids; i++) out_of_range += ids[i] < 0 || ids[i] >= spm_n_vocab(g_spm);
        free(ids);
    }
    CHECK(bad == 0, "%d random byte strings do not round-trip", bad);
    CHECK(out_of_range == 0, "%d ids out of range", out_of_range);
    /* each invalid byte is its own byte piece, and does not disturb the text around it */
    static const char *const broken[] = {"x\xffy", "\xc3(", "caf\xc3", "a\xed\xa0\x80\x62"};
    for (int k = 0; k < 4; k++) {
        int n;
        int *ids = spm_encode(g_spm, broken[k], strlen(broken[k]), 0, 0, &n);
        int bytes = 0;
        for (int i = 0; i < n; i++) bytes += spm_type(g_spm, ids[i]) == 6;
        int invalid = 0;
        for (const char *p = broken[k]; *p; p++) invalid += (unsigned char)*p >= 0x80;
        CHECK(bytes == invalid, "broken case %d: %d byte pieces for %d invalid bytes", k, bytes, invalid);
        free(ids);
    }
}

static void test_every_id_decodes(void) {
    if (!g_spm) SKIP("vocabulary did not load");
    int nv = spm_n_vocab(g_spm), bad = 0;
    for (int id = 0; id < nv; id++) {
        size_t len = 99;
        const char *s = spm_token_bytes(g_spm, id, &len);
        int ty = spm_type(g_spm, id);
        bool ok = s && (ty == 3 ? len == 0 : ty == 6 ? len == 1 : len > 0);
        bad += !ok;
    }
    CHECK(bad == 0, "%d ids decode wrongly", bad);
    size_t len = 0;
    CHECK(spm_token_bytes(g_spm, -1, &len) == NULL && spm_token_bytes(g_spm, nv, &len) == NULL,
          "ids out of range");
    const char *s = spm_token_bytes(g_spm, 278, &len);
    CHECK(s && len == 4 && memcmp(s, " the", 4) == 0, "278 is \" the\"");
    s = spm_token_bytes(g_spm, 13, &len);
    CHECK(s && len == 1 && s[0] == '\n', "<0x0A>");
    ng_error err = {{0}};
    int ids[3] = {1, 278, nv};
    CHECK(spm_decode(g_spm, ids, 3, 1, &len, &err) == NULL && strstr(err.msg, "position 2"), "bad id: %s",
          err.msg);
    char *d = spm_decode(g_spm, ids, 2, 1, &len, &err);
    CHECK(d && len == 3 && memcmp(d, "the", 3) == 0, "strip_space drops the dummy prefix");
    free(d);
    d = spm_decode(g_spm, ids, 2, 0, &len, &err);
    CHECK(d && len == 4 && memcmp(d, " the", 4) == 0, "without strip_space");
    free(d);
}

/* 1 MB of English in one text (and 200 kB without a space) must encode in well under a
 * second with an O(n log n) merge; the bound is loose for sanitizer builds. */
static void test_speed(void) {
    if (!g_spm || !g_n_cases) SKIP("vocabulary or fixture did not load");
    size_t cap = 1 << 20, n = 0;
    char *text = xmalloc(cap + 1);
    for (int k = 0; n < cap; k = (k + 1) % 800) {
        const tok_case *c = &g_cases[k % g_n_cases];
        size_t m = c->len + 1 < cap - n ? c->len : cap - n - 1;
        memcpy(text + n, c->text, m);
        n += m;
        text[n++] = ' ';
    }
    double t0 = ng_time();
    int n_ids;
    int *ids = spm_encode(g_spm, text, n, 1, 1, &n_ids);
    double t1 = ng_time();
    fprintf(stderr, "test_spm: encoded %zu bytes into %d ids in %.3f s\n", n, n_ids, t1 - t0);
    CHECK(n_ids > 100000 && n_ids < (int)n / 2, "%d ids for 1 MB", n_ids);
    CHECK(round_trips(g_spm, text, n, 1, 1), "1 MB round trip");
    CHECK(t1 - t0 < 5.0, "1 MB took %.2f s", t1 - t0);
    free(ids);
    memset(text, 'a', 200000);
    t0 = ng_time();
    ids = spm_encode(g_spm, text, 200000, 1, 1, &n_ids);
    t1 = ng_time();
    CHECK(t1 - t0 < 2.0 && n_ids > 1000, "200 kB of 'a': %.2f s, %d ids", t1 - t0, n_ids);
    free(ids);
    free(text);
}

/* A small vocabulary: the best score merges first, the leftmost on ties, and a character
 * that is no piece falls back to bytes (or to <unk> without byte pieces). */
static void test_new_small(void) {
    static char bytes[256][7];
    ng_str p[300];
    float sc[300];
    int n = 0;
    const char *head[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) p[n] = (ng_str){head[i], strlen(head[i])}, sc[n++] = 0;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        p[n] = (ng_str){bytes[b], 6}, sc[n++] = 0;
    }
    /* 259.. */
    const char *extra[] = {"a", "b", "c", "ab", "bc", "abc", "aa", SPACE_PIECE, SPACE_PIECE "a"};
    const float escore[] = {-100, -100, -100, -1, -1, -3, -2, -100, -5};
    for (int i = 0; i < 9; i++) p[n] = (ng_str){extra[i], strlen(extra[i])}, sc[n++] = escore[i];
    ng_error err = {{0}};
    spm *t = spm_new(p, sc, NULL, n, &err);
    REQUIRE(t, "%s", err.msg);
    struct {
        const char *text;
        int ids[8], n;
    } cases[] = {
        {"abc", {264}, 1},         /* (ab)(c), then (abc) */
        {"bcab", {263, 262}, 2},   /* two separate pairs */
        {"aaa", {265, 259}, 2},    /* (aa)(a), leftmost */
        {"aab", {259, 262}, 2},    /* ab (-1) beats aa (-2) */
        {"xa", {3 + 'x', 259}, 2}, /* x is no piece: its byte */
        {" a", {267}, 1},          /* "▁a" */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int m;
        int *ids = spm_encode(t, cases[k].text, strlen(cases[k].text), 0, 0, &m);
        bool same = m == cases[k].n && memcmp(ids, cases[k].ids, (size_t)m * sizeof *ids) == 0;
        CHECK(same, "small vocab case \"%s\"", cases[k].text);
        if (!same) print_ids("got", ids, m);
        free(ids);
    }
    spm_free(t);

    /* without "abc", the tie between ab and bc decides: the left pair, (ab)(c) */
    p[259 + 5] = (ng_str){"zzz", 3};
    t = spm_new(p, sc, NULL, n, &err);
    REQUIRE(t, "%s", err.msg);
    int m;
    int *ids = spm_encode(t, "abc", 3, 0, 0, &m);
    CHECK(m == 2 && ids[0] == 262 && ids[1] == 261, "leftmost on ties");
    free(ids);
    spm_free(t);

    /* no byte pieces: an unknown character is one <unk> */
    ng_str q[] = {{"<unk>", 5}, {"a", 1}, {SPACE_PIECE, 3}};
    float qs[] = {0, -1, -2};
    t = spm_new(q, qs, NULL, 3, &err);
    REQUIRE(t, "%s", err.msg);
    ids = spm_encode(t, "a\xc3\xa9\x61", 4, 1, 0, &m);
    CHECK(spm_bos(t) == -1 && m == 3 && ids[0] == 1 && ids[1] == 0 && ids[2] == 1, "unk fallback");
    free(ids);
    spm_free(t);

    /* errors */
    float nan_scores[] = {0, NAN, 0};
    CHECK(!spm_new(q, nan_scores, NULL, 3, &err) && strstr(err.msg, "piece 1") && strstr(err.msg, "NaN"),
          "NaN score: %s", err.msg);
    int32_t bad_types[] = {2, 1, 9};
    CHECK(!spm_new(q, qs, bad_types, 3, &err) && strstr(err.msg, "piece 2"), "bad type: %s", err.msg);
    int32_t bad_byte[] = {2, 6, 1};
    CHECK(!spm_new(q, qs, bad_byte, 3, &err) && strstr(err.msg, "<0xNN>"), "bad byte piece: %s", err.msg);
    CHECK(!spm_new(q + 1, qs + 1, NULL, 2, &err) && strstr(err.msg, "<unk>"), "no unk, no bytes: %s",
          err.msg);
    CHECK(!spm_new(q, qs, NULL, 0, &err), "no pieces");
}

/* ---- llama2.c tokenizer.bin files ---------------------------------------------------------- */

typedef struct {
    char *b;
    size_t n, cap;
} bytes_buf;

static void put(bytes_buf *o, const void *p, size_t n) {
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2;
        o->b = xrealloc(o->b, o->cap);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_i32(bytes_buf *o, int32_t v) {
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(o, b, 4);
}
static void put_piece(bytes_buf *o, float score, const char *s) {
    uint32_t u;
    memcpy(&u, &score, 4);
    put_i32(o, (int32_t)u);
    put_i32(o, (int32_t)strlen(s));
    put(o, s, strlen(s));
}

/* Writes n bytes to a fresh temporary file; returns its path in buf (NULL on failure). */
static const char *temp_file(char buf[64], const void *s, size_t n) {
    snprintf(buf, 64, "/tmp/netgpt_spm_XXXXXX");
    int fd = mkstemp(buf);
    if (fd < 0) return NULL;
    bool ok = write(fd, s, n) == (ssize_t)n;
    close(fd);
    return ok ? buf : NULL;
}

/* A small valid llama2.c tokenizer: <unk>, <s>, </s>, 256 bytes, " t", "he", " the". */
static bytes_buf small_llama2c(void) {
    bytes_buf o = {0};
    put_i32(&o, 6);
    put_piece(&o, 0, "<unk>");
    put_piece(&o, 0, "\n<s>\n");
    put_piece(&o, 0, "\n</s>\n");
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        put_piece(&o, 0, s);
    }
    const char *extra[] = {" t", "he", " the", " ", "t", "h", "e"};
    for (int i = 0; i < 7; i++) put_piece(&o, (float)-i, extra[i]);
    return o;
}

static void test_llama2c_small(void) {
    bytes_buf o = small_llama2c();
    char path[64];
    REQUIRE(temp_file(path, o.b, o.n), "temp file");
    ng_error err = {{0}};
    spm *t = spm_load_llama2c(path, 266, &err);
    CHECK(t, "%s", err.msg);
    if (t) {
        CHECK(spm_bos(t) == 1 && spm_eos(t) == 2 && spm_unk(t) == 0 && spm_type(t, 1) == 3, "control pieces");
        CHECK(spm_piece_id(t, SPACE_PIECE "the", 6) == 261, "\" the\" is stored as \"▁the\"");
        int n;
        int *ids = spm_encode(t, "the", 3, 1, 1, &n);
        CHECK(n == 2 && ids[0] == 1 && ids[1] == 261, "encode \"the\"");
        free(ids);
        spm_free(t);
    }
    t = spm_load_llama2c(path, 200, &err); /* fewer than the file holds: fine */
    CHECK(t, "%s", err.msg);
    spm_free(t);

    struct {
        size_t cut; /* bytes of the file kept (0: all) */
        int n_vocab;
        const char *want; /* substring of the error */
    } bad[] = {
        {2, 266, "too short"},
        {4, 266, "at most 0"},
        {4 + 8 + 5 + 3, 2, "piece 1 of 2: truncated"},
        {4 + 8 + 5 + 8 + 2, 2, "piece 1 of 2: 5 bytes"},
        {o.n - 1, 266, "piece 265 of 266"},
        {o.n - 9, 266, "piece 265 of 266: truncated"},
        {0, 267, "piece 266 of 267: truncated"},
        {0, 100000, "100000 pieces asked for"},
        {0, 0, "must be positive"},
        {0, -5, "must be positive"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char p2[64];
        size_t n = bad[k].cut ? bad[k].cut : o.n;
        if (!temp_file(p2, o.b, n)) continue;
        t = spm_load_llama2c(p2, bad[k].n_vocab, &err);
        CHECK(!t && strstr(err.msg, bad[k].want) && strstr(err.msg, p2), "case %zu: want \"%s\", got \"%s\"",
              k, bad[k].want, err.msg);
        spm_free(t);
        unlink(p2);
    }
    /* every cut: an error, never a crash */
    int loaded = 0;
    for (size_t cut = 0; cut < o.n; cut += 1 + cut / 64) {
        char p2[64];
        if (!temp_file(p2, o.b, cut)) continue;
        t = spm_load_llama2c(p2, 266, &err);
        loaded += t != NULL;
        spm_free(t);
        unlink(p2);
    }
    CHECK(loaded == 0, "%d truncated files loaded", loaded);

    /* negative, too long, and huge lengths; max_token_length <= 0; NaN score */
    struct {
        size_t at;
        int32_t v;
        const char *want;
    } patch[] = {
        {4 + 4, -1, "piece 0 of 266 at byte 8: length -1"},
        {4 + 4, 7, "length 7 is outside 0..max_token_length 6"},
        {4 + 8 + 5 + 4, INT32_MIN, "piece 1 of 266"},
        {4 + 8 + 5 + 4, INT32_MAX, "piece 1 of 266"},
        {0, 0, "max_token_length 0"},
        {0, -3, "max_token_length -3"},
        {4, 0x7FC00000, "piece 0 of 266: score is NaN"},
    };
    for (size_t k = 0; k < sizeof patch / sizeof patch[0]; k++) {
        bytes_buf c = {0};
        put(&c, o.b, o.n);
        bytes_buf v = {0};
        put_i32(&v, patch[k].v);
        memcpy(c.b + patch[k].at, v.b, 4);
        char p2[64];
        if (temp_file(p2, c.b, c.n)) {
            t = spm_load_llama2c(p2, 266, &err);
            CHECK(!t && strstr(err.msg, patch[k].want), "patch %zu: want \"%s\", got \"%s\"", k,
                  patch[k].want, err.msg);
            spm_free(t);
            unlink(p2);
        }
        free(c.b);
        free(v.b);
    }
    CHECK(!spm_load_llama2c("/nonexistent/tokenizer.bin", 32000, &err) && strstr(err.msg, "/nonexistent"),
          "missing file: %s", err.msg);
    unlink(path);
    free(o.b);
}

/* The real LLaMA-2 scores: the same pieces as the package, scores in the same order, the same
 * ids on the whole fixture. */
static void test_real_scores_32k(void) {
    const char *dir = t_shared_models();
    if (!dir) SKIP("../shared/models is absent");
    if (!g_spm || !g_n_cases) SKIP("vocabulary or fixture did not load");
    char path[256];
    snprintf(path, sizeof path, "%s/llama2c-tokenizer-32k.bin", dir);
    ng_error err = {{0}};
    spm *real = spm_load_llama2c(path, 32000, &err);
    REQUIRE(real, "%s", err.msg);
    int diff_pieces = 0, diff_types = 0;
    for (int id = 0; id < 32000; id++) {
        size_t a, b;
        const char *pa = spm_piece(real, id, &a), *pb = spm_piece(g_spm, id, &b);
        diff_pieces += a != b || memcmp(pa, pb, a) != 0;
        diff_types += spm_type(real, id) != spm_type(g_spm, id);
    }
    CHECK(diff_pieces == 0 && diff_types == 0, "%d pieces and %d types differ from the package", diff_pieces,
          diff_types);
    /* Merge results are the normal pieces of more than one character. The package's rank
     * (derived score) must never order two of them against the real scores: along
     * increasing id the derived score falls, and the real score never rises. */
    int inversions = 0, ties = 0;
    float prev_real = INFINITY, prev_derived = INFINITY;
    for (int id = 3; id < 32000; id++) {
        size_t len;
        const char *s = spm_piece(g_spm, id, &len);
        int chars = 0;
        for (size_t i = 0; i < len; i++) chars += ((unsigned char)s[i] & 0xC0) != 0x80;
        if (spm_type(g_spm, id) != 1 || chars < 2) continue;
        float r = spm_score(real, id), d = spm_score(g_spm, id);
        if (r == -1e9f) { /* LLaMA's runs of "▁": one score for all, see llama_vocab_to_gguf.js */
            ties++;
            continue;
        }
        inversions += r > prev_real || d > prev_derived;
        prev_real = r;
        prev_derived = d;
    }
    CHECK(inversions == 0, "%d merge results ordered differently by the real and the derived scores",
          inversions);
    CHECK(ties == 15, "%d whitespace-run pieces with score -1e9, expected 15 (2 to 16 spaces)", ties);
    int bad = fixture_mismatches(real, "llama2c-32k");
    CHECK(bad == 0, "%d of %d fixture cases differ with the real LLaMA-2 scores", bad, g_n_cases);
    spm_free(real);
}

/* stories260K's 512-piece vocabulary: loads, knows its control and byte pieces, encodes
 * English compactly, and round-trips the fixture. */
static void test_tok512(void) {
    const char *dir = t_shared_models();
    if (!dir) SKIP("../shared/models is absent");
    char path[256];
    snprintf(path, sizeof path, "%s/tok512.bin", dir);
    ng_error err = {{0}};
    spm *t = spm_load_llama2c(path, 512, &err);
    REQUIRE(t, "%s", err.msg);
    CHECK(spm_n_vocab(t) == 512 && spm_bos(t) == 1 && spm_eos(t) == 2 && spm_unk(t) == 0, "specials");
    CHECK(spm_piece_id(t, SPACE_PIECE "the", 6) == 265, "\"▁the\" is 265");
    static const char story[] =
        "Once upon a time, there was a little girl named Lily. She loved to play outside.";
    int n;
    int *ids = spm_encode(t, story, strlen(story), 1, 1, &n);
    CHECK(n > 10 && n < (int)strlen(story) / 2, "%d ids for %zu bytes", n, strlen(story));
    free(ids);
    int bad = 0;
    for (int k = 0; k < g_n_cases; k++) bad += !round_trips(t, g_cases[k].text, g_cases[k].len, 1, 1);
    CHECK(bad == 0, "%d fixture cases do not round-trip with tok512", bad);
    CHECK(!spm_load_llama2c(path, 513, &err) && strstr(err.msg, "piece 512 of 513"), "513 pieces: %s",
          err.msg);
    spm_free(t);
}

/* GGUF files without a usable SentencePiece tokenizer. */
static void test_gguf_errors(void) {
    struct {
        const char *model;
        int scores; /* 0 absent, 1 f32 of n, 2 f32 of n - 1 */
        int bos;
        const char *want;
    } cases[] = {
        {NULL, 1, 1, "'tokenizer.ggml.model' is absent"},
        {"gpt2", 1, 1, "\"gpt2\", not \"llama\""},
        {"llama", 0, 1, "tokenizer.ggml.scores"},
        {"llama", 2, 1, "tokenizer.ggml.scores"},
        {"llama", 1, 5, "bos_token_id"},
        {"llama", 1, 1, NULL},
    };
    ng_str pieces[] = {{"<unk>", 5}, {"<s>", 3}, {"</s>", 4}, {"a", 1}};
    float scores[] = {0, 0, 0, -1};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        gguf_writer *w = gguf_writer_new();
        if (cases[k].model) gguf_set_str(w, "tokenizer.ggml.model", cases[k].model);
        gguf_set_arr_str(w, "tokenizer.ggml.tokens", pieces, 4);
        if (cases[k].scores)
            gguf_set_arr_data(w, "tokenizer.ggml.scores", GGUF_F32, scores, cases[k].scores == 1 ? 4 : 3);
        gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)cases[k].bos);
        char path[64] = "/tmp/netgpt_spm_XXXXXX";
        int fd = mkstemp(path);
        REQUIRE(fd >= 0, "mkstemp");
        close(fd);
        ng_error err = {{0}};
        int rc = gguf_write(w, path, &err);
        gguf_writer_free(w);
        REQUIRE(rc == NG_OK, "%s", err.msg);
        gguf_ctx *g = gguf_open(path, &err);
        REQUIRE(g, "%s", err.msg);
        spm *t = spm_from_gguf(g, &err);
        if (cases[k].want)
            CHECK(!t && strstr(err.msg, cases[k].want) && strstr(err.msg, path),
                  "case %zu: want \"%s\", got \"%s\"", k, cases[k].want, err.msg);
        else
            CHECK(t && spm_bos(t) == 1 && spm_unk(t) == 0, "case %zu: %s", k, err.msg);
        spm_free(t);
        gguf_close(g);
        unlink(path);
    }
}

int main(void) {
    RUN(test_load_gguf);
    RUN(test_fixture_encode);
    RUN(test_fixture_roundtrip);
    RUN(test_options);
    RUN(test_random_roundtrip);
    RUN(test_every_id_decodes);
    RUN(test_speed);
    RUN(test_new_small);
    RUN(test_llama2c_small);
    RUN(test_real_scores_32k);
    RUN(test_tok512);
    RUN(test_gguf_errors);
    for (int k = 0; k < g_n_cases; k++) {
        free(g_cases[k].text);
        free(g_cases[k].ids);
    }
    free(g_cases);
    spm_free(g_spm);
    gguf_close(g_gguf);
    TEST_EXIT();
}
