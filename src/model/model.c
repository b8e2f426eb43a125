/* model — loading (GGUF, Hugging Face folder), random construction and GGUF saving of models.
 *
 * Each architecture is a table of its tensors: the GGUF name (llama.cpp's), where the pointer
 * lives in ng_model / ng_layer, the expected shape, and the Hugging Face name with the
 * transform that turns the HF layout into ours. Loading, saving and random construction all
 * walk the same table. The forward pass is in forward.c. */
#include "model/model.h"

#include "core/kernels.h"
#include "core/quant.h"
#include "core/team.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- tensor tables ------------------------------------------------------------------------ */

/* symbolic dimensions, resolved from the hyperparameters */
enum { D1, DE, DF, DV, DC, D3E, DKV };
/* how a Hugging Face tensor becomes ours */
enum { HF_AS_IS, HF_TRANSPOSE, HF_ROPE_Q, HF_ROPE_K };

typedef struct {
    const char *gguf;  /* "token_embd.weight", or "attn_q.weight" under blk.N. for layer tensors */
    size_t off;        /* offset of the const ng_tensor * in ng_model or ng_layer */
    int ne0, ne1;      /* symbolic shape, ggml order */
    int optional;
    const char *hf;    /* Hugging Face name ("%d" = layer); NULL when HF has none */
    int hf_transform;
} tensor_spec;

#define MF(f) offsetof(ng_model, f)
#define LF(f) offsetof(ng_layer, f)

static const tensor_spec GPT2_TOP[] = {
    {"token_embd.weight", MF(tok_embd), DE, DV, 0, "wte.weight", HF_AS_IS},
    {"position_embd.weight", MF(pos_embd), DE, DC, 0, "wpe.weight", HF_AS_IS},
    {"output_norm.weight", MF(out_norm_w), DE, D1, 0, "ln_f.weight", HF_AS_IS},
    {"output_norm.bias", MF(out_norm_b), DE, D1, 0, "ln_f.bias", HF_AS_IS},
    {"output.weight", MF(output), DE, DV, 1, "lm_head.weight", HF_AS_IS},
};
static const tensor_spec GPT2_LAYER[] = {
    {"attn_norm.weight", LF(attn_norm_w), DE, D1, 0, "h.%d.ln_1.weight", HF_AS_IS},
    {"attn_norm.bias", LF(attn_norm_b), DE, D1, 0, "h.%d.ln_1.bias", HF_AS_IS},
    {"attn_qkv.weight", LF(qkv_w), DE, D3E, 0, "h.%d.attn.c_attn.weight", HF_TRANSPOSE},
    {"attn_qkv.bias", LF(qkv_b), D3E, D1, 0, "h.%d.attn.c_attn.bias", HF_AS_IS},
    {"attn_output.weight", LF(out_w), DE, DE, 0, "h.%d.attn.c_proj.weight", HF_TRANSPOSE},
    {"attn_output.bias", LF(out_b), DE, D1, 0, "h.%d.attn.c_proj.bias", HF_AS_IS},
    {"ffn_norm.weight", LF(ffn_norm_w), DE, D1, 0, "h.%d.ln_2.weight", HF_AS_IS},
    {"ffn_norm.bias", LF(ffn_norm_b), DE, D1, 0, "h.%d.ln_2.bias", HF_AS_IS},
    {"ffn_up.weight", LF(up_w), DE, DF, 0, "h.%d.mlp.c_fc.weight", HF_TRANSPOSE},
    {"ffn_up.bias", LF(up_b), DF, D1, 0, "h.%d.mlp.c_fc.bias", HF_AS_IS},
    {"ffn_down.weight", LF(down_w), DF, DE, 0, "h.%d.mlp.c_proj.weight", HF_TRANSPOSE},
    {"ffn_down.bias", LF(down_b), DE, D1, 0, "h.%d.mlp.c_proj.bias", HF_AS_IS},
};
static const tensor_spec LLAMA_TOP[] = {
    {"token_embd.weight", MF(tok_embd), DE, DV, 0, "model.embed_tokens.weight", HF_AS_IS},
    {"output_norm.weight", MF(out_norm_w), DE, D1, 0, "model.norm.weight", HF_AS_IS},
    {"output.weight", MF(output), DE, DV, 1, "lm_head.weight", HF_AS_IS},
};
static const tensor_spec LLAMA_LAYER[] = {
    {"attn_norm.weight", LF(attn_norm_w), DE, D1, 0, "model.layers.%d.input_layernorm.weight", HF_AS_IS},
    {"attn_q.weight", LF(q_w), DE, DE, 0, "model.layers.%d.self_attn.q_proj.weight", HF_ROPE_Q},
    {"attn_k.weight", LF(k_w), DE, DKV, 0, "model.layers.%d.self_attn.k_proj.weight", HF_ROPE_K},
    {"attn_v.weight", LF(v_w), DE, DKV, 0, "model.layers.%d.self_attn.v_proj.weight", HF_AS_IS},
    {"attn_output.weight", LF(out_w), DE, DE, 0, "model.layers.%d.self_attn.o_proj.weight", HF_AS_IS},
    {"ffn_norm.weight", LF(ffn_norm_w), DE, D1, 0, "model.layers.%d.post_attention_layernorm.weight", HF_AS_IS},
    {"ffn_gate.weight", LF(gate_w), DE, DF, 0, "model.layers.%d.mlp.gate_proj.weight", HF_AS_IS},
    {"ffn_up.weight", LF(up_w), DE, DF, 0, "model.layers.%d.mlp.up_proj.weight", HF_AS_IS},
    {"ffn_down.weight", LF(down_w), DF, DE, 0, "model.layers.%d.mlp.down_proj.weight", HF_AS_IS},
};

