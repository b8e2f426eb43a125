/* quant — reference (scalar) quantization and dequantization of ggml's block formats. The
 * fast dot products that use these layouts live in kernels.c. */
#include "core/quant.h"

#include "core/kernels.h"
#include "core/team.h"
#include "core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return ng_f16_to_f32(h);
}

static void put_half(uint8_t *p, float f) {
    uint16_t h = ng_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* ---- 32-value blocks ------------------------------------------------------------------- */

static void dequant_q8_0(const uint8_t *b, float *y) {
    float d = half_at(b);
    const int8_t *q = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
}

static void quant_q8_0(const float *x, uint8_t *b) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
    put_half(b, d);
    int8_t *q = (int8_t *)(b + 2);
    for (int j = 0; j < 32; j++) q[j] = (int8_t)roundf(x[j] * id);
}

static void dequant_q4_0(const uint8_t *b, float *y) {
    float d = half_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0x0F) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* The value of largest magnitude maps to -8, so the full signed range is used on its side. */
static void quant_q4_0(const float *x, uint8_t *b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
    put_half(b, d);
    uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
        q0 = q0 > 15 ? 15 : q0, q1 = q1 > 15 ? 15 : q1;
        qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
}

static void dequant_q4_1(const uint8_t *b, float *y) {
    float d = half_at(b), m = half_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(qs[j] & 0x0F) + m;
        y[j + 16] = d * (float)(qs[j] >> 4) + m;
    }
}

/* q5_0 / q5_1: nibbles as q4, the fifth bit of value j in bit j of the 32-bit qh. */
static void dequant_q5(const uint8_t *qh4, const uint8_t *qs, float d, float m, int offset, float *y) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = d * (float)(((qs[j] & 0x0F) | h0) - offset) + m;
        y[j + 16] = d * (float)(((qs[j] >> 4) | h1) - offset) + m;
    }
}

/* ---- 256-value k-quant blocks ---------------------------------------------------------- */

/* Scale and min of sub-block j (0..7), 6 bits each, packed in 12 bytes. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void dequant_q4_k(const uint8_t *b, float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
        int sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0F) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
    }
}

static void dequant_q5_k(const uint8_t *b, float *y) {
    float d = half_at(b), dmin = half_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
        int sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
        for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
}

static void dequant_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = half_at(b + 208);
    for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

/* The integer code of x on a grid of step 1 / inv from offset -m, clamped to 0..top (written
 * so that the loops over a sub-block vectorize). */
static inline int grid_code(float x, float inv, float m, int top) {
    float v = (x + m) * inv;
    v = v > 0 ? v : 0; /* comparisons rather than fmaxf / fminf, which are calls here */
    v = v < (float)top ? v : (float)top;
    return (int)(v + 0.5f);
}

/* Scale s >= 0 and min m >= 0 of a q4_k sub-block of 32 (x ~ s * q - m, q in 0..15): for the
 * range's grid and grids a little finer and coarser, the least-squares s and m of the codes each
 * gives (m kept >= 0, so that zero stays on the value side of the minimum), the smallest
 * residual winning. The sums over the codes are in 8 lanes so that the loops vectorize. */
static void fit_scale_min(const float *x, float *s_out, float *m_out) {
    float lo = x[0], hi = x[0], sx = 0, sxx = 0;
    for (int i = 0; i < 32; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
    for (int i = 0; i < 32; i++) sx += x[i], sxx += x[i] * x[i];
    if (lo > 0) lo = 0;
    *s_out = (hi - lo) / 15, *m_out = -lo;
    if (!(hi > lo)) return;
    float best_e = INFINITY;
    for (int step = -4; step <= 4; step++) {
        float inv = (15.0f + 0.25f * (float)step) / (hi - lo), lq[8] = {0}, lqq[8] = {0}, lqx[8] = {0};
        for (int i = 0; i < 32; i += 8)
            for (int l = 0; l < 8; l++) {
                float q = (float)grid_code(x[i + l], inv, -lo, 15);
                lq[l] += q, lqq[l] += q * q, lqx[l] += q * x[i + l];
            }
        float sq = 0, sqq = 0, sqx = 0;
        for (int l = 0; l < 8; l++) sq += lq[l], sqq += lqq[l], sqx += lqx[l];
        float den = 32 * sqq - sq * sq, s = den > 0 ? (32 * sqx - sq * sx) / den : 1 / inv,
              m = (s * sq - sx) / 32;
        if (m < 0) s = sqq > 0 ? sqx / sqq : 1 / inv, m = 0; /* the fit with no offset */
        if (!(s > 0)) continue;
        /* sum of (s q - m - x)^2 over the codes, from the sums */
        float e = s * s * sqq + 32 * m * m + sxx - 2 * s * m * sq - 2 * s * sqx + 2 * m * sx;
        if (e < best_e) best_e = e, *s_out = s, *m_out = m;
    }
}

/* q4_k: the 8 sub-blocks' scales and mins fitted (fit_scale_min), then quantized to 6 bits
 * against d = largest scale / 63 and dmin = largest min / 63 (as f16), and the codes taken on
 * the quantized grid. The 12 scale bytes are scale_min_k4's packing. */
static void quant_q4_k(const float *x, uint8_t *b) {
    float s[8], m[8], smax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        fit_scale_min(x + 32 * j, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]), mmax = fmaxf(mmax, m[j]);
    }
    put_half(b, smax / 63), put_half(b + 2, mmax / 63);
    float d = half_at(b), dmin = half_at(b + 2);
    uint8_t *sc = b + 4, *qs = b + 16, q[256];
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = d > 0 ? (int)lroundf(s[j] / d) : 0, lm = dmin > 0 ? (int)lroundf(m[j] / dmin) : 0;
        ls = ls > 63 ? 63 : ls, lm = lm > 63 ? 63 : lm;
        if (j < 4) {
            sc[j] |= (uint8_t)ls, sc[j + 4] |= (uint8_t)lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 15) | ((lm & 15) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6), sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
        float step = d * (float)ls, inv = step > 0 ? 1 / step : 0;
        for (int i = 0; i < 32; i++)
            q[32 * j + i] = (uint8_t)grid_code(x[32 * j + i], inv, dmin * (float)lm, 15);
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

