/* dtype — element types of tensors, with ggml's numbering so that GGUF type ids map 1:1.
 *
 * A row of K elements of type t takes ng_row_size(t, K) bytes; block-quantized types pack
 * ng_type_block(t) elements into ng_type_size(t) bytes. Conversions between f32 and the
 * 16-bit float types are exact where the value fits (round-to-nearest-even on the way down). */
#ifndef NG_DTYPE_H
#define NG_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    NG_F32 = 0,
    NG_F16 = 1,
    NG_Q4_0 = 2,
    NG_Q4_1 = 3,
    NG_Q5_0 = 6,
    NG_Q5_1 = 7,
    NG_Q8_0 = 8,
    NG_Q8_1 = 9,
    NG_Q2_K = 10,
    NG_Q3_K = 11,
    NG_Q4_K = 12,
    NG_Q5_K = 13,
    NG_Q6_K = 14,
    NG_Q8_K = 15,
    NG_I8 = 24,
    NG_I16 = 25,
    NG_I32 = 26,
    NG_I64 = 27,
    NG_F64 = 28,
    NG_BF16 = 30,
    NG_FILE_TYPE_COUNT = 40, /* ids below are ggml's (files); those from here are netgpt's own */
    /* q4_0 and q8_0 with each run of 4 blocks (128 values) rearranged for the AVX-512 VNNI
     * kernels (quant.h): the same bytes per value, never in files. */
    NG_Q4_0R = 40,
    NG_Q8_0R = 41,
    /* q4_k and q6_k with each super-block's codes rearranged for the AVX-512 VNNI GEMV (quant.h) */
    NG_Q4_KR = 42,
    NG_Q6_KR = 43,
    NG_TYPE_COUNT = 44
} ng_type;

/* "f32", "q4_k", ...; "?" for ids this build does not know. */
const char *ng_type_name(ng_type t);
/* Parses a type name case-insensitively ("F16", "q8_0"); returns -1 when unknown (and for
 * netgpt's in-memory types). */
int ng_type_parse(const char *name);
/* 1 for a type id this build knows the layout of (even if it cannot compute with it). */
int ng_type_known(int t);
/* 1 for a known type that files may hold (ggml's ids, not the in-memory rearrangements). */
int ng_type_in_files(int t);
/* Elements per block (1 for plain types) and bytes per block. 0 for unknown ids. */
int ng_type_block(ng_type t);
size_t ng_type_size(ng_type t);
/* Bytes of a row of n elements; n must be a multiple of the block size. */
size_t ng_row_size(ng_type t, int64_t n);

/* 16-bit float conversions. */
typedef uint16_t ng_f16;
typedef uint16_t ng_bf16;
float ng_f16_to_f32(ng_f16 h);
ng_f16 ng_f32_to_f16(float f);
static inline float ng_bf16_to_f32(ng_bf16 h) {
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}
ng_bf16 ng_f32_to_bf16(float f);

/* Converts n elements of type t at src to f32: the float types, and block-quantized types when
 * n and src fall on block boundaries (see quant.h). */
void ng_to_f32(float *dst, const void *src, ng_type t, int64_t n);
/* Converts n f32 values to type t (f32, f16, bf16). */
void ng_from_f32(void *dst, const float *src, ng_type t, int64_t n);

#endif
