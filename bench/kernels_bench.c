/* kernels_bench — matmul speed against this machine's own measured limits.
 *
 * Prints the measured read bandwidth and FMA peak (1 and 2 threads), then for the GPT-2 124M
 * weight shapes and f32/f16/bf16 weights:
 *   - decode (B=1): GB/s of weight bytes streamed, as % of the measured read bandwidth for
 *     the same thread count;
 *   - prefill (B=128): GFLOP/s (2*B*N*K per call), as % of the measured FMA peak (bf16 where
 *     the bf16 GEMM runs on AVX512-BF16: of vdpbf16ps's measured peak).
 * Then for the LLaMA 7B and TinyLlama 1.1B weight shapes and the quantized types q8_0, q4_0,
 * q4_k, q6_k, in the order a model's own weights take on this path (ng_matmul_native): decode
 * (B=1) at 1 and 2 threads as % of the read bandwidth, and prefill (B=512, 2 threads) in
 * GFLOP/s (operations) and as a share of a measured peak: the integer dot product's where
 * integer kernels run the batch (the int8 GEMM, or the integer GEMV as q4_0, q4_kr and q6_kr on
 * the AVX2 path), else the f32 FMA peak ("equivalent": the dequantize-then-f32 GEMM is not bound
 * by that peak in the same way). --kernels avx2|portable runs that path's kernels on a CPU that
 * has better (--portable: the same as --kernels portable).
 * Every configuration is validated against ng_matmul_ref before it is timed; a mismatch ends
 * the program with status 1. Timings are the best of several repetitions (the machine is
 * shared: run with OMP_WAIT_POLICY=passive when other jobs compete for the cores, since
 * spinning OpenMP workers then lose their time slices). Usage:
 *   kernels_bench [--quick] [--kernels avx512|avx2|portable] [--portable] [--only gpt2|llama] */
#include "core/dtype.h"
#include "core/kernels.h"
#include "core/quant.h"
#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 12345;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

/* Max over outputs of |y - ref| / (2 (K+2) 2^-24 sum|x w|): <= 1 is within the rounding bound
 * the tests use. The weights are dequantized once so the bound uses the values the kernel saw. */
static double check(const float *y, const float *ref, const float *x, const float *wf, int B, int N, int K) {
    double worst = 0;
    for (int b = 0; b < B; b++) {
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += fabs((double)x[(size_t)b * K + k] * wf[(size_t)n * K + k]);
            double tol = 2.0 * (K + 2) * 0x1p-24 * s + 1e-30;
            double r = fabs((double)y[(size_t)b * N + n] - ref[(size_t)b * N + n]) / tol;
            if (!(r <= worst)) worst = r;
        }
    }
    return worst;
}

/* Best seconds per call over reps repetitions of at least min_s each. Calls rotate over the
 * ncopies weight copies so that, as in a real decode step (a model's weights are far larger than
 * the L3), every call streams its weights from memory rather than the cache. */
static double time_matmul(float *y, const float *x, void *const *w, int ncopies, ng_type wt, int B, int N,
                          int K, int reps, double min_s) {
    double best = 1e30;
    int c = 0;
    for (int r = 0; r < reps; r++) {
        int inner = 0;
        double t0 = ng_time(), dt;
        do {
            ng_matmul(y, x, w[c], wt, NULL, B, N, K);
            c = (c + 1) % ncopies;
            inner++;
            dt = ng_time() - t0;
        } while (dt < min_s);
        if (dt / inner < best) best = dt / inner;
    }
    return best;
}

/* Raises bw[t] / peak[t] (t = 1, 2 threads) to what is measured now, if higher. */
static void measure_limits(double *bw, double *peak) {
    for (int t = 1; t <= 2; t++) {
        double b = ng_measure_read_bandwidth(t), p = ng_measure_peak_flops(t);
        if (b > bw[t]) bw[t] = b;
        if (p > peak[t]) peak[t] = p;
    }
}

typedef struct {
    const char *what;
    int N, K;
    ng_type wt;
    double gbs1, gbs2, gflops;
} row;

/* Weight copies needed so that one rotation covers 256 MiB, 8x this machine's L3. */
#define COLD_BYTES ((double)(256 << 20))

/* Random blocks of a quantized type: f32 values in [-1, 1) quantized where netgpt can, else
 * random bytes with small f16 scales (every byte pattern is a valid block). */
