/* Tests for src/core/kernels.c (matmul paths against the reference) and the 16-bit float
 * conversions of src/core/dtype.c (known bit patterns, exhaustive round trips and ties).
 *
 * Error bound for fast vs reference: both sum K products in f32 in different orders (and the
 * fast paths fuse multiply-adds), so each differs from the exact sum by at most
 * gamma_K * S with S = sum_k |x_k w_k| (Higham, recursive summation). The check is
 *     |fast - ref| <= 2 * (K + 2) * 2^-24 * (S + |bias|) + 1e-30,
 * which no correct kernel exceeds and a missing, doubled or misplaced term (typical size S/K)
 * exceeds for every K here. Results must be bit-identical for 1 and 2 threads. */
#include "core/dtype.h"
#include "core/kernels.h"
#include "matmul_threads.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / (1 << 23)) - 1.0);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- dtype conversions ---- */

static void test_f16_known_values(void) {
    static const struct {
        uint16_t h;
        uint32_t f;
    } cases[] = {
        {0x3c00, 0x3f800000},                       /* 1.0 */
        {0xc100, 0xc0200000},                       /* -2.5 */
        {0x7bff, 0x477fe000},                       /* 65504, largest finite */
        {0x0000, 0x00000000}, {0x8000, 0x80000000}, /* +-0 */
        {0x0001, 0x33800000},                       /* 2^-24, smallest subnormal */
        {0x03ff, 0x387fc000},                       /* largest subnormal 1023 * 2^-24 */
        {0x0400, 0x38800000},                       /* 2^-14, smallest normal */
        {0x7c00, 0x7f800000}, {0xfc00, 0xff800000}, /* +-inf */
        {0x3555, 0x3eaaa000},                       /* 0.333251953125 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t got = f32_bits(ng_f16_to_f32(cases[i].h));
        CHECK(got == cases[i].f, "f16 %04x -> f32 %08x, want %08x", cases[i].h, got, cases[i].f);
        uint16_t back = ng_f32_to_f16(bits_f32(cases[i].f));
        CHECK(back == cases[i].h, "f32 %08x -> f16 %04x, want %04x", cases[i].f, back, cases[i].h);
    }
    float nan = ng_f16_to_f32(0x7e00);
    CHECK(nan != nan, "f16 7e00 is not nan");
    uint16_t hn = ng_f32_to_f16(bits_f32(0x7fc00000));
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "f32 nan -> f16 %04x, not nan", hn);
    hn = ng_f32_to_f16(bits_f32(0x7f800001)); /* signalling nan with payload only in low bits */
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0, "f32 snan -> f16 %04x, not nan", hn);
    /* Rounding: overflow, ties to even at normal and subnormal scale, underflow. */
    static const struct {
        float f;
        uint16_t h;
    } rnd[] = {
        {65519.0f, 0x7bff}, /* below the midpoint to 65536: stays finite */
        {65520.0f, 0x7c00}, /* tie 65504 / 65536: even is 65536, i.e. inf */
        {1e10f, 0x7c00},
        {-1e10f, 0xfc00},
        {1.0f + 0x1p-11f, 0x3c00},    /* tie: to even mantissa 0 */
        {1.0f + 0x3p-11f, 0x3c02},    /* tie: to even mantissa 2 */
        {1.0f + 0x1.02p-11f, 0x3c01}, /* just above the tie */
        {0x1p-25f, 0x0000},           /* half the smallest subnormal: tie to 0 */
        {0x1.000002p-25f, 0x0001},    /* just above: rounds up */
        {0x3p-25f, 0x0002},           /* tie 1 / 2 units: to 2 */
        {0x5p-25f, 0x0002},           /* tie 2 / 3 units: to 2 */
        {0x1p-30f, 0x0000},
        {-0x1p-30f, 0x8000},
        {0x1.ffcp-15f, 0x0400}, /* largest subnormal + half unit, tie to even -> smallest normal */
    };
    for (size_t i = 0; i < sizeof rnd / sizeof rnd[0]; i++) {
        uint16_t got = ng_f32_to_f16(rnd[i].f);
        CHECK(got == rnd[i].h, "f32 %a -> f16 %04x, want %04x", (double)rnd[i].f, got, rnd[i].h);
    }
}

/* Every f16 survives f16 -> f32 -> f16, and the midpoint between every pair of neighbouring
 * finite f16 values (exact in f32) rounds to the one with the even mantissa. */
static void test_f16_exhaustive(void) {
    int bad_trip = 0, bad_tie = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = ng_f16_to_f32((uint16_t)h);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan) {
            if (f == f) bad_trip++;
            continue;
        }
        if (ng_f32_to_f16(f) != h && bad_trip++ < 5) fprintf(stderr, "round trip of %04x fails\n", h);
        if ((h & 0x7fff) >= 0x7bff) continue; /* no finite upper neighbour */
        float g = ng_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)f + (double)g) / 2);
        uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (ng_f32_to_f16(mid) != want && bad_tie++ < 5)
            fprintf(stderr, "tie between %04x and %04x gives %04x\n", h, h + 1, ng_f32_to_f16(mid));
    }
    CHECK(bad_trip == 0, "%d f16 values do not round-trip", bad_trip);
    CHECK(bad_tie == 0, "%d f16 ties not rounded to even", bad_tie);
}

