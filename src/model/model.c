/* model — loading (GGUF, Hugging Face folder), random construction and GGUF saving of models.
 * The forward pass lives in the per-architecture file (gpt2.c). */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- owned tensors ---------------------------------------------------------------------- */

/* A tensor whose name and data the model allocates; freed by ng_model_free. */
static ng_tensor *model_own(ng_model *m, const char *name, ng_type type, int64_t ne0, int64_t ne1) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        m->owned = xrealloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned);
    }
    ng_tensor *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->type = type;
    t->n_dims = ne1 > 1 ? 2 : 1;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = t->ne[3] = 1;
    t->nbytes = ng_row_size(type, ne0) * (size_t)ne1;
    t->data = ng_aligned_alloc(t->nbytes);
    m->owned[m->n_owned++] = t;
    return t;
}

static int is_float_type(ng_type t) { return t == NG_F32 || t == NG_F16 || t == NG_BF16; }

/* ---- hyperparameters and tensor binding (names as llama.cpp writes them) ----------------- */

static int check_hparams(const ng_hparams *hp, const char *path, ng_error *err) {
    if (hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_layer <= 0 || hp->n_ff <= 0 || hp->n_ctx <= 0 ||
        hp->n_vocab <= 0)
        return ng_error_set(err, "%s: invalid hyperparameters (n_embd %d, n_head %d, n_layer %d, n_ff %d, n_ctx %d, "
                                 "n_vocab %d)",
                            path, hp->n_embd, hp->n_head, hp->n_layer, hp->n_ff, hp->n_ctx, hp->n_vocab);
    if (hp->n_embd % hp->n_head != 0)
        return ng_error_set(err, "%s: n_embd %d is not a multiple of n_head %d", path, hp->n_embd, hp->n_head);
    if (hp->n_embd > (1 << 16) || hp->n_ff > (1 << 18) || hp->n_layer > 1024 || hp->n_ctx > (1 << 20) ||
        hp->n_vocab > (1 << 22))
        return ng_error_set(err, "%s: hyperparameters out of the supported range", path);
    return NG_OK;
}

/* A tensor looked up by its GGUF name in whichever source the model has. For a Hugging Face
 * GPT-2, names are translated and Conv1D matrices transposed into owned memory. */
typedef const ng_tensor *(*find_fn)(ng_model *m, const char *gguf_name, ng_error *err);

