/* The samplers against known answers: greedy is the argmax; top-k 1, a tiny top-p and a high
 * min-p leave only the best token; the repetition penalty divides positive and multiplies
 * negative logits of recent tokens, once each; sampled frequencies follow softmax(logits / T)
 * restricted to top-k; the same seed gives the same sequence; top-k selection matches a sort,
 * top-p's nucleus a sort's, log-sum-exp a long double reference. */
#include "test.h"

#include "core/kernels.h"
#include "sample/sampler.h"

#define V 8

static int sample_once(ng_sampler_params p, const float *src, const int *hist, int n_hist) {
    float l[V];
    memcpy(l, src, sizeof l);
    ng_sampler *s = ng_sampler_new(&p, V);
    int t = ng_sampler_sample(s, l, hist, n_hist);
    ng_sampler_free(s);
    return t;
}

static const float LOGITS[V] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f, -3.0f, 0.5f};

static void test_greedy_and_filters(void) {
    ng_sampler_params p = ng_sampler_defaults();
    p.temp = 0;
    CHECK(sample_once(p, LOGITS, NULL, 0) == 1, "greedy");
    p = ng_sampler_defaults();
    p.min_p = 0, p.top_p = 1;
    p.top_k = 1;
    for (uint64_t seed = 0; seed < 50; seed++) {
        p.seed = seed;
        CHECK(sample_once(p, LOGITS, NULL, 0) == 1, "top-k 1 (seed %llu)", (unsigned long long)seed);
    }
    p.top_k = 0, p.top_p = 0.01f;
    for (uint64_t seed = 0; seed < 50; seed++) {
        p.seed = seed;
        CHECK(sample_once(p, LOGITS, NULL, 0) == 1, "top-p 0.01");
    }
    p.top_p = 1, p.min_p = 0.99f;
    for (uint64_t seed = 0; seed < 50; seed++) {
        p.seed = seed;
        CHECK(sample_once(p, LOGITS, NULL, 0) == 1, "min-p 0.99");
    }
}

static void test_repetition_penalty(void) {
    ng_sampler_params p = ng_sampler_defaults();
    p.temp = 0, p.repeat_penalty = 2.0f, p.repeat_last_n = 4;
    int hist[5] = {1, 1, 5, 1, 2}; /* token 1 three times, penalized once: 3/2 = 1.5 */
    /* after the penalty: 1 -> 1.5, 5 -> 1.45, 2 -> 1.25; 0 stays 1.0 */
    CHECK(sample_once(p, LOGITS, hist, 5) == 1, "penalized best still best");
    float l[V];
    memcpy(l, LOGITS, sizeof l);
    ng_sampler *s = ng_sampler_new(&p, V);
    ng_sampler_sample(s, l, hist, 5);
    CHECK(fabsf(l[1] - 1.5f) < 1e-6 && fabsf(l[5] - 1.45f) < 1e-6 && fabsf(l[2] - 1.25f) < 1e-6 && l[0] == 1.0f,
          "penalized logits %g %g %g %g", l[1], l[5], l[2], l[0]);
    ng_sampler_free(s);
    /* a negative logit is multiplied; only the last repeat_last_n tokens count */
    int hist2[5] = {3, 0, 0, 0, 0};
    memcpy(l, LOGITS, sizeof l);
    p.repeat_last_n = 5;
    s = ng_sampler_new(&p, V);
    ng_sampler_sample(s, l, hist2, 5);
    CHECK(l[3] == -2.0f && l[0] == 0.5f, "negative %g, positive %g", l[3], l[0]);
    ng_sampler_free(s);
}

/* Frequencies of 20000 draws at temperature 0.7 with top-k 3 against the renormalized softmax. */
static void test_distribution(void) {
    ng_sampler_params p = ng_sampler_defaults();
    p.temp = 0.7f, p.top_k = 3, p.top_p = 1, p.min_p = 0, p.seed = 11;
    ng_sampler *s = ng_sampler_new(&p, V);
    int count[V] = {0}, n = 20000;
    for (int i = 0; i < n; i++) {
        float l[V];
        memcpy(l, LOGITS, sizeof l);
        count[ng_sampler_sample(s, l, NULL, 0)]++;
    }
    ng_sampler_free(s);
    int top[3] = {1, 5, 2};
    double z = 0, want[3];
    for (int i = 0; i < 3; i++) z += (want[i] = exp(LOGITS[top[i]] / 0.7));
    for (int i = 0; i < 3; i++) {
        double f = (double)count[top[i]] / n, w = want[i] / z;
        CHECK(fabs(f - w) < 0.015, "token %d: frequency %.4f, expected %.4f", top[i], f, w);
    }
    CHECK(count[0] + count[3] + count[4] + count[6] + count[7] == 0, "tokens outside the top-k were drawn");
}