static void random_weights(void *w, ng_type wt, int N, int K) {
    if (ng_type_can_quant(wt)) {
        float *v = malloc(sizeof(float) * (size_t)K);
        for (int n = 0; n < N; n++) {
            for (int k = 0; k < K; k++) v[k] = frand();
            ng_quantize_row(wt, v, (char *)w + ng_row_size(wt, K) * n, K);
        }
        free(v);
        return;
    }
    size_t bs = ng_type_size(wt), nb = ng_row_size(wt, K) * N / bs;
    unsigned char *p = w;
    for (size_t i = 0; i < nb * bs; i++) p[i] = (unsigned char)(frand() * 128 + 128);
    for (size_t i = 0; i < nb; i++) {
        ng_f16 h = ng_f32_to_f16(0.01f * frand());
        memcpy(p + i * bs + (wt == NG_Q6_K ? 208 : 0), &h, 2);
        if (wt == NG_Q4_K) memcpy(p + i * bs + 2, &h, 2);
    }
}

/* |y - ref| against the integer GEMV's bound (tests/test_quant.c): x rounded to 8 bits per block
 * of 32 costs at most d/2 |w| per value, plus f32 rounding; here 4x that margin for the
 * k-quants' split sums. Returns the worst ratio error / bound over the first nrow rows. */
static double check_quant(const float *y, int ldy, const float *ref, const float *x, const float *wf, int B, int N,
                          int K) {
    double worst = 0;
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++) {
            double tol = 1e-30;
            for (int k0 = 0; k0 < K; k0 += 32) {
                double amax = 0;
                for (int j = k0; j < k0 + 32; j++) amax = fmax(amax, fabs(x[(size_t)b * K + j]));
                for (int j = k0; j < k0 + 32; j++) {
                    double w = fabs(wf[(size_t)n * K + j]), xa = fabs(x[(size_t)b * K + j]);
                    tol += w * (amax / 254 + 0x1p-20 * xa) + 8.0 * (K + 2) * 0x1p-24 * w * (xa + amax / 127);
                }
            }
            double r = fabs((double)y[(size_t)b * ldy + n] - ref[(size_t)b * N + n]) / tol;
            if (!(r <= worst)) worst = r;
        }
    return worst;
}

typedef struct {
    const char *model;
    int N, K;
    ng_type wt;
    double gbs1, gbs2, gflops;
} qrow;

/* The LLaMA table: returns 1 when a configuration failed validation. */
static int bench_llama(int quick, const double *bw, const double *peak, qrow *rows, int *nrows) {
    static const struct {
        const char *model;
        int N, K;
    } shapes[] = {
        {"7B", 4096, 4096},   {"7B", 11008, 4096},  {"7B", 4096, 11008},  {"7B", 32000, 4096},
        {"1.1B", 2048, 2048}, {"1.1B", 5632, 2048}, {"1.1B", 2048, 5632}, {"1.1B", 32000, 2048},
    };
    static const ng_type types[] = {NG_Q8_0, NG_Q4_0, NG_Q4_K, NG_Q6_K};
    enum { BP = 512, NCHK = 48 };
    const int reps = quick ? 3 : 7;
    int failed = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, K = shapes[s].K;
        float *x = malloc(sizeof(float) * (size_t)BP * K);
        float *y = malloc(sizeof(float) * (size_t)BP * N), *ref = malloc(sizeof(float) * (size_t)BP * NCHK);
        float *wf = malloc(sizeof(float) * (size_t)NCHK * K);
        for (size_t i = 0; i < (size_t)BP * K; i++) x[i] = frand();
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            /* in the order a model holds them (q4_0r, ..., q4_kr, q6_kr where AVX-512 VNNI runs) */
            ng_type wt = ng_matmul_native(types[ti]);
            size_t rs = ng_row_size(wt, K);
            double bytes = (double)rs * N;
            void *w = malloc((size_t)bytes);
            random_weights(w, types[ti], N, K);
            if (wt != types[ti]) ng_reorder_rows(w, wt, w, types[ti], K, N);
            for (int n = 0; n < NCHK; n++) ng_dequantize_row(wt, (char *)w + rs * n, wf + (size_t)n * K, K);
            /* Validate decode (B=1, integer GEMV), a batched GEMV (B=8) and prefill (B=512: the
             * int8 GEMM, the integer GEMV or the f32 GEMM, by type and CPU) on 1 and 2 threads,
             * on the first NCHK weight rows. */
            int Bv[3] = {1, 8, BP};
            for (int v = 0; v < 3; v++) {
                ng_matmul_ref(ref, x, w, wt, NULL, Bv[v] == BP ? 16 : Bv[v], NCHK, K);
                for (int t = 1; t <= 2; t++) {
                    ng_set_threads(t);
                    ng_matmul(y, x, w, wt, NULL, Bv[v], N, K);
                    double e = check_quant(y, N, ref, x, wf, Bv[v] == BP ? 16 : Bv[v], NCHK, K);
                    if (e > 1) {
                        printf("MISMATCH %s %dx%d %s B=%d threads=%d: error %.2f x bound\n", shapes[s].model, N, K,
                               ng_type_name(wt), Bv[v], t, e);
                        failed = 1;
                    }
                }
            }
            if (failed) {
                free(w);
                continue;
            }
            int ncopies = (int)ceil(COLD_BYTES / bytes);
            void **copies = malloc(sizeof(void *) * ncopies);
            copies[0] = w;
            for (int c = 1; c < ncopies; c++) {
                copies[c] = malloc((size_t)bytes);
                memcpy(copies[c], w, (size_t)bytes);
            }
            double gbs[3];
            for (int t = 1; t <= 2; t++) {
                ng_set_threads(t);
                gbs[t] = bytes / time_matmul(y, x, copies, ncopies, wt, 1, N, K, reps, 0.05) / 1e9;
            }
            for (int c = 1; c < ncopies; c++) free(copies[c]);
            free(copies);
            ng_set_threads(2);
            double gflops = 2.0 * BP * N * K / time_matmul(y, x, &w, 1, wt, BP, N, K, quick ? 1 : 2, 0.05) / 1e9;
            qrow r = {shapes[s].model, N, K, wt, gbs[1], gbs[2], gflops};
            rows[(*nrows)++] = r;
            free(w);
            fprintf(stderr, ".");
        }
        free(x), free(y), free(ref), free(wf);
    }
    return failed;
}