/* q6_k: each sub-block of 16 maps its value of largest magnitude to -32 (the full signed range
 * on its side, as q4_0), the 16 scales then quantized to int8 against d = the largest |scale| /
 * 127 (as f16), and the codes taken on the quantized grid. */
static void quant_q6_k(const float *x, uint8_t *b) {
    float s[16], smax = 0, sabs = 0;
    for (int j = 0; j < 16; j++) {
        float amax = 0, max = 0;
        for (int i = 0; i < 16; i++)
            if (fabsf(x[16 * j + i]) > amax) amax = fabsf(x[16 * j + i]), max = x[16 * j + i];
        s[j] = max / -32.0f;
        if (fabsf(s[j]) > sabs) sabs = fabsf(s[j]), smax = s[j];
    }
    /* the scale of largest magnitude maps to -128 or 127 by its sign, the others in between */
    put_half(b + 208, smax < 0 ? smax / -128.0f : smax / 127.0f);
    float d = half_at(b + 208);
    int8_t *sc = (int8_t *)(b + 192);
    uint8_t *ql = b, *qh = b + 128, q[256];
    for (int j = 0; j < 16; j++) {
        int ls = d > 0 ? (int)lroundf(s[j] / d) : 0;
        ls = ls > 127 ? 127 : ls < -128 ? -128 : ls;
        sc[j] = (int8_t)ls;
        float step = d * (float)ls;
        for (int i = 0; i < 16; i++) {
            int v = step != 0 ? (int)lroundf(x[16 * j + i] / step) : 0;
            q[16 * j + i] = (uint8_t)((v < -32 ? -32 : v > 31 ? 31 : v) + 32);
        }
    }
    memset(qh, 0, 64);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *v = q + 128 * h + l;
            ql[64 * h + l] = (uint8_t)((v[0] & 15) | ((v[64] & 15) << 4));
            ql[64 * h + l + 32] = (uint8_t)((v[32] & 15) | ((v[96] & 15) << 4));
            qh[32 * h + l] =
                (uint8_t)((v[0] >> 4) | ((v[32] >> 4) << 2) | ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
        }
}

/* ---- kernel order (q4_0r, q8_0r) ------------------------------------------------------------ */

/* One run of 4 blocks of base type q4_0 or q8_0 (72 or 136 bytes) from file order (in) into
 * kernel order (out), or back when to_r is 0. Byte k of lane j's group is code 4 * (j / 4) + k of
 * block j % 4 (plus 16 for q8_0's second half). */
static void reorder_run(uint8_t *out, const uint8_t *in, ng_type base, int to_r) {
    int q8 = base == NG_Q8_0;
    size_t bs = q8 ? 34 : 18, codes = q8 ? 128 : 64;
    for (int b = 0; b < 4; b++) {
        size_t blk = (size_t)b * bs, scale = codes + 2 * (size_t)b;
        memcpy(out + (to_r ? scale : blk), in + (to_r ? blk : scale), 2);
        for (int half = 0; half < (q8 ? 2 : 1); half++)
            for (int i = 0; i < 16; i++) { /* code 16 * half + i of block b */
                size_t c = 64 * (size_t)half + 16 * (size_t)(i / 4) + 4 * (size_t)b + (size_t)(i % 4);
                size_t o = blk + 2 + 16 * (size_t)half + (size_t)i;
                uint8_t v = in[to_r ? o : c];
                out[to_r ? c : o] = q8 ? (uint8_t)(v ^ 0x80) : v;
            }
    }
}

