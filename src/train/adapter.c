/* adapter — PEFT and GGUF LoRA files from a train_model's adapters (see adapter.h). */
#include "train/adapter.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "formats/safetensors.h"

/* One adapted matrix as it is written: A (rank, in), B (out, rank) with every slice merged. */
typedef struct {
    int layer, rank, in, out;
    const char *hf, *gguf; /* module names */
    int permute;           /* LLaMA q/k: B rows go back to Hugging Face order in PEFT */
    float *a, *b;
} xmat;

/* Collects the adapters of L (up to three slices) as one matrix. */
static int collect(const train_model *tm, const train_linear *L, int layer, const char *hf, const char *gguf,
                   int permute, xmat *out) {
    if (!L->n_lora) return 0;
    int r = tm->cfg.lora_rank, k = L->n_lora, rt = k * r;
    int in = (int)L->w->ne[0], rows = (int)L->w->ne[1];
    xmat x = {layer, rt, in, rows, hf, gguf, permute, xmalloc((size_t)rt * in * sizeof(float)),
              xcalloc((size_t)rows * rt, sizeof(float))};
    for (int i = 0; i < k; i++) {
        const train_lora *ad = &L->lora[i];
        memcpy(x.a + (size_t)i * r * in, ad->a->data, (size_t)r * in * sizeof(float));
        /* times k: loaders scale by alpha / (k r), training scaled by alpha / r */
        for (int j = 0; j < ad->rows; j++)
            for (int c = 0; c < r; c++)
                x.b[(size_t)(ad->row0 + j) * rt + (size_t)i * r + c] = (float)k * ad->b->data[(size_t)j * r + c];
    }
    *out = x;
    return 1;
}

/* Every adapted matrix of tm (malloc'd array, *n entries). */
static xmat *collect_all(const train_model *tm, int *n) {
    xmat *xs = xcalloc((size_t)tm->hp.n_layer * 8, sizeof *xs);
    int k = 0, gpt2 = tm->hp.arch == NG_ARCH_GPT2;
    for (int l = 0; l < tm->hp.n_layer; l++) {
        const train_layer *ly = &tm->layers[l];
        if (gpt2) {
            k += collect(tm, &ly->qkv, l, "attn.c_attn", "attn_qkv", 0, &xs[k]);
            k += collect(tm, &ly->o, l, "attn.c_proj", "attn_output", 0, &xs[k]);
            k += collect(tm, &ly->up, l, "mlp.c_fc", "ffn_up", 0, &xs[k]);
            k += collect(tm, &ly->down, l, "mlp.c_proj", "ffn_down", 0, &xs[k]);
        } else {
            k += collect(tm, &ly->q, l, "self_attn.q_proj", "attn_q", 1, &xs[k]);
            k += collect(tm, &ly->k, l, "self_attn.k_proj", "attn_k", 1, &xs[k]);
            k += collect(tm, &ly->v, l, "self_attn.v_proj", "attn_v", 0, &xs[k]);
            k += collect(tm, &ly->o, l, "self_attn.o_proj", "attn_output", 0, &xs[k]);
            k += collect(tm, &ly->gate, l, "mlp.gate_proj", "ffn_gate", 0, &xs[k]);
            k += collect(tm, &ly->up, l, "mlp.up_proj", "ffn_up", 0, &xs[k]);
            k += collect(tm, &ly->down, l, "mlp.down_proj", "ffn_down", 0, &xs[k]);
        }
    }
    *n = k;
    return xs;
}

static void free_all(xmat *xs, int n) {
    for (int i = 0; i < n; i++) free(xs[i].a), free(xs[i].b);
    free(xs);
}

static int check_lora(const train_model *tm, ng_error *err) {
    if (!tm->cfg.lora) return ng_error_set(err, "adapter: the model was trained in full mode; it has no adapters");
    return NG_OK;
}

/* ---- PEFT ------------------------------------------------------------------------------------ */

/* netgpt keeps q/k rows with each head's two RoPE halves interleaved (model.c); Hugging Face
 * row r is netgpt row perm_row(r). */
