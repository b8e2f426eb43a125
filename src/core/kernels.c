/* kernels — matmul (reference, portable, AVX2 and AVX-512 paths), threads, machine limits.
 *
 * The project is built without -march flags, so the SIMD code lives in functions compiled
 * with __attribute__((target(...))) and is chosen at run time from CPUID (ng_cpu_features).
 *
 * ng_matmul has two regimes:
 *  - GEMV (B <= GEMV_MAX_B): memory-bound decode. Each thread takes a contiguous run of
 *    weight rows and walks it as R (2-4) interleaved sub-runs, so R read streams are in flight;
 *    every weight vector is read once for all B activation rows, f16/bf16 are converted in
 *    registers, and each output has its own accumulators (several per output when B is small).
 *  - GEMM (larger B): compute-bound prefill. The activations are transposed once per call into
 *    XT (blocks of BW rows, layout [k][BW]) so a vector load gives one k for BW activation
 *    rows; a block of NR weight rows is converted to f32 once per thread and K chunk into a
 *    small scratch P (layout: chunks of KCH k's, [chunk][NR][KCH]) and reused for every
 *    activation block. The micro-kernel keeps NR x BW sums in registers and does one
 *    broadcast-FMA per (weight row, vector) per k. bf16 weights where the CPU has AVX512-BF16:
 *    the same blocks with pairs of k, the activations rounded to bf16 (vdpbf16ps, ISA512BF).
 *    q8_0, q4_0, q4_k and q6_k with AVX-512 VNNI: an int8 GEMM (qmicro) on activations quantized to 8
 *    bits, as in the integer GEMV (the other quantized types run that GEMV for any batch there);
 *    on the AVX2 path with AVX-VNNI the same GEMM in 256-bit tiles (qmicro256) for q8_0 and
 *    q4_0, from more rows.
 * Each output is computed by exactly one thread in an order that does not depend on the
 * thread count, so results are identical for any number of threads.
 *
 * Adding a weight type: give it a row-dot and a row-to-f32 function in TYPE_OPS (the
 * reference and the portable path then work); the SIMD paths fall back to portable for types
 * they do not know (simd_type) until they get a kernel of their own. */
#include "core/kernels.h"

#include "core/quant.h"
#include "core/team.h"
#include "core/util.h"

#include "core/vmath.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- CPU features ---- */

static ng_cpu g_cpu;
static int g_cpu_done;

#if defined(__x86_64__)
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect_x86(ng_cpu *c) {
    unsigned a, b, cx, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &cx, &d)) return;
    /* The OS must save the wide registers on context switch (XCR0), or using them corrupts
     * other processes' state: AVX needs XMM+YMM (bits 1,2), AVX-512 also opmask+ZMM (5,6,7). */
    int osxsave = (cx >> 27) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
    int os_amx = (xcr0 & 0x60000) == 0x60000;
    int avx = os_avx && ((cx >> 28) & 1);
    c->fma = avx && ((cx >> 12) & 1);
    c->f16c = avx && ((cx >> 29) & 1);
    if (!__get_cpuid_count(7, 0, &a, &b, &cx, &d)) return;
    c->avx2 = avx && ((b >> 5) & 1);
    c->avx512f = os_avx512 && ((b >> 16) & 1);
    c->avx512bw = c->avx512f && ((b >> 30) & 1);
    c->avx512vl = c->avx512f && ((b >> 31) & 1);
    c->avx512vnni = c->avx512f && ((cx >> 11) & 1);
    c->amx = os_amx && ((d >> 24) & 1);
    unsigned max7 = a;
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d)) {
        c->avx512bf16 = c->avx512f && ((a >> 5) & 1);
        c->avxvnni = c->avx2 && ((a >> 4) & 1);
    }
}
#endif

const ng_cpu *ng_cpu_features(void) {
    if (!g_cpu_done) {
        ng_cpu c;
        memset(&c, 0, sizeof c);
#if defined(__x86_64__)
        detect_x86(&c);
#endif
        g_cpu = c;
        g_cpu_done = 1;
    }
    return &g_cpu;
}

/* ---- path selection and threads ---- */

enum { PATH_PORTABLE, PATH_AVX2, PATH_AVX512 };
static const char *const PATH_NAMES[] = {"portable", "avx2", "avx512"};
static int g_forced_path = -1;

static int best_path(void) {
    const ng_cpu *c = ng_cpu_features();
    if (c->avx512f && c->avx512bw && c->avx512vl && c->f16c && c->fma) return PATH_AVX512;
    if (c->avx2 && c->fma && c->f16c) return PATH_AVX2;
    return PATH_PORTABLE;
}

static int current_path(void) { return g_forced_path >= 0 ? g_forced_path : best_path(); }

const char *ng_kernel_path(void) { return PATH_NAMES[current_path()]; }

/* The forced path (or -1) that ng_kernel_force_portable(0) restores, while force_portable holds. */
static int g_unforced_path = -1, g_portable_held;

void ng_kernel_force_portable(int on) {
    if (on && !g_portable_held) g_unforced_path = g_forced_path;
    g_forced_path = on ? PATH_PORTABLE : g_portable_held ? g_unforced_path : -1;
    g_portable_held = on != 0;
}

int ng_kernel_set_path(const char *name) {
    g_portable_held = 0;
    if (!name) {
        g_forced_path = -1;
        return 0;
    }
    for (int p = 0; p <= PATH_AVX512; p++) {
        if (strcmp(name, PATH_NAMES[p]) == 0) {
            if (p > best_path()) return -1;
            g_forced_path = p;
            return 0;
        }
    }
    return -1;
}

static int g_threads;

void ng_set_threads(int n) { g_threads = n > 0 ? n : omp_get_num_procs(); }

int ng_threads(void) {
    if (g_threads <= 0) g_threads = omp_get_num_procs();
    return g_threads;
}

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define PARALLEL_MIN_MACS (1 << 15)

static int threads_for(double macs) { return macs < PARALLEL_MIN_MACS ? 1 : ng_threads(); }

/* Thread-local scratch, grown on demand and kept: no allocation per call once warm. */
static _Thread_local float *tl_scratch, *tl_xt;
static _Thread_local size_t tl_scratch_cap, tl_xt_cap;

/* A thread's scratch buffers are freed when the thread exits (a server's scheduler thread and
 * its OpenMP team come and go): each buffer registers on its first growth, and a pthread key's
 * destructor frees the registered ones. */
static _Thread_local float **tl_owned[8];
static _Thread_local int tl_n_owned;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_release(void *unused) {
    (void)unused;
    for (int i = 0; i < tl_n_owned; i++) {
        free(*tl_owned[i]);
        *tl_owned[i] = NULL;
    }
    tl_n_owned = 0;
}

static void tl_make_key(void) { pthread_key_create(&tl_key, tl_release); }

static float *grow(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        if (!*buf && tl_n_owned < (int)(sizeof tl_owned / sizeof tl_owned[0])) {
            pthread_once(&tl_once, tl_make_key);
            pthread_setspecific(tl_key, (void *)1);
            tl_owned[tl_n_owned++] = buf;
        }
        free(*buf);
        *buf = ng_aligned_alloc(n * sizeof(float));
        *cap = n;
    }
    return *buf;
}

/* ---- per-type row functions (reference and portable) ---- */

static float dot_f32(const void *w, const float *x, int K) {
    const float *r = w;
    float s = 0;
    for (int k = 0; k < K; k++) s += x[k] * r[k];
    return s;
}

static float dot_f16(const void *w, const float *x, int K) {
    const ng_f16 *r = w;
    float s = 0;
    for (int k = 0; k < K; k++) s += x[k] * ng_f16_to_f32(r[k]);
    return s;
}

static float dot_bf16(const void *w, const float *x, int K) {
    const ng_bf16 *r = w;
    float s = 0;
    for (int k = 0; k < K; k++) s += x[k] * ng_bf16_to_f32(r[k]);
    return s;
}

/* Block-quantized rows: each block is dequantized (quant.c, the definition of the format) and
 * dotted in index order, so the reference is exactly "dequantize the row, then an f32 dot". */
static float dot_quant(ng_type wt, const void *w, const float *x, int K) {
    float v[256];
    int qk = ng_type_block(wt);
    size_t bs = ng_type_size(wt);
    float s = 0;
    for (int k0 = 0; k0 < K; k0 += qk) {
        ng_dequantize_row(wt, (const char *)w + (size_t)(k0 / qk) * bs, v, qk);
        for (int j = 0; j < qk; j++) s += x[k0 + j] * v[j];
    }
    return s;
}

static float dot_plain(ng_type wt, const void *w, const float *x, int K) {
    return wt == NG_F32 ? dot_f32(w, x, K) : wt == NG_F16 ? dot_f16(w, x, K) : dot_bf16(w, x, K);
}

static void row_f32(ng_type wt, float *dst, const void *w, int K) {
    if (wt == NG_F32)
        memcpy(dst, w, (size_t)K * sizeof(float));
    else
        ng_dequantize_row(wt, w, dst, K);
}

typedef struct {
    float (*dot)(ng_type wt, const void *w, const float *x, int K); /* in index order: the reference */
    void (*to_f32)(ng_type wt, float *dst, const void *w, int K);
} type_ops;

static const type_ops TYPE_OPS[NG_TYPE_COUNT] = {
    [NG_F32] = {dot_plain, row_f32},   [NG_F16] = {dot_plain, row_f32},   [NG_BF16] = {dot_plain, row_f32},
    [NG_Q8_0] = {dot_quant, row_f32},  [NG_Q4_0] = {dot_quant, row_f32},  [NG_Q4_1] = {dot_quant, row_f32},
    [NG_Q5_0] = {dot_quant, row_f32},  [NG_Q5_1] = {dot_quant, row_f32},  [NG_Q4_K] = {dot_quant, row_f32},
    [NG_Q5_K] = {dot_quant, row_f32},  [NG_Q6_K] = {dot_quant, row_f32},  [NG_Q4_0R] = {dot_quant, row_f32},
    [NG_Q4_KR] = {dot_quant, row_f32}, [NG_Q6_KR] = {dot_quant, row_f32}, [NG_Q8_0R] = {dot_quant, row_f32},
};

int ng_matmul_supported(ng_type wt) { return wt >= 0 && wt < NG_TYPE_COUNT && TYPE_OPS[wt].dot != NULL; }

static const type_ops *ops_for(ng_type wt) {
    if (!ng_matmul_supported(wt)) ng_die("matmul: weight type %s is not supported", ng_type_name(wt));
    return &TYPE_OPS[wt];
}

void ng_matmul_ref(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B, int N,
                   int K) {
    const type_ops *ops = ops_for(wt);
    size_t rs = ng_row_size(wt, K);
    for (int b = 0; b < B; b++) {
        for (int n = 0; n < N; n++) {
            float s = ops->dot(wt, (const char *)w + (size_t)n * rs, x + (size_t)b * K, K);
            y[(size_t)b * N + n] = bias ? s + bias[n] : s;
        }
    }
}

/* ---- portable path: rows converted once to f32, then dotted with every activation row ---- */

/* Eight partial sums so the compiler can keep several adds in flight (and vectorize). */
static float dot8(const float *a, const float *b, int K) {
    float s[8] = {0};
    int k = 0;
    for (; k + 8 <= K; k += 8)
        for (int i = 0; i < 8; i++) s[i] += a[k + i] * b[k + i];
    for (; k < K; k++) s[0] += a[k] * b[k];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* The GEMVs' share counters (see steps_src) for up to STEAL_THREADS threads (more threads split
 * their rows statically), one per thread and matrix (see mm_multi). */
#define STEAL_THREADS 64
#define MM_MAX 4
static _Thread_local ng_team_ctr tl_ctr[STEAL_THREADS * MM_MAX];

/* The calling thread's counters, zeroed for a job of nt threads over nmat matrices; NULL when
 * nt is 1 or too many. */
static ng_team_ctr *steps_ctrs(int nt, int nmat) {
    if (nt <= 1 || nt > STEAL_THREADS) return NULL;
    for (int t = 0; t < nt * nmat; t++) atomic_store_explicit(&tl_ctr[t].next, 0, memory_order_relaxed);
    return tl_ctr;
}

/* Several matrices against the same activations in one job (ng_matmul_multi): their rows side by
 * side as one row space of row0[n] rows, matrix m's from row0[m]. */
typedef struct {
    int n;
    float *y[MM_MAX];
    const void *w[MM_MAX];
    const float *bias[MM_MAX];
    int N[MM_MAX], row0[MM_MAX + 1];
} mm_multi;

/* One matmul call as a team job (core/team.h): the operands, and what each regime prepares
 * before its threads start. */
typedef struct {
    float *y;
    const float *x, *bias;
    const void *w;
    ng_type wt;
    int B, N, K, path;
    size_t rs;
    const struct simd_isa *isa;
    float *XT;                       /* gemm: the transposed activations */
    int Kp, KC, nchunks, bblk;       /* gemm */
    int64_t items;                   /* gemm */
    int groups;                      /* gemv, qgemv: 16-row groups of outputs */
    struct xq8 *xq;                  /* qgemv */
    uint8_t *xs;                     /* qgemv, 512-bit: the arranged activations */
    size_t xb;                       /* qgemv */
    int wide, shared, pass;          /* qgemv */
    ng_team_ctr *ctr;                /* gemv, qgemv: one step counter per thread (and matrix), or NULL */
    const mm_multi *multi;           /* gemv, qgemv: the matrices, when there are several */
    _Atomic int *ready;              /* qgemv, one row: set once thread 0 has prepared it, or NULL */
} mm_job;

/* Rows [n0, n1) of t's share of N rows cut into whole groups of 16 (threads never write the
 * same cache line of y). */
static void group_share(int groups, int N, int t, int T, int *n0, int *n1) {
    *n0 = (int)((int64_t)groups * t / T) * 16;
    *n1 = (int)((int64_t)groups * (t + 1) / T) * 16;
    if (*n1 > N) *n1 = N;
}

static void portable_job(void *ctx, int t, int T) {
    const mm_job *j = ctx;
    const type_ops *ops = ops_for(j->wt);
    int N = j->N, K = j->K;
    int n0 = (int)((int64_t)N * t / T), n1 = (int)((int64_t)N * (t + 1) / T);
    float *row = j->wt == NG_F32 ? NULL : grow(&tl_scratch, &tl_scratch_cap, (size_t)K + 1);
    for (int n = n0; n < n1; n++) {
        const void *wr = (const char *)j->w + (size_t)n * j->rs;
        const float *r = wr;
        if (row) {
            ops->to_f32(j->wt, row, wr, K);
            r = row;
        }
        for (int b = 0; b < j->B; b++) {
            float s = dot8(r, j->x + (size_t)b * K, K);
            j->y[(size_t)b * N + n] = j->bias ? s + j->bias[n] : s;
        }
    }
}

static void matmul_portable(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B,
                            int N, int K, int nt) {
    mm_job j = {.y = y, .x = x, .bias = bias, .w = w, .wt = wt, .B = B, .N = N, .K = K, .rs = ng_row_size(wt, K)};
    ng_team_run(nt, portable_job, &j);
}

/* ---- activations quantized to 8 bits (for the quantized-weight kernels) ---- */

/* Activation rows in blocks of 32, x_k ~ d * q_k with d = max|x| / 127 over the block (ggml's
 * q8_0 with an f32 scale). The block sums let a kernel apply a weight format's offset (q4_0's
 * -8, q6_k's -32, q4_k's minimum) once per block instead of once per value. Row b's entries
 * start at b * K (q), b * K/32 (d, s, ds) and b * K/16 (ds16). */
typedef struct xq8 {
    int8_t *q;   /* [B][K] */
    float *d;    /* [B][K/32] scale */
    int32_t *s;  /* [B][K/32] sum of q over the block */
    float *ds;   /* [B][K/32] d * s */
    float *ds16; /* [B][K/16] d * (sum of q over each half block) */
} xq8;

#if defined(__x86_64__) /* the integer kernels' activations (the portable path has none) */
static _Thread_local float *tl_xq;
static _Thread_local size_t tl_xq_cap;

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 leaves no fraction bits. */
static float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

/* Scratch (the calling thread's) for B rows of K activations, K a multiple of 32. */
static xq8 xq8_alloc(int B, int K) {
    size_t n = (size_t)B * K, nb = n / 32;
    /* q first (64-byte aligned, a multiple of 32 bytes), then the per-block arrays */
    float *buf = grow(&tl_xq, &tl_xq_cap, n / 4 + nb * 5 + 16);
    xq8 xq = {(int8_t *)buf, buf + n / 4, (int32_t *)(buf + n / 4 + nb), buf + n / 4 + nb * 2, buf + n / 4 + nb * 3};
    return xq;
}

/* Block i's scale and sums, from its amax, NaN flag and half sums. */
static void xq8_sums(xq8 *xq, size_t i, float amax, int nan, int h0, int h1) {
    /* a NaN or infinity gives the block the scale NaN or infinity, so it reaches y */
    float d = nan ? NAN : amax / 127.0f;
    xq->d[i] = d;
    xq->s[i] = h0 + h1;
    xq->ds[i] = d * (float)(h0 + h1);
    xq->ds16[2 * i] = d * (float)h0;
    xq->ds16[2 * i + 1] = d * (float)h1;
}

/* Quantizes the nb blocks of 32 values at x into xq (the definition; quantize_x512 is the same
 * bit for bit). */
static void quantize_x(xq8 *xq, const float *x, size_t nb) {
    for (size_t i = 0; i < nb; i++) {
        const float *v = x + i * 32;
        float amax = 0;
        int nan = 0;
        for (int j = 0; j < 32; j++) {
            amax = fabsf(v[j]) > amax ? fabsf(v[j]) : amax;
            nan |= v[j] != v[j];
        }
        float id = amax > 0 && amax <= FLT_MAX ? 127.0f / amax : 0.0f;
        int8_t *q = xq->q + i * 32;
        int h[2] = {0, 0};
        for (int j = 0; j < 32; j++) {
            float t = v[j] * id; /* |t| <= 127 up to rounding; NaN when v[j] is */
            int qv = t >= 127 ? 127 : t <= -127 ? -127 : t == t ? (int)round_even(t) : 0;
            q[j] = (int8_t)qv;
            h[j >> 4] += qv;
        }
        xq8_sums(xq, i, amax, nan, h[0], h[1]);
    }
}
#endif

/* ---- SIMD paths ---- */

#define GEMV_MAX_B 8
/* Quantized weights: batches up to this many rows take the integer GEMV (in groups of
 * GEMV_MAX_B; see matmul_qgemv), larger ones the f32 GEMM, except with AVX-512 VNNI, whose
 * integer kernels beat the GEMM at any batch (on one Zen 5 machine: 2.5x at 128 rows of q8_0;
 * q4_k and q6_k 1.2-1.35x at 512 rows of TinyLlama's matrices, but about even on its down
 * projection). */
#define QGEMV_MAX_B 64
/* q8_0 and q4_0 (either order) with AVX-512 VNNI: batches from this many rows take the int8
 * GEMM (qmicro), smaller ones the GEMV, whose weight rows need no packing. On one 2-core Zen 5
 * VM, N = K = 2048, GEMM / GEMV speed: 12 rows 0.91 (q4_0) / 0.96 (q8_0), 16 rows 0.99 / 1.01,
 * 20 rows 1.07 / 1.13, 24 rows 1.28 / 1.28; 512 rows about 2. */
#define QGEMM_MIN_B 18
/* The same on the AVX2 path (with AVX-VNNI), where the GEMM's 256-bit tiles are smaller and its
 * weight panels cost relatively more to pack. On one 2-core Zen 5 VM with the AVX2 kernels
 * forced, GEMM / GEMV speed, q4_0r at N = K = 2048: 20 rows 0.88, 24 0.99, 32 1.06, 48 1.14, 512
 * 1.46; at GPT-2's 2304 x 768: 24 rows 1.07, 32 1.13, 512 1.69; q8_0r at 2048 x 2048: 24 rows
 * 0.96, 32 1.03, 64 1.21, 512 1.45; at 2304 x 768: 24 rows 1.01, 32 1.08, 512 1.60. */
#define QGEMM256_MIN_B 32
/* Bytes ahead in each weight stream that the GEMV prefetches: the hardware prefetcher alone
 * leaves a few % of the read bandwidth unused at one thread on Zen 5. */
#define GEMV_PREFETCH 2048
/* The same for q8_0 in kernel order, one or two activation rows (four streams, three prefetches a
 * 136-byte step): in-process A/B of TinyLlama 1.1B q8_0 decode on one 2-core Zen 5 VM (rounds of
 * 8 steps), against 2048: -4% (faster in 14 of 20 rounds), -7% (17 of 20), -9% (17 of 20); 1536
 * -3.6%; TinyLlama's layer products back to back 63-65 -> 69 GB/s (768: 67, 896: 69, 1280: 68).
 * GPT-2 124M q8_0 within the noise (-3%, +2%); q4_0 slower with 1024 (+5%) or 2560 (+2%). */
#define GEMV_PREFETCH_Q8 1024
/* The same for the f32 / f16 / bf16 GEMV. In-process A/B of GPT-2 124M f16 decode on one 2-core
 * Zen 5 VM (30 rounds each): 1024 bytes ahead against 2048, steps 4438 vs 4747 us (faster in 23
 * of 30); 768 and 1280 as 1024. (The integer kernels: 1536 as 2048, 1024 slower.) */
#define GEMV_PREFETCH_F 1024

/* Prefetches the first pf bytes of each of R read streams (stream r starts at row n0 + r *
 * len), pf being the distance the kernel prefetches ahead along them: a stream's loads are
 * otherwise demand misses, one latency at a time, until those prefetches arrive. A job of a few
 * hundred KB per thread runs several such starts; issued together, they overlap. */
static inline void prefetch_streams(const void *w, size_t rs, int n0, int len, int R, size_t pf) {
    for (int r = 0; r < R; r++) {
        const char *p = (const char *)w + (size_t)(n0 + r * len) * rs;
        for (size_t o = 0; o < pf; o += 64) __builtin_prefetch(p + o, 0, 3);
    }
}

/* Where a GEMV kernel finds the steps of a thread's share (a step: R rows side by side, or one
 * row). Without a counter it walks them all in order. With one, it takes them in blocks from the
 * counter, and once a thread is done with its own share it takes the blocks the other threads
 * have not yet reached: the cores of a machine do not read memory equally fast from minute to
 * minute (in decode on one 2-core Zen 5 VM, one thread's matmul shares took 5-25% longer than
 * the other's, in either direction), and a static split waits for the slower one every job.
 * Whichever thread computes a row, it is computed the same way, so results do not depend on it.
 * own: the share is the calling thread's (it also does the rows left over and starts the
 * prefetches). */
typedef struct {
    _Atomic int *ctr;
    int own;
} steps_src;

/* A piece of a share that lies in one matrix: its rows n0..n1-1 of that matrix's N, and where
 * its steps come from. */
typedef struct {
    float *y;
    const void *w;
    const float *bias;
    int N, n0, n1;
    steps_src st;
} mm_seg;

/* Share v of thread t's walk over a GEMV's rows: its own share (v = 0), then, with counters
 * (v < T), the next threads' shares, whose blocks it takes once its own are done. Sets the
 * share's pieces, one per matrix its rows touch (one matrix, or those of j->multi, each with its
 * own counter); returns how many. */
static int share_walk(const mm_job *j, int t, int T, int v, mm_seg *seg) {
    const mm_multi *mm = j->multi;
    int u = (t + v) % T, n0, n1;
    group_share(j->groups, j->N, u, T, &n0, &n1);
    if (!mm) {
        seg[0] = (mm_seg){j->y, j->w, j->bias, j->N, n0, n1, {j->ctr ? &j->ctr[u].next : NULL, v == 0}};
        return n0 < n1;
    }
    int k = 0;
    for (int m = 0; m < mm->n; m++) {
        int a = n0 > mm->row0[m] ? n0 : mm->row0[m], b = n1 < mm->row0[m + 1] ? n1 : mm->row0[m + 1];
        if (a >= b) continue;
        steps_src st = {j->ctr ? &j->ctr[(size_t)u * mm->n + m].next : NULL, v == 0};
        seg[k++] = (mm_seg){mm->y[m], mm->w[m], mm->bias[m], mm->N[m], a - mm->row0[m], b - mm->row0[m], st};
    }
    return k;
}

/* Steps claimed at a time: about STEAL_BYTES of weights. Each claim is a locked add, which on
 * x86 waits for the loads before it: claims of 16 KB made decode 10% slower than the static
 * split, 256 KB ones made it faster (in-process A/B on one 2-core Zen 5 VM, a decode step:
 * GPT-2 124M q8_0 / f16 -12% / -10% while the machine's bandwidth swung, -2% / -1% in a quiet
 * hour; TinyLlama q4_0 -4..-9%), 64 KB and 1 MB less so, and claims shrinking towards the end
 * of a share (down to 32 KB) no better. */
#define STEAL_BYTES (256 << 10)
static size_t steal_bytes = STEAL_BYTES;
static _Atomic long steals; /* blocks taken from other threads' shares */

void ng_kernel_set_steal_bytes(size_t n) { steal_bytes = n ? n : STEAL_BYTES; }
long ng_kernel_steals(void) { return atomic_load(&steals); }

/* Walks the blocks of a share of len steps: for (it = steps_begin(..); steps_next(&it);)
 * runs steps it.i0..it.i1-1 of each. */
typedef struct {
    _Atomic int *ctr;
    int own, len, i0, i1, blk;
} steps_it;

static inline steps_it steps_begin(steps_src st, int len, size_t step_bytes) {
    size_t blk = steal_bytes / (step_bytes ? step_bytes : 1);
    steps_it it = {st.ctr, st.own, len, 0, st.ctr ? 0 : -1, blk < 1 ? 1 : blk > INT_MAX ? INT_MAX : (int)blk};
    return it;
}

static inline int steps_next(steps_it *it) {
    if (!it->ctr) { /* all steps, once */
        if (it->i1 == it->len) return 0;
        it->i0 = 0, it->i1 = it->len;
        return it->len > 0;
    }
    int i0 = atomic_fetch_add_explicit(it->ctr, it->blk, memory_order_relaxed);
    if (i0 >= it->len) return 0;
    if (!it->own) atomic_fetch_add_explicit(&steals, 1, memory_order_relaxed);
    it->i0 = i0, it->i1 = it->len - i0 < it->blk ? it->len : i0 + it->blk;
    return 1;
}

#if defined(__x86_64__) /* the GEMMs' (the portable path has none) */
/* Transposes activation rows b0..b0+bn-1 into one XT block [Kp][bw], zero-padded in both k
 * (up to Kp) and b (up to bw), so the micro-kernel never needs a tail. k-outer order makes the
 * stores contiguous; the bn source rows are read as bn short sequential streams. */
static void pack_x(float *dst, const float *x, int b0, int bn, int K, int Kp, int bw) {
    const float *src = x + (size_t)b0 * K;
    for (int k = 0; k < Kp; k++) {
        float *d = dst + (size_t)k * bw;
        int j = 0;
        if (k < K)
            for (; j < bn; j++) d[j] = src[(size_t)j * K + k];
        for (; j < bw; j++) d[j] = 0;
    }
}
#endif

/* The GEMM's next weight block, fetched while the current one's products run (the micro-kernel
 * issues a prefetch per step): rows of seg bytes, rs apart, from p; rows left to fetch and the
 * offset reached in the current one. */
typedef struct {
    const char *p;
    size_t rs, off, seg;
    int rows;
} gemm_pf;

/* One prefetch of pf's next line, if any is left, into L2: fetched into L1, the first lines were
 * gone again by the time the block was packed, pushed out by the activations the products stream
 * through L1. In-process A/B of GPT-2 124M prefills of 128 tokens (one 2-core Zen 5 VM, 16
 * alternating rounds), L1 -> L2: q4_0 40.6 -> 40.2 and 35.1 -> 34.6 ms, q8_0 41.0 -> 40.1 and
 * 38.1 -> 36.7, f16 82.3 -> 81.7, bf16 48.6 -> 48.8; TinyLlama 1.1B q4_0, 512 tokens: 1173 ->
 * 1150 ms. */
static inline __attribute__((always_inline)) void gemm_pf_step(gemm_pf *pf) {
    if (pf->rows <= 0) return;
    __builtin_prefetch(pf->p + pf->off, 0, 2);
    if ((pf->off += 64) >= pf->seg) pf->off = 0, pf->p += pf->rs, pf->rows--;
}

typedef struct simd_isa {
    int nr, bw, kch; /* weight rows, activation rows and k's per micro-kernel block */
    int xk;          /* k's per float-sized slot of XT: 1, or 2 where XT holds pairs of bf16 */
    void (*pack_x)(float *dst, const float *x, int b0, int bn, int K, int Kp, int bw);
    void (*gemv)(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias, int B,
                 int N, int K, int n0, int n1, steps_src st);
    void (*pack_w)(float *P, const void *w, size_t rs, ng_type wt, int nr, int K);
    void (*micro)(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0, int nr,
                  int b0, int bn, int N, int first, gemm_pf *pf);
} simd_isa;

static int simd_type(ng_type wt) { return wt == NG_F32 || wt == NG_F16 || wt == NG_BF16; }

/* Types with an integer GEMV kernel (the rest of the quantized types take the portable GEMV). */
/* q4_kr and q6_kr: kernel orders whose GEMVs (AVX-512 VNNI, AVX2) read xq8 and arranged rows. */
static int kr_type(ng_type wt) { return wt == NG_Q4_KR || wt == NG_Q6_KR; }
static int qgemv_type_ok(ng_type wt) { return wt == NG_Q8_0 || wt == NG_Q4_0 || wt == NG_Q4_K || wt == NG_Q6_K; }

/* The GEMM packs quantized weights by dequantizing the nr rows of the K chunk (to f32, in the
 * thread's scratch) first: prefill then runs the f32 micro-kernel on exactly the values of the
 * reference, and the dequantization is paid once per weight block for all activation blocks. */
static _Thread_local float *tl_deq;
static _Thread_local size_t tl_deq_cap;

static inline const float *dequant_rows(const void *w, size_t rs, ng_type wt, int nr, int K) {
    float *d = grow(&tl_deq, &tl_deq_cap, (size_t)nr * K + 1);
    for (int n = 0; n < nr; n++) ng_dequantize_row(wt, (const char *)w + (size_t)n * rs, d + (size_t)n * K, K);
    return d;
}

#if defined(__x86_64__)

/* Moves a micro-kernel's output tile ([nr][bw], k sums per weight row i and activation row j)
 * from / to y, one row of y at a time: rows of y are N floats apart and for some N (3072) they
 * all fall into one L1 set, so touching each y line once per tile instead of once per weight
 * row matters (2x on the whole GEMM). */
static void tile_load(float *tile, const float *y, int N, int n0, int nr, int b0, int bn, int bw) {
    for (int j = 0; j < bn; j++)
        for (int i = 0; i < nr; i++) tile[i * bw + j] = y[(size_t)(b0 + j) * N + n0 + i];
}

static void tile_store(float *y, const float *tile, const float *bias, int N, int n0, int nr, int b0, int bn,
                       int bw) {
    for (int j = 0; j < bn; j++) {
        float *yr = y + (size_t)(b0 + j) * N + n0;
        if (bias)
            for (int i = 0; i < nr; i++) yr[i] = tile[i * bw + j] + bias[n0 + i];
        else
            for (int i = 0; i < nr; i++) yr[i] = tile[i * bw + j];
    }
}

/* -- AVX-512 -- */
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define INL512 static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,f16c,fma")))

/* 16 weights at element k of row w, as f32. wt is a constant after inlining. */
INL512 __m512 ld16(const void *w, ng_type wt, int k) {
    if (wt == NG_F32) return _mm512_loadu_ps((const float *)w + k);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
    if (wt == NG_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16: high half of f32 */
}

/* The same for the first lanes set in m; the rest are 0 and nothing past them is read. */
INL512 __m512 ld16_mask(const void *w, ng_type wt, int k, __mmask16 m) {
    if (wt == NG_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + k);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
    if (wt == NG_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Lane b of the result: v[b]'s 16 lanes combined, by the f32 max (fmax) or the int32 sum, for
 * 16 vectors at once: each level of the tree combines pairs of vectors, halving the lanes each
 * vector's partial covers (256-bit halves, 128-bit quarters, pairs, lanes), and a last permute
 * puts block b in lane b. Neither a max nor an integer sum depends on the order. */
INL512 __m512i comb16(__m512i a, __m512i b, const int fmax) {
    return fmax ? _mm512_castps_si512(_mm512_max_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)))
                : _mm512_add_epi32(a, b);
}

/* (a macro: the shuffle's pattern must be a constant for every compiler) */
#define shuf_ps(a, b, imm) _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), imm))

INL512 __m512i reduce16x16(const __m512i *v, const int fmax) {
    __m512i w[8], u[4], s[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* lanes 0-7: v[2i]'s, 8-15: v[2i+1]'s */
        w[i] = comb16(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x44),
                      _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xEE), fmax);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* 128-bit quarter c: v[4i + c]'s */
        u[i] = comb16(_mm512_shuffle_i32x4(w[2 * i], w[2 * i + 1], 0x88),
                      _mm512_shuffle_i32x4(w[2 * i], w[2 * i + 1], 0xDD), fmax);
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) /* quarter c: v[8i + c]'s in lanes 0-1, v[8i + 4 + c]'s in 2-3 */
        s[i] = comb16(shuf_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                      shuf_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)), fmax);
    /* lane 4c + k: v[c + 4k] */
    __m512i r = comb16(shuf_ps(s[0], s[1], _MM_SHUFFLE(2, 0, 2, 0)), shuf_ps(s[0], s[1], _MM_SHUFFLE(3, 1, 3, 1)), fmax);
    return _mm512_permutexvar_epi32(_mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0), r);
}

