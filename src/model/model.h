/* model — a transformer language model: hyperparameters, weights, and the forward pass with a
 * KV cache. One struct for every architecture (GPT-2, LLaMA): model.c fills it from a file
 * by a table of tensor names per architecture, forward.c runs it.
 *
 * Ownership: an ng_model owns its open model files (weights stay memory-mapped where their
 * layout allows it) and every buffer it had to make at load (a transposed matrix of a Hugging
 * Face GPT-2, f32 copies of norm/bias vectors). An ng_state owns one sequence's KV cache and
 * all activations, each allocated once at ng_state_new. */
#ifndef NG_MODEL_H
#define NG_MODEL_H

#include "core/kernels.h"
#include "core/tensor.h"
#include "core/util.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "tokenizer/tokenizer.h"

typedef enum { NG_ARCH_GPT2 = 0, NG_ARCH_LLAMA = 1 } ng_arch;

typedef struct {
    ng_arch arch;
    int n_vocab, n_ctx, n_embd, n_head, n_head_kv, n_layer, n_ff;
    float norm_eps;   /* LayerNorm (GPT-2) or RMSNorm (LLaMA) epsilon */
    float rope_theta; /* LLaMA: RoPE base frequency */
    float rope_scale; /* LLaMA: positions are multiplied by this (1/factor of linear scaling) */
} ng_hparams;

static inline int ng_head_dim(const ng_hparams *hp) { return hp->n_embd / hp->n_head; }
static inline int ng_kv_dim(const ng_hparams *hp) { return ng_head_dim(hp) * hp->n_head_kv; }

/* Weights of one block; an architecture uses a subset (NULL otherwise). Matrices are N rows of
 * K (ne = {K, N}) in shape comments (N, K); vectors are f32. */
typedef struct {
    const ng_tensor *attn_norm_w, *attn_norm_b; /* (n_embd) */
    const ng_tensor *qkv_w, *qkv_b;             /* GPT-2: (3*n_embd, n_embd), (3*n_embd) */
    const ng_tensor *q_w, *k_w, *v_w;           /* LLaMA: (n_embd, n_embd), (kv_dim, n_embd) x2 */
    const ng_tensor *out_w, *out_b;             /* (n_embd, n_embd), (n_embd) */
    const ng_tensor *ffn_norm_w, *ffn_norm_b;   /* (n_embd) */
    const ng_tensor *gate_w;                    /* LLaMA: (n_ff, n_embd) */
    const ng_tensor *up_w, *up_b;               /* (n_ff, n_embd), (n_ff) */
    const ng_tensor *down_w, *down_b;           /* (n_embd, n_ff), (n_embd) */
} ng_layer;

typedef struct ng_model {
    ng_hparams hp;
    char *name;  /* general.name or the file name */
    char *path;
    ng_layer *layers;             /* (n_layer) */
    const ng_tensor *tok_embd;    /* (n_vocab, n_embd) */
    const ng_tensor *pos_embd;    /* GPT-2: (n_ctx, n_embd) */
    const ng_tensor *out_norm_w, *out_norm_b;
    const ng_tensor *output;      /* (n_vocab, n_embd); == tok_embd when tied */
    ng_tokenizer *tok;            /* NULL when the file has none */
    /* sources and buffers made at load */
    gguf_ctx *gguf;
    st_file *st;
    void *map;         /* a mapped llama2.c checkpoint */
    size_t map_size;
    ng_tensor **owned; /* tensors (and data) this model allocated */
    int n_owned, cap_owned;
    char **chunks; /* huge-page chunks that hold the owned tensors' smaller buffers */
    int n_chunks;
    size_t chunk_used; /* bytes of the last chunk taken */
} ng_model;

/* Loads a GGUF file or a Hugging Face model folder (config.json + model.safetensors or its
 * index + tokenizer files). NULL + err naming the file and problem. */
