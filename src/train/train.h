/* train — fine-tuning of a GPT-2 or LLaMA ng_model in f32: a forward pass that keeps its
 * activations, a masked cross-entropy loss, the backward pass of every op, AdamW with
 * global-norm clipping and a warmup + cosine schedule, LoRA adapters, and checkpoints.
 *
 * Two modes, chosen at train_new:
 *   full  every parameter is trainable; the model's weights (f32/f16/bf16) are copied into
 *         f32 master weights that the train_model owns (the base model is not changed).
 *   LoRA  the base model stays frozen and is only read (its matrices go through ng_matmul in
 *         their own type, so f16/bf16 now and quantized types later need no copy); adapters
 *         y += (alpha/rank) * B (A dropout(x)) are added to the chosen target matrices.
 *         A (rank, in) is Kaiming-uniform from the seed, B (out, rank) zeros (PEFT's init).
 *         GPT-2's fused attn_qkv is adapted per slice: targets q, k, v each get their own
 *         adapter on their third of the output rows (a PEFT c_attn adapter, one A and a B of
 *         3*n_embd rows, is the case where the three slices share A; import it by copying A
 *         to each slice and cutting B into thirds).
 *         Trainable tokens (PEFT's trainable_token_indices): with tok_ids set, the embedding
 *         rows of those tokens get a trained delta (token_embd.delta, (n, n_embd), zeros at
 *         first): embedding row += delta, and the output head's rows too, since a tied head is
 *         the same matrix (an untied head gets its own output.delta). A small model's head
 *         rows for tokens its pretraining rarely saw are what LoRA alone cannot move: the edge
 *         completion adapter's held-out loss after 150 steps is 5.14 without them, 1.19 with
 *         the 289 tokens its responses use.
 *
 * Every trainable value lives in one flat f32 buffer (params) with a gradient buffer of the
 * same layout (grads) and a table of named entries (tab); the optimizer keeps its moments in
 * the same layout. All activations for batches of up to max_B x max_T tokens are one
 * allocation made at train_new. With recompute set, only the residual stream at each layer
 * boundary is kept, and backward recomputes a block's forward before differentiating it
 * (same gradients, bit for bit).
 *
 * Determinism: given the seed, the data and the thread count, every step is reproducible:
 * LoRA dropout masks are a hash of (seed, forward counter, layer, adapter, element), so
 * they need no stored generator beyond the counter that checkpoints save.
 *
 * Ownership: a train_model borrows its base ng_model (which must outlive it) and owns its
 * parameters, gradients and activations. An adamw owns its moments. */
#ifndef NG_TRAIN_H
#define NG_TRAIN_H

#include <stdint.h>

#include "model/model.h"

/* LoRA target modules (bit set). */
enum {
    LORA_Q = 1 << 0,
    LORA_K = 1 << 1,
    LORA_V = 1 << 2,
    LORA_O = 1 << 3,
    LORA_GATE = 1 << 4,
    LORA_UP = 1 << 5,
    LORA_DOWN = 1 << 6,
    LORA_ALL = 0x7f
};
/* Parses "q,k,v,o,gate,up,down" (any subset, comma-separated; "all" for every one) into a
 * bit set; -1 when a name is unknown. */
int lora_parse_targets(const char *s);

typedef struct {
    int lora;            /* 0: full fine-tuning; 1: LoRA */
    int lora_rank;       /* r */
    float lora_alpha;    /* adapter output scaled by alpha / r */
    float lora_dropout;  /* probability of zeroing an adapter input element (0 = none) */
    unsigned lora_targets;
    int recompute;       /* 1: recompute each block's forward in backward (less memory) */
    int max_B, max_T;    /* largest batch the activations are sized for */
    uint64_t seed;       /* LoRA init and dropout */
    const int *tok_ids;  /* LoRA: trainable tokens, ascending and distinct (borrowed; NULL: none) */
    int n_tok_ids;
} train_config;

/* One batch of B sequences of T tokens (row-major (B, T)). mask[i] = 1 where the loss counts
 * the prediction of targets[i] (response tokens), 0 elsewhere; NULL means all ones. */
typedef struct {
    int B, T;
    const int *tokens, *targets;
    const float *mask;
} train_batch;