typedef struct {
    const char *name; /* general.architecture */
    const tensor_spec *top, *layer;
    int n_top, n_layer;
} arch_info;

#define N(a) (int)(sizeof a / sizeof a[0])
static const arch_info ARCHS[] = {
    [NG_ARCH_GPT2] = {"gpt2", GPT2_TOP, GPT2_LAYER, N(GPT2_TOP), N(GPT2_LAYER)},
    [NG_ARCH_LLAMA] = {"llama", LLAMA_TOP, LLAMA_LAYER, N(LLAMA_TOP), N(LLAMA_LAYER)},
};

const char *ng_arch_name(ng_arch a) { return ARCHS[a].name; }

static int64_t dim_of(const ng_hparams *hp, int d) {
    switch (d) {
    case DE: return hp->n_embd;
    case DF: return hp->n_ff;
    case DV: return hp->n_vocab;
    case DC: return hp->n_ctx;
    case D3E: return 3 * (int64_t)hp->n_embd;
    case DKV: return ng_kv_dim(hp);
    default: return 1;
    }
}

static const ng_tensor **slot(ng_model *m, const tensor_spec *s, int layer) {
    char *base = layer < 0 ? (char *)m : (char *)&m->layers[layer];
    return (const ng_tensor **)(base + s->off);
}

static void spec_name(const tensor_spec *s, int layer, char *out, size_t cap) {
    if (layer < 0) snprintf(out, cap, "%s", s->gguf);
    else snprintf(out, cap, "blk.%d.%s", layer, s->gguf);
}

/* ---- owned tensors ---------------------------------------------------------------------- */

/* Owned buffers under this size are carved from chunks of CHUNK_BYTES on transparent huge
 * pages; larger ones are allocated alone (ng_aligned_alloc puts those on huge pages). Allocated
 * one by one, matrices under 4 MB (TinyLlama q4_0's q, k, v and o: 2.4 and 0.3 MB) were on 4 KiB
 * pages, a TLB miss every 4 KiB of weights: on one 2-core Zen 5 VM, with those matrices moved into
 * one huge-page block (in-process A/B of the 22 layers' products, 20 rounds): q, k, v 53.8 ->
 * 48.8 us a layer, o 40.8 -> 39.5. A chunk's pages are committed as tensors fill them: at most a
 * part-used huge page is left over per chunk. */
#define CHUNK_MAX ((size_t)4 << 20)
#define CHUNK_BYTES ((size_t)32 << 20)

static void *chunk_take(ng_model *m, size_t n) {
    n = (n + 63) & ~(size_t)63;
    if (!m->n_chunks || m->chunk_used + n > CHUNK_BYTES) {
        m->chunks = xrealloc(m->chunks, (size_t)(m->n_chunks + 1) * sizeof *m->chunks);
        m->chunks[m->n_chunks++] = ng_huge_alloc(CHUNK_BYTES);
        m->chunk_used = 0;
    }
    void *p = m->chunks[m->n_chunks - 1] + m->chunk_used;
    m->chunk_used += n;
    return p;
}

static int in_chunk(const ng_model *m, const void *p) {
    for (int i = 0; i < m->n_chunks; i++)
        if ((const char *)p >= m->chunks[i] && (const char *)p < m->chunks[i] + CHUNK_BYTES) return 1;
    return 0;
}

/* A tensor the model keeps track of, over data (a view into a mapping) or, when data is NULL,
 * over a buffer it allocates; freed by ng_model_free. */
static ng_tensor *model_add(ng_model *m, const char *name, ng_type type, int64_t ne0, int64_t ne1, void *data) {
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
    t->data = data ? data : t->nbytes < CHUNK_MAX ? chunk_take(m, t->nbytes) : ng_aligned_alloc(t->nbytes);
    m->owned[m->n_owned++] = t;
    return t;
}

static ng_tensor *model_own(ng_model *m, const char *name, ng_type type, int64_t ne0, int64_t ne1) {
    return model_add(m, name, type, ne0, ne1, NULL);
}

ng_tensor *ng_model_own_tensor(ng_model *m, const char *name, ng_type type, int64_t ne0, int64_t ne1) {
    return model_own(m, name, type, ne0, ne1);
}

static int is_float_type(ng_type t) { return t == NG_F32 || t == NG_F16 || t == NG_BF16; }

/* ---- binding ------------------------------------------------------------------------------ */

static int check_hparams(const ng_hparams *hp, const char *path, ng_error *err) {
    if (hp->n_embd <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0 || hp->n_layer <= 0 || hp->n_ff <= 0 ||
        hp->n_ctx <= 0 || hp->n_vocab <= 0)
        return ng_error_set(err,
                            "%s: invalid hyperparameters (n_embd %d, n_head %d, n_head_kv %d, n_layer %d, n_ff %d, "
                            "n_ctx %d, n_vocab %d)",
                            path, hp->n_embd, hp->n_head, hp->n_head_kv, hp->n_layer, hp->n_ff, hp->n_ctx, hp->n_vocab);
    if (hp->n_embd % hp->n_head != 0)
        return ng_error_set(err, "%s: n_embd %d is not a multiple of n_head %d", path, hp->n_embd, hp->n_head);
    if (hp->n_head % hp->n_head_kv != 0)
        return ng_error_set(err, "%s: n_head %d is not a multiple of n_head_kv %d", path, hp->n_head, hp->n_head_kv);
    if (hp->arch == NG_ARCH_LLAMA && ng_head_dim(hp) % 2 != 0)
        return ng_error_set(err, "%s: head dimension %d is odd (RoPE needs pairs)", path, ng_head_dim(hp));
    if (hp->n_embd > (1 << 16) || hp->n_ff > (1 << 18) || hp->n_layer > 1024 || hp->n_ctx > (1 << 20) ||
        hp->n_vocab > (1 << 22))
        return ng_error_set(err, "%s: hyperparameters out of the supported range", path);
    if (!(hp->norm_eps > 0 && hp->norm_eps < 1))
        return ng_error_set(err, "%s: norm epsilon %g out of range", path, hp->norm_eps);
    if (hp->arch == NG_ARCH_LLAMA && !(hp->rope_theta > 0 && hp->rope_scale > 0 && isfinite(hp->rope_scale)))
        return ng_error_set(err, "%s: RoPE base %g / scale %g out of range", path, hp->rope_theta, hp->rope_scale);
    return NG_OK;
}

