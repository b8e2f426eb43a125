/* lora — loading, combining, applying and merging low-rank adapters. */
#include "model/lora.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/kernels.h"
#include "core/quant.h"
#include "core/team.h"
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

/* An adapter tensor's type: a float type, or q8_0 / q4_0 (netgpt quantize writes them) with
 * rows of whole blocks. */
static int adapter_type_ok(const ng_tensor *t) {
    if (t->type == NG_F32 || t->type == NG_F16 || t->type == NG_BF16) return 1;
    return (t->type == NG_Q8_0 || t->type == NG_Q4_0) && t->ne[0] % ng_type_block(t->type) == 0;
}

/* ---- trainable tokens ------------------------------------------------------------------------ */

/* One side's rows as a file gives them: ids[i] owns row i of delta (n rows of n_embd). */
typedef struct {
    int *ids; /* malloc'd */
    int n;
    const ng_tensor *delta;
} tok_side;

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Sorts ids[0..n) ascending and drops repeats; returns how many remain. */
static int sort_unique(int *ids, int n) {
    qsort(ids, (size_t)n, sizeof *ids, cmp_int);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (!u || ids[u - 1] != ids[i]) ids[u++] = ids[i];
    return u;
}

/* Index of token in l's ascending ids, or -1. */
static int tok_index(const ng_lora *l, int token) {
    int lo = 0, hi = l->n_tok - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (l->tok_ids[mid] == token) return mid;
        if (l->tok_ids[mid] < token) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Checks one side against m; NG_OK for an absent side (no delta). */
static int check_side(const ng_model *m, const tok_side *s, const char *path, const char *what, ng_error *err) {
    if (!s->delta) return NG_OK;
    const ng_tensor *t = s->delta;
    if (!s->ids) return ng_error_set(err, "%s: %s token deltas without the list of their token ids", path, what);
    if (t->ne[0] != m->hp.n_embd || t->ne[1] != s->n || t->ne[2] != 1 || s->n <= 0)
        return ng_error_set(err, "%s: %s token deltas [%lld, %lld] do not fit %d tokens of the model's %d-wide rows",
                            path, what, (long long)t->ne[0], (long long)t->ne[1], s->n, m->hp.n_embd);
    if (!adapter_type_ok(t))
        return ng_error_set(err, "%s: %s token deltas must be f32, f16, bf16, q8_0 or q4_0", path, what);
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] < 0 || s->ids[i] >= m->hp.n_vocab)
            return ng_error_set(err, "%s: %s token id %d is outside the vocabulary of %d", path, what, s->ids[i],
                                m->hp.n_vocab);
    int *sorted = xmalloc((size_t)s->n * sizeof *sorted), dup = -1;
    memcpy(sorted, s->ids, (size_t)s->n * sizeof *sorted);
    qsort(sorted, (size_t)s->n, sizeof *sorted, cmp_int);
    for (int i = 1; i < s->n && dup < 0; i++)
        if (sorted[i] == sorted[i - 1]) dup = sorted[i];
    free(sorted);
    if (dup >= 0) return ng_error_set(err, "%s: %s token id %d is listed twice", path, what, dup);
    return NG_OK;
}

/* Adds side s's rows (times scale) into rows (lo's ascending ids). */
static void fill_side(const ng_lora *lo, float *rows, const tok_side *s, float scale) {
    int E = lo->n_embd;
    float *buf = xmalloc((size_t)E * sizeof *buf);
    for (int i = 0; i < s->n; i++) {
        ng_to_f32(buf, (const char *)s->delta->data + ng_row_size(s->delta->type, E) * (size_t)i, s->delta->type, E);
        float *r = rows + (size_t)tok_index(lo, s->ids[i]) * E;
        for (int k = 0; k < E; k++) r[k] += scale * buf[k];
    }
    free(buf);
}

/* Gives lo the token deltas of a file: emb (the input embedding's rows) and out (the head's).
 * A tied head takes the embedding's deltas (or the head's when only those were written). */
