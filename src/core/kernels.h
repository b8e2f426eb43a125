/* kernels — the compute primitives models are built from, each with a readable reference
 * version beside the fast one (tests compare them).
 *
 * Matrices are row-major with rows of K elements of a weight type (f32, f16, bf16; quantized
 * types come later), i.e. a weight W of ggml shape ne = {K, N} stored as N rows.
 * The fast kernels pick AVX-512 / AVX2+FMA+F16C / portable C at run time from CPUID, and split
 * work over the threads set by ng_set_threads (core/team.h's workers). Nothing here allocates
 * per call. */
#ifndef NG_KERNELS_H
#define NG_KERNELS_H

#include "core/dtype.h"

/* CPU features found at run time. */
typedef struct {
    int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni, avx512bf16, amx, avxvnni;
} ng_cpu;
const ng_cpu *ng_cpu_features(void);
/* "avx512" / "avx2" / "portable": which matmul path ng_matmul takes on this machine. */
const char *ng_kernel_path(void);
/* Forces the portable path (for tests and benchmarks); 0 restores the path forced before it by
 * ng_kernel_set_path, or run-time choice. */
void ng_kernel_force_portable(int on);
/* Forces a path by name ("portable", "avx2", "avx512"; NULL restores run-time choice).
 * Returns -1 (and changes nothing) for an unknown name or one this CPU cannot run. */
int ng_kernel_set_path(const char *name);

/* Products of bf16 weights with many activation rows (prefill: the GEMM) use AVX512-BF16's
 * vdpbf16ps where the CPU has it, the activations rounded to bf16 (to nearest even) and the
 * products summed in f32: twice the f32 FMA rate. ng_kernel_set_bf16_dot(0) keeps them f32 (as
 * on other CPUs and in decode); ng_kernel_bf16_dot says whether the bf16 products run now. */
void ng_kernel_set_bf16_dot(int on);
int ng_kernel_bf16_dot(void);
/* Products of q8_0 / q4_0 weights (either order) with 18 or more activation rows run an int8
 * GEMM on AVX-512 VNNI's vpdpbusd, the activations rounded to 8 bits per block of 32 as in the
 * integer GEMV (the same bound, about twice the prompt's speed); on the AVX2 path the same GEMM
 * in 256-bit tiles where the CPU has AVX-VNNI (the same bits), from 32 rows.
 * ng_kernel_set_int8_gemm(0) keeps them on the GEMV; ng_kernel_int8_gemm says whether a product
 * of that many rows against weights of type wt runs on it now. */
void ng_kernel_set_int8_gemm(int on);
int ng_kernel_int8_gemm(ng_type wt, int rows);
/* 1 when a product of `rows` activation rows against weights of type wt runs on integer dot
 * products (the int8 GEMM, or the integer GEMV) on the path the kernels take now. */
int ng_kernel_int8_rows(ng_type wt, int rows);
/* On the AVX2 path, the integer GEMV's u8 x s8 block sums take AVX-VNNI's vpdpbusd (VEX, 256
 * bits: Intel's Alder Lake and later client and Atom cores, AMD Zen 5) where the CPU has it,
 * instead of vpmaddubsw + vpmaddwd + vpaddd: the same exact sums in one instruction.
 * ng_kernel_set_avx_vnni(0) keeps the three; ng_kernel_avx_vnni says whether it runs now. */
void ng_kernel_set_avx_vnni(int on);
int ng_kernel_avx_vnni(void);

/* For tests: the bytes of weights a GEMV thread claims at a time from its share (and takes from
 * another thread's once its own is done); 0 restores the default. ng_kernel_steals counts the
 * blocks (the int8 GEMM's: weight panels) taken from other threads' shares since the program
 * started. */
void ng_kernel_set_steal_bytes(size_t n);
long ng_kernel_steals(void);
/* For tests: quantizes nb blocks of 32 values of x as the integer kernels do (8-bit codes, block
 * scales and sums) by the scalar definition and by this CPU's vector code (AVX-512's and AVX2's,
 * where the CPU has them), and returns how many of the results differ (codes, and each of the
 * per-block arrays); 0 without a vector path. */
int ng_kernel_check_quantize_x(const float *x, int nb);
/* For tests: the calls of ng_matmul_multi that ran as one job since the program started. */
long ng_kernel_multi_jobs(void);

/* Threads used by the kernels; n <= 0 means all cores. */
void ng_set_threads(int n);
int ng_threads(void);

/* y[b*N + n] = sum_k x[b*K + k] * W[n][k] (+ bias[n] when bias is not NULL), b < B, n < N.
 * x, y f32 (not aliased); W rows of type wt; K a multiple of wt's block size. Threaded. */
