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
/* References. Where the comprehensive prompt repeats the context, the completion models write
 * references and the edge fills in the values of the block it wrote:
 *
 *   {place} "Lyon, France"   {day} "Tuesday"   {time} "18:40"   {language} "French" (from "fr")
 *   {prefs} "vegan, travels on foot" (the preferences of the user line, as written there)
 *   {request} "coffee nearby?" (the concise prompt: what follows "[request]")
 *   {poiK} {distK}           name and distance of the K-th point of interest of the block
 *                            (1-based, in block order: "Lidl", "854 m")
 *
 * so a model too small to copy unseen names and numbers still states them exactly, and cannot
 * invent one. A reference the block has no value for ({poi3} with two points of interest)
 * stays as written and counts in *unresolved (may be NULL); other braces are text. The same
 * rule as fillRefs in tools/data/pairs/common.js, which writes the training data this way.
 * Returns the filled text (malloc'd). */
char *edge_fill_refs(const char *block, const char *text, int *unresolved);
#define EDGE_BEAMS 4      /* the completion's beam width */
#define EDGE_MAX_BEAMS 8  /* (the batched forward's rows per weight pass) */

/* The comprehensive prompt written by the edge model, its references filled. Beam search
 * (EDGE_BEAMS hypotheses, advanced in one batched forward) among the tokens that keep every
 * "{" the beginning of a reference the block can fill and has not been written yet (so no
 * reference is left without a value, none is stated twice, and one cut off by the end is
 * dropped), that repeat no run of 3 tokens outside references (a small model's loops), and,
 * once the text holds a reference, that are not the end of text or a line break while a
 * reference the block can fill is still unwritten (every value the edge knows is stated; a
 * model that writes literal prompts is not held to it); at most max_tokens or what the context
 * leaves after the prompt, a prompt ending at the end-of-text token or a blank line. Of the
 * finished prompts the one with the highest mean log-probability per token wins: a greedy
 * choice that leads nowhere (a reference that cannot be filled where the model wanted one, a
 * sentence it cannot end) loses to a better whole. adapter may be NULL. NULL + err on failure
 * (less than EDGE_MIN_COMPLETION tokens of room; beams not within 1..EDGE_MAX_BEAMS). */
char *edge_complete(const struct ng_model *m, const struct ng_lora *adapter, const edge_context *c,
                    const char *concise, int max_tokens, int beams, ng_error *err);
/* The same from a ready instruction (a context block as edge_context_block writes it, e.g. a
 * record of the adapter's evaluation data). */
char *edge_complete_block(const struct ng_model *m, const struct ng_lora *adapter, const char *block,
                          int max_tokens, ng_error *err);
/* The same with beams hypotheses (1..EDGE_MAX_BEAMS; 1 is greedy decoding). */
char *edge_complete_search(const struct ng_model *m, const struct ng_lora *adapter, const char *block,
                           int max_tokens, int beams, ng_error *err);

#endif