static int attach_tokens(ng_lora *lo, const ng_model *m, tok_side emb, tok_side out, float scale, const char *path,
                         ng_error *err) {
    if (!emb.delta && !out.delta) {
        if (emb.ids || out.ids) return ng_error_set(err, "%s: trainable token ids without their deltas", path);
        return NG_OK;
    }
    if (check_side(m, &emb, path, "embedding", err) || check_side(m, &out, path, "output head", err)) return NG_ERR;
    int tied = m->output == m->tok_embd;
    if (tied && !emb.delta) emb = out;
    if (tied) out = (tok_side){0};
    int n = 0, *ids = xmalloc((size_t)((emb.delta ? emb.n : 0) + (out.delta ? out.n : 0)) * sizeof *ids);
    for (int i = 0; emb.delta && i < emb.n; i++) ids[n++] = emb.ids[i];
    for (int i = 0; out.delta && i < out.n; i++) ids[n++] = out.ids[i];
    int u = sort_unique(ids, n);
    lo->n_tok = u, lo->n_embd = m->hp.n_embd, lo->tok_ids = ids;
    size_t sz = (size_t)u * (size_t)lo->n_embd;
    if (emb.delta) fill_side(lo, lo->tok_embd = xcalloc(sz, sizeof(float)), &emb, scale);
    if (tied) lo->tok_out = lo->tok_embd;
    else if (out.delta) fill_side(lo, lo->tok_out = xcalloc(sz, sizeof(float)), &out, scale);
    return NG_OK;
}

void ng_lora_embed(const ng_lora *l, float *x, int token) {
    if (!l || !l->tok_embd) return;
    int i = tok_index(l, token);
    if (i < 0) return;
    const float *d = l->tok_embd + (size_t)i * l->n_embd;
    for (int k = 0; k < l->n_embd; k++) x[k] += d[k];
}

void ng_lora_head(const ng_lora *l, float *logits, const float *h) {
    if (!l || !l->tok_out) return;
    for (int i = 0; i < l->n_tok; i++) {
        const float *d = l->tok_out + (size_t)i * l->n_embd;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < l->n_embd; k++) s += d[k] * h[k];
        logits[l->tok_ids[i]] += s;
    }
}

/* ---- loading ---------------------------------------------------------------------------------- */

typedef struct {
    const ng_tensor *a, *b;
} pair;

/* Each matrix's B transposed (mat->bt), for ng_lora_apply. */
static void transpose_b(ng_lora *l) {
    size_t total = 0;
    for (int i = 0; i < l->n_layer * LORA_T_N_TARGETS; i++) total += (size_t)l->mats[i].rank * l->mats[i].n;
    l->bt_data = xmalloc((total ? total : 1) * sizeof(float));
    float *d = l->bt_data;
    for (int i = 0; i < l->n_layer * LORA_T_N_TARGETS; i++) {
        ng_lora_mat *m = &l->mats[i];
        if (!m->rank) continue;
        for (int n = 0; n < m->n; n++)
            for (int r = 0; r < m->rank; r++) d[(size_t)r * m->n + n] = m->b[(size_t)n * m->rank + r];
        m->bt = d;
        d += (size_t)m->rank * m->n;
    }
}

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
            if (!adapter_type_ok(p->a) || !adapter_type_ok(p->b)) {
                ng_error_set(err, "%s: layer %d: adapter tensors must be f32, f16, bf16, q8_0 or q4_0", path, l);
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
    transpose_b(lo);
    return lo;
}

/* A JSON array of token ids as a malloc'd int array (*n entries). */
static int json_ids(const cJSON *arr, int **ids, int *n, const char *path, ng_error *err) {
    if (!cJSON_IsArray(arr)) return ng_error_set(err, "%s: trainable_token_indices: a list of token ids expected", path);
    int k = cJSON_GetArraySize(arr), i = 0;
    *ids = xmalloc((size_t)(k ? k : 1) * sizeof **ids);
    *n = k;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || !(e->valuedouble >= INT_MIN && e->valuedouble <= INT_MAX) ||
            e->valuedouble != (double)(int)e->valuedouble)
            return ng_error_set(err, "%s: trainable_token_indices: entry %d is not a token id", path, i);
        (*ids)[i++] = (int)e->valuedouble;
    }
    return NG_OK;
}

/* trainable_token_indices of a PEFT config: a list (the input embedding's tokens) or an object
 * {module: list} where "lm_head" is the output head and any other module the embedding. */