void ng_matmul(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B, int N, int K);
/* ng_matmul of n matrices against the same x: y[m] = x W[m]^T (+ bias[m] when bias and bias[m]
 * are not NULL), W[m] of N[m] rows of type wt. The same bits as n ng_matmul calls. In decode
 * (B <= 8; f32, f16, bf16 with AVX2 or AVX-512, or q8_0 / q4_0 in kernel order with AVX-512
 * VNNI; n <= 4 and each N[m] a multiple of 16) one parallel job whose threads share all the
 * matrices' rows, x quantized once: a small matrix alone costs a job's start and its threads'
 * uneven finish, as a large one does. Likewise where the int8 GEMM runs (q8_0 / q4_0, 18 rows
 * or more, AVX-512 VNNI): x quantized and packed once, the matrices' panels shared out as one
 * matrix's (TinyLlama 1.1B's q, k, v and gate, up in a 512-token prefill: -4.5%, in-process A/B
 * on one 2-core Zen 5 VM, 5 of 5 rounds faster). Otherwise the n calls. */
void ng_matmul_multi(float *const *y, const float *x, const void *const *w, ng_type wt, const float *const *bias,
                     int n, int B, const int *N, int K);
/* The same computed plainly, one thread, in order: the reference. */
void ng_matmul_ref(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B, int N, int K);
/* The type of wt's values that ng_matmul reads fastest on the path it takes now: q4_0r / q8_0r /
 * q4_kr / q6_kr (see core/quant.h) for q4_0 / q8_0 / q4_k / q6_k where the AVX-512 VNNI kernels
 * run, and on the AVX2 path for q4_0, q4_k and q6_k (q8_0 with AVX-VNNI); wt itself otherwise (so
 * a model made after forcing a path keeps the order that path's kernels read). */
ng_type ng_matmul_native(ng_type wt);
/* 1 when ng_matmul / ng_matmul_ref accept weights of type wt (others end the program). */
int ng_matmul_supported(ng_type wt);

/* Causal attention of G query heads that share one KV head, over n cached positions: for each
 * head g (its d values at q + g * q_stride), p = softmax(scale * q k_t) over t < n, and
 * out + g * o_stride = sum_t p_t v_t. Keys and values are of type kvt: NG_F32, or NG_F16 with
 * d at most NG_ATT_MAX_F16_HEAD. Values are rows (value t at element t * d of v); keys are
 * tiles of NG_ATT_KT positions, element i of key t at ng_key_index(t, i, d), so that one vector
 * holds a dimension of NG_ATT_KT keys and the scores of a tile are a vector's lanes, summed
 * without reductions across lanes. k holds whole tiles: (n + NG_ATT_KT - 1) / NG_ATT_KT * NG_ATT_KT
 * positions (those past n are read, and ignored). scratch holds G * n floats.
 * Single-threaded: callers run heads in parallel. */
#define NG_ATT_MAX_F16_HEAD 512
#define NG_ATT_KT 16
static inline size_t ng_key_index(int t, int i, int d) {
    return ((size_t)(t / NG_ATT_KT) * (size_t)d + (size_t)i) * NG_ATT_KT + (size_t)(t % NG_ATT_KT);
}
/* Stores key t (d floats) into tiled keys k of type kvt. */
void ng_attend_put_key(void *k, ng_type kvt, int t, int d, const float *key);
/* Stores keys t0 .. t0 + n - 1 (key j's d floats at keys + j * stride), the same bytes as n
 * calls of ng_attend_put_key: with AVX-512 and f32 keys, whole tiles as 16 x 16 transposes, a
 * tile row of 16 positions one store (a key alone writes one float to each of d lines). */
void ng_attend_put_keys(void *k, ng_type kvt, int t0, int n, int d, const float *keys, size_t stride);
void ng_attend(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k, const void *v,
               ng_type kvt, int n, int d, float scale, float *scratch);
/* Causal attention of R query rows of one head at consecutive positions n0 .. n0 + R - 1 (a
 * prompt's rows): row r (its d values at q + r * q_stride, its output at out + r * o_stride)
 * attends over positions t <= n0 + r, all of them cached in k and v as for ng_attend.
 * NG_ATT_ROWS rows at a time share each key and value load (a head of a prompt alone loads
 * every key once per row: the loads, not the multiply-adds, set its pace); each row's result is
 * its own positions' (nothing from the later rows' positions reaches it, not even non-finite
 * values). With AVX-512 it is summed in another order than ng_attend's for one head; on the
 * other paths it is the same bits. scratch holds NG_ATT_ROWS * (n0 + R) floats. */
#define NG_ATT_ROWS 8
void ng_attend_rows(float *out, size_t o_stride, const float *q, size_t q_stride, int R, const void *k, const void *v,
                    ng_type kvt, int n0, int d, float scale, float *scratch);

