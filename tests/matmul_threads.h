/* matmul_threads — the take-over tests' check (test_kernels, test_quant): ng_matmul on 2, 3 and
 * 4 threads (more than a 2-core machine has, so workers start late and others take their
 * shares) gives y1, the one-thread result, bit for bit. y2 is filled with NaN before each run,
 * so a row nobody computed shows. Returns the number of runs that differ (the first 3 named). */
#ifndef NG_MATMUL_THREADS_H
#define NG_MATMUL_THREADS_H

#include "core/kernels.h"

#include <stdio.h>
#include <string.h>

static inline int matmul_threads_differ(const float *y1, float *y2, const float *x, const void *w, ng_type wt,
                                        const float *bias, int B, int N, int K, const char *label) {
    int bad = 0;
    for (int rep = 0; rep < 40; rep++) {
        ng_set_threads(2 + rep % 3);
        memset(y2, 0xff, sizeof(float) * B * N);
        ng_matmul(y2, x, w, wt, bias, B, N, K);
        if (memcmp(y1, y2, sizeof(float) * B * N) != 0 && bad++ < 3)
            fprintf(stderr, "%s%s B=%d, %d threads: differs from 1 thread\n", label, ng_type_name(wt), B,
                    ng_threads());
    }
    return bad;
}

#endif
