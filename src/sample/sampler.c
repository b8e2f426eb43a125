#include "sample/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "core/kernels.h"
#include "core/util.h"

typedef struct {
    float logit;
    int id;
} cand;

struct ng_sampler {
    ng_sampler_params p;
    int n_vocab;
    uint64_t rng;
    cand *c;  /* (n_vocab) */
    int *idx; /* (n_vocab) */
    float *e; /* (n_vocab): sample_all's exponentials */
};

ng_sampler_params ng_sampler_defaults(void) {
    return (ng_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .repeat_penalty = 1.0f,
                               .repeat_last_n = 64, .seed = 0};
}

ng_sampler *ng_sampler_new(const ng_sampler_params *p, int n_vocab) {
    ng_sampler *s = xcalloc(1, sizeof *s);
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed ^ 0x5851f42d4c957f2dull;
    s->c = xmalloc((size_t)n_vocab * sizeof *s->c);
    s->idx = xmalloc((size_t)n_vocab * sizeof *s->idx);
    s->e = xmalloc((size_t)n_vocab * sizeof *s->e);
    return s;
}

void ng_sampler_free(ng_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->idx);
    free(s->e);
    free(s);
}

/* Uniform in [0, 1) from splitmix64. */
static double rng_uniform(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* The largest of x[0..n) (NaNs passed over; -inf when none is larger). */
static float vmax(const float *x, int n) { return ng_act_max(x, n > 0 ? (size_t)n : 0); }

/* The largest value, then where it first is. */
int ng_argmax(const float *x, int n) {
    float mx = vmax(x, n);
    for (int i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0; /* all -inf or NaN */
}

/* Once k are kept, a block of TOPK_BLOCK values whose largest (a vector reduction) is not above
 * the k-th best is passed over whole: the edge's beam search spent 5% of a completion testing
 * GPT-2's 50257 logits one at a time. */
#define TOPK_BLOCK 64

void ng_top_k(const float *x, int n, int k, int *idx) {
    int got = 0;
    for (int i0 = 0; i0 < n; i0 += TOPK_BLOCK) {
        int i1 = n - i0 < TOPK_BLOCK ? n : i0 + TOPK_BLOCK;
        if (got == k && !(vmax(x + i0, i1 - i0) > x[idx[k - 1]])) continue;
        for (int i = i0; i < i1; i++) {
            if (got == k && !(x[i] > x[idx[k - 1]])) continue;
            int j = got < k ? got++ : k - 1;
            while (j > 0 && x[i] > x[idx[j - 1]]) idx[j] = idx[j - 1], j--;
            idx[j] = i;
        }
    }
}

/* The exponentials at the machine's vector width (ng_act_exp_sum): with libm's exp per element
 * in double, the edge's beam search (a log-softmax over GPT-2's 50257 logits per hypothesis and
 * token) spent a third of a completion in exp. */
double ng_log_sum_exp(const float *x, int n) {
    float mx = vmax(x, n);
    if (!(mx > -INFINITY && mx < INFINITY)) return mx; /* all -inf, or an inf among them */
    return mx + log(ng_act_exp_sum(NULL, x, (size_t)(n > 0 ? n : 0), mx, 1.0f));
}

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id; /* deterministic order on ties */
}

/* 1 when a ranks before b: the larger logit, ties by the smaller id (cand_desc's order). */
static inline int cand_before(cand a, cand b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/* The m best of c[0..n) into c[0..m), in no order: quickselect, O(n) on average. */
static void select_best(cand *c, int n, int m) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cand pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_before(c[i], pivot)) i++;
            while (cand_before(pivot, c[j])) j--;
            if (i <= j) {
                cand t = c[i];
                c[i++] = c[j], c[j--] = t;
            }
        }
        if (m - 1 <= j) hi = j; /* the m-th best lies left of the cut */
        else if (m - 1 >= i) lo = i;
        else break;             /* between: equal to the pivot, in place */
    }
}

/* Up to this many, the m best are kept by insertion in one pass (ng_top_k, O(n m) at worst);
 * more are selected, then sorted. A flat distribution under top-p 0.95 without top-k needed
 * thousands of GPT-2's tokens: by insertion, 0.3 s a token. */
#define TOP_INSERT 64

