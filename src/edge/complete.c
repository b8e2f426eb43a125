/* complete — context block, template baseline, and model-written comprehensive prompts. */
#include "edge/complete.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "model/lora.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "tokenizer/chat.h"

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->n) {
            b->n += (size_t)n;
            return;
        }
        b->s = xrealloc(b->s, b->cap = 2 * b->cap + (size_t)(n > 0 ? n : 0));
    }
}

static sbuf sb_new(void) {
    sbuf b = {xmalloc(512), 0, 512};
    b.s[0] = 0;
    return b;
}

/* "Starbucks 350 m" / "Starbucks 1.2 km" */
static void sb_distance(sbuf *b, int m) {
    if (m < 1000) sb_printf(b, "%d m", m);
    else sb_printf(b, "%.1f km", m / 1000.0);
}

char *edge_context_block(const edge_context *c, const char *concise) {
    sbuf b = sb_new();
    sb_printf(&b, "[context]\nplace: %s", c->place);
    if (c->cell[0]) sb_printf(&b, " (cell %s)", c->cell);
    sb_printf(&b, "\ntime: %s local\n", c->local_time);
    /* nearby points of interest grouped by category, in the order given (nearest first) */
    for (int i = 0; i < c->n_poi; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(c->poi[j].category, c->poi[i].category) != 0;
        if (!first) continue;
        sb_printf(&b, "nearby %s: ", c->poi[i].category);
        for (int j = i, k = 0; j < c->n_poi; j++) {
            if (strcmp(c->poi[j].category, c->poi[i].category)) continue;
            sb_printf(&b, "%s%s ", k++ ? ", " : "", c->poi[j].name);
            sb_distance(&b, c->poi[j].dist_m);
        }
        sb_printf(&b, "\n");
    }
    if (c->prefs[0] || c->language[0] || c->n_recent) {
        sb_printf(&b, "user:");
        const char *sep = " ";
        if (c->prefs[0]) sb_printf(&b, "%s%s", sep, c->prefs), sep = "; ";
        if (c->language[0]) sb_printf(&b, "%slanguage %s", sep, c->language), sep = "; ";
        for (int i = 0; i < c->n_recent; i++)
            sb_printf(&b, "%s%s%s (%s) %s", i ? ", " : sep, i ? "" : "recent: ", c->recent[i].name, c->recent[i].category,
                      c->recent_when[i]);
        sb_printf(&b, "\n");
    }
    sb_printf(&b, "[request]\n%s", concise);
    return b.s;
}

char *edge_template_fill(const edge_context *c, const char *concise) {
    sbuf b = sb_new();
    sb_printf(&b, "%s. I am in %s and it is %s local time.", concise, c->place, c->local_time);
    for (int i = 0; i < c->n_poi; i++) {
        int first = 1;
        for (int j = 0; j < i; j++) first &= strcmp(c->poi[j].category, c->poi[i].category) != 0;
        if (!first) continue;
        sb_printf(&b, " Nearby %s options:", c->poi[i].category);
        for (int j = i, k = 0; j < c->n_poi; j++) {
            if (strcmp(c->poi[j].category, c->poi[i].category)) continue;
            sb_printf(&b, "%s %s (", k++ ? "," : "", c->poi[j].name);
            sb_distance(&b, c->poi[j].dist_m);
            sb_printf(&b, ")");
        }
        sb_printf(&b, ".");
    }
    if (c->prefs[0]) sb_printf(&b, " My preferences: %s.", c->prefs);
    return b.s;
}

char *edge_complete(const ng_model *m, const ng_lora *adapter, const edge_context *c, const char *concise,
                    int max_tokens, ng_error *err) {
    if (!m->tok) {
        ng_error_set(err, "the edge model has no tokenizer");
        return NULL;
    }
    char *block = edge_context_block(c, concise), *prompt = chat_alpaca_prompt(block, "");
    free(block);
    int n;
    int *ids = tok_encode(m->tok, prompt, strlen(prompt), &n);
    free(prompt);
    char *out = NULL;
    if (n + max_tokens > m->hp.n_ctx) {
        ng_error_set(err, "the context block (%d tokens) + %d exceed the edge model's context of %d", n, max_tokens,
                     m->hp.n_ctx);
        free(ids);
        return NULL;
    }
    ng_state *s = ng_state_new(m, n + max_tokens, n < 256 ? n : 256);
    s->lora = adapter;
    float *logits = xmalloc((size_t)m->hp.n_vocab * sizeof *logits);
    sbuf b = sb_new();
    if (ng_forward(m, s, ids, n, logits, 0, err) == NG_OK) {
        int eos = tok_eos(m->tok);
        for (int i = 0; i < max_tokens; i++) {
            int next = ng_argmax(logits, m->hp.n_vocab);
            if (next == eos) break;
            size_t len;
            const char *piece = tok_piece(m->tok, next, &len);
            sb_printf(&b, "%.*s", (int)len, piece);
            if (b.n >= 2 && !strcmp(b.s + b.n - 2, "\n\n")) break; /* a blank line ends the answer */
            if (i + 1 < max_tokens && ng_forward(m, s, &next, 1, logits, 0, err) != NG_OK) break;
        }
        while (b.n && (b.s[b.n - 1] == '\n' || b.s[b.n - 1] == ' ')) b.s[--b.n] = 0;
        out = b.s;
    } else {
        free(b.s);
    }
    free(logits);
    ng_state_free(s);
    free(ids);
    return out;
}
