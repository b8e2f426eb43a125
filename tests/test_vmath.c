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

int main(void) {
    RUN(test_exp);
    RUN(test_activations);
    RUN(test_dispatched);
    TEST_EXIT();
}
