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
 *    broadcast-FMA per (weight row, vector) per k.
 * Each output is computed by exactly one thread in an order that does not depend on the
 * thread count, so results are identical for any number of threads.
 *
 * Adding a weight type: give it a row-dot and a row-to-f32 function in TYPE_OPS (the
 * reference and the portable path then work); the SIMD paths fall back to portable for types
 * they do not know (simd_type) until they get a kernel of their own. */
#include "core/kernels.h"

#include "core/util.h"

#include <omp.h>
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
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d)) c->avx512bf16 = c->avx512f && ((a >> 5) & 1);
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

void ng_kernel_force_portable(int on) { g_forced_path = on ? PATH_PORTABLE : -1; }

int ng_kernel_set_path(const char *name) {
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

static float *grow(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
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

static void row_f32(float *dst, const void *w, int K) { memcpy(dst, w, (size_t)K * sizeof(float)); }
static void row_f16(float *dst, const void *w, int K) { ng_to_f32(dst, w, NG_F16, K); }
static void row_bf16(float *dst, const void *w, int K) { ng_to_f32(dst, w, NG_BF16, K); }

typedef struct {
    float (*dot)(const void *w, const float *x, int K); /* in index order: the reference */
    void (*to_f32)(float *dst, const void *w, int K);
} type_ops;

static const type_ops TYPE_OPS[NG_TYPE_COUNT] = {
    [NG_F32] = {dot_f32, row_f32},
    [NG_F16] = {dot_f16, row_f16},
    [NG_BF16] = {dot_bf16, row_bf16},
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
            float s = ops->dot((const char *)w + (size_t)n * rs, x + (size_t)b * K, K);
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

static void matmul_portable(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B,
                            int N, int K, int nt) {
    const type_ops *ops = ops_for(wt);
    size_t rs = ng_row_size(wt, K);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int n0 = (int)((int64_t)N * t / T), n1 = (int)((int64_t)N * (t + 1) / T);
        float *row = wt == NG_F32 ? NULL : grow(&tl_scratch, &tl_scratch_cap, (size_t)K + 1);
        for (int n = n0; n < n1; n++) {
            const void *wr = (const char *)w + (size_t)n * rs;
            const float *r = wr;
            if (row) {
                ops->to_f32(row, wr, K);
                r = row;
            }
            for (int b = 0; b < B; b++) {
                float s = dot8(r, x + (size_t)b * K, K);
                y[(size_t)b * N + n] = bias ? s + bias[n] : s;
            }
        }
    }
}

/* ---- SIMD paths ---- */

#define GEMV_MAX_B 8
/* Bytes ahead in each weight stream that the GEMV prefetches: the hardware prefetcher alone
 * leaves a few % of the read bandwidth unused at one thread on Zen 5. */
#define GEMV_PREFETCH 2048

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

typedef struct {
    int nr, bw, kch; /* weight rows, activation rows and k's per micro-kernel block */
    void (*gemv)(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias, int B,
                 int N, int K, int n0, int n1);
    void (*pack_w)(float *P, const void *w, size_t rs, ng_type wt, int nr, int K);
    void (*micro)(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0, int nr,
                  int b0, int bn, int N, int first);
} simd_isa;

static int simd_type(ng_type wt) { return wt == NG_F32 || wt == NG_F16 || wt == NG_BF16; }

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
                    _mm_prefetch(wr[r] + (size_t)(k + 16 * u) * (wt == NG_F32 ? 4 : 2) + GEMV_PREFETCH,
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
                         const int NB, int N, int K, int n0, int n1) {
    const int R = NB <= 4 ? 4 : 2;
    int len = (n1 - n0) / R, row[4];
    for (int i = 0; i < len; i++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) row[r] = n0 + r * len + i;
        gemv512_rows(y, x, w, rs, wt, bias, NB, R, row, N, K);
    }
    for (int n = n0 + R * len; n < n1; n++) gemv512_rows(y, x, w, rs, wt, bias, NB, 1, &n, N, K);
}

INL512 void gemv512_type(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1) {
    switch (B) {
    case 1:
        gemv512_body(y, x, w, rs, wt, bias, 1, N, K, n0, n1);
        break;
    case 2:
        gemv512_body(y, x, w, rs, wt, bias, 2, N, K, n0, n1);
        break;
    case 3:
        gemv512_body(y, x, w, rs, wt, bias, 3, N, K, n0, n1);
        break;
    case 4:
        gemv512_body(y, x, w, rs, wt, bias, 4, N, K, n0, n1);
        break;
    case 5:
        gemv512_body(y, x, w, rs, wt, bias, 5, N, K, n0, n1);
        break;
    case 6:
        gemv512_body(y, x, w, rs, wt, bias, 6, N, K, n0, n1);
        break;
    case 7:
        gemv512_body(y, x, w, rs, wt, bias, 7, N, K, n0, n1);
        break;
    default:
        gemv512_body(y, x, w, rs, wt, bias, 8, N, K, n0, n1);
        break;
    }
}

T512 static void gemv512(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1) {
    if (wt == NG_F32)
        gemv512_type(y, x, w, rs, NG_F32, bias, B, N, K, n0, n1);
    else if (wt == NG_F16)
        gemv512_type(y, x, w, rs, NG_F16, bias, B, N, K, n0, n1);
    else
        gemv512_type(y, x, w, rs, NG_BF16, bias, B, N, K, n0, n1);
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
    if (wt == NG_F32)
        pack_w512_type(P, w, rs, NG_F32, nr, K);
    else if (wt == NG_F16)
        pack_w512_type(P, w, rs, NG_F16, nr, K);
    else
        pack_w512_type(P, w, rs, NG_BF16, nr, K);
}

/* 12 weight rows x 32 activation rows: 24 accumulators, 2 vector loads and 12 broadcasts per k. */
T512 static void micro512(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0,
                          int nr, int b0, int bn, int N, int first) {
    __m512 acc[NR512][2];
    _Alignas(64) float tile[NR512 * BW512];
    if (!first) { /* continue the previous K chunk's sums; rows and columns past the edge are 0 */
        memset(tile, 0, sizeof tile);
        tile_load(tile, y, N, n0, nr, b0, bn, BW512);
    }
#pragma GCC unroll 12
    for (int i = 0; i < NR512; i++) {
        acc[i][0] = first ? _mm512_setzero_ps() : _mm512_load_ps(tile + i * BW512);
        acc[i][1] = first ? _mm512_setzero_ps() : _mm512_load_ps(tile + i * BW512 + 16);
    }
    for (int k = 0; k < Kp; k += KCH512) {
        const float *pw = P + (size_t)k * NR512, *px = XT + (size_t)k * BW512;
        for (int j = 0; j < KCH512; j++) {
            __m512 x0 = _mm512_load_ps(px + j * BW512), x1 = _mm512_load_ps(px + j * BW512 + 16);
#pragma GCC unroll 12
            for (int i = 0; i < NR512; i++) {
                __m512 wv = _mm512_set1_ps(pw[i * KCH512 + j]);
                acc[i][0] = _mm512_fmadd_ps(wv, x0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(wv, x1, acc[i][1]);
            }
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < NR512; i++) {
        _mm512_store_ps(tile + i * BW512, acc[i][0]);
        _mm512_store_ps(tile + i * BW512 + 16, acc[i][1]);
    }
    tile_store(y, tile, bias, N, n0, nr, b0, bn, BW512);
}

static const simd_isa ISA512 = {NR512, BW512, KCH512, gemv512, pack_w512, micro512};

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

/* As gemv512_body with 8-wide vectors; 16 ymm registers allow about 8 accumulators. The K tail
 * (< 8) is done in scalar code since AVX2 has no 16-bit masked load. */
INL256 void gemv256_body(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         const int NB, int N, int K, int n0, int n1) {
    const int U = NB <= 2 ? 4 : NB <= 4 ? 2 : 1;
    for (int n = n0; n < n1; n++) {
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
                    acc[b][u] =
                        _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)b * K + k + 8 * u), acc[b][u]);
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
}

INL256 void gemv256_type(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1) {
    switch (B) {
    case 1:
        gemv256_body(y, x, w, rs, wt, bias, 1, N, K, n0, n1);
        break;
    case 2:
        gemv256_body(y, x, w, rs, wt, bias, 2, N, K, n0, n1);
        break;
    case 3:
        gemv256_body(y, x, w, rs, wt, bias, 3, N, K, n0, n1);
        break;
    case 4:
        gemv256_body(y, x, w, rs, wt, bias, 4, N, K, n0, n1);
        break;
    case 5:
        gemv256_body(y, x, w, rs, wt, bias, 5, N, K, n0, n1);
        break;
    case 6:
        gemv256_body(y, x, w, rs, wt, bias, 6, N, K, n0, n1);
        break;
    case 7:
        gemv256_body(y, x, w, rs, wt, bias, 7, N, K, n0, n1);
        break;
    default:
        gemv256_body(y, x, w, rs, wt, bias, 8, N, K, n0, n1);
        break;
    }
}

T256 static void gemv256(float *y, const float *x, const void *w, size_t rs, ng_type wt, const float *bias,
                         int B, int N, int K, int n0, int n1) {
    if (wt == NG_F32)
        gemv256_type(y, x, w, rs, NG_F32, bias, B, N, K, n0, n1);
    else if (wt == NG_F16)
        gemv256_type(y, x, w, rs, NG_F16, bias, B, N, K, n0, n1);
    else
        gemv256_type(y, x, w, rs, NG_BF16, bias, B, N, K, n0, n1);
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
    if (wt == NG_F32)
        pack_w256_type(P, w, rs, NG_F32, nr, K);
    else if (wt == NG_F16)
        pack_w256_type(P, w, rs, NG_F16, nr, K);
    else
        pack_w256_type(P, w, rs, NG_BF16, nr, K);
}

/* 6 weight rows x 16 activation rows: 12 accumulators, 2 loads and 6 broadcasts per k. */
T256 static void micro256(float *y, const float *P, const float *XT, const float *bias, int Kp, int n0,
                          int nr, int b0, int bn, int N, int first) {
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

static const simd_isa ISA256 = {NR256, BW256, KCH256, gemv256, pack_w256, micro256};

#endif /* __x86_64__ */

static const simd_isa *isa_for(int path) {
#if defined(__x86_64__)
    if (path == PATH_AVX512) return &ISA512;
    if (path == PATH_AVX2) return &ISA256;
#endif
    (void)path;
    return NULL;
}

static void matmul_gemv(const simd_isa *isa, float *y, const float *x, const void *w, ng_type wt,
                        const float *bias, int B, int N, int K, int nt) {
    size_t rs = ng_row_size(wt, K);
    /* Chunks of whole 16-row groups so that threads never write the same cache line of y. */
    int groups = (N + 15) / 16;
    if (nt > groups) nt = groups;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int n0 = (int)((int64_t)groups * t / T) * 16, n1 = (int)((int64_t)groups * (t + 1) / T) * 16;
        if (n1 > N) n1 = N;
        if (n0 < n1) isa->gemv(y, x, w, rs, wt, bias, B, N, K, n0, n1);
    }
}

/* K is cut into chunks of GEMM_KC so that the XT blocks of one chunk (bblk * 128 KiB at most
 * with AVX-512) stay in L2 while every weight block of the chunk sweeps over them; the
 * accumulators carry over between chunks through y, so the sum order is that of one pass. */
#define GEMM_KC 1024

static void matmul_gemm(const simd_isa *isa, float *y, const float *x, const void *w, ng_type wt,
                        const float *bias, int B, int N, int K, int nt) {
    size_t rs = ng_row_size(wt, K);
    int NR = isa->nr, BW = isa->bw;
    int Kp = (K + isa->kch - 1) / isa->kch * isa->kch, KC = Kp < GEMM_KC ? Kp : GEMM_KC;
    int nblk = (N + NR - 1) / NR, bblk = (B + BW - 1) / BW, nchunks = K > 0 ? (K + KC - 1) / KC : 1;
    int64_t items = (int64_t)nblk * bblk;
    float *XT = grow(&tl_xt, &tl_xt_cap, (size_t)bblk * BW * Kp + 1);
    if (nt > items) nt = (int)items;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        for (int bb = t; bb < bblk; bb += T)
            pack_x(XT + (size_t)bb * BW * Kp, x, bb * BW, B - bb * BW < BW ? B - bb * BW : BW, K, Kp, BW);
        float *P = grow(&tl_scratch, &tl_scratch_cap, (size_t)NR * KC + 1);
#pragma omp barrier
        /* Work items run n-block-major, so a thread converts each weight block once per chunk
         * and then sweeps the activation blocks; splitting items (not n-blocks) keeps both
         * threads busy when N is small. Every chunk gives a thread the same items. */
        int64_t i0 = items * t / T, i1 = items * (t + 1) / T;
        for (int c = 0; c < nchunks; c++) {
            int k0 = c * KC, kl = K - k0 < KC ? K - k0 : KC;
            int klp = (kl + isa->kch - 1) / isa->kch * isa->kch;
            const float *cbias = c == nchunks - 1 ? bias : NULL;
            int packed = -1;
            for (int64_t i = i0; i < i1; i++) {
                int nb = (int)(i / bblk), bb = (int)(i % bblk);
                int n0 = nb * NR, nr = N - n0 < NR ? N - n0 : NR;
                int b0 = bb * BW, bn = B - b0 < BW ? B - b0 : BW;
                if (nb != packed) {
                    isa->pack_w(P, (const char *)w + (size_t)n0 * rs + ng_row_size(wt, k0), rs, wt, nr, kl);
                    packed = nb;
                }
                isa->micro(y, P, XT + (size_t)bb * BW * Kp + (size_t)k0 * BW, cbias, klp, n0, nr, b0, bn, N,
                           c == 0);
            }
        }
    }
}