/* Looks up one tensor in the model's source by its GGUF name; NULL when absent (err->msg
 * empty) or on error (err->msg set). */
typedef const ng_tensor *(*find_fn)(ng_model *m, const tensor_spec *s, int layer, ng_error *err);

static int bind_one(ng_model *m, find_fn find, const tensor_spec *s, int layer, ng_error *err) {
    char name[96];
    spec_name(s, layer, name, sizeof name);
    ng_error e = {{0}};
    const ng_tensor *t = find(m, s, layer, &e);
    if (!t) {
        if (e.msg[0]) return ng_error_set(err, "%s", e.msg);
        if (!s->optional) return ng_error_set(err, "%s: missing tensor '%s'", m->path, name);
        return NG_OK;
    }
    int64_t ne0 = dim_of(&m->hp, s->ne0), ne1 = dim_of(&m->hp, s->ne1);
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return ng_error_set(err, "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", m->path,
                            name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                            (long long)ne0, (long long)ne1);
    if (!ng_type_can_dequant(t->type))
        return ng_error_set(err,
                            "%s: tensor '%s' has type %s, which this build cannot compute with (f32, f16, bf16, q8_0, "
                            "q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)",
                            m->path, name, ng_type_name(t->type));
    if (ne1 == 1 && t->type != NG_F32) { /* vectors are used as f32 */
        ng_tensor *c = model_own(m, name, NG_F32, ne0, 1);
        ng_dequantize_row(t->type, t->data, c->data, ne0);
        t = c;
    }
    *slot(m, s, layer) = t;
    return NG_OK;
}

static int bind_all(ng_model *m, find_fn find, ng_error *err) {
    const arch_info *a = &ARCHS[m->hp.arch];
    m->layers = xcalloc((size_t)m->hp.n_layer, sizeof *m->layers);
    for (int i = 0; i < a->n_top; i++)
        if (bind_one(m, find, &a->top[i], -1, err)) return NG_ERR;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int i = 0; i < a->n_layer; i++)
            if (bind_one(m, find, &a->layer[i], l, err)) return NG_ERR;
    if (!m->output) m->output = m->tok_embd; /* tied embeddings */
    return NG_OK;
}

/* ---- GGUF --------------------------------------------------------------------------------- */

static const ng_tensor *find_gguf(ng_model *m, const tensor_spec *s, int layer, ng_error *err) {
    char name[96];
    spec_name(s, layer, name, sizeof name);
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

static int gguf_hparam_f32(const gguf_ctx *g, const char *arch, const char *key, float def, float *out,
                           ng_error *err) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_find_key(g, k) < 0) {
        if (isnan(def)) return ng_error_set(err, "%s: missing key '%s'", gguf_path(g), k);
        *out = def;
        return NG_OK;
    }
    return gguf_get_f32(g, k, out, err);
}

static int load_gguf(ng_model *m, ng_error *err) {
    gguf_ctx *g = m->gguf = gguf_open(m->path, err);
    if (!g) return NG_ERR;
    const char *arch = gguf_get_str(g, "general.architecture");
    if (!arch) return ng_error_set(err, "%s: missing key 'general.architecture'", m->path);
    ng_hparams *hp = &m->hp;
    if (!strcmp(arch, "gpt2")) hp->arch = NG_ARCH_GPT2;
    else if (!strcmp(arch, "llama")) hp->arch = NG_ARCH_LLAMA;
    else
        return ng_error_set(err, "%s: architecture '%s' is not supported by this build (supported: gpt2, llama)",
                            m->path, arch);
    if (gguf_hparam(g, arch, "context_length", &hp->n_ctx, err) ||
        gguf_hparam(g, arch, "embedding_length", &hp->n_embd, err) ||
        gguf_hparam(g, arch, "feed_forward_length", &hp->n_ff, err) ||
        gguf_hparam(g, arch, "block_count", &hp->n_layer, err) ||
        gguf_hparam(g, arch, "attention.head_count", &hp->n_head, err))
        return NG_ERR;
    char k[128];
    snprintf(k, sizeof k, "%s.attention.head_count_kv", arch);
    hp->n_head_kv = hp->n_head;
    if (gguf_find_key(g, k) >= 0 && gguf_hparam(g, arch, "attention.head_count_kv", &hp->n_head_kv, err)) return NG_ERR;
    if (hp->arch == NG_ARCH_GPT2) {
        if (gguf_hparam_f32(g, arch, "attention.layer_norm_epsilon", NAN, &hp->norm_eps, err)) return NG_ERR;
    } else {
        float factor = 1;
        if (gguf_hparam_f32(g, arch, "attention.layer_norm_rms_epsilon", NAN, &hp->norm_eps, err) ||
            gguf_hparam_f32(g, arch, "rope.freq_base", 10000.0f, &hp->rope_theta, err) ||
            gguf_hparam_f32(g, arch, "rope.scale_linear", 1.0f, &factor, err))
            return NG_ERR;
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        const char *rs = gguf_get_str(g, k);
        if (rs && strcmp(rs, "none") != 0) {
            if (strcmp(rs, "linear") != 0)
                return ng_error_set(err, "%s: %s '%s' is not supported (none, linear)", m->path, k, rs);
            if (gguf_hparam_f32(g, arch, "rope.scaling.factor", NAN, &factor, err)) return NG_ERR;
        }
        hp->rope_scale = factor > 0 ? 1.0f / factor : 0;
        snprintf(k, sizeof k, "%s.rope.dimension_count", arch);
        uint32_t rd;
        if (gguf_find_key(g, k) >= 0 && gguf_get_u32(g, k, &rd, err) == NG_OK && hp->n_head > 0 &&
            (int)rd != hp->n_embd / hp->n_head)
            return ng_error_set(err, "%s: %s = %u: partial rotary embeddings are not supported", m->path, k, rd);
    }
    int ti = gguf_find_tensor(g, "token_embd.weight");
    if (ti < 0) return ng_error_set(err, "%s: missing tensor 'token_embd.weight'", m->path);
    hp->n_vocab = (int)gguf_tensor(g, ti)->ne[1];
    if (check_hparams(hp, m->path, err)) return NG_ERR;
    const char *name = gguf_get_str(g, "general.name");
    if (name) m->name = xstrdup(name);
    if (bind_all(m, find_gguf, err)) return NG_ERR;
    ng_error te = {{0}};
    m->tok = tok_from_gguf(g, &te);
    if (!m->tok && te.msg[0]) return ng_error_set(err, "%s", te.msg);
    return NG_OK;
}

