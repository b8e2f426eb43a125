/* Tests for the block-quantized formats (src/core/quant.c), the quantized matmul kernels
 * (src/core/kernels.c), quantized whole models, and `netgpt quantize` / `netgpt eval`.
 *
 * Layouts: every format is checked against blocks this file builds itself from the format's
 * definition (ggml's, see quant.h), with codes and scales that depend on the position, so a
 * swapped nibble, bit or sub-block shows.
 *
 * Kernels: the reference dequantizes each row and dots in index order; the portable path
 * dequantizes and dots in another order; both differ from the exact sum by f32 rounding only:
 *     |y - exact| <= (K + 2) 2^-24 S,  S = sum_k |x_k w_k|.
 * The SIMD GEMV (B <= 8) first rounds x to 8 bits per block of 32 (x_k ~ d q_k, d = max|x|/127
 * over the block, |x_k - d q_k| <= d/2 + 2^-22 |x_k|), then sums exact integer block dot
 * products with f32 scale multiply-adds. Its bound against the reference is therefore
 *     |fast - ref| <= sum_k |w_k| (d_k/2 + 2^-20 |x_k|) + 2 (K + 2) 2^-24 M + 1e-30,
 * where M bounds the magnitudes the float sums see: sum_k |x_k| m_k (m_k = |w_k| for q8_0 and
 * q4_0, whose offsets are applied in integers; for q4_k |d sc q| + |dmin m|; for q6_k
 * 64 |d sc|) plus the same with d_k for x. The int8 GEMM for q8_0 and q4_0 on AVX-512 VNNI
 * (from 18 rows) rounds x the same way and sums the same exact block products, so it meets the
 * same bound. The f32 SIMD GEMM (B > 64 without VNNI) dequantizes to f32, so it meets the f32
 * bound. Results are bit-identical for 1 and 2 threads on every path. */
#include "core/dtype.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "core/util.h"
#include "formats/gguf.h"
#include "matmul_threads.h"
#include "model/model.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}

static float frand(void) { return (float)(rnd() >> 8) * (1.0f / (1 << 23)) - 1.0f; } /* [-1, 1) */

static void put_half(uint8_t *p, float f) {
    uint16_t h = ng_f32_to_f16(f);
    memcpy(p, &h, 2);
}

static float get_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ng_f16_to_f32(h);
}

#define COUNT(a) (int)(sizeof(a) / sizeof(a[0]))

/* ---- block layouts: known answers ---- */

/* Compares ng_dequantize_row of n values against want; exact (both are one product in f32
 * of the same factors, or the same sum for the formats with a min). */
static int check_dequant(ng_type t, const void *blk, const float *want, int n) {
    float got[512];
    ng_dequantize_row(t, blk, got, n);
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (!(got[i] == want[i]) && bad++ < 4)
            fprintf(stderr, "%s value %d: got %g want %g\n", ng_type_name(t), i, got[i], want[i]);
    return bad;
}

static void test_layout_q8_0(void) {
    uint8_t b[2 * 34];
    float want[64];
    for (int blk = 0; blk < 2; blk++) {
        float d = blk ? 0.25f : 0.0625f;
        put_half(b + 34 * blk, d);
        for (int j = 0; j < 32; j++) {
            int q = (j * 9 + blk * 5) % 255 - 127; /* covers -127..127 in a scattered order */
            b[34 * blk + 2 + j] = (uint8_t)(int8_t)q;
            want[32 * blk + j] = d * (float)q;
        }
    }
    CHECK(check_dequant(NG_Q8_0, b, want, 64) == 0, "q8_0");
}

/* q4_0 / q4_1: value j of the block in the low nibble of qs[j], value j+16 in the high one. */
static void test_layout_q4(void) {
    uint8_t b0[18], b1[20];
    float w0[32], w1[32];
    put_half(b0, 0.5f);
    put_half(b1, 0.125f), put_half(b1 + 2, -1.5f);
    memset(b0 + 2, 0, 16), memset(b1 + 4, 0, 16);
    for (int j = 0; j < 32; j++) {
        int q = (j * 7 + 3) % 16;
        b0[2 + j % 16] |= (uint8_t)(j < 16 ? q : q << 4);
        b1[4 + j % 16] |= (uint8_t)(j < 16 ? q : q << 4);
        w0[j] = 0.5f * (float)(q - 8);
        w1[j] = 0.125f * (float)q + -1.5f;
    }
    CHECK(check_dequant(NG_Q4_0, b0, w0, 32) == 0, "q4_0");
    CHECK(check_dequant(NG_Q4_1, b1, w1, 32) == 0, "q4_1");
}

/* q5_0 / q5_1: nibbles as q4, the fifth bit of value j in bit j of the little-endian qh. */
static void test_layout_q5(void) {
    uint8_t b0[22], b1[24];
    float w0[32], w1[32];
    put_half(b0, 0.25f);
    put_half(b1, 0.5f), put_half(b1 + 2, 2.0f);
    memset(b0 + 2, 0, 20), memset(b1 + 4, 0, 20);
    for (int j = 0; j < 32; j++) {
        int q = (j * 13 + 5) % 32;
        b0[2 + j / 8] |= (uint8_t)((q >> 4) << (j % 8));
        b1[4 + j / 8] |= (uint8_t)((q >> 4) << (j % 8));
        b0[6 + j % 16] |= (uint8_t)(j < 16 ? q & 15 : (q & 15) << 4);
        b1[8 + j % 16] |= (uint8_t)(j < 16 ? q & 15 : (q & 15) << 4);
        w0[j] = 0.25f * (float)(q - 16);
        w1[j] = 0.5f * (float)q + 2.0f;
    }
    CHECK(check_dequant(NG_Q5_0, b0, w0, 32) == 0, "q5_0");
    CHECK(check_dequant(NG_Q5_1, b1, w1, 32) == 0, "q5_1");
}

/* The 12 scale bytes of q4_k / q5_k: sub-block j < 4 has its 6-bit scale in scales[j] and min
 * in scales[j+4] (low 6 bits); j >= 4 has the low 4 bits of the scale in the low nibble of
 * scales[j+4], of the min in its high nibble, and the top 2 bits of each in the top 2 bits of
 * scales[j-4] (scale) and scales[j] (min). */
static void pack_scales_k4(uint8_t *s, const int *sc, const int *mn) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)sc[j];
            s[j + 4] |= (uint8_t)mn[j];
        } else {
            s[j + 4] |= (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* q4_k: value 64c + l (l < 32) in the low nibble of qs[32c + l], value 64c + 32 + l in its high
 * nibble; x = d sc_j q - dmin m_j for sub-block j = value / 32. q5_k adds bit j of qh[l] as
 * the fifth bit of value 32j + l. */
static void test_layout_k4(void) {
    uint8_t b4[144], b5[176];
    float w4[256], w5[256];
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) sc[j] = (j * 23 + 7) % 64, mn[j] = (j * 41 + 60) % 64;
    float d = 0.03125f, dmin = 0.0078125f;
    put_half(b4, d), put_half(b4 + 2, dmin), put_half(b5, d), put_half(b5 + 2, dmin);
    pack_scales_k4(b4 + 4, sc, mn);
    pack_scales_k4(b5 + 4, sc, mn);
    memset(b4 + 16, 0, 128), memset(b5 + 16, 0, 160);
    for (int i = 0; i < 256; i++) {
        int j = i / 32, l = i % 32, c = i / 64, hi = (i / 32) & 1;
        int q4 = (i * 5 + i / 16) % 16, q5 = (i * 11 + i / 8) % 32;
        b4[16 + 32 * c + l] |= (uint8_t)(hi ? q4 << 4 : q4);
        b5[48 + 32 * c + l] |= (uint8_t)(hi ? (q5 & 15) << 4 : q5 & 15);
        b5[16 + l] |= (uint8_t)((q5 >> 4) << j);
        w4[i] = d * (float)sc[j] * (float)q4 - dmin * (float)mn[j];
        w5[i] = d * (float)sc[j] * (float)q5 - dmin * (float)mn[j];
    }
    CHECK(check_dequant(NG_Q4_K, b4, w4, 256) == 0, "q4_k");
    CHECK(check_dequant(NG_Q5_K, b5, w5, 256) == 0, "q5_k");
}

/* q6_k: value i = 128h + 32s + l (h half, s quarter, l < 32) has its low 4 bits in
 * ql[64h + 32(s&1) + l] (low nibble for s < 2, high for s >= 2), its high 2 bits in bits 2s, 2s+1
 * of qh[32h + l]; x = d sc[i/16] (q - 32), scales int8. */
static void test_layout_q6_k(void) {
    uint8_t b[210];
    float w[256];
    memset(b, 0, sizeof b);
    float d = 0.015625f;
    put_half(b + 208, d);
    for (int g = 0; g < 16; g++) b[192 + g] = (uint8_t)(int8_t)(g * 17 % 255 - 127);
    for (int i = 0; i < 256; i++) {
        int h = i / 128, s = (i / 32) % 4, l = i % 32;
        int q = (i * 29 + i / 64) % 64;
        b[64 * h + 32 * (s & 1) + l] |= (uint8_t)(s < 2 ? q & 15 : (q & 15) << 4);
        b[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * s));
        w[i] = d * (float)(int8_t)b[192 + i / 16] * (float)(q - 32);
    }
    CHECK(check_dequant(NG_Q6_K, b, w, 256) == 0, "q6_k");
}

static void test_type_sizes(void) {
    static const struct {
        ng_type t;
        int qk;
        size_t bytes;
    } want[] = {{NG_Q4_0, 32, 18}, {NG_Q4_1, 32, 20}, {NG_Q5_0, 32, 22},  {NG_Q5_1, 32, 24},
                {NG_Q8_0, 32, 34}, {NG_Q4_K, 256, 144}, {NG_Q5_K, 256, 176}, {NG_Q6_K, 256, 210}};
    for (int i = 0; i < COUNT(want); i++) {
        CHECK(ng_type_block(want[i].t) == want[i].qk && ng_type_size(want[i].t) == want[i].bytes, "%s: %d, %zu",
              ng_type_name(want[i].t), ng_type_block(want[i].t), ng_type_size(want[i].t));
        CHECK(ng_type_can_dequant(want[i].t) && ng_matmul_supported(want[i].t), "%s", ng_type_name(want[i].t));
    }
}

/* ---- quantization round trips ---- */

/* Every value comes back within half a grid step |d| (plus the f16 rounding of d, 2^-11
 * relative, times at most 127 or 8 steps), d = max|x|/127 for q8_0 and (value of largest
 * magnitude)/-8 for q4_0. q4_0's codes reach -8 d on the extreme's side but only +7 d on the
 * other, so values beyond 7.5 d there are clipped to 7 d. */
