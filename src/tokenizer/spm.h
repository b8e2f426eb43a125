/* spm — LLaMA's SentencePiece BPE tokenizer (score-driven merges, byte fallback), encode and
 * decode.
 *
 * Encoding (as llama.cpp and the llama-tokenizer-js package do it): optionally prepend a
 * space, replace every space with U+2581 "▁", split into UTF-8 characters, then repeatedly
 * merge the adjacent pair whose concatenation is a vocabulary piece of the highest score
 * (leftmost on ties); characters that are not pieces fall back to their bytes' <0xNN>
 * pieces. BOS (when asked for) is prepended by id.
 *
 * The vocabulary: pieces (UTF-8), scores, and token types as GGUF's tokenizer.ggml.token_type
 * defines them (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). The object
 * copies what it needs and is immutable after creation (safe to share between threads). */
#ifndef NG_SPM_H
#define NG_SPM_H

#include <stdint.h>

#include "core/util.h"
#include "formats/gguf.h"

typedef struct spm spm;

/* types may be NULL: then <unk>/<s>/</s> and <0xNN> pieces are recognized by their text. */
spm *spm_new(const ng_str *pieces, const float *scores, const int32_t *types, int n, ng_error *err);
/* llama2.c's tokenizer.bin: int32 max_token_length, then per piece float32 score, int32 length,
 * bytes. n_vocab: how many pieces to read (the model's vocab_size). */
spm *spm_load_llama2c(const char *path, int n_vocab, ng_error *err);
/* From a GGUF's tokenizer.ggml.* keys (model "llama"): tokens, scores (f32), token_type (i32,
 * optional), and bos/eos/unknown_token_id when present (they override the pieces found by
 * text). NULL + err naming the file and key when a key is missing or malformed. */
spm *spm_from_gguf(const gguf_ctx *g, ng_error *err);
void spm_free(spm *t);

int spm_n_vocab(const spm *t);
int spm_bos(const spm *t); /* -1 when absent */
int spm_eos(const spm *t);
int spm_unk(const spm *t);
const char *spm_piece(const spm *t, int id, size_t *len); /* the piece as stored ("▁the") */
float spm_score(const spm *t, int id);
int32_t spm_type(const spm *t, int id);
/* Id of the piece with exactly these bytes (any type, "▁" for space), or -1. */
int spm_piece_id(const spm *t, const char *s, size_t n);

/* Encodes len bytes of UTF-8 (invalid bytes go through byte fallback, never rejected).
 * add_bos prepends BOS; add_space prepends a space (SentencePiece's add_dummy_prefix; not to
 * an empty text, which gives just BOS or nothing). Returns a malloc'd array of *n_out ids;
 * NULL with *n_out = 0 only for a text over SPM_MAX_TEXT bytes. */
#define SPM_MAX_TEXT ((size_t)1 << 30)
int *spm_encode(const spm *t, const char *text, size_t len, int add_bos, int add_space, int *n_out);
/* The bytes id stands for when decoding: "▁" -> " ", <0xNN> -> that byte, control tokens -> ""
 * (valid for the life of t; NULL when out of range). */
const char *spm_token_bytes(const spm *t, int id, size_t *len);
/* Concatenated bytes of ids (malloc'd, NUL-terminated). strip_space drops one leading space
 * of the result, the dummy prefix that encoding with add_space put there. Ids out of range
 * are an error naming the position. */
char *spm_decode(const spm *t, const int *ids, int n, int strip_space, size_t *len, ng_error *err);

#endif
