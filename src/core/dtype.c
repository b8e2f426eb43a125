#include "dtype.h"

#include "kernels.h"
#include "quant.h"

#include <math.h>
#include <string.h>
#include <strings.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    const char *name;
    int block;
    size_t size;
} type_info;

/* Block layouts as ggml defines them: e.g. q8_0 is one f16 scale + 32 int8 (34 bytes). */
static const type_info TYPES[NG_TYPE_COUNT] = {
    [NG_F32] = {"f32", 1, 4},         [NG_F16] = {"f16", 1, 2},         [NG_Q4_0] = {"q4_0", 32, 18},
    [NG_Q4_1] = {"q4_1", 32, 20},     [NG_Q5_0] = {"q5_0", 32, 22},     [NG_Q5_1] = {"q5_1", 32, 24},
    [NG_Q8_0] = {"q8_0", 32, 34},     [NG_Q8_1] = {"q8_1", 32, 36},     [NG_Q2_K] = {"q2_k", 256, 84},
    [NG_Q3_K] = {"q3_k", 256, 110},   [NG_Q4_K] = {"q4_k", 256, 144},   [NG_Q5_K] = {"q5_k", 256, 176},
    [NG_Q6_K] = {"q6_k", 256, 210},   [NG_Q8_K] = {"q8_k", 256, 292},   [NG_I8] = {"i8", 1, 1},
    [NG_I16] = {"i16", 1, 2},         [NG_I32] = {"i32", 1, 4},         [NG_I64] = {"i64", 1, 8},
    [NG_F64] = {"f64", 1, 8},         [NG_BF16] = {"bf16", 1, 2},       [NG_Q4_0R] = {"q4_0r", 128, 72},
    [NG_Q8_0R] = {"q8_0r", 128, 136}, [NG_Q4_KR] = {"q4_kr", 256, 144}, [NG_Q6_KR] = {"q6_kr", 256, 210},
};

int ng_type_known(int t) { return t >= 0 && t < NG_TYPE_COUNT && TYPES[t].name != NULL; }

int ng_type_in_files(int t) { return t < NG_FILE_TYPE_COUNT && ng_type_known(t); }

const char *ng_type_name(ng_type t) { return ng_type_known(t) ? TYPES[t].name : "?"; }

int ng_type_parse(const char *name) {
    for (int t = 0; t < NG_FILE_TYPE_COUNT; t++)
        if (TYPES[t].name && strcasecmp(TYPES[t].name, name) == 0) return t;
    return -1;
}

int ng_type_block(ng_type t) { return ng_type_known(t) ? TYPES[t].block : 0; }
size_t ng_type_size(ng_type t) { return ng_type_known(t) ? TYPES[t].size : 0; }

size_t ng_row_size(ng_type t, int64_t n) { return (size_t)(n / ng_type_block(t)) * ng_type_size(t); }

float ng_f16_to_f32(ng_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalize */
            exp = 113;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) { /* inf; nan made quiet, as F16C's conversion does */
        u = sign | 0x7f800000 | (mant << 13) | (mant ? 0x400000 : 0);
    } else {
        u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

ng_f16 ng_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff);
    uint32_t mant = u & 0x7fffff;
    /* inf; nan made quiet, its payload's high bits kept (what F16C's conversion gives) */
    if (exp == 255) return (ng_f16)(sign | 0x7c00 | (mant ? 0x200 | mant >> 13 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31) return (ng_f16)(sign | 0x7c00); /* overflow -> inf */
    if (e <= 0) {                                /* subnormal or zero */
        if (e < -10) return (ng_f16)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (ng_f16)(sign | r);
    }
    uint32_t r = (uint32_t)(e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++; /* may carry into exp: correct */
    return (ng_f16)(sign | r);
}

ng_bf16 ng_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (ng_bf16)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fff + ((u >> 16) & 1);
    return (ng_bf16)(u >> 16);
}

#if defined(__x86_64__)
static int has_f16c(void) { return ng_cpu_features()->f16c; } /* set only with AVX's OS support */

/* F16C's conversion to f32 (exact): the same bits as ng_f16_to_f32 for every input. */
__attribute__((target("avx,f16c"))) static int64_t from_f16_f16c(float *d, const ng_f16 *s, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    return i;
}

/* F16C's conversion, rounding to nearest even: the same bits as ng_f32_to_f16 for every input
 * (test_kernels compares them), 8 values an instruction instead of a call each. */
__attribute__((target("avx,f16c"))) static int64_t to_f16_f16c(ng_f16 *d, const float *s, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#endif

void ng_to_f32(float *dst, const void *src, ng_type t, int64_t n) {
    if (t == NG_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (t == NG_F16) {
        const ng_f16 *s = src;
        int64_t i = 0;
#if defined(__x86_64__)
        if (has_f16c()) i = from_f16_f16c(dst, s, n);
#endif
        for (; i < n; i++) dst[i] = ng_f16_to_f32(s[i]);
    } else if (t == NG_BF16) {
        const ng_bf16 *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = ng_bf16_to_f32(s[i]);
    } else {
        ng_dequantize_row(t, src, dst, n); /* block types: n and src on block boundaries */
    }
}

void ng_from_f32(void *dst, const float *src, ng_type t, int64_t n) {
    if (t == NG_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (t == NG_F16) {
        ng_f16 *d = dst;
        int64_t i = 0;
#if defined(__x86_64__)
        if (has_f16c()) i = to_f16_f16c(d, src, n);
#endif
        for (; i < n; i++) d[i] = ng_f32_to_f16(src[i]);
    } else if (t == NG_BF16) {
        ng_bf16 *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = ng_f32_to_bf16(src[i]);
    }
}