/* A prompt's attention in bf16, for models whose products round their activations to 8 bits
 * already (the int8 GEMM: q8_0, q4_0 and the k-quants with AVX-512 VNNI): with AVX512-BF16,
 * vdpbf16ps at twice the f32 FMA rate. ng_attend_pack_bf16 rounds one head's cached keys and
 * values over positions 0 .. n - 1 (of type kvt, laid out as for ng_attend) to bf16, to nearest
 * even: the keys into k16 (ng_attend_bf16_keys(n, d) elements: each key tile's dimensions in
 * pairs, 16 lanes of two), the values into v16 (ng_attend_bf16_values(n, d): positions in pairs,
 * each value dimension a lane of two, a last odd position paired with zeros). ng_attend_rows_bf16
 * is ng_attend_rows over them (n0 + R <= n): each query rounded to bf16, its scores as sums of
 * bf16 products in f32, the softmax in f32 (as ng_attend_rows'), its numerators rounded to bf16
 * for the sum of the values, which is divided by the f32 sum. d: a multiple of 16; the vector
 * kernel takes 64 and 128 (ng_kernel_bf16_attention says whether it runs now: the CPU has
 * AVX512-BF16, the AVX-512 path runs, and ng_kernel_set_bf16_attention(1) has turned it on),
 * other sizes and CPUs the same in plain C. Off by default: rounding the queries and keys to 8
 * bits of mantissa moves each score by up to ~0.4% of the sum of its terms' sizes, which large
 * scores turn into large changes of the softmax (the random-weight LLaMA 7B shape's last logits moved
 * by 1.46, largest 7.2, where the int8 GEMM against the integer GEMV moves them by less). */
void ng_kernel_set_bf16_attention(int on);
int ng_kernel_bf16_attention(int d);
size_t ng_attend_bf16_keys(int n, int d);
size_t ng_attend_bf16_values(int n, int d);
void ng_attend_pack_bf16(ng_bf16 *k16, ng_bf16 *v16, const void *k, const void *v, ng_type kvt, int n, int d);
void ng_attend_rows_bf16(float *out, size_t o_stride, const float *q, size_t q_stride, int R,
                         const ng_bf16 *k16, const ng_bf16 *v16, int n0, int d, float scale, float *scratch);
/* ng_attend over them: G <= NG_ATT_ROWS heads (a group sharing a KV head) over positions 0 .. n - 1. */
void ng_attend_bf16(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const ng_bf16 *k16,
                    const ng_bf16 *v16, int n, int d, float scale, float *scratch);

/* core/vmath.h's ng_gelu and ng_silu_mul at the widest vectors this CPU runs; the same bits. */
void ng_act_gelu(float *y, const float *x, size_t n);
void ng_act_silu_mul(float *y, const float *g, const float *u, size_t n);
/* vmath's ng_dot and ng_add_combination (y += sum_r c[r] rows[r]) at this machine's vector
 * width; the same bits on every path. */
float ng_act_dot(const float *a, const float *b, size_t n);
/* vmath's ng_layernorm and ng_rmsnorm (a row's norm: its sums in 64 lanes) at this machine's
 * vector width; the same bits on every path. */
void ng_act_layernorm(float *out, const float *x, const float *w, const float *b, size_t n, float eps);
void ng_act_rmsnorm(float *out, const float *x, const float *w, size_t n, float eps);
void ng_act_add_combination(float *y, const float *rows, size_t ld, const float *c, int m, size_t n);
/* vmath's ng_max (the largest value, NaNs passed over) at this machine's vector width. */
float ng_act_max(const float *x, size_t n);
/* vmath's ng_exp_sum (a softmax's numerators and denominator) at this machine's vector width. */
double ng_act_exp_sum(float *y, const float *x, size_t n, float mx, float scale);

/* Measured limits of this machine, for benchmarks: sustained memory-read bandwidth in bytes/s
 * using `threads` threads over a buffer much larger than the caches, and peak f32 FMA
 * throughput in FLOP/s with the vectors of the path the kernels take now. */
double ng_measure_read_bandwidth(int threads);
double ng_measure_peak_flops(int threads);
/* The same for AVX512-BF16's vdpbf16ps (2 FLOPs per pair of bf16 products), which the bf16
 * GEMM runs on; 0 where the CPU does not have it. */
double ng_measure_peak_bf16_flops(int threads);
/* The same for the integer dot products of the path the kernels take now: AVX-512 VNNI's
 * vpdpbusd (64 u8 x s8 multiply-adds, 128 integer operations an instruction), which the int8
 * GEMM runs on; on the AVX2 path AVX-VNNI's (32 a 256-bit instruction), or else vpmaddubsw +
 * vpmaddwd + vpaddd (32 for the three); 0 where there are none (portable, AVX-512 without VNNI). */
double ng_measure_peak_int8_ops(int threads);

#endif