/* ---- Hugging Face folder ------------------------------------------------------------------- */

/* Our layout from HF's: GPT-2's Conv1D stores (in, out), ne = {out, in}: transpose to rows of
 * inputs. LLaMA's q/k rows are ordered per head as [first halves | second halves] for HF's
 * rotate_half RoPE; llama.cpp (and we) rotate interleaved pairs, so row s*hd/2 + j of a head
 * moves to row 2j + s, as llama.cpp's converter does. */
static const ng_tensor *hf_transform(ng_model *m, const ng_tensor *t, const char *name, int kind) {
    size_t es = ng_type_size(t->type);
    const char *src = t->data;
    if (kind == HF_TRANSPOSE) {
        int64_t out_n = t->ne[0], in_n = t->ne[1];
        ng_tensor *c = model_own(m, name, t->type, in_n, out_n);
        char *dst = c->data;
        for (int64_t i = 0; i < in_n; i++)
            for (int64_t o = 0; o < out_n; o++)
                memcpy(dst + ((size_t)o * (size_t)in_n + (size_t)i) * es, src + ((size_t)i * (size_t)out_n + (size_t)o) * es,
                       es);
        return c;
    }
    int64_t K = t->ne[0], rows = t->ne[1];
    int hd = ng_head_dim(&m->hp), half = hd / 2;
    ng_tensor *c = model_own(m, name, t->type, K, rows);
    size_t row_bytes = (size_t)K * es;
    for (int64_t r = 0; r < rows; r++) {
        int64_t head = r / hd, within = r % hd, s = within / half, j = within % half;
        memcpy((char *)c->data + (size_t)(head * hd + 2 * j + s) * row_bytes, src + (size_t)r * row_bytes, row_bytes);
    }
    return c;
}

static const ng_tensor *find_hf(ng_model *m, const tensor_spec *s, int layer, ng_error *err) {
    char hf[160], pre[192], name[96];
    if (!s->hf) return NULL;
    snprintf(hf, sizeof hf, s->hf, layer);
    int i = st_find(m->st, hf);
    if (i < 0 && m->hp.arch == NG_ARCH_GPT2) { /* GPT2LMHeadModel state dicts carry a prefix */
        snprintf(pre, sizeof pre, "transformer.%s", hf);
        i = st_find(m->st, pre);
    }
    if (i < 0) return NULL;
    const ng_tensor *t = st_tensor(m->st, i);
    if (s->hf_transform == HF_AS_IS || t->n_dims != 2 || !is_float_type(t->type)) return t;
    spec_name(s, layer, name, sizeof name);
    if (s->hf_transform != HF_TRANSPOSE && t->ne[1] % ng_head_dim(&m->hp) != 0) return t; /* bind reports shape */
    return hf_transform(m, t, name, s->hf_transform);
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

static float json_float(const cJSON *cfg, const char *key, float def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return cJSON_IsNumber(v) ? (float)v->valuedouble : def;
}

static int hf_config_gpt2(const cJSON *cfg, ng_hparams *hp, const char *p, ng_error *err) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(cfg, "activation_function");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu_new") != 0 &&
        strcmp(act->valuestring, "gelu_pytorch_tanh") != 0)
        return ng_error_set(err, "%s: activation_function \"%s\" is not supported (gelu_new)", p, act->valuestring);
    int n_pos;
    if (json_int(cfg, "n_embd", -1, &hp->n_embd, p, err) || json_int(cfg, "n_layer", -1, &hp->n_layer, p, err) ||
        json_int(cfg, "n_head", -1, &hp->n_head, p, err) || json_int(cfg, "vocab_size", -1, &hp->n_vocab, p, err) ||
        json_int(cfg, "n_positions", 0, &n_pos, p, err) || json_int(cfg, "n_ctx", n_pos, &hp->n_ctx, p, err) ||
        json_int(cfg, "n_inner", 4 * hp->n_embd, &hp->n_ff, p, err))
        return NG_ERR;
    if (n_pos) hp->n_ctx = n_pos;
    hp->n_head_kv = hp->n_head;
    hp->norm_eps = json_float(cfg, "layer_norm_epsilon", 1e-5f);
    return NG_OK;
}

