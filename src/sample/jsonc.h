/* jsonc — constrained decoding for JSON output: a byte-level recognizer of JSON text,
 * optionally restricted by a JSON Schema (a practical subset), used to keep a model's output a
 * valid prefix of an acceptable document at every token, so the final output always parses and
 * validates.
 *
 * A jsonc object holds the recognizer's state for one output (copy it with jsonc_clone to try
 * alternatives). It never reads outside the bytes it is given and rejects schemas it does not
 * support with an error naming the keyword. */
#ifndef NG_JSONC_H
#define NG_JSONC_H

#include <stddef.h>

#include "core/util.h"
#include "tokenizer/tokenizer.h"

typedef struct jsonc jsonc;

/* schema_json: a JSON Schema text, or NULL for "any JSON object" (response_format json_object).
 * Supported: type (object, array, string, number, integer, boolean, null, or a list), properties,
 * required, additionalProperties (false / true), items, enum, const, minItems/maxItems,
 * minLength/maxLength, nested freely (at most 64 levels, 64 properties per object); annotations
 * (title, description, default, examples, $schema, $id, $comment) are ignored; other keywords
 * are an error naming them. The output is held to a canonical subset of JSON: at most 2
 * consecutive whitespace bytes outside strings (a model cannot loop on spaces), numbers of at
 * most 32 bytes, "integer" without fraction or exponent, no \u0000, enum/const values typed
 * exactly as cJSON writes them unformatted, and in objects that list properties, keys written
 * with the short escapes only. */
jsonc *jsonc_new(const char *schema_json, ng_error *err);
jsonc *jsonc_clone(const jsonc *c);
void jsonc_free(jsonc *c);

/* 1 when appending these bytes keeps the output a valid prefix (c unchanged). */
int jsonc_try(const jsonc *c, const char *bytes, size_t n);
/* Appends bytes: NG_OK, or NG_ERR (c unchanged) when they cannot follow. */
int jsonc_feed(jsonc *c, const char *bytes, size_t n);
/* 1 when the output so far is a complete document that validates. */
int jsonc_complete(const jsonc *c);

/* An independent check, for tests and callers: 1 when text (n bytes; trailing whitespace
 * allowed) parses with cJSON and validates against c's schema by walking the parsed tree. */
int jsonc_validate(const jsonc *c, const char *text, size_t n);

/* Sets logits of tokens that cannot come next to -INFINITY; eos stays allowed only when the
 * document is complete (and then whitespace-only tokens are the only others allowed). Checks
 * tokens by their bytes (tok_piece). Cost: proportional to the vocabulary; callers may first
 * restrict to the top candidates with jsonc_mask_top. */
void jsonc_mask(const jsonc *c, const ng_tokenizer *tok, float *logits, int n_vocab, int eos);
/* Faster: keeps only the best k candidates that may come next (others -INFINITY), falling back
 * to the full scan when none of the top k fits. */
void jsonc_mask_top(const jsonc *c, const ng_tokenizer *tok, float *logits, int n_vocab, int eos, int k);

#endif
