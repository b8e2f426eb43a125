/* sampler — picks the next token from logits: repetition penalty, then greedy or
 * temperature sampling restricted by top-k, top-p (nucleus) and min-p, from a seeded RNG so
 * that the same seed gives the same output. Owns a scratch array sized to the vocabulary. */
#ifndef NG_SAMPLER_H
#define NG_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temp;           /* <= 0: greedy (argmax) */
    int top_k;            /* 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off; keep tokens with p >= min_p * p_max */
    float repeat_penalty; /* 1: off; divides positive logits (multiplies negative) of recent tokens */
    int repeat_last_n;    /* how many recent tokens the penalty looks at */
    uint64_t seed;
} ng_sampler_params;

ng_sampler_params ng_sampler_defaults(void);

typedef struct ng_sampler ng_sampler;
ng_sampler *ng_sampler_new(const ng_sampler_params *p, int n_vocab);
void ng_sampler_free(ng_sampler *s);
/* Chooses a token. logits (n_vocab) are modified in place. history: the tokens so far. */
int ng_sampler_sample(ng_sampler *s, float *logits, const int *history, int n_history);
/* Index of the largest value (first on ties). */
int ng_argmax(const float *x, int n);
/* The indices of the k largest of x[0..n) (0 < k <= n), largest first, ties by index, into idx:
 * one pass, the k kept sorted by insertion (O(n k) worst case, O(n) for typical logits). */
void ng_top_k(const float *x, int n, int k, int *idx);
/* log(sum(exp(x[0..n)))) without overflow, within ~1e-6 (the exponentials in float, vectorized:
 * core/vmath.h's ng_exp_sum). */
double ng_log_sum_exp(const float *x, int n);

#endif
