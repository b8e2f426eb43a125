/* vmath — the activation functions of inference and training (GELU, SiLU, tanh) over arrays, on
 * an exp written so that the compiler vectorizes the loops (libm's expf/tanhf are scalar calls:
 * GELU over a GPT-2 FFN row took ~4% of a decode step). Inference (model/forward.c) and training
 * (train/train_ops.c) call the same functions, so a trained model computes what it learned.
 *
 * ng_vexp: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, then e^r by the degree-6
 * polynomial of Cephes' expf and 2^n through the exponent bits: within 2 ulp of expf for
 * x in [-87, 88]; inputs are clamped to that range (e^-87 ~ 1.6e-38, e^88 ~ 1.7e38). */
#ifndef NG_CORE_VMATH_H
#define NG_CORE_VMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float ng_vexp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick: SSE2 has no round instruction, and a floorf
     * call would keep the loop scalar */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t e = (uint32_t)((int32_t)n + 127) << 23; /* unsigned: a NaN x gives NaN, not a shift of a negative */
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* tanh(u) = 1 - 2 / (e^(2u) + 1): exact limits at both ends, absolute error ~1e-7 near 0. */
static inline float ng_vtanh(float u) { return 1.0f - 2.0f / (ng_vexp(2.0f * u) + 1.0f); }

#define NG_GELU_C 0.7978845608028654f /* sqrt(2/pi) */

/* GPT-2's "gelu_new" (the tanh approximation): y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 * y may be x. */
static inline void ng_gelu(float *y, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + ng_vtanh(NG_GELU_C * (v + 0.044715f * v * v * v)));
    }
}

/* SwiGLU's gate: y = silu(g) u = g / (1 + e^-g) u. y may be g. */
static inline void ng_silu_mul(float *y, const float *g, const float *u, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + ng_vexp(-g[i])) * u[i];
}

/* The largest of x[0..n) (-inf when none is larger; NaNs are passed over), in 64 lanes of partial
 * maxima: one running maximum is a chain of dependent compare-and-selects (an argmax over
 * GPT-2's 50257 logits took 38 us so, 3.6 us now on one Zen 5 core), where independent lanes go
 * at the loads' pace. Always inlined, as ng_exp_sum. */
static inline __attribute__((always_inline)) float ng_max(const float *x, size_t n) {
    float m[64];
    for (int j = 0; j < 64; j++) m[j] = -__builtin_inff();
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma omp simd
        for (int j = 0; j < 64; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    size_t rest = n - i;
#pragma omp simd
    for (size_t j = 0; j < rest; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (int w = 32; w >= 1; w /= 2) /* the lanes folded in halves */
#pragma omp simd
        for (int j = 0; j < w; j++) m[j] = m[j + w] > m[j] ? m[j + w] : m[j];
    return m[0];
}

/* sum_i a[i] b[i] in 64 lanes of partial sums (lane j: elements j, j + 64, ..., in order), folded
 * in halves: the same bits at every vector width, without one chain of dependent adds. */
static inline __attribute__((always_inline)) float ng_dot(const float *a, const float *b, size_t n) {
    float m[64];
    for (int j = 0; j < 64; j++) m[j] = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma omp simd
        for (int j = 0; j < 64; j++) m[j] += a[i + j] * b[i + j];
    size_t rest = n - i;
#pragma omp simd
    for (size_t j = 0; j < rest; j++) m[j] += a[i + j] * b[i + j];
    for (int w = 32; w >= 1; w /= 2)
#pragma omp simd
        for (int j = 0; j < w; j++) m[j] += m[j + w];
    return m[0];
}

/* sum_i x[i] (sq 0), or sum_i (x[i] - c)^2 (sq 1), in 64 lanes of partial sums folded in halves
 * (as ng_dot): the same bits at every vector width. */
static inline __attribute__((always_inline)) float ng_sum_dev(const float *x, size_t n, float c, int sq) {
    float m[64];
    for (int j = 0; j < 64; j++) m[j] = 0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma omp simd
        for (int j = 0; j < 64; j++) m[j] += sq ? (x[i + j] - c) * (x[i + j] - c) : x[i + j];
    size_t rest = n - i;
#pragma omp simd
    for (size_t j = 0; j < rest; j++) m[j] += sq ? (x[i + j] - c) * (x[i + j] - c) : x[i + j];
    for (int w = 32; w >= 1; w /= 2)
#pragma omp simd
        for (int j = 0; j < w; j++) m[j] += m[j + w];
    return m[0];
}

/* LayerNorm of a row (GPT-2's, with bias): out = (x - mean) / sqrt(var + eps) w + b. out may be x. */
static inline __attribute__((always_inline)) void ng_layernorm(float *out, const float *x, const float *w,
                                                               const float *b, size_t n, float eps) {
    float mean = ng_sum_dev(x, n, 0, 0) / (float)n, var = ng_sum_dev(x, n, mean, 1);
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* RMSNorm of a row (LLaMA's): out = x / sqrt(mean(x^2) + eps) w. out may be x. */
static inline __attribute__((always_inline)) void ng_rmsnorm(float *out, const float *x, const float *w,
                                                             size_t n, float eps) {
    float r = 1.0f / sqrtf(ng_sum_dev(x, n, 0, 1) / (float)n + eps);
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* y[i] += sum_r c[r] rows[r ld + i] for i < n, r < m, each sum taken over r in order (the same
 * bits at every vector width), 256 outputs at a time in the lanes. */
static inline __attribute__((always_inline)) void ng_add_combination(float *y, const float *rows, size_t ld,
                                                                     const float *c, int m, size_t n) {
    float acc[256];
    for (size_t i0 = 0; i0 < n; i0 += 256) {
        size_t nn = n - i0 < 256 ? n - i0 : 256;
        for (size_t i = 0; i < nn; i++) acc[i] = 0;
        for (int r = 0; r < m; r++) {
            const float *row = rows + (size_t)r * ld + i0;
            float cr = c[r];
#pragma omp simd
            for (size_t i = 0; i < nn; i++) acc[i] += row[i] * cr;
        }
#pragma omp simd
        for (size_t i = 0; i < nn; i++) y[i0 + i] += acc[i];
    }
}

/* A softmax's numerators and denominator: y[i] = e^((x[i] - mx) scale) (not stored when y is
 * NULL) and their sum, mx at least every x[i]. Blocks of 1024 are summed in float, the vector
 * lanes side by side (so the bits depend on the vector width), the block sums in double; each
 * term within 2 ulp, the sum within ~1e-6 relative. Always inlined: core/kernels.c compiles it
 * for each vector width, and out of line it ran at the baseline's. */
static inline __attribute__((always_inline)) double ng_exp_sum(float *y, const float *x, size_t n, float mx,
                                                                 float scale) {
    double s = 0;
    for (size_t i0 = 0; i0 < n; i0 += 1024) {
        size_t i1 = n - i0 < 1024 ? n : i0 + 1024;
        float b = 0;
        if (y) {
#pragma omp simd reduction(+ : b)
            for (size_t i = i0; i < i1; i++) b += y[i] = ng_vexp((x[i] - mx) * scale);
        } else {
#pragma omp simd reduction(+ : b)
            for (size_t i = i0; i < i1; i++) b += ng_vexp((x[i] - mx) * scale);
        }
        s += b;
    }
    return s;
}

#endif