static void test_bf16_known_values(void) {
    static const struct {
        uint16_t h;
        uint32_t f;
    } cases[] = {
        {0x3f80, 0x3f800000}, {0xc020, 0xc0200000}, {0x7f7f, 0x7f7f0000}, {0x0001, 0x00010000},
        {0x0000, 0x00000000}, {0x8000, 0x80000000}, {0x7f80, 0x7f800000}, {0xff80, 0xff800000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t got = f32_bits(ng_bf16_to_f32(cases[i].h));
        CHECK(got == cases[i].f, "bf16 %04x -> f32 %08x, want %08x", cases[i].h, got, cases[i].f);
        uint16_t back = ng_f32_to_bf16(bits_f32(cases[i].f));
        CHECK(back == cases[i].h, "f32 %08x -> bf16 %04x, want %04x", cases[i].f, back, cases[i].h);
    }
    static const struct {
        uint32_t f;
        uint16_t h;
    } rnd[] = {
        {0x3f808000, 0x3f80}, /* tie: to even */
        {0x3f818000, 0x3f82}, /* tie: to even (up) */
        {0x3f808001, 0x3f81}, /* above the tie */
        {0x3f807fff, 0x3f80}, /* below the tie */
        {0x7f7fffff, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x00008000, 0x0000}, /* subnormal tie to 0 */
        {0x80018000, 0x8002}, /* negative subnormal tie to even */
    };
    for (size_t i = 0; i < sizeof rnd / sizeof rnd[0]; i++) {
        uint16_t got = ng_f32_to_bf16(bits_f32(rnd[i].f));
        CHECK(got == rnd[i].h, "f32 %08x -> bf16 %04x, want %04x", rnd[i].f, got, rnd[i].h);
    }
    uint16_t hn = ng_f32_to_bf16(bits_f32(0x7f800001)); /* nan whose payload is all in the low half */
    CHECK((hn & 0x7f80) == 0x7f80 && (hn & 0x7f) != 0, "f32 snan -> bf16 %04x, not nan", hn);
    hn = ng_f32_to_bf16(bits_f32(0xffc00000));
    CHECK(hn == 0xffc0, "f32 -qnan -> bf16 %04x, want ffc0", hn);
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        int is_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (!is_nan && ng_f32_to_bf16(ng_bf16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "%d bf16 values do not round-trip", bad);
}

/* ng_from_f32's vector path (F16C where the CPU has it) gives the scalar conversion's bits for
 * every kind of input: f32 bit patterns 4099 apart over all 2^32 (every exponent, nan payloads,
 * infinities, subnormals), then the exact ties and their neighbours of every f16 pair. The count
 * is not a multiple of 8, so the tail takes the scalar loop. */
static void test_f16_array_matches_scalar(void) {
    size_t n = ((size_t)1 << 32) / 4099 + 3 * 0x7bff + 5;
    uint32_t *u = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    size_t m = 0;
    for (uint64_t b = 0; b < ((uint64_t)1 << 32); b += 4099) u[m++] = (uint32_t)b;
    for (uint32_t i = 0; i < 0x7bff; i++) {
        float mid =
            (float)(((double)ng_f16_to_f32((uint16_t)i) + (double)ng_f16_to_f32((uint16_t)(i + 1))) / 2);
        uint32_t mb = f32_bits(mid) | (i & 1) << 31; /* both signs */
        u[m++] = mb, u[m++] = mb + 1, u[m++] = mb - 1;
    }
    while (m < n) u[m++] = 0x7f800001u;
    float *f = malloc(n * 4);
    memcpy(f, u, n * 4);
    ng_from_f32(h, f, NG_F16, (int64_t)n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want = ng_f32_to_f16(bits_f32(u[i]));
        if (h[i] != want && bad++ < 5)
            fprintf(stderr, "f32 %08x -> f16 %04x in an array, %04x alone\n", u[i], h[i], want);
    }
    CHECK(bad == 0, "%d of %zu f16 array conversions differ from the scalar one", bad, n);
    free(f);
    free(u);
    free(h);
}

/* ng_to_f32's vector path gives the scalar conversion's bits for every f16 value (nans made
 * quiet by both), in an array whose length is not a multiple of 8. */
static void test_f16_array_to_f32_matches_scalar(void) {
    enum { N = 0x10000 + 5 };
    uint16_t *h = malloc(N * 2);
    float *f = malloc(N * 4);
    for (uint32_t i = 0; i < N; i++) h[i] = (uint16_t)(i * 40503u); /* every value once, then 5 more */
    ng_to_f32(f, h, NG_F16, N);
    int bad = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint32_t got = f32_bits(f[i]), want = f32_bits(ng_f16_to_f32(h[i]));
        if (got != want && bad++ < 5)
            fprintf(stderr, "f16 %04x -> f32 %08x in an array, %08x alone\n", h[i], got, want);
    }
    CHECK(bad == 0, "%d f16 -> f32 array conversions differ from the scalar one", bad);
    free(h);
    free(f);
}

/* The bandwidth and peak measurements (team jobs with barriers between timed passes) on one
 * thread, on two, and on more threads than cores: a positive, finite figure each time. */
static void test_measurements(void) {
    for (int t = 1; t <= 3; t++) {
        double bw = ng_measure_read_bandwidth(t);
        CHECK(bw > 1e8 && bw < 1e13, "read bandwidth on %d threads: %g B/s", t, bw);
    }
    for (int t = 1; t <= 2; t++) {
        double f = ng_measure_peak_flops(t);
        CHECK(f > 1e8 && f < 1e15, "peak on %d threads: %g FLOP/s", t, f);
    }
}

static void test_array_conversions(void) {
    float src[5] = {1.0f, -2.5f, 65504.0f, 0x1p-24f, 0.1f}, dst[5];
    uint16_t h[5];
    ng_from_f32(h, src, NG_F16, 5);
    ng_to_f32(dst, h, NG_F16, 5);
    for (int i = 0; i < 5; i++) {
        CHECK(h[i] == ng_f32_to_f16(src[i]), "f16 array element %d", i);
        CHECK(dst[i] == ng_f16_to_f32(h[i]), "f16 array back element %d", i);
    }
    ng_from_f32(h, src, NG_BF16, 5);
    ng_to_f32(dst, h, NG_BF16, 5);
    for (int i = 0; i < 5; i++) CHECK(dst[i] == ng_bf16_to_f32(ng_f32_to_bf16(src[i])), "bf16 array %d", i);
    ng_to_f32(dst, src, NG_F32, 5);
    CHECK(memcmp(dst, src, sizeof src) == 0, "f32 copy");
}

/* ---- matmul ---- */

static void test_cpu_features(void) {
    const ng_cpu *c = ng_cpu_features();
    const char *p = ng_kernel_path();
    printf("# cpu: avx2=%d fma=%d f16c=%d avx512f=%d bw=%d vl=%d vnni=%d bf16=%d amx=%d avx-vnni=%d; path %s\n",
           c->avx2, c->fma, c->f16c, c->avx512f, c->avx512bw, c->avx512vl, c->avx512vnni, c->avx512bf16, c->amx,
           c->avxvnni, p);
    CHECK(!c->avxvnni || c->avx2, "avx-vnni without avx2");
    CHECK(!c->avx512f || c->avx2, "avx512f without avx2");
    CHECK(strcmp(p, "avx512") == 0 ? c->avx512f && c->avx512bw && c->avx512vl : 1,
          "path avx512 without features");
    CHECK(ng_kernel_set_path("nonsense") == -1, "unknown path accepted");
    CHECK(ng_kernel_set_path("portable") == 0, "portable path refused");
    CHECK(strcmp(ng_kernel_path(), "portable") == 0, "portable not taken");
    ng_kernel_set_path(NULL);
    CHECK(strcmp(ng_kernel_path(), p) == 0, "run-time path not restored");
    ng_set_threads(3);
    CHECK(ng_threads() == 3, "threads %d", ng_threads());
    ng_set_threads(0);
    CHECK(ng_threads() >= 1, "threads %d", ng_threads());
}

typedef struct {
    ng_type wt;
    int B, N, K;
    void *w;
    float *x, *bias, *ref, *refb, *tol, *tolb, *y1, *y2;
    float *refr, *refbr; /* bf16: the reference with x rounded to bf16 (the bf16 GEMM's input) */
} mm_case;

/* Random weights of type wt; the reference and bounds, computed in double for the bounds. */
static void mm_setup(mm_case *c, ng_type wt, int B, int N, int K) {
    c->wt = wt, c->B = B, c->N = N, c->K = K;
    size_t rs = ng_row_size(wt, K);
    float *wf = malloc(sizeof(float) * ((size_t)N * K + 1));
    c->w = malloc(rs * N + 1);
    c->x = malloc(sizeof(float) * ((size_t)B * K + 1));
    c->bias = malloc(sizeof(float) * N);
    size_t ny = (size_t)B * N;
    c->ref = malloc(sizeof(float) * ny), c->refb = malloc(sizeof(float) * ny);
    c->tol = malloc(sizeof(float) * ny), c->tolb = malloc(sizeof(float) * ny);
    c->y1 = malloc(sizeof(float) * ny), c->y2 = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < (size_t)N * K; i++) wf[i] = frand();
    for (size_t i = 0; i < (size_t)B * K; i++) c->x[i] = frand();
    for (int i = 0; i < N; i++) c->bias[i] = frand();
    ng_from_f32(c->w, wf, wt, (int64_t)N * K);
    ng_to_f32(wf, c->w, wt, (int64_t)N * K); /* the values the kernels actually see */
    ng_matmul_ref(c->ref, c->x, c->w, wt, NULL, B, N, K);
    ng_matmul_ref(c->refb, c->x, c->w, wt, c->bias, B, N, K);
    c->refr = c->refbr = NULL;
    if (wt == NG_BF16) {
        float *xr = malloc(sizeof(float) * ((size_t)B * K + 1));
        for (size_t i = 0; i < (size_t)B * K; i++) xr[i] = ng_bf16_to_f32(ng_f32_to_bf16(c->x[i]));
        c->refr = malloc(sizeof(float) * ny), c->refbr = malloc(sizeof(float) * ny);
        ng_matmul_ref(c->refr, xr, c->w, wt, NULL, B, N, K);
        ng_matmul_ref(c->refbr, xr, c->w, wt, c->bias, B, N, K);
        free(xr);
    }
    const double u = 0x1p-24;
    for (int b = 0; b < B; b++) {
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += fabs((double)c->x[(size_t)b * K + k] * wf[(size_t)n * K + k]);
            c->tol[(size_t)b * N + n] = (float)(2 * (K + 2) * u * s + 1e-30);
            c->tolb[(size_t)b * N + n] = (float)(2 * (K + 2) * u * (s + fabs(c->bias[n])) + 1e-30);
        }
    }
    free(wf);
}

