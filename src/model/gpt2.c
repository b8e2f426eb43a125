/* gpt2 — the GPT-2 forward pass with a KV cache, and the per-sequence state.
 *
 * Per token (pre-LayerNorm transformer):
 *   x = wte[tok] + wpe[pos]
 *   per layer: x += W_o · attn(LN1(x)) ; x += W_down · gelu(W_up · LN2(x))
 *   logits = W_out · LN_f(x)
 * A call processes a chunk of up to max_batch tokens at once, so the weights are read once per
 * chunk (batched prefill). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "model/model.h"

ng_state *ng_state_new(const ng_model *m, int n_ctx, int max_batch) {
    const ng_hparams *hp = &m->hp;
    if (n_ctx <= 0 || n_ctx > hp->n_ctx) n_ctx = hp->n_ctx;
    if (max_batch <= 0) max_batch = 1;
    if (max_batch > n_ctx) max_batch = n_ctx;
    ng_state *s = xcalloc(1, sizeof *s);
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    size_t E = (size_t)hp->n_embd, L = (size_t)hp->n_layer, B = (size_t)max_batch;
    size_t kv_n = L * (size_t)n_ctx * E;
    s->kv = ng_aligned_alloc(2 * kv_n * sizeof(float));
    s->k = s->kv;
    s->v = s->kv + kv_n;
    int threads = ng_threads();
    s->n_score_rows = threads;
    /* one block for all activations; each piece rounded to 16 floats to keep 64-byte alignment */
#define PAD(n) (((n) + 15) & ~(size_t)15)
    size_t sizes[6] = {PAD(B * E), PAD(B * E), PAD(B * 3 * E), PAD(B * E), PAD(B * (size_t)hp->n_ff),
                       PAD((size_t)threads * (size_t)n_ctx)};
#undef PAD
    size_t total = 0;
    for (int i = 0; i < 6; i++) total += sizes[i];
    s->act = ng_aligned_alloc(total * sizeof(float));
    float *p = s->act;
    float **slots[6] = {&s->x, &s->xn, &s->qkv, &s->att_out, &s->ff, &s->scores};
    for (int i = 0; i < 6; i++) *slots[i] = p, p += sizes[i];
    s->pos = 0;
    return s;
}

void ng_state_free(ng_state *s) {
    if (!s) return;
    free(s->kv);
    free(s->act);
    free(s);
}

void ng_state_reset(ng_state *s) { s->pos = 0; }

static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    float mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (int i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

/* GPT-2's "gelu_new": the tanh approximation. */
static void gelu(float *x, size_t n) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
}

static float dot(const float *a, const float *b, int n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Causal self-attention of B query rows at positions pos..pos+B-1 over the cache of one layer.
 * q rows are strided (inside qkv), out is (B, E). */
static void attention(const ng_hparams *hp, ng_state *s, const float *kc, const float *vc, int pos, int B) {
    int E = hp->n_embd, H = hp->n_head, hd = E / H;
    float scale = 1.0f / sqrtf((float)hd);
    int threads = s->n_score_rows < ng_threads() ? s->n_score_rows : ng_threads();
    int work = B * H;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (work > 1 && (pos + B) * hd * work > 32768)
    for (int w = 0; w < work; w++) {
        int b = w / H, h = w % H, t_end = pos + b + 1;
        float *sc = s->scores + (size_t)omp_get_thread_num() * (size_t)s->n_ctx;
        const float *q = s->qkv + (size_t)b * 3 * E + (size_t)h * hd;
        float mx = -INFINITY;
        for (int t = 0; t < t_end; t++) {
            sc[t] = dot(q, kc + (size_t)t * E + (size_t)h * hd, hd) * scale;
            if (sc[t] > mx) mx = sc[t];
        }
        float sum = 0;
        for (int t = 0; t < t_end; t++) sum += (sc[t] = expf(sc[t] - mx));
        float inv = 1.0f / sum;
        float *o = s->att_out + (size_t)b * E + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof *o);
        for (int t = 0; t < t_end; t++) {
            const float *v = vc + (size_t)t * E + (size_t)h * hd;
            float p = sc[t] * inv;
#pragma omp simd
            for (int i = 0; i < hd; i++) o[i] += p * v[i];
        }
    }
}

