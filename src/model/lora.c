/* lora — loading, combining, applying and merging low-rank adapters. */
#include "model/lora.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model.h"

/* The model's matrix an adapter target refers to (NULL when the architecture has none). */
static const ng_tensor *target_weight(const ng_model *m, int layer, ng_lora_target t) {
    const ng_layer *L = &m->layers[layer];
    const ng_tensor *w[LORA_T_N_TARGETS] = {L->q_w, L->k_w, L->v_w, L->out_w, L->qkv_w, L->gate_w, L->up_w, L->down_w};
    return w[t];
}

const ng_lora_mat *ng_lora_mat_of(const ng_lora *l, int layer, ng_lora_target t) {
    return &l->mats[(size_t)layer * LORA_T_N_TARGETS + t];
}

static ng_lora_mat *mat_at(ng_lora *l, int layer, ng_lora_target t) {
    return &l->mats[(size_t)layer * LORA_T_N_TARGETS + t];
}

/* ---- names ----------------------------------------------------------------------------------- */

/* PEFT module names (Hugging Face) and GGUF matrix names of each target */
static const struct {
    const char *hf, *gguf;
    ng_arch arch;
    ng_lora_target t;
} TARGETS[] = {
    {"self_attn.q_proj", "attn_q", NG_ARCH_LLAMA, LORA_T_Q},      {"self_attn.k_proj", "attn_k", NG_ARCH_LLAMA, LORA_T_K},
    {"self_attn.v_proj", "attn_v", NG_ARCH_LLAMA, LORA_T_V},      {"self_attn.o_proj", "attn_output", NG_ARCH_LLAMA, LORA_T_O},
    {"mlp.gate_proj", "ffn_gate", NG_ARCH_LLAMA, LORA_T_GATE},    {"mlp.up_proj", "ffn_up", NG_ARCH_LLAMA, LORA_T_UP},
    {"mlp.down_proj", "ffn_down", NG_ARCH_LLAMA, LORA_T_DOWN},    {"attn.c_attn", "attn_qkv", NG_ARCH_GPT2, LORA_T_QKV},
    {"attn.c_proj", "attn_output", NG_ARCH_GPT2, LORA_T_O},       {"mlp.c_fc", "ffn_up", NG_ARCH_GPT2, LORA_T_UP},
    {"mlp.c_proj", "ffn_down", NG_ARCH_GPT2, LORA_T_DOWN},
};
#define N_TARGETS (int)(sizeof TARGETS / sizeof TARGETS[0])

/* Parses a PEFT tensor name: "...layers.N.MODULE.lora_A.weight" (LLaMA) or "...h.N.MODULE..."
 * (GPT-2); *is_b for lora_B. -1 when it is not a LoRA tensor of this architecture. */
static int parse_peft(const char *name, ng_arch arch, int *layer, ng_lora_target *t, int *is_b) {
    const char *lp = arch == NG_ARCH_LLAMA ? strstr(name, "layers.") : strstr(name, "h.");
    while (lp && arch == NG_ARCH_GPT2 && lp != name && lp[-1] != '.') lp = strstr(lp + 1, "h.");
    if (!lp) return -1;
    lp += arch == NG_ARCH_LLAMA ? 7 : 2;
    char *end;
    long l = strtol(lp, &end, 10);
    if (end == lp || *end != '.' || l < 0 || l > 100000) return -1;
    const char *mod = end + 1;
    const char *suffix = strstr(mod, ".lora_");
    if (!suffix) return -1;
    size_t mod_len = (size_t)(suffix - mod);
    if (!strncmp(suffix, ".lora_A.", 8)) *is_b = 0;
    else if (!strncmp(suffix, ".lora_B.", 8)) *is_b = 1;
    else return -1;
    for (int i = 0; i < N_TARGETS; i++)
        if (TARGETS[i].arch == arch && strlen(TARGETS[i].hf) == mod_len && !strncmp(mod, TARGETS[i].hf, mod_len)) {
            *layer = (int)l;
            *t = TARGETS[i].t;
            return 0;
        }
    return -1;
}