static void mm_free(mm_case *c) {
    free(c->w), free(c->x), free(c->bias), free(c->ref), free(c->refb);
    free(c->tol), free(c->tolb), free(c->y1), free(c->y2), free(c->refr), free(c->refbr);
}

/* Counts outputs outside the bound; prints the first few. */
static int mm_compare(const mm_case *c, const float *y, const float *ref, const float *tol,
                      const char *what) {
    int bad = 0;
    for (size_t i = 0; i < (size_t)c->B * c->N; i++) {
        double d = fabs((double)y[i] - ref[i]);
        if (!(d <= tol[i]) && bad++ < 3)
            fprintf(stderr, "%s %s B=%d N=%d K=%d [b=%zu n=%zu]: %.9g vs ref %.9g (tol %.3g)\n", what,
                    ng_type_name(c->wt), c->B, c->N, c->K, i / c->N, i % c->N, y[i], ref[i], tol[i]);
    }
    return bad;
}

/* Runs the current path with and without bias, on 1 and 2 threads; returns failures. With
 * rounded, against the reference of x rounded to bf16. */
static int mm_check_path(mm_case *c, const char *path, int rounded) {
    int bad = 0;
    const float *ref = rounded ? c->refr : c->ref, *refb = rounded ? c->refbr : c->refb;
    ng_set_threads(1);
    ng_matmul(c->y1, c->x, c->w, c->wt, c->bias, c->B, c->N, c->K);
    ng_set_threads(2);
    ng_matmul(c->y2, c->x, c->w, c->wt, c->bias, c->B, c->N, c->K);
    bad += mm_compare(c, c->y2, refb, c->tolb, path);
    if (memcmp(c->y1, c->y2, sizeof(float) * c->B * c->N) != 0) {
        fprintf(stderr, "%s %s B=%d N=%d K=%d: 1 and 2 threads differ\n", path, ng_type_name(c->wt), c->B,
                c->N, c->K);
        bad++;
    }
    ng_matmul(c->y2, c->x, c->w, c->wt, NULL, c->B, c->N, c->K);
    bad += mm_compare(c, c->y2, ref, c->tol, path);
    return bad;
}