static void test_quant_roundtrip(void) {
    enum { N = 32 * 64 };
    float x[N], y[N];
    uint8_t q[N / 32 * 34];
    for (int i = 0; i < N; i++) x[i] = frand() * (float)(1 + i / 256); /* blocks of several scales */
    for (int ti = 0; ti < 2; ti++) {
        ng_type t = ti ? NG_Q4_0 : NG_Q8_0;
        ng_quantize_row(t, x, q, N);
        ng_dequantize_row(t, q, y, N);
        int bad = 0;
        for (int b = 0; b < N / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
            float ds = get_half(q + ng_type_size(t) * b), d = fabsf(ds);
            float step_want = amax / (ti ? 8.0f : 127.0f);
            if (fabsf(d - step_want) > step_want * 0x1p-10f) bad++;
            for (int j = 0; j < 32; j++) {
                float e = fabsf(x[32 * b + j] - y[32 * b + j]);
                float tol = d * 0.5f + amax * 0x1p-10f;
                if (ti && x[32 * b + j] / ds > 7.5f) tol += fabsf(x[32 * b + j]) - 7.5f * d;
                if (!(e <= tol) && bad++ < 4) fprintf(stderr, "%s [%d]: %g -> %g\n", ng_type_name(t), 32 * b + j, x[32 * b + j], y[32 * b + j]);
            }
        }
        CHECK(bad == 0, "%s: %d values off", ng_type_name(t), bad);
        /* values on the grid come back exactly */
        float g[64], h[64];
        for (int j = 0; j < 64; j++) {
            int c = ti ? (j * 5) % 16 - 8 : (j * 37) % 255 - 127;
            g[j] = 0.125f * (float)c;
        }
        g[0] = ti ? -1.0f : 127 * 0.125f, g[32] = ti ? -1.0f : -127 * 0.125f; /* the extremes set d */
        ng_quantize_row(t, g, q, 64);
        ng_dequantize_row(t, q, h, 64);
        CHECK(memcmp(g, h, sizeof g) == 0, "%s: grid values not exact", ng_type_name(t));
    }
}

/* The first index where a and b (n bytes) differ, or -1. */
static int first_diff(const uint8_t *a, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return -1;
}

/* q4_k and q6_k from values on a grid the formats hold exactly: the quantizer's bytes must be
 * the ones this file packs itself from the format's definition (test_layout_k4's and
 * test_layout_q6_k's layouts). Each sub-block's codes span 0..15 (q6_k: the value of largest
 * magnitude at -32), and a sub-block with scale 63 (q6_k: 127) and one with min 63 fix d and
 * dmin at powers of two, so nothing rounds. */
static void test_quant_k_exact(void) {
    uint8_t want4[144], got4[144], want6[210], got6[210];
    float x[256];
    int sc[8], mn[8];
    const float d = 0x1p-8f, dmin = 0x1p-9f;
    for (int j = 0; j < 8; j++) sc[j] = j == 2 ? 63 : 20 + 5 * j, mn[j] = j == 5 ? 63 : (j * 19) % 50;
    put_half(want4, d), put_half(want4 + 2, dmin);
    pack_scales_k4(want4 + 4, sc, mn);
    memset(want4 + 16, 0, 128);
    for (int i = 0; i < 256; i++) {
        int j = i / 32, l = i % 32, c = i / 64, q = (l * 7 + j) % 16;
        want4[16 + 32 * c + l] |= (uint8_t)((i / 32) & 1 ? q << 4 : q);
        x[i] = d * (float)sc[j] * (float)q - dmin * (float)mn[j];
    }
    ng_quantize_row(NG_Q4_K, x, got4, 256);
    CHECK(first_diff(got4, want4, 144) < 0, "q4_k: byte %d differs from the packed grid's",
          first_diff(got4, want4, 144));
    const float d6 = 0x1p-14f;
    int8_t sc6[16];
    memset(want6, 0, sizeof want6);
    put_half(want6 + 208, d6);
    for (int g = 0; g < 16; g++)
        sc6[g] = (int8_t)(g == 9 ? 127 : 40 + 5 * g), want6[192 + g] = (uint8_t)sc6[g];
    for (int i = 0; i < 256; i++) {
        int h = i / 128, q4 = (i / 32) % 4, l = i % 32, k = i % 16 == 3 ? -32 : (i * 13 + i / 16) % 63 - 31;
        int q = k + 32;
        want6[64 * h + 32 * (q4 & 1) + l] |= (uint8_t)(q4 < 2 ? q & 15 : (q & 15) << 4);
        want6[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * q4));
        x[i] = d6 * (float)sc6[i / 16] * (float)k;
    }
    ng_quantize_row(NG_Q6_K, x, got6, 256);
    CHECK(first_diff(got6, want6, 210) < 0, "q6_k: byte %d differs from the packed grid's",
          first_diff(got6, want6, 210));
}

/* rms(a - b) / rms(b) over n values. */
static double rel_rms(const float *a, const float *b, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++)
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
    return sqrt(e / r);
}

/* Relative rms error of t on x (n values) through a quantize / dequantize round trip. */
static double quant_rel_rms(ng_type t, const float *x, int n) {
    uint8_t *q = malloc(ng_row_size(t, n));
    float *y = malloc(sizeof(float) * (size_t)n);
    ng_quantize_row(t, x, q, n);
    ng_dequantize_row(t, q, y, n);
    double e = rel_rms(y, x, (size_t)n);
    free(q), free(y);
    return e;
}

/* Values of several shapes (bell-shaped, all positive, rare outliers, sub-blocks of different
 * scales): the k-quants' errors against q8_0 and q4_0 on the same values. Bell-shaped values
 * (sums of 4 uniforms) measure rms / rms(x): q8_0 0.005, q6_k 0.019, q4_k 0.065, q4_0 0.086; the
 * bounds leave a margin and keep the order q8_0 < q6_k < q4_k < q4_0 in every shape. A wrong
 * scale, min or code order gives errors of order 1. */
static void test_quant_k_error(void) {
    enum { N = 256 * 64 };
    static float x[N];
    for (int shape = 0; shape < 4; shape++) {
        for (int i = 0; i < N; i++) {
            float v = (frand() + frand() + frand() + frand()) * 0.5f;
            x[i] = shape == 1                      ? fabsf(v) + 0.1f
                   : shape == 2 && rnd() % 97 == 0 ? 8 * v
                   : shape == 3                    ? v * (float)(1 + (i / 32) % 7)
                                                   : v;
        }
        double e8 = quant_rel_rms(NG_Q8_0, x, N), e6 = quant_rel_rms(NG_Q6_K, x, N),
               e4k = quant_rel_rms(NG_Q4_K, x, N), e4 = quant_rel_rms(NG_Q4_0, x, N);
        printf("# shape %d: rms error / rms: q8_0 %.4f, q6_k %.4f, q4_k %.4f, q4_0 %.4f\n", shape, e8, e6,
               e4k, e4);
        CHECK(e8 < e6 && e6 < e4k && e4k < e4, "shape %d: errors out of order", shape);
        CHECK(e6 <= 0.03 && e4k <= 0.1, "shape %d: q6_k %.4f, q4_k %.4f", shape, e6, e4k);
    }
    /* zeros, a constant row, and a row of one sign come back as they are (up to a step) */
    float z[256], y[256];
    uint8_t q[210];
    static const ng_type ts[] = {NG_Q4_K, NG_Q6_K};
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < 256; i++) z[i] = c == 0 ? 0.0f : c == 1 ? -0.375f : 0.25f + 0.001f * (float)i;
            ng_quantize_row(ts[k], z, q, 256);
            ng_dequantize_row(ts[k], q, y, 256);
            double e = 0;
            for (int i = 0; i < 256; i++) e = fmax(e, fabs((double)y[i] - z[i]));
            CHECK(e <= (c == 2 ? 0.02 : 1e-3), "%s, row %d: max error %g", ng_type_name(ts[k]), c, e);
        }
}

/* ng_convert_rows shares the rows out over the threads: the same bytes on 1, 2 and 3 threads,
 * and each row as ng_quantize_row writes it alone. */
static void test_convert_threads(void) {
    enum { COLS = 512, ROWS = 97 };
    static float x[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++) x[i] = frand() * (float)(1 + i % 5);
    static const ng_type ts[] = {NG_Q8_0, NG_Q4_K, NG_Q6_K, NG_F16};
    for (int k = 0; k < COUNT(ts); k++) {
        size_t rb = ng_row_size(ts[k], COLS);
        uint8_t *one = malloc(rb);
        ng_set_threads(1);
        uint8_t *a = ng_convert_rows(x, NG_F32, ts[k], COLS, ROWS);
        for (int nt = 2; nt <= 3; nt++) {
            ng_set_threads(nt);
            uint8_t *b = ng_convert_rows(x, NG_F32, ts[k], COLS, ROWS);
            CHECK(memcmp(a, b, rb * ROWS) == 0, "%s: %d threads differ from one", ng_type_name(ts[k]), nt);
            free(b);
        }
        ng_quantize_row(ts[k], x + (size_t)(ROWS - 1) * COLS, one, COLS);
        CHECK(memcmp(one, a + rb * (ROWS - 1), rb) == 0, "%s: the last row differs", ng_type_name(ts[k]));
        free(a), free(one);
    }
    ng_set_threads(0);
}

/* ---- kernels ---- */

/* Random blocks of type t (any byte pattern is a valid block) with sane f16 scales. */
static void random_blocks(ng_type t, uint8_t *w, size_t nblocks) {
    size_t bs = ng_type_size(t);
    for (size_t i = 0; i < nblocks * bs; i++) w[i] = (uint8_t)rnd();
    for (size_t i = 0; i < nblocks; i++) {
        uint8_t *b = w + i * bs;
        float d = (0.5f + 0.5f * frand()) * 0.01f * (rnd() & 1 ? 1 : -1);
        if (t == NG_Q6_K)
            put_half(b + 208, d);
        else
            put_half(b, d);
        if (t == NG_Q4_1 || t == NG_Q5_1 || t == NG_Q4_K || t == NG_Q5_K) put_half(b + 2, 0.5f * d * frand());
    }
}

/* m_k of the header comment: the magnitude of the terms the float sums of weight value k see. */
static void magnitudes(ng_type t, const uint8_t *row, int K, float *m) {
    ng_dequantize_row(t, row, m, K);
    for (int k = 0; k < K; k++) m[k] = fabsf(m[k]);
    if (ng_type_base(t) == NG_Q4_K) { /* |d sc q| + |dmin m|: the same block with d, dmin made positive */
        uint8_t b[144];
        for (int i = 0; i < K / 256; i++) {
            memcpy(b, row + 144 * i, 144);
            put_half(b, fabsf(get_half(b))), put_half(b + 2, -fabsf(get_half(b + 2)));
            ng_dequantize_row(t, b, m + 256 * i, 256);
        }
    } else if (ng_type_base(t) == NG_Q6_K) {
        for (int k = 0; k < K; k++) {
            const uint8_t *b = row + 210 * (k / 256);
            m[k] = 64 * fabsf(get_half(b + 208) * (float)(int8_t)b[192 + k % 256 / 16]);
        }
    }
}

