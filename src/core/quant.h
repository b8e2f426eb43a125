/* quant — ggml's block-quantized weight formats: their exact byte layouts, reference
 * quantization (q8_0, q6_k, q4_k, q4_0: the types netgpt writes) and dequantization of every type a
 * llama.cpp file commonly holds (q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k).
 *
 * Layouts (little-endian, `half` = IEEE f16), each block covering QK values:
 *   q8_0  QK 32  { half d; int8 q[32]; }                       x = d*q
 *   q4_0  QK 32  { half d; u8 qs[16]; }                        x = d*(nibble-8); value j in the low
 *                                                              nibble of qs[j], value j+16 in the high
 *   q4_1  QK 32  { half d, m; u8 qs[16]; }                     x = d*nibble + m
 *   q5_0  QK 32  { half d; u8 qh[4]; u8 qs[16]; }              5th bits in qh (bit j: value j); x = d*(q-16)
 *   q5_1  QK 32  { half d, m; u8 qh[4]; u8 qs[16]; }           x = d*q + m
 *   q4_k  QK 256 { half d, dmin; u8 scales[12]; u8 qs[128]; }  8 sub-blocks of 32 with 6-bit scale/min
 *   q5_k  QK 256 { half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }
 *   q6_k  QK 256 { u8 ql[128]; u8 qh[64]; int8 scales[16]; half d; }  x = d*scale*(q-32)
 *   q4_0r QK 128 (4 q4_0 blocks, 72 bytes) and q8_0r QK 128 (4 q8_0 blocks, 136 bytes): netgpt's
 *         in-memory order for the AVX-512 VNNI kernels, so that a run of 4 blocks is read with
 *         plain loads, no shuffles: the codes first, as 16 lanes of 4 bytes, lane j holding
 *         4-byte group j / 4 of block j % 4 (q4_0r: 64 bytes of q4_0's nibble pairs; q8_0r: the
 *         first 16 codes of each block, then the last 16, as q + 128), then the 4 scales (f16).
 *   q4_kr QK 256 (a q4_k block, 144 bytes) and q6_kr QK 256 (a q6_k block, 210 bytes): the same
 *         with their codes rearranged for the AVX-512 VNNI GEMV (see ng_reorder_rows).
 * These are pure functions on caller-owned memory. */
#ifndef NG_QUANT_H
#define NG_QUANT_H

#include <stdint.h>

#include "core/dtype.h"

/* 1 when dequantizing type t is supported (float types included). */
int ng_type_can_dequant(ng_type t);
/* 1 when quantizing to type t is supported (f32/f16/bf16, q8_0, q6_k, q4_k, q4_0). */
int ng_type_can_quant(ng_type t);
/* Converts n values (a multiple of t's block size) of type t to f32. */
void ng_dequantize_row(ng_type t, const void *src, float *dst, int64_t n);
/* Converts n f32 values (a multiple of t's block size) to type t (a kernel order: its file
 * type's blocks, rearranged). */
void ng_quantize_row(ng_type t, const float *src, void *dst, int64_t n);
/* The kernel-order type of q4_0 / q8_0 / q4_k / q6_k (q4_0r / q8_0r / q4_kr / q6_kr), and the
 * file type of those; other types map to themselves. (Inline: the kernels test types in their
 * inner loops, where a call would keep a constant type from folding.) */
static inline ng_type ng_type_reordered(ng_type t) {
    return t == NG_Q4_0   ? NG_Q4_0R
           : t == NG_Q8_0 ? NG_Q8_0R
           : t == NG_Q4_K ? NG_Q4_KR
           : t == NG_Q6_K ? NG_Q6_KR
                          : t;
}
static inline ng_type ng_type_base(ng_type t) {
    return t == NG_Q4_0R   ? NG_Q4_0
           : t == NG_Q8_0R ? NG_Q8_0
           : t == NG_Q4_KR ? NG_Q4_K
           : t == NG_Q6_KR ? NG_Q6_K
                           : t;
}
/* Rearranges rows of cols values (a multiple of 128; of 256 for the k-quants) between q4_0 and
 * q4_0r, q8_0 and q8_0r, q4_k and q4_kr or q6_k and q6_kr, exactly (the same bytes); dst may be
 * src. q4_kr keeps each super-block's d, dmin and scales where q4_k has them and rearranges its
 * 128 bytes of codes: byte 4 l + b of its half z (64 bytes) holds, for sub-block s = l / 2, code
 * 16 z + 4 (l % 2) + b in its low nibble and that plus 8 in its high one, so that each of the
 * four vectors of codes its nibbles make holds, in lanes 2 s and 2 s + 1, 8 codes of sub-block
 * s. q6_kr keeps the scales and d and puts code p of group g (16 values) in lane g, byte p % 4 of
 * vector p / 4: its low 4 bits in the first 128 bytes (vector v in the nibble v % 2 of the 64
 * bytes v / 2), its top 2 in the next 64 (vector v at bits 2 v). */
void ng_reorder_rows(void *dst, ng_type to, const void *src, ng_type from, int64_t cols, int64_t rows);
/* rows rows of cols values of type from as a new malloc'd buffer of type to, row by row
 * through f32 (cols a multiple of both types' block sizes), the rows shared out over
 * ng_threads() threads (the same bytes for any count); a rearrangement (q8_0r to q8_0, ...) is
 * exact. */
void *ng_convert_rows(const void *src, ng_type from, ng_type to, int64_t cols, int64_t rows);

#endif
