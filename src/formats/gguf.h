/* gguf — read and write GGUF v3 files (the llama.cpp model format).
 *
 * Byte layout (little-endian):
 *   u32 magic "GGUF" | u32 version (3; 2 accepted) | u64 n_tensors | u64 n_kv
 *   n_kv x { str key | u32 value_type | value }
 *       str   = u64 len | len bytes (no NUL)
 *       value = scalar | str | arr, arr = u32 elem_type | u64 n | n elements
 *   n_tensors x { str name | u32 n_dims | n_dims x u64 ne | u32 type | u64 offset }
 *   padding to general.alignment (default 32)
 *   tensor data: each tensor at data_start + offset, offset a multiple of the alignment
 *
 * Reading maps the file and validates every count, length, type, shape and offset against
 * the file size before anything is used: a malformed file gives NULL and an error naming the
 * file, the field and the problem, never a crash. Tensor data points into the mapping;
 * strings and numeric arrays of the KV section are copied (they are unaligned in the file).
 * A tensor whose bytes are not aligned to its element type in the mapping (possible only with
 * general.alignment < 4 or an unaligned gguf_open_mem buffer) is copied, so data is always
 * safe to read through typed pointers. */
#ifndef NG_GGUF_H
#define NG_GGUF_H

#include "core/tensor.h"
#include "core/util.h"

typedef enum {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STR = 8,
    GGUF_ARR = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12
} gguf_vtype;

typedef struct gguf_ctx gguf_ctx;

/* Opens and validates path. Owns the mapping; free with gguf_close. NULL + err on failure. */
gguf_ctx *gguf_open(const char *path, ng_error *err);
/* Same checks on a caller-owned buffer that must outlive the context (fuzzers, in-memory
 * files); name stands for the path in messages. Tensor data points into buf. */
gguf_ctx *gguf_open_mem(const void *buf, size_t size, const char *name, ng_error *err);
void gguf_close(gguf_ctx *g);
const char *gguf_path(const gguf_ctx *g);
/* 1 when p lies in the file mapping of g (0 for gguf_open_mem buffers and heap copies). */
int gguf_in_mapping(const gguf_ctx *g, const void *p);
uint32_t gguf_version(const gguf_ctx *g);
size_t gguf_alignment(const gguf_ctx *g);

/* Key-value metadata. Index getters take 0 <= i < gguf_n_kv. */
int gguf_n_kv(const gguf_ctx *g);
int gguf_find_key(const gguf_ctx *g, const char *key); /* -1 when absent */
const char *gguf_key(const gguf_ctx *g, int i);
gguf_vtype gguf_kv_type(const gguf_ctx *g, int i);
gguf_vtype gguf_arr_type(const gguf_ctx *g, int i); /* element type of an array value */
uint64_t gguf_arr_n(const gguf_ctx *g, int i);

/* Typed getters by key. They return NG_OK, or NG_ERR with err naming the file and key when
 * the key is absent or its value has a type that does not convert (any integer type converts
 * to an integer getter when the value fits; f32/f64 to float). */
int gguf_get_u32(const gguf_ctx *g, const char *key, uint32_t *out, ng_error *err);
int gguf_get_i64(const gguf_ctx *g, const char *key, int64_t *out, ng_error *err);
int gguf_get_f32(const gguf_ctx *g, const char *key, float *out, ng_error *err);
int gguf_get_bool(const gguf_ctx *g, const char *key, int *out, ng_error *err);
/* Raw value of a scalar key of any type (e.g. u8, u64, f64): points to 8 bytes owned by g
 * holding the value as the C type of *type; NULL when absent or a string or array. */
const void *gguf_get_scalar(const gguf_ctx *g, const char *key, gguf_vtype *type);
/* NUL-terminated copy owned by g; NULL when absent or not a string. */
const char *gguf_get_str(const gguf_ctx *g, const char *key);
/* String array: n strings (NUL-terminated copies owned by g, with lengths); NULL when absent
 * or of another type. */
const ng_str *gguf_get_arr_str(const gguf_ctx *g, const char *key, uint64_t *n);
/* Numeric array: pointer to n elements of *type, copied and aligned, owned by g; NULL when
 * absent or not a numeric array. */
const void *gguf_get_arr_data(const gguf_ctx *g, const char *key, gguf_vtype *type, uint64_t *n);

/* Tensors; data points into the mapping. */
int gguf_n_tensors(const gguf_ctx *g);
int gguf_find_tensor(const gguf_ctx *g, const char *name); /* -1 when absent */
const ng_tensor *gguf_tensor(const gguf_ctx *g, int i);

/* Writer: collect metadata and tensors, then write one file. Keys keep insertion order;
 * setting an existing key replaces its value. Tensor data is borrowed until gguf_write. */
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_bool(gguf_writer *w, const char *key, int v);
/* Any scalar type (not str or arr); v points to a value of the matching C type. */
void gguf_set_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
void gguf_set_arr_str(gguf_writer *w, const char *key, const ng_str *v, uint64_t n);
void gguf_set_arr_data(gguf_writer *w, const char *key, gguf_vtype type, const void *v, uint64_t n);
/* Copies every key of g (except those starting with skip_prefix, when not NULL). */
void gguf_copy_kv(gguf_writer *w, const gguf_ctx *g, const char *skip_prefix);
/* ne in ggml order; data holds ng_row_size(type, ne[0]) * ne[1] * ne[2] * ne[3] bytes. */
void gguf_add_tensor(gguf_writer *w, const char *name, ng_type type, int n_dims, const int64_t *ne,
                     const void *data);
/* Writes to path (via a temporary file renamed into place). NG_OK or NG_ERR + err. */
int gguf_write(gguf_writer *w, const char *path, ng_error *err);

#endif
