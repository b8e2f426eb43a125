/* forward — the transformer forward pass with a KV cache, for every architecture, and the
 * per-sequence state.
 *
 * GPT-2 (pre-LayerNorm):
 *   x = wte[tok] + wpe[pos]
 *   per layer: x += W_o · attn(LN1(x)) ; x += W_down · gelu(W_up · LN2(x))
 *   logits = W_out · LN_f(x)
 * LLaMA:
 *   x = wte[tok]
 *   per layer: x += W_o · attn(rope(W_q·n), rope(W_k·n), W_v·n) with n = RMSNorm1(x), grouped-query
 *              x += W_down · (silu(W_gate · m) * (W_up · m)) with m = RMSNorm2(x)
 *   logits = W_out · RMSNorm_f(x)
 * A call processes a chunk of up to max_batch tokens at once, so the weights are read once per
 * chunk (batched prefill). */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/kernels.h"
#include "core/quant.h"
#include "core/team.h"
#include "core/util.h"
#include "model/lora.h"
#include "model/model.h"

/* Query heads that share a KV head (grouped-query attention) run as one work item of up to
 * ATT_GROUP heads, so each cached key and value row is read once for all of them instead of
 * once per head: at decode, attention reads the whole cache per token, and with several
 * sequences in a batch it reads several. Each head's sums are those of the head alone. */
#define ATT_GROUP 16

/* Heads per attention item at most: the largest divisor of the group size up to ATT_GROUP. */
static int att_group(const ng_hparams *hp) {
    int group = hp->n_head / hp->n_head_kv, G = group < ATT_GROUP ? group : ATT_GROUP;
    while (group % G) G--;
    return G;
}

/* Scratch rows an attention item needs at most, with batches of up to B rows: a prompt's rows
 * of one head go NG_ATT_ROWS at a time (see attention) when fewer heads share a KV head. */
static int att_scratch_rows(const ng_hparams *hp, int B) {
    int G = att_group(hp);
    return B > 1 && G < NG_ATT_ROWS ? NG_ATT_ROWS : G;
}

static ng_type g_kv_type = NG_F32;

int ng_set_kv_type(ng_type t) {
    if (t != NG_F32 && t != NG_F16) return -1;
    g_kv_type = t;
    return 0;
}

ng_type ng_kv_type(void) { return g_kv_type; }

/* KV caches up to this size lie on transparent huge pages. A sequence's cache is written a
 * position at a time, one page per KV head and layer apart: on 4 KiB pages each head and layer
 * faults in a fresh page every few positions (GPT-2 124M with an f32 cache: 288 pages every 16
 * tokens), and a fault costs ~11 us on one 2-core Zen 5 VM (0.25 us per 4 KiB when the kernel
 * zeroes a 2 MiB page at once). There, timing a fresh sequence's decode in one process, GPT-2
 * 124M q4_0 took 10-17% less time a step on huge pages (faster in 26 of 26 rounds), and
 * `generate -n 300` ran at 810-845 tok/s instead of 640-705 (its 2-token prompt in 11 ms
 * instead of 17-20); a reused cache, whose pages are already there, ran as fast either way.
 * The price: the first token would commit every huge page (each holds several heads' caches),
 * so the cache is committed when the state is made, where 4 KiB pages commit as positions fill
 * (NG_STATE_LAZY_KV keeps those). Beyond this size (a 7B model's 4096-position cache: 4.3 GB)
 * that costs more memory than the faults cost time. */
#define KV_HUGE_MAX ((size_t)1 << 30)
/* From this size: a smaller cache has few pages to fault in, and a huge page would be mostly
 * unused memory. The edge's beam search makes a cache per hypothesis and request (1-4 MB for
 * its 6-layer GPT-2): on 4 KiB pages their faults took ~6% of a completion. */
#define KV_HUGE_MIN ((size_t)1 << 20)

static size_t kv_esize(const ng_state *s) { return ng_type_size(s->kv_type); }

/* Positions a KV head's cache holds: n_ctx in whole key tiles (see ng_attend). */
static size_t kv_len(const ng_state *s) { return ((size_t)s->n_ctx + NG_ATT_KT - 1) / NG_ATT_KT * NG_ATT_KT; }

/* A prompt's attention runs in bf16 (ng_attend_rows_bf16, ng_attend_bf16) when turned on
 * (ng_kernel_set_bf16_attention), where its rows are one sequence's, at least this many (fewer:
 * packing the cached keys and values would cost more than it saves), and its products run on
 * integer dot products (8-bit activations). The append job packs each KV head's cache
 * into s->att16 after appending to it. In-process A/B on one 2-core Zen 5 VM: GPT-2 124M's
 * 512-token q8_0 prefill -5.9% (faster in 10 of 10 rounds), TinyLlama 1.1B's shape (6 layers)
 * q4_0 -7.3% (5 of 6). */
#define ATT16_MIN_B 16

/* Elements of a KV head's part of s->att16: its bf16 keys, then values, for n_ctx positions. */
static size_t att16_head(const ng_state *s, int hd) {
    return ng_attend_bf16_keys(s->n_ctx, hd) + ng_attend_bf16_values(s->n_ctx, hd);
}

ng_state *ng_state_new(const ng_model *m, int n_ctx, int max_batch) {
    return ng_state_new_flags(m, n_ctx, max_batch, 0);
}