/* Every path this CPU can run, the portable one included. */
static const char *const PATHS[] = {"avx512", "avx2", "portable"};

static void check_shapes(ng_type wt, const int *Bs, int nB, const int *Ns, int nN, const int *Ks, int nK) {
    int bad = 0, runs = 0;
    for (int ib = 0; ib < nB; ib++) {
        for (int in = 0; in < nN; in++) {
            for (int ik = 0; ik < nK; ik++) {
                mm_case c;
                mm_setup(&c, wt, Bs[ib], Ns[in], Ks[ik]);
                for (int p = 0; p < 3; p++) {
                    if (ng_kernel_set_path(PATHS[p]) != 0) continue;
                    if (wt == NG_BF16 && ng_kernel_bf16_dot()) {
                        /* the GEMM (B > 8) with vdpbf16ps, then every regime with f32 products */
                        bad += mm_check_path(&c, "avx512-bf16", c.B > 8);
                        ng_kernel_set_bf16_dot(0);
                        bad += mm_check_path(&c, PATHS[p], 0);
                        ng_kernel_set_bf16_dot(1);
                    } else {
                        bad += mm_check_path(&c, PATHS[p], 0);
                    }
                    runs++;
                }
                ng_kernel_set_path(NULL);
                mm_free(&c);
                if (bad > 10) break;
            }
        }
    }
    ng_set_threads(0);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d mismatches for %s", bad, ng_type_name(wt));
}

static const int SHAPE_B[] = {1, 2, 3, 4, 5, 7, 16, 33, 70};
static const int SHAPE_N[] = {1, 3, 16, 17, 64, 100};
static const int SHAPE_K[] = {1, 7, 16, 31, 64, 100, 257, 768};
#define COUNT(a) (int)(sizeof(a) / sizeof(a[0]))

static void test_matmul_f32(void) {
    check_shapes(NG_F32, SHAPE_B, COUNT(SHAPE_B), SHAPE_N, COUNT(SHAPE_N), SHAPE_K, COUNT(SHAPE_K));
}
static void test_matmul_f16(void) {
    check_shapes(NG_F16, SHAPE_B, COUNT(SHAPE_B), SHAPE_N, COUNT(SHAPE_N), SHAPE_K, COUNT(SHAPE_K));
}
static void test_matmul_bf16(void) {
    check_shapes(NG_BF16, SHAPE_B, COUNT(SHAPE_B), SHAPE_N, COUNT(SHAPE_N), SHAPE_K, COUNT(SHAPE_K));
}

/* Shapes big enough that both threads get work in every regime (GEMV up to B=8, GEMM above),
 * with N not a multiple of any block size, B around the GEMV/GEMM switch; and K = 8300, which the
 * GEMM cuts into K chunks (4096 k's, 8192 in bf16 pairs) with a tail, the sums carried over. */
static void test_matmul_threaded_shapes(void) {
    static const int Bs[] = {1, 2, 4, 8, 9, 32, 65}, Ns[] = {1, 203}, Ks[] = {768, 2100};
    static const int Bl[] = {9, 40}, Nl[] = {25}, Kl[] = {8300};
    ng_type types[] = {NG_F32, NG_F16, NG_BF16};
    for (int t = 0; t < 3; t++) {
        check_shapes(types[t], Bs, COUNT(Bs), Ns, COUNT(Ns), Ks, COUNT(Ks));
        check_shapes(types[t], Bl, COUNT(Bl), Nl, COUNT(Nl), Kl, COUNT(Kl));
    }
}

/* GEMV threads take steps from each other's shares once their own are done: with claims of one
 * step and more threads than cores (the workers then sleep between jobs and start late), the
 * first thread takes most of the others' rows. Every row must still be computed once, as one
 * thread computes it; and some steps must really have been taken, or this tested nothing. */
static void test_matmul_steal(void) {
    static const int Bs[] = {1, 2, 5, 8};
    ng_type types[] = {NG_F32, NG_F16};
    int bad = 0, ran = 0;
    long steals0 = ng_kernel_steals();
    ng_kernel_set_steal_bytes(1);
    for (int t = 0; t < 2; t++)
        for (int ib = 0; ib < COUNT(Bs); ib++) {
            mm_case c;
            mm_setup(&c, types[t], Bs[ib], 203, 512);
            for (int p = 0; p < 2; p++) { /* the paths with threads that take steps */
                if (ng_kernel_set_path(PATHS[p]) != 0) continue;
                ran++;
                ng_set_threads(1);
                ng_matmul(c.y1, c.x, c.w, c.wt, c.bias, c.B, c.N, c.K);
                bad += mm_compare(&c, c.y1, c.refb, c.tolb, PATHS[p]);
                char label[32];
                snprintf(label, sizeof label, "%s ", PATHS[p]);
                bad += matmul_threads_differ(c.y1, c.y2, c.x, c.w, c.wt, c.bias, c.B, c.N, c.K, label);
            }
            ng_kernel_set_path(NULL);
            mm_free(&c);
        }
    ng_kernel_set_steal_bytes(0);
    ng_set_threads(0);
    long taken = ng_kernel_steals() - steals0;
    printf("# %ld blocks taken from other threads' shares\n", taken);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(!ran || taken > 0, "no thread took steps from another's share");
}

