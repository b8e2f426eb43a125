#!/usr/bin/env python3
"""Writes a small GPT-2 model folder for `make demo`: the real GPT-2 vocabulary
(tests/testdata/gpt2/encoder.json + vocab.bpe) with deterministic random weights, in the
Hugging Face layout (config.json + model.safetensors), so the demo exercises the same path a
user's downloaded model takes: convert to GGUF, tokenize, generate.

The weights are random, so the generated text is not meaningful; trained default models
replace this once netgpt's trainer has made them.

usage: make_demo_model.py OUT_DIR
"""
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "reference"))
from safetensors_io import write_safetensors  # noqa: E402

N_EMBD, N_LAYER, N_HEAD, N_CTX, VOCAB = 128, 4, 4, 256, 50257


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    f32 = np.float32

    def normal(*shape, std=0.1):
        return (rng.standard_normal(shape) * std).astype(f32)

    t = {"wte.weight": normal(VOCAB, N_EMBD), "wpe.weight": normal(N_CTX, N_EMBD, std=0.02),
         "ln_f.weight": np.ones(N_EMBD, f32), "ln_f.bias": np.zeros(N_EMBD, f32)}
    for i in range(N_LAYER):
        p = f"h.{i}."
        t[p + "ln_1.weight"] = np.ones(N_EMBD, f32)
        t[p + "ln_1.bias"] = np.zeros(N_EMBD, f32)
        t[p + "attn.c_attn.weight"] = normal(N_EMBD, 3 * N_EMBD)
        t[p + "attn.c_attn.bias"] = np.zeros(3 * N_EMBD, f32)
        t[p + "attn.c_proj.weight"] = normal(N_EMBD, N_EMBD)
        t[p + "attn.c_proj.bias"] = np.zeros(N_EMBD, f32)
        t[p + "ln_2.weight"] = np.ones(N_EMBD, f32)
        t[p + "ln_2.bias"] = np.zeros(N_EMBD, f32)
        t[p + "mlp.c_fc.weight"] = normal(N_EMBD, 4 * N_EMBD)
        t[p + "mlp.c_fc.bias"] = np.zeros(4 * N_EMBD, f32)
        t[p + "mlp.c_proj.weight"] = normal(4 * N_EMBD, N_EMBD)
        t[p + "mlp.c_proj.bias"] = np.zeros(N_EMBD, f32)
    write_safetensors(os.path.join(out, "model.safetensors"), t)
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": VOCAB,
           "n_positions": N_CTX, "n_ctx": N_CTX, "n_embd": N_EMBD, "n_head": N_HEAD, "n_layer": N_LAYER,
           "n_inner": None, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
           "bos_token_id": 50256, "eos_token_id": 50256}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    vocab = os.path.join(HERE, "..", "tests", "testdata", "gpt2")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(os.path.join(vocab, name), os.path.join(out, name))


if __name__ == "__main__":
    main()
