/* score — the fact check of the comprehensive prompts written by the edge completion model: the
 * port of tools/data/pairs/eval_pairs.js (its counts()), so that `netgpt eval --pairs` scores the
 * model itself. Per record of test_facts.jsonl and the prompt written for it:
 *
 *   facts     the context's facts (place, country, day, time, each POI, preferences, language, weather)
 *   stated    those the prompt states: a POI's name and its distance; any other fact's value, ignoring case
 *   mentions  distances, clock times, weekdays, language names, brand and city names in the prompt
 *   invented  mentions that are not in the record's context
 *   records_with_invented, leaks: records with an invented mention; records that repeat a private
 *             value of the prompt's context (the cell id, a recent visit, personal data)
 *   requests, requests_stated: records with a "request" ({"concise", "asks"}); those whose prompt
 *             states it: contains one of its request sentences or the concise prompt, ignoring case
 *
 * The counts equal the JS scorer's (tests/test_score.c checks them on its fixtures). The ratios
 * eval_pairs.js reports are the caller's: facts_stated = stated / facts, invented_share =
 * invented / mentions (0 without mentions), records_with_invented / records, private_leaks =
 * leaks / records, requests_stated = requests_stated / requests (0 without requests).
 *
 * The scorer holds the brand and city names of vocab.json and is read-only once loaded. */
#ifndef NG_EDGE_SCORE_H
#define NG_EDGE_SCORE_H

#include "core/util.h"

typedef struct {
    long records, facts, stated, mentions, invented, records_with_invented, leaks, requests, requests_stated;
} edge_score;

typedef struct edge_scorer edge_scorer;

/* vocab.json of tools/data/pairs ({"brands": [...], "cities": [...]}). NULL + err on failure;
 * free with edge_scorer_free. */
edge_scorer *edge_scorer_load(const char *vocab_path, ng_error *err);
void edge_scorer_free(edge_scorer *s);

/* Scores one record: facts_line is a line of test_facts.jsonl ({"facts": [...], "private": [...]}),
 * output the prompt written for it (NULL counts as ""); adds to acc. NG_ERR + err, acc untouched,
 * when the facts line is malformed. */
int edge_score_add(const edge_scorer *s, const char *facts_line, const char *output, edge_score *acc,
                   ng_error *err);

#endif