/* Checks shape (ne0, ne1) and type; vectors are brought to f32 (copied when stored otherwise). */
static const ng_tensor *bind(ng_model *m, find_fn find, const char *name, int64_t ne0, int64_t ne1, int optional,
                             ng_error *err, int *failed) {
    if (*failed) return NULL;
    ng_error e = {{0}};
    const ng_tensor *t = find(m, name, &e);
    if (!t) {
        if (e.msg[0]) {
            ng_error_set(err, "%s", e.msg);
            *failed = 1;
        } else if (!optional) {
            ng_error_set(err, "%s: missing tensor '%s'", m->path, name);
            *failed = 1;
        }
        return NULL;
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        ng_error_set(err, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", m->path, name,
                     (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                     (long long)ne0, (long long)ne1);
        *failed = 1;
        return NULL;
    }
    if (!is_float_type(t->type)) {
        ng_error_set(err, "%s: tensor '%s' has type %s, which this build cannot compute with (f32, f16, bf16)",
                     m->path, name, ng_type_name(t->type));
        *failed = 1;
        return NULL;
    }
    if (ne1 == 1 && t->type != NG_F32) {
        ng_tensor *c = model_own(m, name, NG_F32, ne0, 1);
        ng_to_f32(c->data, t->data, t->type, ne0);
        return c;
    }
    return t;
}

static int bind_gpt2(ng_model *m, find_fn find, ng_error *err) {
    const ng_hparams *hp = &m->hp;
    int E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab, failed = 0;
    char nm[96];
    m->tok_embd = bind(m, find, "token_embd.weight", E, V, 0, err, &failed);
    m->pos_embd = bind(m, find, "position_embd.weight", E, hp->n_ctx, 0, err, &failed);
    m->out_norm_w = bind(m, find, "output_norm.weight", E, 1, 0, err, &failed);
    m->out_norm_b = bind(m, find, "output_norm.bias", E, 1, 0, err, &failed);
    m->output = bind(m, find, "output.weight", E, V, 1, err, &failed);
    if (!m->output) m->output = m->tok_embd;
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    for (int l = 0; l < hp->n_layer && !failed; l++) {
        ng_layer *L = &m->layers[l];
#define B(field, suffix, ne0, ne1)                                                                           \
    snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                                         \
    L->field = bind(m, find, nm, ne0, ne1, 0, err, &failed)
        B(ln1_w, "attn_norm.weight", E, 1);
        B(ln1_b, "attn_norm.bias", E, 1);
        B(qkv_w, "attn_qkv.weight", E, 3 * E);
        B(qkv_b, "attn_qkv.bias", 3 * E, 1);
        B(out_w, "attn_output.weight", E, E);
        B(out_b, "attn_output.bias", E, 1);
        B(ln2_w, "ffn_norm.weight", E, 1);
        B(ln2_b, "ffn_norm.bias", E, 1);
        B(up_w, "ffn_up.weight", E, F);
        B(up_b, "ffn_up.bias", F, 1);
        B(down_w, "ffn_down.weight", F, E);
        B(down_b, "ffn_down.bias", E, 1);
#undef B
    }
    return failed ? NG_ERR : NG_OK;
}

/* ---- GGUF --------------------------------------------------------------------------------- */

static const ng_tensor *find_gguf(ng_model *m, const char *name, ng_error *err) {
    int i = gguf_find_tensor(m->gguf, name);
    return i < 0 ? NULL : gguf_tensor(m->gguf, i);
}

static int gguf_hparam(const gguf_ctx *g, const char *arch, const char *key, int *out, ng_error *err) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    uint32_t v;
    if (gguf_get_u32(g, k, &v, err) != NG_OK) return NG_ERR;
    if (v > (1u << 30)) return ng_error_set(err, "%s: %s = %u is out of range", gguf_path(g), k, v);
    *out = (int)v;
    return NG_OK;
}

static int load_gguf(ng_model *m, ng_error *err) {
    gguf_ctx *g = m->gguf = gguf_open(m->path, err);
    if (!g) return NG_ERR;
    const char *arch = gguf_get_str(g, "general.architecture");
    if (!arch) return ng_error_set(err, "%s: missing key 'general.architecture'", m->path);
    if (strcmp(arch, "gpt2") != 0)
        return ng_error_set(err, "%s: architecture '%s' is not supported by this build (supported: gpt2)", m->path,
                            arch);
    ng_hparams *hp = &m->hp;
    hp->arch = NG_ARCH_GPT2;
    char k[128];
    snprintf(k, sizeof k, "%s.attention.layer_norm_epsilon", arch);
    if (gguf_hparam(g, arch, "context_length", &hp->n_ctx, err) || gguf_hparam(g, arch, "embedding_length", &hp->n_embd, err) ||
        gguf_hparam(g, arch, "feed_forward_length", &hp->n_ff, err) || gguf_hparam(g, arch, "block_count", &hp->n_layer, err) ||
        gguf_hparam(g, arch, "attention.head_count", &hp->n_head, err) || gguf_get_f32(g, k, &hp->norm_eps, err))
        return NG_ERR;
    int ti = gguf_find_tensor(g, "token_embd.weight");
    if (ti < 0) return ng_error_set(err, "%s: missing tensor 'token_embd.weight'", m->path);
    hp->n_vocab = (int)gguf_tensor(g, ti)->ne[1];
    if (check_hparams(hp, m->path, err)) return NG_ERR;
    const char *name = gguf_get_str(g, "general.name");
    if (name) m->name = xstrdup(name);
    if (bind_gpt2(m, find_gguf, err)) return NG_ERR;
    ng_error te = {{0}};
    m->tok = tok_from_gguf(g, &te);
    if (!m->tok && te.msg[0]) return ng_error_set(err, "%s", te.msg);
    return NG_OK;
}