typedef struct {
    ng_type t;
    int B, N, K;
    uint8_t *w;
    float *x, *wf, *ref, *deq, *tolq, *tolf, *y1, *y2;
} qcase;

static void qcase_init(qcase *c, ng_type t, int B, int N, int K) {
    c->t = t, c->B = B, c->N = N, c->K = K;
    size_t rs = ng_row_size(t, K), ny = (size_t)B * N;
    c->w = malloc(rs * N + 1);
    ng_type base = ng_type_base(t); /* q4_0r, q8_0r: random q4_0, q8_0 blocks rearranged */
    random_blocks(base, c->w, rs * N / ng_type_size(base));
    if (t != base) ng_reorder_rows(c->w, t, c->w, base, K, N);
    c->x = malloc(sizeof(float) * ((size_t)B * K + 1));
    for (size_t i = 0; i < (size_t)B * K; i++) c->x[i] = frand() * (float)(1 + (i / 32) % 3);
    c->wf = malloc(sizeof(float) * ((size_t)N * K + 1));
    float *m = malloc(sizeof(float) * ((size_t)K + 1));
    for (int n = 0; n < N; n++) ng_dequantize_row(t, c->w + rs * n, c->wf + (size_t)n * K, K);
    c->ref = malloc(sizeof(float) * ny), c->deq = malloc(sizeof(float) * ny);
    c->tolq = malloc(sizeof(float) * ny), c->tolf = malloc(sizeof(float) * ny);
    c->y1 = malloc(sizeof(float) * ny), c->y2 = malloc(sizeof(float) * ny);
    ng_matmul_ref(c->ref, c->x, c->w, t, NULL, B, N, K);
    ng_matmul_ref(c->deq, c->x, c->wf, NG_F32, NULL, B, N, K); /* dequantize, then f32 */
    const double u = 0x1p-24;
    for (int n = 0; n < N; n++) {
        magnitudes(t, c->w + rs * n, K, m);
        for (int b = 0; b < B; b++) {
            const float *x = c->x + (size_t)b * K, *wf = c->wf + (size_t)n * K;
            double s = 0, sq = 0, mm = 0;
            for (int k0 = 0; k0 < K; k0 += 32) {
                double amax = 0;
                for (int j = 0; j < 32; j++) amax = fmax(amax, fabs(x[k0 + j]));
                double dx = amax / 127;
                for (int j = k0; j < k0 + 32; j++) {
                    s += fabs((double)x[j] * wf[j]);
                    sq += fabs(wf[j]) * (dx / 2 + 0x1p-20 * fabs(x[j]));
                    mm += m[j] * (fabs(x[j]) + dx);
                }
            }
            c->tolf[(size_t)b * N + n] = (float)(2 * (K + 2) * u * s + 1e-30);
            c->tolq[(size_t)b * N + n] = (float)(sq + 2 * (K + 2) * u * mm + 1e-30);
        }
    }
    free(m);
}

static void qcase_free(qcase *c) {
    free(c->w), free(c->x), free(c->wf), free(c->ref), free(c->deq);
    free(c->tolq), free(c->tolf), free(c->y1), free(c->y2);
}

static int qcompare(const qcase *c, const float *y, const float *ref, const float *tol, const char *what) {
    int bad = 0;
    for (size_t i = 0; i < (size_t)c->B * c->N; i++) {
        double d = fabs((double)y[i] - ref[i]);
        if (!(d <= tol[i]) && bad++ < 3)
            fprintf(stderr, "%s %s B=%d N=%d K=%d [b=%zu n=%zu]: %.9g vs %.9g (tol %.3g)\n", what,
                    ng_type_name(c->t), c->B, c->N, c->K, i / c->N, i % c->N, y[i], ref[i], tol[i]);
    }
    return bad;
}

static const char *const PATHS[] = {"avx512", "avx2", "portable"};

/* qcheck's runs that compared the AVX2 path with and without AVX-VNNI. */
static int g_avx_vnni_runs, g_gemm256_runs, g_gemm256_same, g_gemm_vs_gemv;

/* Every path this CPU runs, on 1 and 2 threads (bit-identical), against the reference; the
 * reference itself against dequantize-then-f32. Returns the number of failures. */
static int qcheck(ng_type t, int B, int N, int K, int *runs) {
    qcase c;
    qcase_init(&c, t, B, N, K);
    int bad = qcompare(&c, c.ref, c.deq, c.tolf, "ref vs dequantized");
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(PATHS[p]) != 0) continue;
        /* the integer GEMV runs on the SIMD paths for B <= 64 (8 rows at a time), and for any B
         * on AVX-512 VNNI (where q8_0 and q4_0 take the int8 GEMM from 18 rows) and for q4_0 on
         * AVX2; other batches and the portable path are f32 */
        int qtype = t == NG_Q8_0 || t == NG_Q4_0 || t == NG_Q4_K || t == NG_Q6_K;
        int wide = p == 0 && ng_cpu_features()->avx512vnni;
        int integer = p < 2 && qtype && (B <= 64 || wide || (p == 1 && t == NG_Q4_0));
        /* the kernel-order types: only where they are native (on AVX2: q4_0r, q4_kr, q6_kr, and
         * q8_0r with AVX-VNNI), there for any batch */
        if (t != ng_type_base(t))
            integer = wide || (p == 1 && (t == NG_Q4_0R || t == NG_Q4_KR || t == NG_Q6_KR ||
                                          (t == NG_Q8_0R && ng_kernel_avx_vnni())));
        /* the AVX2 path's int8 GEMM (with AVX-VNNI, from 32 rows) */
        int gemm256 = p == 1 && ng_kernel_int8_gemm(t, B);
        integer |= gemm256;
        ng_set_threads(1);
        ng_matmul(c.y1, c.x, c.w, t, NULL, B, N, K);
        ng_set_threads(2);
        ng_matmul(c.y2, c.x, c.w, t, NULL, B, N, K);
        bad += qcompare(&c, c.y2, c.ref, integer ? c.tolq : c.tolf, PATHS[p]);
        if (memcmp(c.y1, c.y2, sizeof(float) * B * N) != 0) {
            fprintf(stderr, "%s %s B=%d N=%d K=%d: 1 and 2 threads differ\n", PATHS[p], ng_type_name(t), B, N, K);
            bad++;
        }
        /* the AVX2 GEMM against the AVX-512 GEMM: the same bits (both add each block's exact sum
         * times its scales in block order) */
        if (gemm256 && ng_cpu_features()->avx512vnni) {
            ng_kernel_set_path("avx512");
            ng_matmul(c.y1, c.x, c.w, t, NULL, B, N, K);
            ng_kernel_set_path("avx2");
            if (memcmp(c.y1, c.y2, sizeof(float) * B * N) != 0) {
                fprintf(stderr, "avx2 %s B=%d N=%d K=%d: the AVX2 and AVX-512 int8 GEMMs differ\n", ng_type_name(t), B,
                        N, K);
                bad++;
            }
            g_gemm256_same++;
        }
        g_gemm256_runs += gemm256;
        /* the int8 GEMM against the integer GEMV: the same rounded x and exact integer sums per
         * block (or 16 values), summed in other orders, so within the f32 bound of their terms
         * (4 x the reference's: the code offsets' terms outweigh |x w| up to 2x); a code sum or
         * a scale off in one block shows */
        if (p == 0 && ng_kernel_int8_gemm(t, B)) {
            ng_kernel_set_int8_gemm(0);
            ng_matmul(c.y1, c.x, c.w, t, NULL, B, N, K);
            ng_kernel_set_int8_gemm(1);
            for (size_t i = 0; i < (size_t)B * N; i++)
                if (!(fabs((double)c.y1[i] - c.y2[i]) <= 4 * c.tolf[i]) && bad++ < 3)
                    fprintf(stderr, "avx512 %s B=%d N=%d K=%d [%zu]: GEMM %.9g, GEMV %.9g (tol %.3g)\n",
                            ng_type_name(t), B, N, K, i, c.y2[i], c.y1[i], 4 * c.tolf[i]);
            g_gemm_vs_gemv++;
        }
        /* AVX-VNNI's block sums against AVX2's three instructions: the same bits (q8_0r has no
         * integer kernel without it; the GEMM runs only with AVX-VNNI) */
        if (ng_kernel_avx_vnni() && t != NG_Q8_0R && !gemm256) {
            ng_kernel_set_avx_vnni(0);
            ng_matmul(c.y1, c.x, c.w, t, NULL, B, N, K);
            ng_kernel_set_avx_vnni(1);
            if (memcmp(c.y1, c.y2, sizeof(float) * B * N) != 0) {
                fprintf(stderr, "avx2 %s B=%d N=%d K=%d: AVX-VNNI and AVX2 sums differ\n", ng_type_name(t), B, N, K);
                bad++;
            }
            g_avx_vnni_runs++;
        }
        (*runs)++;
    }
    ng_kernel_set_path(NULL);
    ng_set_threads(0);
    qcase_free(&c);
    return bad;
}

