/* train_ops — the forward and backward kernels of every op the training graph uses, on f32
 * row-major buffers. Forward kernels save what their backward needs (norm statistics,
 * attention probabilities); backward kernels take the forward's inputs and saved values.
 * Accumulation rules: "dx +=" kernels add into dx (residual-stream gradients), "dx =" ones
 * overwrite; parameter gradients (dw, db) always accumulate. Threaded with OpenMP over
 * ng_threads() where the work is large. No kernel allocates. */
#ifndef NG_TRAIN_OPS_H
#define NG_TRAIN_OPS_H

#include "core/dtype.h"

/* LayerNorm over N rows of C: y = (x - mu) * rs * w + b; saves mu, rs (N). */
void train_layernorm_fwd(float *y, float *mu, float *rs, const float *x, const float *w, const float *b, int N, int C,
                         float eps);
/* dx += ..., dw += ..., db += ... (dw, db may be NULL: frozen). */
void train_layernorm_bwd(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                         const float *mu, const float *rs, int N, int C);
/* RMSNorm: y = x * rs * w, rs = 1/sqrt(mean(x^2) + eps); saves rs (N). */
void train_rmsnorm_fwd(float *y, float *rs, const float *x, const float *w, int N, int C, float eps);
void train_rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rs, int N,
                       int C);

/* gelu_new (tanh approximation): y = gelu(x); dx = dy * gelu'(x). */
void train_gelu_fwd(float *y, const float *x, size_t n);
void train_gelu_bwd(float *dx, const float *dy, const float *x, size_t n);
/* SwiGLU: y = silu(g) * u; dg = ..., du = ... (overwrite). */
void train_swiglu_fwd(float *y, const float *g, const float *u, size_t n);
void train_swiglu_bwd(float *dg, float *du, const float *dy, const float *g, const float *u, size_t n);

/* Rotates interleaved pairs of every head of N rows (row n at position n % T) by
 * dir * pos * scale * theta^(-2i/hd): dir +1 is the forward, -1 its backward (the transpose
 * of a rotation is the opposite rotation). Rows have n_heads * hd values. */
void train_rope(float *x, int N, int T, int n_heads, int hd, float theta, float scale, int dir);

/* Causal attention of B sequences of T rows; q (N, H*hd), k, v (N, Hkv*hd); query head h reads
 * KV head h / (H / Hkv). Writes ao (N, H*hd) and the probabilities att (B, H, T, T). */
void train_attention_fwd(float *ao, float *att, const float *q, const float *k, const float *v, int B, int T, int H,
                         int Hkv, int hd);
/* dq, dk, dv = ... (overwrite) from dao. scratch: max_threads * T floats; runs on at most
 * max_threads threads. */
void train_attention_bwd(float *dq, float *dk, float *dv, const float *dao, const float *q, const float *k,
                         const float *v, const float *att, int B, int T, int H, int Hkv, int hd, float *scratch,
                         int max_threads);

/* dx = dy W for W (out, in) of type wt (any type ng_to_f32 converts): dx (N, in), dy (N, out).
 * scratch: train_dx_scratch(N, out) floats (a slice of W transposed to f32, and its product). */
#define TRAIN_DX_COLS 512
static inline size_t train_dx_scratch(size_t N, size_t out) { return (size_t)TRAIN_DX_COLS * (out + N); }
void train_matmul_dx(float *dx, const float *dy, const void *w, ng_type wt, int N, int out, int in, float *scratch);
/* dw += scale * dy^T x: dw (out, in), dy N rows with stride ldy (out of them used), x (N, in).
 * Large products go through a scratch buffer kept between calls: not for concurrent use;
 * train_ops_release frees it. */
void train_matmul_dw(float *dw, const float *dy, int ldy, const float *x, int N, int out, int in, float scale);
void train_ops_release(void);
/* db += column sums of dy (N, out) with row stride ldy. */
void train_colsum(float *db, const float *dy, int ldy, int N, int out);

#endif