static int hf_config_llama(const cJSON *cfg, ng_hparams *hp, const char *p, ng_error *err) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(cfg, "hidden_act");
    if (cJSON_IsString(act) && strcmp(act->valuestring, "silu") != 0)
        return ng_error_set(err, "%s: hidden_act \"%s\" is not supported (silu)", p, act->valuestring);
    if (json_int(cfg, "hidden_size", -1, &hp->n_embd, p, err) ||
        json_int(cfg, "num_hidden_layers", -1, &hp->n_layer, p, err) ||
        json_int(cfg, "num_attention_heads", -1, &hp->n_head, p, err) ||
        json_int(cfg, "num_key_value_heads", hp->n_head, &hp->n_head_kv, p, err) ||
        json_int(cfg, "vocab_size", -1, &hp->n_vocab, p, err) ||
        json_int(cfg, "intermediate_size", -1, &hp->n_ff, p, err) ||
        json_int(cfg, "max_position_embeddings", -1, &hp->n_ctx, p, err))
        return NG_ERR;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(cfg, "head_dim");
    if (cJSON_IsNumber(hd) && hp->n_head > 0 && (int)hd->valuedouble != hp->n_embd / hp->n_head)
        return ng_error_set(err, "%s: head_dim %d != hidden_size / num_attention_heads is not supported", p,
                            (int)hd->valuedouble);
    hp->norm_eps = json_float(cfg, "rms_norm_eps", 1e-6f);
    hp->rope_theta = json_float(cfg, "rope_theta", 10000.0f);
    hp->rope_scale = 1;
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
        if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
        float factor = json_float(rs, "factor", 0);
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "linear") != 0 || !(factor > 0))
            return ng_error_set(err, "%s: rope_scaling %s is not supported (linear with a positive factor)", p,
                                cJSON_IsString(ty) ? ty->valuestring : "(no type)");
        hp->rope_scale = 1.0f / factor;
    }
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
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "(missing)";
    ng_hparams *hp = &m->hp;
    if (!strcmp(type, "gpt2")) {
        hp->arch = NG_ARCH_GPT2;
        if (hf_config_gpt2(cfg, hp, p, err)) goto done;
    } else if (!strcmp(type, "llama") || !strcmp(type, "mistral")) {
        hp->arch = NG_ARCH_LLAMA;
        if (hf_config_llama(cfg, hp, p, err)) goto done;
    } else {
        ng_error_set(err, "%s: model_type \"%s\" is not supported by this build (supported: gpt2, llama)", p, type);
        goto done;
    }
    if (check_hparams(hp, p, err)) goto done;

    snprintf(p, sizeof p, "%s/model.safetensors", m->path);
    struct stat sb;
    if (stat(p, &sb) != 0) snprintf(p, sizeof p, "%s/model.safetensors.index.json", m->path);
    if (!(m->st = st_open(p, err))) goto done;
    if (bind_all(m, find_hf, err)) goto done;
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

static int g_mmap = 1;

void ng_model_set_mmap(int on) { g_mmap = on; }

/* 2 when t's data is in a file mapping the model holds, 1 when it may be (safetensors shards:
 * mapped, or a loader's aligned copy), 0 when the model allocated it. */
static int in_mapping(const ng_model *m, const ng_tensor *t) {
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i] == t) return 0;
    const uint8_t *p = t->data, *map = m->map;
    if (m->gguf) return gguf_in_mapping(m->gguf, p) ? 2 : 0;
    if (map) return p >= map && p < map + m->map_size ? 2 : 0;
    return m->st != NULL;
}

/* Gives back the whole pages inside [p, p + n) of a clean private file mapping: they are read
 * again from the file if ever touched. */
static void drop_pages(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* The model's weight slots (top-level, then each layer's), n of them; free the array. */
static const ng_tensor ***weight_slots(ng_model *m, int *n_out) {
    int L = m->hp.n_layer, n = 0;
    const ng_tensor ***slots = xmalloc((5 + 16 * (size_t)L) * sizeof *slots);
    const ng_tensor **top[] = {&m->tok_embd, &m->pos_embd, &m->out_norm_w, &m->out_norm_b, &m->output};
    for (int i = 0; i < 5; i++) slots[n++] = top[i];
    for (int l = 0; l < L; l++) {
        ng_layer *y = &m->layers[l];
        const ng_tensor **f[] = {&y->attn_norm_w, &y->attn_norm_b, &y->qkv_w, &y->qkv_b, &y->q_w, &y->k_w, &y->v_w,
                                 &y->out_w, &y->out_b, &y->ffn_norm_w, &y->ffn_norm_b, &y->gate_w, &y->up_w,
                                 &y->up_b, &y->down_w, &y->down_b};
        for (int i = 0; i < 16; i++) slots[n++] = f[i];
    }
    *n_out = n;
    return slots;
}

/* The model's own q4_0 / q8_0 / q4_k / q6_k matrices in the order this machine's kernels read
 * fastest (ng_matmul_native: q4_0r / q8_0r / q4_kr / q6_kr with AVX-512 VNNI; on the AVX2 path
 * q4_0r, q4_kr, q6_kr, and q8_0r with AVX-VNNI), rearranged in place. Decode reads q8_0 weights
 * 10-15% faster so on one Zen 5 machine (the kernel's shuffles are gone), q4_k's 8-44% (on the
 * AVX2 path 47%). Mapped tensors stay as the file has them; rows of other than whole runs (128
 * values; 256 for the k-quants) stay too. */
static void reorder_owned(ng_model *m) {
    for (int i = 0; i < m->n_owned; i++) {
        ng_tensor *t = m->owned[i];
        ng_type to = ng_matmul_native(t->type);
        if (to == t->type || t->n_dims != 2 || t->ne[1] < 2 || t->ne[0] % ng_type_block(to)) continue;
        ng_reorder_rows(t->data, to, t->data, t->type, t->ne[0], t->ne[1]);
        t->type = to;
    }
}

