/* lora — low-rank adapters applied at inference: y = W x + s B (A x) for each adapted matrix,
 * with s = alpha / rank (alpha / sqrt(rank) for rsLoRA) times the user's scale.
 *
 * Loads Hugging Face PEFT adapters (a folder with adapter_config.json +
 * adapter_model.safetensors, names like base_model.model.model.layers.N.self_attn.q_proj.lora_A
 * .weight) and GGUF LoRA files as llama.cpp writes them (general.type "adapter", adapter.type
 * "lora", adapter.lora.alpha, tensors blk.N.attn_q.weight.lora_a / .lora_b). A and B are kept in
 * f32 in one buffer owned by the adapter, with s folded into B. Every shape is checked against
 * the model the adapter is loaded for. Several adapters may be loaded for one model and used by
 * different sequences of one batch (ng_state.lora); several can also be combined into one
 * (their ranks stacked) for a sequence that wants them all.
 *
 * Trainable tokens (PEFT's trainable_token_indices, see train/adapter.h for the names): an
 * adapter may also carry row deltas for some tokens' embeddings, and for the output head's
 * rows (a tied head is the embedding, so its rows move with it). The embedding of such a token
 * is base row + delta; its logit is h . (base row + delta). The user's scale multiplies the
 * deltas as it does B A. */
#ifndef NG_LORA_H
#define NG_LORA_H

#include "core/util.h"

struct ng_model;

#define NG_LORA_MAX_RANK 1024

/* the matrices an adapter may target, per layer */
typedef enum { LORA_T_Q, LORA_T_K, LORA_T_V, LORA_T_O, LORA_T_QKV, LORA_T_GATE, LORA_T_UP, LORA_T_DOWN, LORA_T_N_TARGETS } ng_lora_target;

typedef struct {
    int rank;       /* 0: this matrix is not adapted */
    int n, k;       /* the adapted matrix: n rows of k */
    const float *a; /* (rank, k) */
    const float *b; /* (n, rank), scale folded in */
    const float *bt; /* b transposed: (rank, n), for applying */
} ng_lora_mat;

typedef struct ng_lora {
    char *name, *path;
    int n_layer, rank_max;
    ng_lora_mat *mats; /* (n_layer * LORA_T_N_TARGETS) */
    float *data;       /* every A and B */
    float *bt_data;    /* every B transposed */
    /* trainable tokens (n_tok 0: none) */
    int n_tok, n_embd;
    int *tok_ids;      /* (n_tok) ascending, distinct */
    float *tok_embd;   /* (n_tok, n_embd) embedding row deltas, scale folded in */
    float *tok_out;    /* (n_tok, n_embd) output head row deltas: == tok_embd for a tied head, NULL
                        * when an untied head is not adapted; owned only when != tok_embd */
} ng_lora;

/* Loads path (a PEFT folder or a GGUF LoRA) for model m with a user scale (1 = as trained).
 * NULL + err naming the file, tensor and problem (a shape that does not fit m, an unknown
 * target, a missing partner A/B). */
ng_lora *ng_lora_load(const struct ng_model *m, const char *path, float scale, ng_error *err);
/* One adapter that applies all of them (ranks stacked); NULL when a stacked rank would exceed
 * NG_LORA_MAX_RANK. */
ng_lora *ng_lora_combine(ng_lora *const *list, int n);
void ng_lora_free(ng_lora *l);
/* Parses "PATH[:SCALE]"; *path points into arg's copy (malloc'd, caller frees). */
int ng_lora_parse_arg(const char *arg, char **path, float *scale, ng_error *err);
/* The adapter of one matrix (rank 0 when not adapted). */
const ng_lora_mat *ng_lora_mat_of(const ng_lora *l, int layer, ng_lora_target t);

/* y (B rows of N) += B_t (A_t x) for every row b whose adapters[b] adapts target t of layer
 * (adapters[b] NULL: the base model for that row). */
void ng_lora_apply(float *y, const float *x, int B, int N, int K, int layer, ng_lora_target t,
                   const ng_lora *const *adapters);

/* x (n_embd) += the embedding delta of token, if l has one; logits (n_vocab) += h . delta of
 * each adapted head row. */
void ng_lora_embed(const ng_lora *l, float *x, int token);
void ng_lora_head(const ng_lora *l, float *logits, const float *h);

/* Adds B A of every adapted matrix to m's weights (f32/f16/bf16 matrices are rewritten in their
 * own type into memory the model owns), and the token deltas to their rows of the embedding
 * and head, so m computes as base + adapter with no run-time cost. */
int ng_lora_merge(struct ng_model *m, const ng_lora *l, ng_error *err);

#endif
