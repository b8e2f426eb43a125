/* complete — the edge's prompt completion: what the edge knows (place, time, nearby points of
 * interest, the user's preferences and recent visits) rendered as a context block, and the
 * concise prompt turned into a comprehensive one, either by the edge model (GPT-2 family with
 * its completion adapter, prompted in the Alpaca format it was fine-tuned on) or by a fixed
 * template (the baseline, and the fallback when there is no edge model).
 *
 * The context block is the exact text format the completion adapter is trained on
 * (tools/data/pairs): "[context]" lines "place:", "time:", "nearby CATEGORY:", "user:", then
 * "[request]" and the concise prompt. Nothing here holds state; strings returned are malloc'd. */
#ifndef NG_EDGE_COMPLETE_H
#define NG_EDGE_COMPLETE_H

#include "core/util.h"

struct ng_model;
struct ng_lora;

#define EDGE_MAX_POI 12
#define EDGE_MIN_COMPLETION 16 /* tokens: less room than this (and than asked) is an error */
#define EDGE_MAX_RECENT 4

typedef struct {
    char category[32];
    char name[96];
    int dist_m;
} edge_poi;

typedef struct {
    char place[128];      /* "Lyon, France": the place, never the coordinates */
    char cell[64];        /* the radio cell id, or "" */
    char local_time[64];  /* "Tuesday 18:40" */
    edge_poi poi[EDGE_MAX_POI];
    int n_poi;
    char prefs[256];      /* the user's stated preferences, or "" */
    char language[16];    /* "en" */
    edge_poi recent[EDGE_MAX_RECENT]; /* recent visits: dist_m unused, category and name */
    char recent_when[EDGE_MAX_RECENT][32];
    int n_recent;
} edge_context;

/* The instruction the completion model sees: the context block and the request. */
char *edge_context_block(const edge_context *c, const char *concise);
/* The comprehensive prompt made by a fixed template from the same facts (no model). */
char *edge_template_fill(const edge_context *c, const char *concise);
/* The comprehensive prompt written by the edge model (greedy, at most max_tokens or what the
 * context leaves after the prompt, ending at the end-of-text token or a blank line). adapter
 * may be NULL. NULL + err on failure (less than EDGE_MIN_COMPLETION tokens of room). */
char *edge_complete(const struct ng_model *m, const struct ng_lora *adapter, const edge_context *c,
                    const char *concise, int max_tokens, ng_error *err);
/* The same from a ready instruction (a context block as edge_context_block writes it, e.g. a
 * record of the adapter's evaluation data). */
char *edge_complete_block(const struct ng_model *m, const struct ng_lora *adapter, const char *block,
                          int max_tokens, ng_error *err);

#endif