/* ---- Hugging Face folder ------------------------------------------------------------------- */

/* GGUF name -> Hugging Face GPT-2 name; *transpose set for Conv1D matrices. */
static int hf_name(const char *gguf, char *out, size_t cap, int *transpose) {
    static const struct {
        const char *gguf, *hf;
        int transpose;
    } top[] = {{"token_embd.weight", "wte.weight", 0},     {"position_embd.weight", "wpe.weight", 0},
               {"output_norm.weight", "ln_f.weight", 0},   {"output_norm.bias", "ln_f.bias", 0},
               {"output.weight", "lm_head.weight", 0}},
      blk[] = {{"attn_norm.weight", "ln_1.weight", 0},       {"attn_norm.bias", "ln_1.bias", 0},
               {"attn_qkv.weight", "attn.c_attn.weight", 1}, {"attn_qkv.bias", "attn.c_attn.bias", 0},
               {"attn_output.weight", "attn.c_proj.weight", 1}, {"attn_output.bias", "attn.c_proj.bias", 0},
               {"ffn_norm.weight", "ln_2.weight", 0},        {"ffn_norm.bias", "ln_2.bias", 0},
               {"ffn_up.weight", "mlp.c_fc.weight", 1},      {"ffn_up.bias", "mlp.c_fc.bias", 0},
               {"ffn_down.weight", "mlp.c_proj.weight", 1},  {"ffn_down.bias", "mlp.c_proj.bias", 0}};
    *transpose = 0;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (strcmp(gguf, top[i].gguf) == 0) return snprintf(out, cap, "%s", top[i].hf) < (int)cap;
    int l, n = 0;
    if (sscanf(gguf, "blk.%d.%n", &l, &n) != 1 || n == 0) return 0;
    for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++)
        if (strcmp(gguf + n, blk[i].gguf) == 0) {
            *transpose = blk[i].transpose;
            return snprintf(out, cap, "h.%d.%s", l, blk[i].hf) < (int)cap;
        }
    return 0;
}

static const ng_tensor *find_hf(ng_model *m, const char *name, ng_error *err) {
    char hf[128], pre[160];
    int transpose;
    if (!hf_name(name, hf, sizeof hf, &transpose)) return NULL;
    int i = st_find(m->st, hf);
    if (i < 0) {
        snprintf(pre, sizeof pre, "transformer.%s", hf);
        i = st_find(m->st, pre);
    }
    if (i < 0) return NULL;
    const ng_tensor *t = st_tensor(m->st, i);
    if (!transpose || t->n_dims != 2 || !is_float_type(t->type)) return t;
    /* Conv1D keeps (in, out): ne = {out, in}. Our matrices are rows of inputs: ne = {in, out}. */
    int64_t out_n = t->ne[0], in_n = t->ne[1];
    ng_tensor *c = model_own(m, name, t->type, in_n, out_n);
    size_t es = ng_type_size(t->type);
    const char *src = t->data;
    char *dst = c->data;
    for (int64_t i_in = 0; i_in < in_n; i_in++)
        for (int64_t o = 0; o < out_n; o++)
            memcpy(dst + ((size_t)o * (size_t)in_n + (size_t)i_in) * es, src + ((size_t)i_in * (size_t)out_n + (size_t)o) * es, es);
    return c;
}

static int json_int(const cJSON *cfg, const char *key, int def, int *out, const char *path, ng_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < 0) return ng_error_set(err, "%s: missing key \"%s\"", path, key);
        *out = def;
        return NG_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < 0)
        return ng_error_set(err, "%s: \"%s\" must be a non-negative integer", path, key);
    *out = (int)v->valuedouble;
    return NG_OK;
}