ng_state *ng_state_new_flags(const ng_model *m, int n_ctx, int max_batch, unsigned flags) {
    const ng_hparams *hp = &m->hp;
    if (n_ctx <= 0 || n_ctx > hp->n_ctx) n_ctx = hp->n_ctx;
    if (max_batch < 0) max_batch = 1;
    ng_state *s = xcalloc(1, sizeof *s);
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    size_t E = (size_t)hp->n_embd, KV = (size_t)ng_kv_dim(hp), L = (size_t)hp->n_layer, B = (size_t)max_batch;
    size_t kv_n = L * kv_len(s) * KV;
    s->kv_type = g_kv_type == NG_F16 && ng_head_dim(hp) <= NG_ATT_MAX_F16_HEAD ? NG_F16 : NG_F32;
    size_t kv_bytes = 2 * kv_n * kv_esize(s);
    int huge = kv_bytes >= KV_HUGE_MIN && kv_bytes <= KV_HUGE_MAX && !(flags & NG_STATE_LAZY_KV);
    s->kv = huge ? ng_huge_alloc(kv_bytes) : ng_aligned_alloc(kv_bytes);
#ifdef MADV_NOHUGEPAGE
    if (!huge && kv_bytes >= KV_HUGE_MIN) madvise(s->kv, kv_bytes, MADV_NOHUGEPAGE); /* ng_aligned_alloc's */
#endif
#ifdef MADV_POPULATE_WRITE
    /* the first token would commit it all anyway: commit it now, so that the kernel's zeroing
     * is not in the first token's time (a kernel before Linux 5.14 refuses, and nothing changes) */
    if (huge) (void)madvise(s->kv, kv_bytes, MADV_POPULATE_WRITE);
#endif
    s->k = s->kv;
    s->v = (char *)s->kv + kv_n * kv_esize(s);
    if (max_batch == 0) return s; /* a KV cache only, for ng_forward_multi */
    int threads = ng_threads();
    s->n_score_rows = threads;
    /* one block for all activations; each piece rounded to 16 floats to keep 64-byte alignment */
#define PAD(n) (((n) + 15) & ~(size_t)15)
    size_t F = (size_t)hp->n_ff > KV ? (size_t)hp->n_ff : KV; /* ff also holds k, v before they move to qkv */
    size_t sizes[7] = {PAD(B * E),
                       PAD(B * E),
                       PAD(B * (E + 2 * KV)),
                       PAD(B * E),
                       PAD(2 * B * F),
                       PAD((size_t)threads * att_scratch_rows(hp, max_batch) * (size_t)n_ctx),
                       PAD(B * (size_t)ng_head_dim(hp))};
#undef PAD
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += sizes[i];
    s->act = ng_aligned_alloc(total * sizeof(float));
    float *p = s->act;
    float **slots[7] = {&s->x, &s->xn, &s->qkv, &s->att_out, &s->ff, &s->scores, &s->rope_cs};
    for (int i = 0; i < 7; i++) *slots[i] = p, p += sizes[i];
    s->row_seq = xcalloc(B, sizeof *s->row_seq);
    s->row_pos = xcalloc(B, sizeof *s->row_pos);
    s->row_index = xcalloc(2 * B, sizeof *s->row_index);
    s->att_blk = xcalloc(B + 1, sizeof *s->att_blk);
    s->row_lora = xcalloc(B, sizeof *s->row_lora);
    for (int b = 0; b < max_batch; b++) s->row_index[b] = b;
    /* the bf16 copy of a layer's keys and values for a prompt's attention (see attention) */
    if (max_batch >= ATT16_MIN_B && ng_cpu_features()->avx512bf16 && ng_type_block(ng_model_wtype(m)) > 1 &&
        (ng_head_dim(hp) == 64 || ng_head_dim(hp) == 128))
        s->att16 = ng_aligned_alloc(att16_head(s, ng_head_dim(hp)) * (size_t)hp->n_head_kv * sizeof(ng_bf16));
    return s;
}

void ng_state_free(ng_state *s) {
    if (!s) return;
    free(s->kv);
    free(s->act);
    free(s->att16);
    free(s->row_seq);
    free(s->row_pos);
    free(s->row_index);
    free(s->att_blk);
    free(s->row_lora);
    free(s);
}

void ng_state_reset(ng_state *s) { s->pos = 0; }

/* The cache of (layer l, KV head h) in base (s->k: tiled keys, s->v: value rows). */
static void *kv_head(const ng_hparams *hp, const ng_state *s, void *base, int l, int h) {
    size_t i = ((size_t)l * hp->n_head_kv + (size_t)h) * kv_len(s) * (size_t)ng_head_dim(hp);
    return (char *)base + i * kv_esize(s);
}

int ng_state_copy_kv(const ng_model *m, ng_state *dst, const ng_state *src, int n) {
    const ng_hparams *hp = &m->hp;
    if (dst->kv_type != src->kv_type || n > dst->n_ctx) return NG_ERR;
    size_t row = (size_t)ng_head_dim(hp) * kv_esize(src), tiles = ((size_t)n + NG_ATT_KT - 1) / NG_ATT_KT;
    for (int l = 0; l < hp->n_layer; l++)
        for (int h = 0; h < hp->n_head_kv; h++) {
            memcpy(kv_head(hp, dst, dst->k, l, h), kv_head(hp, src, src->k, l, h), tiles * NG_ATT_KT * row);
            memcpy(kv_head(hp, dst, dst->v, l, h), kv_head(hp, src, src->v, l, h), (size_t)n * row);
        }
    return NG_OK;
}