/* "blk.N.attn_q.weight.lora_a" */
static int parse_gguf_name(const char *name, ng_arch arch, int *layer, ng_lora_target *t, int *is_b) {
    int l, n = 0;
    if (sscanf(name, "blk.%d.%n", &l, &n) != 1 || n == 0 || l < 0) return -1;
    const char *mod = name + n, *suffix = strstr(mod, ".weight.lora_");
    if (!suffix) return -1;
    if (!strcmp(suffix, ".weight.lora_a")) *is_b = 0;
    else if (!strcmp(suffix, ".weight.lora_b")) *is_b = 1;
    else return -1;
    size_t mod_len = (size_t)(suffix - mod);
    for (int i = 0; i < N_TARGETS; i++)
        if (TARGETS[i].arch == arch && strlen(TARGETS[i].gguf) == mod_len && !strncmp(mod, TARGETS[i].gguf, mod_len)) {
            *layer = l;
            *t = TARGETS[i].t;
            return 0;
        }
    return -1;
}

/* ---- loading ---------------------------------------------------------------------------------- */

typedef struct {
    const ng_tensor *a, *b;
} pair;

/* Builds the adapter from A/B pairs found in a file. hf_rows: B rows come in Hugging Face order
 * (LLaMA q/k rows are then permuted like the base weights, see model.c). */
static ng_lora *build(const ng_model *m, const char *path, pair *pairs, float scale_of_rank_num, int rslora,
                      int hf_rows, ng_error *err) {
    const ng_hparams *hp = &m->hp;
    size_t total = 0;
    int rank_max = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            pair *p = &pairs[l * LORA_T_N_TARGETS + t];
            if (!p->a && !p->b) continue;
            const ng_tensor *w = target_weight(m, l, (ng_lora_target)t);
            if (!p->a || !p->b) {
                ng_error_set(err, "%s: layer %d: lora_%s of a target has no lora_%s partner", path, l, p->a ? "A" : "B",
                             p->a ? "B" : "A");
                return NULL;
            }
            int64_t r = p->a->ne[1];
            if (!w || p->a->ne[0] != w->ne[0] || p->b->ne[0] != r || p->b->ne[1] != w->ne[1] || r <= 0 || r > NG_LORA_MAX_RANK ||
                p->a->ne[2] != 1 || p->b->ne[2] != 1) {
                ng_error_set(err,
                             "%s: layer %d: adapter shapes A [%lld, %lld] B [%lld, %lld] do not fit the model's matrix "
                             "[%lld, %lld]",
                             path, l, (long long)p->a->ne[0], (long long)p->a->ne[1], (long long)p->b->ne[0],
                             (long long)p->b->ne[1], w ? (long long)w->ne[0] : 0, w ? (long long)w->ne[1] : 0);
                return NULL;
            }
            if ((p->a->type != NG_F32 && p->a->type != NG_F16 && p->a->type != NG_BF16) ||
                (p->b->type != NG_F32 && p->b->type != NG_F16 && p->b->type != NG_BF16)) {
                ng_error_set(err, "%s: layer %d: adapter tensors must be f32, f16 or bf16", path, l);
                return NULL;
            }
            total += (size_t)r * (size_t)(w->ne[0] + w->ne[1]);
            if (r > rank_max) rank_max = (int)r;
        }
    if (rank_max == 0) {
        ng_error_set(err, "%s: no LoRA tensors for this model's architecture", path);
        return NULL;
    }
    ng_lora *lo = xcalloc(1, sizeof *lo);
    lo->path = xstrdup(path);
    lo->n_layer = hp->n_layer;
    lo->rank_max = rank_max;
    lo->mats = xcalloc((size_t)hp->n_layer * LORA_T_N_TARGETS, sizeof *lo->mats);
    lo->data = xmalloc(total * sizeof(float));
    float *d = lo->data;
    int hd = ng_head_dim(hp);
    for (int l = 0; l < hp->n_layer; l++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            pair *p = &pairs[l * LORA_T_N_TARGETS + t];
            if (!p->a) continue;
            ng_lora_mat *mt = mat_at(lo, l, (ng_lora_target)t);
            mt->rank = (int)p->a->ne[1];
            mt->k = (int)p->a->ne[0];
            mt->n = (int)p->b->ne[1];
            float s = scale_of_rank_num / (rslora ? sqrtf((float)mt->rank) : (float)mt->rank);
            float *a = d, *b = d + (size_t)mt->rank * mt->k;
            d = b + (size_t)mt->n * mt->rank;
            ng_to_f32(a, p->a->data, p->a->type, (int64_t)mt->rank * mt->k);
            int permute = hf_rows && (t == LORA_T_Q || t == LORA_T_K);
            int half = hd / 2;
            for (int r = 0; r < mt->n; r++) {
                int to = r;
                if (permute) { /* the base's HF->GGUF row permutation, applied to B's rows */
                    int head = r / hd, within = r % hd;
                    to = head * hd + 2 * (within % half) + within / half;
                }
                ng_to_f32(b + (size_t)to * mt->rank, (const char *)p->b->data + ng_row_size(p->b->type, mt->rank) * (size_t)r,
                          p->b->type, mt->rank);
                for (int j = 0; j < mt->rank; j++) b[(size_t)to * mt->rank + j] *= s;
            }
            mt->a = a;
            mt->b = b;
        }
    return lo;
}

