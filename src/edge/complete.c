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
    ref_val place, day, time, language, prefs;
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

/* The lines of the block up to "[request]", as edge_context_block writes them. */
static void ref_parse(const char *block, ref_values *v) {
    memset(v, 0, sizeof *v);
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
                 {"prefs", offsetof(ref_values, prefs)}};
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
                    int max_tokens, ng_error *err) {
    char *block = edge_context_block(c, concise);
    char *out = edge_complete_block(m, adapter, block, max_tokens, err);
    free(block);
    return out;
}

char *edge_complete_block(const ng_model *m, const ng_lora *adapter, const char *block, int max_tokens,
                          ng_error *err) {
    if (!m->tok) {
        ng_error_set(err, "the edge model has no tokenizer");
        return NULL;
    }
    char *prompt = chat_alpaca_prompt(block, "");
    int n;
    int *ids = tok_encode(m->tok, prompt, strlen(prompt), &n);
    free(prompt);
    char *out = NULL;
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
    ng_state *s = ng_state_new(m, n + max_tokens, n < 256 ? n : 256);
    s->lora = adapter;
    float *logits = xmalloc((size_t)m->hp.n_vocab * sizeof *logits);
    ng_buf b;
    ng_buf_init(&b);
    ref_values v;
    ref_parse(block, &v);
    ref_list refs;
    ref_list_of(&v, &refs);
    int *gen = xmalloc((size_t)max_tokens * sizeof *gen);
    unsigned char *in_ref = xmalloc((size_t)max_tokens);
    if (ng_forward(m, s, ids, n, logits, 0, err) == NG_OK) {
        int eos = tok_eos(m->tok);
        for (int i = 0; i < max_tokens; i++) {
            /* greedy among the tokens that keep every reference fillable and repeat no phrase */
            const char *open = b.n ? strrchr(b.s, '{') : NULL;
            if (open && strchr(open, '}')) open = NULL;
            int next = -1, ref = 0;
            size_t len = 0;
            const char *piece = NULL;
            for (int tries = 0; tries < MAX_REJECT && next < 0; tries++) {
                int t = ng_argmax(logits, m->hp.n_vocab);
                if (t == eos) {
                    if (!open && all_stated(&refs, b.s, b.n)) next = t;
                } else {
                    piece = tok_piece(m->tok, t, &len);
                    char cand[256]; /* a reference's beginning and one piece */
                    snprintf(cand, sizeof cand, "%s%.*s", open ? open : "", len < 200 ? (int)len : 200, piece);
                    ref = open || memchr(piece, '{', len); /* a "}" with no reference open is text */
                    size_t nd = open ? (size_t)(open - b.s) : b.n;
                    if (refs_fill(&refs, cand, b.s, nd) && (ref || !repeats(gen, in_ref, i, t)) &&
                        (!memchr(piece, '\n', len) || all_stated(&refs, b.s, b.n)))
                        next = t;
                }
                if (next < 0) logits[t] = -INFINITY;
            }
            if (next < 0 || next == eos) break;
            gen[i] = next, in_ref[i] = (unsigned char)ref;
            ng_buf_printf(&b, "%.*s", (int)len, piece);
            if (b.n >= 2 && !strcmp(b.s + b.n - 2, "\n\n")) break; /* a blank line ends the answer */
            if (i + 1 < max_tokens && ng_forward(m, s, &next, 1, logits, 0, err) != NG_OK) break;
        }
        char *open = b.n ? strrchr(b.s, '{') : NULL; /* a reference cut off by the end is dropped */
        if (open && !strchr(open, '}')) *open = 0, b.n = (size_t)(open - b.s);
        while (b.n && (b.s[b.n - 1] == '\n' || b.s[b.n - 1] == ' ')) b.s[--b.n] = 0;
        out = fill_refs(&v, b.s, NULL);
    }
    free(b.s);
    free(gen), free(in_ref);
    free(logits);
    ng_state_free(s);
    free(ids);
    return out;
}