/* A named trainable tensor: ne0 values per row, ne1 rows, inside the flat buffers. */
typedef struct {
    char name[64];
    int64_t ne0, ne1;
    float *data, *grad;  /* into train_model params / grads */
    int decay;           /* 1: AdamW weight decay applies (matrices, not norms or biases) */
    ng_tensor view;      /* data as an f32 ng_tensor (ne = {ne0, ne1}) */
} train_param;

/* A LoRA adapter on rows row0 .. row0+rows-1 of a linear layer's output. */
typedef struct {
    train_param *a, *b;  /* A (rank, in), B (rows, rank) */
    int row0, rows, slot; /* slot: index among the layer's adapters (activations, dropout) */
} train_lora;

/* y = x W^T (+ bias) (+ adapters): W (out, in) any type ng_matmul takes. */
typedef struct {
    const ng_tensor *w;
    const float *bias;    /* (out) or NULL */
    float *gw, *gbias;    /* gradients; NULL when frozen or absent */
    train_lora lora[3];   /* GPT-2's fused qkv can carry three; others one */
    int n_lora;
} train_linear;

typedef struct {
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* (n_embd); biases GPT-2 only */
    float *g_norm1_w, *g_norm1_b, *g_norm2_w, *g_norm2_b;
    train_linear qkv;           /* GPT-2 fused (3*n_embd, n_embd) */
    train_linear q, k, v;       /* LLaMA (n_embd | kv_dim, n_embd) */
    train_linear o, gate, up, down;
    int n_lora;                 /* adapters in this layer */
} train_layer;

/* Activations of one block for N = B*T rows; (N, E) means N rows of n_embd. */
typedef struct {
    float *ln1, *mu1, *rs1;     /* (N, E), (N), (N): attention norm output, mean, 1/std */
    float *q, *k, *v;           /* (N, E), (N, KV), (N, KV): after RoPE for q, k */
    float *att;                 /* (B, H, T, T) softmax probabilities (0 above the diagonal) */
    float *ao;                  /* (N, E) attention output, input of the o projection */
    float *xmid;                /* (N, E) residual stream after attention */
    float *ln2, *mu2, *rs2;     /* (N, E), (N), (N) */
    float *f1, *f2, *fa;        /* (N, F): GPT-2 fc output, -, gelu; LLaMA gate, up, silu(gate)*up */
    float *lh;                  /* (n_lora, N, rank): x A^T of each adapter */
} train_acts;

typedef struct {
    const ng_model *base;
    ng_hparams hp;
    train_config cfg;
    float lora_scale;            /* alpha / rank */
    /* trainable values */
    float *params, *grads;       /* (n_params) each */
    size_t n_params;
    train_param *tab;
    int n_tab;
    /* weights the graph reads: master views (full) or the base model's (LoRA) */
    const ng_tensor *tok_embd, *pos_embd, *output;
    const float *normf_w, *normf_b;
    float *g_tok, *g_pos, *g_output, *g_normf_w, *g_normf_b; /* g_output == g_tok when tied */
    train_layer *layers;         /* (n_layer) */
    train_param *tok_delta, *out_delta; /* trainable tokens: (n_tok_ids, E); out_delta == tok_delta when tied */
    int *tok_slot;               /* (n_vocab) index into tok_ids, -1 for other tokens; NULL without them */
    /* state */
    int64_t step;                /* optimizer steps taken */
    uint64_t n_forward;          /* forward passes run (the dropout stream) */
    /* the current batch */
    int B, T;                    /* T: the batch's T less the trailing positions no target needs */
    int *tokens, *targets;       /* (B, T) copies */
    float *mask;
    float loss, n_counted;
    int *rows, n_rows;           /* the positions whose prediction counts (mask != 0) */
    /* one block: every activation and scratch buffer */
    float *mem;
    float **res;                 /* (n_layer + 1) x (N, E): residual stream entering each layer; res[L] final */
    float **dres;                /* the same, gradients (kept for tests) */
    train_acts *acts;            /* (n_layer); all alias one block with recompute */
    float *lnf, *muf, *rsf;      /* (N, E), (N), (N) final norm */
    float *lnf_rows;             /* (n_rows, E) the rows of lnf that the output head sees */
    float *logits;               /* (n_rows, V), counted positions only; dlogits in backward */
    float *lse;                  /* (n_rows) log-sum-exp of each row's logits */
    float *s_qkv, *s_wt, *s_a, *s_b, *s_dmid, *s_dln, *s_dq, *s_dk, *s_dv, *s_dqkv, *s_dao, *s_df1, *s_df2,
        *s_dfa, *s_dlh, *s_datt, *s_tok; /* scratch; s_tok (N, n_tok_ids) */
    size_t n_mem;                /* floats in mem */
    int att_threads;             /* threads s_datt has room for */
} train_model;

