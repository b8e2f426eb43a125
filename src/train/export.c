/* export — the trained weights as an ordinary ng_model (f32), for inference, saving as GGUF
 * (ng_model_save_gguf) or merging LoRA into the base, and training checkpoints (layout in
 * train.h). */
#include <stdlib.h>
#include <string.h>

#include "train/train.h"

/* An f32 tensor owned by m (freed by ng_model_free). */
static ng_tensor *own(ng_model *m, const char *name, int64_t ne0, int64_t ne1) {
    return ng_model_own_tensor(m, name, NG_F32, ne0, ne1);
}

static const ng_tensor *copy_tensor(ng_model *m, const char *name, const ng_tensor *src) {
    ng_tensor *t = own(m, name, src->ne[0], src->ne[1]);
    for (int64_t r = 0; r < src->ne[1]; r++)
        ng_to_f32((float *)t->data + r * src->ne[0], (const char *)src->data + ng_row_size(src->type, src->ne[0]) * (size_t)r,
                  src->type, src->ne[0]);
    return t;
}

static const ng_tensor *copy_vec(ng_model *m, const char *name, const float *src, int64_t n) {
    if (!src) return NULL;
    ng_tensor *t = own(m, name, n, 1);
    memcpy(t->data, src, (size_t)n * sizeof(float));
    return t;
}

/* W + scale * B A on each adapter's rows. */
static void export_linear(const train_model *tm, ng_model *m, const ng_tensor **w, const ng_tensor **b, int layer,
                          const char *name, const train_linear *L) {
    char nm[64];
    if (!L->w) return;
    snprintf(nm, sizeof nm, "blk.%d.%s.weight", layer, name);
    const ng_tensor *t = copy_tensor(m, nm, L->w);
    float *W = t->data;
    int in = (int)L->w->ne[0], r = tm->cfg.lora_rank;
    for (int a = 0; a < L->n_lora; a++) {
        const train_lora *ad = &L->lora[a];
        for (int j = 0; j < ad->rows; j++)
            for (int k = 0; k < r; k++) {
                float s = tm->lora_scale * ad->b->data[(size_t)j * r + k];
                const float *ar = ad->a->data + (size_t)k * in;
                float *wr = W + (size_t)(ad->row0 + j) * in;
                for (int i = 0; i < in; i++) wr[i] += s * ar[i];
            }
    }
    *w = t;
    snprintf(nm, sizeof nm, "blk.%d.%s.bias", layer, name);
    *b = copy_vec(m, nm, L->bias, L->w->ne[1]);
}

/* The trainable tokens' rows of t (an f32 copy) += their deltas. */
static void add_token_rows(const train_model *tm, ng_tensor *t, const train_param *delta) {
    if (!delta) return;
    int64_t E = t->ne[0];
    for (int i = 0; i < tm->cfg.n_tok_ids; i++) {
        float *row = (float *)t->data + (size_t)tm->cfg.tok_ids[i] * (size_t)E;
        for (int64_t k = 0; k < E; k++) row[k] += delta->data[(size_t)i * (size_t)E + k];
    }
}

ng_model *train_export_model(const train_model *tm) {
    const ng_hparams *hp = &tm->hp;
    int E = hp->n_embd;
    ng_model *m = xcalloc(1, sizeof *m);
    m->hp = *hp;
    m->name = xstrdup(tm->base->name ? tm->base->name : "trained");
    m->path = xstrdup("(trained)");
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    m->tok_embd = copy_tensor(m, "token_embd.weight", tm->tok_embd);
    if (tm->pos_embd) m->pos_embd = copy_tensor(m, "position_embd.weight", tm->pos_embd);
    for (int l = 0; l < hp->n_layer; l++) {
        const train_layer *ly = &tm->layers[l];
        ng_layer *d = &m->layers[l];
        const ng_tensor *none = NULL;
        char nm[64];
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        d->attn_norm_w = copy_vec(m, nm, ly->norm1_w, E);
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.bias", l);
        d->attn_norm_b = copy_vec(m, nm, ly->norm1_b, E);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        d->ffn_norm_w = copy_vec(m, nm, ly->norm2_w, E);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.bias", l);
        d->ffn_norm_b = copy_vec(m, nm, ly->norm2_b, E);
        export_linear(tm, m, &d->qkv_w, &d->qkv_b, l, "attn_qkv", &ly->qkv);
        export_linear(tm, m, &d->q_w, &none, l, "attn_q", &ly->q);
        export_linear(tm, m, &d->k_w, &none, l, "attn_k", &ly->k);
        export_linear(tm, m, &d->v_w, &none, l, "attn_v", &ly->v);
        export_linear(tm, m, &d->out_w, &d->out_b, l, "attn_output", &ly->o);
        export_linear(tm, m, &d->gate_w, &none, l, "ffn_gate", &ly->gate);
        export_linear(tm, m, &d->up_w, &d->up_b, l, "ffn_up", &ly->up);
        export_linear(tm, m, &d->down_w, &d->down_b, l, "ffn_down", &ly->down);
    }
    m->out_norm_w = copy_vec(m, "output_norm.weight", tm->normf_w, E);
    m->out_norm_b = copy_vec(m, "output_norm.bias", tm->normf_b, E);
    m->output = tm->output == tm->tok_embd ? m->tok_embd : copy_tensor(m, "output.weight", tm->output);
    add_token_rows(tm, (ng_tensor *)m->tok_embd, tm->tok_delta);
    if (m->output != m->tok_embd) add_token_rows(tm, (ng_tensor *)m->output, tm->out_delta);
    return m;
}