int ng_state_copy(const ng_model *m, ng_state *dst, const ng_state *src) {
    if (dst->n_ctx < src->pos || ng_state_copy_kv(m, dst, src, src->pos)) return NG_ERR;
    dst->pos = src->pos;
    dst->lora = src->lora;
    return NG_OK;
}

/* ---- ops ------------------------------------------------------------------------------------ */

static _Thread_local ng_profile *tl_prof; /* ng_profile_set */

void ng_profile_set(ng_profile *p) { tl_prof = p; }

/* A row-wise loop of a batch: the block's norm (LayerNorm with bias for GPT-2, RMSNorm for
 * LLaMA) of x into out, GPT-2's "gelu_new" of out in place (the tanh approximation of
 * core/vmath.h, shared with the trainer), SwiGLU (out = silu(out) * x: the gate rows, then the
 * up rows), or the residual out += x; over B rows of n. */
typedef enum { ROWS_NORM, ROWS_GELU, ROWS_SWIGLU, ROWS_ADD } rows_op;
typedef struct {
    rows_op op;
    const ng_hparams *hp;
    float *out;
    const float *x;
    const ng_tensor *w, *b;
    int B, n;
} rows_job;

/* The residual's loop is vectorized as core/vmath.h's are (#pragma omp simd): the compiler
 * leaves it scalar for fear of aliasing. The norms are vmath's (ng_act_layernorm,
 * ng_act_rmsnorm), their sums in 64 lanes at the machine's vector width, where this file's own
 * loops ran at the baseline's 4 lanes: on one Zen 5 core from cache, a 768-value LayerNorm 0.33
 * -> 0.21 us, 256 of them 83 -> 52 us, a 2048-value one 0.84 -> 0.46 us. */