/* A training graph on base (GPT-2 or LLaMA). NULL + err on a bad config or a base it cannot
 * train (e.g. non-f32 norm vectors). */
train_model *train_new(const ng_model *base, const train_config *cfg, ng_error *err);
void train_free(train_model *tm);

/* Runs the forward pass on the batch (B <= max_B, T <= max_T, T <= n_ctx) and returns the
 * loss: mean over mask==1 positions of -log p(target). NAN + err on bad input (token out of
 * range, sizes). Keeps what backward needs. Two cuts that change no result: the positions
 * after the last counted one of every row are dropped (causal attention: no counted
 * prediction depends on them), so tm->T can be less than b->T (padded instruction rows);
 * and the output head runs on the counted positions only. */
float train_forward(train_model *tm, const train_batch *b, ng_error *err);
/* Adds scale * d loss / d param into grads for the last forward's batch (so micro-batches
 * accumulate; pass 1/n_micro for their mean). Fills dres. */
void train_backward(train_model *tm, float scale);
void train_zero_grad(train_model *tm);
/* Scales grads so that their global L2 norm is at most max_norm (<= 0: no clipping);
 * returns the norm before clipping. */
float train_clip_grad(train_model *tm, float max_norm);
/* The entry named name, or NULL. */
train_param *train_find(train_model *tm, const char *name);

/* ---- AdamW ------------------------------------------------------------------------------ */

typedef struct {
    float lr, min_lr;          /* peak learning rate; floor the cosine decays to */
    int warmup_steps;          /* linear warmup from lr/warmup to lr */
    int total_steps;           /* cosine from lr (after warmup) to min_lr at total_steps */
    float beta1, beta2, eps;
    float weight_decay;        /* decoupled, on entries with decay set */
    float grad_clip;           /* global-norm clipping; <= 0 off */
} adamw_config;

/* Defaults: lr 1e-3 -> 0, no warmup, betas 0.9/0.999, eps 1e-8, weight decay 0.01, clip 1. */
adamw_config adamw_defaults(int total_steps);

typedef struct {
    adamw_config c;
    float *m, *v;              /* (n) first and second moments */
    size_t n;
} adamw;

adamw *adamw_new(const adamw_config *c, size_t n);
void adamw_free(adamw *o);
/* The learning rate of 0-based step `step`: warmup then cosine. */
float adamw_lr(const adamw_config *c, int64_t step);
/* One update of every entry of tab (n_tab) with learning rate lr, as the t-th step (1-based,
 * for bias correction). params and moments share the layout of base (the flat buffer). */
void adamw_update(adamw *o, const float *base, train_param *tab, int n_tab, float lr, int64_t t);

/* One optimizer step over n_micro micro-batches (gradient accumulation): zero grads,
 * forward + backward each (gradients averaged), clip, AdamW at the scheduled rate,
 * step++. Returns the mean micro-batch loss; NAN + err on bad input (nothing updated). */
float train_step(train_model *tm, adamw *o, const train_batch *micro, int n_micro, ng_error *err);

/* ---- LoRA --------------------------------------------------------------------------------- */

/* A new model with f32 copies of the base's weights and every adapter merged
 * (W += alpha/r * B A); in full mode, the trained master weights. The model owns its tensors
 * (ng_model_free), shares the base's tokenizer pointer as NULL (none). */
ng_model *train_export_model(const train_model *tm);

/* ---- checkpoints ---------------------------------------------------------------------------
 * File layout (little-endian):
 *   char[8]  "NGTRAIN1"
 *   u32      mode (0 full, 1 LoRA), u32 n_tab
 *   u64      n_params, i64 step, u64 n_forward, u64 seed
 *   u32      lora rank, f32 alpha, f32 dropout, u32 targets
 *   n_tab x  { u32 name length, name bytes, i64 ne0, i64 ne1 }
 *   f32      params (n_params), then AdamW m (n_params), then v (n_params)
 * Loading requires a train_model made with the same config and base shape. */
int train_save(const train_model *tm, const adamw *o, const char *path, ng_error *err);
int train_load(train_model *tm, adamw *o, const char *path, ng_error *err);

#endif