static void check_type(ng_type t) {
    static const int Bs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 33};
    static const int Ns[] = {1, 7, 33};
    int qk = ng_type_block(t), bad = 0, runs = 0;
    int Ks[] = {qk, 256, 4096 + 256};
    g_avx_vnni_runs = g_gemm256_runs = g_gemm256_same = g_gemm_vs_gemv = 0;
    for (int ib = 0; ib < COUNT(Bs); ib++)
        for (int in = 0; in < COUNT(Ns); in++)
            for (int ik = 0; ik < COUNT(Ks) && bad < 10; ik++) {
                if (Ks[ik] > 256 && Bs[ib] * Ns[in] > 64) continue; /* keeps the reference cheap */
                bad += qcheck(t, Bs[ib], Ns[in], Ks[ik], &runs);
            }
    /* larger N so that both threads get rows and the interleaved row runs have tails */
    bad += qcheck(t, 1, 77, 512, &runs);
    bad += qcheck(t, 2, 130, 256, &runs);
    /* batches over 8 rows: runs of 16 weight rows with a tail (N = 37), groups of 8 with a
     * tail, and (long rows) several passes over the weights, the last one short */
    bad += qcheck(t, 70, 37, 256, &runs);
    bad += qcheck(t, 90, 3, 4096 + 256, &runs);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d mismatches for %s", bad, ng_type_name(t));
    if (t != NG_Q8_0R) { /* the AVX2 GEMV's types (B <= 64) */
        printf("# %s: %d runs with AVX-VNNI on the AVX2 path%s\n", ng_type_name(t), g_avx_vnni_runs,
               ng_cpu_features()->avxvnni ? "" : " (no AVX-VNNI here)");
        CHECK(!ng_cpu_features()->avxvnni || g_avx_vnni_runs > 0, "AVX-VNNI not run for %s", ng_type_name(t));
    }
    if (ng_cpu_features()->avx512vnni) {
        printf("# %s: %d runs of the AVX-512 int8 GEMM against the integer GEMV\n", ng_type_name(t),
               g_gemm_vs_gemv);
        CHECK(g_gemm_vs_gemv > 0, "the AVX-512 int8 GEMM not run for %s", ng_type_name(t));
    }
    ng_type b = ng_type_base(t);
    if (b == NG_Q8_0 || b == NG_Q4_0) { /* B = 33, 70 and 90 take the AVX2 path's GEMM where it runs */
        printf("# %s: %d runs on the AVX2 path's int8 GEMM, %d of them against the AVX-512 GEMM's bits\n",
               ng_type_name(t), g_gemm256_runs, g_gemm256_same);
        CHECK(!ng_cpu_features()->avxvnni || g_gemm256_runs > 0, "the AVX2 GEMM not run for %s", ng_type_name(t));
    }
}

static void test_matmul_q8_0(void) { check_type(NG_Q8_0); }
static void test_matmul_q4_0(void) { check_type(NG_Q4_0); }
static void test_matmul_q8_0r(void) { check_type(NG_Q8_0R); }
static void test_matmul_q4_0r(void) { check_type(NG_Q4_0R); }
static void test_matmul_q4_kr(void) { check_type(NG_Q4_KR); }
static void test_matmul_q6_kr(void) { check_type(NG_Q6_KR); }

/* q4_0r, q8_0r, q4_kr and q6_kr hold q4_0's, q8_0's, q4_k's and q6_k's bytes rearranged: there
 * and back is the identity, in place too; a value dequantizes the same in both orders; the layout
 * is the one quant.h states (checked on known codes); conversions between the orders are exact;
 * files never hold them. */
static void test_reorder(void) {
    static const ng_type ts[] = {NG_Q4_0, NG_Q8_0, NG_Q4_K, NG_Q6_K};
    int bad = 0;
    for (int it = 0; it < COUNT(ts); it++) {
        ng_type t = ts[it], r = ng_type_reordered(t);
        int kq = t == NG_Q4_K || t == NG_Q6_K, K = kq ? 512 : 384, N = 5;
        size_t rs = ng_row_size(t, K), n = rs * N;
        CHECK(r != t && ng_type_base(r) == t && ng_row_size(r, K) == rs &&
                  ng_type_block(r) == (kq ? 256 : 128),
              "%s sizes", ng_type_name(t));
        uint8_t *w = malloc(n), *a = malloc(n), *b = malloc(n);
        random_blocks(t, w, n / ng_type_size(t));
        ng_reorder_rows(a, r, w, t, K, N);
        ng_reorder_rows(b, t, a, r, K, N);
        bad += memcmp(b, w, n) != 0;
        memcpy(b, w, n);
        ng_reorder_rows(b, r, b, t, K, N); /* in place */
        bad += memcmp(b, a, n) != 0;
        float *f1 = malloc(sizeof(float) * K * N), *f2 = malloc(sizeof(float) * K * N);
        ng_dequantize_row(t, w, f1, (int64_t)K * N);
        ng_dequantize_row(r, a, f2, (int64_t)K * N);
        bad += memcmp(f1, f2, sizeof(float) * K * N) != 0;
        void *c = ng_convert_rows(a, r, t, K, N);
        bad += memcmp(c, w, n) != 0;
        free(c);
        /* quantizing to the kernel order: the file type's blocks, rearranged */
        for (int k = 0; k < K; k++) f1[k] = frand();
        ng_quantize_row(t, f1, b, K);
        ng_reorder_rows(b, r, b, t, K, 1);
        ng_quantize_row(r, f1, b + rs, K);
        bad += memcmp(b, b + rs, rs) != 0;
        /* q4_kr's stated layout: d, dmin and scales in place; code i of sub-block s (q4_k: byte
         * 32 (s / 2) + i of the codes, low nibble for even s) in half i / 16, lane 2 s + i / 4 %
         * 2, byte i % 4, the high nibble when i / 8 is odd */
        for (int blk = 0; t == NG_Q4_K && blk < 2 * N; blk++) {
            const uint8_t *src = w + 144 * blk, *dst = a + 144 * blk;
            bad += memcmp(src, dst, 16) != 0;
            for (int s = 0; s < 8; s++)
                for (int i = 0; i < 32; i++) {
                    int code = src[16 + 32 * (s / 2) + i] >> (4 * (s % 2)) & 15;
                    uint8_t byte = dst[16 + 64 * (i / 16) + 4 * (2 * s + i / 4 % 2) + i % 4];
                    bad += (i / 8 % 2 ? byte >> 4 : byte & 15) != code;
                }
        }
        /* q6_kr's: scales and d in place; code p of group g (q6_k: value i = 16 g + p, its low 4
         * bits at byte 64 (i / 128) + i % 32 + 32 (i % 128 / 32 % 2) of ql, the high nibble for
         * i % 128 >= 64, its top 2 at bits 2 (i % 128 / 32) of qh[32 (i / 128) + i % 32]) in lane
         * g, byte p % 4 of vector v = p / 4: low bits in nibble v % 2 of byte 64 (v / 2) + 4 g + p
         * % 4, top bits at bits 2 v of byte 128 + 4 g + p % 4 */
        for (int blk = 0; t == NG_Q6_K && blk < 2 * N; blk++) {
            const uint8_t *src = w + 210 * blk, *dst = a + 210 * blk;
            bad += memcmp(src + 192, dst + 192, 18) != 0;
            for (int i = 0; i < 256; i++) {
                int h = i / 128, l = i % 32, k = i % 128 / 32, g = i / 16, p = i % 16, v = p / 4;
                int code = (src[64 * h + l + 32 * (k % 2)] >> (4 * (k / 2)) & 15) |
                           (src[128 + 32 * h + l] >> (2 * k) & 3) << 4;
                int got = (dst[64 * (v / 2) + 4 * g + p % 4] >> (4 * (v % 2)) & 15) |
                          (dst[128 + 4 * g + p % 4] >> (2 * v) & 3) << 4;
                bad += got != code;
            }
        }
        /* the stated layout: code i of block j sits in lane j + 4 * (i % 16 / 4), byte i % 4,
         * of the first 64 bytes (q8_0: the first or second 64 for i < 16 or i >= 16, as q + 128);
         * the scales follow the codes */
        int q8 = t == NG_Q8_0;
        for (int blk = 0; !kq && blk < 4; blk++)
            for (int i = 0; i < 32; i++) {
                const uint8_t *src = w + (q8 ? 34 : 18) * blk;
                int code = q8 ? (int8_t)src[2 + i] : i < 16 ? src[2 + i] & 15 : src[2 + i - 16] >> 4;
                int lane = blk + 4 * (i % 16 / 4), half = i / 16;
                uint8_t byte = a[(q8 ? 64 * half : 0) + 4 * lane + i % 4];
                int got = q8 ? (int)byte - 128 : half ? byte >> 4 : byte & 15;
                bad += got != code;
            }
        bad += !kq && memcmp(a + (q8 ? 128 : 64), w, 2) != 0; /* block 0's scale first */
        free(f1), free(f2), free(w), free(a), free(b);
        CHECK(ng_type_parse(ng_type_name(r)) < 0 && !ng_type_in_files(r) && ng_type_in_files(t),
              "%s is a file type", ng_type_name(r));
    }
    CHECK(bad == 0, "%d mismatches", bad);
}

/* q8_0 and q4_0 on AVX-512 VNNI take 4 blocks per step: K / 32 of every remainder (the
 * row's last step reads with a byte mask), long rows, odd N (interleaved rows with tails) and
 * every B of the GEMV, 1 and 2 threads bit-identical, on each path this CPU runs. */
static void test_matmul_q8_0_q4_0_steps(void) {
    static const int Ks[] = {32, 64, 96, 128, 160, 224, 4096 + 32, 4096 + 96};
    static const int Bs[] = {1, 2, 3, 4, 6, 7, 8};
    static const int Ns[] = {1, 5, 37};
    static const ng_type ts[] = {NG_Q8_0, NG_Q4_0};
    int bad = 0, runs = 0;
    for (int it = 0; it < COUNT(ts); it++)
        for (int ik = 0; ik < COUNT(Ks); ik++)
            for (int ib = 0; ib < COUNT(Bs); ib++)
                for (int in = 0; in < COUNT(Ns) && bad < 10; in++) {
                    if (Ks[ik] > 256 && Bs[ib] * Ns[in] > 40) continue; /* keeps the reference cheap */
                    bad += qcheck(ts[it], Bs[ib], Ns[in], Ks[ik], &runs);
                }
    bad += qcheck(NG_Q4_0, 1, 203, 96, &runs);
    bad += qcheck(NG_Q4_0, 3, 41, 416, &runs); /* AVX2: 3 steps of 4 blocks and one block */
    bad += qcheck(NG_Q8_0, 3, 203, 160, &runs);
    printf("# %s; %d runs\n", ng_cpu_features()->avx512vnni ? "AVX-512 VNNI kernel covered" : "no AVX-512 VNNI here", runs);
    CHECK(bad == 0, "%d mismatches", bad);
}

/* One case of test_matmul_steal_q: one thread's result against the reference, then 2-4 threads'
 * against one thread's bits. */
static int steal_case(ng_type t, int B, int N, int K, const char *label) {
    qcase c;
    qcase_init(&c, t, B, N, K);
    ng_set_threads(1);
    ng_matmul(c.y1, c.x, c.w, c.t, NULL, c.B, c.N, c.K);
    int bad = qcompare(&c, c.y1, c.ref, c.tolq, "1 thread");
    bad += matmul_threads_differ(c.y1, c.y2, c.x, c.w, c.t, NULL, c.B, c.N, c.K, label);
    qcase_free(&c);
    return bad;
}

/* The kernel-order types' GEMV threads take steps from each other's shares (as
 * test_kernels.c's test_matmul_steal for f32 / f16): claims of one step, more threads than
 * cores; every output as one thread computes it, and steps really taken;
 * likewise the int8 GEMM's weight panels. */
