/* complete — context block, template baseline, and model-written comprehensive prompts. */
#include "edge/complete.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "model/lora.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "tokenizer/chat.h"

/* "Starbucks 350 m" / "Starbucks 1.2 km" */
static void put_distance(ng_buf *b, int m) {
    if (m < 1000) ng_buf_printf(b, "%d m", m);
    else ng_buf_printf(b, "%.1f km", m / 1000.0);
}

char *edge_context_block(const edge_context *c, const char *concise) {
    ng_buf b;
    ng_buf_init(&b);
    ng_buf_printf(&b, "[context]\nplace: %s", c->place);
    if (c->cell[0]) ng_buf_printf(&b, " (cell %s)", c->cell);
    ng_buf_printf(&b, "\ntime: %s local\n", c->local_time);
    /* nearby points of interest grouped by category, in the order given (nearest first) */
    for (int i = 0; i < c->n_poi; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(c->poi[j].category, c->poi[i].category) != 0;
        if (!first) continue;
        ng_buf_printf(&b, "nearby %s: ", c->poi[i].category);
        for (int j = i, k = 0; j < c->n_poi; j++) {
            if (strcmp(c->poi[j].category, c->poi[i].category)) continue;
            ng_buf_printf(&b, "%s%s ", k++ ? ", " : "", c->poi[j].name);
            put_distance(&b, c->poi[j].dist_m);
        }
        ng_buf_printf(&b, "\n");
    }
    if (c->prefs[0] || c->language[0] || c->n_recent) {
        ng_buf_printf(&b, "user:");
        const char *sep = " ";
        if (c->prefs[0]) ng_buf_printf(&b, "%s%s", sep, c->prefs), sep = "; ";
        if (c->language[0]) ng_buf_printf(&b, "%slanguage %s", sep, c->language), sep = "; ";
        for (int i = 0; i < c->n_recent; i++)
            ng_buf_printf(&b, "%s%s%s (%s) %s", i ? ", " : sep, i ? "" : "recent: ", c->recent[i].name, c->recent[i].category,
                      c->recent_when[i]);
        ng_buf_printf(&b, "\n");
    }
    ng_buf_printf(&b, "[request]\n%s", concise);
    return b.s;
}

char *edge_template_fill(const edge_context *c, const char *concise) {
    ng_buf b;
    ng_buf_init(&b);
    ng_buf_printf(&b, "%s. I am in %s and it is %s local time.", concise, c->place, c->local_time);
    for (int i = 0; i < c->n_poi; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(c->poi[j].category, c->poi[i].category) != 0;
        if (!first) continue;
        ng_buf_printf(&b, " Nearby %s options:", c->poi[i].category);
        for (int j = i, k = 0; j < c->n_poi; j++) {
            if (strcmp(c->poi[j].category, c->poi[i].category)) continue;
            ng_buf_printf(&b, "%s %s (", k++ ? "," : "", c->poi[j].name);
            put_distance(&b, c->poi[j].dist_m);
            ng_buf_printf(&b, ")");
        }
        ng_buf_printf(&b, ".");
    }
    if (c->prefs[0]) ng_buf_printf(&b, " My preferences: %s.", c->prefs);
    return b.s;
}

/* ---- references: the values of a context block, by name */

/* ISO 639-1 codes of the user line and the names prompts use for them (the data's twelve, and
 * others an edge's users may have) */
static const char *const LANGUAGES[][2] = {
    {"ar", "Arabic"},  {"bn", "Bengali"},   {"cs", "Czech"},      {"da", "Danish"},  {"de", "German"},
    {"el", "Greek"},   {"en", "English"},   {"es", "Spanish"},    {"fa", "Persian"}, {"fi", "Finnish"},
    {"fr", "French"},  {"he", "Hebrew"},    {"hi", "Hindi"},      {"hu", "Hungarian"}, {"id", "Indonesian"},
    {"it", "Italian"}, {"ja", "Japanese"},  {"ko", "Korean"},     {"ms", "Malay"},   {"nl", "Dutch"},
    {"no", "Norwegian"}, {"pl", "Polish"},  {"pt", "Portuguese"}, {"ro", "Romanian"}, {"ru", "Russian"},
    {"sv", "Swedish"}, {"th", "Thai"},      {"tr", "Turkish"},    {"uk", "Ukrainian"}, {"vi", "Vietnamese"},
    {"zh", "Chinese"},
};

#define REF_MAX_POI 64

/* A value: n bytes at s (into the block), n = 0 when the block has none. */
typedef struct {
    const char *s;
    size_t n;
} ref_val;