/* A 1000-token vocabulary without top-k: the whole softmax (no filter), and a top-p nucleus of
 * more than 64 tokens (the selection has to grow past its first guess). Frequencies of the
 * 8 likeliest tokens against the renormalized softmax; nothing outside the nucleus drawn. */
static void test_large_vocab(void) {
    enum { NV = 1000, DRAWS = 40000 };
    static float big[NV];
    for (int i = 0; i < NV; i++) big[i] = (float)((i * 7919) % NV) / 200.0f; /* a permutation, spaced 0.005 */
    for (int mode = 0; mode < 2; mode++) {
        ng_sampler_params p = ng_sampler_defaults();
        p.temp = 1.0f, p.top_k = 0, p.min_p = 0, p.top_p = mode ? 0.5f : 1.0f, p.seed = 3;
        /* the nucleus: best first until the mass reaches top_p */
        double z = 0, acc = 0, zn = 0;
        for (int i = 0; i < NV; i++) z += exp(big[i]);
        int order[NV], nn = NV;
        for (int i = 0; i < NV; i++) order[i] = i;
        for (int i = 0; i < NV; i++) /* selection sort, best first: small and obviously right */
            for (int j = i + 1; j < NV; j++)
                if (big[order[j]] > big[order[i]]) {
                    int t = order[i];
                    order[i] = order[j], order[j] = t;
                }
        for (int i = 0; i < NV; i++) {
            acc += exp(big[order[i]]) / z;
            if (acc >= p.top_p) {
                nn = i + 1;
                break;
            }
        }
        for (int i = 0; i < nn; i++) zn += exp(big[order[i]]);
        CHECK(mode == 0 || nn > 64, "nucleus of %d tokens: the test needs more than 64", nn);
        static int count[NV];
        memset(count, 0, sizeof count);
        ng_sampler *s = ng_sampler_new(&p, NV);
        for (int d = 0; d < DRAWS; d++) {
            static float l[NV];
            memcpy(l, big, sizeof l);
            count[ng_sampler_sample(s, l, NULL, 0)]++;
        }
        ng_sampler_free(s);
        int outside = 0;
        for (int i = nn; i < NV; i++) outside += count[order[i]];
        CHECK(outside == 0, "top-p %.2f: %d draws outside the nucleus of %d", p.top_p, outside, nn);
        for (int i = 0; i < 8; i++) {
            double f = (double)count[order[i]] / DRAWS, w = exp(big[order[i]]) / zn;
            CHECK(fabs(f - w) < 4 * sqrt(w / DRAWS) + 1e-3, "top-p %.2f, token %d: frequency %.5f, expected %.5f",
                  p.top_p, order[i], f, w);
        }
    }
}

/* ng_top_k against a full sort (larger first, ties by smaller index) on GPT-2-sized rows with
 * ties, a row rising to its end (every block has values to keep) and short rows. */
static int by_value_then_index(const void *a, const void *b, void *ctx) {
    const float *x = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    if (x[i] != x[j]) return x[i] < x[j] ? 1 : -1;
    return i - j;
}

static void test_top_k(void) {
    enum { NV = 50257 };
    static float x[NV];
    static int order[NV], idx[128];
    const int ks[] = {1, 5, 32, 64, 100}, ns[] = {NV, NV, 70, 3};
    for (int c = 0; c < 4; c++) {
        int n = ns[c];
        for (int i = 0; i < n; i++) x[i] = c == 1 ? (float)i * 1e-3f : (float)((i * 7919) % 997 / 7) * 0.25f;
        for (int i = 0; i < n; i++) order[i] = i;
        qsort_r(order, (size_t)n, sizeof *order, by_value_then_index, x);
        for (int q = 0; q < 5; q++) {
            int k = ks[q] < n ? ks[q] : n, bad = -1;
            ng_top_k(x, n, k, idx);
            for (int i = 0; i < k && bad < 0; i++)
                if (idx[i] != order[i]) bad = i;
            CHECK(bad < 0, "row %d, k %d: place %d holds %d, want %d", c, k, bad, bad < 0 ? 0 : idx[bad],
                  bad < 0 ? 0 : order[bad]);
        }
    }
}

/* Top-p over a vocabulary of many equal logits (the selection's ties, broken by id): the draws
 * come only from the nucleus a plain sort gives, and every token of it is drawn. */
