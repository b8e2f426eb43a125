/* tensor — a view of a named n-dimensional array that some other object owns (a mapped
 * model file, a model's own allocation). Dimensions use ggml's order: ne[0] is the
 * contiguous (innermost) one, so a PyTorch matrix of shape (rows, cols) has ne = {cols, rows}. */
#ifndef NG_TENSOR_H
#define NG_TENSOR_H

#include "core/dtype.h"

#define NG_MAX_DIMS 4

typedef struct {
    const char *name; /* NUL-terminated; owned by whoever owns the tensor */
    ng_type type;
    int n_dims;
    int64_t ne[NG_MAX_DIMS]; /* unused dims are 1 */
    void *data;
    size_t nbytes;
} ng_tensor;

static inline int64_t ng_tensor_nelem(const ng_tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

#endif