/* The bf16 GEMM rounds each activation to bf16, to nearest with ties to even, and sums the
 * products in f32: known answers with weights of 1, where rounding shows exactly. Row b's x is
 * V[b % 5] everywhere, so y = K * (V rounded); the f32 products (ng_kernel_set_bf16_dot(0)) give
 * K * V. */
static void test_matmul_bf16_dot(void) {
    if (ng_kernel_set_path("avx512") != 0 || !ng_kernel_bf16_dot()) {
        ng_kernel_set_path(NULL);
        SKIP("this CPU has no AVX512-BF16");
    }
    enum { B = 40, N = 13, K = 100 };
    static const float V[5][2] = {
        {1 + 0x1p-12f, 1},             /* below half an ulp: down */
        {1 + 0x1p-8f, 1},              /* a tie, 1 is even */
        {1 + 3 * 0x1p-8f, 1 + 0x1p-6f}, /* a tie, 1 + 2^-6 is even */
        {-2, -2},
        {1 + 0x1p-7f + 0x1p-12f, 1 + 0x1p-7f},
    };
    static float x[B * K], y[B * N];
    static uint16_t w[N * K];
    for (int i = 0; i < N * K; i++) w[i] = ng_f32_to_bf16(1);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < K; k++) x[b * K + k] = V[b % 5][0];
    for (int on = 1; on >= 0; on--) {
        ng_kernel_set_bf16_dot(on);
        for (int t = 1; t <= 2; t++) {
            ng_set_threads(t);
            ng_matmul(y, x, w, NG_BF16, NULL, B, N, K);
            int bad = 0;
            for (int b = 0; b < B; b++)
                for (int n = 0; n < N; n++) {
                    float want = K * V[b % 5][on ? 1 : 0];
                    if (y[b * N + n] != want && bad++ < 3)
                        fprintf(stderr, "bf16 products %s, %d threads: y[%d][%d] = %.9g, want %.9g\n",
                                on ? "on" : "off", t, b, n, y[b * N + n], want);
                }
            CHECK(bad == 0, "%d wrong outputs (bf16 products %s, %d threads)", bad, on ? "on" : "off", t);
        }
    }
    ng_kernel_set_bf16_dot(1);
    ng_set_threads(0);
    ng_kernel_set_path(NULL);
}

/* K = 0 is an empty sum: the output is the bias (or 0). */
static void test_matmul_empty_k(void) {
    float x[1] = {0}, y[60], bias[3] = {1, 2, 3};
    uint16_t w[1] = {0};
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(PATHS[p]) != 0) continue;
        for (int B = 1; B <= 20; B += 19) { /* GEMV and GEMM */
            ng_matmul(y, x, w, NG_F16, bias, B, 3, 0);
            for (int i = 0; i < 3 * B; i++) CHECK(y[i] == bias[i % 3], "%s K=0 y[%d]=%g", PATHS[p], i, y[i]);
        }
        for (int B = 1; B <= 20; B += 19) {
            ng_matmul(y, x, w, NG_F16, NULL, B, 3, 0);
            for (int i = 0; i < 3 * B; i++) CHECK(y[i] == 0, "%s K=0 no bias y[%d]=%g", PATHS[p], i, y[i]);
        }
    }
    ng_kernel_set_path(NULL);
}

/* The reference against an independent double-precision sum on a tiny exact case. */
static void test_matmul_ref_exact(void) {
    float x[2 * 3] = {1, 2, 3, -1, 0.5f, 0.25f};
    float w[2 * 3] = {1, 0, -1, 2, 2, 2};
    float bias[2] = {10, -10};
    float y[4];
    ng_matmul_ref(y, x, w, NG_F32, bias, 2, 2, 3);
    float want[4] = {1 - 3 + 10, 2 + 4 + 6 - 10, -1 - 0.25f + 10, -2 + 1 + 0.5f - 10};
    for (int i = 0; i < 4; i++) CHECK(y[i] == want[i], "y[%d] = %g, want %g", i, y[i], want[i]);
    uint16_t wh[6];
    ng_from_f32(wh, w, NG_F16, 6);
    ng_matmul_ref(y, x, wh, NG_F16, bias, 2, 2, 3);
    for (int i = 0; i < 4; i++) CHECK(y[i] == want[i], "f16 y[%d] = %g, want %g", i, y[i], want[i]);
    ng_from_f32(wh, w, NG_BF16, 6);
    ng_matmul_ref(y, x, wh, NG_BF16, bias, 2, 2, 3);
    for (int i = 0; i < 4; i++) CHECK(y[i] == want[i], "bf16 y[%d] = %g, want %g", i, y[i], want[i]);
    CHECK(ng_matmul_supported(NG_F32) && ng_matmul_supported(NG_F16) && ng_matmul_supported(NG_BF16),
          "plain types unsupported");
    CHECK(!ng_matmul_supported(NG_I32) && !ng_matmul_supported((ng_type)-1), "bad types supported");
}

/* ng_attend on every path against softmax attention in double: G heads sharing a KV head, query
 * and output rows with strides wider than d, head sizes that are and are not multiples of the
 * vector width, and position counts around the key tiles and the kernel's blocks of tiles; keys
 * and values cached as f32 and as f16 (the reference then uses the f16 values). The key tiles'
 * positions past n are NaN (they must not reach the output). Scores are scaled so that the
 * softmax is peaked (an error in one score moves the output), and once more, for some counts,
 * far past expf's range (exponentials taken without subtracting the maximum overflow).
 * ng_attend_rows the same way: G causal rows of one head (row g over the first n - (G - 1 - g)
 * positions); for some counts the last position's key and value are NaN, which only the last
 * row may see (its output NaN, the others' exact); off AVX-512 each row is also the same bits
 * as ng_attend for that row alone. */
