/* train — the training graph: parameters (full or LoRA), activations, forward, loss,
 * backward (see train.h). The block math is model/forward.c's, kept with its activations:
 *   GPT-2: x += W_o attn(LN1(x)) ; x += W_down gelu(W_up LN2(x)) ; logits = W_out LN_f(x)
 *   LLaMA: x += W_o attn(rope(W_q n), rope(W_k n), W_v n), n = RMS1(x)
 *          x += W_down (silu(W_gate m) * W_up m), m = RMS2(x) ; logits = W_out RMS_f(x) */
#include "train/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "train/train_ops.h"

#define PAD(n) (((n) + 15) & ~(size_t)15)

static uint64_t mix64(uint64_t z) { /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int lora_parse_targets(const char *s) {
    static const char *names[] = {"q", "k", "v", "o", "gate", "up", "down"};
    int bits = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = 0;
        if (n == 3 && !strncmp(s, "all", 3)) bits |= LORA_ALL, found = 1;
        for (int i = 0; i < 7 && !found; i++)
            if (strlen(names[i]) == n && !strncmp(s, names[i], n)) bits |= 1 << i, found = 1;
        if (!found) return -1;
        s += n;
        if (*s == ',') s++;
    }
    return bits;
}

/* ---- parameters ------------------------------------------------------------------------------
 * bind_all runs twice: first with params NULL to count, then to place every entry. */