/* quantize_x for blocks i0..i0+nv-1 (nv <= 16), one 16-value vector per half block and the
 * blocks' maxima, scales and sums 16 at a time: the scalar code's x * (127 / amax), clamped to
 * +-127 and rounded to nearest even, NaN to 0; amax ignores NaNs as it does; d, s, ds, ds16 as
 * xq8_sums computes them. (One block at a time, the two horizontal sums and the max made each
 * block a chain of dependent steps; this takes about half the time: a 16-row product of 2048
 * values, x quantized and arranged included, 1.12 -> 0.96 us on one Zen 5 core.) */
INL512 void quantize16_512(xq8 *xq, const float *x, size_t i0, int nv) {
    const __m512 hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    __m512i a[16], h[2][16];
    __mmask16 nan = 0;
#pragma GCC unroll 16
    for (int b = 0; b < 16; b++) {
        __mmask16 m = b < nv ? 0xffff : 0;
        __m512 v0 = _mm512_maskz_loadu_ps(m, x + (i0 + b) * 32), v1 = _mm512_maskz_loadu_ps(m, x + (i0 + b) * 32 + 16);
        __mmask16 ok0 = _mm512_cmp_ps_mask(v0, v0, _CMP_ORD_Q), ok1 = _mm512_cmp_ps_mask(v1, v1, _CMP_ORD_Q);
        a[b] = _mm512_castps_si512(
            _mm512_max_ps(_mm512_maskz_mov_ps(ok0, _mm512_abs_ps(v0)), _mm512_maskz_mov_ps(ok1, _mm512_abs_ps(v1))));
        nan |= (__mmask16)(((ok0 & ok1) != 0xffff) << b);
    }
    __m512 amax = _mm512_castsi512_ps(reduce16x16(a, 1));
    __mmask16 finite = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ) &
                       _mm512_cmp_ps_mask(amax, _mm512_set1_ps(FLT_MAX), _CMP_LE_OQ);
    _Alignas(64) float id[16];
    _mm512_store_ps(id, _mm512_maskz_div_ps(finite, hi, amax));
#pragma GCC unroll 16
    for (int b = 0; b < 16; b++) {
        __m512 ib = _mm512_set1_ps(id[b]);
#pragma GCC unroll 2
        for (int j = 0; j < 2; j++) {
            __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(b < nv ? 0xffff : 0, x + (i0 + b) * 32 + 16 * j), ib);
            __mmask16 m = _mm512_cmp_ps_mask(t, t, _CMP_ORD_Q);
            t = _mm512_max_ps(_mm512_min_ps(t, hi), lo);
            h[j][b] = _mm512_maskz_cvt_roundps_epi32(m, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (b < nv) _mm_storeu_si128((__m128i *)(xq->q + (i0 + b) * 32 + 16 * j), _mm512_cvtepi32_epi8(h[j][b]));
        }
    }
    __m512i h0 = reduce16x16(h[0], 0), h1 = reduce16x16(h[1], 0), sum = _mm512_add_epi32(h0, h1);
    __m512 d = _mm512_mask_mov_ps(_mm512_div_ps(amax, hi), nan, _mm512_set1_ps(NAN));
    __m512 d0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(h0)), d1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(h1));
    __mmask16 m = (__mmask16)((1u << nv) - 1);
    _mm512_mask_storeu_ps(xq->d + i0, m, d);
    _mm512_mask_storeu_epi32(xq->s + i0, m, sum);
    _mm512_mask_storeu_ps(xq->ds + i0, m, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum)));
    /* ds16: d * h0, d * h1 of each block, interleaved */
    const __m512i lo8 = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi8 = _mm512_add_epi32(lo8, _mm512_set1_epi32(8));
    _mm512_mask_storeu_ps(xq->ds16 + 2 * i0, (__mmask16)(nv >= 8 ? 0xffff : (1u << 2 * nv) - 1),
                          _mm512_permutex2var_ps(d0, lo8, d1));
    if (nv > 8)
        _mm512_mask_storeu_ps(xq->ds16 + 2 * i0 + 16, (__mmask16)((1u << 2 * (nv - 8)) - 1),
                              _mm512_permutex2var_ps(d0, hi8, d1));
}

T512 static void quantize_x512(xq8 *xq, const float *x, size_t nb) {
    for (size_t i = 0; i < nb; i += 16) quantize16_512(xq, x, i, nb - i < 16 ? (int)(nb - i) : 16);
}

/* Dot products of R weight rows (at w + row[r] * rs) with NB activation rows. NB, R and wt are
 * constants after inlining, so acc[][][] lives in registers: R*NB*U independent FMA chains. */
INL512 void gemv512_rows(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         const int NB, const int R, const int *row, int N, int K) {
    const int U = R * NB <= 4 ? 4 : R * NB <= 8 ? 2 : 1; /* at most 16 accumulators */
    const __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
    const char *wr[4];
    __m512 acc[4][GEMV_MAX_B][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        wr[r] = (const char *)w + (size_t)row[r] * rs;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
            for (int u = 0; u < U; u++) acc[r][b][u] = _mm512_setzero_ps();
    }
    int k = 0;
    /* Each x vector is loaded once per k step and used for all R rows. */
    for (; k + 16 * U <= K; k += 16 * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            __m512 xv[GEMV_MAX_B];
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) xv[b] = _mm512_loadu_ps(x + (size_t)b * K + k + 16 * u);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                if (wt == NG_F32 || (u & 1) == 0) /* one prefetch per 64-byte line */
                    _mm_prefetch(wr[r] + (size_t)(k + 16 * u) * (wt == NG_F32 ? 4 : 2) + GEMV_PREFETCH_F,
                                 _MM_HINT_T0);
                __m512 wv = ld16(wr[r], wt, k + 16 * u);
#pragma GCC unroll 8
                for (int b = 0; b < NB; b++) acc[r][b][u] = _mm512_fmadd_ps(wv, xv[b], acc[r][b][u]);
            }
        }
    }
    for (; k < K; k += 16) { /* the last < 16 * U elements, the final partial vector masked */
        __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : tail;
        __m512 xv[GEMV_MAX_B];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) xv[b] = _mm512_maskz_loadu_ps(m, x + (size_t)b * K + k);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512 wv = ld16_mask(wr[r], wt, k, m);
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) acc[r][b][0] = _mm512_fmadd_ps(wv, xv[b], acc[r][b][0]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            __m512 s = acc[r][b][0];
#pragma GCC unroll 4
            for (int u = 1; u < U; u++) s = _mm512_add_ps(s, acc[r][b][u]);
            float v = _mm512_reduce_add_ps(s);
            y[(size_t)b * N + row[r]] = bias ? v + bias[row[r]] : v;
        }
    }
}

/* Rows n0..n1-1, R at a time, so that each activation vector loaded serves R rows. The range is
 * cut into R parts walked side by side: R separate read streams keep more memory requests in
 * flight than one (about +10% on Zen 5). */
INL512 void gemv512_body(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         const int NB, int N, int K, int n0, int n1, steps_src st) {
    const int R = NB <= 4 ? 4 : 2;
    int len = (n1 - n0) / R, row[4];
    if (st.own && len > 0) prefetch_streams(w, rs, n0, len, R, GEMV_PREFETCH_F);
    for (steps_it it = steps_begin(st, len, R * rs); steps_next(&it);) {
        for (int i = it.i0; i < it.i1; i++) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) row[r] = n0 + r * len + i;
            gemv512_rows(y, x, w, rs, wt, bias, NB, R, row, N, K);
        }
    }
    if (st.own)
        for (int n = n0 + R * len; n < n1; n++) gemv512_rows(y, x, w, rs, wt, bias, NB, 1, &n, N, K);
}

INL512 void gemv512_type(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1, steps_src st) {
    switch (B) {
    case 1:
        gemv512_body(y, x, w, rs, wt, bias, 1, N, K, n0, n1, st);
        break;
    case 2:
        gemv512_body(y, x, w, rs, wt, bias, 2, N, K, n0, n1, st);
        break;
    case 3:
        gemv512_body(y, x, w, rs, wt, bias, 3, N, K, n0, n1, st);
        break;
    case 4:
        gemv512_body(y, x, w, rs, wt, bias, 4, N, K, n0, n1, st);
        break;
    case 5:
        gemv512_body(y, x, w, rs, wt, bias, 5, N, K, n0, n1, st);
        break;
    case 6:
        gemv512_body(y, x, w, rs, wt, bias, 6, N, K, n0, n1, st);
        break;
    case 7:
        gemv512_body(y, x, w, rs, wt, bias, 7, N, K, n0, n1, st);
        break;
    default:
        gemv512_body(y, x, w, rs, wt, bias, 8, N, K, n0, n1, st);
        break;
    }
}

T512 static void gemv512(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1, steps_src st) {
    if (wt == NG_F32)
        gemv512_type(y, x, w, rs, NG_F32, bias, B, N, K, n0, n1, st);
    else if (wt == NG_F16)
        gemv512_type(y, x, w, rs, NG_F16, bias, B, N, K, n0, n1, st);
    else
        gemv512_type(y, x, w, rs, NG_BF16, bias, B, N, K, n0, n1, st);
}

/* v[0..15], rows of 16 32-bit words, transposed in place: the off-diagonal h x h blocks
 * swapped for h = 8, 4, 2, 1, two permutes per pair of rows. */
INL512 void transpose16(__m512i *v) {
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
#pragma GCC unroll 4
    for (int h = 8; h >= 1; h /= 2) {
        __mmask16 up = _mm512_test_epi32_mask(iota, _mm512_set1_epi32(h)); /* lanes with bit h */
        /* lanes without bit h keep a's, with it take b's h lanes down; b's the other way */
        __m512i ia = _mm512_mask_add_epi32(iota, up, iota, _mm512_set1_epi32(16 - h));
        __m512i ib = _mm512_mask_add_epi32(_mm512_add_epi32(iota, _mm512_set1_epi32(h)), up, iota,
                                           _mm512_set1_epi32(16));
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            if (!(i & h)) {
                __m512i a = v[i], b = v[i + h];
                v[i] = _mm512_permutex2var_epi32(a, ia, b);
                v[i + h] = _mm512_permutex2var_epi32(a, ib, b);
            }
    }
}

/* A 12 x 32 tile of y (columns n0.. of rows b0..) in and out of a micro-kernel's accumulators,
 * acc[i][h] lane l holding y[b0 + 16 h + l][n0 + i]: two 16 x 16 transposes and a masked load or
 * store of each row's nr values, instead of a scalar copy through memory (10% of a bf16 tile's
 * time). Rows past bn and columns past nr are 0 in, and not written out. tile_in starts the sums
 * at 0 for the first K chunk, and continues the previous chunk's from y for the others. */
INL512 void tile_in(__m512 (*acc)[2], int first, const float *y, int N, int n0, int nr, int b0, int bn) {
    if (first) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        return;
    }
    __mmask16 m = (__mmask16)((1u << nr) - 1);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m512i v[16];
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++) {
            const float *yr = y + (size_t)(b0 + 16 * h + l) * N + n0;
            v[l] = 16 * h + l < bn ? _mm512_castps_si512(_mm512_maskz_loadu_ps(m, yr)) : _mm512_setzero_si512();
        }
        transpose16(v);
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i][h] = _mm512_castsi512_ps(v[i]);
    }
}

INL512 void tile_out(float *y, __m512 (*acc)[2], const float *bias, int N, int n0, int nr, int b0, int bn) {
    __mmask16 m = (__mmask16)((1u << nr) - 1);
    __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + n0) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m512i v[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) v[i] = i < 12 ? _mm512_castps_si512(acc[i][h]) : _mm512_setzero_si512();
        transpose16(v);
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++)
            if (16 * h + l < bn) {
                __m512 r = _mm512_castsi512_ps(v[l]);
                if (bias) r = _mm512_add_ps(r, bv);
                _mm512_mask_storeu_ps(y + (size_t)(b0 + 16 * h + l) * N + n0, m, r);
            }
    }
}

enum { NR512 = 12, BW512 = 32, KCH512 = 16 };

INL512 void pack_w512_type(float *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    const __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
    for (int n = 0; n < NR512; n++) {
        const char *wr = (const char *)w + (size_t)n * rs;
        float *dst = P + n * KCH512;
        int k = 0;
        if (n < nr) {
            for (; k + 16 <= K; k += 16) _mm512_store_ps(dst + (size_t)k * NR512, ld16(wr, wt, k));
            if (k < K) {
                _mm512_store_ps(dst + (size_t)k * NR512, ld16_mask(wr, wt, k, tail));
                k += 16;
            }
        }
        for (; k < K; k += 16) _mm512_store_ps(dst + (size_t)k * NR512, _mm512_setzero_ps());
    }
}

T512 static void pack_w512(float *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    if (!simd_type(wt))
        pack_w512_type(P, dequant_rows(w, rs, wt, nr, K), (size_t)K * sizeof(float), NG_F32, nr, K);
    else if (wt == NG_F32)
        pack_w512_type(P, w, rs, NG_F32, nr, K);
    else if (wt == NG_F16)
        pack_w512_type(P, w, rs, NG_F16, nr, K);
    else
        pack_w512_type(P, w, rs, NG_BF16, nr, K);
}

/* 12 weight rows x 32 activation rows: 24 accumulators, 2 vector loads and 12 broadcasts per k. */
T512 static void micro512(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0,
                          int nr, int b0, int bn, int N, int first, gemm_pf *pf) {
    __m512 acc[NR512][2];
    tile_in(acc, first, y, N, n0, nr, b0, bn);
    for (int k = 0; k < Kp; k += KCH512) {
        const float *pw = P + (size_t)k * NR512, *px = XT + (size_t)k * BW512;
        for (int j = 0; j < KCH512; j++) {
            gemm_pf_step(pf);
            __m512 x0 = _mm512_load_ps(px + j * BW512), x1 = _mm512_load_ps(px + j * BW512 + 16);
#pragma GCC unroll 12
            for (int i = 0; i < NR512; i++) {
                __m512 wv = _mm512_set1_ps(pw[i * KCH512 + j]);
                acc[i][0] = _mm512_fmadd_ps(wv, x0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(wv, x1, acc[i][1]);
            }
        }
    }
    tile_out(y, acc, bias, N, n0, nr, b0, bn);
}

static const simd_isa ISA512 = {NR512, BW512, KCH512, 1, pack_x, gemv512, pack_w512, micro512};

/* -- AVX-512 BF16: the GEMM for bf16 weights with vdpbf16ps --
 * vdpbf16ps multiplies pairs of bf16 and adds both products to an f32 lane: 32 products an
 * instruction against an f32 FMA's 16. The weights are bf16 already; the activations are
 * rounded to bf16 (to nearest even) as XT is packed, so this computes x rounded to bf16 times
 * W, summed in f32 (llama.cpp rounds the activations of bf16 weights the same way). Only the
 * GEMM (more than GEMV_MAX_B rows: a prompt, or a batch of many sequences) takes this path; one
 * sequence's decode is bound by memory and keeps f32 activations. XT holds
 * pairs of k: [Kp / 2][bw] 32-bit words, k's bf16 in the low half and k + 1's in the high half,
 * as vdpbf16ps pairs them; P the same pairs of the NR weight rows, [chunk of 32 k][NR][16]. */
#define TBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c,fma")))

enum { NRBF = 12, BWBF = 32, KCHBF = 32 };

static inline __mmask32 mask32(int n) { return n >= 32 ? ~(__mmask32)0 : n <= 0 ? 0 : ((__mmask32)1 << n) - 1; }

/* 32 k's of 16 rows at a time: each row's 16 pairs made in one vector, then the 16 x 16 pairs
 * transposed so that every store is a whole line of XT (bw a multiple of 16). */
TBF static void pack_x_bf16(float *dst, const float *x, int b0, int bn, int K, int Kp, int bw) {
    uint32_t *d = (uint32_t *)dst;
    for (int k = 0; k < Kp; k += 32) {
        __mmask32 m = mask32(K - k);
        for (int j0 = 0; j0 < bw; j0 += 16) {
            __m512i v[16];
#pragma GCC unroll 16
            for (int r = 0; r < 16; r++) {
                v[r] = _mm512_setzero_si512();
                if (j0 + r < bn) {
                    const float *src = x + (size_t)(b0 + j0 + r) * K + k;
                    __m512 lo = _mm512_maskz_loadu_ps((__mmask16)m, src);
                    __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), src + 16);
                    v[r] = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                }
            }
            transpose16(v);
#pragma GCC unroll 16
            for (int p = 0; p < 16; p++) _mm512_store_si512(d + (size_t)(k / 2 + p) * bw + j0, v[p]);
        }
    }
}

TBF static void pack_w_bf16(float *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    (void)wt; /* NG_BF16 */
    uint32_t *p = (uint32_t *)P;
    for (int n = 0; n < NRBF; n++) {
        const uint16_t *wr = n < nr ? (const uint16_t *)((const char *)w + (size_t)n * rs) : NULL;
        for (int k = 0; k < K; k += KCHBF) {
            __m512i v = wr ? _mm512_maskz_loadu_epi16(mask32(K - k), wr + k) : _mm512_setzero_si512();
            _mm512_store_si512(p + ((size_t)(k / KCHBF) * NRBF + n) * 16, v);
        }
    }
}

/* 12 weight rows x 32 activation rows, as micro512, with a pair of k per step. */
TBF static void micro_bf16(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0, int nr,
                           int b0, int bn, int N, int first, gemm_pf *pf) {
    __m512 acc[NRBF][2];
    tile_in(acc, first, y, N, n0, nr, b0, bn);
    const uint32_t *pw0 = (const uint32_t *)P, *px0 = (const uint32_t *)XT;
    for (int k = 0; k < Kp; k += KCHBF) {
        const uint32_t *pw = pw0 + (size_t)(k / KCHBF) * NRBF * 16, *px = px0 + (size_t)(k / 2) * BWBF;
        for (int j = 0; j < KCHBF / 2; j++) {
            gemm_pf_step(pf);
            __m512bh x0 = (__m512bh)_mm512_load_si512(px + j * BWBF);
            __m512bh x1 = (__m512bh)_mm512_load_si512(px + j * BWBF + 16);
#pragma GCC unroll 12
            for (int i = 0; i < NRBF; i++) {
                __m512bh wv = (__m512bh)_mm512_set1_epi32((int)pw[i * 16 + j]);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], wv, x0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], wv, x1);
            }
        }
    }
    tile_out(y, acc, bias, N, n0, nr, b0, bn);
}

static const simd_isa ISA512BF = {NRBF, BWBF, KCHBF, 2, pack_x_bf16, gemv512, pack_w_bf16, micro_bf16};

/* -- AVX2 -- */
#define T256 __attribute__((target("avx2,fma,f16c")))
#define INL256 static inline __attribute__((always_inline, target("avx2,fma,f16c")))

INL256 __m256 ld8(const void *w, ng_type wt, int k) {
    if (wt == NG_F32) return _mm256_loadu_ps((const float *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    if (wt == NG_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INL256 float elem(const void *w, ng_type wt, int k) {
    if (wt == NG_F32) return ((const float *)w)[k];
    if (wt == NG_F16) return ng_f16_to_f32(((const ng_f16 *)w)[k]);
    return ng_bf16_to_f32(((const ng_bf16 *)w)[k]);
}

INL256 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Row n against NB activation rows, as gemv512_rows with 8-wide vectors; 16 ymm registers
 * allow about 8 accumulators. The K tail (< 8) is done in scalar code since AVX2 has no 16-bit
 * masked load. */
INL256 void gemv256_row(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                        const int NB, int N, int K, int n) {
    const int U = NB <= 2 ? 4 : NB <= 4 ? 2 : 1;
    const char *wr = (const char *)w + (size_t)n * rs;
    __m256 acc[GEMV_MAX_B][4];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) acc[b][u] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 * U <= K; k += 8 * U) {
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) {
            __m256 wv = ld8(wr, wt, k + 8 * u);
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++)
                acc[b][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)b * K + k + 8 * u), acc[b][u]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 wv = ld8(wr, wt, k);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++)
            acc[b][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)b * K + k), acc[b][0]);
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        __m256 s = acc[b][0];
#pragma GCC unroll 4
        for (int u = 1; u < U; u++) s = _mm256_add_ps(s, acc[b][u]);
        float v = hsum256(s);
        for (int kk = k; kk < K; kk++) v += elem(wr, wt, kk) * x[(size_t)b * K + kk];
        y[(size_t)b * N + n] = bias ? v + bias[n] : v;
    }
}

/* Rows n0..n1-1 one at a time (a step is a row). */
INL256 void gemv256_body(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         const int NB, int N, int K, int n0, int n1, steps_src st) {
    for (steps_it it = steps_begin(st, n1 - n0, rs); steps_next(&it);)
        for (int n = n0 + it.i0; n < n0 + it.i1; n++) gemv256_row(y, x, w, rs, wt, bias, NB, N, K, n);
}

INL256 void gemv256_type(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1, steps_src st) {
    switch (B) {
    case 1:
        gemv256_body(y, x, w, rs, wt, bias, 1, N, K, n0, n1, st);
        break;
    case 2:
        gemv256_body(y, x, w, rs, wt, bias, 2, N, K, n0, n1, st);
        break;
    case 3:
        gemv256_body(y, x, w, rs, wt, bias, 3, N, K, n0, n1, st);
        break;
    case 4:
        gemv256_body(y, x, w, rs, wt, bias, 4, N, K, n0, n1, st);
        break;
    case 5:
        gemv256_body(y, x, w, rs, wt, bias, 5, N, K, n0, n1, st);
        break;
    case 6:
        gemv256_body(y, x, w, rs, wt, bias, 6, N, K, n0, n1, st);
        break;
    case 7:
        gemv256_body(y, x, w, rs, wt, bias, 7, N, K, n0, n1, st);
        break;
    default:
        gemv256_body(y, x, w, rs, wt, bias, 8, N, K, n0, n1, st);
        break;
    }
}

T256 static void gemv256(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1, steps_src st) {
    if (wt == NG_F32)
        gemv256_type(y, x, w, rs, NG_F32, bias, B, N, K, n0, n1, st);
    else if (wt == NG_F16)
        gemv256_type(y, x, w, rs, NG_F16, bias, B, N, K, n0, n1, st);
    else
        gemv256_type(y, x, w, rs, NG_BF16, bias, B, N, K, n0, n1, st);
}

enum { NR256 = 6, BW256 = 16, KCH256 = 8 };

INL256 void pack_w256_type(float *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    for (int n = 0; n < NR256; n++) {
        const char *wr = (const char *)w + (size_t)n * rs;
        float *dst = P + n * KCH256;
        int k = 0;
        if (n < nr) {
            for (; k + 8 <= K; k += 8) _mm256_store_ps(dst + (size_t)k * NR256, ld8(wr, wt, k));
            if (k < K) {
                float *d = dst + (size_t)k * NR256;
                for (int j = 0; j < 8; j++) d[j] = k + j < K ? elem(wr, wt, k + j) : 0;
                k += 8;
            }
        }
        for (; k < K; k += 8) _mm256_store_ps(dst + (size_t)k * NR256, _mm256_setzero_ps());
    }
}

T256 static void pack_w256(float *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    if (!simd_type(wt))
        pack_w256_type(P, dequant_rows(w, rs, wt, nr, K), (size_t)K * sizeof(float), NG_F32, nr, K);
    else if (wt == NG_F32)
        pack_w256_type(P, w, rs, NG_F32, nr, K);
    else if (wt == NG_F16)
        pack_w256_type(P, w, rs, NG_F16, nr, K);
    else
        pack_w256_type(P, w, rs, NG_BF16, nr, K);
}

/* 6 weight rows x 16 activation rows: 12 accumulators, 2 loads and 6 broadcasts per k. */
T256 static void micro256(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0,
                          int nr, int b0, int bn, int N, int first, gemm_pf *pf) {
    __m256 acc[NR256][2];
    _Alignas(64) float tile[NR256 * BW256];
    if (!first) { /* continue the previous K chunk's sums; rows and columns past the edge are 0 */
        memset(tile, 0, sizeof tile);
        tile_load(tile, y, N, n0, nr, b0, bn, BW256);
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR256; i++) {
        acc[i][0] = first ? _mm256_setzero_ps() : _mm256_load_ps(tile + i * BW256);
        acc[i][1] = first ? _mm256_setzero_ps() : _mm256_load_ps(tile + i * BW256 + 8);
    }
    for (int k = 0; k < Kp; k += KCH256) {
        const float *pw = P + (size_t)k * NR256, *px = XT + (size_t)k * BW256;
        for (int j = 0; j < KCH256; j++) {
            gemm_pf_step(pf);
            __m256 x0 = _mm256_load_ps(px + j * BW256), x1 = _mm256_load_ps(px + j * BW256 + 8);
#pragma GCC unroll 6
            for (int i = 0; i < NR256; i++) {
                __m256 wv = _mm256_broadcast_ss(pw + i * KCH256 + j);
                acc[i][0] = _mm256_fmadd_ps(wv, x0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(wv, x1, acc[i][1]);
            }
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < NR256; i++) {
        _mm256_store_ps(tile + i * BW256, acc[i][0]);
        _mm256_store_ps(tile + i * BW256 + 8, acc[i][1]);
    }
    tile_store(y, tile, bias, N, n0, nr, b0, bn, BW256);
}

static const simd_isa ISA256 = {NR256, BW256, KCH256, 1, pack_x, gemv256, pack_w256, micro256};

/* -- quantized weights (q8_0, q4_0, q4_k, q6_k), GEMV --
 * As llama.cpp does, the activations are quantized once per call (quantize_x) and every weight
 * block meets them in an integer dot product: u8 weights (q4/q6 codes, or |w| for q8_0 with
 * w's sign moved onto x) times s8 activations, 32 values at a time, then one float multiply-add
 * by the two scales per block of 32. The integer sums are exact; the difference from the
 * reference (dequantize, then an f32 dot) is the rounding of x to 8 bits, at most d_x/2 per
 * value (d_x = max|x| / 127 over its block of 32) times |w|, plus f32 rounding of the block sums
 * (tests/test_quant.c states and checks the bound).
 * The same code serves two instruction sets: with AVX-512 VNNI one vpdpbusd per 32 values,
 * otherwise AVX2's vpmaddubsw + vpmaddwd (no saturation: |u| <= 128 and |x| <= 127, so a pair
 * sums to at most 32512). At about 3 cycles per block this holds q4_0 to half the read bandwidth,
 * so with AVX-512 VNNI each of these four types takes a 512-bit kernel after this one (q8_0 and
 * q4_0 one, q4_k and q6_k another); this one serves the AVX2 path. */
#define TQ __attribute__((target("avx2,fma,f16c")))
#define INLQ static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define TQ_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

/* acc + per-lane sums of 4 products u (unsigned bytes) * s (signed bytes). vnni is a constant
 * after inlining: VNNI_EVEX (AVX-512 VNNI's vpdpbusd on 256 bits), VNNI_VEX (AVX-VNNI's), or 0
 * (AVX2's vpmaddubsw + vpmaddwd + vpaddd: the same sums, as no pair saturates). The instruction
 * is written as asm so that this helper (and the kernels built on it) can be inlined into the
 * AVX2 entry points, whose target has neither extension. */
enum { VNNI_EVEX = 1, VNNI_VEX = 2 };
INLQ __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s, const int vnni) {
    if (vnni == VNNI_EVEX) {
        __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
        return acc;
    }
    if (vnni == VNNI_VEX) {
        __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u), "x"(s));
        return acc;
    }
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

INLQ float half_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

INLQ __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* One weight block of each type against NB activation rows; x block index kb (in the type's
 * blocks), nb32 = K / 32. acc[b] collects row b's sum in its 8 lanes. */
INLQ void blk_q8_0(__m256 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB, const int vnni) {
    float dw = half_at(blk);
    __m256i w = ld256(blk + 2), u = _mm256_abs_epi8(w);
    int nb32 = K / 32;
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        __m256i s = _mm256_sign_epi8(ld256(xq->q + (size_t)b * K + kb * 32), w);
        __m256i i = dot_u8s8(_mm256_setzero_si256(), u, s, vnni);
        acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(dw * xq->d[b * nb32 + kb]), acc[b]);
    }
}

/* q4_0: codes 0..15 stand for code - 8; the -8 * sum(x) of the block starts the integer sum. */
/* q4_0's 16 bytes of nibble pairs as its 32 codes in order (u8, 0..15). */
INLQ __m256i nibbles256(__m128i qs) {
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(15));
}

INLQ void blk_q4_0(__m256 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB, const int vnni) {
    float dw = half_at(blk);
    __m256i u = nibbles256(_mm_loadu_si128((const __m128i *)(blk + 2)));
    int nb32 = K / 32;
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        __m256i c = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-8 * xq->s[b * nb32 + kb]));
        __m256i i = dot_u8s8(c, u, ld256(xq->q + (size_t)b * K + kb * 32), vnni);
        acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(dw * xq->d[b * nb32 + kb]), acc[b]);
    }
}

/* A q4_k block's 6-bit scales and mins as bytes: the 8 scales, then the 8 mins. */
INLQ __m128i q4_k_scale_bytes(const uint8_t *blk) {
    uint32_t a, b4, c4;
    memcpy(&a, blk + 4, 4), memcpy(&b4, blk + 8, 4), memcpy(&c4, blk + 12, 4);
    uint32_t sc_lo = a & 0x3f3f3f3f, mn_lo = b4 & 0x3f3f3f3f;
    uint32_t sc_hi = (c4 & 0x0f0f0f0f) | ((a >> 6) & 0x03030303) << 4;
    uint32_t mn_hi = ((c4 >> 4) & 0x0f0f0f0f) | ((b4 >> 6) & 0x03030303) << 4;
    return _mm_set_epi32((int)mn_hi, (int)mn_lo, (int)sc_hi, (int)sc_lo);
}

/* A q4_k block's 8 sub-block scales times d (scf) and mins times dmin (mnf). */
INLQ void q4_k_scales(const uint8_t *blk, __m256 *scf, __m256 *mnf) {
    __m128i v = q4_k_scale_bytes(blk);
    *scf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_set1_ps(half_at(blk)));
    *mnf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))), _mm256_set1_ps(half_at(blk + 2)));
}

/* q4_k: 8 sub-blocks of 32 with 6-bit scale and min; chunk c of qs holds sub-block 2c in its
 * low nibbles and 2c+1 in its high ones. The minimum's term is sum_j dmin*m_j * d_x*sum(x_j),
 * added as one vector (only the lane sum of acc matters). */
INLQ void blk_q4_k(__m256 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB, const int vnni) {
    __m256 scf, mnf;
    q4_k_scales(blk, &scf, &mnf);
    int nb32 = K / 32;
    _Alignas(32) float sx[GEMV_MAX_B][8];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        size_t o = (size_t)b * nb32 + (size_t)kb * 8;
        acc[b] = _mm256_fnmadd_ps(mnf, _mm256_loadu_ps(xq->ds + o), acc[b]);
        _mm256_store_ps(sx[b], _mm256_mul_ps(scf, _mm256_loadu_ps(xq->d + o)));
    }
    const __m256i m4 = _mm256_set1_epi8(15);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m256i t = ld256(blk + 16 + 32 * c);
        __m256i lo = _mm256_and_si256(t, m4), hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m4);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            const int8_t *xb = xq->q + (size_t)b * K + (size_t)kb * 256 + 64 * c;
            __m256i i0 = dot_u8s8(_mm256_setzero_si256(), lo, ld256(xb), vnni);
            __m256i i1 = dot_u8s8(_mm256_setzero_si256(), hi, ld256(xb + 32), vnni);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_set1_ps(sx[b][2 * c]), acc[b]);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_set1_ps(sx[b][2 * c + 1]), acc[b]);
        }
    }
}

/* q6_k: 6-bit codes (low 4 bits in ql, high 2 in qh) standing for code - 32, one int8 scale per
 * 16 values. Each half of the block (128 values) reads ql[64], qh[32]; its sub-block s (32
 * values) takes the low (s < 2) or high nibbles of ql[32 (s & 1) ..] and bits 2s, 2s+1 of qh.
 * The 16-value scales are applied in the integer sum (vpmaddwd by the scales instead of by
 * ones: 16002 * 128 * 2 fits easily); the -32 offset is sum_g 32*d*sc_g * d_x*sum(x_g). */