static ng_lora *load_peft(const ng_model *m, const char *dir, float scale, ng_error *err) {
    char p[4096];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    char *text = ng_read_file(p, NULL, err);
    if (!text) return NULL;
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    ng_lora *lo = NULL;
    st_file *st = NULL;
    pair *pairs = NULL;
    if (!cJSON_IsObject(cfg)) {
        ng_error_set(err, "%s: not a JSON object", p);
        goto done;
    }
    const cJSON *alpha = cJSON_GetObjectItemCaseSensitive(cfg, "lora_alpha");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(cfg, "r");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "use_rslora");
    if (!cJSON_IsNumber(r) || r->valuedouble <= 0) {
        ng_error_set(err, "%s: \"r\" must be a positive number", p);
        goto done;
    }
    double a = cJSON_IsNumber(alpha) ? alpha->valuedouble : r->valuedouble;
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    if (!(st = st_open(p, err))) goto done;
    pairs = xcalloc((size_t)m->hp.n_layer * LORA_T_N_TARGETS, sizeof *pairs);
    for (int i = 0; i < st_n_tensors(st); i++) {
        const ng_tensor *t = st_tensor(st, i);
        int layer, is_b;
        ng_lora_target tg;
        if (parse_peft(t->name, m->hp.arch, &layer, &tg, &is_b) != 0) {
            ng_error_set(err, "%s: tensor '%s' is not a LoRA matrix of a %s model this build can apply", p, t->name,
                         ng_arch_name(m->hp.arch));
            goto done;
        }
        if (layer >= m->hp.n_layer) {
            ng_error_set(err, "%s: tensor '%s': layer %d, but the model has %d", p, t->name, layer, m->hp.n_layer);
            goto done;
        }
        pair *pp = &pairs[layer * LORA_T_N_TARGETS + tg];
        if (is_b) pp->b = t;
        else pp->a = t;
    }
    /* per-matrix rank comes from the tensors; the file's alpha / r scales each (r may differ) */
    lo = build(m, p, pairs, (float)(a * scale), cJSON_IsTrue(rs), 1, err);
done:
    free(pairs);
    if (st) st_close(st);
    cJSON_Delete(cfg);
    return lo;
}