static void test_attend(void) {
    static const int Gs[] = {1, 3, 5, 8, 12}, ds[] = {8, 64, 80, 128}, ns[] = {1, 15, 16, 17, 40, 63, 64, 65, 200};
    int bad = 0, same = 0, runs = 0;
    for (int rows = 0; rows < 2; rows++)
    for (int ig = 0; ig < 4 * COUNT(Gs); ig++) /* f32, then f16 caches; then both with huge scores */
        for (int id = 0; id < COUNT(ds); id++)
            for (int in = 0; in < COUNT(ns); in++) {
                int G = Gs[ig % COUNT(Gs)], d = ds[id], n = ns[in], f16 = ig / COUNT(Gs) % 2, huge = ig >= 2 * COUNT(Gs);
                if (huge && (n < 17 || id % 2 == 0)) continue;
                if (rows && n < G) continue;
                int poison = rows && G > 1 && in % 2; /* the last position's key and value NaN */
                size_t qs = (size_t)d + 5, kvs = (size_t)d + 3, os = (size_t)d + 7;
                float *q = malloc(sizeof(float) * qs * G), *k = malloc(sizeof(float) * kvs * n);
                float *v = malloc(sizeof(float) * kvs * n), *o = malloc(sizeof(float) * os * G);
                float *scratch = malloc(sizeof(float) * (size_t)(G > NG_ATT_ROWS ? G : NG_ATT_ROWS) * n);
                double *ref = malloc(sizeof(double) * (size_t)G * d), *p = malloc(sizeof(double) * n);
                size_t nk = (size_t)(n + NG_ATT_KT - 1) / NG_ATT_KT * NG_ATT_KT * d; /* whole tiles */
                float *kt = malloc(sizeof(float) * nk), *vr = malloc(sizeof(float) * n * d);
                ng_f16 *k16 = malloc(sizeof(ng_f16) * nk), *v16 = malloc(sizeof(ng_f16) * n * d);
                for (size_t i = 0; i < nk; i++) kt[i] = NAN, k16[i] = ng_f32_to_f16(NAN);
                for (size_t i = 0; i < qs * G; i++) q[i] = 2 * frand();
                for (size_t i = 0; i < kvs * n; i++) {
                    k[i] = frand(), v[i] = frand();
                    if (f16) k[i] = ng_f16_to_f32(ng_f32_to_f16(k[i])), v[i] = ng_f16_to_f32(ng_f32_to_f16(v[i]));
                }
                if (poison)
                    for (int i = 0; i < d; i++) k[(n - 1) * kvs + i] = v[(n - 1) * kvs + i] = NAN;
                for (int t = 0; t < n; t++) {
                    ng_attend_put_key(kt, NG_F32, t, d, k + t * kvs);
                    ng_attend_put_key(k16, NG_F16, t, d, k + t * kvs);
                    for (int i = 0; i < d; i++)
                        vr[(size_t)t * d + i] = v[t * kvs + i], v16[(size_t)t * d + i] = ng_f32_to_f16(v[t * kvs + i]);
                }
                float scale = (huge ? 400.0f : 1.0f) / sqrtf((float)d);
                for (int g = 0; g < G; g++) {
                    double mx = -1e300, sum = 0;
                    int len = rows ? n - (G - 1 - g) : n;
                    for (int t = 0; t < len; t++) {
                        double a = 0;
                        for (int i = 0; i < d; i++) a += (double)q[g * qs + i] * k[t * kvs + i];
                        p[t] = a * scale;
                        mx = p[t] > mx ? p[t] : mx;
                    }
                    for (int t = 0; t < len; t++) sum += (p[t] = exp(p[t] - mx));
                    for (int i = 0; i < d; i++) {
                        double a = 0;
                        for (int t = 0; t < len; t++) a += p[t] / sum * v[t * kvs + i];
                        ref[g * d + i] = poison && len == n ? NAN : a;
                    }
                }
                for (int pth = 0; pth < 3; pth++) {
                    if (ng_kernel_set_path(PATHS[pth]) != 0) continue;
                    for (size_t i = 0; i < os * G; i++) o[i] = NAN; /* the gaps between rows stay NaN */
                    if (rows && f16) ng_attend_rows(o, os, q, qs, G, k16, v16, NG_F16, n - G, d, scale, scratch);
                    else if (rows) ng_attend_rows(o, os, q, qs, G, kt, vr, NG_F32, n - G, d, scale, scratch);
                    else if (f16) ng_attend(o, os, q, qs, G, k16, v16, NG_F16, n, d, scale, scratch);
                    else ng_attend(o, os, q, qs, G, kt, vr, NG_F32, n, d, scale, scratch);
                    for (int g = 0; g < G; g++)
                        for (size_t i = 0; i < os; i++) {
                            double got = o[g * os + i];
                            /* huge scores: their float rounding (~1e-5 of ~100) moves the weights */
                            double want = i < (size_t)d ? ref[g * d + i] : NAN;
                            int ok = isnan(want) ? isnan(got) : fabs(got - want) <= (huge ? 1e-3 : 2e-5);
                            if (!ok && bad++ < 3)
                                fprintf(stderr, "%s %s %s G=%d d=%d n=%d [g=%d i=%zu]: %.9g vs %.9g\n", PATHS[pth],
                                        rows ? "rows" : "heads", f16 ? "f16" : "f32", G, d, n, g, i, got, want);
                        }
                    if (rows && pth > 0) /* off AVX-512: each row the same bits as ng_attend for it alone */
                        for (int g = 0; g < G; g++) {
                            float one[128];
                            ng_attend(one, (size_t)d, q + g * qs, qs, 1, f16 ? (const void *)k16 : kt,
                                      f16 ? (const void *)v16 : vr, f16 ? NG_F16 : NG_F32, n - (G - 1 - g), d, scale,
                                      scratch);
                            for (int i = 0; i < d; i++) {
                                float got = o[g * os + i];
                                if (!(isnan(got) && isnan(one[i])) && memcmp(&got, &one[i], sizeof got) && same++ < 3)
                                    fprintf(stderr, "%s rows %s G=%d d=%d n=%d [g=%d i=%d]: %.9g, alone %.9g\n",
                                            PATHS[pth], f16 ? "f16" : "f32", G, d, n, g, i, got, one[i]);
                            }
                        }
                    runs++;
                }
                ng_kernel_set_path(NULL);
                free(q), free(k), free(v), free(o), free(scratch), free(ref), free(p), free(k16), free(v16);
                free(kt), free(vr);
            }
    CHECK(runs >= 512, "only %d runs", runs);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(same == 0, "%d rows' outputs differ from one ng_attend each", same);
}

