/* The vectorizable activations (core/vmath.h) against libm in double: exp within a few ulp over
 * its whole clamped range, tanh, GELU and SiLU within float rounding of the exact formulas. */
#include "test.h"

#include "core/kernels.h"
#include "core/vmath.h"

static void test_exp(void) {
    double worst = 0, at = 0;
    for (int i = 0; i <= 2000000; i++) {
        float x = -87.0f + 175.0f * (float)i / 2000000.0f;
        double want = exp((double)x), rel = fabs(ng_vexp(x) - want) / want;
        if (rel > worst) worst = rel, at = x;
    }
    CHECK(worst < 3.6e-7, "exp: relative error %.3g at %.6f (2 ulp = 2.4e-7)", worst, at);
    CHECK(ng_vexp(0.0f) == 1.0f, "exp(0) = %.9g", ng_vexp(0.0f));
    /* clamped ends: tiny and huge, finite, never garbage from the exponent bits */
    CHECK(ng_vexp(-1000.0f) > 0 && ng_vexp(-1000.0f) < 1e-37f, "exp(-1000) = %g", ng_vexp(-1000.0f));
    CHECK(ng_vexp(1000.0f) > 1e38f && isfinite(ng_vexp(1000.0f)), "exp(1000) = %g", ng_vexp(1000.0f));
}

static void test_activations(void) {
    enum { N = 40001 };
    static float x[N], y[N], u[N];
    for (int i = 0; i < N; i++) x[i] = -20.0f + 40.0f * (float)i / (N - 1), u[i] = 0.5f + (float)(i % 7);
    double et = 0, eg = 0, es = 0;
    for (int i = 0; i < N; i++) et = fmax(et, fabs(ng_vtanh(x[i]) - tanh((double)x[i])));
    ng_gelu(y, x, N);
    for (int i = 0; i < N; i++) {
        double v = x[i], want = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        eg = fmax(eg, fabs(y[i] - want) / (1 + fabs(want)));
    }
    ng_silu_mul(y, x, u, N);
    for (int i = 0; i < N; i++) {
        double g = x[i], want = g / (1 + exp(-g)) * u[i];
        es = fmax(es, fabs(y[i] - want) / (1 + fabs(want)));
    }
    CHECK(et < 2.5e-7, "tanh: absolute error %.3g", et);
    CHECK(eg < 5e-7, "gelu: relative error %.3g", eg);
    CHECK(es < 5e-7, "silu: relative error %.3g", es);
    /* in place (y = x), as the forward pass calls it */
    float a[3] = {-1.0f, 0.5f, 3.0f}, b[3];
    ng_gelu(b, a, 3);
    ng_gelu(a, a, 3);
    CHECK(!memcmp(a, b, sizeof a), "gelu in place differs");
}

/* The dispatched activations (kernels.c, one copy per vector width) give the inline functions'
 * bits on every path this CPU runs, over the whole range including the clamped ends, at
 * lengths that leave vector tails. */
static void test_dispatched(void) {
    enum { N = 4099 };
    static float x[N], u[N], want_g[N], want_s[N], got[N];
    for (int i = 0; i < N; i++) x[i] = -120.0f + 240.0f * (float)i / (N - 1), u[i] = (float)(i % 5) - 2.0f;
    ng_gelu(want_g, x, N);
    ng_silu_mul(want_s, x, u, N);
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    int runs = 0;
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue;
        for (int n = N - 3; n <= N; n++) {
            memset(got, 0, sizeof got);
            ng_act_gelu(got, x, (size_t)n);
            CHECK(!memcmp(got, want_g, sizeof(float) * n), "%s: gelu differs (n = %d)", paths[p], n);
            ng_act_silu_mul(got, x, u, (size_t)n);
            CHECK(!memcmp(got, want_s, sizeof(float) * n), "%s: silu differs (n = %d)", paths[p], n);
        }
        runs++;
    }
    ng_kernel_set_path(NULL);
    CHECK(runs > 0, "no path ran");
}

/* ng_act_max on every path against a plain loop: lengths around the 64 lanes and the vector
 * widths, the maximum first, last, in the tail, NaNs (passed over), infinities, all -inf, none. */
static void test_max(void) {
    enum { N = 50257 };
    static float x[N];
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    uint32_t r = 7;
    int runs = 0, bad = 0;
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue;
        for (int n = 0; n <= N; n = n < 300 ? n + 1 : n < 4099 ? 4099 : n < N ? N : N + 1) {
            for (int kind = 0; kind < 6; kind++) {
                for (int i = 0; i < n; i++) {
                    r = r * 1664525u + 1013904223u;
                    x[i] = kind == 4 ? -INFINITY : (float)(r >> 8) / (1 << 24) * 200.0f - 150.0f;
                }
                if (n > 0 && kind == 1) x[0] = 1000.0f;
                if (n > 0 && kind == 2) x[n - 1] = 1000.0f;
                if (n > 0 && kind == 3) x[n / 3] = NAN, x[n - 1] = NAN, x[0] = NAN;
                if (n > 0 && kind == 5) x[n / 2] = INFINITY;
                float want = -INFINITY;
                for (int i = 0; i < n; i++) want = x[i] > want ? x[i] : want;
                float got = ng_act_max(x, (size_t)n);
                if (!(got == want)) {
                    if (bad++ < 5) printf("    %s: n = %d, case %d: %g, want %g\n", paths[p], n, kind, got, want);
                }
            }
        }
        runs++;
    }
    ng_kernel_set_path(NULL);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d wrong maxima", bad);
}