typedef struct {
    ref_val place, day, time, language, prefs, request;
    ref_val poi[REF_MAX_POI], dist[REF_MAX_POI];
    int n_poi;
} ref_values;

static int starts(const char *s, const char *end, const char *prefix) {
    size_t n = strlen(prefix);
    return (size_t)(end - s) >= n && !memcmp(s, prefix, n);
}

/* "Lidl 854 m" / "Total 1.6 km": name and distance split at the number; 0 when it is neither */
static int split_poi(const char *s, const char *end, ref_val *name, ref_val *dist) {
    const char *unit = end;
    if (end - s > 2 && !memcmp(end - 2, " m", 2)) unit = end - 2;
    else if (end - s > 3 && !memcmp(end - 3, " km", 3)) unit = end - 3;
    else return 0;
    const char *num = unit;
    while (num > s && ((num[-1] >= '0' && num[-1] <= '9') || num[-1] == '.')) num--;
    if (num == unit || num - s < 2 || num[-1] != ' ') return 0;
    /* "854" or "1.6": digits, and for km one decimal */
    const char *dot = memchr(num, '.', (size_t)(unit - num));
    if (unit == end - 3 ? !dot || dot == num || unit - dot != 2 : dot != NULL) return 0;
    *name = (ref_val){s, (size_t)(num - 1 - s)};
    *dist = (ref_val){num, (size_t)(end - num)};
    return 1;
}

/* The lines of the block up to "[request]", as edge_context_block writes them, and the request:
 * what follows the first "\n[request]\n", up to another or the end. */
static void ref_parse(const char *block, ref_values *v) {
    memset(v, 0, sizeof *v);
    const char *req = strstr(block, "\n[request]\n");
    if (req) {
        req += 11;
        const char *end = strstr(req, "\n[request]\n");
        v->request = (ref_val){req, end ? (size_t)(end - req) : strlen(req)};
    }
    for (const char *l = block; *l;) {
        const char *end = strchr(l, '\n');
        if (!end) end = l + strlen(l);
        if (starts(l, end, "[request]")) break;
        if (starts(l, end, "place: ")) {
            const char *p = l + 7, *cell = NULL;
            for (const char *q = p; q + 7 <= end; q++)
                if (!memcmp(q, " (cell ", 7)) cell = q;
            v->place = (ref_val){p, (size_t)((cell && end[-1] == ')' ? cell : end) - p)};
        } else if (starts(l, end, "time: ") && end - l > 12 && !memcmp(end - 6, " local", 6)) {
            const char *p = l + 6, *e = end - 6, *sp = memchr(p, ' ', (size_t)(e - p));
            if (sp) v->day = (ref_val){p, (size_t)(sp - p)}, v->time = (ref_val){sp + 1, (size_t)(e - sp - 1)};
        } else if (starts(l, end, "nearby ")) {
            const char *p = memchr(l, ':', (size_t)(end - l));
            for (p = p && p + 1 < end && p[1] == ' ' ? p + 2 : end; p < end;) {
                const char *q = p;
                while (q < end && !(q + 1 < end && q[0] == ',' && q[1] == ' ')) q++;
                if (v->n_poi < REF_MAX_POI && split_poi(p, q, &v->poi[v->n_poi], &v->dist[v->n_poi])) v->n_poi++;
                p = q + 2;
            }
        } else if (starts(l, end, "user: ")) {
            for (const char *p = l + 6; p < end;) {
                const char *q = p;
                while (q < end && !(q + 1 < end && q[0] == ';' && q[1] == ' ')) q++;
                if (starts(p, q, "language ")) {
                    ref_val code = {p + 9, (size_t)(q - p - 9)};
                    v->language = code;
                    for (size_t i = 0; i < sizeof LANGUAGES / sizeof *LANGUAGES; i++)
                        if (strlen(LANGUAGES[i][0]) == code.n && !memcmp(LANGUAGES[i][0], code.s, code.n))
                            v->language = (ref_val){LANGUAGES[i][1], strlen(LANGUAGES[i][1])};
                } else if (!starts(p, q, "recent: ")) {
                    v->prefs = (ref_val){p, (size_t)(q - p)};
                }
                p = q + 2;
            }
        }
        l = *end ? end + 1 : end;
    }
}