INLQ void blk_q6_k(__m256 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB, const int vnni) {
    const int8_t *sc = (const int8_t *)(blk + 192);
    float d = half_at(blk + 208);
    __m128i sc16 = _mm_loadu_si128((const __m128i *)sc);
    __m256 d32 = _mm256_set1_ps(32 * d);
    __m256 c0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc16)), d32);
    __m256 c1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc16, 8))), d32);
    int nb32 = K / 32;
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        const float *ds16 = xq->ds16 + (size_t)b * (K / 16) + (size_t)kb * 16;
        acc[b] = _mm256_fnmadd_ps(c0, _mm256_loadu_ps(ds16), acc[b]);
        acc[b] = _mm256_fnmadd_ps(c1, _mm256_loadu_ps(ds16 + 8), acc[b]);
    }
    const __m256i m4 = _mm256_set1_epi8(15);
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = ld256(blk + 64 * h), ql1 = ld256(blk + 64 * h + 32), qh = ld256(blk + 128 + 32 * h);
        __m256i u[4];
        u[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                               _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4));
        u[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                               _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c)), 2));
        u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                               _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
        u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), _mm256_set1_epi8(0x30)));
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[8 * h + 2 * s + 1]), _mm_set1_epi16(sc[8 * h + 2 * s]));
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                const int8_t *xb = xq->q + (size_t)b * K + (size_t)kb * 256 + 128 * h + 32 * s;
                __m256i i = _mm256_madd_epi16(_mm256_maddubs_epi16(u[s], ld256(xb)), scv);
                float dx = xq->d[b * nb32 + kb * 8 + 4 * h + s];
                acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(d * dx), acc[b]);
            }
        }
    }
    (void)vnni;
}

/* The AVX-512 GEMV's activation layout (below; also read by the AVX2 path's q4_0r / q8_0r).
 * Lanes: the int32 lane j of a step's vectors holds block j % 4 (4 products of its 4-byte group
 * j / 4 in each half), so that the 4 blocks' scales and sum starts are 16-byte vectors:
 * broadcast (d_x) or zero-extended (sum starts) by the load itself. A row of activations is
 * arranged as its xs_steps codes of 128 bytes (the 4 blocks' first halves, then their second
 * halves, in that lane order), then as many 32-byte tails: 4 int32 sum starts
 * (-offset * sum(x) of each block) and 4 f32 scales d_x. 160 bytes a step, not 256 with the
 * starts and scales spread over 16 lanes: a batch of 8 rows reads its activations from L2 for
 * every weight row pair, and those bytes, not the multiplies, set the pace. */
#define XS_CODES 128
#define XS_TAIL 32
static int xs_steps(int K) { return (K / 32 + 3) / 4; }
/* bytes of one arranged row (a multiple of 64: every row's codes stay 64-byte aligned) */
static size_t xs_row(int K) { return ((size_t)xs_steps(K) * (XS_CODES + XS_TAIL) + 63) & ~(size_t)63; }

/* -- q4_0r and q8_0r (kernel order) on the AVX2 path --
 * The AVX-512 GEMV's layout below (a step: 4 blocks' codes in 64 bytes (q4_0r: nibble pairs) or
 * 128 (q8_0r: the codes + 128), then their 4 f16 scales; arrange_x's activations facing them)
 * read as 256-bit halves: int32 lane j of either half holds block j % 4, so a step of a row is 4
 * u8 x s8 dot products into one vector of sums that starts at the blocks' -offset * sum(x), then
 * one conversion and one multiply-add by d_w * d_x, with the 4 scales one 8-byte load and
 * vcvtph2ps. blk_q4_0 spends about 14 instructions on each block; this, about 4. q8_0r's codes
 * run to 255, where vpmaddubsw's pair sums would saturate: it is native here only with AVX-VNNI
 * (qgemv_native). Rows are whole steps (ng_reorder_rows).
 * A mapped file's q4_0 (ggml's order) takes the same step from 4 blocks in place: their 16-byte
 * code arrays, two to a vector, are a 4 x 4 transpose of 32-bit words away from the kernel order
 * (vpunpckldq / vpunpckhdq, then one vpermd each), and the 4 scales are gathered in an integer
 * register: about 7 instructions a block; a row's last K / 32 % 4 blocks take blk_q4_0. */
/* The 4 x 4 transpose of 32-bit words between 4 blocks' code words and the kernel order: a holds
 * the words of two groups (or blocks) | two more, b the other four; *v0 and *v1 get words 0, 1 and
 * 2, 3 of each of the other index (vpunpck[lh]dq, then vpermd). Its own inverse. */
INLQ void words4x4(__m256i a, __m256i b, __m256i *v0, __m256i *v1) {
    const __m256i idx = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    *v0 = _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi32(a, b), idx);
    *v1 = _mm256_permutevar8x32_epi32(_mm256_unpackhi_epi32(a, b), idx);
}

/* One step of a q4_0r / q8_0r / q4_0 row at p: codes as u8 in u[0..3] (facing the arranged
 * activations' 4 x 32 bytes), the 4 blocks' scales in dw (lane j: block j % 4); the step's
 * lines GEMV_PREFETCH bytes on prefetched. */
INLQ void rdecode256(const uint8_t *p, ng_type wt, __m256i *u, __m256 *dw) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const char *f = (const char *)p + GEMV_PREFETCH;
    _mm_prefetch(f, _MM_HINT_T0);
    _mm_prefetch(f + 64, _MM_HINT_T0);
    if (wt == NG_Q8_0R) _mm_prefetch(f + 128, _MM_HINT_T0);
    __m256i v0, v1;
    if (wt == NG_Q4_0) {
        uint64_t scales = 0; /* gathered in integer registers: word inserts took the vector pipes */
        for (int k = 0; k < 4; k++) {
            uint16_t h;
            memcpy(&h, p + 18 * k, 2);
            scales |= (uint64_t)h << 16 * k;
        }
        *dw = _mm256_cvtph_ps(_mm_set1_epi64x((long long)scales));
        /* blocks 0 | 1 and 2 | 3 */
        const __m256i a = _mm256_loadu2_m128i((const __m128i *)(p + 20), (const __m128i *)(p + 2));
        const __m256i b = _mm256_loadu2_m128i((const __m128i *)(p + 56), (const __m128i *)(p + 38));
        words4x4(a, b, &v0, &v1); /* words 0, 1 of blocks 0..3; words 2, 3 */
    } else {
        int64_t scales;
        memcpy(&scales, p + (wt == NG_Q4_0R ? 64 : 128), 8);
        *dw = _mm256_cvtph_ps(_mm_set1_epi64x(scales));
        v0 = ld256(p), v1 = ld256(p + 32);
    }
    if (wt == NG_Q8_0R) {
        u[0] = v0, u[1] = v1, u[2] = ld256(p + 64), u[3] = ld256(p + 96);
    } else {
        u[0] = _mm256_and_si256(v0, m4), u[1] = _mm256_and_si256(v1, m4);
        u[2] = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m4);
        u[3] = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m4);
    }
}

/* acc + one row's step (codes u, scales dw) against one arranged activation row (codes at x, tail
 * at t): two chains of two dot products (vpdpbusd's latency is ~5 cycles: one chain of four would
 * wait ~20 a step), then d_w * d_x. */
INLQ __m256 rdot256(__m256 acc, const __m256i *u, __m256 dw, const uint8_t *x, const uint8_t *t, const int vnni) {
    __m256i c = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)t));
    __m256i i = dot_u8s8(dot_u8s8(c, u[0], ld256(x), vnni), u[1], ld256(x + 32), vnni);
    __m256i i2 = dot_u8s8(dot_u8s8(_mm256_setzero_si256(), u[2], ld256(x + 64), vnni), u[3], ld256(x + 96), vnni);
    __m256 dx = _mm256_broadcast_ps((const __m128 *)(t + 16));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(i, i2)), _mm256_mul_ps(dw, dx), acc);
}

/* One step of R rows (at p[r]) against NB arranged activation rows (row b's codes for the step at
 * xc + b * xb, its tail at xt + b * xb). AVX2 has 16 vector registers: one activation row takes
 * the rows one after another (each row's codes dead before the next's), so that the sums stay
 * in registers (with the R rows' codes decoded first they went through the stack: q4_0r with
 * AVX-VNNI from memory 44.7 -> 54.3 GB/s); a batch decodes each row's step once for its NB rows
 * (R <= 2 there). */
INLQ void rstep256(__m256 acc[][GEMV_MAX_B], const uint8_t *const *p, const uint8_t *xc, const uint8_t *xt,
                   size_t xb, ng_type wt, const int NB, const int R, const int vnni) {
    __m256i u[4];
    __m256 dw;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        rdecode256(p[r], wt, u, &dw);
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[r][b] = rdot256(acc[r][b], u, dw, xc + b * xb, xt + b * xb, vnni);
    }
}

/* -- q4_kr and q6_kr on the AVX2 path --
 * The AVX-512 kernel's layouts (kr512_rows) read as 256-bit halves: half h of each of the four
 * vectors of codes holds q4_kr's sub-blocks 4 h .. 4 h + 3 (two lanes each) or q6_kr's groups
 * 8 h .. 8 h + 7 (one lane each), so a half's four dot products add into the same lanes and take
 * one conversion and one multiply-add by their scales times d_x (d_x spread over the lanes with
 * one vpermps); q4_kr's mins and q6_kr's -32 are one more multiply-add. x is arranged as for that
 * kernel (arrange_k_c). Without AVX-VNNI, vpmaddubsw's pair sums add in 16 bits before vpmaddwd
 * (q4_kr's four: 4 x 2 x 15 x 127 fits; q6_kr's two: 2 x 2 x 63 x 127), the same exact sums.
 * The block-at-a-time kernels (blk_q4_k, blk_q6_k) take about twice the instructions. */

/* A q4_k block's 8 scales, then its 8 mins, as 16 bytes, from two byte shuffles (kr512_rows'
 * too). */
INLQ __m128i q4_kr_scale_bytes(const uint8_t *blk) {
    const __m128i lo_at = _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m128i hi_at = _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11);
    const __m128i lo_mask = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15);
    const __m128i hi_mask = _mm_setr_epi8(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48);
    /* scale and min j < 4: the low 6 bits of bytes 4 + j, 8 + j; j >= 4: the low (scales) or
     * high (mins) nibble of byte 12 + j - 4, the top 2 bits from bytes 4 + j - 4, 8 + j - 4 */
    __m128i q = _mm_loadu_si128((const __m128i *)blk), lo = _mm_shuffle_epi8(q, lo_at);
    lo = _mm_blend_epi16(lo, _mm_srli_epi16(lo, 4), 0xC0); /* bytes 12-15: the high nibbles */
    __m128i hi = _mm_and_si128(_mm_srli_epi16(_mm_shuffle_epi8(q, hi_at), 2), hi_mask);
    return _mm_or_si128(_mm_and_si128(lo, lo_mask), hi);
}

/* A q4_k block's 8 scales times d and 8 mins times dmin. */
INLQ void q4_kr_scales256(const uint8_t *blk, __m256 *sc, __m256 *mn) {
    __m128i bytes = q4_kr_scale_bytes(blk);
    __m128 dd = _mm_cvtph_ps(_mm_loadu_si128((const __m128i *)blk)); /* lanes 0, 1: d, dmin */
    *sc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)), _mm256_broadcastss_ps(dd));
    *mn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8))),
                        _mm256_broadcastss_ps(_mm_movehdup_ps(dd)));
}

/* Half h of a q6_kr block's codes (q6_kr_codes512's, 32 bytes of each 64). */
INLQ void q6_kr_codes256(const uint8_t *blk, int h, __m256i *c) {
    const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
    __m256i z0 = ld256(blk + 32 * h), z1 = ld256(blk + 64 + 32 * h), t = ld256(blk + 128 + 32 * h);
    c[0] = _mm256_or_si256(_mm256_and_si256(z0, m4), _mm256_and_si256(_mm256_slli_epi16(t, 4), m30));
    c[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(z0, 4), m4),
                           _mm256_and_si256(_mm256_slli_epi16(t, 2), m30));
    c[2] = _mm256_or_si256(_mm256_and_si256(z1, m4), _mm256_and_si256(t, m30));
    c[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(z1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(t, 2), m30));
}

/* The four dot products of a half: codes u[0..3] against x's four vectors (64 bytes apart). */
INLQ __m256i kr_dot4(const __m256i *u, const uint8_t *x, const int k6, const int vnni) {
    if (vnni) { /* one chain: the R rows' halves side by side are chains enough (against two
                 * chains of two and their sum, 256 x 2048 in L2 on one Zen 5 thread: q4_kr
                 * 28.0-28.1 -> 28.6-28.7 GB/s, q6_kr 34.7-34.9 -> 35.1-35.3) */
        __m256i i =
            dot_u8s8(dot_u8s8(_mm256_setzero_si256(), u[0], ld256(x), vnni), u[2], ld256(x + 128), vnni);
        return dot_u8s8(dot_u8s8(i, u[1], ld256(x + 64), vnni), u[3], ld256(x + 192), vnni);
    }
    const __m256i one = _mm256_set1_epi16(1);
    __m256i a =
        _mm256_add_epi16(_mm256_maddubs_epi16(u[0], ld256(x)), _mm256_maddubs_epi16(u[1], ld256(x + 64)));
    __m256i b = _mm256_add_epi16(_mm256_maddubs_epi16(u[2], ld256(x + 128)),
                                 _mm256_maddubs_epi16(u[3], ld256(x + 192)));
    if (k6) return _mm256_add_epi32(_mm256_madd_epi16(a, one), _mm256_madd_epi16(b, one));
    return _mm256_madd_epi16(_mm256_add_epi16(a, b), one);
}

/* Block kb of R q4_kr or q6_kr rows (at p[r]) into acc against NB activation rows arranged by
 * arrange_k_c (row b's at xs + b * xb); each row's codes and scales decoded once for its NB rows. */
INLQ void kr256_block(__m256 acc[][GEMV_MAX_B], const uint8_t *const *p, const xq8 *xq, const uint8_t *xs,
                      size_t xb, ng_type wt, int kb, int K, const int NB, const int R, const int vnni) {
    const int k6 = wt == NG_Q6_KR, nb32 = K / 32;
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i lanes_of[2] = {_mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
                                 _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7)};
    /* row b's d_x, one per 32 values (lane l: that of sub-block or group pair l), and its offset
     * terms' sums: q4_kr's d_x sum(x) per sub-block, q6_kr's 32 d_x sum(x) per group */
    __m256 dx[GEMV_MAX_B], ds[2][GEMV_MAX_B];
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        size_t o = (size_t)b * nb32 + (size_t)kb * 8;
        dx[b] = _mm256_loadu_ps(xq->d + o);
        if (k6) {
            const float *d16 = xq->ds16 + (size_t)b * (K / 16) + (size_t)kb * 16;
            ds[0][b] = _mm256_mul_ps(_mm256_loadu_ps(d16), _mm256_set1_ps(32));
            ds[1][b] = _mm256_mul_ps(_mm256_loadu_ps(d16 + 8), _mm256_set1_ps(32));
        } else {
            ds[0][b] = _mm256_loadu_ps(xq->ds + o);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        const uint8_t *blk = p[r];
        _mm_prefetch((const char *)blk + GEMV_PREFETCH, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + GEMV_PREFETCH + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)blk + GEMV_PREFETCH + 128, _MM_HINT_T0);
        if (k6) _mm_prefetch((const char *)blk + GEMV_PREFETCH + 192, _MM_HINT_T0);
        __m256 sc[2], mn;
        if (k6) { /* group g's scale times d, g = 8 h + lane */
            __m128i s8 = _mm_loadu_si128((const __m128i *)(blk + 192));
            __m256 d = _mm256_set1_ps(half_at(blk + 208));
            sc[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(s8)), d);
            sc[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8))), d);
        } else {
            q4_kr_scales256(blk, &sc[0], &mn);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i u[4];
            if (k6) {
                q6_kr_codes256(blk, h, u);
            } else {
                __m256i a = ld256(blk + 16 + 32 * h), c = ld256(blk + 80 + 32 * h);
                u[0] = _mm256_and_si256(a, m4), u[1] = _mm256_and_si256(_mm256_srli_epi16(a, 4), m4);
                u[2] = _mm256_and_si256(c, m4), u[3] = _mm256_and_si256(_mm256_srli_epi16(c, 4), m4);
            }
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                __m256 f; /* each lane's scale times its d_x */
                if (k6) {
                    acc[r][b] = _mm256_fnmadd_ps(sc[h], ds[h][b], acc[r][b]); /* -32 d sc_g d_x sum(x) */
                    f = _mm256_mul_ps(sc[h], _mm256_permutevar8x32_ps(dx[b], lanes_of[h]));
                } else {
                    if (h == 0) /* minus dmin m_s d_x sum(x) */
                        acc[r][b] = _mm256_fnmadd_ps(mn, ds[0][b], acc[r][b]);
                    f = _mm256_permutevar8x32_ps(_mm256_mul_ps(sc[0], dx[b]), lanes_of[h]);
                }
                __m256i i = kr_dot4(u, xs + (size_t)b * xb + (size_t)kb * 256 + 32 * h, k6, vnni);
                acc[r][b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), f, acc[r][b]);
            }
        }
    }
}

/* R weight rows (at w + row[r] * rs) against NB activation rows, walked block by block (the
 * kernel-order types, and q4_0 when xs is given: step by step, against the rows arranged in xs,
 * xb bytes apart) side by side so that R read streams are in flight. wt, NB, R, vnni are
 * constants after inlining. */
INLQ void qgemv_rows(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                     const float *bias, const int NB, const int R, const int *row, int N, int K, const int vnni) {
    const int qk = wt == NG_Q8_0 || wt == NG_Q4_0 ? 32 : 256;
    const int bs = wt == NG_Q8_0 ? 34 : wt == NG_Q4_0 ? 18 : wt == NG_Q4_K ? 144 : 210;
    const uint8_t *wr[4];
    __m256 acc[4][GEMV_MAX_B];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        wr[r] = (const uint8_t *)w + (size_t)row[r] * rs;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[r][b] = _mm256_setzero_ps();
    }
    int kb0 = 0; /* the blocks that steps of 4 cover */
    if (wt == NG_Q4_0R || wt == NG_Q8_0R || (wt == NG_Q4_0 && xs)) {
        const int sb = wt == NG_Q8_0R ? 136 : 72, ns = xs_steps(K), full = wt == NG_Q4_0 ? K / 128 : ns;
        const uint8_t *xt = xs + (size_t)ns * XS_CODES, *p[4]; /* the steps' tails */
        for (int s = 0; s < full; s++) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) p[r] = wr[r] + (size_t)s * sb;
            rstep256(acc, p, xs + (size_t)s * XS_CODES, xt + (size_t)s * XS_TAIL, xb, wt, NB, R, vnni);
        }
        kb0 = wt == NG_Q4_0 ? 4 * full : K / qk;
    }
    if (kr_type(wt)) {
        const uint8_t *p[4];
        for (int kb = 0; kb < K / 256; kb++) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) p[r] = wr[r] + (size_t)kb * (wt == NG_Q6_KR ? 210 : 144);
            kr256_block(acc, p, xq, xs, xb, wt, kb, K, NB, R, vnni);
        }
        kb0 = K / qk;
    }
    for (int kb = kb0; kb < K / qk; kb++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = wr[r] + (size_t)kb * bs;
#pragma GCC unroll 4
            for (int o = 0; o < bs; o += 64) _mm_prefetch((const char *)blk + GEMV_PREFETCH + o, _MM_HINT_T0);
            if (wt == NG_Q8_0)
                blk_q8_0(acc[r], blk, xq, kb, K, NB, vnni);
            else if (wt == NG_Q4_0)
                blk_q4_0(acc[r], blk, xq, kb, K, NB, vnni);
            else if (wt == NG_Q4_K)
                blk_q4_k(acc[r], blk, xq, kb, K, NB, vnni);
            else
                blk_q6_k(acc[r], blk, xq, kb, K, NB, vnni);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            float v = hsum256(acc[r][b]);
            y[(size_t)b * N + row[r]] = bias ? v + bias[row[r]] : v;
        }
    }
}

/* Rows n0..n1-1 as R interleaved sub-runs (as gemv512_body). */
INLQ void qgemv_body(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                     const float *bias, const int NB, int N, int K, int n0, int n1, const int vnni) {
    const int R = NB == 1 ? 4 : NB == 2 ? 2 : 1;
    int len = (n1 - n0) / R, row[4];
    for (int i = 0; i < len; i++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) row[r] = n0 + r * len + i;
        qgemv_rows(y, xq, xs, xb, w, rs, wt, bias, NB, R, row, N, K, vnni);
    }
    for (int n = n0 + R * len; n < n1; n++) qgemv_rows(y, xq, xs, xb, w, rs, wt, bias, NB, 1, &n, N, K, vnni);
}

INLQ void qgemv_type(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                     const float *bias, int B, int N, int K, int n0, int n1, const int vnni) {
    switch (B) {
    case 1:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 1, N, K, n0, n1, vnni);
        break;
    case 2:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 2, N, K, n0, n1, vnni);
        break;
    case 3:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 3, N, K, n0, n1, vnni);
        break;
    case 4:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 4, N, K, n0, n1, vnni);
        break;
    case 5:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 5, N, K, n0, n1, vnni);
        break;
    case 6:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 6, N, K, n0, n1, vnni);
        break;
    case 7:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 7, N, K, n0, n1, vnni);
        break;
    default:
        qgemv_body(y, xq, xs, xb, w, rs, wt, bias, 8, N, K, n0, n1, vnni);
        break;
    }
}

INLQ void qgemv_any(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                    const float *bias, int B, int N, int K, int n0, int n1, const int vnni) {
    if (wt == NG_Q8_0)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q8_0, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q4_0)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q4_0, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q4_0R)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q4_0R, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q8_0R) /* with vnni only (see qgemv_native) */
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q8_0R, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q4_K)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q4_K, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q4_KR)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q4_KR, bias, B, N, K, n0, n1, vnni);
    else if (wt == NG_Q6_KR)
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q6_KR, bias, B, N, K, n0, n1, vnni);
    else
        qgemv_type(y, xq, xs, xb, w, rs, NG_Q6_K, bias, B, N, K, n0, n1, vnni);
}

/* The entry points: AVX2's three instructions for each u8 x s8 sum, AVX-VNNI's vpdpbusd, or
 * AVX-512 VNNI's on 256 bits. xs: the activations arranged (arrange_x) for q4_0r / q8_0r, and
 * for q4_0 on the AVX2 path (NULL otherwise). */
typedef void (*qgemv_fn)(float *, const xq8 *, const uint8_t *, size_t, const void *, size_t, ng_type, const float *,
                         int, int, int, int, int);

TQ static void qgemv_avx2(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                          ng_type wt, const float *bias, int B, int N, int K, int n0, int n1) {
    qgemv_any(y, xq, xs, xb, w, rs, wt, bias, B, N, K, n0, n1, 0);
}

TQ static void qgemv_avxvnni(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                             ng_type wt, const float *bias, int B, int N, int K, int n0, int n1) {
    qgemv_any(y, xq, xs, xb, w, rs, wt, bias, B, N, K, n0, n1, VNNI_VEX);
}

TQ_VNNI static void qgemv_vnni(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                               ng_type wt, const float *bias, int B, int N, int K, int n0, int n1) {
    qgemv_any(y, xq, xs, xb, w, rs, wt, bias, B, N, K, n0, n1, VNNI_EVEX);
}

/* -- q8_0 and q4_0 with AVX-512 VNNI, GEMV --
 * The kernels above spend about 3 cycles and 15 instructions on a q4_0 block, which holds q4_0
 * decode to half the read bandwidth. Here one 512-bit step covers 4 blocks of either type (72
 * bytes of q4_0, 136 of q8_0):
 *  - vpermt2w gathers the step's codes (every block's codes start at an even offset) into two
 *    vectors that hold each block's first 16 and last 16 codes: q4_0's low and high nibbles,
 *    q8_0's bytes made unsigned by flipping their sign bit (q + 128); one more vpermw/vpermt2w
 *    gathers the f16 scales, each block's repeated over the 4 int32 lanes that hold its sums
 *    (lanes j with j % 4 = the block);
 *  - x is arranged once per call to face the codes (arrange_x): the 4 blocks' first 16 values,
 *    then their last 16, so two vpdpbusd sum a row's 128 products of the step;
 *  - the code offset (8, or 128) is applied by starting each block's int32 sum at
 *    -offset * sum(x) of the block, so the sums are exact, as in the kernels above;
 *  - the int32 lanes are converted to f32 and multiply-added by d_w * d_x lane by lane: lanes of
 *    a block share its scale, so nothing is summed across lanes until the row is done.
 * A row's step costs two vpdpbusd, a multiply and an FMA. With a batch of rows (each decoded
 * weight step serves all of them) the activations' bytes, read from L2 again for every pair of
 * weight rows, were the limit, not those instructions: hence the compact step tails below. (On
 * one Zen 5 machine, 8 rows against a 70 MB q8_0 matrix: 2.6 ms with 256-byte steps, 1.7 ms
 * with 160; one row: 1.6 ms. q8_0's first layout, 2 blocks per step, was slower still.)
 * The row's last step, when K / 32 is not a multiple of 4, reads with byte masks (nothing past
 * the row) and meets zero padding in x, so it needs no other code. */
#define TV __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))
#define INLV static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))


static _Thread_local float *tl_xs;
static _Thread_local size_t tl_xs_cap;

/* Scratch (the calling thread's) for B arranged rows; row b starts at b * xs_row(K) bytes. */
static uint8_t *arrange_alloc(int B, int K) { return (uint8_t *)grow(&tl_xs, &tl_xs_cap, ((size_t)B * xs_row(K) + 3) / 4); }

/* arrange_x in plain C, for the AVX2 path: the same bytes. */
static void arrange_x_c(uint8_t *buf, const xq8 *xq, ng_type wt, int K, int b0, int b1) {
    const int nb = K / 32, ns = xs_steps(K), off = ng_type_base(wt) == NG_Q4_0 ? -8 : -128;
    const size_t xb = xs_row(K);
    for (int b = b0; b < b1; b++) {
        uint8_t *row = buf + (size_t)b * xb;
        for (int s = 0; s < ns; s++) {
            uint8_t *p = row + (size_t)s * XS_CODES, *t = row + (size_t)ns * XS_CODES + (size_t)s * XS_TAIL;
            for (int l = 0; l < 32; l++) { /* word l: block l % 4, its word l % 16 / 4 (+ 4 in the second half) */
                int blk = 4 * s + l % 4, wd = l % 16 / 4 + 4 * (l / 16);
                uint32_t v = 0;
                if (blk < nb) memcpy(&v, xq->q + (size_t)b * K + (size_t)blk * 32 + 4 * wd, 4);
                memcpy(p + 4 * l, &v, 4);
            }
            int32_t st[4] = {0};
            float d[4] = {0};
            for (int k = 0; k < 4 && 4 * s + k < nb; k++) {
                size_t o = (size_t)b * nb + 4 * s + k;
                st[k] = off * xq->s[o], d[k] = xq->d[o];
            }
            memcpy(t, st, sizeof st);
            memcpy(t + 16, d, sizeof d);
        }
    }
}

/* arrange_k (below) in plain C, for the AVX2 path: the same bytes. Vector z's lane l holds word
 * w of the block's first 128 codes (l < 8) or last 128: q4_kr's w = 8 (l % 8 / 2) + 2 z + l % 2
 * (sub-block l / 2), q6_kr's w = 4 (l % 8) + z (group l). */
static void arrange_k_c(uint8_t *buf, const xq8 *xq, ng_type wt, size_t xb, int K, int b0, int b1) {
    for (int b = b0; b < b1; b++)
        for (int kb = 0; kb < K / 256; kb++) {
            const int8_t *src = xq->q + (size_t)b * K + (size_t)kb * 256;
            uint8_t *dst = buf + (size_t)b * xb + (size_t)kb * 256;
            for (int z = 0; z < 4; z++)
                for (int l = 0; l < 16; l++) {
                    int w = wt == NG_Q6_KR ? 4 * (l % 8) + z : 8 * (l % 8 / 2) + 2 * z + l % 2;
                    memcpy(dst + 64 * z + 4 * l, src + 4 * (32 * (l / 8) + w), 4);
                }
        }
}

/* Arranges rows b0..b1-1 of the quantized activations into buf for the kernel. Blocks past
 * K / 32 are zero. */
TV static void arrange_x(uint8_t *buf, const xq8 *xq, ng_type wt, int K, int b0, int b1) {
    const int nb = K / 32, ns = xs_steps(K);
    const size_t xb = xs_row(K);
    const __m512i i0 = _mm512_set_epi32(27, 19, 11, 3, 26, 18, 10, 2, 25, 17, 9, 1, 24, 16, 8, 0);
    const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(4));
    const __m128i off = _mm_set1_epi32(ng_type_base(wt) == NG_Q4_0 ? -8 : -128);
    for (int b = b0; b < b1; b++) {
        uint8_t *row = buf + (size_t)b * xb;
        for (int s = 0; s < ns; s++) {
            uint8_t *p = row + (size_t)s * XS_CODES, *t = row + (size_t)ns * XS_CODES + (size_t)s * XS_TAIL;
            int kb = s * 4, nv = nb - kb < 4 ? nb - kb : 4; /* blocks in this step */
            const int8_t *src = xq->q + (size_t)b * K + (size_t)kb * 32;
            size_t o = (size_t)b * nb + kb;
            __mmask8 mb = (__mmask8)((1u << nv) - 1);
            /* blocks 0, 1 in a; 2, 3 in e (32 codes each) */
            __m512i a = _mm512_maskz_loadu_epi8(nv >= 2 ? ~(__mmask64)0 : ((__mmask64)1 << 32 * nv) - 1, src);
            __m512i e = nv > 2 ? _mm512_maskz_loadu_epi8(nv == 4 ? ~(__mmask64)0 : ((__mmask64)1 << 32) - 1, src + 64)
                               : _mm512_setzero_si512();
            _mm512_store_si512(p, _mm512_permutex2var_epi32(a, i0, e));
            _mm512_store_si512(p + 64, _mm512_permutex2var_epi32(a, i1, e));
            _mm_store_si128((__m128i *)t, _mm_mullo_epi32(_mm_maskz_loadu_epi32(mb, xq->s + o), off));
            _mm_store_ps((float *)(t + 16), _mm_maskz_loadu_ps(mb, xq->d + o));
        }
    }
}

/* Word indices for the gathers, numbered over the step's first 128 bytes (words 0..63), in the
 * lane order above: lane j takes words 2j, 2j+1 from block j % 4. q4_0 (18-byte blocks: scale,
 * 16 bytes of nibble pairs): codes over the 64 bytes at +0 and the 16 at +56 (index 32 + w - 28
 * for a word w past the first 64 bytes); scales over the 64 at +0. q8_0 (34-byte blocks: scale,
 * 32 codes): first and last 16 codes of each block, and the scales; 4 words of the second
 * halves lie past the first 128 bytes (bytes 128..135) and come from there by a masked vpermw
 * (lanes Q8_TAIL_LANES, indices Q8_TAIL). */
static const uint16_t Q4_CODES[32] = {1, 2, 10, 11, 19, 20, 28, 29, 3, 4, 12, 13, 21, 22, 30, 31,
                                      5, 6, 14, 15, 23, 24, 36, 37, 7, 8, 16, 17, 25, 26, 38, 39};
static const uint16_t Q4_SCALES[32] = {0, 9, 18, 27, 0, 9, 18, 27, 0, 9, 18, 27, 0, 9, 18, 27};
static const uint16_t Q8_LO[32] = {1, 2, 18, 19, 35, 36, 52, 53, 3, 4, 20, 21, 37, 38, 54, 55,
                                   5, 6, 22, 23, 39, 40, 56, 57, 7, 8, 24, 25, 41, 42, 58, 59};
static const uint16_t Q8_HI[32] = {9,  10, 26, 27, 43, 44, 60, 61, 11, 12, 28, 29, 45, 46, 62, 63,
                                   13, 14, 30, 31, 47, 48, 0,  0,  15, 16, 32, 33, 49, 50, 0,  0};
static const uint16_t Q8_TAIL[32] = {[22] = 0, [23] = 1, [30] = 2, [31] = 3};
#define Q8_TAIL_LANES 0xC0C00000u
static const uint16_t Q8_SCALES[32] = {0, 17, 34, 51, 0, 17, 34, 51, 0, 17, 34, 51, 0, 17, 34, 51};

static inline __mmask64 byte_mask(int n) { return n >= 64 ? ~(__mmask64)0 : n <= 0 ? 0 : ((__mmask64)1 << n) - 1; }

/* One weight step at p: codes as u8 in u[0] (first halves) and u[1] (second halves), block
 * scales in dw. Loads never overlap: a second 64-byte load overlapping the first costs Zen 5
 * nearly half the bandwidth when the lines come from memory. q4_0 reads 64 bytes at +0 and 16 at
 * +56; q8_0 64 at +0, 64 at +64 and 8 at +128. At the row's partial last step (tail) the loads
 * are masked to the row's n bytes. */