static void test_matmul_steal_q(void) {
    if (!ng_cpu_features()->avx512vnni) {
        SKIP("the kernel-order types' integer GEMV needs AVX-512 VNNI");
    }
    static const int Bs[] = {1, 2, 3, 8};
    static const ng_type ts[] = {NG_Q8_0R, NG_Q4_0R, NG_Q4_KR, NG_Q6_KR};
    int bad = 0;
    long steals0 = ng_kernel_steals();
    ng_kernel_set_steal_bytes(1);
    for (int it = 0; it < COUNT(ts); it++)
        for (int ib = 0; ib < COUNT(Bs); ib++) bad += steal_case(ts[it], Bs[ib], 203, 512, "");
    ng_kernel_set_steal_bytes(0);
    long taken = ng_kernel_steals() - steals0;
    /* the int8 GEMM's threads claim weight panels (32 rows) the same way: 64 rows of a 1600-row
     * matrix, 50 panels; every output the same bits as one thread's */
    long gemm0 = ng_kernel_steals();
    for (int it = 0; it < 2; it++) bad += steal_case(ts[it], 64, 1600, 256, "int8 GEMM ");
    ng_set_threads(0);
    long gemm = ng_kernel_steals() - gemm0;
    printf("# %ld blocks taken from other threads' shares; %ld panels of the int8 GEMM\n", taken, gemm);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(taken > 0, "no thread took steps from another's share");
    CHECK(gemm > 0, "no thread of the int8 GEMM took a panel from another's share");
}

/* One activation row: thread 0 quantizes it inside the job while the others start their weight
 * streams and wait for it (kernels.c matmul_qgemv). Two different rows in turn, long enough
 * (K = 16384) that quantizing takes longer than a worker's wake-up, on 2 to 4 threads: each
 * output as one thread computes it from that row, so a worker that read the row before it was
 * ready (the previous call's) shows. Every type with an integer GEMV, on each path. */
static void test_matmul_fresh_row(void) {
    static const ng_type ts[] = {NG_Q8_0R, NG_Q4_0R, NG_Q8_0, NG_Q4_0, NG_Q4_K, NG_Q4_KR, NG_Q6_KR};
    static const char *const paths[] = {"avx512", "avx2"};
    const int N = 64, K = 16384;
    int bad = 0, runs = 0;
    for (int it = 0; it < COUNT(ts); it++)
        for (int p = 0; p < COUNT(paths); p++) {
            if (ng_kernel_set_path(paths[p]) != 0) continue;
            if (ng_type_base(ts[it]) != ts[it] && ng_matmul_native(ng_type_base(ts[it])) != ts[it]) continue;
            qcase c;
            qcase_init(&c, ts[it], 1, N, K);
            float *x2 = malloc(sizeof(float) * K), *y2ref = malloc(sizeof(float) * N);
            for (int k = 0; k < K; k++) x2[k] = frand() * 4;
            ng_set_threads(1);
            ng_matmul(c.y1, c.x, c.w, c.t, NULL, 1, N, K);
            ng_matmul(y2ref, x2, c.w, c.t, NULL, 1, N, K);
            bad += qcompare(&c, c.y1, c.ref, c.tolq, "1 thread");
            for (int rep = 0; rep < 60; rep++) {
                ng_set_threads(2 + rep % 3);
                const float *x = rep & 1 ? x2 : c.x, *want = rep & 1 ? y2ref : c.y1;
                memset(c.y2, 0xff, sizeof(float) * N);
                ng_matmul(c.y2, x, c.w, c.t, NULL, 1, N, K);
                runs++;
                if (memcmp(c.y2, want, sizeof(float) * N) != 0 && bad++ < 3)
                    fprintf(stderr, "%s %s, %d threads, row %d: differs from 1 thread\n", ng_type_name(c.t), paths[p],
                            ng_threads(), rep & 1);
            }
            free(x2), free(y2ref);
            qcase_free(&c);
        }
    ng_kernel_set_path(NULL);
    ng_set_threads(0);
    printf("# %d threaded runs\n", runs);
    CHECK(bad == 0, "%d mismatches", bad);
}

/* ng_matmul_multi gives, bit for bit, the outputs of one ng_matmul per matrix: f32 and f16 (the
 * GEMV), q8_0r and q4_0r (the integer GEMV), on 1 to 4 threads taking single steps from each
 * other's shares (as test_matmul_steal_q), batches of 1 to 8 rows and of 9 (separate products);
 * matrices of 16-row groups (one set with biases, one matrix without), and a set with a matrix
 * of 40 rows (separate products). Batches of 24 and 40 rows: q8_0r and q4_0r on the int8 GEMM
 * as one job (40 rows: a partial panel between two matrices' panels), the others separate.
 * Outputs start as NaN, so a row no thread wrote shows. The one-job path must have run exactly
 * where it should. All of it on the best path, then on the AVX2 path (f32 and f16 as one job in
 * decode, q8_0r and q4_0r at 40 rows on its int8 GEMM where AVX-VNNI runs it). */
static void test_matmul_multi(void) {
    static const ng_type ts[] = {NG_F32, NG_F16, NG_Q8_0R, NG_Q4_0R, NG_Q4_K, NG_Q4_KR, NG_Q6_K, NG_Q6_KR};
    static const int sets[][3] = {{128, 32, 32}, {64, 16, 0}, {48, 40, 16}}, Bs[] = {1, 3, 8, 9, 24, 40};
    const int K = 512;
    int bad = 0, runs = 0, one_job = 0;
    long jobs0 = ng_kernel_multi_jobs();
    int simd = strcmp(ng_kernel_path(), "portable") != 0;
    ng_kernel_set_steal_bytes(1);
    for (int ip = 0; ip < 2; ip++) { /* the best path, then the AVX2 path (its int8 GEMM at 40 rows) */
        if (ip == 1 && (!simd || ng_kernel_set_path("avx2") != 0)) break;
        int vnni = ip == 0 && simd && ng_cpu_features()->avx512vnni;
        for (int it = 0; it < COUNT(ts); it++) {
            ng_type t = ts[it], base = ng_type_base(t);
            for (int is = 0; is < COUNT(sets); is++)
                for (int ib = 0; ib < COUNT(Bs); ib++) {
                    int n = sets[is][2] ? 3 : 2, B = Bs[ib], *N = (int *)sets[is];
                    size_t rs = ng_row_size(t, K);
                    void *w[3];
                    float *y1[3], *y2[3], *bias[3] = {NULL, NULL, NULL}, *x = malloc(sizeof(float) * B * K);
                    for (int i = 0; i < B * K; i++) x[i] = frand();
                    for (int m = 0; m < n; m++) {
                        w[m] = malloc(rs * N[m]);
                        if (t == NG_F32 || t == NG_F16) {
                            float *wf = malloc(sizeof(float) * N[m] * K);
                            for (int i = 0; i < N[m] * K; i++) wf[i] = frand();
                            ng_from_f32(w[m], wf, t, (int64_t)N[m] * K);
                            free(wf);
                        } else {
                            random_blocks(base, w[m], rs * N[m] / ng_type_size(base));
                            if (t != base) ng_reorder_rows(w[m], t, w[m], base, K, N[m]);
                        }
                        y1[m] = malloc(sizeof(float) * B * N[m]), y2[m] = malloc(sizeof(float) * B * N[m]);
                        if (is == 0 && m != 1) { /* biases, on all but the middle matrix */
                            bias[m] = malloc(sizeof(float) * N[m]);
                            for (int i = 0; i < N[m]; i++) bias[m][i] = frand();
                        }
                        ng_set_threads(1);
                        ng_matmul(y1[m], x, w[m], t, bias[m], B, N[m], K);
                    }
                    for (int nt = 1; nt <= 4; nt++)
                        for (int rep = 0; rep < 4; rep++) {
                            ng_set_threads(nt);
                            for (int m = 0; m < n; m++) memset(y2[m], 0xff, sizeof(float) * B * N[m]);
                            ng_matmul_multi(y2, x, (const void *const *)w, t,
                                            is == 0 ? (const float *const *)bias : NULL, n, B, N, K);
                            for (int m = 0; m < n; m++)
                                if (memcmp(y1[m], y2[m], sizeof(float) * B * N[m]) != 0 && bad++ < 3)
                                    fprintf(stderr, "%s %s B=%d set %d matrix %d, %d threads: differs\n",
                                            ng_kernel_path(), ng_type_name(t), B, is, m, nt);
                            runs++;
                            /* one job: a decode batch of 16-row groups, on a GEMV (not the file order's
                             * q4_k or q6_k); a batch on the int8 GEMM */
                            one_job += B <= 8 ? is != 2 && t != NG_Q4_K && t != NG_Q6_K &&
                                                    (t == NG_F32 || t == NG_F16 ? simd : vnni)
                                              : ng_kernel_int8_gemm(t, B);
                        }
                    for (int m = 0; m < n; m++) free(w[m]), free(y1[m]), free(y2[m]), free(bias[m]);
                    free(x);
                }
        }
    }
    ng_kernel_set_path(NULL);
    ng_kernel_set_steal_bytes(0);
    ng_set_threads(0);
    long jobs = ng_kernel_multi_jobs() - jobs0;
    printf("# %d runs, %ld as one job\n", runs, jobs);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(jobs == one_job, "%ld of %d runs as one job, expected %d", jobs, runs, one_job);
}

static void test_matmul_q4_k(void) { check_type(NG_Q4_K); }
static void test_matmul_q6_k(void) { check_type(NG_Q6_K); }
static void test_matmul_other_types(void) {
    static const ng_type ts[] = {NG_Q4_1, NG_Q5_0, NG_Q5_1, NG_Q5_K};
    int bad = 0, runs = 0;
    for (int i = 0; i < COUNT(ts); i++) {
        bad += qcheck(ts[i], 1, 7, ng_type_block(ts[i]), &runs);
        bad += qcheck(ts[i], 3, 17, 512, &runs);
        bad += qcheck(ts[i], 33, 5, 256, &runs);
    }
    CHECK(bad == 0, "%d mismatches", bad);
}

/* x with a NaN or an infinity gives NaN / inf outputs, as the f32 kernels do, not a number, on
 * every path and for both integer kernels' types. */