/* The references with one value each, and where ref_values holds it. */
static const struct {
    const char *name;
    size_t off;
} REF_FIXED[] = {{"place", offsetof(ref_values, place)},
                 {"day", offsetof(ref_values, day)},
                 {"time", offsetof(ref_values, time)},
                 {"language", offsetof(ref_values, language)},
                 {"prefs", offsetof(ref_values, prefs)},
                 {"request", offsetof(ref_values, request)}};
#define REF_N_FIXED (int)(sizeof REF_FIXED / sizeof *REF_FIXED)

static ref_val ref_fixed(const ref_values *v, int i) { return *(const ref_val *)((const char *)v + REF_FIXED[i].off); }

/* The value of reference name[0..n) ("poi2"), or one of length 0. */
static ref_val ref_lookup(const ref_values *v, const char *name, size_t n) {
    for (int i = 0; i < REF_N_FIXED; i++)
        if (strlen(REF_FIXED[i].name) == n && !memcmp(REF_FIXED[i].name, name, n)) return ref_fixed(v, i);
    int k = 0;
    size_t letters = n;
    while (letters && name[letters - 1] >= '0' && name[letters - 1] <= '9') letters--;
    if (letters == n || n - letters > 2 || name[letters] == '0') return (ref_val){0};
    for (size_t i = letters; i < n; i++) k = k * 10 + (name[i] - '0');
    if (k > v->n_poi) return (ref_val){0};
    if (letters == 3 && !memcmp(name, "poi", 3)) return v->poi[k - 1];
    if (letters == 4 && !memcmp(name, "dist", 4)) return v->dist[k - 1];
    return (ref_val){0};
}

/* edge_fill_refs with the block already parsed */
static char *fill_refs(const ref_values *v, const char *text, int *unresolved) {
    ng_buf b;
    ng_buf_init(&b);
    int missing = 0;
    for (const char *p = text; *p;) {
        /* "{" letters digits "}" */
        const char *q = p + 1;
        if (*p == '{') {
            while (*q >= 'a' && *q <= 'z') q++;
            const char *letters_end = q;
            while (*q >= '0' && *q <= '9') q++;
            if (letters_end > p + 1 && *q == '}') {
                ref_val val = ref_lookup(v, p + 1, (size_t)(q - p - 1));
                if (val.n) ng_buf_add(&b, val.s, val.n);
                else ng_buf_add(&b, p, (size_t)(q + 1 - p)), missing++;
                p = q + 1;
                continue;
            }
        }
        ng_buf_add(&b, p, 1);
        p++;
    }
    if (unresolved) *unresolved = missing;
    return b.s;
}

char *edge_fill_refs(const char *block, const char *text, int *unresolved) {
    ref_values v;
    ref_parse(block, &v);
    return fill_refs(&v, text, unresolved);
}

/* ---- decoding: only references the block can fill, no phrase written twice */

#define REF_MAX (REF_N_FIXED + 2 * REF_MAX_POI)
#define NO_REPEAT 3   /* a run of this many prose tokens is not generated twice */
#define MAX_REJECT 256 /* candidates tried per token before the prompt ends there */

/* The references the block has values for, written out ("{poi2}"). */
typedef struct {
    char ref[REF_MAX][24];
    int n;
} ref_list;

static void ref_list_of(const ref_values *v, ref_list *L) {
    L->n = 0;
    for (int i = 0; i < REF_N_FIXED; i++)
        if (ref_fixed(v, i).n) snprintf(L->ref[L->n++], sizeof L->ref[0], "{%s}", REF_FIXED[i].name);
    for (int k = 1; k <= v->n_poi; k++) {
        snprintf(L->ref[L->n++], sizeof L->ref[0], "{poi%d}", k);
        snprintf(L->ref[L->n++], sizeof L->ref[0], "{dist%d}", k);
    }
}

/* 1 when s[0..n) (from a "{") is (close = 1) or begins (close = 0) a reference of L that is not
 * in done[0..nd) */
static int ref_known(const ref_list *L, const char *s, size_t n, int close, const char *done, size_t nd) {
    for (int i = 0; i < L->n; i++) {
        size_t len = strlen(L->ref[i]);
        if ((close ? len == n : len > n) && !memcmp(L->ref[i], s, n) && !(nd && memmem(done, nd, L->ref[i], len)))
            return 1;
    }
    return 0;
}

/* 1 when every "{" of s (the open reference the text ends in, then a candidate's piece) starts a
 * reference of L, or the beginning of one at the end of s, and no whole one is already in
 * done[0..nd) (the text written before s): each value is stated once, as in the training data. */