static int perm_row(int r, int hd) {
    int head = r / hd, within = r % hd, half = hd / 2;
    return head * hd + 2 * (within % half) + within / half;
}

static cJSON *config_json(const train_model *tm, const xmat *xs, int n, const char *base_name) {
    cJSON *c = cJSON_CreateObject();
    int gpt2 = tm->hp.arch == NG_ARCH_GPT2;
    cJSON_AddStringToObject(c, "base_model_name_or_path", base_name ? base_name : "");
    cJSON_AddStringToObject(c, "peft_type", "LORA");
    cJSON_AddStringToObject(c, "task_type", "CAUSAL_LM");
    cJSON_AddNumberToObject(c, "r", tm->cfg.lora_rank);
    cJSON_AddNumberToObject(c, "lora_alpha", tm->cfg.lora_alpha);
    cJSON_AddNumberToObject(c, "lora_dropout", tm->cfg.lora_dropout);
    cJSON_AddBoolToObject(c, "fan_in_fan_out", gpt2);
    cJSON_AddStringToObject(c, "bias", "none");
    cJSON_AddBoolToObject(c, "use_rslora", 0);
    cJSON_AddBoolToObject(c, "inference_mode", 1);
    cJSON *tg = cJSON_AddArrayToObject(c, "target_modules"), *rp = cJSON_AddObjectToObject(c, "rank_pattern");
    for (int i = 0; i < n; i++) {
        /* LLaMA's module names are unique as leaves; GPT-2 has two c_proj, so keep the parent */
        const char *name = gpt2 ? xs[i].hf : strchr(xs[i].hf, '.') + 1;
        int seen = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, tg) seen |= !strcmp(e->valuestring, name);
        if (!seen) cJSON_AddItemToArray(tg, cJSON_CreateString(name));
        if (xs[i].rank != tm->cfg.lora_rank && !cJSON_GetObjectItem(rp, name))
            cJSON_AddNumberToObject(rp, name, xs[i].rank);
    }
    cJSON_AddObjectToObject(c, "alpha_pattern");
    if (tm->tok_delta) { /* trainable tokens: the input embedding's module name, and an untied head's */
        cJSON *ti = cJSON_AddObjectToObject(c, "trainable_token_indices");
        cJSON_AddItemToObject(ti, gpt2 ? "wte" : "embed_tokens", cJSON_CreateIntArray(tm->cfg.tok_ids, tm->cfg.n_tok_ids));
        if (tm->out_delta != tm->tok_delta)
            cJSON_AddItemToObject(ti, "lm_head", cJSON_CreateIntArray(tm->cfg.tok_ids, tm->cfg.n_tok_ids));
    }
    return c;
}