static void test_ties(void) {
    enum { NV = 6000, DRAWS = 20000 };
    static float l[NV], w[NV];
    for (int i = 0; i < NV; i++) l[i] = (i * 37) % 101 == 0 ? 1.0f : (i % 3 == 0 ? 0.5f : 0.0f);
    ng_sampler_params p = ng_sampler_defaults();
    p.temp = 1.0f, p.top_k = 0, p.min_p = 0, p.top_p = 0.3f, p.seed = 5;
    /* the nucleus by the sampler's order: larger logit first, then smaller id */
    double z = 0, acc = 0;
    for (int i = 0; i < NV; i++) z += exp(l[i]);
    static int in[NV];
    int nn = 0;
    for (int level = 0; level < 3 && acc < p.top_p; level++) {
        float v = level == 0 ? 1.0f : level == 1 ? 0.5f : 0.0f;
        for (int i = 0; i < NV && acc < p.top_p; i++)
            if (l[i] == v) in[i] = 1, acc += exp(v) / z, nn++;
    }
    CHECK(nn > 200, "nucleus of %d tokens: the test needs more than 64 and ties inside", nn);
    static int count[NV];
    ng_sampler *s = ng_sampler_new(&p, NV);
    for (int d = 0; d < DRAWS; d++) {
        memcpy(w, l, sizeof w);
        count[ng_sampler_sample(s, w, NULL, 0)]++;
    }
    ng_sampler_free(s);
    int outside = 0, missed = 0;
    for (int i = 0; i < NV; i++) outside += !in[i] && count[i], missed += in[i] && !count[i];
    CHECK(outside == 0 && missed == 0, "%d tokens drawn outside the nucleus of %d, %d of it never drawn",
          outside, nn, missed);
}

/* log-sum-exp against the sum in long double of libm's exp, on each kernel path this machine
 * has: a GPT-2-sized row (blocks and a tail), logits far from 0 both ways (no overflow), a row
 * with -inf entries, and the limits. */
static void test_log_sum_exp(void) {
    enum { NV = 50257 };
    static float x[NV];
    static const char *const paths[] = {"portable", "avx2", "avx512"};
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue; /* not on this machine */
        uint64_t r = 12345;
        for (int shift = -1; shift <= 1; shift++) {
            long double s = 0, mx = -INFINITY;
            for (int i = 0; i < NV; i++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                x[i] = (float)((double)(r >> 40) / (double)(1ull << 24) * 30.0 - 20.0 + shift * 300.0);
                if (shift == 0 && i % 7 == 3) x[i] = -INFINITY;
                mx = x[i] > mx ? x[i] : mx;
            }
            for (int i = 0; i < NV; i++) s += expl((long double)x[i] - mx);
            double want = (double)(mx + logl(s)), got = ng_log_sum_exp(x, NV);
            CHECK(fabs(got - want) < 1e-5, "%s, shift %d: log-sum-exp %.9f, reference %.9f", paths[p], shift,
                  got, want);
        }
    }
    ng_kernel_set_path(NULL);
    float one[3] = {2.0f, -INFINITY, -INFINITY};
    CHECK(fabs(ng_log_sum_exp(one, 3) - 2.0) < 1e-6, "one finite logit: %.9f", ng_log_sum_exp(one, 3));
    float none[2] = {-INFINITY, -INFINITY}, inf[2] = {INFINITY, 0.0f};
    double lo = ng_log_sum_exp(none, 2), hi = ng_log_sum_exp(inf, 2);
    CHECK(isinf(lo) && lo < 0, "all -inf: %g", lo);
    CHECK(isinf(hi) && hi > 0, "an inf: %g", hi);
}

static void test_seed(void) {
    ng_sampler_params p = ng_sampler_defaults();
    p.temp = 1.5f, p.top_k = 0, p.top_p = 1, p.min_p = 0;
    int a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        p.seed = run == 2 ? 8 : 7;
        ng_sampler *s = ng_sampler_new(&p, V);
        for (int i = 0; i < 64; i++) {
            float l[V];
            memcpy(l, LOGITS, sizeof l);
            (run == 0 ? a : run == 1 ? b : c)[i] = ng_sampler_sample(s, l, NULL, 0);
        }
        ng_sampler_free(s);
    }
    CHECK(!memcmp(a, b, sizeof a), "same seed, different draws");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds, same draws");
}

int main(void) {
    RUN(test_greedy_and_filters);
    RUN(test_repetition_penalty);
    RUN(test_distribution);
    RUN(test_large_vocab);
    RUN(test_top_k);
    RUN(test_ties);
    RUN(test_log_sum_exp);
    RUN(test_seed);
    TEST_EXIT();
}