static int refs_fill(const ref_list *L, const char *s, const char *done, size_t nd) {
    for (const char *p = strchr(s, '{'); p; p = strchr(p + 1, '{')) {
        const char *close = strchr(p, '}');
        if (!close) return ref_known(L, p, strlen(p), 0, done, nd);
        if (!ref_known(L, p, (size_t)(close - p + 1), 1, done, nd)) return 0;
        p = close;
    }
    return 1;
}

/* 1 when every reference of L is in text[0..n), or text has none at all (a model that writes
 * literal prompts is not held to them) */
static int all_stated(const ref_list *L, const char *text, size_t n) {
    if (!n || !memchr(text, '{', n)) return 1;
    for (int i = 0; i < L->n; i++)
        if (!memmem(text, n, L->ref[i], strlen(L->ref[i]))) return 0;
    return 1;
}

/* 1 when token t after toks[0..n) (flags in_ref: written inside a reference) would repeat a run
 * of NO_REPEAT prose tokens already generated. */
static int repeats(const int *toks, const unsigned char *in_ref, int n, int t) {
    if (n < NO_REPEAT - 1) return 0;
    for (int j = n - NO_REPEAT + 1; j < n; j++)
        if (in_ref[j]) return 0;
    for (int i = 0; i + NO_REPEAT - 1 < n; i++) {
        int same = toks[i + NO_REPEAT - 1] == t;
        for (int j = 0; same && j < NO_REPEAT - 1; j++) same = toks[i + j] == toks[n - NO_REPEAT + 1 + j] && !in_ref[i + j];
        if (same && !in_ref[i + NO_REPEAT - 1]) return 1;
    }
    return 0;
}

char *edge_complete(const ng_model *m, const ng_lora *adapter, const edge_context *c, const char *concise,
                    int max_tokens, int beams, ng_error *err) {
    char *block = edge_context_block(c, concise);
    char *out = edge_complete_search(m, adapter, block, max_tokens, beams, err);
    free(block);
    return out;
}

/* ---- beam search over the constrained decoding */

/* One hypothesis: its sequence (KV cache), text, tokens (in_ref: written inside a reference) and
 * the sum of its tokens' log-probabilities. */
typedef struct {
    ng_state *seq;
    ng_buf text;
    int *gen;
    unsigned char *in_ref;
    int n;
    double score;
} hyp;

/* A continuation of hypothesis `from` by token t (log-probability lp). */
typedef struct {
    int from, t, ref;
    double score;
} cand;

static int cand_order(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->from != y->from ? x->from - y->from : x->t - y->t; /* ties: a fixed order */
}

#define TOP_K 32 /* the ranking searched first, in one pass over the logits */

/* 1 when token t may follow h (see edge_complete_search): it keeps every reference fillable
 * and repeats no phrase; the end of text when no reference is open and every one is written.
 * open: the reference h's text ends in, or NULL. *ref: t is written inside a reference. */
static int may_follow(const ng_model *m, const ref_list *refs, const hyp *h, const char *open, int t, int *ref) {
    *ref = 0;
    if (t == tok_eos(m->tok)) return !open && all_stated(refs, h->text.s, h->text.n);
    size_t len;
    const char *piece = tok_piece(m->tok, t, &len);
    char c[256]; /* a reference's beginning and one piece */
    snprintf(c, sizeof c, "%s%.*s", open ? open : "", len < 200 ? (int)len : 200, piece);
    *ref = open || memchr(piece, '{', len); /* a "}" with no reference open is text */
    size_t nd = open ? (size_t)(open - h->text.s) : h->text.n;
    return refs_fill(refs, c, h->text.s, nd) && (*ref || !repeats(h->gen, h->in_ref, h->n, t)) &&
           (!memchr(piece, '\n', len) || all_stated(refs, h->text.s, h->text.n));
}

/* Up to want continuations of h, best first: those of the TOP_K best tokens that may follow h;
 * when none does, the best that does among the next MAX_REJECT (logits are destroyed). Returns
 * how many. */
