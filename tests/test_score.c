/* The fact check of edge prompts (src/edge/score.c) against the JS scorer it ports
 * (tools/data/pairs/eval_pairs.js): both scorers' counts on the fixtures of
 * tests/testdata/pairs_score, per record and in total. The fixtures (made by
 * tools/data/pairs/make_score_fixtures.js) are reference and template prompts and prompts perturbed
 * to invent mentions, drop facts, leak private data, change case, put names beside non-ASCII text
 * and invalid UTF-8. Then hand-checked cases and malformed input. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/util.h"
#include "edge/score.h"

#define FIXTURES TESTDATA("pairs_score/")

/* The lines of a file, split in place (*buf is to be freed); their count, -1 when unreadable. */
static int read_lines(const char *path, char **buf, char ***lines) {
    size_t len;
    ng_error err;
    *buf = ng_read_file(path, &len, &err);
    *lines = NULL;
    if (!*buf) return -1;
    int n = 0;
    for (char *p = *buf; *p;) {
        char *e = strchr(p, '\n');
        if (e) *e = 0;
        *lines = xrealloc(*lines, (size_t)(n + 1) * sizeof **lines);
        (*lines)[n++] = p;
        p = e ? e + 1 : p + strlen(p);
    }
    return n;
}

/* The counts in expected.json's order: [facts, stated, mentions, invented, leaks, requests,
   requests_stated] per record; the totals add records and records_with_invented. */
#define N_COUNTS 9
#define N_PER 7
static const char *const count_keys[N_COUNTS] = {"records", "facts", "stated", "mentions", "invented",
                                                 "leaks", "requests", "requests_stated", "records_with_invented"};

static void counts_of(const edge_score *s, long c[N_COUNTS]) {
    c[0] = s->records, c[1] = s->facts, c[2] = s->stated, c[3] = s->mentions, c[4] = s->invented;
    c[5] = s->leaks, c[6] = s->requests, c[7] = s->requests_stated, c[8] = s->records_with_invented;
}

static long num(const cJSON *it) { return cJSON_IsNumber(it) ? (long)it->valuedouble : -1; }

static void test_fixtures(void) {
    ng_error err;
    edge_scorer *sc = edge_scorer_load(FIXTURES "vocab.json", &err);
    REQUIRE(sc, "%s", err.msg);
    char *fbuf, **facts;
    int n_rec = read_lines(FIXTURES "facts.jsonl", &fbuf, &facts);
    size_t len;
    char *ebuf = ng_read_file(FIXTURES "expected.json", &len, &err);
    cJSON *expected = ebuf ? cJSON_Parse(ebuf) : NULL;
    CHECK(n_rec == 40 && cJSON_IsObject(expected), "facts.jsonl: %d lines; expected.json: %s", n_rec,
          err.msg);
    int n_files = 0;
    long invented = 0, leaks = 0, unstated = 0, requests = 0, requests_stated = 0;
    for (const cJSON *want = cJSON_IsObject(expected) ? expected->child : NULL; want; want = want->next) {
        char path[256], *pbuf, **preds;
        snprintf(path, sizeof path, FIXTURES "%s", want->string);
        int n_pred = read_lines(path, &pbuf, &preds);
        const cJSON *per = cJSON_GetObjectItemCaseSensitive(want, "per_record");
        CHECK(n_pred == n_rec && cJSON_GetArraySize(per) == n_rec, "%s: %d lines, %d records", path, n_pred,
              n_rec);
        edge_score tot = {0};
        for (int i = 0; i < n_rec && i < n_pred && i < cJSON_GetArraySize(per); i++) {
            cJSON *p = cJSON_Parse(preds[i]);
            const cJSON *out = cJSON_GetObjectItemCaseSensitive(p, "output");
            CHECK(p, "%s:%d: not JSON", path, i + 1);
            edge_score one = {0};
            int rc = edge_score_add(sc, facts[i], cJSON_IsString(out) ? out->valuestring : NULL, &one, &err);
            CHECK(rc == NG_OK, "%s:%d: %s", path, i + 1, err.msg);
            long got[N_COUNTS], js[N_PER];
            counts_of(&one, got);
            for (int k = 0; k < N_PER; k++) js[k] = num(cJSON_GetArrayItem(cJSON_GetArrayItem(per, i), k));
            CHECK(!memcmp(got + 1, js, sizeof js),
                  "%s:%d: C %ld %ld %ld %ld %ld %ld %ld, JS %ld %ld %ld %ld %ld %ld %ld\n  %s", path, i + 1, got[1],
                  got[2], got[3], got[4], got[5], got[6], got[7], js[0], js[1], js[2], js[3], js[4], js[5], js[6],
                  preds[i]);
            tot.records += one.records, tot.facts += one.facts, tot.stated += one.stated;
            tot.mentions += one.mentions, tot.invented += one.invented, tot.leaks += one.leaks;
            tot.requests += one.requests, tot.requests_stated += one.requests_stated;
            tot.records_with_invented += one.records_with_invented;
            cJSON_Delete(p);
        }
        long got[N_COUNTS];
        counts_of(&tot, got);
        for (int k = 0; k < N_COUNTS; k++) {
            long js = num(cJSON_GetObjectItemCaseSensitive(want, count_keys[k]));
            CHECK(got[k] == js, "%s: %s: C %ld, JS %ld", path, count_keys[k], got[k], js);
        }
        invented += tot.invented, leaks += tot.leaks, unstated += tot.facts - tot.stated;
        requests += tot.requests, requests_stated += tot.requests_stated;
        n_files++;
        free(preds), free(pbuf);
    }
    /* the fixtures must exercise every count, or agreeing on them proves little */
    CHECK(n_files >= 8 && invented > 100 && leaks > 20 && unstated > 100 && requests_stated > 50 &&
              requests - requests_stated > 50,
          "%d files, %ld invented, %ld leaks, %ld unstated, %ld of %ld requests stated", n_files, invented, leaks,
          unstated, requests_stated, requests);
    cJSON_Delete(expected);
    free(ebuf), free(facts), free(fbuf);
    edge_scorer_free(sc);
}