INLV void wstep512(const uint8_t *p, ng_type wt, const int tail, int n, __m512i *u, __m512 *dw) {
    if (wt == NG_Q4_0R || wt == NG_Q8_0R) { /* kernel order: rows are whole runs, never a tail */
        int64_t scales;
        memcpy(&scales, p + (wt == NG_Q4_0R ? 64 : 128), 8);
        *dw = _mm512_cvtph_ps(_mm256_set1_epi64x(scales)); /* lane j: block j % 4 */
        __m512i v = _mm512_loadu_si512(p);
        if (wt == NG_Q8_0R) {
            u[0] = v;
            u[1] = _mm512_loadu_si512(p + 64);
        } else {
            const __m512i m4 = _mm512_set1_epi8(15);
            u[0] = _mm512_and_si512(v, m4);
            u[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        return;
    }
    __m512i a = tail ? _mm512_maskz_loadu_epi8(byte_mask(n), p) : _mm512_loadu_si512(p);
    if (wt == NG_Q4_0) {
        __m512i b = tail ? _mm512_setzero_si512() : _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p + 56)));
        __m512i v = _mm512_permutex2var_epi16(a, _mm512_loadu_si512(Q4_CODES), b);
        *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_loadu_si512(Q4_SCALES), a)));
        const __m512i m4 = _mm512_set1_epi8(15);
        u[0] = _mm512_and_si512(v, m4);
        u[1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    } else {
        __m512i b = tail ? _mm512_maskz_loadu_epi8(byte_mask(n - 64), p + 64) : _mm512_loadu_si512(p + 64);
        __m512i t = tail ? _mm512_setzero_si512() : _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(p + 128)));
        __m512i lo = _mm512_permutex2var_epi16(a, _mm512_loadu_si512(Q8_LO), b);
        __m512i hi = _mm512_permutex2var_epi16(a, _mm512_loadu_si512(Q8_HI), b);
        hi = _mm512_mask_permutexvar_epi16(hi, Q8_TAIL_LANES, _mm512_loadu_si512(Q8_TAIL), t);
        *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(a, _mm512_loadu_si512(Q8_SCALES), b)));
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        u[0] = _mm512_xor_si512(lo, flip);
        u[1] = _mm512_xor_si512(hi, flip);
    }
}

/* One step of R weight rows (at p[r]) against NB arranged activation rows (row b's codes for the
 * step at xc + b * xb, its tail at xt + b * xb): acc[r][b] += (exact int32 sums of the step's
 * blocks) * d_w * d_x. Each activation vector is loaded once for the R rows, each decoded weight
 * step serves the NB rows. */
INLV void step512(__m512 acc[][GEMV_MAX_B], const uint8_t *const *p, const uint8_t *xc, const uint8_t *xt,
                  size_t xb, ng_type wt, const int NB, const int R, const int tail, int n, size_t pf) {
    __m512i u[4][2];
    __m512 dw[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        if (!tail) {
            const char *f = (const char *)p[r] + pf;
            _mm_prefetch(f, _MM_HINT_T0);
            _mm_prefetch(f + 64, _MM_HINT_T0);
            if (ng_type_base(wt) == NG_Q8_0) _mm_prefetch(f + 128, _MM_HINT_T0);
        }
        wstep512(p[r], wt, tail, n, u[r], &dw[r]);
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        const uint8_t *x = xc + b * xb, *t = xt + b * xb;
        __m512i x0 = _mm512_load_si512(x), x1 = _mm512_load_si512(x + 64);
        __m512i c = _mm512_zextsi128_si512(_mm_load_si128((const __m128i *)t));
        __m512 dx = _mm512_broadcast_f32x4(_mm_load_ps((const float *)(t + 16)));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m512i i = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(c, u[r][0], x0), u[r][1], x1);
            acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(dw[r], dx), acc[r][b]);
        }
    }
}

/* R weight rows (at w + row[r] * rs) against NB arranged activation rows, walked step by step
 * side by side so that R read streams are in flight. wt, NB, R are constants after inlining. */
INLV void q512_rows(float *y, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                    const float *bias, const int NB, const int R, const int *row, int N, int K, int s0, int s1,
                    __m512 *part, size_t pf) {
    const int sb = ng_type_base(wt) == NG_Q4_0 ? 72 : 136; /* bytes per step of 4 blocks */
    int nb = K / 32, full = nb / 4, rem = nb % 4, ns = xs_steps(K);
    const uint8_t *p[4];
    __m512 acc[4][GEMV_MAX_B];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        p[r] = (const uint8_t *)w + (size_t)row[r] * rs + (size_t)s0 * sb;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[r][b] = s0 ? part[r * NB + b] : _mm512_setzero_ps();
    }
    const uint8_t *xt = xs + (size_t)xs_steps(K) * XS_CODES; /* the steps' tails */
    int se = s1 < full ? s1 : full;
    for (int s = s0; s < se; s++) {
        step512(acc, p, xs + (size_t)s * XS_CODES, xt + (size_t)s * XS_TAIL, xb, wt, NB, R, 0, 0, pf);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) p[r] += sb;
    }
    if (rem && s1 == ns)
        step512(acc, p, xs + (size_t)full * XS_CODES, xt + (size_t)full * XS_TAIL, xb, wt, NB, R, 1, rem * (sb / 4),
                pf);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            if (s1 < ns) {
                part[r * NB + b] = acc[r][b];
                continue;
            }
            float v = _mm512_reduce_add_ps(acc[r][b]);
            y[(size_t)b * N + row[r]] = bias ? v + bias[row[r]] : v;
        }
    }
}

/* Rows n0..n1-1 as R interleaved sub-runs (as gemv512_body). When the NB rows' arranged
 * activations outgrow XS_L1 bytes (the down projection's long rows, K = n_ff), the rows go in
 * runs of XS_RUN and K in as few chunks as keep a chunk's activations within XS_L1, the
 * partial sums waiting in memory between chunks: a chunk's activations stay in L1 for the whole
 * run, and the weights are prefetched a row ahead (the next piece read), not along the row. On
 * one Zen 5 machine, 8 rows against a 2048 x 5632 q8_0 matrix from memory: 235 -> 259 GMAC/s
 * (runs of 16 or chunks of 11 steps were no better than no chunks). */
#define XS_L1 (32 << 10)
#define XS_RUN 64
/* Weight rows q512_body walks side by side for NB activation rows. */
#define Q512_R(NB) ((NB) <= 2 ? 4 : 2)
/* Bytes ahead that q512_body prefetches each of its streams for NB rows of type wt. */
static inline size_t q512_prefetch(ng_type wt, int NB) {
    return ng_type_base(wt) == NG_Q8_0 && Q512_R(NB) == 4 ? GEMV_PREFETCH_Q8 : GEMV_PREFETCH;
}
INLV void q512_body(float *y, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                    const float *bias, const int NB, int N, int K, int n0, int n1, steps_src st) {
    const int R = Q512_R(NB);
    int row[4], ns = xs_steps(K);
    /* one run of all rows and one chunk of all steps, unless the activations outgrow XS_L1 */
    int chunked = NB > 2 && (size_t)NB * xb > XS_L1;
    if (chunked) { /* the partial sums are the owner's: its steps are all its own */
        if (!st.own) return;
        st.ctr = NULL;
    }
    int chunks = chunked ? (int)(((size_t)NB * xb + XS_L1 - 1) / XS_L1) : 1, chunk = (ns + chunks - 1) / chunks;
    int run = chunked ? XS_RUN : n1 - n0;
    size_t pf = chunked ? rs : q512_prefetch(wt, NB);
    __m512 part[XS_RUN * GEMV_MAX_B];
    for (int a0 = n0; a0 < n1; a0 += run) {
        int a1 = n1 - a0 < run ? n1 : a0 + run, len = (a1 - a0) / R;
        int c0 = 0;
        if (!chunked && st.own && len > 0) prefetch_streams(w, rs, a0, len, R, pf);
        do { /* at least once: a row of no steps still writes its bias */
            int c1 = ns - c0 < chunk ? ns : c0 + chunk;
            for (steps_it it = steps_begin(st, len, R * rs); steps_next(&it);) {
                for (int i = it.i0; i < it.i1; i++) {
#pragma GCC unroll 4
                    for (int r = 0; r < R; r++) row[r] = a0 + r * len + i;
                    q512_rows(y, xs, xb, w, rs, wt, bias, NB, R, row, N, K, c0, c1, part + (size_t)i * R * NB,
                              pf);
                }
            }
        } while ((c0 += chunk) < ns);
        if (st.own)
            for (int n = a0 + R * len; n < a1; n++)
                q512_rows(y, xs, xb, w, rs, wt, bias, NB, 1, &n, N, K, 0, ns, NULL, q512_prefetch(wt, NB));
    }
}

INLV void q512_type(float *y, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                    const float *bias, int B, int N, int K, int n0, int n1, steps_src st) {
    switch (B) {
    case 1:
        q512_body(y, xs, xb, w, rs, wt, bias, 1, N, K, n0, n1, st);
        break;
    case 2:
        q512_body(y, xs, xb, w, rs, wt, bias, 2, N, K, n0, n1, st);
        break;
    case 3:
        q512_body(y, xs, xb, w, rs, wt, bias, 3, N, K, n0, n1, st);
        break;
    case 4:
        q512_body(y, xs, xb, w, rs, wt, bias, 4, N, K, n0, n1, st);
        break;
    case 5:
        q512_body(y, xs, xb, w, rs, wt, bias, 5, N, K, n0, n1, st);
        break;
    case 6:
        q512_body(y, xs, xb, w, rs, wt, bias, 6, N, K, n0, n1, st);
        break;
    case 7:
        q512_body(y, xs, xb, w, rs, wt, bias, 7, N, K, n0, n1, st);
        break;
    default:
        q512_body(y, xs, xb, w, rs, wt, bias, 8, N, K, n0, n1, st);
        break;
    }
}

TV static void qgemv512(float *y, const uint8_t *xs, size_t xb, const void *w, size_t rs, ng_type wt,
                        const float *bias, int B, int N, int K, int n0, int n1, steps_src st) {
    switch (wt) {
    case NG_Q4_0:
        q512_type(y, xs, xb, w, rs, NG_Q4_0, bias, B, N, K, n0, n1, st);
        break;
    case NG_Q4_0R:
        q512_type(y, xs, xb, w, rs, NG_Q4_0R, bias, B, N, K, n0, n1, st);
        break;
    case NG_Q8_0R:
        q512_type(y, xs, xb, w, rs, NG_Q8_0R, bias, B, N, K, n0, n1, st);
        break;
    default:
        q512_type(y, xs, xb, w, rs, NG_Q8_0, bias, B, N, K, n0, n1, st);
        break;
    }
}

/* -- q4_k and q6_k with AVX-512 VNNI, GEMV --
 * One super-block (256 values) per row step, its codes decoded into 64-byte vectors in x's own
 * order, so that x needs no arranging and one vpdpbusd takes 64 products:
 *  - q4_k: each 32-byte chunk c of the codes is broadcast to both halves of a vector and shifted
 *    right by 0 bits in the low half, 4 in the high half: sub-blocks 2c and 2c+1;
 *  - q6_k: each half h of the block reads its 64 bytes of low nibbles (ql) as one vector and its
 *    32 bytes of high bits (qh) broadcast to both halves, shifted per half so that one mask
 *    puts each value's two high bits in place: values 128h..128h+63 with the low nibbles,
 *    128h+64..128h+127 with the high ones.
 * The sums stay in their 16 int32 lanes until the row is done: each lane holds 4 values of one
 * scale group (q4_k: lanes 0-7 and 8-15 are two sub-blocks of 32; q6_k: 4 lanes per group of
 * 16), and one vpermps per vector spreads the groups' scales over their lanes (for q6_k a
 * second one spreads d_x, which changes every 32 values). The offsets (q4_k's minimum, q6_k's
 * -32) are blk_q4_k's and blk_q6_k's terms, one vector per block. Half or fewer of the
 * 256-bit kernel's instructions per super-block: on one Zen 5 machine, a 11008 x 4096 q4_k
 * matrix from memory reads at 33 GB/s on one thread instead of 21 (q6_k: 39 instead of 19). */
static const int32_t SPREAD8[4][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                       {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
                                       {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},
                                       {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}};
static const int32_t SPREAD4[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                       {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                       {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                       {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};

static inline __m512 spread(const int32_t *idx, __m512 v) __attribute__((always_inline, target("avx512f")));
static inline __m512 spread(const int32_t *idx, __m512 v) { return _mm512_permutexvar_ps(_mm512_loadu_si512(idx), v); }

/* A q4_k block's 8 scales times d, then its 8 mins times dmin, as one vector (8% faster than
 * q4_k_scales in blk512_q4_k), from the block's scale bytes as q4_k_scale_bytes gives them. */
INLV __m512 q4_k_scales512_of(const uint8_t *blk, __m128i bytes) {
    uint32_t dd;
    memcpy(&dd, blk, 4);
    __m512 sm = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
    return _mm512_mul_ps(
        sm, spread(SPREAD8[0], _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)))));
}

INLV __m512 q4_k_scales512(const uint8_t *blk) { return q4_k_scales512_of(blk, q4_k_scale_bytes(blk)); }

/* Half h of a q6_k block's codes (0..63) as two vectors of 64: values 128h..128h+63 (its low
 * nibbles) in *lo, 128h+64..128h+127 (its high nibbles) in *hi; each half's 64 bytes of low
 * nibbles are read as one vector, its 32 bytes of high bits broadcast to both halves and shifted
 * per half so that one mask puts each value's two high bits in place. */
INLV void q6_k_codes512(const uint8_t *blk, int h, __m512i *lo, __m512i *hi) {
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512i ql = _mm512_loadu_si512(blk + 64 * h), qh = _mm512_broadcast_i64x4(ld256(blk + 128 + 32 * h));
    *lo = _mm512_or_si512(_mm512_and_si512(ql, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, shl), m30));
    *hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                          _mm512_and_si512(_mm512_srlv_epi16(qh, shr), m30));
}

/* A q6_k block's 16 scales times d. */
INLV __m512 q6_k_scales512(const uint8_t *blk) {
    return _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 192)))),
        _mm512_set1_ps(half_at(blk + 208)));
}

INLV void blk512_q4_k(__m512 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB) {
    __m512 sm = q4_k_scales512(blk);
    __m256 scf = _mm512_castps512_ps256(sm), mnf = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sm), 1));
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    __m512i v[4];
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++)
        v[c] = _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i64x4(ld256(blk + 16 + 32 * c)), shift), m4);
    int nb32 = K / 32;
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        size_t o = (size_t)b * nb32 + (size_t)kb * 8;
        __m512 sx = _mm512_castps256_ps512(_mm256_mul_ps(scf, _mm256_loadu_ps(xq->d + o)));
        __m512 a = _mm512_sub_ps(acc[b], _mm512_zextps256_ps512(_mm256_mul_ps(mnf, _mm256_loadu_ps(xq->ds + o))));
        const int8_t *xb = xq->q + (size_t)b * K + (size_t)kb * 256;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[c], _mm512_loadu_si512(xb + 64 * c));
            a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), spread(SPREAD8[c], sx), a);
        }
        acc[b] = a;
    }
}

INLV void blk512_q6_k(__m512 *acc, const uint8_t *blk, const xq8 *xq, int kb, int K, const int NB) {
    __m512 sc = q6_k_scales512(blk);
    __m512i v[4];
    __m512 s[4];
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) q6_k_codes512(blk, h, &v[2 * h], &v[2 * h + 1]);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) s[c] = spread(SPREAD4[c], sc);
    __m512 c32 = _mm512_mul_ps(sc, _mm512_set1_ps(32));
    int nb32 = K / 32;
#pragma GCC unroll 8
    for (int b = 0; b < NB; b++) {
        __m512 dx = _mm512_castps256_ps512(_mm256_loadu_ps(xq->d + (size_t)b * nb32 + (size_t)kb * 8));
        __m512 a = _mm512_fnmadd_ps(c32, _mm512_loadu_ps(xq->ds16 + (size_t)b * (K / 16) + (size_t)kb * 16), acc[b]);
        const int8_t *xb = xq->q + (size_t)b * K + (size_t)kb * 256;
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[c], _mm512_loadu_si512(xb + 64 * c));
            a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(s[c], spread(SPREAD8[c], dx)), a);
        }
        acc[b] = a;
    }
}

/* R weight rows against NB activation rows, super-block by super-block (as qgemv_rows). */
INLV void k512_rows(float *y, const xq8 *xq, const void *w, size_t rs, ng_type wt, const float *bias, const int NB,
                    const int R, const int *row, int N, int K) {
    const int bs = wt == NG_Q4_K ? 144 : 210;
    const uint8_t *wr[4];
    __m512 acc[4][GEMV_MAX_B];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        wr[r] = (const uint8_t *)w + (size_t)row[r] * rs;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[r][b] = _mm512_setzero_ps();
    }
    for (int kb = 0; kb < K / 256; kb++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = wr[r] + (size_t)kb * bs;
#pragma GCC unroll 4
            for (int o = 0; o < bs; o += 64) _mm_prefetch((const char *)blk + GEMV_PREFETCH + o, _MM_HINT_T0);
            if (wt == NG_Q4_K)
                blk512_q4_k(acc[r], blk, xq, kb, K, NB);
            else
                blk512_q6_k(acc[r], blk, xq, kb, K, NB);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            float v = _mm512_reduce_add_ps(acc[r][b]);
            y[(size_t)b * N + row[r]] = bias ? v + bias[row[r]] : v;
        }
    }
}

INLV void k512_body(float *y, const xq8 *xq, const void *w, size_t rs, ng_type wt, const float *bias, const int NB,
                    int N, int K, int n0, int n1) {
    const int R = NB == 1 ? 4 : NB == 2 ? 2 : 1;
    int len = (n1 - n0) / R, row[4];
    for (int i = 0; i < len; i++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) row[r] = n0 + r * len + i;
        k512_rows(y, xq, w, rs, wt, bias, NB, R, row, N, K);
    }
    for (int n = n0 + R * len; n < n1; n++) k512_rows(y, xq, w, rs, wt, bias, NB, 1, &n, N, K);
}

INLV void k512_type(float *y, const xq8 *xq, const void *w, size_t rs, ng_type wt, const float *bias, int B, int N,
                    int K, int n0, int n1) {
    switch (B) {
    case 1:
        k512_body(y, xq, w, rs, wt, bias, 1, N, K, n0, n1);
        break;
    case 2:
        k512_body(y, xq, w, rs, wt, bias, 2, N, K, n0, n1);
        break;
    case 3:
        k512_body(y, xq, w, rs, wt, bias, 3, N, K, n0, n1);
        break;
    case 4:
        k512_body(y, xq, w, rs, wt, bias, 4, N, K, n0, n1);
        break;
    case 5:
        k512_body(y, xq, w, rs, wt, bias, 5, N, K, n0, n1);
        break;
    case 6:
        k512_body(y, xq, w, rs, wt, bias, 6, N, K, n0, n1);
        break;
    case 7:
        k512_body(y, xq, w, rs, wt, bias, 7, N, K, n0, n1);
        break;
    default:
        k512_body(y, xq, w, rs, wt, bias, 8, N, K, n0, n1);
        break;
    }
}

/* -- q4_kr with AVX-512 VNNI, GEMV --
 * q4_k's kernel above spends most of its instructions on the scales: the 6-bit scales and mins
 * assembled in general registers and inserted into a vector, and four vpermps a row's block to
 * spread them over lanes that each hold another pair of sub-blocks. In q4_kr (ng_reorder_rows)
 * each of the four vectors of codes a block's nibbles make holds sub-block s in lanes 2 s and
 * 2 s + 1, so a block's four vpdpbusd add into the same lanes: one conversion, one spread of the
 * scales and one multiply-add per block. x is arranged once per call to face the codes
 * (arrange_k: vector z's lane l holds word 8 (l / 2) + 2 z + l % 2 of the block's 256 codes), and
 * the scale bytes come from two byte shuffles (q4_kr_scale_bytes). On one Zen 5 machine, 256 rows
 * of K = 2048 (in L2), one thread: 32 GB/s in q4_k's kernel, 52 in this one. */
/* arrange_k's word indices for vector 0 (vector z: + 2 z), over two 32-word halves of x's block:
 * lanes 0-7 from its first 128 codes, 8-15 from its last. */
static const int32_t Q4KR_X[16] = {0, 1, 8, 9, 16, 17, 24, 25, 0, 1, 8, 9, 16, 17, 24, 25};

/* Lane l: sub-block l / 2's scale (as sm holds them: 8 scales, 8 mins). */
static const int32_t SPREAD2[16] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7};

/* The same for q6_kr (kr512_rows): vector v's lane g holds word 4 g + v, its group g's codes 4 v
 * to 4 v + 3. */
static const int32_t Q6KR_X[16] = {0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28};

/* Rows b0..b1-1 of the quantized activations arranged for the q4_kr or q6_kr kernel: K bytes a
 * row at row b * xb of buf. */
TV static void arrange_k(uint8_t *buf, const xq8 *xq, ng_type wt, size_t xb, int K, int b0, int b1) {
    const __m512i i0 = _mm512_loadu_si512(wt == NG_Q6_KR ? Q6KR_X : Q4KR_X);
    const int step = wt == NG_Q6_KR ? 1 : 2;
    for (int b = b0; b < b1; b++)
        for (int kb = 0; kb < K / 256; kb++) {
            const int8_t *src = xq->q + (size_t)b * K + (size_t)kb * 256;
            uint8_t *dst = buf + (size_t)b * xb + (size_t)kb * 256;
            __m512i n0 = _mm512_loadu_si512(src), n1 = _mm512_loadu_si512(src + 64);
            __m512i n2 = _mm512_loadu_si512(src + 128), n3 = _mm512_loadu_si512(src + 192);
            for (int z = 0; z < 4; z++) {
                __m512i i = _mm512_add_epi32(i0, _mm512_set1_epi32(step * z));
                __m512i a = _mm512_permutex2var_epi32(n0, i, n1), c = _mm512_permutex2var_epi32(n2, i, n3);
                _mm512_storeu_si512(dst + 64 * z, _mm512_mask_blend_epi32(0xFF00, a, c));
            }
        }
}

/* A q6_kr block's codes (0..63) as four vectors: vector v's lane g holds codes 4 v..4 v + 3 of
 * group g, its low 4 bits from nibble v % 2 of the 64 bytes v / 2, its top 2 from bits 2 v of
 * the next 64 (ng_reorder_rows). */
INLV void q6_kr_codes512(const uint8_t *blk, __m512i *c) {
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    __m512i z0 = _mm512_loadu_si512(blk), z1 = _mm512_loadu_si512(blk + 64),
            h = _mm512_loadu_si512(blk + 128);
    /* lo | (hi & 0x30): vpternlogd 0xF8 (A | B & C) */
    c[0] = _mm512_ternarylogic_epi32(_mm512_and_si512(z0, m4), _mm512_slli_epi16(h, 4), m30, 0xF8);
    c[1] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(z0, 4), m4), _mm512_slli_epi16(h, 2),
                                     m30, 0xF8);
    c[2] = _mm512_ternarylogic_epi32(_mm512_and_si512(z1, m4), h, m30, 0xF8);
    c[3] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(z1, 4), m4), _mm512_srli_epi16(h, 2),
                                     m30, 0xF8);
}

/* R weight rows of q4_kr or q6_kr against NB activation rows (arranged by arrange_k). q6_kr: lane
 * g of the four vectors of codes is group g (16 values) throughout, so its scale needs no spread;
 * d_x (one per 32 values) is spread over the groups once per block for all rows, and the code
 * offset -32 is -32 d sc_g times the group's d_x sum(x). */
INLV void kr512_rows(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                     ng_type wt, const float *bias, const int NB, const int R, const int *row, int N, int K) {
    const int k6 = wt == NG_Q6_KR, bs = k6 ? 210 : 144;
    const __m512i m4 = _mm512_set1_epi8(15), sp2 = _mm512_loadu_si512(SPREAD2);
    const uint8_t *wr[4];
    __m512 acc[4][GEMV_MAX_B];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        wr[r] = (const uint8_t *)w + (size_t)row[r] * rs;
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) acc[r][b] = _mm512_setzero_ps();
    }
    const int nb32 = K / 32;
    for (int kb = 0; kb < K / 256; kb++) {
        __m512 dxs[GEMV_MAX_B], ds[GEMV_MAX_B];
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            /* lane l: d_x of sub-block (q6_kr: of group) l / 2; q4_kr's mins' lanes 8-15: d_x sum(x);
             * q6_kr's: 32 d_x sum(x) of group l */
            size_t o = (size_t)b * nb32 + (size_t)kb * 8;
            dxs[b] = _mm512_permutexvar_ps(sp2, _mm512_castps256_ps512(_mm256_loadu_ps(xq->d + o)));
            if (k6)
                ds[b] = _mm512_mul_ps(_mm512_loadu_ps(xq->ds16 + (size_t)b * (K / 16) + (size_t)kb * 16),
                                      _mm512_set1_ps(32));
            else
                ds[b] = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_setzero_pd(), _mm256_castps_pd(_mm256_loadu_ps(xq->ds + o)), 1));
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = wr[r] + (size_t)kb * bs;
#pragma GCC unroll 4
            for (int o = 0; o < bs; o += 64) _mm_prefetch((const char *)blk + GEMV_PREFETCH + o, _MM_HINT_T0);
            __m512i v[4];
            __m512 sm, scs;
            if (k6) {
                q6_kr_codes512(blk, v);
                sm = scs = q6_k_scales512(blk);
            } else {
                sm = q4_k_scales512_of(blk, q4_kr_scale_bytes(blk));
                scs = _mm512_permutexvar_ps(sp2, sm);
                __m512i z0 = _mm512_loadu_si512(blk + 16), z1 = _mm512_loadu_si512(blk + 80);
                v[0] = _mm512_and_si512(z0, m4), v[1] = _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4);
                v[2] = _mm512_and_si512(z1, m4), v[3] = _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4);
            }
#pragma GCC unroll 8
            for (int b = 0; b < NB; b++) {
                const uint8_t *xk = xs + (size_t)b * xb + (size_t)kb * 256;
                __m512i i = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[0], _mm512_loadu_si512(xk));
                __m512i j = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v[1], _mm512_loadu_si512(xk + 64));
                i = _mm512_dpbusd_epi32(i, v[2], _mm512_loadu_si512(xk + 128));
                j = _mm512_dpbusd_epi32(j, v[3], _mm512_loadu_si512(xk + 192));
                /* minus dmin m_s d_x sum(x) (q6_kr: 32 d sc_g d_x sum(x)) */
                __m512 a = _mm512_fnmadd_ps(sm, ds[b], acc[r][b]);
                acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i, j)),
                                            _mm512_mul_ps(scs, dxs[b]), a);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 8
        for (int b = 0; b < NB; b++) {
            float v = _mm512_reduce_add_ps(acc[r][b]);
            y[(size_t)b * N + row[r]] = bias ? v + bias[row[r]] : v;
        }
    }
}

/* Rows n0..n1-1 as R interleaved runs (as q512_body), their steps from st: a thread done with its
 * share takes blocks of the others' (the GEMV's work stealing). */
INLV void kr512_body(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                     ng_type wt, const float *bias, const int NB, int N, int K, int n0, int n1,
                     steps_src st) {
    const int R = NB == 1 ? 4 : NB == 2 ? 2 : 1;
    int len = (n1 - n0) / R, row[4];
    if (st.own && len > 0) prefetch_streams(w, rs, n0, len, R, GEMV_PREFETCH);
    for (steps_it it = steps_begin(st, len, R * rs); steps_next(&it);)
        for (int i = it.i0; i < it.i1; i++) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) row[r] = n0 + r * len + i;
            kr512_rows(y, xq, xs, xb, w, rs, wt, bias, NB, R, row, N, K);
        }
    if (st.own)
        for (int n = n0 + R * len; n < n1; n++) kr512_rows(y, xq, xs, xb, w, rs, wt, bias, NB, 1, &n, N, K);
}

INLV void kr512_type(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                     ng_type wt, const float *bias, int B, int N, int K, int n0, int n1, steps_src st) {
    switch (B) {
    case 1:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 1, N, K, n0, n1, st);
        break;
    case 2:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 2, N, K, n0, n1, st);
        break;
    case 3:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 3, N, K, n0, n1, st);
        break;
    case 4:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 4, N, K, n0, n1, st);
        break;
    case 5:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 5, N, K, n0, n1, st);
        break;
    case 6:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 6, N, K, n0, n1, st);
        break;
    case 7:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 7, N, K, n0, n1, st);
        break;
    default:
        kr512_body(y, xq, xs, xb, w, rs, wt, bias, 8, N, K, n0, n1, st);
        break;
    }
}

/* q4_kr or q6_kr rows n0..n1-1, their steps from st (a share of a job with counters or of several
 * matrices: qgemv_job). */
TV static void qgemv512_kr(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                           ng_type wt, const float *bias, int B, int N, int K, int n0, int n1, steps_src st) {
    if (wt == NG_Q4_KR)
        kr512_type(y, xq, xs, xb, w, rs, NG_Q4_KR, bias, B, N, K, n0, n1, st);
    else
        kr512_type(y, xq, xs, xb, w, rs, NG_Q6_KR, bias, B, N, K, n0, n1, st);
}

TV static void qgemv512_k(float *y, const xq8 *xq, const uint8_t *xs, size_t xb, const void *w, size_t rs,
                          ng_type wt, const float *bias, int B, int N, int K, int n0, int n1) {
    if (wt == NG_Q4_KR || wt == NG_Q6_KR)
        qgemv512_kr(y, xq, xs, xb, w, rs, wt, bias, B, N, K, n0, n1, (steps_src){NULL, 1});
    else if (wt == NG_Q4_K)
        k512_type(y, xq, w, rs, NG_Q4_K, bias, B, N, K, n0, n1);
    else
        k512_type(y, xq, w, rs, NG_Q6_K, bias, B, N, K, n0, n1);
}

/* -- q8_0 and q4_0 GEMM with AVX-512 VNNI --
 * Many activation rows (a prompt, a step of many sequences) against quantized weights. The
 * GEMV's lanes run along k, so each of its outputs ends in a horizontal sum and each product
 * step reloads both operands; here the lanes run along 16 weight rows instead. A panel of QNR
 * weight rows holds, per block of 32 k and group of 4 k, QR vectors of 16 rows' 4 codes as u8
 * (wstep512's decoding, transposed: q4_0's codes 0..15 stand for -8..7, q8_0's are the code +
 * 128), then the rows' scales; an activation row's 4 codes of a group (s8) are one broadcast,
 * and one vpdpbusd adds 64 products into 16 outputs of that row. The micro-kernel keeps QNR
 * weight rows x QBW activation rows: per block, 8 x QR panel vectors, 8 x QBW broadcasts and
 * 8 x QR x QBW vpdpbusd into int32 sums that start at -offset x (the block's sum of activation
 * codes), then per sum one conversion and one multiply-add by its row's scale times d_x. The
 * block sums are exact, as in the GEMV, so the GEMV's error bound holds; each output sums its
 * blocks in order, on one thread, whatever the thread count. A panel (32 x K codes, 396 KB at
 * K = 11008) stays in L2 while the activation blocks stream past it.
 * The broadcasts set the shape: on Zen 5 a vpbroadcastd from memory takes a vector pipe as
 * vpdpbusd does (one thread, independent sums: 6.4 G vpdpbusd/s from registers, 4.1 G with a
 * broadcast each, 2.2 G with the broadcast as vpdpbusd's memory operand), so each broadcast
 * feeds QR vpdpbusd. One thread, B = 512, N = K = 2048, q4_0, speed against the integer GEMV
 * in the same run, two runs each: 16 x 12 tiles 1.50 / 1.66, 32 x 6 1.67 / 1.69, 48 x 4 1.80 /
 * 1.85, 64 x 3 1.37 / 1.39, 32 x 7 1.78 / 1.91 (32 x 6 in that run 1.70 / 1.84); on two threads
 * at TinyLlama's shapes 32 x 6 and 48 x 4 were even (1000-1090 GOP/s), and panels of 32 rows
 * leave no tails on LLaMA's 2048 / 5632 / 256 rows.
 * q4_k (qmicro_k) is a q4_0 whose blocks are its sub-blocks of 32: codes 0..15 with no offset,
 * scale d sc_j; its minimum (w = d sc_j q - dmin m_j) adds one multiply-add per sum and block,
 * -dmin m_j times the block's sum of x (d_x times its codes' sum), from a third vector of the
 * panel's rows. GPT-2 124M's 128-token prompt: 2090 -> 4440 tok/s (bench, one 2-core Zen 5 VM),
 * q4_0's 4400. q6_k (qmicro_k6) has a scale per 16 values: each block is two sums of 4 groups,
 * each starting from -32 times its half's activation code sum, scaled by its own vector (the
 * panel's third holds the second halves' scales); GPT-2 124M's 128-token prompt 1550-2120 ->
 * 3640 tok/s. */
enum { QR = 2, QNR = 16 * QR, QBW = 6 };
/* Panel bytes per block: 8 x QR code vectors, QR x 16 f32 scales; for q4_k / q6_k (QP_BLK_K) QR x
 * 16 more f32 after the scales (q4_k's mins, q6_k's second halves' scales). Activation bytes per
 * block (QX_BLK): 8 x QBW groups, QBW sum starts, QBW scales, QBW scales times code sums (q4_k's
 * mins; q6_k's second starts). */
#define QP_BLK (QR * (8 * 64 + 64))
#define QP_BLK_K (QR * (8 * 64 + 128))
#define QX_BLK (8 * QBW * 4 + QBW * 12)

/* The codes' offset that each block's sum starts from (times the activation codes' sum): q4_0's
 * 8, q8_0's 128 (its codes + 128 as u8), none for q4_k (its minimum is a float term). */
static inline int qx_offset(ng_type wt) {
    return ng_type_base(wt) == NG_Q4_K ? 0 : ng_type_base(wt) == NG_Q4_0 ? 8 : 128;
}

/* Panel bytes per block for weights of type wt. */
static inline size_t qp_blk(ng_type wt) {
    return ng_type_base(wt) == NG_Q4_K || ng_type_base(wt) == NG_Q6_K ? QP_BLK_K : QP_BLK;
}

/* A k-quant step's two per-lane factor vectors (wstep512_q4_k, wstep512_q6_k and their kernel
 * orders): v's lanes picked by idx into *a, by idx + off into *b. */