static train_param *param(train_model *tm, const char *name, int64_t ne0, int64_t ne1, int decay) {
    size_t n = (size_t)(ne0 * ne1);
    if (!tm->params) {
        tm->n_params += n;
        tm->n_tab++;
        return NULL;
    }
    train_param *p = &tm->tab[tm->n_tab++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ne0 = ne0, p->ne1 = ne1, p->decay = decay;
    p->data = tm->params + tm->n_params;
    p->grad = tm->grads + tm->n_params;
    tm->n_params += n;
    p->view = (ng_tensor){.name = p->name, .type = NG_F32, .n_dims = ne1 > 1 ? 2 : 1, .ne = {ne0, ne1, 1, 1},
                          .data = p->data, .nbytes = n * sizeof(float)};
    return p;
}

/* f32 master copy of a base tensor (any type ng_to_f32 converts). */
static train_param *param_copy(train_model *tm, const char *name, const ng_tensor *src) {
    train_param *p = param(tm, name, src->ne[0], src->ne[1], src->ne[1] > 1);
    if (p)
        for (int64_t r = 0; r < src->ne[1]; r++)
            ng_to_f32(p->data + r * src->ne[0], (const char *)src->data + ng_row_size(src->type, src->ne[0]) * (size_t)r,
                      src->type, src->ne[0]);
    return p;
}

static void bind_vec(train_model *tm, const float **dst, float **gdst, const char *name, const ng_tensor *t) {
    if (!t) return;
    if (tm->cfg.lora) {
        *dst = t->data; /* frozen; train_new checked it is f32 */
        return;
    }
    train_param *p = param_copy(tm, name, t);
    if (p) *dst = p->data, *gdst = p->grad;
}

static void bind_linear(train_model *tm, train_linear *L, int layer, const char *name, const ng_tensor *w,
                        const ng_tensor *b) {
    char nm[64];
    L->w = w;
    L->bias = b ? b->data : NULL;
    if (tm->cfg.lora) return;
    snprintf(nm, sizeof nm, "blk.%d.%s.weight", layer, name);
    train_param *p = param_copy(tm, nm, w);
    if (p) L->w = &p->view, L->gw = p->grad;
    if (!b) return;
    snprintf(nm, sizeof nm, "blk.%d.%s.bias", layer, name);
    p = param_copy(tm, nm, b);
    if (p) L->bias = p->data, L->gbias = p->grad;
}

/* An adapter named blk.N.<mod>.lora_a / lora_b on rows row0.. of L, if mod is a target. */
static void bind_lora(train_model *tm, train_linear *L, train_layer *ly, int layer, const char *mod, unsigned bit,
                      int row0, int rows, uint64_t *rng) {
    if (!tm->cfg.lora || !(tm->cfg.lora_targets & bit)) return;
    char nm[64];
    int r = tm->cfg.lora_rank, in = (int)L->w->ne[0];
    snprintf(nm, sizeof nm, "blk.%d.%s.lora_a", layer, mod);
    train_param *a = param(tm, nm, in, r, 1);
    snprintf(nm, sizeof nm, "blk.%d.%s.lora_b", layer, mod);
    train_param *b = param(tm, nm, r, rows, 1);
    if (!a) return;
    /* PEFT: kaiming_uniform_(A, a=sqrt(5)) is U(-1/sqrt(in), 1/sqrt(in)); B = 0 (params are
     * calloc'd), so training starts from the base model exactly */
    float bound = 1.0f / sqrtf((float)in);
    for (int64_t i = 0; i < (int64_t)in * r; i++)
        a->data[i] = bound * ((float)(mix64((*rng)++) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
    L->lora[L->n_lora++] = (train_lora){a, b, row0, rows, ly->n_lora++};
}

static void bind_all(train_model *tm) {
    const ng_model *m = tm->base;
    const ng_hparams *hp = &tm->hp;
    int E = hp->n_embd, KV = ng_kv_dim(hp), F = hp->n_ff, full = !tm->cfg.lora;
    uint64_t rng = mix64(tm->cfg.seed ^ 0x4c6f5241ull);
    memset(tm->layers, 0, (size_t)hp->n_layer * sizeof *tm->layers);
    tm->tok_embd = m->tok_embd, tm->pos_embd = m->pos_embd, tm->output = m->output;
    if (full) {
        train_param *p = param_copy(tm, "token_embd.weight", m->tok_embd);
        if (p) tm->tok_embd = &p->view, tm->g_tok = p->grad;
        if (m->pos_embd && (p = param_copy(tm, "position_embd.weight", m->pos_embd)))
            tm->pos_embd = &p->view, tm->g_pos = p->grad;
    }
    for (int l = 0; l < hp->n_layer; l++) {
        const ng_layer *B = &m->layers[l];
        train_layer *ly = &tm->layers[l];
        char nm[64];
#define VEC(dst, name, t)                                                                                             \
    snprintf(nm, sizeof nm, "blk.%d.%s", l, name);                                                                    \
    bind_vec(tm, &ly->dst, &ly->g_##dst, nm, t)
        VEC(norm1_w, "attn_norm.weight", B->attn_norm_w);
        VEC(norm1_b, "attn_norm.bias", B->attn_norm_b);
        if (hp->arch == NG_ARCH_GPT2) {
            bind_linear(tm, &ly->qkv, l, "attn_qkv", B->qkv_w, B->qkv_b);
            bind_lora(tm, &ly->qkv, ly, l, "q", LORA_Q, 0, E, &rng);
            bind_lora(tm, &ly->qkv, ly, l, "k", LORA_K, E, KV, &rng);
            bind_lora(tm, &ly->qkv, ly, l, "v", LORA_V, E + KV, KV, &rng);
        } else {
            bind_linear(tm, &ly->q, l, "attn_q", B->q_w, NULL);
            bind_linear(tm, &ly->k, l, "attn_k", B->k_w, NULL);
            bind_linear(tm, &ly->v, l, "attn_v", B->v_w, NULL);
            bind_lora(tm, &ly->q, ly, l, "q", LORA_Q, 0, E, &rng);
            bind_lora(tm, &ly->k, ly, l, "k", LORA_K, 0, KV, &rng);
            bind_lora(tm, &ly->v, ly, l, "v", LORA_V, 0, KV, &rng);
        }
        bind_linear(tm, &ly->o, l, "attn_output", B->out_w, B->out_b);
        bind_lora(tm, &ly->o, ly, l, "o", LORA_O, 0, E, &rng);
        VEC(norm2_w, "ffn_norm.weight", B->ffn_norm_w);
        VEC(norm2_b, "ffn_norm.bias", B->ffn_norm_b);
#undef VEC
        if (B->gate_w) {
            bind_linear(tm, &ly->gate, l, "ffn_gate", B->gate_w, NULL);
            bind_lora(tm, &ly->gate, ly, l, "gate", LORA_GATE, 0, F, &rng);
        }
        bind_linear(tm, &ly->up, l, "ffn_up", B->up_w, B->up_b);
        bind_lora(tm, &ly->up, ly, l, "up", LORA_UP, 0, F, &rng);
        bind_linear(tm, &ly->down, l, "ffn_down", B->down_w, B->down_b);
        bind_lora(tm, &ly->down, ly, l, "down", LORA_DOWN, 0, E, &rng);
    }
    if (!full && tm->cfg.n_tok_ids > 0) { /* trainable tokens: deltas start at zero (calloc'd) */
        tm->tok_delta = param(tm, "token_embd.delta", E, tm->cfg.n_tok_ids, 0);
        tm->out_delta = m->output == m->tok_embd ? tm->tok_delta : param(tm, "output.delta", E, tm->cfg.n_tok_ids, 0);
    }
    bind_vec(tm, &tm->normf_w, &tm->g_normf_w, "output_norm.weight", m->out_norm_w);
    bind_vec(tm, &tm->normf_b, &tm->g_normf_b, "output_norm.bias", m->out_norm_b);
    if (m->output == m->tok_embd) { /* tied: the head is the embedding, its gradient too */
        tm->output = tm->tok_embd, tm->g_output = tm->g_tok;
    } else if (full) {
        train_param *p = param_copy(tm, "output.weight", m->output);
        if (p) tm->output = &p->view, tm->g_output = p->grad;
    }
}

/* ---- activations ----------------------------------------------------------------------------- */

typedef struct {
    float *base;
    size_t used;
} carver;

static float *carve(carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += PAD(n);
    return p;
}

static int max_lora_per_layer(const train_model *tm) {
    int mx = 0;
    for (int l = 0; l < tm->hp.n_layer; l++)
        if (tm->layers[l].n_lora > mx) mx = tm->layers[l].n_lora;
    return mx;
}

/* Places every activation and scratch buffer in c (sizes only when c->base is NULL). */
static void layout(train_model *tm, carver *c) {
    const ng_hparams *hp = &tm->hp;
    size_t N = (size_t)tm->cfg.max_B * tm->cfg.max_T, T = (size_t)tm->cfg.max_T, E = (size_t)hp->n_embd;
    size_t KV = (size_t)ng_kv_dim(hp), F = (size_t)hp->n_ff, V = (size_t)hp->n_vocab, L = (size_t)hp->n_layer;
    size_t H = (size_t)hp->n_head, R = (size_t)(tm->cfg.lora ? tm->cfg.lora_rank : 0);
    size_t QKV = E + 2 * KV, D = QKV > F ? QKV : F, W = train_dx_scratch(N, V > D ? V : D);
    for (size_t l = 0; l <= L; l++) tm->res[l] = carve(c, N * E), tm->dres[l] = carve(c, N * E);
    size_t blocks = tm->cfg.recompute ? 1 : L;
    for (size_t l = 0; l < blocks; l++) {
        train_acts *a = &tm->acts[l];
        a->ln1 = carve(c, N * E), a->mu1 = carve(c, N), a->rs1 = carve(c, N);
        a->q = carve(c, N * E), a->k = carve(c, N * KV), a->v = carve(c, N * KV);
        a->att = carve(c, (size_t)tm->cfg.max_B * H * T * T);
        a->ao = carve(c, N * E), a->xmid = carve(c, N * E);
        a->ln2 = carve(c, N * E), a->mu2 = carve(c, N), a->rs2 = carve(c, N);
        a->f1 = carve(c, N * F), a->f2 = carve(c, N * F), a->fa = carve(c, N * F);
        a->lh = carve(c, (size_t)max_lora_per_layer(tm) * N * R);
    }
    for (size_t l = blocks; l < L; l++) tm->acts[l] = tm->acts[0];
    tm->lnf = carve(c, N * E), tm->muf = carve(c, N), tm->rsf = carve(c, N), tm->lnf_rows = carve(c, N * E);
    tm->logits = carve(c, N * V), tm->lse = carve(c, N);
    tm->s_qkv = carve(c, N * QKV), tm->s_wt = carve(c, W);
    tm->s_a = carve(c, N * D), tm->s_b = carve(c, N * D);
    tm->s_dmid = carve(c, N * E), tm->s_dln = carve(c, N * E);
    tm->s_dq = carve(c, N * E), tm->s_dk = carve(c, N * KV), tm->s_dv = carve(c, N * KV);
    tm->s_dqkv = carve(c, N * QKV), tm->s_dao = carve(c, N * E);
    tm->s_df1 = carve(c, N * F), tm->s_df2 = carve(c, N * F), tm->s_dfa = carve(c, N * F);
    tm->s_dlh = carve(c, N * (R ? R : 1)), tm->s_datt = carve(c, (size_t)tm->att_threads * T);
    tm->s_tok = carve(c, N * (size_t)(tm->tok_slot ? tm->cfg.n_tok_ids : 0));
}

train_model *train_new(const ng_model *base, const train_config *cfg, ng_error *err) {
    const ng_hparams *hp = &base->hp;
    if (cfg->max_B <= 0 || cfg->max_T <= 0 || cfg->max_T > hp->n_ctx) {
        ng_error_set(err, "train: batch of %d x %d tokens does not fit (context %d)", cfg->max_B, cfg->max_T, hp->n_ctx);
        return NULL;
    }
    if (cfg->lora && (cfg->lora_rank <= 0 || cfg->lora_dropout < 0 || cfg->lora_dropout >= 1 || !cfg->lora_targets)) {
        ng_error_set(err, "train: LoRA needs rank > 0, dropout in [0, 1) and at least one target");
        return NULL;
    }
    if (cfg->n_tok_ids > 0 && !cfg->lora) {
        ng_error_set(err, "train: trainable tokens are a LoRA option (full fine-tuning trains every row)");
        return NULL;
    }
    for (int i = 0; i < cfg->n_tok_ids; i++)
        if (cfg->tok_ids[i] < 0 || cfg->tok_ids[i] >= hp->n_vocab || (i && cfg->tok_ids[i] <= cfg->tok_ids[i - 1])) {
            ng_error_set(err, "train: trainable token %d (entry %d) is out of range or out of order", cfg->tok_ids[i], i);
            return NULL;
        }
    const ng_tensor *vecs[] = {base->out_norm_w, base->out_norm_b};
    for (int i = 0; i < 2; i++)
        if (vecs[i] && vecs[i]->type != NG_F32) {
            ng_error_set(err, "train: norm vector %s is %s, f32 expected", vecs[i]->name, ng_type_name(vecs[i]->type));
            return NULL;
        }
    for (int l = 0; l < hp->n_layer; l++) {
        const ng_layer *L = &base->layers[l];
        const ng_tensor *lv[] = {L->attn_norm_w, L->attn_norm_b, L->ffn_norm_w, L->ffn_norm_b,
                                 L->qkv_b,       L->out_b,       L->up_b,       L->down_b};
        for (int i = 0; i < 8; i++)
            if (lv[i] && lv[i]->type != NG_F32) {
                ng_error_set(err, "train: vector %s is %s, f32 expected", lv[i]->name, ng_type_name(lv[i]->type));
                return NULL;
            }
    }
    train_model *tm = xcalloc(1, sizeof *tm);
    tm->base = base;
    tm->hp = *hp;
    tm->cfg = *cfg;
    tm->lora_scale = cfg->lora ? cfg->lora_alpha / (float)cfg->lora_rank : 0;
    tm->layers = xcalloc((size_t)hp->n_layer, sizeof *tm->layers);
    bind_all(tm); /* count */
    tm->params = ng_aligned_alloc((tm->n_params ? tm->n_params : 1) * sizeof(float));
    tm->grads = ng_aligned_alloc((tm->n_params ? tm->n_params : 1) * sizeof(float));
    memset(tm->params, 0, tm->n_params * sizeof(float));
    memset(tm->grads, 0, tm->n_params * sizeof(float));
    tm->tab = xcalloc((size_t)tm->n_tab + 1, sizeof *tm->tab);
    tm->n_params = 0, tm->n_tab = 0;
    bind_all(tm); /* place */
    if (tm->tok_delta) {
        tm->tok_slot = xmalloc((size_t)hp->n_vocab * sizeof(int));
        for (int v = 0; v < hp->n_vocab; v++) tm->tok_slot[v] = -1;
        for (int i = 0; i < cfg->n_tok_ids; i++) tm->tok_slot[cfg->tok_ids[i]] = i;
    }

    size_t N = (size_t)cfg->max_B * cfg->max_T;
    tm->tokens = xmalloc(N * sizeof(int));
    tm->targets = xmalloc(N * sizeof(int));
    tm->mask = xmalloc(N * sizeof(float));
    tm->rows = xmalloc(N * sizeof(int));
    tm->res = xcalloc((size_t)hp->n_layer + 1, sizeof *tm->res);
    tm->dres = xcalloc((size_t)hp->n_layer + 1, sizeof *tm->dres);
    tm->acts = xcalloc((size_t)hp->n_layer, sizeof *tm->acts);
    tm->att_threads = ng_threads();
    carver c = {0};
    layout(tm, &c);
    tm->n_mem = c.used;
    tm->mem = ng_aligned_alloc(c.used * sizeof(float));
    memset(tm->mem, 0, c.used * sizeof(float));
    c = (carver){tm->mem, 0};
    layout(tm, &c);
    return tm;
}

void train_free(train_model *tm) {
    if (!tm) return;
    free(tm->params);
    free(tm->grads);
    free(tm->tab);
    free(tm->layers);
    free(tm->tok_slot);
    free(tm->tokens);
    free(tm->targets);
    free(tm->mask);
    free(tm->rows);
    free(tm->res);
    free(tm->dres);
    free(tm->acts);
    free(tm->mem);
    free(tm);
    train_ops_release();
}

train_param *train_find(train_model *tm, const char *name) {
    for (int i = 0; i < tm->n_tab; i++)
        if (!strcmp(tm->tab[i].name, name)) return &tm->tab[i];
    return NULL;
}

void train_zero_grad(train_model *tm) { memset(tm->grads, 0, tm->n_params * sizeof(float)); }

/* ---- linear layers with adapters -------------------------------------------------------------- */

/* The random stream of one adapter's dropout in the current forward pass. */
static uint64_t lora_stream(const train_model *tm, int layer, int slot) {
    return mix64(tm->cfg.seed ^ mix64(tm->n_forward * 0x9e3779b97f4a7c15ull + (uint64_t)layer * 1024 + (uint64_t)slot + 1));
}

static int lora_keep(uint64_t stream, size_t i, float p) {
    return (float)(mix64(stream + i) >> 40) / (float)(1 << 24) >= p;
}

/* The adapter's input: x, or x with dropout (into tm->s_a). */
static const float *lora_input(train_model *tm, const float *x, int N, int in, int layer, int slot) {
    float p = tm->cfg.lora_dropout;
    if (p <= 0) return x;
    uint64_t st = lora_stream(tm, layer, slot);
    float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < (size_t)N * in; i++) tm->s_a[i] = lora_keep(st, i, p) ? x[i] * keep_scale : 0.0f;
    return tm->s_a;
}

/* y (N, out) = x W^T + bias + scale * ((drop(x) A^T) B^T on each adapter's rows); keeps
 * drop(x) A^T in lh. The base matrix goes through ng_matmul in its own type. */
static void linear_fwd(train_model *tm, const train_linear *L, float *y, const float *x, int N, float *lh, int layer) {
    int out = (int)L->w->ne[1], in = (int)L->w->ne[0], r = tm->cfg.lora_rank;
    ng_matmul(y, x, L->w->data, L->w->type, L->bias, N, out, in);
    for (int i = 0; i < L->n_lora; i++) {
        const train_lora *ad = &L->lora[i];
        float *h = lh + (size_t)ad->slot * N * r;
        ng_matmul(h, lora_input(tm, x, N, in, layer, ad->slot), ad->a->data, NG_F32, NULL, N, r, in);
        ng_matmul(tm->s_b, h, ad->b->data, NG_F32, NULL, N, ad->rows, r);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < ad->rows; j++)
                y[(size_t)n * out + ad->row0 + j] += tm->lora_scale * tm->s_b[(size_t)n * ad->rows + j];
    }
}

/* From dy (N, out): parameter gradients (when trainable) and dx (N, in), overwritten or, with
 * acc, added to. */
static void linear_bwd(train_model *tm, const train_linear *L, float *dx, int acc, const float *dy, const float *x,
                       int N, const float *lh, int layer) {
    int out = (int)L->w->ne[1], in = (int)L->w->ne[0], r = tm->cfg.lora_rank;
    float s = tm->lora_scale, p = tm->cfg.lora_dropout;
    if (L->gw) train_matmul_dw(L->gw, dy, out, x, N, out, in, 1.0f);
    if (L->gbias) train_colsum(L->gbias, dy, out, N, out);
    train_matmul_dx(acc ? tm->s_b : dx, dy, L->w->data, L->w->type, N, out, in, tm->s_wt);
    if (acc)
        for (size_t i = 0; i < (size_t)N * in; i++) dx[i] += tm->s_b[i];
    for (int a = 0; a < L->n_lora; a++) {
        const train_lora *ad = &L->lora[a];
        const float *h = lh + (size_t)ad->slot * N * r, *dys = dy + ad->row0, *B = ad->b->data, *A = ad->a->data;
        float *dh = tm->s_dlh;
        /* gB += s dy^T h; dh = s dy B; gA += dh^T drop(x); dx += mask * (dh A) */
        train_matmul_dw(ad->b->grad, dys, out, h, N, ad->rows, r, s);
        for (int n = 0; n < N; n++)
            for (int j = 0; j < r; j++) {
                float acc_h = 0;
                for (int o = 0; o < ad->rows; o++) acc_h += dys[(size_t)n * out + o] * B[(size_t)o * r + j];
                dh[(size_t)n * r + j] = s * acc_h;
            }
        train_matmul_dw(ad->a->grad, dh, r, lora_input(tm, x, N, in, layer, ad->slot), N, r, in, 1.0f);
        uint64_t st = lora_stream(tm, layer, ad->slot);
        float keep_scale = 1.0f / (1.0f - p);
        for (int n = 0; n < N; n++) {
            float *d = tm->s_b;
            memset(d, 0, (size_t)in * sizeof *d);
            for (int j = 0; j < r; j++) {
                float g = dh[(size_t)n * r + j];
                const float *ar = A + (size_t)j * in;
                for (int i = 0; i < in; i++) d[i] += g * ar[i];
            }
            float *dxr = dx + (size_t)n * in;
            if (p <= 0)
                for (int i = 0; i < in; i++) dxr[i] += d[i];
            else
                for (int i = 0; i < in; i++)
                    if (lora_keep(st, (size_t)n * in + i, p)) dxr[i] += d[i] * keep_scale;
        }
    }
}

/* ---- forward ---------------------------------------------------------------------------------- */

static void norm_fwd(const train_model *tm, float *y, float *mu, float *rs, const float *x, const float *w,
                     const float *b, int N) {
    if (tm->hp.arch == NG_ARCH_GPT2) train_layernorm_fwd(y, mu, rs, x, w, b, N, tm->hp.n_embd, tm->hp.norm_eps);
    else train_rmsnorm_fwd(y, rs, x, w, N, tm->hp.n_embd, tm->hp.norm_eps);
}

static void norm_bwd(const train_model *tm, float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, const float *mu, const float *rs, int N) {
    if (tm->hp.arch == NG_ARCH_GPT2) train_layernorm_bwd(dx, dw, db, dy, x, w, mu, rs, N, tm->hp.n_embd);
    else train_rmsnorm_bwd(dx, dw, dy, x, w, rs, N, tm->hp.n_embd);
}

/* res[l] -> res[l + 1], filling acts[l]. */
static void block_fwd(train_model *tm, int l) {
    const ng_hparams *hp = &tm->hp;
    const train_layer *ly = &tm->layers[l];
    train_acts *a = &tm->acts[l];
    int B = tm->B, T = tm->T, N = B * T, E = hp->n_embd, KV = ng_kv_dim(hp), hd = ng_head_dim(hp);
    size_t NE = (size_t)N * E, NF = (size_t)N * hp->n_ff;
    const float *x = tm->res[l];
    float *out = tm->res[l + 1];
    norm_fwd(tm, a->ln1, a->mu1, a->rs1, x, ly->norm1_w, ly->norm1_b, N);
    if (hp->arch == NG_ARCH_GPT2) {
        size_t st = (size_t)E + 2 * KV;
        linear_fwd(tm, &ly->qkv, tm->s_qkv, a->ln1, N, a->lh, l);
        for (int n = 0; n < N; n++) {
            const float *row = tm->s_qkv + (size_t)n * st;
            memcpy(a->q + (size_t)n * E, row, (size_t)E * sizeof(float));
            memcpy(a->k + (size_t)n * KV, row + E, (size_t)KV * sizeof(float));
            memcpy(a->v + (size_t)n * KV, row + E + KV, (size_t)KV * sizeof(float));
        }
    } else {
        linear_fwd(tm, &ly->q, a->q, a->ln1, N, a->lh, l);
        linear_fwd(tm, &ly->k, a->k, a->ln1, N, a->lh, l);
        linear_fwd(tm, &ly->v, a->v, a->ln1, N, a->lh, l);
        train_rope(a->q, N, T, hp->n_head, hd, hp->rope_theta, hp->rope_scale, 1);
        train_rope(a->k, N, T, hp->n_head_kv, hd, hp->rope_theta, hp->rope_scale, 1);
    }
    train_attention_fwd(a->ao, a->att, a->q, a->k, a->v, B, T, hp->n_head, hp->n_head_kv, hd);
    linear_fwd(tm, &ly->o, a->xmid, a->ao, N, a->lh, l);
    for (size_t i = 0; i < NE; i++) a->xmid[i] += x[i];
    norm_fwd(tm, a->ln2, a->mu2, a->rs2, a->xmid, ly->norm2_w, ly->norm2_b, N);
    if (hp->arch == NG_ARCH_GPT2) {
        linear_fwd(tm, &ly->up, a->f1, a->ln2, N, a->lh, l);
        train_gelu_fwd(a->fa, a->f1, NF);
    } else {
        linear_fwd(tm, &ly->gate, a->f1, a->ln2, N, a->lh, l);
        linear_fwd(tm, &ly->up, a->f2, a->ln2, N, a->lh, l);
        train_swiglu_fwd(a->fa, a->f1, a->f2, NF);
    }
    linear_fwd(tm, &ly->down, out, a->fa, N, a->lh, l);
    for (size_t i = 0; i < NE; i++) out[i] += a->xmid[i];
}

static void embed_row(float *out, const ng_tensor *t, int row) {
    ng_to_f32(out, (const char *)t->data + ng_row_size(t->type, t->ne[0]) * (size_t)row, t->type, t->ne[0]);
}

float train_forward(train_model *tm, const train_batch *b, ng_error *err) {
    const ng_hparams *hp = &tm->hp;
    if (b->B <= 0 || b->T <= 0 || b->B > tm->cfg.max_B || b->T > tm->cfg.max_T) {
        ng_error_set(err, "train: batch %d x %d exceeds the configured %d x %d", b->B, b->T, tm->cfg.max_B,
                     tm->cfg.max_T);
        return NAN;
    }
    int N = b->B * b->T, E = hp->n_embd, V = hp->n_vocab;
    for (int i = 0; i < N; i++) {
        float m = b->mask ? b->mask[i] : 1.0f;
        if (b->tokens[i] < 0 || b->tokens[i] >= V || (m != 0 && (b->targets[i] < 0 || b->targets[i] >= V)) ||
            !(m >= 0)) {
            ng_error_set(err, "train: token %d / target %d / mask %g at batch index %d is invalid (vocabulary of %d)",
                         b->tokens[i], b->targets[i], (double)m, i, V);
            return NAN;
        }
    }
    /* keep positions 0 .. T-1 of each row, T = 1 + the last counted position of any row */
    int T = b->mask ? 1 : b->T;
    for (int r = 0; r < b->B && T < b->T; r++)
        for (int t = b->T - 1; t >= T; t--)
            if (b->mask[(size_t)r * b->T + t] != 0) {
                T = t + 1;
                break;
            }
    tm->B = b->B, tm->T = T, N = b->B * T;
    tm->n_rows = 0;
    for (int r = 0; r < b->B; r++) {
        size_t src = (size_t)r * b->T, dst = (size_t)r * T;
        memcpy(tm->tokens + dst, b->tokens + src, (size_t)T * sizeof(int));
        memcpy(tm->targets + dst, b->targets + src, (size_t)T * sizeof(int));
        for (int t = 0; t < T; t++) {
            tm->mask[dst + t] = b->mask ? b->mask[src + t] : 1.0f;
            if (tm->mask[dst + t] != 0) tm->rows[tm->n_rows++] = (int)(dst + t);
        }
    }
    tm->n_forward++;

    float *x = tm->res[0];
    for (int n = 0; n < N; n++) {
        embed_row(x + (size_t)n * E, tm->tok_embd, tm->tokens[n]);
        int slot = tm->tok_slot ? tm->tok_slot[tm->tokens[n]] : -1;
        if (slot >= 0)
            for (int i = 0; i < E; i++) x[(size_t)n * E + i] += tm->tok_delta->data[(size_t)slot * E + i];
        if (tm->pos_embd) {
            embed_row(tm->s_a, tm->pos_embd, n % T);
            for (int i = 0; i < E; i++) x[(size_t)n * E + i] += tm->s_a[i];
        }
    }
    for (int l = 0; l < hp->n_layer; l++) block_fwd(tm, l);
    norm_fwd(tm, tm->lnf, tm->muf, tm->rsf, tm->res[hp->n_layer], tm->normf_w, tm->normf_b, N);
    int R = tm->n_rows;
    for (int i = 0; i < R; i++)
        memcpy(tm->lnf_rows + (size_t)i * E, tm->lnf + (size_t)tm->rows[i] * E, (size_t)E * sizeof(float));
    if (R) ng_matmul(tm->logits, tm->lnf_rows, tm->output->data, tm->output->type, NULL, R, V, E);
    if (R && tm->out_delta) { /* the trained tokens' head rows: logit += h . delta */
        int K = tm->cfg.n_tok_ids;
        ng_matmul(tm->s_tok, tm->lnf_rows, tm->out_delta->data, NG_F32, NULL, R, K, E);
        for (int i = 0; i < R; i++)
            for (int j = 0; j < K; j++) tm->logits[(size_t)i * V + tm->cfg.tok_ids[j]] += tm->s_tok[(size_t)i * K + j];
    }

    double loss = 0, count = 0;
    for (int i = 0; i < R; i++) {
        const float *row = tm->logits + (size_t)i * V;
        float mx = ng_act_max(row, (size_t)V), m = tm->mask[tm->rows[i]];
        /* vector exponentials (core/vmath.h's ng_exp_sum): with libm's per logit, on one thread,
         * the loss over GPT-2's 50257 logits took a quarter to a third of a LoRA step of the
         * 6-layer edge model */
        tm->lse[i] = mx + (float)log(ng_act_exp_sum(NULL, row, (size_t)V, mx, 1.0f));
        loss += (double)m * ((double)tm->lse[i] - (double)row[tm->targets[tm->rows[i]]]);
        count += m;
    }
    tm->n_counted = (float)count;
    tm->loss = count > 0 ? (float)(loss / count) : 0.0f;
    return tm->loss;
}

/* ---- backward --------------------------------------------------------------------------------- */

/* dres[l + 1] -> dres[l], adding parameter gradients of block l. */
static void block_bwd(train_model *tm, int l) {
    const ng_hparams *hp = &tm->hp;
    const train_layer *ly = &tm->layers[l];
    const train_acts *a = &tm->acts[l];
    int B = tm->B, T = tm->T, N = B * T, E = hp->n_embd, KV = ng_kv_dim(hp), hd = ng_head_dim(hp);
    size_t NE = (size_t)N * E, NF = (size_t)N * hp->n_ff;
    const float *dout = tm->dres[l + 1];
    float *dx = tm->dres[l], *dmid = tm->s_dmid;
    /* FFN: out = xmid + down(act(up(ln2))) */
    memcpy(dmid, dout, NE * sizeof(float));
    linear_bwd(tm, &ly->down, tm->s_dfa, 0, dout, a->fa, N, a->lh, l);
    if (hp->arch == NG_ARCH_GPT2) {
        train_gelu_bwd(tm->s_df1, tm->s_dfa, a->f1, NF);
        linear_bwd(tm, &ly->up, tm->s_dln, 0, tm->s_df1, a->ln2, N, a->lh, l);
    } else {
        train_swiglu_bwd(tm->s_df1, tm->s_df2, tm->s_dfa, a->f1, a->f2, NF);
        linear_bwd(tm, &ly->gate, tm->s_dln, 0, tm->s_df1, a->ln2, N, a->lh, l);
        linear_bwd(tm, &ly->up, tm->s_dln, 1, tm->s_df2, a->ln2, N, a->lh, l);
    }
    norm_bwd(tm, dmid, ly->g_norm2_w, ly->g_norm2_b, tm->s_dln, a->xmid, ly->norm2_w, a->mu2, a->rs2, N);
    /* attention: xmid = x + o(attn(q, k, v of ln1)) */
    memcpy(dx, dmid, NE * sizeof(float));
    linear_bwd(tm, &ly->o, tm->s_dao, 0, dmid, a->ao, N, a->lh, l);
    train_attention_bwd(tm->s_dq, tm->s_dk, tm->s_dv, tm->s_dao, a->q, a->k, a->v, a->att, B, T, hp->n_head,
                        hp->n_head_kv, hd, tm->s_datt, tm->att_threads);
    if (hp->arch == NG_ARCH_GPT2) {
        size_t st = (size_t)E + 2 * KV;
        for (int n = 0; n < N; n++) {
            float *row = tm->s_dqkv + (size_t)n * st;
            memcpy(row, tm->s_dq + (size_t)n * E, (size_t)E * sizeof(float));
            memcpy(row + E, tm->s_dk + (size_t)n * KV, (size_t)KV * sizeof(float));
            memcpy(row + E + KV, tm->s_dv + (size_t)n * KV, (size_t)KV * sizeof(float));
        }
        linear_bwd(tm, &ly->qkv, tm->s_dln, 0, tm->s_dqkv, a->ln1, N, a->lh, l);
    } else {
        train_rope(tm->s_dq, N, T, hp->n_head, hd, hp->rope_theta, hp->rope_scale, -1);
        train_rope(tm->s_dk, N, T, hp->n_head_kv, hd, hp->rope_theta, hp->rope_scale, -1);
        linear_bwd(tm, &ly->q, tm->s_dln, 0, tm->s_dq, a->ln1, N, a->lh, l);
        linear_bwd(tm, &ly->k, tm->s_dln, 1, tm->s_dk, a->ln1, N, a->lh, l);
        linear_bwd(tm, &ly->v, tm->s_dln, 1, tm->s_dv, a->ln1, N, a->lh, l);
    }
    norm_bwd(tm, dx, ly->g_norm1_w, ly->g_norm1_b, tm->s_dln, tm->res[l], ly->norm1_w, a->mu1, a->rs1, N);
}

void train_backward(train_model *tm, float scale) {
    const ng_hparams *hp = &tm->hp;
    int N = tm->B * tm->T, E = hp->n_embd, V = hp->n_vocab, L = hp->n_layer;
    /* dlogits = m * scale / count * (softmax - onehot(target)), in place of the logits */
    float c = tm->n_counted > 0 ? scale / tm->n_counted : 0.0f;
    int R = tm->n_rows;
    for (int i = 0; i < R; i++) {
        float *row = tm->logits + (size_t)i * V, w = tm->mask[tm->rows[i]] * c;
        ng_act_exp_sum(row, row, (size_t)V, tm->lse[i], 1.0f); /* e^(row - lse), in place */
#pragma omp simd
        for (int v = 0; v < V; v++) row[v] *= w;
        row[tm->targets[tm->rows[i]]] -= w;
    }
    memset(tm->s_dln, 0, (size_t)N * E * sizeof(float));
    if (R) {
        if (tm->g_output) train_matmul_dw(tm->g_output, tm->logits, V, tm->lnf_rows, R, V, E, 1.0f);
        train_matmul_dx(tm->s_dmid, tm->logits, tm->output->data, tm->output->type, R, V, E, tm->s_wt);
        if (tm->out_delta) { /* the trained head rows: their dlogits columns */
            int K = tm->cfg.n_tok_ids;
            for (int i = 0; i < R; i++)
                for (int j = 0; j < K; j++) tm->s_tok[(size_t)i * K + j] = tm->logits[(size_t)i * V + tm->cfg.tok_ids[j]];
            train_matmul_dw(tm->out_delta->grad, tm->s_tok, K, tm->lnf_rows, R, K, E, 1.0f);
            train_matmul_dx(tm->s_dq, tm->s_tok, tm->out_delta->data, NG_F32, R, K, E, tm->s_wt);
            for (size_t i = 0; i < (size_t)R * E; i++) tm->s_dmid[i] += tm->s_dq[i];
        }
        for (int i = 0; i < R; i++)
            memcpy(tm->s_dln + (size_t)tm->rows[i] * E, tm->s_dmid + (size_t)i * E, (size_t)E * sizeof(float));
    }
    memset(tm->dres[L], 0, (size_t)N * E * sizeof(float));
    norm_bwd(tm, tm->dres[L], tm->g_normf_w, tm->g_normf_b, tm->s_dln, tm->res[L], tm->normf_w, tm->muf, tm->rsf, N);
    for (int l = L - 1; l >= 0; l--) {
        if (tm->cfg.recompute) block_fwd(tm, l);
        block_bwd(tm, l);
    }
    for (int n = 0; n < N; n++) {
        const float *d = tm->dres[0] + (size_t)n * E;
        if (tm->g_tok) {
            float *g = tm->g_tok + (size_t)tm->tokens[n] * E;
            for (int i = 0; i < E; i++) g[i] += d[i];
        }
        int slot = tm->tok_slot ? tm->tok_slot[tm->tokens[n]] : -1;
        if (slot >= 0) {
            float *g = tm->tok_delta->grad + (size_t)slot * E;
            for (int i = 0; i < E; i++) g[i] += d[i];
        }
        if (tm->g_pos) {
            float *g = tm->g_pos + (size_t)(n % tm->T) * E;
            for (int i = 0; i < E; i++) g[i] += d[i];
        }
    }
}