static int load_hf(ng_model *m, ng_error *err) {
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", m->path);
    char *text = ng_read_file(p, NULL, err);
    if (!text) return NG_ERR;
    cJSON *cfg = cJSON_Parse(text);
    free(text);
    int rc = NG_ERR;
    if (!cJSON_IsObject(cfg)) {
        ng_error_set(err, "%s: not a JSON object", p);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "gpt2") != 0) {
        ng_error_set(err, "%s: model_type %s%s%s is not supported by this build (supported: gpt2)", p,
                     cJSON_IsString(mt) ? "\"" : "", cJSON_IsString(mt) ? mt->valuestring : "(missing)",
                     cJSON_IsString(mt) ? "\"" : "");
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(cfg, "activation_function");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_new") != 0 &&
        strcmp(act->valuestring, "gelu_pytorch_tanh") != 0) {
        ng_error_set(err, "%s: activation_function \"%s\" is not supported (gelu_new)", p, act->valuestring);
        goto done;
    }
    ng_hparams *hp = &m->hp;
    hp->arch = NG_ARCH_GPT2;
    int n_pos;
    if (json_int(cfg, "n_embd", -1, &hp->n_embd, p, err) || json_int(cfg, "n_layer", -1, &hp->n_layer, p, err) ||
        json_int(cfg, "n_head", -1, &hp->n_head, p, err) || json_int(cfg, "vocab_size", -1, &hp->n_vocab, p, err) ||
        json_int(cfg, "n_positions", 0, &n_pos, p, err) || json_int(cfg, "n_ctx", n_pos, &hp->n_ctx, p, err) ||
        json_int(cfg, "n_inner", 4 * hp->n_embd, &hp->n_ff, p, err))
        goto done;
    if (n_pos) hp->n_ctx = n_pos;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(cfg, "layer_norm_epsilon");
    hp->norm_eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-5f;
    if (check_hparams(hp, p, err)) goto done;

    snprintf(p, sizeof p, "%s/model.safetensors", m->path);
    struct stat sb;
    if (stat(p, &sb) != 0) snprintf(p, sizeof p, "%s/model.safetensors.index.json", m->path);
    if (!(m->st = st_open(p, err))) goto done;
    if (bind_gpt2(m, find_hf, err)) goto done;
    ng_error te = {{0}};
    m->tok = tok_from_hf_dir(m->path, &te);
    if (!m->tok && te.msg[0]) {
        ng_error_set(err, "%s", te.msg);
        goto done;
    }
    rc = NG_OK;
done:
    cJSON_Delete(cfg);
    return rc;
}

ng_model *ng_model_load(const char *path, ng_error *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        ng_error_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    ng_model *m = xcalloc(1, sizeof *m);
    m->path = xstrdup(path);
    if ((S_ISDIR(sb.st_mode) ? load_hf(m, err) : load_gguf(m, err)) != NG_OK) {
        ng_model_free(m);
        return NULL;
    }
    if (m->tok && tok_n_vocab(m->tok) > m->hp.n_vocab) {
        ng_error_set(err, "%s: tokenizer has %d tokens but the model's vocabulary is %d", path, tok_n_vocab(m->tok),
                     m->hp.n_vocab);
        ng_model_free(m);
        return NULL;
    }
    if (!m->name) {
        const char *base = strrchr(path, '/');
        m->name = xstrdup(base && base[1] ? base + 1 : path);
    }
    return m;
}

void ng_model_free(ng_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) {
        free((void *)m->owned[i]->name);
        free(m->owned[i]->data);
        free(m->owned[i]);
    }
    free(m->owned);
    free(m->layers);
    if (m->tok) tok_free(m->tok);
    if (m->gguf) gguf_close(m->gguf);
    if (m->st) st_close(m->st);
    free(m->name);
    free(m->path);
    free(m);
}