INLV void spread_pair(__m512 v, const int32_t *idx, int off, __m512 *a, __m512 *b) {
    __m512i k = _mm512_loadu_si512(idx);
    *a = _mm512_permutexvar_ps(k, v);
    *b = _mm512_permutexvar_ps(_mm512_add_epi32(k, _mm512_set1_epi32(off)), v);
}

/* Lane j of a q6_k step's u[0] (u[1]: + 4): dword group j / 4 of block j % 4, blocks 0 and 1 being
 * the first and last 32 bytes of the step's low-nibble vector, 2 and 3 those of its high one. */
static const int32_t Q6K_GROUPS[16] = {0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27};
static const int32_t Q6K_SCALES[2][16] = {{0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6},
                                          {8, 10, 12, 14, 8, 10, 12, 14, 8, 10, 12, 14, 8, 10, 12, 14}};

/* Step s2 (0 or 1: values 128 s2 .. 128 s2 + 127, 4 blocks of 32) of the q6_k super-block at p as
 * wstep512_q4_k gives one of q4_k's: codes 0..63 (offset 32, q6_k_codes512's) in u[0] / u[1]; d
 * times the scale of each block's first 16 values in dw, of its last 16 in dw2 (lane j: block
 * j % 4). */
INLV void wstep512_q6_k(const uint8_t *p, int s2, __m512i *u, __m512 *dw, __m512 *dw2) {
    __m512i a, b;
    q6_k_codes512(p, s2, &a, &b);
    __m512i g = _mm512_loadu_si512(Q6K_GROUPS);
    u[0] = _mm512_permutex2var_epi32(a, g, b);
    u[1] = _mm512_permutex2var_epi32(a, _mm512_add_epi32(g, _mm512_set1_epi32(4)), b);
    spread_pair(q6_k_scales512(p), Q6K_SCALES[s2], 1, dw, dw2);
}

/* The same for q6_kr: u[0]'s lane j (group 2 (4 s2 + j % 4), the first 16 codes of block j % 4 of
 * the step; word group j / 4) from code vector j / 4's lane of that group, u[1]'s from the next
 * group's; lanes 0-7 from vectors 0, 1 (indices 16 and up: vector 1), 8-15 from vectors 2, 3. */
static const int32_t Q6KR_GROUPS[2][16] = {{0, 2, 4, 6, 16, 18, 20, 22, 0, 2, 4, 6, 16, 18, 20, 22},
                                           {8, 10, 12, 14, 24, 26, 28, 30, 8, 10, 12, 14, 24, 26, 28, 30}};

INLV void wstep512_q6_kr(const uint8_t *p, int s2, __m512i *u, __m512 *dw, __m512 *dw2) {
    __m512i c[4];
    q6_kr_codes512(p, c);
    __m512i g = _mm512_loadu_si512(Q6KR_GROUPS[s2]);
    for (int h = 0; h < 2; h++, g = _mm512_add_epi32(g, _mm512_set1_epi32(1)))
        u[h] = _mm512_mask_blend_epi32(0xFF00, _mm512_permutex2var_epi32(c[0], g, c[1]),
                                       _mm512_permutex2var_epi32(c[2], g, c[3]));
    spread_pair(q6_k_scales512(p), Q6K_SCALES[s2], 1, dw, dw2);
}

/* Lane j of a q4_k step's u[0] (u[1]: + 4): dword group j / 4 of sub-block j % 4, which sits in
 * the low nibbles (even sub-blocks) or the high ones (odd) of the step's first 32 bytes
 * (sub-blocks 0, 1) or its last 32 (2, 3). */
static const int32_t Q4K_GROUPS[16] = {0, 16, 8, 24, 1, 17, 9, 25, 2, 18, 10, 26, 3, 19, 11, 27};
static const int32_t Q4K_SCALES[2][16] = {{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3},
                                          {4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7}};

/* Step s2 (0 or 1: sub-blocks 4 s2 .. 4 s2 + 3) of the q4_k super-block at p as wstep512 gives
 * one of q4_0's: codes (0..15, no offset) in u[0] (each sub-block's first 16) and u[1] (its last
 * 16), lane j holding group j / 4 of sub-block j % 4; d times the sub-blocks' scales in dw and
 * dmin times their mins in mw (lane j: sub-block j % 4). Sub-block 2c is the low nibbles of the
 * 32 bytes of codes c, 2c + 1 their high nibbles. */
INLV void wstep512_q4_k(const uint8_t *p, int s2, __m512i *u, __m512 *dw, __m512 *mw) {
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i q = _mm512_loadu_si512(p + 16 + 64 * s2);
    __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    __m512i g = _mm512_loadu_si512(Q4K_GROUPS);
    u[0] = _mm512_permutex2var_epi32(lo, g, hi);
    u[1] = _mm512_permutex2var_epi32(lo, _mm512_add_epi32(g, _mm512_set1_epi32(4)), hi);
    spread_pair(q4_k_scales512(p), Q4K_SCALES[s2], 8, dw, mw);
}

/* The same for q4_kr: u[0]'s lane j (sub-block 4 s2 + j % 4, word group j / 4) from the low
 * nibbles of the codes' first half (groups 0, 1) or their high nibbles (2, 3), u[1]'s from the
 * second half (groups 4-7); sub-block s's groups in lanes 2 s, 2 s + 1 (ng_reorder_rows). */
static const int32_t Q4KR_GROUPS[2][16] = {{0, 2, 4, 6, 1, 3, 5, 7, 16, 18, 20, 22, 17, 19, 21, 23},
                                           {8, 10, 12, 14, 9, 11, 13, 15, 24, 26, 28, 30, 25, 27, 29, 31}};

INLV void wstep512_q4_kr(const uint8_t *p, int s2, __m512i *u, __m512 *dw, __m512 *mw) {
    const __m512i m4 = _mm512_set1_epi8(15), g = _mm512_loadu_si512(Q4KR_GROUPS[s2]);
    for (int h = 0; h < 2; h++) {
        __m512i q = _mm512_loadu_si512(p + 16 + 64 * h);
        u[h] = _mm512_permutex2var_epi32(_mm512_and_si512(q, m4), g,
                                         _mm512_and_si512(_mm512_srli_epi16(q, 4), m4));
    }
    spread_pair(q4_k_scales512(p), Q4K_SCALES[s2], 8, dw, mw);
}

/* Panels of pr weight rows (QNR, or the AVX2 path's QNR2) that N rows take (the last one partial). */
static inline int qpanels(int N, int pr) { return (N + pr - 1) / pr; }

/* Rows w.. (nr of them, rs bytes apart) into the panel P, K / 32 blocks. */
INLV void qpack_w_type(uint8_t *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    const int k4 = ng_type_base(wt) == NG_Q4_K, k6 = ng_type_base(wt) == NG_Q6_K,
              sb = ng_type_base(wt) == NG_Q4_0 ? 72 : 136, nb = K / 32, ns = xs_steps(K);
    const size_t pb = qp_blk(wt);
    for (int v = 0; v < QR; v++)
        for (int s = 0; s < ns; s++) {
            int rem = nb - 4 * s < 4 ? nb - 4 * s : 0; /* blocks in a partial last step (not q4_k's) */
            __m512i u0[16], u1[16], dw[16], mw[16];
            for (int r = 0; r < 16; r++) {
                __m512i u[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
                __m512 d = _mm512_setzero_ps(), m = _mm512_setzero_ps();
                const uint8_t *p = (const uint8_t *)w + (size_t)(16 * v + r) * rs;
                if (16 * v + r < nr && wt == NG_Q4_KR)
                    wstep512_q4_kr(p + (size_t)(s / 2) * 144, s % 2, u, &d, &m);
                else if (16 * v + r < nr && k4)
                    wstep512_q4_k(p + (size_t)(s / 2) * 144, s % 2, u, &d, &m);
                else if (16 * v + r < nr && wt == NG_Q6_KR)
                    wstep512_q6_kr(p + (size_t)(s / 2) * 210, s % 2, u, &d, &m);
                else if (16 * v + r < nr && k6)
                    wstep512_q6_k(p + (size_t)(s / 2) * 210, s % 2, u, &d, &m);
                else if (16 * v + r < nr && rem)
                    wstep512(p + (size_t)s * sb, wt, 1, rem * (sb / 4), u, &d);
                else if (16 * v + r < nr)
                    wstep512(p + (size_t)s * sb, wt, 0, 0, u, &d);
                u0[r] = u[0], u1[r] = u[1], dw[r] = _mm512_castps_si512(d), mw[r] = _mm512_castps_si512(m);
            }
            transpose16(u0);
            transpose16(u1);
            transpose16(dw);
            if (k4 || k6) transpose16(mw);
            /* lane j of a row's step holds group j / 4 of block j % 4 (u0: codes 0-15, u1: 16-31) */
            for (int b = 0; b < 4 && 4 * s + b < nb; b++) {
                uint8_t *q = P + (size_t)(4 * s + b) * pb;
#pragma GCC unroll 4
                for (int g = 0; g < 4; g++) {
                    _mm512_store_si512(q + 64 * (g * QR + v), u0[4 * g + b]);
                    _mm512_store_si512(q + 64 * ((g + 4) * QR + v), u1[4 * g + b]);
                }
                _mm512_store_si512(q + 64 * (8 * QR + v), dw[b]);
                if (k4 || k6) _mm512_store_si512(q + 64 * (9 * QR + v), mw[b]);
            }
        }
}

TV static void qpack_w(uint8_t *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    switch (wt) {
    case NG_Q4_0: qpack_w_type(P, w, rs, NG_Q4_0, nr, K); break;
    case NG_Q4_0R: qpack_w_type(P, w, rs, NG_Q4_0R, nr, K); break;
    case NG_Q8_0R: qpack_w_type(P, w, rs, NG_Q8_0R, nr, K); break;
    case NG_Q4_K: qpack_w_type(P, w, rs, NG_Q4_K, nr, K); break;
    case NG_Q4_KR:
        qpack_w_type(P, w, rs, NG_Q4_KR, nr, K);
        break;
    case NG_Q6_K: qpack_w_type(P, w, rs, NG_Q6_K, nr, K); break;
    case NG_Q6_KR:
        qpack_w_type(P, w, rs, NG_Q6_KR, nr, K);
        break;
    default: qpack_w_type(P, w, rs, NG_Q8_0, nr, K); break;
    }
}

/* qpack_x's sum starts, scales and d * s (for each block the QBW rows' of each, 18 words) of 16
 * blocks at a time: the 6 rows' starts and scales and 4 rows' d * s, a vector each over the 16
 * blocks, transposed into a 64-byte store per block, the last 2 rows' d * s stored one by one.
 * One block and row at a time, these were most of qpack_x's time (4.4% of a GPT-2 124M 512-token
 * q8_0 prefill's samples); in-process A/B on one 2-core Zen 5 VM, the same logits: that prefill
 * -3.1% (faster in 12 of 16 rounds), TinyLlama 1.1B's shape (6 layers) q4_0 -2.3%. */
TV static void qpack_x_sums(uint8_t *X, const xq8 *xq, int off, int nb, int b0, int bn) {
    for (int i0 = 0; i0 < nb; i0 += 16) {
        int m = nb - i0 < 16 ? nb - i0 : 16;
        __mmask16 mk = (__mmask16)(m == 16 ? 0xffff : (1u << m) - 1);
        __m512i v[16];
        __m512 e[2];
#pragma GCC unroll 6
        for (int r = 0; r < QBW; r++) {
            size_t at = (size_t)(b0 + r) * nb + (size_t)i0;
            __mmask16 mr = r < bn ? mk : 0;
            v[r] = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mr, xq->s + at), _mm512_set1_epi32(-off));
            v[QBW + r] = _mm512_castps_si512(_mm512_maskz_loadu_ps(mr, xq->d + at));
            __m512 ds = _mm512_maskz_loadu_ps(mr, xq->ds + at);
            if (r < 4)
                v[2 * QBW + r] = _mm512_castps_si512(ds);
            else
                e[r - 4] = ds;
        }
        transpose16(v);
        _Alignas(64) float t[2][16];
        _mm512_store_ps(t[0], e[0]);
        _mm512_store_ps(t[1], e[1]);
#pragma GCC unroll 16
        for (int b = 0; b < 16; b++)
            if (b < m) {
                float *p = (float *)(X + (size_t)(i0 + b) * QX_BLK + 8 * QBW * 4);
                _mm512_storeu_si512(p, v[b]);
                p[16] = t[0][b], p[17] = t[1][b];
            }
    }
}

/* Quantized activation rows b0..b0+bn-1 of xq into one block X ([block][group][QBW] codes,
 * then QBW sum starts and QBW scales per block); rows past bn are zero. The codes go in as a
 * transpose of the 6 rows' 8 groups: the rows paired in 3 vectors, each output vector picked
 * from two of them and then the third; the starts and scales by qpack_x_sums, but q6_k's (two
 * starts from each half's code sum) row by row. */
_Static_assert(QBW == 6, "qpack_x transposes 6 activation rows");
_Static_assert(QX_BLK == 8 * QBW * 4 + 18 * 4, "qpack_x_sums stores 18 words after the codes");
TV static void qpack_x(uint8_t *X, const xq8 *xq, ng_type wt, int K, int b0, int bn) {
    const int nb = K / 32, off = qx_offset(wt), k6 = ng_type_base(wt) == NG_Q6_K;
    int32_t iab[3][16], ic[3][16];
    __mmask16 mc[3] = {0, 0, 0};
    for (int o = 0; o < 8 * QBW; o++) { /* output word o: group o / QBW of row o % QBW */
        int r = o % QBW, g = o / QBW, k = o / 16, l = o % 16;
        iab[k][l] = (r >= 2 ? 16 : 0) + (r % 2) * 8 + g; /* rows 0-1 in the first, 2-3 in the second */
        ic[k][l] = (r % 2) * 8 + g;
        if (r >= 4) mc[k] |= (__mmask16)(1u << l);
    }
    __m512i vab[3], vc[3];
    for (int k = 0; k < 3; k++) vab[k] = _mm512_loadu_si512(iab[k]), vc[k] = _mm512_loadu_si512(ic[k]);
    for (int blk = 0; blk < nb; blk++) {
        int32_t *g = (int32_t *)(X + (size_t)blk * QX_BLK), *s0 = g + 8 * QBW;
        float *d = (float *)(s0 + QBW), *ds = d + QBW;
        __m256i row[QBW];
        for (int r = 0; r < QBW; r++) {
            size_t i = (size_t)(b0 + r) * nb + blk;
            row[r] = r < bn ? _mm256_loadu_si256((const __m256i *)(xq->q + i * 32)) : _mm256_setzero_si256();
            if (k6) { /* two starts: -32 times each half's code sum, the second in ds's place */
                int h0 = 0;
                for (int k = 0; k < 16 && r < bn; k++) h0 += xq->q[i * 32 + k];
                d[r] = r < bn ? xq->d[i] : 0;
                s0[r] = r < bn ? -32 * h0 : 0;
                ((int32_t *)ds)[r] = r < bn ? -32 * (xq->s[i] - h0) : 0; /* the slot is never a float here */
            }
        }
        __m512i p[3];
        for (int k = 0; k < 3; k++) p[k] = _mm512_inserti64x4(_mm512_castsi256_si512(row[2 * k]), row[2 * k + 1], 1);
        for (int k = 0; k < 3; k++)
            _mm512_storeu_si512(g + 16 * k, _mm512_mask_permutexvar_epi32(_mm512_permutex2var_epi32(p[0], vab[k], p[1]),
                                                                          mc[k], vc[k], p[2]));
    }
    if (!k6) qpack_x_sums(X, xq, off, nb, b0, bn);
}

/* QNR weight rows (panel P) x QBW activation rows (block X) over nb blocks: y rows
 * b0..b0+bn-1, columns n0..n0+nr-1. */
/* kind: QM_PLAIN (q8_0, q4_0), QM_MINS (q4_k: a minimum term per block), QM_HALVES (q6_k: a scale
 * and a code offset per 16 values, so two sums per block) */
enum { QM_PLAIN, QM_MINS, QM_HALVES };
INLV void qmicro_body(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0, int nr,
                      int b0, int bn, int N, gemm_pf *pf, int pfn, const int kind) {
    __m512 acc[QR][QBW];
#pragma GCC unroll 4
    for (int v = 0; v < QR; v++)
#pragma GCC unroll 12
        for (int c = 0; c < QBW; c++) acc[v][c] = _mm512_setzero_ps();
    for (int blk = 0; blk < nb; blk++) {
        const uint8_t *pw = P + (size_t)blk * (kind != QM_PLAIN ? QP_BLK_K : QP_BLK);
        const int32_t *px = (const int32_t *)(X + (size_t)blk * QX_BLK);
        const float *dx = (const float *)(px + 9 * QBW), *dsx = dx + QBW;
        for (int i = 0; i < pfn; i++) gemm_pf_step(pf);
        /* one sum per block over its 8 groups, or (q6_k) one per 4 groups, each with its start
         * (px's, then the second half's in dsx's place) and its scale (the panel's 8th, then 9th
         * vector of the rows) */
        const int parts = kind == QM_HALVES ? 2 : 1, gn = 8 / parts;
        for (int h = 0; h < parts; h++) {
            const int32_t *start = h ? (const int32_t *)dsx : px + 8 * QBW;
            __m512i s[QR][QBW];
#pragma GCC unroll 12
            for (int c = 0; c < QBW; c++) {
                __m512i t = _mm512_set1_epi32(start[c]);
#pragma GCC unroll 4
                for (int v = 0; v < QR; v++) s[v][c] = t;
            }
#pragma GCC unroll 8
            for (int g = h * gn; g < (h + 1) * gn; g++) {
                __m512i wv[QR];
#pragma GCC unroll 4
                for (int v = 0; v < QR; v++) wv[v] = _mm512_load_si512(pw + 64 * (g * QR + v));
#pragma GCC unroll 12
                for (int c = 0; c < QBW; c++) {
                    __m512i xb = _mm512_set1_epi32(px[g * QBW + c]);
#pragma GCC unroll 4
                    for (int v = 0; v < QR; v++) s[v][c] = _mm512_dpbusd_epi32(s[v][c], wv[v], xb);
                }
            }
#pragma GCC unroll 4
            for (int v = 0; v < QR; v++) {
                __m512 dw = _mm512_load_ps((const float *)(pw + 64 * ((8 + h) * QR + v)));
#pragma GCC unroll 12
                for (int c = 0; c < QBW; c++)
                    acc[v][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[v][c]),
                                                _mm512_mul_ps(dw, _mm512_set1_ps(dx[c])), acc[v][c]);
                /* q4_k: minus dmin * min times the block's sum of x (d_x times its codes' sum) */
                if (kind == QM_MINS) {
                    __m512 mw = _mm512_load_ps((const float *)(pw + 64 * (9 * QR + v)));
#pragma GCC unroll 12
                    for (int c = 0; c < QBW; c++)
                        acc[v][c] = _mm512_fnmadd_ps(mw, _mm512_set1_ps(dsx[c]), acc[v][c]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < QR; v++) {
        int n = nr - 16 * v;
        if (n <= 0) break;
        __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + n0 + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int c = 0; c < QBW; c++)
            if (c < bn) _mm512_mask_storeu_ps(y + (size_t)(b0 + c) * N + n0 + 16 * v, m, _mm512_add_ps(acc[v][c], bv));
    }
}

TV static void qmicro(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0, int nr,
                      int b0, int bn, int N, gemm_pf *pf, int pfn) {
    qmicro_body(y, P, X, bias, nb, n0, nr, b0, bn, N, pf, pfn, QM_PLAIN);
}

TV static void qmicro_k(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0,
                        int nr, int b0, int bn, int N, gemm_pf *pf, int pfn) {
    qmicro_body(y, P, X, bias, nb, n0, nr, b0, bn, N, pf, pfn, QM_MINS);
}

TV static void qmicro_k6(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0,
                         int nr, int b0, int bn, int N, gemm_pf *pf, int pfn) {
    qmicro_body(y, P, X, bias, nb, n0, nr, b0, bn, N, pf, pfn, QM_HALVES);
}

/* -- q8_0 and q4_0 GEMM on the AVX2 path --
 * qmicro's scheme on 256-bit vectors, for the AVX2 path's prompts: a panel of QNR2 weight rows
 * holds, per block of 32 k, 8 groups of the 16 rows' 4 codes as u8 (two vectors of 8 rows: the
 * AVX-512 panel's layout at QR = 1), then the 16 rows' scales; the activation blocks are
 * qpack_x's (QBW rows), taken QBW2 rows at a time. The tile, 16 weight rows x 3 activation rows,
 * keeps 6 int32 sums and 6 f32 accumulators in registers beside 2 weight vectors and a
 * broadcast: 15 of AVX2's 16. The sums are AVX-VNNI's vpdpbusd: the GEMM runs only where the CPU
 * has it (see int8_gemm_on). Each output adds its blocks' exact sums times its scales in block
 * order, as qmicro does: the same bits as the AVX-512 GEMM. On one 2-core Zen 5 VM with the AVX2
 * kernels forced, 512 rows against q4_0r at N = K = 2048: 497 GOP/s, 55% of the 256-bit
 * vpdpbusd's measured peak (the AVX-512 GEMM's tiles of 32 x 6 with 512-bit sums: see qmicro). */
enum { QNR2 = 16, QBW2 = 3 };
#define QP2_BLK (8 * 64 + 64) /* panel bytes per block: 8 groups x 16 rows x 4 codes, 16 f32 scales */
_Static_assert(QBW % QBW2 == 0, "the activation blocks split into whole tiles");

/* Block b of a row at p of file type wt (q4_0 or q8_0): its 32 codes in order as u8 (q4_0: 0..15
 * for -8..7; q8_0: the code + 128) and its scale in *d. */
INLQ __m256i qblock256(const uint8_t *p, ng_type wt, int b, float *d) {
    if (wt == NG_Q4_0) {
        p += (size_t)b * 18, *d = half_at(p);
        return nibbles256(_mm_loadu_si128((const __m128i *)(p + 2)));
    }
    p += (size_t)b * 34, *d = half_at(p);
    return _mm256_xor_si256(ld256(p + 2), _mm256_set1_epi8((char)0x80));
}

/* Transposes 8 x 8 32-bit words: word i of r[j] goes to word j of r[i]. */
INLQ void transpose8x32(__m256i *r) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) { /* rows 4h..4h+3: words 0 / 4, 1 / 5, 2 / 6, 3 / 7 of the lanes */
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[4 + i], 0x31);
    }
}

/* The 4 blocks of a kernel-order step at p (q4_0r or q8_0r) as qblock256 gives them, into c[0..3]
 * and d[0..3]: the 4 x 4 words of each 64 bytes of codes (group g of block j at word 4g + j)
 * transposed in registers (words4x4, as rdecode256 puts a file's q4_0 into kernel order). */
INLQ void qstep256(const uint8_t *p, ng_type wt, __m256i *c, float *d) {
    __m256i t[2][2]; /* [half of the codes][blocks 0, 1 | blocks 2, 3] */
    for (int h = 0; h < (wt == NG_Q8_0R ? 2 : 1); h++) /* groups 0, 1 | groups 2, 3 */
        words4x4(ld256(p + 64 * h), ld256(p + 64 * h + 32), &t[h][0], &t[h][1]);
    for (int j = 0; j < 4; j++) d[j] = half_at(p + (wt == NG_Q8_0R ? 128 : 64) + 2 * j);
    for (int q = 0; q < 2; q++) {
        if (wt == NG_Q8_0R) { /* block 2q: the low halves' 16 codes, then the high halves' */
            c[2 * q] = _mm256_permute2x128_si256(t[0][q], t[1][q], 0x20);
            c[2 * q + 1] = _mm256_permute2x128_si256(t[0][q], t[1][q], 0x31);
        } else { /* q4_0's 16 bytes of nibble pairs each */
            c[2 * q] = nibbles256(_mm256_castsi256_si128(t[0][q]));
            c[2 * q + 1] = nibbles256(_mm256_extracti128_si256(t[0][q], 1));
        }
    }
}

/* Rows w.. (nr <= QNR2 of them, rs bytes apart) into the panel P, K / 32 blocks; rows past nr
 * are zero. In kernel order a step's 4 blocks at a time (qstep256). */
INLQ void qpack_w256_type(uint8_t *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    if (wt == NG_Q4_0R || wt == NG_Q8_0R) { /* K a multiple of 128: whole steps */
        const size_t sb = wt == NG_Q4_0R ? 72 : 136;
        for (int st = 0; st < K / 128; st++)
            for (int h = 0; h < 2; h++) {
                __m256i c[4][8];
                float d[4][8];
                for (int r = 0; r < 8; r++) {
                    int n = 8 * h + r;
                    __m256i u[4];
                    float e[4] = {0, 0, 0, 0};
                    if (n < nr) qstep256((const uint8_t *)w + (size_t)n * rs + st * sb, wt, u, e);
                    for (int j = 0; j < 4; j++) c[j][r] = n < nr ? u[j] : _mm256_setzero_si256(), d[j][r] = e[j];
                }
                for (int j = 0; j < 4; j++) {
                    uint8_t *q = P + (size_t)(4 * st + j) * QP2_BLK;
                    transpose8x32(c[j]);
                    for (int g = 0; g < 8; g++) _mm256_store_si256((__m256i *)(q + 64 * g + 32 * h), c[j][g]);
                    memcpy(q + 8 * 64 + 32 * h, d[j], sizeof d[j]);
                }
            }
        return;
    }
    for (int b = 0; b < K / 32; b++) {
        uint8_t *q = P + (size_t)b * QP2_BLK;
        float *sc = (float *)(q + 8 * 64);
        for (int h = 0; h < 2; h++) {
            __m256i c[8];
            for (int r = 0; r < 8; r++) {
                int n = 8 * h + r;
                float d = 0;
                c[r] = n < nr ? qblock256((const uint8_t *)w + (size_t)n * rs, wt, b, &d) : _mm256_setzero_si256();
                sc[n] = d;
            }
            transpose8x32(c);
            for (int g = 0; g < 8; g++) _mm256_store_si256((__m256i *)(q + 64 * g + 32 * h), c[g]);
        }
    }
}

TQ static void qpack_w256(uint8_t *P, const void *w, size_t rs, ng_type wt, int nr, int K) {
    switch (wt) {
    case NG_Q4_0: qpack_w256_type(P, w, rs, NG_Q4_0, nr, K); break;
    case NG_Q4_0R: qpack_w256_type(P, w, rs, NG_Q4_0R, nr, K); break;
    case NG_Q8_0R: qpack_w256_type(P, w, rs, NG_Q8_0R, nr, K); break;
    default: qpack_w256_type(P, w, rs, NG_Q8_0, nr, K); break;
    }
}

/* qpack_x in plain C: the same bytes. */
static void qpack_x_c(uint8_t *X, const xq8 *xq, ng_type wt, int K, int b0, int bn) {
    const int nb = K / 32, off = qx_offset(wt);
    for (int blk = 0; blk < nb; blk++) {
        int32_t *g = (int32_t *)(X + (size_t)blk * QX_BLK), *s0 = g + 8 * QBW;
        float *d = (float *)(s0 + QBW), *ds = d + QBW;
        for (int r = 0; r < QBW; r++) {
            size_t i = (size_t)(b0 + r) * nb + blk;
            for (int k = 0; k < 8; k++) {
                int32_t v = 0;
                if (r < bn) memcpy(&v, xq->q + i * 32 + 4 * k, 4);
                g[k * QBW + r] = v;
            }
            s0[r] = r < bn ? -off * xq->s[i] : 0;
            d[r] = r < bn ? xq->d[i] : 0;
            ds[r] = r < bn ? xq->ds[i] : 0;
        }
    }
}

/* QNR2 weight rows (panel P) x the bn <= QBW activation rows of block X, QBW2 at a time, over nb
 * blocks: y rows b0..b0+bn-1, columns n0..n0+nr-1. vnni as dot_u8s8's (qmicro256: AVX-VNNI). */
INLQ void qmicro256_body(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0, int nr,
                         int b0, int bn, int N, gemm_pf *pf, int pfn, const int vnni) {
    for (int c0 = 0; c0 < bn; c0 += QBW2) {
        __m256 acc[2][QBW2];
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++)
#pragma GCC unroll 3
            for (int c = 0; c < QBW2; c++) acc[v][c] = _mm256_setzero_ps();
        for (int blk = 0; blk < nb; blk++) {
            const uint8_t *pw = P + (size_t)blk * QP2_BLK;
            const int32_t *px = (const int32_t *)(X + (size_t)blk * QX_BLK) + c0;
            const float *dx = (const float *)(px + 9 * QBW);
            if (c0 == 0)
                for (int i = 0; i < pfn; i++) gemm_pf_step(pf);
            __m256i s[2][QBW2];
#pragma GCC unroll 3
            for (int c = 0; c < QBW2; c++) s[0][c] = s[1][c] = _mm256_set1_epi32(px[8 * QBW + c]);
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                __m256i w0 = _mm256_load_si256((const __m256i *)(pw + 64 * g));
                __m256i w1 = _mm256_load_si256((const __m256i *)(pw + 64 * g + 32));
#pragma GCC unroll 3
                for (int c = 0; c < QBW2; c++) {
                    __m256i xb = _mm256_set1_epi32(px[g * QBW + c]);
                    s[0][c] = dot_u8s8(s[0][c], w0, xb, vnni);
                    s[1][c] = dot_u8s8(s[1][c], w1, xb, vnni);
                }
            }
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
                __m256 dw = _mm256_load_ps((const float *)(pw + 8 * 64) + 8 * v);
#pragma GCC unroll 3
                for (int c = 0; c < QBW2; c++)
                    acc[v][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[v][c]), _mm256_mul_ps(dw, _mm256_set1_ps(dx[c])),
                                                acc[v][c]);
            }
        }
        for (int v = 0; v < 2; v++) {
            int n = nr - 8 * v;
            if (n <= 0) break;
            float bv[8] = {0}, o[8];
            if (bias) memcpy(bv, bias + n0 + 8 * v, (size_t)(n < 8 ? n : 8) * sizeof(float));
            for (int c = 0; c < QBW2 && c0 + c < bn; c++) {
                float *dst = y + (size_t)(b0 + c0 + c) * N + n0 + 8 * v;
                __m256 r = _mm256_add_ps(acc[v][c], _mm256_loadu_ps(bv));
                if (n >= 8) {
                    _mm256_storeu_ps(dst, r);
                } else {
                    _mm256_storeu_ps(o, r);
                    memcpy(dst, o, (size_t)n * sizeof(float));
                }
            }
        }
    }
}

TQ static void qmicro256(float *y, const uint8_t *P, const uint8_t *X, const float *bias, int nb, int n0, int nr,
                         int b0, int bn, int N, gemm_pf *pf, int pfn) {
    qmicro256_body(y, P, X, bias, nb, n0, nr, b0, bn, N, pf, pfn, VNNI_VEX);
}

#endif /* __x86_64__ */

static const simd_isa *isa_for(int path) {
#if defined(__x86_64__)
    if (path == PATH_AVX512) return &ISA512;
    if (path == PATH_AVX2) return &ISA256;
#endif
    (void)path;
    return NULL;
}

/* The bf16 GEMM with vdpbf16ps (ng_kernel_set_bf16_dot): on unless turned off, where the CPU
 * has AVX512-BF16 and the AVX-512 path runs. */
static int g_bf16_dot = 1;

void ng_kernel_set_bf16_dot(int on) { g_bf16_dot = on != 0; }

static int bf16_dot_on(int path) {
#if defined(__x86_64__)
    return g_bf16_dot && path == PATH_AVX512 && ng_cpu_features()->avx512bf16;
#else
    (void)path;
    return 0;
#endif
}

int ng_kernel_bf16_dot(void) { return bf16_dot_on(current_path()); }

/* The GEMM's kernels for weights of type wt on path. */
static const simd_isa *gemm_isa(int path, ng_type wt) {
#if defined(__x86_64__)
    if (wt == NG_BF16 && bf16_dot_on(path)) return &ISA512BF;
#endif
    return isa_for(path);
}

/* Thread t's share of the rows, then (with counters) what is left of the others' shares, the
 * next thread's first. */
static void gemv_job(void *ctx, int t, int T) {
    const mm_job *j = ctx;
    for (int v = 0; v < (j->ctr ? T : 1); v++) {
        mm_seg seg[MM_MAX];
        for (int i = 0, n = share_walk(j, t, T, v, seg); i < n; i++)
            j->isa->gemv(seg[i].y, j->x, seg[i].w, j->rs, j->wt, seg[i].bias, j->B, seg[i].N, j->K, seg[i].n0,
                         seg[i].n1, seg[i].st);
    }
}

/* j's matrices: one (y, w, bias of N rows), or those of mm (N the rows of all). */
static void matmul_gemv(const simd_isa *isa, float *y, const float *x, const void *w, ng_type wt,
                        const float *bias, int B, int N, int K, int nt, const mm_multi *mm) {
    mm_job j = {.y = y, .x = x, .bias = bias, .w = w, .wt = wt, .B = B, .N = N, .K = K, .rs = ng_row_size(wt, K),
                .isa = isa, .groups = (N + 15) / 16, .multi = mm};
    if (nt > j.groups) nt = j.groups;
    j.ctr = steps_ctrs(nt, mm ? mm->n : 1);
    ng_team_run(nt, gemv_job, &j);
}