static void add(float *x, const float *y, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void rows_range(const rows_job *j, int r0, int r1) {
    size_t n = (size_t)j->n, o = (size_t)r0 * n, len = (size_t)(r1 - r0) * n;
    switch (j->op) {
    case ROWS_NORM:
        for (int r = r0; r < r1; r++) {
            float *out = j->out + (size_t)r * n;
            const float *x = j->x + (size_t)r * n;
            if (j->hp->arch == NG_ARCH_GPT2)
                ng_act_layernorm(out, x, j->w->data, j->b->data, n, j->hp->norm_eps);
            else
                ng_act_rmsnorm(out, x, j->w->data, n, j->hp->norm_eps);
        }
        break;
    case ROWS_GELU: ng_act_gelu(j->out + o, j->out + o, len); break;
    case ROWS_SWIGLU: ng_act_silu_mul(j->out + o, j->out + o, j->x + o, len); break;
    case ROWS_ADD: add(j->out + o, j->x + o, len); break;
    }
}

static void rows_job_run(void *ctx, int t, int T) {
    const rows_job *j = ctx;
    rows_range(j, (int)((int64_t)j->B * t / T), (int)((int64_t)j->B * (t + 1) / T));
}

/* Values from which a batch's row-wise loop runs on the team, a share of rows each (a prompt's;
 * a decode step's rows are too few to pay for a job's start). Each row is computed alone, so the
 * results are the same bits on any number of threads. In-process A/B on one 2-core Zen 5 VM,
 * against thread 0 alone while the others waited (same logits): GPT-2 124M prefill of 512 tokens
 * q4_0 -7% (faster in 11 of 12 rounds), bf16 -8% (8 of 8), of 128 tokens q4_0 -5% (16 of 20),
 * f16 -7% (11 of 16); TinyLlama 1.1B q8_0, 512 tokens, -4% (4 of 4). */
#define ROWS_TEAM_MIN 32768

/* Threads for a batch's row-wise work of `values` values in `items` independent pieces. */
static int rows_threads(size_t values, int items) {
    int nt = values >= ROWS_TEAM_MIN ? ng_threads() : 1;
    return nt < items ? nt : items;
}

static void rows_run(rows_op op, const ng_hparams *hp, float *out, const float *x, const ng_tensor *w,
                     const ng_tensor *b, int B, int n) {
    rows_job j = {op, hp, out, x, w, b, B, n};
    int nt = rows_threads((size_t)B * (size_t)n, B);
    if (nt > 1) ng_team_run(nt, rows_job_run, &j);
    else rows_range(&j, 0, B);
}

static void norm_rows(const ng_hparams *hp, float *out, const float *x, const ng_tensor *w, const ng_tensor *b,
                      int B, int n) {
    rows_run(ROWS_NORM, hp, out, x, w, b, B, n);
}

/* The cosine and sine of each rotation pair of a row at position pos: cs[i], cs[i + 1] for pair
 * i / 2, angle pos * theta^(-i/hd). Made once per row and step, not once per layer: the 44
 * calls' powf, cosf and sinf took 0.5% of a TinyLlama decode step. */
static void rope_table(float *cs, int hd, float pos, float theta) {
    for (int i = 0; i < hd; i += 2) {
        float freq = powf(theta, -(float)i / (float)hd), a = pos * freq;
        cs[i] = cosf(a), cs[i + 1] = sinf(a);
    }
}

/* Rotates interleaved pairs (x[2i], x[2i+1]) of each head by the angles of cs (rope_table):
 * the layout of llama.cpp's LLaMA weights (Hugging Face q/k rows are permuted into it at load). */
static void rope(float *x, int n_heads, int hd, const float *cs) {
    for (int i = 0; i < hd; i += 2) {
        float c = cs[i], s = cs[i + 1];
        for (int h = 0; h < n_heads; h++) {
            float *p = x + (size_t)h * hd + i, x0 = p[0], x1 = p[1];
            p[0] = x0 * c - x1 * s;
            p[1] = x0 * s + x1 * c;
        }
    }
}


static void embed_row(float *out, const ng_tensor *t, int64_t row) {
    ng_dequantize_row(t->type, (const char *)t->data + ng_row_size(t->type, t->ne[0]) * (size_t)row, out, t->ne[0]);
}

/* The most threads an attention job runs on (a block of items each). */
#define ATT_BLOCKS 64

/* One layer's attention as a team job. Items (a row's group of G heads) are cut into one block
 * of consecutive items per thread; a thread takes its block's items in order, then the items
 * the other threads have not reached. Consecutive heads' keys and values lie next to each other
 * in the cache, so each thread reads one region of it front to back: GPT-2 124M's attention took
 * 13-16% less time than with all items taken in turn from one counter, each thread then reading
 * every other head (q8_0 and q4_0, f32 and f16 caches), TinyLlama 1.1B's 2.5% less (in-process
 * A/B on one 2-core Zen 5 VM, decode at ~200 / ~520 positions). Taking over the others' items
 * keeps a thread that a slower core holds back from making the other wait. */
typedef struct {
    const ng_hparams *hp;
    ng_state *w;
    int l, G, GS, heads_per_row, work;
    int blocks; /* blocks of rows (w->att_blk; items: a head's block), or 0 */
    int append; /* each item appends its row's key and value first (see attention) */
    int bf16;   /* the items read w->att16 (ng_attend_rows_bf16, ng_attend_bf16) */
    const float *q0;
    size_t q_stride;
    float scale;
    ng_team_ctr ctr[ATT_BLOCKS]; /* the next item of each thread's block */
} att_job;

/* Appends the keys and values of KV head h (in w->qkv) of rows b .. b + n - 1, consecutive
 * positions of one sequence, to its cache at layer l: a prompt's keys as whole tiles where they
 * can (ng_attend_put_keys; 512 keys of a 64-value head from cache on one Zen 5 core, 10.2 ->
 * 2.3 us). With the norms at the vector width (ng_act_layernorm), GPT-2 124M's 512-token q8_0
 * prefill 123.5 -> 121.4 ms (the previous build and this one alternating, faster in 5 of 6
 * rounds), TinyLlama 1.1B's shape (6 layers) q4_0 -1.0..-1.6% (3 of 3). */
static void append_kv(const ng_hparams *hp, const ng_state *w, int l, int b, int n, int h) {
    int E = hp->n_embd, KV = ng_kv_dim(hp), hd = ng_head_dim(hp);
    size_t stride = (size_t)E + 2 * (size_t)KV;
    const float *row = w->qkv + (size_t)b * stride;
    ng_state *seq = w->row_seq[b];
    int pos = w->row_pos[b];
    ng_attend_put_keys(kv_head(hp, seq, seq->k, l, h), seq->kv_type, pos, n, hd, row + E + (size_t)h * hd,
                       stride);
    for (int i = 0; i < n; i++)
        ng_from_f32((char *)kv_head(hp, seq, seq->v, l, h) + (size_t)(pos + i) * hd * kv_esize(seq),
                    row + (size_t)i * stride + E + KV + (size_t)h * hd, seq->kv_type, hd);
}

/* Appending a batch's keys and values before its attention (a prompt's) as a team job: each
 * thread appends every row's for a share of the KV heads, whose caches are apart. In-process A/B
 * on one 2-core Zen 5 VM against thread 0 alone: GPT-2 124M q4_0 prefill of 512 tokens -2.0%
 * (faster in 8 of 12 rounds), 128 tokens -1.2% (13 of 20); TinyLlama 1.1B q8_0, 512, -2.2%. */
typedef struct {
    const ng_hparams *hp;
    const ng_state *w;
    int l, B;
    int pack; /* then each KV head's cache (of the one sequence) into w->att16 */
} append_job;

static void append_run(void *ctx, int t, int T) {
    const append_job *j = ctx;
    int H = j->hp->n_head_kv;
    const ng_state *w = j->w;
    for (int h = H * t / T; h < H * (t + 1) / T; h++)
        for (int b = 0, e; b < j->B; b = e) { /* runs of consecutive positions of one sequence */
            for (e = b + 1;
                 e < j->B && w->row_seq[e] == w->row_seq[b] && w->row_pos[e] == w->row_pos[e - 1] + 1;)
                e++;
            append_kv(j->hp, w, j->l, b, e - b, h);
        }
    if (!j->pack) return;
    const ng_state *seq = w->row_seq[0];
    int hd = ng_head_dim(j->hp), n = w->row_pos[j->B - 1] + 1;
    for (int h = H * t / T; h < H * (t + 1) / T; h++) {
        ng_bf16 *k16 = w->att16 + (size_t)h * att16_head(w, hd);
        ng_attend_pack_bf16(k16, k16 + ng_attend_bf16_keys(w->n_ctx, hd),
                            kv_head(j->hp, seq, seq->k, j->l, h), kv_head(j->hp, seq, seq->v, j->l, h),
                            seq->kv_type, n, hd);
    }
}

static void attention_item(const att_job *j, int wi, float *scratch) {
    const ng_hparams *hp = j->hp;
    const ng_state *w = j->w;
    int E = hp->n_embd, hd = ng_head_dim(hp), group = hp->n_head / hp->n_head_kv, G = j->G;
    if (j->blocks) { /* head h's rows b0..b0+rn-1: consecutive positions of one sequence */
        int h = wi / j->blocks, blk = wi % j->blocks, b0 = w->att_blk[blk], rn = w->att_blk[blk + 1] - b0;
        int kvh = h / group;
        const ng_state *seq = w->row_seq[b0];
        if (j->bf16) {
            const ng_bf16 *k16 = w->att16 + (size_t)kvh * att16_head(w, hd);
            ng_attend_rows_bf16(w->att_out + (size_t)b0 * E + (size_t)h * hd, (size_t)E,
                                j->q0 + (size_t)b0 * j->q_stride + (size_t)h * hd, j->q_stride, rn, k16,
                                k16 + ng_attend_bf16_keys(w->n_ctx, hd), w->row_pos[b0], hd, j->scale,
                                scratch);
            return;
        }
        ng_attend_rows(w->att_out + (size_t)b0 * E + (size_t)h * hd, (size_t)E,
                       j->q0 + (size_t)b0 * j->q_stride + (size_t)h * hd, j->q_stride, rn,
                       kv_head(hp, seq, seq->k, j->l, kvh), kv_head(hp, seq, seq->v, j->l, kvh), seq->kv_type,
                       w->row_pos[b0], hd, j->scale, scratch);
        return;
    }
    int b = wi / j->heads_per_row, h0 = wi % j->heads_per_row * G, kvh = h0 / group;
    const ng_state *seq = w->row_seq[b];
    if (j->append) append_kv(hp, w, j->l, b, 1, kvh);
    if (j->bf16) {
        const ng_bf16 *k16 = w->att16 + (size_t)kvh * att16_head(w, hd);
        ng_attend_bf16(w->att_out + (size_t)b * E + (size_t)h0 * hd, (size_t)hd,
                       j->q0 + (size_t)b * j->q_stride + (size_t)h0 * hd, (size_t)hd, G, k16,
                       k16 + ng_attend_bf16_keys(w->n_ctx, hd), w->row_pos[b] + 1, hd, j->scale, scratch);
        return;
    }
    ng_attend(w->att_out + (size_t)b * E + (size_t)h0 * hd, (size_t)hd, j->q0 + (size_t)b * j->q_stride + (size_t)h0 * hd,
              (size_t)hd, G, kv_head(hp, seq, seq->k, j->l, kvh), kv_head(hp, seq, seq->v, j->l, kvh), seq->kv_type,
              w->row_pos[b] + 1, hd, j->scale, scratch);
}

static _Atomic long att_taken; /* ng_attention_taken */

long ng_attention_taken(void) { return atomic_load(&att_taken); }

static void attention_job(void *ctx, int t, int T) {
    att_job *j = ctx;
    float *scratch = j->w->scores + (size_t)t * j->GS * (size_t)j->w->n_ctx;
    for (int v = 0; v < T; v++) { /* its own block first, then the next threads' */
        int u = (t + v) % T, w0 = (int)((int64_t)j->work * u / T), n = (int)((int64_t)j->work * (u + 1) / T) - w0;
        for (int i; (i = atomic_fetch_add_explicit(&j->ctr[u].next, 1, memory_order_relaxed)) < n;) {
            if (v) atomic_fetch_add_explicit(&att_taken, 1, memory_order_relaxed);
            attention_item(j, w0 + i, scratch);
        }
    }
}

/* Cuts the B rows into blocks of consecutive positions of one sequence, NG_ATT_ROWS rows at
 * most: block i is rows w->att_blk[i] .. w->att_blk[i + 1] - 1. Returns how many. */
static int att_blocks(ng_state *w, int B) {
    int n = 0;
    for (int b = 0; b < B; b++)
        if (b == 0 || w->row_seq[b] != w->row_seq[b - 1] || w->row_pos[b] != w->row_pos[b - 1] + 1 ||
            b - w->att_blk[n - 1] == NG_ATT_ROWS)
            w->att_blk[n++] = b;
    w->att_blk[n] = B;
    return n;
}

/* 1 when no two of the B rows are of one sequence. */
static int rows_distinct(const ng_state *w, int B) {
    for (int b = 1; b < B; b++)
        for (int a = 0; a < b; a++)
            if (w->row_seq[a] == w->row_seq[b]) return 0;
    return 1;
}

/* Causal self-attention of B query rows over layer l of each row's own sequence cache (row b
 * is at position row_pos[b] of sequence row_seq[b]), after appending each row's key and value
 * (in w->qkv). Query rows are strided by q_stride; query head h reads KV head h / (n_head /
 * n_head_kv). When each item is a whole KV head of a row and no two rows share a sequence (one
 * token of each sequence: decode), the items append their own key and value, in parallel, just
 * before reading them; otherwise (a prompt's rows read each other's keys) they are appended
 * first. Appending a key writes a line of each of its dimensions' tile rows (64 for GPT-2),
 * whose reads for ownership from memory took ~2.4 us a layer of GPT-2 124M q4_0 decode, one
 * thread alone between two jobs. In-process A/B on one 2-core Zen 5 VM (~200 positions):
 * decode -1.5% (faster in 22 of 30 rounds); 8 sequences decoded together (ng_forward_multi)
 * -3.5..-5% (19 of 20), 4 sequences -5% (6 of 10).
 * A prompt's rows (consecutive positions of one sequence), where fewer than NG_ATT_ROWS query
 * heads share a KV head, go as items of one head and NG_ATT_ROWS rows (ng_attend_rows), so that
 * each key and value load serves as many rows: a head of a prompt alone loaded every key once per
 * row and multiply-add. In a batch with such rows (a serve step with a prompt's piece) every row
 * goes so, the others as blocks of one row. In-process A/B on one 2-core Zen 5 VM (10
 * alternating rounds, all faster): GPT-2 124M prefill of 512 tokens f32 / f16 -16%, bf16 -27%,
 * q8_0 / q4_0 -33% (attention from 34% of a q4_0 prefill's samples to 12%); of 128 tokens f16
 * -9%, q4_0 -11%; LLaMA 7B's shape (4 layers), 512 tokens, f16 -9%, q4_0 -17%. */
static void attention(const ng_hparams *hp, ng_state *w, int l, const float *q0, size_t q_stride, int B) {
    int H = hp->n_head, hd = ng_head_dim(hp);
    int threads = w->n_score_rows < ng_threads() ? w->n_score_rows : ng_threads();
    if (threads > ATT_BLOCKS) threads = ATT_BLOCKS;
    /* heads per item: a KV head's (att_group), unless that leaves fewer items than two per thread */
    att_job j = {.hp = hp, .w = w, .l = l, .G = att_group(hp), .q0 = q0, .q_stride = q_stride,
                 .scale = 1.0f / sqrtf((float)hd)};
    j.GS = j.G; /* the scratch rows per thread */
    if (B * H / j.G < 2 * threads) j.G = 1;
    j.heads_per_row = H / j.G;
    j.work = B * j.heads_per_row;
    int blocks = B > 1 && att_group(hp) < NG_ATT_ROWS ? att_blocks(w, B) : B;
    if (blocks < B) { /* some rows are a prompt's (or a piece of one) */
        j.blocks = blocks;
        j.work = blocks * H;
        j.GS = NG_ATT_ROWS;
    }
    for (int t = 0; t < threads; t++) atomic_init(&j.ctr[t].next, 0);
    j.append = j.G == H / hp->n_head_kv && rows_distinct(w, B);
    j.bf16 = w->att16_on && !j.append; /* one sequence's rows: never appended by the items */
    if (!j.append) {
        append_job aj = {hp, w, l, B, j.bf16};
        ng_team_run(rows_threads((size_t)B * 2 * (size_t)ng_kv_dim(hp), hp->n_head_kv), append_run, &aj);
    }
    int longest = 0;
    for (int b = 0; b < B; b++) longest = w->row_pos[b] + 1 > longest ? w->row_pos[b] + 1 : longest;
    double t0 = tl_prof ? ng_time() : 0;
    ng_team_run(j.work > 1 && longest * hd * B * H > 32768 ? threads : 1, attention_job, &j);
    if (tl_prof) tl_prof->attention += ng_time() - t0;
}

static void matmul(float *y, const float *x, const ng_tensor *w, const ng_tensor *b, int B) {
    double t0 = tl_prof ? ng_time() : 0;
    ng_matmul(y, x, w->data, w->type, b ? b->data : NULL, B, (int)w->ne[1], (int)w->ne[0]);
    if (tl_prof) tl_prof->matmul += ng_time() - t0;
}

/* Each row's adapter's low-rank delta for target t of the layer, added to y = x w^T. */
static void lora_delta(const ng_state *s, float *y, const float *x, const ng_tensor *w, int B, int layer,
                       ng_lora_target t) {
    if (!s->any_lora) return;
    double t0 = tl_prof ? ng_time() : 0;
    ng_lora_apply(y, x, B, (int)w->ne[1], (int)w->ne[0], layer, t, s->row_lora);
    if (tl_prof) tl_prof->matmul += ng_time() - t0;
}

/* A layer matmul that rows' adapters may adapt: the base product once for all rows, then each
 * row adds its own adapter's low-rank delta. */
static void lmatmul(const ng_state *s, float *y, const float *x, const ng_tensor *w, const ng_tensor *b, int B,
                    int layer, ng_lora_target t) {
    matmul(y, x, w, b, B);
    lora_delta(s, y, x, w, B, layer, t);
}

/* Layer matmuls of the same x (LLaMA's q, k, v; gate, up): one job for all when their weights
 * share a type (ng_matmul_multi), then each row's adapters. In-process A/B on one 2-core Zen 5
 * VM, TinyLlama 1.1B q4_0 shapes from memory: q, k, v 63.8 -> 54.2 us a layer (faster in 20 of
 * 20 rounds), gate, up 189.2 -> 184.9 (12 of 12). */
#define LMATMUL_MAX 3 /* q, k, v */
static void lmatmul_multi(const ng_state *s, float *const *y, const float *x, const ng_tensor *const *w, int n,
                          int B, int layer, const ng_lora_target *t) {
    int same = n <= LMATMUL_MAX;
    for (int m = 1; m < n; m++) same = same && w[m]->type == w[0]->type && w[m]->ne[0] == w[0]->ne[0];
    if (!same) {
        for (int m = 0; m < n; m++) lmatmul(s, y[m], x, w[m], NULL, B, layer, t[m]);
        return;
    }
    const void *wd[LMATMUL_MAX];
    int N[LMATMUL_MAX];
    for (int m = 0; m < n; m++) wd[m] = w[m]->data, N[m] = (int)w[m]->ne[1];
    double t0 = tl_prof ? ng_time() : 0;
    ng_matmul_multi(y, x, wd, w[0]->type, NULL, n, B, N, (int)w[0]->ne[0]);
    if (tl_prof) tl_prof->matmul += ng_time() - t0;
    for (int m = 0; m < n; m++) lora_delta(s, y[m], x, w[m], B, layer, t[m]);
}

/* ---- blocks ---------------------------------------------------------------------------------- */

/* Projects xn to q, k, v (rows of qkv: q (E) | k (KV) | v (KV)) and positions them (attention
 * appends k and v to each row's sequence cache). */
static void qkv_project(const ng_hparams *hp, const ng_layer *L, ng_state *s, int l, int B) {
    int E = hp->n_embd, KV = ng_kv_dim(hp), hd = ng_head_dim(hp);
    size_t stride = (size_t)E + 2 * (size_t)KV;
    if (hp->arch == NG_ARCH_GPT2) {
        lmatmul(s, s->qkv, s->xn, L->qkv_w, L->qkv_b, B, l, LORA_T_QKV); /* fused: stride is 3E */
    } else {
        /* separate projections into the att_out / ff scratch, then interleave into qkv rows */
        float *k = s->ff, *v = s->ff + (size_t)B * KV, *y[3] = {s->att_out, k, v};
        const ng_tensor *w[3] = {L->q_w, L->k_w, L->v_w};
        lmatmul_multi(s, y, s->xn, w, 3, B, l, (const ng_lora_target[]){LORA_T_Q, LORA_T_K, LORA_T_V});
        for (int b = 0; b < B; b++) {
            float *row = s->qkv + (size_t)b * stride;
            memcpy(row, s->att_out + (size_t)b * E, (size_t)E * sizeof(float));
            memcpy(row + E, k + (size_t)b * KV, (size_t)KV * sizeof(float));
            memcpy(row + E + KV, v + (size_t)b * KV, (size_t)KV * sizeof(float));
            rope(row, hp->n_head, hd, s->rope_cs + (size_t)b * hd);
            rope(row + E, hp->n_head_kv, hd, s->rope_cs + (size_t)b * hd);
        }
    }
}

static void ffn(const ng_hparams *hp, const ng_layer *L, ng_state *s, int l, int B) {
    size_t F = (size_t)hp->n_ff;
    float *out = s->att_out; /* (B, E) scratch once attention output is consumed */
    if (hp->arch == NG_ARCH_GPT2) {
        lmatmul(s, s->ff, s->xn, L->up_w, L->up_b, B, l, LORA_T_UP);
        rows_run(ROWS_GELU, hp, s->ff, NULL, NULL, NULL, B, (int)F);
    } else {
        float *up = s->ff + (size_t)B * F;
        float *y[2] = {s->ff, up};
        const ng_tensor *w[2] = {L->gate_w, L->up_w};
        lmatmul_multi(s, y, s->xn, w, 2, B, l, (const ng_lora_target[]){LORA_T_GATE, LORA_T_UP});
        rows_run(ROWS_SWIGLU, hp, s->ff, up, NULL, NULL, B, (int)F);
    }
    lmatmul(s, out, s->ff, L->down_w, L->down_b, B, l, LORA_T_DOWN);
    rows_run(ROWS_ADD, hp, s->x, out, NULL, NULL, B, hp->n_embd);
}

/* B <= max_batch rows through the model, row b at position w->row_pos[b] of w->row_seq[b]
 * (set by the caller). Writes the output head's logits for the rows listed in out_rows
 * (n_out of them, one n_vocab row each) when logits is not NULL. */
static void forward_rows(const ng_model *m, ng_state *w, const int *tokens, int B, float *logits, const int *out_rows,
                         int n_out) {
    const ng_hparams *hp = &m->hp;
    int E = hp->n_embd;
    /* a prompt's attention in bf16 where its products round their inputs to 8 bits (see attention) */
    w->att16_on = w->att16 && B >= ATT16_MIN_B && ng_kernel_bf16_attention(ng_head_dim(hp)) &&
                  ng_kernel_int8_rows(m->layers[0].out_w->type, B);
    for (int b = 1; b < B && w->att16_on; b++) w->att16_on = w->row_seq[b] == w->row_seq[0];
    w->any_lora = 0;
    for (int b = 0; b < B; b++) {
        w->row_lora[b] = w->row_seq[b]->lora;
        w->any_lora |= w->row_lora[b] != NULL;
    }
    for (int b = 0; b < B; b++) {
        embed_row(w->x + (size_t)b * E, m->tok_embd, tokens[b]);
        if (w->row_lora[b]) ng_lora_embed(w->row_lora[b], w->x + (size_t)b * E, tokens[b]);
        if (m->pos_embd) {
            embed_row(w->xn, m->pos_embd, w->row_pos[b]);
            add(w->x + (size_t)b * E, w->xn, (size_t)E);
        }
        if (hp->arch == NG_ARCH_LLAMA)
            rope_table(w->rope_cs + (size_t)b * ng_head_dim(hp), ng_head_dim(hp),
                       (float)w->row_pos[b] * hp->rope_scale, hp->rope_theta);
    }
    for (int l = 0; l < hp->n_layer; l++) {
        const ng_layer *L = &m->layers[l];
        norm_rows(hp, w->xn, w->x, L->attn_norm_w, L->attn_norm_b, B, E);
        qkv_project(hp, L, w, l, B);
        attention(hp, w, l, w->qkv, (size_t)E + 2 * (size_t)ng_kv_dim(hp), B);
        lmatmul(w, w->xn, w->att_out, L->out_w, L->out_b, B, l, LORA_T_O);
        rows_run(ROWS_ADD, hp, w->x, w->xn, NULL, NULL, B, E);
        norm_rows(hp, w->xn, w->x, L->ffn_norm_w, L->ffn_norm_b, B, E);
        ffn(hp, L, w, l, B);
    }
    if (!logits || n_out == 0) return;
    for (int i = 0; i < n_out; i++) memmove(w->x + (size_t)i * E, w->x + (size_t)out_rows[i] * E, (size_t)E * sizeof(float));
    norm_rows(hp, w->xn, w->x, m->out_norm_w, m->out_norm_b, n_out, E);
    matmul(logits, w->xn, m->output, NULL, n_out);
    if (w->any_lora) /* adapters' trainable tokens: their head rows' deltas */
        for (int i = 0; i < n_out; i++)
            if (w->row_lora[out_rows[i]])
                ng_lora_head(w->row_lora[out_rows[i]], logits + (size_t)i * hp->n_vocab, w->xn + (size_t)i * E);
}

static int check_tokens(const ng_model *m, const int *tokens, int n, ng_error *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
            return ng_error_set(err, "token id %d at position %d is out of range (vocabulary of %d)", tokens[i], i,
                                m->hp.n_vocab);
    return NG_OK;
}

int ng_forward(const ng_model *m, ng_state *s, const int *tokens, int n, float *logits, int all_logits,
               ng_error *err) {
    if (n <= 0) return ng_error_set(err, "no tokens to process");
    if (s->max_batch <= 0) return ng_error_set(err, "this state holds a KV cache only (no activations)");
    if (n > s->n_ctx - s->pos)
        return ng_error_set(err, "context overflow: %d tokens in the cache + %d new exceed the context of %d", s->pos, n,
                            s->n_ctx);
    if (check_tokens(m, tokens, n, err)) return NG_ERR;
    for (int done = 0; done < n;) {
        int B = n - done < s->max_batch ? n - done : s->max_batch;
        int last = done + B == n;
        for (int b = 0; b < B; b++) s->row_seq[b] = s, s->row_pos[b] = s->pos + b;
        /* without all_logits, only the final chunk's last token needs the output head */
        if (all_logits) forward_rows(m, s, tokens + done, B, logits + (size_t)done * m->hp.n_vocab, s->row_index, B);
        else forward_rows(m, s, tokens + done, B, last ? logits : NULL, &s->row_index[B - 1], 1);
        s->pos += B;
        done += B;
    }
    return NG_OK;
}

int ng_forward_multi(const ng_model *m, ng_state *work, ng_state *const *seqs, const int *n_tok, int n_seqs,
                     const int *tokens, float *logits, ng_error *err) {
    int total = 0;
    for (int i = 0; i < n_seqs; i++) {
        if (n_tok[i] <= 0) return ng_error_set(err, "sequence %d has no tokens", i);
        if (n_tok[i] > seqs[i]->n_ctx - seqs[i]->pos)
            return ng_error_set(err, "sequence %d: %d tokens in the cache + %d new exceed its context of %d", i,
                                seqs[i]->pos, n_tok[i], seqs[i]->n_ctx);
        if (seqs[i]->n_ctx > work->n_ctx)
            return ng_error_set(err, "sequence %d: context %d exceeds the work state's %d", i, seqs[i]->n_ctx,
                                work->n_ctx);
        for (int j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return ng_error_set(err, "sequence %d appears twice in one batch", i);
        total += n_tok[i];
    }
    if (total > work->max_batch)
        return ng_error_set(err, "%d tokens exceed the work state's batch of %d", total, work->max_batch);
    if (check_tokens(m, tokens, total, err)) return NG_ERR;
    int r = 0;
    int *out_rows = work->row_index + work->max_batch; /* second half: the last row of each sequence */
    for (int i = 0; i < n_seqs; i++) {
        for (int j = 0; j < n_tok[i]; j++, r++) work->row_seq[r] = seqs[i], work->row_pos[r] = seqs[i]->pos + j;
        out_rows[i] = r - 1;
    }
    forward_rows(m, work, tokens, total, logits, out_rows, n_seqs);
    for (int i = 0; i < n_seqs; i++) seqs[i]->pos += n_tok[i];
    return NG_OK;
}
