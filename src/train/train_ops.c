/* train_ops — forward and backward kernels of the training graph (see train_ops.h). The
 * forward math follows model/forward.c op for op (same formulas, same float rounding where
 * it matters, e.g. RoPE angles), so a trained model behaves the same under inference. */
#include "train/train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "core/team.h"
#include "core/util.h"
#include "core/vmath.h"

/* ---- norms --------------------------------------------------------------------------------- */

void train_layernorm_fwd(float *y, float *mu, float *rs, const float *x, const float *w, const float *b, int N, int C,
                         float eps) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float *yr = y + (size_t)n * C;
        float mean = 0, var = 0;
        for (int i = 0; i < C; i++) mean += xr[i];
        mean /= (float)C;
        for (int i = 0; i < C; i++) var += (xr[i] - mean) * (xr[i] - mean);
        float r = 1.0f / sqrtf(var / (float)C + eps);
        for (int i = 0; i < C; i++) yr[i] = (xr[i] - mean) * r * w[i] + b[i];
        mu[n] = mean, rs[n] = r;
    }
}

/* With xh = (x - mu) rs and g = dy * w: dx = rs (g - mean(g) - xh mean(g xh)). */
void train_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                         const float *mu, const float *rs, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
        float *dxr = dx + (size_t)n * C;
        float m = mu[n], r = rs[n], sg = 0, sgx = 0;
        for (int i = 0; i < C; i++) {
            float xh = (xr[i] - m) * r, g = dyr[i] * w[i];
            sg += g, sgx += g * xh;
            if (dw) dw[i] += dyr[i] * xh;
            if (db) db[i] += dyr[i];
        }
        sg /= (float)C, sgx /= (float)C;
        for (int i = 0; i < C; i++) {
            float xh = (xr[i] - m) * r;
            dxr[i] += r * (dyr[i] * w[i] - sg - xh * sgx);
        }
    }
}

void train_rmsnorm_fwd(float *y, float *rs, const float *x, const float *w, int N, int C, float eps) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        float ss = 0;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / (float)C + eps);
        for (int i = 0; i < C; i++) y[(size_t)n * C + i] = xr[i] * r * w[i];
        rs[n] = r;
    }
}

/* With g = dy * w: dx = rs g - x rs^3 mean(g x). */
void train_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rs, int N,
                       int C) {
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C, *dyr = dy + (size_t)n * C;
        float *dxr = dx + (size_t)n * C;
        float r = rs[n], sgx = 0;
        for (int i = 0; i < C; i++) {
            sgx += dyr[i] * w[i] * xr[i];
            if (dw) dw[i] += dyr[i] * xr[i] * r;
        }
        float c = r * r * r * sgx / (float)C;
        for (int i = 0; i < C; i++) dxr[i] += r * dyr[i] * w[i] - xr[i] * c;
    }
}

/* ---- activations ---------------------------------------------------------------------------- */

/* The forward functions are inference's own (core/vmath.h); the backward ones differentiate
 * them with the same tanh and exp. */
void train_gelu_fwd(float *y, const float *x, size_t n) { ng_act_gelu(y, x, n); }

void train_gelu_bwd(float *dx, const float *dy, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float v = x[i], t = ng_vtanh(NG_GELU_C * (v + 0.044715f * v * v * v));
        float d = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * NG_GELU_C * (1.0f + 3.0f * 0.044715f * v * v);
        dx[i] = dy[i] * d;
    }
}

void train_swiglu_fwd(float *y, const float *g, const float *u, size_t n) { ng_act_silu_mul(y, g, u, n); }

/* silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g). */
void train_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + ng_vexp(-g[i]));
        du[i] = dy[i] * g[i] * s;
        dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

/* ---- RoPE ------------------------------------------------------------------------------------ */

void train_rope(float *x, int N, int T, int n_heads, int hd, float theta, float scale, int dir) {
    size_t stride = (size_t)n_heads * hd;
    for (int n = 0; n < N; n++) {
        float pos = (float)(n % T) * scale;
        for (int i = 0; i < hd; i += 2) {
            /* the angle exactly as forward.c computes it, so a trained model decodes the same */
            float a = pos * powf(theta, -(float)i / (float)hd);
            float c = cosf(a), s = (float)dir * sinf(a);
            for (int h = 0; h < n_heads; h++) {
                float *p = x + (size_t)n * stride + (size_t)h * hd + i, x0 = p[0], x1 = p[1];
                p[0] = x0 * c - x1 * s;
                p[1] = x0 * s + x1 * c;
            }
        }
    }
}

/* ---- attention ------------------------------------------------------------------------------- */

/* The attention's operands, as a team job's context (core/team.h). */
typedef struct {
    float *ao, *att, *dq, *dk, *dv, *scratch;
    const float *q, *k, *v, *dao, *p;
    int B, T, H, Hkv, hd;
} att_ctx;

