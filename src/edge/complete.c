/* complete — context block, template baseline, and model-written comprehensive prompts. */
#include "edge/complete.h"

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
    if (ng_forward(m, s, ids, n, logits, 0, err) == NG_OK) {
        int eos = tok_eos(m->tok);
        for (int i = 0; i < max_tokens; i++) {
            int next = ng_argmax(logits, m->hp.n_vocab);
            if (next == eos) break;
            size_t len;
            const char *piece = tok_piece(m->tok, next, &len);
            ng_buf_printf(&b, "%.*s", (int)len, piece);
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