static void test_matmul_nonfinite(void) {
    static const ng_type ts[] = {NG_Q8_0, NG_Q4_0};
    static const int Bs[] = {1, 24}; /* one row (GEMV); a batch (the int8 GEMM with VNNI) */
    const float bad_x[] = {NAN, INFINITY};
    int finite = 0, nonfinite = 0;
    for (int it = 0; it < COUNT(ts); it++)
        for (int ib = 0; ib < COUNT(Bs); ib++)
            for (int iv = 0; iv < COUNT(bad_x); iv++)
                for (int p = 0; p < 3; p++) {
                    if (ng_kernel_set_path(PATHS[p]) != 0) continue;
                    int B = Bs[ib], bad = B / 2; /* the row with the non-finite value */
                    qcase c;
                    qcase_init(&c, ts[it], B, 16, 160);
                    c.x[(size_t)bad * 160 + 140] = bad_x[iv];
                    ng_matmul(c.y1, c.x, c.w, ts[it], NULL, B, 16, 160);
                    for (int b = 0; b < B; b++)
                        for (int n = 0; n < 16; n++) {
                            int f = isfinite(c.y1[b * 16 + n]) != 0;
                            finite += b == bad && f, nonfinite += b != bad && !f;
                        }
                    qcase_free(&c);
                }
    ng_kernel_set_path(NULL);
    CHECK(finite == 0, "%d finite outputs from a non-finite input", finite);
    CHECK(nonfinite == 0, "%d non-finite outputs from finite rows", nonfinite);
}

/* Known answers at the ends of the code ranges, on every path: q8_0 codes -128 and 127, q4_0
 * codes 0 and 15 (-8 and 7), weight scale 0.5, against activation rows of one value +-(1 + b)
 * (codes +-127), K = 4224 (132 blocks), so that the int8 GEMM's u8 codes, its sum starts and
 * its tails (26 rows: 4 blocks of 6 and 2; 40 weight rows: a panel of 32 and 8) meet the
 * largest sums: y = K * 0.5 * code * x. */
static void test_matmul_code_extremes(void) {
    static const ng_type ts[] = {NG_Q8_0, NG_Q4_0, NG_Q8_0R, NG_Q4_0R};
    const int B = 26, N = 40, K = 4224;
    int bad = 0, runs = 0;
    float *x = malloc(sizeof(float) * B * K), *y = malloc(sizeof(float) * B * N);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) x[(size_t)b * K + k] = (b & 1 ? -1.0f : 1.0f) * (float)(1 + b);
    for (int it = 0; it < COUNT(ts); it++) {
        ng_type t = ts[it], base = ng_type_base(t);
        size_t rs = ng_row_size(t, K), bs = ng_type_size(base);
        uint8_t *w = malloc(rs * N);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < K / 32; i++) {
                uint8_t *blk = w + (size_t)n * rs + i * bs;
                put_half(blk, 0.5f);
                /* rows alternate between the lowest and the highest code */
                memset(blk + 2, base == NG_Q8_0 ? (n & 1 ? 0x7f : 0x80) : (n & 1 ? 0xff : 0x00), bs - 2);
            }
        if (t != base) ng_reorder_rows(w, t, w, base, K, N);
        for (int p = 0; p < 3; p++) {
            if (ng_kernel_set_path(PATHS[p]) != 0) continue;
            ng_set_threads(2);
            ng_matmul(y, x, w, t, NULL, B, N, K);
            for (int b = 0; b < B; b++)
                for (int n = 0; n < N; n++) {
                    int code = base == NG_Q8_0 ? (n & 1 ? 127 : -128) : (n & 1 ? 7 : -8);
                    double want = (double)K * 0.5 * code * (b & 1 ? -1 : 1) * (1 + b), got = y[b * N + n];
                    if (!(fabs(got - want) <= 1e-5 * fabs(want)) && bad++ < 4)
                        fprintf(stderr, "%s %s [b=%d n=%d]: %.9g, want %.9g\n", PATHS[p], ng_type_name(t), b, n, got,
                                want);
                }
            runs++;
        }
        free(w);
    }
    ng_kernel_set_path(NULL);
    ng_set_threads(0);
    free(x), free(y);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d mismatches", bad);
}

/* The activations' 8-bit rounding (codes, scales, sums per block of 32) by the AVX-512 code,
 * which does 16 blocks at a time, against the scalar definition, byte for byte: counts of
 * blocks that leave a partial group of 16, and blocks of zeros, NaNs, infinities, subnormals,
 * values near FLT_MAX, exact halves (ties to even) and -0. */
static void test_quantize_x(void) {
    if (strcmp(ng_kernel_path(), "avx512") != 0) SKIP("no AVX-512 here (the scalar code is the definition)");
    static const int counts[] = {1, 2, 7, 8, 15, 16, 17, 24, 31, 33, 64, 96, 176};
    float *x = malloc(sizeof(float) * 176 * 32);
    int bad = 0;
    for (int ic = 0; ic < COUNT(counts); ic++) {
        int nb = counts[ic];
        for (int kind = 0; kind < 8; kind++) {
            for (int i = 0; i < nb * 32; i++) x[i] = frand() * (kind == 1 ? 1e-3f : 3.0f);
            for (int b = kind; b < nb; b += 5) { /* some blocks special, the rest plain */
                float *v = x + b * 32;
                switch (kind) {
                case 0: memset(v, 0, 32 * sizeof(float)); break;
                case 1: v[b % 32] = NAN; break;
                case 2: v[(b * 7) % 32] = b & 1 ? INFINITY : -INFINITY; break;
                case 3: for (int j = 0; j < 32; j++) v[j] = (float)(j - 16) * 1e-40f; break;
                case 4: for (int j = 0; j < 32; j++) v[j] = frand() * 3.4e38f; break;
                case 5: /* amax 127: the codes are v itself, halves round to even */
                    for (int j = 0; j < 32; j++) v[j] = (float)(j - 16) + 0.5f;
                    v[31] = 127.0f;
                    break;
                case 6: for (int j = 0; j < 32; j++) v[j] = -0.0f; break;
                default: v[0] = NAN, v[17] = INFINITY; break;
                }
            }
            int d = ng_kernel_check_quantize_x(x, nb);
            if (d) printf("    %d blocks, case %d: %d differences\n", nb, kind, d);
            bad += d;
        }
    }
    free(x);
    CHECK(bad == 0, "%d differences from the scalar definition", bad);
}

/* ---- whole models ---- */

static void *read_bin(const char *path, size_t *n_bytes) {
    ng_error e;
    return ng_read_file(path, n_bytes, &e);
}

/* llama-tiny-a written as q8_0 / q4_0 and loaded back, against the f32 logits of the fixture
 * (PyTorch), all 64 positions in one batch (the GEMM on dequantized weights) and the first 16
 * one token at a time (the integer GEMV, which also rounds x to 8 bits). This random-weight
 * model amplifies noise about tenfold (0.4% per weight gives 4% of max |logit|), so the bounds,
 * relative to max |logit| (7.1), are loose: max |diff| <= 0.1 for q8_0 (measured 0.042 batch,
 * 0.061 decode) and 0.75 for q4_0 (0.63, 0.52); mean |diff| <= 0.01 and 0.1 (0.0048, 0.075);
 * batch vs decode within 0.05 and 0.1 (0.028, 0.021). The real model (stories260K) is the
 * sharper test: its q8_0 greedy text equals f32's, and eval's KL is checked below. */
static void test_model_llama_tiny(void) {
    ng_error err;
    ng_model *m = ng_model_load(TESTDATA("llama-tiny-a"), &err);
    REQUIRE(m, "%s", err.msg);
    size_t nb, nl;
    int *toks = read_bin(TESTDATA("llama-tiny-a/tokens.i32"), &nb);
    float *want = read_bin(TESTDATA("llama-tiny-a/logits_f32.f32"), &nl);
    REQUIRE(toks && want, "fixture missing");
    int n = (int)(nb / 4), V = m->hp.n_vocab, nd = 16;
    REQUIRE(nl == (size_t)n * V * 4 && n >= nd, "fixture size");
    double mag = 0;
    for (size_t i = 0; i < (size_t)n * V; i++) mag = fmax(mag, fabs(want[i]));
    static const struct {
        ng_type t;
        double max, mean, regimes;
    } cases[] = {{NG_Q8_0, 0.1, 0.01, 0.05}, {NG_Q4_0, 0.75, 0.1, 0.1}};
    float *got = malloc(sizeof(float) * (size_t)n * V), *dec = malloc(sizeof(float) * (size_t)nd * V);
    for (int c = 0; c < COUNT(cases); c++) {
        const char *path = c ? "build/tmp/quant-llama-q4_0.gguf" : "build/tmp/quant-llama-q8_0.gguf";
        REQUIRE(ng_model_save_gguf(m, path, cases[c].t, &err) == NG_OK, "%s", err.msg);
        ng_model *q = ng_model_load(path, &err);
        REQUIRE(q, "%s", err.msg);
        CHECK(ng_model_wtype(q) == cases[c].t, "loaded as %s", ng_type_name(ng_model_wtype(q)));
        ng_state *s = ng_state_new(q, n, n);
        REQUIRE(ng_forward(q, s, toks, n, got, 1, &err) == NG_OK, "%s", err.msg);
        ng_state_reset(s);
        for (int i = 0; i < nd; i++) REQUIRE(ng_forward(q, s, toks + i, 1, dec + (size_t)i * V, 0, &err) == NG_OK, "%s", err.msg);
        double d = t_max_abs_diff(got, want, (size_t)n * V), dd = t_max_abs_diff(dec, want, (size_t)nd * V);
        double mean = 0, rg = t_max_abs_diff(dec, got, (size_t)nd * V);
        for (size_t i = 0; i < (size_t)n * V; i++) mean += fabs((double)got[i] - want[i]) / ((double)n * V);
        printf("# llama-tiny-a %s: max |logit - f32 ref| %.3g (batch), %.3g (decode), mean %.3g, batch vs "
               "decode %.3g; max |logit| %.3g\n",
               ng_type_name(cases[c].t), d, dd, mean, rg, mag);
        CHECK(d <= cases[c].max * mag && dd <= cases[c].max * mag, "%s: max diff %g, %g", ng_type_name(cases[c].t), d, dd);
        CHECK(mean <= cases[c].mean * mag, "%s: mean diff %g", ng_type_name(cases[c].t), mean);
        CHECK(rg <= cases[c].regimes * mag, "%s: batch vs decode %g", ng_type_name(cases[c].t), rg);
        ng_state_free(s);
        ng_model_free(q);
    }
    free(got), free(dec), free(toks), free(want);
    ng_model_free(m);
}

/* A small LLaMA shape whose rows are whole k-quant blocks (256 and 512 values), grouped-query
 * attention, n_layer layers. */
static ng_hparams k_llama(int n_layer) {
    return (ng_hparams){.arch = NG_ARCH_LLAMA, .n_vocab = 512, .n_ctx = 64, .n_embd = 256, .n_head = 4,
                        .n_head_kv = 2, .n_layer = n_layer, .n_ff = 512, .norm_eps = 1e-5f, .rope_theta = 10000,
                        .rope_scale = 1};
}