/* ---- random models ----------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static const ng_tensor *random_tensor(ng_model *m, const char *name, ng_type t, int64_t ne0, int64_t ne1,
                                      float scale, float offset, uint64_t *rng) {
    ng_tensor *c = model_own(m, name, ne1 == 1 ? NG_F32 : t, ne0, ne1);
    float row[4096];
    for (int64_t r = 0; r < ne1; r++) {
        for (int64_t i = 0; i < ne0; i += 4096) {
            int64_t n = ne0 - i < 4096 ? ne0 - i : 4096;
            for (int64_t j = 0; j < n; j++)
                row[j] = offset + scale * ((float)(rng_next(rng) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
            ng_from_f32((char *)c->data + ng_row_size(c->type, ne0) * (size_t)r + ng_row_size(c->type, i), row,
                        c->type, n);
        }
    }
    return c;
}

ng_model *ng_model_random(const ng_hparams *hp, ng_type wtype, uint64_t seed) {
    ng_model *m = xcalloc(1, sizeof *m);
    m->hp = *hp;
    m->path = xstrdup("(random)");
    m->name = xstrdup("random");
    uint64_t rng = seed;
    int E = hp->n_embd, F = hp->n_ff;
    float ws = 0.05f;
    m->tok_embd = random_tensor(m, "token_embd.weight", wtype, E, hp->n_vocab, ws, 0, &rng);
    m->pos_embd = random_tensor(m, "position_embd.weight", wtype, E, hp->n_ctx, ws, 0, &rng);
    m->out_norm_w = random_tensor(m, "output_norm.weight", NG_F32, E, 1, 0.1f, 1, &rng);
    m->out_norm_b = random_tensor(m, "output_norm.bias", NG_F32, E, 1, 0.1f, 0, &rng);
    m->output = m->tok_embd;
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    char nm[96];
    for (int l = 0; l < hp->n_layer; l++) {
        ng_layer *L = &m->layers[l];
#define R(field, suffix, ne0, ne1, scale, offset)                                                            \
    snprintf(nm, sizeof nm, "blk.%d.%s", l, suffix);                                                         \
    L->field = random_tensor(m, nm, wtype, ne0, ne1, scale, offset, &rng)
        R(ln1_w, "attn_norm.weight", E, 1, 0.1f, 1);
        R(ln1_b, "attn_norm.bias", E, 1, 0.1f, 0);
        R(qkv_w, "attn_qkv.weight", E, 3 * E, ws, 0);
        R(qkv_b, "attn_qkv.bias", 3 * E, 1, 0.1f, 0);
        R(out_w, "attn_output.weight", E, E, ws, 0);
        R(out_b, "attn_output.bias", E, 1, 0.1f, 0);
        R(ln2_w, "ffn_norm.weight", E, 1, 0.1f, 1);
        R(ln2_b, "ffn_norm.bias", E, 1, 0.1f, 0);
        R(up_w, "ffn_up.weight", E, F, ws, 0);
        R(up_b, "ffn_up.bias", F, 1, 0.1f, 0);
        R(down_w, "ffn_down.weight", F, E, ws, 0);
        R(down_b, "ffn_down.bias", E, 1, 0.1f, 0);
#undef R
    }
    return m;
}

/* ---- sizes and saving -------------------------------------------------------------------- */

static const ng_tensor *const *layer_matrices(const ng_layer *L, const ng_tensor *out[4]) {
    out[0] = L->qkv_w, out[1] = L->out_w, out[2] = L->up_w, out[3] = L->down_w;
    return out;
}

size_t ng_model_weight_bytes(const ng_model *m) {
    size_t b = m->output->nbytes;
    const ng_tensor *mats[4];
    for (int l = 0; l < m->hp.n_layer; l++) {
        layer_matrices(&m->layers[l], mats);
        for (int i = 0; i < 4; i++) b += mats[i]->nbytes;
    }
    return b;
}

ng_type ng_model_wtype(const ng_model *m) { return m->hp.n_layer ? m->layers[0].qkv_w->type : m->tok_embd->type; }

/* llama.cpp's general.file_type values for the types we write. */
static uint32_t file_type_of(ng_type t) {
    switch (t) {
    case NG_F16: return 1;
    case NG_Q4_0: return 2;
    case NG_Q8_0: return 7;
    case NG_BF16: return 32;
    default: return 0;
    }
}