/* ng_model_set_mmap(0): every tensor the model reads from a mapping becomes a copy it owns
 * (a tied output head stays tied), in the kernels' order. */
static void copy_weights(ng_model *m) {
    int n;
    const ng_tensor ***slots = weight_slots(m, &n);
    for (int i = 0; i < n; i++) {
        const ng_tensor *t = *slots[i];
        int where = t ? in_mapping(m, t) : 0;
        if (!where) continue;
        ng_tensor *c = model_own(m, t->name, t->type, t->ne[0], t->ne[1]);
        memcpy(c->data, t->data, t->nbytes);
        if (where == 2) drop_pages(t->data, t->nbytes);
        for (int j = i; j < n; j++) /* the same tensor in another slot (a tied head) */
            if (*slots[j] == t) *slots[j] = c;
    }
    free(slots);
    reorder_owned(m);
}

/* Maps the weights' file pages into the page table now, in one call per tensor, instead of one
 * fault per page during the first forward pass, which would count them in the first prompt's
 * time (5-15% of a 77-token prefill of q4_0 GPT-2 124M and TinyLlama on one machine). Pages not
 * in the page cache are read. Tensors in a GGUF or llama2.c mapping only (a safetensors
 * shard's may be copies). A kernel without MADV_POPULATE_READ (before Linux 5.14) refuses it
 * and nothing changes. */
static void prefault_weights(ng_model *m) {
#ifdef MADV_POPULATE_READ
    int n;
    const ng_tensor ***slots = weight_slots(m, &n);
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < n; i++) {
        const ng_tensor *t = *slots[i];
        if (!t || in_mapping(m, t) != 2 || !t->nbytes) continue;
        uintptr_t a = (uintptr_t)t->data & ~(pg - 1), b = ((uintptr_t)t->data + t->nbytes + pg - 1) & ~(pg - 1);
        (void)madvise((void *)a, b - a, MADV_POPULATE_READ);
    }
    free(slots);
#else
    (void)m;
#endif
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
    if (!g_mmap)
        copy_weights(m);
    else
        prefault_weights(m);
    return m;
}

/* ---- llama2.c checkpoints ------------------------------------------------------------------ */

/* A tensor viewing f32 data inside the mapped checkpoint. */
static const ng_tensor *view(ng_model *m, const char *name, const float *data, int64_t ne0, int64_t ne1) {
    return model_add(m, name, NG_F32, ne0, ne1, (void *)data);
}

static int load_llama2c(ng_model *m, const char *tokenizer, ng_error *err) {
    int fd = open(m->path, O_RDONLY);
    if (fd < 0) return ng_error_set(err, "%s: cannot open: %s", m->path, strerror(errno));
    struct stat sb;
    fstat(fd, &sb);
    size_t size = (size_t)sb.st_size;
    if (size < 7 * sizeof(int32_t)) {
        close(fd);
        return ng_error_set(err, "%s: %zu bytes is too short for a llama2.c header (28 bytes)", m->path, size);
    }
    m->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        return ng_error_set(err, "%s: cannot map: %s", m->path, strerror(errno));
    }
    m->map_size = size;
    int32_t h[7];
    memcpy(h, m->map, sizeof h);
    /* header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: unshared output), seq_len */
    ng_hparams *hp = &m->hp;
    int shared = h[5] > 0;
    *hp = (ng_hparams){.arch = NG_ARCH_LLAMA, .n_embd = h[0], .n_ff = h[1], .n_layer = h[2], .n_head = h[3],
                       .n_head_kv = h[4], .n_vocab = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]), .n_ctx = h[6],
                       .norm_eps = 1e-5f, .rope_theta = 10000.0f, .rope_scale = 1.0f};
    if (check_hparams(hp, m->path, err)) return NG_ERR;
    int64_t E = hp->n_embd, F = hp->n_ff, L = hp->n_layer, V = hp->n_vocab, KV = ng_kv_dim(hp);
    int64_t hd = ng_head_dim(hp);
    int64_t n_floats = V * E + L * (E + E * E + 2 * KV * E + E * E + E + 3 * F * E) + E + hp->n_ctx * hd +
                       (shared ? 0 : V * E);
    size_t want = 7 * sizeof(int32_t) + (size_t)n_floats * sizeof(float);
    if (size != want)
        return ng_error_set(err, "%s: %zu bytes, but a llama2.c checkpoint of this header (dim %d, hidden %d, %d layers, "
                                 "%d heads, %d kv heads, vocab %d, seq_len %d) has %zu",
                            m->path, size, h[0], h[1], h[2], h[3], h[4], h[5], h[6], want);
    const float *p = (const float *)((const char *)m->map + 7 * sizeof(int32_t));
    m->layers = xcalloc((size_t)L, sizeof *m->layers);
    char nm[96];
    m->tok_embd = view(m, "token_embd.weight", p, E, V), p += V * E;
    /* each kind of weight is stored for all layers in a row */
#define PER_LAYER(field, suffix, ne0, ne1)                                                                  \
    for (int l = 0; l < L; l++, p += (ne0) * (ne1)) {                                                       \
        snprintf(nm, sizeof nm, "blk.%d." suffix, l);                                                        \
        m->layers[l].field = view(m, nm, p, ne0, ne1);                                                       \
    }
    PER_LAYER(attn_norm_w, "attn_norm.weight", E, 1);
    PER_LAYER(q_w, "attn_q.weight", E, E);
    PER_LAYER(k_w, "attn_k.weight", E, KV);
    PER_LAYER(v_w, "attn_v.weight", E, KV);
    PER_LAYER(out_w, "attn_output.weight", E, E);
    PER_LAYER(ffn_norm_w, "ffn_norm.weight", E, 1);
    PER_LAYER(gate_w, "ffn_gate.weight", E, F);
    PER_LAYER(down_w, "ffn_down.weight", F, E);
    PER_LAYER(up_w, "ffn_up.weight", E, F);
