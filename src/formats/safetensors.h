/* safetensors — read Hugging Face .safetensors files, single or sharded.
 *
 * Byte layout: u64 header_len (little-endian) | header_len bytes of JSON
 *   {"NAME": {"dtype": "F32"|"F16"|"BF16"|..., "shape": [..], "data_offsets": [begin, end]},
 *    ..., "__metadata__": {...}} | data (offsets relative to the end of the header).
 * A sharded model is a model.safetensors.index.json whose "weight_map" maps each tensor name
 * to a shard file in the same folder.
 *
 * Files are mapped; every offset, shape and dtype is validated against the file before use
 * (malformed input gives NULL and an error naming the file, the tensor and the problem).
 * Tensor shapes are converted to ggml order (ne[0] innermost). Tensor data points into the
 * mapping, except for a tensor the file leaves misaligned for its dtype (the format does not
 * promise alignment), which is copied so that it can be read through typed pointers. */
#ifndef NG_SAFETENSORS_H
#define NG_SAFETENSORS_H

#include "core/tensor.h"
#include "core/util.h"

typedef struct st_file st_file;

/* path: a .safetensors file or a model.safetensors.index.json. Owns mappings and names. */
st_file *st_open(const char *path, ng_error *err);
/* One .safetensors file held in a caller-owned buffer that must outlive the result (fuzzers);
 * name stands for the path in messages. */
st_file *st_open_mem(const void *buf, size_t size, const char *name, ng_error *err);
void st_close(st_file *f);
int st_n_tensors(const st_file *f);
int st_find(const st_file *f, const char *name); /* -1 when absent */
const ng_tensor *st_tensor(const st_file *f, int i);
/* "__metadata__" value for key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);

/* Writes tensors (f32/f16/bf16) to a single .safetensors file with optional string metadata
 * (meta_kv: n_meta pairs key, value). NG_OK or NG_ERR + err. */
int st_write(const char *path, const ng_tensor *tensors, int n, const char *const *meta_kv, int n_meta,
             ng_error *err);

#endif