static edge_scorer *small_scorer(void) {
    char path[] = "/tmp/ng_score_vocab_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    /* "BP" (2 units) and the city "𠮷家" (3 units) are too short; the brand "𠮷家" is not */
    static const char vocab[] =
        "{\"brands\": [\"Starbucks\", \"Aldi\", \"BP\", \"\xf0\xa0\xae\xb7\xe5\xae\xb6\"],"
        " \"cities\": [\"Paris\", \"Lyon\", \"Roma\", \"Nice\", \"Bora Bora\", "
        "\"\xf0\xa0\xae\xb7\xe5\xae\xb6\"]}";
    ssize_t w = write(fd, vocab, sizeof vocab - 1);
    close(fd);
    ng_error err;
    edge_scorer *sc = w == (ssize_t)sizeof vocab - 1 ? edge_scorer_load(path, &err) : NULL;
    unlink(path);
    return sc;
}

static const char *record =
    "{\"facts\": [{\"type\": \"place\", \"value\": \"Lyon\"}, {\"type\": \"country\", \"value\": \"France\"},"
    " {\"type\": \"day\", \"value\": \"Tuesday\"}, {\"type\": \"time\", \"value\": \"18:40\"},"
    " {\"type\": \"poi\", \"category\": \"cafe\", \"name\": \"Starbucks\", \"distance\": \"350 m\"},"
    " {\"type\": \"language\", \"value\": \"French\"}], \"private\": [{\"type\": \"cell\", \"value\": "
    "\"FR-1-2\"}]}";

/* Counted by hand from eval_pairs.js's rules. */
static void test_known(void) {
    edge_scorer *sc = small_scorer();
    REQUIRE(sc, "vocab");
    ng_error err;
    edge_score acc = {0};
    /* stated: all but the POI ("350m" is not "350 m"); TUESDAY and lyon count as stated (case is
       ignored there) but not as mentions; mentions: 350m (allowed once normalised), 18:40, French,
       and the names France and Starbucks */
    CHECK(edge_score_add(sc, record,
                         "It is TUESDAY 18:40 in lyon, France. Starbucks is 350m away. Reply in French.",
                         &acc, &err) == NG_OK,
          "%s", err.msg);
    CHECK(acc.facts == 6 && acc.stated == 5 && acc.mentions == 5 && acc.invented == 0 && acc.leaks == 0,
          "%ld %ld %ld %ld %ld", acc.facts, acc.stated, acc.mentions, acc.invented, acc.leaks);
    /* nothing stated; invented: 1.2km, 9:05, Monday, German, Aldi, Paris; the cell id leaks */
    CHECK(edge_score_add(sc, record, "Monday at 9:05, Aldi 1.2km from Paris; speak German, BP. Cell FR-1-2.",
                         &acc, &err) == NG_OK,
          "%s", err.msg);
    /* invented: Roma (before a dash), the brand 𠮷家 (before a period) and the second Bora Bora,
       which overlaps the first; not Aldi or Paris, which touch a CJK letter, nor Nice in a word */
    CHECK(edge_score_add(
              sc, record,
              "Aldi\xe5\xba\x97 and \xe5\xba\x97Paris, Roma\xe2\x80\x94 Nicer \xf0\xa0\xae\xb7\xe5\xae\xb6. "
              "xBora Bora Bora",
              &acc, &err) == NG_OK,
          "%s", err.msg);
    CHECK(edge_score_add(sc, record, NULL, &acc, &err) == NG_OK, "%s", err.msg);
    CHECK(acc.records == 4 && acc.facts == 24 && acc.stated == 5 && acc.mentions == 14 && acc.invented == 9 &&
              acc.records_with_invented == 2 && acc.leaks == 1,
          "%ld %ld %ld %ld %ld %ld %ld", acc.records, acc.facts, acc.stated, acc.mentions, acc.invented,
          acc.records_with_invented, acc.leaks);
    edge_scorer_free(sc);
}