/* ---- checkpoints ------------------------------------------------------------------------------ */

static const char CKPT_MAGIC[8] = {'N', 'G', 'T', 'R', 'A', 'I', 'N', '1'};

typedef struct {
    uint32_t mode, n_tab;
    uint64_t n_params;
    int64_t step;
    uint64_t n_forward, seed;
    uint32_t rank;
    float alpha, dropout;
    uint32_t targets;
} ckpt_header;

static ckpt_header header_of(const train_model *tm) {
    return (ckpt_header){(uint32_t)tm->cfg.lora, (uint32_t)tm->n_tab,  tm->n_params,          tm->step,
                         tm->n_forward,          tm->cfg.seed,         (uint32_t)tm->cfg.lora_rank,
                         tm->cfg.lora_alpha,     tm->cfg.lora_dropout, tm->cfg.lora_targets};
}

/* Fields written one by one, so the file has no struct padding. */
static int write_header(FILE *f, const ckpt_header *h) {
    return fwrite(CKPT_MAGIC, 8, 1, f) && fwrite(&h->mode, 4, 1, f) && fwrite(&h->n_tab, 4, 1, f) &&
           fwrite(&h->n_params, 8, 1, f) && fwrite(&h->step, 8, 1, f) && fwrite(&h->n_forward, 8, 1, f) &&
           fwrite(&h->seed, 8, 1, f) && fwrite(&h->rank, 4, 1, f) && fwrite(&h->alpha, 4, 1, f) &&
           fwrite(&h->dropout, 4, 1, f) && fwrite(&h->targets, 4, 1, f);
}

static int read_header(FILE *f, ckpt_header *h) {
    char magic[8];
    return fread(magic, 8, 1, f) && !memcmp(magic, CKPT_MAGIC, 8) && fread(&h->mode, 4, 1, f) &&
           fread(&h->n_tab, 4, 1, f) && fread(&h->n_params, 8, 1, f) && fread(&h->step, 8, 1, f) &&
           fread(&h->n_forward, 8, 1, f) && fread(&h->seed, 8, 1, f) && fread(&h->rank, 4, 1, f) &&
           fread(&h->alpha, 4, 1, f) && fread(&h->dropout, 4, 1, f) && fread(&h->targets, 4, 1, f);
}

int train_save(const train_model *tm, const adamw *o, const char *path, ng_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return ng_error_set(err, "%s: cannot create", path);
    ckpt_header h = header_of(tm);
    int ok = write_header(f, &h);
    for (int i = 0; ok && i < tm->n_tab; i++) {
        const train_param *p = &tm->tab[i];
        uint32_t n = (uint32_t)strlen(p->name);
        ok = fwrite(&n, 4, 1, f) && fwrite(p->name, 1, n, f) == n && fwrite(&p->ne0, 8, 1, f) && fwrite(&p->ne1, 8, 1, f);
    }
    ok = ok && fwrite(tm->params, sizeof(float), tm->n_params, f) == tm->n_params &&
         fwrite(o->m, sizeof(float), tm->n_params, f) == tm->n_params &&
         fwrite(o->v, sizeof(float), tm->n_params, f) == tm->n_params;
    if (fclose(f) != 0) ok = 0;
    return ok ? NG_OK : ng_error_set(err, "%s: write failed", path);
}

int train_load(train_model *tm, adamw *o, const char *path, ng_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ng_error_set(err, "%s: cannot open", path);
    ckpt_header h, want = header_of(tm);
    int rc = NG_ERR;
    if (!read_header(f, &h)) {
        ng_error_set(err, "%s: not a netgpt training checkpoint (bad magic or truncated header)", path);
        goto done;
    }
    if (h.mode != want.mode || h.n_tab != want.n_tab || h.n_params != want.n_params || h.rank != want.rank ||
        h.alpha != want.alpha || h.dropout != want.dropout || h.targets != want.targets || h.seed != want.seed) {
        ng_error_set(err, "%s: checkpoint was made with another configuration (mode %u, %llu values)", path, h.mode,
                     (unsigned long long)h.n_params);
        goto done;
    }
    for (int i = 0; i < tm->n_tab; i++) {
        const train_param *p = &tm->tab[i];
        char name[64];
        uint32_t n;
        int64_t ne0, ne1;
        if (!fread(&n, 4, 1, f) || n >= sizeof name || fread(name, 1, n, f) != n || !fread(&ne0, 8, 1, f) ||
            !fread(&ne1, 8, 1, f)) {
            ng_error_set(err, "%s: truncated tensor table at entry %d", path, i);
            goto done;
        }
        name[n] = 0;
        if (strcmp(name, p->name) || ne0 != p->ne0 || ne1 != p->ne1) {
            ng_error_set(err, "%s: entry %d is %s (%lld x %lld), expected %s", path, i, name, (long long)ne0,
                         (long long)ne1, p->name);
            goto done;
        }
    }
    if (fread(tm->params, sizeof(float), tm->n_params, f) != tm->n_params ||
        fread(o->m, sizeof(float), tm->n_params, f) != tm->n_params ||
        fread(o->v, sizeof(float), tm->n_params, f) != tm->n_params) {
        ng_error_set(err, "%s: truncated data", path);
        goto done;
    }
    tm->step = h.step;
    tm->n_forward = h.n_forward;
    rc = NG_OK;
done:
    fclose(f);
    return rc;
}
