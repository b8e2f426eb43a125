/* adapter — writes the LoRA adapters of a train_model in the two formats ng_lora_load (and the
 * tools users already have) read:
 *
 *   PEFT  a folder with adapter_model.safetensors (Hugging Face names, f32) and
 *         adapter_config.json (r, lora_alpha, target_modules, peft_type LORA, task_type
 *         CAUSAL_LM, fan_in_fan_out for GPT-2, base_model_name_or_path).
 *         LLaMA: base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (r, in) and
 *         .lora_B.weight (out, r); the q/k B rows go back to Hugging Face's head layout (the
 *         inverse of the RoPE permutation netgpt applies to q/k weights at load).
 *         GPT-2: base_model.model.transformer.h.N.attn.c_attn / attn.c_proj / mlp.c_fc /
 *         mlp.c_proj. PEFT puts one adapter on the fused c_attn, while training keeps one per
 *         q/k/v slice; the k trained slices become one adapter of rank k*r: A is the slices'
 *         A stacked (k*r, in), B is block-diagonal (3*n_embd, k*r) with each slice's B on its
 *         rows and zeros elsewhere (a slice not trained has zero rows). Since a loader scales
 *         by alpha / rank and the rank grew k-fold, B is multiplied by k so that the product
 *         is exactly the trained alpha/r * B A; adapter_config.json says the rank in
 *         rank_pattern {"attn.c_attn": k*r} for PEFT.
 *   GGUF  llama.cpp's LoRA: general.type "adapter", adapter.type "lora", adapter.lora.alpha,
 *         general.architecture, tensors blk.N.<matrix>.weight.lora_a (ne {in, r}) and
 *         .lora_b (ne {r, out}) in netgpt / llama.cpp row order (no q/k permutation); GPT-2's
 *         attn_qkv is the same stacked adapter as in PEFT.
 *
 * Trainable tokens (train_config.tok_ids), when trained, go with the adapter:
 *   PEFT  base_model.model.transformer.wte.token_adapter.trainable_tokens_delta (GPT-2) or
 *         base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta (LLaMA),
 *         (n_tokens, n_embd) row deltas, plus base_model.model.lm_head.token_adapter
 *         .trainable_tokens_delta for an untied head; adapter_config.json lists the ids in
 *         trainable_token_indices {"wte" | "embed_tokens": [...], "lm_head": [...]}.
 *   GGUF  key adapter.trainable_token_indices (i32 array), tensors token_embd.delta and, for an
 *         untied head, output.delta (ne {n_embd, n_tokens}).
 *
 * Both return NG_OK or NG_ERR + err; they only read the train_model. */
#ifndef NG_ADAPTER_H
#define NG_ADAPTER_H

#include "train/train.h"

/* Writes dir/adapter_config.json and dir/adapter_model.safetensors (dir must exist).
 * base_name goes into base_model_name_or_path. */
int adapter_save_peft(const train_model *tm, const char *dir, const char *base_name, ng_error *err);
/* Writes one GGUF LoRA file. */
int adapter_save_gguf(const train_model *tm, const char *path, const char *base_name, ng_error *err);

#endif