static int peft_token_ids(const cJSON *cfg, tok_side *emb, tok_side *out, const char *path, ng_error *err) {
    const cJSON *ti = cJSON_GetObjectItemCaseSensitive(cfg, "trainable_token_indices");
    if (!ti || cJSON_IsNull(ti)) return NG_OK;
    if (cJSON_IsArray(ti)) return json_ids(ti, &emb->ids, &emb->n, path, err);
    if (!cJSON_IsObject(ti)) return ng_error_set(err, "%s: trainable_token_indices: a list or an object expected", path);
    const cJSON *e;
    cJSON_ArrayForEach(e, ti) {
        tok_side *s = !strcmp(e->string, "lm_head") ? out : emb;
        if (s->ids) return ng_error_set(err, "%s: trainable_token_indices: two lists for one matrix", path);
        if (json_ids(e, &s->ids, &s->n, path, err)) return NG_ERR;
    }
    return NG_OK;
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
    tok_side emb = {0}, out = {0};
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
    if (peft_token_ids(cfg, &emb, &out, p, err)) goto done;
    pairs = xcalloc((size_t)m->hp.n_layer * LORA_T_N_TARGETS, sizeof *pairs);
    for (int i = 0; i < st_n_tensors(st); i++) {
        const ng_tensor *t = st_tensor(st, i);
        int layer, is_b;
        ng_lora_target tg;
        static const char TT[] = ".token_adapter.trainable_tokens_delta";
        const char *tt = strstr(t->name, TT);
        if (tt && !tt[sizeof TT - 1]) {
            (strstr(t->name, "lm_head") ? &out : &emb)->delta = t;
            continue;
        }
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
    if (lo && attach_tokens(lo, m, emb, out, scale, p, err)) {
        ng_lora_free(lo);
        lo = NULL;
    }
done:
    free(emb.ids);
    free(out.ids);
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
    tok_side emb = {0}, out = {0};
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
    gguf_vtype it;
    uint64_t n_ids = 0;
    const void *ids = gguf_get_arr_data(g, "adapter.trainable_token_indices", &it, &n_ids);
    if (ids) {
        if ((it != GGUF_I32 && it != GGUF_U32) || n_ids > (uint64_t)m->hp.n_vocab) {
            ng_error_set(err, "%s: adapter.trainable_token_indices must be at most %d 32-bit token ids", path,
                         m->hp.n_vocab);
            goto done;
        }
        int *cp = xmalloc((size_t)(n_ids ? n_ids : 1) * sizeof *cp); /* the file's array may be unaligned */
        memcpy(cp, ids, (size_t)n_ids * sizeof *cp);
        emb.ids = out.ids = cp;
        emb.n = out.n = (int)n_ids;
    }
    pairs = xcalloc((size_t)m->hp.n_layer * LORA_T_N_TARGETS, sizeof *pairs);
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const ng_tensor *t = gguf_tensor(g, i);
        int layer, is_b;
        ng_lora_target tg;
        if (!strcmp(t->name, "token_embd.delta") || !strcmp(t->name, "output.delta")) {
            (t->name[0] == 't' ? &emb : &out)->delta = t;
            continue;
        }
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
    if (lo && attach_tokens(lo, m, emb, out, scale, path, err)) {
        ng_lora_free(lo);
        lo = NULL;
    }
done:
    free(emb.ids); /* out.ids is the same array */
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
    free(l->bt_data);
    if (l->tok_out != l->tok_embd) free(l->tok_out);
    free(l->tok_embd);
    free(l->tok_ids);
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

/* c's token deltas: the union of the list's token ids, each row the sum of the adapters' rows. */
static void combine_tokens(ng_lora *c, ng_lora *const *list, int n) {
    int total = 0, tied = 0, any_emb = 0, any_out = 0;
    for (int i = 0; i < n; i++) {
        const ng_lora *l = list[i];
        if (!l->n_tok) continue;
        total += l->n_tok, c->n_embd = l->n_embd;
        tied |= l->tok_out == l->tok_embd, any_emb |= l->tok_embd != NULL, any_out |= l->tok_out != NULL;
    }
    if (!total) return;
    int *ids = xmalloc((size_t)total * sizeof *ids), k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < list[i]->n_tok; j++) ids[k++] = list[i]->tok_ids[j];
    int u = sort_unique(ids, k);
    c->tok_ids = ids, c->n_tok = u;
    size_t sz = (size_t)u * (size_t)c->n_embd, E = (size_t)c->n_embd;
    if (any_emb) c->tok_embd = xcalloc(sz, sizeof(float));
    if (!tied && any_out) c->tok_out = xcalloc(sz, sizeof(float));
    for (int i = 0; i < n; i++) {
        const ng_lora *l = list[i];
        for (int j = 0; j < l->n_tok; j++) {
            size_t at = (size_t)tok_index(c, l->tok_ids[j]) * E;
            for (size_t e = 0; l->tok_embd && e < E; e++) c->tok_embd[at + e] += l->tok_embd[(size_t)j * E + e];
            for (size_t e = 0; !tied && l->tok_out && e < E; e++) c->tok_out[at + e] += l->tok_out[(size_t)j * E + e];
        }
    }
    if (tied) c->tok_out = c->tok_embd;
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
    transpose_b(c);
    combine_tokens(c, list, n);
    return c;
}

/* ---- applying ------------------------------------------------------------------------------- */

typedef struct {
    float *y;
    const float *x;
    int N, K, layer, B;
    ng_lora_target t;
    const ng_lora *const *adapters;
} apply_ctx;

/* A x and B (A x) at the machine's vector width (core/kernels.h's ng_act_dot and
 * ng_act_add_combination, down B's transposed rows, the outputs side by side in the lanes): in
 * plain loops at the baseline's width, one output at a time, each a dot product of rank values
 * with a horizontal sum, the edge's 4-hypothesis completion took ~170 us a token for its 24
 * adapted matrices (rank 16), 14% of it; ~100 us now. */
static void apply_job(void *ctx, int t_, int T_) {
    const apply_ctx *c = ctx;
    int N = c->N, K = c->K;
    for (int b = (int)((int64_t)c->B * t_ / T_); b < (int)((int64_t)c->B * (t_ + 1) / T_); b++) {
        if (!c->adapters[b]) continue;
        const ng_lora_mat *m = ng_lora_mat_of(c->adapters[b], c->layer, c->t);
        if (!m->rank || m->k != K || m->n != N) continue;
        float ax[NG_LORA_MAX_RANK];
        const float *xb = c->x + (size_t)b * K;
        for (int r = 0; r < m->rank; r++) ax[r] = ng_act_dot(m->a + (size_t)r * K, xb, (size_t)K);
        ng_act_add_combination(c->y + (size_t)b * N, m->bt, (size_t)N, ax, m->rank, (size_t)N);
    }
}

/* Rows of a batch on the kernels' threads (core/team.h), a share each. */
void ng_lora_apply(float *y, const float *x, int B, int N, int K, int layer, ng_lora_target t,
                   const ng_lora *const *adapters) {
    apply_ctx c = {.y = y, .x = x, .N = N, .K = K, .layer = layer, .B = B, .t = t, .adapters = adapters};
    ng_team_run(B > 1 ? (B < ng_threads() ? B : ng_threads()) : 1, apply_job, &c);
}

/* ---- merging -------------------------------------------------------------------------------- */

/* A copy of t (owned by m, same type) with the adapter's row deltas added. */
static const ng_tensor *merge_rows(ng_model *m, const ng_tensor *t, const ng_lora *l, const float *delta,
                                   ng_error *err) {
    if (t->type != NG_F32 && t->type != NG_F16 && t->type != NG_BF16) {
        ng_error_set(err, "cannot merge token deltas into '%s' of type %s (f32, f16, bf16)", t->name,
                     ng_type_name(ng_type_base(t->type)));
        return NULL;
    }
    ng_tensor *out = ng_model_own_tensor(m, t->name, t->type, t->ne[0], t->ne[1]);
    memcpy(out->data, t->data, ng_row_size(t->type, t->ne[0]) * (size_t)t->ne[1]);
    size_t rb = ng_row_size(t->type, t->ne[0]);
    float *row = xmalloc((size_t)t->ne[0] * sizeof *row);
    for (int i = 0; i < l->n_tok; i++) {
        char *dst = (char *)out->data + rb * (size_t)l->tok_ids[i];
        ng_to_f32(row, dst, t->type, t->ne[0]);
        for (int64_t k = 0; k < t->ne[0]; k++) row[k] += delta[(size_t)i * (size_t)l->n_embd + (size_t)k];
        ng_from_f32(dst, row, t->type, t->ne[0]);
    }
    free(row);
    return out;
}

int ng_lora_merge(ng_model *m, const ng_lora *l, ng_error *err) {
    if (l->n_layer != m->hp.n_layer) return ng_error_set(err, "adapter has %d layers, the model %d", l->n_layer, m->hp.n_layer);
    if (l->n_tok && l->n_embd != m->hp.n_embd)
        return ng_error_set(err, "adapter's token rows are %d wide, the model's %d", l->n_embd, m->hp.n_embd);
    int tied = m->output == m->tok_embd;
    if (l->tok_embd) {
        const ng_tensor *e = merge_rows(m, m->tok_embd, l, l->tok_embd, err);
        if (!e) return NG_ERR;
        m->tok_embd = e;
        if (tied) m->output = e;
    }
    if (l->tok_out && !tied) {
        const ng_tensor *o = merge_rows(m, m->output, l, l->tok_out, err);
        if (!o) return NG_ERR;
        m->output = o;
    }
    for (int layer = 0; layer < m->hp.n_layer; layer++)
        for (int t = 0; t < LORA_T_N_TARGETS; t++) {
            const ng_lora_mat *a = ng_lora_mat_of(l, layer, (ng_lora_target)t);
            if (!a->rank) continue;
            const ng_tensor *w = target_weight(m, layer, (ng_lora_target)t);
            if (w->type != NG_F32 && w->type != NG_F16 && w->type != NG_BF16)
                return ng_error_set(err, "cannot merge into '%s' of type %s (f32, f16, bf16)", w->name,
                                    ng_type_name(ng_type_base(w->type)));
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