static double bf16r(double x) { return ng_bf16_to_f32(ng_f32_to_bf16((float)x)); }

/* ng_attend_rows_bf16 and ng_attend_bf16 against attention in double with their roundings: the
 * queries, keys and values rounded to bf16, the scores and softmax in double, the numerators
 * rounded to bf16 for the values' sum and divided by the unrounded sum; R causal rows from
 * position n0, or R <= NG_ATT_ROWS heads over all n0 + R positions; head sizes
 * the vector kernel takes (64, 128) and one it leaves to plain C (80), f32 and f16 caches. Its
 * own f32 numerators can round to the other bf16 neighbour of the double ones' (one step, 2^-8
 * of a weight), so each output is checked within 4e-3 of the values' scale, and the mean error
 * within 2e-5: against attention without the roundings (ng_attend_rows) the mean is ~1e-3. The
 * AVX-512 packing is the same bytes as the plain C one (ng_kernel_set_path("portable")), and
 * where the last position's key and value are NaN only the last row's output is (every head's). */
static void test_attend_bf16(void) {
    static const int ds[] = {64, 128, 80}, Rs[] = {1, 2, 3, 6, 7, 8, 13, 22}, n0s[] = {0, 3, 16, 37, 200};
    int bad = 0, runs = 0, fast_runs = 0, layout = 0;
    double err_sum = 0, err_f32 = 0, err_max = 0;
    ng_kernel_set_bf16_attention(1);
    long err_n = 0;
    for (int heads = 0; heads < 2; heads++)
        for (int f16 = 0; f16 < 2; f16++)
            for (int id = 0; id < COUNT(ds); id++)
                for (int ir = 0; ir < COUNT(Rs); ir++)
                    for (int in = 0; in < COUNT(n0s); in++) {
                        int d = ds[id], R = Rs[ir], n0 = n0s[in], n = n0 + R,
                            poison = R > 1 && (in + ir + f16) % 2;
                        if (heads && R > NG_ATT_ROWS) continue;
                        size_t qs = (size_t)d + 5, os = (size_t)d + 7, nk = ng_attend_bf16_keys(n, d);
                        float *q = malloc(sizeof(float) * qs * R), *o = malloc(sizeof(float) * os * R);
                        float *of = malloc(sizeof(float) * os * R);
                        float *k = malloc(sizeof(float) * (size_t)n * d),
                              *v = malloc(sizeof(float) * (size_t)n * d);
                        float *kt = malloc(sizeof(float) * nk),
                              *scratch = malloc(sizeof(float) * NG_ATT_ROWS * n);
                        ng_f16 *kh = malloc(sizeof(ng_f16) * nk),
                               *vh = malloc(sizeof(ng_f16) * (size_t)n * d);
                        size_t nv = ng_attend_bf16_values(n, d);
                        ng_bf16 *k16 = malloc(2 * nk), *v16 = malloc(2 * nv), *kc = malloc(2 * nk),
                                *vc = malloc(2 * nv);
                        double *p = malloc(sizeof(double) * n);
                        for (size_t i = 0; i < nk; i++) kt[i] = NAN, kh[i] = ng_f32_to_f16(NAN);
                        for (size_t i = 0; i < qs * R; i++) q[i] = 2 * frand();
                        for (size_t i = 0; i < (size_t)n * d; i++) {
                            k[i] = frand(), v[i] = frand();
                            if (f16)
                                k[i] = ng_f16_to_f32(ng_f32_to_f16(k[i])),
                                v[i] = ng_f16_to_f32(ng_f32_to_f16(v[i]));
                            vh[i] = ng_f32_to_f16(v[i]);
                        }
                        if (poison)
                            for (int i = 0; i < d; i++)
                                k[(size_t)(n - 1) * d + i] = v[(size_t)(n - 1) * d + i] = NAN;
                        for (int t = 0; t < n; t++) {
                            ng_attend_put_key(kt, NG_F32, t, d, k + (size_t)t * d);
                            ng_attend_put_key(kh, NG_F16, t, d, k + (size_t)t * d);
                            if (poison && t == n - 1)
                                for (int i = 0; i < d; i++) vh[(size_t)t * d + i] = ng_f32_to_f16(NAN);
                        }
                        const void *kc0 = f16 ? (const void *)kh : kt, *vc0 = f16 ? (const void *)vh : v;
                        ng_type kvt = f16 ? NG_F16 : NG_F32;
                        float scale = 3.0f / sqrtf((float)d); /* peaked: a score's error moves the output */
                        ng_kernel_set_path("portable");
                        ng_attend_pack_bf16(kc, vc, kc0, vc0, kvt, n, d);
                        ng_kernel_set_path(NULL);
                        ng_attend_pack_bf16(k16, v16, kc0, vc0, kvt, n, d);
                        /* the keys' tile positions past n are NaN either way: compare bytes */
                        layout += memcmp(k16, kc, 2 * nk) != 0 || memcmp(v16, vc, 2 * nv) != 0;
                        if (heads)
                            ng_attend(of, os, q, qs, R, kc0, vc0, kvt, n, d, scale, scratch);
                        else
                            ng_attend_rows(of, os, q, qs, R, kc0, vc0, kvt, n0, d, scale, scratch);
                        for (int fast = 0; fast < 2; fast++) {
                            if (fast && !ng_kernel_bf16_attention(d)) continue;
                            if (!fast) ng_kernel_set_path("portable");
                            for (size_t i = 0; i < os * R; i++) o[i] = NAN;
                            if (heads)
                                ng_attend_bf16(o, os, q, qs, R, k16, v16, n, d, scale, scratch);
                            else
                                ng_attend_rows_bf16(o, os, q, qs, R, k16, v16, n0, d, scale, scratch);
                            ng_kernel_set_path(NULL);
                            for (int r = 0; r < R; r++) {
                                int len = heads ? n : n0 + r + 1;
                                double mx = -1e300, sum = 0;
                                for (int t = 0; t < len; t++) {
                                    double a = 0;
                                    for (int i = 0; i < d; i++)
                                        a += bf16r(q[r * qs + i]) * bf16r(k[(size_t)t * d + i]);
                                    p[t] = a * scale;
                                    mx = p[t] > mx ? p[t] : mx;
                                }
                                for (int t = 0; t < len; t++) sum += (p[t] = exp(p[t] - mx));
                                for (int i = 0; i < d; i++) {
                                    double a = 0;
                                    for (int t = 0; t < len; t++)
                                        a += bf16r(p[t]) * bf16r(v[(size_t)t * d + i]);
                                    double want = poison && len == n ? NAN : a / sum, got = o[r * os + i];
                                    int ok = isnan(want) ? isnan(got) : fabs(got - want) <= 4e-3;
                                    if (!isnan(want)) {
                                        err_sum += fabs(got - want), err_n++;
                                        err_max = fmax(err_max, fabs(got - want));
                                        err_f32 += fabs(got - (double)of[r * os + i]);
                                    }
                                    if (!ok && bad++ < 3)
                                        fprintf(stderr,
                                                "%s %s %s d=%d R=%d n0=%d [r=%d i=%d]: %.9g vs %.9g\n",
                                                fast ? "avx512-bf16" : "plain C", heads ? "heads" : "rows",
                                                f16 ? "f16" : "f32", d, R, n0, r, i, got, want);
                                }
                                for (size_t i = d; i < os && r + 1 < R; i++) bad += !isnan(o[r * os + i]);
                            }
                            runs++, fast_runs += fast;
                        }
                        free(q), free(o), free(of), free(k), free(v), free(kt), free(scratch), free(kh),
                            free(vh);
                        free(k16), free(v16), free(kc), free(vc), free(p);
                    }
    ng_kernel_set_bf16_attention(0);
    printf("# bf16 attention: %d runs (%d AVX512-BF16), |error| mean %.3g, largest %.3g (from f32 attention: "
           "mean "
           "%.3g)\n",
           runs, fast_runs, err_sum / (double)err_n, err_max, err_f32 / (double)err_n);
    CHECK(runs >= 400, "only %d runs", runs);
    CHECK(bad == 0, "%d mismatches", bad);
    CHECK(layout == 0, "%d packings differ from plain C's", layout);
    CHECK(err_sum / (double)err_n <= 2e-5 && err_f32 / (double)err_n >= 1e-4, "mean errors %.3g, %.3g",
          err_sum / (double)err_n, err_f32 / (double)err_n);
    if (!fast_runs) SKIP("the vector kernel: this CPU has no AVX512-BF16");
}

