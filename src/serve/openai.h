/* openai — the OpenAI API's JSON for `netgpt serve`: request bodies of /v1/chat/completions and
 * /v1/completions parsed and validated into an openai_req, and the response, stream-chunk and
 * error bodies built from the engine's output.
 *
 * Everything here is pure (no model, no sockets), so the parser can be fuzzed alone. Bodies
 * come from the network: any byte string gets either a filled openai_req or an openai_error
 * with an HTTP status and a message naming the field; unknown fields are ignored.
 * Ownership: an openai_req owns every string and array in it (openai_req_free); builders
 * return malloc'd NUL-terminated text the caller frees. */
#ifndef NG_SERVE_OPENAI_H
#define NG_SERVE_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/chat.h"

#define OPENAI_MAX_STOP 4

typedef struct {
    int status; /* HTTP status: 400, 404, ... */
    char message[400];
    char param[64]; /* the offending field, or empty */
} openai_error;

typedef enum { OPENAI_FMT_TEXT = 0, OPENAI_FMT_JSON_OBJECT, OPENAI_FMT_JSON_SCHEMA } openai_format;

typedef struct {
    int chat;    /* 1: /v1/chat/completions, 0: /v1/completions */
    char *model; /* NULL when absent */
    /* chat */
    ng_chat_msg *msgs; /* (n_msgs) role/content point into strs */
    int n_msgs;
    /* completions: text or token ids */
    char *prompt;
    int *prompt_ids; /* NULL unless the prompt was an array of ids */
    int n_prompt_ids;
    int max_tokens; /* -1: absent (fill to the context) */
    float temperature, top_p;
    int has_seed;
    uint64_t seed;
    char *stop[OPENAI_MAX_STOP];
    int n_stop;
    int stream, include_usage;
    openai_format format;
    char *schema; /* JSON text of response_format.json_schema.schema */
    int return_token_ids; /* extension: also return the prompt's and the output's token ids */
    char **strs; /* every string owned, for freeing */
    int n_strs;
} openai_req;

/* Parses body (len bytes, not NUL-terminated) for the chat or completions endpoint. NG_OK, or
 * NG_ERR with e filled (status 400, message naming the field); r is then empty. */
int openai_parse(const char *body, size_t len, int chat, openai_req *r, openai_error *e);
void openai_req_free(openai_req *r);

/* {"error":{"message":...,"type":...,"param":...,"code":...}} for a status; param may be NULL
 * or empty. */
char *openai_error_json(int status, const char *message, const char *param);

/* What every response body of one request shares. */
typedef struct {
    const char *id;    /* "chatcmpl-..." / "cmpl-..." */
    const char *model; /* the name the client asked for */
    long created;      /* unix seconds */
    int chat;
} openai_meta;

typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} openai_usage;

/* The whole non-streaming response. text (len bytes) may hold invalid UTF-8 (it is replaced by
 * U+FFFD). ids/prompt_ids are added as "token_ids"/"prompt_token_ids" when not NULL. */
char *openai_response_json(const openai_meta *m, const char *text, size_t len, const char *finish_reason,
                           const openai_usage *u, const int *prompt_ids, int n_prompt, const int *ids, int n_ids);
/* One SSE event "data: {...}\n\n": a chunk carrying text (chat: delta.content; role when
 * first_chat_delta), or the final one with finish_reason (text may be empty), or (usage != NULL)
 * the usage chunk with empty choices. */
char *openai_chunk_sse(const openai_meta *m, const char *text, size_t len, int first_chat_delta,
                       const char *finish_reason, const openai_usage *usage);

/* Copies n bytes with every invalid UTF-8 sequence replaced by U+FFFD (malloc'd, NUL-terminated). */
char *openai_utf8_clean(const char *s, size_t n);
/* Bytes at the end of s[0..n) that start a UTF-8 sequence not yet complete (0..3): text held back
 * from a stream until the next token completes it. */
size_t openai_utf8_tail(const char *s, size_t n);

#endif
