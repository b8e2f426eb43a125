/* bpe — GPT-2 byte-level BPE tokenizer: encode text to ids and decode ids to bytes.
 *
 * Text is split by GPT-2's pre-tokenizer pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (Unicode letter/number/space classes from generated tables), each piece's bytes are mapped
 * to GPT-2's printable byte alphabet, then merged by merge rank. Ids are identical to the
 * `gpt-3-encoder` npm package. Special tokens such as <|endoftext|> are not parsed out of
 * text (as in that package); callers add them by id.
 *
 * The vocabulary is given as token strings in the byte alphabet (as in encoder.json and
 * GGUF's tokenizer.ggml.tokens) and merges as "A B" lines (vocab.bpe / tokenizer.ggml.merges).
 * The bpe object copies what it needs; it is immutable after creation, so one object may be
 * used from several threads. */
#ifndef NG_BPE_H
#define NG_BPE_H

#include "core/util.h"

typedef struct bpe bpe;

/* tokens[i] is the string of id i; merges in rank order. NULL + err on malformed input
 * (a merge whose parts or result are not tokens is an error naming the merge's line). */
bpe *bpe_new(const ng_str *tokens, int n_tokens, const ng_str *merges, int n_merges, ng_error *err);
/* Loads encoder.json / vocab.json (token -> id) and vocab.bpe / merges.txt. */
bpe *bpe_load_files(const char *vocab_json_path, const char *merges_path, ng_error *err);
void bpe_free(bpe *t);

int bpe_n_vocab(const bpe *t);
int bpe_n_merges(const bpe *t);
/* Token string of id in the byte alphabet (as given at creation), NULL when out of range. */
const char *bpe_token_str(const bpe *t, int id, size_t *len);
/* Merge i as given at creation ("A B"), NULL when out of range. */
const char *bpe_merge_str(const bpe *t, int i, size_t *len);
/* Id of a token string in the byte alphabet, or -1. */
int bpe_token_id(const bpe *t, const char *s, size_t n);

/* Encodes len bytes of UTF-8 text (invalid UTF-8 is encoded byte by byte, never rejected).
 * Returns a malloc'd array of *n_out ids. */
int *bpe_encode(const bpe *t, const char *text, size_t len, int *n_out);
/* Raw bytes of token id (the byte alphabet mapped back); *len gets the count. NULL for an
 * id out of range. The pointer stays valid for the life of t. */
const char *bpe_token_bytes(const bpe *t, int id, size_t *len);
/* Concatenated bytes of ids (malloc'd, NUL-terminated); ids out of range are an error. */
char *bpe_decode(const bpe *t, const int *ids, int n, size_t *len, ng_error *err);

#endif