/* Where the order of the names stripped, the place stripped before the leak check and
   toLowerCase's U+0130 -> "i\u0307" decide. */
static void test_subtle(void) {
    edge_scorer *sc = small_scorer();
    REQUIRE(sc, "vocab");
    static const char *rec =
        "{\"facts\": [{\"type\": \"place\", \"value\": \"\xc3\x89t\xc3\xa9 Aldi\"},"
        " {\"type\": \"country\", \"value\": \"\xc4\xb0zmir\"},"
        " {\"type\": \"poi\", \"category\": \"cafe\", \"name\": \"Aldi Roma\", \"distance\": \"5 m\"}],"
        " \"private\": [{\"type\": \"recent_visit\", \"value\": \"Aldi\"}]}";
    ng_error err;
    edge_score acc = {0};
    /* "Aldi Roma" (9 UTF-16 units, 9 bytes) is stripped before "Été Aldi" (8 units, 10 bytes), so
       Roma is no invented city; "Été Aldi" is stripped before the leak check, so Aldi is no leak;
       the country İzmir lowers to i + U+0307 + zmir, which is stated. Mentions: the names Été Aldi
       and Aldi Roma */
    CHECK(edge_score_add(sc, rec, "\xc3\x89t\xc3\xa9 Aldi Roma, i\xcc\x87zmir.", &acc, &err) == NG_OK, "%s",
          err.msg);
    CHECK(acc.facts == 3 && acc.stated == 2 && acc.mentions == 2 && acc.invented == 0 && acc.leaks == 0,
          "%ld %ld %ld %ld %ld", acc.facts, acc.stated, acc.mentions, acc.invented, acc.leaks);
    edge_scorer_free(sc);
}

static void test_malformed(void) {
    edge_scorer *sc = small_scorer();
    REQUIRE(sc, "vocab");
    const char *bad[] = {
        "not json",
        "[]",
        "{\"facts\": []}",
        "{\"facts\": {}, \"private\": []}",
        "{\"facts\": [{\"value\": \"Lyon\"}], \"private\": []}",
        "{\"facts\": [{\"type\": \"poi\", \"name\": \"Aldi\"}], \"private\": []}",
        "{\"facts\": [{\"type\": \"day\", \"value\": 3}], \"private\": []}",
        "{\"facts\": [], \"private\": [{\"type\": \"cell\"}]}",
        "{\"facts\": [], \"private\": [], \"request\": \"coffee?\"}",
        "{\"facts\": [], \"private\": [], \"request\": {\"asks\": []}}",
        "{\"facts\": [], \"private\": [], \"request\": {\"concise\": \"coffee?\", \"asks\": [\"a\", 2]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ng_error err = {{0}};
        edge_score acc = {0};
        CHECK(edge_score_add(sc, bad[i], "Monday", &acc, &err) == NG_ERR && err.msg[0], "%s", bad[i]);
        CHECK(acc.records == 0 && acc.mentions == 0, "%s: acc touched", bad[i]);
    }
    /* a request is stated by one of its sentences or the concise prompt, ignoring case; none and
     * an empty concise prompt state nothing */
    const char *req = "{\"facts\": [], \"private\": [], \"request\": {\"concise\": \"%s\", \"asks\": "
                      "[\"Please recommend a cafe\", \"\"]}}";
    const char *texts[][3] = {{"coffee?", "I want COFFEE? now", "1"}, {"coffee?", "please RECOMMEND a cafe.", "1"},
                              {"coffee?", "Please recommend a caf", "0"}, {"", "anything", "0"},
                              {"coffee?", "", "0"}};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char line[512];
        snprintf(line, sizeof line, req, texts[i][0]);
        ng_error e;
        edge_score acc = {0};
        CHECK(edge_score_add(sc, line, texts[i][1], &acc, &e) == NG_OK && acc.requests == 1 &&
                  acc.requests_stated == texts[i][2][0] - '0',
              "[%s] in [%s]: %ld of %ld", texts[i][0], texts[i][1], acc.requests_stated, acc.requests);
    }
    ng_error err;
    CHECK(!edge_scorer_load(FIXTURES "no-such-vocab.json", &err) && strstr(err.msg, "no-such-vocab"), "%s",
          err.msg);
    CHECK(!edge_scorer_load(FIXTURES "facts.jsonl", &err) && err.msg[0], "a facts file is no vocab");
    edge_scorer_free(sc);
}

int main(void) {
    RUN(test_fixtures);
    RUN(test_known);
    RUN(test_subtle);
    RUN(test_malformed);
    TEST_EXIT();
}