/* K is cut into chunks of GEMM_KC k's (twice as many in pairs of bf16) so that a packed weight
 * block (NR x GEMM_KC floats, 192 KB) stays in L2 while the activation blocks of the chunk sweep
 * past it; the accumulators carry over between chunks through y, so the sum order is that of one
 * pass. Chunks of 1024, which kept the activation blocks in L2 instead, were slower wherever K
 * was longer, the tiles going through y once more per chunk and the activations streaming from
 * L3 at no cost here: on one 2-core Zen 5 VM, B = 512, N = 2048, K = 5632 (TinyLlama's down
 * projection) 324 -> 359 GFLOP/s with f32 weights, 582 -> 655 with bf16; K = 2048, bf16, 582 ->
 * 647. Longer chunks (8192 f32) were slower at K = 11008 (LLaMA 7B's). */
#define GEMM_KC 4096

static void gemm_job(void *ctx, int t, int T) {
    const mm_job *j = ctx;
    const simd_isa *isa = j->isa;
    int B = j->B, N = j->N, K = j->K, NR = isa->nr, BW = isa->bw, Kp = j->Kp, KC = j->KC, bblk = j->bblk;
    size_t xblk = (size_t)BW * Kp / isa->xk; /* one XT block's floats */
    /* contiguous shares of blocks, as the row-wise work before splits the rows (see qgemm_job):
     * in-process A/B on one 2-core Zen 5 VM, GPT-2 124M prefill, against blocks dealt in turn
     * (same logits): 128 tokens f16 -1.2%, bf16 -2.8% (faster in 15 of 20 rounds each); 512
     * tokens f16 -1.7% / -0.8%, bf16 +0.7% / -1.1% (4-5 of 8: within the noise) */
    for (int bb = bblk * t / T; bb < bblk * (t + 1) / T; bb++)
        isa->pack_x(j->XT + bb * xblk, j->x, bb * BW, B - bb * BW < BW ? B - bb * BW : BW, K, Kp, BW);
    float *P = grow(&tl_scratch, &tl_scratch_cap, (size_t)NR * KC / isa->xk + 1);
    ng_team_barrier();
    /* Work items run n-block-major, so a thread converts each weight block once per chunk
     * and then sweeps the activation blocks; splitting items (not n-blocks) keeps both
     * threads busy when N is small. Every chunk gives a thread the same items. */
    int64_t i0 = j->items * t / T, i1 = j->items * (t + 1) / T;
    for (int c = 0; c < j->nchunks; c++) {
        int k0 = c * KC, kl = K - k0 < KC ? K - k0 : KC;
        int klp = (kl + isa->kch - 1) / isa->kch * isa->kch;
        const float *cbias = c == j->nchunks - 1 ? j->bias : NULL;
        int packed = -1;
        gemm_pf pf = {0};
        for (int64_t i = i0; i < i1; i++) {
            int nb = (int)(i / bblk), bb = (int)(i % bblk);
            int n0 = nb * NR, nr = N - n0 < NR ? N - n0 : NR;
            int b0 = bb * BW, bn = B - b0 < BW ? B - b0 : BW;
            if (nb != packed) {
                const char *wb = (const char *)j->w + (size_t)n0 * j->rs + ng_row_size(j->wt, k0);
                isa->pack_w(P, wb, j->rs, j->wt, nr, kl);
                packed = nb;
                /* The next block's rows, fetched a line per micro-kernel step over this one's
                 * products: packing them from memory waited on every line. GPT-2 124M prefill of
                 * 128 tokens, in-process A/B: bf16 67 -> 54.5 ms, f16 92 -> 86 ms. */
                int rn = N - n0 - NR < NR ? N - n0 - NR : NR;
                pf = (gemm_pf){wb + NR * j->rs, j->rs, 0, ng_row_size(j->wt, kl), rn};
            }
            isa->micro(j->y, P, j->XT + bb * xblk + (size_t)k0 * BW / isa->xk, cbias, klp, n0, nr, b0, bn, N,
                       c == 0, &pf);
        }
    }
}

static void matmul_gemm(const simd_isa *isa, float *y, const float *x, const void *w, ng_type wt,
                        const float *bias, int B, int N, int K, int nt) {
    mm_job j = {.y = y, .x = x, .bias = bias, .w = w, .wt = wt, .B = B, .N = N, .K = K, .rs = ng_row_size(wt, K),
                .isa = isa};
    int NR = isa->nr, BW = isa->bw;
    j.Kp = (K + isa->kch - 1) / isa->kch * isa->kch;
    j.KC = j.Kp < GEMM_KC * isa->xk ? j.Kp : GEMM_KC * isa->xk;
    j.bblk = (B + BW - 1) / BW;
    j.nchunks = K > 0 ? (K + j.KC - 1) / j.KC : 1;
    j.items = (int64_t)((N + NR - 1) / NR) * j.bblk;
    j.XT = grow(&tl_xt, &tl_xt_cap, (size_t)j.bblk * BW * j.Kp / isa->xk + 1);
    ng_team_run(nt > j.items ? (int)j.items : nt, gemm_job, &j);
}

static int qgemv_wide(int path, ng_type wt) {
    ng_type b = ng_type_base(wt);
    return path == PATH_AVX512 && ng_cpu_features()->avx512vnni && (b == NG_Q8_0 || b == NG_Q4_0);
}

/* The 512-bit GEMVs whose threads share steps (steps_src): qgemv512's and kr512_rows' types. */
static int shares_steps(int path, ng_type wt) {
    return qgemv_wide(path, wt) || (kr_type(wt) && path == PATH_AVX512 && ng_cpu_features()->avx512vnni);
}

/* AVX-VNNI on the AVX2 path (ng_kernel_set_avx_vnni): on unless turned off, where the CPU has it. */
static int g_avx_vnni = 1;

void ng_kernel_set_avx_vnni(int on) { g_avx_vnni = on != 0; }

static int avx_vnni_on(int path) { return g_avx_vnni && path == PATH_AVX2 && ng_cpu_features()->avxvnni; }

int ng_kernel_avx_vnni(void) { return avx_vnni_on(current_path()); }

/* The int8 GEMM (ng_kernel_set_int8_gemm): on unless turned off, where qgemv_wide holds (and for
 * q4_k / q6_k where AVX-512 VNNI runs: qmicro_k, qmicro_k6), and on the AVX2 path where AVX-VNNI
 * runs (see qmicro256: without it, vpmaddubsw + vpmaddwd + vpaddd for each sum left the GEMM
 * slower than the integer GEMV at every batch, 0.69-0.93x for q4_0r at 16-512 rows of
 * TinyLlama's 2048 x 2048). */
static int g_int8_gemm = 1;

void ng_kernel_set_int8_gemm(int on) { g_int8_gemm = on != 0; }

static int int8_gemm_on(int path, ng_type wt, int B) {
    ng_type b = ng_type_base(wt);
    if (g_int8_gemm && (b == NG_Q4_K || b == NG_Q6_K)) /* the AVX-512 GEMM only (qmicro_k, qmicro_k6) */
        return path == PATH_AVX512 && ng_cpu_features()->avx512vnni && B >= QGEMM_MIN_B;
    if (!g_int8_gemm || (b != NG_Q8_0 && b != NG_Q4_0)) return 0;
    if (qgemv_wide(path, wt)) return B >= QGEMM_MIN_B;
    return avx_vnni_on(path) && B >= QGEMM256_MIN_B;
}

int ng_kernel_int8_gemm(ng_type wt, int rows) { return int8_gemm_on(current_path(), wt, rows); }

static int mm_regime(int path, ng_type wt, int B);
enum { MM_PORTABLE, MM_QGEMV, MM_QGEMM, MM_GEMV, MM_GEMM };

int ng_kernel_int8_rows(ng_type wt, int rows) {
    int r = mm_regime(current_path(), wt, rows);
    return r == MM_QGEMV || r == MM_QGEMM;
}

/* Where the kernel-order types have an integer GEMV: AVX-512 VNNI (any batch), and the AVX2 path
 * (q8_0r only with AVX-VNNI: see rdecode256's comment; q4_kr and q6_kr: kr256_block). */
static int qgemv_native(int path, ng_type wt) {
    ng_type r = ng_type_reordered(ng_type_base(wt));
    return qgemv_wide(path, wt) ||
           (path == PATH_AVX2 && (r == NG_Q4_0R || (r == NG_Q8_0R && avx_vnni_on(path)))) ||
           (kr_type(r) && (path == PATH_AVX2 || (path == PATH_AVX512 && ng_cpu_features()->avx512vnni)));
}

/* Wherever the kernel order has its kernel (qgemv_native). On the AVX2 path that is q4_0, q4_k,
 * q6_k, and q8_0 where AVX-VNNI runs q8_0r: with it, matrices of GPT-2 124M's shapes (2 threads,
 * 16 of them in turn, alternating the two orders in one process on one 2-core Zen 5 VM) read
 * 1.13-1.52x faster in kernel order than the block-at-a-time q8_0 kernel's, and TinyLlama's
 * 2048 x 5632 1.01-1.20x; GPT-2 124M's 128-token prompt 899-912 -> 1551-1614 tok/s. q4_kr and
 * q6_kr there (bench with the AVX2 kernels forced, against the previous build in alternating
 * runs): GPT-2 124M decode q4_k 301 / 300 -> 443 / 443 tok/s, q6_k 220 / 221 -> 359 / 352; its
 * 128-token prompt q4_k 737 / 754 -> 1126 / 1103, q6_k 639 / 638 -> 964 / 962. */
ng_type ng_matmul_native(ng_type wt) {
    return wt == ng_type_base(wt) && qgemv_native(current_path(), wt) ? ng_type_reordered(wt) : wt;
}

#if defined(__x86_64__)
/* Row b0's view of quantized activations (rows b0.. of xq). */
static xq8 xq8_from(const xq8 *xq, int b0, int K) {
    size_t nb = (size_t)b0 * (K / 32);
    xq8 v = {xq->q + (size_t)b0 * K, xq->d + nb, xq->s + nb, xq->ds + nb, xq->ds16 + 2 * nb};
    return v;
}

/* quantize_x with AVX2, a block (four vectors) at a time: the same maximum (vmaxps passes over a
 * NaN in its first operand, as the scalar comparison does), products, clamp, rounding to nearest
 * even, NaN to 0, and exact sums. The scalar code, compiled for baseline x86-64, took ~3 ns a
 * value on one Zen 5 core: 6 us of a 16-row product of 2048 values that took 7.3 us on the AVX2
 * path (0.7 on AVX-512's). */
T256 static void quantize_x256(xq8 *xq, const float *x, size_t nb) {
    const __m256 sign = _mm256_set1_ps(-0.0f), hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    for (size_t i = 0; i < nb; i++) {
        const float *v = x + i * 32;
        __m256 a[4], m = _mm256_setzero_ps(), un = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            a[j] = _mm256_loadu_ps(v + 8 * j);
            m = _mm256_max_ps(_mm256_andnot_ps(sign, a[j]), m);
            un = _mm256_or_ps(un, _mm256_cmp_ps(a[j], a[j], _CMP_UNORD_Q));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        float id = amax > 0 && amax <= FLT_MAX ? 127.0f / amax : 0.0f;
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            __m256 t = _mm256_mul_ps(a[j], _mm256_set1_ps(id));
            __m256 ok = _mm256_cmp_ps(t, t, _CMP_ORD_Q);
            t = _mm256_max_ps(_mm256_min_ps(t, hi), lo);
            t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[j] = _mm256_and_si256(_mm256_cvttps_epi32(t), _mm256_castps_si256(ok));
        }
        /* packs interleave the 128-bit lanes: one vpermd puts the 32 codes in order */
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(xq->q + i * 32),
                            _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        int h[2];
        for (int k = 0; k < 2; k++) {
            __m256i sv = _mm256_add_epi32(q[2 * k], q[2 * k + 1]);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sv), _mm256_extracti128_si256(sv, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            h[k] = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
        }
        xq8_sums(xq, i, amax, _mm256_movemask_ps(un) != 0, h[0], h[1]);
    }
}

/* Quantizes the nb blocks of 32 values at x into xq with path's code (the same bits either way). */
static void quantize_on(int path, xq8 *xq, const float *x, size_t nb) {
    if (path == PATH_AVX512)
        quantize_x512(xq, x, nb);
    else if (path == PATH_AVX2)
        quantize_x256(xq, x, nb);
    else
        quantize_x(xq, x, nb);
}

/* Quantizes rows b0..b1-1 of x into xq and, where xs is given, arranges them for the path's
 * kernel (q4_kr / q6_kr: arrange_k, or arrange_k_c on the AVX2 path). */
static void prepare_rows(int path, const float *x, xq8 *xq, uint8_t *xs, ng_type wt, int K, int b0, int b1) {
    xq8 v = xq8_from(xq, b0, K);
    quantize_on(path, &v, x + (size_t)b0 * K, (size_t)(b1 - b0) * K / 32);
    if (xs && kr_type(wt) && path != PATH_AVX512) /* the AVX2 path */
        arrange_k_c(xs, xq, wt, xs_row(K), K, b0, b1);
    else if (xs && kr_type(wt))
        arrange_k(xs, xq, wt, xs_row(K), K, b0, b1);
    else if (xs && path == PATH_AVX512)
        arrange_x(xs, xq, wt, K, b0, b1);
    else if (xs) arrange_x_c(xs, xq, wt, K, b0, b1);
}
#endif

/* Activation rows of one pass over the weights, when a batch has more than GEMV_MAX_B: as many
 * as keep their quantized values within about QX_CACHE bytes (an L2's share), so that the groups
 * of GEMV_MAX_B rows meet each weight run while it is in cache. Weight runs are QROWS rows. */
#define QX_CACHE (384 << 10)
#define QROWS 16

#if defined(__x86_64__)
/* The first q512_prefetch bytes of the read streams that q512_body starts its share of one
 * activation row with (Q512_R(1) streams per matrix, never chunked). */
static void q512_share_prefetch(const mm_job *j, int t, int T) {
    mm_seg seg[MM_MAX];
    for (int i = 0, n = share_walk(j, t, T, 0, seg); i < n; i++) {
        int len = (seg[i].n1 - seg[i].n0) / Q512_R(1);
        if (len > 0) prefetch_streams(seg[i].w, j->rs, seg[i].n0, len, Q512_R(1), q512_prefetch(j->wt, 1));
    }
}

static void qgemv_job(void *ctx, int t, int T) {
    const mm_job *j = ctx;
    int B = j->B, N = j->N, K = j->K, pass = j->pass;
    qgemv_fn kern = avx_vnni_on(j->path)                                               ? qgemv_avxvnni
                    : j->path != PATH_AVX512 || !ng_cpu_features()->avx512vnni         ? qgemv_avx2
                    : ng_type_base(j->wt) == NG_Q4_K || ng_type_base(j->wt) == NG_Q6_K ? qgemv512_k
                                                                                       : qgemv_vnni;
    if (j->shared) {
        prepare_rows(j->path, j->x, j->xq, j->xs, j->wt, K, B * t / T, B * (t + 1) / T);
        ng_team_barrier();
    }
    if (j->ready) { /* one row (see matmul_qgemv) */
        if (t == 0) {
            prepare_rows(j->path, j->x, j->xq, j->xs, j->wt, K, 0, B);
            atomic_store_explicit(j->ready, 1, memory_order_release);
        } else {
            if (j->xs) q512_share_prefetch(j, t, T);
            for (int i = 0; !atomic_load_explicit(j->ready, memory_order_acquire); i++) ng_team_wait_step(i);
        }
    }
    if (j->ctr || j->multi) { /* one group of rows (B <= GEMV_MAX_B), 512-bit kernel: shares as gemv_job's */
        for (int v = 0; v < (j->ctr ? T : 1); v++) {
            mm_seg seg[MM_MAX];
            for (int i = 0, n = share_walk(j, t, T, v, seg); i < n; i++)
                if (j->wide)
                    qgemv512(seg[i].y, j->xs, j->xb, seg[i].w, j->rs, j->wt, seg[i].bias, B, seg[i].N, K,
                             seg[i].n0, seg[i].n1, seg[i].st);
                else /* q4_kr, q6_kr */
                    qgemv512_kr(seg[i].y, j->xq, j->xs, j->xb, seg[i].w, j->rs, j->wt, seg[i].bias, B,
                                seg[i].N, K, seg[i].n0, seg[i].n1, seg[i].st);
        }
        return;
    }
    int n0, n1;
    group_share(j->groups, N, t, T, &n0, &n1);
    for (int p0 = 0; p0 < B && n0 < n1; p0 += pass) {
        int p1 = B - p0 < pass ? B : p0 + pass, run = p1 - p0 > GEMV_MAX_B ? QROWS : n1 - n0;
        for (int r0 = n0; r0 < n1; r0 += run) {
            int r1 = n1 - r0 < run ? n1 : r0 + run;
            for (int g = p0; g < p1; g += GEMV_MAX_B) {
                int gn = p1 - g < GEMV_MAX_B ? p1 - g : GEMV_MAX_B;
                if (j->wide) {
                    qgemv512(j->y + (size_t)g * N, j->xs + (size_t)g * j->xb, j->xb, j->w, j->rs, j->wt,
                             j->bias, gn, N, K, r0, r1, (steps_src){NULL, 1});
                } else {
                    xq8 v = xq8_from(j->xq, g, K);
                    kern(j->y + (size_t)g * N, &v, j->xs ? j->xs + (size_t)g * j->xb : NULL, j->xb, j->w, j->rs,
                         j->wt, j->bias, gn, N, K, r0, r1);
                }
            }
        }
    }
}
#endif

#if defined(__x86_64__)
static xq8 xq8_malloc(size_t nb) {
    xq8 xq = {xcalloc(nb, 32), xcalloc(nb, sizeof(float)), xcalloc(nb, sizeof(int32_t)), xcalloc(nb, sizeof(float)),
              xcalloc(2 * nb, sizeof(float))};
    return xq;
}

static void xq8_free(xq8 *xq) {
    free(xq->q), free(xq->d), free(xq->s), free(xq->ds), free(xq->ds16);
}
#endif

int ng_kernel_check_quantize_x(const float *x, int nb) {
    int bad = 0;
#if defined(__x86_64__)
    if (best_path() == PATH_PORTABLE || nb <= 0) return 0;
    xq8 a = xq8_malloc((size_t)nb), b = xq8_malloc((size_t)nb);
    quantize_x(&a, x, (size_t)nb);
    for (int p = best_path() == PATH_AVX512 ? 0 : 1; p < 2; p++) { /* the AVX-512 code, the AVX2 code */
        memset(b.q, 0x55, (size_t)nb * 32);
        if (p == 0)
            quantize_x512(&b, x, (size_t)nb);
        else
            quantize_x256(&b, x, (size_t)nb);
        for (size_t i = 0; i < (size_t)nb * 32; i++) bad += a.q[i] != b.q[i];
        bad += memcmp(a.d, b.d, (size_t)nb * sizeof(float)) != 0;
        bad += memcmp(a.s, b.s, (size_t)nb * sizeof(int32_t)) != 0;
        bad += memcmp(a.ds, b.ds, (size_t)nb * sizeof(float)) != 0;
        bad += memcmp(a.ds16, b.ds16, (size_t)nb * 2 * sizeof(float)) != 0;
    }
    xq8_free(&a);
    xq8_free(&b);
#else
    (void)x, (void)nb;
#endif
    return bad;
}

/* Integer GEMV for quantized weights: x is quantized once (one row by the calling thread; a
 * batch by the threads, a share of rows each), then each thread runs its rows' integer dot
 * products. A batch over GEMV_MAX_B rows (several decoding streams, a prompt) runs GEMV_MAX_B
 * rows at a time against runs of QROWS weight rows, so the weights come from memory once per
 * pass (see QX_CACHE), not once per group; at 8 rows per weight step the integer kernels do more
 * products per instruction than dequantizing to f32 for the GEMM, and round x as the GEMV always
 * does. */
static void matmul_qgemv(int path, float *y, const float *x, const void *w, ng_type wt, const float *bias, int B,
                         int N, int K, int nt, const mm_multi *mm) {
#if defined(__x86_64__)
    xq8 xq = xq8_alloc(B, K);
    mm_job j = {.y = y, .x = x, .bias = bias, .w = w, .wt = wt, .B = B, .N = N, .K = K, .rs = ng_row_size(wt, K),
                .path = path, .xq = &xq, .groups = (N + 15) / 16, .multi = mm};
    j.wide = qgemv_wide(path, wt);
    /* the kernel-order types read arranged rows on any path, q4_0 on AVX2 too */
    int arranged = j.wide || wt != ng_type_base(wt) || (path == PATH_AVX2 && wt == NG_Q4_0);
    j.xs = arranged ? arrange_alloc(B, K) : NULL;
    j.xb = arranged ? xs_row(K) : 0;
    if (nt > j.groups) nt = j.groups;
    /* A batch's rows are quantized (and arranged) by the threads, a share each, before they
     * meet at a barrier. One row is too little work for a barrier: thread 0 prepares it inside
     * the job while the others, woken meanwhile, start their shares' weight streams and wait
     * for it, so that the row's preparation (0.3-2 us) and the workers' wake-up (~0.7 us on a
     * VM whose two cores are ~225 ns apart) overlap instead of following each other. In-process
     * A/B of decode steps against preparing it before the job (one 2-core Zen 5 VM, 20-30
     * alternating rounds each): GPT-2 124M q4_0 1368 -> 1338, 1339 -> 1316, 1316 -> 1324,
     * 1444 -> 1435 us; q8_0 2387 -> 2343, 2424 -> 2354, 2608 -> 2566 us; TinyLlama 1.1B q4_0
     * 10605 -> 10718, 12155 -> 11812 us (10-12 rounds). */
    j.shared = B > 1 && nt > 1;
    _Atomic int ready = 0;
    if (!j.shared && nt > 1) j.ready = &ready;
    else if (!j.shared) prepare_rows(path, x, &xq, j.xs, wt, K, 0, B);
    size_t xrow = arranged ? j.xb : (size_t)K * 9 / 8; /* bytes of one row's quantized activations */
    j.pass = B;
    if (B > GEMV_MAX_B) {
        int pass = (int)(QX_CACHE / xrow) / GEMV_MAX_B * GEMV_MAX_B;
        j.pass = pass < GEMV_MAX_B ? GEMV_MAX_B : pass > B ? B : pass;
    }
    j.ctr = shares_steps(path, wt) && B <= GEMV_MAX_B ? steps_ctrs(nt, mm ? mm->n : 1) : NULL;
    ng_team_run(nt, qgemv_job, &j);
#else
    (void)path, (void)mm;
    matmul_portable(y, x, w, wt, bias, B, N, K, nt);
#endif
}

#if defined(__x86_64__)
/* Each thread quantizes and packs its share of the activation blocks (quantizing each block's
 * rows into a scratch of its own, which stays in L1, rather than the whole batch into one buffer
 * and reading it back: GPT-2 124M q4_0 prefill -1.6% / -1.8% at 512 / 128 tokens, in-process A/B
 * within the noise; a 512-row batch at K = 5632 writes 2.9 MB less), then (after a barrier)
 * takes its share of the work items, n-block-major as gemm_job's, packing each weight panel
 * once and sweeping the activation blocks past it, and then the panels of the other threads'
 * shares that they have not reached (see matmul_qgemm). The shares of blocks are contiguous, as the
 * row-wise work before (norms, GELU) splits the rows, so that a thread quantizes rows its own
 * core has just written rather than every other block from the other core's cache: in-process
 * A/B on one 2-core Zen 5 VM against blocks dealt in turn (same logits), GPT-2 124M prefill of
 * 512 tokens q8_0 -4.9% / -4.5% (faster in 11 of 12 rounds, twice), q4_0 -0.2% (8 of 12) /
 * -2.2% (11 of 12); of 128 tokens q4_0 -2.9% (16 of 20), q8_0 -3.0% (17 of 20); TinyLlama 1.1B's
 * shape (6 layers) q4_0, 512 tokens, +1.0% (3 of 6: within the noise). */
static void qgemm_job(void *ctx, int t, int T) {
    const mm_job *j = ctx;
    int B = j->B, N = j->N, K = j->K, nb = K / 32, bblk = j->bblk, wide = j->path == PATH_AVX512;
    int pr = wide ? QNR : QNR2; /* panel rows */
    size_t xblk = (size_t)nb * QX_BLK;
    xq8 v = xq8_alloc(QBW, K); /* this thread's, for one block of rows at a time: it stays in L1 */
    for (int bb = bblk * t / T; bb < bblk * (t + 1) / T; bb++) {
        int b0 = bb * QBW, bn = B - b0 < QBW ? B - b0 : QBW;
        quantize_on(j->path, &v, j->x + (size_t)b0 * K, (size_t)bn * nb);
        if (wide) qpack_x(j->xs + bb * xblk, &v, j->wt, K, 0, bn);
        else qpack_x_c(j->xs + bb * xblk, &v, j->wt, K, 0, bn);
    }
    void (*micro)(float *, const uint8_t *, const uint8_t *, const float *, int, int, int, int, int, int,
                  gemm_pf *, int) = !wide                            ? qmicro256
                                    : ng_type_base(j->wt) == NG_Q4_K ? qmicro_k
                                    : ng_type_base(j->wt) == NG_Q6_K ? qmicro_k6
                                                                     : qmicro;
    uint8_t *P = (uint8_t *)grow(&tl_scratch, &tl_scratch_cap, (size_t)nb * QP_BLK_K / sizeof(float) + 1);
    ng_team_barrier();
    const int64_t i0 = j->items * t / T, i1 = j->items * (t + 1) / T;
    const int npan = (int)(j->items / bblk);
    int packed = -1;
    gemm_pf pf = {0};
    /* prefetches per block step: the next panel's lines over this panel's steps */
    size_t steps = (size_t)bblk * nb;
    int pfn = steps ? (int)(((size_t)pr * j->rs / 64 + steps - 1) / steps) : 0;
    float *y = j->y;
    const void *w = j->w;
    const float *bias = j->bias;
    int n0 = 0, nr = 0;
    /* The items in panel-major order. With counters, a thread claims its own share's panels one
     * at a time, then (as the GEMV's steps, see steps_src) the panels the other threads have not
     * reached; without, it takes its share of the items in order. */
    for (int sv = 0; sv < (j->ctr ? T : 1); sv++) {
        int su = (t + sv) % T, q0 = npan * su / T, qn = npan * (su + 1) / T - q0;
        for (int k = 0;; k++) {
            int64_t a = i0, b = i1;
            if (j->ctr) {
                if ((k = atomic_fetch_add_explicit(&j->ctr[su].next, 1, memory_order_relaxed)) >= qn) break;
                if (sv) atomic_fetch_add_explicit(&steals, 1, memory_order_relaxed);
                a = (int64_t)(q0 + k) * bblk, b = a + bblk;
            } else if (k) {
                break;
            }
            for (int64_t i = a; i < b; i++) {
                int nblk = (int)(i / bblk), bb = (int)(i % bblk);
                int b0 = bb * QBW, bn = B - b0 < QBW ? B - b0 : QBW;
                if (nblk != packed) {
                    n0 = nblk * pr;
                    if (j->multi) { /* panel nblk of all the matrices' panels */
                        const mm_multi *mm = j->multi;
                        int m = 0;
                        while (n0 >= qpanels(mm->N[m], pr) * pr) n0 -= qpanels(mm->N[m], pr) * pr, m++;
                        y = mm->y[m], w = mm->w[m], bias = mm->bias[m], N = mm->N[m];
                    }
                    nr = N - n0 < pr ? N - n0 : pr;
                    const char *wb = (const char *)w + (size_t)n0 * j->rs;
                    if (wide)
                        qpack_w(P, wb, j->rs, j->wt, nr, K);
                    else
                        qpack_w256(P, wb, j->rs, j->wt, nr, K);
                    packed = nblk;
                    int rn = N - n0 - pr < pr ? N - n0 - pr : pr; /* the next panel's rows (gemm_job) */
                    pf = (gemm_pf){wb + pr * j->rs, j->rs, 0, j->rs, rn};
                }
                micro(y, P, j->xs + bb * xblk, bias, nb, n0, nr, b0, bn, N, &pf, pfn);
            }
        }
    }
}
#endif

/* The int8 GEMM (see qmicro, qmicro256) for a batch of B rows of x against q8_0 / q4_0 weights
 * (either order; q4_k / q6_k on AVX-512 VNNI), on AVX-512 VNNI or the AVX2 path's AVX-VNNI; with
 * mm, against each of its matrices (y, w, bias, N unused), x quantized and packed once for all of
 * them and their panels shared out as one matrix's. */
static void matmul_qgemm(int path, float *y, const float *x, const void *w, ng_type wt, const float *bias, int B,
                         int N, int K, int nt, const mm_multi *mm) {
#if defined(__x86_64__)
    mm_job j = {.y = y, .x = x, .bias = bias, .w = w, .wt = wt, .B = B, .N = N, .K = K, .rs = ng_row_size(wt, K),
                .multi = mm, .path = path};
    j.bblk = (B + QBW - 1) / QBW;
    int pr = path == PATH_AVX512 ? QNR : QNR2, panels = qpanels(N, pr);
    if (mm)
        for (int m = panels = 0; m < mm->n; m++) panels += qpanels(mm->N[m], pr);
    j.items = (int64_t)panels * j.bblk;
    j.xs = (uint8_t *)grow(&tl_xs, &tl_xs_cap, (size_t)j.bblk * (K / 32) * QX_BLK / sizeof(float) + 1);
    nt = nt > j.items ? (int)j.items : nt;
    /* the panels claimed one at a time (qgemm_job): in-process A/B against the static split on
     * one 2-core Zen 5 VM (the same logits), GPT-2 124M prefill of 512 tokens q8_0 -4.8% (faster
     * in 15 of 16 rounds), -0.0% (8 of 16) in a quieter minute; 128 tokens q4_0 -3.1% (23 of 30),
     * q8_0 -0.9% (18 of 30); TinyLlama 1.1B's shape (6 layers), 512 tokens, q4_0 -5.4% (8 of 8),
     * q4_k -1.9% (4 of 8) */
    if (panels >= nt) j.ctr = steps_ctrs(nt, 1);
    ng_team_run(nt, qgemm_job, &j);
#else
    (void)path, (void)y, (void)x, (void)w, (void)wt, (void)bias, (void)B, (void)N, (void)K, (void)nt, (void)mm;
#endif
}

/* The regime ng_matmul runs a product in (see the top of this file). */
static int mm_regime(int path, ng_type wt, int B) {
    /* the kernel-order types have integer kernels only where they are native (qgemv_native) */
    int q = wt != ng_type_base(wt) ? qgemv_native(path, wt) : qgemv_type_ok(wt);
    if (!isa_for(path) || (B <= GEMV_MAX_B && !simd_type(wt) && !q)) return MM_PORTABLE;
    if (int8_gemm_on(path, wt, B)) return MM_QGEMM;
    /* any batch: the 512-bit integer kernels beat the f32 GEMM (see QGEMV_MAX_B), and for
     * q8_0 / q4_0 the int8 GEMM beats the GEMV from QGEMM_MIN_B rows; so do the AVX2 path's
     * steps of 4 blocks (rstep256: GPT-2 124M q4_0r, 128-token prompts on one 2-core Zen 5 VM
     * with the AVX2 kernels forced, 1502 tok/s with AVX-VNNI, 1265 without, against 600 with the
     * dequantizing GEMM; a mapped file's q4_0 in the same steps 1237-1477 against 806-840) */
    int any_b = (path == PATH_AVX512 && ng_cpu_features()->avx512vnni) || wt != ng_type_base(wt) ||
                (path == PATH_AVX2 && wt == NG_Q4_0);
    if (q && (B <= QGEMV_MAX_B || any_b)) return MM_QGEMV;
    return B <= GEMV_MAX_B ? MM_GEMV : MM_GEMM;
}

void ng_matmul(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B, int N, int K) {
    if (B <= 0 || N <= 0) return;
    ops_for(wt);
    int nt = threads_for((double)B * N * K), path = current_path();
    const simd_isa *isa = isa_for(path);
    switch (mm_regime(path, wt, B)) {
    case MM_PORTABLE: matmul_portable(y, x, w, wt, bias, B, N, K, nt); break;
    case MM_QGEMV: matmul_qgemv(path, y, x, w, wt, bias, B, N, K, nt, NULL); break;
    case MM_QGEMM: matmul_qgemm(path, y, x, w, wt, bias, B, N, K, nt, NULL); break;
    case MM_GEMV: matmul_gemv(isa, y, x, w, wt, bias, B, N, K, nt, NULL); break;
    default: matmul_gemm(gemm_isa(path, wt), y, x, w, wt, bias, B, N, K, nt); break;
    }
}

static _Atomic long multi_jobs; /* ng_kernel_multi_jobs */
long ng_kernel_multi_jobs(void) { return atomic_load(&multi_jobs); }

/* One job for all n products where a GEMV runs them (decode): their rows are one row space that
 * the threads share and take over as one matrix's, and x is quantized once. Matrices whose rows
 * are not whole groups of 16 (a thread's share starts at one) run as separate products. */