int ng_model_save_gguf(const ng_model *m, const char *path, ng_type wtype, ng_error *err) {
    if (!is_float_type(wtype))
        return ng_error_set(err, "cannot write type %s (supported: f32, f16, bf16)", ng_type_name(wtype));
    const ng_hparams *hp = &m->hp;
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "gpt2");
    gguf_set_str(w, "general.name", m->name);
    gguf_set_u32(w, "general.file_type", file_type_of(wtype));
    gguf_set_u32(w, "gpt2.context_length", (uint32_t)hp->n_ctx);
    gguf_set_u32(w, "gpt2.embedding_length", (uint32_t)hp->n_embd);
    gguf_set_u32(w, "gpt2.feed_forward_length", (uint32_t)hp->n_ff);
    gguf_set_u32(w, "gpt2.block_count", (uint32_t)hp->n_layer);
    gguf_set_u32(w, "gpt2.attention.head_count", (uint32_t)hp->n_head);
    gguf_set_f32(w, "gpt2.attention.layer_norm_epsilon", hp->norm_eps);
    if (m->tok) tok_write_gguf(m->tok, w);

    /* Every tensor in llama.cpp's order, by its GGUF name (a Hugging Face model's own tensors
     * carry HF names); the output head is written even when tied, as llama.cpp's converter
     * does for GPT-2. */
    int n = 5 + 12 * hp->n_layer;
    const ng_tensor **list = xcalloc((size_t)n, sizeof *list);
    char(*names)[64] = xcalloc((size_t)n, sizeof *names);
    void **bufs = xcalloc((size_t)n, sizeof *bufs);
    static const char *const blk[12] = {"attn_norm.weight", "attn_norm.bias", "attn_qkv.weight", "attn_qkv.bias",
                                        "attn_output.weight", "attn_output.bias", "ffn_norm.weight", "ffn_norm.bias",
                                        "ffn_up.weight", "ffn_up.bias", "ffn_down.weight", "ffn_down.bias"};
    int k = 0;
    const ng_tensor *top[4] = {m->tok_embd, m->pos_embd, m->out_norm_w, m->out_norm_b};
    static const char *const top_names[4] = {"token_embd.weight", "position_embd.weight", "output_norm.weight",
                                             "output_norm.bias"};
    for (int i = 0; i < 4; i++, k++) list[k] = top[i], snprintf(names[k], 64, "%s", top_names[i]);
    for (int l = 0; l < hp->n_layer; l++) {
        const ng_layer *L = &m->layers[l];
        const ng_tensor *t[12] = {L->ln1_w, L->ln1_b, L->qkv_w, L->qkv_b, L->out_w, L->out_b,
                                  L->ln2_w, L->ln2_b, L->up_w,  L->up_b,  L->down_w, L->down_b};
        for (int i = 0; i < 12; i++, k++) list[k] = t[i], snprintf(names[k], 64, "blk.%d.%s", l, blk[i]);
    }
    list[k] = m->output, snprintf(names[k], 64, "output.weight");

    for (int i = 0; i < n; i++) {
        const ng_tensor *t = list[i];
        ng_type to = t->ne[1] == 1 ? NG_F32 : wtype;
        const void *data = t->data;
        if (to != t->type) {
            int64_t ne = ng_tensor_nelem(t);
            float *f = xmalloc((size_t)ne * sizeof *f);
            ng_to_f32(f, t->data, t->type, ne);
            bufs[i] = xmalloc(ng_row_size(to, t->ne[0]) * (size_t)(ne / t->ne[0]));
            ng_from_f32(bufs[i], f, to, ne);
            free(f);
            data = bufs[i];
        }
        int64_t ne[2] = {t->ne[0], t->ne[1]};
        gguf_add_tensor(w, names[i], to, ne[1] == 1 ? 1 : 2, ne, data);
    }
    int rc = gguf_write(w, path, err);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(names);
    free(list);
    gguf_writer_free(w);
    return rc;
}