void ng_matmul(float *y, const float *x, const void *w, ng_type wt, const float *bias, int B, int N, int K) {
    if (B <= 0 || N <= 0) return;
    int nt = threads_for((double)B * N * K);
    const simd_isa *isa = simd_type(wt) ? isa_for(current_path()) : NULL;
    if (!isa)
        matmul_portable(y, x, w, wt, bias, B, N, K, nt);
    else if (B <= GEMV_MAX_B)
        matmul_gemv(isa, y, x, w, wt, bias, B, N, K, nt);
    else
        matmul_gemm(isa, y, x, w, wt, bias, B, N, K, nt);
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

/* The buffer is 16x a 32 MiB L3, so caches cannot serve a pass; transparent huge pages are
 * requested so TLB misses do not understate what the memory system delivers. Each thread first
 * touches the half it later reads (first-touch placement), then every pass is timed as a whole
 * and the best pass counts. */
double ng_measure_read_bandwidth(int threads) {
    if (threads <= 0) threads = ng_threads();
    size_t n = BW_BYTES / sizeof(float);
    float *buf = mmap(NULL, BW_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) ng_die("bandwidth measurement: cannot map %zu bytes", BW_BYTES);
#ifdef MADV_HUGEPAGE
    madvise(buf, BW_BYTES, MADV_HUGEPAGE);
#endif
    volatile float sink = 0;
    double best = 0;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        /* Per-thread ranges in whole 1 KiB steps keep every stream's loads aligned. */
        size_t steps = n / 256, i0 = steps * t / T * 256, i1 = steps * (t + 1) / T * 256;
        for (size_t i = i0; i < i1; i++) buf[i] = (float)(i & 7);
        float local = 0;
        for (int pass = 0; pass < BW_PASSES; pass++) {
            double t0 = 0;
#pragma omp barrier
#pragma omp master
            t0 = ng_time();
            local += sum_best(buf + i0, i1 - i0);
#pragma omp barrier
#pragma omp master
            {
                double dt = ng_time() - t0;
                if (dt > 0 && BW_BYTES / dt > best) best = BW_BYTES / dt;
            }
        }
#pragma omp atomic
        sink += local;
    }
    (void)sink;
    munmap(buf, BW_BYTES);
    return best;
}