void ng_matmul_multi(float *const *y, const float *x, const void *const *w, ng_type wt, const float *const *bias,
                     int n, int B, const int *N, int K) {
    if (B <= 0) return;
    ops_for(wt);
    int path = current_path(), regime = mm_regime(path, wt, B), qgemm = regime == MM_QGEMM;
    /* the GEMVs share 16-row groups; the int8 GEMM shares panels, a matrix's last one partial */
    int gemv = B <= GEMV_MAX_B && (regime == MM_GEMV || (regime == MM_QGEMV && shares_steps(path, wt)));
    int fused = n > 1 && n <= MM_MAX && (gemv || qgemm);
    for (int m = 0; m < n && fused; m++) fused = N[m] > 0 && (qgemm || N[m] % 16 == 0);
    if (!fused) {
        for (int m = 0; m < n; m++) ng_matmul(y[m], x, w[m], wt, bias ? bias[m] : NULL, B, N[m], K);
        return;
    }
    atomic_fetch_add_explicit(&multi_jobs, 1, memory_order_relaxed);
    mm_multi mm = {.n = n};
    for (int m = 0; m < n; m++) {
        mm.y[m] = y[m], mm.w[m] = w[m], mm.bias[m] = bias ? bias[m] : NULL, mm.N[m] = N[m];
        mm.row0[m + 1] = mm.row0[m] + N[m];
    }
    int rows = mm.row0[n], nt = threads_for((double)B * rows * K);
    if (qgemm) matmul_qgemm(path, NULL, x, NULL, wt, NULL, B, rows, K, nt, &mm);
    else if (regime == MM_QGEMV) matmul_qgemv(path, NULL, x, NULL, wt, NULL, B, rows, K, nt, &mm);
    else matmul_gemv(isa_for(path), NULL, x, NULL, wt, NULL, B, rows, K, nt, &mm);
}

/* ---- attention ---- */

/* Key tiles per step of the AVX-512 scores (a block of NG_ATT_KT * ATT_TILES positions), and
 * the query heads that share each tile row loaded: 4 x 4 accumulators; from 5 to ATT_WIDE
 * heads, the block's tiles two at a time for all of them (2 x ATT_WIDE accumulators), so that
 * 8 heads (TinyLlama's and Mistral's groups) read each key once, not once per 4 heads, and the
 * block's prefetches are spread over all of its work rather than issued in the first half. On
 * one 2-core Zen 5 VM, 8 heads over 528 positions, f32 cache: 6.9 -> 6.55 us a call from cache,
 * 13.7 -> 12.2 from memory (f16 cache: even, 6.6 and 7.9); TinyLlama 1.1B q4_0 decode
 * (in-process A/B) attention 828 -> 778 us a step in one hour (20 rounds), even (979 vs 973,
 * 30 rounds) in a slower one. */
#define ATT_TILES 4
#define ATT_HEADS 4
#define ATT_WIDE 8
_Static_assert(NG_ATT_ROWS <= ATT_WIDE, "ng_attend_rows' rows are one group of the kernel's heads");
/* Positions ahead that the values are prefetched in the AVX-512 output pass. */
#define ATT_PF 32
/* Blocks of key tiles ahead that the scores prefetch; the last blocks, with no keys that far
 * ahead, prefetch the first value rows instead (a block's bytes each), so that the output pass
 * starts on values in flight, not on demand misses. In-process A/B of whole decode steps on
 * one 2-core Zen 5 VM (f32 cache), against one block ahead and no values: GPT-2 124M q4_0 at
 * ~200 positions, attention -3% with the values alone (faster in 21 of 30 rounds), -5% with two
 * blocks ahead as well (22 and 24 of 30), at ~600 positions (q8_0) -1.6%; TinyLlama 1.1B q4_0
 * at ~520: -5.5% (11 of 16). Three blocks ahead: GPT-2 -4%, TinyLlama +4%. */
#define ATT_AHEAD 2

void ng_attend_put_key(void *k, ng_type kvt, int t, int d, const float *key) {
    if (kvt == NG_F16) { /* converted 64 at a time (ng_from_f32's vector path), then spread */
        ng_f16 h[64];
        for (int i0 = 0; i0 < d; i0 += 64) {
            int m = d - i0 < 64 ? d - i0 : 64;
            ng_from_f32(h, key + i0, NG_F16, m);
            for (int i = 0; i < m; i++) ((ng_f16 *)k)[ng_key_index(t, i0 + i, d)] = h[i];
        }
        return;
    }
    for (int i = 0; i < d; i++) ((float *)k)[ng_key_index(t, i, d)] = key[i];
}

#if defined(__x86_64__)
/* Whole tiles of f32 keys from position t0 (a tile's first; d a multiple of 16): each 16 keys x
 * 16 dimensions one transpose16, each dimension's tile row one store. Returns the keys stored. */
T512 static int put_tiles512(float *k, int t0, int n, int d, const float *keys, size_t stride) {
    int done = 0;
    for (; n - done >= NG_ATT_KT && d % 16 == 0; done += NG_ATT_KT)
        for (int i0 = 0; i0 < d; i0 += 16) {
            __m512i v[16];
#pragma GCC unroll 16
            for (int l = 0; l < 16; l++)
                v[l] = _mm512_castps_si512(_mm512_loadu_ps(keys + (size_t)(done + l) * stride + i0));
            transpose16(v); /* v[i] lane l: key l's dimension i0 + i */
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                _mm512_storeu_ps(k + ng_key_index(t0 + done, i0 + i, d), _mm512_castsi512_ps(v[i]));
        }
    return done;
}
#endif

void ng_attend_put_keys(void *k, ng_type kvt, int t0, int n, int d, const float *keys, size_t stride) {
    int j = 0;
    for (; j < n && (t0 + j) % NG_ATT_KT; j++)
        ng_attend_put_key(k, kvt, t0 + j, d, keys + (size_t)j * stride);
#if defined(__x86_64__)
    if (kvt == NG_F32 && current_path() == PATH_AVX512)
        j += put_tiles512(k, t0 + j, n - j, d, keys + (size_t)j * stride, stride);
#endif
    for (; j < n; j++) ng_attend_put_key(k, kvt, t0 + j, d, keys + (size_t)j * stride);
}

/* The softmax of each of G rows of n scores, in place (compiled for the caller's path); row g
 * over its first n - step * (G - 1 - g) scores (step 1: ng_attend_rows' causal rows). */
static inline __attribute__((always_inline)) void softmax_rows(float *scratch, int G, int n, int step) {
    for (int g = 0; g < G; g++) {
        float *s = scratch + (size_t)g * n, mx = -INFINITY, sum = 0;
        int len = n - step * (G - 1 - g);
#pragma omp simd reduction(max : mx)
        for (int t = 0; t < len; t++) mx = s[t] > mx ? s[t] : mx;
#pragma omp simd reduction(+ : sum)
        for (int t = 0; t < len; t++) sum += (s[t] = ng_vexp(s[t] - mx));
        float inv = 1.0f / sum;
#pragma omp simd
        for (int t = 0; t < len; t++) s[t] *= inv;
    }
}

#if defined(__x86_64__)
/* The first m / 8 * 8 of m f16 values into buf, 8 at a time (F16C); returns how many. */
__attribute__((target("avx,f16c"))) static int f16_row_f16c(float *buf, const ng_f16 *h, int m) {
    int i = 0;
    for (; i + 8 <= m; i += 8) _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    return i;
}
#endif

/* m cached values from element off as f32: the values themselves (f32 caches), or converted
 * into buf (f16 caches; with F16C when the path has it). */
static inline __attribute__((always_inline)) const float *kv_f32(const void *base, ng_type kvt, size_t off, int m,
                                                                 float *buf, const int f16c) {
    if (kvt == NG_F32) return (const float *)base + off;
    const ng_f16 *h = (const ng_f16 *)base + off;
    int i = 0;
#if defined(__x86_64__)
    if (f16c) i = f16_row_f16c(buf, h, m);
#else
    (void)f16c;
#endif
    for (; i < m; i++) buf[i] = ng_f16_to_f32(h[i]);
    return buf;
}

/* f16 keys or values converted for the loops below: a key tile at most. */
static _Thread_local float tl_kv[NG_ATT_KT * NG_ATT_MAX_F16_HEAD];

/* The output pass for every path (and for AVX-512's other head sizes): out + g * o_stride =
 * sum_t p_t v_t, each value row converted once for the G heads; row g over its first
 * n - step * (G - 1 - g) positions (see softmax_rows), so that a later row's position, NaN
 * included, never reaches an earlier row. */
static inline __attribute__((always_inline)) void values_body(float *out, size_t o_stride, const float *scratch,
                                                              int G, const void *v, ng_type kvt, int n, int d,
                                                              const int f16c, int step) {
    for (int g = 0; g < G; g++) memset(out + (size_t)g * o_stride, 0, (size_t)d * sizeof *out);
    for (int t = 0; t < n; t++) {
        const float *vt = kv_f32(v, kvt, (size_t)t * d, d, tl_kv, f16c);
        /* the rows that take position t: row g's positions end at n - step * (G - 1 - g) */
        int g1 = step && G - (n - t) > 0 ? G - (n - t) : 0;
        for (int g = g1; g < G; g++) {
            float *o = out + (size_t)g * o_stride, pt = scratch[(size_t)g * n + t];
#pragma omp simd
            for (int i = 0; i < d; i++) o[i] += pt * vt[i];
        }
    }
}

/* One body for every path: the loops are written for the vectorizer, and each path compiles it
 * for its own vector width. A key tile's scores are NG_ATT_KT independent sums, one per lane.
 * The G rows are heads over n positions each (step 0), or ng_attend_rows' causal rows (step 1:
 * row g over n - (G - 1 - g)), whose key tiles and value rows are then loaded once for the G
 * rows; a row's scores past its positions are computed and not read. Each row's result is the
 * same bits as a call for it alone. */
static inline __attribute__((always_inline)) void attend_body(float *out, size_t o_stride, const float *q,
                                                              size_t q_stride, int G, const void *k,
                                                              const void *v, ng_type kvt, int n, int d, float scale,
                                                              float *scratch, const int f16c, int step) {
    for (int t0 = 0; t0 < n; t0 += NG_ATT_KT) {
        const float *kt = kv_f32(k, kvt, (size_t)t0 * d, NG_ATT_KT * d, tl_kv, f16c);
        int m = n - t0 < NG_ATT_KT ? n - t0 : NG_ATT_KT;
        for (int g = 0; g < G; g++) {
            const float *qg = q + (size_t)g * q_stride;
            float acc[NG_ATT_KT] = {0};
            for (int i = 0; i < d; i++) {
                float qi = qg[i];
#pragma omp simd
                for (int l = 0; l < NG_ATT_KT; l++) acc[l] += qi * kt[(size_t)i * NG_ATT_KT + l];
            }
            for (int l = 0; l < m; l++) scratch[(size_t)g * n + t0 + l] = acc[l] * scale;
        }
    }
    softmax_rows(scratch, G, n, step);
    values_body(out, o_stride, scratch, G, v, kvt, n, d, f16c, step);
}

static void attend_portable(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k,
                            const void *v, ng_type kvt, int n, int d, float scale, float *scratch, int step) {
    attend_body(out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, 0, step);
}

#if defined(__x86_64__)
/* 16 keys or values from element off (f32, or f16 converted in registers). */
INL512 __m512 ldkv(const void *base, const ng_type kvt, size_t off) {
    if (kvt == NG_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const ng_f16 *)base + off)));
    return _mm512_loadu_ps((const float *)base + off);
}

/* One dimension i of the scores: tile row i of NT tiles against GC heads' query value i, into
 * accumulators [tt][c0 + c]; row i of NT tiles at pf prefetched when pf is not NULL. */
INL512 void score_step(__m512 acc[][ATT_WIDE], const float *qg, size_t q_stride, const int GC, int c0,
                       const void *k, const ng_type kvt, int j0, const int NT, size_t tile, int i, const char *pf) {
    const size_t es = kvt == NG_F16 ? 2 : 4;
    if (pf)
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++) /* tile row i of each next tile: 64 bytes (f32) or 32 */
            if (es == 4 || (i & 1) == 0) _mm_prefetch(pf + ((size_t)tt * tile + (size_t)i * NG_ATT_KT) * es, _MM_HINT_T0);
    __m512 kv[ATT_TILES];
#pragma GCC unroll 4
    for (int tt = 0; tt < NT; tt++) kv[tt] = ldkv(k, kvt, (size_t)(j0 + tt) * tile + (size_t)i * NG_ATT_KT);
#pragma GCC unroll 8
    for (int c = 0; c < GC; c++) {
        __m512 qb = _mm512_set1_ps(qg[(size_t)c * q_stride + i]);
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++) acc[tt][c0 + c] = _mm512_fmadd_ps(kv[tt], qb, acc[tt][c0 + c]);
    }
}

/* Scores of NT key tiles from tile j0 for the GC heads from g0: each dimension's tile rows
 * are loaded once for the GC heads, each head's query value broadcast once for the NT tiles
 * (one head: even and odd dimensions in two sets of sums, for twice the FMA chains). pf (not
 * NULL for the first heads): NT tiles' bytes from there are prefetched, a 64-byte line per
 * dimension (f16: per two; see ATT_AHEAD). */
INL512 void scores512(float *scratch, int n, const float *q, size_t q_stride, int g0, const int GC, const void *k,
                      const ng_type kvt, int j0, const int NT, int d, float scale, const char *pf) {
    const size_t tile = (size_t)NG_ATT_KT * d;
    const int sets = GC == 1 ? 2 : GC;
    __m512 acc[ATT_TILES][ATT_WIDE];
#pragma GCC unroll 4
    for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 8
        for (int c = 0; c < sets; c++) acc[tt][c] = _mm512_setzero_ps();
    const float *qg = q + (size_t)g0 * q_stride;
    int i = 0;
    if (GC == 1)
        for (; i + 2 <= d; i += 2) {
            score_step(acc, qg, q_stride, 1, 0, k, kvt, j0, NT, tile, i, pf);
            score_step(acc, qg, q_stride, 1, 1, k, kvt, j0, NT, tile, i + 1, pf);
        }
    for (; i < d; i++) score_step(acc, qg, q_stride, GC, 0, k, kvt, j0, NT, tile, i, pf);
    if (GC == 1)
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++) acc[tt][0] = _mm512_add_ps(acc[tt][0], acc[tt][1]);
    const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 4
    for (int tt = 0; tt < NT; tt++) {
        int t = (j0 + tt) * NG_ATT_KT, m = n - t < NG_ATT_KT ? n - t : NG_ATT_KT;
        __mmask16 mask = (__mmask16)((1u << m) - 1);
#pragma GCC unroll 8
        for (int c = 0; c < GC; c++)
            _mm512_mask_storeu_ps(scratch + (size_t)(g0 + c) * n + t, mask, _mm512_mul_ps(acc[tt][c], sc));
    }
}

INL512 void scores512_nt(float *scratch, int n, const float *q, size_t q_stride, int g0, const int GC,
                         const void *k, const ng_type kvt, int j0, int nt, int d, float scale, const char *pf) {
    if (GC > ATT_HEADS) { /* two tiles at a time, each pair prefetching its part of pf's */
        const size_t tb = (size_t)NG_ATT_KT * d * (kvt == NG_F16 ? 2 : 4);
        for (int a = 0; a < nt; a += 2) {
            const char *p = pf ? pf + a * tb : NULL;
            if (nt - a == 1) scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0 + a, 1, d, scale, p);
            else scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0 + a, 2, d, scale, p);
        }
        return;
    }
    switch (nt) {
    case 1: return scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0, 1, d, scale, pf);
    case 2: return scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0, 2, d, scale, pf);
    case 3: return scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0, 3, d, scale, pf);
    default: return scores512(scratch, n, q, q_stride, g0, GC, k, kvt, j0, 4, d, scale, pf);
    }
}

/* One position t of the values into accumulators o[c] (c < GC) of heads g0.. . */
INL512 void value_step(__m512 o[][8], const float *scratch, int n, int g0, const int GC, const void *v,
                       const ng_type kvt, const int HC, int t) {
    const size_t es = kvt == NG_F16 ? 2 : 4, vt = (size_t)t * HC * 16;
#pragma GCC unroll 8
    for (int i = 0; i < HC; i++)
        if (es == 4 || (i & 1) == 0)
            _mm_prefetch((const char *)v + (vt + (size_t)ATT_PF * HC * 16 + 16 * i) * es, _MM_HINT_T0);
    __m512 vv[8];
#pragma GCC unroll 8
    for (int i = 0; i < HC; i++) vv[i] = ldkv(v, kvt, vt + 16 * i);
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++) {
        __m512 pt = _mm512_set1_ps(scratch[(size_t)(g0 + c) * n + t]);
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++) o[c][i] = _mm512_fmadd_ps(pt, vv[i], o[c][i]);
    }
}

/* value_step for a position that only some of the GC rows take (ng_attend_rows): row c takes it
 * when t < base + c. */
INL512 void value_step_tail(__m512 o[][8], const float *scratch, int n, int g0, const int GC, const void *v,
                            const ng_type kvt, const int HC, int t, int base) {
    __m512 vv[8];
#pragma GCC unroll 8
    for (int i = 0; i < HC; i++) vv[i] = ldkv(v, kvt, (size_t)t * HC * 16 + 16 * i);
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++) {
        if (t >= base + c) continue;
        __m512 pt = _mm512_set1_ps(scratch[(size_t)(g0 + c) * n + t]);
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++) o[c][i] = _mm512_fmadd_ps(pt, vv[i], o[c][i]);
    }
}

/* Output rows of the GC heads from g0 (head size HC * 16), each scaled by its inv (1 / the sum
 * of its softmax numerators in scratch): each value row is loaded once for the GC heads (one
 * head: even and odd positions in two sets of sums, for twice the FMA chains); rows are
 * prefetched ATT_PF positions ahead (prefetches past the cache's end are harmless: they never
 * fault). Row g0 + c sums positions t < base + step * c: all n (step 0), or for ng_attend_rows'
 * causal rows (step 1) one more each, the positions that only the later rows take summed with
 * those rows alone, so that each row's sums are exactly those of its own positions. */
INL512 void values512(float *out, size_t o_stride, const float *scratch, int n, int g0, const int GC, const void *v,
                      const ng_type kvt, const int HC, const float *inv, int base, int step) {
    __m512 o[4][8], o2[1][8];
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++)
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++) o[c][i] = o2[0][i] = _mm512_setzero_ps();
    int t = 0, end = base + step * (GC - 1);
    if (GC == 1)
        for (; t + 2 <= base; t += 2) {
            value_step(o, scratch, n, g0, 1, v, kvt, HC, t);
            value_step(o2, scratch, n, g0, 1, v, kvt, HC, t + 1);
        }
    for (; t < base; t++) value_step(o, scratch, n, g0, GC, v, kvt, HC, t);
    for (; t < end; t++) value_step_tail(o, scratch, n, g0, GC, v, kvt, HC, t, base);
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++)
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++)
            _mm512_storeu_ps(out + (size_t)(g0 + c) * o_stride + 16 * i,
                             _mm512_mul_ps(GC == 1 ? _mm512_add_ps(o[0][i], o2[0][i]) : o[c][i], _mm512_set1_ps(inv[g0 + c])));
}

/* 16 lanes of e^x: ng_vexp's range reduction and polynomial, with FMAs (x clamped to [-87, 88];
 * NaN stays NaN: min and max return their second operand when either is NaN). */
INL512 __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), _mm512_min_ps(_mm512_set1_ps(88.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

T512 static float max512(const float *x, size_t n); /* with the vmath copies below */

/* softmax_rows' numerators, row by row: the maximum by max512 (64 lanes, NaNs passed over), then
 * e^(s - max) by exp512 with 64 lanes of sums; the normalization is left to the output (inv[g] =
 * 1 / row g's sum). softmax_rows' running maximum and sum are chains of dependent vector
 * operations and its exponential has no FMAs: with 8 heads over 528 positions it was a quarter of
 * the kernel's time (vmath's ng_exp_sum here instead of exp512: 8.6 vs 8.0 us a call). */
INL512 void softmax512(float *scratch, int G, int n, int step, float *inv) {
    for (int g = 0; g < G; g++) {
        float *r = scratch + (size_t)g * n;
        int len = n - step * (G - 1 - g); /* row g's positions (ng_attend_rows: step 1) */
        const __m512 vmx = _mm512_set1_ps(max512(r, (size_t)len));
        __m512 sm[4];
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) sm[u] = _mm512_setzero_ps();
        for (int i = 0; i < len; i += 64)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                int left = len - i - 16 * u;
                __mmask16 mk = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                __m512 p = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, r + i + 16 * u), vmx)));
                _mm512_mask_storeu_ps(r + i + 16 * u, mk, p);
                sm[u] = _mm512_add_ps(sm[u], p);
            }
        inv[g] = 1.0f / _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sm[0], sm[1]), _mm512_add_ps(sm[2], sm[3])));
    }
}

static _Thread_local float *tl_inv; /* attend512_kv: each head's 1 / softmax sum */
static _Thread_local size_t tl_inv_cap;

/* AVX-512: scores a block of ATT_TILES key tiles at a time for up to ATT_WIDE heads (the
 * keys ATT_AHEAD blocks on, or the first values, prefetched meanwhile); then, for head sizes
 * 64 and 128, values512 for a few heads at a time. Other head sizes take values_body. The G
 * rows are heads over n positions each (step 0), or ng_attend_rows' causal rows (step 1: row g
 * over n - (G - 1 - g)), whose scores are taken over all n and then left out past each row's
 * own positions. */
INL512 void attend512_kv(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k,
                         const void *v, const ng_type kvt, int n, int d, float scale, float *scratch, int step) {
    const size_t es = kvt == NG_F16 ? 2 : 4;
    int tiles = (n + NG_ATT_KT - 1) / NG_ATT_KT, kend = (tiles + ATT_TILES - 1) / ATT_TILES * ATT_TILES;
    const size_t tb = (size_t)NG_ATT_KT * d * es; /* a key tile's bytes; as many hold 16 value rows */
    /* the blocks ahead that each block prefetches: ATT_AHEAD, one when the keys are one block */
    const int ahead = kend > ATT_TILES ? ATT_AHEAD : 1;
    for (int j0 = 0; j0 < tiles; j0 += ATT_TILES) {
        int nt = tiles - j0 < ATT_TILES ? tiles - j0 : ATT_TILES, a = j0 + ahead * ATT_TILES;
        const char *pf = a < tiles ? (const char *)k + (size_t)a * tb : (const char *)v + (size_t)(a - kend) * tb;
        for (int g0 = 0, gc; g0 < G; g0 += gc) {
            const char *p = g0 == 0 ? pf : NULL;
            gc = G - g0 < ATT_WIDE ? G - g0 : ATT_WIDE;
            switch (gc) {
            case 1: scores512_nt(scratch, n, q, q_stride, g0, 1, k, kvt, j0, nt, d, scale, p); break;
            case 2: scores512_nt(scratch, n, q, q_stride, g0, 2, k, kvt, j0, nt, d, scale, p); break;
            case 3: scores512_nt(scratch, n, q, q_stride, g0, 3, k, kvt, j0, nt, d, scale, p); break;
            case 4: scores512_nt(scratch, n, q, q_stride, g0, 4, k, kvt, j0, nt, d, scale, p); break;
            case 5: scores512_nt(scratch, n, q, q_stride, g0, 5, k, kvt, j0, nt, d, scale, p); break;
            case 6: scores512_nt(scratch, n, q, q_stride, g0, 6, k, kvt, j0, nt, d, scale, p); break;
            case 7: scores512_nt(scratch, n, q, q_stride, g0, 7, k, kvt, j0, nt, d, scale, p); break;
            default: scores512_nt(scratch, n, q, q_stride, g0, 8, k, kvt, j0, nt, d, scale, p); break;
            }
        }
    }
    float *inv = grow(&tl_inv, &tl_inv_cap, (size_t)G);
    softmax512(scratch, G, n, step, inv);
    const int HC = d / 16;
    if (d != 64 && d != 128) {
        for (int g = 0; g < G; g++) {
            int len = n - step * (G - 1 - g);
            float *r = scratch + (size_t)g * n;
            for (int t = 0; t < len; t++) r[t] *= inv[g];
        }
        values_body(out, o_stride, scratch, G, v, kvt, n, d, 1, step);
        return;
    }
    for (int g0 = 0; g0 < G; g0 += 16 / HC) {
        int gc = G - g0 < 16 / HC ? G - g0 : 16 / HC, base = n - step * (G - 1 - g0);
        if (HC == 4) switch (gc) {
            case 1: values512(out, o_stride, scratch, n, g0, 1, v, kvt, 4, inv, base, step); break;
            case 2: values512(out, o_stride, scratch, n, g0, 2, v, kvt, 4, inv, base, step); break;
            case 3: values512(out, o_stride, scratch, n, g0, 3, v, kvt, 4, inv, base, step); break;
            default: values512(out, o_stride, scratch, n, g0, 4, v, kvt, 4, inv, base, step); break;
            }
        else if (gc == 1) values512(out, o_stride, scratch, n, g0, 1, v, kvt, 8, inv, base, step);
        else values512(out, o_stride, scratch, n, g0, 2, v, kvt, 8, inv, base, step);
    }
}

T512 static void attend512(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k,
                           const void *v, ng_type kvt, int n, int d, float scale, float *scratch, int step) {
    if (kvt == NG_F16) attend512_kv(out, o_stride, q, q_stride, G, k, v, NG_F16, n, d, scale, scratch, step);
    else attend512_kv(out, o_stride, q, q_stride, G, k, v, NG_F32, n, d, scale, scratch, step);
}

T256 static void attend256(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k,
                           const void *v, ng_type kvt, int n, int d, float scale, float *scratch, int step) {
    attend_body(out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, 1, step);
}
#endif

static void attend_check(ng_type kvt, int d) {
    if (kvt != NG_F32 && (kvt != NG_F16 || d > NG_ATT_MAX_F16_HEAD))
        ng_die("attention: cached keys of type %s with heads of %d", ng_type_name(kvt), d);
}

/* The path's kernel: G heads over n positions (step 0), or G causal rows (step 1; see attend_body). */
static void attend_on(int path, float *out, size_t o_stride, const float *q, size_t q_stride, int G,
                      const void *k, const void *v, ng_type kvt, int n, int d, float scale, float *scratch,
                      int step) {
#if defined(__x86_64__)
    if (path == PATH_AVX512)
        return attend512(out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, step);
    if (path == PATH_AVX2)
        return attend256(out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, step);
#endif
    (void)path;
    attend_portable(out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, step);
}

void ng_attend(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const void *k, const void *v,
               ng_type kvt, int n, int d, float scale, float *scratch) {
    attend_check(kvt, d);
    attend_on(current_path(), out, o_stride, q, q_stride, G, k, v, kvt, n, d, scale, scratch, 0);
}

void ng_attend_rows(float *out, size_t o_stride, const float *q, size_t q_stride, int R, const void *k, const void *v,
                    ng_type kvt, int n0, int d, float scale, float *scratch) {
    attend_check(kvt, d);
    int path = current_path();
    for (int r0 = 0; r0 < R; r0 += NG_ATT_ROWS) { /* the kernels' causal rows are consecutive */
        int rn = R - r0 < NG_ATT_ROWS ? R - r0 : NG_ATT_ROWS;
        attend_on(path, out + (size_t)r0 * o_stride, o_stride, q + (size_t)r0 * q_stride, q_stride, rn, k, v,
                  kvt, n0 + r0 + rn, d, scale, scratch, 1);
    }
}

/* ---- a prompt's attention in bf16 ---- */

/* ng_kernel_set_bf16_attention: off unless turned on (see kernels.h). */
static int g_bf16_att = 0;

void ng_kernel_set_bf16_attention(int on) { g_bf16_att = on != 0; }

int ng_kernel_bf16_attention(int d) {
    return g_bf16_att && current_path() == PATH_AVX512 && ng_cpu_features()->avx512bf16 &&
           (d == 64 || d == 128);
}

size_t ng_attend_bf16_keys(int n, int d) {
    return (size_t)(n + NG_ATT_KT - 1) / NG_ATT_KT * NG_ATT_KT * (size_t)d;
}

size_t ng_attend_bf16_values(int n, int d) { return (size_t)(n + 1) / 2 * 2 * (size_t)d; }

static void att16_check(int d) {
    if (d <= 0 || d % 16) ng_die("attention in bf16: heads of %d values (a multiple of 16 is needed)", d);
}

/* Key i of position t as a float from tiled keys of type kvt. */
static float key_at(const void *k, ng_type kvt, int t, int i, int d) {
    size_t at = ng_key_index(t, i, d);
    return kvt == NG_F16 ? ng_f16_to_f32(((const ng_f16 *)k)[at]) : ((const float *)k)[at];
}

static float value_at(const void *v, ng_type kvt, int t, int i, int d) {
    size_t at = (size_t)t * d + (size_t)i;
    return kvt == NG_F16 ? ng_f16_to_f32(((const ng_f16 *)v)[at]) : ((const float *)v)[at];
}

/* Elements of the bf16 layouts (see ng_attend_pack_bf16): key dimension i of position t, in its
 * tile's pair i / 2 of 16 lanes (t % 16) of two; value dimension i of position t, in its position
 * pair's lane i of two. */
static size_t key16_at(int t, int i, int d) {
    return ((size_t)(t / NG_ATT_KT) * (size_t)d + (size_t)(i & ~1)) * NG_ATT_KT +
           (size_t)(t % NG_ATT_KT) * 2 + (size_t)(i & 1);
}

static size_t value16_at(int t, int i, int d) {
    return ((size_t)(t / 2) * (size_t)d + (size_t)i) * 2 + (size_t)(t & 1);
}

#if defined(__x86_64__)
#define INLBF                                                                                                \
    static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx512bf16,f16c,fma")))

/* 16 cached values (f32 or f16) at base + off as floats. */
INLBF __m512 ld16kv(const void *base, ng_type kvt, size_t off) {
    if (kvt == NG_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const ng_f16 *)base + off)));
    return _mm512_loadu_ps((const float *)base + off);
}

/* 16 pairs (a[l], b[l]) as one vector of bf16, a's in the low halves. */
INLBF __m512i pair16(__m512 a, __m512 b) {
    const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                         22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(mix, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

TBF static void pack16_512(ng_bf16 *k16, ng_bf16 *v16, const void *k, const void *v, ng_type kvt, int n,
                           int d) {
    size_t keys = ng_attend_bf16_keys(n, d);
    for (size_t r = 0; r < keys / NG_ATT_KT; r += 2) /* tile rows i, i + 1 into a row of pairs */
        _mm512_storeu_si512(k16 + r * NG_ATT_KT,
                            pair16(ld16kv(k, kvt, r * NG_ATT_KT), ld16kv(k, kvt, (r + 1) * NG_ATT_KT)));
    for (int t = 0; t < n; t += 2)
        for (int i = 0; i < d; i += 16) {
            __m512 a = ld16kv(v, kvt, (size_t)t * d + (size_t)i);
            __m512 b = t + 1 < n ? ld16kv(v, kvt, (size_t)(t + 1) * d + (size_t)i) : _mm512_setzero_ps();
            _mm512_storeu_si512(v16 + ((size_t)t * d + (size_t)i * 2), pair16(a, b));
        }
}

/* Scores of NT key tiles from tile j0 for the GC rows from g0 (queries as bf16 pairs in qp,
 * d / 2 words a row): each pair of dimensions' tile rows loaded once for the GC rows. */
INLBF void scores16(float *scratch, int n, const uint32_t *qp, int g0, const int GC, const ng_bf16 *k16,
                    int j0, const int NT, int d, float scale) {
    __m512 acc[4][8];
#pragma GCC unroll 4
    for (int tt = 0; tt < NT; tt++)
#pragma GCC unroll 8
        for (int c = 0; c < GC; c++) acc[tt][c] = _mm512_setzero_ps();
    const size_t tile = (size_t)NG_ATT_KT * d;
    for (int ip = 0; ip < d / 2; ip++) {
        __m512bh kv[4];
#pragma GCC unroll 4
        for (int tt = 0; tt < NT; tt++)
            kv[tt] =
                (__m512bh)_mm512_loadu_si512(k16 + (size_t)(j0 + tt) * tile + (size_t)ip * 2 * NG_ATT_KT);
#pragma GCC unroll 8
        for (int c = 0; c < GC; c++) {
            __m512bh qb = (__m512bh)_mm512_set1_epi32((int)qp[(size_t)(g0 + c) * (d / 2) + ip]);
#pragma GCC unroll 4
            for (int tt = 0; tt < NT; tt++) acc[tt][c] = _mm512_dpbf16_ps(acc[tt][c], kv[tt], qb);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 4
    for (int tt = 0; tt < NT; tt++) {
        int t = (j0 + tt) * NG_ATT_KT, m = n - t < NG_ATT_KT ? n - t : NG_ATT_KT;
        if (m <= 0) break;
        __mmask16 mask = (__mmask16)((1u << m) - 1);
#pragma GCC unroll 8
        for (int c = 0; c < GC; c++)
            _mm512_mask_storeu_ps(scratch + (size_t)(g0 + c) * n + t, mask, _mm512_mul_ps(acc[tt][c], sc));
    }
}

/* Rows g0.. (GC of them, HC * 16 values each) of the output from the numerators' bf16 pairs
 * (row g's (n + 1) / 2 words at scratch + g * n): the position pairs all the rows take, each value
 * vector loaded once for the GC rows; then the pairs only some take (row c's positions are
 * t < base + step * c), each row alone, a pair's second value left out (as a zero) where that row
 * stops between the two, so that nothing past a row's positions reaches it. */
INLBF void values16(float *out, size_t o_stride, const float *scratch, int n, int g0, const int GC,
                    const ng_bf16 *v16, const int HC, const float *inv, int base, int step) {
    __m512 o[4][8];
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++)
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++) o[c][i] = _mm512_setzero_ps();
    const uint32_t *pw = (const uint32_t *)scratch;
    const size_t ps = (size_t)n; /* a row's stride in words */
    int p = 0;
    for (; 2 * p + 1 < base; p++) {
        __m512bh vv[8];
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++) vv[i] = (__m512bh)_mm512_loadu_si512(v16 + (size_t)p * HC * 32 + 32 * i);
#pragma GCC unroll 4
        for (int c = 0; c < GC; c++) {
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pw[(size_t)(g0 + c) * ps + p]);
#pragma GCC unroll 8
            for (int i = 0; i < HC; i++) o[c][i] = _mm512_dpbf16_ps(o[c][i], vv[i], pb);
        }
    }
    for (; 2 * p < base + step * (GC - 1); p++)
#pragma GCC unroll 4
        for (int c = 0; c < GC; c++) {
            int len = base + step * c;
            if (2 * p >= len) continue;
            __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pw[(size_t)(g0 + c) * ps + p]);
            __mmask32 keep = 2 * p + 1 < len ? ~(__mmask32)0 : (__mmask32)0x55555555;
#pragma GCC unroll 8
            for (int i = 0; i < HC; i++)
                o[c][i] = _mm512_dpbf16_ps(
                    o[c][i], (__m512bh)_mm512_maskz_loadu_epi16(keep, v16 + (size_t)p * HC * 32 + 32 * i),
                    pb);
        }