int adapter_save_peft(const train_model *tm, const char *dir, const char *base_name, ng_error *err) {
    if (check_lora(tm, err)) return NG_ERR;
    int n;
    xmat *xs = collect_all(tm, &n);
    int hd = ng_head_dim(&tm->hp), rc = NG_ERR, gpt2 = tm->hp.arch == NG_ARCH_GPT2;
    ng_tensor *ts = xcalloc((size_t)2 * n + 2, sizeof *ts);
    int nt = 2 * n;
    char path[4096];
    for (int i = 0; i < n; i++) {
        xmat *x = &xs[i];
        if (x->permute) { /* B rows back to Hugging Face order */
            float *hf = xmalloc((size_t)x->out * x->rank * sizeof(float));
            for (int r = 0; r < x->out; r++)
                memcpy(hf + (size_t)r * x->rank, x->b + (size_t)perm_row(r, hd) * x->rank, (size_t)x->rank * sizeof(float));
            free(x->b);
            x->b = hf;
        }
        for (int ab = 0; ab < 2; ab++) {
            char nm[160];
            snprintf(nm, sizeof nm, "base_model.model.%s.%d.%s.lora_%c.weight", gpt2 ? "transformer.h" : "model.layers",
                     x->layer, x->hf, ab ? 'B' : 'A');
            ng_tensor *t = &ts[2 * i + ab];
            t->name = xstrdup(nm);
            t->type = NG_F32;
            t->n_dims = 2;
            t->ne[0] = ab ? x->rank : x->in, t->ne[1] = ab ? x->out : x->rank, t->ne[2] = t->ne[3] = 1;
            t->data = ab ? x->b : x->a;
            t->nbytes = (size_t)(t->ne[0] * t->ne[1]) * sizeof(float);
        }
    }
    /* trainable tokens: PEFT's (n_tokens, n_embd) deltas */
    const train_param *deltas[2] = {tm->tok_delta, tm->out_delta != tm->tok_delta ? tm->out_delta : NULL};
    const char *dnames[2] = {gpt2 ? "base_model.model.transformer.wte.token_adapter.trainable_tokens_delta"
                                  : "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta",
                             "base_model.model.lm_head.token_adapter.trainable_tokens_delta"};
    for (int i = 0; i < 2; i++) {
        if (!deltas[i]) continue;
        ng_tensor *t = &ts[nt++];
        t->name = xstrdup(dnames[i]);
        t->type = NG_F32;
        t->n_dims = 2;
        t->ne[0] = deltas[i]->ne0, t->ne[1] = deltas[i]->ne1, t->ne[2] = t->ne[3] = 1;
        t->data = deltas[i]->data;
        t->nbytes = (size_t)(t->ne[0] * t->ne[1]) * sizeof(float);
    }
    static const char *const meta[] = {"format", "pt"};
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (st_write(path, ts, nt, meta, 1, err) != NG_OK) goto done;
    cJSON *c = config_json(tm, xs, n, base_name);
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    FILE *f = fopen(path, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok) {
        ng_error_set(err, "%s: cannot write", path);
        goto done;
    }
    rc = NG_OK;
done:
    for (int i = 0; i < nt; i++) free((char *)ts[i].name);
    free(ts);
    free_all(xs, n);
    return rc;
}

/* ---- GGUF LoRA ---------------------------------------------------------------------------------- */

int adapter_save_gguf(const train_model *tm, const char *path, const char *base_name, ng_error *err) {
    if (check_lora(tm, err)) return NG_ERR;
    int n;
    xmat *xs = collect_all(tm, &n);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", ng_arch_name(tm->hp.arch));
    gguf_set_str(w, "general.type", "adapter");
    gguf_set_str(w, "general.name", base_name ? base_name : "netgpt adapter");
    gguf_set_str(w, "adapter.type", "lora");
    gguf_set_f32(w, "adapter.lora.alpha", tm->cfg.lora_alpha);
    char (*names)[96] = xmalloc((size_t)(2 * n + 1) * sizeof *names);
    for (int i = 0; i < n; i++) {
        const xmat *x = &xs[i];
        int64_t ne_a[2] = {x->in, x->rank}, ne_b[2] = {x->rank, x->out};
        snprintf(names[2 * i], sizeof names[0], "blk.%d.%s.weight.lora_a", x->layer, x->gguf);
        snprintf(names[2 * i + 1], sizeof names[0], "blk.%d.%s.weight.lora_b", x->layer, x->gguf);
        gguf_add_tensor(w, names[2 * i], NG_F32, 2, ne_a, x->a);
        gguf_add_tensor(w, names[2 * i + 1], NG_F32, 2, ne_b, x->b);
    }
    if (tm->tok_delta) { /* trainable tokens: the ids as a key, each matrix's row deltas */
        int64_t ne[2] = {tm->tok_delta->ne0, tm->tok_delta->ne1};
        gguf_set_arr_data(w, "adapter.trainable_token_indices", GGUF_I32, tm->cfg.tok_ids, (uint64_t)tm->cfg.n_tok_ids);
        gguf_add_tensor(w, "token_embd.delta", NG_F32, 2, ne, tm->tok_delta->data);
        if (tm->out_delta != tm->tok_delta) gguf_add_tensor(w, "output.delta", NG_F32, 2, ne, tm->out_delta->data);
    }
    int rc = gguf_write(w, path, err);
    gguf_writer_free(w);
    free(names);
    free_all(xs, n);
    return rc;
}
