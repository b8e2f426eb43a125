/* tokenizer — the model-facing tokenizer: one interface over the vocabularies a model file
 * can carry (GPT-2 byte-level BPE, LLaMA SentencePiece), with the model's special ids.
 *
 * Built from a GGUF's tokenizer.ggml.* keys (model "gpt2" or "llama"), from a Hugging Face
 * folder's GPT-2 files (vocab.json/encoder.json + merges.txt/vocab.bpe), or from a llama2.c
 * tokenizer.bin. Owns its vocabulary; immutable after creation. */
#ifndef NG_TOKENIZER_H
#define NG_TOKENIZER_H

#include "core/util.h"
#include "formats/gguf.h"

typedef struct ng_tokenizer ng_tokenizer;

/* NULL + err when the GGUF has no tokenizer or a malformed one; err->msg is left empty when
 * the file simply carries no tokenizer (tokenizer.ggml.model absent). */
ng_tokenizer *tok_from_gguf(const gguf_ctx *g, ng_error *err);
/* From a Hugging Face model folder; NULL + err (empty msg when the folder has no files). */
ng_tokenizer *tok_from_hf_dir(const char *dir, ng_error *err);
/* A llama2.c tokenizer.bin with the model's vocabulary size. */
ng_tokenizer *tok_from_llama2c(const char *path, int n_vocab, ng_error *err);
/* Only the tokenizer of a model path (GGUF file or Hugging Face folder): no weights are read.
 * NULL + err (naming the path) when there is none or it is malformed. */
ng_tokenizer *tok_load(const char *path, ng_error *err);
void tok_free(ng_tokenizer *t);

int tok_n_vocab(const ng_tokenizer *t);
int tok_bos(const ng_tokenizer *t); /* -1 when the model has none */
int tok_eos(const ng_tokenizer *t);
/* Whether a prompt starts with BOS (SentencePiece models). */
int tok_add_bos(const ng_tokenizer *t);
/* "gpt2" for byte-level BPE, "llama" for SentencePiece. */
const char *tok_kind(const ng_tokenizer *t);

/* Text to ids (malloc'd, *n ids), no BOS; SentencePiece adds its leading space. */
int *tok_encode(const ng_tokenizer *t, const char *text, size_t len, int *n);
/* Like tok_encode, but the vocabulary's control tokens written as text ("<|endoftext|>",
 * "<s>", "<|im_start|>") become their ids: for chat templates. */
int *tok_encode_special(const ng_tokenizer *t, const char *text, size_t len, int *n);
/* Id of a control / user-defined token by its text, or -1. */
int tok_special_id(const ng_tokenizer *t, const char *text);
/* Raw bytes of one id (NULL when out of range); valid for the life of t. */
const char *tok_piece(const ng_tokenizer *t, int id, size_t *len);

/* Writes the tokenizer into w as tokenizer.ggml.* keys (as llama.cpp's converter does). */
void tok_write_gguf(const ng_tokenizer *t, gguf_writer *w);

#endif