/* Thread t's share [*i0, *i1) of n items cut into T contiguous runs. */
static void share(int n, int t, int T, int *i0, int *i1) {
    *i0 = (int)((int64_t)n * t / T);
    *i1 = (int)((int64_t)n * (t + 1) / T);
}

/* Threads for a loop of `work` multiply-adds: one below 65536 (a job costs more). */
static int threads_for(size_t work, int max) {
    int n = ng_threads() < max ? ng_threads() : max;
    return work > 65536 ? n : 1;
}

static void attention_fwd_job(void *ctx, int t_, int T_) {
    const att_ctx *c = ctx;
    float *ao = c->ao, *att = c->att;
    const float *q = c->q, *k = c->k, *v = c->v;
    int B = c->B, T = c->T, H = c->H, hd = c->hd, E = H * hd, KV = c->Hkv * hd, group = H / c->Hkv, w0, w1;
    float scale = 1.0f / sqrtf((float)hd);
    share(B * H, t_, T_, &w0, &w1);
    for (int w = w0; w < w1; w++) {
        int b = w / H, h = w % H, kvh = h / group;
        for (int t = 0; t < T; t++) {
            const float *qr = q + (size_t)(b * T + t) * E + (size_t)h * hd;
            float *p = att + ((size_t)w * T + t) * T, mx = -INFINITY, sum = 0;
            for (int s = 0; s <= t; s++) {
                const float *kr = k + (size_t)(b * T + s) * KV + (size_t)kvh * hd;
                float d = 0;
#pragma omp simd reduction(+ : d)
                for (int i = 0; i < hd; i++) d += qr[i] * kr[i];
                p[s] = d * scale;
                if (p[s] > mx) mx = p[s];
            }
            for (int s = 0; s <= t; s++) sum += (p[s] = expf(p[s] - mx));
            float inv = 1.0f / sum;
            for (int s = 0; s <= t; s++) p[s] *= inv;
            for (int s = t + 1; s < T; s++) p[s] = 0;
            float *o = ao + (size_t)(b * T + t) * E + (size_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof *o);
            for (int s = 0; s <= t; s++) {
                const float *vr = v + (size_t)(b * T + s) * KV + (size_t)kvh * hd;
                float ps = p[s];
#pragma omp simd
                for (int i = 0; i < hd; i++) o[i] += ps * vr[i];
            }
        }
    }
}

void train_attention_fwd(float *ao, float *att, const float *q, const float *k, const float *v, int B, int T, int H,
                         int Hkv, int hd) {
    att_ctx c = {.ao = ao, .att = att, .q = q, .k = k, .v = v, .B = B, .T = T, .H = H, .Hkv = Hkv, .hd = hd};
    ng_team_run(threads_for((size_t)B * H * T * T * hd, ng_threads()), attention_fwd_job, &c);
}

/* One work item per (sequence, KV head): it owns the dk, dv rows of that head and the dq rows
 * of the query heads in its group, so threads never write the same value. */
static void attention_bwd_job(void *ctx, int t_, int T_) {
    const att_ctx *c = ctx;
    float *dq = c->dq, *dk = c->dk, *dv = c->dv;
    const float *dao = c->dao, *q = c->q, *k = c->k, *v = c->v, *att = c->p;
    int B = c->B, T = c->T, H = c->H, Hkv = c->Hkv, hd = c->hd, E = H * hd, KV = Hkv * hd, group = H / Hkv, w0, w1;
    float scale = 1.0f / sqrtf((float)hd);
    float *dp = c->scratch + (size_t)t_ * T;
    share(B * Hkv, t_, T_, &w0, &w1);
    for (int w = w0; w < w1; w++) {
        int b = w / Hkv, kvh = w % Hkv;
        for (int t = 0; t < T; t++) {
            memset(dk + (size_t)(b * T + t) * KV + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
            memset(dv + (size_t)(b * T + t) * KV + (size_t)kvh * hd, 0, (size_t)hd * sizeof(float));
        }
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int t = 0; t < T; t++) {
                const float *p = att + ((size_t)(b * H + h) * T + t) * T;
                const float *dor = dao + (size_t)(b * T + t) * E + (size_t)h * hd;
                const float *qr = q + (size_t)(b * T + t) * E + (size_t)h * hd;
                float *dqr = dq + (size_t)(b * T + t) * E + (size_t)h * hd, sum = 0;
                for (int s = 0; s <= t; s++) {
                    const float *vr = v + (size_t)(b * T + s) * KV + (size_t)kvh * hd;
                    float *dvr = dv + (size_t)(b * T + s) * KV + (size_t)kvh * hd, d = 0, ps = p[s];
#pragma omp simd reduction(+ : d)
                    for (int i = 0; i < hd; i++) d += dor[i] * vr[i];
#pragma omp simd
                    for (int i = 0; i < hd; i++) dvr[i] += ps * dor[i];
                    dp[s] = d;
                    sum += p[s] * d;
                }
                memset(dqr, 0, (size_t)hd * sizeof *dqr);
                for (int s = 0; s <= t; s++) {
                    float ds = p[s] * (dp[s] - sum) * scale;
                    const float *kr = k + (size_t)(b * T + s) * KV + (size_t)kvh * hd;
                    float *dkr = dk + (size_t)(b * T + s) * KV + (size_t)kvh * hd;
#pragma omp simd
                    for (int i = 0; i < hd; i++) dqr[i] += ds * kr[i];
#pragma omp simd
                    for (int i = 0; i < hd; i++) dkr[i] += ds * qr[i];
                }
            }
        }
    }
}