/* A prompt's attention in bf16 (ng_attend_rows_bf16, ng_attend_bf16) where its products run on
 * integer dot products: random LLaMAs (heads of 64 values; 2 query heads to a KV head, whose
 * prompt rows go NG_ATT_ROWS at a time, and 8, whose heads go a row at a time), q8_0 and q4_0,
 * a 40-token prompt in pieces of 16 (the last piece, of 8 rows, stays f32): all logits with it
 * (ng_kernel_set_bf16_attention(1)) and without against the f32 model's. The bf16
 * rounding adds little to the 8-bit activations' error (measured, rms error / rms without -> with:
 * q8_0 0.0190 -> 0.0189 and 0.0170 -> 0.0175, q4_0 0.217 -> 0.217 and 0.223 -> 0.223), and it is
 * there (the logits ~0.015 apart) where the CPU runs it. */
static void test_model_bf16_attention(void) {
    enum { NT = 40, CHUNK = 16 };
    static const int kv_heads[] = {4, 1};
    static const ng_type ts[] = {NG_Q8_0, NG_Q4_0};
    int toks[NT], ran = 0;
    ng_error err;
    for (int i = 0; i < NT; i++) toks[i] = (i * 89 + 5) % 512;
    for (int c = 0; c < COUNT(kv_heads); c++) {
        ng_hparams hp = {.arch = NG_ARCH_LLAMA,
                         .n_vocab = 512,
                         .n_ctx = 64,
                         .n_embd = 512,
                         .n_head = 8,
                         .n_head_kv = kv_heads[c],
                         .n_layer = 2,
                         .n_ff = 768,
                         .norm_eps = 1e-5f,
                         .rope_theta = 10000,
                         .rope_scale = 1};
        size_t n = (size_t)NT * hp.n_vocab;
        float *want = malloc(sizeof(float) * n), *on = malloc(sizeof(float) * n),
              *off = malloc(sizeof(float) * n);
        ng_model *m = ng_model_random(&hp, NG_F32, 5);
        ng_state *s = ng_state_new(m, NT, CHUNK);
        REQUIRE(ng_forward(m, s, toks, NT, want, 1, &err) == NG_OK, "%s", err.msg);
        ng_state_free(s);
        ng_model_free(m);
        for (int t = 0; t < COUNT(ts); t++) {
            m = ng_model_random(&hp, ts[t], 5);
            s = ng_state_new(m, NT, CHUNK);
            ng_kernel_set_bf16_attention(1);
            int runs = ng_kernel_bf16_attention(64) && ng_kernel_int8_rows(m->layers[0].out_w->type, CHUNK);
            REQUIRE(ng_forward(m, s, toks, NT, on, 1, &err) == NG_OK, "%s", err.msg);
            ng_kernel_set_bf16_attention(0);
            ng_state_reset(s);
            REQUIRE(ng_forward(m, s, toks, NT, off, 1, &err) == NG_OK, "%s", err.msg);
            double e_on = rel_rms(on, want, n), e_off = rel_rms(off, want, n), d = rel_rms(on, off, n);
            printf("# %d KV heads, %s: logits' rms error / rms %.4f with bf16 attention, %.4f without (%.4f "
                   "apart)%s\n",
                   kv_heads[c], ng_type_name(ts[t]), e_on, e_off, d, runs ? "" : " (not run here)");
            CHECK(e_on <= 1.1 * e_off + 0.002, "%s: %.4f with bf16 attention, %.4f without",
                  ng_type_name(ts[t]), e_on, e_off);
            CHECK(runs ? d > 1e-5 : d == 0, "%s: bf16 attention %s, the logits %.3g apart",
                  ng_type_name(ts[t]), runs ? "runs" : "does not run", d);
            ran += runs;
            ng_state_free(s);
            ng_model_free(m);
        }
        free(want), free(on), free(off);
    }
    if (!ran) SKIP("bf16 attention: this CPU has no AVX512-BF16 (or no integer products for prompts)");
}

/* A random LLaMA whose rows are whole k-quant blocks (256 and 512 values), written as q8_0,
 * q6_k, q4_k and q4_0 and loaded back: every matrix in the type written, the logits of a
 * 24-token prompt (the batched kernels) and of its first 8 tokens one at a time (the GEMV)
 * against the f32 model's. The errors keep the formats' order (measured rms error / rms:
 * q8_0 0.016, q6_k 0.043, q4_k 0.18, q4_0 0.19); a kernel that reads a block wrongly gives
 * about 1.4. */
static void test_model_k_quants(void) {
    ng_hparams hp = k_llama(2);
    enum { NT = 24, ND = 8 };
    int toks[NT];
    for (int i = 0; i < NT; i++) toks[i] = (i * 89 + 5) % hp.n_vocab;
    ng_error err;
    ng_model *m = ng_model_random(&hp, NG_F32, 11);
    size_t V = (size_t)hp.n_vocab;
    float *want = malloc(sizeof(float) * NT * V), *got = malloc(sizeof(float) * NT * V),
          *dec = malloc(sizeof(float) * ND * V);
    ng_state *s = ng_state_new(m, NT, NT);
    REQUIRE(ng_forward(m, s, toks, NT, want, 1, &err) == NG_OK, "%s", err.msg);
    ng_state_free(s);
    static const ng_type ts[] = {NG_Q8_0, NG_Q6_K, NG_Q4_K, NG_Q4_0};
    double prev = 0;
    for (int c = 0; c < COUNT(ts); c++) {
        char path[64];
        snprintf(path, sizeof path, "build/tmp/quant-k-%s.gguf", ng_type_name(ts[c]));
        REQUIRE(ng_model_save_gguf(m, path, ts[c], &err) == NG_OK, "%s", err.msg);
        ng_model *q = ng_model_load(path, &err);
        REQUIRE(q, "%s", err.msg);
        CHECK(ng_type_base(q->layers[1].down_w->type) == ts[c] && ng_type_base(q->tok_embd->type) == ts[c],
              "%s: loaded as %s / %s", ng_type_name(ts[c]), ng_type_name(q->layers[1].down_w->type),
              ng_type_name(q->tok_embd->type));
        s = ng_state_new(q, NT, NT);
        REQUIRE(ng_forward(q, s, toks, NT, got, 1, &err) == NG_OK, "%s", err.msg);
        ng_state_reset(s);
        for (int i = 0; i < ND; i++)
            REQUIRE(ng_forward(q, s, toks + i, 1, dec + i * V, 0, &err) == NG_OK, "%s", err.msg);
        double eb = rel_rms(got, want, NT * V), ed = rel_rms(dec, want, ND * V),
               bd = rel_rms(dec, got, ND * V);
        printf("# %s: logits' rms error / rms %.3f (prompt), %.3f (one at a time); one at a time vs prompt "
               "%.3f\n",
               ng_type_name(ts[c]), eb, ed, bd);
        CHECK(eb > prev && eb <= 0.7 && ed <= 0.7, "%s: errors %.3f, %.3f (the type before: %.3f)",
              ng_type_name(ts[c]), eb, ed, prev);
        CHECK(bd <= 0.5 * eb + 0.02, "%s: the kernels disagree: %.3f", ng_type_name(ts[c]), bd);
        prev = eb;
        ng_state_free(s);
        ng_model_free(q);
    }
    free(want), free(got), free(dec);
    ng_model_free(m);
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return b;
}

/* n greedy tokens after the prompt. */
static void greedy(const ng_model *m, const int *prompt, int np, int n, int *out) {
    ng_error err;
    ng_state *s = ng_state_new(m, np + n, np);
    float *lg = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    int ok = ng_forward(m, s, prompt, np, lg, 0, &err) == NG_OK;
    for (int i = 0; i < n; i++) {
        out[i] = ok ? argmax(lg, m->hp.n_vocab) : -1;
        ok = ok && (i + 1 == n || ng_forward(m, s, &out[i], 1, lg, 0, &err) == NG_OK);
    }
    free(lg);
    ng_state_free(s);
}

/* stories260K (a real model) as q8_0: the same 32 greedy tokens as in f32. */
static void test_model_stories_q8_0(void) {
    if (!t_shared_models()) SKIP("../shared/models absent");
    ng_error err;
    ng_model *m = ng_model_load_llama2c("../shared/models/stories260K.bin", "../shared/models/tok512.bin", &err);
    REQUIRE(m, "%s", err.msg);
    REQUIRE(ng_model_save_gguf(m, "build/tmp/quant-stories-q8_0.gguf", NG_Q8_0, &err) == NG_OK, "%s", err.msg);
    ng_model *q = ng_model_load("build/tmp/quant-stories-q8_0.gguf", &err);
    REQUIRE(q, "%s", err.msg);
    int prompt[1] = {tok_bos(m->tok)}, a[32], b[32];
    greedy(m, prompt, 1, 32, a);
    greedy(q, prompt, 1, 32, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "q8_0 greedy text differs from f32");
    for (int i = 0; i < 32 && memcmp(a, b, sizeof a); i++) fprintf(stderr, "%d:%d/%d ", i, a[i], b[i]);
    ng_model_free(q);
    ng_model_free(m);
}

/* ---- netgpt quantize / eval ---- */

#define BIN "build/san/netgpt"