/* A q4_k block (in) into q4_kr (out), or back when to_r is 0: code i of sub-block s (in q4_k, a
 * nibble of byte 32 (s / 2) + i of the codes: the low one for even s) sits in q4_kr's half z = i
 * / 16, lane l = 2 s + (i / 4) % 2, byte b = i % 4, in the high nibble when (i / 8) % 2. */
static void reorder_k(uint8_t *out, const uint8_t *in, int to_r) {
    memcpy(out, in, 16);
    memset(out + 16, 0, 128);
    for (int s = 0; s < 8; s++)
        for (int i = 0; i < 32; i++) {
            int f = 16 + 32 * (s / 2) + i, fsh = 4 * (s % 2);
            int r = 16 + 64 * (i / 16) + 4 * (2 * s + (i / 4) % 2) + i % 4, rsh = 4 * ((i / 8) % 2);
            int v = to_r ? (in[f] >> fsh) & 15 : (in[r] >> rsh) & 15;
            if (to_r)
                out[r] |= (uint8_t)(v << rsh);
            else
                out[f] |= (uint8_t)(v << fsh);
        }
}

/* Value i's 6-bit code in a q6_k block (kernel order: q6_kr). q6_k: in half h = i / 128, at
 * l = i % 32 of quarter k = i % 128 / 32, the low 4 bits in ql[64 h + l + 32 (k % 2)] (the high
 * nibble for k >= 2), the top 2 at bits 2 k of qh[32 h + l]. q6_kr: group g = i / 16, its code
 * p = i % 16 in lane g, byte p % 4 of vector v = p / 4: the low 4 bits in the nibble v % 2 of
 * byte 64 (v / 2) + 4 g + p % 4, the top 2 at bits 2 v of byte 128 + 4 g + p % 4. */
static int code6(const uint8_t *b, int kr, int i) {
    if (kr) {
        int g = i / 16, p = i % 16, v = p / 4, o = 4 * g + p % 4;
        return (b[64 * (v / 2) + o] >> (4 * (v % 2)) & 15) | (b[128 + o] >> (2 * v) & 3) << 4;
    }
    int h = i / 128, l = i % 32, k = i % 128 / 32;
    return (b[64 * h + l + 32 * (k % 2)] >> (4 * (k / 2)) & 15) | (b[128 + 32 * h + l] >> (2 * k) & 3) << 4;
}

static void put_code6(uint8_t *b, int kr, int i, int c) {
    if (kr) {
        int g = i / 16, p = i % 16, v = p / 4, o = 4 * g + p % 4;
        b[64 * (v / 2) + o] |= (uint8_t)((c & 15) << (4 * (v % 2)));
        b[128 + o] |= (uint8_t)((c >> 4) << (2 * v));
    } else {
        int h = i / 128, l = i % 32, k = i % 128 / 32;
        b[64 * h + l + 32 * (k % 2)] |= (uint8_t)((c & 15) << (4 * (k / 2)));
        b[128 + 32 * h + l] |= (uint8_t)((c >> 4) << (2 * k));
    }
}

/* A q6_k block into q6_kr (to_r) or back: the codes moved, the scales and d where they were. */
static void reorder_k6(uint8_t *out, const uint8_t *in, int to_r) {
    memset(out, 0, 192);
    memcpy(out + 192, in + 192, 18);
    for (int i = 0; i < 256; i++) put_code6(out, to_r, i, code6(in, !to_r, i));
}

void ng_reorder_rows(void *dst, ng_type to, const void *src, ng_type from, int64_t cols, int64_t rows) {
    ng_type base = ng_type_base(from), r = ng_type_reordered(base);
    size_t run = ng_type_size(r), n = (size_t)(cols / ng_type_block(r)) * (size_t)rows;
    uint8_t tmp[210], *d = dst;
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++, p += run, d += run) {
        memcpy(tmp, p, run); /* dst may be src */
        if (base == NG_Q4_K)
            reorder_k(d, tmp, to != base);
        else if (base == NG_Q6_K)
            reorder_k6(d, tmp, to != base);
        else
            reorder_run(d, tmp, base, to != base);
    }
}

/* ---- rows -------------------------------------------------------------------------------- */

int ng_type_can_dequant(ng_type t) {
    switch (t) {
    case NG_F32: case NG_F16: case NG_BF16: case NG_Q8_0: case NG_Q4_0: case NG_Q4_1: case NG_Q5_0: case NG_Q5_1:
    case NG_Q4_K: case NG_Q5_K: case NG_Q6_K: case NG_Q4_0R: case NG_Q8_0R: case NG_Q4_KR: case NG_Q6_KR:
        return 1;
    default: return 0;
    }
}