/* Peak FMA rate: 24 independent accumulator chains per thread (more than latency x FMA ports
 * on current cores), run for a fixed count calibrated to about 50 ms, best of four runs. */
#define PEAK_CHAINS 24

static double fma_portable(long iters) {
    float a[PEAK_CHAINS];
    for (int i = 0; i < PEAK_CHAINS; i++) a[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < PEAK_CHAINS; i++) a[i] = a[i] * 0.999f + 0.001f;
    float s = 0;
    for (int i = 0; i < PEAK_CHAINS; i++) s += a[i];
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

T512 static double fma512(long iters) {
    __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
    /* Distinct start values: identical chains would be merged into one by the compiler. */
#define S(i) _mm512_set1_ps(0.5f + 0.01f * i)
    __m512 a0 = S(0), a1 = S(1), a2 = S(2), a3 = S(3), a4 = S(4), a5 = S(5), a6 = S(6), a7 = S(7), a8 = S(8),
           a9 = S(9), a10 = S(10), a11 = S(11), a12 = S(12), a13 = S(13), a14 = S(14), a15 = S(15),
           a16 = S(16), a17 = S(17), a18 = S(18), a19 = S(19), a20 = S(20), a21 = S(21), a22 = S(22),
           a23 = S(23);
#undef S
    FMA_BODY(_mm512_fmadd_ps, m, c)
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                                       _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a16, a17), _mm512_add_ps(a18, a19)),
                                       _mm512_add_ps(_mm512_add_ps(a20, a21), _mm512_add_ps(a22, a23))));
    return _mm512_reduce_add_ps(s);
}

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

/* Runs `iters` iterations of the widest kernel; returns FLOPs done per thread. */
static double fma_run(long iters, double *sink) {
#if defined(__x86_64__)
    int path = best_path();
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
    return (double)iters * PEAK_CHAINS * 2;
}

double ng_measure_peak_flops(int threads) {
    if (threads <= 0) threads = ng_threads();
    double sink = 0;
    long iters = 1 << 16;
    for (;;) { /* calibrate on one thread: ~50 ms per run */
        double t0 = ng_time();
        fma_run(iters, &sink);
        double dt = ng_time() - t0;
        if (dt > 0.01) {
            iters = (long)(iters * 0.05 / dt) + 1;
            break;
        }
        iters *= 4;
    }
    double best = 0;
    for (int run = 0; run < 4; run++) {
        double flops = 0, t0 = ng_time();
#pragma omp parallel num_threads(threads) reduction(+ : flops, sink)
        flops += fma_run(iters, &sink);
        double dt = ng_time() - t0;
        if (dt > 0 && flops / dt > best) best = flops / dt;
    }
    volatile double keep = sink;
    (void)keep;
    return best;
}