#undef PER_LAYER
    m->out_norm_w = view(m, "output_norm.weight", p, E, 1), p += E;
    p += hp->n_ctx * hd; /* the legacy RoPE tables: cos and sin, seq_len * head_size / 2 each */
    m->output = shared ? m->tok_embd : view(m, "output.weight", p, E, V);
    if (tokenizer) {
        m->tok = tok_from_llama2c(tokenizer, hp->n_vocab, err);
        if (!m->tok) return NG_ERR;
    }
    return NG_OK;
}

ng_model *ng_model_load_llama2c(const char *path, const char *tokenizer, ng_error *err) {
    ng_model *m = xcalloc(1, sizeof *m);
    m->path = xstrdup(path);
    if (load_llama2c(m, tokenizer, err) != NG_OK) {
        ng_model_free(m);
        return NULL;
    }
    const char *base = strrchr(path, '/');
    m->name = xstrdup(base && base[1] ? base + 1 : path);
    return m;
}

void ng_model_free(ng_model *m) {
    if (!m) return;
    if (m->map) munmap(m->map, m->map_size);
    for (int i = 0; i < m->n_owned; i++) {
        ng_tensor *t = m->owned[i];
        int in_map = m->map && (char *)t->data >= (char *)m->map && (char *)t->data < (char *)m->map + m->map_size;
        if (!in_map && !in_chunk(m, t->data)) free(t->data);
        free((void *)t->name);
        free(t);
    }
    for (int i = 0; i < m->n_chunks; i++) free(m->chunks[i]);
    free(m->chunks);
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

/* A random tensor's rows, a share per thread (a team job). */
typedef struct {
    ng_tensor *c;
    uint64_t base;
    float scale, offset;
} random_job;

static void random_rows(void *ctx, int t, int T) {
    const random_job *j = ctx;
    int64_t ne0 = j->c->ne[0], ne1 = j->c->ne[1], r0 = ne1 * t / T, r1 = ne1 * (t + 1) / T;
    size_t rb = ng_row_size(j->c->type, ne0);
    float *row = xmalloc((size_t)ne0 * sizeof *row);
    for (int64_t r = r0; r < r1; r++) {
        uint64_t st = j->base ^ ((uint64_t)r * 0xd1b54a32d192ed03ull);
        for (int64_t i = 0; i < ne0; i++)
            row[i] = j->offset + j->scale * ((float)(rng_next(&st) >> 40) / (float)(1 << 24) * 2.0f - 1.0f);
        ng_quantize_row(j->c->type, row, (char *)j->c->data + rb * (size_t)r, ne0);
    }
    free(row);
}

/* Uniform weights: matrices of type t with values in ±0.05, norm gains around 1, biases around
 * 0. Rows are made in f32 and converted (quantized) to t, in parallel: row r's generator is
 * seeded from the tensor's draw and r, so the result does not depend on the thread count. */
static const ng_tensor *random_tensor(ng_model *m, const char *name, ng_type t, int64_t ne0, int64_t ne1,
                                      uint64_t *rng) {
    int is_norm = strstr(name, "norm.weight") != NULL;
    ng_type type = ne1 == 1 ? NG_F32 : (ne0 % ng_type_block(t) ? NG_F16 : t);
    random_job j = {model_own(m, name, type, ne0, ne1), rng_next(rng), ne1 == 1 ? 0.1f : 0.05f, is_norm ? 1.0f : 0.0f};
    ng_team_run(ne0 * ne1 > (1 << 16) ? ng_threads() : 1, random_rows, &j);
    return j.c;
}

ng_model *ng_model_random(const ng_hparams *hp, ng_type wtype, uint64_t seed) {
    ng_model *m = xcalloc(1, sizeof *m);
    m->hp = *hp;
    m->path = xstrdup("(random)");
    m->name = xstrdup("random");
    m->layers = xcalloc((size_t)hp->n_layer, sizeof *m->layers);
    uint64_t rng = seed;
    const arch_info *a = &ARCHS[hp->arch];
    char name[96];
    for (int l = -1; l < hp->n_layer; l++) {
        const tensor_spec *specs = l < 0 ? a->top : a->layer;
        int n = l < 0 ? a->n_top : a->n_layer;
        for (int i = 0; i < n; i++) {
            if (specs[i].optional) continue; /* the output head stays tied */
            spec_name(&specs[i], l, name, sizeof name);
            *slot(m, &specs[i], l) =
                random_tensor(m, name, wtype, dim_of(hp, specs[i].ne0), dim_of(hp, specs[i].ne1), &rng);
        }
    }
    m->output = m->tok_embd;
    reorder_owned(m);
    return m;
}

/* ---- sizes and saving -------------------------------------------------------------------- */

size_t ng_model_weight_bytes(const ng_model *m) {
    size_t b = m->output->nbytes;
    const arch_info *a = &ARCHS[m->hp.arch];
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int i = 0; i < a->n_layer; i++) {
            const ng_tensor *t = *slot((ng_model *)m, &a->layer[i], l);
            if (t && t->ne[1] > 1) b += t->nbytes;
        }
    return b;
}

ng_type ng_model_wtype(const ng_model *m) { return ng_type_base(m->layers[0].out_w->type); }

/* llama.cpp's general.file_type values for the types we write. */
static uint32_t file_type_of(ng_type t) {
    switch (t) {
    case NG_F16: return 1;
    case NG_Q4_0: return 2;
    case NG_Q8_0: return 7;
    case NG_Q4_K:
        return 14; /* llama.cpp's "mostly Q4_K_S": every matrix q4_k */
    case NG_Q6_K:
        return 18;
    case NG_BF16: return 32;
    default: return 0;
    }
}