void train_attention_bwd(float *dq, float *dk, float *dv, const float *dao, const float *q, const float *k,
                         const float *v, const float *att, int B, int T, int H, int Hkv, int hd, float *scratch,
                         int max_threads) {
    att_ctx c = {.dq = dq, .dk = dk, .dv = dv, .scratch = scratch, .dao = dao, .q = q, .k = k, .v = v, .p = att,
                 .B = B, .T = T, .H = H, .Hkv = Hkv, .hd = hd};
    ng_team_run(threads_for((size_t)B * H * T * T * hd, max_threads), attention_bwd_job, &c);
}

/* ---- matrix products ------------------------------------------------------------------------- */

/* A loop of the matrix products below, as a team job's context. */
typedef struct {
    float *dst;
    const float *src, *add;
    const void *w;
    ng_type wt;
    size_t row, lds;
    const int *keep;
    int c0, nc, out, in, R, cols, N, ldy;
    float scale;
} mm_ctx;

/* Columns c0..c0+nc-1 of W (out rows) as f32 rows of `out`: dst[i * out + o] = W[o][c0 + i]. */
static void transpose_cols_job(void *ctx, int t, int T) {
    const mm_ctx *c = ctx;
    float buf[TRAIN_DX_COLS];
    int o0, o1;
    share(c->out, t, T, &o0, &o1);
    for (int o = o0; o < o1; o++) {
        ng_to_f32(buf, (const char *)c->w + c->row * (size_t)o + ng_row_size(c->wt, c->c0), c->wt, c->nc);
        for (int i = 0; i < c->nc; i++) c->dst[(size_t)i * c->out + o] = buf[i];
    }
}

void train_matmul_dx(float *dx, const float *dy, const void *w, ng_type wt, int N, int out, int in, float *scratch) {
    size_t row = ng_row_size(wt, in);
    /* W^T a slice of TRAIN_DX_COLS input columns at a time, in f32 rows of `out`, so that
     * ng_matmul (threaded, vectorized) does the product without a transposed copy of the whole
     * matrix (a 7B model's output head would need 1.4 GB); each dx element is still one dot
     * product over `out`, in the same order. Slices start on multiples of 512, which are block
     * boundaries of every quantized type. */
    float *wt_f = scratch, *y = scratch + (size_t)TRAIN_DX_COLS * out;
    for (int c0 = 0; c0 < in; c0 += TRAIN_DX_COLS) {
        int nc = in - c0 < TRAIN_DX_COLS ? in - c0 : TRAIN_DX_COLS;
        mm_ctx c = {.dst = wt_f, .w = w, .wt = wt, .row = row, .c0 = c0, .nc = nc, .out = out};
        ng_team_run(threads_for((size_t)out * nc, ng_threads()), transpose_cols_job, &c);
        ng_matmul(y, dy, wt_f, NG_F32, NULL, N, nc, out);
        for (int n = 0; n < N; n++) memcpy(dx + (size_t)n * in + c0, y + (size_t)n * nc, (size_t)nc * sizeof(float));
    }
}

/* Scratch of train_matmul_dw: one growing buffer, kept between calls (the trainer runs its
 * steps on one thread) and given back by train_ops_release. */
static float *dw_scratch;
static size_t dw_scratch_cap;

void train_ops_release(void) {
    free(dw_scratch);
    dw_scratch = NULL, dw_scratch_cap = 0;
}

/* dst (cols, R) = the rows keep[0..R) of src (row stride lds, cols used), transposed, in tiles
 * of 8 columns x 64 rows: the 8 destination rows a tile writes are R floats apart, often a
 * power of two, so they share one L1 set; 8 stays under the cache's associativity. */
enum { TC = 8, TJ = 64 };