/* Runs a shell command; stdout to *out (malloc'd, or NULL), stderr to *err. Exit status. */
static int run(const char *cmd, char **out, char **err) {
    char full[2048];
    snprintf(full, sizeof full, "%s >build/tmp/quant.out 2>build/tmp/quant.err", cmd);
    int st = system(full);
    size_t n;
    char *o = read_bin("build/tmp/quant.out", &n), *r = read_bin("build/tmp/quant.err", &n);
    if (out) *out = o;
    else free(o);
    if (err) *err = r;
    else free(r);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_cli_quantize_errors(void) {
    char *out = NULL, *err = NULL;
    CHECK(run(BIN " quantize --help", &out, NULL) == 0 && strstr(out, "usage: netgpt quantize"), "help");
    free(out);
    CHECK(run(BIN " eval --help", &out, NULL) == 0 && strstr(out, "usage: netgpt eval"), "help");
    free(out);
    int rc = run(BIN " quantize " TESTDATA("llama-tiny-a") " build/tmp/x.gguf q5_k", NULL, &err);
    CHECK(rc == 2 && err && strstr(err, "q5_k"), "unsupported type: rc %d", rc);
    free(err);
    rc = run(BIN " quantize " TESTDATA("llama-tiny-a") " build/tmp/x.gguf", NULL, &err);
    CHECK(rc == 2, "missing type: rc %d", rc);
    free(err);
    rc = run(BIN " quantize build/tmp/no-such-model.gguf build/tmp/x.gguf q8_0", NULL, &err);
    CHECK(rc == 1 && err && strstr(err, "no-such-model"), "missing input: rc %d", rc);
    free(err);
}

/* llama-tiny-a (no tokenizer): quantize works, eval says why it cannot run. */
static void test_cli_quantize_llama_tiny(void) {
    char *out = NULL, *err = NULL;
    int rc = run(BIN " quantize " TESTDATA("llama-tiny-a") " build/tmp/cli-llama-q4_0.gguf q4_0", &out, &err);
    REQUIRE(rc == 0, "quantize: rc %d: %s", rc, err ? err : "");
    CHECK(strstr(out, "q4_0") && strstr(out, "MiB"), "summary: %s", out);
    free(out), free(err);
    ng_error e;
    ng_model *m = ng_model_load("build/tmp/cli-llama-q4_0.gguf", &e);
    REQUIRE(m, "%s", e.msg);
    CHECK(ng_model_wtype(m) == NG_Q4_0, "type %s", ng_type_name(ng_model_wtype(m)));
    ng_model_free(m);
    FILE *f = fopen("build/tmp/quant-text.txt", "w");
    REQUIRE(f, "cannot write build/tmp");
    fputs("some text\n", f);
    fclose(f);
    rc = run(BIN " eval -m build/tmp/cli-llama-q4_0.gguf -f build/tmp/quant-text.txt", NULL, &err);
    CHECK(rc == 1 && err && strstr(err, "tokenizer"), "eval without tokenizer: rc %d", rc);
    free(err);
}

/* `netgpt quantize ... q4_k_m` on a random LLaMA of 8 layers (tied head): q6_k for the head (the
 * token embedding) and for attn_v and ffn_down of layers 0, 3, 6 and 7 (the first and last
 * eighth, every third between), q4_k for every other matrix; general.file_type 15 (llama.cpp's
 * Q4_K_M); logits between q6_k's and q4_k's in error. */
static void test_quantize_k_m(void) {
    ng_hparams hp = k_llama(8);
    enum { NT = 16 };
    ng_error err;
    ng_model *m = ng_model_random(&hp, NG_F32, 5);
    REQUIRE(ng_model_save_gguf(m, "build/tmp/quant-km-f32.gguf", NG_F32, &err) == NG_OK, "%s", err.msg);
    char *out = NULL, *errs = NULL;
    int rc = run(BIN " quantize build/tmp/quant-km-f32.gguf build/tmp/quant-km.gguf q4_k_m", &out, &errs);
    REQUIRE(rc == 0, "quantize q4_k_m: rc %d: %s", rc, errs ? errs : "");
    CHECK(out && strstr(out, "(q4_k_m)"), "summary: %s", out ? out : "");
    free(out), free(errs);
    gguf_ctx *g = gguf_open("build/tmp/quant-km.gguf", &err);
    REQUIRE(g, "%s", err.msg);
    uint32_t ft = 0;
    CHECK(gguf_get_u32(g, "general.file_type", &ft, &err) == NG_OK && ft == 15, "general.file_type %u", ft);
    gguf_close(g);
    ng_model *q = ng_model_load("build/tmp/quant-km.gguf", &err);
    REQUIRE(q, "%s", err.msg);
    CHECK(q->tok_embd->type == NG_Q6_K, "token_embd (the head): %s", ng_type_name(q->tok_embd->type));
    for (int l = 0; l < hp.n_layer; l++) {
        const ng_layer *L = &q->layers[l];
        ng_type more = l == 0 || l == 3 || l == 6 || l == 7 ? NG_Q6_K : NG_Q4_K;
        CHECK(L->v_w->type == more && L->down_w->type == more, "layer %d: attn_v %s, ffn_down %s", l,
              ng_type_name(L->v_w->type), ng_type_name(L->down_w->type));
        CHECK(L->q_w->type == NG_Q4_K && L->k_w->type == NG_Q4_K && L->out_w->type == NG_Q4_K &&
                  L->gate_w->type == NG_Q4_K && L->up_w->type == NG_Q4_K,
              "layer %d: a matrix not q4_k", l);
    }
    int toks[NT];
    for (int i = 0; i < NT; i++) toks[i] = (i * 37 + 11) % hp.n_vocab;
    size_t V = (size_t)hp.n_vocab;
    float *want = malloc(sizeof(float) * NT * V), *got = malloc(sizeof(float) * NT * V);
    double e[3];
    const ng_model *ms[3] = {m, q, NULL};
    REQUIRE(ng_model_save_gguf(m, "build/tmp/quant-km-q4_k.gguf", NG_Q4_K, &err) == NG_OK, "%s", err.msg);
    ng_model *q4 = ng_model_load("build/tmp/quant-km-q4_k.gguf", &err);
    REQUIRE(q4, "%s", err.msg);
    ms[2] = q4;
    for (int k = 0; k < 3; k++) {
        ng_state *s = ng_state_new(ms[k], NT, NT);
        REQUIRE(ng_forward(ms[k], s, toks, NT, k ? got : want, 1, &err) == NG_OK, "%s", err.msg);
        ng_state_free(s);
        e[k] = k ? rel_rms(got, want, NT * V) : 0;
    }
    printf("# logits' rms error / rms: q4_k_m %.3f, q4_k %.3f\n", e[1], e[2]);
    CHECK(e[1] < e[2] && e[1] > 0, "q4_k_m %.3f against q4_k %.3f", e[1], e[2]);
    free(want), free(got);
    ng_model_free(q4), ng_model_free(q), ng_model_free(m);
}

static const char STORY[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big red ball in the park. She ran to the ball and kicked it very hard. "
    "The ball went up into the tree. Lily was sad. Her friend Tom came and said, \"Do not be sad, "
    "Lily. I will help you.\" Tom climbed the tree and got the ball. Lily was happy and said, "
    "\"Thank you, Tom!\" They played with the ball all day and had a lot of fun.\n";

static double json_num(const char *s, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = s ? strstr(s, k) : NULL;
    return p ? atof(p + strlen(k)) : NAN;
}

/* stories260K: convert to f32 GGUF, quantize to q8_0 and q4_0, eval all three on a short story.
 * The perplexities must be those of a model that reads the text (well below the vocabulary
 * size of 512), q8_0 within 2% of f32, q4_0 within 25%; --ref gives a small KL for q8_0. */
static void test_cli_eval_stories(void) {
    if (!t_shared_models()) SKIP("../shared/models absent");
    FILE *f = fopen("build/tmp/quant-story.txt", "w");
    REQUIRE(f, "cannot write build/tmp");
    fputs(STORY, f);
    fclose(f);
    char *out = NULL, *err = NULL;
    int rc = run(BIN " convert --from llama2c ../shared/models/stories260K.bin --tokenizer ../shared/models/tok512.bin"
                     " -o build/tmp/cli-stories-f32.gguf --type f32",
                 NULL, &err);
    REQUIRE(rc == 0, "convert: rc %d %s", rc, err ? err : "");
    free(err);
    static const char *const types[] = {"q8_0", "q4_0"};
    for (int i = 0; i < 2; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, BIN " quantize build/tmp/cli-stories-f32.gguf build/tmp/cli-stories-%s.gguf %s",
                 types[i], types[i]);
        rc = run(cmd, NULL, &err);
        REQUIRE(rc == 0, "quantize %s: rc %d %s", types[i], rc, err ? err : "");
        free(err);
    }
    double ppl[3];
    static const char *const models[] = {"f32", "q8_0", "q4_0"};
    for (int i = 0; i < 3; i++) {
        char cmd[512];
        snprintf(cmd, sizeof cmd,
                 BIN " eval -m build/tmp/cli-stories-%s.gguf -f build/tmp/quant-story.txt --ctx 64 --json%s",
                 models[i], i ? " --ref build/tmp/cli-stories-f32.gguf" : "");
        rc = run(cmd, &out, &err);
        REQUIRE(rc == 0, "eval %s: rc %d %s", models[i], rc, err ? err : "");
        ppl[i] = json_num(out, "ppl");
        printf("# stories260K %s: %s", models[i], out);
        if (i) {
            double kl = json_num(out, "kl"), ref = json_num(out, "ref_ppl");
            CHECK(fabs(ref - ppl[0]) <= 1e-4 * ppl[0], "ref ppl %g vs %g", ref, ppl[0]);
            CHECK(kl >= 0 && kl < (i == 1 ? 0.01 : 0.2), "%s KL %g", models[i], kl);
        }
        free(out), free(err);
    }
    CHECK(ppl[0] > 1 && ppl[0] < 30, "f32 PPL %g", ppl[0]);
    CHECK(fabs(ppl[1] - ppl[0]) <= 0.02 * ppl[0], "q8_0 PPL %g vs f32 %g", ppl[1], ppl[0]);
    CHECK(fabs(ppl[2] - ppl[0]) <= 0.25 * ppl[0], "q4_0 PPL %g vs f32 %g", ppl[2], ppl[0]);
    /* the human-readable form */
    rc = run(BIN " eval -m build/tmp/cli-stories-q8_0.gguf -f build/tmp/quant-story.txt", &out, &err);
    CHECK(rc == 0 && out && strstr(out, "PPL"), "eval text output: rc %d", rc);
    CHECK(err && strstr(err, "[1/1]"), "no progress on stderr");
    free(out), free(err);
}

int main(void) {
    RUN(test_type_sizes);
    RUN(test_layout_q8_0);
    RUN(test_layout_q4);
    RUN(test_layout_q5);
    RUN(test_layout_k4);
    RUN(test_layout_q6_k);
    RUN(test_quant_roundtrip);
    RUN(test_quant_k_exact);
    RUN(test_quant_k_error);
    RUN(test_convert_threads);
    RUN(test_matmul_q8_0);
    RUN(test_matmul_q4_0);
    RUN(test_matmul_q8_0r);
    RUN(test_matmul_q4_0r);
    RUN(test_matmul_q4_kr);
    RUN(test_matmul_q6_kr);
    RUN(test_matmul_steal_q);
    RUN(test_matmul_fresh_row);
    RUN(test_matmul_multi);
    RUN(test_reorder);
    RUN(test_matmul_q8_0_q4_0_steps);
    RUN(test_matmul_q4_k);
    RUN(test_matmul_q6_k);
    RUN(test_matmul_other_types);
    RUN(test_matmul_nonfinite);
    RUN(test_matmul_code_extremes);
    RUN(test_quantize_x);
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    RUN(test_model_llama_tiny);
    RUN(test_model_k_quants);
    RUN(test_model_bf16_attention);
    RUN(test_model_stories_q8_0);
    RUN(test_cli_quantize_errors);
    RUN(test_cli_quantize_llama_tiny);
    RUN(test_quantize_k_m);
    RUN(test_cli_eval_stories);
    TEST_EXIT();
}