/* ng_act_dot and ng_act_add_combination on every path give vmath's bits (lengths that leave
 * tails of every size; rows with a stride). */
static void test_dot_combination(void) {
    enum { N = 4099, M = 16 };
    static float a[N], b[N], rows[M * N], y0[N], y1[N];
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    uint32_t r = 11;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u, a[i] = (float)(r >> 8) / (1 << 24) - 0.5f;
        r = r * 1664525u + 1013904223u, b[i] = (float)(r >> 8) / (1 << 24) * 3.0f - 1.0f;
    }
    for (int i = 0; i < M * N; i++) r = r * 1664525u + 1013904223u, rows[i] = (float)(r >> 8) / (1 << 24) - 0.5f;
    int runs = 0, bad = 0;
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue;
        for (int n = 0; n <= N; n = n < 200 ? n + 1 : n < 1000 ? 1000 : n < N ? N : N + 1) {
            float want = ng_dot(a, b, (size_t)n), got = ng_act_dot(a, b, (size_t)n);
            if (memcmp(&want, &got, sizeof want) && bad++ < 5) printf("    %s: dot, n = %d: %.9g, want %.9g\n", paths[p], n, got, want);
            for (int m = 1; m <= M; m += 5) {
                for (int i = 0; i < n; i++) y0[i] = y1[i] = b[i];
                ng_add_combination(y0, rows, N, a + 7, m, (size_t)n);
                ng_act_add_combination(y1, rows, N, a + 7, m, (size_t)n);
                if (memcmp(y0, y1, sizeof(float) * (size_t)n) && bad++ < 5)
                    printf("    %s: combination, n = %d, m = %d differs\n", paths[p], n, m);
            }
        }
        runs++;
    }
    ng_kernel_set_path(NULL);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d results differ from vmath's", bad);
    /* and the dot product is one: against a double sum */
    double s = 0;
    for (int i = 0; i < N; i++) s += (double)a[i] * b[i];
    CHECK(fabs(ng_act_dot(a, b, N) - s) < 1e-4, "dot %.9g, want %.9g", ng_act_dot(a, b, N), s);
}

/* ng_act_layernorm and ng_act_rmsnorm on every path give vmath's bits (lengths around the 64
 * lanes, rows with an offset mean), and are the norms: against double-precision sums. */
static void test_norms(void) {
    enum { N = 2051 };
    static float x[N], w[N], b[N], want[N], got[N];
    static const char *const paths[] = {"avx512", "avx2", "portable"};
    uint32_t r = 5;
    for (int i = 0; i < N; i++) {
        r = r * 1664525u + 1013904223u, x[i] = (float)(r >> 8) / (1 << 24) * 4.0f + 3.0f; /* mean ~5 */
        r = r * 1664525u + 1013904223u, w[i] = (float)(r >> 8) / (1 << 24) + 0.5f;
        r = r * 1664525u + 1013904223u, b[i] = (float)(r >> 8) / (1 << 24) - 0.5f;
    }
    int runs = 0, bad = 0;
    double worst = 0;
    for (int p = 0; p < 3; p++) {
        if (ng_kernel_set_path(paths[p]) != 0) continue;
        for (int n = 1; n <= N; n = n < 140 ? n + 1 : n < 768 ? 768 : n < N ? N : N + 1) {
            for (int k = 0; k < 2; k++) {
                if (k == 0) {
                    ng_layernorm(want, x, w, b, (size_t)n, 1e-5f);
                    ng_act_layernorm(got, x, w, b, (size_t)n, 1e-5f);
                } else {
                    ng_rmsnorm(want, x, w, (size_t)n, 1e-5f);
                    ng_act_rmsnorm(got, x, w, (size_t)n, 1e-5f);
                }
                if (memcmp(want, got, sizeof(float) * (size_t)n) && bad++ < 5)
                    printf("    %s: %s, n = %d differs\n", paths[p], k ? "rmsnorm" : "layernorm", n);
                double s = 0, q = 0, m;
                for (int i = 0; i < n; i++) s += x[i], q += (double)x[i] * x[i];
                m = k ? 0 : s / n;
                double rs = 1 / sqrt((k ? q / n : q / n - m * m) + 1e-5);
                for (int i = 0; i < n; i++) {
                    double e = fabs(got[i] - ((x[i] - m) * rs * w[i] + (k ? 0 : b[i])));
                    worst = e > worst ? e : worst;
                }
            }
        }
        runs++;
    }
    ng_kernel_set_path(NULL);
    CHECK(runs > 0, "no path ran");
    CHECK(bad == 0, "%d results differ from vmath's", bad);
    CHECK(worst < 1e-4, "largest error against double sums %.3g", worst);
}

int main(void) {
    RUN(test_exp);
    RUN(test_norms);
    RUN(test_dot_combination);
    RUN(test_max);
    RUN(test_activations);
    RUN(test_dispatched);
    TEST_EXIT();
}