static int continuations(const ng_model *m, const ref_list *refs, const hyp *h, int from, float *logits, int want,
                         cand *out) {
    int V = m->hp.n_vocab, got = 0, ref, idx[TOP_K], k = V < TOP_K ? V : TOP_K;
    const char *open = h->text.n ? strrchr(h->text.s, '{') : NULL;
    if (open && strchr(open, '}')) open = NULL;
    double lse = ng_log_sum_exp(logits, V);
    ng_top_k(logits, V, k, idx);
    for (int i = 0; i < k && got < want; i++)
        if (may_follow(m, refs, h, open, idx[i], &ref)) out[got++] = (cand){from, idx[i], ref, h->score + logits[idx[i]] - lse};
    if (got) return got;
    for (int i = 0; i < k; i++) logits[idx[i]] = -INFINITY;
    for (int tries = k; tries < MAX_REJECT; tries++) {
        int t = ng_argmax(logits, V);
        if (!(logits[t] > -INFINITY)) break;
        if (may_follow(m, refs, h, open, t, &ref)) {
            out[0] = (cand){from, t, ref, h->score + logits[t] - lse};
            return 1;
        }
        logits[t] = -INFINITY;
    }
    return 0;
}

/* h's text followed by token t: 1 when that ends the prompt (the end of text, a blank line) */
static int hyp_extend(const ng_model *m, hyp *h, int t, int ref, double score) {
    h->score = score;
    if (t == tok_eos(m->tok)) return 1;
    size_t len;
    const char *piece = tok_piece(m->tok, t, &len);
    h->gen[h->n] = t, h->in_ref[h->n] = (unsigned char)ref, h->n++;
    ng_buf_printf(&h->text, "%.*s", (int)len, piece);
    return h->text.n >= 2 && !strcmp(h->text.s + h->text.n - 2, "\n\n");
}

static void hyp_copy_text(hyp *dst, const hyp *src) {
    dst->text.n = 0;
    if (dst->text.s) dst->text.s[0] = 0;
    if (src->text.n) ng_buf_add(&dst->text, src->text.s, src->text.n);
    memcpy(dst->gen, src->gen, (size_t)src->n * sizeof *src->gen);
    memcpy(dst->in_ref, src->in_ref, (size_t)src->n);
    dst->n = src->n, dst->score = src->score;
}

/* The score a finished prompt is ranked by: the mean log-probability of its tokens (the end
 * of text included), so that longer prompts, which state more, are not ranked below short
 * ones for their length alone. */
static double normalized(const hyp *h, int ended) { return h->score / (double)(h->n + ended > 0 ? h->n + ended : 1); }

/* h is a finished prompt (ended: by the end-of-text token): it becomes *best if it ranks above */
static void finish(const hyp *h, int ended, hyp *best, double *best_norm, int *n_finished) {
    double sc = normalized(h, ended);
    if (!*n_finished || sc > *best_norm) hyp_copy_text(best, h), *best_norm = sc;
    ++*n_finished;
}

char *edge_complete_block(const ng_model *m, const ng_lora *adapter, const char *block, int max_tokens,
                          ng_error *err) {
    return edge_complete_search(m, adapter, block, max_tokens, EDGE_BEAMS, err);
}