static void gather_transpose_job(void *ctx, int t, int T) {
    const mm_ctx *g = ctx;
    float *dst = g->dst;
    const float *src = g->src;
    const int *keep = g->keep;
    size_t lds = g->lds;
    int R = g->R, cols = g->cols, g0, g1;
    share((cols + TC - 1) / TC, t, T, &g0, &g1);
    for (int c0 = g0 * TC; c0 < g1 * TC; c0 += TC) {
        int c1 = c0 + TC < cols ? c0 + TC : cols;
        for (int j0 = 0; j0 < R; j0 += TJ) {
            int j1 = j0 + TJ < R ? j0 + TJ : R;
            for (int j = j0; j < j1; j++) {
                const float *r = src + (size_t)keep[j] * lds;
                for (int c = c0; c < c1; c++) dst[(size_t)c * R + j] = r[c];
            }
        }
    }
}

static void gather_transpose(float *dst, const float *src, size_t lds, const int *keep, int R, int cols) {
    mm_ctx c = {.dst = dst, .src = src, .lds = lds, .keep = keep, .R = R, .cols = cols};
    ng_team_run(threads_for((size_t)R * cols, ng_threads()), gather_transpose_job, &c);
}

/* Rows of dW per product: bounds the scratch (DW_SLICE x in products, DW_SLICE x N of dy^T). */
#define DW_SLICE 2048

/* dW = dy^T x is a product with N as its inner dimension: both operands are transposed once
 * (O(N (out + in)), next to O(N out in) for the product), rows whose dy is all zero (masked
 * tokens) are dropped, and ng_matmul's blocked kernel does the rest, DW_SLICE rows of dW at a
 * time. Small products keep the plain loop, where the copies would cost more than they save. */
/* dW rows [o0, o1) += scale * dy^T x, row by row (small products). */
static void dw_plain_job(void *ctx, int t, int T) {
    const mm_ctx *c = ctx;
    int in = c->in, o0, o1;
    share(c->out, t, T, &o0, &o1);
    for (int o = o0; o < o1; o++) {
        float *d = c->dst + (size_t)o * in;
        for (int n = 0; n < c->N; n++) {
            float g = c->scale * c->add[(size_t)n * c->ldy + o];
            if (g == 0) continue; /* masked rows contribute nothing */
            const float *xr = c->src + (size_t)n * in;
#pragma omp simd
            for (int i = 0; i < in; i++) d[i] += g * xr[i];
        }
    }
}

/* dst rows [o0, o1) (of in) += scale * the same rows of add. */
static void add_scaled_job(void *ctx, int t, int T) {
    const mm_ctx *c = ctx;
    int o0, o1;
    share(c->out, t, T, &o0, &o1);
    for (size_t i = (size_t)o0 * c->in; i < (size_t)o1 * c->in; i++) c->dst[i] += c->scale * c->add[i];
}

void train_matmul_dw(float *dw, const float *dy, int ldy, const float *x, int N, int out, int in, float scale) {
    if ((size_t)N * out * in <= (size_t)1 << 18 || N < 16) {
        mm_ctx c = {.dst = dw, .add = dy, .ldy = ldy, .src = x, .N = N, .out = out, .in = in, .scale = scale};
        ng_team_run(threads_for((size_t)N * out * in, ng_threads()), dw_plain_job, &c);
        return;
    }
    int sl = out < DW_SLICE ? out : DW_SLICE;
    size_t need = (size_t)in * N + (size_t)sl * N + (size_t)sl * in + (size_t)N;
    if (need > dw_scratch_cap) {
        free(dw_scratch);
        dw_scratch = xmalloc(need * sizeof(float));
        dw_scratch_cap = need;
    }
    float *xt = dw_scratch, *dyt = xt + (size_t)in * N, *prod = dyt + (size_t)sl * N;
    int *keep = (int *)(prod + (size_t)sl * in), R = 0;
    for (int n = 0; n < N; n++) {
        const float *r = dy + (size_t)n * ldy;
        int nz = 0;
        for (int o = 0; o < out && !nz; o++) nz = r[o] != 0;
        if (nz) keep[R++] = n;
    }
    if (R == 0) return;
    gather_transpose(xt, x, in, keep, R, in);
    for (int o0 = 0; o0 < out; o0 += sl) {
        int m = out - o0 < sl ? out - o0 : sl;
        gather_transpose(dyt, dy + o0, ldy, keep, R, m);
        ng_matmul(prod, dyt, xt, NG_F32, NULL, m, in, R);
        mm_ctx c = {.dst = dw + (size_t)o0 * in, .add = prod, .out = m, .in = in, .scale = scale};
        ng_team_run(threads_for((size_t)m * in, ng_threads()), add_scaled_job, &c);
    }
}

void train_colsum(float *db, const float *dy, int ldy, int N, int out) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) db[o] += dy[(size_t)n * ldy + o];
}