static void embed_row(float *out, const ng_tensor *t, int64_t row) {
    ng_to_f32(out, (const char *)t->data + ng_row_size(t->type, t->ne[0]) * (size_t)row, t->type, t->ne[0]);
}

static void add(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* One chunk of B <= max_batch tokens; logits NULL skips the output head. */
static void forward_chunk(const ng_model *m, ng_state *s, const int *tokens, int B, float *logits, int all_logits) {
    const ng_hparams *hp = &m->hp;
    int E = hp->n_embd, F = hp->n_ff, pos = s->pos;
    size_t cache_stride = (size_t)s->n_ctx * E;
    float *tmp = s->att_out; /* (B, E) scratch once attention output is consumed */
    for (int b = 0; b < B; b++) {
        embed_row(s->x + (size_t)b * E, m->tok_embd, tokens[b]);
        embed_row(s->xn, m->pos_embd, pos + b);
        add(s->x + (size_t)b * E, s->xn, (size_t)E);
    }
    for (int l = 0; l < hp->n_layer; l++) {
        const ng_layer *L = &m->layers[l];
        float *kc = s->k + (size_t)l * cache_stride, *vc = s->v + (size_t)l * cache_stride;
        for (int b = 0; b < B; b++)
            layernorm(s->xn + (size_t)b * E, s->x + (size_t)b * E, L->ln1_w->data, L->ln1_b->data, E, hp->norm_eps);
        ng_matmul(s->qkv, s->xn, L->qkv_w->data, L->qkv_w->type, L->qkv_b->data, B, 3 * E, E);
        for (int b = 0; b < B; b++) {
            const float *row = s->qkv + (size_t)b * 3 * E;
            memcpy(kc + (size_t)(pos + b) * E, row + E, (size_t)E * sizeof(float));
            memcpy(vc + (size_t)(pos + b) * E, row + 2 * E, (size_t)E * sizeof(float));
        }
        attention(hp, s, kc, vc, pos, B);
        ng_matmul(s->xn, s->att_out, L->out_w->data, L->out_w->type, L->out_b->data, B, E, E);
        add(s->x, s->xn, (size_t)B * E);
        for (int b = 0; b < B; b++)
            layernorm(s->xn + (size_t)b * E, s->x + (size_t)b * E, L->ln2_w->data, L->ln2_b->data, E, hp->norm_eps);
        ng_matmul(s->ff, s->xn, L->up_w->data, L->up_w->type, L->up_b->data, B, F, E);
        gelu(s->ff, (size_t)B * F);
        ng_matmul(tmp, s->ff, L->down_w->data, L->down_w->type, L->down_b->data, B, E, F);
        add(s->x, tmp, (size_t)B * E);
    }
    if (!logits) {
        s->pos += B;
        return;
    }
    int first = all_logits ? 0 : B - 1, n_out = B - first;
    for (int b = first; b < B; b++)
        layernorm(s->xn + (size_t)(b - first) * E, s->x + (size_t)b * E, m->out_norm_w->data, m->out_norm_b->data, E,
                  hp->norm_eps);
    ng_matmul(logits, s->xn, m->output->data, m->output->type, NULL, n_out, hp->n_vocab, E);
    s->pos += B;
}

int ng_forward(const ng_model *m, ng_state *s, const int *tokens, int n, float *logits, int all_logits,
               ng_error *err) {
    if (n <= 0) return ng_error_set(err, "no tokens to process");
    if (n > s->n_ctx - s->pos)
        return ng_error_set(err, "context overflow: %d tokens in the cache + %d new exceed the context of %d", s->pos, n,
                            s->n_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return ng_error_set(err, "token id %d at position %d is out of range (vocabulary of %d)", tokens[i], i,
                                m->hp.n_vocab);
    for (int done = 0; done < n;) {
        int B = n - done < s->max_batch ? n - done : s->max_batch;
        int last = done + B == n;
        float *out = all_logits ? logits + (size_t)done * m->hp.n_vocab : logits;
        /* without all_logits, only the final chunk's last token needs the output head */
        forward_chunk(m, s, tokens + done, B, all_logits || last ? out : NULL, all_logits);
        done += B;
    }
    return NG_OK;
}