/* ng_attend_put_keys writes the bytes ng_attend_put_key writes key by key, on every path: runs
 * that start inside a tile, span whole tiles and end inside one; head sizes that are and are not
 * multiples of 16; f32 and f16 caches; strided rows of keys. */
static void test_put_keys(void) {
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    static const int dims[] = {64, 128, 80, 24};
    static const int runs[][2] = {{0, 16}, {0, 48}, {5, 40}, {16, 33}, {3, 9}, {31, 1}, {0, 0}, {7, 64}};
    enum { MAXT = 80, MAXD = 128, STRIDE = 3 * MAXD };
    static float keys[MAXT * STRIDE];
    static unsigned char a[MAXT * MAXD * 4], b[MAXT * MAXD * 4];
    uint32_t r = 9;
    for (int i = 0; i < MAXT * STRIDE; i++)
        r = r * 1664525u + 1013904223u, keys[i] = (float)(r >> 8) / (1 << 24) - 0.5f;
    int ran = 0, bad = 0;
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue;
        for (int di = 0; di < 4; di++)
            for (int kt = 0; kt < 2; kt++)
                for (int ri = 0; ri < 8; ri++) {
                    int d = dims[di], t0 = runs[ri][0], n = runs[ri][1];
                    ng_type kvt = kt ? NG_F16 : NG_F32;
                    memset(a, 0x5a, sizeof a), memset(b, 0x5a, sizeof b);
                    for (int j = 0; j < n; j++)
                        ng_attend_put_key(a, kvt, t0 + j, d, keys + (size_t)j * STRIDE);
                    ng_attend_put_keys(b, kvt, t0, n, d, keys, STRIDE);
                    if (memcmp(a, b, sizeof a) && bad++ < 5)
                        printf("    %s: d %d, %s, keys %d..%d differ\n", paths[p], d, kt ? "f16" : "f32", t0,
                               t0 + n - 1);
                }
        ran++;
    }
    ng_kernel_set_path(NULL);
    CHECK(ran > 0, "no path ran");
    CHECK(bad == 0, "%d runs of keys stored otherwise", bad);
}

int main(void) {
    RUN(test_f16_known_values);
    RUN(test_f16_exhaustive);
    RUN(test_bf16_known_values);
    RUN(test_array_conversions);
    RUN(test_f16_array_matches_scalar);
    RUN(test_f16_array_to_f32_matches_scalar);
    RUN(test_measurements);
    RUN(test_cpu_features);
    RUN(test_matmul_ref_exact);
    RUN(test_matmul_empty_k);
    RUN(test_matmul_f32);
    RUN(test_matmul_f16);
    RUN(test_matmul_bf16);
    RUN(test_matmul_bf16_dot);
    RUN(test_matmul_threaded_shapes);
    RUN(test_matmul_steal);
    RUN(test_attend);
    RUN(test_put_keys);
    RUN(test_attend_bf16);
    TEST_EXIT();
}
