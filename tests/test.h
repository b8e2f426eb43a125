/* test — a minimal harness. Each test binary runs its cases with RUN(); every case prints
 * one line "PASS name", "FAIL name" or "SKIP name: why"; tests/run.sh counts those lines.
 * A CHECK that fails prints file:line and the message, marks the case failed, and the binary
 * exits non-zero at the end. */
#ifndef NG_TEST_H
#define NG_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_case_failed, t_case_skipped, t_any_failed;
static char t_skip_why[256];

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            t_case_failed = 1;                                                                               \
        }                                                                                                    \
    } while (0)

/* Like CHECK but leaves the case at once. */
#define REQUIRE(cond, ...)                                                                                   \
    do {                                                                                                     \
        int t_ok_ = !!(cond);                                                                                \
        CHECK(t_ok_, __VA_ARGS__);                                                                           \
        if (!t_ok_) return;                                                                                  \
    } while (0)

#define SKIP(...)                                                                                            \
    do {                                                                                                     \
        snprintf(t_skip_why, sizeof t_skip_why, __VA_ARGS__);                                                \
        t_case_skipped = 1;                                                                                  \
        return;                                                                                              \
    } while (0)

#define RUN(fn)                                                                                              \
    do {                                                                                                     \
        t_case_failed = t_case_skipped = 0;                                                                  \
        fn();                                                                                                \
        if (t_case_failed) {                                                                                 \
            printf("FAIL %s\n", #fn);                                                                        \
            t_any_failed = 1;                                                                                \
        } else if (t_case_skipped) {                                                                         \
            printf("SKIP %s: %s\n", #fn, t_skip_why);                                                        \
        } else {                                                                                             \
            printf("PASS %s\n", #fn);                                                                        \
        }                                                                                                    \
        fflush(stdout);                                                                                      \
    } while (0)

#define TEST_EXIT() return t_any_failed ? 1 : 0

/* Max |a-b| over n floats. */
static inline double t_max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

/* 1 when path exists (a file or a folder). */
static inline int t_exists(const char *path) { return access(path, F_OK) == 0; }

/* Path of a file under tests/testdata (tests run from the repository root). */
#define TESTDATA(name) "tests/testdata/" name

/* ../shared/models, where the one real pretrained model lives; NULL when absent. */
static inline const char *t_shared_models(void) {
    static const char *dir = "../shared/models";
    FILE *f = fopen("../shared/models/stories260K.bin", "rb");
    if (!f) return NULL;
    fclose(f);
    return dir;
}

#endif
