/* data — training data for `netgpt train`: reading, tokenizing, packing and batching.
 *
 * Formats (one file, read line by line, so only the tokenized data is held):
 *   alpaca  JSONL, one {"instruction": S, "input": S (optional), "output": S} per line.
 *           Text = chat_alpaca_prompt(instruction, input) + output, tokenized as one string
 *           (so prompt/response boundaries tokenize as in use), then [BOS] ... EOS. The loss
 *           counts the output tokens and EOS only (tokens past the prompt's own tokenization).
 *   chat    JSONL, one {"messages": [{"role": R, "content": S}, ...]} per line, rendered with
 *           the model's chat template (chat_apply) and tok_encode_special; the loss counts the
 *           assistant turns only (each turn's tokens after the template's opening of it, through
 *           its end-of-turn marker), plus a final EOS when the template did not end with one.
 *   text    plain text: documents are paragraphs separated by runs of blank lines (or the whole
 *           file with docs_whole_file), each followed by EOS (and preceded by BOS for models
 *           that use one), all concatenated into one stream; every token counts.
 *   auto    .jsonl/.json: by the first non-blank line's keys ("messages" -> chat, else alpaca);
 *           anything else: text.
 * A bad JSONL line (invalid JSON, a missing field, a wrong type, an empty output, no assistant
 * turn) is reported on stderr as "FILE:LINE: what" and skipped (counted in n_bad); with strict
 * the load stops there and fails with that message. Blank lines are not bad, just skipped.
 *
 * Examples and rows: every example becomes a run of token ids with a per-token loss flag. A
 * row holds T+1 tokens: inputs are the first T, targets the last T (the next token). Text is
 * cut into chunks of T+1 tokens overlapping by one token, so every token is a target exactly
 * once. Instruction and chat examples are packed whole, several per row, in order, padding
 * the end of a row (padding never counts); an example longer than T+1 tokens cannot be
 * learned without losing its prompt or part of its response, so it is dropped and counted
 * (n_too_long, each one reported as FILE:LINE). The first token of an example is never a
 * target (it would be predicted from the previous example).
 *
 * Shuffling: instruction/chat examples are shuffled each epoch (a permutation from the seed
 * and the epoch number) and packed again; text rows are fixed and their order is shuffled.
 * The row stream is a pure function of (data, seed, row index), so a run resumed at step s
 * sees the same rows as one that never stopped (data_loader_seek).
 *
 * Validation: a separate file (loaded with the same options), or a fraction of the examples
 * (chunks for text) picked by the seed and held out from training.
 *
 * Ownership: a data_set owns its token arrays; a data_loader borrows its data_set and owns
 * its batch buffers. */
#ifndef NG_DATA_H
#define NG_DATA_H

#include <stdint.h>

#include "core/util.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

typedef enum { DATA_AUTO = 0, DATA_ALPACA, DATA_CHAT, DATA_TEXT } data_format;

/* "auto" | "alpaca" | "chat" | "text" -> format; -1 when unknown. */
int data_format_parse(const char *s);
const char *data_format_name(data_format f);

typedef struct {
    data_format format;
    int T;                  /* tokens per row (the model sees T, predicts T) */
    int strict;             /* stop at the first bad line */
    int docs_whole_file;    /* text: the whole file is one document */
    ng_chat_template chat;  /* chat: the template (CHAT_NONE: chatml) */
    int max_reports;        /* bad lines printed before "...and more" (0: 20) */
} data_options;

typedef struct {
    char *path;
    data_format format;
    int T;
    int *ids;               /* (n_tokens) every example's tokens, back to back */
    uint8_t *counts;        /* (n_tokens) 1 where the token is a loss target */
    int64_t n_tokens;
    int64_t *start;         /* (n_ex + 1) example e is ids[start[e] .. start[e+1]) */
    int n_ex;
    int64_t n_lines, n_bad, n_too_long, n_target_tokens;
} data_set;

/* Reads path with tok. NULL + err on an unreadable file, an empty result, or (strict) the
 * first bad line; bad lines are printed to stderr and counted otherwise. */
data_set *data_load(const char *path, const ng_tokenizer *tok, const data_options *o, ng_error *err);
void data_free(data_set *d);
/* The distinct token ids of d, ascending (malloc'd, *n of them; NULL when none): every token
 * (counted_only 0) or only the loss targets (1), which for instruction data are the tokens
 * of the responses. Ids outside [0, n_vocab) are skipped. */
int *data_token_set(const data_set *d, int n_vocab, int counted_only, int *n);
/* Moves a fraction (0 < frac < 1) of d's examples, chosen by seed, into a new set (at least
 * one, leaving at least one); NULL when d has fewer than two examples. */
data_set *data_split(data_set *d, double frac, uint64_t seed);

/* Batches of B rows of T tokens, endlessly, epoch after epoch. */
typedef struct {
    const data_set *d;
    int B, T, pad;
    uint64_t seed;
    int shuffled;            /* 0: file order every epoch (evaluation) */
    int64_t epoch;           /* of the row that comes next */
    int64_t row;             /* row index within the epoch */
    int64_t rows_per_epoch;  /* of the current epoch (packing can differ a little) */
    int *order;              /* (n_ex) example order this epoch */
    int *row_first;          /* (n_rows + 1) position in order of each row's first example */
    int *tokens, *targets;   /* (B, T) */
    float *mask;             /* (B, T) */
} data_loader;

/* shuffle 0 keeps the file's order (evaluation). pad is a valid id for padding (e.g. EOS). */
data_loader *data_loader_new(const data_set *d, int B, uint64_t seed, int shuffle, int pad);
void data_loader_free(data_loader *l);
/* Rows in one epoch (of epoch 0; later epochs differ by a few rows at most). */
int64_t data_rows(const data_set *d);
/* Fills the loader's next batch (B rows; the last batch of an epoch continues into the next).
 * Returns the number of loss targets in it. */
int data_next(data_loader *l);
/* Fills a batch with rows first .. first+B-1 of epoch 0 in order (rows past the end are
 * fully masked); returns the number of loss targets. For evaluation. */
int data_batch_at(data_loader *l, int64_t first);
/* Skips to where the loader is after n_batches calls of data_next from a fresh start. */
void data_loader_seek(data_loader *l, int64_t n_batches);

#endif