static ng_lora *load_gguf_lora(const ng_model *m, const char *path, float scale, ng_error *err) {
    gguf_ctx *g = gguf_open(path, err);
    if (!g) return NULL;
    ng_lora *lo = NULL;
    pair *pairs = NULL;
    const char *type = gguf_get_str(g, "general.type"), *atype = gguf_get_str(g, "adapter.type");
    const char *arch = gguf_get_str(g, "general.architecture");
    float alpha = 0;
    if (!type || strcmp(type, "adapter") != 0 || !atype || strcmp(atype, "lora") != 0) {
        ng_error_set(err, "%s: not a LoRA adapter (general.type \"adapter\", adapter.type \"lora\")", path);
        goto done;
    }
    if (arch && strcmp(arch, ng_arch_name(m->hp.arch)) != 0) {
        ng_error_set(err, "%s: adapter for architecture '%s', the model is '%s'", path, arch, ng_arch_name(m->hp.arch));
        goto done;
    }
    if (gguf_get_f32(g, "adapter.lora.alpha", &alpha, err) != NG_OK) goto done;
    pairs = xcalloc((size_t)m->hp.n_layer * LORA_T_N_TARGETS, sizeof *pairs);
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const ng_tensor *t = gguf_tensor(g, i);
        int layer, is_b;
        ng_lora_target tg;
        if (parse_gguf_name(t->name, m->hp.arch, &layer, &tg, &is_b) != 0 || layer >= m->hp.n_layer) {
            ng_error_set(err, "%s: tensor '%s' is not a LoRA matrix of this %s model", path, t->name,
                         ng_arch_name(m->hp.arch));
            goto done;
        }
        pair *pp = &pairs[layer * LORA_T_N_TARGETS + tg];
        if (is_b) pp->b = t;
        else pp->a = t;
    }
    lo = build(m, path, pairs, alpha * scale, 0, 0, err);
done:
    free(pairs);
    gguf_close(g);
    return lo;
}

ng_lora *ng_lora_load(const ng_model *m, const char *path, float scale, ng_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        ng_error_set(err, "%s: cannot open adapter", path);
        return NULL;
    }
    ng_lora *lo = S_ISDIR(sb.st_mode) ? load_peft(m, path, scale, err) : load_gguf_lora(m, path, scale, err);
    if (lo) {
        const char *base = strrchr(path, '/');
        lo->name = xstrdup(base && base[1] ? base + 1 : path);
    }
    return lo;
}

void ng_lora_free(ng_lora *l) {
    if (!l) return;
    free(l->mats);
    free(l->data);
    free(l->name);
    free(l->path);
    free(l);
}

int ng_lora_parse_arg(const char *arg, char **path, float *scale, ng_error *err) {
    *path = xstrdup(arg);
    *scale = 1.0f;
    char *colon = strrchr(*path, ':');
    if (colon) {
        char *end;
        float s = strtof(colon + 1, &end);
        if (end != colon + 1 && *end == 0) {
            if (!isfinite(s)) {
                free(*path);
                return ng_error_set(err, "--lora %s: the scale must be a finite number", arg);
            }
            *colon = 0;
            *scale = s;
        }
    }
    return NG_OK;
}

ng_lora *ng_lora_combine(ng_lora *const *list, int n) {
    ng_lora *c = xcalloc(1, sizeof *c);
    c->n_layer = list[0]->n_layer;
    c->mats = xcalloc((size_t)c->n_layer * LORA_T_N_TARGETS, sizeof *c->mats);
    c->name = xstrdup("combined");
    c->path = xstrdup("");
    size_t total = 0;
    for (int l = 0; l < c->n_layer; l++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            ng_lora_mat *m = mat_at(c, l, (ng_lora_target)t);
            for (int i = 0; i < n; i++) {
                const ng_lora_mat *s = ng_lora_mat_of(list[i], l, (ng_lora_target)t);
                if (!s->rank) continue;
                m->rank += s->rank, m->n = s->n, m->k = s->k;
            }
            total += (size_t)m->rank * (size_t)(m->n + m->k);
            if (m->rank > c->rank_max) c->rank_max = m->rank;
        }
    if (c->rank_max > NG_LORA_MAX_RANK) {
        ng_lora_free(c);
        return NULL;
    }
    c->data = xmalloc((total ? total : 1) * sizeof(float));
    float *d = c->data;
    for (int l = 0; l < c->n_layer; l++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            ng_lora_mat *m = mat_at(c, l, (ng_lora_target)t);
            if (!m->rank) continue;
            float *a = d, *b = d + (size_t)m->rank * m->k;
            d = b + (size_t)m->n * m->rank;
            int r0 = 0;
            for (int i = 0; i < n; i++) { /* A rows stacked; B columns side by side */
                const ng_lora_mat *s = ng_lora_mat_of(list[i], l, (ng_lora_target)t);
                if (!s->rank) continue;
                memcpy(a + (size_t)r0 * m->k, s->a, (size_t)s->rank * m->k * sizeof(float));
                for (int row = 0; row < m->n; row++)
                    memcpy(b + (size_t)row * m->rank + r0, s->b + (size_t)row * s->rank, (size_t)s->rank * sizeof(float));
                r0 += s->rank;
            }
            m->a = a, m->b = b;
        }
    return c;
}