ng_model *ng_model_load(const char *path, ng_error *err);
/* Imports a llama2.c checkpoint (its .bin, weights f32, memory-mapped) with its tokenizer.bin
 * (tokenizer may be NULL: no tokenizer). The checkpoint's RoPE is interleaved, as ours. */
ng_model *ng_model_load_llama2c(const char *path, const char *tokenizer, ng_error *err);
/* A model of the given shape and architecture with deterministic random weights of type wtype
 * (f32/f16/bf16/q8_0/q6_k/q4_k/q4_0) for matrices, made in memory (benchmarks, tests). */
ng_model *ng_model_random(const ng_hparams *hp, ng_type wtype, uint64_t seed);
void ng_model_free(ng_model *m);
/* on = 1 (the default): weights are read through the file's memory mapping (no copy, pages
 * shared with the page cache). 0: the loaders copy every weight the model reads into memory of
 * its own, on transparent huge pages (see model.c's chunks), and give the mapped pages back:
 * a slower start, fewer TLB misses while streaming weights. Process-wide. */
void ng_model_set_mmap(int on);
/* A new tensor with data the model allocates and frees (e.g. a merged matrix). */
ng_tensor *ng_model_own_tensor(ng_model *m, const char *name, ng_type type, int64_t ne0, int64_t ne1);
/* Bytes of weights one decode step reads (all matrices incl. the output head). */
size_t ng_model_weight_bytes(const ng_model *m);
/* The type most matrices have (what `general.file_type` describes). */
ng_type ng_model_wtype(const ng_model *m);

const char *ng_arch_name(ng_arch a);
/* Writes m as GGUF with llama.cpp's tensor names and metadata, matrices converted to wtype
 * (f32/f16/bf16/q8_0/q6_k/q4_k/q4_0; a matrix whose rows are not whole blocks of it as f16),
 * vectors kept f32. */
int ng_model_save_gguf(const ng_model *m, const char *path, ng_type wtype, ng_error *err);
/* Type mixes for ng_model_save_gguf_mix: NG_MIX_K_M is llama.cpp's Q4_K_M recipe in kind (wtype
 * is then q4_k): q6_k for the output head and for attn_v / ffn_down in the first and last eighth
 * of the layers and every third layer between, q4_k for the other matrices. */
typedef enum { NG_MIX_NONE, NG_MIX_K_M } ng_mix;
int ng_model_save_gguf_mix(const ng_model *m, const char *path, ng_type wtype, ng_mix mix, ng_error *err);

struct ng_lora;

typedef struct ng_state {
    int n_ctx, max_batch;
    int pos;        /* tokens in the cache */
    const struct ng_lora *lora; /* adapter applied to this sequence's rows (NULL: the base model) */
    void *kv;       /* one block: k then v, each (n_layer, n_head_kv, n_ctx, head_dim) of kv_type:
                     * a head's positions are contiguous, so attention reads each as one stream */
    void *k, *v;
    ng_type kv_type; /* NG_F32 or NG_F16 (ng_set_kv_type when the state was made) */
    float *act;     /* one block for every activation below */
    float *x, *xn, *qkv, *att_out, *ff; /* (B, n_embd) x2, (B, n_embd + 2 kv_dim), (B, n_embd), (B, 2 n_ff) */
    float *scores;  /* (threads, heads per attention item, n_ctx) attention scratch */
    float *rope_cs; /* (max_batch, head_dim) each row's RoPE cosines and sines (LLaMA) */
    int n_score_rows;
    struct ng_state **row_seq; /* (max_batch) the sequence (KV cache) each row belongs to */
    int *row_pos;              /* (max_batch) each row's position in its sequence */
    int *row_index;            /* (2 max_batch) 0..max_batch-1, then output-row scratch */
    int *att_blk;              /* (max_batch + 1) attention's blocks of rows (forward.c) */
    const struct ng_lora **row_lora; /* (max_batch) each row's adapter, from its sequence */
    int any_lora;
    ng_bf16 *att16; /* (n_head_kv, bf16 keys and values of n_ctx positions) a layer's, for a prompt's
                     * attention in bf16 (forward.c), or NULL */
    int att16_on;   /* this batch's attention runs so */
} ng_state;