#pragma GCC unroll 4
    for (int c = 0; c < GC; c++)
#pragma GCC unroll 8
        for (int i = 0; i < HC; i++)
            _mm512_storeu_ps(out + (size_t)(g0 + c) * o_stride + 16 * i,
                             _mm512_mul_ps(o[c][i], _mm512_set1_ps(inv[g0 + c])));
}

/* G heads over n positions (step 0) or G causal rows (step 1: row g over positions t < n - (G - 1
 * - g)): queries to bf16 pairs, scores a block of tiles at a time (4 tiles for up to 4 rows, 2
 * for more), softmax512's numerators, each row's turned into bf16 pairs in place (zero past the
 * row's positions), then values16 for 16 / HC rows at a time. */
TBF static void attend16_512(float *out, size_t o_stride, const float *q, size_t q_stride, int G,
                             const ng_bf16 *k16, const ng_bf16 *v16, int n, int d, float scale,
                             float *scratch, int step) {
    uint32_t qp[NG_ATT_ROWS * 64];
    for (int g = 0; g < G; g++)
        for (int i = 0; i < d; i += 32)
            _mm512_storeu_si512(
                qp + (size_t)g * (d / 2) + i / 2,
                (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + (size_t)g * q_stride + i + 16),
                                             _mm512_loadu_ps(q + (size_t)g * q_stride + i)));
    int tiles = (n + NG_ATT_KT - 1) / NG_ATT_KT;
    for (int j0 = 0, nt; j0 < tiles; j0 += nt) { /* whole blocks, then the last tiles one at a time */
        nt = G <= 4 && tiles - j0 >= 4 ? 4 : G > 4 && tiles - j0 >= 2 ? 2 : 1;
        switch (G * 8 + nt) {
        case 8 + 4:
            scores16(scratch, n, qp, 0, 1, k16, j0, 4, d, scale);
            break;
        case 16 + 4:
            scores16(scratch, n, qp, 0, 2, k16, j0, 4, d, scale);
            break;
        case 24 + 4:
            scores16(scratch, n, qp, 0, 3, k16, j0, 4, d, scale);
            break;
        case 32 + 4:
            scores16(scratch, n, qp, 0, 4, k16, j0, 4, d, scale);
            break;
        case 40 + 2:
            scores16(scratch, n, qp, 0, 5, k16, j0, 2, d, scale);
            break;
        case 48 + 2:
            scores16(scratch, n, qp, 0, 6, k16, j0, 2, d, scale);
            break;
        case 56 + 2:
            scores16(scratch, n, qp, 0, 7, k16, j0, 2, d, scale);
            break;
        case 64 + 2:
            scores16(scratch, n, qp, 0, 8, k16, j0, 2, d, scale);
            break;
        default: /* one tile */
            for (int g0 = 0, gc; g0 < G; g0 += gc) {
                gc = G - g0 < 4 ? G - g0 : 4;
                switch (gc) {
                case 1:
                    scores16(scratch, n, qp, g0, 1, k16, j0, 1, d, scale);
                    break;
                case 2:
                    scores16(scratch, n, qp, g0, 2, k16, j0, 1, d, scale);
                    break;
                case 3:
                    scores16(scratch, n, qp, g0, 3, k16, j0, 1, d, scale);
                    break;
                default:
                    scores16(scratch, n, qp, g0, 4, k16, j0, 1, d, scale);
                    break;
                }
            }
        }
    }
    float inv[NG_ATT_ROWS];
    softmax512(scratch, G, n, step, inv);
    for (int g = 0; g < G; g++) { /* in place: 32 floats read before their 16 words are written */
        float *r = scratch + (size_t)g * n;
        int len = n - step * (G - 1 - g);
        for (int t = 0; t < len; t += 32) {
            __mmask16 m0 = len - t >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - t)) - 1);
            __mmask16 m1 = len - t >= 32  ? (__mmask16)0xffff
                           : len - t > 16 ? (__mmask16)((1u << (len - t - 16)) - 1)
                                          : 0;
            __m512 a = _mm512_maskz_loadu_ps(m0, r + t), b = _mm512_maskz_loadu_ps(m1, r + t + 16);
            __mmask16 w = (__mmask16)((1u << ((len - t + 1) / 2 < 16 ? (len - t + 1) / 2 : 16)) - 1);
            _mm512_mask_storeu_epi32(r + t / 2, w, (__m512i)_mm512_cvtne2ps_pbh(b, a));
        }
    }
    const int HC = d / 16, base = n - step * (G - 1);
    for (int g0 = 0; g0 < G; g0 += 16 / HC) {
        int gc = G - g0 < 16 / HC ? G - g0 : 16 / HC, b = base + step * g0;
        if (HC == 4) switch (gc) {
            case 1:
                values16(out, o_stride, scratch, n, g0, 1, v16, 4, inv, b, step);
                break;
            case 2:
                values16(out, o_stride, scratch, n, g0, 2, v16, 4, inv, b, step);
                break;
            case 3:
                values16(out, o_stride, scratch, n, g0, 3, v16, 4, inv, b, step);
                break;
            default:
                values16(out, o_stride, scratch, n, g0, 4, v16, 4, inv, b, step);
                break;
            }
        else if (gc == 1)
            values16(out, o_stride, scratch, n, g0, 1, v16, 8, inv, b, step);
        else
            values16(out, o_stride, scratch, n, g0, 2, v16, 8, inv, b, step);
    }
}
#endif

/* The same in plain C: the same layouts; sums in another order. */
static void pack16_c(ng_bf16 *k16, ng_bf16 *v16, const void *k, const void *v, ng_type kvt, int n, int d) {
    size_t keys = ng_attend_bf16_keys(n, d);
    for (int t = 0; t < (int)(keys / (size_t)d); t++)
        for (int i = 0; i < d; i++) k16[key16_at(t, i, d)] = ng_f32_to_bf16(key_at(k, kvt, t, i, d));
    for (int t = 0; t < (n + 1) / 2 * 2; t++)
        for (int i = 0; i < d; i++)
            v16[value16_at(t, i, d)] = t < n ? ng_f32_to_bf16(value_at(v, kvt, t, i, d)) : 0;
}

static void attend16_c(float *out, size_t o_stride, const float *q, size_t q_stride, int G,
                       const ng_bf16 *k16, const ng_bf16 *v16, int n, int d, float scale, float *scratch,
                       int step) {
    for (int g = 0; g < G; g++) {
        float *r = scratch + (size_t)g * n, mx = -INFINITY, sum = 0;
        int len = n - step * (G - 1 - g);
        for (int t = 0; t < len; t++) {
            float a = 0;
            for (int i = 0; i < d; i++)
                a += ng_bf16_to_f32(ng_f32_to_bf16(q[(size_t)g * q_stride + i])) *
                     ng_bf16_to_f32(k16[key16_at(t, i, d)]);
            r[t] = a * scale;
            mx = r[t] > mx ? r[t] : mx;
        }
        for (int t = 0; t < len; t++) sum += (r[t] = expf(r[t] - mx));
        for (int i = 0; i < d; i++) {
            float a = 0;
            for (int t = 0; t < len; t++)
                a += ng_bf16_to_f32(ng_f32_to_bf16(r[t])) * ng_bf16_to_f32(v16[value16_at(t, i, d)]);
            out[(size_t)g * o_stride + i] = a / sum;
        }
    }
}

void ng_attend_pack_bf16(ng_bf16 *k16, ng_bf16 *v16, const void *k, const void *v, ng_type kvt, int n,
                         int d) {
    att16_check(d);
    attend_check(kvt, d);
#if defined(__x86_64__)
    if (current_path() == PATH_AVX512 && ng_cpu_features()->avx512bf16)
        return pack16_512(k16, v16, k, v, kvt, n, d);
#endif
    pack16_c(k16, v16, k, v, kvt, n, d);
}

/* G rows of the kernel (see attend16_512) */
static void attend16_on(float *out, size_t o_stride, const float *q, size_t q_stride, int G,
                        const ng_bf16 *k16, const ng_bf16 *v16, int n, int d, float scale, float *scratch,
                        int step) {
#if defined(__x86_64__)
    if (ng_kernel_bf16_attention(d))
        return attend16_512(out, o_stride, q, q_stride, G, k16, v16, n, d, scale, scratch, step);
#endif
    attend16_c(out, o_stride, q, q_stride, G, k16, v16, n, d, scale, scratch, step);
}

void ng_attend_bf16(float *out, size_t o_stride, const float *q, size_t q_stride, int G, const ng_bf16 *k16,
                    const ng_bf16 *v16, int n, int d, float scale, float *scratch) {
    att16_check(d);
    if (G > NG_ATT_ROWS) ng_die("attention in bf16: %d heads at a time (at most %d)", G, NG_ATT_ROWS);
    attend16_on(out, o_stride, q, q_stride, G, k16, v16, n, d, scale, scratch, 0);
}

void ng_attend_rows_bf16(float *out, size_t o_stride, const float *q, size_t q_stride, int R,
                         const ng_bf16 *k16, const ng_bf16 *v16, int n0, int d, float scale, float *scratch) {
    att16_check(d);
    for (int r0 = 0; r0 < R; r0 += NG_ATT_ROWS) {
        int rn = R - r0 < NG_ATT_ROWS ? R - r0 : NG_ATT_ROWS;
        attend16_on(out + (size_t)r0 * o_stride, o_stride, q + (size_t)r0 * q_stride, q_stride, rn, k16, v16,
                    n0 + r0 + rn, d, scale, scratch, 1);
    }
}

/* ---- activations ---- */

/* vmath's GELU and SwiGLU gate compiled for each path's vector width (the inference build is
 * baseline x86-64, so in model/forward.c they were 4 floats at a time). Element by element, no
 * sums and no contraction (ISO C mode: -ffp-contract=off), so every path gives the same bits. */
#if defined(__x86_64__)
T512 static void gelu512(float *y, const float *x, size_t n) { ng_gelu(y, x, n); }
T256 static void gelu256(float *y, const float *x, size_t n) { ng_gelu(y, x, n); }
T512 static void silu_mul512(float *y, const float *g, const float *u, size_t n) { ng_silu_mul(y, g, u, n); }
T256 static void silu_mul256(float *y, const float *g, const float *u, size_t n) { ng_silu_mul(y, g, u, n); }
/* vmath's ng_dot with its 64 lanes in four registers (the compiler keeps the lanes in memory):
 * the same adds in the same order, so the same bits. The tail adds into its lanes only. */
T512 static float dot512(const float *a, const float *b, size_t n) {
    __m512 m[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            m[k] = _mm512_add_ps(m[k], _mm512_mul_ps(_mm512_loadu_ps(a + i + 16 * k), _mm512_loadu_ps(b + i + 16 * k)));
    for (int k = 0; k < 4 && i + 16 * k < n; k++) {
        size_t left = n - i - 16 * k;
        __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, a + i + 16 * k), _mm512_maskz_loadu_ps(mk, b + i + 16 * k));
        m[k] = _mm512_mask_add_ps(m[k], mk, m[k], p);
    }
    /* lanes j + 32, then j + 16 (ng_dot's first two folds), then _mm512_reduce_add_ps's pairs,
     * which are ng_dot's last four folds */
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(m[0], m[2]), _mm512_add_ps(m[1], m[3])));
}
T256 static float dot256(const float *a, const float *b, size_t n) { return ng_dot(a, b, n); }
T512 static void layernorm512(float *out, const float *x, const float *w, const float *b, size_t n,
                              float eps) {
    ng_layernorm(out, x, w, b, n, eps);
}
T256 static void layernorm256(float *out, const float *x, const float *w, const float *b, size_t n,
                              float eps) {
    ng_layernorm(out, x, w, b, n, eps);
}
T512 static void rmsnorm512(float *out, const float *x, const float *w, size_t n, float eps) {
    ng_rmsnorm(out, x, w, n, eps);
}
T256 static void rmsnorm256(float *out, const float *x, const float *w, size_t n, float eps) {
    ng_rmsnorm(out, x, w, n, eps);
}
/* vmath's ng_add_combination with 64 outputs in registers over the m rows: the same bits. */
T512 static void combination512(float *y, const float *rows, size_t ld, const float *c, int m, size_t n) {
    size_t i0 = 0;
    for (; i0 + 64 <= n; i0 += 64) {
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int r = 0; r < m; r++) {
            const float *row = rows + (size_t)r * ld + i0;
            __m512 cr = _mm512_set1_ps(c[r]);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) acc[k] = _mm512_add_ps(acc[k], _mm512_mul_ps(_mm512_loadu_ps(row + 16 * k), cr));
        }
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            _mm512_storeu_ps(y + i0 + 16 * k, _mm512_add_ps(_mm512_loadu_ps(y + i0 + 16 * k), acc[k]));
    }
    if (i0 < n) ng_add_combination(y + i0, rows + i0, ld, c, m, n - i0);
}
T256 static void combination256(float *y, const float *rows, size_t ld, const float *c, int m, size_t n) {
    ng_add_combination(y, rows, ld, c, m, n);
}
/* vmath's ng_max with its 64 lanes in four registers (a max does not depend on the order; the
 * first operand's NaN gives the second, so NaNs are passed over as there). */
T512 static float max512(const float *x, size_t n) {
    const __m512 lo = _mm512_set1_ps(-INFINITY);
    __m512 m[4] = {lo, lo, lo, lo};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) m[k] = _mm512_max_ps(_mm512_loadu_ps(x + i + 16 * k), m[k]);
    for (int k = 0; k < 4 && i + 16 * k < n; k++) {
        size_t left = n - i - 16 * k;
        __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        m[k] = _mm512_max_ps(_mm512_mask_loadu_ps(lo, mk, x + i + 16 * k), m[k]);
    }
    return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m[0], m[2]), _mm512_max_ps(m[1], m[3])));
}
T256 static float max256(const float *x, size_t n) { return ng_max(x, n); }
T512 static double exp_sum512(float *y, const float *x, size_t n, float mx, float scale) {
    return ng_exp_sum(y, x, n, mx, scale);
}
T256 static double exp_sum256(float *y, const float *x, size_t n, float mx, float scale) {
    return ng_exp_sum(y, x, n, mx, scale);
}
#endif

/* Runs the copy of a vmath function compiled for this machine's widest path (f512 / f256), or
 * falls through to the baseline's. */
#if defined(__x86_64__)
#define PER_PATH(f512, f256, ...)                                                                            \
    do {                                                                                                     \
        int path_ = current_path();                                                                          \
        if (path_ == PATH_AVX512) return f512(__VA_ARGS__);                                                  \
        if (path_ == PATH_AVX2) return f256(__VA_ARGS__);                                                    \
    } while (0)
#else
#define PER_PATH(f512, f256, ...) ((void)0)
#endif

void ng_act_gelu(float *y, const float *x, size_t n) {
    PER_PATH(gelu512, gelu256, y, x, n);
    ng_gelu(y, x, n);
}

void ng_act_silu_mul(float *y, const float *g, const float *u, size_t n) {
    PER_PATH(silu_mul512, silu_mul256, y, g, u, n);
    ng_silu_mul(y, g, u, n);
}

void ng_act_layernorm(float *out, const float *x, const float *w, const float *b, size_t n, float eps) {
    PER_PATH(layernorm512, layernorm256, out, x, w, b, n, eps);
    ng_layernorm(out, x, w, b, n, eps);
}

void ng_act_rmsnorm(float *out, const float *x, const float *w, size_t n, float eps) {
    PER_PATH(rmsnorm512, rmsnorm256, out, x, w, n, eps);
    ng_rmsnorm(out, x, w, n, eps);
}

float ng_act_dot(const float *a, const float *b, size_t n) {
    PER_PATH(dot512, dot256, a, b, n);
    return ng_dot(a, b, n);
}

void ng_act_add_combination(float *y, const float *rows, size_t ld, const float *c, int m, size_t n) {
    PER_PATH(combination512, combination256, y, rows, ld, c, m, n);
    ng_add_combination(y, rows, ld, c, m, n);
}

float ng_act_max(const float *x, size_t n) {
    PER_PATH(max512, max256, x, n);
    return ng_max(x, n);
}

double ng_act_exp_sum(float *y, const float *x, size_t n, float mx, float scale) {
    PER_PATH(exp_sum512, exp_sum256, y, x, n, mx, scale);
    return ng_exp_sum(y, x, n, mx, scale);
}

/* ---- machine limits ---- */

/* Sums n floats with enough independent vector adds that the loads, not the adds, limit it. */
static float sum_portable(const float *p, size_t n) {
    float s[16] = {0};
    for (size_t i = 0; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) s[j] += p[i + j];
    float t = 0;
    for (int j = 0; j < 16; j++) t += s[j];
    return t;
}

#if defined(__x86_64__)
/* Four streams a quarter of the range apart, each prefetched 2 KiB ahead: on Zen 5 this reads
 * ~10% faster than one plain stream, so the measured floor is the best case a kernel can reach. */
#define SUM_STREAMS 4
#define SUM_PREFETCH 512

T512 static float sum512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t per = n / SUM_STREAMS / 64 * 64;
    for (size_t i = 0; i < per; i += 64) {
        for (int s = 0; s < SUM_STREAMS; s++) {
            const float *q = p + s * per + i;
            _mm_prefetch((const char *)(q + SUM_PREFETCH), _MM_HINT_T0);
            a0 = _mm512_add_ps(a0, _mm512_load_ps(q));
            a1 = _mm512_add_ps(a1, _mm512_load_ps(q + 16));
            a2 = _mm512_add_ps(a2, _mm512_load_ps(q + 32));
            a3 = _mm512_add_ps(a3, _mm512_load_ps(q + 48));
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

T256 static float sum256(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t per = n / SUM_STREAMS / 64 * 64;
    for (size_t i = 0; i < per; i += 32) {
        for (int s = 0; s < SUM_STREAMS; s++) {
            const float *q = p + s * per + i;
            _mm_prefetch((const char *)(q + SUM_PREFETCH), _MM_HINT_T0);
            a0 = _mm256_add_ps(a0, _mm256_load_ps(q));
            a1 = _mm256_add_ps(a1, _mm256_load_ps(q + 8));
            a2 = _mm256_add_ps(a2, _mm256_load_ps(q + 16));
            a3 = _mm256_add_ps(a3, _mm256_load_ps(q + 24));
        }
    }
    return hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}
#endif

static float sum_best(const float *p, size_t n) {
#if defined(__x86_64__)
    int path = best_path();
    if (path == PATH_AVX512) return sum512(p, n);
    if (path == PATH_AVX2) return sum256(p, n);
#endif
    return sum_portable(p, n);
}

#define BW_BYTES ((size_t)512 << 20)
#define BW_PASSES 16

/* The bandwidth measurement as a team job: the buffer, the best pass (thread 0's), and each
 * thread's sum (kept, so the reads are not optimized away). */
typedef struct {
    float *buf, *sums;
    double best;
} bw_job;

static void bw_run(void *ctx, int t, int T) {
    bw_job *j = ctx;
    /* Per-thread ranges in whole 1 KiB steps keep every stream's loads aligned. */
    size_t steps = BW_BYTES / sizeof(float) / 256, i0 = steps * t / T * 256, i1 = steps * (t + 1) / T * 256;
    for (size_t i = i0; i < i1; i++) j->buf[i] = (float)(i & 7);
    float local = 0;
    for (int pass = 0; pass < BW_PASSES; pass++) {
        ng_team_barrier();
        double t0 = ng_time();
        local += sum_best(j->buf + i0, i1 - i0);
        ng_team_barrier();
        double dt = ng_time() - t0;
        if (t == 0 && dt > 0 && BW_BYTES / dt > j->best) j->best = BW_BYTES / dt;
    }
    j->sums[t] = local;
}

/* The buffer is 16x a 32 MiB L3, so caches cannot serve a pass; transparent huge pages are
 * requested so TLB misses do not understate what the memory system delivers. Each thread first
 * touches the part it later reads (first-touch placement), then every pass is timed as a whole
 * and the best pass counts. The threads are the team's, as in the kernels (an OpenMP region
 * here left OpenMP's threads spinning for milliseconds after it, taking the cores from what ran
 * next: products 2-3x slower for the first few ms on one 2-core machine). */
double ng_measure_read_bandwidth(int threads) {
    if (threads <= 0) threads = ng_threads();
    float *buf = mmap(NULL, BW_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) ng_die("bandwidth measurement: cannot map %zu bytes", BW_BYTES);
#ifdef MADV_HUGEPAGE
    madvise(buf, BW_BYTES, MADV_HUGEPAGE);
#endif
    bw_job j = {buf, xcalloc((size_t)threads, sizeof(float)), 0};
    ng_team_run(threads, bw_run, &j);
    volatile float sink = 0;
    for (int t = 0; t < threads; t++) sink += j.sums[t];
    (void)sink;
    free(j.sums);
    munmap(buf, BW_BYTES);
    return j.best;
}

/* Peak FMA rate: 24 independent accumulator chains per thread (more than latency x FMA ports
 * on current cores), run for a fixed count calibrated to about 50 ms, best of four runs. */
#define PEAK_CHAINS 24

/* The portable path's: its multiply and add are two dependent instructions (no contraction), so
 * 4 x PEAK_CHAINS floats in 4-wide vectors (SSE, NEON) keep both pipes busy; 24 left them half
 * idle (its GEMM measured 118% of that peak). */
#define PORTABLE_CHAINS (4 * PEAK_CHAINS)

static double fma_portable(long iters) {
    float a[PORTABLE_CHAINS];
    for (int i = 0; i < PORTABLE_CHAINS; i++) a[i] = (float)i;
    for (long it = 0; it < iters; it++)
#pragma omp simd
        for (int i = 0; i < PORTABLE_CHAINS; i++) a[i] = a[i] * 0.999f + 0.001f;
    float s = 0;
    for (int i = 0; i < PORTABLE_CHAINS; i++) s += a[i];
    return s;
}

#if defined(__x86_64__)
/* The accumulators are written out so that each is certainly one register. */
#define FMA_BODY(fmadd, m, c)                                                                                \
    for (long it = 0; it < iters; it++) {                                                                    \
        a0 = fmadd(a0, m, c), a1 = fmadd(a1, m, c), a2 = fmadd(a2, m, c), a3 = fmadd(a3, m, c);              \
        a4 = fmadd(a4, m, c), a5 = fmadd(a5, m, c), a6 = fmadd(a6, m, c), a7 = fmadd(a7, m, c);              \
        a8 = fmadd(a8, m, c), a9 = fmadd(a9, m, c), a10 = fmadd(a10, m, c), a11 = fmadd(a11, m, c);          \
        a12 = fmadd(a12, m, c), a13 = fmadd(a13, m, c), a14 = fmadd(a14, m, c), a15 = fmadd(a15, m, c);      \
        a16 = fmadd(a16, m, c), a17 = fmadd(a17, m, c), a18 = fmadd(a18, m, c), a19 = fmadd(a19, m, c);      \
        a20 = fmadd(a20, m, c), a21 = fmadd(a21, m, c), a22 = fmadd(a22, m, c), a23 = fmadd(a23, m, c);      \
    }

/* A 512-bit peak kernel: 24 chains of op (an f32 FMA, or vdpbf16ps) on the operands m and c of
 * type mt, summed at the end. Distinct start values: identical chains would be merged into one
 * by the compiler. */
#define S512(i) _mm512_set1_ps(0.5f + 0.01f * i)
#define PEAK512(attr, name, op, mt, mval, cval)                                                              \
    attr static double name(long iters) {                                                                    \
        mt m = mval, c = cval;                                                                               \
        __m512 a0 = S512(0), a1 = S512(1), a2 = S512(2), a3 = S512(3), a4 = S512(4), a5 = S512(5),           \
               a6 = S512(6), a7 = S512(7), a8 = S512(8), a9 = S512(9), a10 = S512(10), a11 = S512(11),       \
               a12 = S512(12), a13 = S512(13), a14 = S512(14), a15 = S512(15), a16 = S512(16),               \
               a17 = S512(17), a18 = S512(18), a19 = S512(19), a20 = S512(20), a21 = S512(21),               \
               a22 = S512(22), a23 = S512(23);                                                               \
        FMA_BODY(op, m, c)                                                                                   \
        __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),               \
                                 _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));              \
        s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),   \
                                           _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15)))); \
        s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a16, a17), _mm512_add_ps(a18, a19)), \
                                           _mm512_add_ps(_mm512_add_ps(a20, a21), _mm512_add_ps(a22, a23)))); \
        return _mm512_reduce_add_ps(s);                                                                      \
    }

PEAK512(T512, fma512, _mm512_fmadd_ps, __m512, _mm512_set1_ps(0.999f), _mm512_set1_ps(0.001f))
/* vdpbf16ps: 32 multiply-adds in pairs, 64 FLOPs an instruction */
PEAK512(TBF, dpbf16_512, _mm512_dpbf16_ps, __m512bh, (__m512bh)_mm512_set1_epi32(0x3f7f3f7f),
        (__m512bh)_mm512_set1_epi32(0x3a833a83))
/* vpdpbusd: 64 u8 x s8 multiply-adds, 128 integer operations an instruction, on the chains'
 * bits (each step adds 4 to every lane: the floats they are summed as at the end stay finite).
 * As asm: with the intrinsic and casts GCC 12 copied the chains through memory every step, a
 * third of this rate on Zen 5. */
INLV __m512 dpbusd_bits(__m512 a, __m512i m, __m512i c) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(a) : "v"(m), "v"(c));
    return a;
}
PEAK512(TV, dpbusd512, dpbusd_bits, __m512i, _mm512_set1_epi8(1), _mm512_set1_epi8(1))
#undef PEAK512
#undef S512

/* The AVX2 path's integer dot products, 32 u8 x s8 multiply-adds (64 operations) a step of each
 * of 12 chains: AVX-VNNI's vpdpbusd (as asm; the chains are named variables, which GCC keeps in
 * registers, where an array of them went through memory every step), or vpmaddubsw + vpmaddwd +
 * vpaddd on the chain's own bytes (constant operands would be computed once for all chains).
 * The sums are integers: their floats at the end need only be finite. */
#define DOT256_STEP(a)                                                                                       \
    do {                                                                                                     \
        if (vnni) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(a) : "x"(m), "x"(m));                          \
        else a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(a, m), ones));                   \
    } while (0)
T256 static double peak_dot256(long iters, const int vnni) {
    const __m256i m = _mm256_set1_epi8(1), ones = _mm256_set1_epi16(1);
#define I(i) _mm256_set1_epi32(i)
    __m256i a0 = I(0), a1 = I(1), a2 = I(2), a3 = I(3), a4 = I(4), a5 = I(5), a6 = I(6), a7 = I(7), a8 = I(8),
            a9 = I(9), a10 = I(10), a11 = I(11);
#undef I
    for (long it = 0; it < iters; it++) {
        DOT256_STEP(a0); DOT256_STEP(a1); DOT256_STEP(a2); DOT256_STEP(a3); DOT256_STEP(a4); DOT256_STEP(a5);
        DOT256_STEP(a6); DOT256_STEP(a7); DOT256_STEP(a8); DOT256_STEP(a9); DOT256_STEP(a10); DOT256_STEP(a11);
    }
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                 _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7)));
    s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(a8, a9), _mm256_add_epi32(a10, a11)));
    return hsum256(_mm256_cvtepi32_ps(s));
}
#undef DOT256_STEP

T256 static double fma256(long iters) {
    __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
    /* 16 ymm registers: 12 chains + 2 constants still cover 4-cycle latency x 2 ports. */
#define S(i) _mm256_set1_ps(0.5f + 0.01f * i)
    __m256 a0 = S(0), a1 = S(1), a2 = S(2), a3 = S(3), a4 = S(4), a5 = S(5), a6 = S(6), a7 = S(7), a8 = S(8),
           a9 = S(9), a10 = S(10), a11 = S(11);
#undef S
    for (long it = 0; it < iters * 2; it++) {
        a0 = _mm256_fmadd_ps(a0, m, c), a1 = _mm256_fmadd_ps(a1, m, c), a2 = _mm256_fmadd_ps(a2, m, c);
        a3 = _mm256_fmadd_ps(a3, m, c), a4 = _mm256_fmadd_ps(a4, m, c), a5 = _mm256_fmadd_ps(a5, m, c);
        a6 = _mm256_fmadd_ps(a6, m, c), a7 = _mm256_fmadd_ps(a7, m, c), a8 = _mm256_fmadd_ps(a8, m, c);
        a9 = _mm256_fmadd_ps(a9, m, c), a10 = _mm256_fmadd_ps(a10, m, c), a11 = _mm256_fmadd_ps(a11, m, c);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    return hsum256(s);
}
#endif

enum { PEAK_F32, PEAK_BF16, PEAK_INT8 };

/* Runs `iters` iterations of the widest kernel (of vdpbf16ps or vpdpbusd for PEAK_BF16 and
 * PEAK_INT8); returns operations done per thread. */
static double fma_run(long iters, double *sink, int kind) {
#if defined(__x86_64__)
    int path = current_path();
    if (kind == PEAK_BF16) {
        *sink += dpbf16_512(iters);
        return (double)iters * PEAK_CHAINS * 16 * 4;
    }
    if (kind == PEAK_INT8 && path == PATH_AVX2) {
        *sink += avx_vnni_on(path) ? peak_dot256(iters, 1) : peak_dot256(iters, 0);
        return (double)iters * 12 * 64;
    }
    if (kind == PEAK_INT8) {
        *sink += dpbusd512(iters);
        return (double)iters * PEAK_CHAINS * 16 * 8;
    }
    if (path == PATH_AVX512) {
        *sink += fma512(iters);
        return (double)iters * PEAK_CHAINS * 16 * 2;
    }
    if (path == PATH_AVX2) {
        *sink += fma256(iters);
        return (double)iters * 2 * 12 * 8 * 2;
    }
#endif
    *sink += fma_portable(iters);
    return (double)iters * PORTABLE_CHAINS * 2;
}

/* The peak measurement's team job: each thread's flops and chain sums. */
typedef struct {
    long iters;
    int kind;
    double *flops, *sinks;
} peak_job;

static void peak_run(void *ctx, int t, int T) {
    peak_job *j = ctx;
    (void)T;
    j->flops[t] = fma_run(j->iters, &j->sinks[t], j->kind);
}

static double measure_peak(int threads, int kind) {
    if (threads <= 0) threads = ng_threads();
    double sink = 0;
    long iters = 1 << 16;
    for (;;) { /* calibrate on one thread: ~50 ms per run */
        double t0 = ng_time();
        fma_run(iters, &sink, kind);
        double dt = ng_time() - t0;
        if (dt > 0.01) {
            iters = (long)(iters * 0.05 / dt) + 1;
            break;
        }
        iters *= 4;
    }
    double best = 0;
    peak_job j = {iters, kind, xcalloc((size_t)threads, sizeof(double)), xcalloc((size_t)threads, sizeof(double))};
    for (int run = 0; run < 4; run++) {
        double flops = 0, t0 = ng_time();
        ng_team_run(threads, peak_run, &j);
        double dt = ng_time() - t0;
        for (int t = 0; t < threads; t++) flops += j.flops[t];
        if (dt > 0 && flops / dt > best) best = flops / dt;
    }
    volatile double keep = sink;
    for (int t = 0; t < threads; t++) keep += j.sinks[t];
    (void)keep;
    free(j.flops);
    free(j.sinks);
    return best;
}

double ng_measure_peak_flops(int threads) { return measure_peak(threads, PEAK_F32); }

double ng_measure_peak_bf16_flops(int threads) {
#if defined(__x86_64__)
    if (current_path() == PATH_AVX512 && ng_cpu_features()->avx512bf16) return measure_peak(threads, PEAK_BF16);
#endif
    return 0;
}

double ng_measure_peak_int8_ops(int threads) {
#if defined(__x86_64__)
    int path = current_path();
    if ((path == PATH_AVX512 && ng_cpu_features()->avx512vnni) || path == PATH_AVX2)
        return measure_peak(threads, PEAK_INT8);
#endif
    return 0;
}