static void write_hparams(const ng_model *m, gguf_writer *w) {
    const ng_hparams *hp = &m->hp;
    const char *arch = ARCHS[hp->arch].name;
    char k[128];
#define SET_U32(key, v) (snprintf(k, sizeof k, "%s." key, arch), gguf_set_u32(w, k, (uint32_t)(v)))
#define SET_F32(key, v) (snprintf(k, sizeof k, "%s." key, arch), gguf_set_f32(w, k, (v)))
    SET_U32("context_length", hp->n_ctx);
    SET_U32("embedding_length", hp->n_embd);
    SET_U32("feed_forward_length", hp->n_ff);
    SET_U32("block_count", hp->n_layer);
    SET_U32("attention.head_count", hp->n_head);
    if (hp->arch == NG_ARCH_GPT2) {
        SET_F32("attention.layer_norm_epsilon", hp->norm_eps);
    } else {
        SET_U32("attention.head_count_kv", hp->n_head_kv);
        SET_F32("attention.layer_norm_rms_epsilon", hp->norm_eps);
        SET_F32("rope.freq_base", hp->rope_theta);
        SET_U32("rope.dimension_count", ng_head_dim(hp));
        SET_U32("vocab_size", hp->n_vocab);
        if (hp->rope_scale != 1.0f) {
            snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
            gguf_set_str(w, k, "linear");
            SET_F32("rope.scaling.factor", 1.0f / hp->rope_scale);
        }
    }
#undef SET_U32
#undef SET_F32
}

/* The type a tensor is written as: vectors stay f32; a matrix whose rows do not fill whole
 * blocks of a quantized type falls back to f16 (as llama.cpp's quantizer does). */
static ng_type save_type(const ng_tensor *t, ng_type wtype) {
    if (t->ne[1] == 1) return NG_F32;
    if (t->ne[0] % ng_type_block(wtype) != 0) return NG_F16;
    return wtype;
}

/* Layer l of n whose attn_v / ffn_down the K_M mix keeps at 6 bits: the first and last eighth
 * of the layers, and every third layer between (llama.cpp's choice for Q4_K_M). */
static int mix_more_bits(int l, int n) { return l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2; }

/* The type the K_M mix gives the matrix named name (layer l of n; -1 for the others): q6_k for
 * the output head (the token embedding where it is the head too), for attn_v (GPT-2's fused
 * attn_qkv, which holds v) and ffn_down of mix_more_bits' layers; q4_k for the rest. */
static ng_type mix_type(const char *name, int l, int n, int tied) {
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) return NG_Q6_K;
    if (l >= 0 && mix_more_bits(l, n) &&
        (strstr(name, ".attn_v.weight") || strstr(name, ".attn_qkv.weight") ||
         strstr(name, ".ffn_down.weight")))
        return NG_Q6_K;
    return NG_Q4_K;
}

int ng_model_save_gguf(const ng_model *m, const char *path, ng_type wtype, ng_error *err) {
    return ng_model_save_gguf_mix(m, path, wtype, NG_MIX_NONE, err);
}

int ng_model_save_gguf_mix(const ng_model *m, const char *path, ng_type wtype, ng_mix mix, ng_error *err) {
    if (mix == NG_MIX_K_M) wtype = NG_Q4_K;
    if (!ng_type_can_quant(wtype))
        return ng_error_set(err, "cannot write type %s (supported: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)",
                            ng_type_name(wtype));
    const ng_hparams *hp = &m->hp;
    const arch_info *a = &ARCHS[hp->arch];
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", a->name);
    gguf_set_str(w, "general.name", m->name);
    gguf_set_u32(w, "general.file_type",
                 mix == NG_MIX_K_M ? 15 : file_type_of(wtype)); /* 15: llama.cpp's Q4_K_M */
    if (!is_float_type(wtype)) gguf_set_u32(w, "general.quantization_version", 2);
    write_hparams(m, w);
    if (m->tok) tok_write_gguf(m->tok, w);

    /* Every tensor of the table by its GGUF name. A tied output head is left out (the file
     * stays tied, and half the size for a small-vocabulary model); loaders, llama.cpp's
     * included, take token_embd.weight as the head when output.weight is absent. */
    int cap = a->n_top + a->n_layer * hp->n_layer, n = 0;
    void **bufs = xcalloc((size_t)cap, sizeof *bufs);
    int tty = isatty(2); /* progress on a terminal: a 7B model's conversion takes a minute */
    char name[96];
    for (int l = -1; l < hp->n_layer; l++) {
        const tensor_spec *specs = l < 0 ? a->top : a->layer;
        int ns = l < 0 ? a->n_top : a->n_layer;
        for (int i = 0; i < ns; i++, n++) {
            const ng_tensor *t = *slot((ng_model *)m, &specs[i], l);
            if (!t || (specs[i].off == MF(output) && t == m->tok_embd)) continue;
            spec_name(&specs[i], l, name, sizeof name);
            ng_type to = save_type(
                t, mix == NG_MIX_K_M ? mix_type(name, l, hp->n_layer, m->output == m->tok_embd) : wtype);
            const void *data = t->data;
            if (to != t->type) {
                if (tty) ng_log("\r  converting %-40s to %-5s", name, ng_type_name(to));
                data = bufs[n] = ng_convert_rows(t->data, t->type, to, t->ne[0], ng_tensor_nelem(t) / t->ne[0]);
            }
            int64_t ne[2] = {t->ne[0], t->ne[1]};
            gguf_add_tensor(w, name, to, ne[1] == 1 ? 1 : 2, ne, data);
        }
    }
    if (tty) ng_log("\r%*s\r", 60, ""); /* the progress line cleared */
    int rc = gguf_write(w, path, err);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(w);
    return rc;
}