/* ---- applying ------------------------------------------------------------------------------- */

void ng_lora_apply(float *y, const float *x, int B, int N, int K, int layer, ng_lora_target t,
                   const ng_lora *const *adapters) {
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++) {
        if (!adapters[b]) continue;
        const ng_lora_mat *m = ng_lora_mat_of(adapters[b], layer, t);
        if (!m->rank || m->k != K || m->n != N) continue;
        float ax[NG_LORA_MAX_RANK];
        const float *xb = x + (size_t)b * K;
        float *yb = y + (size_t)b * N;
        for (int r = 0; r < m->rank; r++) {
            const float *ar = m->a + (size_t)r * K;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int k = 0; k < K; k++) s += ar[k] * xb[k];
            ax[r] = s;
        }
        for (int n = 0; n < N; n++) {
            const float *bn = m->b + (size_t)n * m->rank;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int r = 0; r < m->rank; r++) s += bn[r] * ax[r];
            yb[n] += s;
        }
    }
}

/* ---- merging -------------------------------------------------------------------------------- */

int ng_lora_merge(ng_model *m, const ng_lora *l, ng_error *err) {
    if (l->n_layer != m->hp.n_layer) return ng_error_set(err, "adapter has %d layers, the model %d", l->n_layer, m->hp.n_layer);
    for (int layer = 0; layer < m->hp.n_layer; layer++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            const ng_lora_mat *a = ng_lora_mat_of(l, layer, (ng_lora_target)t);
            if (!a->rank) continue;
            const ng_tensor *w = target_weight(m, layer, (ng_lora_target)t);
            if (w->type != NG_F32 && w->type != NG_F16 && w->type != NG_BF16)
                return ng_error_set(err, "cannot merge into '%s' of type %s (f32, f16, bf16)", w->name,
                                    ng_type_name(w->type));
            ng_tensor *out = ng_model_own_tensor(m, w->name, w->type, w->ne[0], w->ne[1]);
            float *row = xmalloc((size_t)a->k * sizeof *row);
            size_t rb = ng_row_size(w->type, a->k);
            for (int n = 0; n < a->n; n++) {
                ng_to_f32(row, (const char *)w->data + rb * (size_t)n, w->type, a->k);
                const float *bn = a->b + (size_t)n * a->rank;
                for (int r = 0; r < a->rank; r++) {
                    const float *ar = a->a + (size_t)r * a->k;
                    for (int k = 0; k < a->k; k++) row[k] += bn[r] * ar[k];
                }
                ng_from_f32((char *)out->data + rb * (size_t)n, row, w->type, a->k);
            }
            free(row);
            ng_layer *L = &m->layers[layer];
            const ng_tensor **slots[LORA_T_N_TARGETS] = {&L->q_w, &L->k_w, &L->v_w, &L->out_w,
                                                       &L->qkv_w, &L->gate_w, &L->up_w, &L->down_w};
            *slots[t] = out;
        }
    return NG_OK;
}