static void print_llama(const qrow *rows, int nrows, const double *bw, const double *peak, double peak8) {
    printf("\n%-5s %-11s %-5s | %-27s %-27s | %s\n", "model", "N x K", "type", "decode B=1, 1 thread",
           "decode B=1, 2 threads", "prefill B=512, 2 threads");
    for (int i = 0; i < nrows; i++) {
        const qrow *r = &rows[i];
        int on8 = peak8 > 0 && ng_kernel_int8_rows(r->wt, 512);
        printf("%-5s %5dx%-5d %-5s | %6.1f GB/s %5.1f%% of bw    | %6.1f GB/s %5.1f%% of bw    | "
               "%6.1f GFLOP/s %5.1f%% of %s\n",
               r->model, r->N, r->K, ng_type_name(r->wt), r->gbs1, 100 * r->gbs1 * 1e9 / bw[1], r->gbs2,
               100 * r->gbs2 * 1e9 / bw[2], r->gflops, 100 * r->gflops * 1e9 / (on8 ? peak8 : peak[2]),
               on8 ? "int8 peak" : "f32 peak (equivalent)");
    }
}

int main(int argc, char **argv) {
    int quick = 0, gpt2 = 1, llama = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--portable") == 0)
            ng_kernel_force_portable(1);
        else if (strcmp(argv[i], "--kernels") == 0 && i + 1 < argc && ng_kernel_set_path(argv[i + 1]) == 0)
            i++; /* a path this CPU does not run ends in the usage message */
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc && strcmp(argv[i + 1], "gpt2") == 0)
            llama = 0, i++;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc && strcmp(argv[i + 1], "llama") == 0)
            gpt2 = 0, i++;
        else {
            fprintf(stderr, "usage: %s [--quick] [--kernels avx512|avx2|portable] [--portable] [--only gpt2|llama]\n",
                    argv[0]);
            return 2;
        }
    }
    const int reps = quick ? 3 : 7;
    /* The limits are measured before and after the kernels and the larger value is used, so a
     * moment of contention from other processes during one measurement cannot flatter the
     * kernels' percentages. */
    double bw[3] = {0}, peak[3] = {0};
    measure_limits(bw, peak);
    static const struct {
        int N, K;
        const char *what;
    } shapes[] = {
        {2304, 768, "attn qkv"}, {768, 768, "attn proj"}, {3072, 768, "mlp fc"},
        {768, 3072, "mlp proj"}, {50257, 768, "lm head"},
    };
    static const ng_type types[] = {NG_F32, NG_F16, NG_BF16};
    enum { BP = 128 };
    int failed = 0, nrows = 0;
    row rows[sizeof shapes / sizeof shapes[0] * sizeof types / sizeof types[0]];
    for (size_t s = 0; gpt2 && s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s].N, K = shapes[s].K;
        float *wf = malloc(sizeof(float) * (size_t)N * K);
        float *x = malloc(sizeof(float) * (size_t)BP * K), *xr = malloc(sizeof(float) * (size_t)BP * K);
        float *y = malloc(sizeof(float) * (size_t)BP * N), *ref = malloc(sizeof(float) * (size_t)BP * N);
        void *w = malloc(ng_row_size(NG_F32, K) * N);
        for (size_t i = 0; i < (size_t)N * K; i++) wf[i] = frand();
        for (size_t i = 0; i < (size_t)BP * K; i++) x[i] = frand();
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            ng_type wt = types[ti];
            ng_from_f32(w, wf, wt, (int64_t)N * K);
            float *wd = malloc(sizeof(float) * (size_t)N * K);
            ng_to_f32(wd, w, wt, (int64_t)N * K);
            double bytes = (double)ng_row_size(wt, K) * N;
            /* Validate both regimes on both thread counts before timing anything. The bf16
             * GEMM on AVX512-BF16 multiplies x rounded to bf16: its reference does too. */
            int Bv[2] = {1, BP};
            for (int v = 0; v < 2; v++) {
                int Bc = Bv[v];
                /* The reference is slow for the lm head at B=128: check its first 8 rows there. */
                int Bchk = (size_t)Bc * N * K > (size_t)1 << 30 ? 8 : Bc;
                const float *xc = x;
                if (wt == NG_BF16 && Bc > 8 && ng_kernel_bf16_dot()) {
                    for (size_t i = 0; i < (size_t)Bchk * K; i++) xr[i] = ng_bf16_to_f32(ng_f32_to_bf16(x[i]));
                    xc = xr;
                }
                ng_matmul_ref(ref, xc, w, wt, NULL, Bchk, N, K);
                for (int t = 1; t <= 2; t++) {
                    ng_set_threads(t);
                    ng_matmul(y, x, w, wt, NULL, Bc, N, K);
                    double e = check(y, ref, xc, wd, Bchk, N, K);
                    if (e > 1) {
                        printf("MISMATCH %s %s B=%d threads=%d: error %.2f x bound\n", shapes[s].what,
                               ng_type_name(wt), Bc, t, e);
                        failed = 1;
                    }
                }
            }
            free(wd);
            if (failed) continue;
            int ncopies = (int)ceil(COLD_BYTES / bytes);
            void **copies = malloc(sizeof(void *) * ncopies);
            copies[0] = w;
            for (int c = 1; c < ncopies; c++) {
                copies[c] = malloc((size_t)bytes);
                memcpy(copies[c], w, (size_t)bytes);
            }
            double gbs[3];
            for (int t = 1; t <= 2; t++) {
                ng_set_threads(t);
                gbs[t] = bytes / time_matmul(y, x, copies, ncopies, wt, 1, N, K, reps, 0.05) / 1e9;
            }
            for (int c = 1; c < ncopies; c++) free(copies[c]);
            free(copies);
            ng_set_threads(2);
            double gflops =
                2.0 * BP * N * K / time_matmul(y, x, &w, 1, wt, BP, N, K, quick ? 2 : 3, 0.05) / 1e9;
            row r = {shapes[s].what, N, K, wt, gbs[1], gbs[2], gflops};
            rows[nrows++] = r;
            fprintf(stderr, ".");
        }
        free(wf), free(x), free(xr), free(y), free(ref), free(w);
    }
    qrow qrows[32];
    int nq = 0;
    if (llama) failed |= bench_llama(quick, bw, peak, qrows, &nq);
    fprintf(stderr, "\n");
    measure_limits(bw, peak);
    printf("kernel path: %s\n", ng_kernel_path());
    printf("read bandwidth: 1 thread %.1f GB/s, 2 threads %.1f GB/s\n", bw[1] / 1e9, bw[2] / 1e9);
    printf("FMA peak f32:   1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", peak[1] / 1e9, peak[2] / 1e9);
    /* the instructions the bf16 and int8 GEMMs run on, where they do: 2 threads */
    double peakbf = ng_kernel_bf16_dot() ? ng_measure_peak_bf16_flops(2) : 0;
    double peak8 = ng_measure_peak_int8_ops(2);
    if (peakbf > 0) printf("vdpbf16ps peak: 2 threads %.1f GFLOP/s\n", peakbf / 1e9);
    if (peak8 > 0) printf("int8 dot peak:  2 threads %.1f GOP/s\n", peak8 / 1e9);
    printf("\n");
    printf("%-10s %-11s %-5s | %-30s %-30s | %s\n", "shape", "N x K", "type", "decode B=1, 1 thread",
           "decode B=1, 2 threads", "prefill B=128, 2 threads");
    for (int i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        int onbf = peakbf > 0 && r->wt == NG_BF16;
        printf("%-10s %5dx%-5d %-5s | %6.1f GB/s %5.1f%% of bw       | %6.1f GB/s %5.1f%% of bw       | "
               "%6.1f GFLOP/s %5.1f%% of %s peak\n",
               r->what, r->N, r->K, ng_type_name(r->wt), r->gbs1, 100 * r->gbs1 * 1e9 / bw[1], r->gbs2,
               100 * r->gbs2 * 1e9 / bw[2], r->gflops, 100 * r->gflops * 1e9 / (onbf ? peakbf : peak[2]),
               onbf ? "bf16" : "f32");
    }
    print_llama(qrows, nq, bw, peak, peak8);
    return failed;
}