char *edge_complete_search(const ng_model *m, const ng_lora *adapter, const char *block, int max_tokens, int beams,
                           ng_error *err) {
    if (!m->tok) {
        ng_error_set(err, "the edge model has no tokenizer");
        return NULL;
    }
    if (beams < 1 || beams > EDGE_MAX_BEAMS) {
        ng_error_set(err, "beam width %d is not within 1..%d", beams, EDGE_MAX_BEAMS);
        return NULL;
    }
    char *prompt = chat_alpaca_prompt(block, "");
    int n;
    int *ids = tok_encode(m->tok, prompt, strlen(prompt), &n);
    free(prompt);
    /* the prompt gets what room the context leaves, but not less than a short sentence (unless
     * fewer tokens were asked for) */
    int room = m->hp.n_ctx - n;
    if (room < max_tokens && room < EDGE_MIN_COMPLETION) {
        ng_error_set(err, "the context block (%d tokens) leaves %d of the edge model's context of %d for the prompt",
                     n, m->hp.n_ctx - n, m->hp.n_ctx);
        free(ids);
        return NULL;
    }
    if (max_tokens > room) max_tokens = room;
    if (max_tokens < 0) max_tokens = 0;
    int V = m->hp.n_vocab, W = beams;
    ng_state *work = ng_state_new(m, n + max_tokens, n < 256 ? (n > W ? n : W) : 256);
    work->lora = adapter;
    float *logits = xmalloc((size_t)W * V * sizeof *logits);
    ref_values v;
    ref_parse(block, &v);
    ref_list refs;
    ref_list_of(&v, &refs);
    /* live hypotheses (cur), the next step's (nxt), and the best finished one */
    hyp pool[2][EDGE_MAX_BEAMS], best = {0};
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < W; b++) {
            hyp *h = &pool[k][b];
            *h = (hyp){0};
            ng_buf_init(&h->text);
            h->gen = xmalloc(((size_t)max_tokens + 1) * sizeof *h->gen);
            h->in_ref = xmalloc((size_t)max_tokens + 1);
            if (!k) h->seq = ng_state_new(m, n + max_tokens, 0);
        }
    ng_buf_init(&best.text);
    best.gen = xmalloc(((size_t)max_tokens + 1) * sizeof *best.gen);
    best.in_ref = xmalloc((size_t)max_tokens + 1);
    double best_norm = -INFINITY;
    int n_finished = 0, ok = 1;
    hyp *cur = pool[0], *nxt = pool[1];
    cand *cands = xmalloc((size_t)W * W * sizeof *cands);
    int live = 1;
    if (ng_forward(m, work, ids, n, logits, 0, err) != NG_OK || ng_state_copy(m, cur[0].seq, work) != NG_OK) ok = 0;
    for (int step = 0; ok && live > 0 && step < max_tokens; step++) {
        int nc = 0;
        for (int b = 0; b < live; b++) {
            int got = continuations(m, &refs, &cur[b], b, logits + (size_t)b * V, W, cands + nc);
            if (!got) finish(&cur[b], 0, &best, &best_norm, &n_finished); /* nothing may follow */
            nc += got;
        }
        qsort(cands, (size_t)nc, sizeof *cands, cand_order);
        /* the best W continuations: those that end the prompt are finished (if among the best
         * W), the others the next step's hypotheses */
        int next_live = 0, src[EDGE_MAX_BEAMS];
        unsigned char claimed[EDGE_MAX_BEAMS] = {0};
        for (int i = 0; i < nc && next_live < W; i++) {
            const cand *c = &cands[i];
            hyp *h = &nxt[next_live];
            hyp_copy_text(h, &cur[c->from]);
            if (hyp_extend(m, h, c->t, c->ref, c->score)) {
                if (i < W) finish(h, c->t == tok_eos(m->tok), &best, &best_norm, &n_finished);
                continue;
            }
            /* the first continuation of a hypothesis takes its sequence, others a copy */
            h->seq = claimed[c->from] ? NULL : cur[c->from].seq;
            claimed[c->from] = 1;
            src[next_live++] = c->from;
        }
        ng_state *spare[EDGE_MAX_BEAMS];
        int n_spare = 0;
        for (int b = 0; b < W; b++)
            if (cur[b].seq && !(b < live && claimed[b])) spare[n_spare++] = cur[b].seq;
        for (int j = 0; j < next_live; j++)
            if (!nxt[j].seq) {
                nxt[j].seq = spare[--n_spare];
                ng_state_copy(m, nxt[j].seq, cur[src[j]].seq);
            }
        for (int j = next_live; j < W; j++) nxt[j].seq = spare[--n_spare]; /* W states in all */
        for (int b = 0; b < W; b++) cur[b].seq = NULL;
        hyp *t = cur;
        cur = nxt, nxt = t;
        live = next_live;
        if (!live || n_finished >= W || step + 1 >= max_tokens) break;
        int toks[EDGE_MAX_BEAMS], ones[EDGE_MAX_BEAMS];
        ng_state *seqs[EDGE_MAX_BEAMS];
        for (int b = 0; b < live; b++) toks[b] = cur[b].gen[cur[b].n - 1], ones[b] = 1, seqs[b] = cur[b].seq;
        if (ng_forward_multi(m, work, seqs, ones, live, toks, logits, err) != NG_OK) ok = 0;
    }
    /* at the length limit, the live hypotheses compete too */
    if (n_finished < W)
        for (int b = 0; b < live; b++) finish(&cur[b], 0, &best, &best_norm, &n_finished);
    char *out = NULL;
    if (ok) {
        ng_buf *b = &best.text;
        char *open = b->n ? strrchr(b->s, '{') : NULL; /* a reference cut off by the end is dropped */
        if (open && !strchr(open, '}')) *open = 0, b->n = (size_t)(open - b->s);
        while (b->n && (b->s[b->n - 1] == '\n' || b->s[b->n - 1] == ' ')) b->s[--b->n] = 0;
        out = fill_refs(&v, b->s ? b->s : "", NULL);
    }
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < W; b++) {
            hyp *h = &pool[k][b];
            ng_state_free(h->seq);
            free(h->text.s), free(h->gen), free(h->in_ref);
        }
    free(best.text.s), free(best.gen), free(best.in_ref);
    free(cands);
    free(logits);
    ng_state_free(work);
    free(ids);
    return out;
}