/* The m best logits, best first (ties by id), into s->c[0..m). */
static void select_top(ng_sampler *s, const float *logits, int n, int m) {
    if (m > TOP_INSERT || m >= n) {
        for (int i = 0; i < n; i++) s->c[i] = (cand){logits[i], i};
        if (m < n) select_best(s->c, n, m);
        qsort(s->c, (size_t)(m < n ? m : n), sizeof *s->c, cand_desc);
        return;
    }
    ng_top_k(logits, n, m, s->idx);
    for (int i = 0; i < m; i++) s->c[i] = (cand){logits[s->idx[i]], s->idx[i]};
}

/* A draw from softmax(logits / temp) over the whole vocabulary: O(n), no sorting. The
 * exponentials are vector ones (the API's default sampling, no top-k: libm's exp per logit took
 * ~0.25 ms a token for GPT-2's vocabulary); the draw's running sum skips whole blocks by their
 * sums. */
#define DRAW_BLOCK 512

static int sample_all(ng_sampler *s, const float *logits, int n) {
    float mx = vmax(logits, n);
    double sum = ng_act_exp_sum(s->e, logits, (size_t)n, mx, 1.0f / s->p.temp);
    double r = rng_uniform(&s->rng) * sum, acc = 0;
    for (int i0 = 0; i0 < n; i0 += DRAW_BLOCK) {
        int i1 = n - i0 < DRAW_BLOCK ? n : i0 + DRAW_BLOCK;
        float b = 0;
#pragma omp simd reduction(+ : b)
        for (int i = i0; i < i1; i++) b += s->e[i];
        if (r >= acc + b) { /* not in this block (a rounding short of it: the next one's scan finds it) */
            acc += b;
            continue;
        }
        for (int i = i0; i < i1; i++)
            if (r < (acc += s->e[i])) return i;
    }
    return ng_argmax(logits, n);
}

int ng_sampler_sample(ng_sampler *s, float *logits, const int *history, int n_history) {
    const ng_sampler_params *p = &s->p;
    int n = s->n_vocab;
    if (p->repeat_penalty != 1.0f && p->repeat_last_n > 0) {
        int from = n_history > p->repeat_last_n ? n_history - p->repeat_last_n : 0;
        /* each distinct token is penalized once, however often it recurs */
        for (int i = from; i < n_history; i++) {
            int t = history[i], seen = 0;
            if (t < 0 || t >= n) continue;
            for (int j = from; j < i && !seen; j++) seen = history[j] == t;
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
    if (p->temp <= 0) return ng_argmax(logits, n);

    int k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    int use_p = p->top_p < 1.0f, use_min = p->min_p > 0;
    if (k == n && !use_p && !use_min) return sample_all(s, logits, n);
    /* Without top-k the candidates are the whole vocabulary, but top-p and min-p keep only the
     * head of the sorted distribution: the best m are selected (64, then 8x more while the cut
     * is not inside them) instead of sorting all n, with the mass of all n as the top-p total. */
    double total = -1;
    int m = k;
    if (k == n) {
        float mx = vmax(logits, n);
        total = ng_act_exp_sum(NULL, logits, (size_t)n, mx, 1.0f / p->temp);
        m = n < 64 ? n : 64;
    }
    for (;;) {
        select_top(s, logits, n, m);
        double mx = s->c[0].logit, sum = 0;
        for (int i = 0; i < m; i++) {
            double e = exp(((double)s->c[i].logit - mx) / p->temp);
            s->c[i].logit = (float)e;
            sum += e;
        }
        double tot = total >= 0 ? total : sum;
        int cut = m, inside = m == k;
        /* top-p: the smallest prefix whose mass reaches top_p */
        if (use_p) {
            double acc = 0;
            for (int i = 0; i < m; i++) {
                acc += s->c[i].logit / tot;
                if (acc >= p->top_p) {
                    cut = i + 1, inside = 1;
                    break;
                }
            }
        }
        /* min-p: drop tokens far less likely than the best one */
        if (use_min) {
            double thresh = p->min_p * s->c[0].logit;
            int j = 1;
            while (j < cut && s->c[j].logit >= thresh) j++;
            if (j < m) inside = 1;
            cut = j;
        }
        if (!inside) {
            m = m > k / 8 ? k : m * 8;
            continue;
        }
        sum = 0;
        for (int i = 0; i < cut; i++) sum += s->c[i].logit;
        double r = rng_uniform(&s->rng) * sum, acc = 0;
        for (int i = 0; i < cut; i++) {
            acc += s->c[i].logit;
            if (r < acc) return s->c[i].id;
        }
        return s->c[cut - 1].id;
    }
}