/* The type of the keys and values that states made from now on cache: NG_F32 (the default)
 * or NG_F16 (half the memory, and half the bytes attention reads per token; keys and values
 * are rounded to f16 as they are cached). Returns -1 for another type. Models with heads wider
 * than the attention kernel reads from f16 (NG_ATT_MAX_F16_HEAD) keep f32. */
int ng_set_kv_type(ng_type t);
ng_type ng_kv_type(void);

/* Where forward passes spend their time (netgpt bench --profile): while a profile is set,
 * ng_forward and ng_forward_multi add the wall time of their matrix products (adapters' deltas
 * and the output head included) and of their attention to it. The calling thread's; NULL
 * stops. */
typedef struct {
    double matmul, attention; /* seconds */
} ng_profile;
void ng_profile_set(ng_profile *p);

/* For tests: attention items a thread has taken from another thread's block (see forward.c's
 * attention job) since the program started. */
long ng_attention_taken(void);

/* A state for sequences of up to n_ctx tokens (<= the model's n_ctx; 0 = the model's),
 * processing at most max_batch tokens per ng_forward call. max_batch 0 makes a KV cache only
 * (a sequence for ng_forward_multi, which uses another state's activations). A KV cache of 1 MiB
 * to 1 GiB lies on huge pages, committed at once (see forward.c). */
ng_state *ng_state_new(const ng_model *m, int n_ctx, int max_batch);
/* ng_state_new with flags: NG_STATE_LAZY_KV puts the KV cache on 4 KiB pages that commit as
 * positions fill, for caches kept long and seldom filled (a server's slots, reused from request
 * to request: committing each whole at start took a 16-slot GPT-2 124M server 1.3 GB). */
#define NG_STATE_LAZY_KV 1u
ng_state *ng_state_new_flags(const ng_model *m, int n_ctx, int max_batch, unsigned flags);
void ng_state_free(ng_state *s);
void ng_state_reset(ng_state *s);
/* dst takes src's sequence: its KV cache up to src->pos, the position and the adapter (states of
 * one model; dst's n_ctx >= src->pos, else NG_ERR and dst unchanged). Beam search forks
 * sequences so. */
int ng_state_copy(const ng_model *m, ng_state *dst, const ng_state *src);
/* Copies the keys and values of positions < n from src to dst (states of one model, both
 * n_ctx >= n); positions, adapters and the rest of dst are left alone. NG_ERR (nothing copied)
 * when their caches hold different types. */
int ng_state_copy_kv(const ng_model *m, ng_state *dst, const ng_state *src, int n);

/* Runs n tokens at positions s->pos .. s->pos+n-1 (n may exceed max_batch: it is chunked),
 * appends their keys/values to the cache and advances s->pos. Writes logits to `logits`
 * (n_vocab floats for the last token, or n*n_vocab when all_logits). Errors (context
 * overflow, a token id out of range) leave the state unchanged and return NG_ERR + err. */
int ng_forward(const ng_model *m, ng_state *s, const int *tokens, int n, float *logits, int all_logits,
               ng_error *err);

/* Advances several sequences in one forward, so the weights are read once for all of them
 * (continuous batching): sequence i (seqs[i], a KV cache) takes the next n_tok[i] of tokens
 * (concatenated in sequence order). work provides the activations (max_batch >= the total,
 * n_ctx >= every sequence's). logits gets one n_vocab row per sequence: its last token's.
 * Errors leave every sequence unchanged. */
int ng_forward_multi(const ng_model *m, ng_state *work, ng_state *const *seqs, const int *n_tok, int n_seqs,
                     const int *tokens, float *logits, ng_error *err);

#endif