int ng_type_can_quant(ng_type t) {
    return t == NG_F32 || t == NG_F16 || t == NG_BF16 || t == NG_Q8_0 || t == NG_Q4_0 || t == NG_Q4_K ||
           t == NG_Q6_K;
}

void ng_dequantize_row(ng_type t, const void *src, float *dst, int64_t n) {
    if (t == NG_F32 || t == NG_F16 || t == NG_BF16) {
        ng_to_f32(dst, src, t, n);
        return;
    }
    const uint8_t *b = src;
    int qk = ng_type_block(t);
    size_t bs = ng_type_size(t);
    for (int64_t i = 0; i < n / qk; i++, b += bs, dst += qk) {
        switch (t) {
        case NG_Q8_0: dequant_q8_0(b, dst); break;
        case NG_Q4_0: dequant_q4_0(b, dst); break;
        case NG_Q4_1: dequant_q4_1(b, dst); break;
        case NG_Q5_0: dequant_q5(b + 2, b + 6, half_at(b), 0.0f, 16, dst); break;
        case NG_Q5_1: dequant_q5(b + 4, b + 8, half_at(b), half_at(b + 2), 0, dst); break;
        case NG_Q4_K: dequant_q4_k(b, dst); break;
        case NG_Q5_K: dequant_q5_k(b, dst); break;
        case NG_Q6_K: dequant_q6_k(b, dst); break;
        case NG_Q4_KR: {
            uint8_t g[144];
            reorder_k(g, b, 0);
            dequant_q4_k(g, dst);
            break;
        }
        case NG_Q6_KR: {
            uint8_t g[210];
            reorder_k6(g, b, 0);
            dequant_q6_k(g, dst);
            break;
        }
        case NG_Q4_0R: case NG_Q8_0R: {
            ng_type base = ng_type_base(t);
            uint8_t g[136];
            reorder_run(g, b, base, 0);
            ng_dequantize_row(base, g, dst, 128);
            break;
        }
        default: memset(dst, 0, (size_t)qk * sizeof *dst); break;
        }
    }
}

void ng_quantize_row(ng_type t, const float *src, void *dst, int64_t n) {
    if (t == NG_F32 || t == NG_F16 || t == NG_BF16) {
        ng_from_f32(dst, src, t, n);
        return;
    }
    if (t != ng_type_base(t)) { /* the kernel orders: the file type's blocks, rearranged */
        ng_quantize_row(ng_type_base(t), src, dst, n);
        ng_reorder_rows(dst, t, dst, ng_type_base(t), n, 1);
        return;
    }
    uint8_t *b = dst;
    size_t bs = ng_type_size(t);
    int qk = ng_type_block(t);
    for (int64_t i = 0; i < n / qk; i++, b += bs, src += qk) {
        if (t == NG_Q8_0) quant_q8_0(src, b);
        else if (t == NG_Q4_K)
            quant_q4_k(src, b);
        else if (t == NG_Q6_K)
            quant_q6_k(src, b);
        else quant_q4_0(src, b);
    }
}

/* A conversion through f32 as a team job: thread t converts its share of the rows, with a row
 * of f32 of its own. */
typedef struct {
    const void *src;
    char *dst;
    ng_type from, to;
    int64_t cols, rows;
} convert_job;

static void convert_run(void *ctx, int t, int nt) {
    const convert_job *j = ctx;
    size_t in_rb = ng_row_size(j->from, j->cols), out_rb = ng_row_size(j->to, j->cols);
    float *f = xmalloc((size_t)(j->cols ? j->cols : 1) * sizeof *f);
    for (int64_t r = j->rows * t / nt; r < j->rows * (t + 1) / nt; r++) {
        ng_dequantize_row(j->from, (const char *)j->src + in_rb * (size_t)r, f, j->cols);
        ng_quantize_row(j->to, f, j->dst + out_rb * (size_t)r, j->cols);
    }
    free(f);
}

void *ng_convert_rows(const void *src, ng_type from, ng_type to, int64_t cols, int64_t rows) {
    size_t out_rb = ng_row_size(to, cols);
    char *dst = xmalloc(out_rb * (size_t)(rows ? rows : 1));
    if (from != to && ng_type_base(from) == ng_type_base(to)) { /* a rearrangement */
        ng_reorder_rows(dst, to, src, from, cols, rows);
        return dst;
    }
    /* rows are independent: the threads' shares give the same bytes as one thread */
    convert_job j = {src, dst, from, to, cols, rows};
    int nt = (double)cols * (double)rows < (1 << 16) ? 1 : ng_threads();
    ng_team_run(nt > rows ? (int)(rows ? rows : 1) : nt, convert_run, &j);
    return dst;
}
